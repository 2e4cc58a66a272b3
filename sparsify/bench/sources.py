"""What a benchmark runs: a source described by a JSON-able spec, rebuilt alike in any process.

Specs (``kind`` first; ``input_shape`` [C, H, W...] optional everywhere it applies):
    {"kind": "checkpoint", "path": P}              a sparsify checkpoint directory
    {"kind": "bundle", "path": P}                  an exported scipy bundle (the checkpoint
                                                   facts it records name the architecture
                                                   for the torch backends)
    {"kind": "linear", "in": N, "out": M, "density": d, "seed": s}
                                                   one nn.Linear with zeros imposed
    {"kind": "mlp", "sizes": [A, B, ...], "density": d, "seed": s}
                                                   Linear(A, B), ReLU, Linear(B, C), ...
                                                   (no ReLU after the last) with zeros imposed
    {"kind": "model", "name": NAME, "density": d, "seed": s}
                                                   a registered model with zeros imposed,
                                                   built for C channels when ``input_shape``
                                                   is [C, H, W...] (refused in one line when
                                                   it cannot take that input)

Models are rebuilt one way only, :meth:`~sparsify.pipeline.checkpoint.Checkpoint.build_model`
(a bundle's weights become a Checkpoint through ``Checkpoint.from_provenance``), so a shrunk
checkpoint's widths survive export. The input shape is the spec's ``input_shape``, else what
the checkpoint (or the registry, for ``model``) records; nothing is guessed. A model
registered by a ``--plugin`` package is found in child processes through ``SPARSIFY_PLUGINS``.

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

from sparsify.errors import SparsifyError, check_input_shape


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


def _shape(spec: dict[str, Any], recorded: tuple[int, ...] | None, what: str) -> tuple[int, ...]:
    """The spec's ``input_shape``, else ``recorded``; refuses to guess."""
    if spec.get("input_shape") is not None:
        return check_input_shape("--input-shape", list(spec["input_shape"]))
    if recorded is None:
        raise SparsifyError(f"{what} records no input shape; pass --input-shape C H W.")
    return recorded


def _check_takes(model: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """Run one zero input (1, *shape) through ``model`` so a model that cannot take it is
    refused in one line now, not with a raw library error in the middle of the benchmark."""
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *shape))
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        what = f"{shape[0]} channels, input {tuple(shape)}" if len(shape) >= 2 else f"input {shape}"
        raise SparsifyError(
            f"model {name!r} cannot take {what} ({first}); give the --input-shape it was "
            "made for (the zoo's built-ins: C 28 28), or make its builder honour in_channels."
        ) from None


def load_source(spec: dict[str, Any]) -> Source:
    """Build the model of ``spec`` (see the module docstring) in eval mode.

    Raises:
        SparsifyError: unknown kind, unreadable checkpoint or bundle, bad density, unknown
            input shape.
    """
    from sparsify.pipeline import zoo
    from sparsify.pipeline.checkpoint import Checkpoint, load_checkpoint

    kind = spec.get("kind")
    if kind == "checkpoint":
        ckpt = load_checkpoint(spec["path"])
        model = ckpt.build_model()
        shape = _shape(spec, ckpt.input_shape, str(ckpt.path))
        return Source(spec, Path(spec["path"]).name, model, shape)
    if kind == "bundle":
        from sparsify.export.bundle_format import MANIFEST
        from sparsify.export.scipy_bundle import load_state_dict

        path = Path(spec["path"])
        manifest = json.loads((path / MANIFEST).read_text())
        source = manifest.get("source") or {}
        if not isinstance(source, dict) or source.get("kind") != "checkpoint":
            raise SparsifyError(
                f"{path}: the bundle was not exported from a checkpoint, so its architecture "
                "is unknown; export it with sparsify export CHECKPOINT, or bench the checkpoint."
            )
        ckpt = Checkpoint.from_provenance(path, load_state_dict(path), source)
        model = ckpt.build_model()
        shape = _shape(spec, ckpt.input_shape, str(path))
        return Source(spec, path.name, model, shape, path)
    if kind == "linear":
        torch.manual_seed(int(spec.get("seed", 0)))
        n_in, n_out, d = int(spec["in"]), int(spec["out"]), float(spec["density"])
        model = nn.Sequential(nn.Linear(n_in, n_out)).eval()
        impose_density_(model, d)
        return Source(spec, f"Linear {n_in}x{n_out} @ {1 - d:.0%} zeros", model, (n_in,))
    if kind == "mlp":
        torch.manual_seed(int(spec.get("seed", 0)))
        sizes, d = [int(v) for v in spec["sizes"]], float(spec["density"])
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers[:-1]).eval()
        impose_density_(model, d)
        label = f"MLP {'-'.join(map(str, sizes))} @ {1 - d:.0%} zeros"
        return Source(spec, label, model, (sizes[0],))
    if kind == "model":
        torch.manual_seed(int(spec.get("seed", 0)))
        d = float(spec["density"])
        name = spec["name"]
        zoo.require_known(name)  # before the shape: "records no input shape" hid a typo
        given = spec.get("input_shape")
        # an image shape (C, H, W...) says the channels; a flat one (N,) leaves the default
        channels = int(given[0]) if given is not None and len(given) >= 2 else None
        shape = _shape(spec, zoo.declared_input_shape(name, channels), f"model {name!r}")
        model = zoo.build_model(name, **({} if channels is None else {"in_channels": channels}))
        _check_takes(model.eval(), name, shape)
        impose_density_(model, d)
        return Source(spec, f"{name} @ {1 - d:.0%} zeros", model, shape)
    raise SparsifyError(
        f"unknown source kind {kind!r}; use checkpoint, bundle, linear, mlp or model."
    )


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
