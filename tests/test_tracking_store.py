"""The local SQLite store when several processes open it for the first time at once (a sweep's
parallel jobs, two commands started together, a test polling the store a job is creating): MLflow
creates a new store's tables without a lock, and without lib.tracking's one all but the first
process failed ("duplicate column name: step")."""

import errno
import fcntl
import multiprocessing

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from lib.tracking import create_sqlite_store, tracking_uri

ROUNDS, PROCESSES = 3, 3  # before the lock: 1 to 3 failures in every round
pytestmark = pytest.mark.slow  # ~15 s: each new store's migrations run once per round


def _open_store(outputs: str, start, answers) -> None:
    cfg = OmegaConf.create({"tracking": {"uri": None}, "paths": {"outputs": outputs}})
    start.wait()  # every process at the same moment, as jobs launched together are
    try:
        MlflowClient(tracking_uri(cfg)).search_experiments()
        answers.put("ok")
    except Exception as err:  # the failure itself is what the test reports
        answers.put(f"{type(err).__name__}: {str(err).splitlines()[0]}")


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path):
    fork = multiprocessing.get_context("fork")  # mlflow already imported: the processes start at once
    answers = fork.Queue()
    for round_ in range(ROUNDS):
        start = fork.Barrier(PROCESSES)
        outputs = str(tmp_path / f"outputs{round_}")
        procs = [fork.Process(target=_open_store, args=(outputs, start, answers)) for _ in range(PROCESSES)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
    got = [answers.get(timeout=10) for _ in range(ROUNDS * PROCESSES)]
    assert got == ["ok"] * (ROUNDS * PROCESSES), [g for g in got if g != "ok"]


def test_a_store_whose_lock_cannot_be_opened_is_still_read(tmp_path):
    # e.g. a read-only copy of someone's outputs (not reproducible as root, who writes anywhere; here the
    # lock's name is taken by a folder): reading needs no lock, and the error is MLflow's to give if any
    cfg = OmegaConf.create({"tracking": {"uri": None}, "paths": {"outputs": str(tmp_path / "outputs")}})
    MlflowClient(tracking_uri(cfg)).create_experiment("titlesweep")
    lock = tmp_path / "outputs" / "mlflow.db.lock"
    lock.unlink()
    lock.mkdir()
    create_sqlite_store.cache_clear()
    assert MlflowClient(tracking_uri(cfg)).get_experiment_by_name("titlesweep") is not None


def test_a_file_system_without_locks_still_gets_its_store(tmp_path, monkeypatch):
    # some cluster file systems refuse flock (ENOSYS): the store is made unlocked, as MLflow makes it
    def no_locks(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    cfg = OmegaConf.create({"tracking": {"uri": None}, "paths": {"outputs": str(tmp_path / "outputs")}})
    MlflowClient(tracking_uri(cfg)).create_experiment("titlesweep")
    assert MlflowClient(tracking_uri(cfg)).get_experiment_by_name("titlesweep") is not None
