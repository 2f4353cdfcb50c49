"""Classification losses selected by the `loss` config group (conf/loss/*.yaml).

Every loss is called as ``loss_fn(logits [B, 2] float, labels [B] long) -> scalar`` and is an
``nn.Module`` whose per-class tensors are buffers, so ``loss_fn.to(device)`` moves them along.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig
from torch import nn

from lib.errors import ConfigError, require_keys

# The task is binary: class 0 = wrongly extracted title, class 1 = correct title.
NUM_CLASSES = 2
LOSS_NAMES = ("ce", "weighted_ce", "focal")
# The keys each option's YAML (conf/loss/<name>.yaml) sets: the only place their defaults live.
LOSS_KEYS = {
    "ce": ("label_smoothing",),
    "weighted_ce": ("class_weights", "label_smoothing"),
    "focal": ("alpha", "gamma", "balanced_alpha"),
}


def build_loss(cfg_loss: DictConfig) -> nn.Module:
    """Build the loss named by ``cfg_loss.name`` (one of LOSS_NAMES)."""
    name = cfg_loss.get("name")
    if name in LOSS_KEYS:
        require_keys(cfg_loss, "loss", LOSS_KEYS[name])
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=_label_smoothing(cfg_loss))
    if name == "weighted_ce":
        weights = _per_class(cfg_loss.class_weights, "loss.class_weights")
        # CrossEntropyLoss keeps `weight` as a buffer; 'mean' divides by the summed weights of
        # the batch's targets, i.e. a weighted mean.
        return nn.CrossEntropyLoss(weight=weights, label_smoothing=_label_smoothing(cfg_loss))
    if name == "focal":
        return FocalLoss(alpha=cfg_loss.alpha, gamma=cfg_loss.gamma, balanced=cfg_loss.balanced_alpha)
    raise ConfigError(f"loss.name={name!r} is unknown; valid names: {', '.join(LOSS_NAMES)}")


class FocalLoss(nn.Module):
    """FL = alpha_t * (1 - p_t)^gamma * CE, averaged over the batch (Lin et al., 2017).

    ``alpha`` is a scalar or a per-class sequence ``[alpha_wrong, alpha_correct]``. A scalar is
    the same factor for both classes (the original experiment's meaning): it only rescales the
    loss, which AdamW all but cancels. ``balanced=True`` gives Lin et al.'s class-balanced form
    instead: ``alpha`` for class 1 (correct title), ``1 - alpha`` for class 0.
    """

    alpha: torch.Tensor

    def __init__(self, alpha: float | Sequence[float] = 0.25, gamma: float = 2.0, balanced: bool = False) -> None:
        super().__init__()
        gamma = _number(gamma, "loss.gamma")
        if gamma < 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        if not isinstance(balanced, bool):
            raise ConfigError(f"loss.balanced_alpha must be true or false, got {balanced!r}")
        is_list = isinstance(alpha, (Sequence, ListConfig)) and not isinstance(alpha, str)
        if balanced:
            if is_list or not 0 < _number(alpha, "loss.alpha") < 1:
                raise ConfigError(f"loss.balanced_alpha=true needs a scalar loss.alpha in (0, 1), got {alpha!r}")
            per_class = _per_class([1.0 - alpha, alpha], "loss.alpha")
        elif is_list:
            per_class = _per_class(alpha, "loss.alpha")
        else:
            per_class = _per_class([alpha] * NUM_CLASSES, "loss.alpha")
        # A buffer, so .to(device) moves it and indexing by labels needs no transfer.
        self.register_buffer("alpha", per_class)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # At least float32, and log_softmax: under fp16/bf16 autocast softmax-then-log underflows
        # to -inf for confident predictions and (1 - p_t)^gamma loses all precision.
        log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        log_p_t = log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        # 1 - p_t without cancellation, kept off 0: d/dx x^gamma is infinite at x = 0 for
        # gamma < 1, and one confidently right example would turn every gradient into NaN.
        # Below the clamp the factor's gradient is 0 (exact to float precision: CE is ~0 there).
        one_minus_p_t = (-torch.expm1(log_p_t)).clamp(min=torch.finfo(log_p.dtype).tiny)
        alpha_t = self.alpha.to(log_p.dtype)[labels]
        # x ** 0 is 1, so gamma = 0 reduces exactly to alpha * CE.
        return (alpha_t * one_minus_p_t.pow(self.gamma) * -log_p_t).mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.tolist()}, gamma={self.gamma}"


def _label_smoothing(cfg_loss: DictConfig) -> float:
    value = _number(cfg_loss.label_smoothing, "loss.label_smoothing")
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {value}")
    return value


def _per_class(values, field: str) -> torch.Tensor:
    """A positive, finite value per class as a float32 tensor."""
    if not isinstance(values, (Sequence, ListConfig)) or isinstance(values, str):
        raise ConfigError(f"{field} must be a list of {NUM_CLASSES} numbers, got {values!r}")
    numbers = [_number(v, field) for v in values]
    if len(numbers) != NUM_CLASSES or not all(v > 0 for v in numbers):
        raise ConfigError(f"{field} must be {NUM_CLASSES} positive numbers [wrong, correct], got {list(values)}")
    return torch.tensor(numbers, dtype=torch.float32)


def _number(value, field: str) -> float:
    # bool is an int subclass; `alpha: true` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field} must be a finite number, got {value!r}")
    return float(value)
