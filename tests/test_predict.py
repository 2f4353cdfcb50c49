"""Using the winner: predict.py on every input format, evaluate.py into MLflow, the pyfunc model in a
fresh process (Python and `mlflow models predict`), registering the best run with compare.py, and
one-line errors. One tiny model, trained once for the whole module, serves every test."""

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from conftest import write_toy_csv
from entry_points import run_entry_point
from lib import inference
from lib.errors import ConfigError, UserError
from lib.paths import CONF_DIR, PROJECT_ROOT
from lib.run import run_training
from lib.tracking import ROLE_TAG

TRAIN = [
    "model=tiny_bert",
    "data=csv",
    "trainer.epochs=2",
    "schedule.lr=1e-3",
    "schedule.warmup_ratio=0.0",
    "trainer.batch_size=16",
    "trainer.log_every_steps=5",
    "tracking.log_model=true",
    "extra_eval=null",
]
EVAL_FILES = {
    "classification_report.txt",
    "classification_report.json",
    "confusion_matrix.png",
    "precision_recall_curve.png",
    "embedding_map.png",
    "errors.csv",
    "predictions.csv",
}


def _entry(name: str):
    """experiments/<name>.py as a module, to call main() in-process: a new process re-imports torch."""
    spec = importlib.util.spec_from_file_location(f"entry_{name}", PROJECT_ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


predict_main, evaluate_main, compare_main = (_entry(n) for n in ("predict", "evaluate", "compare"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("winner")
    toy = write_toy_csv(root / "toy.csv")
    outputs = root / "outputs"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.outputs={outputs}", f"data.train={toy}", *TRAIN])
    metrics = run_training(cfg)
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_f1"] >= 0.9, metrics  # a model worth serving
    mlflow.set_tracking_uri(f"sqlite:///{outputs}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=["titlesweep"], output_format="list")
    fresh = pd.read_csv(write_toy_csv(root / "fresh.csv", n_per_class=12, seed=1), keep_default_na=False)
    # Unseen titles from the same two vocabularies, and an empty title at row 3.
    fresh = pd.concat([fresh.iloc[:3], pd.DataFrame({"text": [""], "label": [0]}), fresh.iloc[3:]], ignore_index=True)
    return SimpleNamespace(
        root=root,
        toy=toy,
        uri=mlflow.get_tracking_uri(),
        run=run,
        run_id=run.info.run_id,
        threshold=metrics["decision_threshold"],
        paths=f"paths.outputs={outputs}",
        fresh=fresh,
    )


def _write(frame: pd.DataFrame, path, column="title"):
    """The titles of ``frame`` in the file format of ``path``'s suffix."""
    titles = frame["text"]
    if path.suffix == ".txt":
        path.write_text("".join(f"{t}\n" for t in titles), encoding="utf-8")
    elif path.suffix == ".xlsx":
        pd.DataFrame({"id": range(len(titles)), column: titles}).to_excel(path, index=False)
    else:
        pd.DataFrame({"id": range(len(titles)), column: titles}).to_csv(
            path, index=False, sep="\t" if path.suffix == ".tsv" else ","
        )
    return path


def _predict(trained, source, *options):
    out = source.with_name(source.stem + "-scored.csv")
    predict_main([f"run={trained.run_id}", f"input={source}", f"output={out}", trained.paths, *options])
    return pd.read_csv(out, keep_default_na=False, na_values={"probability": [""]})


@pytest.mark.slow
@pytest.mark.parametrize("suffix,column", [(".txt", None), (".csv", "title"), (".tsv", "text"), (".xlsx", "title")])
def test_predict_keeps_every_row_in_order_on_every_format(trained, tmp_path, suffix, column):
    source = _write(trained.fresh, tmp_path / f"titles{suffix}", column)
    scored = _predict(trained, source)
    assert list(scored.columns) == ["title", "probability", "label"]
    assert scored["title"].tolist() == trained.fresh["text"].tolist()  # every row, input order
    empty = scored["title"] == ""
    assert empty.sum() == 1 and scored["probability"][empty].isna().all() and (scored["label"][empty] == 0).all()
    probs = scored["probability"][~empty]
    assert probs.between(0.0, 1.0).all()
    assert (scored["label"][~empty] == (probs >= trained.threshold).astype(int)).all()
    truth = trained.fresh["label"][~empty]
    assert (scored["label"][~empty] == truth).mean() >= 0.9  # the model learnt the two vocabularies


@pytest.mark.slow
def test_bf16_scoring_is_an_option_that_agrees_with_the_fp32_default(trained, tmp_path):
    source = _write(trained.fresh, tmp_path / "titles.txt")
    fp32, bf16 = _predict(trained, source), _predict(trained, source, "precision=bf16")
    assert inference.load_predictor(run=trained.run_id).precision == "fp32"  # the default
    scored = fp32["title"] != ""
    gap = (fp32["probability"][scored] - bf16["probability"][scored]).abs()
    assert 0 < gap.max() < 0.05  # bf16 arithmetic: close, not identical
    assert (fp32["label"] == bf16["label"]).mean() >= 0.95


@pytest.mark.slow
def test_stored_threshold_is_used_and_can_be_overridden(trained, tmp_path):
    files = MlflowClient(trained.uri).download_artifacts(trained.run_id, "model/titlesweep.json", str(tmp_path))
    stored = json.loads(open(files).read())
    assert stored["decision_threshold"] == pytest.approx(trained.run.data.metrics["decision_threshold"])
    assert stored["max_length"] == int(trained.run.data.params["model.max_length"]) == 64
    source = _write(trained.fresh, tmp_path / "titles.txt")
    default = _predict(trained, source)
    expected = inference.labels_at(default["probability"].to_numpy(), stored["decision_threshold"])
    assert (default["label"] == expected).all()
    everything = _predict(trained, source, "threshold=0")
    assert everything["label"].tolist() == [int(t != "") for t in everything["title"]]  # empty rows stay 0
    cut = float(np.nanmedian(default["probability"]))
    at_median = _predict(trained, source, f"threshold={cut}")
    assert (at_median["label"] == (at_median["probability"] >= cut).astype(int)).all()
    assert 0 < at_median["label"].sum() < len(at_median) - 1


def _artifacts(client, run_id, path=""):
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return set(out)


@pytest.mark.slow
@pytest.mark.parametrize("data", ["input", "data=csv"])
def test_evaluate_logs_a_linked_run_with_every_artifact(trained, tmp_path, data):
    if data == "input":  # CiteSeer test format, every row; 60 titles: the embedding map is a t-SNE
        frame = trained.fresh[trained.fresh["text"] != ""].head(20)
        frame = pd.concat([frame, pd.read_csv(trained.toy).head(40)], ignore_index=True)
        path = tmp_path / "testSet.csv"
        frame.rename(columns={"text": "title given by manchine", "label": "Y/N"}).replace(
            {"Y/N": {1: "Y", 0: "N"}}
        ).to_csv(path, index=False)
        args, rows = [f"input={path}"], 60
    else:  # the test split training carved from the same file: 10% of 400 rows, a PCA map
        args, rows = ["data=csv", f"data.train={trained.toy}"], 40
    evaluate_main([f"run={trained.run_id}", trained.paths, *args])
    client = MlflowClient(trained.uri)
    (run,) = client.search_runs(
        [trained.run.info.experiment_id],
        f"tags.source_run_id = '{trained.run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert run.info.status == "FINISHED" and run.info.run_name == f"eval-{trained.run.info.run_name}"
    assert EVAL_FILES <= _artifacts(client, run.info.run_id)
    metrics = run.data.metrics
    assert metrics["rows"] == rows and metrics["threshold"] == pytest.approx(trained.threshold)
    for name in ("accuracy", "precision", "recall", "f1", "macro_f1"):
        assert 0.0 <= metrics[name] <= 1.0 and 0.0 <= metrics[f"{name}_at_0.5"] <= 1.0, name
    assert metrics["accuracy"] >= 0.9 and 0.0 <= metrics["roc_auc"] <= 1.0 and "average_precision" in metrics
    errors = pd.read_csv(client.download_artifacts(run.info.run_id, "errors.csv", str(tmp_path)))
    assert list(errors.columns) == ["text", "label", "probability", "prediction"]
    assert len(errors) == round((1 - metrics["accuracy"]) * rows)


@pytest.mark.slow
def test_evaluate_refuses_data_options_other_than_the_training_runs(trained, tmp_path):
    client = MlflowClient(trained.uri)
    experiment = [trained.run.info.experiment_id]
    linked = f"tags.source_run_id = '{trained.run_id}'"
    before = len(client.search_runs(experiment, linked))
    model = [f"run={trained.run_id}", trained.paths]
    same = ["data=csv", f"data.train={trained.toy}"]
    for options, named in (
        ([*same, "data.seed=1"], "data.seed=1 (training run: 0)"),
        (
            [*same, "data.test_fraction=0.2", "data.val_fraction=0.2"],
            "data.test_fraction=0.2 (training run: 0.1), data.val_fraction=0.2 (training run: 0.1)",
        ),
        (["data=csv", f"data.train={tmp_path / 'other.csv'}"], f"data.train={tmp_path / 'other.csv'} (training run: "),
        (["data=citeseer", f"data.dir={tmp_path}"], "data.name=citeseer (training run: csv)"),
    ):
        with pytest.raises(ConfigError) as err:
            evaluate_main([*model, *options])
        message = str(err.value)
        assert named in message and "allow_data_mismatch=true" in message and "\n" not in message, message
    assert len(client.search_runs(experiment, linked)) == before  # nothing scored, nothing logged

    # The same file named by another path is the same data; an explicit override scores other data and says so.
    evaluate_main([*model, "data=csv", f"data.train={os.path.relpath(trained.toy)}"])
    evaluate_main([*model, *same, "data.seed=1", "allow_data_mismatch=true"])
    allowed, same_file = client.search_runs(experiment, linked, order_by=["attributes.start_time DESC"], max_results=2)
    assert "allow_data_mismatch" not in same_file.data.tags and "data_mismatch" not in same_file.data.tags
    assert allowed.data.tags["allow_data_mismatch"] == "true"
    assert allowed.data.tags["data_mismatch"] == "data.seed=1 (training run: 0)"


def test_only_data_options_that_change_the_rows_are_differences(tmp_path, monkeypatch):
    from lib.evaluation import data_differences

    def data(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=["data=csv", *overrides]).data

    toy = write_toy_csv(tmp_path / "toy.csv")
    logged = {f"data.{k}": str(v) for k, v in data(f"data.train={toy}").items()}
    logged["data.train_rows"] = "324"  # logged by the run, not an option: not compared
    assert data_differences(data(f"data.train={toy}"), logged) == []
    monkeypatch.chdir(tmp_path)
    assert data_differences(data("data.train=toy.csv"), logged) == []  # the same file, spelled another way
    assert data_differences(data("data.train=toy.csv", "data.seed=3", "data.val_fraction=0.2"), logged) == [
        "data.seed=3 (training run: 0)",
        "data.val_fraction=0.2 (training run: 0.1)",
    ]
    del logged["data.label_column"]
    assert data_differences(data(f"data.train={toy}"), logged) == ["data.label_column=label (training run: not logged)"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        titles = compose("config", overrides=["data=titles"]).data
    assert data_differences(titles, logged) == ["data.name=titles (training run: csv)"]  # not its 40 other options


FRESH_PROCESS = """
import json, sys
import mlflow, pandas as pd
sys.modules["lib"] = None  # any import of this repository's package now fails: the model must not need it
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.DataFrame({"title": json.loads(sys.argv[2])})
out = model.predict(frame)
bf16 = model.predict(frame, params={"precision": "bf16", "batch_size": 3})
try:
    model.predict(frame, params={"precision": "fp16"})
    refused = ""
except Exception as err:
    refused = str(err)
print(json.dumps({"columns": list(out.columns), "probability": out["probability"].tolist(),
                  "label": out["label"].tolist(), "bf16": bf16["probability"].tolist(), "refused": refused}))
"""


def _offline_env(trained):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": trained.uri}


@pytest.mark.slow
def test_pyfunc_model_loads_and_predicts_in_a_fresh_process(trained, tmp_path):
    titles = trained.fresh["text"].head(8).tolist()
    command = [sys.executable, "-c", FRESH_PROCESS, f"runs:/{trained.run_id}/pyfunc_model", json.dumps(titles)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_offline_env(trained))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["columns"] == ["probability", "label"]
    mlflow.set_tracking_uri(trained.uri)
    expected = inference.load_predictor(run=trained.run_id).predict_titles(titles)
    np.testing.assert_allclose(np.array(out["probability"], dtype=float), expected, atol=1e-5)  # NaN == NaN
    assert out["label"] == inference.labels_at(expected, trained.threshold).tolist()
    # params: bf16 autocast in batches of 3 gives close, not identical, probabilities; fp16 is refused
    bf16 = np.array(out["bf16"], dtype=float)
    assert np.isnan(bf16[3]) and 0 < np.nanmax(np.abs(bf16 - expected)) < 0.05
    assert "precision='fp16': choose one of fp32, bf16" in out["refused"]


@pytest.mark.slow
def test_mlflow_models_predict_cli_serves_the_pyfunc_model_offline(trained, tmp_path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"title": trained.fresh["text"].head(5)}).to_csv(source, index=False)
    cli = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "predict",
        "-m",
        f"runs:/{trained.run_id}/pyfunc_model",
        "-i",
        str(source),
        "-t",
        "csv",
        "--env-manager",
        "local",
        "-o",
        str(tmp_path / "out.json"),
    ]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_offline_env(trained))
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert len(predictions) == 5 and {"probability", "label"} == set(predictions[0])


@pytest.mark.slow
def test_compare_registers_the_best_run_and_predict_loads_it_by_alias(trained, tmp_path):
    client = MlflowClient(trained.uri)
    experiment = trained.run.info.experiment_id
    # Make the trained run one job of a sweep, beside a worse job that has no model.
    sweep = client.create_run(experiment, run_name="sweep-test", tags={ROLE_TAG: "sweep"})
    client.set_terminated(sweep.info.run_id)
    for tag, value in {"mlflow.parentRunId": sweep.info.run_id, ROLE_TAG: "job"}.items():
        client.set_tag(trained.run_id, tag, value)
    worse = client.create_run(
        experiment, run_name="worse", tags={"mlflow.parentRunId": sweep.info.run_id, ROLE_TAG: "job"}
    )
    # The best test F1 but the worst validation F1: registering by test (the old default) would pick it.
    client.log_metric(worse.info.run_id, "test_f1", 0.999)
    client.log_metric(worse.info.run_id, "best_val_f1", 0.0)
    client.log_metric(worse.info.run_id, "test_loss", 0.0)  # best by test_loss, but nothing to register
    client.set_terminated(worse.info.run_id)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # registering must use compare's store only
    compare_main(["sweep=latest", "register=true", f"out={tmp_path / 'cmp'}", trained.paths])
    version = client.get_model_version_by_alias("titlesweep-best", "champion")
    assert version.run_id == trained.run_id and str(version.version) == "1"
    assert version.tags["selected_by"] == "best_val_f1"
    trained_metrics = client.get_run(trained.run_id).data.metrics
    assert float(version.tags["test_f1"]) == pytest.approx(trained_metrics["test_f1"], rel=1e-5)

    source = _write(trained.fresh, tmp_path / "titles.txt")
    by_alias = tmp_path / "by_alias.csv"
    predict_main(["model=titlesweep-best@champion", f"input={source}", f"output={by_alias}", trained.paths])
    by_run = _predict(trained, source)
    np.testing.assert_allclose(pd.read_csv(by_alias)["probability"], by_run["probability"], atol=1e-6)

    with pytest.raises(UserError, match=r"run worse \(.*\) is the best but has no pyfunc_model"):
        compare_main(["sweep=latest", "register=true", "metric=test_loss", f"out={tmp_path / 'cmp2'}", trained.paths])


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expected",
    [
        (["run=0123456789abcdef0123456789abcdef", "input={txt}"], "no such run"),
        (["run={bare}", "input={txt}"], "the run has no logged model"),
        (["model=no-such-model@champion", "input={txt}"], "model=no-such-model@champion: cannot load it"),
        (["input={txt}"], "exactly one of run=RUN_ID, model=NAME[@ALIAS] or model_dir=FOLDER"),
        (["run={run}", "input={missing}"], "missing.csv: file not found"),
        (["run={run}", "input={bad_xlsx}"], "bad.xlsx: cannot parse as .xlsx"),
        (["run={run}", "input={no_title}"], "no 'title' or 'text' column (columns: id, name)"),
        (["run={run}", "input={no_title}", "text_column=headline"], "no column 'headline' (columns: id, name)"),
        (["run={run}", "input={pdf}"], "cannot read '.pdf' files"),
        (["run={run}", "input={txt}", "threshold=1.5"], "threshold=1.5: must be a probability"),
        (["run={run}", "input={txt}", "output={txt}"], "is the input file"),
        (["run={run}", "input={txt}", "colour=red"], "unknown option(s) colour"),
        (["run={run}", "input={txt}", "precision=fp16"], "precision=fp16 needs a CUDA GPU"),
        (["run={run}", "input={txt}", "precision=half"], "precision=half: choose auto, fp32, bf16 or fp16"),
    ],
)
def test_bad_predict_arguments_give_one_line_errors(trained, tmp_path, args, expected):
    bare = MlflowClient(trained.uri).create_run(trained.run.info.experiment_id, run_name="no-model").info.run_id
    (tmp_path / "bad.xlsx").write_bytes(b"not a zip file at all")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4")
    pd.DataFrame({"id": [1], "name": ["x"]}).to_csv(tmp_path / "no_title.csv", index=False)
    values = {
        "txt": _write(trained.fresh, tmp_path / "titles.txt"),
        "bare": bare,
        "run": trained.run_id,
        "missing": tmp_path / "missing.csv",
        "bad_xlsx": tmp_path / "bad.xlsx",
        "no_title": tmp_path / "no_title.csv",
        "pdf": tmp_path / "doc.pdf",
    }
    with pytest.raises(UserError) as err:
        predict_main([a.format(**values) for a in args] + [trained.paths])
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "titles.predictions.csv").exists()  # nothing half-written


@pytest.mark.slow
def test_command_line_exits_2_with_one_error_line(trained, tmp_path):
    done = run_entry_point(
        "evaluate.py", f"run={trained.run_id}", f"input={tmp_path / 'missing.xlsx'}", trained.paths, timeout=300
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'missing.xlsx'}: file not found"], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_a_failed_write_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    target = tmp_path / "scored.csv"
    target.write_text("previous\n")

    def half_then_fail(self, handle, **kwargs):
        handle.write("title,probability,label\nhalf a row")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        inference.write_csv_atomic(pd.DataFrame({"title": ["a"]}), target)
    assert target.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["scored.csv"]


def test_a_kind_column_is_kept_and_scored_per_kind(tmp_path):
    from lib.evaluation import format_kind_report, kind_metrics, kind_report, labelled_file

    path = tmp_path / "segments.csv"
    pd.DataFrame(
        {
            "text": ["Alpha title", "Beta title", "Gamma title", "", "x@y.org", "Dept. of Z", "Dept. of W"],
            "label": [1, 1, 1, 1, 0, 0, 0],
            "kind": ["title", "title", "title", "title", "email", "affiliation", "affiliation"],
        }
    ).to_csv(path, index=False)
    frame, stats = labelled_file(path)
    assert list(frame["kind"]) == ["title"] * 3 + ["email", "affiliation", "affiliation"]  # the empty row dropped
    assert stats == {"eval_empty_dropped": 1}
    table = kind_report(frame, np.array([1, 0, 1, 0, 1, 0]))
    assert list(table["kind"]) == ["title", "affiliation", "email", "all label 1", "all label 0"]
    assert list(table["rows"]) == [3, 2, 1, 3, 3] and list(table["correct"]) == [2, 1, 1, 2, 2]
    metrics = kind_metrics(table)
    assert metrics["kind_title_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["kind_affiliation_accuracy"] == 0.5 and metrics["kind_email_accuracy"] == 1.0
    assert metrics["other_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["balanced_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert "affiliation" in format_kind_report(table)


@pytest.mark.slow
def test_evaluate_reports_accuracy_per_kind(trained, tmp_path, capsys):
    frame = pd.read_csv(trained.toy).head(40)
    frame["kind"] = np.where(frame["label"] == 1, "title", np.where(frame.index % 2, "affiliation", "email"))
    path = tmp_path / "segments.csv"
    frame.to_csv(path, index=False)
    evaluate_main([f"run={trained.run_id}", trained.paths, f"input={path}"])
    printed = capsys.readouterr().out
    assert "accuracy per kind" in printed and "affiliation" in printed and "all label 1" in printed
    assert "best recall with label-0 accuracy >= 0.95 / 0.97 / 0.99" in printed
    client = MlflowClient(trained.uri)
    (run,) = client.search_runs(
        [trained.run.info.experiment_id],
        f"tags.source_run_id = '{trained.run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    metrics = run.data.metrics
    assert {"kind_title_accuracy", "kind_email_accuracy", "balanced_accuracy", "other_accuracy"} <= set(metrics)
    assert metrics["kind_title_accuracy"] == pytest.approx(metrics["recall"], abs=1e-4)
    per_kind = pd.read_csv(client.download_artifacts(run.info.run_id, "per_kind.csv", str(tmp_path)))
    assert set(per_kind["kind"]) == {"title", "affiliation", "email", "all label 1", "all label 0"}
    assert per_kind["rows"].iloc[:3].sum() == 40
    predictions = pd.read_csv(client.download_artifacts(run.info.run_id, "predictions.csv", str(tmp_path)))
    assert list(predictions.columns) == ["text", "label", "kind", "probability", "prediction"]
    # The best recall at a floor of label-0 accuracy: what the logged predictions give at their best cut-off.
    ones, zeros = predictions.query("label == 1")["probability"], predictions.query("label == 0")["probability"]
    best = max((ones >= t).mean() for t in [*predictions["probability"], np.inf] if (zeros < t).mean() >= 0.95)
    assert metrics["recall_at_specificity_0.95"] == pytest.approx(best)
    assert metrics["recall_at_specificity_0.95"] >= metrics["recall_at_specificity_0.99"]
