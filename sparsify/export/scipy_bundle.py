"""Write a model as a scipy bundle: sparse weights, compact encodings, a JSON manifest.

Layout and format: :mod:`sparsify.export.bundle_format`. The reader is torch-free
(:func:`sparsify.export.bundle_reader.load_bundle`, re-exported by :mod:`sparsify.runtime`); :func:`load_state_dict` here is the torch-side
helper that turns a bundle back into a torch state_dict, bit-identical to the source (whose
-0.0 entries are stored as +0.0, as a checkpoint stores them).

    ckpt = load_checkpoint("runs/quickstart")
    export_scipy_bundle(ckpt.build_model(), "runs/quickstart_scipy", provenance=ckpt.provenance())
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from sparsify.errors import SparsifyError, check_choice
from sparsify.export import bundle_format as bf
from sparsify.export.encoding import EncodedTensor, encode, encoded_nbytes
from sparsify.fileio import atomic_directory

Source = nn.Module | Mapping[str, Any]  # a module, or a state_dict (no graph)


def resolve_source(
    source: Source, provenance: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], nn.Module | None, dict[str, Any]]:
    """(state_dict, model or None, provenance) of a module or a state_dict mapping.

    ``provenance`` (JSON-able facts the caller knows: a checkpoint's digest and recipe...)
    replaces the default ``{"kind": "module" | "state_dict", ...}``. A checkpoint is the
    caller's to resolve: ``ckpt.build_model()`` and ``ckpt.provenance()``.

    Raises:
        SparsifyError: anything else (a path, a Checkpoint object...).
    """
    if isinstance(source, nn.Module):
        state = {k: v.detach().cpu() for k, v in source.state_dict().items()}
        default = {"kind": "module", "class": type(source).__name__, "recipe": None}
        return state, source, dict(provenance) if provenance is not None else default
    if isinstance(source, Mapping):
        state = {
            k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
            for k, v in source.items()
        }
        default = {"kind": "state_dict", "recipe": None}
        return state, None, dict(provenance) if provenance is not None else default
    raise SparsifyError(
        f"cannot export a {type(source).__name__}; give an nn.Module or a state_dict (for a "
        "checkpoint: load_checkpoint(path).build_model())."
    )


def tensor_to_numpy(name: str, t: torch.Tensor) -> np.ndarray:
    """``t`` as a numpy array (CPU, contiguous), floating -0.0 as +0.0 (a zero is a zero:
    ``w * mask`` and ``prune.remove`` leave -0.0, which would otherwise be stored as a
    value); refuses bfloat16 and torch sparse layouts."""
    if t.layout != torch.strided:
        raise SparsifyError(
            f"tensor {name!r} is a torch sparse tensor; save it dense (exact zeros)."
        )
    if t.dtype == torch.bfloat16:
        raise SparsifyError(
            f"tensor {name!r} is bfloat16, which numpy cannot hold; cast the model to float32 first."
        )
    a = t.detach().cpu().contiguous().numpy()
    if a.dtype.kind == "f":
        a = a + a.dtype.type(0)  # -0.0 + 0.0 == +0.0; every other value (NaN too) unchanged
    return a


def export_scipy_bundle(
    source: Source,
    out_dir: str | os.PathLike[str],
    *,
    provenance: Mapping[str, Any] | None = None,
    sparse_format: str = "csr",
    blocksize: tuple[int, int] | None = None,
    store: str = "both",
    codec: str = "auto",
    graph: bool = True,
) -> dict[str, Any]:
    """Write ``source`` as a scipy bundle in ``out_dir`` (atomically) and return its manifest.

    Every float32 tensor of rank >= 2 is a prunable weight: a scipy sparse array of the
    (out, in * kh * kw) matrix in ``sparse_format`` and/or its compact encoding; any other
    tensor is ``zeros`` (no array) when every bit is 0, else its compact encoding when that
    is smaller (a float32 bias with pruned entries), else dense. Layout (``manifest.json``
    + ``arrays.bin``): :mod:`sparsify.export.bundle_format`. The directory appears complete
    or not at all.

    Args:
        source: an ``nn.Module`` or a state_dict mapping (a mapping needs ``graph=False``).
            Floating -0.0 is stored as +0.0 and counted as a zero.
        provenance: JSON-able facts about the source, stored as the manifest's ``source``
            (the CLI gives a checkpoint's ``provenance()``: digest, recipe, model name,
            input shape); default ``{"kind": "module", "class": ...}``.
        out_dir: the bundle directory; an existing one is replaced only if it is empty or a bundle.
        sparse_format: ``csr`` (default), ``csc``, ``coo`` or ``bsr``.
        blocksize: BSR block (rows, cols); must divide the matrix; default (1, 1).
        store: ``both`` (scipy arrays and compact encoding), ``scipy`` or ``compact``
            (the reader then builds the scipy arrays from the encoding, bit-exactly).
        codec: how compact encodings and dense tensors are stored (scipy parts are always
            raw): ``auto`` (default) deflates each array whose byte planes deflate smaller
            (trained values' sign/exponent bytes compress well), ``zlib`` deflates every
            one, ``none`` keeps raw bytes (the size the information bound speaks of).
        graph: capture the forward for :mod:`sparsify.runtime` (refuses unsupported ops).

    Raises:
        SparsifyError: empty model, unsupported op (graph=True), bad argument, bfloat16 tensor.
    """
    import sparsify

    check_choice("export_scipy_bundle", "sparse_format", sparse_format, bf.SPARSE_FORMATS)
    check_choice("export_scipy_bundle", "store", store, bf.STORES)
    check_choice("export_scipy_bundle", "codec", codec, bf.CODECS)
    state, model, provenance = resolve_source(source, provenance)
    if not state:
        raise SparsifyError(
            "refusing to export an empty model: its state_dict has no tensors; "
            "give a model with parameters."
        )
    graph_json = None
    if graph:
        from sparsify.export.graph import capture_graph

        if model is None:
            raise SparsifyError(
                "a bare state_dict has no forward to capture; pass the nn.Module, or graph=False."
            )
        graph_json = capture_graph(model)
    arrays = {name: tensor_to_numpy(name, t) for name, t in state.items()}
    out = Path(out_dir)
    entries: list[dict[str, Any]] = []
    with (
        atomic_directory(out, is_ours=bf.is_bundle_dir) as tmp,
        open(tmp / bf.DATA_FILE, "wb") as f,
    ):
        # written in place: the whole directory is published atomically, or not at all
        container = _Container(f, codec)
        for name, a in arrays.items():
            shape = tuple(int(s) for s in a.shape)
            entry: dict[str, Any] = {"name": name, "shape": list(shape), "dtype": a.dtype.name}
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                # declared, so the reader can tell a model that holds NaN/inf from damage
                entry["nonfinite"] = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bf.is_prunable(shape, a.dtype):
                entry.update(_sparse_entry(name, a, container, store, sparse_format, blocksize))
            else:
                storage, enc = plain_storage(a)
                entry["storage"] = storage
                if enc is not None:
                    entry["compact"] = _compact_section(enc, container)
                elif storage == "dense":
                    entry["arrays"] = {"array": container.put(a)}
            entries.append(entry)
        f.flush()
        manifest = {
            "format": bf.FORMAT,
            "format_version": bf.FORMAT_VERSION,
            "sparsify_version": sparsify.__version__,
            "source": provenance,
            "store": store,
            "codec": codec,
            "data": {"path": bf.DATA_FILE, "bytes": container.size},
            "state_sha256": bf.state_digest(arrays),
            "tensors": entries,
            "graph": graph_json,
        }
        # as the reader will parse it (tuples become lists), then the digest over all of it:
        # the graph and every other field the array digests do not cover
        manifest = json.loads(json.dumps(manifest))
        manifest[bf.DIGEST_KEY] = bf.manifest_digest(manifest)
        # minified JSON: the manifest counts towards the bundle's footprint
        (tmp / bf.MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
    return manifest


def plain_storage(a: np.ndarray) -> tuple[str, EncodedTensor | None]:
    """How a tensor that is not a prunable weight is stored: ``("zeros", None)`` when every
    bit is 0 (a fresh BatchNorm's bias, running_mean, step count: shape and dtype say it
    all), ``("compact", encoding)`` for float32 whose encoding is smaller than its dense
    bytes (a bias with pruned entries), else ``("dense", None)``."""
    if not np.ascontiguousarray(a).reshape(-1).view(np.uint8).any():
        return "zeros", None
    if a.dtype == np.float32:
        enc = encode(a)
        if encoded_nbytes(enc) < a.nbytes:
            return "compact", enc
    return "dense", None


class _Container:
    """Appends arrays back to back to ``arrays.bin`` and hands out their manifest refs."""

    def __init__(self, f: BinaryIO, codec: str) -> None:
        self.f = f
        self.codec = codec
        self.size = 0

    def put(self, array: np.ndarray, raw: bool = False) -> dict[str, Any]:
        """Append ``array`` (deflated per the codec unless ``raw``); return its reference."""
        data, codec = bf.pack_smallest(array, "none" if raw else self.codec)
        ref: dict[str, Any] = {"offset": self.size, "bytes": len(data)}
        if codec != "none":
            ref["codec"] = codec
        ref.update(dtype=array.dtype.name, shape=list(array.shape), sha256=bf.sha256_bytes(data))
        self.f.write(data)
        self.size += len(data)
        return ref


def _compact_section(enc: EncodedTensor, container: _Container) -> dict[str, Any]:
    # no payload size: the two array references carry it (the manifest is minimal)
    return {
        "scheme": enc.scheme,
        "arrays": {"values": container.put(enc.values), "positions": container.put(enc.positions)},
    }


def _sparse_entry(
    name: str,
    a: np.ndarray,
    container: _Container,
    store: str,
    sparse_format: str,
    blocksize: tuple[int, int] | None,
) -> dict[str, Any]:
    """The manifest fields of one prunable weight; its arrays go into ``container``."""
    matrix = a.reshape(bf.matrix_shape(a.shape))
    nnz = int((a.view(np.uint32) != 0).sum())
    entry: dict[str, Any] = {
        "storage": "sparse",
        "matrix_shape": list(matrix.shape),
        "nnz": nnz,
        "density": nnz / a.size if a.size else 0.0,
    }
    if store in ("both", "scipy"):
        try:
            m = bf.to_sparse(matrix, sparse_format, blocksize)
        except SparsifyError as exc:
            raise SparsifyError(f"tensor {name!r}: {exc}") from None
        parts = bf.sparse_parts(m)
        entry["scipy"] = {
            "format": sparse_format,
            "blocksize": list(m.blocksize) if sparse_format == "bsr" else None,
            # scipy parts stay raw (never deflated): they are the arrays scipy uses
            "arrays": {
                p: container.put(parts[p], raw=True) for p in bf.SPARSE_PARTS[sparse_format]
            },
        }
    if store in ("both", "compact"):
        entry["compact"] = _compact_section(encode(a), container)
    return entry


def load_state_dict(bundle_dir: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The bundle's state_dict as torch tensors (verified, bit-identical to what was stored)."""
    from sparsify.export.bundle_reader import load_bundle

    bundle = load_bundle(bundle_dir)
    return {k: torch.from_numpy(np.array(v)) for k, v in bundle.state_dict.items()}
