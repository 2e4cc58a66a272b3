"""The ``spk`` bench backend: a model whose Linear/Conv2d layers run on :mod:`sparsify.kernels`.

Bench-only, and unconditional (the converter times the same kernels per layer as its
``spk``/``spk_csr`` candidates and keeps dense where they lose): the converter's own layer
swap, ``sparsify_inference_(mode="fixed")`` with the one kernel ``spk_csr`` at batch 1
(weights packed ``csr``) or ``spk`` above (``auto``, column-blocked), as the kernels'
measurements advise, and ``max_density=1.0`` so every layer it can take runs on the kernels
whatever its density. So the layers are the converter's :class:`~sparsify.accel.SparseLinear`
and :class:`~sparsify.accel.SparseConv2d` (``kernels.spmm``, ``kernels.sparse_conv2d`` on
``torch.get_num_threads()`` threads, which the harness sets), and what the converter keeps
dense stays torch dense, listed with its reason in the runner's info: grouped and depthwise
convolutions (memory-bound stencils the kernels leave to dense code), convolutions padded
other than with zeros, layers whose parent reads their weight itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsify.accel import sparsify_inference_


def swap_to_spk_(
    model: nn.Module, input_shape: tuple[int, ...], batch: int, threads: int | None
) -> dict[str, Any]:
    """Replace ``model``'s Linear and supported Conv2d layers with the converter's spk layers,
    in place, for inputs (batch, *input_shape) on ``threads`` threads.

    Returns ``{"layers_spk": n, "layout": "csr" | "auto", "kept_dense": {name: reason},
    "unavailable": reason or None}``; ``unavailable`` says why the compiled kernels cannot
    run here (then no layer is swapped).
    """
    kernel = "spk_csr" if batch == 1 else "spk"
    report = sparsify_inference_(
        model,
        torch.randn(batch, *input_shape),
        threads=threads,
        mode="fixed",
        kernels=(kernel,),
        max_density=1.0,
        verify=False,
    )
    return {
        "layers_spk": len(report.converted),
        "layout": "csr" if batch == 1 else "auto",
        "kept_dense": {d.name: d.reason for d in report.layers if d.chosen == "dense"},
        "unavailable": report.unavailable.get(kernel),
    }
