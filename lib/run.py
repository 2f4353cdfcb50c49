"""One training job: composed cfg -> data -> model -> loop -> test metrics -> MLflow.

``experiments/train.py`` only composes the config and calls ``run_job``. Each level adds one thing:

    run_job            exit codes, one-line errors, signals, a failed sweep job recorded (not raised)
    run_training       the MLflow run: tags, resumption, what the console shows first and last
    _train_and_report  data, model and loaders; after training: threshold, per-split reports, artifacts
    _fit               optimiser, schedule, adversary; a checkpoint when a signal stops the loop
    lib.loop.train     the optimisation steps, validation and early stopping
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import torch
import transformers
from omegaconf import OmegaConf

from lib import checkpoint, continuation, distill, plots
from lib.adversarial import build_adversary
from lib.batching import encode, make_loader
from lib.checkpoint import CHECKPOINT_NAME, CHECKPOINT_TAG
from lib.continuation import OVERRIDES_TAG
from lib.data import Splits, check_training_set, load_data
from lib.device import resolve_device, resolve_precision, settings_line
from lib.errors import DataError, TrainingInterrupted, UserError, exit_on_user_error
from lib.evaluation import write_evaluation_files
from lib.loop import LoopState, TrainingParts, evaluate, train
from lib.losses import build_loss
from lib.metrics import best_threshold
from lib.models import build_model
from lib.optim import build_optimizer, build_scheduler
from lib.progress import quiet_library_bars
from lib.search import trial_reporter
from lib.summary import TimeSplit, data_line, metrics_line, print_config_tree, print_end_of_run, run_description
from lib.sweep import child_run_name, child_runs, in_multirun, parent_run_id
from lib.tracking import (
    NOTE_TAG,
    PRUNED_TAG,
    ROLE_TAG,
    mlflow_run,
    provenance_tags,
    redact,
    redact_file,
    redact_log_records,
    tracking_uri,
)

log = logging.getLogger(__name__)


def run_job(cfg) -> float:
    """The Hydra task. A single run turns a UserError into one line and exit status 2; inside a
    sweep a failing job is recorded (its MLflow run FAILED) and the sweep goes on to the next."""
    quiet_library_bars()
    redact_log_records()  # in every job process: joblib and submitit workers log too
    try:
        with checkpoint.sigterm_as_interrupt():
            metrics = run_training(cfg)
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        _requeue_with_submitit(err.signal_name)
        raise SystemExit(128 + getattr(signal, err.signal_name, signal.SIGINT).value) from None
    except KeyboardInterrupt as err:
        name = str(err) or "SIGINT"
        print(
            f"interrupted by {name} outside the training loop: no checkpoint; its MLflow run (if started) is "
            "marked KILLED",
            file=sys.stderr,
        )
        _requeue_with_submitit(name)
        raise SystemExit(128 + getattr(signal, name, signal.SIGINT).value) from None
    except Exception as err:
        if not in_multirun():
            with exit_on_user_error():
                raise _as_user_error(err) if isinstance(err, OSError) else err  # noqa: B904 - the same error
        log.error("job failed: %s", f"{err}" if isinstance(err, UserError) else f"{type(err).__name__}: {err}")
        return float("nan")
    return objective(metrics, cfg.optimized_metric)


def objective(metrics: dict[str, float], name: str) -> float:
    """The run's value of ``optimized_metric`` for a search sweeper; NaN (and an error line naming the
    metrics there are) when the run has no such metric."""
    if name not in metrics:
        log.error("optimized_metric=%s: the run has no such metric; choose one of %s", name, ", ".join(sorted(metrics)))
        return float("nan")
    return metrics[name]


def run_training(cfg) -> dict[str, float]:
    """Train, evaluate on test (and extra sets) with the best weights, track everything in MLflow.

    Returns the final metrics: ``best_val_*``, ``test_*`` and ``<extra set>_*``.
    """
    distill.enabled(cfg.distill)  # a distillation without a teacher: one line, before any MLflow run
    output_dir, overrides = _output_dir_and_overrides(cfg)
    overrides = [redact(o) for o in overrides]  # for the tags, the run's name, description and config tree
    _redact_hydra_files(output_dir)
    tags = provenance_tags(overrides, output_dir)
    parent = parent_run_id()
    if parent:
        tags.update({"mlflow.parentRunId": parent, ROLE_TAG: "job", OVERRIDES_TAG: json.dumps(overrides)})
    plan = _continuation_plan(cfg, parent, overrides)
    if plan.reuse is not None:
        return _reuse(plan.reuse, output_dir)
    saved, resume_tags = _resume_checkpoint(cfg, output_dir, plan)
    tags.update(resume_tags)
    with mlflow_run(
        cfg,
        tags,
        default_name=child_run_name(overrides) if parent else None,
        resume_run_id=saved["run_id"] if saved else None,
    ) as run:
        log.info("MLflow run %s, outputs in %s", run.info.run_id, output_dir)
        if plan.superseded:
            continuation.mark_superseded(mlflow.MlflowClient(), plan.superseded, run.info.run_id)
        if not parent:
            print_config_tree(cfg, overrides, str(output_dir / ".hydra" / "config.yaml"))
        device = resolve_device(cfg.trainer.device)
        precision = resolve_precision(cfg.trainer.precision, device)
        log.info("%s", settings_line(cfg.trainer, device, precision))
        mlflow.set_tags({"device": str(device), "precision": precision})
        final = _train_and_report(cfg, output_dir, device, precision, saved)
        mlflow.set_tag(NOTE_TAG, run_description(cfg, final, overrides))  # the run page's description
        if not parent:  # a sweep prints its comparison at the end instead
            print_end_of_run(final, run.info.run_id, mlflow.get_tracking_uri(), run.info.experiment_id)
        return final


def _train_and_report(cfg, output_dir: Path, device, precision: str, saved: dict | None) -> dict[str, float]:
    """Data -> model -> loaders -> _fit; then the threshold chosen on validation, every held-out split
    scored and reported at it, artifacts and the time split logged. Returns the final metrics."""
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    transformers.set_seed(cfg.trainer.seed)
    clock = TimeSplit()
    splits = limited_splits(cfg)
    # with a teacher, the training rows become the teacher-scored transfer set
    transfer = distill.transfer_set(cfg, splits) if distill.enabled(cfg.distill) else None
    teacher_rows = {}
    if transfer is not None:
        splits.train, teacher_rows = transfer.frame, transfer.per_row()
    _log_data(splits)
    clock.lap("data")
    model, tokenizer = build_model(cfg.model, splits.train["text"].tolist(), Path(cfg.paths.cache))
    if transfer is not None:
        distill.check_student_width(cfg.distill, transfer, model.config.hidden_size)
    model.to(device)
    # The compiled wrapper runs the steps; `model` (same parameters, names without the wrapper's
    # `_orig_mod.` prefix) builds the optimiser groups, checkpoints and the saved model.
    net = torch.compile(model) if cfg.trainer.compile else model
    loaders = _loaders(cfg, splits, tokenizer, device, teacher_rows)
    loss_fn = distill.wrap_loss(cfg.distill, build_loss(cfg.loss), model.config, transfer).to(device)
    clock.lap("setup")

    result = _fit(
        cfg, model, net, loaders, loss_fn, device, precision, output_dir / "checkpoint" / CHECKPOINT_NAME, saved
    )
    clock.lap("training")
    if result.pruned_at_step is not None:  # a valid partial run: its best weights are scored as usual
        mlflow.set_tags({PRUNED_TAG: "true", "pruned_at_step": str(result.pruned_at_step)})

    final = {f"best_val_{k}": v for k, v in result.best_metrics.items()}
    threshold = best_threshold(
        [label for _, label, _ in loaders["val"].dataset],
        result.best_val_probs,
        cfg.trainer.threshold_metric,
        cfg.trainer.threshold_tolerance,
    )
    final.update(
        decision_threshold=threshold,
        best_epoch=result.best_epoch,
        best_step=result.best_step,
        train_seconds=result.train_seconds,
        train_samples_per_s=result.samples_per_second,
        stopped_early=float(result.stopped_early),
        skipped_steps=result.skipped_steps,
        train_steps=result.steps,  # optimiser steps done: fewer than train.total_steps when stopped early or pruned
    )
    for name, loader in loaders.items():
        if name not in ("train", "val"):
            final.update(_report_split(name, loader, splits, net, loss_fn, device, threshold, output_dir))
    clock.lap("evaluation")
    mlflow.log_metrics(final)
    mlflow.log_artifact(str(plots.training_curves_png(result.history, output_dir / "training_curves.png")))
    _log_config(output_dir)
    if cfg.tracking.log_model:
        _log_model(model, tokenizer, output_dir, final["decision_threshold"], cfg.model.max_length)
    clock.lap("logging")
    mlflow.log_metrics(clock.metrics())
    return {**final, **clock.metrics()}


def _fit(cfg, model, net, loaders: dict, loss_fn, device, precision: str, checkpoint_path: Path, saved: dict | None):
    """Optimiser, schedule and adversary from their config groups, then the training loop, which
    SIGINT / SIGTERM stop at a step boundary with a checkpoint; ``saved`` continues from one.
    ``net`` is ``model`` or its torch.compile wrapper: it trains; ``model`` names the parameters."""
    optimizer = build_optimizer(cfg.schedule, model, beside=loss_fn)  # the loss's own weights, if any, train too
    total_steps = _total_steps(cfg.trainer, len(loaders["train"]))
    scheduler = build_scheduler(cfg.schedule, optimizer, total_steps)
    adversary = build_adversary(cfg.adversarial, model)
    mlflow.log_params(
        {
            "data.train_rows": len(loaders["train"].dataset),
            "train.total_steps": total_steps,
            "model.parameters": sum(p.numel() for p in model.parameters()),
        }
    )
    state = None
    if saved:
        model.load_state_dict(checkpoint.model_state(saved["model"]))
        if saved.get("loss"):  # distillation's layer maps; checkpoints of losses without weights have none
            loss_fn.load_state_dict(saved["loss"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = LoopState.from_dict(saved["loop"])
        checkpoint.set_rng_state(saved["rng"])

    def save_and_stop(loop_state: LoopState) -> None:
        path = checkpoint.save(
            {
                "run_id": mlflow.active_run().info.run_id,
                "model": model.state_dict(),
                "loss": loss_fn.state_dict() if any(True for _ in loss_fn.parameters()) else {},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "loop": loop_state.to_dict(),
                "rng": checkpoint.rng_state(),
            },
            checkpoint_path,
        )
        raise TrainingInterrupted(path, stop.signal_name)

    reporter = trial_reporter(cfg)  # None unless this job is a trial of an Optuna search (search=optuna)
    with checkpoint.stop_on_signals() as stop:
        parts = TrainingParts(
            net, loaders["train"], loaders["val"], loss_fn, optimizer, scheduler, adversary, device, precision
        )
        return train(
            parts,
            cfg.trainer,
            total_steps,
            on_metrics=_log_step_metrics,
            state=state,
            stop_requested=lambda: bool(stop),
            on_interrupt=save_and_stop,
            on_validation=reporter.report if reporter else None,
        )


def _requeue_with_submitit(signal_name: str) -> None:
    """In a submitit job, SIGUSR2 is its time-limit / pre-emption warning: ours stopped the loop (with a
    checkpoint when inside it); now run submitit's handler, restored since, which requeues the job and
    exits (or raises UncompletedJobError once max_num_timeout is spent). The requeued job resumes from
    the checkpoint (_resume_checkpoint)."""
    requeue = checkpoint.REQUEUE_SIGNAL
    if requeue is None or signal_name != requeue.name or "SUBMITIT_FOLDER" not in os.environ:
        return
    handler = signal.getsignal(requeue)
    if not callable(handler):
        return
    print(f"{signal_name}: handing over to submitit to requeue the job", file=sys.stderr)
    handler(requeue, None)


def _continuation_plan(cfg, parent: str | None, overrides: list[str]) -> continuation.JobPlan:
    """In a continued sweep (tracking.resume_sweep), what this job does: lib/continuation.py."""
    if not (parent and cfg.tracking.get("resume_sweep")):
        return continuation.JobPlan()
    client = mlflow.MlflowClient(tracking_uri(cfg))
    return continuation.plan_job(overrides, child_runs(client, parent))


def _reuse(run, output_dir: Path) -> dict[str, float]:
    """A continued sweep's job whose run FINISHED before: its results stand, nothing is trained."""
    log.info("reusing the FINISHED run %s (%s): nothing to train", run.info.run_name, run.info.run_id)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / continuation.REUSED_FILE).write_text(run.info.run_id)
    return dict(run.data.metrics)


