"""Sweeps as users run them: one MLflow parent run per --multirun, a child per job, with the
sequential, parallel (joblib) and submitit-local launchers and the Optuna sweeper; compare.py."""

import math
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from entry_points import run_entry_point
from lib import compare
from lib.tracking import ROLE_TAG

pytestmark = pytest.mark.slow  # end to end, through subprocesses

# The toy set's 400 rows leave about 320 for training: 10 steps of 32, enough for tiny_bert's own
# recipe (conf/model/tiny_bert.yaml) to learn it, so every job's numbers mean something.
SMALL = [
    "+debug=smoke",
    "trainer.limit_eval=48",
    "extra_eval=null",
    "trainer.log_every_steps=1",
]  # conf/debug/smoke.yaml
LEARNED = 0.8  # test accuracy a job must reach on the toy set (chance: 0.5)


def sweep(tmp_path, toy_csv, *overrides, expect_rc=0):
    done = run_entry_point(
        "train.py", "--multirun", f"paths.outputs={tmp_path / 'out'}", "data=csv", f"data.train={toy_csv}",
        *SMALL, *overrides, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == expect_rc, done.stdout[-1500:] + done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'out'}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("titlesweep").experiment_id])
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]
    return done, client, parents, children


def _check_children(parent, children, n, learned=True):
    assert len(children) == n
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        assert child.info.status == "FINISHED"
        if learned:  # a constant classifier would pass every check below
            assert child.data.metrics["test_accuracy"] >= LEARNED and child.data.metrics["test_f1"] > 0.5, (
                child.info.run_name,
                child.data.metrics,
            )
        for key in ("test_accuracy", "test_f1", "best_val_f1", "train_samples_per_s"):
            assert math.isfinite(child.data.metrics[key]), key
    if learned and n > 1:  # different recipes train differently
        assert len({c.data.metrics["test_loss"] for c in children}) == n


def _train_loss_steps(client, run_id):
    return [m.step for m in client.get_metric_history(run_id, "train_loss")]


def test_sequential_sweep_makes_one_parent_and_a_child_per_job(tmp_path, toy_csv):
    done, client, parents, children = sweep(tmp_path, toy_csv, "loss=ce,focal")
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 2
    assert "loss=ce,focal" in parent.data.tags["sweep_command"]
    _check_children(parent, children, 2)
    assert sorted(c.info.run_name for c in children) == ["loss=ce", "loss=focal"]
    # the sweep's end prints the comparison and writes it beside the jobs, as compare.py would
    assert "(* best per column)" in done.stdout and "loss=focal" in done.stdout
    assert f"(run {parent.info.run_id}) written to {parent.data.tags['sweep_dir']}/comparison" in done.stdout
    assert (Path(parent.data.tags["sweep_dir"]) / "comparison" / "comparison.md").is_file()
    # the MLflow UI tells the same story: the sweep's page describes it with the command and the table
    note = client.get_run(parent.info.run_id).data.tags["mlflow.note.content"]
    assert parent.data.tags["sweep_command"] in note and "2 jobs" in note
    for child in children:
        row = next(line for line in note.splitlines() if line.startswith(f"| {child.info.run_name} |"))
        assert f"{child.data.metrics['test_accuracy']:.4f}" in row, row
        assert f"{child.data.metrics['test_accuracy']:.4f}" in child.data.tags["mlflow.note.content"]
    experiment = client.get_experiment_by_name("titlesweep")  # opens in the runs view, not the GenAI one
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # compare.py on that store: table printed, files written and logged on the sweep run
    out = run_entry_point("compare.py", f"paths.outputs={tmp_path / 'out'}", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loss=focal" in out.stdout and "test acc" in out.stdout
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert logged == {
        f"comparison/{n}" for n in ("comparison.md", "comparison.csv", "comparison_scores.png", "validation_curves.png")
    }


def test_failing_job_fails_the_sweep_but_not_the_other_jobs(tmp_path, toy_csv):
    done, client, parents, children = sweep(tmp_path, toy_csv, "trainer.batch_size=16,500", expect_rc=1)
    (parent,) = parents
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_failed"] == 1
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
    assert "1 of 2 sweep jobs failed" in done.stderr
    (failed,) = [c for c in children if c.info.status == "FAILED"]
    assert f"failed: {failed.info.run_name} ({failed.info.run_id}): DataError" in done.stdout  # its one-line error


def test_parallel_launcher_loses_no_run_or_metric(tmp_path, toy_csv):
    done, client, parents, children = sweep(
        tmp_path, toy_csv, "launcher=parallel", "loss=ce,focal", "adversarial=none,fgm"
    )
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "JoblibLauncher"
    _check_children(parent, children, 4)
    for child in children:  # every logging step of every job arrived
        steps = int(child.data.params["train.total_steps"])
        assert steps >= 8 and _train_loss_steps(client, child.info.run_id) == list(range(1, steps + 1))
    assert "database is locked" not in done.stderr


def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path, toy_csv):
    done, client, parents, children = sweep(tmp_path, toy_csv, "launcher=local", "loss=ce,focal")
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "LocalLauncher"
    _check_children(parent, children, 2)


