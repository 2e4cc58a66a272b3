"""Compact lossless encoding of one sparse float32 tensor, close to the information bound.

A tensor of ``n`` entries with ``nnz`` stored entries needs at least
``n * H(nnz / n)`` bits to say *where* they are (H the binary entropy) plus 32 bits per
float32 value: :func:`entropy_bound_bytes`. Four schemes, chosen per tensor by size:

    gaps_u8 / gaps_u16   Deep Compression's relative indexing. Stored flat positions
                         p_0 < p_1 < ... (row-major) are kept as gaps
                         g_k = p_k - p_{k-1} with p_{-1} = -1, so every g_k >= 1 and
                         p = cumsum(g) - 1. A gap larger than the dtype's max M (255 or
                         65535) is split by filler entries with gap M and value 0.0.
                         (The ONNX graph decodes exactly this: CumSum(Cast(g, int64)) - 1
                         -> ScatterElements into ConstantOfShape zeros -> Reshape.)
    bitmask              np.packbits(mask, bitorder="big") (ceil(n/8) bytes) + the values.
    dense                every value; no positions.

"Zero" means the bit pattern of +0.0: the codec itself is bit-exact for every input (NaN,
inf and -0.0 included). Its callers decide what a zero is: the scipy bundle and ONNX
compaction pass -0.0 as +0.0 (``a + 0.0``), since -0.0 is a zero and storing it as a
value would undo the sparsity ``prune.remove`` or ``w * mask`` leave. numpy only: no
torch import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sparsify.errors import SparsifyError

SCHEMES = ("gaps_u8", "gaps_u16", "bitmask", "dense")
_GAP_DTYPES: dict[str, type[np.unsignedinteger]] = {"gaps_u8": np.uint8, "gaps_u16": np.uint16}
_POSITION_DTYPES = {
    "gaps_u8": np.uint8,
    "gaps_u16": np.uint16,
    "bitmask": np.uint8,
    "dense": np.uint8,
}


@dataclass(frozen=True)
class EncodedTensor:
    """One tensor in a compact scheme.

    Attributes:
        shape: the decoded tensor's shape.
        scheme: one of ``gaps_u8``, ``gaps_u16``, ``bitmask``, ``dense``.
        values: float32, 1-D: the stored entries in row-major order (gap schemes: the
            non-zeros plus filler zeros; bitmask: the non-zeros; dense: all entries).
        positions: gaps_u8: uint8 gaps; gaps_u16: uint16 gaps; bitmask: the packed mask
            (uint8, big bit order); dense: an empty uint8 array.
    """

    shape: tuple[int, ...]
    scheme: str
    values: np.ndarray
    positions: np.ndarray


def _as_float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise SparsifyError(
            f"encode stores float32 tensors only; got dtype {array.dtype}. "
            "Cast with .astype(np.float32) first (lossless from float16)."
        )
    return np.ascontiguousarray(array).reshape(-1)


def _stored_mask(flat: np.ndarray) -> np.ndarray:
    # by bit pattern, not by value: -0.0 == 0.0 numerically but must survive bit-exactly
    return flat.view(np.uint32) != 0


def _gap_plan(positions: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaps of ``positions`` (p_{-1} = -1) and the filler count each gap needs."""
    gaps = np.diff(positions, prepend=-1)  # int64, every gap >= 1
    # a gap g becomes f = (g - 1) // M fillers of gap M and a last gap g - f*M in [1, M]
    fillers = (gaps - 1) // max_gap
    return gaps, fillers


