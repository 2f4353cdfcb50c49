"""The end of a sweep (lib/sweep.py), deterministically, on a local SQLite MLflow store: child runs
left RUNNING are marked FAILED with an ``error`` tag and fail the parent, and the outcome is still
recorded when the store does not answer for a while (a tracking-server restart). The restart test in
tests/test_postgres_server.py may or may not hit these paths, depending on timing; these always do.
The store's outages are simulated at the client and the clock is fake: nothing here waits."""

import logging
import uuid

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from lib import sweep
from lib.tracking import ROLE_TAG

ORPHAN_ERROR = "its job ended without closing the run"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('outcome-store')}/mlflow.db"
    MlflowClient(uri).search_experiments()  # creates the database once: the migrations take seconds
    return uri


@pytest.fixture
def clock(monkeypatch):
    """lib.sweep's clock, faked: ``sleep`` advances ``monotonic`` at once and is counted."""

    class Clock:
        now, sleeps = 1000.0, []

        def monotonic(self):
            return self.now

        def sleep(self, seconds):
            self.sleeps.append(seconds)
            self.now += seconds

    fake = Clock()
    monkeypatch.setattr(sweep, "time", fake)
    return fake


class Sweep:
    """A parent run with one child per status in ``children`` (a RUNNING one is an orphan: its job
    ended without closing it), the sweep folder with ``launched`` job folders, and the callback that
    started it. The comparison printed and written at the end (charts: a second per sweep) runs only
    with ``compare``; otherwise the runs it would have compared are recorded in ``compared``."""

    def __init__(self, uri, tmp_path, monkeypatch, children, launched=None, compare=False):
        self.client = MlflowClient(uri)
        experiment = self.client.create_experiment(f"outcome-{uuid.uuid4().hex}")
        parent = self.client.create_run(experiment, run_name="sweep-test", tags={ROLE_TAG: "sweep"})
        self.parent = parent.info.run_id
        self.children = []
        for i, status in enumerate(children):
            tags = {"mlflow.parentRunId": self.parent, ROLE_TAG: "job"}
            run = self.client.create_run(experiment, run_name=f"loss=job{i}", tags=tags)
            self.client.log_metric(run.info.run_id, "test_accuracy", 0.9)
            if status != "RUNNING":
                self.client.set_terminated(run.info.run_id, status)
            self.children.append(run.info.run_id)
        sweep_dir = tmp_path / "multirun" / experiment
        for i in range(len(children) if launched is None else launched):
            (sweep_dir / str(i) / ".hydra").mkdir(parents=True)
        self.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
        self.callback = sweep.MlflowSweepCallback()
        self.callback.uri, self.callback.parent = uri, self.parent
        monkeypatch.chdir(tmp_path)  # the end-of-sweep comparison writes under ./outputs
        self.compared = []
        if not compare:
            monkeypatch.setattr(sweep, "_show_comparison", lambda client, parent: self.compared.append(parent))
        monkeypatch.setenv(sweep.PARENT_ENV, self.parent)  # the end pops them; monkeypatch restores them
        monkeypatch.setenv(sweep.SWEPT_ENV, "loss")

    def end(self) -> int:
        """on_multirun_end, as Hydra calls it: the exit status it asks for (0 when it returns)."""
        try:
            self.callback.on_multirun_end(self.config)
        except SystemExit as done:
            return done.code
        return 0

    def run(self, run_id):
        return self.client.get_run(run_id)


def _assert_orphan_failed_and_counted(s: Sweep, stderr: str) -> None:
    finished, orphan = (s.run(run_id) for run_id in s.children)
    parent = s.run(s.parent)
    assert orphan.info.status == "FAILED" and orphan.info.end_time is not None
    assert orphan.data.tags["error"].startswith(ORPHAN_ERROR)
    assert finished.info.status == "FINISHED" and "error" not in finished.data.tags
    assert parent.info.status == "FAILED"
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("jobs_")} == {
        "jobs_total": 2,
        "jobs_finished": 1,
        "jobs_failed": 1,
        "jobs_without_run": 0,
    }
    assert f"error: 1 of 2 sweep jobs failed (sweep run {s.parent})" in stderr


def test_a_child_left_running_is_failed_with_an_error_tag_and_fails_the_sweep(store, tmp_path, monkeypatch, capsys):
    s = Sweep(store, tmp_path, monkeypatch, ["FINISHED", "RUNNING"], compare=True)
    assert s.end() == 1
    out = capsys.readouterr()
    # the comparison at the end names the orphan with its error, one line
    assert f"failed: loss=job1 ({s.children[1]}): {ORPHAN_ERROR}" in out.out.replace("\n", " ")
    _assert_orphan_failed_and_counted(s, out.err)


def test_a_sweep_whose_children_all_finished_is_finished_and_tags_no_error(store, tmp_path, monkeypatch):
    s = Sweep(store, tmp_path, monkeypatch, ["FINISHED", "FINISHED"])
    assert s.end() == 0
    assert s.run(s.parent).info.status == "FINISHED" and s.run(s.parent).data.metrics["jobs_failed"] == 0
    assert all("error" not in s.run(c).data.tags for c in s.children)


