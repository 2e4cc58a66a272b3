"""Sparse inference: layers that compute with CSR weights, and the converter that picks them."""

from sparsify.accel.convert import InferenceReport, LayerDecision, sparsify_inference_
from sparsify.accel.layers import KERNELS, SparseConv2d, SparseLinear, csr_int32
from sparsify.accel.replay import Replay

__all__ = [
    "KERNELS",
    "InferenceReport",
    "LayerDecision",
    "Replay",
    "SparseConv2d",
    "SparseLinear",
    "csr_int32",
    "sparsify_inference_",
]
