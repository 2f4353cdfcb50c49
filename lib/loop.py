"""The training loop, plain PyTorch, top to bottom: forward, backward, (adversarial step),
clip, step, evaluate, early-stop. Reads cfg.trainer; everything else arrives built."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lib import device as device_helpers
from lib.checkpoint import COMPILED_PREFIX
from lib.device import autocast, to_device
from lib.errors import ConfigError, UserError
from lib.metrics import compute_metrics, metrics_at_threshold
from lib.progress import progress
from lib.pyfunc import TextVectors

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from lib.adversarial import Adversary

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
    """Judges each validation by ``metric``: best so far, and whether ``patience`` evaluations in a row
    brought no gain. The values it tracks live in the LoopState (best_value, bad_evals), so that a
    checkpoint holds them and a resumed run judges the same way."""

    def __init__(self, metric: str, mode: str, patience: int | None):
        if mode not in ("max", "min"):
            raise ConfigError(f"trainer.early_stopping.mode={mode}: choose max or min")
        self.metric, self.mode, self.patience = metric, mode, patience

    def update(self, state: LoopState, metrics: dict) -> bool:
        """Record one evaluation in ``state``; True when it is the best so far."""
        if self.metric not in metrics:
            raise ConfigError(
                f"trainer.early_stopping.metric={self.metric}: not a validation metric "
                f"(choose from {', '.join(sorted(metrics))})"
            )
        value = metrics[self.metric]
        best = state.best_value
        if best is None:
            best = -math.inf if self.mode == "max" else math.inf
        improved = value > best if self.mode == "max" else value < best
        if improved:
            state.best_value, state.bad_evals = value, 0
        else:
            state.best_value, state.bad_evals = best, state.bad_evals + 1
        return improved

    def should_stop(self, state: LoopState) -> bool:
        return self.patience is not None and state.bad_evals >= self.patience


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
    pruned_at_step: int | None = None  # the step whose validation made a search's pruner stop the run
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
    best_value: float | None = None  # early stopping: the best validation value so far (None: none yet)
    bad_evals: int = 0  # and the evaluations since, without gain
    best_weights: dict | None = None  # in the plain model's names (never torch.compile's `_orig_mod.` ones)
    evaluated_step: int = -1  # the last step validated, so that a resumed run does not validate it again
    running_loss: float = 0.0  # sum of per-batch mean losses since the last log line
    running_adv_loss: float = 0.0  # the same for the adversarial (FGM/PGD) loss
    running_count: int = 0  # batches in those sums
    nonfinite_streak: int = 0
    scaler: dict | None = None  # GradScaler state (fp16)
    averaged_weights: list | None = None  # trainer.ema_decay: the moving average, one tensor per parameter
    averaged_updates: int = 0  # and the optimiser steps folded into it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> LoopState:
        return cls(**{**saved, "result": LoopResult(**saved["result"])})


@dataclass
class TrainingParts:
    """What the loop trains with, built from the config groups (lib/run.py): the model (or its
    torch.compile wrapper), the loaders, the loss, optimiser and schedule, the adversary (None: no
    adversarial training), and where and in which precision it computes."""

    model: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    adversary: Adversary | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"


# The student's vectors a distillation batch may ask for: TextVectors kind -> the loss arguments' suffix
# (teacher_embeddings / student_embeddings, teacher_layers / student_layers)
_STUDENT_VECTORS = {"head": "embeddings", "layers": "layers"}


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
    parts: TrainingParts,
    cfg_trainer,
    total_steps: int,
    *,
    on_metrics: Callable[[dict, int], None] = lambda metrics, step: None,
    state: LoopState | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    on_interrupt: Callable[[LoopState], None] | None = None,
    on_validation: Callable[[dict, int], bool] | None = None,
) -> LoopResult:
    """Train until epochs, max_steps or early stopping; leaves the model holding its best weights.

    ``state`` continues a checkpointed run. When ``stop_requested()`` turns true, training stops
    at the next optimiser-step boundary and ``on_interrupt(state)`` saves it (then raises).
    ``on_validation(metrics, step)`` sees every validation (a search trial reports it to its pruner);
    when it returns True training stops there, like early stopping, with ``pruned_at_step`` set.
    """
    model, optimizer = parts.model, parts.optimizer
    plain = getattr(model, "_orig_mod", model)  # the model itself under a torch.compile wrapper
    device, precision, adversary = parts.device, parts.precision, parts.adversary
    accum = cfg_trainer.grad_accum_steps
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    stopper = EarlyStopping(
        cfg_trainer.early_stopping.metric, cfg_trainer.early_stopping.mode, cfg_trainer.early_stopping.patience
    )
    state = state or LoopState()
    if state.scaler:
        scaler.load_state_dict(state.scaler)
    result = state.result
    # Losses and skip counts stay on the device and are read back only at log steps: no per-batch sync.
    tally = StepTally(state, device)
    step_loss, step_adv_loss = torch.zeros((), device=device), torch.zeros((), device=device)
    skip_on_device = _skips_on_device(device, optimizer, scaler)
    average = WeightAverage(model, state, cfg_trainer.get("ema_decay"))
    clock = time.perf_counter() - result.train_seconds

    def loss_of(inputs, window: int, weight: torch.Tensor | None = None):
        """The batch's mean loss divided by the number of batches in its accumulation window,
        so that the window's summed gradient is the gradient of the mean over its batches
        (times ``weight``: an adversary's 0 when its attack had no direction)."""
        # Distillation (lib/distill.py): the batch carries the teacher's logits, its embeddings when the
        # student also learns how the teacher relates titles or where it points them, and its layers'
        # title vectors when the student's layers learn from the teacher's: then the student's own too.
        soft = {name: value for name, value in inputs.items() if name.startswith("teacher_")}
        kinds = {kind: name for kind, name in _STUDENT_VECTORS.items() if f"teacher_{name}" in soft}
        with autocast(device, precision), contextlib.ExitStack() as stack:
            readers = {kind: stack.enter_context(TextVectors(plain, kind)) for kind in kinds}
            # hidden states only when the student's vectors are needed: not every model's forward takes the flag
            vectors = {"output_hidden_states": any(r.hidden_states for r in readers.values())} if readers else {}
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **vectors)
        for kind, name in kinds.items():
            soft[f"student_{name}"] = readers[kind].of(out, inputs["attention_mask"]).float()
        loss = parts.loss_fn(out.logits.float(), inputs["labels"], **soft) / window
        return loss if weight is None else loss * weight

    def run_eval() -> bool:
        """Evaluate, keep the best weights, log; True when training should stop."""
        eval_start = time.perf_counter()
        with average.swapped_in():  # with trainer.ema_decay the averaged weights are judged and kept
            metrics, probs = evaluate(model, parts.val_loader, parts.loss_fn, device)
            improved = stopper.update(state, metrics)
            if improved:
                # On the CPU: a copy of the weights on the GPU would double the model's GPU memory. In the
                # plain model's names, so a run resumed with trainer.compile toggled can load them.
                state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in plain.state_dict().items()}
        state.evaluated_step = state.step
        model.train()
        result.eval_seconds += time.perf_counter() - eval_start
        val = {f"val_{k}": v for k, v in metrics.items()}
        result.history.append({"step": state.step, "epoch": state.epoch, **val})
        on_metrics({**val, "epoch": state.epoch}, state.step)
        if improved:
            result.best_metrics, result.best_step, result.best_epoch = metrics, state.step, state.epoch
            result.best_val_probs = probs.tolist()
        if on_validation is not None and on_validation(metrics, state.step):
            result.pruned_at_step = state.step
            return True
        return stopper.should_stop(state)

    def log_train(bars, task) -> None:
        tally.read()  # the host-device sync of the logging path
        _check_nonfinite_streak(state, cfg_trainer)
        count = max(state.running_count, 1)
        logged = {"train_loss": state.running_loss / count, "lr": _base_lr(optimizer)}
        if adversary is not None:
            logged["adv_loss"] = state.running_adv_loss / count
        result.history.append({"step": state.step, "epoch": state.epoch, **logged})
        on_metrics(logged, state.step)
        result.train_seconds = time.perf_counter() - clock
        bars.update(
            task,
            info=f"epoch {state.epoch} loss {logged['train_loss']:.4f} lr {logged['lr']:.2e} "
            f"{result.samples_per_second:.0f} samples/s",
        )
        tally.new_window()

    def checkpoint_and_raise() -> None:
        tally.read()
        state.scaler = scaler.state_dict()
        result.train_seconds = time.perf_counter() - clock
        on_interrupt(state)  # saves, then raises TrainingInterrupted

    # One optimisation step, in order:
    #  1. for each batch of the accumulation window: forward under autocast, loss / window, backward
    #     (and, with an adversary, its attack: perturb the embeddings, forward, backward, restore);
    #  2. unscale (fp16) and clip the gradients, reading their norm;
    #  3. a NaN/inf loss or gradient norm skips the step (gradients dropped; on CUDA the fused AdamW
    #     kernel skips it on the device, see _skips_on_device); too many in a row stop;
    #  4. optimiser step, (trainer.ema_decay: fold the new weights into their average,) scheduler
    #     step, step count + 1;
    #  5. every log_every_steps: read the summed losses and skip counts back from the device, log them;
    #  6. every eval_every_steps, and at each epoch's end: validate (the averaged weights, when kept),
    #     keep the best weights, maybe stop;
    #  7. on SIGINT / SIGTERM: checkpoint at this step boundary and raise.
    with _progress() as bars:
        task = bars.add_task("train", total=total_steps, completed=state.step, info="")
        stop = False
        while state.epoch <= cfg_trainer.epochs:
            model.train()
            parts.train_loader.batch_sampler.set_epoch(state.epoch, skip=state.next_batch)
            batches = len(parts.train_loader)
            for i, batch in enumerate(parts.train_loader, start=state.next_batch):
                window = _window_length(i, accum, batches)
                inputs = to_device(batch, device)
                loss = loss_of(inputs, window)
                scaler.scale(loss).backward()
                step_loss += loss.detach()
                if adversary is not None:
                    adv_loss = adversary.attack(lambda weight=None: _backward(scaler, loss_of(inputs, window, weight)))  # noqa: B023 - called now
                    if adv_loss is not None:
                        step_adv_loss += adv_loss
                result.train_samples += len(batch["labels"])
                if (i + 1) % accum and i + 1 < batches:
                    continue  # accumulate gradients over `accum` batches
                state.next_batch = i + 1
                grad_norm = _unscale_and_clip(model, optimizer, scaler, cfg_trainer.max_grad_norm)
                # fp16: the grad scaler skips steps with inf/NaN gradients itself (and lowers its scale).
                finite = torch.isfinite(step_loss + step_adv_loss)
                if not scaler.is_enabled():
                    finite &= torch.isfinite(grad_norm)
                tally.add_step(finite, step_loss, step_adv_loss, window)
                step_loss.zero_()
                step_adv_loss.zero_()
                if skip_on_device:
                    optimizer.found_inf = (~finite).float()  # read by the fused kernel, on the device
                elif not finite:  # a free read on the CPU
                    _drop_step(optimizer, scaler)
                    tally.read()
                    _check_nonfinite_streak(state, cfg_trainer)
                    continue
                _optimizer_step(optimizer, scaler)
                average.update()
                parts.scheduler.step()
                state.step += 1
                if state.step % cfg_trainer.log_every_steps == 0 or state.step == total_steps:
                    log_train(bars, task)
                bars.update(task, completed=state.step)
                if cfg_trainer.eval_every_steps and state.step % cfg_trainer.eval_every_steps == 0:
                    stop = run_eval()
                if stop or state.step >= total_steps:
                    break
                if stop_requested() and on_interrupt is not None:
                    checkpoint_and_raise()
            if state.evaluated_step != state.step:  # every epoch (and the last, partial one) ends evaluated
                stop = run_eval()
            if stop or state.step >= total_steps:
                break
            state.epoch, state.next_batch = state.epoch + 1, 0
            if stop_requested() and on_interrupt is not None:
                checkpoint_and_raise()
    tally.read()
    _check_nonfinite_streak(state, cfg_trainer)
    result.stopped_early = stopper.should_stop(state)
    result.steps, result.train_seconds = state.step, time.perf_counter() - clock
    if state.best_weights is not None:
        plain.load_state_dict({k.removeprefix(COMPILED_PREFIX): v for k, v in state.best_weights.items()})
    return result


