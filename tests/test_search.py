"""search=optuna: our Optuna sweeper (hydra_plugins/titlesweep_optuna) and the trial's side of it
(lib/search.py). Unit tests of the search space, the storage, bad input and the trial reporter; end
to end: a study kept in SQLite and continued, pruning, parallel jobs; with the `cluster` mark, two
sweep commands on one PostgreSQL storage and a sweep through SLURM."""

import math
import re
import sqlite3
import subprocess
import threading
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from entry_points import command, run_entry_point
from hydra_plugins.titlesweep_optuna._space import Param, override_value, parse_space
from hydra_plugins.titlesweep_optuna.checks import check_search_config
from lib import search
from lib.errors import ConfigError
from lib.paths import CONF_DIR
from lib.tracking import ROLE_TAG

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _compose(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "config", overrides=["search=optuna", f"paths.outputs={tmp_path}", *overrides], return_hydra_config=True
        )


# ------------------------------------------------------------------ the search space


def test_the_search_space_reads_hydras_sweep_grammar():
    params = {
        "schedule.lr": "tag(log, interval(1e-5, 1e-4))",
        "loss.gamma": "interval(0.5, 4.0)",
        "trainer.batch_size": "range(16, 65, 16)",
        "schedule.warmup_ratio": "range(0.0, 0.3, 0.1)",
        "trainer.epochs": "int(interval(1, 4))",
        "loss": "choice(ce, focal)",
        "adversarial.epsilon": "interval(0.1, 2.0)",
    }
    space, fixed = parse_space(params, ["model=tiny_bert", "adversarial.epsilon=0.05", "+trainer.max_steps=3,5"])
    found = {p.name: p.distribution for p in space}
    assert found["schedule.lr"] == FloatDistribution(1e-5, 1e-4, log=True)
    assert found["loss.gamma"] == FloatDistribution(0.5, 4.0)
    assert found["trainer.batch_size"] == IntDistribution(16, 64, step=16)
    assert found["schedule.warmup_ratio"] == FloatDistribution(0.0, 0.2, step=0.1)
    assert found["trainer.epochs"] == IntDistribution(1, 4)
    assert found["loss"] == CategoricalDistribution(["ce", "focal"])
    assert found["trainer.max_steps"] == CategoricalDistribution([3, 5])  # a command-line list searches too
    assert "adversarial.epsilon" not in found  # a fixed value on the command line takes it out of the search
    assert fixed == ["model=tiny_bert", "adversarial.epsilon=0.05"]
    assert next(p for p in space if p.name == "trainer.max_steps").key == "+trainer.max_steps"


@pytest.mark.parametrize(
    "value,text", [(3e-05, "3e-05"), (16, "16"), (True, "true"), (None, "null"), ("focal", "focal"), ("a,b", "'a,b'")]
)
def test_sampled_values_are_written_as_overrides_hydra_reads_back(value, text):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert override_value(value) == text
    assert OverridesParser.create().parse_override(f"k={text}").value() == value
    assert override_value("1") == "'1'" and override_value("true") == "'true'"  # strings stay strings


@pytest.mark.parametrize(
    "params,message",
    [
        ({"loss.gamma": "tag(exp, interval(0.5, 4.0))"}, "unknown tag exp"),
        ({"schedule.lr": "tag(log, interval(0.0, 1e-4))"}, "schedule.lr=tag(log, interval(0.0, 1e-4)):"),
        ({"loss.gamma": "interval(0.5"}, "hydra.sweeper.params:"),
    ],
)
def test_a_space_optuna_or_hydra_cannot_read_is_one_line(params, message):
    with pytest.raises(ConfigError, match=r"^[^\n]*$") as err:
        parse_space(params, [])
    assert message in str(err.value)


