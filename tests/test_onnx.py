"""ONNX Runtime scoring (issue 28 items 2 and 3): experiments/export.py format=onnx quantize=int8 logs the
model as ONNX beside the PyTorch folder; predict.py / evaluate.py backend=onnx and the pyfunc model score
with it; fp32 ONNX reproduces torch, int8 agrees with fp32 (labels on >= 99% of titles, accuracy within
half a point) on the test split and the CiteSeer sample, for cls and mean pooling; an export that is
missing, from another run or changed is refused in one line; the registered champion answers HTTP
requests from `mlflow models serve`."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from conftest import CITESEER_DEV, toy_learning_run, write_toy_csv
from entry_points import run_entry_point
from lib import evaluation, inference
from lib.errors import ConfigError, UserError
from lib.paths import CONF_DIR, PROJECT_ROOT
from lib.pyfunc import ONNX_FILES, ONNX_MANIFEST, PYFUNC_ARTIFACT, file_sha256
from lib.run import run_training
from lib.tracking import ROLE_TAG

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime", "onnxscript")),
    reason="the onnx extra is not installed (pip install -e '.[onnx]')",
)


def _entry(name: str):
    spec = importlib.util.spec_from_file_location(f"entry_{name}", PROJECT_ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


export_main, predict_main, evaluate_main, compare_main = (
    _entry(n) for n in ("export", "predict", "evaluate", "compare")
)


class Store:
    """One MLflow store for the module; a tiny run per pooling, trained and exported on first use."""

    def __init__(self, root: Path):
        self.root, self.outputs = root, root / "outputs"
        self.toy = write_toy_csv(root / "toy.csv")
        self.paths = f"paths.outputs={self.outputs}"
        self.uri = f"sqlite:///{self.outputs}/mlflow.db"
        self._runs = {}

    def cfg(self, *extra):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            overrides = [self.paths, "extra_eval=null", "tracking.log_model=true", *extra]
            return compose("config", overrides=toy_learning_run(self.toy, *overrides))

    def run(self, pooling: str) -> SimpleNamespace:
        if pooling not in self._runs:
            cfg = self.cfg(f"model.pooling={pooling}", f"tracking.run_name=onnx-{pooling}")
            metrics = run_training(cfg)
            assert metrics["test_accuracy"] >= 0.9, metrics  # a model that learnt: chance is 0.5
            mlflow.set_tracking_uri(self.uri)
            (run,) = mlflow.search_runs(
                experiment_names=[cfg.tracking.experiment],
                filter_string=f"attributes.run_name = 'onnx-{pooling}'",
                output_format="list",
            )
            run_id = run.info.run_id
            export_main([f"run={run_id}", "format=onnx", "quantize=int8", self.paths])
            self._runs[pooling] = SimpleNamespace(
                id=run_id, run=run, cfg=cfg, threshold=metrics["decision_threshold"], pooling=pooling
            )
        mlflow.set_tracking_uri(self.uri)
        return self._runs[pooling]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("onnx"))


def _agreement(fp32: np.ndarray, int8: np.ndarray, threshold: float, truth: np.ndarray) -> dict:
    a, b = inference.labels_at(fp32, threshold), inference.labels_at(int8, threshold)
    return {
        "label_agreement": float((a == b).mean()),
        "accuracy_fp32": float((a == truth).mean()),
        "accuracy_int8": float((b == truth).mean()),
        "largest_probability_gap": float(np.nanmax(np.abs(fp32 - int8))),
    }


@needs_onnx
@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_onnx_reproduces_torch_and_int8_agrees_on_the_test_split_and_citeseer(store, pooling):
    run = store.run(pooling)
    torch_model = inference.load_predictor(run=run.id)
    fp32 = inference.load_predictor(run=run.id, backend="onnx", onnx_quantize="none")
    int8 = inference.load_predictor(run=run.id, backend="onnx")  # auto: the int8 file
    assert (fp32.file, int8.file, int8.precision) == ("model.onnx", "model.int8.onnx", "int8")
    assert fp32.threshold == int8.threshold == pytest.approx(run.threshold)  # copied from titlesweep.json
    sets = {"test split": evaluation.config_test_split(run.cfg)[0]}
    if CITESEER_DEV.is_file():
        sets["citeseer_dev"] = evaluation.labelled_file(CITESEER_DEV)[0]
    for name, frame in sets.items():
        texts, truth = frame["text"].tolist(), frame["label"].to_numpy()
        (reference, vectors), (exported, exported_vectors) = (
            predictor.score(texts, embeddings=True) for predictor in (torch_model, fp32)
        )
        np.testing.assert_allclose(exported, reference, atol=1e-5, err_msg=name)  # the same model, as ONNX
        np.testing.assert_allclose(exported_vectors, vectors, atol=1e-4, err_msg=name)  # and its embedding map's
        found = _agreement(exported, int8.predict_titles(texts), run.threshold, truth)
        print(f"{pooling} pooling, {name} ({len(texts)} titles): {found}")
        # A toy model may not read CiteSeer's titles at all (its vocabulary is the toy set's): when it
        # scores most of them within 0.01 of its threshold, any rounding flips labels, and agreement
        # there says nothing about int8. benchmarks/scoring.py measures a real model.
        undecided = float((np.abs(exported - run.threshold) < 0.01).mean())
        if name == "citeseer_dev" and undecided > 0.2:
            print(f"  not judged: {undecided:.0%} of the titles lie within 0.01 of the threshold")
            continue
        assert found["label_agreement"] >= 0.99, (name, found)
        assert abs(found["accuracy_int8"] - found["accuracy_fp32"]) <= 0.005, (name, found)


@needs_onnx
@pytest.mark.slow
def test_export_logs_the_onnx_folder_and_a_newer_pyfunc_model_that_prefers_it(store, tmp_path):
    run = store.run("mean")
    client = MlflowClient(store.uri)
    names = {Path(item.path).name for item in client.list_artifacts(run.id, "onnx")}
    assert {"model.onnx", "model.int8.onnx", ONNX_MANIFEST, "tokenizer.json"} <= names
    local = Path(client.download_artifacts(run.id, "onnx", str(tmp_path)))
    record = json.loads((local / ONNX_MANIFEST).read_text())
    stored = json.loads(Path(client.download_artifacts(run.id, "model/titlesweep.json", str(tmp_path))).read_text())
    assert record["source_run_id"] == run.id and record["format"] == "onnx" and record["quantize"] == "int8"
    assert record["decision_threshold"] == stored["decision_threshold"] and record["max_length"] == 64
    assert record["pooling"] == "mean" and record["int8"]["weight_type"] == "QInt8"
    assert record["files"] == {name: file_sha256(local / name) for name in ONNX_FILES.values()}
    assert client.get_run(run.id).data.tags["onnx_export"] == "int8"
    assert client.get_run(run.id).info.status == "FINISHED"

    # runs:/<id>/pyfunc_model is now the newer model, with ONNX Runtime by default and torch on request.
    titles = pd.read_csv(store.toy)["text"].head(12).tolist()
    model = mlflow.pyfunc.load_model(f"runs:/{run.id}/{PYFUNC_ARTIFACT}")
    frame = pd.DataFrame({"title": titles})
    expected = {
        "int8": inference.load_predictor(run=run.id, backend="onnx").predict_titles(titles),
        "fp32": inference.load_predictor(run=run.id, backend="onnx", onnx_quantize="none").predict_titles(titles),
        "torch": inference.load_predictor(run=run.id).predict_titles(titles),
    }
    scored = {
        "int8": model.predict(frame),
        "fp32": model.predict(frame, params={"backend": "onnx", "onnx_quantize": "none"}),
        "torch": model.predict(frame, params={"backend": "torch", "batch_size": 5}),
    }
    for key, out in scored.items():
        np.testing.assert_allclose(out["probability"], expected[key], atol=1e-6, err_msg=key)
        assert out["label"].tolist() == inference.labels_at(expected[key], run.threshold).tolist(), key
    with pytest.raises(Exception, match="is for backend='torch'"):
        model.predict(frame, params={"backend": "onnx", "precision": "bf16"})

    # predict.py and evaluate.py take backend=onnx; the evaluation run records which file scored it.
    source = tmp_path / "titles.txt"
    source.write_text("".join(f"{t}\n" for t in [*titles[:3], "", *titles[3:]]))
    predict_main([f"run={run.id}", f"input={source}", f"output={tmp_path / 'out.csv'}", "backend=onnx", store.paths])
    written = pd.read_csv(tmp_path / "out.csv", keep_default_na=False, na_values={"probability": [""]})
    assert written["title"].tolist() == [*titles[:3], "", *titles[3:]] and np.isnan(written["probability"][3])
    np.testing.assert_allclose(written["probability"].drop(index=3), expected["int8"], atol=1e-3)
    evaluate_main([f"run={run.id}", "data=csv", f"data.train={store.toy}", "backend=onnx", store.paths])
    (evaluated,) = client.search_runs(
        [run.run.info.experiment_id],
        f"tags.source_run_id = '{run.id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert evaluated.data.tags["backend"] == "onnx" and evaluated.data.tags["onnx_file"] == "model.int8.onnx"
    assert evaluated.data.params["eval.precision"] == "int8" and evaluated.data.metrics["accuracy"] >= 0.9
    assert "embedding_map.png" in {item.path for item in client.list_artifacts(evaluated.info.run_id)}


@needs_onnx
@pytest.mark.slow
def test_a_missing_foreign_or_changed_export_is_refused_in_one_line(store, tmp_path):
    run = store.run("mean")
    client = MlflowClient(store.uri)
    experiment = run.run.info.experiment_id
    bare = client.create_run(experiment, run_name="no-export").info.run_id
    # A run whose onnx/ artifacts were exported from another run (copied by hand).
    exported = Path(client.download_artifacts(run.id, "onnx", str(tmp_path / "exported")))
    foreign = client.create_run(experiment, run_name="foreign-export").info.run_id
    client.log_artifacts(foreign, str(exported), "onnx")
    # Local folders: a changed int8 file; an fp32-only record; a model folder with another model's export.
    changed = Path(shutil.copytree(exported, tmp_path / "changed"))
    with open(changed / "model.int8.onnx", "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
    fp32_only = Path(shutil.copytree(exported, tmp_path / "fp32_only"))
    record = json.loads((fp32_only / ONNX_MANIFEST).read_text())
    del record["files"]["model.int8.onnx"]
    (fp32_only / ONNX_MANIFEST).write_text(json.dumps({**record, "quantize": "none"}))
    other_model = Path(client.download_artifacts(store.run("cls").id, "model", str(tmp_path / "other")))
    shutil.copytree(exported, other_model / "onnx")
    # The training run's own pyfunc model: logged before the export, so it carries none.
    (first, *_) = client.search_logged_models(
        [experiment],
        filter_string=f"source_run_id = '{run.id}' AND name = '{PYFUNC_ARTIFACT}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": True}],
    )
    hint = "python experiments/export.py run={} format=onnx quantize=int8"
    cases = [
        (dict(run=bare), f"run {bare} has no ONNX export: {hint.format(bare)}"),
        (dict(run=foreign), f"run={foreign}: its ONNX export was made from run {run.id}, not from run {foreign}"),
        (dict(model=f"models:/{first.model_id}"), f"has no ONNX export in this model: {hint.format(run.id)}"),
        (dict(model_dir=str(changed)), "model.int8.onnx does not match the SHA-256 its export recorded"),
        (dict(model_dir=str(fp32_only), onnx_quantize="int8"), "has no model.int8.onnx (it was exported with"),
        (dict(model_dir=str(other_model)), "was made from other weights than the model in model_dir="),
        (dict(model_dir=str(tmp_path)), f"model_dir={tmp_path}: no ONNX export in it"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(UserError) as err:
            inference.load_predictor(backend="onnx", **kwargs)
        assert expected in str(err.value) and "\n" not in str(err.value), (kwargs, str(err.value))
    assert inference.load_predictor(model_dir=str(fp32_only), backend="onnx").file == "model.onnx"

    # Through the command line: one error line and exit status 2.
    done = run_entry_point("predict.py", f"run={bare}", f"input={store.toy}", "backend=onnx", store.paths, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: run {bare} has no ONNX export: {hint.format(bare)}"], done.stderr[-2000:]


def test_backend_options_are_checked_before_any_model_is_loaded(monkeypatch):
    for kwargs, expected in [
        (dict(backend="tensorrt"), "backend=tensorrt: choose one of torch, onnx"),
        (dict(backend="onnx", onnx_quantize="int4"), "onnx_quantize=int4: choose one of auto, int8, none"),
        (dict(onnx_quantize="int8"), "onnx_quantize=int8: only used with backend=onnx"),
        (dict(backend="onnx", precision="bf16"), "precision=bf16: backend=onnx scores the exported fp32 or int8"),
        (dict(backend="onnx", device="cuda"), "device=cuda: backend=onnx runs on the CPU"),
    ]:
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            inference.load_predictor(run="0123", **kwargs)
    monkeypatch.setattr(inference, "onnxruntime_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        inference.load_predictor(run="0123", backend="onnx")
    assert str(err.value) == "backend=onnx needs onnxruntime: pip install -e '.[onnx]'"


def test_export_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as done:
        export_main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: export.py run=RUN_ID")
    options = [line.split()[0].rstrip(",") for line in out.split("options:\n", 1)[1].splitlines()]
    assert options == ["run", "format", "quantize", "out", "tracking.*"]


def test_export_refuses_bad_options_and_missing_packages_in_one_line(monkeypatch, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, expected in [
        (["format=onnx"], "run=RUN_ID is required"),
        (["run=0123", "format=tflite"], "format=tflite: choose one of onnx"),
        (["run=0123", "quantize=int4"], "quantize=int4: choose one of int8, none"),
        (["run=0123", f"out={tmp_path / 'full'}"], "exists and is not empty"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            export_main(args)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        export_main(["run=0123"])
    assert str(err.value) == "format=onnx needs onnxscript: pip install -e '.[onnx]'"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@needs_onnx
@pytest.mark.slow
def test_the_registered_champion_answers_http_requests_from_mlflow_models_serve(store, tmp_path):
    run = store.run("mean")
    client = MlflowClient(store.uri)
    experiment = run.run.info.experiment_id
    # compare.py register=true takes the newest pyfunc_model of the best run: the one export logged.
    sweep = client.create_run(experiment, run_name="sweep-onnx", tags={ROLE_TAG: "sweep"})
    client.set_terminated(sweep.info.run_id)
    for tag, value in {"mlflow.parentRunId": sweep.info.run_id, ROLE_TAG: "job"}.items():
        client.set_tag(run.id, tag, value)
    compare_main(["sweep=latest", "register=true", "name=titles-onnx", f"out={tmp_path / 'cmp'}", store.paths])
    version = client.get_model_version_by_alias("titles-onnx", "champion")
    (newest, *_) = client.search_logged_models(
        [experiment],
        filter_string=f"source_run_id = '{run.id}' AND name = '{PYFUNC_ARTIFACT}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
    )
    assert version.run_id == run.id and version.source == f"models:/{newest.model_id}"

    fresh = pd.read_csv(write_toy_csv(tmp_path / "fresh.csv", n_per_class=4, seed=7))
    fresh = fresh.sort_values("label", kind="stable").reset_index(drop=True)  # 4 wrong, then 4 correct
    # Wrong and correct titles alternate, an empty one at row 6: a reordered answer cannot pass.
    titles = [*fresh["text"].iloc[[0, 4, 1, 5, 2, 6]], "", fresh["text"].iloc[3], fresh["text"].iloc[7]]
    expected = inference.load_predictor(run=run.id, backend="onnx").predict_titles(titles)
    assert len(set(inference.labels_at(expected, run.threshold))) == 2

    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/titles-onnx@champion"]
    server = subprocess.Popen(
        [*command, "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
        env={**os.environ, "MLFLOW_TRACKING_URI": store.uri, "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the server's workers form one process group, stopped together below
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /ping within 240 s"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        body = {"dataframe_split": {"columns": ["title"], "data": [[t] for t in titles]}}
        answer = _post(f"{url}/invocations", body)["predictions"]
        by_torch = _post(f"{url}/invocations", {**body, "params": {"backend": "torch"}})["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
    assert len(answer) == len(titles) and set(answer[0]) == {"probability", "label"}
    probs = np.array([np.nan if row["probability"] is None else row["probability"] for row in answer], dtype=float)
    labels = [row["label"] for row in answer]
    assert np.isnan(probs[6]) and labels[6] == 0  # the empty title: unscored, label 0
    np.testing.assert_allclose(probs, expected, atol=1e-6)  # the int8 file, in request order
    assert labels == inference.labels_at(expected, run.threshold).tolist()  # at the stored threshold
    torch_probs = np.array([np.nan if r["probability"] is None else r["probability"] for r in by_torch], dtype=float)
    np.testing.assert_allclose(torch_probs, inference.load_predictor(run=run.id).predict_titles(titles), atol=1e-5)
