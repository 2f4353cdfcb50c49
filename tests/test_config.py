"""Every option of every config group composes and resolves, and overrides land where the code reads them."""

import math

import pytest
from omegaconf import OmegaConf

from lib.paths import CONF_DIR, PROJECT_ROOT

GROUPS = ["model", "loss", "adversarial", "schedule", "trainer", "data", "tracking", "paths"]
OPTIONS = [(group, yaml.stem) for group in GROUPS for yaml in sorted((CONF_DIR / group).glob("*.yaml"))]
REQUIRED = {"data": {"csv": ["data.train=x.csv"], "citeseer": ["data.dir=/tmp"]}}


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)
    assert {o for g, o in OPTIONS if g == "model"} >= {
        "minilm",
        "bert",
        "scibert",
        "roberta",
        "deberta",
        "tiny_bert",
        "tiny_roberta",
        "tiny_deberta",
    }


@pytest.mark.parametrize("group,option", OPTIONS)
def test_option_composes_and_resolves(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", *REQUIRED.get(group, {}).get(option, []))
    container = OmegaConf.to_container(cfg, resolve=True)  # raises on any broken interpolation
    if "name" in cfg[group]:
        assert container[group]["name"] == option


def test_defaults_are_the_offline_recipe(make_cfg):
    cfg = make_cfg()
    assert (cfg.model.name, cfg.loss.name, cfg.adversarial.name, cfg.schedule.name) == (
        "minilm",
        "ce",
        "none",
        "linear",
    )
    assert cfg.paths.root == str(PROJECT_ROOT)
    assert cfg.trainer.precision == "auto" and cfg.trainer.batch_size == 32


def test_issue_example_override_composes(make_cfg):
    cfg = make_cfg("model=scibert", "loss=focal", "adversarial=fgm", "schedule=cosine", "model.pretrained=/models/sci")
    assert cfg.model.hub_id == "allenai/scibert_scivocab_uncased" and cfg.model.max_length == 96
    assert cfg.loss.gamma == 2.0 and cfg.adversarial.epsilon == 1.0 and cfg.schedule.name == "cosine"
    assert cfg.model.pretrained == "/models/sci"


SEED_TABLE = {  # SEED_NOTES.md: experiment -> (model option, loss option, max_length)
    "exp1_bert_ce": ("bert", "ce", 64),
    "exp2_scibert_focal": ("scibert", "focal", 96),
    "exp3_roberta_weighted_ce": ("roberta", "weighted_ce", 96),
    "exp4_deberta_ce": ("deberta", "ce", 96),
    "exp5_scibert_ce_len128": ("scibert", "ce", 128),
}


@pytest.mark.parametrize("experiment", sorted(SEED_TABLE))
def test_experiment_presets_reproduce_the_original_table(make_cfg, experiment):
    cfg = make_cfg(f"+experiment={experiment}")
    assert (cfg.model.name, cfg.loss.name, cfg.model.max_length) == SEED_TABLE[experiment]
    assert (cfg.trainer.batch_size, cfg.schedule.lr, cfg.schedule.weight_decay, cfg.model.dropout) == (
        32,
        2e-5,
        0.01,
        0.2,
    )
    assert cfg.trainer.early_stopping.metric == "f1" and cfg.trainer.early_stopping.patience == 3


def test_best_recipe_preset(make_cfg):
    cfg = make_cfg("+experiment=best_recipe")
    assert (cfg.model.name, cfg.loss.name, cfg.adversarial.name, cfg.schedule.name) == (
        "scibert",
        "focal",
        "fgm",
        "cosine",
    )
    assert cfg.schedule.layer_decay == 0.95 and cfg.schedule.head_lr_mult == 10.0


@pytest.mark.parametrize(
    "preset,launcher",
    [
        ("launcher=parallel", "joblib"),
        ("launcher=local", "submitit"),
        ("launcher=slurm", "submitit"),
        ("search=optuna", None),
    ],
)
def test_launcher_and_search_presets_compose(tmp_path, preset, launcher):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[preset, f"paths.outputs={tmp_path}"], return_hydra_config=True)
    if launcher:
        assert launcher in cfg.hydra.launcher._target_.lower() and cfg.trainer.num_threads in (1, None)
    else:
        assert "optuna" in cfg.hydra.sweeper._target_.lower() and cfg.loss.name == "focal"
        assert set(cfg.hydra.sweeper.params) == {
            "schedule.lr",
            "loss.gamma",
            "adversarial.epsilon",
            "schedule.layer_decay",
        }