def _resume_checkpoint(cfg, output_dir: Path, plan: continuation.JobPlan) -> tuple[dict | None, dict[str, str]]:
    """The checkpoint to continue from, and the tags saying so: trainer.resume (a checkpoint path,
    or an interrupted MLflow run's id); in a continued sweep, the checkpoint of the job's KILLED run;
    else, in a sweep job that SLURM requeued, the checkpoint the interrupted job left in its output
    folder (the requeued job has the same one)."""
    target = cfg.trainer.resume
    if not target and plan.resume is not None:
        run_id = plan.resume.info.run_id
        log.info("continuing the KILLED run %s (%s) from its checkpoint", plan.resume.info.run_name, run_id)
        return checkpoint.load(Path(plan.resume.data.tags[CHECKPOINT_TAG])), {"resumed_from": run_id}
    if not target:
        return _requeued_checkpoint(output_dir)
    return _checkpoint_of(cfg, target), {"resumed_from": str(target)}


def _requeued_checkpoint(output_dir: Path) -> tuple[dict | None, dict[str, str]]:
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    path = output_dir / "checkpoint" / CHECKPOINT_NAME
    if not (restarts and in_multirun() and path.is_file()):
        return None, {}
    log.info("requeued by SLURM (restart %d): resuming from %s", restarts, path)
    return checkpoint.load(path), {"resumed_from": str(path), "requeued": str(restarts)}


