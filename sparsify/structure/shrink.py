"""Shrink: physically remove dead output neurons/channels, so the dense model itself gets smaller.

A Linear row or Conv filter whose weights are all zero is *dead*: its output no longer
depends on the input. It is removed together with the matching input slice of every layer
that reads it (and its BatchNorm entries). The result computes the same function (checked
on an example input, 1e-5) with smaller dense matrices, in any runtime.

The steps live in their own modules: :mod:`~sparsify.structure.analysis` reads the channel
sets from the fx graph, :mod:`~sparsify.structure.plan` decides per set what goes and what
folds into a consumer's bias, :mod:`~sparsify.structure.surgery` cuts the tensors.
Equivalence is an eval-mode contract: in train mode BatchNorm normalises with batch
statistics, under which a dead channel's constant (and so the folded bias) would differ.

Saving: the shrunk model has the original module tree with narrower tensors, so its
state_dict alone describes it; :func:`resize_to_state_dict_` rebuilds a model at those
widths before a strict ``load_state_dict``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx, nn

from sparsify.errors import SparsifyError
from sparsify.structure.analysis import ChannelAnalysis, Recorder
from sparsify.structure.plan import plan_group
from sparsify.structure.surgery import (
    CONV_TYPES,
    add_bias,
    resize_to_state_dict_,
    slice_bn,
    slice_in,
    slice_out,
)
from sparsify.timing import measure_latency

__all__ = [
    "ShrinkReport",
    "count_macs",
    "count_params",
    "layer_widths",
    "measure_latency",
    "resize_to_state_dict_",
    "shrink_",
]


@dataclass
class ShrinkReport:
    """What :func:`shrink_` did, per tied channel set and per layer, and what it saved.

    ``macs`` are multiply-accumulates of Linear/Conv layers for one sample at the example
    input's size; ``params`` counts every parameter (BatchNorm included).
    """

    groups: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict."""
        return asdict(self)

    def table(self) -> str:
        """Plain-text table: one row per Linear/Conv layer, then the totals."""
        head = f"{'layer':<28} {'kind':<7} {'out kept':>12} {'in kept':>12} {'params':>19}"
        lines = [head, "-" * len(head)]
        for row in self.layers:
            lines.append(
                f"{row['name']:<28} {row['kind']:<7} {row['out_after']:>5}/{row['out_before']:<6} "
                f"{row['in_after']:>5}/{row['in_before']:<6} "
                f"{row['params_after']:>8,}/{row['params_before']:<10,}"
            )
        lines.append("-" * len(head))
        lines.append(
            f"params {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_before / max(self.params_after, 1):.2f}x), MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} ({self.macs_before / max(self.macs_after, 1):.2f}x), "
            f"max |diff| {self.max_abs_diff:.2e}"
        )
        return "\n".join(lines)


