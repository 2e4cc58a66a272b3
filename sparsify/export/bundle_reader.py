"""Read and verify a scipy bundle with numpy + scipy only (no torch).

Every check happens before any array is used: the manifest's format and version, that each
file path is relative and inside the bundle (symlinks included), each file's sha256, the npy
header (magic, a plain numeric little-endian dtype -- never an object array, so never pickle
-- and a shape whose byte count equals what the file holds, checked before anything is
allocated), shapes and dtypes against the manifest, a cap of :data:`~sparsify.export.
bundle_format.MAX_ELEMENTS` entries per tensor, scipy's full format check (COO: indices in
range, no duplicates), agreement of the scipy and compact copies, NaN/inf entries against
the count the manifest declares (the writer declares those of a model that holds them), and
finally the sha256 of the whole state_dict. Each failure is a one-line
:class:`SparsifyError` naming the file.
"""

from __future__ import annotations

import io
import json
import math
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
        array = _read_npy(path, data)
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


_NPY_KINDS = "biuf"  # bool, signed and unsigned ints, floats: what np.save wrote


def _read_npy(path: Path, data: bytes) -> np.ndarray:
    """The array in the .npy bytes ``data``; its header is checked before anything is allocated.

    Refused: a wrong magic or unreadable header, a dtype that is not plain numeric
    little-endian (object arrays would need pickle), and a shape whose byte count differs
    from what follows the header (a truncated file, or one claiming a huge array).
    """
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy version {version} is not written by numpy's np.save")
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise SparsifyError(
            f"{path}: not a valid .npy array ({first}); re-export the bundle."
        ) from None
    if dtype.hasobject or dtype.kind not in _NPY_KINDS or dtype.byteorder == ">":
        raise SparsifyError(
            f"{path}: not a valid .npy array for a bundle (dtype {dtype.str!r}: bundles hold "
            "little-endian numbers; object arrays need pickle and are never loaded); "
            "re-export the bundle."
        )
    offset = f.tell()
    count = math.prod(int(d) for d in shape)
    if count * dtype.itemsize != len(data) - offset:
        raise SparsifyError(
            f"{path}: the npy header claims {count * dtype.itemsize} bytes of data "
            f"({dtype.name}{list(shape)}) but the file holds {len(data) - offset}; "
            "re-export the bundle."
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
    return flat.reshape(shape, order="F" if fortran else "C")


def _section(r: _Reader, name: str, value: Any, key: str) -> dict[str, Any] | None:
    """``entry[key]`` of tensor ``name``: None or a JSON object, else a clear error."""
    if value is None or isinstance(value, dict):
        return value
    raise r.fail(
        f"tensor {name!r}: {key!r} is a {type(value).__name__}, not an object; the manifest "
        "was edited. Re-export the bundle."
    )


def _entry_shape(r: _Reader, entry: dict[str, Any]) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise r.fail(
            f"tensor {entry.get('name')!r} has an invalid shape {shape!r}; re-export the bundle."
        )
    numel = math.prod(shape)
    if numel > bf.MAX_ELEMENTS:
        raise r.fail(
            f"tensor {entry.get('name')!r} has shape {shape} ({numel} entries), over the "
            f"reader's limit of {bf.MAX_ELEMENTS}; the manifest was edited. Re-export the bundle."
        )
    return tuple(shape)


def _check_finite(r: _Reader, name: str, entry: dict[str, Any], a: np.ndarray) -> None:
    """NaN/inf entries must be exactly the ones the writer declared (``nonfinite``)."""
    if a.dtype.kind != "f":
        return
    found = int(a.size - np.count_nonzero(np.isfinite(a)))
    declared = entry.get("nonfinite", 0)
    if found != declared:
        raise r.fail(
            f"tensor {name!r} holds {found} NaN/inf entries but the manifest declares "
            f"{declared!r}; the data or the manifest was edited. Re-export the bundle."
        )


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
    scipy_entry = _section(r, name, entry.get("scipy"), "scipy")
    compact_entry = _section(r, name, entry.get("compact"), "compact")
    if scipy_entry is None and compact_entry is None:
        raise r.fail(
            f"sparse tensor {name!r} has neither scipy nor compact files; re-export the bundle."
        )
    matrix = enc = dense = None
    if scipy_entry is not None:
        fmt = scipy_entry.get("format")
        if fmt not in bf.SPARSE_FORMATS:
            raise r.fail(f"tensor {name!r}: unknown sparse format {fmt!r}; re-export the bundle.")
        files = _section(r, name, scipy_entry.get("files"), "files") or {}
        parts = {p: r.array(files.get(p)) for p in bf.SPARSE_PARTS[fmt]}
        _expect(r, name, parts["data"], None, "float32")
        try:
            matrix = bf.from_parts(fmt, parts, mshape)
        except SparsifyError as exc:
            raise r.fail(f"tensor {name!r}: {exc}; re-export the bundle.") from None
        dense = bf.to_dense(matrix).reshape(shape)
    if compact_entry is not None:
        files = _section(r, name, compact_entry.get("files"), "files") or {}
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
    if not isinstance(manifest, dict):
        raise r.fail(
            f"not a sparsify scipy bundle (the manifest is a JSON {type(manifest).__name__}, "
            "not an object); re-export the bundle."
        )
    if manifest.get("format") != bf.FORMAT:
        raise r.fail(
            f"not a sparsify scipy bundle (format is {manifest.get('format')!r}, "
            f"expected {bf.FORMAT!r})."
        )
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
        try:
            if storage == "dense":
                files = _section(r, name, entry.get("files"), "files") or {}
                a = r.array(files.get("array"))
                _expect(r, name, a, shape, dtype)
                state[name] = a
            elif storage == "sparse":
                matrix, enc, dense = _load_sparse(r, name, entry, shape)
                state[name], sparse[name] = dense, matrix
                if enc is not None:
                    compact[name] = enc
            else:
                raise r.fail(
                    f"tensor {name!r} has unknown storage {storage!r}; re-export the bundle."
                )
        except MemoryError:
            raise r.fail(
                f"tensor {name!r} of shape {list(shape)} does not fit in memory; the manifest "
                "was edited or this machine is too small for the model."
            ) from None
        _check_finite(r, name, entry, state[name])
    if verify and bf.state_digest(state) != manifest.get("state_sha256"):
        raise r.fail(
            "the tensors do not match the manifest's state_sha256; the manifest was edited. "
            "Re-export the bundle."
        )
    graph = manifest.get("graph")
    return Bundle(
        root, manifest, state, sparse, compact, graph if isinstance(graph, dict) else None
    )
