"""Checkpoints: weights in safetensors with the applied recipe and a checksum inside.

A checkpoint is a directory holding
    model.safetensors   every tensor of the state_dict; header metadata carries the format
                        version, the recipe (JSON), the toolkit version and a sha256 of
                        the tensor data, so one file is self-describing
    recipe.yaml         the same recipe, for people
    metrics.json        what training measured

safetensors holds no code, so loading a checkpoint a user was handed runs nothing.

A shrunk checkpoint (``sparsify shrink``, or a recipe's shrink stage) holds narrower tensors
than the recipe's architecture; its metadata key ``shrunk`` (JSON ``{layer: [out, in]}``)
says so, and :meth:`Checkpoint.build_model` then resizes the model to the tensors before
the strict load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from sparsify.pipeline.recipe import Recipe, dump_recipe
from sparsify.pipeline.zoo import build_model
from sparsify.structure.surgery import resize_to_state_dict_

FORMAT = "sparsify.checkpoint"  # a file-format name: stays when the module moves
FORMAT_VERSION = "1"
WEIGHTS = "model.safetensors"
SHRUNK = "shrunk"  # metadata key of a shrunk checkpoint: JSON {layer: [out, in]}
RESERVED = ("format", "format_version", "sparsify_version", "recipe", "sha256")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the state_dict, the recipe that made it, and its metadata."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    recipe: Recipe
    metadata: dict[str, str]

    @property
    def shrunk(self) -> bool:
        """True when the checkpoint was written after shrinking (narrower than the recipe's model)."""
        return SHRUNK in self.metadata

    def build_model(self, resize: bool | None = None) -> nn.Module:
        """The recipe's architecture with these weights loaded (strict), in eval mode.

        A shrunk checkpoint's model (or any, with ``resize=True``) is first given the
        tensors' widths (:func:`~sparsify.structure.surgery.resize_to_state_dict_`); names must still
        match exactly.
        """
        spec = self.recipe.model
        model = build_model(spec.name, spec.num_classes, spec.in_channels)
        if self.shrunk if resize is None else resize:
            resize_to_state_dict_(model, self.state_dict)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise SparsifyError(
                f"{self.path}: weights do not fit model {spec.name!r} ({first})."
            ) from None
        return model.eval()


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    state: Mapping[str, torch.Tensor] | nn.Module,
    recipe: Recipe,
    metrics: Mapping[str, Any] | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state`` (a state_dict or a model) with ``recipe`` and ``metrics`` to ``out_dir``.

    ``extra_metadata`` adds string entries to the safetensors header (e.g. ``shrunk``); the
    keys the format itself uses (``format``, ``recipe``, ``sha256``, ...) are refused.
    Each file is written atomically; returns the path of ``model.safetensors``.
    """
    import sparsify

    if isinstance(state, nn.Module):
        state = state.state_dict()
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    for t in tensors.values():  # -0.0 -> +0.0: a zero is stored as the zero bit pattern
        if torch.is_floating_point(t):
            t.add_(0.0)
    if not tensors:
        raise SparsifyError(
            "refusing to save an empty state_dict: the model has no parameters or buffers."
        )
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sparsify_version": sparsify.__version__,
        "recipe": json.dumps(recipe.to_dict(), sort_keys=True),
        "sha256": tensors_digest(tensors),
    }
    for key, value in (extra_metadata or {}).items():
        if key in RESERVED or not isinstance(value, str):
            raise SparsifyError(
                f"extra_metadata[{key!r}]: give a string value under a key other than "
                f"{', '.join(RESERVED)}."
            )
        metadata[key] = value
    out = Path(out_dir)
    path = atomic_write_bytes(out / WEIGHTS, st_save(tensors, metadata=metadata))
    atomic_write_text(out / "recipe.yaml", dump_recipe(recipe))
    if metrics is not None:
        atomic_write_json(out / "metrics.json", dict(metrics))
    return path


def _weights_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS
    if not p.is_file():
        raise SparsifyError(
            f"checkpoint {p} does not exist; give a run directory or its {WEIGHTS}."
        )
    return p


def load_checkpoint(path: str | os.PathLike[str], verify: bool = True) -> Checkpoint:
    """Load a checkpoint directory (or its ``model.safetensors``) and check its integrity.

    Raises:
        SparsifyError: missing or unreadable file, foreign format, unsupported version,
            invalid recipe, or tensor data that does not match the stored sha256.
    """
    p = _weights_path(path)
    try:
        with safe_open(str(p), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no iterator
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SparsifyError(
            f"{p}: not a readable safetensors file ({exc}); the file is damaged."
        ) from None
    if metadata.get("format") != FORMAT:
        raise SparsifyError(
            f"{p}: not a sparsify checkpoint (metadata 'format' is {metadata.get('format')!r})."
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise SparsifyError(
            f"{p}: checkpoint format version {metadata.get('format_version')!r} is not supported "
            f"(this sparsify reads {FORMAT_VERSION}); upgrade sparsify."
        )
    if verify and tensors_digest(state) != metadata.get("sha256"):
        raise SparsifyError(f"{p}: tensor data does not match its sha256; the file is corrupted.")
    bad = [
        k
        for k, t in state.items()
        if torch.is_floating_point(t) and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise SparsifyError(
            f"{p}: tensor {bad[0]!r} holds NaN or inf values; the run diverged or the file was edited."
        )
    try:
        recipe_data = json.loads(metadata.get("recipe", ""))
    except json.JSONDecodeError:
        raise SparsifyError(
            f"{p}: the stored recipe is not valid JSON; the file is corrupted."
        ) from None
    recipe = Recipe.from_dict(recipe_data, source=f"{p} (stored recipe)")
    return Checkpoint(path=p, state_dict=state, recipe=recipe, metadata=metadata)
