"""launcher=slurm for real: sweeps go through sbatch to a one-node SLURM cluster started on this
machine (tests/services/slurm.py), with MLflow in a local SQLite store (the jobs run here too).
Select alone with `python -m pytest -m cluster`; skipped with one line where the cluster cannot run
(slurm-wlm and munge not installed: `bash tests/services/install.sh` as root; not root)."""

import functools
import math
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import write_toy_csv
from entry_points import INTERRUPTIBLE_RUN, command, polled_store, run_entry_point
from lib.tracking import ROLE_TAG
from services.slurm import slurm_cluster, why_not_available

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
TINY = [
    "model=tiny_bert",
    "data=csv",
    "trainer.epochs=1",
    "extra_eval=null",
    "tracking.log_model=false",
    "trainer.log_every_steps=1",
]
# conf/launcher/slurm.yaml asks for a GPU node (1 GPU, 8 CPUs, 32 GB); this cluster has 2 CPUs, no GRES.
SLURM = [
    "launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
]
LONG = INTERRUPTIBLE_RUN  # ~400 steps of batch 8, long enough to be interrupted after a logged step
COMPARED = ("test_accuracy", "test_loss", "test_roc_auc", "best_val_loss", "best_epoch")


@pytest.fixture(scope="module")
def cluster():
    reason = why_not_available()  # detects only: tests/services/install.sh installs slurm-wlm + munge
    if reason:
        pytest.skip(reason)
    with slurm_cluster() as running:
        yield running


def _store(out: Path) -> tuple[MlflowClient, list]:
    client = polled_store(out)
    exp = client.get_experiment_by_name("titlesweep")
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def _sweep_dir(out: Path) -> Path:
    (folder,) = out.glob("multirun/*/*")
    return folder


