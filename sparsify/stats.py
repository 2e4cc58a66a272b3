"""Sparsity accounting: exact zeros per tensor and per layer, dead neurons and channels.

Only exact zeros count (``w == 0``): a weight of 1e-12 is stored and multiplied like any
other. A Linear row or Conv filter (output unit) is *dead* when all its weights are zero;
an input column is dead when no output reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def tensor_stats(t: torch.Tensor) -> dict[str, Any]:
    """``numel``, ``zeros``, ``nnz``, ``density = nnz / numel``, ``zero_fraction`` of one tensor."""
    numel = t.numel()
    zeros = int((t == 0).sum().item()) if numel else 0
    return {
        "numel": numel,
        "zeros": zeros,
        "nnz": numel - zeros,
        "density": (numel - zeros) / numel if numel else 0.0,
        "zero_fraction": zeros / numel if numel else 0.0,
    }


def unit_stats(weight: torch.Tensor) -> dict[str, int]:
    """Dead output units (rows/filters all zero) and dead inputs (columns never read)."""
    if weight.dim() < 2:
        return {"units": weight.numel(), "dead_units": int((weight == 0).sum().item())}
    nz = weight.detach() != 0
    rows = nz.flatten(1).any(dim=1)  # (out,)
    cols = nz.transpose(0, 1).flatten(1).any(dim=1)  # (in,)
    return {
        "units": rows.numel(),
        "dead_units": int((~rows).sum().item()),
        "inputs": cols.numel(),
        "dead_inputs": int((~cols).sum().item()),
    }


def state_dict_stats(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Per-tensor stats for every floating-point tensor, plus totals over them.

    ``zero_fraction`` is over all floating parameters; ``weight_zero_fraction`` over the
    tensors of rank >= 2 (Linear/Conv weights, the ones sparse formats store).
    """
    layers: dict[str, Any] = {}
    for name, t in state.items():
        if not torch.is_floating_point(t):
            continue  # BatchNorm's num_batches_tracked and the like
        entry = tensor_stats(t.detach())
        if t.dim() >= 2:
            entry.update(unit_stats(t))
        layers[name] = entry
    total = sum(e["numel"] for e in layers.values())
    zeros = sum(e["zeros"] for e in layers.values())
    w_total = sum(e["numel"] for n, e in layers.items() if state[n].dim() >= 2)
    w_zeros = sum(e["zeros"] for n, e in layers.items() if state[n].dim() >= 2)
    return {
        "numel": total,
        "zeros": zeros,
        "nnz": total - zeros,
        "zero_fraction": zeros / total if total else 0.0,
        "weight_numel": w_total,
        "weight_zeros": w_zeros,
        "weight_zero_fraction": w_zeros / w_total if w_total else 0.0,
        "layers": layers,
    }


def model_stats(model: nn.Module) -> dict[str, Any]:
    """:func:`state_dict_stats` over ``model``'s parameters (buffers such as BN statistics excluded)."""
    return state_dict_stats(dict(model.named_parameters()))


def format_stats(stats: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`state_dict_stats` output, one row per tensor."""
    head = f"{'tensor':<40} {'numel':>10} {'zeros':>10} {'zero %':>8} {'dead units':>11}"
    lines = [head, "-" * len(head)]
    for name, e in stats["layers"].items():
        dead = f"{e['dead_units']}/{e['units']}" if "dead_units" in e and "inputs" in e else ""
        lines.append(
            f"{name:<40} {e['numel']:>10,} {e['zeros']:>10,} {100 * e['zero_fraction']:>7.2f}% {dead:>11}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'all parameters':<40} {stats['numel']:>10,} {stats['zeros']:>10,} {100 * stats['zero_fraction']:>7.2f}%"
    )
    lines.append(
        f"{'weights (rank >= 2)':<40} {stats['weight_numel']:>10,} {stats['weight_zeros']:>10,} "
        f"{100 * stats['weight_zero_fraction']:>7.2f}%"
    )
    return "\n".join(lines)
