"""End-to-end training on small data: every tiny architecture learns, seeded runs repeat exactly,
early stopping restores the best weights, and a run is completely tracked in MLflow."""

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from lib.batching import encode, make_loader
from lib.data import load_data
from lib.errors import ConfigError, DataError
from lib.loop import TrainingParts, evaluate, train
from lib.losses import build_loss
from lib.models import build_model
from lib.optim import build_optimizer, build_scheduler
from lib.run import run_training

FAST = ["schedule.lr=1e-3", "schedule.warmup_ratio=0.0", "trainer.batch_size=16", "trainer.log_every_steps=5"]


def _runs(cfg):
    mlflow.set_tracking_uri(f"sqlite:///{cfg.paths.outputs}/mlflow.db")
    return mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_bert", "tiny_roberta", "tiny_deberta"])
def test_tiny_architecture_learns_a_separable_set(make_cfg, toy_csv, model):
    cfg = make_cfg(f"model={model}", "data=csv", f"data.train={toy_csv}", "trainer.epochs=4", *FAST)
    metrics = run_training(cfg)
    assert metrics["test_accuracy"] >= 0.9, metrics  # chance is 0.5
    assert metrics["test_f1"] >= 0.9


@pytest.mark.slow
def test_same_seed_gives_the_same_metrics(make_cfg, toy_csv):
    overrides = ["model=tiny_bert", "data=csv", f"data.train={toy_csv}", "trainer.epochs=1", *FAST]
    first, second = run_training(make_cfg(*overrides)), run_training(make_cfg(*overrides))
    for key in ("test_accuracy", "test_loss", "best_val_f1", "test_roc_auc"):
        assert first[key] == second[key], key
    third = run_training(make_cfg(*overrides, "trainer.seed=7"))
    assert third["test_loss"] != first["test_loss"]


@pytest.mark.slow
def test_early_stopping_stops_and_restores_the_best_weights(make_cfg, toy_csv):
    # "Best" = the highest validation loss: the first evaluation, as the loss falls while learning.
    cfg = make_cfg(
        "model=tiny_bert",
        "data=csv",
        f"data.train={toy_csv}",
        "trainer.epochs=6",
        *FAST,
        "trainer.early_stopping.metric=loss",
        "trainer.early_stopping.mode=max",
        "trainer.early_stopping.patience=2",
    )
    splits = load_data(cfg)
    model, tok = build_model(cfg.model, splits.train["text"].tolist(), cfg.paths.cache)
    loaders = [
        make_loader(encode(tok, f["text"].tolist(), 48), f["label"].tolist(), 16, shuffle=s, pad_id=tok.pad_token_id)
        for f, s in ((splits.train, True), (splits.val, False))
    ]
    optimizer = build_optimizer(cfg.schedule, model)
    total = 6 * len(loaders[0])
    loss_fn = build_loss(cfg.loss)
    scheduler = build_scheduler(cfg.schedule, optimizer, total)
    result = train(TrainingParts(model, *loaders, loss_fn, optimizer, scheduler), cfg.trainer, total)
    evals = [h for h in result.history if "val_loss" in h]
    assert result.stopped_early and len(evals) == 3  # best at epoch 1, then 2 evaluations without gain
    assert result.best_epoch == 1 and evals[0]["val_loss"] > evals[-1]["val_loss"]
    restored, _ = evaluate(model, loaders[1], loss_fn, torch.device("cpu"))
    assert restored["loss"] == pytest.approx(evals[0]["val_loss"], abs=1e-6)


