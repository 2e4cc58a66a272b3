"""Read and verify a scipy bundle with numpy + scipy only (no torch).

Every check happens before any array is used: the manifest's format and version, that each
file path is relative and inside the bundle, each file's sha256, the npy structure (loaded
with ``allow_pickle=False``), shapes and dtypes against the manifest, scipy's full format
check, agreement of the scipy and compact copies, and finally the sha256 of the whole
state_dict. Each failure is a one-line :class:`SparsifyError` naming the file.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparsify.errors import SparsifyError
from sparsify.export import bundle_format as bf
from sparsify.export.encoding import EncodedTensor, decode

_DTYPES = {name for name in bf.TORCH_DTYPE_NAMES}


@dataclass
class Bundle:
    """A loaded, verified bundle.

    Attributes:
        path: the bundle directory.
        manifest: the parsed ``manifest.json``.
        state_dict: every tensor as a numpy array, bit-identical to the exported source.
        sparse: prunable weights as scipy sparse arrays of shape (out, in * kh * kw), in the
            stored format (built from the compact encoding as CSR when only that is stored).
        compact: prunable weights' compact encodings (empty when the bundle stores none).
        graph: the captured op list for :mod:`sparsify.runtime`, or None.
    """

    path: Path
    manifest: dict[str, Any]
    state_dict: dict[str, np.ndarray]
    sparse: dict[str, Any]
    compact: dict[str, EncodedTensor]
    graph: dict[str, Any] | None


class _Reader:
    """Reads the files one manifest names, checking path, checksum and npy structure."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root / bf.MANIFEST)

    def fail(self, what: str) -> SparsifyError:
        return SparsifyError(f"{self.where}: {what}")

    def array(self, ref: Any) -> np.ndarray:
        if not isinstance(ref, dict) or not isinstance(ref.get("path"), str):
            raise self.fail(
                "a file entry has no 'path'; the manifest was edited. Re-export the bundle."
            )
        rel = bf.check_relative(ref["path"], self.where)
        path = bf.resolve_inside(self.root, rel)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SparsifyError(
                f"{path}: cannot read ({exc.strerror or exc}); the bundle is incomplete. Re-export it."
            ) from None
        if bf.sha256_bytes(data) != ref.get("sha256"):
            raise SparsifyError(
                f"{path}: sha256 does not match the manifest; the file is truncated or "
                "corrupted. Re-export the bundle."
            )
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SparsifyError(
                f"{path}: not a valid .npy array ({exc}); re-export the bundle."
            ) from None
        codec = ref.get("codec", "none")
        if codec == "none":
            return array
        length = ref.get("length")
        if not isinstance(length, int) or length < 0 or array.ndim != 1:
            raise SparsifyError(
                f"{path}: compressed array without a valid length; re-export the bundle."
            )
        try:
            return bf.unpack(array, codec, str(ref.get("dtype")), length)
        except SparsifyError as exc:
            raise SparsifyError(f"{path}: {exc}; re-export the bundle.") from None


def _entry_shape(r: _Reader, entry: dict[str, Any]) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise r.fail(
            f"tensor {entry.get('name')!r} has an invalid shape {shape!r}; re-export the bundle."
        )
    return tuple(shape)


def _expect(
    r: _Reader, name: str, a: np.ndarray, shape: tuple[int, ...] | None, dtype: str
) -> None:
    if a.dtype.name != dtype or (shape is not None and tuple(a.shape) != shape):
        raise r.fail(
            f"tensor {name!r}: stored array is {a.dtype.name}{list(a.shape)}, manifest says "
            f"{dtype}{list(shape) if shape is not None else ''}; re-export the bundle."
        )


