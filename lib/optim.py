"""AdamW with layer-wise learning rates, and warm-up + decay schedules (the `schedule` group).

Learning rate per parameter (L = number of encoder layers, d = layer_decay):

* encoder layer i (``encoder.layer.<i>.``): lr * d^(L - 1 - i), so the top layer gets lr;
* everything else inside the base model (word/position embeddings, and the parts that feed every
  layer, e.g. DeBERTa's ``encoder.rel_embeddings`` and ``encoder.LayerNorm``): lr * d^L;
* the classification head (every parameter outside ``model.base_model_prefix``, plus the
  pooler): lr * head_lr_mult.

Architectures without ``encoder.layer.<i>.`` parameters fall back to two body groups, with a
warning: "embeddings" (names containing 'embed') at lr * d^L and "other" at lr.
Biases and LayerNorm weights (1-D, or named bias / LayerNorm / layer_norm) get no weight decay.
"""

from __future__ import annotations

import logging
import math
import re

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lib.errors import ConfigError, require_keys

log = logging.getLogger(__name__)

SCHEDULE_NAMES = ("linear", "cosine", "constant")
# The keys conf/schedule/linear.yaml sets (cosine and constant extend it): their defaults live there only.
SCHEDULE_KEYS = ("lr", "weight_decay", "warmup_ratio", "warmup_steps", "layer_decay", "head_lr_mult")
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")
_NO_DECAY_MARKERS = ("bias", "LayerNorm", "layer_norm")
FUSED_DEVICES = {"cpu", "cuda"}  # where torch's fused AdamW kernel exists


