"""sparsify: make neural networks sparse for real.

Stages, in the order data flows (no module imports a later stage):
    data, models, recipe  ->  train  ->  checkpoint  ->  shrink, stages, export  ->  runtime
        ->  bench  ->  report

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
    "NMProjection": "sparsify.penalties",
    "PenaltyHandle": "sparsify.penalties",
    "Schedule": "sparsify.penalties",
    "SparseGroupLassoProx": "sparsify.penalties",
    "WeightDecay": "sparsify.penalties",
    "freeze_support_": "sparsify.penalties",
    "l2_penalty": "sparsify.penalties",
    "magnitude_prune_": "sparsify.penalties",
    "penalize_": "sparsify.penalties",
    "prune_to_sparsity_": "sparsify.penalties",
    "soft_threshold": "sparsify.penalties",
    "soft_threshold_": "sparsify.penalties",
    "shrink_": "sparsify.structure.shrink",
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
