"""The ``spk`` bench backend: a model whose Linear/Conv2d layers run on :mod:`sparsify.kernels`.

Bench-only, and unconditional (the converter times the same kernels per layer as its
``spk``/``spk_csr`` candidates and keeps dense where they lose): every ``nn.Linear`` becomes
:class:`SpkLinear` (``kernels.spmm``) and every ``nn.Conv2d`` with groups=1, zero padding
given as numbers, becomes :class:`SpkConv2d` (``kernels.sparse_conv2d``); the weight is
packed once, ``csr`` at batch 1 and ``auto`` (column-blocked) above, as the kernels'
measurements advise. Grouped and depthwise convolutions stay torch dense (the kernels leave
them to dense code: memory-bound stencils), and are listed in the runner's info.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sparsify import kernels


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


class SpkLinear(nn.Module):
    """``F.linear(x, W, b)`` by ``kernels.spmm`` on W packed in ``layout``; x of any rank."""

    def __init__(self, lin: nn.Linear, layout: str, threads: int | None) -> None:
        super().__init__()
        self.sw = kernels.pack(_np(lin.weight), layout)
        self.bias = None if lin.bias is None else _np(lin.bias).astype(np.float32).copy()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.threads = threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = _np(x).reshape(-1, self.in_features)
        y = kernels.spmm(self.sw, x2, bias=self.bias, threads=self.threads)
        return torch.from_numpy(y).reshape(*x.shape[:-1], self.out_features)


class SpkConv2d(nn.Module):
    """``F.conv2d`` (groups=1) by ``kernels.sparse_conv2d`` on the packed 4-D weight."""

    def __init__(self, conv: nn.Conv2d, layout: str, threads: int | None) -> None:
        super().__init__()
        self.sw = kernels.pack(_np(conv.weight), layout)
        self.bias = None if conv.bias is None else _np(conv.bias).astype(np.float32).copy()
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.threads = threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = kernels.sparse_conv2d(
            self.sw,
            _np(x),
            self.stride,
            self.padding,
            self.dilation,
            bias=self.bias,
            threads=self.threads,
        )
        return torch.from_numpy(y)


def conv_reason(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` stays dense under spk (None: the kernel takes it)."""
    if conv.groups != 1:
        return f"groups={conv.groups} (depthwise/grouped convolutions stay dense)"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r}"
    return None


def swap_to_spk_(model: nn.Module, batch: int, threads: int | None) -> dict[str, Any]:
    """Replace ``model``'s Linear and supported Conv2d layers with the kernel modules, in place.

    Returns ``{"layers_spk": n, "layout": ..., "kept_dense": {name: reason}}``.
    """
    layout = "csr" if batch == 1 else "auto"
    n, kept = 0, {}
    for name, mod in list(model.named_modules()):
        if not name:  # the root itself cannot be swapped in place
            continue
        if isinstance(mod, nn.Linear):
            model.set_submodule(name, SpkLinear(mod, layout, threads))
            n += 1
        elif isinstance(mod, nn.Conv2d):
            why = conv_reason(mod)
            if why is None:
                model.set_submodule(name, SpkConv2d(mod, layout, threads))
                n += 1
            else:
                kept[name] = why
    return {"layers_spk": n, "layout": layout, "kept_dense": kept}
