"""The scipy bundle's on-disk format, shared by the writer (export) and the reader (runtime).

numpy + scipy only, no torch: the torch-free runtime imports this module.

A bundle is a directory of two files (format version 2)::

    manifest.json   minified JSON: format name + version, toolkit version, source recipe,
                    ``data`` (the container's relative path and size), one entry per
                    state_dict tensor (shape, dtype, storage, density, its arrays,
                    ``nonfinite``: its NaN/inf count where that is not 0), the captured
                    graph (an op list) for sparsify.runtime, and ``manifest_sha256``: the
                    sha256 of all of the above as canonical JSON (:func:`manifest_digest`),
                    so an edited graph or storage is refused (bundles written before it
                    load only without a graph)
    arrays.bin      every array's raw bytes (little-endian, C order), back to back in the
                    order the manifest lists them, no padding. An array reference is
                    ``{"offset", "bytes", "dtype", "shape", "sha256"}`` (plus ``"codec":
                    "zlib"`` when the bytes are a deflated stream of that dtype and shape);
                    the references tile the file exactly. Read with np.frombuffer: no
                    pickle, no npy headers.

Storage of a tensor: ``sparse`` (float32, rank >= 2: the scipy parts of the
(out, in * kh * kw) matrix -- csr/csc/bsr: data, indices, indptr; coo: data, row, col --
and/or its compact encoding: values, positions), ``compact`` (any other float32 tensor
whose compact encoding is smaller than its dense bytes, e.g. a bias with pruned entries),
``zeros`` (a non-prunable tensor whose every bit is 0, e.g. a fresh BatchNorm's
running_mean: no array; the state_sha256 covers it) or ``dense`` (array). Version 1 (one
.npy file per array under ``arrays/``) is refused by the reader: re-export such bundles.

"Zero" is the bit pattern of +0.0 (as in :mod:`sparsify.export.encoding`): an explicit -0.0
is kept as a stored entry, so dense -> sparse -> dense is bit-exact for every input.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsify.errors import SparsifyError

FORMAT = "sparsify.scipy_bundle"
FORMAT_VERSION = "2"
MANIFEST = "manifest.json"
DATA_FILE = "arrays.bin"


def is_bundle_dir(path: Path) -> bool:
    """True when ``path`` is empty or holds exactly a bundle this module's writer made: only
    ``manifest.json`` and ``arrays.bin``, the manifest a small JSON object naming this format.
    A folder that merely holds a file called ``manifest.json`` is not one (it is never replaced).
    """
    names = {p.name for p in path.iterdir()}
    if not names:
        return True
    if not names <= {MANIFEST, DATA_FILE} or MANIFEST not in names:
        return False
    manifest = path / MANIFEST
    if (
        not manifest.is_file()
        or manifest.is_symlink()
        or manifest.stat().st_size > MAX_MANIFEST_BYTES
    ):
        return False
    try:
        head = json.loads(manifest.read_bytes())
    except (ValueError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


SPARSE_FORMATS = ("csr", "csc", "coo", "bsr")
STORES = ("both", "scipy", "compact")
# auto: per array, zlib where that is smaller than the raw bytes, else none
CODECS = ("none", "zlib", "auto")
# the reader refuses a tensor with more entries (16 GiB of float32), more dimensions, or
# any dimension larger: a shape edited to be huge would otherwise make numpy or scipy try
# to allocate it (a 0-sized tensor may not hide a 2**70 dimension either)
MAX_ELEMENTS = 2**32
MAX_RANK = 32
# the dense bytes a bundle may declare (the state_dict the reader builds), before anything is
# allocated: MIN_BUDGET_BYTES, or BUDGET_RATIO times the bundle's own bytes on disk when that
# is more. 1024 is deflate's own ceiling (a zlib stream cannot inflate more than ~1032x), so
# a file can never claim more than its bytes could hold; pass ``max_bytes`` to the reader for
# a trusted bundle that is denser than that (a > 1 GiB model stored > 99.9 % sparse)
MIN_BUDGET_BYTES = 2**30
BUDGET_RATIO = 1024
# deflate emits at least one bit per 258-byte match: no stream inflates past this ratio
_DEFLATE_MAX_RATIO = 1032
_INFLATE_CHUNK = 1 << 24
MAX_MANIFEST_BYTES = 64 << 20
MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 30  # a shape or offset needs at most 20
DIGEST_KEY = "manifest_sha256"
SPARSE_PARTS = {
    "csr": ("data", "indices", "indptr"),
    "csc": ("data", "indices", "indptr"),
    "coo": ("data", "row", "col"),
    "bsr": ("data", "indices", "indptr"),
}
# numpy dtype name -> torch dtype name, for the digest sparsify.pipeline.checkpoint computes
TORCH_DTYPE_NAMES = {
    "float16": "torch.float16",
    "float32": "torch.float32",
    "float64": "torch.float64",
    "int8": "torch.int8",
    "int16": "torch.int16",
    "int32": "torch.int32",
    "int64": "torch.int64",
    "uint8": "torch.uint8",
    "bool": "torch.bool",
}


def is_prunable(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Stored sparse: float32 tensors of rank >= 2 (Linear/Conv weights)."""
    return len(shape) >= 2 and np.dtype(dtype) == np.float32


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """Linear (out, in) stays; Conv (out, in, kh, kw) becomes (out, in * kh * kw)."""
    rows = int(shape[0])
    cols = int(np.prod(shape[1:], dtype=np.int64))
    return rows, cols