def _checkpoint_of(cfg, target) -> dict:
    if Path(str(target)).exists():
        return checkpoint.load(Path(str(target)))
    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        tags = mlflow.MlflowClient().get_run(str(target)).data.tags
    except mlflow.exceptions.MlflowException:
        raise UserError(
            f"trainer.resume={target}: neither a checkpoint file nor a run id in {redact(tracking_uri(cfg))}"
        ) from None
    if CHECKPOINT_TAG not in tags:
        raise UserError(f"trainer.resume={target}: that run has no checkpoint (it was not interrupted)")
    return checkpoint.load(Path(tags[CHECKPOINT_TAG]))


def _as_user_error(err: OSError) -> UserError | OSError:
    """Disk full, read-only or forbidden paths: one line naming the path, not a traceback."""
    if err.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM) and err.filename:
        return UserError(f"{err.filename}: {err.strerror}")
    return err


# --------------------------------------------------------------- data -> loaders


def limited_splits(cfg) -> Splits:
    """The run's splits (lib/data), capped by trainer.limit_train / limit_eval."""
    return _limited(load_data(cfg), cfg.trainer, train_seed=cfg.trainer.seed, eval_seed=cfg.data.seed)


def _limited(splits: Splits, cfg_trainer, train_seed: int, eval_seed: int) -> Splits:
    """Apply trainer.limit_train / limit_eval (smoke runs): a seeded sample of each split. The
    evaluation sets are sampled with the data seed, so every job of a trainer.seed sweep is scored
    on the same rows (the recipe view pairs them row by row)."""

    def cap(frame: pd.DataFrame, limit, seed: int) -> pd.DataFrame:
        return frame if limit is None or len(frame) <= limit else frame.sample(limit, random_state=seed)

    splits.train = cap(splits.train, cfg_trainer.limit_train, train_seed)
    check_training_set(splits.train, splits.source, min_per_class=1)
    limit = cfg_trainer.limit_eval
    splits.val, splits.test = cap(splits.val, limit, eval_seed), cap(splits.test, limit, eval_seed)
    splits.extra = {k: cap(v, limit, eval_seed) for k, v in splits.extra.items()}
    if len(splits.train) < cfg_trainer.batch_size:
        raise DataError(
            f"{splits.source}: only {len(splits.train)} training rows, fewer than "
            f"trainer.batch_size={cfg_trainer.batch_size}; add data or lower the batch size"
        )
    for name, frame in [("val", splits.val), ("test", splits.test)]:
        if frame.empty:
            raise DataError(f"{splits.source}: the {name} split is empty")
    return splits


