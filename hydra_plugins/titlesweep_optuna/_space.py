"""The search space: Hydra's override grammar (``conf/search/optuna.yaml``'s ``params`` and sweep
overrides on the command line) as Optuna distributions, and sampled values back as overrides.

    interval(a, b)              FloatDistribution(a, b)         tag(log, interval(a, b)): log scale
    int(interval(a, b))         IntDistribution(a, b)           tag(int, interval(a, b)) too
    range(a, b, step)           IntDistribution(a, last, step)  floats: FloatDistribution with step
    choice(x, y) / x,y / glob   CategoricalDistribution
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, QuotedString, RangeSweep
from hydra.errors import HydraException

from lib.errors import ConfigError

TAGS = ("log", "int")


@dataclass(frozen=True)
class Param:
    key: str  # as the override writes it: "schedule.lr", "+trainer.max_steps"
    name: str  # Optuna's parameter name: the key without + / ++ / ~ (logged as best.<name>)
    distribution: object  # an optuna.distributions.BaseDistribution
    raw: bool = False  # the choices are override texts (lists, dicts): written back as they are


def parse_space(
    params: dict[str, str] | None, arguments: Iterable[str], config_loader=None
) -> tuple[list[Param], list[str]]:
    """(searched parameters, fixed overrides every job gets). ``params`` (``hydra.sweeper.params``)
    first, the command line's overrides after: a key given on both is the command line's (a fixed
    value there takes the key out of the search)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    parser = OverridesParser.create(config_loader=config_loader)
    try:
        overrides = parser.parse_overrides(lines)
    except HydraException as err:
        raise ConfigError(f"hydra.sweeper.params: {str(err).strip().splitlines()[0]}") from None
    chosen: dict[str, Override] = {}
    for override in overrides:
        chosen.pop(_name(override), None)  # re-inserted last: the later one wins, in its place
        chosen[_name(override)] = override
    space, fixed = [], []
    for name, override in chosen.items():
        if override.is_sweep_override():
            space.append(Param(override.get_key_element(), name, *_distribution(override)))
        elif override.is_delete() and override.value() is None:
            fixed.append(override.get_key_element())
        else:
            fixed.append(f"{override.get_key_element()}={override.get_value_element_as_str()}")
    return space, fixed


def _name(override: Override) -> str:
    return override.get_key_element().lstrip("+~")


def _distribution(override: Override) -> tuple[object, bool]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    where = f"{override.input_line}"
    unknown = set(getattr(sweep, "tags", ()) or ()) - set(TAGS)
    if unknown:
        raise ConfigError(f"{where}: unknown tag {', '.join(sorted(unknown))}; the search knows {', '.join(TAGS)}")
    tags = set(getattr(sweep, "tags", ()) or ())
    try:
        if isinstance(sweep, IntervalSweep):
            if "int" in tags or (isinstance(sweep.start, int) and isinstance(sweep.end, int)):
                return IntDistribution(int(sweep.start), int(sweep.end), log="log" in tags), False
            return FloatDistribution(float(sweep.start), float(sweep.end), log="log" in tags), False
        if isinstance(sweep, RangeSweep):
            values = list(sweep.range())
            if not values:
                raise ConfigError(f"{where}: an empty range")
            low, high = min(values), max(values)
            step = abs(sweep.step)
            if all(isinstance(v, int) for v in values):
                return IntDistribution(low, high, log="log" in tags, step=1 if "log" in tags else step), False
            return FloatDistribution(float(low), float(high), step=float(step)), False
        if isinstance(sweep, ChoiceSweep):
            choices = [v.text if isinstance(v, QuotedString) else v for v in sweep.list]
            if all(v is None or isinstance(v, (bool, int, float, str)) for v in choices):
                return CategoricalDistribution(choices), False
        # lists or dicts among the choices, glob(...): the override texts themselves
        return CategoricalDistribution(list(override.sweep_string_iterator())), True
    except ValueError as err:  # Optuna's own checks: low > high, log scale from 0, ...
        raise ConfigError(f"{where}: {err}") from None


def override_value(value, raw: bool = False) -> str:
    """A sampled value as the text after ``key=``, read back by Hydra as the same value."""
    if raw:
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    try:
        if OverridesParser.create().parse_override(f"k={text}").value() == text:
            return text
    except HydraException:
        pass
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