def pack(array: np.ndarray, codec: str) -> bytes:
    """The bytes stored for ``array``: its raw little-endian bytes (``none``), or for
    ``zlib`` those bytes regrouped by significance (byte k of every element together, so
    the sign/exponent bytes of float32 values form one compressible run) and deflated at
    level 9. ``auto`` is resolved by the writer (:func:`pack_smallest`), not here."""
    a = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    if codec == "none":
        return a.tobytes()
    if codec != "zlib":
        raise SparsifyError(f"unsupported codec {codec!r}; use one of 'none', 'zlib'.")
    raw = a.reshape(-1).view(np.uint8).reshape(-1, a.dtype.itemsize)
    return zlib.compress(raw.T.tobytes(), 9)


def pack_smallest(array: np.ndarray, codec: str) -> tuple[bytes, str]:
    """(stored bytes, codec used): ``codec`` itself, or for ``auto`` the smaller of
    ``zlib`` and ``none`` (ties and empty arrays: ``none``, which the reader checks fastest)."""
    raw = pack(array, "none")
    if codec == "none" or (codec == "auto" and array.size == 0):
        return raw, "none"
    packed = pack(array, "zlib")
    if codec == "auto" and len(packed) >= len(raw):
        return raw, "none"
    return packed, "zlib"


