"""The training loop, plain PyTorch, top to bottom: forward, backward, (adversarial step),
clip, step, evaluate, early-stop. Reads cfg.trainer; everything else arrives built."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lib.errors import ConfigError
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
    best_step: int = 0
    best_epoch: int = 0
    steps: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # wall time of train(), validation included
    eval_seconds: float = 0.0   # of which validation
    train_samples: int = 0      # examples passed forward/backward (repeats across epochs counted)

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / max(self.train_seconds - self.eval_seconds, 1e-9)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)


def train(model, train_loader, val_loader, loss_fn, optimizer, scheduler, adversary, cfg_trainer,
          device: torch.device, precision: str, total_steps: int,
          on_metrics: Callable[[dict, int], None] = lambda metrics, step: None) -> LoopResult:
    """Train until epochs, max_steps or early stopping; leaves the model holding its best weights."""
    accum = cfg_trainer.grad_accum_steps
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    stopper = EarlyStopping(cfg_trainer.early_stopping.metric, cfg_trainer.early_stopping.mode,
                            cfg_trainer.early_stopping.patience)
    result, best_state = LoopResult(), None
    step, running_loss, running_count = 0, torch.zeros((), device=device), 0
    train_start = time.perf_counter()

    def loss_of(inputs):
        with autocast(device, precision):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        return loss_fn(logits.float(), inputs["labels"]) / accum

    def run_eval(epoch: int) -> bool:
        """Evaluate, keep the best weights, log; True when training should stop."""
        nonlocal best_state
        eval_start = time.perf_counter()
        metrics, _ = evaluate(model, val_loader, loss_fn, device, precision)
        model.train()
        result.eval_seconds += time.perf_counter() - eval_start
        val = {f"val_{k}": v for k, v in metrics.items()}
        result.history.append({"step": step, "epoch": epoch, **val})
        on_metrics({**val, "epoch": epoch}, step)
        if stopper.update(metrics):
            best_state = copy.deepcopy(model.state_dict())
            result.best_metrics, result.best_step, result.best_epoch = metrics, step, epoch
        return stopper.should_stop

    with _progress() as bars:
        task = bars.add_task("train", total=total_steps, info="")
        stop = False
        for epoch in range(1, cfg_trainer.epochs + 1):
            model.train()
            train_loader.batch_sampler.set_epoch(epoch)
            batches = len(train_loader)
            for i, batch in enumerate(train_loader):
                inputs = to_device(batch, device)
                loss = loss_of(inputs)
                scaler.scale(loss).backward()
                if adversary is not None:
                    adversary.attack(lambda: _backward(scaler, loss_of(inputs)))
                running_loss += loss.detach() * accum
                running_count += 1
                result.train_samples += len(batch["labels"])
                if (i + 1) % accum and i + 1 < batches:
                    continue  # accumulate gradients over `accum` batches
                _optimizer_step(model, optimizer, scaler, cfg_trainer.max_grad_norm)
                scheduler.step()
                step += 1
                if step % cfg_trainer.log_every_steps == 0 or step == total_steps:
                    # The only host-device sync in the step loop, every log_every_steps steps.
                    train_loss = float(running_loss) / running_count
                    lr = _base_lr(optimizer)
                    result.history.append({"step": step, "epoch": epoch, "train_loss": train_loss, "lr": lr})
                    on_metrics({"train_loss": train_loss, "lr": lr}, step)
                    result.train_seconds = time.perf_counter() - train_start
                    rate = result.samples_per_second
                    bars.update(task, info=f"epoch {epoch} loss {train_loss:.4f} lr {lr:.2e} {rate:.0f} samples/s")
                    running_loss.zero_()
                    running_count = 0
                bars.update(task, completed=step)
                if cfg_trainer.eval_every_steps and step % cfg_trainer.eval_every_steps == 0:
                    stop = run_eval(epoch)
                if stop or step >= total_steps:
                    break
            if not (cfg_trainer.eval_every_steps and step % cfg_trainer.eval_every_steps == 0):
                stop = run_eval(epoch) or stop
            if stop or step >= total_steps:
                result.stopped_early = stop
                break
    result.steps, result.train_seconds = step, time.perf_counter() - train_start
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


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
