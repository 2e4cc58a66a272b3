"""Tensor surgery on Linear/Conv/BatchNorm modules: replace a parameter, slice units in or
out, add to a bias, resize to a state_dict.

Shared by :mod:`sparsify.structure.shrink` (which slices units out) and checkpoint loading
(which rebuilds a shrunk model at its saved widths), so it sits below both; it imports
nothing else from :mod:`sparsify.structure` (analysis -> surgery, plan -> analysis + surgery).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def set_param(mod: nn.Module, name: str, value: torch.Tensor | None, like: object) -> None:
    """Replace ``mod.<name>`` by a fresh Parameter holding ``value`` (None removes it);
    ``requires_grad`` is copied from ``like``."""
    if value is None:
        mod.register_parameter(name, None)
        return
    grad = like.requires_grad if isinstance(like, torch.Tensor) else True
    setattr(mod, name, nn.Parameter(value.detach().contiguous().clone(), requires_grad=grad))


@torch.no_grad()
def resize_to_state_dict_(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Give every Linear/Conv/BatchNorm of ``model`` the widths of ``state``; return those changed.

    Use it before ``model.load_state_dict(state, strict=True)`` to load a shrunk checkpoint
    into a freshly built model of the same architecture. Tensors are allocated empty: the
    load fills them. A bias present in ``state`` but absent in the module is created.
    """
    changed = []
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        w = state.get(prefix + "weight")
        if isinstance(mod, (nn.Linear, *CONV_TYPES)) and w is not None:
            has_bias = (prefix + "bias") in state
            if tuple(w.shape) == tuple(mod.weight.shape) and has_bias == (mod.bias is not None):
                continue
            set_param(mod, "weight", torch.empty(w.shape, dtype=mod.weight.dtype), mod.weight)
            set_param(
                mod,
                "bias",
                torch.empty(w.shape[0], dtype=w.dtype) if has_bias else None,
                mod.weight,
            )
            if isinstance(mod, nn.Linear):
                mod.out_features, mod.in_features = w.shape
            else:
                mod.out_channels, mod.in_channels = w.shape[0], w.shape[1] * mod.groups
            changed.append(name)
        elif isinstance(mod, BN_TYPES):
            ref = state.get(prefix + "running_mean", w)
            if ref is None or ref.shape[0] == mod.num_features:
                continue
            n = ref.shape[0]
            for pname in ("weight", "bias"):
                if getattr(mod, pname) is not None:
                    set_param(mod, pname, torch.empty(n), getattr(mod, pname))
            for bname in ("running_mean", "running_var"):
                if getattr(mod, bname) is not None:
                    setattr(mod, bname, torch.empty(n))
            mod.num_features = n
            changed.append(name)
    return changed


def expand_index(mask: torch.Tensor, expand: int) -> torch.Tensor:
    """A per-channel mask repeated ``expand`` times per channel (channel -> its features)."""
    return mask.repeat_interleave(expand)


@torch.no_grad()
def slice_out(mod: nn.Module, keep: torch.Tensor) -> None:
    """Keep the output units (rows/filters and bias entries) of ``mod`` where ``keep``."""
    idx = keep.nonzero().flatten().to(mod.weight.device)
    set_param(mod, "weight", mod.weight[idx], mod.weight)
    if mod.bias is not None:
        set_param(mod, "bias", mod.bias[idx], mod.bias)
    if isinstance(mod, nn.Linear):
        mod.out_features = len(idx)
    else:
        mod.out_channels = len(idx)


@torch.no_grad()
def add_bias(mod: nn.Module, delta: torch.Tensor) -> None:
    """``mod.bias += delta`` (a bias is created when ``mod`` has none)."""
    bias = mod.bias.detach() if mod.bias is not None else torch.zeros_like(delta)
    set_param(mod, "bias", bias + delta, mod.bias if mod.bias is not None else mod.weight)


@torch.no_grad()
def slice_in(mod: nn.Module, keep: torch.Tensor, expand: int) -> None:
    """Keep the input channels of ``mod`` where ``keep``; each covers ``expand`` consecutive
    input features (a flattened C x H x W map read by a Linear)."""
    w = mod.weight
    cols = expand_index(keep.to(w.device), expand).nonzero().flatten()
    set_param(mod, "weight", w[:, cols], w)
    if isinstance(mod, nn.Linear):
        mod.in_features = len(cols)
    else:
        mod.in_channels = len(cols)


@torch.no_grad()
def slice_bn(mod: nn.Module, keep: torch.Tensor) -> None:
    """Keep the BatchNorm entries (affine and running statistics) where ``keep``."""
    idx = keep.nonzero().flatten()
    for pname in ("weight", "bias"):
        p = getattr(mod, pname)
        if p is not None:
            set_param(mod, pname, p[idx.to(p.device)], p)
    for bname in ("running_mean", "running_var"):
        b = getattr(mod, bname)
        if b is not None:
            setattr(mod, bname, b[idx.to(b.device)].clone())
    mod.num_features = len(idx)
