"""torch -> ONNX: the dense model from ``torch.onnx.export``, and :func:`export_onnx`, which
writes the dense, compact and sparse_initializer files.

``torch.export.export(model, (x,), dynamic_shapes=..., strict=False)`` then
``torch.onnx.export(program, dynamo=True, opset_version=20, external_data=False)``: ONNX
opset 20, one self-contained file. Shapes are declared, never guessed: the batch is
dynamic always (``dim_param: "batch"``; a batch-1 example is traced at batch 2, since
torch.export fixes a dimension it sees at size 1), other dimensions only on request
(``dynamic=("height", "width")``, checked by running the model at another size first) and
otherwise fixed by the example input: give the model's real input shape. Calling
torch.export directly (not through ``torch.onnx.export(dynamic_shapes=...)``) is what
lets a dimension the model fixes be refused: the ONNX exporter silently turns it into a
constant. Its optimiser
folds eval-mode BatchNorm into the preceding Conv, so a Conv initializer holds
``weight * gamma / sqrt(var + eps)``; zeros stay zeros (-0.0 where gamma < 0, which
compaction stores as +0.0).

The exporter takes a module, never a checkpoint: the caller (the CLI, the bench) resolves a
checkpoint to ``(model, example input, provenance)``; provenance is stamped into the file's
``sparsify.source`` metadata, under the sha256.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import onnx
import sympy
import torch
from onnx import helper
from torch import nn

from sparsify.errors import SparsifyError, check_input_shape
from sparsify.export.onnx.compact import compact_model, sparse_initializer_model
from sparsify.export.onnx.integrity import SOURCE_KEY, first_line, write_model_files
from sparsify.export.onnx.ort import session_options
from sparsify.fileio import atomic_directory

OPSET = 20
EXPORTER = "torch.onnx.export(dynamo=True)"
DENSE_FILE = "model.dense.onnx"
COMPACT_FILE = "model.compact.onnx"
SPARSE_INIT_FILE = "model.sparse_initializer.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def default_example_input(model: nn.Module) -> torch.Tensor:
    """``zeros(1, in_features)`` when ``model``'s first weight layer is an ``nn.Linear`` that
    reads the input as given (no ``nn.Flatten`` before it): the one input shape a module
    determines by itself. Any other model (a Conv, a Flatten first: images of any size) has
    no shape to read, and none is guessed.

    Raises:
        SparsifyError: the shape is not determined (pass ``example_input`` or ``input_shape``).
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return torch.zeros(1, int(module.in_features))
        if isinstance(module, nn.Flatten) or (
            len(list(module.parameters(recurse=False))) and module is not model
        ):
            break
    raise SparsifyError(
        f"the input shape of this {type(model).__name__} is not determined by its layers; pass "
        "example_input=torch.zeros(1, C, H, W) or input_shape=(C, H, W) (CLI: --input-shape)."
    )


