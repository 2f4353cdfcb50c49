"""benchmarks/scoring.py (issue 28 item 4): trained models' scoring speed and accuracy side by side in one
process. Two tiny runs (one exported to ONNX) go through the benchmark; the JSON must hold every variant,
speeds, and accuracies equal to what scoring the same rows at the stored threshold gives; a missing export,
an unknown run and bad options are refused in one line."""

import importlib.util
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from benchmarks import scoring
from conftest import toy_learning_run, write_toy_csv
from lib import evaluation, inference
from lib.errors import exit_on_user_error
from lib.paths import CONF_DIR, PROJECT_ROOT
from lib.run import run_training

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime", "onnxscript")),
    reason="the onnx extra is not installed (pip install -e '.[onnx]')",
)
VARIANTS = ["a torch fp32", "b torch fp32", "b onnx fp32", "b onnx int8"]


def _refusal(capsys, args: list[str]) -> str:
    """The one line the command prints for ``args`` (exit status 2, as `python benchmarks/scoring.py`)."""
    with pytest.raises(SystemExit) as stop, exit_on_user_error():
        scoring.main(args)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "error: runs=NAME:RUN_ID[,NAME:RUN_ID...] is required"),
        (["runs=a:1", "bogus=2"], "error: unknown option(s) bogus; valid: runs, onnx, target, titles"),
        (["runs=a:1", "titles"], "error: cannot read argument(s) titles; usage: python benchmarks/scoring.py"),
        (["runs=a:1", "titles=many"], "error: titles=many: must be a positive whole number"),
        (["runs=a:1", "reps=0"], "error: reps=0: must be a positive whole number"),
        (["runs=a"], "error: runs=a: give NAME:RUN_ID pairs separated by commas"),
        (["runs=a:1,a:2"], "error: runs=a:1,a:2: each name once"),
        (["runs=a:1", "onnx=b"], "error: onnx=b: b not named in runs= (a)"),
        (["runs=a:1,b:2", "onnx=a", "target=b"], "error: target=b: the target check judges an int8 variant"),
        (["runs=a:1", "out=table.csv"], "error: out=table.csv: name a .json file"),
    ],
)
def test_bad_options_are_refused_in_one_line(capsys, args, message):
    assert _refusal(capsys, args).startswith(message)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as stop:
        scoring.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {scoring.USAGE}")
    assert all(f"  {name}" in out for name in scoring.OPTIONS)


# --------------------------------------------------------------- end to end, on two tiny runs


def _with_kinds(path):
    """A toy set shaped like grobid_dev: a kind per row (titles and other header segments)."""
    frame = pd.read_csv(path)
    frame.assign(kind=np.where(frame["label"] == 1, "title", "other")).to_csv(path, index=False)
    return path


