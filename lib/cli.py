"""Command-line helpers: ``key=value`` arguments for the entry points that are not Hydra apps
(compare, download), and the checks train.py makes before Hydra starts."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lib.errors import ConfigError


def parse_key_values(args: list[str], usage: str) -> dict[str, str]:
    """["sweep=x", "model=scibert"] -> {"sweep": "x", "model": "scibert"}; anything else is refused."""
    bad = [a for a in args if "=" not in a or a.startswith("=")]
    if bad:
        raise ConfigError(f"cannot read argument(s) {', '.join(bad)}; usage: {usage}")
    return dict(a.split("=", 1) for a in args)


def preflight(args: list[str], conf_dir: Path, default_outputs: Path) -> None:
    """Checks made before Hydra starts, because Hydra reports these as many lines or a traceback:
    an unknown option of a config group, and an outputs folder that cannot be written."""
    outputs = Path(os.environ.get("TITLESWEEP_OUTPUTS", default_outputs))
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key == "paths.outputs":
            outputs = Path(value)
        elif "/" not in key and (conf_dir / key).is_dir() and "(" not in value:
            _check_choices(key, value.split(","), conf_dir / key)
    _check_writable(outputs)


def _check_choices(group: str, values: list[str], folder: Path) -> None:
    options = sorted(p.stem for p in folder.glob("*.yaml"))
    unknown = [v for v in values if v not in options and v != "null"]
    if unknown:
        raise ConfigError(f"{group}={','.join(unknown)}: unknown {group} option; choose from {', '.join(options)}")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"paths.outputs={folder}: cannot write there ({err.strerror or err})") from None
