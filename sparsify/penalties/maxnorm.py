"""Max-norm: cap the L2 norm of each unit's incoming or outgoing weights after every step.

For a weight ``W`` of shape ``(out, in)`` (a Conv's ``(out, in, kh, kw)``) the projection
onto ``{W : ||W[g]||_2 <= r for every group g}`` is

    P(W)[g] = W[g] * min(1, r / ||W[g]||_2)

with the groups either the rows ``W[o]`` (``per="out"``: each output unit's fan-in) or the
columns ``W[:, i]`` (``per="in"``: the fan-out of input unit ``i``, i.e. of the previous
layer's unit ``i``). It rescales and never zeroes, so it composes with an L1 prox.

Why it is here: an L1 penalty on two layers joined by a ReLU can be dodged by rescaling,
since ``b * relu(a . x) = (b c) * relu((a / c) . x)`` for any ``c > 0``. Shrinking a unit's
fan-in and growing its fan-out lowers ``|a|_1 + |b|_1`` to ``2 sqrt(|a|_1 |b|_1)``, so L1 on
both acts like a penalty on whole units and keeps few of them (LeNet-300-100 at 95% zeros
keeps 37-38 of 300 fc1 units under prox L1, 232-248 under magnitude pruning:
``results/compare/units_alive.txt``). Capping the fan-out (``per="in"`` on the next layer)
removes the free direction of that trade.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparsify.errors import SparsifyError
from sparsify.penalties.base import PenaltyConfig, register

PER = ("in", "out")


def group_norms(w: torch.Tensor, per: str) -> torch.Tensor:
    """L2 norms of ``w``'s rows (``per="out"``: one per output unit) or of its columns
    (``per="in"``: one per input unit, over outputs and kernel positions)."""
    if w.dim() < 2:
        raise SparsifyError(
            f"max-norm needs a weight of rank >= 2; got shape {tuple(w.shape)} (a bias?); "
            "keep scope 'prunable' or exclude it."
        )
    dims = tuple(d for d in range(w.dim()) if d != (0 if per == "out" else 1))
    return torch.linalg.vector_norm(w, dim=dims)


@torch.no_grad()
def max_norm_(tensors: Sequence[torch.Tensor], radius: float, per: str = "in") -> None:
    """In place: ``W[g] *= min(1, radius / ||W[g]||_2)`` for every group (see module doc)."""
    for w in tensors:
        scale = (radius / group_norms(w, per).clamp_min(1e-30)).clamp_max(1.0)
        shape = [1] * w.dim()
        shape[0 if per == "out" else 1] = -1
        w.mul_(scale.view(shape))


@register
@dataclass(frozen=True)
class MaxNorm(PenaltyConfig):
    """Project the selected weights onto the max-norm ball after every optimizer step.

    ``lam`` has no strength here (a projection is not scaled); it switches the hook on per
    parameter, as for :class:`~sparsify.penalties.NMProjection`, so it defaults to 1.0.

    Attributes:
        radius: the cap r > 0 on each group's L2 norm.
        per: "in" caps each input unit's outgoing weights (columns), "out" each output
            unit's incoming weights (rows).
    """

    lam: float = 1.0
    radius: float = 1.0
    per: str = "in"
    kind = "max_norm"
    when = "post"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.radius, bool) or not isinstance(self.radius, (int, float)):
            raise SparsifyError(f"MaxNorm: radius must be a number > 0; got {self.radius!r}.")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise SparsifyError(f"MaxNorm: radius must be finite and > 0; got {self.radius}.")
        if self.per not in PER:
            raise SparsifyError(
                f"The 'per' parameter of MaxNorm must be one of 'in', 'out'. Got {self.per!r} instead."
            )
        if self.scope != "prunable":
            raise SparsifyError(
                f"The 'scope' parameter of MaxNorm must be 'prunable' (a bias has no units to "
                f"cap). Got {self.scope!r} instead."
            )

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        if coeff > 0:
            max_norm_(params, self.radius, self.per)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        """Total excess norm ``sum_g max(0, ||W[g]|| - r)`` (0 right after a projection)."""
        out = torch.zeros(())
        for p in params:
            out = out + (group_norms(p.detach(), self.per) - self.radius).clamp_min(0).sum().cpu()
        return out
