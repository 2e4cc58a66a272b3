"""Reader and writer for the IDX format (LeCun's MNIST files), raw or gzip-compressed.

Layout: 2 zero bytes, 1 type byte, 1 byte ``ndim``, then ``ndim`` big-endian uint32 sizes,
then ``prod(sizes)`` big-endian items. Every field is validated against the file size so a
truncated or edited file is refused with a message naming the file, never misread.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from sparsify.errors import SparsifyError
from sparsify.fileio import atomic_write_bytes

# type byte -> big-endian numpy dtype
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
_MAX_NDIM = 8


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise SparsifyError(
            f"IDX file {path} is a damaged gzip stream ({exc}); re-download or re-copy it."
        ) from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the array stored in IDX file ``path`` (gzip detected by its magic bytes).

    Raises:
        SparsifyError: missing file, bad magic, unknown type, or sizes that disagree with
            the file length.
    """
    path = Path(path)
    if not path.is_file():
        raise SparsifyError(f"IDX file {path} does not exist; check --data-dir.")
    buf = _read_bytes(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise SparsifyError(
            f"IDX file {path} has a bad magic number (expected 0x0000 then type and ndim); "
            "it is not an IDX file or it is corrupted."
        )
    code, ndim = buf[2], buf[3]
    if code not in _DTYPES:
        raise SparsifyError(
            f"IDX file {path} has unknown element type 0x{code:02x}; expected one of "
            f"{', '.join(f'0x{c:02x}' for c in _DTYPES)}."
        )
    if not 1 <= ndim <= _MAX_NDIM:
        raise SparsifyError(
            f"IDX file {path} declares {ndim} dimensions; expected 1 to {_MAX_NDIM}."
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise SparsifyError(f"IDX file {path} is truncated inside its header ({len(buf)} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        raise SparsifyError(
            f"IDX file {path} holds {len(buf)} bytes but its header {dims} of {dtype.name} "
            f"needs {expected}; the file is truncated or was edited."
        )
    data = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None
) -> Path:
    """Write ``array`` as IDX to ``path`` atomically; gzip when ``compress`` (default: name ends .gz)."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _CODES:
        raise SparsifyError(
            f"IDX cannot store dtype {array.dtype}; use uint8, int8/16/32, float32/64."
        )
    if not 1 <= array.ndim <= _MAX_NDIM:
        raise SparsifyError(f"IDX stores 1 to {_MAX_NDIM} dimensions; got {array.ndim}.")
    code = _CODES[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    return atomic_write_bytes(path, payload)
