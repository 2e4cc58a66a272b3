"""ONNX integrity: the stamp every exported file carries, atomic writing, and untrusted loading.

Every file sparsify writes carries ``metadata_props`` ``sparsify.format`` /
``sparsify.format_version`` / ``sparsify.version`` and ``sparsify.sha256``, the sha256 of the
deterministic serialization of the whole model with that one value blanked (so the graph,
its weights, opsets and the other metadata -- ``sparsify.source`` provenance included -- are
all covered); ``sparsify.external_sha256`` adds the sha256 of a ``.data`` file where there is
one. :func:`load_onnx` checks them, then external-data paths, initializer sizes, NaN/inf
weights and ``onnx.checker``, before onnx or onnxruntime touch anything else.

Checker: the dense and compact files pass ``onnx.checker.check_model(m, full_check=True)``.
The ``sparse_initializer`` file passes the plain check; ``full_check`` raises
``onnx.shape_inference.InferenceError`` ("type case mismatch ... inferred=sparse_tensor_type"):
strict shape inference types a sparse initializer as ``sparse_tensor`` and rejects the
Conv/Gemm that read it. onnxruntime still loads and runs it.

These checks edit raw protobuf on purpose: they are security checks on untrusted bytes (what
a file declares, before any library interprets it), not graph surgery.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from sparsify.errors import SparsifyError
from sparsify.fileio import atomic_write_bytes, open_regular_file, read_regular_file

# protobuf cannot serialize a message of 2 GiB or more; leave room for the graph itself
_PROTO_LIMIT = 2**31 - 2**24
COMPACT_KEY = "sparsify.compact"  # model metadata: {initializer: scheme}
# model metadata every exported file carries (see load_onnx)
ONNX_FORMAT = "sparsify.onnx"
ONNX_FORMAT_VERSION = "1"
_FORMAT_KEY = "sparsify.format"
_VERSION_KEY = "sparsify.format_version"
_TOOLKIT_KEY = "sparsify.version"
_SHA_KEY = "sparsify.sha256"
_EXTERNAL_KEY = "sparsify.external_sha256"  # {".data" file: sha256}, only when there is one
SOURCE_KEY = "sparsify.source"  # JSON provenance given to the exporter (covered by the sha256)
STAMP_KEYS = (_FORMAT_KEY, _VERSION_KEY, _TOOLKIT_KEY, _SHA_KEY, _EXTERNAL_KEY)
# the tensor bytes a file may make onnxruntime or the runtime allocate before it runs (any
# one tensor whose shape the file fixes, and the sum of those folded from constants at
# session creation): MIN_BUDGET_BYTES, or BUDGET_RATIO times the file's bytes on disk
# (model + external data) when that is more. The scipy bundle reader uses the same policy
# (sparsify.export.bundle_format); ``max_bytes`` raises it for a file one trusts
MIN_BUDGET_BYTES = 2**30
BUDGET_RATIO = 1024
# a serialized ModelProto cannot exceed 2 GiB (protobuf); weights beyond go to .data files
_MAX_MODEL_FILE = 2**31
# initializers kept in the shape-inference skeleton (shape inputs: small integer tensors)
_SKELETON_MAX_ELEMENTS = 4096


# --------------------------------------------------------------------------- writing


def _digest(model: onnx.ModelProto) -> str:
    """sha256 of ``model`` serialized deterministically, with the ``sparsify.sha256`` value blanked."""
    entry = next((p for p in model.metadata_props if p.key == _SHA_KEY), None)
    saved = entry.value if entry is not None else ""
    if entry is not None:
        entry.value = ""
    try:
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    finally:
        if entry is not None:
            entry.value = saved


def unstamp(model: onnx.ModelProto) -> None:
    """Drop the ``sparsify.*`` verification metadata (not ``sparsify.compact``), in place."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in STAMP_KEYS]
    helper.set_model_props(model, dict(keep))


