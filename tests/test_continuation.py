"""Continuing a stopped sweep (tracking.resume_sweep): which parent is adopted, which continuation is
refused, and what each job does with the runs the stopped sweep left (lib/continuation.py)."""

import json

import pytest
from mlflow import MlflowClient

from lib import continuation
from lib.checkpoint import CHECKPOINT_TAG
from lib.continuation import OVERRIDES_TAG, SUPERSEDED_TAG
from lib.errors import ConfigError
from lib.sweep import child_runs
from lib.tracking import ROLE_TAG

SWEEP = ["data=csv", "loss=ce,focal,weighted_ce", "trainer.epochs=2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # One SQLite store for the module (creating one takes seconds); each test has its own experiment.
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


@pytest.fixture
def client(store, request):
    store.create_experiment(request.node.name)
    store.experiment_name = request.node.name
    return store


def _experiment(client):
    return client.get_experiment_by_name(client.experiment_name).experiment_id


def _sweep_run(client, overrides=SWEEP):
    tags = {ROLE_TAG: "sweep", "sweep_overrides": " ".join(overrides), OVERRIDES_TAG: json.dumps(overrides)}
    return client.create_run(_experiment(client), tags=tags, run_name="sweep").info.run_id


def _job_run(client, parent, loss, status, **tags):
    overrides = ["data=csv", f"loss={loss}", "trainer.epochs=2"]
    tags = {"mlflow.parentRunId": parent, ROLE_TAG: "job", OVERRIDES_TAG: json.dumps(overrides), **tags}
    run = client.create_run(_experiment(client), tags=tags, run_name=f"loss={loss}")
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_last_is_the_newest_sweep_and_an_id_is_checked(client):
    first, second = _sweep_run(client), _sweep_run(client)
    assert continuation.find_sweep_to_continue(client, client.experiment_name, "last").info.run_id == second
    assert continuation.find_sweep_to_continue(client, client.experiment_name, first).info.run_id == first
    with pytest.raises(ConfigError, match=r"^tracking.resume_sweep=0123abcd.{24}: no such run in the tracking store$"):
        continuation.find_sweep_to_continue(client, client.experiment_name, "0123abcd" * 4)
    job = _job_run(client, first, "ce", "FINISHED")
    with pytest.raises(ConfigError, match=f"^tracking.resume_sweep={job}: that run is not a sweep's parent run"):
        continuation.find_sweep_to_continue(client, client.experiment_name, job)


def test_a_sweep_is_found_by_its_name_or_the_start_of_its_run_id(client):
    # compare.py shows 8-character run ids and sweep names: both name the sweep to continue
    first, second = _sweep_run(client), _sweep_run(client)
    client.set_tag(first, "mlflow.runName", "seeds-of-ce")
    find = lambda target: continuation.find_sweep_to_continue(client, client.experiment_name, target).info.run_id  # noqa: E731
    assert find("seeds-of-ce") == first
    assert find(second[:8]) == second and find(first[:12]) == first

    # two sweeps of one name (the other is "sweep"): refused naming both, as continuing one would guess
    third = _sweep_run(client)
    with pytest.raises(ConfigError) as err:
        find("sweep")
    assert str(err.value) == (
        f"tracking.resume_sweep=sweep: 2 sweeps of experiment {client.experiment_name} match ({third}, {second}); "
        "name one by its run id"
    )
    job = _job_run(client, first, "ce", "FINISHED")
    for target in ("no-such-sweep", job[:8], "0123abcd"):  # a job's id is no sweep's; 0123abcd none at all
        with pytest.raises(ConfigError, match=rf"^tracking.resume_sweep={target}: no sweep of experiment .* has that"):
            find(target)


def test_last_in_a_store_without_sweeps_is_one_line(client):
    with pytest.raises(ConfigError, match="^tracking.resume_sweep=last: experiment .* has no sweep run to continue$"):
        continuation.find_sweep_to_continue(client, client.experiment_name, "last")


def test_a_continuation_with_other_overrides_is_refused_naming_the_keys(client):
    parent = client.get_run(_sweep_run(client))
    # the same sweep, run another way, continues
    continuation.check_same_sweep(
        parent, [*SWEEP, "tracking.resume_sweep=last", "launcher=parallel", "trainer.num_threads=1"]
    )
    with pytest.raises(ConfigError) as refused:
        continuation.check_same_sweep(parent, ["data=csv", "loss=ce,focal", "schedule=cosine", "trainer.epochs=2"])
    assert str(refused.value).startswith(
        f"tracking.resume_sweep={parent.info.run_id}: the overrides differ from the sweep's in "
        "loss (ce,focal,weighted_ce -> ce,focal), schedule (unset -> cosine)"
    )


def test_each_job_reuses_continues_or_redoes_what_the_stopped_sweep_left(client, tmp_path):
    parent = _sweep_run(client)
    finished = _job_run(client, parent, "ce", "FINISHED")
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"saved")
    killed = _job_run(client, parent, "focal", "KILLED", **{CHECKPOINT_TAG: str(checkpoint)})
    failed = _job_run(client, parent, "weighted_ce", "FAILED")
    children = child_runs(client, parent)

    def plan(loss):
        job = ["data=csv", f"loss={loss}", "trainer.epochs=2", "tracking.resume_sweep=last"]
        return continuation.plan_job(job, children)

    assert plan("ce").reuse.info.run_id == finished
    assert plan("focal").resume.info.run_id == killed and plan("focal").reuse is None
    redo = plan("weighted_ce")
    assert redo.reuse is None and redo.resume is None and [r.info.run_id for r in redo.superseded] == [failed]

    continuation.mark_superseded(client, redo.superseded, "new-run-id")
    assert client.get_run(failed).data.tags[SUPERSEDED_TAG] == "new-run-id"
    assert {r.info.run_id for r in child_runs(client, parent)} == {finished, killed}  # counted once per job


def test_a_killed_run_whose_checkpoint_is_gone_is_redone_and_a_running_orphan_is_closed(client, tmp_path):
    parent = _sweep_run(client)
    gone = _job_run(client, parent, "ce", "KILLED", **{CHECKPOINT_TAG: str(tmp_path / "missing.pt")})
    orphan = _job_run(client, parent, "ce", "RUNNING")
    job = ["data=csv", "loss=ce", "trainer.epochs=2"]
    plan = continuation.plan_job(job, child_runs(client, parent))
    assert plan.resume is None and {r.info.run_id for r in plan.superseded} == {gone, orphan}
    continuation.mark_superseded(client, plan.superseded, "new-run-id")
    assert client.get_run(orphan).info.status == "FAILED"
