"""ONNX: a dense model from ``torch.onnx.export``, a compact one stock onnxruntime runs, and
checked loading.

One job per module (every name stays importable from ``sparsify.export.onnx``):
    export.py     torch -> ONNX (:func:`export_onnx`, :func:`export_dense_model`)
    compact.py    sparse initializers re-encoded in the graph (:func:`compact_model`,
                  :func:`sparse_initializer_model`)
    integrity.py  the sha256 stamp, writing, untrusted loading (:func:`load_onnx`, :func:`save_onnx`)
    reference.py  error vs a float64 reference, against fp32's own noise (:func:`fidelity`)
    ort.py        THE onnxruntime session builder (:func:`ort_session`, spinning off) and
                  :func:`ort_resident_memory`

Names load on first use, so ``sparsify.export.onnx.ort`` (used in a memory-probe child)
imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DENSE_FILE": "export",
    "COMPACT_FILE": "export",
    "SPARSE_INIT_FILE": "export",
    "EXPORTER": "export",
    "OPSET": "export",
    "INPUT_NAME": "export",
    "OUTPUT_NAME": "export",
    "default_example_input": "export",
    "example_for": "export",
    "export_dense_model": "export",
    "export_onnx": "export",
    "export_error_cause": "export",
    "Fidelity": "reference",
    "fidelity": "reference",
    "dynamic_axes": "export",
    "DIM_NAMES": "export",
    "strip_debug_metadata": "export",
    "COMPACT_SCHEMES": "compact",
    "TensorChoice": "compact",
    "compact_model": "compact",
    "sparse_initializer_model": "compact",
    "ONNX_FORMAT": "integrity",
    "ONNX_FORMAT_VERSION": "integrity",
    "SOURCE_KEY": "integrity",
    "load_onnx": "integrity",
    "save_onnx": "integrity",
    "stamp_metadata": "integrity",
    "ort_resident_memory": "ort",
    "ort_session": "ort",
    "session_options": "ort",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
