"""Fold an inference-mode BatchNorm2d into the Conv2d that feeds it.

In eval mode ``bn(conv(x)) = s * (W x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``
per output channel, which is one conv with

    W' = s[:, None, None, None] * W,      b' = s * (b - mean) + beta

(``gamma = 1``, ``beta = 0`` without affine; ``b = 0`` without a conv bias). A zero of W stays
a zero of W', so the sparsity pattern, and with it every sparse kernel's work, is unchanged,
while a whole elementwise pass over the conv's output (and a read and write of it) goes away:
on mobilenet_v2 at batch 1, torch's batch norms are about a quarter of its CPU time.

Only pairs inside an ``nn.Sequential`` are folded: there, the conv's output is the batch
norm's input by construction. A pair wired in a custom ``forward`` (ResNet's ``conv1``/``bn1``)
is left alone, since registration order does not say what ``forward`` does.
"""

from __future__ import annotations

import torch
from torch import nn


def foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """``bn`` directly after ``conv`` can be folded: a float32 Conv2d, an eval-mode
    BatchNorm2d with running statistics over ``conv.out_channels`` channels."""
    return (
        isinstance(conv, nn.Conv2d)
        and type(bn) is nn.BatchNorm2d
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
        and conv.weight.dtype == torch.float32
        and bn.running_mean.dtype == torch.float32
    )


@torch.no_grad()
def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """In place: in every ``nn.Sequential`` of ``model``, fold each :func:`foldable` BatchNorm2d
    into the conv just before it (formula in the module docstring) and replace the batch norm
    by ``nn.Identity``. Returns the ``(conv, batch norm)`` names folded."""
    folded = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[a], seq._modules[b]
            if not foldable(conv, bn):
                continue
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
            seq._modules[b] = nn.Identity()
            full = f"{prefix}." if prefix else ""
            folded.append((full + a, full + b))
    return folded
