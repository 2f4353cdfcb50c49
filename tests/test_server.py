"""A real MLflow tracking server on loopback (SQLite backend): parallel jobs lose nothing; a server
that does not answer fails the command at once with one line."""

import time

import pytest
from mlflow import MlflowClient

from entry_points import run_entry_point
from lib.tracking import ROLE_TAG
from services.mlflow_server import free_port, mlflow_server

pytestmark = pytest.mark.slow  # end to end, through subprocesses


@pytest.fixture
def server(tmp_path):
    with mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "server-artifacts") as url:
        yield url


def _sweep(tmp_path, toy_csv, uri, *extra):
    return run_entry_point(
        "train.py",
        "--multirun",
        f"tracking.uri={uri}",
        f"paths.outputs={tmp_path / 'out'}",
        "data=csv",
        f"data.train={toy_csv}",
        "model=tiny_bert",
        "trainer.epochs=1",
        "trainer.limit_train=96",
        "trainer.log_every_steps=1",
        "extra_eval=null",
        *extra,
        timeout=600,
    )


def test_four_parallel_jobs_against_a_server_lose_nothing(tmp_path, toy_csv, server):
    done = _sweep(
        tmp_path,
        toy_csv,
        server,
        "launcher=parallel",
        "loss=ce,focal",
        "adversarial=none,fgm",
        "tracking.log_model=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name("titlesweep").experiment_id])
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]
    assert len(runs) == 5 and len(children) == 4 and all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")] == [1, 2, 3]
        assert "reports/test/predictions.csv" in [
            f.path for f in client.list_artifacts(child.info.run_id, "reports/test")
        ]
    assert not (tmp_path / "out" / "mlflow.db").exists()  # nothing went to the local store


def test_unreachable_server_fails_fast_with_one_line(tmp_path, toy_csv):
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.time()
    done = _sweep(tmp_path, toy_csv, uri)
    assert time.time() - start < 60
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: tracking.uri={uri}: the MLflow tracking server does not answer "
        "([Errno 111] Connection refused); start it (README: Team set-up) or leave tracking.uri unset "
        "for the local store"
    ]
