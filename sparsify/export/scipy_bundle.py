"""Write a checkpoint as a scipy bundle: sparse weights, compact encodings, a JSON manifest.

Layout and format: :mod:`sparsify.export.bundle_format`. The reader is torch-free
(:func:`sparsify.export.bundle_reader.load_bundle`, re-exported by :mod:`sparsify.runtime`); :func:`load_state_dict` here is the torch-side
helper that turns a bundle back into a torch state_dict, bit-identical to the checkpoint.

    export_scipy_bundle("runs/quickstart", "runs/quickstart_scipy")   # csr + compact + graph
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsify.errors import SparsifyError, check_choice
from sparsify.export import bundle_format as bf
from sparsify.export.encoding import encode, encoded_nbytes, entropy_bound_bytes
from sparsify.fileio import atomic_directory

Source = Any  # Checkpoint | str | os.PathLike | nn.Module | Mapping[str, torch.Tensor]


def resolve_source(
    source: Source,
) -> tuple[dict[str, torch.Tensor], nn.Module | None, dict[str, Any]]:
    """(state_dict, model or None, provenance) from a Checkpoint, a checkpoint path, a module
    or a state_dict. A checkpoint's model is built only when the graph is needed.
    """
    from sparsify.checkpoint import Checkpoint, load_checkpoint

    if isinstance(source, Mapping):
        state = {
            k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
            for k, v in source.items()
        }
        return state, None, {"kind": "state_dict", "recipe": None}
    if isinstance(source, nn.Module):
        state = {k: v.detach().cpu() for k, v in source.state_dict().items()}
        return state, source, {"kind": "module", "class": type(source).__name__, "recipe": None}
    if isinstance(source, (str, os.PathLike)):
        source = load_checkpoint(source)
    if isinstance(source, Checkpoint):
        prov = {
            "kind": "checkpoint",
            "path": str(source.path),
            "checkpoint_sha256": source.metadata.get("sha256"),
            "recipe": source.recipe.to_dict(),
        }
        return dict(source.state_dict), None, prov
    raise SparsifyError(
        f"cannot export a {type(source).__name__}; give a checkpoint path, a Checkpoint or an nn.Module."
    )


def tensor_to_numpy(name: str, t: torch.Tensor) -> np.ndarray:
    """``t`` as a numpy array (CPU, contiguous); refuses bfloat16 and torch sparse layouts."""
    if t.layout != torch.strided:
        raise SparsifyError(
            f"tensor {name!r} is a torch sparse tensor; save it dense (exact zeros)."
        )
    if t.dtype == torch.bfloat16:
        raise SparsifyError(
            f"tensor {name!r} is bfloat16, which numpy cannot hold; cast the model to float32 first."
        )
    return t.detach().cpu().contiguous().numpy()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, order="C"), allow_pickle=False)
    return buf.getvalue()


def _check_out_dir(out: Path) -> None:
    """Replace only an empty directory or an earlier bundle: never a checkpoint or a home dir."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SparsifyError(f"--out {out} is a file; choose a directory path.")
    if any(out.iterdir()) and not (out / bf.MANIFEST).is_file():
        raise SparsifyError(
            f"--out {out} exists and is not a sparsify bundle; choose a new or empty directory."
        )


