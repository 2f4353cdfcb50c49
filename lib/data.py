"""cfg.data -> train / val / test (and extra evaluation sets) as DataFrames of ``text``, ``label``.

One reader per data option (``titles``, ``csv``, ``citeseer``), all ending in the same checks:
empty titles dropped and counted, validation carved from training when no file is given. Once
every evaluation set is known (test, the extra sets), the leakage guard removes training titles
that occur in any of them or in validation, and validation titles that occur in any of them, comparing
titles as the corpus de-duplicates them (case, spaces and punctuation ignored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from lib.corpus.text import text_key
from lib.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# 1 = a correctly extracted title, 0 = a wrong extraction. Keys are compared case-insensitively.
LABEL_VALUES = {"1": 1, "0": 0, "y": 1, "n": 0, "yes": 1, "no": 0, "true": 1, "false": 0}
CITESEER_TEXT, CITESEER_LABEL = "title given by manchine", "Y/N"  # sic, as in the original file


@dataclass
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)  # rows dropped, per reason
    source: str = ""  # the file or folder the training data came from, for error messages


# ---------------------------------------------------------------- file readers


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def _read_text(path: Path) -> str:
    raw = _check_file(path).read_bytes()
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}: contains NUL bytes (first at byte offset {nul}); is it a binary file?")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # Refuse rather than guess: silently replaced characters would become training text.
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid UTF-8 (line {line}, byte offset {err.start}); re-save the file as UTF-8"
        ) from None


def read_lines(path: Path) -> list[str]:
    """One title per line (positive.txt / negative.txt)."""
    return _read_text(path).splitlines()


def read_table(path: Path) -> pd.DataFrame:
    """CSV, TSV, JSON lines or Excel, every column read as text."""
    path = _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xls"):
            return pd.read_excel(path, dtype=str, keep_default_na=False)
        text = _read_text(path)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(StringIO(text), lines=True, dtype=False).astype(str)
        sep = "\t" if suffix == ".tsv" else ","
        return pd.read_csv(StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except DataError:
        raise
    except Exception as err:  # parser errors from pandas/openpyxl: keep their first line only
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot parse as {suffix or 'csv'} ({first_line})") from None


def parse_labels(values: pd.Series, path: Path, column: str) -> pd.Series:
    keys = values.astype(str).str.strip().str.lower()
    bad = sorted(set(keys[~keys.isin(LABEL_VALUES.keys())]))
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5])
        raise DataError(f"{path}: column '{column}' has labels {shown}; expected 0/1, Y/N, yes/no or true/false")
    return keys.map(LABEL_VALUES).astype(int)


def labelled_table(
    path: Path, text_column: str, label_column: str, hint: str = "set data.text_column / data.label_column"
) -> pd.DataFrame:
    """Read a labelled file into ``text``, ``label`` columns."""
    table = read_table(path)
    missing = [c for c in (text_column, label_column) if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(map(str, table.columns))}); {hint}"
        )
    if table.empty:
        raise DataError(f"{path}: has a header but no rows")
    return pd.DataFrame(
        {"text": table[text_column].astype(str), "label": parse_labels(table[label_column], path, label_column)}
    )


def citeseer_table(path: Path) -> pd.DataFrame:
    """The testSet-1000 format: ``title given by manchine`` and ``Y/N`` columns."""
    return labelled_table(
        path,
        CITESEER_TEXT,
        CITESEER_LABEL,
        hint=f"expected the testSet-1000 columns '{CITESEER_TEXT}' and '{CITESEER_LABEL}'",
    )


def eval_table(path: Path) -> pd.DataFrame:
    """A labelled evaluation file in CiteSeer format or with ``text``/``label`` columns."""
    columns = read_table(path).columns
    if CITESEER_LABEL in columns:
        return citeseer_table(path)
    return labelled_table(path, "text", "label")


def _resolve_test_file(folder: Path, name: str) -> Path:
    base = folder / name
    if base.suffix:
        return base
    for suffix in (".xlsx", ".csv"):
        if base.with_suffix(suffix).is_file():
            return base.with_suffix(suffix)
    raise DataError(f"{base}.xlsx: file not found (nor {base}.csv)")


# ---------------------------------------------------------------- cleaning and splitting


def drop_empty(frame: pd.DataFrame, stats: dict[str, int], split: str) -> pd.DataFrame:
    frame = frame.assign(text=frame["text"].str.strip())
    keep = frame["text"].str.len() > 0
    stats[f"{split}_empty_dropped"] = int((~keep).sum())
    return frame[keep].reset_index(drop=True)


def carve(frame: pd.DataFrame, fraction: float, seed: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off a stratified, seeded ``fraction`` of ``frame``."""
    if not 0 < fraction < 1:
        raise ConfigError(f"data.{what}_fraction={fraction}: must be between 0 and 1 when no {what} file is given")
    rest, part = train_test_split(frame, test_size=fraction, random_state=seed, stratify=frame["label"])
    return rest.reset_index(drop=True), part.reset_index(drop=True)


def normalised(texts: pd.Series) -> pd.Series:
    """The form titles are compared in: the corpus's duplicate key (lib/corpus/text.text_key), which
    ignores case, spaces and punctuation, so the guard and the corpus's de-duplication agree."""
    return texts.map(text_key)


