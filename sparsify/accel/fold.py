"""Fold an inference-mode BatchNorm2d into the Conv2d that feeds it.

In eval mode ``bn(conv(x)) = s * (W x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``
per output channel, which is one conv with

    W' = s[:, None, None, None] * W,      b' = s * (b - mean) + beta

(``gamma = 1``, ``beta = 0`` without affine; ``b = 0`` without a conv bias). A zero of W stays
a zero of W', so the sparsity pattern, and with it every sparse kernel's work, is unchanged,
while a whole elementwise pass over the conv's output (and a read and write of it) goes away:
on mobilenet_v2 at batch 1, torch's batch norms are about a quarter of its CPU time.

A pair is folded only where the batch norm's sole input is the conv's output and nothing else
reads that output, so replacing the batch norm by ``nn.Identity`` cannot change the model:

- inside a plain ``nn.Sequential`` (its own ``forward``), adjacent children, by construction;
- elsewhere, as ``torch.fx`` traces ``forward`` (ResNet's ``conv1``/``bn1``): a module that
  cannot be traced (data-dependent control flow) is searched child by child instead.

Modules with forward hooks, modules called more than once and training-mode batch norms
(batch statistics) are never folded.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter

import torch
from torch import fx, nn


def foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """``bn`` directly after ``conv`` can be folded: a float32 Conv2d computing torch's own
    convolution, an eval-mode BatchNorm2d with running statistics over ``conv.out_channels``
    channels, neither with hooks."""
    return (
        isinstance(conv, nn.Conv2d)
        # a subclass that transforms its weight first (weight standardisation) would undo W'
        and type(conv).forward is nn.Conv2d.forward
        and type(conv)._conv_forward is nn.Conv2d._conv_forward
        and type(bn) is nn.BatchNorm2d
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
        and conv.weight.dtype == torch.float32
        and bn.running_mean.dtype == torch.float32
        and not any(m._forward_hooks or m._forward_pre_hooks for m in (conv, bn))
    )


@torch.no_grad()
def fold_into_(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """In place: ``conv`` becomes ``bn(conv(.))`` (formula in the module docstring)."""
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    bias = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    bias = bias * s + (bn.bias if bn.bias is not None else 0.0)
    conv.weight.mul_(s.view(-1, 1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(bias)


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Adjacent (conv, batch norm) children of every plain ``nn.Sequential``."""
    pairs = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue  # a subclass with its own forward may not chain its children
        names = list(seq._modules)
        full = f"{prefix}." if prefix else ""
        for a, b in zip(names, names[1:], strict=False):
            if foldable(seq._modules[a], seq._modules[b]):
                pairs.append((full + a, full + b))
    return pairs


def _traced_pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    """(conv, batch norm) pairs of ``module``'s traced graph where the batch norm's only input
    is the conv's output and nothing else reads it; untraceable modules: their children's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = fx.Tracer().trace(module)
    except Exception:  # noqa: BLE001 - any failure to trace means: look inside instead
        pairs = []
        for name, child in module.named_children():
            pairs += _traced_pairs(child, f"{prefix}{name}.")
        return pairs
    nodes = [n for n in graph.nodes if n.op == "call_module"]
    calls = Counter(id(module.get_submodule(n.target)) for n in nodes)
    pairs = []
    for node in nodes:
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv, bn = module.get_submodule(src.target), module.get_submodule(node.target)
        if calls[id(conv)] == 1 and calls[id(bn)] == 1 and foldable(conv, bn):
            pairs.append((prefix + src.target, prefix + node.target))
    return pairs


def _meta_copy(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no data), to
    trace: a ``forward`` that caches what it computes on ``self`` then caches ``torch.fx``
    proxies on the copy, not on the user's model. None if the model cannot be copied."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    try:
        return copy.deepcopy(model, memo)
    except Exception:  # noqa: BLE001 - uncopyable state (locks, handles): trace nothing
        return None


def _traced_copy_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """:func:`_traced_pairs` of a :func:`_meta_copy` of ``model`` (none if it cannot be copied,
    or has no batch norm left to fold: then neither the copy nor the trace is paid for)."""
    if not any(type(m) is nn.BatchNorm2d and not m.training for m in model.modules()):
        return []
    twin = _meta_copy(model)
    return [] if twin is None else _traced_pairs(twin)


@torch.no_grad()
def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """In place: fold each eval-mode BatchNorm2d that only ever sees a Conv2d's output (see the
    module docstring) into that conv and replace it by ``nn.Identity``.

    Returns the ``(conv, batch norm)`` names folded. ``torch.fx`` traces a data-less copy of
    ``model`` (its ``forward`` runs once on proxies), never the model itself."""
    shared = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    folded: list[tuple[str, str]] = []
    for find in (_sequential_pairs, _traced_copy_pairs):
        for a, b in find(model):
            conv, bn = model.get_submodule(a), model.get_submodule(b)
            if shared[id(conv)] > 1 or shared[id(bn)] > 1 or not foldable(conv, bn):
                continue  # registered twice (may run twice), or folded by the first pass
            fold_into_(conv, bn)
            parent, _, leaf = b.rpartition(".")
            model.get_submodule(parent)._modules[leaf] = nn.Identity()
            folded.append((a, b))
    return folded
