"""A sweep stopped midway (SIGTERM to the --multirun process) and continued with
tracking.resume_sweep=last: only the remaining work is trained, in the same parent run."""

import signal
import subprocess
import time

import pytest

from conftest import write_toy_csv
from entry_points import INTERRUPTIBLE_RUN, command, polled_store, run_entry_point
from lib.tracking import NOTE_TAG, ROLE_TAG

pytestmark = pytest.mark.slow  # end to end, through subprocesses

LOSSES = "loss=ce,focal,weighted_ce"


def _args(out, data):
    # One tokenizer cache for every run (beside the outputs folders): tiny_bert's tokenizer is trained per
    # process, and only a shared (cached) one makes the continued job comparable with a straight run.
    return [f"paths.outputs={out / 'out'}", f"paths.cache={data.parent / 'cache'}", f"data.train={data}"] + [
        *INTERRUPTIBLE_RUN
    ]


def _runs(tmp_path):
    client = polled_store(tmp_path / "out")
    exp = client.get_experiment_by_name("titlesweep")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return (
        client,
        [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"],
        [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"],
    )


def _stop_while_the_second_job_trains(tmp_path, proc, timeout=600):
    """SIGTERM once the first job's run has FINISHED and the second's has logged a training step."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            client, _, children = _runs(tmp_path)
            by_name = {r.info.run_name: r for r in children}
            second = by_name.get("loss=focal")
            if by_name.get("loss=ce") and by_name["loss=ce"].info.status == "FINISHED" and second:
                if client.get_metric_history(second.info.run_id, "train_loss"):
                    proc.send_signal(signal.SIGTERM)
                    return proc.communicate(timeout=120)
        except Exception:  # the store is still being created
            pass
        time.sleep(0.05)
    raise AssertionError("the sweep never reached its second job's training")


def test_a_stopped_sweep_continues_where_it_stopped(tmp_path):
    data = write_toy_csv(tmp_path / "toy.csv", n_per_class=1000)
    straight = run_entry_point("train.py", *_args(tmp_path / "straight", data), "loss=focal")
    assert straight.returncode == 0, straight.stderr[-2000:]
    client, _, _ = _runs(tmp_path / "straight")
    (expected,) = client.search_runs([client.get_experiment_by_name("titlesweep").experiment_id])

    sweep = subprocess.Popen(
        command("train.py", "--multirun", *_args(tmp_path, data), LOSSES),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = _stop_while_the_second_job_trains(tmp_path, sweep)
    assert sweep.returncode == 128 + signal.SIGTERM, err[-2000:]
    client, (parent,), children = _runs(tmp_path)
    assert parent.info.status == "KILLED"
    stopped = {r.info.run_name: r for r in children}
    assert sorted(stopped) == ["loss=ce", "loss=focal"]  # the third job never started
    assert stopped["loss=focal"].info.status == "KILLED" and "checkpoint" in stopped["loss=focal"].data.tags

    # Other overrides than the sweep's are refused in one line, before anything is written.
    refused = run_entry_point(
        "train.py", "--multirun", *_args(tmp_path, data), "loss=ce,focal", "tracking.resume_sweep=last"
    )
    assert refused.returncode == 2
    assert [line for line in refused.stderr.splitlines() if line.startswith("error:")] == [
        f"error: tracking.resume_sweep={parent.info.run_id}: the overrides differ from the sweep's in loss "
        "(ce,focal,weighted_ce -> ce,focal); rerun with the sweep's own overrides (its run's tag sweep_overrides)"
    ]

    done = run_entry_point("train.py", "--multirun", *_args(tmp_path, data), LOSSES, "tracking.resume_sweep=last")
    assert done.returncode == 0, done.stderr[-3000:]
    client, parents, children = _runs(tmp_path)
    assert [p.info.run_id for p in parents] == [parent.info.run_id] and parents[0].info.status == "FINISHED"
    by_name = {r.info.run_name: r for r in children}
    assert len(children) == 3 and sorted(by_name) == ["loss=ce", "loss=focal", "loss=weighted_ce"]
    assert all(r.info.status == "FINISHED" for r in children)
    # the finished job was reused, not trained again; the killed one continued in its own run
    ce = by_name["loss=ce"]
    assert ce.info.end_time == stopped["loss=ce"].info.end_time
    assert len(client.get_metric_history(ce.info.run_id, "train_loss")) == len(
        client.get_metric_history(stopped["loss=ce"].info.run_id, "train_loss")
    )
    focal = by_name["loss=focal"]
    assert focal.info.run_id == stopped["loss=focal"].info.run_id
    for key in ("test_accuracy", "test_loss", "test_roc_auc", "best_val_loss", "best_epoch"):
        assert focal.data.metrics[key] == pytest.approx(expected.data.metrics[key], rel=1e-6, abs=1e-9), key
    metrics = parents[0].data.metrics
    assert metrics["jobs_total"] == 3 and metrics["jobs_finished"] == 3 and metrics["jobs_reused"] == 1
    assert "(3 jobs" in parents[0].data.tags[NOTE_TAG]  # the comparison on its page covers every job


def test_a_finished_sweep_continued_with_the_parallel_launcher_trains_nothing(tmp_path, toy_csv):
    # Each job decides in its own process (here joblib workers) from the parent's runs what is left.
    args = [f"paths.outputs={tmp_path / 'out'}", "data=csv", f"data.train={toy_csv}", "+debug=smoke", "extra_eval=null"]
    first = run_entry_point("train.py", "--multirun", *args, "loss=ce,focal")
    assert first.returncode == 0, first.stderr[-2000:]
    _, (parent,), before = _runs(tmp_path)
    again = run_entry_point(
        "train.py",
        "--multirun",
        *args,
        "loss=ce,focal",
        "launcher=parallel",
        f"tracking.resume_sweep={parent.info.run_id}",
    )
    assert again.returncode == 0, again.stderr[-2000:]
    client, (continued,), after = _runs(tmp_path)
    assert continued.info.run_id == parent.info.run_id and continued.info.status == "FINISHED"
    assert continued.data.metrics["jobs_reused"] == 2 and continued.data.metrics["jobs_finished"] == 2
    assert continued.data.tags["continued"] == "1"
    assert {(r.info.run_id, r.info.end_time) for r in after} == {(r.info.run_id, r.info.end_time) for r in before}