def export_scipy_bundle(
    source: Source,
    out_dir: str | os.PathLike[str],
    *,
    sparse_format: str = "csr",
    blocksize: tuple[int, int] | None = None,
    store: str = "both",
    codec: str = "none",
    graph: bool = True,
) -> dict[str, Any]:
    """Write ``source`` as a scipy bundle in ``out_dir`` (atomically) and return its manifest.

    Every float32 tensor of rank >= 2 is a prunable weight: a scipy sparse array of the
    (out, in * kh * kw) matrix in ``sparse_format`` and/or its compact encoding; every other
    tensor is stored dense. The directory appears complete or not at all.

    Args:
        source: checkpoint directory / ``model.safetensors`` path, a ``Checkpoint``, an
            ``nn.Module`` or a state_dict mapping (the last two carry no recipe; a mapping
            needs ``graph=False``).
        out_dir: the bundle directory; an existing one is replaced only if it is empty or a bundle.
        sparse_format: ``csr`` (default), ``csc``, ``coo`` or ``bsr``.
        blocksize: BSR block (rows, cols); must divide the matrix; default (1, 1).
        store: ``both`` (scipy arrays and compact encoding), ``scipy`` or ``compact``
            (the reader then builds the scipy arrays from the encoding, bit-exactly).
        codec: ``none`` (plain npy) or ``zlib``: the compact files hold the byte planes
            of each array deflated (lossless; values' sign/exponent bytes compress well).
        graph: capture the forward for :mod:`sparsify.runtime` (refuses unsupported ops).

    Raises:
        SparsifyError: empty model, unsupported op (graph=True), bad argument, bfloat16 tensor.
    """
    import sparsify

    check_choice("export_scipy_bundle", "sparse_format", sparse_format, bf.SPARSE_FORMATS)
    check_choice("export_scipy_bundle", "store", store, bf.STORES)
    check_choice("export_scipy_bundle", "codec", codec, bf.CODECS)
    state, model, provenance = resolve_source(source)
    if not state:
        raise SparsifyError(
            "refusing to export an empty model: its state_dict has no tensors; "
            "give a model with parameters."
        )
    graph_json = None
    if graph:
        from sparsify.export.graph import capture_graph

        graph_json = capture_graph(model if model is not None else _model_of(source))
    arrays = {name: tensor_to_numpy(name, t) for name, t in state.items()}
    out = Path(out_dir)
    _check_out_dir(out)
    entries: list[dict[str, Any]] = []
    with atomic_directory(out) as tmp:
        (tmp / bf.ARRAYS_DIR).mkdir()

        def put(
            index: int, name: str, part: str, array: np.ndarray, codec: str = "none"
        ) -> dict[str, Any]:
            rel = bf.file_name(index, name, part)
            data = _npy_bytes(bf.pack(array, codec))
            (tmp / rel).write_bytes(data)  # the whole directory is published atomically
            ref = {"path": rel, "sha256": bf.sha256_bytes(data), "bytes": len(data)}
            if codec != "none":
                ref.update(codec=codec, dtype=array.dtype.name, length=int(array.size))
            return ref

        for index, (name, a) in enumerate(arrays.items()):
            shape = tuple(int(s) for s in a.shape)
            entry: dict[str, Any] = {"name": name, "shape": list(shape), "dtype": a.dtype.name}
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                # declared, so the reader can tell a model that holds NaN/inf from damage
                entry["nonfinite"] = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bf.is_prunable(shape, a.dtype):
                matrix = a.reshape(bf.matrix_shape(shape))
                nnz = int((a.view(np.uint32) != 0).sum())
                entry.update(
                    storage="sparse",
                    matrix_shape=list(matrix.shape),
                    nnz=nnz,
                    density=nnz / a.size if a.size else 0.0,
                    bound_bytes=entropy_bound_bytes(a.size, nnz),
                )
                if store in ("both", "scipy"):
                    try:
                        m = bf.to_sparse(matrix, sparse_format, blocksize)
                    except SparsifyError as exc:
                        raise SparsifyError(f"tensor {name!r}: {exc}") from None
                    parts = bf.sparse_parts(m)
                    entry["scipy"] = {
                        "format": sparse_format,
                        "blocksize": list(m.blocksize) if sparse_format == "bsr" else None,
                        "files": {
                            p: put(index, name, p, parts[p]) for p in bf.SPARSE_PARTS[sparse_format]
                        },
                    }
                if store in ("both", "compact"):
                    enc = encode(a)
                    entry["compact"] = {
                        "scheme": enc.scheme,
                        "nbytes": encoded_nbytes(enc),
                        "files": {
                            "values": put(index, name, "values", enc.values, codec),
                            "positions": put(index, name, "positions", enc.positions, codec),
                        },
                    }
            else:
                entry.update(storage="dense", files={"array": put(index, name, "array", a)})
            entries.append(entry)
        manifest = {
            "format": bf.FORMAT,
            "format_version": bf.FORMAT_VERSION,
            "sparsify_version": sparsify.__version__,
            "source": provenance,
            "store": store,
            "codec": codec,
            "state_sha256": bf.state_digest(arrays),
            "tensors": entries,
            "graph": graph_json,
        }
        # compact JSON: the manifest counts towards the bundle's footprint
        (tmp / bf.MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
    return manifest


def _model_of(source: Source) -> nn.Module:
    from sparsify.checkpoint import Checkpoint, load_checkpoint

    if isinstance(source, Mapping):
        raise SparsifyError(
            "a bare state_dict has no forward to capture; pass the nn.Module or a checkpoint, "
            "or graph=False."
        )
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    return ckpt.build_model()


def load_state_dict(bundle_dir: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The bundle's state_dict as torch tensors (verified, bit-identical to the source)."""
    from sparsify.export.bundle_reader import load_bundle

    bundle = load_bundle(bundle_dir)
    return {k: torch.from_numpy(np.array(v)) for k, v in bundle.state_dict.items()}