def test_params_on_every_job_are_the_trials_and_name_its_trial(tmp_path):
    from hydra_plugins.titlesweep_optuna.optuna_sweeper import OptunaSweeper

    space = [Param("schedule.lr", "schedule.lr", FloatDistribution(1e-5, 1e-4, log=True))]
    study = optuna.create_study(direction="maximize")
    trial = study.ask({p.name: p.distribution for p in space})
    overrides = OptunaSweeper._job_overrides(None, ["model=tiny_bert"], space, trial)
    assert overrides == [
        "model=tiny_bert",
        f"schedule.lr={trial.params['schedule.lr']!r}",
        f"++hydra.job.env_set.{search.TRIAL_ENV}=0",  # a hydra override: no task override, no MLflow param
    ]


# ------------------------------------------------------------------ storage and bad input


def test_the_study_is_stored_beside_the_mlflow_store(tmp_path):
    cfg = _compose(tmp_path)
    assert search.study_storage(cfg, cfg.hydra.sweeper) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    assert search.storage_note(cfg, cfg.hydra.sweeper) is None
    cfg = _compose(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/elsewhere/mlflow.db")
    assert search.study_storage(cfg, cfg.hydra.sweeper) == f"sqlite:///{tmp_path.resolve()}/elsewhere/optuna.db"
    cfg = _compose(tmp_path, "tracking.uri=postgresql+psycopg2://u@db/mlflow")
    assert search.study_storage(cfg, cfg.hydra.sweeper) == (
        "postgresql+psycopg2://u@db/mlflow?options=-csearch_path%3Doptuna"  # the same database, schema optuna
    )
    cfg = _compose(tmp_path, "tracking.uri=http://127.0.0.1:5000")  # a server: its database is unknown here
    assert search.study_storage(cfg, cfg.hydra.sweeper) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    assert "hydra.sweeper.storage=postgresql" in search.storage_note(cfg, cfg.hydra.sweeper)
    cfg = _compose(tmp_path, "tracking.uri=http://127.0.0.1:5000", "hydra.sweeper.storage=sqlite:////x/s.db")
    assert search.study_storage(cfg, cfg.hydra.sweeper) == "sqlite:////x/s.db"
    assert search.storage_note(cfg, cfg.hydra.sweeper) is None


@pytest.mark.parametrize(
    "override,message",
    [
        ("hydra.sweeper.pruner=patient", "hydra.sweeper.pruner=patient: unknown pruner; choose one of median, "),
        ("+hydra.sweeper.pruner_options.n_startup=3", "hydra.sweeper.pruner_options={'n_startup': 3}: not options"),
        ("hydra.sweeper.sampler.name=cmaes", "unknown sampler"),
        ("hydra.sweeper.direction=up", "choose maximize or minimize"),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0: must be a positive"),
        ("hydra.sweeper.storage=sqlite:///:memory:", "an in-memory study cannot be shared"),
        ("hydra.sweeper.storage=sqlite:////no/such/folder/optuna.db", "/no/such/folder is not a writable folder"),
        ("hydra.sweeper.storage=postgresql://u:secret@127.0.0.1:9/optuna", "no database driver for it"),
        ("hydra.sweeper.storage=postgresql+psycopg2://u:secret@127.0.0.1:9/optuna", "cannot reach the study's"),
        ("hydra.sweeper.storage=nonsense", "not a database URL"),
    ],
)
def test_bad_search_settings_are_one_line_and_write_nothing(tmp_path, override, message):
    cfg = _compose(tmp_path, override)
    with pytest.raises(ConfigError) as err:
        check_search_config(cfg)
    text = str(err.value)
    assert message in text and "\n" not in text and "secret" not in text, text
    assert not (tmp_path / "optuna.db").exists() and not Path("/no/such/folder").exists()


def test_a_kept_study_with_the_other_direction_or_all_its_trials_is_refused(tmp_path):
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/optuna.db", study_name="titlesweep", direction="minimize"
    )
    study.tell(study.ask(), 0.5)
    check_search_config(_compose(tmp_path, "hydra.sweeper.direction=minimize"))  # the same: fine
    with pytest.raises(ConfigError, match="study titlesweep in sqlite:///.* minimizes; continue it with direction="):
        check_search_config(_compose(tmp_path))
    with pytest.raises(ConfigError, match="n_trials=1: study titlesweep in .* already holds 1 trials; continue it"):
        check_search_config(_compose(tmp_path, "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=1"))