def stamp_metadata(
    model: onnx.ModelProto, external_sha256: dict[str, str] | None = None
) -> onnx.ModelProto:
    """Add the metadata :func:`load_onnx` verifies to ``model``, in place; returns it.

    Sets ``sparsify.format``, ``sparsify.format_version``, ``sparsify.version``,
    ``sparsify.external_sha256`` (when ``external_sha256`` is given: {``.data`` file name:
    sha256}) and, last, ``sparsify.sha256`` over everything else. Any earlier stamp is
    replaced. Call it on the final model, just before serializing it.
    """
    import sparsify

    props = {p.key: p.value for p in model.metadata_props if p.key not in STAMP_KEYS}
    props[_FORMAT_KEY] = ONNX_FORMAT
    props[_VERSION_KEY] = ONNX_FORMAT_VERSION
    props[_TOOLKIT_KEY] = sparsify.__version__
    if external_sha256:
        props[_EXTERNAL_KEY] = json.dumps(external_sha256, sort_keys=True)
    props[_SHA_KEY] = ""
    helper.set_model_props(model, props)
    sha = _digest(model)
    next(p for p in model.metadata_props if p.key == _SHA_KEY).value = sha
    return model


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    fh, _ = open_regular_file(path, "external data file")  # never blocks on a FIFO
    with fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_model_files(model: onnx.ModelProto, file_name: str, directory: Path) -> None:
    """Stamp ``model`` (in place) and write it into ``directory``: one file, or file + ``.data``
    when its tensors exceed protobuf's 2 GiB limit."""
    tensor_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    if tensor_bytes < _PROTO_LIMIT:
        stamp_metadata(model)
        atomic_write_bytes(directory / file_name, model.SerializeToString())
        return
    # protobuf's 2 GiB ceiling: the only case where weights leave the .onnx file
    location = file_name + ".data"
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=location, size_threshold=1024
    )
    external_data_helper.write_external_data_tensors(model, str(directory))
    stamp_metadata(model, {location: _file_sha256(directory / location)})
    atomic_write_bytes(directory / file_name, model.SerializeToString())


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write a stamped copy of ``model`` to ``path`` atomically, so :func:`load_onnx` accepts it.

    For models built outside :func:`export_onnx` (e.g. ``export_dense_model`` +
    ``compact_model``). ``model`` itself is not changed.

    Returns:
        the path written.
    """
    path = Path(path)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    write_model_files(copy, path.name, path.parent)
    return path


# --------------------------------------------------------------------------- loading

# what a file that is not an ONNX model usually starts with
_FOREIGN_MAGIC = (
    (b"PK\x03\x04", "a zip archive (a torch .pt/.pth checkpoint or an .npz?)"),
    (b"\x80", "a Python pickle"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"{", "JSON text"),
)


def onnx_error(path: Path, what: str) -> SparsifyError:
    """The one-line error about ONNX file ``path``: ``"<path>: <what>"``."""
    return SparsifyError(f"{path}: {what}")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name if empty), at most 200 characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, TensorProto]]:
    """(kind, tensor) for every tensor stored in ``graph``, its subgraphs and node attributes."""
    for t in graph.initializer:
        yield "initializer", t
    for st in graph.sparse_initializer:
        yield "initializer", st.values
        yield "indices", st.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[tuple[str, TensorProto]]:
    for a in node.attribute:
        if a.HasField("t"):
            yield "attribute", a.t
        for t in a.tensors:
            yield "attribute", t
        for st in [*([a.sparse_tensor] if a.HasField("sparse_tensor") else []), *a.sparse_tensors]:
            yield "attribute", st.values
            yield "indices", st.indices
        for g in [*([a.g] if a.HasField("g") else []), *a.graphs]:
            yield from _graph_tensors(g)


def model_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """(kind, tensor) for every tensor stored anywhere in ``model``: initializers, sparse
    initializers (``indices`` for their index tensors), node attributes, subgraphs, functions."""
    yield from _graph_tensors(model.graph)
    for f in model.functions:
        for node in f.node:
            yield from _node_tensors(node)


def _external_location(path: Path, location: str) -> Path:
    """The file an external-data ``location`` names: relative, no ``..``, inside the folder."""
    if (
        not location
        or "\x00" in location
        or "\\" in location
        or ":" in location
        or PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or any(part in ("..", "") for part in location.split("/"))
    ):
        raise onnx_error(
            path,
            f"refusing external data location {location!r} (must be a file name relative to "
            "the model's folder, without '..'); the file was edited or is not from sparsify.",
        )
    root = path.parent.resolve()
    target = (path.parent / location).resolve()
    if not target.is_relative_to(root):
        raise onnx_error(path, f"external data {location!r} resolves outside {root}; refusing it.")
    return target


def _check_external(path: Path, model: onnx.ModelProto, verify: bool) -> bool:
    """Check every external-data reference before onnx reads one; load them. True if any."""
    refs = [t for _, t in model_tensors(model) if t.data_location == TensorProto.EXTERNAL]
    if not refs:
        return False
    declared: dict[str, Any] = {}
    if verify:
        raw = next((p.value for p in model.metadata_props if p.key == _EXTERNAL_KEY), "{}")
        try:
            declared = json.loads(raw)
        except json.JSONDecodeError:
            declared = {}
        if not isinstance(declared, dict):
            declared = {}
    checked: dict[Path, int] = {}
    for t in refs:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        target = _external_location(path, location)
        if target not in checked:
            if not target.exists():
                raise onnx_error(
                    path, f"external data file {location!r} is missing; copy it beside the model."
                )
            fh, _ = open_regular_file(target, "external data file")  # a FIFO is refused here
            fh.close()
            if verify and declared.get(location) != _file_sha256(target):
                raise onnx_error(
                    path,
                    f"external data file {location!r} does not match its sha256 in the model; "
                    "it is truncated, corrupted or from another export. Re-export the model.",
                )
            checked[target] = target.stat().st_size
        try:  # ONNX: no offset is 0, no length is "to the end of the file"
            offset = int(info.get("offset", "0"))
            length = int(info.get("length", str(checked[target] - offset)))
        except ValueError:
            offset = length = -1
        if offset < 0 or length < 0 or offset + length > checked[target]:
            raise onnx_error(
                path,
                f"tensor {t.name!r}: external data range (offset {info.get('offset')}, length "
                f"{info.get('length')}) is not inside {location!r}; re-export the model.",
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # onnx raises several types; the user's fix is the same
        raise onnx_error(
            path, f"cannot read its external data ({first_line(exc)}); re-export the model."
        ) from None
    return True


def _check_tensors(path: Path, model: onnx.ModelProto) -> None:
    """Every stored tensor decodes to its declared dims and type; weights are finite."""
    for kind, t in model_tensors(model):
        if any(d < 0 for d in t.dims):
            raise onnx_error(
                path, f"tensor {t.name!r} has negative dims {list(t.dims)}; re-export the model."
            )
        if t.data_type == TensorProto.UNDEFINED or t.data_type not in TensorProto.DataType.values():
            raise onnx_error(
                path,
                f"tensor {t.name!r} has unknown element type {t.data_type}; the file was edited "
                "or is corrupted. Re-export the model.",
            )
        try:
            array = numpy_helper.to_array(t)
        except Exception as exc:  # wrong byte count, unknown type, ... (onnx raises many types)
            raise onnx_error(
                path,
                f"tensor {t.name!r} does not match its dims {list(t.dims)} and type "
                f"({first_line(exc)}); the file was edited or is corrupted. Re-export the model.",
            ) from None
        if kind == "initializer" and array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise onnx_error(
                    path,
                    f"weight {t.name!r} holds {bad} NaN/inf values; retrain or export a "
                    "finite checkpoint.",
                )


def budget_bytes(on_disk: int) -> int:
    """Default bound on the tensor bytes a file of ``on_disk`` bytes may make a runtime
    allocate: ``max(MIN_BUDGET_BYTES, BUDGET_RATIO * on_disk)`` = max(1 GiB, 1024x)."""
    return max(MIN_BUDGET_BYTES, BUDGET_RATIO * int(on_disk))


_INT_TYPES = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8)
_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Max": np.maximum,
    "Min": np.minimum,
}


def _fold_node(node: onnx.NodeProto, known: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value of a shape-computing node on small integer constants, or None.

    sparsify's own evaluator, not ONNX data propagation (which materialises a
    ConstantOfShape or Range while it infers: a bomb in itself). Every output is bounded
    by _SKELETON_MAX_ELEMENTS before it is computed."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op, limit = node.op_type, _SKELETON_MAX_ELEMENTS
    if op == "Constant":
        t = attrs.get("value")
        if (
            isinstance(t, TensorProto)
            and t.data_type in _INT_TYPES
            and len(t.dims) <= 1
            and int(np.prod(t.dims, dtype=np.float64)) <= limit
        ):
            return numpy_helper.to_array(t).astype(np.int64)
        ints = attrs.get("value_ints")
        if isinstance(ints, list) and len(ints) <= limit:
            return np.asarray(ints, np.int64)
        return None
    args = [known.get(i) for i in node.input if i]
    if not args or any(a is None for a in args):
        return None
    if op in ("Identity", "Cast") and (op == "Identity" or attrs.get("to") in _INT_TYPES):
        return args[0]
    if op == "Concat" and sum(a.size for a in args) <= limit:
        return np.concatenate(
            [a.reshape(-1) if a.ndim == 0 else a for a in args], axis=int(attrs.get("axis", 0))
        )
    if op == "Unsqueeze" and args[0].ndim == 0:
        return args[0].reshape(1)
    if op == "Squeeze" and args[0].size == 1:
        return args[0].reshape(())
    if op == "Gather" and args[0].ndim == 1 and args[1].size <= limit:
        return np.take(args[0], args[1])
    if (
        op in _BINARY
        and len(args) == 2
        and math.prod(np.broadcast_shapes(args[0].shape, args[1].shape)) <= limit
    ):
        return _BINARY[op](args[0], args[1])
    return None


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without its weights, for shape inference: every initializer of more than
    a few thousand entries or of a non-integer type becomes a graph input of the same type
    and shape; small integer initializers (shapes, axes, Range bounds) stay, and nodes that
    compute small integer tensors from them (Concat of shapes...) are replaced by their
    values (:func:`_fold_node`), so inference knows every shape the file fixes."""
    g = model.graph
    skel = onnx.ModelProto()
    skel.ir_version = model.ir_version
    skel.opset_import.extend(model.opset_import)
    skel.functions.extend(model.functions)
    sg = skel.graph
    sg.name = g.name
    sg.input.extend(g.input)
    sg.output.extend(g.output)
    sg.value_info.extend(g.value_info)  # declared shapes are checked too
    inputs = {i.name for i in g.input}
    known: dict[str, np.ndarray] = {}
    for t in g.initializer:
        numel = int(np.prod(t.dims, dtype=np.float64)) if t.dims else 1
        if t.data_type in _INT_TYPES and numel <= _SKELETON_MAX_ELEMENTS:
            sg.initializer.append(t)
            if t.name not in inputs:
                known[t.name] = numpy_helper.to_array(t).astype(np.int64)
        elif t.name not in inputs:
            sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for st in g.sparse_initializer:
        if st.values.name not in inputs:
            sg.input.append(
                helper.make_tensor_value_info(st.values.name, st.values.data_type, list(st.dims))
            )
    for node in g.node:
        value = None
        if node.domain in ("", "ai.onnx") and len(node.output) == 1:
            try:
                value = _fold_node(node, known)
            except (ValueError, IndexError, TypeError, OverflowError):
                value = None
        if value is None or value.size > _SKELETON_MAX_ELEMENTS:
            sg.node.append(node)
            continue
        known[node.output[0]] = value
        sg.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), node.output[0]))
    return skel


