"""Read and verify a scipy bundle with numpy + scipy only (no torch).

Every check happens before any array is used: the manifest is a regular file of at most
64 MiB (a FIFO or device is refused without blocking), JSON bounded in depth (64), integer
digits (30) and without duplicate keys; its format and version (only version
:data:`~sparsify.export.bundle_format.FORMAT_VERSION` is read); its ``manifest_sha256``
(covering the runtime graph); the dense bytes all tensors declare, against
:func:`dense_budget` (max(1 GiB, 1024x the bundle's size)) before anything is allocated;
that the container path is relative and inside the bundle (symlinks included), a regular
file, and its size is the one declared;
for each array reference: a plain numeric dtype (never an object array, so never pickle),
a shape within :data:`~sparsify.export.bundle_format.MAX_ELEMENTS` entries whose byte count
matches the stored bytes (checked before anything is allocated; deflated arrays may not
inflate past it), a byte range inside the file and its sha256; that the references tile
the container exactly (no overlap, gap or unaccounted bytes); shapes and dtypes against the
manifest; scipy's full format check plus canonical form (CSR/CSC/BSR indices strictly
increasing within a row; COO: indices in range, no duplicates); agreement of the
scipy and compact copies; NaN/inf entries against the count the manifest declares (the
writer declares those of a model that holds them); and finally the sha256 of the whole
state_dict. Each failure is a one-line :class:`SparsifyError` naming the file.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparsify.errors import SparsifyError
from sparsify.export import bundle_format as bf
from sparsify.export.encoding import EncodedTensor, decode
from sparsify.fileio import loads_json_bounded, read_regular_file

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
        compact: prunable weights' compact encodings (empty when the bundle stores none;
            other tensors stored compactly appear only in ``state_dict``).
        graph: the captured op list for :mod:`sparsify.runtime`, or None.
    """

    path: Path
    manifest: dict[str, Any]
    state_dict: dict[str, np.ndarray]
    sparse: dict[str, Any]
    compact: dict[str, EncodedTensor]
    graph: dict[str, Any] | None


class _Reader:
    """Reads the arrays one manifest names out of its container, checking each reference."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root / bf.MANIFEST)
        self.path = root / bf.DATA_FILE
        self.data = b""
        self.ranges: list[tuple[int, int]] = []

    def fail(self, what: str) -> SparsifyError:
        return SparsifyError(f"{self.where}: {what}")

    def fail_data(self, what: str) -> SparsifyError:
        return SparsifyError(f"{self.path}: {what}")

    def open(self, section: Any) -> None:
        """Read the container the manifest's ``data`` section names, checking its size."""
        if (
            not isinstance(section, dict)
            or not isinstance(section.get("path"), str)
            or not _is_count(section.get("bytes"))
        ):
            raise self.fail(
                "the 'data' entry (container path and size) is missing or malformed; "
                "the manifest was edited. Re-export the bundle."
            )
        rel = bf.check_relative(section["path"], self.where)
        self.path = bf.resolve_inside(self.root, rel)
        try:
            # a regular file only (a FIFO would block), read no further than declared + 1
            self.data = read_regular_file(self.path, section["bytes"] + 1, "array container")
        except SparsifyError as exc:
            raise SparsifyError(
                f"{exc} The bundle is incomplete or edited; re-export it."
            ) from None
        if len(self.data) != section["bytes"]:
            raise self.fail_data(
                f"holds {len(self.data)} bytes but the manifest says {section['bytes']}; the "
                "file is truncated or was appended to. Re-export the bundle."
            )

    def array(self, ref: Any, what: str) -> np.ndarray:
        """The array ``ref`` points at (``what`` names it in messages), fully checked."""
        if not isinstance(ref, dict) or not all(_is_count(ref.get(k)) for k in ("offset", "bytes")):
            raise self.fail(
                f"array {what} has no valid 'offset'/'bytes'; the manifest was edited. "
                "Re-export the bundle."
            )
        dtype_name = ref.get("dtype")
        if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
            raise self.fail(
                f"array {what} has unsupported dtype {dtype_name!r} (bundles hold plain "
                "numbers; object arrays need pickle and are never loaded); re-export the bundle."
            )
        shape = list(_checked_shape(self, ref.get("shape"), f"array {what}"))
        count = math.prod(shape)
        start, stop = ref["offset"], ref["offset"] + ref["bytes"]
        if stop > len(self.data):
            raise self.fail_data(
                f"array {what} at bytes [{start}, {stop}) runs past the end of the file "
                f"({len(self.data)} bytes); the manifest was edited. Re-export the bundle."
            )
        self._claim(start, stop, what)
        data = self.data[start:stop]
        if bf.sha256_bytes(data) != ref.get("sha256"):
            raise self.fail_data(
                f"sha256 of array {what} (bytes [{start}, {stop})) does not match the "
                "manifest; the file is corrupted. Re-export the bundle."
            )
        try:
            flat = bf.unpack(data, ref.get("codec", "none"), _le(dtype_name), count)
        except SparsifyError as exc:
            raise self.fail_data(
                f"array {what} ({dtype_name}{shape}): {exc}; re-export the bundle."
            ) from None
        return flat.astype(dtype_name, copy=False).reshape(shape)

    def _claim(self, start: int, stop: int, what: str) -> None:
        """Record [start, stop) as read, refused if it overlaps an array read before
        (empty arrays occupy no bytes: several may sit at one offset)."""
        if start == stop:
            return
        i = bisect.bisect_left(self.ranges, (start, stop))
        before = self.ranges[i - 1] if i else None
        after = self.ranges[i] if i < len(self.ranges) else None
        if (before and before[1] > start) or (after and after[0] < stop):
            raise self.fail_data(
                f"array {what} at bytes [{start}, {stop}) overlaps another array; the manifest "
                "was edited. Re-export the bundle."
            )
        self.ranges.insert(i, (start, stop))

    def check_tiling(self) -> None:
        """The arrays must cover the container exactly (no overlap is checked as they are read)."""
        end = 0
        for start, stop in self.ranges:
            if start != end:
                raise self.fail_data(
                    f"bytes [{end}, {start}) belong to no array; the manifest was edited. "
                    "Re-export the bundle."
                )
            end = stop
        if end != len(self.data):
            raise self.fail_data(
                f"bytes [{end}, {len(self.data)}) belong to no array; the manifest was "
                "edited. Re-export the bundle."
            )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _le(name: str) -> np.dtype:
    """The little-endian dtype the writer stored ``name`` as."""
    return np.dtype(name).newbyteorder("<")