def unpack(data: bytes, codec: str, dtype: np.dtype, length: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``length`` elements of ``dtype`` (1-D, a fresh array).

    A zlib stream is refused before inflating when ``length`` is more than deflate can
    encode in ``len(data)`` bytes (ratio 1032), then inflated in 16 MiB chunks into one
    buffer of exactly the declared size: memory never exceeds what the shape declares, and
    a stream that would inflate past it is refused at the first extra byte (no zip bombs).

    Raises:
        SparsifyError: unknown codec, a byte count that does not match, or a stream that
            does not inflate to exactly ``length`` elements.
    """
    itemsize = dtype.itemsize
    want = int(length) * itemsize
    if codec == "none":
        if len(data) != want:
            raise SparsifyError(f"holds {len(data)} bytes but {dtype.name}[{length}] needs {want}")
        return np.frombuffer(data, dtype=dtype, count=int(length)).copy()
    if codec != "zlib":
        raise SparsifyError(f"unsupported codec {codec!r}")
    if want > _DEFLATE_MAX_RATIO * len(data) + 1024:
        raise SparsifyError(
            f"zlib stream of {len(data)} bytes cannot inflate to the {want} declared "
            f"(deflate's ceiling is {_DEFLATE_MAX_RATIO}x)"
        )
    raw = np.empty(want, dtype=np.uint8)
    inflater = zlib.decompressobj()
    done, pending = 0, data
    try:
        while True:
            # one byte more than still fits: a stream that runs past ``want`` shows it here
            chunk = inflater.decompress(pending, min(_INFLATE_CHUNK, want - done + 1))
            pending = inflater.unconsumed_tail
            if done + len(chunk) > want:
                raise SparsifyError(f"zlib stream inflates past the {want} bytes declared")
            raw[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
            if inflater.eof or (not chunk and not pending):
                break
    except zlib.error as exc:
        raise SparsifyError(f"zlib stream is damaged ({exc})") from None
    if done != want or not inflater.eof:
        raise SparsifyError(f"zlib stream inflates to {done} bytes, expected {want}")
    if inflater.unused_data:
        raise SparsifyError(f"zlib stream is followed by {len(inflater.unused_data)} stray bytes")
    planes = raw.reshape(itemsize, int(length))
    return np.ascontiguousarray(planes.T).view(dtype).reshape(-1)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _stored(matrix: np.ndarray) -> np.ndarray:
    return matrix.view(np.uint32) != 0  # by bit pattern: -0.0 is stored


def to_sparse(matrix: np.ndarray, fmt: str, blocksize: tuple[int, int] | None = None) -> Any:
    """A scipy sparse array holding exactly the entries of ``matrix`` whose bits are not +0.0.

    Built from index arrays directly (not ``csr_array(dense)``, which drops -0.0).
    Indices are int32 when they fit (scipy's own choice), else int64.

    Raises:
        SparsifyError: unknown format, or a BSR blocksize that does not divide the shape.
    """
    rows, cols = matrix.shape
    mask = _stored(matrix)
    idx = np.int32 if max(rows, cols, int(mask.sum())) < 2**31 - 1 else np.int64
    if fmt in ("csr", "coo"):
        r, c = np.nonzero(mask)  # row-major order
        data = matrix[r, c]
        if fmt == "coo":
            return sp.coo_array((data, (r.astype(idx), c.astype(idx))), shape=(rows, cols))
        indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(idx)
        return sp.csr_array((data, c.astype(idx), indptr), shape=(rows, cols))
    if fmt == "csc":
        c, r = np.nonzero(mask.T)  # column-major order
        indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=0))]).astype(idx)
        return sp.csc_array((matrix[r, c], r.astype(idx), indptr), shape=(rows, cols))
    if fmt == "bsr":
        br, bc = blocksize or (1, 1)
        if br < 1 or bc < 1 or rows % br or cols % bc:
            raise SparsifyError(
                f"BSR blocksize {blocksize} does not divide the weight matrix {rows}x{cols}; "
                "choose a blocksize whose sides divide both dimensions."
            )
        blocks = matrix.reshape(rows // br, br, cols // bc, bc).transpose(0, 2, 1, 3)
        keep = _stored(np.ascontiguousarray(blocks)).any(axis=(2, 3))  # (R/br, C/bc)
        brow, bcol = np.nonzero(keep)
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(idx)
        data = np.ascontiguousarray(blocks[brow, bcol])  # (nblocks, br, bc)
        return sp.bsr_array((data, bcol.astype(idx), indptr), shape=(rows, cols))
    raise SparsifyError(
        f"The 'sparse_format' parameter must be one of {', '.join(map(repr, SPARSE_FORMATS))}. "
        f"Got {fmt!r} instead."
    )


def to_dense(m: Any) -> np.ndarray:
    """Dense copy of a scipy sparse array by assignment (``toarray`` adds, turning -0.0 to +0.0)."""
    out = np.zeros(m.shape, dtype=m.dtype)
    if m.format == "bsr":
        br, bc = m.blocksize
        nb_rows = m.shape[0] // br
        brow = np.repeat(np.arange(nb_rows), np.diff(m.indptr))
        blocks = out.reshape(nb_rows, br, m.shape[1] // bc, bc).transpose(0, 2, 1, 3)
        blocks[brow, m.indices] = m.data  # a view of out: writes through
        return out
    coo = m.tocoo(copy=False)
    out[coo.row, coo.col] = coo.data
    return out


def sparse_parts(m: Any) -> dict[str, np.ndarray]:
    """The arrays that define ``m`` in its format (see :data:`SPARSE_PARTS`)."""
    if m.format == "coo":
        return {"data": m.data, "row": m.row, "col": m.col}
    return {"data": m.data, "indices": m.indices, "indptr": m.indptr}


def from_parts(fmt: str, parts: dict[str, np.ndarray], shape: tuple[int, int]) -> Any:
    """Rebuild a scipy sparse array from its parts and check its structure in full.

    Raises:
        SparsifyError: parts that do not form a valid array of ``shape`` (scipy's full check).
    """
    try:
        for part, a in parts.items():
            if part != "data" and (a.dtype.kind not in "iu" or a.ndim != 1):
                raise ValueError(f"{part} must be a 1-D integer array, got {a.ndim}-D {a.dtype}")
        if fmt == "coo":
            rows, cols = parts["row"], parts["col"]
            if rows.size and (rows.min() < 0 or rows.max() >= shape[0]):
                raise ValueError("row index out of range")
            if cols.size and (cols.min() < 0 or cols.max() >= shape[1]):
                raise ValueError("column index out of range")
            m = sp.coo_array((parts["data"], (rows, cols)), shape=shape)
            if m.nnz != rows.size or m.nnz != cols.size:
                raise ValueError("data, row and col lengths differ")
            flat = rows.astype(np.int64) * int(shape[1]) + cols.astype(np.int64)
            if np.unique(flat).size != flat.size:
                raise ValueError("an entry is stored twice")
            return m
        cls = {"csr": sp.csr_array, "csc": sp.csc_array, "bsr": sp.bsr_array}[fmt]
        m = cls((parts["data"], parts["indices"], parts["indptr"]), shape=shape)
        m.check_format(full_check=True)
        _check_canonical(m.indptr, m.indices)
        return m
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise SparsifyError(f"{fmt} parts are inconsistent ({exc})") from None


def _check_canonical(indptr: np.ndarray, indices: np.ndarray) -> None:
    """Canonical compressed form: within each row (CSC: column; BSR: block row) the indices
    strictly increase, so no entry is stored twice. scipy's full check allows duplicates,
    and then rebuilding the dense weight keeps the last one while a matmul adds both.

    Raises:
        ValueError: naming the first row that is unsorted or holds a duplicate.
    """
    if indices.size < 2:
        return
    ascending = np.diff(indices.astype(np.int64)) > 0  # pair (k, k + 1) inside one row
    starts = indptr[1:-1].astype(np.int64)  # a row starting at k: pair (k - 1, k) crosses rows
    starts = starts[(starts > 0) & (starts < indices.size)]
    ascending[starts - 1] = True
    if not ascending.all():
        k = int(np.flatnonzero(~ascending)[0]) + 1
        row = int(np.searchsorted(indptr, k, side="right")) - 1
        raise ValueError(
            f"row {row} stores index {int(indices[k])} twice or out of order (not canonical)"
        )


def check_relative(path: str, where: str) -> PurePosixPath:
    """A manifest path must be relative, inside the bundle: no absolute path, no ``..``.

    Raises:
        SparsifyError: naming ``where`` (the manifest) and the offending path.
    """
    p = PurePosixPath(path) if isinstance(path, str) else None
    if (
        p is None
        or not path
        or p.is_absolute()
        or "\\" in path
        or ":" in path
        or "\x00" in path
        or any(part in ("..", "") for part in path.split("/"))
    ):
        raise SparsifyError(
            f"{where}: refusing file path {path!r} (must be relative to the bundle, "
            "without '..'); the manifest was edited or is not a sparsify bundle."
        )
    return p


def state_digest(state: dict[str, np.ndarray]) -> str:
    """sha256 over (name, torch dtype, shape, bytes) in sorted name order.

    Equal to :func:`sparsify.pipeline.checkpoint.tensors_digest` of the same tensors, so a loaded
    bundle can be checked against the checkpoint it came from without torch.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        a = np.asarray(state[name], order="C")
        dtype = TORCH_DTYPE_NAMES.get(a.dtype.name, a.dtype.name)
        h.update(f"{name}|{dtype}|{tuple(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest as canonical JSON (sorted keys, minimal separators, ASCII),
    without its own ``manifest_sha256`` entry. Covers everything the reader uses that the
    array and state digests do not: the runtime graph, storage kinds, shapes, the source
    recipe. A parsed manifest gives the same digest as the dict that was written (JSON
    floats round-trip exactly)."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def resolve_inside(root: Path, rel: PurePosixPath) -> Path:
    """``root / rel``, refused if a symlink takes it outside ``root``."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SparsifyError(
            f"{root / MANIFEST}: file {str(rel)!r} resolves outside the bundle; refusing it."
        )
    return path