def example_for(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """The tracing input: ``example_input``, else ``zeros(1, *input_shape)``, else
    :func:`default_example_input` (a plain Linear first). Refuses to guess anything else."""
    if example_input is not None:
        return example_input
    if input_shape is not None:
        return torch.zeros(1, *check_input_shape("input_shape", list(input_shape)))
    return default_example_input(model)


#: names accepted by ``dynamic`` for an input of a given rank (batch included), besides
#: axis numbers: images (B, C, H, W), volumes (B, C, D, H, W), batch-first sequences (B, S, E).
DIM_NAMES: dict[int, dict[str, int]] = {
    3: {"batch": 0, "sequence": 1},
    4: {"batch": 0, "height": 2, "width": 3},
    5: {"batch": 0, "depth": 2, "height": 3, "width": 4},
}

#: substrings of torch's error for an input too small for the model's pooling/kernels
_TOO_SMALL = (
    "output size is too small",
    "calculated output size",
    "kernel size can't be greater",
    "padding size should be",
    "input image is smaller than kernel",
)
#: substrings of torch's error for an input whose shape does not fit a layer
_MISFIT = (
    "shapes cannot be multiplied",
    "size mismatch",
    "expected input",
    "wrong image",
    "must match the size",
    "expected size",
    "but got",
)
#: lines of torch's exporter that wrap the cause without saying it
_BOILERPLATE = (
    "failed to export the model",
    "this is step",
    "the error above occurred",
    "for more information",
    "while executing",
    "original traceback",
    "exception raised from",
)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def dynamic_axes(shape: Sequence[int], dynamic: Sequence[int | str] | str | None) -> dict[int, str]:
    """``{axis: name}`` of the dynamic dimensions of an input of ``shape`` (batch first).

    The batch (axis 0, ``"batch"``) is always in. ``dynamic`` names the others: axis
    numbers (``1 .. rank-1``), or names from :data:`DIM_NAMES` for the input's rank
    (``height``/``width`` of (B, C, H, W), ``sequence`` of (B, S, E)), as a sequence or one
    comma-separated string (``"height,width"``). An axis keeps its name as the ONNX
    ``dim_param`` (``dim<axis>`` when it has none).

    Raises:
        SparsifyError: an unknown name, or an axis outside the input's rank.
    """
    rank = len(shape)
    names = DIM_NAMES.get(rank, {"batch": 0})
    by_axis = {axis: name for name, axis in names.items()}
    if isinstance(dynamic, str):
        dynamic = [d for d in dynamic.split(",") if d.strip()]
    axes = {0: "batch"}
    for item in dynamic or ():
        key = item.strip().lower() if isinstance(item, str) else item
        if isinstance(key, str) and key.lstrip("-").isdigit():
            key = int(key)
        if isinstance(key, str):
            if key not in names:
                known = ", ".join(names) + (", " if len(names) > 1 else "")
                raise SparsifyError(
                    f"unknown dynamic dimension {item!r} for an input of shape {list(shape)}; "
                    f"give {known}or an axis number 1..{rank - 1}."
                )
            axis = names[key]
        elif isinstance(key, int) and not isinstance(key, bool) and -rank <= key < rank:
            axis = key % rank
        else:
            raise SparsifyError(
                f"dynamic dimension {item!r} is not an axis of an input of shape "
                f"{list(shape)}; give an axis number 1..{rank - 1} or a name."
            )
        axes[axis] = by_axis.get(axis, f"dim{axis}")
    return dict(sorted(axes.items()))


def _clean(text: str) -> str:
    """``text`` without ANSI escape codes, on one line."""
    return " ".join(_ANSI.sub("", text).split())


def export_error_cause(exc: BaseException) -> str:
    """The first real cause of an exporter failure, on one line without ANSI codes.

    torch's exporters wrap the cause ("Given input size: (512x1x1). Calculated output
    size: (512x0x0)...") in exceptions that only say which step failed; the chain
    (``__cause__``, else ``__context__``) is searched from the innermost exception out, and
    the first line that is not such a wrapper is returned (at most 300 characters).
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    for error in reversed(chain):
        for line in _ANSI.sub("", str(error)).splitlines():
            line = _clean(line).lstrip("-• ").strip()
            if line and not any(b in line.lower() for b in _BOILERPLATE):
                return line[:300]
    return type(exc).__name__


def _fix_for(cause: str) -> str:
    """What the user can do about an exporter failure whose cause is ``cause``."""
    low = cause.lower()
    if any(s in low for s in _TOO_SMALL):
        return (
            "the example input is too small for this model; pass a larger input "
            "(input_shape=(C, H, W), CLI: --input-shape C H W)"
        )
    if any(s in low for s in _MISFIT):
        return (
            "the example input does not fit this model's layers; pass the shape it was built "
            "for (input_shape=..., CLI: --input-shape)"
        )
    return "check that the model runs on example_input and uses exportable ops (--debug shows torch's log)"


@contextlib.contextmanager
def _quiet(debug: bool) -> Iterator[None]:
    """Silence torch's logging, warnings and prints while exporting (not with ``debug``):
    a failure is reported as one line with its cause (:func:`export_error_cause`)."""
    if debug:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _widen(x: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """``x`` repeated along ``axis`` up to ``size`` (a tracing input of another size: only
    the shape matters to the exporter)."""
    reps = [1] * x.dim()
    reps[axis] = -(-size // x.shape[axis])
    return x.repeat(*reps).narrow(axis, 0, size)


def _refuse(model: nn.Module, cause: str, fix: str, exc: BaseException, debug: bool) -> NoReturn:
    error = SparsifyError(f"could not export {type(model).__name__}: {cause}; {fix}.")
    if debug:
        raise error from exc
    raise error from None


def export_dense_model(
    model: nn.Module,
    example_input: torch.Tensor,
    dynamic: Sequence[int | str] | str | None = None,
    *,
    debug: bool = False,
) -> onnx.ModelProto:
    """``model`` as a dense ONNX ModelProto (dynamo exporter, opset 20).

    Shapes: the batch is dynamic always, a batch-1 example included (torch.export fixes a
    dimension traced at size 1, so such a dimension is traced at size 2, the example
    repeated); the dimensions named by ``dynamic`` (:func:`dynamic_axes`) are dynamic too,
    each checked first by running the model at twice the example's size there; every other
    dimension is the example's. Input dims carry ``dim_param`` names ``batch``, ``height``...

    The exporter's per-node debugging metadata is removed (:func:`strip_debug_metadata`).
    The model is exported in eval mode; the train/eval flag of every submodule is restored
    afterwards. The graph input is named ``input`` and the first output ``logits``.
    torch's log output is silenced unless ``debug``.

    Raises:
        SparsifyError: a model without parameters, a model that does not run on the
            example, a dimension the model cannot take at another size (one line naming it
            and why), or a model the exporter cannot trace (one line: the first real cause
            from torch's exception chain, and the fix).
    """
    if not any(p.numel() for p in model.parameters()):
        raise SparsifyError(
            f"{type(model).__name__} has no parameters, so there is nothing to export; "
            "give a model with weights."
        )
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise SparsifyError(
            "example_input must be a tensor with a batch dimension, e.g. torch.randn(1, 3, 64, 64)."
        )
    axes = dynamic_axes(tuple(example_input.shape), dynamic)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with _quiet(debug):
            program = _export_program(model, example_input, axes, debug)
    finally:
        for module, mode in modes.items():
            module.training = mode
    if program is None:  # only the TorchScript path returns None
        raise SparsifyError("torch.onnx.export returned no program; upgrade torch to >= 2.6.")
    return strip_debug_metadata(program)


def _export_program(
    model: nn.Module, example: torch.Tensor, axes: dict[int, str], debug: bool
) -> onnx.ModelProto | None:
    """The body of :func:`export_dense_model`: run, probe, trace, convert, name the dims."""
    shape = list(example.shape)
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward
        cause = export_error_cause(exc)
        _refuse(
            model,
            f"it does not run on an input of shape {shape} ({cause})",
            _fix_for(cause),
            exc,
            debug,
        )
    trace = example
    for axis, name in axes.items():
        if axis == 0 and shape[0] > 1:
            continue
        # axis 0 at size 1 -> 2 (a size-1 dim is fixed by torch.export); others: 2x the example
        size = 2 if axis == 0 else 2 * shape[axis]
        probe = _widen(example, axis, size)
        try:
            with torch.no_grad():
                model(probe)
        except Exception as exc:  # noqa: BLE001
            cause = export_error_cause(exc)
            _refuse(
                model,
                f"it cannot take a dynamic {name}: at {name} {size} instead of {shape[axis]} "
                f"it fails ({cause})",
                f"keep {name} fixed (leave it out of dynamic / --dynamic)"
                if axis
                else "make the forward batch-independent (x.flatten(1), not x.view(1, -1))",
                exc,
                debug,
            )
        if shape[axis] == 1:
            trace = _widen(trace, axis, 2)
    specs = {a: torch.export.Dim("batch", min=1) if a == 0 else torch.export.Dim.AUTO for a in axes}
    try:
        exported = torch.export.export(model, (trace,), dynamic_shapes=(specs,), strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types
        cause = export_error_cause(exc)
        if "constraints violated" in str(exc).lower():
            _refuse(
                model,
                f"torch.export fixes the batch ({cause})",
                "make the forward batch-independent",
                exc,
                debug,
            )
        _refuse(model, f"torch.export failed: {cause}", _fix_for(cause), exc, debug)
    placeholder = [n for n in exported.graph.nodes if n.op == "placeholder"][-1]
    traced = placeholder.meta["val"].shape
    symbols: dict[str, str] = {}
    for axis, name in axes.items():
        size = traced[axis]
        if not (isinstance(size, torch.SymInt) and size.node.expr.free_symbols):
            # specialized by the model's code (a plain int, or a SymInt that is a constant)
            error = SparsifyError(
                f"could not export {type(model).__name__} with a dynamic {name}: its code fixes "
                f"{name} at {int(size)} (torch.export specialized it); keep {name} fixed "
                "(leave it out of dynamic / --dynamic)."
            )
            raise error
        limited = _finite_range(exported, size)
        if limited is not None:
            # the exporter kept the dim symbolic but guarded a size derived from it (e.g. a
            # feature map of 1x1 at this example): the graph would be wrong outside the range
            raise SparsifyError(
                f"could not export {type(model).__name__} with a dynamic {name}: torch.export "
                f"only allows {name} in [{limited[0]}, {limited[1]}] from this example (the model "
                f"fixes a size derived from it); export from a larger example (--input-shape) "
                f"or keep {name} fixed (leave it out of dynamic / --dynamic)."
            )
        symbols[str(size.node.expr)] = name
    try:
        program = torch.onnx.export(
            exported,
            (trace,),
            dynamo=True,
            opset_version=OPSET,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - the ONNX translation raises many types
        cause = export_error_cause(exc)
        _refuse(model, f"torch.onnx.export failed: {cause}", _fix_for(cause), exc, debug)
    if program is None:
        return None
    proto = program.model_proto
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in symbols:
                dim.dim_param = symbols[dim.dim_param]
    check_dynamic_sizes(model, proto, example, axes)
    return proto


#: a dynamic graph's output at another size may differ from torch's by fp32 noise (deep nets:
#: ~1e-5 of the output's scale); a graph specialized to the export size is off by far more
DYNAMIC_TOLERANCE = 1e-3


def check_dynamic_sizes(
    model: nn.Module, proto: onnx.ModelProto, example: torch.Tensor, axes: Mapping[int, str]
) -> None:
    """Run ``proto`` in onnxruntime at other sizes of its dynamic non-batch dimensions and
    compare with ``model``: ``max|ort - torch| <= DYNAMIC_TOLERANCE * max(1, max|torch|)``.

    torch.export can keep a dimension symbolic while the graph still holds a size from the
    example (SwinV2's shifted-window attention exported at 64x64 fails in onnxruntime at
    96x96), so a dynamic dimension is promised only after the exported graph ran at two other
    sizes: twice the example's and one and a half times plus one (odd: it takes padding and
    rounding paths a power of two skips). A size the model itself refuses in torch is
    skipped; a graph above protobuf's 2 GiB cannot be loaded from memory and is not checked.

    Raises:
        SparsifyError: onnxruntime fails at a size torch runs, or its output differs.
    """
    import numpy as np
    import onnxruntime as ort

    spatial = {a: n for a, n in axes.items() if a != 0}
    if not spatial or proto.ByteSize() >= 2**31 - 2**20:
        return
    session = ort.InferenceSession(
        proto.SerializeToString(),
        session_options(max(1, torch.get_num_threads())),
        providers=["CPUExecutionProvider"],
    )
    names = ", ".join(spatial.values())
    for factor in (2.0, 1.5):
        probe = example
        for axis in spatial:
            size = example.shape[axis]
            probe = _widen(probe, axis, 2 * size if factor == 2.0 else size * 3 // 2 + 1)
        sizes = "x".join(str(probe.shape[a]) for a in spatial)
        try:
            with torch.no_grad():
                ref = model(probe)
        except Exception:  # noqa: BLE001 - the model refuses this size itself: not promised
            continue
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).detach().float().numpy()
        try:
            (got, *_) = session.run(None, {INPUT_NAME: probe.numpy()})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            cause = first_line(exc)
            raise SparsifyError(
                f"could not export {type(model).__name__} with a dynamic {names}: the exported "
                f"graph fails in onnxruntime at {names} {sizes} where torch runs ({cause}); "
                f"keep {names} fixed (leave it out of dynamic / --dynamic)."
            ) from None
        err = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        if not err <= DYNAMIC_TOLERANCE * max(1.0, float(np.abs(ref).max())):
            raise SparsifyError(
                f"could not export {type(model).__name__} with a dynamic {names}: at {names} "
                f"{sizes} the exported graph differs from torch by {err:.3g}; keep {names} "
                "fixed (leave it out of dynamic / --dynamic)."
            )


def _finite_range(
    exported: torch.export.ExportedProgram, size: torch.SymInt
) -> tuple[int, int] | None:
    """``(low, high)`` when torch.export bounded the symbol of ``size`` above, else None."""
    ranges = exported.range_constraints
    for sym in size.node.expr.free_symbols:
        vr = ranges.get(sym)
        if vr is not None and isinstance(vr.upper, sympy.Integer):  # int_oo is no Integer
            return int(vr.lower), int(vr.upper)
    return None


def strip_debug_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the exporter's per-node debugging metadata, in place; returns it.

    The dynamo exporter attaches to every node and value its FX node text, name scopes
    and a Python stack trace with the exporting machine's file paths (~1 KB per Conv).
    None of it affects execution, it leaks local paths, and in a compact file it would
    outweigh small sparse layers. Model-level ``metadata_props`` are kept.
    """
    g = model.graph
    for node in [*g.node, *(n for f in model.functions for n in f.node)]:
        del node.metadata_props[:]
        node.ClearField("doc_string")
    for value in [*g.input, *g.output, *g.value_info, *g.initializer]:
        del value.metadata_props[:]
        value.ClearField("doc_string")
    del g.metadata_props[:]
    g.ClearField("doc_string")
    return model


def _publish(out_dir: Path, writers: dict[str, Callable[[Path], None]]) -> dict[str, int]:
    """Run every writer into a staging folder, then move the files into ``out_dir``.

    A new ``out_dir`` appears whole or not at all (``atomic_directory``); into an existing
    one (it may hold the scipy bundle) each file is moved with ``os.replace``, so a reader
    sees an old or a new file, never a torn one, and other files are left alone.
    """
    if not out_dir.exists():
        with atomic_directory(out_dir) as tmp:
            for write in writers.values():
                write(tmp)
            sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        return sizes
    if not out_dir.is_dir():
        raise SparsifyError(f"{out_dir} exists and is not a directory; choose another --out.")
    stage = Path(tempfile.mkdtemp(prefix=".onnx.", suffix=".tmp", dir=out_dir))
    try:
        for write in writers.values():
            write(stage)
        sizes = {}
        for path in sorted(stage.iterdir()):
            sizes[path.name] = path.stat().st_size
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return sizes


def export_onnx(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    compact: bool = True,
    sparse_initializer: bool = False,
    *,
    input_shape: Sequence[int] | None = None,
    provenance: Mapping[str, Any] | None = None,
    dynamic: Sequence[int | str] | str | None = None,
    debug: bool = False,
) -> dict[str, int]:
    """Export ``model`` to ONNX files in ``out_dir``: dense, compact, and optionally sparse_initializer.

    Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export based), opset 20,
    ``external_data=False``; input ``input``, output ``logits``. The batch is dynamic
    always (a batch-1 example too), the dimensions named by ``dynamic`` as well, every
    other one is the example's (:func:`export_dense_model`).

    Files (each checked with ``onnx.checker.check_model`` before anything is written):
        model.dense.onnx               always; as the exporter wrote it, less its debugging
                                       metadata (full_check passes)
        model.compact.onnx             if ``compact``: sparse weights encoded and decoded in
                                       the graph with standard ops (full_check passes)
        model.sparse_initializer.onnx  if ``sparse_initializer``: GraphProto.sparse_initializer
                                       with int64 indices (plain check only: full_check fails)
    A file is self-contained unless its tensors exceed protobuf's 2 GiB limit, in which
    case its weights go to ``<file>.data`` beside it. onnxruntime densifies both sparse
    forms when it creates a session: they save disk, not RAM. Every file carries the
    ``sparsify.*`` metadata (format, version, sha256) that :func:`load_onnx` verifies; load
    the files with :func:`load_onnx` / :func:`ort_session`.

    Args:
        model: the module (exported in eval mode; its train/eval flags are restored).
        out_dir: folder to write into (created atomically if new; other files in an
            existing folder are left alone).
        example_input: a tensor for tracing, batch first.
        compact: write ``model.compact.onnx``.
        sparse_initializer: write ``model.sparse_initializer.onnx``.
        input_shape: instead of ``example_input``: one input without the batch, e.g.
            ``(3, 64, 64)``. With neither, only a model whose first layer is a plain
            Linear exports (:func:`default_example_input`); nothing is guessed.
        provenance: JSON-able facts about the source (checkpoint digest, recipe...),
            stamped as ``sparsify.source`` metadata.
        dynamic: more dynamic dimensions besides the batch: names (``"height"``,
            ``"width"``, ``"sequence"``...) or axis numbers, or one comma-separated string
            (:func:`dynamic_axes`); refused in one line where the model cannot take
            another size.
        debug: show torch's exporter log, and chain its exception to the one-line error.

    Returns:
        {file name: size in bytes} for every file written.

    Raises:
        SparsifyError: not a module, a model without parameters, an undetermined input
            shape, a dimension that cannot be dynamic, or a model the exporter cannot
            handle (one line: the cause and the fix).
    """
    if not isinstance(model, nn.Module):
        raise SparsifyError(
            f"export_onnx needs an nn.Module; got {type(model).__name__} (for a checkpoint: "
            "load_checkpoint(path).build_model() and its example_input())."
        )
    example = example_for(model, example_input, input_shape)
    dense = export_dense_model(model, example, dynamic, debug=debug)
    if provenance is not None:
        props = {p.key: p.value for p in dense.metadata_props}
        props[SOURCE_KEY] = json.dumps(dict(provenance), sort_keys=True)
        helper.set_model_props(dense, props)
    onnx.checker.check_model(dense, full_check=True)
    writers: dict[str, Callable[[Path], None]] = {
        DENSE_FILE: lambda d: write_model_files(dense, DENSE_FILE, d)
    }
    if compact:
        small, _ = compact_model(dense)
        onnx.checker.check_model(small, full_check=True)
        writers[COMPACT_FILE] = lambda d: write_model_files(small, COMPACT_FILE, d)
    if sparse_initializer:
        sparse = sparse_initializer_model(dense)
        onnx.checker.check_model(sparse)
        writers[SPARSE_INIT_FILE] = lambda d: write_model_files(sparse, SPARSE_INIT_FILE, d)
    return _publish(Path(out_dir), writers)