def test_a_launched_job_without_a_run_fails_the_sweep(store, tmp_path, monkeypatch, capsys):
    s = Sweep(store, tmp_path, monkeypatch, ["FINISHED"], launched=2)  # one job never reached the store
    assert s.end() == 1
    metrics = s.run(s.parent).data.metrics
    assert (metrics["jobs_total"], metrics["jobs_failed"], metrics["jobs_without_run"]) == (2, 1, 1)
    assert "error: 1 of 2 sweep jobs failed" in capsys.readouterr().err


class FlakyStore:
    """Replaces lib.sweep.MlflowClient: real clients on the SQLite store, except that calls number
    ``first`` .. ``first + count - 1`` of ``method`` (of any method when None), counted over every
    client made, raise what MLflow's REST client raises while the server is down."""

    def __init__(self, method: str | None, first: int, count: int):
        self.method, self.first, self.count = method, first, count
        self.seen, self.failed = 0, []

    def __call__(self, uri=None):
        real, store = MlflowClient(uri), self

        class Client:
            def __getattr__(self, name):
                attr = getattr(real, name)
                if not callable(attr):
                    return attr

                def call(*args, **kwargs):
                    if store.method in (None, name):
                        number, store.seen = store.seen, store.seen + 1
                        if store.first <= number < store.first + store.count:
                            store.failed.append(name)
                            raise MlflowException(
                                f"API request to http://127.0.0.1:5000/api/2.0/mlflow/{name} failed with "
                                "exception ConnectionError(MaxRetryError('Connection refused'))"
                            )
                    return attr(*args, **kwargs)

                return call

        return Client()


@pytest.mark.parametrize(
    "method, first, count",
    [
        (None, 0, 3),  # down when the sweep ends: its first three calls fail
        ("set_tag", 0, 1),  # down before the orphan's error tag
        ("set_terminated", 0, 2),  # down after the orphan's error tag, before it is closed
        ("log_metric", 1, 1),  # down after the orphan was closed: counted again on the retry
        ("set_terminated", 1, 1),  # down as the parent is closed
    ],
    ids=["from-the-start", "orphan-tag", "orphan-close", "counts", "parent-close"],
)
def test_the_outcome_is_recorded_when_the_store_answers_again(
    store, tmp_path, monkeypatch, capsys, caplog, clock, method, first, count
):
    s = Sweep(store, tmp_path, monkeypatch, ["FINISHED", "RUNNING"])
    flaky = FlakyStore(method, first, count)
    monkeypatch.setattr(sweep, "MlflowClient", flaky)
    with caplog.at_level(logging.WARNING, logger=sweep.__name__):
        assert s.end() == 1
    assert len(flaky.failed) == count  # the outage happened where intended
    assert clock.sleeps == [2] * count  # one pause per failed try, and no real waiting
    retrying = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(retrying) == 1  # said once, not per try
    _assert_orphan_failed_and_counted(s, capsys.readouterr().err)
    assert s.compared == [s.parent]  # once, after the outcome was recorded


def test_a_store_that_never_answers_is_one_line_after_the_wait(store, tmp_path, monkeypatch, capsys, clock):
    s = Sweep(store, tmp_path, monkeypatch, ["FINISHED", "RUNNING"])
    monkeypatch.setattr(sweep, "MlflowClient", FlakyStore(None, 0, 10**9))
    start = clock.now
    assert s.end() == 1
    assert sweep.OUTCOME_WAIT_SECONDS < clock.now - start <= sweep.OUTCOME_WAIT_SECONDS + 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: could not record the sweep's outcome in {store} (API request to http://127.0.0.1:5000/api/2.0/"
        "mlflow/get_run failed with exception ConnectionError(MaxRetryError('Connection refused'))); "
        "runs there may still show RUNNING"
    ]
    assert s.run(s.children[1]).info.status == "RUNNING"  # nothing recorded, and the line says so


def test_a_parent_run_that_does_not_exist_is_not_retried(store, tmp_path, monkeypatch, capsys, clock):
    s = Sweep(store, tmp_path, monkeypatch, ["FINISHED"])
    s.callback.parent = "0" * 32  # deleted, or another store: waiting cannot help
    assert s.end() == 1
    assert clock.sleeps == []
    assert "error: could not record the sweep's outcome" in capsys.readouterr().err


def test_a_sweep_that_stopped_early_leaves_its_parent_killed_not_running(store, tmp_path, monkeypatch, clock):
    """What atexit runs: a parent still RUNNING (the sweep never reached its end) becomes KILLED; a
    sweep that recorded its outcome is left as it is."""
    stopped = Sweep(store, tmp_path, monkeypatch, ["FINISHED"])
    stopped.callback._close_if_still_running()
    parent = stopped.run(stopped.parent)
    assert parent.info.status == "KILLED" and "stopped before all jobs" in parent.data.tags["error"]
    ended = Sweep(store, tmp_path, monkeypatch, ["FINISHED"])
    assert ended.end() == 0
    ended.callback._close_if_still_running()
    parent = ended.run(ended.parent)
    assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
