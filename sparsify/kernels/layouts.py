"""The packed weight format of the kernels: a blocked CSR, checked once, then read-only.

Layout (the C side documents the same contract in spk.c):

    rows are cut into panels of ``panel`` rows, columns into blocks of ``kblock`` columns;
    the nonzeros are ordered by (panel, column block, row, column);
    ptr (int64) has npanels * nkb * panel + 1 entries, nkb = ceil(cols / kblock);
    the nonzeros of row r = p * panel + q inside column block k are
        idx/val[ptr[(p * nkb + k) * panel + q] : ptr[(p * nkb + k) * panel + q + 1]]
    idx (int32) are absolute column indices, val (float32) the values.

``kblock >= cols`` (nkb = 1) is plain CSR: what wins at batch 1, where the activation
vector sits in L1 anyway. Column blocks pay off when the slice of the activation that a
block reads (kblock x tile width floats) would not fit in L1 otherwise: batches >= 16.
A 4-D convolution weight (OC, IC, kh, kw) is packed as its (OC, IC * kh * kw) matrix,
column c = (ic * kh + i) * kw + j, exactly torch's ``weight.reshape(OC, -1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsify.errors import SparsifyError

LAYOUTS = ("auto", "csr", "blocked")
# default blocking (see results/kernels/README.md for the measurements behind them)
DEFAULT_PANEL = 128
DEFAULT_KBLOCK = 128
INT32_MAX = 2**31 - 1


@dataclass(frozen=True, eq=False)
class SparseWeight:
    """A sparse weight packed for the kernels. Build it with ``pack``.

    Attributes:
        shape: (rows, cols) of the weight as a matrix (rows = output features/channels).
        panel: rows per panel (>= 1).
        kblock: columns per column block (>= 1; >= cols means plain CSR).
        ptr: int64 (npanels * nkb * panel + 1,), segment starts (see module docstring).
        idx: int32 (nnz,), column of each nonzero.
        val: float32 (nnz,), value of each nonzero.
        kernel_size: (kh, kw) for a convolution weight (cols = IC * kh * kw), else None.

    Construction checks every invariant the C code relies on (raises SparsifyError with
    one line) and makes the arrays read-only, so a packed weight cannot later point the
    kernels outside their buffers.
    """

    shape: tuple[int, int]
    panel: int
    kblock: int
    ptr: np.ndarray
    idx: np.ndarray
    val: np.ndarray
    kernel_size: tuple[int, int] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("ptr", "idx", "val"):
            arr = getattr(self, name)
            # own the memory, so no writable view elsewhere can change it after the check
            if isinstance(arr, np.ndarray) and not arr.flags.owndata:
                object.__setattr__(self, name, arr.copy())
        self.check()
        for a in (self.ptr, self.idx, self.val):
            a.flags.writeable = False

    def __getstate__(self) -> dict[str, Any]:
        # the cache holds the arrays' addresses: a copy or pickle rebuilds its own
        return {**self.__dict__, "_cache": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()  # own, check and lock the copied arrays

    def ensure_checked(self) -> None:
        """Re-run check() if someone made an array writable again (cheap otherwise)."""
        if self.ptr.flags.writeable or self.idx.flags.writeable or self.val.flags.writeable:
            self._cache.pop("ptrs", None)
            self.check()
            for a in (self.ptr, self.idx, self.val):
                a.flags.writeable = False

    @property
    def nkb(self) -> int:
        """Number of column blocks."""
        return max(1, -(-self.shape[1] // self.kblock))

    @property
    def npanels(self) -> int:
        return math.ceil(self.shape[0] / self.panel) if self.shape[0] else 0

    @property
    def nnz(self) -> int:
        return int(self.val.shape[0])

    @property
    def density(self) -> float:
        """nnz / (rows * cols) (0 for an empty shape)."""
        total = self.shape[0] * self.shape[1]
        return self.nnz / total if total else 0.0

    @property
    def layout(self) -> str:
        """``csr`` (one column block) or ``blocked``."""
        return "csr" if self.nkb == 1 else "blocked"

    @property
    def in_channels(self) -> int:
        """Input channels of a convolution weight (cols // (kh * kw)); cols for a matrix."""
        if self.kernel_size is None:
            return self.shape[1]
        return self.shape[1] // (self.kernel_size[0] * self.kernel_size[1])

    def check(self) -> None:
        """Raise SparsifyError (one line) unless every layout invariant holds. O(nnz)."""
        rows, cols = self.shape
        name = "SparseWeight"
        if rows < 0 or cols < 0 or self.panel < 1 or self.kblock < 1:
            raise SparsifyError(
                f"{name}: shape {self.shape}, panel {self.panel}, kblock {self.kblock} are "
                "invalid; re-create it with sparsify.kernels.pack(weight)."
            )
        for label, arr, dtype in (
            ("ptr", self.ptr, np.int64),
            ("idx", self.idx, np.int32),
            ("val", self.val, np.float32),
        ):
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1:
                raise SparsifyError(
                    f"{name}: '{label}' must be a 1-D {np.dtype(dtype).name} numpy array; "
                    "re-create it with sparsify.kernels.pack(weight)."
                )
            if not arr.flags.c_contiguous:
                raise SparsifyError(f"{name}: '{label}' must be C-contiguous; re-pack the weight.")
        if cols > INT32_MAX:
            raise SparsifyError(f"{name}: {cols} columns exceed the int32 index range.")
        nseg = self.npanels * self.nkb * self.panel
        nnz = self.idx.shape[0]
        if self.ptr.shape[0] != nseg + 1 or self.val.shape[0] != nnz:
            raise SparsifyError(
                f"{name}: ptr has {self.ptr.shape[0]} entries (expected {nseg + 1}) and "
                f"idx/val {nnz}/{self.val.shape[0]}; the arrays do not describe one layout, "
                "re-pack the weight."
            )
        if self.ptr[0] != 0 or self.ptr[-1] != nnz or (nseg and np.any(np.diff(self.ptr) < 0)):
            raise SparsifyError(
                f"{name}: ptr must rise from 0 to nnz={nnz}; the layout is corrupt, re-pack "
                "the weight."
            )
        if nnz:
            lo, hi = int(self.idx.min()), int(self.idx.max())
            if lo < 0 or hi >= cols:
                raise SparsifyError(
                    f"{name}: column indices span [{lo}, {hi}], outside [0, {cols}); the "
                    "layout is corrupt, re-pack the weight."
                )
            seg = np.repeat(np.arange(nseg, dtype=np.int64), np.diff(self.ptr))
            q = seg % self.panel
            row = (seg // (self.nkb * self.panel)) * self.panel + q
            block = (seg // self.panel) % self.nkb
            if np.any(row >= rows) or np.any(self.idx // self.kblock != block):
                raise SparsifyError(
                    f"{name}: nonzeros lie outside their row panel or column block; the "
                    "layout is corrupt, re-pack the weight."
                )
        if self.kernel_size is not None:
            kh, kw = self.kernel_size
            if kh < 1 or kw < 1 or cols % (kh * kw):
                raise SparsifyError(
                    f"{name}: kernel_size {self.kernel_size} does not divide {cols} columns."
                )

    def rows(self) -> np.ndarray:
        """The row of each nonzero, int64 (nnz,), in the packed order (not cached)."""
        nseg = self.npanels * self.nkb * self.panel
        seg = np.repeat(np.arange(nseg, dtype=np.int64), np.diff(self.ptr))
        return (seg // (self.nkb * self.panel)) * self.panel + seg % self.panel

    def to_scipy(self) -> sp.csr_matrix:
        """The same weight as a scipy CSR matrix (rows, cols), float32; cached."""
        cached = self._cache.get("csr")
        if cached is None:
            cached = sp.csr_matrix(
                (self.val, (self.rows(), self.idx)), shape=self.shape, dtype=np.float32
            )
            cached.sort_indices()
            self._cache["csr"] = cached
        return cached

    def to_dense(self) -> np.ndarray:
        """The weight as a dense float32 array (4-D for a convolution weight)."""
        dense = self.to_scipy().toarray()
        if self.kernel_size is not None:
            return dense.reshape(self.shape[0], self.in_channels, *self.kernel_size)
        return dense


def _as_coo(w: Any) -> tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray, Any]:
    """(shape, rows, cols, vals, kernel_size) of the nonzeros of a dense, scipy or packed
    weight (a SparseWeight is read as it is, without making its cached scipy copy)."""
    if isinstance(w, SparseWeight):
        w.ensure_checked()
        return w.shape, w.rows(), w.idx.astype(np.int64), w.val, w.kernel_size
    if sp.issparse(w):
        if w.ndim != 2:
            raise SparsifyError("pack: a scipy weight must be 2-D (out, in).")
        coo = sp.coo_matrix(w)
        coo.sum_duplicates()
        coo.eliminate_zeros()
        return coo.shape, coo.row, coo.col, coo.data.astype(np.float32), None
    arr = np.asarray(w)
    if arr.ndim not in (2, 4):
        raise SparsifyError(
            f"pack: the weight must be 2-D (out, in) or 4-D (out, in, kh, kw); got shape "
            f"{arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise SparsifyError(f"pack: the weight must be floating point; got {arr.dtype}.")
    kernel_size = None
    if arr.ndim == 4:
        kernel_size = (int(arr.shape[2]), int(arr.shape[3]))
        arr = arr.reshape(arr.shape[0], -1)
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise SparsifyError("pack: the weight holds NaN or inf; fix the weight first.")
    rows, cols = np.nonzero(arr)
    return arr.shape, rows, cols, arr[rows, cols], kernel_size


def auto_kblock(density: float) -> int:
    """Column block for ``layout="auto"``: the power of two nearest 12.8 / density, >= 128.

    A row's segment in a block then holds ~13 nonzeros or more (shorter segments pay the
    per-segment overhead, a loop exit and an accumulator reload, on too little work), and at
    density >= 0.1 the block stays at 128 columns, whose activation slice (128 x 64 floats)
    fits L1. Measured on Linear 4096^2, batch 16-256 (results/kernels/NOTES.md).
    """
    if density <= 0:
        return DEFAULT_KBLOCK
    return max(DEFAULT_KBLOCK, 2 ** round(math.log2(12.8 / density)))


def pack(
    w: Any,
    layout: str = "auto",
    *,
    panel: int | None = None,
    kblock: int | None = None,
    kernel_size: tuple[int, int] | None = None,
) -> SparseWeight:
    """Pack a weight for the kernels.

    Args:
        w: dense (out, in) or (out, in, kh, kw) array (numpy, or anything ``np.asarray``
            takes, e.g. a CPU torch tensor), a 2-D scipy sparse matrix, or a SparseWeight
            (repacked in another layout, its kernel size kept). Zeros are dropped.
        layout: ``csr`` (one column block: best at batch 1), ``blocked`` (column blocks of
            ``kblock``: best for batches >= 16 and convolutions), ``auto`` = ``blocked``
            with ``kblock`` from ``auto_kblock(density)`` unless given, and ``csr`` when
            the weight has fewer than 2 * kblock columns.
        panel: rows per panel (default 128).
        kblock: columns per block for ``blocked`` (default 128; ``auto``: by density).
        kernel_size: (kh, kw) of a convolution weight given as its 2-D (out, in * kh * kw)
            matrix (a scipy CSR, as the ONNX runtime holds it), for ``sparse_conv2d``;
            a 4-D weight carries its own.

    Returns:
        A checked, read-only SparseWeight.
    """
    if layout not in LAYOUTS:
        raise SparsifyError(
            f"The 'layout' parameter of pack must be one of {', '.join(map(repr, LAYOUTS))}. "
            f"Got {layout!r} instead."
        )
    shape, rows, cols, vals, own_kernel_size = _as_coo(w)
    if kernel_size is not None and own_kernel_size is not None:
        raise SparsifyError("pack: kernel_size is for a 2-D weight; a 4-D weight has its own.")
    if kernel_size is not None:
        kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
    kernel_size = own_kernel_size or kernel_size
    n_rows, n_cols = int(shape[0]), int(shape[1])
    panel = DEFAULT_PANEL if panel is None else int(panel)
    kb = DEFAULT_KBLOCK if kblock is None else int(kblock)
    if panel < 1 or kb < 1:
        raise SparsifyError(f"pack: panel ({panel}) and kblock ({kb}) must be >= 1.")
    if layout == "auto" and kblock is None and n_rows * n_cols:
        kb = auto_kblock(vals.shape[0] / (n_rows * n_cols))
    if layout == "csr" or (layout == "auto" and n_cols < 2 * kb):
        kb = max(n_cols, 1)
    nkb = max(1, math.ceil(n_cols / kb))
    rows = rows.astype(np.int64)
    cols = cols.astype(np.int64)
    seg = ((rows // panel) * nkb + cols // kb) * panel + rows % panel
    order = np.lexsort((cols, seg))
    npanels = math.ceil(n_rows / panel) if n_rows else 0
    counts = np.bincount(seg, minlength=npanels * nkb * panel)
    ptr = np.zeros(npanels * nkb * panel + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return SparseWeight(
        shape=(n_rows, n_cols),
        panel=panel,
        kblock=kb,
        ptr=ptr,
        idx=np.ascontiguousarray(cols[order], dtype=np.int32),
        val=np.ascontiguousarray(vals[order], dtype=np.float32),
        kernel_size=kernel_size,
    )