class WeightAverage:
    """An exponential moving average of the weights (trainer.ema_decay; None: off, every method a
    no-op). After each optimiser step ``average = d * average + (1 - d) * weights``, with
    ``d = min(ema_decay, (1 + n) / (10 + n))`` after n steps, so that the random-start head's first
    steps do not linger in it. Validation judges, and the run keeps, the averaged weights; the
    optimiser goes on from the raw ones. The average lives in the LoopState, so a checkpoint holds it.
    """

    def __init__(self, model: torch.nn.Module, state: LoopState, decay: float | None):
        if decay is not None and not 0.0 < decay < 1.0:
            raise ConfigError(f"trainer.ema_decay={decay}: choose a value between 0 and 1 (e.g. 0.99), or null")
        self.decay, self.state = decay, state
        # Only what the optimiser moves: frozen weights (model.freeze_word_embeddings) are their own average.
        self.params = [p for p in model.parameters() if p.requires_grad]
        if decay is not None and state.averaged_weights is None:
            state.averaged_weights = [p.detach().clone() for p in self.params]
        elif decay is not None:  # restored from a checkpoint, which loads onto the CPU: follow the weights
            state.averaged_weights = [a.to(p.device, p.dtype) for a, p in zip(state.averaged_weights, self.params)]

    def update(self) -> None:
        if self.decay is None:
            return
        n = self.state.averaged_updates
        decay = min(self.decay, (1 + n) / (10 + n))
        with torch.no_grad():
            torch._foreach_lerp_(self.state.averaged_weights, [p.detach() for p in self.params], 1.0 - decay)
        self.state.averaged_updates = n + 1

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its own ones again after it."""
        if self.decay is None:
            yield
            return
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.state.averaged_weights)
            try:
                yield
            finally:
                torch._foreach_copy_([p.data for p in self.params], own)


def _window_length(batch: int, accum: int, batches: int) -> int:
    """Batches in the accumulation window of ``batch`` (0-based): ``accum``, or fewer for the
    epoch's last, partial window."""
    return min(accum, batches - batch // accum * accum)


class StepTally:
    """What the loop counts per optimiser step, kept on the device so that nothing is read back
    between log steps: the summed losses of the log window and its batches (finite steps only),
    the steps skipped for NaN/inf and the current run of them. ``read()`` brings them into the
    LoopState with one transfer."""

    def __init__(self, state: LoopState, device: torch.device):
        self.state = state
        values = [state.running_loss, state.running_adv_loss, state.running_count, state.nonfinite_streak, 0.0]
        self.values = torch.tensor(values, dtype=torch.float32, device=device)
        self.loss, self.adv_loss, self.count, self.streak, self.skipped = self.values.unbind()

    def add_step(self, finite: torch.Tensor, loss: torch.Tensor, adv_loss: torch.Tensor, window: int) -> None:
        self.loss.add_(torch.where(finite, loss * window, 0.0))
        self.adv_loss.add_(torch.where(finite, adv_loss * window, 0.0))
        self.count.add_(finite * window)
        self.streak.copy_(torch.where(finite, 0.0, self.streak + 1))
        self.skipped.add_(~finite)

    def read(self) -> None:
        loss, adv_loss, count, streak, skipped = self.values.tolist()
        self.state.running_loss, self.state.running_adv_loss, self.state.running_count = loss, adv_loss, round(count)
        self.state.nonfinite_streak = round(streak)
        self.state.result.skipped_steps += round(skipped)
        self.skipped.zero_()

    def new_window(self) -> None:
        for value in (self.loss, self.adv_loss, self.count):
            value.zero_()
        self.state.running_loss, self.state.running_adv_loss, self.state.running_count = 0.0, 0.0, 0


def _skips_on_device(device: torch.device, optimizer, scaler) -> bool:
    """Whether a NaN/inf step is skipped on the device: on a GPU with a fused AdamW (lib/optim.py), which
    reads ``optimizer.found_inf`` in its kernel and then leaves weights, moments and its step count
    untouched, so the host never waits for the GPU between log steps. The schedule still advances
    and the step is counted (knowing it was skipped needs the read this avoids); the run of skipped
    steps is checked at the next log step. Elsewhere the host decides at once: on the CPU the read
    costs nothing. fp16's GradScaler skips steps its own way."""
    fused = getattr(optimizer, "_step_supports_amp_scaling", False)
    return not device_helpers.host_reads_are_free(device) and fused and not scaler.is_enabled()


def _drop_step(optimizer, scaler) -> None:
    """Skip this optimiser step: its gradients dropped."""
    optimizer.zero_grad(set_to_none=True)
    scaler.update()  # closes this step's unscale_ (fp16); a no-op otherwise


def _check_nonfinite_streak(state: LoopState, cfg_trainer) -> None:
    """Too many NaN/inf steps in a row: the run diverged, stop it. A finite loss can still have a
    NaN gradient (e.g. an infinite derivative), so the gradient norm counts too."""
    if state.nonfinite_streak >= cfg_trainer.max_nonfinite_steps:
        raise NonFiniteLoss(
            f"the training loss or gradient norm was NaN/inf for {state.nonfinite_streak} optimiser "
            f"steps in a row (after step {state.step}); lower schedule.lr, or use trainer.precision=fp32"
        )


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
