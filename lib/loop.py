"""The training loop, plain PyTorch, top to bottom: forward, backward, (adversarial step),
clip, step, evaluate, early-stop. Reads cfg.trainer; everything else arrives built."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lib.errors import ConfigError, UserError
from lib.metrics import compute_metrics

# --------------------------------------------------------------- device and precision


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: no CUDA GPU is visible; use trainer.device=cpu or auto")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on a CUDA GPU that has it, fp16 on older CUDA GPUs, fp32 on CPU."""
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"trainer.precision={name}: choose auto, fp32, bf16 or fp16")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    return name


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "index"}


# --------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict(model, loader, device, precision: str) -> torch.Tensor:
    """Logits (float32, on the CPU) of every example, in the loader's original order."""
    model.eval()
    logits_all = torch.zeros((len(loader.dataset), 2), dtype=torch.float32)
    for batch in loader:
        inputs = to_device(batch, device)
        inputs.pop("labels")
        with autocast(device, precision):
            logits = model(**inputs).logits
        logits_all[batch["index"]] = logits.float().cpu()
    return logits_all


def evaluate(model, loader, loss_fn, device, precision: str) -> tuple[dict, np.ndarray]:
    """Metrics (the loss included) and the probability of label 1 for one labelled split."""
    logits = predict(model, loader, device, precision)
    labels = torch.tensor([label for _, label, _ in loader.dataset], dtype=torch.long)
    probs = torch.softmax(logits, dim=-1)[:, 1].numpy()
    metrics = compute_metrics(labels.numpy(), probs)
    metrics["loss"] = float(loss_fn(logits.to(device), labels.to(device)))
    return metrics, probs


# --------------------------------------------------------------- early stopping


class EarlyStopping:
    """Tracks the best validation value; ``should_stop`` after ``patience`` evaluations without gain."""

    def __init__(self, metric: str, mode: str, patience: int | None):
        if mode not in ("max", "min"):
            raise ConfigError(f"trainer.early_stopping.mode={mode}: choose max or min")
        self.metric, self.mode, self.patience = metric, mode, patience
        self.best = -math.inf if mode == "max" else math.inf
        self.bad_evals = 0

    def update(self, metrics: dict) -> bool:
        """Record one evaluation; True when it is the best so far."""
        if self.metric not in metrics:
            raise ConfigError(f"trainer.early_stopping.metric={self.metric}: not a validation metric "
                              f"(choose from {', '.join(sorted(metrics))})")
        value = metrics[self.metric]
        improved = value > self.best if self.mode == "max" else value < self.best
        if improved:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience


# --------------------------------------------------------------- training


@dataclass
class LoopResult:
    history: list[dict] = field(default_factory=list)  # one dict per log/eval event, with "step"
    best_metrics: dict = field(default_factory=dict)   # validation metrics of the restored weights
    best_val_probs: list = field(default_factory=list)  # and their validation probabilities (threshold choice)
    best_step: int = 0
    best_epoch: int = 0
    steps: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # wall time of train(), validation included
    eval_seconds: float = 0.0   # of which validation
    train_samples: int = 0      # examples passed forward/backward (repeats across epochs counted)
    skipped_steps: int = 0      # optimiser steps skipped for a non-finite loss

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / max(self.train_seconds - self.eval_seconds, 1e-9)


@dataclass
class LoopState:
    """Everything that changes while training, beyond model/optimiser/scheduler: what a checkpoint holds."""
    result: LoopResult = field(default_factory=LoopResult)
    step: int = 0               # optimiser steps done
    epoch: int = 1              # current epoch (1-based)
    next_batch: int = 0         # position in the current epoch's batch order
    best_value: float | None = None
    bad_evals: int = 0
    best_weights: dict | None = None
    running_loss: float = 0.0   # sum of losses since the last log line
    running_count: int = 0
    nonfinite_streak: int = 0
    scaler: dict | None = None  # GradScaler state (fp16)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "LoopState":
        return cls(**{**saved, "result": LoopResult(**saved["result"])})


class NonFiniteLoss(UserError):
    """The loss stayed NaN/inf for trainer.max_nonfinite_steps optimiser steps in a row."""


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)


