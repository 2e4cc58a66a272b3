"""Checkpoints: weights in safetensors, with what is needed to rebuild the model, under a checksum.

A checkpoint is a directory holding
    model.safetensors   every tensor of the state_dict; its header metadata (all strings):
                          format            "sparsify.checkpoint"
                          format_version    "2" (this sparsify writes 2, reads 1 and 2)
                          sparsify_version  the toolkit that wrote it
                          model             the model's registry name (optional: a user's own
                                            module saved without a name loads only into a
                                            module the user builds, ``load_checkpoint(p, model=m)``)
                          model_args        JSON keyword arguments for the registry's builder
                                            (optional; from a recipe: num_classes, in_channels)
                          input_shape       JSON list: one input without the batch, e.g. [3, 64, 64]
                          recipe            JSON of the recipe that trained it (optional)
                          shrunk            JSON {layer: [out, in]} when written after shrinking
                          sha256            see below
    recipe.yaml         the same recipe, for people (when there is one)
    metrics.json        what training measured (when given)

Digest. Version 2: sha256 over (name, dtype, shape, bytes) of every tensor in sorted name
order, then over the canonical JSON of every other header entry (``sha256`` itself
excluded), so the recipe, model name and input shape are covered too. Version 1 files (the
first format) hashed the tensors only and carried no ``model``/``input_shape``: they still
load; their model is the recipe's and, for a zoo model, their input shape is taken as
(in_channels, 28, 28) -- the MNIST shape every v1 zoo checkpoint was trained on. A v1
torchvision checkpoint has no input shape: pass one (``--input-shape``).

safetensors holds no code, so loading a checkpoint a user was handed runs nothing; the model
it names must already be registered here (built-ins, ``torchvision:``, or a plugin the user
chose to import), and a torchvision name is checked against the tensors on the meta device
before any memory is allocated for it.

A shrunk checkpoint holds narrower tensors than its architecture's defaults;
:meth:`Checkpoint.build_model` gives the model the tensors' widths
(:func:`~sparsify.structure.surgery.resize_to_state_dict_`) before the strict load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from sparsify.errors import SparsifyError, check_input_shape
from sparsify.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    loads_json_bounded,
)
from sparsify.pipeline import zoo
from sparsify.pipeline.recipe import Recipe, dump_recipe
from sparsify.structure.surgery import resize_to_state_dict_

FORMAT = "sparsify.checkpoint"  # a file-format name: stays when the module moves
FORMAT_VERSION = "2"
READ_VERSIONS = ("1", "2")
WEIGHTS = "model.safetensors"
SHRUNK = "shrunk"  # metadata key of a shrunk checkpoint: JSON {layer: [out, in]}
MODEL = "model"
MODEL_ARGS = "model_args"
INPUT_SHAPE = "input_shape"
RESERVED = (
    "format",
    "format_version",
    "sparsify_version",
    "recipe",
    "sha256",
    MODEL,
    MODEL_ARGS,
    INPUT_SHAPE,
)
V1_ZOO_HW = (28, 28)  # the only input-size fallback: version-1 zoo checkpoints (MNIST)
# a shrunk checkpoint's model is built at full width first: at most this much larger than
# its weights (a shrink removes dead units; it does not leave 1/1000 of a model)
SHRUNK_RATIO, SHRUNK_FLOOR = 1024, 256 << 20


@dataclass
class Checkpoint:
    """A loaded checkpoint: the state_dict, the recipe that made it (if any), and its metadata."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    recipe: Recipe | None
    metadata: dict[str, str]

    @property
    def shrunk(self) -> bool:
        """True when the checkpoint was written after shrinking (narrower than the recipe's model)."""
        return SHRUNK in self.metadata

    @property
    def model_name(self) -> str | None:
        """The registry name of the model (header ``model``, else the recipe's), or None."""
        name = self.metadata.get(MODEL)
        if name:
            return name
        return self.recipe.model.name if self.recipe is not None else None

    @property
    def model_args(self) -> dict[str, Any]:
        """Keyword arguments for the model's builder: header ``model_args``, else the recipe's
        ``num_classes``/``in_channels``, else none."""
        if MODEL_ARGS in self.metadata:
            return dict(json.loads(self.metadata[MODEL_ARGS]))
        if self.recipe is not None:
            spec = self.recipe.model
            return {"num_classes": spec.num_classes, "in_channels": spec.in_channels}
        return {}

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """One input without the batch dimension (header ``input_shape``), or None if unknown.

        Version-1 zoo checkpoints, which predate the field, give ``(in_channels, 28, 28)``.
        """
        if INPUT_SHAPE in self.metadata:
            return tuple(json.loads(self.metadata[INPUT_SHAPE]))
        if (
            self.metadata.get("format_version") == "1"
            and self.recipe is not None
            and self.recipe.model.name in zoo.BUILTIN_NAMES
        ):
            return (self.recipe.model.in_channels, *V1_ZOO_HW)
        return None

    def resolve_input_shape(self, override: Sequence[int] | None = None) -> tuple[int, ...]:
        """``override`` when given, else :attr:`input_shape`.

        Raises:
            SparsifyError: neither is known (one line: pass --input-shape).
        """
        if override is not None:
            return check_input_shape("input_shape", override)
        shape = self.input_shape
        if shape is None:
            raise SparsifyError(
                f"{self.path}: the checkpoint records no input shape; pass --input-shape C H W "
                "(or input_shape=...)."
            )
        return shape

    def example_input(
        self, batch: int = 1, input_shape: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``zeros(batch, *input_shape)``: a tracing/timing input of the recorded shape
        (``input_shape`` overrides it). Raises SparsifyError when no shape is known."""
        return torch.zeros(batch, *self.resolve_input_shape(input_shape))

    def build_model(self, resize: bool | None = None) -> nn.Module:
        """The ONE way to rebuild a model from saved weights: the named model with these
        weights loaded strictly, in eval mode.

        The registry builds ``model_name`` with ``model_args``; a shrunk checkpoint's model
        (or any, with ``resize=True``: a state_dict shrunk by hand) is then given the
        tensors' widths (:func:`~sparsify.structure.surgery.resize_to_state_dict_`), and the
        weights are loaded with ``strict=True`` (every name and shape must match).

        Raises:
            SparsifyError: no model name (load into your own module instead), a name not
                registered here, or weights that do not fit.
        """
        name = self.model_name
        if name is None:
            raise SparsifyError(
                f"{self.path}: the checkpoint names no model; load it into your own module "
                "(load_checkpoint(path, model=MyNet())) or save it with name=..."
            )
        if not zoo.is_known(name):
            raise SparsifyError(
                f"{self.path}: {zoo.unknown_model_message(name)}; e.g. --plugin PKG "
                "for the package that registers it."
            )
        self._check_on_meta(name, self.shrunk if resize is None else resize)
        model = zoo.build_registered(name, self.model_args)
        return self.load_into(model, resize=resize)

    def load_into(self, model: nn.Module, resize: bool | None = None) -> nn.Module:
        """Load these weights strictly into ``model`` (the caller's module); returns it in eval mode.

        A shrunk checkpoint (or any, with ``resize=True``) first resizes ``model``'s
        Linear/Conv/BatchNorm layers to the tensors' widths.

        Raises:
            SparsifyError: names or shapes that do not fit (one line, the first mismatch).
        """
        if self.shrunk if resize is None else resize:
            resize_to_state_dict_(model, self.state_dict)
        what = f"model {self.model_name!r}" if self.model_name else type(model).__name__
        for key, want in model.state_dict().items():
            got = self.state_dict.get(key)
            if got is not None and got.dtype != want.dtype:  # load_state_dict would cast it
                raise SparsifyError(
                    f"{self.path}: tensor {key!r} is {got.dtype} but {what} holds {want.dtype}; "
                    "the file was edited, or convert your module to that dtype before loading."
                )
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            first = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
            raise SparsifyError(
                f"{self.path}: weights do not fit {what} ({first[:200]})."
            ) from None
        return model.eval()

    def _check_on_meta(self, name: str, resize: bool) -> None:
        """Build ``name`` with the header's ``model_args`` on the meta device (no memory) and
        compare it with the tensors before the real build: an untrusted header could name a
        huge torchvision model or absurd ``model_args`` (``num_classes: 10**12``).

        Names and dtypes must match; shapes must match exactly, or (``resize``: a shrunk
        checkpoint) have the same rank and be no wider, with the unshrunk model at most
        ``SHRUNK_RATIO`` times the file's tensors (and never less than ``SHRUNK_FLOOR``
        bytes). A plugin's model that cannot be built on the meta device is not pre-checked
        (the user chose to import that code); the strict load still checks it.
        """
        try:
            with torch.device("meta"):
                meta = zoo.build_registered(name, self.model_args)
        except SparsifyError:
            raise
        except Exception as exc:  # noqa: BLE001 - a builder refusing these arguments
            if name in zoo.BUILTIN_NAMES or name.startswith(zoo.TORCHVISION_PREFIX):
                first = (str(exc).strip().splitlines() or [""])[0][:160]
                raise SparsifyError(
                    f"{self.path}: header model_args {self.model_args} do not build model "
                    f"{name!r} ({type(exc).__name__}: {first}); the file was edited."
                ) from None
            return
        expected = meta.state_dict()
        if set(expected) != set(self.state_dict):
            missing = sorted(set(expected) - set(self.state_dict))[:1]
            extra = sorted(set(self.state_dict) - set(expected))[:1]
            raise SparsifyError(
                f"{self.path}: weights do not fit model {name!r} (missing {missing}, "
                f"unexpected {extra})."
            )
        model_bytes = file_bytes = 0
        for key, want in expected.items():
            got = self.state_dict[key]
            fits = got.shape == want.shape or (
                resize
                and got.dim() == want.dim()
                and all(g <= w for g, w in zip(got.shape, want.shape))
            )
            if not fits or got.dtype != want.dtype:
                raise SparsifyError(
                    f"{self.path}: weights do not fit model {name!r}: tensor {key!r} is "
                    f"{got.dtype} {tuple(got.shape)}, the model built with {self.model_args} "
                    f"holds {want.dtype} {tuple(want.shape)}; the file was edited or its header "
                    "does not match."
                )
            model_bytes += want.numel() * want.element_size()
            file_bytes += got.numel() * got.element_size()
        if model_bytes > max(SHRUNK_FLOOR, SHRUNK_RATIO * file_bytes):
            raise SparsifyError(
                f"{self.path}: model {name!r} built with {self.model_args} would take "
                f"{model_bytes:,} bytes for {file_bytes:,} bytes of weights; the header was edited."
            )

    def provenance(self) -> dict[str, Any]:
        """What an export records about this checkpoint (JSON-able): enough for
        :meth:`from_provenance` to rebuild the model from the exported weights."""
        out: dict[str, Any] = {
            "kind": "checkpoint",
            "path": str(self.path),
            "checkpoint_sha256": self.metadata.get("sha256"),
            "recipe": self.recipe.to_dict() if self.recipe is not None else None,
            MODEL: self.model_name,
            MODEL_ARGS: self.model_args,
            INPUT_SHAPE: list(self.input_shape) if self.input_shape is not None else None,
        }
        if self.shrunk:
            out[SHRUNK] = self.metadata[SHRUNK]
        return out

    @classmethod
    def from_provenance(
        cls, path: Path, state_dict: dict[str, torch.Tensor], provenance: Mapping[str, Any]
    ) -> Checkpoint:
        """A Checkpoint of ``state_dict`` (e.g. read back from a scipy bundle) described by the
        ``provenance`` an export wrote (:meth:`provenance`), checked as a header would be.

        Raises:
            SparsifyError: provenance that names no model and no recipe, or malformed fields.
        """
        prov = dict(provenance or {})
        metadata: dict[str, str] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        recipe = None
        if prov.get("recipe") is not None:
            recipe = Recipe.from_dict(prov["recipe"], source=f"{path} (stored recipe)")
        if prov.get(MODEL):
            metadata[MODEL] = str(prov[MODEL])
        if prov.get(MODEL_ARGS) is not None:
            metadata[MODEL_ARGS] = json.dumps(prov[MODEL_ARGS], sort_keys=True)
        if prov.get(INPUT_SHAPE) is not None:
            metadata[INPUT_SHAPE] = json.dumps(
                list(check_input_shape(str(path), prov[INPUT_SHAPE]))
            )
        elif recipe is not None and recipe.model.name in zoo.BUILTIN_NAMES:
            # a bundle exported before input_shape was recorded came from a v1 zoo checkpoint
            metadata["format_version"] = "1"
        if prov.get(SHRUNK) is not None:
            metadata[SHRUNK] = str(prov[SHRUNK])
        _check_header(path, metadata)
        if recipe is None and MODEL not in metadata:
            raise SparsifyError(
                f"{path}: it records neither a model name nor a recipe, so its architecture "
                "is unknown; export it from a checkpoint that names its model."
            )
        return cls(path=path, state_dict=state_dict, recipe=recipe, metadata=metadata)


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted name order (v1 rule)."""
    return _tensors_hash(state).hexdigest()


def _tensors_hash(state: Mapping[str, torch.Tensor]) -> Any:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h


def checkpoint_digest(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """Version-2 digest: the tensors as :func:`tensors_digest`, then the canonical JSON of
    every header entry but ``sha256`` (so recipe, model and input shape are covered)."""
    h = _tensors_hash(state)
    header = {k: v for k, v in metadata.items() if k != "sha256"}
    h.update(b"\x00header\x00" + json.dumps(header, sort_keys=True).encode())
    return h.hexdigest()


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    state: Mapping[str, torch.Tensor] | nn.Module,
    recipe: Recipe | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra_metadata: Mapping[str, str] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    model_name: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state`` (a state_dict or a model) to ``out_dir`` as a version-2 checkpoint.

    Args:
        out_dir: the checkpoint directory (created if needed).
        state: the weights; floating-point -0.0 is written as +0.0 (a zero is a zero).
        recipe: the recipe that trained it, or None for a model trained elsewhere.
        metrics: written to ``metrics.json`` when given.
        extra_metadata: more string header entries (e.g. ``shrunk``); the format's own keys
            are refused.
        input_shape: one input without the batch dimension, e.g. ``(3, 64, 64)``; default
            the registry's declared shape for the model (the built-ins: ``(in_channels, 28,
            28)``), else unrecorded (torchvision models take any size: pass it).
        model_name: the registry name to rebuild it with; default the recipe's model.
        model_args: keyword arguments for that builder; default the recipe's
            ``num_classes``/``in_channels`` (none without a recipe).

    Each file is written atomically; returns the path of ``model.safetensors``.

    Raises:
        SparsifyError: an empty state_dict, a malformed input shape, model args that are
            not JSON, or reserved/non-string ``extra_metadata``.
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
    }
    if recipe is not None:
        metadata["recipe"] = json.dumps(recipe.to_dict(), sort_keys=True)
    name = model_name or (recipe.model.name if recipe is not None else None)
    if name:
        metadata[MODEL] = name
    if model_args is None and recipe is not None:
        model_args = {
            "num_classes": recipe.model.num_classes,
            "in_channels": recipe.model.in_channels,
        }
    if model_args:
        try:
            metadata[MODEL_ARGS] = json.dumps(dict(model_args), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            raise SparsifyError(
                f"model_args {dict(model_args)!r} must be JSON (numbers, strings, lists, dicts)."
            ) from None
    if input_shape is None and name:
        # the shape the registry declares for it (the built-ins: (in_channels, 28, 28))
        channels = recipe.model.in_channels if recipe is not None else None
        input_shape = zoo.declared_input_shape(name, channels)
    if input_shape is not None:
        metadata[INPUT_SHAPE] = json.dumps(list(check_input_shape("save_checkpoint", input_shape)))
    for key, value in (extra_metadata or {}).items():
        if key in RESERVED or not isinstance(value, str):
            raise SparsifyError(
                f"extra_metadata[{key!r}]: give a string value under a key other than "
                f"{', '.join(RESERVED)}."
            )
        metadata[key] = value
    metadata["sha256"] = checkpoint_digest(tensors, metadata)
    out = Path(out_dir)
    path = atomic_write_bytes(out / WEIGHTS, st_save(tensors, metadata=metadata))
    if recipe is not None:
        atomic_write_text(out / "recipe.yaml", dump_recipe(recipe))
    if metrics is not None:
        atomic_write_json(out / "metrics.json", dict(metrics))
    return path


def checkpoint_from_module(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    input_shape: Sequence[int],
    name: str | None = None,
    *,
    model_args: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Save your own ``model`` as a checkpoint the CLI can read, in one call.

    ``sparsify stats|export|footprint|bench|shrink`` then work on ``out_dir``. With ``name``
    (a model registered by ``sparsify.register_model(name, fn)``, e.g. in the package you
    pass as ``--plugin``) the CLI rebuilds the model as ``fn(**model_args)``; without one,
    ``load_checkpoint(out_dir, model=MyNet())`` loads it into a module you build.

    Args:
        out_dir: the checkpoint directory.
        model: the trained module (its state_dict is saved; -0.0 stored as +0.0).
        input_shape: one input without the batch dimension, e.g. ``(3, 64, 64)``.
        name: its registry name, or None.
        model_args: keyword arguments for the registered builder (JSON).
        metrics: anything to keep in ``metrics.json``.

    Returns:
        the path of ``model.safetensors``.

    Raises:
        SparsifyError: ``name`` not registered here, a malformed input shape, an empty model.
    """
    if name is not None and not zoo.is_known(name):
        raise SparsifyError(zoo.unknown_model_message(name) + ".")
    return save_checkpoint(
        out_dir,
        model,
        None,
        metrics,
        input_shape=input_shape,
        model_name=name,
        model_args=model_args if model_args is not None else {},
    )


def _weights_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS
    if not p.exists():
        raise SparsifyError(
            f"checkpoint {p} does not exist; give a run directory or its {WEIGHTS}."
        )
    if not p.is_file():  # a FIFO, socket or device: reading it would block or never end
        raise SparsifyError(
            f"checkpoint {p} is not a regular file; give a run directory or its {WEIGHTS}."
        )
    return p


def is_checkpoint_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a safetensors file whose header names the sparsify checkpoint
    format (only the header is read; nothing is verified)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False


def _check_header(p: Path, metadata: Mapping[str, str]) -> None:
    """The optional v2 fields are well-formed (a user could hand us any header)."""
    if INPUT_SHAPE in metadata:
        shape = loads_json_bounded(
            metadata[INPUT_SHAPE], f"{p}: header input_shape", fix="the file was edited."
        )
        check_input_shape(f"{p}: header", shape)
    if MODEL_ARGS in metadata:
        args = loads_json_bounded(
            metadata[MODEL_ARGS], f"{p}: header model_args", fix="the file was edited."
        )
        if not isinstance(args, dict):
            raise SparsifyError(
                f"{p}: header model_args is not a JSON object; the file was edited."
            )
    if MODEL in metadata and not metadata[MODEL]:
        raise SparsifyError(f"{p}: header model is empty; the file was edited.")


@overload
def load_checkpoint(
    path: str | os.PathLike[str], verify: bool = True, *, model: None = None
) -> Checkpoint: ...


@overload
def load_checkpoint(
    path: str | os.PathLike[str], verify: bool = True, *, model: nn.Module
) -> nn.Module: ...


def load_checkpoint(
    path: str | os.PathLike[str], verify: bool = True, *, model: nn.Module | None = None
) -> Checkpoint | nn.Module:
    """Load a checkpoint directory (or its ``model.safetensors``) and check its integrity.

    Args:
        path: the checkpoint directory or file.
        verify: check the sha256 (of the tensors and, for version 2, the header).
        model: a module you built: the weights are loaded into it strictly (a shrunk
            checkpoint resizes it first) and the module is returned (eval mode) instead
            of the :class:`Checkpoint`.

    Raises:
        SparsifyError: missing or unreadable file, foreign format, unsupported version,
            invalid recipe or header field, tensor data or header that does not match the
            stored sha256, NaN/inf weights, a tensor with no elements (a 0-unit layer), or
            weights that do not fit ``model``.
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
        hint = (
            " To use weights from another tool, load them into your module and save it with "
            "sparsify.checkpoint_from_module(out_dir, model, input_shape=...)."
        )
        raise SparsifyError(
            f"{p}: not a sparsify checkpoint (metadata 'format' is {metadata.get('format')!r}).{hint}"
        )
    version = metadata.get("format_version")
    if version not in READ_VERSIONS:
        raise SparsifyError(
            f"{p}: checkpoint format version {version!r} is not supported "
            f"(this sparsify reads {', '.join(READ_VERSIONS)}); upgrade sparsify."
        )
    if verify:
        expected = tensors_digest(state) if version == "1" else checkpoint_digest(state, metadata)
        if expected != metadata.get("sha256"):
            raise SparsifyError(
                f"{p}: tensor data or header does not match its sha256; the file is corrupted."
            )
    bad = [
        k
        for k, t in state.items()
        if torch.is_floating_point(t) and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise SparsifyError(
            f"{p}: tensor {bad[0]!r} holds NaN or inf values; the run diverged or the file was edited."
        )
    empty = [k for k, t in state.items() if t.numel() == 0]
    if empty:  # shrink_ keeps one unit of a layer with none alive: 0 units is not a layer
        raise SparsifyError(
            f"{p}: tensor {empty[0]!r} has shape {tuple(state[empty[0]].shape)}: a layer with "
            "0 units computes nothing (sparsify's shrink keeps at least one); the file was "
            "edited or written by another tool."
        )
    _check_header(p, metadata)
    recipe = None
    if "recipe" in metadata or version == "1":  # v1 always had one
        recipe_data = loads_json_bounded(
            metadata.get("recipe", ""), f"{p}: the stored recipe", fix="the file is corrupted."
        )
        recipe = Recipe.from_dict(recipe_data, source=f"{p} (stored recipe)")
    ckpt = Checkpoint(path=p, state_dict=state, recipe=recipe, metadata=metadata)
    if model is not None:
        return ckpt.load_into(model)
    return ckpt
