"""N:M structured sparsity (2:4 by default): at most N nonzeros in every M consecutive weights.

The groups run along the *input* dimension, the one a GPU's sparse tensor cores reduce
over: a Linear weight ``(out, in)`` is cut into ``(out, in / M, M)``; a Conv weight
``(out, in, kh, kw)`` is flattened to ``(out, in*kh*kw)`` first (the im2col order). The
projection keeps the N largest magnitudes of each group and writes +0.0 elsewhere:

    P(w)[g] = w[g] * 1{ |w_i| among the N largest of |w[g]| }

It is the Euclidean projection onto the N:M set (nonconvex: ties are broken by
``torch.topk``, deterministic for a given input). Use it alone as a post-step hook
(``NMProjection`` via ``penalize_``) or after an L1 prox: post-step hooks run in the order
they were registered, so attach ``L1Prox`` first and ``NMProjection`` second.

This module is the training side only. Turning 2:4 weights into torch's semi-structured
tensors for inference (one shape rule, torch's own) is :mod:`sparsify.accel.semi_structured`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparsify.errors import SparsifyError
from sparsify.penalties.base import PenaltyConfig, register


def _check_nm(n: int, m: int) -> None:
    if (
        isinstance(n, bool)
        or isinstance(m, bool)
        or not isinstance(n, int)
        or not isinstance(m, int)
    ):
        raise SparsifyError(f"N:M sparsity needs integers n and m; got n={n!r}, m={m!r}.")
    if not 1 <= n <= m:
        raise SparsifyError(f"N:M sparsity needs 1 <= n <= m; got n={n}, m={m} (2:4 is n=2, m=4).")


def _groups(w: torch.Tensor, m: int) -> torch.Tensor:
    """``w`` as ``(out, K / m, m)`` with ``K = numel / out``, the input dim flattened."""
    if w.dim() < 2:
        raise SparsifyError(
            f"N:M sparsity needs a weight of rank >= 2; got shape {tuple(w.shape)} (a bias?); "
            "keep scope 'prunable' or exclude it."
        )
    k = w[0].numel()
    if k % m:
        raise SparsifyError(
            f"N:M sparsity with m={m} needs the input size (in*kh*kw = {k}, weight "
            f"{tuple(w.shape)}) to be a multiple of {m}; exclude that layer."
        )
    return w.reshape(w.shape[0], k // m, m)


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Boolean mask of ``w``'s shape: True on the ``n`` largest ``|w|`` of each ``m`` group.

    Raises:
        SparsifyError: ``w`` has rank < 2, or its input size is not a multiple of ``m``.
    """
    _check_nm(n, m)
    g = _groups(w.detach(), m)  # (out, K/m, m)
    keep = torch.zeros(g.shape, dtype=torch.bool, device=w.device)
    keep.scatter_(-1, g.abs().topk(n, dim=-1).indices, True)
    return keep.reshape(w.shape)


def check_nm(tensor: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive inputs holds at most ``n`` nonzeros.

    Fewer than ``n`` is fine (an L1 prox may have zeroed more). False, not an error, when the
    input size is not a multiple of ``m`` or the rank is < 2: such a tensor has no N:M layout.
    """
    _check_nm(n, m)
    if tensor.dim() < 2 or tensor[0].numel() % m:
        return False
    g = _groups(tensor.detach(), m)
    return bool(((g != 0).sum(dim=-1) <= n).all())


@torch.no_grad()
def nm_project_(tensors: Sequence[torch.Tensor], n: int = 2, m: int = 4) -> None:
    """In place: keep the ``n`` largest ``|w|`` of every ``m`` consecutive inputs, zero the rest.

    Raises:
        SparsifyError: a tensor of rank < 2 or with an input size not a multiple of ``m``.
    """
    for w in tensors:
        w.masked_fill_(~nm_mask(w, n, m), 0.0)


@register
@dataclass(frozen=True)
class NMProjection(PenaltyConfig):
    """Project the selected weights onto N:M sparsity after every optimizer step.

    ``lam`` has no strength here: a projection is not scaled. It only switches the hook on
    per parameter (``groups`` entries with lam 0 leave matching layers dense), so it
    defaults to 1.0; the hook projects whenever ``lam * schedule`` is > 0.

    Attributes:
        n: weights kept per group, 1 <= n <= m.
        m: group length along the input dimension (in*kh*kw must be a multiple of it).
    """

    lam: float = 1.0
    n: int = 2
    m: int = 4
    kind = "nm_projection"
    when = "post"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_nm(self.n, self.m)
        if self.scope != "prunable":
            raise SparsifyError(
                f"The 'scope' parameter of NMProjection must be 'prunable' (biases have no "
                f"N:M layout). Got {self.scope!r} instead."
            )

    def validate_selection(self, selected: Sequence[Any]) -> None:
        """Refuse, by name, selected weights with no N:M layout (for ``penalize_`` to call)."""
        bad = [
            f"{s.name} {tuple(s.param.shape)}"
            for s in selected
            if s.param.dim() < 2 or s.param[0].numel() % self.m
        ]
        if bad:
            raise SparsifyError(
                f"NMProjection({self.n}:{self.m}) cannot group {', '.join(bad)} (rank < 2 or "
                f"in*kh*kw not a multiple of {self.m}); add them to 'exclude'."
            )

    def apply_(self, params: Sequence[torch.Tensor], coeff: float) -> None:
        if coeff > 0:
            nm_project_(params, self.n, self.m)

    def value(self, params: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
        """Weights outside the N:M set (0 right after a projection): a constraint, not a term."""
        out = torch.zeros(())
        for p in params:
            out = out + (p.detach().ne(0) & ~nm_mask(p, self.n, self.m)).sum().cpu()
        return out