def _scheme_nbytes(numel: int, positions: np.ndarray) -> dict[str, int]:
    """Encoded size of every scheme, computed without building the encodings."""
    nnz = int(positions.size)
    sizes = {"bitmask": (numel + 7) // 8 + 4 * nnz, "dense": 4 * numel}
    for scheme, dtype in _GAP_DTYPES.items():
        max_gap = int(np.iinfo(dtype).max)
        _, fillers = _gap_plan(positions, max_gap)
        entries = nnz + int(fillers.sum())
        sizes[scheme] = entries * (4 + np.dtype(dtype).itemsize)
    return sizes


def encode(array: np.ndarray, scheme: str | None = None) -> EncodedTensor:
    """Encode a float32 array losslessly; ``decode(encode(a))`` is bit-identical to ``a``.

    Args:
        array: float32 array of any shape (a 0-d array is a one-entry tensor).
        scheme: one of :data:`SCHEMES`, or None for the smallest for this tensor (by
            :func:`encoded_nbytes`; ties go to the earlier scheme in :data:`SCHEMES`).

    Raises:
        SparsifyError: a dtype other than float32, or an unknown scheme.
    """
    shape = tuple(int(s) for s in np.shape(array))
    flat = _as_float32(array)
    mask = _stored_mask(flat)
    positions = np.flatnonzero(mask)  # int64, increasing
    if scheme is None:
        sizes = _scheme_nbytes(flat.size, positions)
        scheme = min(SCHEMES, key=lambda s: (sizes[s], SCHEMES.index(s)))
    if scheme not in SCHEMES:
        raise SparsifyError(
            f"The 'scheme' parameter of encode must be one of {', '.join(map(repr, SCHEMES))} "
            f"or None. Got {scheme!r} instead."
        )
    if scheme == "dense":
        return EncodedTensor(shape, scheme, flat.copy(), np.zeros(0, np.uint8))
    if scheme == "bitmask":
        packed = np.packbits(mask, bitorder="big")
        return EncodedTensor(shape, scheme, flat[positions].copy(), packed)
    dtype = _GAP_DTYPES[scheme]
    max_gap = int(np.iinfo(dtype).max)
    gaps, fillers = _gap_plan(positions, max_gap)
    total = positions.size + int(fillers.sum())
    # each stored entry k expands to fillers[k] filler entries followed by itself
    last = np.cumsum(fillers + 1) - 1  # index of entry k in the output
    out_gaps = np.full(total, max_gap, dtype=dtype)
    out_values = np.zeros(total, dtype=np.float32)
    out_gaps[last] = (gaps - fillers * max_gap).astype(dtype)
    out_values[last] = flat[positions]
    return EncodedTensor(shape, scheme, out_values, out_gaps)


def _fail(what: str) -> SparsifyError:
    return SparsifyError(f"encoded tensor is malformed: {what}; re-export it.")


def _numel(shape: tuple[int, ...]) -> int:
    if any((not isinstance(s, (int, np.integer))) or s < 0 for s in shape):
        raise _fail(f"shape {shape!r} is not a tuple of non-negative ints")
    return math.prod(int(s) for s in shape)


def decode(enc: EncodedTensor) -> np.ndarray:
    """The float32 array of shape ``enc.shape`` that ``enc`` encodes (bit-exact).

    Checks the structure first, so a damaged encoding raises instead of decoding wrongly.

    Raises:
        SparsifyError: unknown scheme, wrong dtypes, lengths that do not match the shape,
            a zero gap, or positions past the end.
    """
    if enc.scheme not in SCHEMES:
        raise _fail(f"unknown scheme {enc.scheme!r}")
    numel = _numel(tuple(enc.shape))
    values, positions = np.asarray(enc.values), np.asarray(enc.positions)
    if values.dtype != np.float32 or values.ndim != 1:
        raise _fail(f"values must be 1-D float32, got {values.ndim}-D {values.dtype}")
    want = _POSITION_DTYPES[enc.scheme]
    if positions.dtype != want or positions.ndim != 1:
        raise _fail(
            f"{enc.scheme} positions must be 1-D {np.dtype(want)}, "
            f"got {positions.ndim}-D {positions.dtype}"
        )
    if enc.scheme == "dense":
        if values.size != numel or positions.size != 0:
            raise _fail(f"dense needs {numel} values and no positions")
        return values.copy().reshape(enc.shape)
    out = np.zeros(numel, dtype=np.float32)
    if enc.scheme == "bitmask":
        if positions.size != (numel + 7) // 8:
            raise _fail(f"bitmask has {positions.size} bytes, shape needs {(numel + 7) // 8}")
        bits = np.unpackbits(positions, bitorder="big")
        if bits[numel:].any():
            raise _fail("bitmask padding bits are set")
        mask = bits[:numel].astype(bool)
        if int(mask.sum()) != values.size:
            raise _fail(
                f"bitmask marks {int(mask.sum())} entries but {values.size} values are stored"
            )
        out[mask] = values
        return out.reshape(enc.shape)
    if positions.size != values.size:
        raise _fail(f"{positions.size} gaps but {values.size} values")
    if positions.size:
        if int(positions.min()) < 1:
            raise _fail("a gap is 0 (every gap is >= 1)")
        flat_pos = np.cumsum(positions.astype(np.int64)) - 1
        if int(flat_pos[-1]) >= numel:
            raise _fail(f"position {int(flat_pos[-1])} is past the end ({numel} entries)")
        out[flat_pos] = values
    return out.reshape(enc.shape)


def encoded_nbytes(enc: EncodedTensor) -> int:
    """Bytes of the payload: ``values.nbytes + positions.nbytes`` (shape/scheme not counted)."""
    return int(enc.values.nbytes + enc.positions.nbytes)


def binary_entropy(p: float) -> float:
    """``H(p) = -p log2 p - (1 - p) log2 (1 - p)`` in bits, with ``H(0) = H(1) = 0``."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def entropy_bound_bytes(numel: int, nnz: int, value_bits: int = 32) -> float:
    """Information bound in bytes: ``(numel * H(nnz / numel) + value_bits * nnz) / 8``.

    The first term is the cost of naming which ``nnz`` of ``numel`` positions are stored
    (log2 C(numel, nnz) <= numel * H), the second that of the values, taken as incompressible.

    Raises:
        SparsifyError: unless ``0 <= nnz <= numel`` and ``value_bits >= 0``.
    """
    if numel < 0 or nnz < 0 or nnz > numel or value_bits < 0:
        raise SparsifyError(
            f"entropy_bound_bytes needs 0 <= nnz <= numel and value_bits >= 0; "
            f"got numel={numel}, nnz={nnz}, value_bits={value_bits}."
        )
    if numel == 0:
        return 0.0
    return (numel * binary_entropy(nnz / numel) + value_bits * nnz) / 8.0


def stored_count(array: np.ndarray) -> int:
    """Entries an encoding stores: those whose bit pattern is not +0.0 (so -0.0 counts)."""
    return int(_stored_mask(_as_float32(array)).sum())
