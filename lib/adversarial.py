"""Adversarial training on the word-embedding matrix (the `adversarial` config group).

Protocol used by the training loop, right after the clean ``backward()``::

    adv_loss = adversary.attack(forward_backward)

``forward_backward(weight=None)`` runs the forward pass on the current batch, computes the
(accumulation- and grad-scaler-scaled) loss, times ``weight`` when given, calls ``backward()`` on
it and returns the detached loss. On return the embeddings hold their exact clean values and every
parameter's ``.grad`` holds the clean gradient plus one adversarial gradient. The perturbation
direction is g / ||g||, which does not depend on a GradScaler's scale factor.

When g has no direction (||g|| is 0, inf or NaN) there is nothing to add. On the CPU the attack
then returns None at once. On a GPU, where that test would make the host wait for the device at
every step (lib.device.host_reads_are_free), the attack runs with a zero perturbation and
``weight`` 0, so it adds nothing, and the host never reads a value back.

The gradient read is the embedding matrix's accumulated ``.grad``: with gradient accumulation it
also contains the earlier micro-batches' gradients, which only changes the direction of the
perturbation, not its size.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from lib import device as device_helpers
from lib.errors import ConfigError, require_keys

ADVERSARY_NAMES = ("none", "fgm", "pgd")
ADVERSARY_KEYS = {"none": (), "fgm": ("epsilon",), "pgd": ("epsilon", "step_size", "steps")}  # conf/adversarial/*.yaml
ForwardBackward = Callable[..., torch.Tensor]  # (weight: torch.Tensor | None = None) -> detached loss


def build_adversary(cfg_adv: DictConfig, model: nn.Module) -> Adversary | None:
    """The adversary named by ``cfg_adv.name``, or None for ``none``."""
    name = cfg_adv.get("name")
    if name in ADVERSARY_KEYS:
        require_keys(cfg_adv, "adversarial", ADVERSARY_KEYS[name])
    if name == "none":
        return None
    if name == "fgm":
        return FGM(model, epsilon=cfg_adv.epsilon)
    if name == "pgd":
        return PGD(
            model,
            epsilon=cfg_adv.epsilon,
            step_size=cfg_adv.step_size,
            steps=cfg_adv.steps,
        )
    raise ConfigError(f"adversarial.name={name!r} is unknown; valid names: {', '.join(ADVERSARY_NAMES)}")


def word_embedding_weight(model: nn.Module) -> nn.Parameter:
    """The word-embedding matrix, found through the transformers API rather than an attribute
    path, so the same code covers BERT, RoBERTa and DeBERTa-v2."""
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None:
        raise ConfigError(
            f"adversarial training needs a model with get_input_embeddings(); {type(model).__name__} has none"
        )
    weight = getter().weight
    if not weight.requires_grad:
        raise ConfigError(
            "adversarial training perturbs the word embeddings, which are frozen: set "
            "model.freeze_word_embeddings=false or adversarial=none"
        )
    return weight


class Adversary(ABC):
    """Perturbs the word embeddings, accumulates an adversarial gradient, restores them."""

    name: str

    def __init__(self, model: nn.Module, epsilon: float) -> None:
        self.model = model
        self.weight = word_embedding_weight(model)
        self.epsilon = _positive(epsilon, "adversarial.epsilon")

    @abstractmethod
    def attack(self, forward_backward: ForwardBackward) -> torch.Tensor | None:
        """Run the attack; the adversarial loss, or None when the gradient gave no direction."""

    def _unit_gradient(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(g / ||g||, weight) of the embedding matrix, weight None on the CPU and 1.0 on a GPU; when the
        norm is 0, inf or NaN (e.g. an fp16 overflow that the GradScaler is about to skip anyway) None
        on the CPU, and (zeros, 0.0) on a GPU, decided there (see the module docstring)."""
        grad = self.weight.grad
        if grad is None:
            return None
        grad = grad.float()
        norm = grad.norm()
        usable = torch.isfinite(norm) & (norm > 0)
        if device_helpers.host_reads_are_free(grad.device):
            return (grad / norm, None) if usable else None
        return torch.where(usable, grad / norm, 0.0), usable.float()


class FGM(Adversary):
    """Fast Gradient Method: one step r = epsilon * g / ||g||."""

    name = "fgm"

    def attack(self, forward_backward: ForwardBackward) -> torch.Tensor | None:
        unit = self._unit_gradient()
        if unit is None:
            return None
        direction, weight = unit
        backup = self.weight.detach().clone()
        with torch.no_grad():
            self.weight.add_((self.epsilon * direction).to(self.weight.dtype))
        try:
            # The adversarial gradient accumulates onto the clean one already in .grad.
            return forward_backward(weight)
        finally:
            # Copy the backup back (not subtract r): subtraction would not be bit-exact.
            with torch.no_grad():
                self.weight.copy_(backup)


class PGD(Adversary):
    """K ascent steps of size ``step_size`` along g / ||g||, each projected onto the L2 ball of
    radius ``epsilon`` (over the whole matrix) around the clean embeddings. Intermediate steps
    only steer the perturbation: their gradients are discarded, and the last step's gradient is
    added onto the clean gradients."""

    name = "pgd"

    def __init__(self, model: nn.Module, epsilon: float, step_size: float, steps: int) -> None:
        super().__init__(model, epsilon)
        self.step_size = _positive(step_size, "adversarial.step_size")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"adversarial.steps must be an integer >= 1, got {steps!r}")
        self.steps = steps
        self.params = [p for p in model.parameters() if p.requires_grad]

    def attack(self, forward_backward: ForwardBackward) -> torch.Tensor | None:
        unit = self._unit_gradient()
        if unit is None:
            return None
        direction, weight = unit
        clean_grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        original = self.weight.detach().clone()
        try:
            for _ in range(self.steps - 1):
                self._ascend(direction, original)
                # This pass only steers the next step: its gradient must not reach the update.
                self._zero_grads()
                forward_backward()
                unit = self._unit_gradient()
                if unit is None:
                    break  # no usable direction here: finish from the current point
                direction = unit[0]  # (CUDA: zeros when unusable, so the point stays where it is)
            else:
                self._ascend(direction, original)
            # The last pass adds its adversarial gradient onto the clean one.
            self._restore_grads(clean_grads)
            return forward_backward(weight)
        except BaseException:
            # A failed attack must not leave intermediate gradients behind.
            self._restore_grads(clean_grads)
            raise
        finally:
            with torch.no_grad():
                self.weight.copy_(original)

    def _ascend(self, direction: torch.Tensor, original: torch.Tensor) -> None:
        with torch.no_grad():
            delta = self.weight.float() - original.float() + self.step_size * direction
            norm = delta.norm()
            # Project back onto the epsilon ball; clamp(min=1) leaves an inside point unchanged.
            delta = delta / torch.clamp(norm / self.epsilon, min=1.0)
            self.weight.copy_((original.float() + delta).to(self.weight.dtype))

    def _zero_grads(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def _restore_grads(self, clean_grads: list[torch.Tensor | None]) -> None:
        for p, clean in zip(self.params, clean_grads):
            if clean is None:
                p.grad = None
            elif p.grad is None:
                p.grad = clean.clone()
            else:
                # copy_ keeps the same .grad tensor (it may be a DDP bucket view).
                p.grad.copy_(clean)


def _positive(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{field} must be a positive number, got {value!r}")
    return float(value)