@pytest.mark.slow
def test_default_minilm_run_is_completely_tracked_in_mlflow(make_cfg):
    # The default recipe (MiniLM on the default corpus), made short: a small corpus, few rows.
    cfg = make_cfg(
        "data.size=1500",
        "data.cross_source.size=200",
        "trainer.epochs=1",
        "trainer.limit_train=96",
        "trainer.limit_eval=40",
        "trainer.log_every_steps=1",
        "loss=focal",
        "tracking.log_model=true",
    )
    metrics = run_training(cfg)
    (run,) = _runs(cfg)
    assert run.info.status == "FINISHED"
    params, logged = run.data.params, run.data.metrics
    assert params["model.name"] == "minilm" and params["data.name"] == "titles" and params["loss.gamma"] == "2.0"
    for key in (
        "test_accuracy",
        "test_f1",
        "test_macro_f1",
        "test_roc_auc",
        "test_average_precision",
        "cross_source_accuracy",
        "best_val_f1",
        "train_samples_per_s",
        "data_train_rows",
    ):
        assert math.isfinite(logged[key]), key
    assert logged["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    client = MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 3  # 96 rows / 32 per batch
    assert {"git_commit", "device", "precision", "torch", "transformers", "output_dir"} <= set(run.data.tags)
    files = _artifact_paths(client, run.info.run_id)
    for expected in (
        ".hydra/config.yaml",
        "reports/test/classification_report.txt",
        "reports/test/classification_report.json",
        "reports/test/confusion_matrix.png",
        "reports/test/predictions.csv",
        "training_curves.png",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/titlesweep.json",
    ):
        assert expected in files, expected
    assert 0.0 < logged["decision_threshold"] < 1.0
    # Test metrics are those at the stored threshold (what predict/evaluate give); at 0.5 beside them.
    scored = pd.read_csv(
        client.download_artifacts(run.info.run_id, "reports/test/predictions.csv", str(cfg.paths.outputs))
    )
    at_threshold = ((scored["probability"] >= logged["decision_threshold"]).astype(int) == scored["label"]).mean()
    at_half = ((scored["probability"] >= 0.5).astype(int) == scored["label"]).mean()
    assert logged["test_accuracy"] == pytest.approx(at_threshold) and logged["test_accuracy_at_0.5"] == pytest.approx(
        at_half
    )
    assert (scored["prediction"] == (scored["probability"] >= logged["decision_threshold"])).all()
    assert {"cross_source_accuracy_at_0.5", "test_f1_at_0.5", "test_macro_f1_at_0.5"} <= set(logged)
    # The ranking at a floor of label-0 accuracy, as evaluate.py gives it: the best cut-off on these rows.
    ones, zeros = scored.query("label == 1")["probability"], scored.query("label == 0")["probability"]
    best = max((ones >= t).mean() for t in [*scored["probability"], np.inf] if (zeros < t).mean() >= 0.97)
    assert logged["test_recall_at_specificity_0.97"] == pytest.approx(best)
    assert "cross_source_recall_at_specificity_0.99" in logged


def _artifact_paths(client, run_id, path=""):
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return out


@pytest.mark.slow
def test_failing_job_ends_its_run_failed_with_the_traceback(make_cfg, tmp_path):
    cfg = make_cfg("model=tiny_bert", "data=csv", f"data.train={tmp_path / 'missing.csv'}")
    with pytest.raises(DataError, match="missing.csv: file not found"):
        run_training(cfg)
    (run,) = _runs(cfg)
    assert run.info.status == "FAILED" and "file not found" in run.data.tags["error"]
    text = MlflowClient().download_artifacts(run.info.run_id, "error/traceback.txt", str(tmp_path))
    assert "DataError" in open(text).read()


@pytest.mark.slow
def test_fewer_rows_than_a_batch_is_refused(make_cfg, toy_csv):
    cfg = make_cfg("model=tiny_bert", "data=csv", f"data.train={toy_csv}", "trainer.limit_train=10")
    with pytest.raises(DataError, match=r"only 10 training rows, fewer than trainer.batch_size=32"):
        run_training(cfg)


def test_hub_model_offline_names_the_model_and_both_fixes(make_cfg, toy_csv, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    cfg = make_cfg("model=scibert", "data=csv", f"data.train={toy_csv}")
    with pytest.raises(ConfigError) as err:
        build_model(cfg.model, [], cfg.paths.cache)
    message = str(err.value)
    assert "allenai/scibert_scivocab_uncased" in message and "unreachable" in message
    assert "download_models.py model=scibert" in message and "model.pretrained=" in message


def test_limit_eval_scores_every_seed_of_a_sweep_on_the_same_rows(make_cfg, toy_csv):
    from lib.run import limited_splits

    def evaluation_rows(seed):
        cfg = make_cfg("data=csv", f"data.train={toy_csv}", "trainer.limit_eval=10", f"trainer.seed={seed}")
        splits = limited_splits(cfg)
        return splits.val["text"].tolist(), splits.test["text"].tolist()

    assert evaluation_rows(1) == evaluation_rows(2)
    other_data = make_cfg("data=csv", f"data.train={toy_csv}", "trainer.limit_eval=10", "data.seed=5")
    assert limited_splits(other_data).test["text"].tolist() != evaluation_rows(1)[1]  # the data seed decides
