"""Reader and writer for the IDX format (LeCun's MNIST files), raw or gzip-compressed.

Layout: 2 zero bytes, 1 type byte, 1 byte ``ndim``, then ``ndim`` big-endian uint32 sizes,
then ``prod(sizes)`` big-endian items. Every field is validated against the file size so a
truncated or edited file is refused with a message naming the file, never misread.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

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


_MAX_BYTES = 1 << 32  # 4 GiB of items: far above any IDX dataset (EMNIST byclass: 0.6 GiB)
_INTEGER_CODES = frozenset({0x08, 0x09, 0x0B, 0x0C})


def _open(path: Path) -> BinaryIO:
    """The file's byte stream: decompressed on the fly when it starts with gzip's magic."""
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else path.open("rb")


def _read_exactly(path: Path, stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream`` (fewer at its end); a damaged gzip stream is one line."""
    try:
        return stream.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise SparsifyError(
            f"IDX file {path} is a damaged gzip stream ({exc}); re-download or re-copy it."
        ) from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the array stored in IDX file ``path`` (gzip detected by its magic bytes).

    The header is read first; the item count is the product of its sizes in Python
    integers (no wrap-around) and must stay within 4 GiB. Then exactly that many bytes are
    read, plus one to prove the file ends there: a gzip stream is decompressed in chunks and
    never beyond what the header declares (no gzip bomb).

    Raises:
        SparsifyError: missing file, bad magic, unknown type, sizes past the cap, or sizes
            that disagree with the file length.
    """
    path = Path(path)
    if not path.is_file():
        raise SparsifyError(f"IDX file {path} does not exist; check --data-dir.")
    with _open(path) as stream:
        head = _read_exactly(path, stream, 4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0:
            raise SparsifyError(
                f"IDX file {path} has a bad magic number (expected 0x0000 then type and ndim); "
                "it is not an IDX file or it is corrupted."
            )
        code, ndim = head[2], head[3]
        if code not in _DTYPES:
            raise SparsifyError(
                f"IDX file {path} has unknown element type 0x{code:02x}; expected one of "
                f"{', '.join(f'0x{c:02x}' for c in _DTYPES)}."
            )
        if not 1 <= ndim <= _MAX_NDIM:
            raise SparsifyError(
                f"IDX file {path} declares {ndim} dimensions; expected 1 to {_MAX_NDIM}."
            )
        sizes = _read_exactly(path, stream, 4 * ndim)
        if len(sizes) < 4 * ndim:
            raise SparsifyError(
                f"IDX file {path} is truncated inside its header ({4 + len(sizes)} bytes)."
            )
        dims = tuple(int.from_bytes(sizes[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
        dtype = _DTYPES[code]
        payload = math.prod(dims) * dtype.itemsize  # Python ints: exact, never wraps
        if payload > _MAX_BYTES:
            raise SparsifyError(
                f"IDX file {path} declares sizes {dims} of {dtype.name} ({payload:,} bytes), "
                f"more than the {_MAX_BYTES:,} bytes an IDX file may hold here; the file is "
                "corrupted or was edited."
            )
        header = 4 + 4 * ndim
        if not isinstance(stream, gzip.GzipFile):
            size = os.fstat(stream.fileno()).st_size  # a raw file: check before reading
            if size != header + payload:
                raise SparsifyError(
                    f"IDX file {path} holds {size} bytes but its header {dims} of {dtype.name} "
                    f"needs {header + payload}; the file is truncated or was edited."
                )
        body = _read_exactly(path, stream, payload + 1)  # one more: the end must be here
    if len(body) != payload:
        more = "more than" if len(body) > payload else f"{header + len(body)} bytes but"
        raise SparsifyError(
            f"IDX file {path} holds {more} its header {dims} of {dtype.name} declares "
            f"({header + payload} bytes); the file is truncated or was edited."
        )
    data = np.frombuffer(body, dtype=dtype).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def is_integer_type(array: np.ndarray) -> bool:
    """True for the IDX integer element types (uint8, int8, int16, int32): what labels need."""
    key = array.dtype.newbyteorder("=")
    return _CODES.get(key) in _INTEGER_CODES


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