def remove_overlap(frame: pd.DataFrame, held_out: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` without the rows whose normalised text occurs in ``held_out``; and how many went."""
    overlap = normalised(frame["text"]).isin(set(normalised(held_out["text"])))
    return frame[~overlap].reset_index(drop=True), int(overlap.sum())


def remove_leaks(splits: Splits) -> None:
    """Leakage guard: no training title in validation, test or an extra evaluation set, and no
    validation title in test or an extra evaluation set (validation picks the epoch and the
    threshold: its rows would tune the held-out figures). Titles are compared by ``normalised``.
    Counted per set (``train_leaks_<set>``, ``val_test_overlap_removed``, ``val_leaks_<extra set>``)
    and in total (``train_leaks_removed``); the evaluation sets are kept whole."""
    splits.val, splits.stats["val_test_overlap_removed"] = remove_overlap(splits.val, splits.test)
    for name, frame in splits.extra.items():
        splits.val, splits.stats[f"val_leaks_{name}"] = remove_overlap(splits.val, frame)
    total = 0
    for name, frame in [("val", splits.val), ("test", splits.test), *splits.extra.items()]:
        splits.train, removed = remove_overlap(splits.train, frame)
        splits.stats[f"train_leaks_{name}"] = removed
        total += removed
    splits.stats["train_leaks_removed"] = total
    if splits.val.empty:
        raise DataError(
            f"{splits.source}: every validation title also occurs in the test set or an extra evaluation set"
        )
    check_training_set(splits.train, splits.source, min_per_class=1)


MIN_ROWS_PER_CLASS = 5  # enough for a stratified train / validation / test split to hold both classes


def check_training_set(train: pd.DataFrame, source: str, min_per_class: int = MIN_ROWS_PER_CLASS) -> None:
    """Both classes, with at least ``min_per_class`` rows each (fewer after trainer.limit_train is fine)."""
    counts = train["label"].value_counts()
    if len(train) < 2 * min_per_class:
        raise DataError(
            f"{source}: only {len(train)} labelled row(s); at least {2 * min_per_class} "
            f"({min_per_class} per class) are needed to train and validate"
        )
    if len(counts) < 2:
        only = "correct (1)" if counts.index[0] == 1 else "wrong (0)"
        raise DataError(f"{source}: training data has only one class ({only}); both labels are needed")
    if counts.min() < min_per_class:
        raise DataError(
            f"{source}: only {counts.min()} row(s) of label {counts.idxmin()}; "
            f"at least {min_per_class} per class are needed"
        )


def finish(train, val, test, seed, val_fraction, stats, source) -> Splits:
    """Shared tail of every reader: drop empties, carve validation, check classes."""
    train = drop_empty(train, stats, "train")
    if train.empty:
        raise DataError(f"{source}: no non-empty training titles")
    check_training_set(train, source)
    if val is None:
        train, val = carve(train, val_fraction, seed, "val")
    val, test = drop_empty(val, stats, "val"), drop_empty(test, stats, "test")
    return Splits(train=train, val=val, test=test, stats=stats, source=str(source))


# ---------------------------------------------------------------- one reader per data option


def load_csv(cfg_data) -> Splits:
    stats: dict[str, int] = {}
    read = lambda p: labelled_table(Path(p), cfg_data.text_column, cfg_data.label_column)  # noqa: E731
    train = read(cfg_data.train)
    check_training_set(train, cfg_data.train)
    if cfg_data.test:
        test = read(cfg_data.test)
    else:
        train, test = carve(train, cfg_data.test_fraction, cfg_data.seed, "test")
    val = read(cfg_data.val) if cfg_data.val else None
    return finish(train, val, test, cfg_data.seed, cfg_data.val_fraction, stats, cfg_data.train)


def load_citeseer(cfg_data) -> Splits:
    folder = Path(cfg_data.dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: data.dir is not a folder (expected positive.txt, negative.txt, testSet-1000.xlsx)")
    positive = read_lines(folder / cfg_data.positive)
    negative = read_lines(folder / cfg_data.negative)
    train = pd.DataFrame({"text": positive + negative, "label": [1] * len(positive) + [0] * len(negative)})
    test = citeseer_table(_resolve_test_file(folder, cfg_data.test))
    return finish(train, None, test, cfg_data.seed, cfg_data.val_fraction, {}, str(folder))


def load_titles(cfg_data, cache_dir: Path) -> Splits:
    from lib.corpus import ensure_corpus

    folder = ensure_corpus(cfg_data, Path(cache_dir))
    read = lambda name: pd.read_csv(folder / f"{name}.csv", keep_default_na=False)[["text", "label"]]  # noqa: E731
    splits = finish(read("train"), read("val"), read("test"), cfg_data.seed, 0.0, {}, str(folder))
    splits.extra["cross_source"] = read("cross_source")
    return splits


READERS = {"csv": load_csv, "citeseer": load_citeseer, "titles": load_titles}


def load_data(cfg) -> Splits:
    """Read cfg.data, add cfg.extra_eval's labelled files that exist on this machine, guard leaks."""
    name = cfg.data.name
    if name not in READERS:
        raise ConfigError(f"data={name}: unknown data option; choose one of {', '.join(READERS)}")
    splits = READERS[name](cfg.data, cfg.paths.cache) if name == "titles" else READERS[name](cfg.data)
    for eval_name, path in (cfg.get("extra_eval") or {}).items():
        if path is None or not Path(path).is_file():
            log.warning("extra_eval.%s: %s not found, skipped", eval_name, path)
            continue
        splits.extra[eval_name] = drop_empty(eval_table(Path(path)), splits.stats, eval_name)
    remove_leaks(splits)
    return splits
