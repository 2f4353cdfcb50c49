"""Data readers: formats, label spellings, cleaning, the leakage guard and one-line errors."""

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import CITESEER_DEV, write_toy_csv
from lib.corpus.text import text_key
from lib.data import citeseer_table, load_citeseer, load_csv, load_data, remove_leaks
from lib.errors import DataError

CITESEER_ROWS = pd.DataFrame(
    {
        "id": ["a.txt", "b.txt", "c.txt", "d.txt"],
        "title given by manchine": ["Sparse Kernel Methods", "", "Abstract", "ON GRAPH COLOURING"],
        "Y/N": ["Y", "N", "N", "y"],
        "original title": ["", "A Title", "Real Title", ""],
    }
)


def _csv_cfg(path, **kw):
    return OmegaConf.create(
        {
            "name": "csv",
            "train": str(path),
            "val": None,
            "test": None,
            "text_column": "text",
            "label_column": "label",
            "val_fraction": 0.1,
            "test_fraction": 0.1,
            "seed": 0,
            **kw,
        }
    )


def _guarded(splits):
    """A reader's splits after the leakage guard, as load_data returns them."""
    remove_leaks(splits)
    return splits


def _citeseer_dir(tmp_path, test_suffix=".xlsx"):
    (tmp_path / "positive.txt").write_text("\n".join(f"Title number {i} about kernels" for i in range(30)) + "\n\n")
    (tmp_path / "negative.txt").write_text("\n".join(f"{i} Introduction" for i in range(30)) + "\nABSTRACT\n")
    test = tmp_path / f"testSet-1000{test_suffix}"
    if test_suffix == ".xlsx":
        CITESEER_ROWS.to_excel(test, index=False)
    else:
        CITESEER_ROWS.to_csv(test, index=False)
    return OmegaConf.create(
        {
            "name": "citeseer",
            "dir": str(tmp_path),
            "positive": "positive.txt",
            "negative": "negative.txt",
            "test": "testSet-1000",
            "val_fraction": 0.1,
            "seed": 0,
        }
    )


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_citeseer_loader_reads_the_original_format(tmp_path, suffix):
    splits = _guarded(load_citeseer(_citeseer_dir(tmp_path, suffix)))
    assert splits.test["text"].tolist() == ["Sparse Kernel Methods", "Abstract", "ON GRAPH COLOURING"]
    assert splits.test["label"].tolist() == [1, 0, 1]  # Y/N case-insensitive
    assert splits.stats["test_empty_dropped"] == 1 and splits.stats["train_empty_dropped"] == 1
    # 61 non-empty training lines; "ABSTRACT" is also a test title (case-insensitively): removed
    assert splits.stats["train_leaks_removed"] == 1
    assert len(splits.train) + len(splits.val) == 60
    assert "ABSTRACT" not in set(splits.train["text"])
    assert abs(splits.val["label"].mean() - 0.5) < 0.2  # stratified


@pytest.mark.skipif(not CITESEER_DEV.is_file(), reason="shared/data/citeseer_dev.csv is not on this machine")
def test_real_citeseer_dev_file_reads():
    frame = citeseer_table(CITESEER_DEV)
    nonempty = frame[frame["text"].str.strip() != ""]
    assert len(nonempty) == 312 and int(nonempty["label"].sum()) == 190


