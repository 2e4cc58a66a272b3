"""Fold an inference-mode BatchNorm2d into the Conv2d that feeds it.

In eval mode ``bn(conv(x)) = s * (W x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``
per output channel, which is one conv with

    W' = s[:, None, None, None] * W,      b' = s * (b - mean) + beta

(``gamma = 1``, ``beta = 0`` without affine; ``b = 0`` without a conv bias). A zero of W stays
a zero of W', so the sparsity pattern, and with it every sparse kernel's work, is unchanged,
while a whole elementwise pass over the conv's output (and a read and write of it) goes away:
on mobilenet_v2 at batch 1, torch's batch norms are about a quarter of its CPU time.

A pair is folded only where the batch norm's sole input is the conv's output and nothing else
reads that output (:mod:`sparsify.accel.pairs`), so replacing the batch norm by
``nn.Identity`` cannot change the model.

Modules with forward hooks, modules called more than once and training-mode batch norms
(batch statistics) are never folded.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsify.accel.pairs import registered_once, sequential_pairs, traced_pairs


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


@torch.no_grad()
def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """In place: fold each eval-mode BatchNorm2d that only ever sees a Conv2d's output (see the
    module docstring) into that conv and replace it by ``nn.Identity``.

    Returns the ``(conv, batch norm)`` names folded. ``torch.fx`` traces a data-less copy of
    ``model`` (its ``forward`` runs once on proxies), never the model itself."""
    once = registered_once(model)
    folded: list[tuple[str, str]] = []
    for find in (sequential_pairs, traced_pairs):
        if not any(type(m) is nn.BatchNorm2d and not m.training for m in model.modules()):
            break  # none (left) to fold: the copy and the trace are not paid for
        for a, b in find(model, foldable):
            conv, bn = model.get_submodule(a), model.get_submodule(b)
            if not (once(conv) and once(bn) and foldable(conv, bn)):
                continue  # registered twice (may run twice), or folded by the first pass
            fold_into_(conv, bn)
            parent, _, leaf = b.rpartition(".")
            model.get_submodule(parent)._modules[leaf] = nn.Identity()
            folded.append((a, b))
    return folded