def _section(r: _Reader, name: str, value: Any, key: str) -> dict[str, Any] | None:
    """``entry[key]`` of tensor ``name``: None or a JSON object, else a clear error."""
    if value is None or isinstance(value, dict):
        return value
    raise r.fail(
        f"tensor {name!r}: {key!r} is a {type(value).__name__}, not an object; the manifest "
        "was edited. Re-export the bundle."
    )


def _checked_shape(r: _Reader, shape: Any, what: str) -> tuple[int, ...]:
    """``shape`` if it is a list of at most MAX_RANK non-negative ints, none of them and not
    their product over MAX_ELEMENTS (checked before anything of that shape is allocated)."""
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise r.fail(f"{what} has an invalid shape {_short(shape)}; re-export the bundle.")
    if len(shape) > bf.MAX_RANK or any(d > bf.MAX_ELEMENTS for d in shape):
        raise r.fail(
            f"{what} has shape {_short(shape)}, over the reader's limit of {bf.MAX_RANK} "
            f"dimensions of at most {bf.MAX_ELEMENTS}; the manifest was edited. Re-export the bundle."
        )
    numel = math.prod(shape)
    if numel > bf.MAX_ELEMENTS:
        raise r.fail(
            f"{what} has shape {shape} ({numel} entries), over the reader's limit of "
            f"{bf.MAX_ELEMENTS}; the manifest was edited. Re-export the bundle."
        )
    return tuple(shape)


def _short(value: Any) -> str:
    """``repr(value)`` cut to 80 characters (a hostile manifest may hold huge values)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _entry_shape(r: _Reader, entry: dict[str, Any]) -> tuple[int, ...]:
    return _checked_shape(r, entry.get("shape"), f"tensor {entry.get('name')!r}")


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


def _load_compact(
    r: _Reader, name: str, section: dict[str, Any], shape: tuple[int, ...]
) -> tuple[EncodedTensor, np.ndarray]:
    """(encoding, decoded float32 array) of a tensor's ``compact`` section."""
    refs = _section(r, name, section.get("arrays"), "arrays") or {}
    enc = EncodedTensor(
        shape=shape,
        scheme=str(section.get("scheme")),
        values=r.array(refs.get("values"), f"{name}.values"),
        positions=r.array(refs.get("positions"), f"{name}.positions"),
    )
    try:
        return enc, decode(enc)
    except SparsifyError as exc:
        raise r.fail(f"tensor {name!r}: {exc}") from None