def test_csv_labels_in_any_spelling_and_leaks_removed(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame(
        {
            "title": ["A", "b", "C", "d", "Shared Title", "E", "f", "G"] * 3,
            "ok": ["yes", "no", "TRUE", "false", "Y", "1", "0", "N"] * 3,
        }
    ).to_csv(train, index=False)
    test = tmp_path / "test.csv"
    pd.DataFrame({"title": ["shared title", "zzz"], "ok": [1, 0]}).to_csv(test, index=False)
    splits = _guarded(
        load_csv(_csv_cfg(train, test=str(test), text_column="title", label_column="ok", val_fraction=0.25))
    )
    assert set(splits.train["label"]) == {0, 1}
    assert "Shared Title" not in set(splits.train["text"])
    removed = splits.stats["train_leaks_removed"] + splits.stats["val_test_overlap_removed"]
    assert removed >= 1 and len(splits.train) + len(splits.val) + removed == 24


def test_csv_carves_validation_and_test_without_overlap(tmp_path):
    splits = _guarded(load_csv(_csv_cfg(write_toy_csv(tmp_path / "t.csv", n_per_class=100))))
    assert (len(splits.val), len(splits.test)) == (18, 20)
    assert len(splits.train) == 200 - 38 - splits.stats["train_leaks_removed"]
    seen = set(splits.val["text"].str.casefold()) | set(splits.test["text"].str.casefold())
    assert not seen & set(splits.train["text"].str.casefold())


def _write(path, texts, labels):
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def test_leakage_guard_covers_extra_evaluation_sets_and_validation_against_test(tmp_path):
    # Training rows: 20 unique titles plus three that occur elsewhere, written differently.
    train_texts = [f"title number {i}" for i in range(20)] + ["Shared  With Extra", "IN VAL", "in test"]
    train = _write(tmp_path / "train.csv", train_texts, [i % 2 for i in range(23)])
    val = _write(tmp_path / "val.csv", ["in val", "val only", "Both Val And Test", "v2"], [1, 0, 1, 0])
    test = _write(tmp_path / "test.csv", ["In Test", "both val and  test", "t3"], [1, 1, 0])
    extra = _write(tmp_path / "extra.csv", ["shared with extra", "extra only"], [1, 0])
    cfg = OmegaConf.create(
        {
            "data": _csv_cfg(train, val=str(val), test=str(test)),
            "paths": {"cache": str(tmp_path / "cache")},
            "extra_eval": {"mine": str(extra)},
        }
    )
    splits = load_data(cfg)
    assert splits.train["text"].tolist() == [f"title number {i}" for i in range(20)]
    assert splits.val["text"].tolist() == ["in val", "val only", "v2"]  # its test duplicate is gone
    assert splits.stats["val_test_overlap_removed"] == 1
    assert (splits.stats["train_leaks_val"], splits.stats["train_leaks_test"], splits.stats["train_leaks_mine"]) == (
        1,
        1,
        1,
    )
    assert splits.stats["train_leaks_removed"] == 3
    assert splits.extra["mine"]["text"].tolist() == ["shared with extra", "extra only"]  # evaluation sets kept whole


def test_the_guard_compares_titles_as_the_corpus_deduplicates_them_and_keeps_extra_sets_out_of_validation(tmp_path):
    # Each shared title is written differently in each file: case, spaces and punctuation.
    train_texts = [f"title number {i}" for i in range(20)] + ["Sparse Bayesian inference.", "Graph-colouring: a survey"]
    train = _write(tmp_path / "train.csv", train_texts, [i % 2 for i in range(22)])
    val_texts = ["val only", "ABSTRACT:", "Page  3", "v2", "v3"]
    val = _write(tmp_path / "val.csv", val_texts, [1, 0, 0, 0, 1])
    test = _write(tmp_path / "test.csv", ["sparse bayesian inference", "t2"], [1, 0])
    extra = _write(tmp_path / "extra.csv", ["Graph colouring -- a survey", "Abstract", "e3"], [1, 0, 1])
    other = _write(tmp_path / "other.csv", ["page 3.", "o2"], [0, 1])
    cfg = OmegaConf.create(
        {
            "data": _csv_cfg(train, val=str(val), test=str(test)),
            "paths": {"cache": str(tmp_path / "cache")},
            "extra_eval": {"mine": str(extra), "other": str(other)},
        }
    )
    splits = load_data(cfg)
    # the corpus's duplicate key (lib/corpus/text.text_key) says these are the same titles
    assert text_key("Sparse Bayesian inference.") == text_key("sparse bayesian inference")
    assert text_key("Graph-colouring: a survey") == text_key("Graph colouring -- a survey")
    assert splits.train["text"].tolist() == [f"title number {i}" for i in range(20)]
    assert (splits.stats["train_leaks_test"], splits.stats["train_leaks_mine"]) == (1, 1)
    # validation picks the epoch and the threshold: no row of an extra evaluation set in it either
    assert splits.val["text"].tolist() == ["val only", "v2", "v3"]
    assert (splits.stats["val_leaks_mine"], splits.stats["val_leaks_other"]) == (1, 1)
    assert splits.stats["val_test_overlap_removed"] == 0
    assert [len(f) for f in (splits.test, *splits.extra.values())] == [2, 3, 2]  # evaluation sets kept whole


def test_the_guard_sees_through_the_glyphs_pdf_extraction_leaves(tmp_path):
    # The corpus's glyph noise (data.positive_noise.glyphs) writes ligature code points and spacing
    # accents into training titles; a real sample may hold the clean title, or the other way round.
    # Unicode's compatibility forms and combining marks must not hide a leak from the guard.
    leaked = {
        "Speciﬁc heat of thin ﬁlms": "Specific heat of thin films",
        "Mod´elisation des r´eseaux": "Modélisation des réseaux",
        "Cafe\u0301 culture and sleep": "Café culture and sleep",  # decomposed vs precomposed é
    }
    train_texts = [f"title number {i}" for i in range(20)] + list(leaked)
    train = _write(tmp_path / "train.csv", train_texts, [i % 2 for i in range(23)])
    extra = _write(tmp_path / "extra.csv", [*leaked.values(), "e4"], [1, 1, 1, 0])
    cfg = OmegaConf.create(
        {
            "data": _csv_cfg(train),
            "paths": {"cache": str(tmp_path / "cache")},
            "extra_eval": {"real": str(extra)},
        }
    )
    splits = load_data(cfg)
    assert splits.stats["train_leaks_real"] == 3
    assert not set(splits.train["text"]) & set(leaked)


def test_jsonl_and_tsv_read(tmp_path):
    rows = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": [0, 1] * 10})
    rows.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    rows.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    for name in ("d.jsonl", "d.tsv"):
        splits = load_csv(_csv_cfg(tmp_path / name))
        assert len(splits.train) + len(splits.val) + len(splits.test) == 20


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "file not found"),
        (b"", "file is empty"),
        (b"title,label\nA,1\nB,0\n", "no column 'text' (columns: title, label)"),
        (b"text,label\nA,1\nB,maybe\n", "labels 'maybe'; expected 0/1, Y/N"),
        (b"text,label\nA,1\n\xff\xfe,0\n", "not valid UTF-8 (line 3, byte offset 15)"),
        (b"text,label\nA,1\nB\x00,0\n", "NUL bytes"),
        (b"text,label\nA,1\nB,1\nC,1\nD,1\nE,1\nF,1\nG,1\nH,1\nI,1\nJ,1\n", "only one class (correct (1))"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_csv(_csv_cfg(path))
    message = str(err.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message
