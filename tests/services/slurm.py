"""A throwaway one-node SLURM cluster on this machine: munged, slurmctld and slurmd, all configured
in a temporary folder (nothing under /etc is used or changed) and all stopped when the context exits.

Debian's ``slurm-wlm`` and ``munge`` come from ``tests/services/install.sh`` (nothing here installs
them). The daemons run as root (slurmd must, to start jobs), so the tests skip with one line where
the commands are missing or this is not root. Clients
(sbatch, squeue, scancel, submitit) find the cluster through ``SLURM_CONF``: use ``cluster.env``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services import install_first
from services.mlflow_server import free_port

PACKAGES = ("slurm-wlm", "munge")  # what tests/services/install.sh installs for COMMANDS
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")
# JobStates of a job SLURM has finished with (the others: PENDING, RUNNING, COMPLETING, SUSPENDED, ...)
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL")
MARKER = "TITLESWEEP_SLURM_CLUSTER"  # in the env of the daemons and of the jobs: finds leftovers to stop


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )


def _missing() -> list[str]:
    return [name for name in COMMANDS if not _which(name)]


def why_not_available() -> str | None:
    """None when a cluster can be started here, else the reason in one line. Detects only: a missing
    command names tests/services/install.sh."""
    missing = _missing()
    if missing:
        return install_first(", ".join(missing))
    if os.geteuid() != 0:
        return "a one-node SLURM cluster needs root (slurmd starts the jobs)"
    return None


@dataclass
class Cluster:
    folder: Path
    conf: Path
    node: str
    env: dict[str, str]  # os.environ plus SLURM_CONF (and the marker): pass to every client command

    def run(self, *cmd: str, check: bool = True) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def job_ids(self) -> list[str]:
        """Jobs the controller knows: queued, running and (for MinJobAge, 300 s) finished ones."""
        return self.run("squeue", "-h", "-t", "all", "-o", "%i").split()

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, Restarts, ...)."""
        fields = self.run("scontrol", "-o", "show", "job", job_id).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def ended(self, job_id: str, timeout: float = 300) -> dict[str, str]:
        """``job(job_id)`` once SLURM has ended the job. Why wait: submitit hands the launcher a job's
        result as soon as the job has written it, while the job's python is still exiting (RUNNING,
        then COMPLETING), so a sweep can return before SLURM calls its jobs COMPLETED."""
        deadline = time.time() + timeout
        while True:
            try:
                job = self.job(job_id)
            except (RuntimeError, subprocess.TimeoutExpired) as err:  # a busy controller: ask again
                job = {"JobState": f"unknown ({err})"}
            if job["JobState"] in ENDED:
                return job
            if time.time() > deadline:
                raise AssertionError(f"SLURM job {job_id} still {job['JobState']} after {timeout:.0f} s: {job}")
            time.sleep(0.5)

    def version(self) -> str:
        """ "slurm 22.05.8" (sinfo --version still wants a configuration to read)."""
        return self.run("sinfo", "--version").strip()

    def log(self, name: str, lines: int = 30) -> str:
        path = self.folder / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as slurmd measures them (slurmd -C)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=60).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return int(fields["CPUs"]), int(fields["RealMemory"])


def _write_conf(folder: Path, node: str) -> Path:
    cpus, memory = _node_hardware()
    conf = folder / "slurm.conf"
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    conf.write_text(f"""\
ClusterName=titlesweep-test
SlurmctldHost={node}(127.0.0.1)
# Free ports, so a cluster already on this machine (6817/6818) is not disturbed.
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
MailProg=/bin/true
# No cgroups in containers: track job processes by parentage, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
# No slurmdbd: sacct does not work here (submitit only needs it for jobs that leave no result).
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# SIGTERM .. SIGKILL on scancel / time limit: time for a checkpoint and closing the MLflow run.
KillWait=30
# 90% of the measured memory: slurmd drains a node that has less than configured.
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory * 9 // 10} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # the daemons run in the foreground (-D/-F): Popen owns them
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds ``marker``: slurmstepd and job processes of this cluster."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return found


def _wait(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for name, proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode} while waiting for {what}")
        if predicate():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd on 127.0.0.1; yield once the node is idle; on exit cancel
    every job and stop every daemon and leftover job process, even when starting failed."""
    folder = Path(tempfile.mkdtemp(prefix="titlesweep-slurm-"))
    folder.chmod(0o755)  # munged wants its socket's folder traversable by all
    node = socket.gethostname().split(".")[0]  # = `hostname -s`: slurmd looks itself up by it
    marker = f"{MARKER}={folder}"
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), MARKER: str(folder)}
    cluster = Cluster(folder, _write_conf(folder, node), node, env)
    procs: list[tuple[str, subprocess.Popen]] = []
    try:
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        procs.append(
            (
                "munged",
                _start(
                    [
                        _which("munged"),
                        "-F",
                        "-f",
                        f"--socket={folder}/munge.socket",
                        f"--key-file={key}",
                        f"--pid-file={folder}/munged.pid",
                        f"--log-file={folder}/munged.log",
                        f"--seed-file={folder}/munged.seed",
                    ],
                    env,
                    folder / "munged.out",
                ),
            )
        )
        _wait((folder / "munge.socket").exists, 30, "munged's socket", procs)
        procs.append(
            ("slurmctld", _start([_which("slurmctld"), "-D", "-f", str(cluster.conf)], env, folder / "slurmctld.out"))
        )
        procs.append(("slurmd", _start([_which("slurmd"), "-D", "-f", str(cluster.conf)], env, folder / "slurmd.out")))

        def idle() -> bool:
            done = subprocess.run(
                ["sinfo", "-h", "-n", node, "-o", "%T"], capture_output=True, text=True, env=env, timeout=30
            )
            return done.stdout.strip() == "idle"

        try:
            _wait(idle, 90, f"node {node} idle in sinfo", procs)
        except RuntimeError as err:
            raise RuntimeError(f"{err}\n{cluster.log('slurmctld')}\n{cluster.log('slurmd')}") from None
        yield cluster
    finally:
        try:
            if any(name == "slurmctld" and p.poll() is None for name, p in procs):
                cluster.run("scancel", "--user", "root", check=False)
                _wait(
                    lambda: not cluster.run("squeue", "-h", "-o", "%i", check=False).split(),
                    45,
                    "the cancelled jobs to end",
                )
        except RuntimeError:
            pass  # stopped below either way
        finally:
            for _, proc in reversed(procs):
                _stop(proc)
            for pid in _marked_pids(marker):  # slurmstepd or job processes that outlived their daemon
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(folder, ignore_errors=True)