def _log_data(splits: Splits) -> None:
    sizes = {
        f"data_{name}_rows": len(frame)
        for name, frame in [("train", splits.train), ("val", splits.val), ("test", splits.test), *splits.extra.items()]
    }
    mlflow.log_metrics({**sizes, **{f"data_{k}": v for k, v in splits.stats.items()}})
    log.info("data: %s", data_line(sizes, splits.stats))


def _loaders(cfg, splits: Splits, tokenizer, device, teacher_rows: dict | None = None) -> dict:
    """Tokenize every split once; training batches shuffled by length bucket, evaluation sorted.
    ``teacher_rows``: the teacher's tensors, one row per training row, carried by the training batches
    (distillation: lib/distill.TransferSet.per_row)."""
    frames = {"train": splits.train, "val": splits.val, "test": splits.test, **splits.extra}
    loaders = {}
    for name, frame in frames.items():
        is_train = name == "train"
        loaders[name] = make_loader(
            encode(tokenizer, frame["text"].tolist(), cfg.model.max_length),
            frame["label"].tolist(),
            cfg.trainer.batch_size if is_train else cfg.trainer.eval_batch_size,
            shuffle=is_train,
            pad_id=tokenizer.pad_token_id,
            seed=cfg.trainer.seed,
            bucketing=cfg.trainer.bucketing,
            pad_to=cfg.model.max_length if cfg.trainer.pad_to_max_length else None,
            num_workers=cfg.trainer.num_workers,
            pin_memory=device.type == "cuda",
            per_row=teacher_rows if is_train else None,
        )
    return loaders


