"""Group lasso by its proximal operator: whole neurons and channels go to exactly zero.

A group is one output unit: a Linear row ``W[j, :]`` or a Conv filter ``W[j, :, :, :]``.
The penalty ``lam * sum_g s_g * ||w_g||_2`` has the block soft-threshold as its prox:

    prox(w_g) = max(0, 1 - t_g / ||w_g||_2) * w_g        t_g = t * s_g

so a group whose norm is <= t_g lands on exactly 0.0 as a whole, and a surviving group is
shrunk towards zero without changing direction. ``s_g = 1`` by default; ``size_scaled=True``
uses ``s_g = sqrt(p_g)`` (``p_g`` = weights per group, Yuan & Lin 2006) so that layers of
different fan-in are penalised per weight alike. It is off by default because PyTorch's
default init already makes row norms roughly fan-in independent (``U(+-1/sqrt(fan_in))``
gives ``||w_g|| ~ 1/sqrt(3)``): one ``lam`` then means the same for every layer, whereas
``sqrt(784)/sqrt(100)`` ~ 2.8x heavier thresholds on LeNet's first layer would empty it first.

Thresholds follow :class:`~sparsify.penalties.prox.L1Prox`: ``threshold="lambda"`` uses
``t = lam`` per step, ``"lr_lambda"`` uses ``t = lr * lam`` (proximal gradient).

Sparse-group lasso (L1 + group, Simon, Friedman, Hastie & Tibshirani 2013) is applied as
``group_prox(soft_threshold(w, t_l1), t)``. That composition *is* the prox of the sum: the
L1 prox is separable and sign-preserving inside a group and the group prox is a
non-negative radial rescaling of the group, so the two commute in the sense of Yu,
"On decomposing the proximal map" (NeurIPS 2013), Thm. 1 / Friedman et al. 2010, "A note
on the group lasso and a sparse group lasso", eq. (6). The order (L1 first) matters.

Only tensors of rank >= 2 have groups; a selected bias (rank 1) is refused with a message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparsify.errors import SparsifyError, check_nonnegative
from sparsify.penalties.base import PenaltyConfig, register
from sparsify.penalties.prox import soft_threshold_


def group_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of every output unit: ``||w[j, ...]||_2`` for each ``j``, shape ``(out,)``.

    Computed in float32 at least, so half-precision weights do not overflow the square sum.
    """
    dtype = torch.promote_types(w.dtype, torch.float32)
    return torch.linalg.vector_norm(w.detach().reshape(w.shape[0], -1), dim=1, dtype=dtype)