def _load_sparse(
    r: _Reader, name: str, entry: dict[str, Any], shape: tuple[int, ...]
) -> tuple[Any, Any, np.ndarray]:
    """(scipy array or None, EncodedTensor or None, dense array) of one prunable weight."""
    if entry.get("dtype") != "float32" or len(shape) < 2:
        raise r.fail(
            f"sparse tensor {name!r} must be float32 of rank >= 2 (it is {entry.get('dtype')}"
            f"{list(shape)}); re-export the bundle."
        )
    mshape = bf.matrix_shape(shape)
    if entry.get("matrix_shape") != list(mshape):
        raise r.fail(
            f"tensor {name!r}: matrix_shape does not match its shape; re-export the bundle."
        )
    scipy_entry = _section(r, name, entry.get("scipy"), "scipy")
    compact_entry = _section(r, name, entry.get("compact"), "compact")
    if scipy_entry is None and compact_entry is None:
        raise r.fail(
            f"sparse tensor {name!r} has neither scipy nor compact arrays; re-export the bundle."
        )
    matrix = enc = dense = None
    if scipy_entry is not None:
        fmt = scipy_entry.get("format")
        if fmt not in bf.SPARSE_FORMATS:
            raise r.fail(f"tensor {name!r}: unknown sparse format {fmt!r}; re-export the bundle.")
        refs = _section(r, name, scipy_entry.get("arrays"), "arrays") or {}
        parts = {p: r.array(refs.get(p), f"{name}.{p}") for p in bf.SPARSE_PARTS[fmt]}
        _expect(r, name, parts["data"], None, "float32")
        try:
            matrix = bf.from_parts(fmt, parts, mshape)
        except SparsifyError as exc:
            raise r.fail(f"tensor {name!r}: {exc}; re-export the bundle.") from None
        dense = bf.to_dense(matrix).reshape(shape)
    if compact_entry is not None:
        enc, decoded = _load_compact(r, name, compact_entry, shape)
        if dense is None:
            dense = decoded
            matrix = bf.to_sparse(decoded.reshape(mshape), "csr")
        elif decoded.tobytes() != dense.tobytes():
            raise r.fail(
                f"tensor {name!r}: its scipy and compact copies differ; the manifest was edited. "
                "Re-export the bundle."
            )
    return matrix, enc, dense


def dense_budget(on_disk: int) -> int:
    """Default bound on the dense bytes a bundle of ``on_disk`` bytes (manifest + container)
    may declare: ``max(MIN_BUDGET_BYTES, BUDGET_RATIO * on_disk)`` = max(1 GiB, 1024x)."""
    return max(bf.MIN_BUDGET_BYTES, bf.BUDGET_RATIO * int(on_disk))


def _check_digest(r: _Reader, manifest: dict[str, Any]) -> None:
    """The manifest digest covers the graph and every field the array digests do not.

    A bundle written before the digest existed loads when it has no graph (its arrays and
    state_dict are covered by their own digests); with a graph it is refused: nothing would
    tell an edited op list (``relu`` -> ``identity``) from the exported one.
    """
    declared = manifest.get(bf.DIGEST_KEY)
    if declared is None:
        if manifest.get("graph") is not None:
            raise r.fail(
                "the manifest has no manifest_sha256, so its runtime graph is not covered by "
                "any digest (written by an older sparsify, or the digest was removed); "
                "re-export the bundle with this sparsify."
            )
        return
    if declared != bf.manifest_digest(manifest):
        raise r.fail(
            "manifest_sha256 does not match the manifest; its graph, shapes or storage were "
            "edited, or it is corrupted. Re-export the bundle."
        )


def _check_entries(r: _Reader, tensors: list[Any]) -> list[tuple[dict[str, Any], tuple[int, ...]]]:
    """(entry, shape) of every tensor entry: a name seen once, a bounded shape, a plain dtype."""
    out: list[tuple[dict[str, Any], tuple[int, ...]]] = []
    names: set[str] = set()
    for entry in tensors:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise r.fail(
                "a tensor entry has no name; the manifest was edited. Re-export the bundle."
            )
        name = entry["name"]
        if name in names:
            raise r.fail(
                f"tensor {_short(name)} appears twice; the manifest was edited. Re-export the bundle."
            )
        names.add(name)
        shape = _entry_shape(r, entry)
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise r.fail(
                f"tensor {_short(name)} has unsupported dtype {_short(dtype)}; re-export the bundle."
            )
        out.append((entry, shape))
    return out


def _check_budget(
    r: _Reader,
    entries: list[tuple[dict[str, Any], tuple[int, ...]]],
    on_disk: int,
    max_bytes: int | None,
) -> None:
    """The dense state_dict the manifest declares must fit the budget, before any allocation."""
    total = sum(math.prod(shape) * np.dtype(e["dtype"]).itemsize for e, shape in entries)
    budget = dense_budget(on_disk) if max_bytes is None else int(max_bytes)
    if total > budget:
        raise r.fail(
            f"the manifest declares {total} bytes of tensors, over the {budget} a bundle of "
            f"{on_disk} bytes may (max(1 GiB, 1024x its size)); the manifest was edited. If "
            "you trust this bundle, pass max_bytes to load_bundle / sparsify.runtime.load."
        )


