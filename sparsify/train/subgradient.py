"""L1 by subgradient, kept as a baseline: ``g <- g + lam * sign(w)`` before each step.

It minimises the same objective as :class:`~sparsify.train.prox.L1Prox` but overshoots:
a weight near zero jumps from one side to the other and almost never lands on 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparsify.train.config import PenaltyConfig, register


@register
@dataclass(frozen=True)
class L1Subgradient(PenaltyConfig):
    """``lam * ||w||_1`` through its subgradient ``lam * sign(w)`` added to the gradient."""

    kind = "l1_subgradient"
    when = "pre"

    @torch.no_grad()
    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        live = [p for p in params if p.grad is not None]
        if live and coeff:
            torch._foreach_add_([p.grad for p in live], torch._foreach_sign(live), alpha=coeff)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        return lam * sum(p.detach().abs().sum() for p in params)