def group_threshold(w: torch.Tensor, t: float) -> torch.Tensor:
    """Reference (out of place): ``max(0, 1 - t / ||w_g||_2) * w_g`` per output unit ``g``.

    Groups of norm 0 stay 0 (the factor is defined as 0 there, not NaN); zeroed groups are +0.0.
    """
    rows = w.reshape(w.shape[0], -1)  # (out, in*kh*kw)
    norms = group_norms(w)
    factor = (1 - t / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp_min(0)
    out = rows * factor.to(w.dtype).unsqueeze(1)
    return out.masked_fill_((factor == 0).unsqueeze(1), 0.0).reshape(w.shape)  # +0.0, not -0.0


def _check_rank(tensors: Sequence[torch.Tensor], owner: str) -> None:
    for w in tensors:
        if w.dim() < 2:
            raise SparsifyError(
                f"{owner} needs weight tensors of rank >= 2 (rows/filters are its groups); got a "
                f"tensor of shape {tuple(w.shape)} (a bias?); keep scope 'prunable' or exclude it."
            )


@torch.no_grad()
def group_threshold_(tensors: Sequence[torch.Tensor], t: float, size_scaled: bool = False) -> None:
    """In place on every tensor: ``w_g <- max(0, 1 - t_g / ||w_g||_2) * w_g`` per output unit.

    ``t_g = t * sqrt(p_g)`` when ``size_scaled`` (``p_g`` = numel of one row/filter), else
    ``t_g = t``. One norm and one multiply per tensor (vectorised over groups); zeroed
    groups are written as +0.0 (never -0.0), like :func:`soft_threshold_`.

    Raises:
        SparsifyError: a tensor of rank < 2 (it has no groups).
    """
    _check_rank(tensors, "group-lasso prox")
    if t == 0:
        return
    for w in tensors:
        if not w.is_contiguous():  # e.g. channels_last: no flat row view, so copy back
            w.copy_(group_threshold(w, t * math.sqrt(w[0].numel()) if size_scaled else t))
            continue
        rows = w.view(w.shape[0], -1)  # (out, in*kh*kw)
        t_g = t * math.sqrt(rows.shape[1]) if size_scaled else t
        norms = group_norms(rows)
        factor = (1 - t_g / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp_min(0)
        rows.mul_(factor.to(w.dtype).unsqueeze(1))
        rows.masked_fill_((factor == 0).unsqueeze(1), 0.0)  # -w * 0 is -0.0: write +0.0


def _group_value(params: Sequence[torch.Tensor], lam: float, size_scaled: bool) -> torch.Tensor:
    total = torch.zeros(())
    for w in params:
        scale = math.sqrt(w[0].numel()) if size_scaled else 1.0
        total = total + scale * group_norms(w).sum().cpu()
    return lam * total


@register
@dataclass(frozen=True)
class GroupLassoProx(PenaltyConfig):
    """Group lasso ``lam * sum_g s_g ||w_g||_2`` over output units, by its prox after each step.

    Attributes:
        threshold: "lambda" (t = lam) or "lr_lambda" (t = lr * lam).
        size_scaled: scale each group's threshold by sqrt(weights per group); default off.
    """

    threshold: str = "lambda"
    size_scaled: bool = False
    kind = "group_lasso_prox"
    when = "post"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope != "prunable":
            raise SparsifyError(
                f"The 'scope' parameter of {type(self).__name__} must be 'prunable' (biases have "
                f"no groups). Got {self.scope!r} instead."
            )
        if not isinstance(self.size_scaled, bool):
            raise SparsifyError(
                f"The 'size_scaled' parameter of {type(self).__name__} must be a bool. "
                f"Got {self.size_scaled!r} instead."
            )

    def validate_selection(self, selected: Sequence[Any]) -> None:
        """Refuse selected parameters of rank < 2, naming them (for ``penalize_`` to call)."""
        bad = [s.name for s in selected if s.param.dim() < 2]
        if bad:
            raise SparsifyError(
                f"{type(self).__name__} selects {', '.join(bad)}, of rank < 2 (no rows to group); "
                "exclude them or use a filter_fn that picks Linear/Conv layers."
            )

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        group_threshold_(params, coeff, self.size_scaled)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        return _group_value(params, lam, self.size_scaled)


@register
@dataclass(frozen=True)
class SparseGroupLassoProx(GroupLassoProx):
    """Sparse-group lasso ``lam_l1 ||w||_1 + lam sum_g s_g ||w_g||_2``, by its exact prox.

    Each step: soft-threshold with ``t_l1``, then the group step with ``t``. With per-pattern
    ``groups`` lambdas both terms scale together: ``t_l1 = t * lam_l1 / lam``.

    Attributes:
        lam_l1: strength of the L1 term, a float in [0, inf); ``lam`` (group term) must be > 0.
    """

    lam_l1: float = 0.0
    kind = "sparse_group_lasso_prox"

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        object.__setattr__(self, "lam_l1", check_nonnegative(name, "lam_l1", self.lam_l1))
        if self.lam == 0 and self.lam_l1 > 0:
            raise SparsifyError(
                f"The 'lam' parameter of {name} must be > 0 when lam_l1 > 0 (lambdas are "
                "relative to it); for L1 alone use kind 'l1_prox'."
            )

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        _check_rank(params, "sparse-group-lasso prox")
        if self.lam > 0:
            soft_threshold_(params, coeff * self.lam_l1 / self.lam)  # L1 first: exact (see module)
        group_threshold_(params, coeff, self.size_scaled)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        l1 = lam * self.lam_l1 / self.lam if self.lam > 0 else 0.0
        return _group_value(params, lam, self.size_scaled) + l1 * sum(
            p.detach().abs().sum().cpu() for p in params
        )
