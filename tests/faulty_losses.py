"""Cross-entropy that goes wrong on chosen calls, to drive the training loop's non-finite guard."""

import torch


class FaultyLoss(torch.nn.Module):
    """Cross-entropy, spoiled by ``spoil(loss, logits)`` on the calls listed in ``bad`` (1-based)."""

    def __init__(self, bad, spoil):
        super().__init__()
        self.bad, self.spoil, self.calls = set(bad), spoil, 0

    def forward(self, logits, labels):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return self.spoil(loss, logits) if self.calls in self.bad else loss


def nan_loss(bad) -> FaultyLoss:
    """A NaN loss on the listed calls."""
    return FaultyLoss(bad, lambda loss, logits: loss * float("nan"))


def nan_gradient_loss(bad) -> FaultyLoss:
    """A finite loss with a NaN gradient on the listed calls: d/dx |x|^0.5 at x = 0 (+ 0 to the
    value), the failure of focal loss with 0 < gamma < 1 before it was fixed."""
    return FaultyLoss(bad, lambda loss, logits: loss + (logits - logits.detach()).abs().pow(0.5).sum())