class Store:
    """Run a (2 epochs) and run b (1 epoch, exported to ONNX int8), both evaluated on the toy test split
    and on toy stand-ins for citeseer_dev and grobid_dev."""

    def __init__(self, root):
        self.outputs = root / "outputs"
        self.paths = f"paths.outputs={self.outputs}"
        self.sets = {
            "citeseer_dev": write_toy_csv(root / "citeseer.csv", n_per_class=40, seed=1),
            "grobid_dev": _with_kinds(write_toy_csv(root / "grobid.csv", n_per_class=40, seed=2)),
        }
        self.cfg = self._cfg(root, "a", "trainer.epochs=2")
        self.logged = run_training(self.cfg)
        self.a = self._run_id("a")
        run_training(self._cfg(root, "b", "trainer.epochs=1", "trainer.seed=7"))
        self.b = self._run_id("b")
        _export_main()([f"run={self.b}", "format=onnx", "quantize=int8", self.paths])

    def _cfg(self, root, name, *extra):
        # fp32 training too, so that nothing of the run is other than fp32 (its precision tag says so)
        overrides = [
            self.paths,
            "tracking.log_model=true",
            f"tracking.run_name=scoring-{name}",
            "trainer.precision=fp32",
        ]
        # exactly these sets, whatever a machine's conf/local/default.yaml adds
        sets = ",".join(f"{key}:'{path}'" for key, path in self.sets.items())
        overrides += ["extra_eval=null", f"+extra_eval={{{sets}}}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=toy_learning_run(root / "toy.csv", *overrides, *extra))

    def _run_id(self, name):
        mlflow.set_tracking_uri(f"sqlite:///{self.outputs}/mlflow.db")
        (run,) = mlflow.search_runs(
            experiment_names=[self.cfg.tracking.experiment],
            filter_string=f"attributes.run_name = 'scoring-{name}'",
            output_format="list",
        )
        return run.info.run_id

    def rows(self) -> dict[str, pd.DataFrame]:
        """The evaluation sets as training built them, read here without the benchmark's code."""
        return {
            "test": evaluation.config_test_split(self.cfg)[0],
            **{name: evaluation.labelled_file(path)[0] for name, path in self.sets.items()},
        }


def _export_main():
    spec = importlib.util.spec_from_file_location("entry_export", PROJECT_ROOT / "experiments" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    write_toy_csv(root / "toy.csv")
    return Store(root)


@pytest.fixture(scope="module")
def result(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("scoring-out") / "scoring.json"
    args = [f"runs=a:{store.a},b:{store.b}", "onnx=b", "titles=96", "latency_titles=8", "reps=2", "threads=1"]
    args += [f"out={out}", store.paths]
    scoring.main(args)
    return json.loads(out.read_text()), out, args


def _accuracy(predictor, frame) -> float:
    labels = inference.labels_at(predictor.predict_titles(frame["text"].tolist()), predictor.threshold)
    return float((labels == frame["label"].to_numpy()).mean())


@needs_onnx
@pytest.mark.slow
def test_every_variant_is_timed_and_scored_on_the_first_runs_sets(store, result):
    found, _, _ = result
    assert list(found["summary"]) == VARIANTS
    rows = store.rows()
    assert found["settings"]["evaluation_sets"] == {name: len(frame) for name, frame in rows.items()}
    for label, s in found["summary"].items():
        assert s["titles_per_s"]["median"] > 0 and s["latency_median_ms"]["median"] > 0, label
        assert s["latency_p90_ms"]["median"] >= s["latency_median_ms"]["median"], label
        assert set(s["sets"]) == set(rows), label
        assert s["threads"] == 1, label  # threads=1 reached torch and each ONNX Runtime session
        assert len(found["runs"][label]) == 2, label
    grobid = found["summary"]["a torch fp32"]["sets"]["grobid_dev"]
    assert {"label1_accuracy", "label0_accuracy"} <= set(grobid)


@needs_onnx
@pytest.mark.slow
def test_the_accuracies_are_those_of_scoring_the_rows_at_the_stored_threshold(store, result):
    summary = result[0]["summary"]
    mlflow.set_tracking_uri(f"sqlite:///{store.outputs}/mlflow.db")
    # Training scored its held-out sets in fp32 (lib/loop.evaluate): the torch fp32 variant of run a
    # must repeat the accuracies run a logged, to within a row (a probability at the threshold).
    assert mlflow.get_run(store.a).data.tags["precision"] == "fp32"
    for name, frame in store.rows().items():
        scored = summary["a torch fp32"]["sets"][name]
        assert scored["rows"] == len(frame)
        assert scored["accuracy"] == pytest.approx(store.logged[f"{name}_accuracy"], abs=1 / len(frame)), name
    # Run b on run a's rows: as lib.inference scores them, for each backend and file.
    predictors = {
        "b torch fp32": inference.load_predictor(run=store.b),
        "b onnx fp32": inference.load_predictor(run=store.b, backend="onnx", onnx_quantize="none"),
        "b onnx int8": inference.load_predictor(run=store.b, backend="onnx", onnx_quantize="int8"),
    }
    for label, predictor in predictors.items():
        assert summary[label]["threshold"] == pytest.approx(predictor.threshold)
        for name, frame in store.rows().items():
            expected = _accuracy(predictor, frame)
            assert summary[label]["sets"][name]["accuracy"] == pytest.approx(expected, abs=1 / len(frame)), label
    assert summary["b onnx int8"]["label_agreement"]["b onnx fp32"] >= 0.99


@needs_onnx
@pytest.mark.slow
def test_the_target_check_and_the_markdown_report(result):
    found, out, args = result
    int8 = found["summary"]["b onnx int8"]
    speed, citeseer = found["targets"]
    assert speed["measured"] == int8["titles_per_s"]["median"]
    assert speed["met"] == (speed["measured"] >= 400)
    assert citeseer["measured"] == int8["sets"]["citeseer_dev"]["accuracy"]
    assert citeseer["met"] == (citeseer["measured"] >= 0.88)
    text = out.with_suffix(".md").read_text()
    assert text.splitlines()[0] == f"`python benchmarks/scoring.py {' '.join(args)}`"
    for needed in ("- machine: ", "- threads: 1 for torch", "- precision: torch fp32", "| b onnx int8 |"):
        assert needed in text


@needs_onnx
@pytest.mark.slow
def test_a_missing_export_and_an_unknown_run_are_refused_in_one_line(store, capsys):
    missing = _refusal(capsys, [f"runs=a:{store.a}", "onnx=a", store.paths])
    assert missing.startswith(f"error: run {store.a} has no ONNX export: python experiments/export.py run={store.a}")
    unknown = _refusal(capsys, ["runs=a:0123456789abcdef0123456789abcdef", store.paths])
    assert unknown.startswith("error: run=0123456789abcdef0123456789abcdef: no such run in sqlite:///")