def test_a_job_returns_the_named_optimized_metric_to_the_sweeper(make_cfg, monkeypatch, caplog):
    from lib import run

    assert make_cfg().optimized_metric == "best_val_f1"  # the default: best validation F1
    monkeypatch.setattr(run, "run_training", lambda cfg: {"best_val_f1": 0.8, "citeseer_dev_roc_auc": 0.9})
    assert run.run_job(make_cfg()) == 0.8
    assert run.run_job(make_cfg("optimized_metric=citeseer_dev_roc_auc")) == 0.9
    assert math.isnan(run.run_job(make_cfg("optimized_metric=val_nonsense")))
    assert "optimized_metric=val_nonsense: the run has no such metric; choose one of best_val_f1" in caplog.text


def test_the_smoke_preset_is_a_tiny_one_epoch_run_without_model_logging(make_cfg):
    cfg = make_cfg("+debug=smoke")
    assert cfg.model.name == "tiny_bert" and cfg.schedule.lr == make_cfg("model=tiny_bert").schedule.lr
    assert cfg.trainer.epochs == 1 and cfg.trainer.limit_eval == 200 and cfg.tracking.log_model is False
    assert make_cfg("+debug=smoke", "trainer.limit_eval=48").trainer.limit_eval == 48  # the command line wins


def test_offline_best_is_the_best_offline_recipe_found(make_cfg):
    # MPNet, one epoch, the default recipe, the cut-off kept at 0.5; nothing else differs from a plain run
    cfg = make_cfg("+experiment=offline_best")
    assert (cfg.model.name, cfg.loss.name, cfg.adversarial.name, cfg.schedule.name) == ("mpnet", "ce", "none", "linear")
    assert cfg == make_cfg("model=mpnet", "trainer.epochs=1", "trainer.threshold_metric=none")


def test_ce_llrd_is_the_default_run_with_layer_wise_rates_and_cosine_decay(make_cfg):
    # docs/decisions.md (layer-wise rates beside the default run): the recipe must be exactly what was measured
    cfg = make_cfg("recipe=ce_llrd")
    assert (cfg.loss.name, cfg.adversarial.name, cfg.schedule.name) == ("ce", "none", "cosine")
    assert cfg == make_cfg("schedule=cosine", "schedule.layer_decay=0.95", "schedule.head_lr_mult=10.0")
    assert make_cfg("recipe=ce_llrd", "loss=focal").loss.name == "focal"  # the command line still wins


def test_a_machine_keeps_its_own_settings_in_the_git_ignored_local_config(tmp_path, monkeypatch):
    import shutil
    import subprocess

    from hydra import compose, initialize_config_dir

    monkeypatch.delenv("TITLESWEEP_SHARED_DATA", raising=False)
    conf = shutil.copytree(CONF_DIR, tmp_path / "conf")
    (conf / "local" / "default.yaml").unlink(missing_ok=True)  # this checkout's own, if it has one

    def extra_eval(*overrides):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
        return OmegaConf.to_container(cfg.extra_eval, resolve=True)

    # without one: the real samples where the team keeps them, beside the clone; the example is not read
    assert extra_eval() == {
        "citeseer_dev": f"{PROJECT_ROOT}/../shared/data/citeseer_dev.csv",
        "grobid_dev": f"{PROJECT_ROOT}/../shared/data/grobid_dev.csv",
    }
    (conf / "local" / "default.yaml").write_text(
        "# @package _global_\npaths:\n  shared_data: /srv/shared\nextra_eval:\n  lab: /srv/lab.csv\n"
    )
    assert extra_eval() == {
        "citeseer_dev": "/srv/shared/citeseer_dev.csv",
        "grobid_dev": "/srv/shared/grobid_dev.csv",
        "lab": "/srv/lab.csv",
    }
    assert extra_eval("extra_eval.lab=/tmp/x.csv")["lab"] == "/tmp/x.csv"  # the command line still wins
    ignored = subprocess.run(
        ["git", "check-ignore", "conf/local/default.yaml", "conf/local/example.yaml"],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert ignored.stdout.split() == ["conf/local/default.yaml"]
