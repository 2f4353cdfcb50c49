"""The training loop, plain PyTorch, top to bottom: forward, backward, (adversarial step),
clip, step, evaluate, early-stop. Reads cfg.trainer; everything else arrives built."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lib.device import autocast, to_device
from lib.errors import ConfigError, UserError
from lib.metrics import compute_metrics, metrics_at_threshold
from lib.progress import progress

# --------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict(model, loader, device, precision: str = "fp32") -> torch.Tensor:
    """Logits (float32, on the CPU) of every example, in the loader's original order.

    Every evaluation uses the fp32 default: the decision threshold is chosen on validation
    probabilities and applied to test and prediction probabilities, so all of them must come
    from the same arithmetic on every device (benchmarks pass bf16 to time it).
    """
    model.eval()
    logits_all = torch.zeros((len(loader.dataset), 2), dtype=torch.float32)
    for batch in loader:
        inputs = to_device(batch, device)
        inputs.pop("labels")
        with autocast(device, precision):
            logits = model(**inputs).logits
        logits_all[batch["index"]] = logits.float().cpu()
    return logits_all


def evaluate(model, loader, loss_fn, device, threshold: float | None = None) -> tuple[dict, np.ndarray]:
    """Metrics (the loss included) and the probability of label 1 for one labelled split, in fp32;
    at 0.5, or at ``threshold`` with the threshold-dependent ones at 0.5 beside (``*_at_0.5``)."""
    logits = predict(model, loader, device)
    labels = torch.tensor([label for _, label, _ in loader.dataset], dtype=torch.long)
    probs = torch.softmax(logits, dim=-1)[:, 1].numpy()
    if threshold is None:
        metrics = compute_metrics(labels.numpy(), probs)
    else:
        metrics = metrics_at_threshold(labels.numpy(), probs, threshold)
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
            raise ConfigError(
                f"trainer.early_stopping.metric={self.metric}: not a validation metric "
                f"(choose from {', '.join(sorted(metrics))})"
            )
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
    best_metrics: dict = field(default_factory=dict)  # validation metrics of the restored weights
    best_val_probs: list = field(default_factory=list)  # and their validation probabilities (threshold choice)
    best_step: int = 0
    best_epoch: int = 0
    steps: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # wall time of train(), validation included
    eval_seconds: float = 0.0  # of which validation
    train_samples: int = 0  # examples passed forward/backward (repeats across epochs counted)
    skipped_steps: int = 0  # optimiser steps skipped for a non-finite loss or gradient norm

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / max(self.train_seconds - self.eval_seconds, 1e-9)


@dataclass
class LoopState:
    """Everything that changes while training, beyond model/optimiser/scheduler: what a checkpoint holds."""

    result: LoopResult = field(default_factory=LoopResult)
    step: int = 0  # optimiser steps done
    epoch: int = 1  # current epoch (1-based)
    next_batch: int = 0  # position in the current epoch's batch order
    best_value: float | None = None
    bad_evals: int = 0
    best_weights: dict | None = None
    running_loss: float = 0.0  # sum of per-batch mean losses since the last log line
    running_adv_loss: float = 0.0  # the same for the adversarial (FGM/PGD) loss
    running_count: int = 0  # batches in those sums
    nonfinite_streak: int = 0
    scaler: dict | None = None  # GradScaler state (fp16)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> LoopState:
        return cls(**{**saved, "result": LoopResult(**saved["result"])})


class NonFiniteLoss(UserError):
    """The loss or gradient norm stayed NaN/inf for trainer.max_nonfinite_steps optimiser steps in a row."""


def _progress():
    return progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def train(
    model,
    train_loader,
    val_loader,
    loss_fn,
    optimizer,
    scheduler,
    adversary,
    cfg_trainer,
    device: torch.device,
    precision: str,
    total_steps: int,
    on_metrics: Callable[[dict, int], None] = lambda metrics, step: None,
    state: LoopState | None = None,
    stop_requested=lambda: False,
    on_interrupt: Callable[[LoopState], None] | None = None,
) -> LoopResult:
    """Train until epochs, max_steps or early stopping; leaves the model holding its best weights.

    ``state`` continues a checkpointed run. When ``stop_requested()`` turns true, training stops
    at the next optimiser-step boundary and ``on_interrupt(state)`` saves it (then raises).
    """
    accum = cfg_trainer.grad_accum_steps
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    stopper = EarlyStopping(
        cfg_trainer.early_stopping.metric, cfg_trainer.early_stopping.mode, cfg_trainer.early_stopping.patience
    )
    state = state or LoopState()
    if state.scaler:
        scaler.load_state_dict(state.scaler)
    result = state.result
    if state.best_value is not None:
        stopper.best, stopper.bad_evals = state.best_value, state.bad_evals
    # Losses are summed on the device and read back only at log steps: no per-batch sync.
    window_loss = torch.tensor(state.running_loss, device=device)
    window_adv_loss = torch.tensor(state.running_adv_loss, device=device)
    step_loss, step_adv_loss = torch.zeros((), device=device), torch.zeros((), device=device)
    clock = time.perf_counter() - result.train_seconds

    def loss_of(inputs, window: int):
        """The batch's mean loss divided by the number of batches in its accumulation window,
        so that the window's summed gradient is the gradient of the mean over its batches."""
        with autocast(device, precision):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        return loss_fn(logits.float(), inputs["labels"]) / window

    def run_eval() -> bool:
        """Evaluate, keep the best weights, log; True when training should stop."""
        eval_start = time.perf_counter()
        metrics, probs = evaluate(model, val_loader, loss_fn, device)
        model.train()
        result.eval_seconds += time.perf_counter() - eval_start
        val = {f"val_{k}": v for k, v in metrics.items()}
        result.history.append({"step": state.step, "epoch": state.epoch, **val})
        on_metrics({**val, "epoch": state.epoch}, state.step)
        if stopper.update(metrics):
            # On the CPU: a copy of the weights on the GPU would double the model's GPU memory.
            state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            result.best_metrics, result.best_step, result.best_epoch = metrics, state.step, state.epoch
            result.best_val_probs = probs.tolist()
        state.best_value, state.bad_evals = stopper.best, stopper.bad_evals
        return stopper.should_stop

    def log_train(bars, task) -> None:
        state.running_loss = float(window_loss)  # the host-device syncs of the logging path
        count = max(state.running_count, 1)
        logged = {"train_loss": state.running_loss / count, "lr": _base_lr(optimizer)}
        if adversary is not None:
            state.running_adv_loss = float(window_adv_loss)
            logged["adv_loss"] = state.running_adv_loss / count
        result.history.append({"step": state.step, "epoch": state.epoch, **logged})
        on_metrics(logged, state.step)
        result.train_seconds = time.perf_counter() - clock
        bars.update(
            task,
            info=f"epoch {state.epoch} loss {logged['train_loss']:.4f} lr {logged['lr']:.2e} "
            f"{result.samples_per_second:.0f} samples/s",
        )
        window_loss.zero_()
        window_adv_loss.zero_()
        state.running_loss, state.running_adv_loss, state.running_count = 0.0, 0.0, 0

    def checkpoint_and_raise() -> None:
        state.running_loss, state.running_adv_loss = float(window_loss), float(window_adv_loss)
        state.scaler = scaler.state_dict()
        result.train_seconds = time.perf_counter() - clock
        on_interrupt(state)  # saves, then raises TrainingInterrupted

    # One optimisation step, in order:
    #  1. for each batch of the accumulation window: forward under autocast, loss / window, backward
    #     (and, with an adversary, its attack: perturb the embeddings, forward, backward, restore);
    #  2. unscale (fp16) and clip the gradients, reading their norm;
    #  3. a NaN/inf loss or gradient norm skips the step (gradients dropped); too many in a row stop;
    #  4. optimiser step, scheduler step, step count + 1;
    #  5. every log_every_steps: read the summed losses back from the device and log them;
    #  6. every eval_every_steps, and at each epoch's end: validate, keep the best weights, maybe stop;
    #  7. on SIGINT / SIGTERM: checkpoint at this step boundary and raise.
    with _progress() as bars:
        task = bars.add_task("train", total=total_steps, completed=state.step, info="")
        stop, evaluated_at = False, -1
        while state.epoch <= cfg_trainer.epochs:
            model.train()
            train_loader.batch_sampler.set_epoch(state.epoch, skip=state.next_batch)
            batches = len(train_loader)
            for i, batch in enumerate(train_loader, start=state.next_batch):
                window = _window_length(i, accum, batches)
                inputs = to_device(batch, device)
                loss = loss_of(inputs, window)
                scaler.scale(loss).backward()
                step_loss += loss.detach()
                if adversary is not None:
                    adv_loss = adversary.attack(lambda: _backward(scaler, loss_of(inputs, window)))  # noqa: B023 - called now
                    if adv_loss is not None:
                        step_adv_loss += adv_loss
                result.train_samples += len(batch["labels"])
                if (i + 1) % accum and i + 1 < batches:
                    continue  # accumulate gradients over `accum` batches
                state.next_batch = i + 1
                grad_norm = _unscale_and_clip(model, optimizer, scaler, cfg_trainer.max_grad_norm)
                # fp16: the grad scaler skips steps with inf/NaN gradients itself (and lowers its scale).
                finite = _finite_step(
                    step_loss + step_adv_loss,
                    None if scaler.is_enabled() else grad_norm,
                    state,
                    cfg_trainer,
                    optimizer,
                    scaler,
                )
                if finite:
                    window_loss += step_loss * window
                    window_adv_loss += step_adv_loss * window
                    state.running_count += window
                step_loss.zero_()
                step_adv_loss.zero_()
                if not finite:
                    result.skipped_steps += 1
                    continue
                _optimizer_step(optimizer, scaler)
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


