"""Load an exported ONNX file as untrusted input, without torch.

:func:`load_onnx` performs exactly the checks of :func:`sparsify.export.onnx.load_onnx`
(sha256 stamp, external data contained in the model's folder, tensors match their dims,
finite weights, ``onnx.checker``) but imports only onnx and numpy, so the torch-free
runtime (:mod:`sparsify.runtime.onnx_model`) verifies files the same way. ``export/onnx.py``
imports torch at module level, hence this module; ``tests/test_runtime_onnx.py`` checks
that both loaders accept and refuse the same files with the same message.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper, numpy_helper

from sparsify.errors import SparsifyError

# the metadata keys and values sparsify.export.onnx.stamp_metadata writes
ONNX_FORMAT = "sparsify.onnx"
ONNX_FORMAT_VERSION = "1"
_FORMAT_KEY = "sparsify.format"
_VERSION_KEY = "sparsify.format_version"
_SHA_KEY = "sparsify.sha256"
_EXTERNAL_KEY = "sparsify.external_sha256"


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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- loading

# what a file that is not an ONNX model usually starts with
_FOREIGN_MAGIC = (
    (b"PK\x03\x04", "a zip archive (a torch .pt/.pth checkpoint or an .npz?)"),
    (b"\x80", "a Python pickle"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"{", "JSON text"),
)


def _fail(path: Path, what: str) -> SparsifyError:
    return SparsifyError(f"{path}: {what}")


def _first_line(exc: BaseException) -> str:
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


def _model_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
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
        raise _fail(
            path,
            f"refusing external data location {location!r} (must be a file name relative to "
            "the model's folder, without '..'); the file was edited or is not from sparsify.",
        )
    root = path.parent.resolve()
    target = (path.parent / location).resolve()
    if not target.is_relative_to(root):
        raise _fail(path, f"external data {location!r} resolves outside {root}; refusing it.")
    return target


def _check_external(path: Path, model: onnx.ModelProto, verify: bool) -> bool:
    """Check every external-data reference before onnx reads one; load them. True if any."""
    refs = [t for _, t in _model_tensors(model) if t.data_location == TensorProto.EXTERNAL]
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
            if not target.is_file():
                raise _fail(
                    path, f"external data file {location!r} is missing; copy it beside the model."
                )
            if verify and declared.get(location) != _file_sha256(target):
                raise _fail(
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
            raise _fail(
                path,
                f"tensor {t.name!r}: external data range (offset {info.get('offset')}, length "
                f"{info.get('length')}) is not inside {location!r}; re-export the model.",
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # onnx raises several types; the user's fix is the same
        raise _fail(
            path, f"cannot read its external data ({_first_line(exc)}); re-export the model."
        ) from None
    return True


def _check_tensors(path: Path, model: onnx.ModelProto) -> None:
    """Every stored tensor decodes to its declared dims and type; weights are finite."""
    for kind, t in _model_tensors(model):
        if any(d < 0 for d in t.dims):
            raise _fail(
                path, f"tensor {t.name!r} has negative dims {list(t.dims)}; re-export the model."
            )
        if t.data_type == TensorProto.UNDEFINED or t.data_type not in TensorProto.DataType.values():
            raise _fail(
                path,
                f"tensor {t.name!r} has unknown element type {t.data_type}; the file was edited "
                "or is corrupted. Re-export the model.",
            )
        try:
            array = numpy_helper.to_array(t)
        except Exception as exc:  # wrong byte count, unknown type, ... (onnx raises many types)
            raise _fail(
                path,
                f"tensor {t.name!r} does not match its dims {list(t.dims)} and type "
                f"({_first_line(exc)}); the file was edited or is corrupted. Re-export the model.",
            ) from None
        if kind == "initializer" and array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise _fail(
                    path,
                    f"weight {t.name!r} holds {bad} NaN/inf values; retrain or export a "
                    "finite checkpoint.",
                )


def load_onnx(path: str | os.PathLike[str], verify: bool = True) -> onnx.ModelProto:
    """Load an ONNX file as untrusted input and check it before anything uses it.

    Checks, in order: the file exists and is not empty; it starts like an ONNX model
    (a zip, pickle, gzip, npy or JSON file is named as such); protobuf parses it and it has
    a graph; with ``verify`` its ``sparsify.*`` metadata (format, format version, sha256 of
    the model, sha256 of any ``.data`` file); external-data references are relative paths
    without ``..`` that stay inside the model's folder and name byte ranges inside the file
    (checked before onnx reads them); every stored tensor matches its dims and type;
    initializers hold no NaN/inf; ``onnx.checker.check_model`` (``full_check`` unless the
    model has ``sparse_initializer``, which full_check rejects by design).

    Args:
        path: an ``.onnx`` file.
        verify: require and check the metadata :func:`export_onnx` writes. ``False`` loads
            ONNX files from other tools (without provenance: a bit flip that still parses and
            passes the checker is not detected); every other check still runs.

    Returns:
        the model, external data loaded.

    Raises:
        SparsifyError: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(
            path, "does not exist or is not a file; give an .onnx file from sparsify export."
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read it ({exc.strerror or exc}).") from None
    if not data:
        raise _fail(path, "is empty (0 bytes); the export was interrupted. Re-export the model.")
    # ModelProto field 1 is ir_version, and protobuf writes fields in number order
    if data[:1] != b"\x08":
        kind = next((what for magic, what in _FOREIGN_MAGIC if data.startswith(magic)), None)
        if data[8:9] == b"{" and kind is None:
            kind = "a safetensors file"
        raise _fail(
            path,
            f"not an ONNX model ({kind or 'it does not start with an ir_version field'}); "
            "give an .onnx file from sparsify export.",
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _fail(
            path,
            f"not a valid ONNX protobuf ({_first_line(exc)}); the file is truncated or "
            "corrupted. Re-export the model.",
        ) from None
    del data
    if not model.HasField("graph") or not model.graph.node:
        raise _fail(path, "holds no ONNX graph; the file is truncated or not an ONNX model.")
    props = {p.key: p.value for p in model.metadata_props}
    if verify:
        fmt = props.get(_FORMAT_KEY)
        if fmt is None:
            raise _fail(
                path,
                "has no sparsify metadata (truncated, or not written by sparsify export); "
                "re-export it, or pass verify=False for an ONNX file from another tool.",
            )
        if fmt != ONNX_FORMAT:
            raise _fail(path, f"format is {fmt!r}, expected {ONNX_FORMAT!r}; re-export the model.")
        version = props.get(_VERSION_KEY)
        if version != ONNX_FORMAT_VERSION:
            raise _fail(
                path,
                f"sparsify ONNX format version {version!r} is not supported (this sparsify "
                f"reads {ONNX_FORMAT_VERSION}); upgrade sparsify or re-export the model.",
            )
        if props.get(_SHA_KEY) != _digest(model):
            raise _fail(
                path,
                "sha256 does not match the model; the file is truncated, bit-flipped or was "
                "edited. Re-export the model.",
            )
    external = _check_external(path, model, verify)
    _check_tensors(path, model)
    full = not model.graph.sparse_initializer
    try:
        onnx.checker.check_model(str(path) if external else model, full_check=full)
    except Exception as exc:  # ValidationError, InferenceError, ...
        raise _fail(
            path,
            f"fails onnx.checker ({_first_line(exc)}); the file is corrupted or was edited. "
            "Re-export the model.",
        ) from None
    return model


__all__ = ["ONNX_FORMAT", "ONNX_FORMAT_VERSION", "load_onnx"]