def count_params(model: nn.Module) -> int:
    """Every parameter's element count (BatchNorm affine included, buffers not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per Linear/Conv layer for ONE sample of ``example``'s shape.

    Linear: ``in * out`` per row it is applied to; Conv: ``out * (in / groups) *
    prod(kernel) * prod(output spatial)``; biases not counted. Counted by torch's
    ``FlopCounterMode`` (FLOPs / 2) on a forward of ``example[:1]`` in eval mode; a layer
    called twice counts twice. Only Linear/Conv modules are reported.
    """
    from torch.utils.flop_counter import FlopCounterMode

    root = type(model).__name__
    names = {
        name: (f"{root}.{name}" if name else root)
        for name, mod in model.named_modules()
        if isinstance(mod, (nn.Linear, *CONV_TYPES))
    }
    was_training = model.training
    try:
        model.eval()
        with FlopCounterMode(display=False) as counter:
            model(example[:1])
    finally:
        model.train(was_training)
    flops = counter.get_flop_counts()
    return {name: sum(flops[key].values()) // 2 for name, key in names.items() if key in flops}


def _layer_rows(model: nn.Module) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            rows[name] = {"kind": "linear", "out": mod.out_features, "in": mod.in_features}
        elif isinstance(mod, CONV_TYPES):
            rows[name] = {"kind": "conv", "out": mod.out_channels, "in": mod.in_channels}
        else:
            continue
        rows[name]["params"] = sum(p.numel() for p in mod.parameters(recurse=False))
    return rows


def shrink_(
    model: nn.Module,
    example: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    exclude: Sequence[str] = (),
) -> ShrinkReport:
    """Remove dead output units of ``model`` in place; the function computed stays the same.

    Contract: for the model in eval mode, ``model(x)`` after equals ``model(x)`` before within
    ``atol + rtol * |before|`` (checked on ``example``, else an error). Modules keep their
    names and types; only widths change (``out_features``/``in_channels``/``num_features``...),
    and a consumer that absorbs a constant may gain a bias. A layer whose units are all dead
    keeps one (its output is then a constant the next layer sees): a 0-unit layer is not a
    valid module, and checkpoints holding one are refused on load.

    Args:
        model: any module torch.fx can trace (the zoo models, torchvision CNNs).
        example: an input batch (B >= 1) of the shape the model expects.
        atol, rtol: tolerance of the equivalence check.
        exclude: regexes on layer names; a channel set produced by a matching layer keeps
            all its units (reported as pinned), e.g. ``["^fc3$"]``.

    Returns:
        A :class:`ShrinkReport` (channels kept per set and per layer, params, MACs).

    Raises:
        SparsifyError: the model cannot be traced, an exclude pattern is not a regex, or
            (a bug) its outputs changed.
    """
    for pattern in exclude:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SparsifyError(
                f"shrink_: exclude pattern {pattern!r} is not a valid regular expression ({exc})."
            ) from None
    was_training = model.training
    model.eval()
    try:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types for untraceable Python control flow
            raise SparsifyError(
                f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); "
                "shrink needs a model without data-dependent control flow."
            ) from None
        modules = dict(gm.named_modules())
        with torch.no_grad():
            rec = Recorder(gm)
            reference = rec.run(example)
        analysis = ChannelAnalysis(gm, rec.values)
        for pattern in exclude:
            rx = re.compile(pattern)
            for gid, g in analysis.groups.items():
                hit = [n for n in g.producers if rx.search(n)]
                if hit:
                    analysis.pin(gid, f"{hit[0]} matches exclude pattern {pattern!r}")
        layers_before = _layer_rows(model)
        params_before = count_params(model)
        macs_before = sum(count_macs(model, example).values())

        plans = []
        for g in analysis.groups.values():
            plans.append((g, *plan_group(analysis, g, modules)))
        # Apply only after every plan is made, in three passes over disjoint dimensions:
        # folds first (a delta is over the consumer's full, unsliced output), then input
        # columns, then output rows (a layer may consume and produce the same tied set).
        for _g, _keep, deltas, _ in plans:
            for name, delta in deltas.items():
                add_bias(modules[name], delta)
        for g, keep, _, _ in plans:
            if not bool(keep.all()):
                for name, expand, _src in g.consumers:
                    slice_in(modules[name], keep, expand)
        for g, keep, _, _ in plans:
            if not bool(keep.all()):
                for name in g.producers:
                    slice_out(modules[name], keep)
                for name in g.per_channel:
                    slice_bn(modules[name], keep)

        with torch.no_grad():
            after = model(example)
        diff = (after - reference).abs()
        max_diff = float(diff.max()) if diff.numel() else 0.0
        if bool((diff > atol + rtol * reference.abs()).any()):
            raise SparsifyError(
                f"shrink changed the outputs of {type(model).__name__} by up to {max_diff:.3g} "
                f"(> atol {atol:g}); the model is modified: reload it and report this bug."
            )
        layers_after = _layer_rows(model)
        macs = count_macs(model, example)
        rows = [
            {
                "name": name,
                "kind": before["kind"],
                "out_before": before["out"],
                "out_after": layers_after[name]["out"],
                "in_before": before["in"],
                "in_after": layers_after[name]["in"],
                "params_before": before["params"],
                "params_after": layers_after[name]["params"],
                "macs_after": macs.get(name, 0),
            }
            for name, before in layers_before.items()
        ]
        return ShrinkReport(
            groups=[info for _, _, _, info in plans],
            layers=rows,
            params_before=params_before,
            params_after=count_params(model),
            macs_before=macs_before,
            macs_after=sum(macs.values()),
            max_abs_diff=max_diff,
        )
    finally:
        model.train(was_training)


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """``{layer: [out, in]}`` for every Linear/Conv (``in`` counts input channels/features).

    What a shrunk checkpoint stores as its ``shrunk`` metadata (JSON), for people and tools;
    loading reads the widths from the tensors themselves.
    """
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            out[name] = [mod.out_features, mod.in_features]
        elif isinstance(mod, CONV_TYPES):
            out[name] = [mod.out_channels, mod.in_channels]
    return out
