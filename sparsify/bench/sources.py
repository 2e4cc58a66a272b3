"""What a benchmark runs: a source described by a JSON-able spec, rebuilt alike in any process.

Specs (``kind`` first):
    {"kind": "checkpoint", "path": P}              a sparsify checkpoint directory
    {"kind": "bundle", "path": P}                  an exported scipy bundle (its recipe names
                                                   the architecture for the torch backends)
    {"kind": "linear", "in": N, "out": M, "density": d, "seed": s}
                                                   one nn.Linear with zeros imposed
    {"kind": "model", "name": NAME, "density": d, "seed": s}
                                                   a zoo model with zeros imposed

"Zeros imposed at density d" keeps the round(d * numel) largest-magnitude entries of every
Linear/Conv weight (magnitude pruning, the pattern training tends to leave) and zeroes the
rest; a density of 1 leaves the weights as initialised.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsify.errors import SparsifyError


@dataclass
class Source:
    """A model ready to benchmark: the module (eval), its input shape without batch, a label."""

    spec: dict[str, Any]
    label: str
    model: nn.Module
    input_shape: tuple[int, ...]
    bundle_dir: Path | None = None  # an exported bundle the scipy runtime can load directly


def impose_density_(model: nn.Module, density: float) -> None:
    """Keep the ``round(density * numel)`` largest |w| of each Linear/Conv weight, zero the rest."""
    if not 0.0 < density <= 1.0:
        raise SparsifyError(f"density must be in (0, 1]; got {density!r}. Use e.g. --density 0.1.")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                w = m.weight
                keep = round(density * w.numel())
                if keep >= w.numel():
                    continue
                flat = w.abs().flatten()
                mask = torch.zeros_like(flat, dtype=torch.bool)
                if keep > 0:
                    mask[torch.topk(flat, keep, sorted=False).indices] = True
                w.mul_(mask.view_as(w))
                w[w == 0] = 0.0  # -0.0 from the multiply is stored by exporters; make it +0.0


def _image_shape(model: nn.Module, in_channels: int) -> tuple[int, ...]:
    return (in_channels, 28, 28)


def load_source(spec: dict[str, Any]) -> Source:
    """Build the model of ``spec`` (see the module docstring) in eval mode.

    Raises:
        SparsifyError: unknown kind, unreadable checkpoint or bundle, bad density.
    """
    from sparsify.pipeline.zoo import build_model

    kind = spec.get("kind")
    if kind == "checkpoint":
        from sparsify.pipeline.checkpoint import load_checkpoint

        ckpt = load_checkpoint(spec["path"])
        model = ckpt.build_model()
        return Source(
            spec,
            Path(spec["path"]).name,
            model,
            _image_shape(model, ckpt.recipe.model.in_channels),
        )
    if kind == "bundle":
        from sparsify.export.bundle_format import MANIFEST
        from sparsify.export.scipy_bundle import load_state_dict
        from sparsify.pipeline.recipe import Recipe

        path = Path(spec["path"])
        manifest = json.loads((path / MANIFEST).read_text())
        recipe_data = (manifest.get("source") or {}).get("recipe")
        if recipe_data is None:
            raise SparsifyError(
                f"{path}: the bundle carries no recipe, so its architecture is unknown; "
                "export it from a checkpoint, or bench the checkpoint itself."
            )
        recipe = Recipe.from_dict(recipe_data, source=f"{path} (bundle recipe)")
        model = build_model(recipe.model.name, recipe.model.num_classes, recipe.model.in_channels)
        model.load_state_dict(load_state_dict(path), strict=True)
        return Source(
            spec, path.name, model.eval(), _image_shape(model, recipe.model.in_channels), path
        )
    if kind == "linear":
        torch.manual_seed(int(spec.get("seed", 0)))
        n_in, n_out, d = int(spec["in"]), int(spec["out"]), float(spec["density"])
        model = nn.Sequential(nn.Linear(n_in, n_out)).eval()
        impose_density_(model, d)
        return Source(spec, f"Linear {n_in}x{n_out} @ {1 - d:.0%} zeros", model, (n_in,))
    if kind == "model":
        torch.manual_seed(int(spec.get("seed", 0)))
        d = float(spec["density"])
        model = build_model(spec["name"]).eval()
        impose_density_(model, d)
        return Source(spec, f"{spec['name']} @ {1 - d:.0%} zeros", model, _image_shape(model, 1))
    raise SparsifyError(f"unknown source kind {kind!r}; use checkpoint, bundle, linear or model.")


def spec_from_path(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint or bundle spec from a directory (or a model.safetensors file).

    Raises:
        SparsifyError: the path is neither.
    """
    from sparsify.export.bundle_format import MANIFEST

    p = Path(path)
    if (p / MANIFEST).is_file():
        return {"kind": "bundle", "path": str(p)}
    if (p / "model.safetensors").is_file() or (p.is_file() and p.suffix == ".safetensors"):
        return {"kind": "checkpoint", "path": str(p)}
    raise SparsifyError(
        f"{p} is neither a checkpoint (model.safetensors) nor a scipy bundle ({MANIFEST}); "
        "give a run directory or an exported bundle."
    )