def _window_length(batch: int, accum: int, batches: int) -> int:
    """Batches in the accumulation window of ``batch`` (0-based): ``accum``, or fewer for the
    epoch's last, partial window."""
    return min(accum, batches - batch // accum * accum)


def _finite_step(
    loss: torch.Tensor, grad_norm: torch.Tensor | None, state: LoopState, cfg_trainer, optimizer, scaler
) -> bool:
    """False (and the gradients dropped) when this step's loss or gradient norm is NaN/inf; too
    many in a row raise. A finite loss can still have a NaN gradient (e.g. an infinite derivative).

    One boolean read from the device per optimiser step: the price of never stepping on NaN.
    """
    finite = torch.isfinite(loss) if grad_norm is None else torch.isfinite(loss) & torch.isfinite(grad_norm)
    if bool(finite):
        state.nonfinite_streak = 0
        return True
    optimizer.zero_grad(set_to_none=True)
    scaler.update()  # closes this step's unscale_ (fp16); a no-op otherwise
    state.nonfinite_streak += 1
    if state.nonfinite_streak >= cfg_trainer.max_nonfinite_steps:
        raise NonFiniteLoss(
            f"the training loss or gradient norm was NaN/inf for {state.nonfinite_streak} optimiser "
            f"steps in a row (after step {state.step}); lower schedule.lr, or use trainer.precision=fp32"
        )
    return False


def _base_lr(optimizer) -> float:
    """The schedule's current lr (groups carry layer-wise multiples of it)."""
    group = optimizer.param_groups[0]
    return optimizer.defaults["lr"] * group["lr"] / group["initial_lr"]


def _backward(scaler, loss: torch.Tensor) -> torch.Tensor:
    scaler.scale(loss).backward()
    return loss.detach()


def _unscale_and_clip(model, optimizer, scaler, max_grad_norm: float | None) -> torch.Tensor:
    """The total gradient norm (unscaled), after clipping to ``max_grad_norm`` when it is set."""
    scaler.unscale_(optimizer)  # a no-op without fp16
    params = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm:
        return torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def _optimizer_step(optimizer, scaler) -> None:
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
