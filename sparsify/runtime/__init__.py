"""Torch-free runtime: run an exported ONNX file or scipy bundle with numpy + scipy only.

    import sparsify.runtime
    model = sparsify.runtime.load("out/model.compact.onnx")   # or a bundle directory
    logits = model(images)          # float32 numpy in, float32 numpy out

An ``.onnx`` file (dense or compact, from :func:`sparsify.export.onnx.export_onnx`) runs in
:class:`OnnxModel` (onnx's reference evaluator with sparse CSR kernels for MatMul/Gemm/Conv,
:mod:`sparsify.runtime.onnx_model`): any op ONNX defines, sparse weights kept sparse. A bundle
directory runs in :class:`RuntimeModel` (its own op list). Nothing here imports torch (tests
run both where ``import torch`` fails).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsify.errors import SparsifyError, check_choice
from sparsify.export.bundle_format import MANIFEST
from sparsify.export.bundle_reader import Bundle, load_bundle
from sparsify.runtime.model import RuntimeModel

if TYPE_CHECKING:
    from sparsify.runtime.onnx_model import OnnxModel, WeightMemory, load_onnx_model

__all__ = [
    "Bundle",
    "OnnxModel",
    "RuntimeModel",
    "WeightMemory",
    "load",
    "load_bundle",
    "load_onnx_model",
]

_ONNX_NAMES = ("OnnxModel", "WeightMemory", "load_onnx_model")


def __getattr__(name: str) -> Any:
    """The ONNX runtime's names, imported on first use: a bundle needs numpy + scipy only."""
    if name in _ONNX_NAMES:
        from sparsify.runtime import onnx_model

        return getattr(onnx_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_COMPACT_FILE = "model.compact.onnx"  # what export_onnx writes (sparsify.export.onnx.COMPACT_FILE)


def load(
    path: str | os.PathLike[str], *, max_bytes: int | None = None, kernels: str = "auto"
) -> RuntimeModel | OnnxModel:
    """Load and verify a model for the torch-free runtime (numpy in, numpy out).

    ``path`` is an ``.onnx`` file (:func:`load_onnx_model`), a bundle directory, or a
    directory holding only ``model.compact.onnx`` (no bundle manifest), which is loaded.
    ``max_bytes`` raises the bound on the tensor bytes the file may declare (default
    max(1 GiB, 1024x the file's size); see SECURITY.md): only for a file you trust.
    ``kernels`` picks an ONNX model's sparse products: ``auto`` (sparsify's compiled C
    kernels where they run, else scipy), ``spk`` or ``scipy``; a bundle runs scipy (it takes
    ``auto`` or ``scipy``).

    Raises:
        SparsifyError: the file or bundle fails verification, or a bundle exported without
            a graph.
    """
    from sparsify.runtime.onnx_model import load_onnx_model
    from sparsify.runtime.sparse_ops import KERNEL_CHOICES

    check_choice("load", "kernels", kernels, KERNEL_CHOICES)
    p = Path(path)
    # not is_dir: a file, or a FIFO/device named like one, which load_onnx refuses in one line
    if (p.exists() and not p.is_dir()) or p.suffix == ".onnx":
        return load_onnx_model(p, max_bytes=max_bytes, kernels=kernels)
    if p.is_dir() and not (p / MANIFEST).exists() and (p / _COMPACT_FILE).exists():
        return load_onnx_model(p / _COMPACT_FILE, max_bytes=max_bytes, kernels=kernels)
    if kernels == "spk":
        raise SparsifyError(
            f"{p}: kernels='spk' runs ONNX files; a bundle runs scipy's products: load "
            f"{_COMPACT_FILE} for the spk kernels, or pass kernels='auto'."
        )
    bundle = load_bundle(p, max_bytes=max_bytes)
    if bundle.graph is None:
        raise SparsifyError(
            f"{bundle.path}: the bundle has no graph (exported with graph=False); re-export it "
            "with the graph, or export ONNX (sparsify.export.onnx.export_onnx) and load "
            f"{_COMPACT_FILE}."
        )
    return RuntimeModel(bundle.graph, bundle.state_dict, bundle.sparse, str(bundle.path / MANIFEST))
