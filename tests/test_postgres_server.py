"""The team set-up for real: an MLflow tracking server on a PostgreSQL backend, both on 127.0.0.1
(tests/services/postgres.py). Parallel jobs lose nothing, and compare.py and predict.py work
against it. Select alone with `python -m pytest -m cluster`."""

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import write_toy_csv
from entry_points import run_entry_point
from lib.tracking import ROLE_TAG
from services.mlflow_server import mlflow_server
from services.postgres import postgres_database, why_not_available

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(why_not_available() is not None, reason=str(why_not_available())),
]
TINY = ["model=tiny_bert", "data=csv", "trainer.epochs=1", "extra_eval=null", "trainer.log_every_steps=1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("pg-artifacts")
    with postgres_database() as backend, mlflow_server(backend, artifacts) as url:
        yield url


def _files(local: Path) -> set[str]:
    return {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}


def _artifacts(client, run_id, path=""):
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_four_parallel_jobs_log_every_run_metric_and_artifact(tmp_path, server):
    toy = write_toy_csv(tmp_path / "toy.csv")
    done = run_entry_point(
        "train.py",
        "--multirun",
        "launcher=parallel",
        "loss=ce,focal",
        "adversarial=none,fgm",
        f"tracking.uri={server}",
        f"paths.outputs={tmp_path / 'out'}",
        f"data.train={toy}",
        "tracking.log_model=false",
        *TINY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name("titlesweep").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]
    assert len(runs) == 5 and len(children) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert parent.data.metrics["jobs_finished"] == 4
    for child in children:
        metrics, run_id = child.data.metrics, child.info.run_id
        assert metrics["test_accuracy"] >= 0.8, (child.info.run_name, metrics)  # the jobs learned
        steps = int(child.data.params["train.total_steps"])
        assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == list(range(1, steps + 1))
        assert len(client.get_metric_history(run_id, "val_f1")) == 1  # one evaluation per epoch, one epoch
        if child.data.params["adversarial.name"] == "fgm":
            assert len(client.get_metric_history(run_id, "adv_loss")) == steps
        # every file the job wrote into its reports folder is on the server, byte counts alike
        local = Path(child.data.tags["output_dir"])
        written = {f"reports/{f}" for f in _files(local / "reports")} | {"training_curves.png"}
        assert written <= _artifacts(client, run_id)
        sizes = {a.path: a.file_size for a in client.list_artifacts(run_id, "reports/test")}
        for path, size in sizes.items():
            assert (local / path).stat().st_size == size, path
    assert not (tmp_path / "out" / "mlflow.db").exists()  # nothing went to the local store


def test_compare_registers_and_predict_loads_by_alias_from_the_server(tmp_path, server):
    toy = write_toy_csv(tmp_path / "toy.csv", seed=3)
    common = [f"tracking.uri={server}", f"paths.outputs={tmp_path / 'out'}", "tracking.experiment=pg-registry"]
    done = run_entry_point("train.py", f"data.train={toy}", "tracking.log_model=true", *TINY, *common)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_entry_point(
        "compare.py",
        "model=tiny_bert",
        "register=true",
        "name=pg-titles",
        "experiment=pg-registry",
        f"out={tmp_path / 'cmp'}",
        common[0],
        common[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered pg-titles version 1" in done.stdout and (tmp_path / "cmp" / "comparison.csv").is_file()
    client = MlflowClient(server)
    version = client.get_model_version_by_alias("pg-titles", "champion")
    (run,) = client.search_runs([client.get_experiment_by_name("pg-registry").experiment_id])
    assert version.run_id == run.info.run_id

    fresh = pd.read_csv(write_toy_csv(tmp_path / "fresh.csv", n_per_class=20, seed=9))
    (tmp_path / "titles.txt").write_text("".join(f"{t}\n" for t in fresh["text"]))
    done = run_entry_point(
        "predict.py",
        "model=pg-titles@champion",
        f"input={tmp_path / 'titles.txt'}",
        f"output={tmp_path / 'scored.csv'}",
        common[0],
        common[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert len(scored) == 40 and (scored["label"] == fresh["label"]).mean() >= 0.8  # the registered model learned


def test_a_server_restart_during_a_sweep_loses_nothing_silently(tmp_path, tmp_path_factory):
    """The server goes away while the first job logs its steps and comes back 20 s later on the same
    port (state is in PostgreSQL). Each job either rides it out or fails with one line; no run is
    left RUNNING and no FINISHED run is incomplete; the parent counts the failures. Which outcome
    happens depends on timing: tests/test_sweep_outcome.py covers the orphan marking and the
    outcome's retries deterministically."""
    import threading
    import time

    from services.mlflow_server import free_port, start_mlflow_server, stop

    toy = write_toy_csv(tmp_path / "toy.csv", n_per_class=600)  # ~30 logged steps per job
    artifacts, port = tmp_path_factory.mktemp("pg-restart-artifacts"), free_port()
    with postgres_database("restart") as backend:
        url = f"http://127.0.0.1:{port}"
        procs = [start_mlflow_server(backend, artifacts, port)]
        client = MlflowClient(url)

        def a_job_is_logging() -> bool:
            try:
                experiments = [e.experiment_id for e in client.search_experiments()]
                runs = client.search_runs(experiments) if experiments else []
                return any(client.get_metric_history(r.info.run_id, "train_loss") for r in runs)
            except Exception:  # the store is still being created
                return False

        def restart_once_training_logs():
            deadline = time.time() + 300
            while time.time() < deadline and not a_job_is_logging():
                time.sleep(0.2)
            stop(procs[0])
            time.sleep(20)  # longer than the client's bounded retries (2, backoff 1 s)
            procs.append(start_mlflow_server(backend, artifacts, port))

        restarter = threading.Thread(target=restart_once_training_logs)
        restarter.start()
        try:
            done = run_entry_point(
                "train.py",
                "--multirun",
                "loss=ce,focal",
                f"tracking.uri={url}",
                f"paths.outputs={tmp_path / 'out'}",
                f"data.train={toy}",
                "tracking.log_model=false",
                *TINY,
            )
            restarter.join(timeout=400)
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        finally:
            for proc in procs:
                stop(proc)
    (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]
    assert not [r for r in runs if r.info.status == "RUNNING"]  # nothing left looking alive
    finished = [r for r in children if r.info.status == "FINISHED"]
    for run in finished:  # a FINISHED run is complete
        steps = int(run.data.params["train.total_steps"])
        assert "test_accuracy" in run.data.metrics
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(1, steps + 1))
    failed = int(parent.data.metrics["jobs_failed"])
    assert parent.data.metrics["jobs_total"] == 2 and failed == 2 - len(finished)
    if failed:
        assert parent.info.status == "FAILED" and done.returncode == 1
        assert f"error: {failed} of 2 sweep jobs failed" in done.stderr
        assert any("job failed:" in line for line in (done.stdout + done.stderr).splitlines())  # one line per job
    else:
        assert parent.info.status == "FINISHED" and done.returncode == 0
