"""Footprint table: what each storage form costs, per layer and in total, against the bound.

A measurement, not an export (it writes nothing but its table), so it sits at the top of
the core, beside ``stats``: it runs the exporters into a temporary folder and counts bytes.

For each tensor of n entries with nnz nonzero entries (-0.0 is a zero and stored as +0.0):

    dense        n * itemsize                      (4 n for float32: the dense fp32 bytes)
    checkpoint   its bytes in model.safetensors    (dense; total = the file, header included:
                 the checkpoint file given, else the state_dict serialised)
    scipy        its arrays in a store="scipy", codec="none" bundle (CSR by default; total =
                 the directory)
    compact      the payload: encoded_nbytes for prunable weights; other tensors as the
                 bundle stores them (0 if all zeros, else the smaller of encoded and dense)
    compact_bundle  its arrays' bytes in a store="compact", codec="none" bundle (total = the
                 directory: arrays.bin + manifest.json; measured without the graph)
    compact_zlib_bundle  the same with codec="auto" (the default: each array's byte planes
                 deflated where that is smaller; values are not incompressible, so this can
                 go below the bound, which assumes 32 bits each)
    gzip         gzip -9 of the dense bytes (total: gzip of the whole model.safetensors)
    bound        (n * H(nnz / n) + 8 * itemsize * nnz) / 8        (entropy_bound_bytes)

and each byte column's ratio to the bound. Columns the ONNX side measures (dense ONNX,
compact ONNX, onnxruntime resident memory) come in through ``extra_columns``.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.export import bundle_format as bf
from sparsify.export.encoding import encode, encoded_nbytes, entropy_bound_bytes
from sparsify.export.scipy_bundle import (
    Source,
    export_scipy_bundle,
    plain_storage,
    resolve_source,
    tensor_to_numpy,
)
from sparsify.fileio import atomic_write_json, atomic_write_text

BYTE_COLUMNS = (
    "dense",
    "checkpoint",
    "scipy",
    "compact",
    "compact_bundle",
    "compact_zlib_bundle",
    "gzip",
)
PRUNABLE = "prunable weights"
OTHER = "other tensors"
TOTAL = "total"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _file_bytes(manifest: dict[str, Any]) -> dict[str, int]:
    """Per tensor: bytes of all the arrays the bundle stores for it in arrays.bin."""
    out: dict[str, int] = {}
    for entry in manifest["tensors"]:
        refs = list((entry.get("arrays") or {}).values())
        for key in ("scipy", "compact"):
            if entry.get(key):
                refs += list(entry[key]["arrays"].values())
        out[entry["name"]] = sum(r["bytes"] for r in refs)
    return out


def _checkpoint_bytes(
    checkpoint_file: str | os.PathLike[str] | None, arrays: dict[str, np.ndarray]
) -> tuple[int, bytes]:
    """(size of model.safetensors, its bytes): the file itself when given, else serialised."""
    from safetensors.numpy import save as st_save

    data = Path(checkpoint_file).read_bytes() if checkpoint_file is not None else st_save(arrays)
    return len(data), data


def footprint(
    source: Source,
    *,
    sparse_format: str = "csr",
    extra_columns: dict[str, dict[str, float | int | None]] | None = None,
    checkpoint_file: str | os.PathLike[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure ``source`` (an nn.Module or a state_dict); see the module docstring.

    Args:
        source: what to measure.
        checkpoint_file: the ``model.safetensors`` it was loaded from, measured as is for
            the ``checkpoint`` column's total (default: the state_dict serialised).
        provenance: JSON-able facts about the source, returned as ``source``.
        sparse_format: the scipy bundle's format for the ``scipy`` column.
        extra_columns: ``{column: {row: value}}`` added as measured (rows are tensor names,
            ``"prunable weights"``, ``"other tensors"`` or ``"total"``); a column whose
            name ends in ``_bytes`` also gets its ratio to the bound.

    Returns:
        ``{"source", "rows": [...], "prunable", "other", "total", "columns", "notes"}``.

    Raises:
        SparsifyError: as :func:`export_scipy_bundle` (empty model, not a module).
    """
    state, _, provenance = resolve_source(source, provenance)
    arrays = {name: tensor_to_numpy(name, t) for name, t in state.items()}
    with tempfile.TemporaryDirectory(prefix="sparsify-footprint-") as tmp:
        scipy_dir, compact_dir = Path(tmp) / "scipy", Path(tmp) / "compact"
        m_scipy = export_scipy_bundle(
            state, scipy_dir, sparse_format=sparse_format, store="scipy", codec="none", graph=False
        )
        m_compact = export_scipy_bundle(
            state, compact_dir, store="compact", codec="none", graph=False
        )
        zlib_dir = Path(tmp) / "zlib"
        m_zlib = export_scipy_bundle(state, zlib_dir, store="compact", codec="auto", graph=False)
        scipy_files, compact_files = _file_bytes(m_scipy), _file_bytes(m_compact)
        zlib_files = _file_bytes(m_zlib)
        scipy_total, compact_total = _dir_bytes(scipy_dir), _dir_bytes(compact_dir)
        zlib_total = _dir_bytes(zlib_dir)
    ckpt_total, ckpt_data = _checkpoint_bytes(checkpoint_file, arrays)

    rows: list[dict[str, Any]] = []
    for name, a in arrays.items():
        prunable = bf.is_prunable(tuple(a.shape), a.dtype)
        numel = int(a.size)
        nnz = int(np.count_nonzero(a))  # -0.0 == 0: a zero (tensor_to_numpy stores it as +0.0)
        dense = numel * a.dtype.itemsize
        storage, enc = ("sparse", encode(a)) if prunable else plain_storage(a)
        rows.append(
            {
                "name": name,
                "prunable": prunable,
                "shape": list(a.shape),
                "params": numel,
                "nnz": nnz,
                "density": nnz / numel if numel else 0.0,
                "scheme": enc.scheme if enc is not None else storage,
                "dense_bytes": dense,
                "checkpoint_bytes": dense,
                "scipy_bytes": scipy_files[name],
                "compact_bytes": (
                    encoded_nbytes(enc) if enc is not None else 0 if storage == "zeros" else dense
                ),
                "compact_bundle_bytes": compact_files[name],
                "compact_zlib_bundle_bytes": zlib_files[name],
                "gzip_bytes": len(gzip.compress(a.tobytes(), compresslevel=9, mtime=0)),
                "bound_bytes": entropy_bound_bytes(numel, nnz, 8 * a.dtype.itemsize),
            }
        )

    def group(label: str, members: list[dict[str, Any]]) -> dict[str, Any]:
        g: dict[str, Any] = {"name": label, "tensors": len(members)}
        for key in ("params", "nnz", *(f"{c}_bytes" for c in BYTE_COLUMNS), "bound_bytes"):
            g[key] = sum(r[key] for r in members)
        g["density"] = g["nnz"] / g["params"] if g["params"] else 0.0
        return g

    prunable = group(PRUNABLE, [r for r in rows if r["prunable"]])
    other = group(OTHER, [r for r in rows if not r["prunable"]])
    total = group(TOTAL, rows)
    # whole-file figures for the total: headers, manifest and graph cost bytes too
    total["checkpoint_bytes"] = ckpt_total
    total["scipy_bytes"] = scipy_total
    total["compact_bundle_bytes"] = compact_total
    total["compact_zlib_bundle_bytes"] = zlib_total
    total["gzip_bytes"] = len(gzip.compress(ckpt_data, compresslevel=9, mtime=0))

    extra = extra_columns or {}
    byte_columns = [f"{c}_bytes" for c in BYTE_COLUMNS] + [c for c in extra if c.endswith("_bytes")]
    by_name = {r["name"]: r for r in (*rows, prunable, other, total)}
    for col, values in extra.items():
        for row_name, value in values.items():
            if row_name not in by_name:
                raise SparsifyError(
                    f"extra column {col!r} names row {row_name!r}, which is not a tensor, "
                    f"{PRUNABLE!r}, {OTHER!r} or {TOTAL!r}; use one of those."
                )
            by_name[row_name][col] = value
    for r in by_name.values():
        for col in byte_columns:
            value = r.get(col)
            r[col.replace("_bytes", "_ratio")] = (
                (value / r["bound_bytes"]) if value is not None and r["bound_bytes"] else None
            )
    notes = [
        "bound = (n*H(nnz/n) + 32*nnz)/8 bytes for float32; ratios are bytes / bound.",
        "total: checkpoint = the safetensors file (serialised here when the source is a module), "
        "scipy/compact_bundle/compact_zlib_bundle = the bundle directory (arrays.bin and "
        "manifest.json), gzip = gzip -9 of the whole safetensors file.",
        "compact_zlib_bundle is the bundle with codec='auto' (the default): each array's byte "
        "planes deflated where that is smaller; it can go below the bound, which takes every "
        "value as 32 incompressible bits.",
    ]
    return {
        "source": provenance,
        "rows": rows,
        "prunable": prunable,
        "other": other,
        "total": total,
        "columns": byte_columns + [c for c in extra if not c.endswith("_bytes")],
        "notes": notes,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"
    return f"{value:,}"


def to_markdown(result: dict[str, Any], title: str = "Footprint") -> str:
    """A Markdown table: prunable weights one row each, then the group rows and the total."""
    cols = result["columns"]
    byte_cols = [c for c in cols if c.endswith("_bytes")]
    head = [
        "layer",
        "params",
        "nnz",
        "density",
        "scheme",
        *[c.removesuffix("_bytes") for c in byte_cols],
        "bound",
    ]
    head += [f"{c.removesuffix('_bytes')}/bound" for c in byte_cols]
    head += [c for c in cols if not c.endswith("_bytes")]
    lines = [f"# {title}", "", "Bytes per layer; ratio columns divide by the entropy bound.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown = [r for r in result["rows"] if r["prunable"]] + [
        result["prunable"],
        result["other"],
        result["total"],
    ]
    for r in shown:
        label = (
            r["name"]
            if r["name"] not in (PRUNABLE, OTHER, TOTAL)
            else f"**{r['name']}** ({r['tensors']})"
        )
        cells = [
            label,
            _fmt(r["params"]),
            _fmt(r["nnz"]),
            f"{r['density']:.4f}",
            r.get("scheme", ""),
        ]
        cells += [_fmt(r.get(c)) for c in byte_cols] + [_fmt(r["bound_bytes"])]
        cells += [_fmt_ratio(r.get(c.replace("_bytes", "_ratio"))) for c in byte_cols]
        cells += [_fmt(r.get(c)) for c in cols if not c.endswith("_bytes")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def write_footprint(
    result: dict[str, Any],
    out_dir: str | os.PathLike[str],
    stem: str = "footprint",
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``, each atomically."""
    out = Path(out_dir)
    j = atomic_write_json(out / f"{stem}.json", result)
    m = atomic_write_text(out / f"{stem}.md", to_markdown(result, title or stem))
    return j, m


def onnx_columns(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    rss: bool = True,
    *,
    input_shape: Sequence[int] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """ONNX columns for :func:`footprint`'s ``extra_columns``, exporting ``model`` traced on
    ``example_input`` (or ``zeros(1, *input_shape)``; see
    :func:`~sparsify.export.onnx.export_onnx`: no shape is guessed).

    Per tensor (ONNX initializer names equal state_dict names): ``onnx_dense_bytes`` (the
    serialized initializer) and ``onnx_compact_bytes`` (everything that replaced it:
    encoded initializers + decode nodes). Total row: the whole ``.onnx`` files, gzip -9 of
    the dense file, and with ``rss`` onnxruntime's resident memory after session creation
    (``ort_session_mib_dense`` / ``_compact``), measured in fresh processes. onnxruntime
    decodes the compact weights to dense at load: compact ONNX saves disk, not RAM.
    """
    from sparsify.export.onnx import (
        compact_model,
        example_for,
        export_dense_model,
        ort_resident_memory,
    )

    dense = export_dense_model(model, example_for(model, example_input, input_shape))
    small, choices = compact_model(dense)
    dense_raw, small_raw = dense.SerializeToString(), small.SerializeToString()
    cols: dict[str, dict[str, float | int | None]] = {
        "onnx_dense_bytes": {c.name: c.dense_bytes for c in choices},
        "onnx_compact_bytes": {c.name: c.graph_bytes for c in choices},
        "gzip_onnx_dense_bytes": {},
    }
    cols["onnx_dense_bytes"][TOTAL] = len(dense_raw)
    cols["onnx_compact_bytes"][TOTAL] = len(small_raw)
    cols["gzip_onnx_dense_bytes"][TOTAL] = len(gzip.compress(dense_raw, compresslevel=9, mtime=0))
    if rss:
        with tempfile.TemporaryDirectory(prefix="sparsify-ort-") as tmp:
            mib = {}
            for label, raw in (("dense", dense_raw), ("compact", small_raw)):
                path = Path(tmp) / f"{label}.onnx"
                path.write_bytes(raw)
                mem = ort_resident_memory(path)
                mib[label] = mem["session_bytes"] / 2**20 if mem["session_bytes"] >= 0 else None
        cols["ort_session_mib_dense"] = {TOTAL: mib["dense"]}
        cols["ort_session_mib_compact"] = {TOTAL: mib["compact"]}
    return cols
