"""L1 by subgradient, kept as a baseline: ``g <- g + lam * sign(w)`` before each step.

It minimises the same objective as :class:`~sparsify.penalties.prox.L1Prox` but overshoots:
a weight near zero jumps from one side to the other and almost never lands on 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparsify.penalties.base import PenaltyConfig, add_to_grads_, register


@register
@dataclass(frozen=True)
class L1Subgradient(PenaltyConfig):
    """``lam * ||w||_1`` through its subgradient ``lam * sign(w)`` added to the gradient."""

    kind = "l1_subgradient"
    when = "pre"

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        add_to_grads_(params, torch._foreach_sign, coeff)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        return lam * sum(p.detach().abs().sum() for p in params)
