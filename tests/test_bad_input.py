"""The bad-input matrix: each case exits non-zero with one line naming the file (or option) and the
problem, and leaves nothing that looks complete (its MLflow run is FAILED, no test metrics)."""

import math
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from conftest import write_toy_csv
from entry_points import run_entry_point
from lib.batching import encode
from lib.data import load_data
from lib.models import build_model
from lib.paths import PROJECT_ROOT
from lib.run import run_job


def _rows(n_per_class):
    return pd.DataFrame(
        {
            "text": [f"Title {i} about kernels" for i in range(n_per_class)]
            + [f"{i} Introduction" for i in range(n_per_class)],
            "label": [1] * n_per_class + [0] * n_per_class,
        }
    )


def _write(path, content):
    if isinstance(content, pd.DataFrame):
        content.to_excel(path, index=False) if path.suffix == ".xlsx" else content.to_csv(path, index=False)
    elif content is not None:
        path.write_bytes(content)
    return path


CASES = {  # name: (file name, content, expected words in the one-line error)
    "missing file": ("missing.csv", None, "file not found"),
    "empty file": ("empty.csv", b"", "file is empty"),
    "header only": ("header.csv", b"text,label\n", "has a header but no rows"),
    "wrong columns": ("cols.csv", b"title,y\nA,1\n", "no column 'text', 'label' (columns: title, y)"),
    "labels outside the set": ("labels.csv", b"text,label\nA,1\nB,2\n", "labels '2'; expected 0/1, Y/N"),
    "non-UTF-8 bytes": ("latin1.csv", "text,label\nCaf\u00e9,1\n".encode("latin-1"), "not valid UTF-8 (line 2"),
    "NUL bytes": ("nul.csv", b"text,label\nA\x00B,1\n", "NUL bytes"),
    "a single row": ("one.csv", b"text,label\nA title,1\n", "only 1 labelled row(s)"),
    "one class only": ("oneclass.csv", _rows(10).assign(label=1), "only one class (correct (1))"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_training_file(make_cfg, tmp_path, capsys, case):
    name, content, expected = CASES[case]
    path = _write(tmp_path / name, content)
    cfg = make_cfg("model=tiny_bert", "data=csv", f"data.train={path}")
    with pytest.raises(SystemExit) as stop:
        run_job(cfg)
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and expected in lines[0], lines
    mlflow.set_tracking_uri(f"sqlite:///{cfg.paths.outputs}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=["titlesweep"], output_format="list")
    assert run.info.status == "FAILED" and "test_accuracy" not in run.data.metrics


@pytest.mark.slow
def test_citeseer_test_xlsx_without_yn_column(make_cfg, tmp_path, capsys):
    (tmp_path / "positive.txt").write_text("\n".join(f"Title {i} about kernels" for i in range(20)))
    (tmp_path / "negative.txt").write_text("\n".join(f"{i} Introduction" for i in range(20)))
    _write(tmp_path / "testSet-1000.xlsx", pd.DataFrame({"id": [1], "title given by manchine": ["A title"]}))
    with pytest.raises(SystemExit) as stop:
        run_job(make_cfg("model=tiny_bert", "data=citeseer", f"data.dir={tmp_path}"))
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and "testSet-1000.xlsx: no column 'Y/N'" in line and "testSet-1000 columns" in line


@pytest.mark.slow
def test_ten_thousand_character_title_is_truncated_and_trains(make_cfg, tmp_path):
    frame = pd.read_csv(write_toy_csv(tmp_path / "toy.csv", n_per_class=60))
    frame.loc[0, "text"] = "Long title " * 910  # 10,010 characters
    frame.to_csv(tmp_path / "long.csv", index=False)
    cfg = make_cfg(
        "model=tiny_bert",
        "data=csv",
        f"data.train={tmp_path / 'long.csv'}",
        "data.test_fraction=0.5",
        "trainer.epochs=1",
    )
    splits = load_data(cfg)
    _, tokenizer = build_model(cfg.model, splits.train["text"].tolist(), cfg.paths.cache)
    long_ids, short_ids = encode(tokenizer, [frame.loc[0, "text"], "Long title"], cfg.model.max_length)
    assert len(long_ids) == cfg.model.max_length and len(short_ids) < cfg.model.max_length
    assert math.isfinite(run_job(cfg))  # the run trains and returns its validation F1


def _cli(*args):
    return run_entry_point("train.py", *args, timeout=120)


@pytest.mark.slow
def test_unknown_model_option_is_one_line():
    done = _cli("model=bert_large", "trainer.epochs=1")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: model=bert_large: unknown model option; choose from bert, deberta, minilm, mpnet, "
        "roberta, scibert, tiny_bert, tiny_deberta, tiny_roberta"
    )


@pytest.mark.slow
def test_unwritable_outputs_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    done = _cli(f"paths.outputs={blocker}/outputs")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: paths.outputs={blocker}/outputs: cannot write there (Not a directory)"


@pytest.mark.slow
def test_hub_model_while_offline_is_one_line(tmp_path, toy_csv):
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "experiments" / "train.py"),
            "model=roberta",
            "data=csv",
            f"data.train={toy_csv}",
            f"paths.outputs={tmp_path / 'out'}",
            "extra_eval=null",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1
    assert "'roberta-base' is not in the local Hugging Face cache and the hub is unreachable" in errors[0]
    assert "Traceback" not in done.stderr
