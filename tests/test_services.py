"""The service helpers (tests/services/) only detect: they never install system packages, and a missing
service is a skip whose one-line reason names tests/services/install.sh, the one script that installs them."""

import os
import subprocess
from pathlib import Path

import pytest

from lib.paths import PROJECT_ROOT
from services import postgres, slurm

INSTALL = "tests/services/install.sh"


@pytest.fixture
def calls(monkeypatch):
    """Every command a helper tries to run, none of them run."""
    seen = []

    def record(cmd, *args, **kwargs):
        seen.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", record)
    monkeypatch.setattr(subprocess, "Popen", record)
    monkeypatch.setattr(os, "system", lambda cmd: seen.append([cmd]) or 0)
    return seen


def _nothing_installed(monkeypatch, root: bool) -> None:
    """No service binary anywhere; apt-get is there (a helper that installs would use it)."""
    monkeypatch.setattr("shutil.which", lambda name, *args, **kwargs: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # nor in /usr/sbin, /sbin
    monkeypatch.setattr("glob.glob", lambda *args, **kwargs: [])  # nor in /usr/lib/postgresql/*/bin
    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000)


def _reason(helper) -> str | None:
    getattr(helper.why_not_available, "cache_clear", lambda: None)()
    try:
        return helper.why_not_available()
    finally:
        getattr(helper.why_not_available, "cache_clear", lambda: None)()


@pytest.mark.parametrize("root", [True, False], ids=["root", "not-root"])
@pytest.mark.parametrize("helper", [slurm, postgres], ids=["slurm", "postgres"])
def test_a_missing_service_is_a_skip_naming_the_install_script_never_an_install(monkeypatch, calls, helper, root):
    _nothing_installed(monkeypatch, root)
    reason = _reason(helper)
    assert calls == []  # no apt-get, nothing run at all
    assert reason and "\n" not in reason and f"bash {INSTALL}" in reason, reason


def test_the_slurm_reason_names_what_is_missing(monkeypatch, calls):
    monkeypatch.setattr(slurm, "_which", lambda name: None if name in ("slurmctld", "munged") else f"/usr/bin/{name}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    reason = _reason(slurm)
    assert calls == [] and reason.startswith("munged, slurmctld not found: run `bash tests/services/install.sh`")


def test_slurm_installed_but_not_root_is_a_skip_without_the_install_script(monkeypatch, calls):
    monkeypatch.setattr(slurm, "_which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = _reason(slurm)
    assert calls == [] and "root" in reason and INSTALL not in reason  # installing would not help


def test_the_chromium_reason_names_the_install_script(monkeypatch):
    from services import chromium

    monkeypatch.setattr(chromium, "find_chromium", lambda: None)
    assert chromium.why_not_available() == f"Chromium not found: run `bash {INSTALL}` (as root) first"
    monkeypatch.setattr(chromium, "find_chromium", lambda: "/usr/bin/chromium")
    assert chromium.why_not_available() is None


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _install_script(tmp_path: Path, uid: int, apt_get: bool) -> tuple[subprocess.CompletedProcess, Path]:
    """Run install.sh with only stubs on PATH (so at least Chromium, looked up on PATH, is missing):
    ``id -u`` says ``uid``; ``getent`` finds the postgres user; an ``apt-get`` stub, if any, records
    its arguments one call a line and installs nothing."""
    stubs, log = tmp_path / "bin", tmp_path / "calls"
    stubs.mkdir()
    _stub(stubs, "id", f"echo {uid}")
    _stub(stubs, "getent", "exit 0")
    if apt_get:
        _stub(stubs, "apt-get", f'echo "apt-get $*" >> {log}')
    env = {**os.environ, "PATH": str(stubs)}
    done = subprocess.run(["/bin/bash", PROJECT_ROOT / INSTALL], capture_output=True, text=True, env=env, timeout=60)
    return done, log


def test_the_install_script_as_a_user_installs_nothing_and_says_so(tmp_path):
    done, calls = _install_script(tmp_path, uid=1000, apt_get=True)
    assert done.returncode == 0, done.stderr  # the tests then skip, naming the script
    assert not calls.exists()
    assert "not root: installed nothing" in done.stdout and "chromium (chromium)" in done.stdout, done.stdout


def test_the_install_script_without_apt_get_installs_nothing_and_says_so(tmp_path):
    done, _ = _install_script(tmp_path, uid=0, apt_get=False)
    assert done.returncode == 0, done.stderr
    assert "no apt-get: installed nothing" in done.stdout, done.stdout


def test_the_install_script_as_root_updates_once_installs_what_is_missing_and_checks_it(tmp_path):
    done, calls = _install_script(tmp_path, uid=0, apt_get=True)
    update, install = calls.read_text().splitlines()  # one update, one install
    assert update == "apt-get update -qq"
    assert install.startswith("apt-get install -y -qq") and install.split()[-1] == "chromium"
    assert done.returncode == 1 and "still missing: " in done.stderr  # the stub installed nothing


def test_the_install_script_looks_where_the_helpers_look():
    from lib.screenshots import CHROMIUM_NAMES

    script = (PROJECT_ROOT / INSTALL).read_text()
    assert f"SLURM_COMMANDS=({' '.join(slurm.COMMANDS)})" in script
    assert f"CHROMIUM_NAMES=({' '.join(CHROMIUM_NAMES)})" in script
    assert all(package in script for package in slurm.PACKAGES)


def test_the_install_script_is_the_only_installer():
    """No test or helper runs apt-get: .ci/run calls the script, the README names it."""
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "tests").rglob("*.py")
        if path.name != "test_services.py" and '"apt-get"' in path.read_text()
    ]
    assert offenders == []
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert INSTALL in ci and "apt-get install" not in ci
    assert f"bash {INSTALL}" in (PROJECT_ROOT / "README.md").read_text()