def _submitit_job_ids(out: Path) -> list[str]:
    """The SLURM job ids submitit recorded, from its folders: "7_0", "7_1" for an array (beside "7",
    the array's own), "8" for a sweep of one job (not an array)."""
    ids = sorted(d.name for d in (_sweep_dir(out) / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", d.name))
    return [i for i in ids if "_" in i] or ids


class Gone(AssertionError):
    """Raised by a polled predicate when waiting longer cannot help (not swallowed by _poll)."""


def _poll(predicate, timeout: float, what: str, every: float = 0.05, explain=lambda: ""):
    """predicate's first truthy answer; on timeout an AssertionError naming `what` and, so that a
    failure on CI can be read without rerunning it, what explain() says about the state."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = predicate()
        except Gone as gone:
            raise AssertionError(f"waiting for {what}: {gone}\n{explain()}") from None
        except Exception:  # the store is still being created
            found = None
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else ["(no file)"]
    return f"--- {path.name}:\n" + "\n".join(text)


def _cluster_state(cluster, tmp_path: Path) -> str:
    """The output of the sweep _start_long_sweep started in tmp_path, its jobs' logs, the queue and the
    daemons' last lines."""
    parts = [_tail(tmp_path / "sweep.log")]
    for logs in sorted((tmp_path / "out").glob("multirun/*/*/.submitit/*")):
        parts += [_tail(f) for f in sorted(logs.glob("*_log.*"))]
    parts.append("--- squeue:\n" + cluster.run("squeue", "-h", "-t", "all", "-o", "%i %T %r %M", check=False))
    parts.append("--- sinfo:\n" + cluster.run("sinfo", "-h", "-o", "%n %T %E", check=False))
    parts += [f"--- {name}.log:\n" + cluster.log(name, 15) for name in ("slurmctld", "slurmd")]
    return "\n".join(parts)


def _first_logged_step(out: Path, proc: subprocess.Popen, explain):
    """The job's run once training has logged a step (well inside epoch 1)."""

    def logging_run():
        if proc.poll() is not None:
            raise Gone(f"the sweep ended (exit {proc.returncode}) before its job trained")
        client, runs = _store(out)
        jobs = [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]
        return jobs[0] if jobs and client.get_metric_history(jobs[0].info.run_id, "train_loss") else None

    return _poll(logging_run, 240, "the SLURM job's first logged step", explain=explain)


def _sweep(tmp_path, cluster, *overrides, expect_rc=0):
    done = run_entry_point(
        "train.py", "--multirun", f"paths.outputs={tmp_path / 'out'}", *overrides, cwd=tmp_path, env=cluster.env
    )
    assert done.returncode == expect_rc, done.stdout[-1500:] + done.stderr[-3000:]
    client, runs = _store(tmp_path / "out")
    (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    return done, client, parent, [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]


def test_a_slurm_sweep_goes_through_sbatch_and_mlflow_holds_every_job(tmp_path, cluster):
    toy = write_toy_csv(tmp_path / "toy.csv")
    done, client, parent, children = _sweep(tmp_path, cluster, "loss=ce,focal", f"data.train={toy}", *TINY, *SLURM)
    # sbatch ran: submitit's job ids are SLURM's, and the controller ran each job to completion
    ids = _submitit_job_ids(tmp_path / "out")
    jobs = {i: cluster.ended(i) for i in ids}
    assert len(ids) == 2 and {j["JobState"] for j in jobs.values()} == {"COMPLETED"}, jobs
    assert {j["Partition"] for j in jobs.values()} == {"debug"}
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "SlurmLauncher"
    assert parent.data.metrics["jobs_finished"] == 2 and parent.data.metrics["jobs_failed"] == 0
    assert sorted(c.info.run_name for c in children) == ["loss=ce", "loss=focal"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.metrics["test_accuracy"] >= 0.8, (child.info.run_name, child.data.metrics)  # it learned
        steps = int(child.data.params["train.total_steps"])
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")] == list(range(1, steps + 1))
        assert math.isfinite(child.data.metrics["test_f1"]) and math.isfinite(child.data.metrics["best_val_f1"])


def test_a_failing_slurm_job_is_failed_with_its_traceback_and_fails_the_sweep(tmp_path, cluster):
    toy = write_toy_csv(tmp_path / "toy.csv")
    # batch size 500 > the ~320 training rows: the second job fails inside its run
    done, client, parent, children = _sweep(
        tmp_path, cluster, "trainer.batch_size=16,500", f"data.train={toy}", *TINY, *SLURM, expect_rc=1
    )
    assert "1 of 2 sweep jobs failed" in done.stderr
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_failed"] == 1
    (failed,) = [c for c in children if c.info.status == "FAILED"]
    (finished,) = [c for c in children if c.info.status == "FINISHED"]
    assert failed.data.params["trainer.batch_size"] == "500" and "test_accuracy" in finished.data.metrics
    assert "trainer.batch_size=500" in failed.data.tags["error"]
    traceback = client.download_artifacts(failed.info.run_id, "error/traceback.txt", str(tmp_path))
    assert "DataError" in Path(traceback).read_text()
    # the job itself ended normally (the failure is recorded, not raised): SLURM saw it complete
    ended = [cluster.ended(i) for i in _submitit_job_ids(tmp_path / "out")]
    assert ended and {j["JobState"] for j in ended} == {"COMPLETED"}, ended


class Reference:
    """The uninterrupted run, started once per module and only after a first job has cached the tiny
    model's tokenizer (tokenizers trained in two processes differ; tests/test_resume.py)."""

    def __init__(self, root: Path, data: Path, cache: Path):
        self.out, self.data, self.cache, self.proc = root / "straight", data, cache, None

    def start(self):
        if self.proc is None:
            self.log = self.out.with_suffix(".log")  # a file, not a pipe nobody reads until the end
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen(
                    command(
                        "train.py",
                        f"paths.outputs={self.out}",
                        f"paths.cache={self.cache}",
                        f"data.train={self.data}",
                        *LONG,
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    def run(self):
        self.start()
        self.proc.wait(timeout=600)
        assert self.proc.returncode == 0, self.log.read_text()[-2000:]
        _, (run,) = _store(self.out)
        assert run.data.metrics["test_accuracy"] >= 0.9  # equal to a constant classifier would prove little
        return run


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-resume")
    data = write_toy_csv(root / "toy.csv", n_per_class=1000)
    reference = Reference(root, data, root / "cache")
    yield data, root / "cache", reference
    if reference.proc is not None and reference.proc.poll() is None:
        reference.proc.kill()


def _start_long_sweep(tmp_path, cluster, data, cache, *extra) -> subprocess.Popen:
    with open(tmp_path / "sweep.log", "w") as log:
        return subprocess.Popen(
            command(
                "train.py",
                "--multirun",
                f"paths.outputs={tmp_path / 'out'}",
                f"paths.cache={cache}",
                f"data.train={data}",
                *LONG,
                *SLURM,
                *extra,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=cluster.env,
            preexec_fn=_default_sigint,
        )


def _default_sigint():
    # A background shell starts commands with SIGINT ignored; the test's Ctrl-C must reach the sweep.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_scancel_leaves_a_checkpoint_and_a_killed_run_and_a_resubmitted_resume_matches(tmp_path, cluster, long_data):
    data, cache, reference = long_data
    out = tmp_path / "out"
    sweep = _start_long_sweep(tmp_path, cluster, data, cache)
    try:
        run = _first_logged_step(out, sweep, functools.partial(_cluster_state, cluster, tmp_path))
        reference.start()  # the tokenizer is cached now
        (job_id,) = _submitit_job_ids(out)
        cluster.run("scancel", job_id)  # SLURM: SIGCONT + SIGTERM to the job's processes, SIGKILL after KillWait
        client = MlflowClient(f"sqlite:///{out}/mlflow.db")
        killed = _poll(
            lambda: (lambda r: r if r.info.status != "RUNNING" else None)(client.get_run(run.info.run_id)),
            120,
            "the run to be closed",
            every=0.2,
        )
        assert killed.info.status == "KILLED", f"scancel did not interrupt the run: {killed.info.status}"
        assert cluster.ended(job_id)["JobState"] == "CANCELLED"
        # Without slurmdbd (sacct) submitit never learns that a job which left no result was cancelled:
        # its sweep waits until interrupted, and then closes the sweep's run KILLED.
        time.sleep(3)
        assert sweep.poll() is None
        sweep.send_signal(signal.SIGINT)
        sweep.wait(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert killed.data.tags["error"] == "interrupted by SIGTERM"
    saved = torch.load(killed.data.tags["checkpoint"], weights_only=True)
    assert saved["run_id"] == run.info.run_id and saved["loop"]["step"] > 0
    log = (_sweep_dir(out) / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert "interrupted: SIGTERM received: checkpoint saved to" in log
    _, runs = _store(out)
    assert [r.info.status for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"] == ["KILLED"]

    # Re-submitted through sbatch as a single run: it continues the same MLflow run to the end.
    resubmitted = cluster.run(
        "sbatch",
        "--parsable",
        "--partition=debug",
        "--cpus-per-task=1",
        "--mem=2G",
        f"--output={tmp_path / 'resume.log'}",
        f"--chdir={tmp_path}",
        "--wrap="
        + " ".join(
            command("train.py", f"paths.outputs={out}", f"paths.cache={cache}", f"data.train={data}", *LONG)
            + [f"trainer.resume={run.info.run_id}"]
        ),
    ).strip()
    job = cluster.ended(resubmitted)
    assert job["JobState"] == "COMPLETED", (tmp_path / "resume.log").read_text()[-3000:]
    straight = reference.run()
    client, runs = _store(out)
    (resumed,) = [r for r in runs if r.info.run_id == run.info.run_id]
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resumed_from"] == run.info.run_id
    for key in COMPARED:
        assert resumed.data.metrics[key] == pytest.approx(straight.data.metrics[key], rel=1e-6, abs=1e-9), key
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert steps == sorted(set(steps)) and steps[-1] == int(straight.data.params["train.total_steps"])


def test_a_time_limit_warning_requeues_the_job_which_continues_its_run_from_the_checkpoint(
    tmp_path, cluster, long_data
):
    data, cache, reference = long_data
    out = tmp_path / "out"
    sweep = _start_long_sweep(tmp_path, cluster, data, cache)
    explain = functools.partial(_cluster_state, cluster, tmp_path)
    try:
        run = _first_logged_step(out, sweep, explain)
        reference.start()  # the tokenizer is cached now (a no-op when the scancel test started it)
        (job_id,) = _submitit_job_ids(out)
        # What SLURM sends signal_delay_s before the time limit (sbatch --signal=USR2@120): USR2 to the
        # job's steps, i.e. to submitit's python process under srun.
        cluster.run("scancel", "--signal=USR2", job_id)
        # Requeued (by submitit's `scontrol requeue`), SLURM holds a job until its old credential expires
        # (AuthInfo cred_expire, 120 s; set once the old job has ended): let this one start at once.
        # Generous upper bounds: with 60 s / 300 s the test failed once on a heavily loaded machine.
        _poll(
            lambda: (lambda j: j["JobState"] == "PENDING" and j["Restarts"] == "1")(cluster.job(job_id)),
            240,
            "the job to be requeued",
            every=0.5,
            explain=explain,
        )
        # slurmd refuses a credential created in the same second as (or before) it revoked the old one
        # (`cred->ctime <= j->revoked`, whole seconds): "Killing non-startable batch JobId: Job credential
        # revoked", seen once in a fresh clone. So wait until the node has cleaned up the old job, then
        # into a later second, before starting the new one.
        _poll(
            lambda: cluster.run("sinfo", "-h", "-n", cluster.node, "-o", "%T").strip() == "idle",
            120,
            "the node",
            explain=explain,
        )
        time.sleep(2)
        cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        sweep.wait(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    job = cluster.ended(job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", job
    logs = _sweep_dir(out) / ".submitit" / job_id
    # both runs of the job write to the same files (SLURM appends after a requeue)
    assert "interrupted: SIGUSR2 received: checkpoint saved to" in (logs / f"{job_id}_0_log.err").read_text()
    assert "requeued by SLURM (restart 1): resuming from" in (logs / f"{job_id}_0_log.out").read_text()
    client, runs = _store(out)
    (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    (child,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]  # the same run, not a second one
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_failed"] == 0
    assert child.info.run_id == run.info.run_id and child.info.status == "FINISHED"
    assert child.data.tags["requeued"] == "1" and child.data.tags["resumed_from"] == child.data.tags["checkpoint"]
    assert torch.load(child.data.tags["checkpoint"], weights_only=True)["loop"]["step"] > 0
    straight = reference.run()
    for key in COMPARED:
        assert child.data.metrics[key] == pytest.approx(straight.data.metrics[key], rel=1e-6, abs=1e-9), key
    # every step the uninterrupted run logged, each once
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    expected = sorted(m.step for m in _store(reference.out)[0].get_metric_history(straight.info.run_id, "train_loss"))
    assert steps == expected and len(steps) == len(set(steps)), steps
