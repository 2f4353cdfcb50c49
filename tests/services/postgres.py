"""A throwaway PostgreSQL cluster on 127.0.0.1, as the backend of an MLflow server
(tests/services/mlflow_server.py).

The cluster lives in a temporary folder owned by the ``postgres`` system user (initdb refuses to
run as root), trusts local connections only, and is removed when the context exits. Tests skip
with one line when the machine cannot run it (no PostgreSQL binaries or ``postgres`` user: run
``tests/services/install.sh``; not root; no psycopg2). Nothing here installs anything.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services import install_first
from services.mlflow_server import free_port

SERVICE_USER = "postgres"


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else Debian's versioned folder."""
    if shutil.which(name):
        return shutil.which(name)
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def why_not_available() -> str | None:
    """None when a cluster can be started here, else the reason in one line."""
    if not (pg_bin("initdb") and pg_bin("pg_ctl")):
        return install_first("PostgreSQL (initdb, pg_ctl)")
    if os.geteuid() != 0:
        return "starting a PostgreSQL cluster as the postgres user needs root"
    try:
        import pwd

        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return install_first(f"the '{SERVICE_USER}' system user")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[team]')"
    return None


def _as_postgres(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", SERVICE_USER, "--", *cmd], check=True, capture_output=True, text=True, timeout=120, **kwargs
    )


@contextmanager
def postgres_database(name: str = "mlflow") -> Iterator[str]:
    """Yield the URI of database ``name`` in a new cluster on 127.0.0.1."""
    folder = Path(tempfile.mkdtemp(prefix="titlesweep-pg-"))
    shutil.chown(folder, SERVICE_USER, SERVICE_USER)
    data, port = folder / "data", free_port()
    try:
        _as_postgres(pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", SERVICE_USER, "--encoding=UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
        _as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
        try:
            _as_postgres("psql", "-h", "127.0.0.1", "-p", str(port), "-d", "postgres", "-c", f"CREATE DATABASE {name}")
            # The driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
            yield f"postgresql+psycopg2://{SERVICE_USER}@127.0.0.1:{port}/{name}"
        finally:
            _as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
