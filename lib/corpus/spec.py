"""The corpus configuration (conf/data/titles.yaml), checked once into a plain dataclass."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from lib.corpus.negatives import ALL_KINDS
from lib.corpus.text import CASINGS
from lib.errors import ConfigError

# Bump when generation code changes what a given config produces, so old caches are not reused.
CORPUS_VERSION = 5  # 4: positive extraction noise and title forms (issue 29); 5: text_key folds glyph forms
SOURCES = ("medline",)
CROSS_SOURCES = ("medline_held_out", "dblp_acm")
# Mirrors lib.corpus.extra.EXTRA_SOURCES (not imported: spec parsing must stay light).
EXTRA_SOURCES = ("beebe", "tugboat", "hepcrawl", "loc_books", "refextract")
EXTRA_KEYS = ("extra_sources", "extra_sources_cap")
# Mirrors lib.corpus.positives.NOISE (not imported: spec parsing must stay light).
POSITIVE_NOISE = ("scripts", "symbols", "glyphs", "hyphen_break", "small_caps", "full_stop", "marker")
MIN_SIZE = 100


@dataclass(frozen=True)
class CrossSpec:
    source: str
    size: int
    path: str | None
    journal_pattern: str
    exclude_pattern: str


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    seed: int
    size: int
    val_fraction: float
    test_fraction: float
    positive_fraction: float
    source: str
    casing: dict[str, float]
    other_casing: dict[str, float]
    negatives: dict[str, float]
    length_matching: bool
    cross: CrossSpec
    config: dict  # the resolved node, recorded in the manifest and hashed into the cache key
    extra_sources: tuple[str, ...] = ()
    extra_sources_cap: int = 0
    positive_noise: dict[str, float] = field(default_factory=dict)  # lib/corpus/positives.NOISE name -> rate
    title_forms: float = 0.0  # share of positives rewritten into a title form (positives.FORMS)
    non_english_titles: int = 0  # at most this many non-English MEDLINE records join the in-source ones
    noise_on_negatives: bool = False  # negatives from records and titles get positive_noise's marks too

    @property
    def key(self) -> str:
        # Keys of options added later stay out of the hash while the option is off, so corpora built
        # without it keep the hashes (and caches) they had before the option existed.
        unused = (
            (() if self.extra_sources else EXTRA_KEYS)
            + (() if self.non_english_titles else ("non_english_titles",))
            + (() if self.noise_on_negatives else ("noise_on_negatives",))
        )
        config = {k: v for k, v in self.config.items() if k not in unused}
        blob = json.dumps({"config": config, "corpus_version": CORPUS_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _weights(node: dict, field: str, allowed: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(node, dict) or not node:
        raise ConfigError(f"data.{field} must be a mapping of {', '.join(allowed)} to weights")
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise ConfigError(f"data.{field}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    try:
        weights = {k: float(v) for k, v in node.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"data.{field}: weights must be numbers, got {node}") from None
    if any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"data.{field}: weights must be >= 0 with a positive sum, got {weights}")
    return {k: v for k, v in weights.items() if v > 0}


def _fraction(value, field: str, low: float, high: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"data.{field} must be a number, got {value!r}") from None
    if not low < value < high:
        raise ConfigError(f"data.{field}={value} must lie strictly between {low} and {high}")
    return value


def _int(value, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data.{field} must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"data.{field} must be true or false, got {value!r}")
    return value


def _extra_sources(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"data.extra_sources must be a list such as [hepcrawl, refextract], got {value!r}")
    unknown = [v for v in value if v not in EXTRA_SOURCES]
    if unknown:
        raise ConfigError(
            f"data.extra_sources: unknown source(s) {', '.join(map(str, unknown))}; known: {', '.join(EXTRA_SOURCES)}"
        )
    return tuple(dict.fromkeys(value))  # order-preserving de-duplication


def parse_spec(cfg_data: DictConfig | dict) -> CorpusSpec:
    node = OmegaConf.to_container(cfg_data, resolve=True) if isinstance(cfg_data, DictConfig) else dict(cfg_data)
    required = (
        "name",
        "seed",
        "size",
        "val_fraction",
        "test_fraction",
        "positive_fraction",
        "source",
        "casing",
        "other_casing",
        "negatives",
        "length_matching",
        "cross_source",
    )
    missing = [k for k in required if k not in node]
    if missing:
        raise ConfigError(f"data config lacks {', '.join(missing)} (see conf/data/titles.yaml)")
    val = _fraction(node["val_fraction"], "val_fraction", 0.0, 1.0)
    test = _fraction(node["test_fraction"], "test_fraction", 0.0, 1.0)
    if val + test >= 0.9:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {val + test:.2f} leaves too little to train on")
    if node["source"] not in SOURCES:
        raise ConfigError(f"data.source={node['source']!r}; known: {', '.join(SOURCES)}")
    cross = node["cross_source"] or {}
    if cross.get("source") not in CROSS_SOURCES:
        raise ConfigError(f"data.cross_source.source={cross.get('source')!r}; known: {', '.join(CROSS_SOURCES)}")
    return CorpusSpec(
        name=str(node["name"]),
        seed=_int(node["seed"], "seed", 0),
        size=_int(node["size"], "size", MIN_SIZE),
        val_fraction=val,
        test_fraction=test,
        positive_fraction=_fraction(node["positive_fraction"], "positive_fraction", 0.05, 0.95),
        source=node["source"],
        casing=_weights(node["casing"], "casing", CASINGS),
        other_casing=_weights(node["other_casing"], "other_casing", CASINGS + ("keep",)),
        negatives=_weights(node["negatives"], "negatives", ALL_KINDS),
        length_matching=_bool(node["length_matching"], "length_matching"),
        cross=CrossSpec(
            source=cross["source"],
            size=_int(cross.get("size"), "cross_source.size", MIN_SIZE),
            path=cross.get("path"),
            journal_pattern=str(cross.get("journal_pattern") or ""),
            exclude_pattern=str(cross.get("exclude_pattern") or ""),
        ),
        config=node,
        extra_sources=_extra_sources(node.get("extra_sources")),
        extra_sources_cap=_int(node.get("extra_sources_cap", 2500), "extra_sources_cap", 1),
        positive_noise=(positive_noise := _rates(node.get("positive_noise"), "positive_noise", POSITIVE_NOISE)),
        title_forms=_rate(node.get("title_forms", 0.0), "title_forms"),
        non_english_titles=_int(node.get("non_english_titles", 0), "non_english_titles", 0),
        noise_on_negatives=_noise_on_negatives(node.get("noise_on_negatives", False), positive_noise),
    )


def _noise_on_negatives(value, positive_noise: dict[str, float]) -> bool:
    """``data.noise_on_negatives``: refused where there is no noise to share, rather than silently a no-op."""
    on = _bool(value, "noise_on_negatives")
    if on and not any(rate > 0 for rate in positive_noise.values()):
        raise ConfigError(
            "data.noise_on_negatives=true gives the negatives data.positive_noise's marks, but every rate is 0; "
            "set some data.positive_noise.<mark> > 0 (e.g. data.positive_noise.marker=0.12)"
        )
    return on


def _rate(value, field_name: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"data.{field_name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"data.{field_name}={rate} must lie in [0, 1]")
    return rate


def _rates(node, field_name: str, allowed: tuple[str, ...]) -> dict[str, float]:
    """Independent per-row rates in [0, 1] (not normalised weights); missing or null: none."""
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"data.{field_name} must be a mapping of {', '.join(allowed)} to rates in [0, 1]")
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise ConfigError(f"data.{field_name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    return {k: _rate(v, f"{field_name}.{k}") for k, v in node.items()}
