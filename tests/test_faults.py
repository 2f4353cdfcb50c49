"""Numerical faults, full disks and credentials: handled, recorded, never leaked."""

import errno
import math
import os

import pytest
import torch
from omegaconf import OmegaConf

from faulty_losses import nan_loss
from lib.batching import make_loader
from lib.loop import NonFiniteLoss, TrainingParts, train
from lib.models import build_model
from lib.optim import build_optimizer, build_scheduler
from lib.run import _as_user_error
from lib.tracking import config_params, redact


def _setup(make_cfg, toy_csv, **trainer):
    cfg = make_cfg(
        "model=tiny_bert",
        "data=csv",
        f"data.train={toy_csv}",
        "trainer.epochs=1",
        "trainer.early_stopping.patience=null",
        *[f"trainer.{k}={v}" for k, v in trainer.items()],
    )
    texts = [f"title number {i}" for i in range(64)]
    model, tok = build_model(cfg.model, texts, cfg.paths.cache)
    ids = tok(texts)["input_ids"]
    train_loader = make_loader(ids, [i % 2 for i in range(64)], 8, shuffle=True, pad_id=tok.pad_token_id)
    val_loader = make_loader(ids[:16], [i % 2 for i in range(16)], 16, shuffle=False, pad_id=tok.pad_token_id)
    optimizer = build_optimizer(cfg.schedule, model)
    return cfg, model, train_loader, val_loader, optimizer, build_scheduler(cfg.schedule, optimizer, 8)


def test_nonfinite_steps_are_skipped_and_weights_stay_finite(make_cfg, toy_csv):
    cfg, model, tl, vl, opt, sched = _setup(make_cfg, toy_csv)
    result = train(TrainingParts(model, tl, vl, nan_loss({2, 5}), opt, sched), cfg.trainer, 8)
    assert result.skipped_steps == 2 and result.steps == 6  # 8 batches, two of them skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(result.best_metrics["loss"])


@pytest.mark.slow
def test_too_many_nonfinite_steps_in_a_row_stop_the_run(make_cfg, toy_csv):
    cfg, model, tl, vl, opt, sched = _setup(make_cfg, toy_csv, max_nonfinite_steps=3)
    with pytest.raises(NonFiniteLoss, match="NaN/inf for 3 optimiser steps in a row"):
        train(TrainingParts(model, tl, vl, nan_loss({2, 3, 4}), opt, sched), cfg.trainer, 8)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_disk_full_or_unwritable_becomes_one_line_naming_the_path(code):
    err = _as_user_error(
        OSError(code, "No space left on device" if code == errno.ENOSPC else "denied", "/data/run/x.pt")
    )
    assert str(err).startswith("/data/run/x.pt: ")
    other = OSError(errno.ECONNRESET, "reset")
    assert _as_user_error(other) is other  # not a path problem: left as it is


def test_tracking_credentials_never_reach_params():
    assert redact("http://alice:s3cret@mlflow.internal:5000/api") == "http://mlflow.internal:5000/api"
    cfg = OmegaConf.create({"tracking": {"uri": "https://bob:pw@127.0.0.1:8443"}, "trainer": {"resume": None}})
    params = config_params(cfg)
    assert params["tracking.uri"] == "https://127.0.0.1:8443" and "pw" not in str(params)


def test_redact_removes_credentials_from_any_text():
    text = "train.py tracking.uri=http://u:pw1@h:5000 hydra.sweeper.storage=postgresql://v:pw2@db/optuna?password=pw3"
    assert redact(text) == (
        "train.py tracking.uri=http://h:5000 hydra.sweeper.storage=postgresql://db/optuna?password=***"
    )
    assert redact("titles by ann@example.org, http://h/x?a=1") == "titles by ann@example.org, http://h/x?a=1"


def test_a_tracking_uri_password_moves_into_mlflows_variables(monkeypatch):
    from lib.tracking import CREDENTIAL_ENV, credentials_to_environment

    for name in CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    args = ["--multirun", "tracking.uri=https://alice:p%40ss@mlflow.team:443", "loss=ce,focal"]
    assert credentials_to_environment(args) == ["--multirun", "tracking.uri=https://mlflow.team:443", "loss=ce,focal"]
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    assert credentials_to_environment(["tracking.uri=sqlite:///x.db"]) == ["tracking.uri=sqlite:///x.db"]


def test_log_lines_lose_their_credentials(caplog, monkeypatch):
    import logging

    from lib.tracking import redact_log_records

    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())  # restored after the test
    redact_log_records()
    redact_log_records()  # installed once
    with caplog.at_level(logging.INFO):
        logging.getLogger("hydra.launcher").info("\t#%d : %s", 0, "tracking.uri=http://u:pw@h loss=ce")
    assert caplog.messages == ["\t#0 : tracking.uri=http://h loss=ce"]


@pytest.mark.slow
def test_resuming_may_change_how_a_run_executes_but_not_what_it_computes(tmp_path):
    import mlflow

    from lib.errors import ConfigError
    from lib.tracking import _params_to_log

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/store.db")
    logged = {"trainer.compile": "False", "schedule.lr": "0.001", "trainer.epochs": "2"}
    with mlflow.start_run() as run:
        mlflow.log_params(logged)
    with mlflow.start_run(run_id=run.info.run_id):
        resumed = mlflow.get_run(run.info.run_id)
        new = _params_to_log({**logged, "trainer.compile": "True", "model.extra": "x"}, resumed)
        assert new == {"schedule.lr": "0.001", "trainer.epochs": "2", "model.extra": "x"}
        mlflow.log_params(new)  # MLflow would refuse a changed trainer.compile
        with pytest.raises(ConfigError, match=r"the interrupted run had schedule.lr=0.001; resume with the same"):
            _params_to_log({**logged, "schedule.lr": "0.01"}, resumed)
    assert mlflow.get_run(run.info.run_id).data.tags["resumed_with"] == "trainer.compile=True"
    assert _params_to_log(logged) == logged  # a new run logs everything