def load_bundle(
    path: str | os.PathLike[str], verify: bool = True, *, max_bytes: int | None = None
) -> Bundle:
    """Load and verify the bundle in directory ``path``; see the module docstring for the checks.

    ``verify=False`` skips only the final whole-state_dict digest (file checksums and the
    manifest digest always run). ``max_bytes`` raises the bound on the dense bytes the
    manifest may declare (default: :func:`dense_budget` of the bundle's size); give it only
    for a bundle you trust that is stored more than 1024x smaller than its tensors.

    Raises:
        SparsifyError: missing directory or manifest, foreign format or version, unsafe path,
            checksum mismatch, malformed array, empty bundle, or a state_dict digest mismatch.
    """
    root = Path(path)
    mpath = root / bf.MANIFEST
    if not (mpath.exists() or mpath.is_symlink()):
        raise SparsifyError(
            f"{mpath} does not exist; give a directory written by `sparsify export --format scipy`."
        )
    r = _Reader(root)
    fix = "the file is truncated, corrupted or edited. Re-export the bundle."
    raw = read_regular_file(mpath, bf.MAX_MANIFEST_BYTES, "bundle manifest")
    manifest = loads_json_bounded(
        raw, r.where, fix=fix, max_depth=bf.MAX_JSON_DEPTH, max_int_digits=bf.MAX_INT_DIGITS
    )
    if not isinstance(manifest, dict):
        raise r.fail(
            f"not a sparsify scipy bundle (the manifest is a JSON {type(manifest).__name__}, "
            "not an object); re-export the bundle."
        )
    if manifest.get("format") != bf.FORMAT:
        raise r.fail(
            f"not a sparsify scipy bundle (format is {_short(manifest.get('format'))}, "
            f"expected {bf.FORMAT!r})."
        )
    if manifest.get("format_version") != bf.FORMAT_VERSION:
        raise r.fail(
            f"bundle format version {_short(manifest.get('format_version'))} is not supported "
            f"(this sparsify reads {bf.FORMAT_VERSION}); upgrade sparsify or re-export."
        )
    _check_digest(r, manifest)
    tensors = manifest.get("tensors")
    if not isinstance(tensors, list) or not tensors:
        raise r.fail(
            "the bundle holds no tensors (empty model); re-export from a model with parameters."
        )
    entries = _check_entries(r, tensors)
    data = manifest.get("data")
    declared = data.get("bytes") if isinstance(data, dict) else None
    on_disk = len(raw) + (declared if _is_count(declared) else 0)
    _check_budget(r, entries, on_disk, max_bytes)
    r.open(manifest.get("data"))
    state: dict[str, np.ndarray] = {}
    sparse: dict[str, Any] = {}
    compact: dict[str, EncodedTensor] = {}
    for entry, shape in entries:
        name, dtype = entry["name"], entry["dtype"]
        storage = entry.get("storage")
        try:
            if storage == "dense":
                refs = _section(r, name, entry.get("arrays"), "arrays") or {}
                a = r.array(refs.get("array"), f"{name}.array")
                _expect(r, name, a, shape, dtype)
                state[name] = a
            elif storage == "zeros":  # every bit 0: nothing stored
                state[name] = np.zeros(shape, dtype=dtype)
            elif storage == "compact":  # a non-prunable float32 tensor, e.g. an all-zero bias
                if dtype != "float32":
                    raise r.fail(f"compact tensor {name!r} must be float32; re-export the bundle.")
                section = _section(r, name, entry.get("compact"), "compact")
                if section is None:
                    raise r.fail(
                        f"compact tensor {name!r} has no compact arrays; re-export the bundle."
                    )
                state[name] = _load_compact(r, name, section, shape)[1]
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
    r.check_tiling()
    if verify and bf.state_digest(state) != manifest.get("state_sha256"):
        raise r.fail(
            "the tensors do not match the manifest's state_sha256; the manifest was edited. "
            "Re-export the bundle."
        )
    graph = manifest.get("graph")
    if graph is not None and not isinstance(graph, dict):
        raise r.fail(
            f"field 'graph' (the runtime graph) is a {type(graph).__name__}, not an object; "
            "the manifest was edited. Re-export the bundle."
        )
    return Bundle(root, manifest, state, sparse, compact, graph)
