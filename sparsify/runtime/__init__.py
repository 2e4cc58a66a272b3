"""Torch-free runtime: run an exported scipy bundle with numpy + scipy only.

    import sparsify.runtime
    model = sparsify.runtime.load("runs/quickstart_scipy")
    logits = model(images)          # (B, 1, 28, 28) float32 numpy -> (B, 10) numpy

Nothing here imports torch (a test runs it where ``import torch`` fails).
"""

from __future__ import annotations

import os

from sparsify.errors import SparsifyError
from sparsify.export.bundle_reader import Bundle, load_bundle
from sparsify.runtime.model import RuntimeModel

__all__ = ["Bundle", "RuntimeModel", "load", "load_bundle"]


def load(bundle_dir: str | os.PathLike[str]) -> RuntimeModel:
    """Load and verify the bundle in ``bundle_dir`` and return its model (numpy in, numpy out).

    Raises:
        SparsifyError: the bundle fails verification, or was exported without a graph.
    """
    bundle = load_bundle(bundle_dir)
    if bundle.graph is None:
        raise SparsifyError(
            f"{bundle.path}: the bundle has no graph (exported with graph=False); re-export it "
            "with the graph to run it."
        )
    return RuntimeModel(bundle.graph, bundle.state_dict, bundle.sparse)
