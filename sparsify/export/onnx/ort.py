"""onnxruntime: THE session builder (verified load, spinning off) and a resident-memory probe.

Every onnxruntime session sparsify makes comes from :func:`ort_session` (or, in a probe child
that must not load the model twice, :func:`session_options`), so the lesson the bench
learned applies everywhere: onnxruntime's intra-op pool threads spin after each run by
default, and next to torch on the same cores they halve torch's 2-thread speed (Linear 4096,
batch 64: 28.4 vs 13.9 ms, ``results/bench/ort_spin``). Spinning is off unless asked for.

Importing this module imports no torch (a probe child measures memory with it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from onnx import TensorProto

from sparsify.errors import SparsifyError
from sparsify.export.onnx.integrity import first_line, load_onnx, model_tensors, onnx_error
from sparsify.probe import ChildFailed, run_json_child


def session_options(
    threads: int | None = None, *, allow_spinning: bool = False, options: Any = None
) -> Any:
    """``onnxruntime.SessionOptions`` as sparsify uses them (``options`` is updated in place
    when given, else a new one with warnings silenced).

    ``threads``: intra-op threads, one inter-op thread, sequential execution (None leaves
    onnxruntime's defaults). ``allow_spinning=False`` sets ``session.intra_op.allow_spinning``
    and ``session.inter_op.allow_spinning`` to ``"0"``: idle pool threads sleep instead of
    burning the cores torch (or anything else) runs on.

    Raises:
        SparsifyError: onnxruntime is missing, or ``threads`` < 1.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise SparsifyError("onnxruntime is not installed; pip install onnxruntime.") from None
    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SparsifyError(f"ort_session: threads must be an integer >= 1; got {threads!r}.")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def ort_session(
    path: str | os.PathLike[str],
    threads: int | None = None,
    *,
    allow_spinning: bool = False,
    verify: bool = True,
    options: Any = None,
    providers: list[str] | None = None,
) -> Any:
    """An onnxruntime ``InferenceSession`` on ``path``, created only after :func:`load_onnx`.

    The session is built from the verified model in memory (from ``path`` only when the
    weights are in a ``.data`` file), so what runs is what was checked.

    Args:
        path: an ``.onnx`` file.
        threads: intra-op threads (one inter-op thread, sequential execution); None keeps
            onnxruntime's default (all cores).
        allow_spinning: let idle pool threads spin (onnxruntime's default; off here because
            spinning threads slow down whatever else runs on the cores).
        verify: passed to :func:`load_onnx` (False: an ONNX file from another tool, or one
            sparsify just wrote; the structural checks still run).
        options: a base ``onnxruntime.SessionOptions``; ``threads``/``allow_spinning`` are
            applied to it.
        providers: default ``["CPUExecutionProvider"]``.

    Raises:
        SparsifyError: anything :func:`load_onnx` refuses, onnxruntime missing, or a session
            onnxruntime cannot create (unsupported op or type, ...).
    """
    path = Path(path)
    model = load_onnx(path, verify=verify)
    opts = session_options(threads, allow_spinning=allow_spinning, options=options)
    import onnxruntime as ort

    external = any(t.data_location == TensorProto.EXTERNAL for _, t in model_tensors(model))
    source: Any = str(path) if external else model.SerializeToString()
    del model
    try:
        return ort.InferenceSession(source, opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors derive from Exception only
        raise onnx_error(
            path,
            f"onnxruntime cannot create a session ({first_line(exc)}); the model uses an op "
            "or type this onnxruntime lacks, or was edited. Re-export it or upgrade onnxruntime.",
        ) from None


# --------------------------------------------------------------------------- memory

# the child reads VmRSS/VmHWM (sparsify.probe), never ru_maxrss: Linux carries ru_maxrss over
# from the forking parent across exec, so a child of a 3 GB parent reported 3 GB
_RSS_SCRIPT = r"""
import json, sys
from sparsify.probe import vm_hwm, vm_rss
from sparsify.export.onnx.ort import session_options
import onnxruntime as ort
before = vm_rss()
session = ort.InferenceSession(sys.argv[1], session_options(1), providers=["CPUExecutionProvider"])
after = vm_rss()
print(json.dumps({"rss_before_session": before, "rss_after_session": after, "peak_rss": vm_hwm()}))
"""


def ort_resident_memory(path: str | os.PathLike[str], timeout: float = 300.0) -> dict[str, int]:
    """Resident memory of a fresh process before and after creating an ORT session on ``path``.

    Runs a separate Python (this interpreter) that imports onnxruntime, reads VmRSS
    (:func:`sparsify.probe.vm_rss`), creates a 1-thread CPUExecutionProvider session and
    reads it again, then its own peak (VmHWM since its exec, :func:`sparsify.probe.vm_hwm`).
    A compact or sparse_initializer model is decoded to dense tensors at session creation,
    so expect at least the dense model's ``session_bytes``: compact ONNX saves disk, not RAM.

    Returns:
        ``rss_before_session``, ``rss_after_session``, ``session_bytes`` (their difference)
        and ``peak_rss`` (the child's VmHWM), in bytes; -1 each on systems without /proc.

    Raises:
        SparsifyError: the file is missing or onnxruntime fails to load it.
    """
    path = Path(path)
    if not path.is_file():
        raise SparsifyError(f"{path} does not exist; export the model first.")
    try:
        data = run_json_child(["-c", _RSS_SCRIPT, str(path)], timeout)
    except ChildFailed as exc:
        if str(exc).startswith("timed out"):
            raise SparsifyError(
                f"{path}: onnxruntime took over {timeout:.0f} s to load it; raise timeout."
            ) from None
        raise SparsifyError(f"{path}: onnxruntime could not load it ({exc}).") from None
    before, after, peak = (
        int(data[k]) for k in ("rss_before_session", "rss_after_session", "peak_rss")
    )
    missing = before < 0 or after < 0
    return {
        "rss_before_session": before,
        "rss_after_session": after,
        "session_bytes": -1 if missing else after - before,
        "peak_rss": peak,
    }
