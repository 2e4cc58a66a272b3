"""Fuse the activation after a converted layer into the layer: one pass less over its output.

``act(layer(x))`` for ``act`` in {ReLU, ReLU6, Hardtanh} is ``min(max(layer(x), lo), hi)``
with (lo, hi) = (0, inf), (0, 6), (min_val, max_val). The C kernels apply it to each output
while it is still in registers, right after the bias, so the activation's own read and write
of the whole tensor (and its module call) go away; ``act`` becomes ``nn.Identity``. The
result is the same floats: the clamp sees exactly the sum the layer would have returned, and a
NaN stays NaN, as in torch.

Only where the activation's sole input is the layer's output, read by nothing else
(:mod:`sparsify.accel.pairs`, through the ``nn.Identity`` a folded batch norm left), and only
into a layer that runs on the C kernels (``spk``, ``spk_csr``, ``spk_depthwise``): elsewhere
nothing would be saved. One activation module called after several layers (LeNet's
``self.relu``) is fused only if every one of its calls follows such a layer, into all of
them at once: it becomes ``nn.Identity`` for every call. On mobilenet_v2 at batch 1
fusing its ReLU6 modules saved 2.1 of 11.6 ms (results/probes/2026-12-04/mobilenet_steps_b1.txt).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from sparsify.accel.layers import DepthwiseConv2d, SparseConv2d, SparseLinear
from sparsify.accel.pairs import registered_once, sequential_pairs, traced_pairs


def activation_clamp(act: nn.Module) -> tuple[float, float] | None:
    """(lo, hi) of an activation that is a clamp: ReLU (0, inf), ReLU6 (0, 6), Hardtanh
    (min_val, max_val); None for anything else (subclasses included: they may compute
    something else)."""
    if type(act) is nn.ReLU:
        return (0.0, math.inf)
    if type(act) in (nn.ReLU6, nn.Hardtanh):
        return (float(act.min_val), float(act.max_val))
    return None


def fusable(layer: nn.Module, act: nn.Module) -> bool:
    """``act`` can go into ``layer``: a clamp after a layer that runs on the C kernels and has
    no activation yet, neither with hooks."""
    on_kernels = (
        isinstance(layer, (SparseLinear, SparseConv2d)) and layer.weight_spk is not None
    ) or type(layer) is DepthwiseConv2d
    return (
        on_kernels
        and layer.clamp is None
        and activation_clamp(act) is not None
        and not any(m._forward_hooks or m._forward_pre_hooks for m in (layer, act))
    )


def activation_pairs(model: nn.Module, candidate: set[str]) -> list[tuple[str, str]]:
    """``(layer, activation)`` names where the activation reads only ``layer``'s output, for
    the layers named in ``candidate`` (others are not searched: the trace is paid for only
    where some candidate is followed by a clamp)."""

    def pairable(a: nn.Module, b: nn.Module) -> bool:
        return activation_clamp(b) is not None

    found = [p for p in sequential_pairs(model, pairable, through=True) if p[0] in candidate]
    seen = {a for a, _ in found}
    if candidate - seen and any(activation_clamp(m) for m in model.modules()):
        found += [
            p for p in traced_pairs(model, pairable, through=True, shared=True) if p[0] not in seen
        ]
    # an activation goes only if all its callers can take it: keep whole groups
    callers: dict[str, list[str]] = {}
    for a, b in found:
        callers.setdefault(b, []).append(a)
    return [(a, b) for a, b in found if all(c in candidate for c in callers[b])]


def fuse_activations_(
    model: nn.Module, pairs: list[tuple[str, str]]
) -> list[tuple[str, str, nn.Module]]:
    """In place: each activation of ``pairs`` whose layers are all (now) fusable goes into
    them as their clamp and becomes ``nn.Identity``; one with a layer that is not (kept dense,
    say) stays, for all its callers. Returns what was fused, as ``(layer, activation, the
    activation module)``, for :func:`unfuse_`."""
    once = registered_once(model)
    groups: dict[str, list[str]] = {}
    for a, b in pairs:
        groups.setdefault(b, []).append(a)
    done = []
    for b, layers in groups.items():
        act = model.get_submodule(b)
        mods = [model.get_submodule(a) for a in layers]
        if not (once(act) and all(once(m) and fusable(m, act) for m in mods)):
            continue
        for a, layer in zip(layers, mods, strict=True):
            layer.fuse_clamp_(activation_clamp(act))
            done.append((a, b, act))
        model.set_submodule(b, nn.Identity())
    return done


def unfuse_(model: nn.Module, fused: list[tuple[str, str, nn.Module]]) -> None:
    """Undo :func:`fuse_activations_`: each activation back in its place, no clamp (an
    activation fused into several layers is listed once per layer; restoring it twice is
    harmless)."""
    for a, b, act in fused:
        model.get_submodule(a).fuse_clamp_(None)
        model.set_submodule(b, act)


def clamp_chains(
    model: nn.Module, first: Callable[[nn.Module], bool], second: Callable[[nn.Module], bool]
) -> list[tuple[str, str | None, str]]:
    """``(a, clamp, b)`` names of the unconverted (batch-norm folded) ``model`` where the
    output of a module ``first`` accepts goes, through ``nn.Identity`` and one clamp
    activation at most (``clamp``: its name, or None), only into a module ``second`` accepts
    (:mod:`sparsify.accel.pairs`, traced): the layer pairs one fused kernel may replace."""

    def pairable(a: nn.Module, b: nn.Module) -> bool:
        return (first(a) and (second(b) or activation_clamp(b) is not None)) or (
            activation_clamp(a) is not None and second(b)
        )

    pairs = traced_pairs(model, pairable, through=True)
    after = dict(pairs)
    chains: list[tuple[str, str | None, str]] = []
    for a, b in pairs:
        if not first(model.get_submodule(a)):
            continue
        if second(model.get_submodule(b)):
            chains.append((a, None, b))
        elif b in after:  # the clamp between them, read only by b
            chains.append((a, b, after[b]))
    return chains
