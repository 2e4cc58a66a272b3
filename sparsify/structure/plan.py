"""Planning a shrink: which channels of a tied set are dead, which can go, what folds where.

A dead channel is not always silent: a zero filter with bias b emits the constant b, then
relu(b), BatchNorm's shift, a max-pool of a constant, ... so the consumer sees a spatially
uniform constant k. It is *folded*: the consumer's bias absorbs ``W[:, c] . k`` (a bias is
created if the consumer had none). For a consumer conv with zero padding the constant's
contribution differs at the borders (fewer taps see it), which no bias can express: such
a channel is *kept* unless its constant is exactly 0. Constants are read from one forward
pass in eval mode and checked to be uniform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sparsify.structure.analysis import ChannelAnalysis, ChannelGroup, as_tuple
from sparsify.structure.surgery import expand_index


def dead_rows(w: torch.Tensor) -> torch.Tensor:
    """``(out,)`` bool: True where a Linear row / Conv filter of ``w`` is all zero (-0.0 too)."""
    return (w.detach().reshape(w.shape[0], -1) == 0).all(dim=1)  # (out,)


def foldable(mod: nn.Module) -> bool:
    """A uniform input channel adds the same amount at every output position."""
    if isinstance(mod, nn.Linear):
        return True
    return mod.padding_mode != "zeros" or not any(as_tuple(mod.padding))


def channel_constants(
    value: torch.Tensor, size: int, expand: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel: (mean of the values a consumer reads, spread max-min), shapes ``(size,)``.

    ``value`` is ``(B, C*E)`` (channel c covers features c*E .. c*E+E-1) or ``(B, C, *spatial)``.
    """
    if value.dim() == 2:  # (B, C*E): channel c covers features c*E .. c*E+E-1
        per = value.detach().reshape(value.shape[0], size, expand).transpose(0, 1).reshape(size, -1)
    else:  # (B, C, *spatial)
        per = value.detach().transpose(0, 1).reshape(size, -1)
    return per.mean(dim=1), per.amax(dim=1) - per.amin(dim=1)


def plan_group(
    a: ChannelAnalysis, g: ChannelGroup, modules: Mapping[str, nn.Module]
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
    """(channels kept, bias increment per consumer, report row) for one tied set.

    A channel goes when every producer's row is dead, the group is not pinned, each consumer
    sees it as a uniform constant, and that constant is 0 or the consumer can fold it
    (:func:`foldable`); one channel is always kept.
    """
    keep = torch.ones(g.size, dtype=torch.bool)
    info: dict[str, Any] = {
        "producers": g.producers,
        "consumers": [c[0] for c in g.consumers],
        "channels": g.size,
        "pinned": sorted(set(g.pinned)),
    }
    deltas: dict[str, torch.Tensor] = {}
    dead = torch.ones(g.size, dtype=torch.bool)
    for name in g.producers:
        dead &= dead_rows(modules[name].weight).cpu()
    info["dead"] = int(dead.sum())
    if g.pinned or not dead.any():
        info.update(kept=g.size, removed=0, folded=0, kept_constant=0)
        return keep, deltas, info
    removable = dead.clone()
    constants = {}
    for name, expand, src in g.consumers:
        k, spread = channel_constants(a.values[src], g.size, expand)
        k, spread = k.cpu(), spread.cpu()
        uniform = spread <= 1e-6 * (1 + k.abs())
        if not bool(uniform[dead].all()):  # a dead channel must be constant; keep it if not
            removable &= uniform
        if not foldable(modules[name]):
            removable &= k == 0
        constants[name] = (k, expand)
    if bool(removable.all()):  # an empty layer is not a layer: keep one channel
        removable[0] = False
    keep = ~removable
    folded = torch.zeros(g.size, dtype=torch.bool)  # removed, but some consumer saw k != 0
    for name, expand, _ in g.consumers:
        mod = modules[name]
        k, _ = constants[name]
        gone = removable & (k != 0)
        folded |= gone
        if not gone.any():
            continue
        w = mod.weight.detach()
        kk = k.to(w)
        if isinstance(mod, nn.Linear):
            cols = expand_index(gone.to(w.device), expand)  # (C*E,)
            delta = w[:, cols] @ kk.repeat_interleave(expand)[cols]
        else:  # every output position sees all kh*kw taps of input channel c (no padding)
            delta = w[:, gone.to(w.device)].flatten(2).sum(dim=2) @ kk[gone.to(w.device)]
        deltas[name] = delta
    info.update(
        kept=int(keep.sum()),
        removed=int(removable.sum()),
        folded=int(folded.sum()),
        kept_constant=int((dead & keep).sum()),
    )
    return keep, deltas, info