def test_optuna_sweep_logs_its_best_trial_on_the_parent(tmp_path, toy_csv):
    # lr and the FGM epsilon fixed at tiny_bert's own (the search space is the hub models'): Optuna
    # samples focal gamma and layer decay, and every trial must learn.
    done, client, parents, children = sweep(
        tmp_path, toy_csv, "search=optuna", "hydra.sweeper.n_trials=3", "schedule.lr=2e-3", "adversarial.epsilon=0.05"
    )
    (parent,) = parents
    _check_children(parent, children, 3)
    best = max(c.data.metrics["best_val_f1"] for c in children)
    assert parent.data.metrics["best_value"] == pytest.approx(best)
    assert {"best.loss.gamma", "best.schedule.layer_decay"} <= set(parent.data.params)
    assert "best.adversarial.epsilon" not in parent.data.params and "best.schedule.lr" not in parent.data.params


def _fake_store(tmp_path):
    """A sweep of three runs with known metrics, written straight to MLflow."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/fake.db")
    client = MlflowClient()
    exp = client.create_experiment("titlesweep", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="sweep-x", tags={ROLE_TAG: "sweep", "sweep_dir": str(tmp_path / "sw")})
    rows = [
        ("model=bert loss=ce", 0.80, 0.81, 120.0, 0.70),
        ("model=scibert loss=focal", 0.90, 0.88, 150.0, 0.75),
        ("model=roberta loss=ce", 0.85, 0.91, 100.0, 0.72),
    ]
    for overrides, acc, f1, seconds, cite in rows:
        run = client.create_run(
            exp,
            run_name=overrides.replace(" ", ","),
            tags={
                ROLE_TAG: "job",
                "mlflow.parentRunId": parent.info.run_id,
                "hydra_overrides": overrides + " trainer.epochs=1",
            },
        )
        for key, value in {
            "test_accuracy": acc,
            "test_f1": f1,
            "train_seconds": seconds,
            "citeseer_dev_accuracy": cite,
            "citeseer_dev_f1": cite,
        }.items():
            client.log_metric(run.info.run_id, key, value)
        client.log_param(run.info.run_id, "model.name", overrides.split()[0].split("=")[1])
        client.log_metric(run.info.run_id, "val_f1", f1 - 0.05, step=10)
        client.set_terminated(run.info.run_id)
    return client, exp


def test_compare_marks_the_best_rows_and_writes_its_files(tmp_path):
    client, exp = _fake_store(tmp_path)
    parent, runs = compare.select_runs(client, "titlesweep", None, {})
    comparison = compare.build_comparison(parent, runs)
    assert comparison.overrides == ["loss", "model"]  # trainer.epochs is the same everywhere
    best = compare.best_rows(comparison)
    names = comparison.table["run"]
    assert names[best["test_accuracy"].pop()] == "model=scibert,loss=focal"
    assert names[best["test_f1"].pop()] == "model=roberta,loss=ce"
    assert names[best["train_seconds"].pop()] == "model=roberta,loss=ce"  # lower is better
    assert names[best["citeseer_dev_accuracy"].pop()] == "model=scibert,loss=focal"
    files = compare.write_outputs(client, comparison, tmp_path / "cmp")
    assert [f.name for f in files] == [
        "comparison.md",
        "comparison.csv",
        "comparison_scores.png",
        "validation_curves.png",
    ]
    assert "**0.9000**" in files[0].read_text() and all(f.stat().st_size > 0 for f in files)
    # a filter narrows the runs, across sweeps
    _, only = compare.select_runs(client, "titlesweep", None, {"model": "scibert"})
    assert [r.info.run_name for r in only] == ["model=scibert,loss=focal"]


def test_a_filtered_comparison_keeps_runs_trained_outside_a_sweep(tmp_path):
    client, exp = _fake_store(tmp_path)
    single = client.create_run(exp, run_name="single-scibert", tags={"hydra_overrides": "model=scibert"})
    client.log_param(single.info.run_id, "model.name", "scibert")
    client.log_metric(single.info.run_id, "test_accuracy", 0.5)
    client.set_terminated(single.info.run_id)
    evaluation = client.create_run(exp, run_name="eval-single", tags={ROLE_TAG: "eval"})
    client.log_param(evaluation.info.run_id, "model.name", "scibert")  # not a training run: never compared
    _, runs = compare.select_runs(client, "titlesweep", None, {"model": "scibert"})
    assert sorted(r.info.run_name for r in runs) == ["model=scibert,loss=focal", "single-scibert"]
    table = compare.build_comparison(None, runs).table
    assert sorted(table["run"]) == ["model=scibert,loss=focal", "single-scibert"]


def test_the_comparison_table_is_printed_whole_in_a_log_file(tmp_path):
    import io

    from rich.console import Console

    client, _ = _fake_store(tmp_path)
    parent, runs = compare.select_runs(client, "titlesweep", None, {})
    log_file = io.StringIO()  # not a terminal, as in CI or a SLURM .out file
    compare.print_table(compare.build_comparison(parent, runs), Console(file=log_file))
    text = log_file.getvalue()
    assert "…" not in text and "�" not in text
    assert max(len(line) for line in text.splitlines()) > 80  # wider than the old 80-column cut
    for cell in ("model=scibert,loss=focal", "citeseer_dev acc", "0.9000*", "150.0"):
        assert cell in text, cell