def build_optimizer(cfg_schedule: DictConfig, model: nn.Module, beside: nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW over ``build_param_groups``; fused (one kernel for all parameters) when every
    parameter is on one CPU or CUDA device: 1.17x the training samples/s of the default on the
    2-core CPU (BENCHMARKS.md), same update rule. ``beside``'s trainable parameters (the loss's:
    distillation's layer maps) form one more group, "beside", at the head's rate: new weights, like the head's,
    trained with the model but not part of it."""
    groups = build_param_groups(cfg_schedule, model)
    extra = [p for p in beside.parameters() if p.requires_grad] if beside is not None else []
    if extra:
        rate = float(cfg_schedule.lr) * float(cfg_schedule.head_lr_mult)
        groups.append({"params": extra, "lr": rate, "weight_decay": float(cfg_schedule.weight_decay), "name": "beside"})
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    fused = len(devices) == 1 and devices <= FUSED_DEVICES
    return torch.optim.AdamW(groups, lr=float(cfg_schedule.lr), fused=fused or None)


def build_param_groups(cfg_schedule: DictConfig, model: nn.Module) -> list[dict]:
    """Parameter groups with keys params, lr, weight_decay and name ("layer_3/decay", ...).

    Every trainable parameter lands in exactly one group; frozen parameters in none.
    """
    _validate(cfg_schedule)
    # A torch.compile wrapper prefixes every name with `_orig_mod.`: group by the real module's names.
    model = getattr(model, "_orig_mod", model)
    lr = float(cfg_schedule.lr)
    weight_decay = float(cfg_schedule.weight_decay)
    layer_decay = float(cfg_schedule.layer_decay)
    head_lr_mult = float(cfg_schedule.head_lr_mult)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    placement = _place(model, [n for n, _ in named], layer_decay)

    groups: dict[str, dict] = {}
    for name, param in named:
        block, depth = placement[name]
        # depth = how many layer_decay factors apply; None marks the head.
        scale = head_lr_mult if depth is None else layer_decay**depth
        decay = param.ndim > 1 and not any(m in name for m in _NO_DECAY_MARKERS)
        key = f"{block}/{'decay' if decay else 'no_decay'}"
        group = groups.setdefault(
            key, {"params": [], "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0, "name": key}
        )
        group["params"].append(param)

    ordered = [groups[k] for k in sorted(groups, key=_group_order)]
    _check_partition(ordered, [p for _, p in named])
    return ordered


def build_scheduler(cfg_schedule: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    """Linear warm-up from 0, then linear decay to 0, cosine decay to 0, or constant.

    Call ``scheduler.step()`` once per optimiser step; after ``total_steps`` steps the decaying
    schedules reach 0.
    """
    _validate(cfg_schedule)
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total optimiser steps must be a positive integer, got {total_steps!r}")
    warmup = _warmup_steps(cfg_schedule, total_steps)
    return LambdaLR(optimizer, WarmupThenDecay(cfg_schedule.name, warmup, total_steps))


class WarmupThenDecay:
    """lr multiplier at step s. A callable object rather than a closure, so that
    ``LambdaLR.state_dict()`` saves its settings with a checkpoint."""

    def __init__(self, kind: str, warmup_steps: int, total_steps: int) -> None:
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _place(model: nn.Module, names: list[str], layer_decay: float) -> dict[str, tuple]:
    """Map each parameter name to (block name, number of layer_decay factors or None = head)."""
    prefix = getattr(model, "base_model_prefix", "")
    # A bare base model (e.g. BertModel) has no submodule named by its own prefix.
    has_base = bool(prefix) and isinstance(getattr(model, prefix, None), nn.Module)

    def body_name(name: str) -> str | None:
        """Name relative to the base model, or None for head parameters."""
        if has_base:
            if not name.startswith(prefix + "."):
                return None
            name = name[len(prefix) + 1 :]
        return None if name.startswith("pooler.") else name

    relative = {n: body_name(n) for n in names}
    layers = {n: int(m.group(1)) for n, r in relative.items() if r and (m := _LAYER.match(r))}
    num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if layers:
        num_layers = num_layers or max(layers.values()) + 1
        if max(layers.values()) >= num_layers:
            raise ValueError(
                f"parameter of encoder layer {max(layers.values())} but config.num_hidden_layers={num_layers}"
            )
    elif any(r is not None for r in relative.values()) and layer_decay != 1.0:
        log.warning(
            "layer-wise lr decay: no 'encoder.layer.<i>.' parameters in %s; using "
            "'embeddings' (lr * layer_decay^L) and 'other' (lr) groups only",
            type(model).__name__,
        )
    num_layers = num_layers or 1

    placement = {}
    for name, rel in relative.items():
        if rel is None:
            placement[name] = ("head", None)
        elif name in layers:
            placement[name] = (f"layer_{layers[name]}", num_layers - 1 - layers[name])
        elif layers or "embed" in rel:
            # With known layers, every non-layer body parameter feeds all layers: embedding rate.
            placement[name] = ("embeddings", num_layers)
        else:
            placement[name] = ("other", 0)
    return placement


def _group_order(key: str) -> tuple:
    # Bottom-up, as the network runs: embeddings, layer_0 .. layer_{L-1}, other, head.
    block, kind = key.split("/")
    rank = {"embeddings": (0, 0), "other": (2, 0), "head": (3, 0)}
    if block.startswith("layer_"):
        return (1, int(block[len("layer_") :]), kind)
    return (*rank[block], kind)


def _check_partition(groups: list[dict], params: list[nn.Parameter]) -> None:
    seen = [id(p) for g in groups for p in g["params"]]
    if len(seen) != len(set(seen)) or set(seen) != {id(p) for p in params}:
        raise AssertionError("parameter groups must hold every trainable parameter exactly once")


def _warmup_steps(cfg_schedule: DictConfig, total_steps: int) -> int:
    steps = cfg_schedule.warmup_steps
    if steps is None:
        return math.ceil(float(cfg_schedule.warmup_ratio) * total_steps)
    if steps > total_steps:
        # Short smoke runs (trainer.max_steps) with the original 500 warm-up steps.
        log.warning("schedule.warmup_steps=%d > %d total steps; warming up over all steps", steps, total_steps)
        return total_steps
    return steps


def _validate(cfg: DictConfig) -> None:
    name = cfg.get("name")
    if name not in SCHEDULE_NAMES:
        raise ConfigError(f"schedule.name={name!r} is unknown; valid names: {', '.join(SCHEDULE_NAMES)}")
    require_keys(cfg, "schedule", SCHEDULE_KEYS)
    checks = [
        ("lr", cfg.lr, lambda v: v > 0, "> 0"),
        ("weight_decay", cfg.weight_decay, lambda v: v >= 0, ">= 0"),
        ("layer_decay", cfg.layer_decay, lambda v: 0 < v <= 1, "in (0, 1]"),
        ("head_lr_mult", cfg.head_lr_mult, lambda v: v > 0, "> 0"),
        ("warmup_ratio", cfg.warmup_ratio, lambda v: 0 <= v <= 1, "in [0, 1]"),
    ]
    for field, value, ok, expected in checks:
        if not _is_number(value) or not ok(value):
            raise ConfigError(f"schedule.{field} must be a number {expected}, got {value!r}")
    steps = cfg.warmup_steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ConfigError(f"schedule.warmup_steps must be null or an integer >= 0, got {steps!r}")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
