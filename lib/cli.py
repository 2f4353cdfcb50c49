"""Command-line helpers for the entry points.

The ones that are not Hydra apps (predict.py, evaluate.py, compare.py, download_models.py,
ui_screenshots.py) take ``key=value`` arguments: each declares its options once, as an ``OPTIONS``
dict of one-line descriptions, which ``--help`` prints (``help_text``) and against which an unknown
option is refused with the valid names (``split_options``; compare.py reads other keys as run
filters). train.py and build_corpus.py are Hydra apps; ``preflight`` makes the checks that Hydra
would report as a traceback (an unknown group option, an unwritable outputs folder) before it starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lib.errors import ConfigError

HELP_FLAGS = ("-h", "--help")


def parse_key_values(
    args: list[str], usage: str, options: dict[str, str] | None = None, about: str = ""
) -> dict[str, str]:
    """["sweep=x", "model=scibert"] -> {"sweep": "x", "model": "scibert"}; anything else is refused.
    -h / --help prints the usage, ``about`` (the entry point's docstring) and one line per option, and exits 0."""
    if any(a in HELP_FLAGS for a in args):
        print(help_text(usage, options or {}, about))
        raise SystemExit(0)
    bad = [a for a in args if "=" not in a or a.startswith("=")]
    if bad:
        raise ConfigError(f"cannot read argument(s) {', '.join(bad)}; usage: {usage}")
    return dict(a.split("=", 1) for a in args)


def help_text(usage: str, options: dict[str, str], about: str = "") -> str:
    width = max((len(k) for k in options), default=0) + 2
    about = [about.strip("\n").rstrip(), ""] if about.strip() else []
    lines = [f"usage: {usage}", "", *about, "options:"] + [f"  {k.ljust(width)}{v}" for k, v in options.items()]
    return "\n".join(lines)


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


def parse_threshold(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold={value}: must be a probability between 0 and 1")
    return threshold


def parse_batch_size(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"batch_size={value}: must be a positive whole number")
    return int(value)


def compose_config(overrides: list[str]):
    """The Hydra config as train.py composes it (tracking.uri, paths.*, data.*), errors as one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lib.paths import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot compose the config from {' '.join(overrides)}: {first_line}") from None


def split_options(
    options: dict[str, str], allowed, config_prefixes: tuple[str, ...] = ("tracking.", "paths.")
) -> tuple[dict[str, str], list[str]]:
    """(this command's options, Hydra overrides); anything else is refused with the valid names.
    ``allowed``: option names (keys of an entry point's OPTIONS help; keys such as "tracking.*" are labels)."""
    names = [k for k in allowed if k.isidentifier()]
    overrides = [f"{k}={v}" for k, v in options.items() if k.startswith(config_prefixes)]
    own = {k: v for k, v in options.items() if not k.startswith(config_prefixes)}
    unknown = [k for k in own if k not in names]
    if unknown:
        prefixes = ", ".join(p + ("*" if p.endswith(".") else "=...") for p in config_prefixes)
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(names)}, {prefixes} (--help describes them)"
        )
    return own, overrides