# ------------------------------------------------------------------ the trial's side: report and prune


@pytest.fixture
def as_trial_job(tmp_path):
    """Run the body as Hydra job ``number`` of an Optuna sweep (HydraConfig set as Hydra sets it)."""

    def enter(number: int | None, *overrides: str):
        env = [f"++hydra.job.env_set.{search.TRIAL_ENV}={number}"] if number is not None else []
        cfg = _compose(tmp_path, "+hydra.sweeper.pruner_options={n_startup_trials: 1}", *env, *overrides)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield enter
    HydraConfig.instance().cfg = None


def _study_with_a_finished_trial(tmp_path, values=(0.6, 0.8, 0.82, 0.9)):
    """The study as the sweeper leaves it: trial 0 reported ``values`` at steps 10, 20, ... and completed."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/optuna.db", study_name="titlesweep", direction="maximize"
    )
    first = study.ask()
    for i, value in enumerate(values, start=1):
        first.report(value, 10 * i)
    study.tell(first, values[-1])
    return study


def test_a_trial_reports_each_validation_and_prunes_itself_when_behind(tmp_path, as_trial_job):
    study = _study_with_a_finished_trial(tmp_path)
    trial = study.ask()  # the sweeper asked for trial 1 and launched its job
    reporter = search.trial_reporter(as_trial_job(1))
    assert reporter.number == 1 and reporter.metric == "f1"  # optimized_metric best_val_f1
    assert reporter.report({"f1": 0.7, "loss": 0.5}, 10) is False  # ahead of trial 0 at step 10 (0.6)
    assert reporter.report({"f1": 0.85, "loss": 0.4}, 20) is False  # and at step 20 (0.8)
    assert reporter.report({"f1": 0.5, "loss": 0.6}, 30) is False  # its best so far (0.85) counts: >= 0.82
    assert reporter.report({"f1": 0.6, "loss": 0.6}, 40) is True  # 0.85 < 0.9: pruned
    frozen = study.get_trials()[1]
    assert frozen.state == TrialState.PRUNED and frozen.intermediate_values == {10: 0.7, 20: 0.85, 30: 0.5, 40: 0.6}
    # when the job returns, the sweeper tells its value; the trial stays PRUNED
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.titlesweep_optuna.optuna_sweeper import OptunaSweeper

    OptunaSweeper._tell(None, study, trial, JobReturn(_return_value=0.7, status=JobStatus.COMPLETED))
    assert study.get_trials()[1].state == TrialState.PRUNED


def test_a_trial_that_cannot_report_trains_on(tmp_path, as_trial_job, caplog):
    study = _study_with_a_finished_trial(tmp_path)
    trial = study.ask()
    reporter = search.trial_reporter(as_trial_job(1))
    study.tell(trial, state=TrialState.FAIL)  # e.g. the sweep was interrupted and failed its trials
    assert reporter.report({"f1": 0.1}, 10) is False and reporter.report({"f1": 0.1}, 20) is False
    assert "Optuna trial 1: cannot report to the study" in caplog.text and caplog.text.count("cannot report") == 1


def test_the_pruner_setting_reaches_the_trial(tmp_path, as_trial_job):
    study = _study_with_a_finished_trial(tmp_path)
    study.ask()
    reporter = search.trial_reporter(as_trial_job(1, "hydra.sweeper.pruner=none"))
    assert reporter.report({"f1": 0.0}, 10) is False and reporter.report({"f1": 0.0}, 20) is False
    assert study.get_trials()[1].state == TrialState.RUNNING


def test_only_an_optuna_trial_with_a_validation_objective_reports(tmp_path, as_trial_job):
    _study_with_a_finished_trial(tmp_path).ask()
    assert search.trial_reporter(as_trial_job(None)) is None  # a search job without a trial: none
    assert search.trial_reporter(as_trial_job(1, "optimized_metric=test_f1")) is None  # nothing to report early
    HydraConfig.instance().cfg = None
    assert search.trial_reporter(_compose(tmp_path)) is None  # a single run
    assert search.validation_key("best_val_macro_f1") == "macro_f1"


def test_the_failed_or_crashed_job_fails_its_trial(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.titlesweep_optuna.optuna_sweeper import OptunaSweeper

    study = optuna.create_study(direction="maximize")
    for result in (
        JobReturn(_return_value=math.nan, status=JobStatus.COMPLETED),  # run_job's failed job in a sweep
        JobReturn(_return_value=RuntimeError("boom"), status=JobStatus.FAILED),
    ):
        OptunaSweeper._tell(None, study, study.ask(), result)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]


# ------------------------------------------------------------------ end to end

# conf/debug/smoke.yaml on the toy CSV (tests/test_sweep.py's SMALL); lr and the FGM epsilon fixed at
# tiny_bert's own: the search samples focal gamma and layer decay.
SMALL = ["+debug=smoke", "trainer.limit_eval=48", "extra_eval=null", "adversarial.epsilon=0.05"]


def _sweep(tmp_path, toy_csv, *overrides, env=None, expect_rc=0, tracking=None):
    done = run_entry_point(
        "train.py", "--multirun", "search=optuna", f"paths.outputs={tmp_path / 'out'}", "data=csv",
        f"data.train={toy_csv}", *SMALL, *overrides, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == expect_rc, done.stdout[-2000:] + done.stderr[-3000:]
    client = MlflowClient(tracking or f"sqlite:///{tmp_path / 'out'}/mlflow.db")
    experiment = client.get_experiment_by_name("titlesweep")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return done, client, runs


def _parents(runs):
    return sorted((r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"), key=lambda r: r.info.start_time)


def _children(runs, parent=None):
    return [
        r
        for r in runs
        if r.data.tags.get(ROLE_TAG) == "job"
        and (parent is None or r.data.tags["mlflow.parentRunId"] == parent.info.run_id)
    ]


def _study_of(parent):
    """The study, opened from what MLflow shows on the sweep run."""
    tags = parent.data.tags
    return optuna.load_study(study_name=tags["optuna.study_name"], storage=tags["optuna.storage"])


@pytest.mark.slow
def test_a_kept_study_continues_with_parallel_trials_that_the_pruner_stops(tmp_path, toy_csv):
    # The objective is validation ROC-AUC, read every 3 steps (at 3: 0.99 at lr 2e-3, 0.08 at lr 1e-7);
    # the median pruner may stop a trial from the 2nd on.
    common = [
        "optimized_metric=best_val_roc_auc",
        "trainer.eval_every_steps=3",
        "+hydra.sweeper.pruner_options={n_startup_trials: 1}",
    ]
    _sweep(tmp_path, toy_csv, *common, "hydra.sweeper.n_trials=1", "schedule.lr=2e-3")
    # the same command with n_trials=3 continues the study: two more trials, at once, that cannot learn
    done, client, runs = _sweep(
        tmp_path, toy_csv, *common, "hydra.sweeper.n_trials=3", "schedule.lr=1e-7",
        "launcher=parallel", "hydra.sweeper.n_jobs=2",
    )  # fmt: skip
    first, second = _parents(runs)
    assert "Optuna study titlesweep in sqlite:///" in done.stdout and "1 trials there, up to 3" in done.stdout
    assert "is launching 2 jobs" in done.stdout and second.data.tags["launcher"] == "JoblibLauncher"
    assert "database is locked" not in done.stdout + done.stderr
    study = _study_of(second)
    assert second.data.tags["optuna.storage"] == f"sqlite:///{(tmp_path / 'out').resolve()}/optuna.db"
    trained, *hopeless = study.get_trials()
    assert [(t.number, t.state) for t in study.get_trials()] == [
        (0, TrialState.COMPLETE), (1, TrialState.PRUNED), (2, TrialState.PRUNED),
    ]  # fmt: skip
    assert sorted(trained.intermediate_values) == [3, 6, 9, 11]
    assert [list(t.intermediate_values) for t in hopeless] == [[3], [3]]  # stopped at their first evaluation
    # a continued study's sampler does not start over, and parallel trials differ
    assert len({t.params["loss.gamma"] for t in study.get_trials()}) == 3
    # each trial is one child run of its sweep; the pruned ones FINISHED, tagged, scored on test
    (run0,) = _children(runs, first)
    pruned = {run.data.tags["optuna.trial"]: run for run in _children(runs, second)}
    assert run0.data.tags["optuna.trial"] == "0" and run0.data.tags.get("pruned") is None
    assert trained.value == pytest.approx(run0.data.metrics["best_val_roc_auc"])
    assert sorted(pruned) == ["1", "2"]
    for trial in hopeless:
        run, step = pruned[str(trial.number)], trial.last_step
        assert run.info.status == "FINISHED" and run.data.tags["pruned"] == "true"
        assert run.data.tags["pruned_at_step"] == str(step) and math.isfinite(run.data.metrics["test_accuracy"])
        assert f"{run.info.run_name} (pruned at step {step})" in done.stdout  # the comparison shows it apart
    # the sweep run: the study's best trial (from the first sweep) and where the study is
    assert second.data.metrics["best_value"] == pytest.approx(trained.value)
    assert {k: float(v) for k, v in second.data.params.items() if k.startswith("best.")} == pytest.approx(
        {f"best.{k}": v for k, v in trained.params.items()}
    )
    assert second.data.tags["optuna.study_name"] == "titlesweep" and second.info.status == "FINISHED"
    assert second.data.metrics["trials_pruned"] == 2 and first.data.metrics["trials_pruned"] == 0


@pytest.mark.slow
def test_an_unreachable_storage_is_one_line_before_anything_is_written(tmp_path):
    # The check runs in a callback of the search preset, before the one that makes the MLflow parent
    # run; test_bad_search_settings_are_one_line_and_write_nothing covers the other bad settings.
    storage = "postgresql+psycopg2://u:secret@127.0.0.1:9/optuna"
    done = run_entry_point(
        "train.py", "--multirun", "search=optuna", f"paths.outputs={tmp_path}", f"hydra.sweeper.storage={storage}"
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: hydra.sweeper.storage=postgresql+psycopg2://127.0.0.1:9/optuna: cannot reach the study's database "
        '(connection to server at "127.0.0.1", port 9 failed: Connection refused)'
    ]
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow parent run (nor a store), no study


def test_a_study_kept_by_another_optuna_version_is_one_line(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(storage=search.open_storage(storage), study_name="titlesweep", direction="maximize")
    with sqlite3.connect(tmp_path / "optuna.db") as db:  # as a storage stamped by an older Optuna
        db.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")
    for check in (
        lambda: search.check_storage(storage, "titlesweep", "maximize", n_trials=4),  # before the sweep
        lambda: search.open_storage(storage),  # in the sweeper and in each trial's job
    ):
        with pytest.raises(ConfigError) as err:
            check()
        assert "\n" not in str(err.value) and str(err.value).startswith(f"hydra.sweeper.storage={storage}: ")
        assert "optuna storage upgrade" in str(err.value)


# ------------------------------------------------------------------ many workers on real services

ONE_THREAD = ["trainer.num_threads=1", "schedule.lr=2e-3"]  # two sweeps or jobs at once on 2 cores


@pytest.mark.cluster
@pytest.mark.slow
def test_a_sweep_starting_while_another_creates_the_studys_tables_waits_for_them():
    """The race CI met with two sweeps started together on an empty database: one had made Optuna's
    tables and was stamping their version (alembic_version, created and not yet committed) when the
    other's check found the tables and stamped too, so its CREATE TABLE waited and then failed."""
    import sqlalchemy
    from optuna.storages._rdb.models import BaseModel

    from services.postgres import postgres_database, why_not_available

    if why_not_available():
        pytest.skip(why_not_available())
    with postgres_database() as backend:
        storage = f"{backend}?options=-csearch_path%3Doptuna"
        engine = sqlalchemy.create_engine(storage)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE SCHEMA optuna"))
        BaseModel.metadata.create_all(engine)  # the first sweep's tables, committed
        stamped, stamping = threading.Event(), engine.connect()
        try:
            stamping.begin()  # the first sweep's version table: created, committed ~2 s later
            stamping.execute(sqlalchemy.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
            threading.Timer(2, lambda: (stamping.commit(), stamped.set())).start()
            search.check_storage(storage, "titlesweep", "maximize", n_trials=4)
            assert stamped.is_set()
            storage_now = search.open_storage(storage)
            assert storage_now.get_all_studies() == []  # one version row, readable by Optuna
        finally:
            stamped.wait(10)
            stamping.close()
            engine.dispose()


@pytest.mark.cluster
@pytest.mark.slow
def test_two_sweep_commands_share_one_postgresql_study_and_lose_no_trial(tmp_path, toy_csv, monkeypatch):
    from services.mlflow_server import mlflow_server
    from services.postgres import postgres_database, why_not_available

    if why_not_available():
        pytest.skip(why_not_available())
    with postgres_database() as backend, mlflow_server(backend, tmp_path / "artifacts") as url:
        # the team's MLflow database, the study in a schema of its own (Optuna and MLflow both keep an
        # alembic_version table); two commands, as from two machines (own outputs folders), at once
        storage = f"{backend}?options=-csearch_path%3Doptuna"
        sweeps = [
            subprocess.Popen(
                command(
                    "train.py",
                    "--multirun",
                    "search=optuna",
                    f"paths.outputs={tmp_path / name}",
                    "data=csv",
                    f"data.train={toy_csv}",
                    *SMALL,
                    *ONE_THREAD,
                    f"tracking.uri={url}",
                    f"hydra.sweeper.storage='{storage}'",
                    "hydra.sweeper.n_trials=4",
                    f"hydra.sweeper.sampler.seed={seed}",
                ),  # fmt: skip
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for seed, name in enumerate(("machine_a", "machine_b"))
        ]
        outputs = [sweep.communicate(timeout=600)[0] for sweep in sweeps]
        assert [sweep.returncode for sweep in sweeps] == [0, 0], "\n".join(o[-3000:] for o in outputs)
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("titlesweep").experiment_id])
        parents, children = _parents(runs), _children(runs)
        assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
        assert {p.data.tags["optuna.storage"] for p in parents} == {storage.replace("postgres@", "")}  # user hidden
        monkeypatch.setenv("PGUSER", "postgres")  # who opens it supplies the user (and password: ~/.pgpass)
        trials = _study_of(parents[0]).get_trials()
    # both commands asked the one study until it held n_trials: each trial ran once, as one MLflow run
    assert sorted(t.number for t in trials) == list(range(len(trials))) and 4 <= len(trials) <= 5
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [t.number for t in trials]
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(_children(runs, parent) for parent in parents)  # both commands ran trials of it
    for trial in trials:
        (child,) = [c for c in children if c.data.tags["optuna.trial"] == str(trial.number)]
        assert float(child.data.params["loss.gamma"]) == pytest.approx(trial.params["loss.gamma"])
        assert trial.value == pytest.approx(child.data.metrics["best_val_f1"])


@pytest.mark.cluster
@pytest.mark.slow
def test_trials_run_as_slurm_jobs(tmp_path, toy_csv):
    from services.slurm import slurm_cluster, why_not_available

    if why_not_available():
        pytest.skip(why_not_available())
    slurm = ["launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0"]
    slurm += ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10"]
    with slurm_cluster() as cluster:
        done, client, runs = _sweep(
            tmp_path,
            toy_csv,
            *slurm,
            *ONE_THREAD,
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=2",
            env=cluster.env,
        )
        jobs = [d.name for d in (tmp_path / "out").glob("multirun/*/*/.submitit/*") if re.fullmatch(r"\d+_\d+", d.name)]
        states = {j: cluster.ended(j)["JobState"] for j in jobs}
        assert len(jobs) == 2 and set(states.values()) == {"COMPLETED"}, states
    (parent,) = _parents(runs)
    assert parent.data.tags["launcher"] == "SlurmLauncher"
    trials = _study_of(parent).get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    children = _children(runs, parent)
    assert sorted(c.data.tags["optuna.trial"] for c in children) == ["0", "1"]
    assert all(c.info.status == "FINISHED" and c.data.metrics["test_accuracy"] >= 0.8 for c in children)
