"""``key=value`` arguments for the small entry points that are not Hydra apps (compare, download)."""
from __future__ import annotations

from lib.errors import ConfigError


def parse_key_values(args: list[str], usage: str) -> dict[str, str]:
    """["sweep=x", "model=scibert"] -> {"sweep": "x", "model": "scibert"}; anything else is refused."""
    bad = [a for a in args if "=" not in a or a.startswith("=")]
    if bad:
        raise ConfigError(f"cannot read argument(s) {', '.join(bad)}; usage: {usage}")
    return dict(a.split("=", 1) for a in args)
