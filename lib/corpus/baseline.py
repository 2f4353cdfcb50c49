"""A cheap reference model for the corpus: TF-IDF word and character n-grams + logistic regression,
trained on the corpus train split and scored in-source (test), cross-source, and on real labelled
files such as CiteSeer's dev set when present."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.table import Table

from lib.errors import DataError

CITESEER_TEXT, CITESEER_LABEL = "title given by manchine", "Y/N"  # sic, as in the course files
MODEL_NAME = "TF-IDF+LR"
MODEL_DETAIL = "TF-IDF word 1-2-grams + case-sensitive char 2-5-grams, logistic regression (C=4)"


@dataclass(frozen=True)
class EvalResult:
    name: str
    rows: int
    accuracy: float
    f1: float


def read_labelled(path: Path) -> pd.DataFrame:
    """A labelled file as (text, label): the CiteSeer test-file columns or plain text/label."""
    path = Path(path)
    try:
        df = pd.read_excel(path) if path.suffix in (".xlsx", ".xls") else pd.read_csv(path, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if {CITESEER_TEXT, CITESEER_LABEL} <= set(df.columns):
        df = df.rename(columns={CITESEER_TEXT: "text", CITESEER_LABEL: "label"})
    if not {"text", "label"} <= set(df.columns):
        raise DataError(f"{path}: needs columns '{CITESEER_TEXT}','{CITESEER_LABEL}' or 'text','label'; has {list(df.columns)}")
    df = df[["text", "label"]].copy()
    df["text"] = df["text"].fillna("").astype(str).str.strip()
    df = df[df["text"] != ""]  # the course file has rows whose extraction produced nothing
    mapping = {"y": 1, "yes": 1, "1": 1, "true": 1, "n": 0, "no": 0, "0": 0, "false": 0}
    labels = df["label"].astype(str).str.strip().str.lower().map(mapping)
    if labels.isna().any():
        bad = sorted(set(df.loc[labels.isna(), "label"].astype(str)))[:5]
        raise DataError(f"{path}: labels must be Y/N or 1/0, found {bad}")
    return df.assign(label=labels.astype(int)).reset_index(drop=True)


def train_baseline(train: pd.DataFrame):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        # Case-sensitive characters: capitals, dot leaders and digits are part of the evidence.
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, lowercase=False),
    )
    model = make_pipeline(features, LogisticRegression(C=4.0, max_iter=3000))
    return model.fit(train["text"].astype(str), train["label"].astype(int))


def evaluate(model, name: str, df: pd.DataFrame) -> EvalResult:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = model.predict(df["text"].astype(str))
    return EvalResult(name, len(df), float(accuracy_score(df["label"], predicted)),
                      float(f1_score(df["label"], predicted, pos_label=1)))


def run_baseline(corpus: Path, extra: dict[str, str | None]) -> tuple[list[EvalResult], list[str]]:
    """Scores on test, cross_source and each existing ``extra`` file; returns (results, skipped)."""
    read = lambda name: pd.read_csv(Path(corpus) / f"{name}.csv", keep_default_na=False)  # noqa: E731
    model = train_baseline(read("train"))
    results = [evaluate(model, "test (in-source)", read("test")),
               evaluate(model, "cross_source", read("cross_source"))]
    skipped = []
    for name, path in (extra or {}).items():
        if path and Path(path).is_file():
            results.append(evaluate(model, name, read_labelled(Path(path))))
        else:
            skipped.append(f"{name}: {path} not found, skipped")
    return results, skipped


def results_table(results: list[EvalResult], title: str) -> Table:
    table = Table(title=title)
    for column in ("model", "eval set", "rows", "accuracy", "F1 (class 1)"):
        table.add_column(column, justify="left" if column in ("model", "eval set") else "right")
    for r in results:
        table.add_row(MODEL_NAME, r.name, str(r.rows), f"{r.accuracy:.4f}", f"{r.f1:.4f}")
    return table


def results_markdown(results: list[EvalResult], title: str) -> str:
    lines = [f"## {title}", "", f"{MODEL_NAME}: {MODEL_DETAIL}, trained on the corpus train split.", "",
             "| model | eval set | rows | accuracy | F1 (class 1) |", "|---|---|---:|---:|---:|"]
    lines += [f"| {MODEL_NAME} | {r.name} | {r.rows} | {r.accuracy:.4f} | {r.f1:.4f} |" for r in results]
    return "\n".join(lines) + "\n"
