"""The command-line entry as users run it: Hydra overrides, exit codes, one-line errors."""

import re

import mlflow
import pytest

from entry_points import run_entry_point
from lib.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow  # end to end, through subprocesses


def _train(tmp_path, *overrides):
    common = [f"paths.outputs={tmp_path / 'outputs'}", "tracking.log_model=false", "extra_eval=null"]
    return run_entry_point("train.py", *common, *overrides)


def test_issue_recipe_runs_from_the_command_line_and_is_tracked(tmp_path, toy_csv):
    done = _train(
        tmp_path,
        "model=tiny_roberta",
        "loss=focal",
        "adversarial=fgm",
        "schedule=cosine",
        "trainer.epochs=1",
        "data=csv",
        f"data.train={toy_csv}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs'}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=["titlesweep"], output_format="list")
    assert run.info.status == "FINISHED"
    assert "adversarial=fgm" in run.data.tags["hydra_overrides"] and run.data.params["loss.name"] == "focal"
    # it ends with the decisive numbers and the next commands, ready to paste, also in a log file
    out = done.stdout
    # it starts with the recipe as a tree: every group's choice, the values set on the command line under it
    for line in (
        "├── model: tiny_roberta",
        "├── loss: focal",
        "├── adversarial: fgm",
        "├── schedule: cosine",
        f"│   └── train = {toy_csv}",
        "│   └── epochs = 1",
    ):
        assert line in out, line
    progress_lines = [line for line in out.splitlines() if line.startswith("train ")]  # not a terminal: lines
    # (a run of seconds gets its last line only; tests/test_progress.py checks the 10% / 30 s lines)
    assert progress_lines and re.match(r"train (\d+)/\1 \(100%\) epoch 1 loss", progress_lines[-1]), progress_lines
    assert "results at the decision threshold" in out and "validation (best, at 0.5)" in out
    test_row = next(line for line in out.splitlines() if line.strip("│ ").startswith("test "))
    assert f"{run.data.metrics['test_accuracy']:.4f}" in test_row and f"{run.data.metrics['test_f1']:.4f}" in test_row
    # where the time went, on the console and in MLflow; the run page's description says the same
    split = re.search(r"time: data (\d+) s, setup (\d+) s, training (\d+) s, evaluation (\d+) s, logging (\d+) s", out)
    assert split, out[-1500:]  # whole seconds: a fast machine trains this toy set in "0 s"
    assert run.data.metrics["time_training_s"] >= run.data.metrics["train_seconds"] > 0
    note = run.data.tags["mlflow.note.content"]
    assert "model tiny_roberta · data csv · loss focal · adversarial fgm · schedule cosine" in note
    assert "model=tiny_roberta loss=focal adversarial=fgm schedule=cosine" in note  # the overrides
    note_test = next(line for line in note.splitlines() if line.startswith("| test |"))
    assert f"{run.data.metrics['test_accuracy']:.4f}" in note_test and f"{run.data.metrics['test_f1']:.4f}" in note_test
    assert f"python experiments/predict.py run={run.info.run_id} input=" in out
    assert f"python experiments/evaluate.py run={run.info.run_id} input=" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'outputs'}/mlflow.db" in out
    assert run.data.metrics["test_accuracy"] >= 0.8 and run.data.metrics["test_f1"] >= 0.8  # chance: 0.5
    assert run.data.metrics["skipped_steps"] == 0
    assert run.data.metrics["train_steps"] == int(run.data.params["train.total_steps"])  # not stopped early
    # a log file reads as words: metrics not as Python dicts, no library bars (rows of carriage returns)
    log_text = out + done.stderr
    metrics = run.data.metrics
    assert f"test: accuracy {metrics['test_accuracy']:.4f}, F1 {metrics['test_f1']:.4f}, ROC-AUC " in log_text
    assert "{'" not in log_text, [line for line in log_text.splitlines() if "{'" in line]
    assert "\r" not in log_text and "Loading weights" not in log_text and "Downloading artifacts" not in log_text
    assert float(run.data.params["adversarial.epsilon"]) < 1.0  # the tiny option's own, not fgm.yaml's 1.0
    assert mlflow.MlflowClient().get_metric_history(run.info.run_id, "adv_loss")  # FGM did its work
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, ".hydra")]
    assert ".hydra/overrides.yaml" in files and ".hydra/config.yaml" in files


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["data=csv", "data.train={missing}"], "missing.csv: file not found"),
        (["data=csv", "data.train={toy}", "data.text_column=title"], "no column 'title'"),
        (["data=csv", "data.train={toy}", "trainer.limit_train=20"], "fewer than trainer.batch_size=32"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(tmp_path, toy_csv, overrides, expected):
    values = {"missing": tmp_path / "missing.csv", "toy": toy_csv}
    done = _train(tmp_path, "model=tiny_bert", *(o.format(**values) for o in overrides))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in done.stderr + done.stdout


def _entry_point(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"entry_{name}", PROJECT_ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["predict", "evaluate", "compare", "download_models"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_option_with_one_line_each(name, flag, capsys):
    module = _entry_point(name)
    with pytest.raises(SystemExit) as done:
        module.main([flag])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {name}.py")
    option_lines = out.split("options:\n", 1)[1].splitlines()
    assert [line.split()[0].rstrip(",") for line in option_lines] == [k.split(",")[0] for k in module.OPTIONS]
    assert all(len(line.split(None, 1)[1]) > 10 for line in option_lines if "," not in line.split()[0])


@pytest.mark.parametrize(
    "name, valid",
    [
        ("predict", "run, model, model_dir, input, output, threshold"),
        ("evaluate", "run, model, input, batch_size, device, precision"),
    ],
)
def test_an_unknown_option_names_the_valid_ones(name, valid):
    done = run_entry_point(f"{name}.py", "colour=red", "input=x", timeout=120)
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: unknown option(s) colour; valid: " + valid)


def test_the_config_tree_highlights_what_the_command_line_chose(make_cfg):
    from lib.summary import config_tree

    overrides = ["model=tiny_bert", "loss.gamma=1.0", "recipe=focal"]
    tree = config_tree(make_cfg(*overrides), overrides, "cfg.yaml")
    labels = {str(node.label): [str(child.label) for child in node.children] for node in tree.children}
    assert labels["[bold yellow]model: tiny_bert[/]"] == []  # chosen on the command line
    assert labels["loss: focal"] == ["[bold yellow]gamma = 1.0[/]"]  # the recipe chose focal; gamma set here
    assert labels["adversarial: none"] == [] and "[bold yellow]recipe = focal[/]" in labels