def _value_bytes(vi: onnx.ValueInfoProto) -> int | None:
    """Bytes of a value whose shape is fully static, else None."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    if not all(d.HasField("dim_value") for d in tt.shape.dim):
        return None
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
    except Exception:  # string, undefined...: count 8 bytes an entry
        itemsize = 8
    return max(itemsize, 1) * int(
        np.prod([max(d.dim_value, 0) for d in tt.shape.dim], dtype=object)
    )


def check_tensor_sizes(
    path: Path, model: onnx.ModelProto, on_disk: int, max_bytes: int | None = None
) -> None:
    """Refuse a file whose shapes imply more memory than it can justify, before a session.

    ONNX shape inference (with data propagation) runs on the weightless skeleton of the
    model, so the output shape of a ``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``,
    ``Pad``, ``Resize``... whose shape inputs are constants is known without computing it.
    Every value with a fully static shape (declared ones included) must fit the budget, and
    so must the sum over the values computed from constants alone (onnxruntime folds those
    when it creates a session). Budget: ``max_bytes``, else :func:`budget_bytes`.

    Raises:
        SparsifyError: one line naming the tensor, its bytes and the budget.
    """
    budget = budget_bytes(on_disk) if max_bytes is None else int(max_bytes)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            _skeleton(model), check_type=False, strict_mode=False, data_prop=False
        )
    except Exception as exc:  # InferenceError and friends
        raise onnx_error(
            path,
            f"ONNX shape inference fails on it ({first_line(exc)}); the file is corrupted "
            "or was edited. Re-export the model.",
        ) from None
    g = inferred.graph
    sizes = {}
    for vi in [*g.value_info, *g.output]:
        size = _value_bytes(vi)
        if size is not None:
            sizes[vi.name] = max(size, sizes.get(vi.name, 0))
    fix = (
        "the file was edited or is a resource bomb; if you trust it, pass max_bytes to "
        "load_onnx / sparsify.runtime.load"
    )
    for name, size in sizes.items():
        if size > budget:
            raise onnx_error(
                path,
                f"tensor {name[:80]!r} would take {size} bytes, over the {budget} a file of "
                f"{on_disk} bytes may (max(1 GiB, 1024x its size)); {fix}.",
            )
    constant = {t.name for t in model.graph.initializer} - {i.name for i in model.graph.input}
    folded = 0
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and all(i in constant for i in node.input if i):
            constant.update(o for o in node.output if o)
            folded += sum(sizes.get(o, 0) for o in node.output if o)
    if folded > budget:
        raise onnx_error(
            path,
            f"its constant subgraphs compute {folded} bytes of tensors, over the {budget} a "
            f"file of {on_disk} bytes may (max(1 GiB, 1024x its size)); {fix}.",
        )


def load_onnx(
    path: str | os.PathLike[str], verify: bool = True, *, max_bytes: int | None = None
) -> onnx.ModelProto:
    """Load an ONNX file as untrusted input and check it before anything uses it.

    Checks, in order: the file exists and is not empty; it starts like an ONNX model
    (a zip, pickle, gzip, npy or JSON file is named as such); protobuf parses it and it has
    a graph; with ``verify`` its ``sparsify.*`` metadata (format, format version, sha256 of
    the model, sha256 of any ``.data`` file); external-data references are relative paths
    without ``..`` that stay inside the model's folder and name byte ranges inside the file
    (checked before onnx reads them); every stored tensor matches its dims and type;
    initializers hold no NaN/inf; no tensor whose shape the file fixes (a ConstantOfShape
    of a constant shape, a declared value...) nor the constant-folded total exceeds the
    budget; ``onnx.checker.check_model`` (``full_check`` unless the model has
    ``sparse_initializer``, which full_check rejects by design). The file must be a
    regular file (a FIFO or device is refused without blocking).

    Args:
        path: an ``.onnx`` file.
        verify: require and check the metadata :func:`export_onnx` writes. ``False`` loads
            ONNX files from other tools (without provenance: a bit flip that still parses and
            passes the checker is not detected); every other check still runs.
        max_bytes: the bound on any one tensor the file's shapes fix, and on what its
            constant subgraphs compute (:func:`check_tensor_sizes`); default
            max(1 GiB, 1024x the file's bytes). Raise it only for a file you trust.

    Returns:
        the model, external data loaded.

    Raises:
        SparsifyError: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise onnx_error(
            path, "does not exist or is not a file; give an .onnx file from sparsify export."
        )
    # a regular file only: a FIFO or device named model.onnx is refused, never read from
    data = read_regular_file(path, _MAX_MODEL_FILE, "ONNX file")
    if not data:
        raise onnx_error(
            path, "is empty (0 bytes); the export was interrupted. Re-export the model."
        )
    # ModelProto field 1 is ir_version, and protobuf writes fields in number order
    if data[:1] != b"\x08":
        kind = next((what for magic, what in _FOREIGN_MAGIC if data.startswith(magic)), None)
        if data[8:9] == b"{" and kind is None:
            kind = "a safetensors file"
        raise onnx_error(
            path,
            f"not an ONNX model ({kind or 'it does not start with an ir_version field'}); "
            "give an .onnx file from sparsify export.",
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise onnx_error(
            path,
            f"not a valid ONNX protobuf ({first_line(exc)}); the file is truncated or "
            "corrupted. Re-export the model.",
        ) from None
    del data
    if not model.HasField("graph") or not model.graph.node:
        raise onnx_error(path, "holds no ONNX graph; the file is truncated or not an ONNX model.")
    props = {p.key: p.value for p in model.metadata_props}
    if verify:
        fmt = props.get(_FORMAT_KEY)
        if fmt is None:
            raise onnx_error(
                path,
                "has no sparsify metadata (truncated, or not written by sparsify export); "
                "re-export it, or pass verify=False for an ONNX file from another tool.",
            )
        if fmt != ONNX_FORMAT:
            raise onnx_error(
                path, f"format is {fmt!r}, expected {ONNX_FORMAT!r}; re-export the model."
            )
        version = props.get(_VERSION_KEY)
        if version != ONNX_FORMAT_VERSION:
            raise onnx_error(
                path,
                f"sparsify ONNX format version {version!r} is not supported (this sparsify "
                f"reads {ONNX_FORMAT_VERSION}); upgrade sparsify or re-export the model.",
            )
        if props.get(_SHA_KEY) != _digest(model):
            raise onnx_error(
                path,
                "sha256 does not match the model; the file is truncated, bit-flipped or was "
                "edited. Re-export the model.",
            )
    external = _check_external(path, model, verify)
    _check_tensors(path, model)
    on_disk = path.stat().st_size + sum(
        len(t.raw_data) for _, t in model_tensors(model) if external
    )
    check_tensor_sizes(path, model, on_disk, max_bytes)
    full = not model.graph.sparse_initializer
    try:
        onnx.checker.check_model(str(path) if external else model, full_check=full)
    except Exception as exc:  # ValidationError, InferenceError, ...
        raise onnx_error(
            path,
            f"fails onnx.checker ({first_line(exc)}); the file is corrupted or was edited. "
            "Re-export the model.",
        ) from None
    return model