def _total_steps(cfg_trainer, train_batches: int) -> int:
    steps = cfg_trainer.epochs * math.ceil(train_batches / cfg_trainer.grad_accum_steps)
    return min(steps, cfg_trainer.max_steps) if cfg_trainer.max_steps else steps


# --------------------------------------------------------------- reporting


def _log_step_metrics(metrics: dict, step: int) -> None:
    mlflow.log_metrics(metrics, step=step)


def _report_split(name, loader, splits, model, loss_fn, device, threshold: float, output_dir: Path) -> dict:
    """Metrics at the validation-chosen ``threshold`` (and at 0.5, as ``*_at_0.5``) and the files of
    one held-out split (lib/evaluation.write_evaluation_files): what predict/evaluate will see."""
    metrics, probs = evaluate(model, loader, loss_fn, device, threshold)
    frame = splits.test if name == "test" else splits.extra[name]
    folder = output_dir / "reports" / name
    folder.mkdir(parents=True, exist_ok=True)
    write_evaluation_files(frame, probs, None, threshold, folder)
    mlflow.log_artifacts(str(folder), f"reports/{name}")
    log.info("%s: %s", name, metrics_line(metrics))
    return {f"{name}_{k}": v for k, v in metrics.items()}


def _log_config(output_dir: Path) -> None:
    hydra_dir = output_dir / ".hydra"
    if hydra_dir.is_dir():
        mlflow.log_artifacts(str(hydra_dir), ".hydra")


def _log_model(model, tokenizer, output_dir: Path, threshold: float, max_length: int) -> None:
    """The HF model folder plus what inference needs to match training (titlesweep.json), as run
    artifacts ``model/`` (experiments/predict.py, evaluate.py), and the same folder wrapped as the
    pyfunc model ``pyfunc_model`` (mlflow.pyfunc.load_model, `mlflow models`, the model registry)."""
    from lib.pyfunc import MODEL_ARTIFACT, log_pyfunc_model, save_model_folder  # here: it registers the pyfunc model

    folder = save_model_folder(output_dir / MODEL_ARTIFACT, model, tokenizer, threshold, max_length)
    mlflow.log_artifacts(str(folder), MODEL_ARTIFACT)
    log_pyfunc_model(folder)


def _redact_hydra_files(output_dir: Path) -> None:
    """Hydra wrote the composed config and the overrides (.hydra/*.yaml, and a sweep's multirun.yaml
    beside the job folders) before the job started: rewrite them without credentials, before they
    are logged as artifacts. (A tracking.uri password given on train.py's command line never gets
    there: lib.tracking.credentials_to_environment; this covers conf/local and the search storage.)"""
    for path in [*(output_dir / ".hydra").glob("*.yaml"), output_dir.parent / "multirun.yaml"]:
        redact_file(path)


def _output_dir_and_overrides(cfg) -> tuple[Path, list[str]]:
    """Hydra's job folder and command-line overrides; outside Hydra (tests, notebooks) a new folder."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        return Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
    folder = Path(cfg.paths.outputs) / "runs" / time.strftime("%Y-%m-%d_%H-%M-%S")
    folder = folder.with_name(f"{folder.name}_{time.perf_counter_ns() % 10**6}")
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return folder, []
