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


def _sweep(tmp_path, toy_csv, uri, *extra, multirun=True):
    return run_entry_point(
        "train.py",
        *(["--multirun"] if multirun else []),
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
        "([Errno 111] Connection refused); start it (docs/tracking.md: team set-up) or leave tracking.uri unset "
        "for the local store"
    ]


PASSWORD = "Pw-s3cret-4711"


def _files_holding(root, secret: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_a_password_in_the_tracking_uri_is_written_nowhere(tmp_path, toy_csv):
    # A run and a 2-job sweep with user:password in tracking.uri: the secret must not reach the server's
    # database or artifacts, the run and sweep folders (Hydra's own .hydra files included), or the output.
    store, artifacts = tmp_path / "server.db", tmp_path / "server-artifacts"
    with mlflow_server(f"sqlite:///{store}", artifacts) as url:
        uri = url.replace("http://", f"http://alice:{PASSWORD}@")
        single = _sweep(tmp_path, toy_csv, uri, multirun=False)  # one run, with the model logged
        assert single.returncode == 0, single.stderr[-3000:]
        sweep = _sweep(tmp_path, toy_csv, uri, "loss=ce,focal", "tracking.log_model=false")
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("titlesweep").experiment_id])
        assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)  # 1 run + parent + 2 jobs
        assert any(r.data.tags.get("hydra_overrides", "").startswith(f"tracking.uri={url}") for r in runs)
    secret = PASSWORD.encode()
    for done in (single, sweep):
        assert PASSWORD not in done.stdout + done.stderr
    assert secret not in store.read_bytes()
    assert _files_holding(artifacts, secret) == []
    assert _files_holding(tmp_path / "out", secret) == []
    assert list((tmp_path / "out").rglob("multirun.yaml")) and list((tmp_path / "out").rglob("overrides.yaml"))