def train(model, train_loader, val_loader, loss_fn, optimizer, scheduler, adversary, cfg_trainer,
          device: torch.device, precision: str, total_steps: int,
          on_metrics: Callable[[dict, int], None] = lambda metrics, step: None,
          state: LoopState | None = None, stop_requested=lambda: False,
          on_interrupt: Callable[[LoopState], None] | None = None) -> LoopResult:
    """Train until epochs, max_steps or early stopping; leaves the model holding its best weights.

    ``state`` continues a checkpointed run. When ``stop_requested()`` turns true, training stops
    at the next optimiser-step boundary and ``on_interrupt(state)`` saves it (then raises).
    """
    accum = cfg_trainer.grad_accum_steps
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    stopper = EarlyStopping(cfg_trainer.early_stopping.metric, cfg_trainer.early_stopping.mode,
                            cfg_trainer.early_stopping.patience)
    state = state or LoopState()
    if state.scaler:
        scaler.load_state_dict(state.scaler)
    result = state.result
    if state.best_value is not None:
        stopper.best, stopper.bad_evals = state.best_value, state.bad_evals
    window_loss = torch.tensor(state.running_loss, device=device)  # summed on the device: no per-step sync
    step_loss = torch.zeros((), device=device)
    clock = time.perf_counter() - result.train_seconds

    def loss_of(inputs):
        with autocast(device, precision):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        return loss_fn(logits.float(), inputs["labels"]) / accum

    def run_eval() -> bool:
        """Evaluate, keep the best weights, log; True when training should stop."""
        eval_start = time.perf_counter()
        metrics, probs = evaluate(model, val_loader, loss_fn, device, precision)
        model.train()
        result.eval_seconds += time.perf_counter() - eval_start
        val = {f"val_{k}": v for k, v in metrics.items()}
        result.history.append({"step": state.step, "epoch": state.epoch, **val})
        on_metrics({**val, "epoch": state.epoch}, state.step)
        if stopper.update(metrics):
            state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            result.best_metrics, result.best_step, result.best_epoch = metrics, state.step, state.epoch
            result.best_val_probs = probs.tolist()
        state.best_value, state.bad_evals = stopper.best, stopper.bad_evals
        return stopper.should_stop

    def log_train(bars, task) -> None:
        state.running_loss = float(window_loss)  # the only host-device sync of the logging path
        train_loss, lr = state.running_loss / max(state.running_count, 1), _base_lr(optimizer)
        result.history.append({"step": state.step, "epoch": state.epoch, "train_loss": train_loss, "lr": lr})
        on_metrics({"train_loss": train_loss, "lr": lr}, state.step)
        result.train_seconds = time.perf_counter() - clock
        bars.update(task, info=f"epoch {state.epoch} loss {train_loss:.4f} lr {lr:.2e} "
                               f"{result.samples_per_second:.0f} samples/s")
        window_loss.zero_()
        state.running_loss, state.running_count = 0.0, 0

    def checkpoint_and_raise() -> None:
        state.running_loss, state.scaler = float(window_loss), scaler.state_dict()
        result.train_seconds = time.perf_counter() - clock
        on_interrupt(state)  # saves, then raises TrainingInterrupted

    with _progress() as bars:
        task = bars.add_task("train", total=total_steps, completed=state.step, info="")
        stop, evaluated_at = False, -1
        while state.epoch <= cfg_trainer.epochs:
            model.train()
            train_loader.batch_sampler.set_epoch(state.epoch, skip=state.next_batch)
            batches = len(train_loader)
            for i, batch in enumerate(train_loader, start=state.next_batch):
                inputs = to_device(batch, device)
                loss = loss_of(inputs)
                scaler.scale(loss).backward()
                if adversary is not None:
                    adversary.attack(lambda: _backward(scaler, loss_of(inputs)))
                step_loss += loss.detach()
                result.train_samples += len(batch["labels"])
                if (i + 1) % accum and i + 1 < batches:
                    continue  # accumulate gradients over `accum` batches
                state.next_batch = i + 1
                if not _finite_step(step_loss, state, cfg_trainer, optimizer):
                    result.skipped_steps += 1
                    continue
                window_loss += step_loss * accum
                step_loss.zero_()
                state.running_count += accum
                _optimizer_step(model, optimizer, scaler, cfg_trainer.max_grad_norm)
                scheduler.step()
                state.step += 1
                if state.step % cfg_trainer.log_every_steps == 0 or state.step == total_steps:
                    log_train(bars, task)
                bars.update(task, completed=state.step)
                if cfg_trainer.eval_every_steps and state.step % cfg_trainer.eval_every_steps == 0:
                    stop, evaluated_at = run_eval(), state.step
                if stop or state.step >= total_steps:
                    break
                if stop_requested() and on_interrupt is not None:
                    checkpoint_and_raise()
            if evaluated_at != state.step:  # every epoch (and the last, partial one) ends evaluated
                stop, evaluated_at = run_eval(), state.step
            if stop or state.step >= total_steps:
                break
            state.epoch, state.next_batch = state.epoch + 1, 0
            if stop_requested() and on_interrupt is not None:
                checkpoint_and_raise()
    result.stopped_early = stopper.should_stop
    result.steps, result.train_seconds = state.step, time.perf_counter() - clock
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    return result


def _finite_step(step_loss: torch.Tensor, state: LoopState, cfg_trainer, optimizer) -> bool:
    """False (and the gradients dropped) when this step's loss is NaN/inf; too many in a row raise.

    One boolean read from the device per optimiser step: the price of never stepping on NaN.
    """
    if bool(torch.isfinite(step_loss)):
        state.nonfinite_streak = 0
        return True
    optimizer.zero_grad(set_to_none=True)
    step_loss.zero_()
    state.nonfinite_streak += 1
    if state.nonfinite_streak >= cfg_trainer.max_nonfinite_steps:
        raise NonFiniteLoss(f"the training loss was NaN/inf for {state.nonfinite_streak} optimiser steps in a row "
                            f"(after step {state.step}); lower schedule.lr, or use trainer.precision=fp32")
    return False


def _base_lr(optimizer) -> float:
    """The schedule's current lr (groups carry layer-wise multiples of it)."""
    group = optimizer.param_groups[0]
    return optimizer.defaults["lr"] * group["lr"] / group["initial_lr"]


def _backward(scaler, loss: torch.Tensor) -> torch.Tensor:
    scaler.scale(loss).backward()
    return loss.detach()


def _optimizer_step(model, optimizer, scaler, max_grad_norm: float | None) -> None:
    if max_grad_norm:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