def _load_sparse(
    r: _Reader, name: str, entry: dict[str, Any], shape: tuple[int, ...]
) -> tuple[Any, Any, np.ndarray]:
    """(scipy array or None, EncodedTensor or None, dense array) of one prunable weight."""
    if entry.get("dtype") != "float32":
        raise r.fail(f"sparse tensor {name!r} must be float32; re-export the bundle.")
    mshape = bf.matrix_shape(shape)
    if entry.get("matrix_shape") != list(mshape):
        raise r.fail(
            f"tensor {name!r}: matrix_shape does not match its shape; re-export the bundle."
        )
    scipy_entry, compact_entry = entry.get("scipy"), entry.get("compact")
    if scipy_entry is None and compact_entry is None:
        raise r.fail(
            f"sparse tensor {name!r} has neither scipy nor compact files; re-export the bundle."
        )
    matrix = enc = dense = None
    if scipy_entry is not None:
        fmt = scipy_entry.get("format")
        if fmt not in bf.SPARSE_FORMATS:
            raise r.fail(f"tensor {name!r}: unknown sparse format {fmt!r}; re-export the bundle.")
        files = scipy_entry.get("files") or {}
        parts = {p: r.array(files.get(p)) for p in bf.SPARSE_PARTS[fmt]}
        _expect(r, name, parts["data"], None, "float32")
        try:
            matrix = bf.from_parts(fmt, parts, mshape)
        except SparsifyError as exc:
            raise r.fail(f"tensor {name!r}: {exc}; re-export the bundle.") from None
        dense = bf.to_dense(matrix).reshape(shape)
    if compact_entry is not None:
        files = compact_entry.get("files") or {}
        enc = EncodedTensor(
            shape=shape,
            scheme=str(compact_entry.get("scheme")),
            values=r.array(files.get("values")),
            positions=r.array(files.get("positions")),
        )
        try:
            decoded = decode(enc)
        except SparsifyError as exc:
            raise r.fail(f"tensor {name!r}: {exc}") from None
        if dense is None:
            dense = decoded
            matrix = bf.to_sparse(decoded.reshape(mshape), "csr")
        elif decoded.tobytes() != dense.tobytes():
            raise r.fail(
                f"tensor {name!r}: its scipy and compact copies differ; the manifest was edited. "
                "Re-export the bundle."
            )
    return matrix, enc, dense


def load_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Load and verify the bundle in directory ``path``; see the module docstring for the checks.

    ``verify=False`` skips only the final whole-state_dict digest (file checksums always run).

    Raises:
        SparsifyError: missing directory or manifest, foreign format or version, unsafe path,
            checksum mismatch, malformed array, empty bundle, or a state_dict digest mismatch.
    """
    root = Path(path)
    mpath = root / bf.MANIFEST
    if not mpath.is_file():
        raise SparsifyError(
            f"{mpath} does not exist; give a directory written by `sparsify export --format scipy`."
        )
    r = _Reader(root)
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise r.fail(
            f"not valid JSON ({exc}); the file is truncated or corrupted. Re-export the bundle."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != bf.FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise r.fail(f"not a sparsify scipy bundle (format is {got!r}, expected {bf.FORMAT!r}).")
    if manifest.get("format_version") != bf.FORMAT_VERSION:
        raise r.fail(
            f"bundle format version {manifest.get('format_version')!r} is not supported "
            f"(this sparsify reads {bf.FORMAT_VERSION}); upgrade sparsify or re-export."
        )
    tensors = manifest.get("tensors")
    if not isinstance(tensors, list) or not tensors:
        raise r.fail(
            "the bundle holds no tensors (empty model); re-export from a model with parameters."
        )
    state: dict[str, np.ndarray] = {}
    sparse: dict[str, Any] = {}
    compact: dict[str, EncodedTensor] = {}
    for entry in tensors:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise r.fail(
                "a tensor entry has no name; the manifest was edited. Re-export the bundle."
            )
        name = entry["name"]
        if name in state:
            raise r.fail(
                f"tensor {name!r} appears twice; the manifest was edited. Re-export the bundle."
            )
        shape = _entry_shape(r, entry)
        dtype = entry.get("dtype")
        if dtype not in _DTYPES:
            raise r.fail(f"tensor {name!r} has unsupported dtype {dtype!r}; re-export the bundle.")
        storage = entry.get("storage")
        if storage == "dense":
            a = r.array((entry.get("files") or {}).get("array"))
            _expect(r, name, a, shape, dtype)
            state[name] = a
        elif storage == "sparse":
            matrix, enc, dense = _load_sparse(r, name, entry, shape)
            state[name], sparse[name] = dense, matrix
            if enc is not None:
                compact[name] = enc
        else:
            raise r.fail(f"tensor {name!r} has unknown storage {storage!r}; re-export the bundle.")
    if verify and bf.state_digest(state) != manifest.get("state_sha256"):
        raise r.fail(
            "the tensors do not match the manifest's state_sha256; the manifest was edited. "
            "Re-export the bundle."
        )
    graph = manifest.get("graph")
    return Bundle(
        root, manifest, state, sparse, compact, graph if isinstance(graph, dict) else None
    )
