"""L2 two ways: coupled in the loss (the lecture's) and decoupled weight decay.

Coupled:    loss += lam * sum(w^2)   <=>   g <- g + 2 * lam * w   before the step.
            Done on the gradient, so it is exact for any optimizer and costs no extra
            autograd graph. With plain SGD this equals ``SGD(weight_decay=2 * lam)``.
Decoupled:  w <- (1 - t) * w after the step, t = lam ("lambda") or lr * lam ("lr_lambda").
            With SGD without momentum, "lr_lambda" equals ``SGD(weight_decay=lam)``; with Adam it
            is AdamW's decay, which is *not* the coupled penalty (Adam rescales gradients).
Neither puts a weight exactly at zero: d/dw of w^2 vanishes at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparsify.penalties.base import PenaltyConfig, add_to_grads_, register


def l2_penalty(params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
    """``lam * sum_i ||w_i||_2^2``, differentiable, for adding to a loss by hand."""
    return lam * sum((p * p).sum() for p in params)


@register
@dataclass(frozen=True)
class L2Coupled(PenaltyConfig):
    """``lam * ||w||_2^2`` in the loss, applied as ``g += 2 * lam * w`` before each step."""

    kind = "l2_coupled"
    when = "pre"

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        add_to_grads_(params, lambda live: live, 2.0 * coeff)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        return l2_penalty([p.detach() for p in params], lam)


@register
@dataclass(frozen=True)
class WeightDecay(PenaltyConfig):
    """Decoupled decay ``w <- (1 - t) * w`` after each step.

    Attributes:
        threshold: "lambda" (t = lam) or "lr_lambda" (t = lr * lam).
    """

    threshold: str = "lr_lambda"
    kind = "weight_decay"
    when = "post"

    @torch.no_grad()
    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        if params and coeff:
            torch._foreach_mul_(list(params), 1.0 - coeff)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        return l2_penalty([p.detach() for p in params], lam)
