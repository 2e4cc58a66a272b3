"""sparsify: make neural networks sparse for real.

Two layers. The core is a torch library that knows no recipe, dataset or CLI: penalties
(train) -> structure (shrink) -> stats -> export -> runtime, plus accel (sparse inference),
timing and probe (measurement). The pipeline application sits on it (recipe, model and
dataset registries, loop, stages, checkpoint), then bench, report and cli. Nothing imports
up (tests/test_layering.py).

One line adds exact zeros to any training loop::

    from sparsify import L1Prox, penalize_
    handle = penalize_(model, optimizer, L1Prox(lam=1e-4))

Importing ``sparsify`` itself does not import torch: the public names below are loaded on
first use, so the torch-free runtime (``sparsify.runtime``) works where torch is absent.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SparsifyError": "sparsify.errors",
    "model_stats": "sparsify.stats",
    "state_dict_stats": "sparsify.stats",
    "GradualPruning": "sparsify.penalties",
    "GroupLassoProx": "sparsify.penalties",
    "L1Prox": "sparsify.penalties",
    "L1Subgradient": "sparsify.penalties",
    "L2Coupled": "sparsify.penalties",
    "MaxNorm": "sparsify.penalties",
    "NMProjection": "sparsify.penalties",
    "PenaltyHandle": "sparsify.penalties",
    "Schedule": "sparsify.penalties",
    "SparseGroupLassoProx": "sparsify.penalties",
    "VariationalDropout": "sparsify.penalties",
    "WeightDecay": "sparsify.penalties",
    "freeze_support_": "sparsify.penalties",
    "l2_penalty": "sparsify.penalties",
    "magnitude_prune_": "sparsify.penalties",
    "penalize_": "sparsify.penalties",
    "prune_to_sparsity_": "sparsify.penalties",
    "soft_threshold": "sparsify.penalties",
    "soft_threshold_": "sparsify.penalties",
    "shrink_": "sparsify.structure.shrink",
    # export, runtime, inference: the headline features, one import away
    "export_onnx": "sparsify.export.onnx",
    "load_onnx": "sparsify.export.onnx",
    "export_scipy_bundle": "sparsify.export.scipy_bundle",
    "sparsify_inference_": "sparsify.accel",
    "register_dataset": "sparsify.pipeline.data.registry",
    # the pipeline application: your own models and checkpoints
    "register_model": "sparsify.pipeline.zoo",
    "build_model": "sparsify.pipeline.zoo",
    "load_checkpoint": "sparsify.pipeline.checkpoint",
    "save_checkpoint": "sparsify.pipeline.checkpoint",
    "checkpoint_from_module": "sparsify.pipeline.checkpoint",
}
__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparsify' has no attribute {name!r}")
