"""Peak resident memory per backend, each in a fresh process (``python -m sparsify.bench.rss``).

The child imports only what its backend needs (onnxruntime backends and the scipy runtime
never import torch), records VmRSS after the imports, builds the backend (torch sparse
backends convert the model in place, so the dense weights are freed), runs one batch three
times, then reports:

    rss_after_imports   VmRSS once the libraries are loaded (the floor of that stack)
    rss_steady          VmRSS after the runs: what serving this model costs
    peak_rss            VmHWM, the high-water mark of the process (loading included)
    model_bytes         rss_steady - rss_after_imports
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from sparsify.probe import ChildFailed, run_json_child, vm_hwm, vm_rss

RSS_BATCH = 64


def _child(job: dict[str, Any]) -> dict[str, Any]:
    import gc

    import numpy as np

    backend, batch, shape = job["backend"], job["batch"], tuple(job["input_shape"])
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    torch_imported = False
    if backend in ("ort_dense", "ort_compact"):
        import onnxruntime as ort

        from sparsify.export.onnx.ort import session_options

        base = vm_rss()
        # ort_session's settings (one thread, sequential, no spinning) without its verified
        # load: that would hold a second, protobuf copy of the model in the measured process
        opts = session_options(threads=1)
        sess = ort.InferenceSession(job["path"], opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run() -> Any:
            return sess.run(None, {name: x})

    elif backend == "scipy_runtime":
        import sparsify.runtime

        base = vm_rss()
        model = sparsify.runtime.load(job["path"])

        def run() -> Any:
            return model(x)

    else:
        import torch

        from sparsify.bench.backends import BackendUnavailable, build_runner
        from sparsify.bench.sources import load_source

        torch_imported = True
        torch.set_num_threads(1)
        base = vm_rss()
        source = load_source(job["spec"])
        artifacts = {"paths": job.get("paths", {}), "unavailable": {}}
        try:
            r = build_runner(backend, source, artifacts, batch, 1, copy_model=False)
        except BackendUnavailable as exc:
            return {"available": False, "reason": str(exc)}
        del source
        gc.collect()
        xt = torch.from_numpy(x)
        xi = r.prepare(xt)

        def run() -> Any:
            with torch.inference_mode():
                return r.fn(xi)

    for _ in range(3):
        run()
    gc.collect()
    steady = vm_rss()
    return {
        "available": True,
        "batch": batch,
        "threads": 1,
        "torch_imported": torch_imported,
        "rss_after_imports": base,
        "rss_steady": steady,
        "peak_rss": vm_hwm(),
        "model_bytes": steady - base if base >= 0 and steady >= 0 else None,
    }


def measure(
    spec: dict[str, Any],
    backend: str,
    paths: dict[str, str],
    input_shape: Sequence[int],
    batch: int = RSS_BATCH,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run one backend in a fresh Python process and return its memory figures."""
    job = {
        "spec": spec,
        "backend": backend,
        "path": paths.get(backend),
        "paths": paths,
        "input_shape": list(input_shape),
        "batch": batch,
    }
    try:
        return run_json_child(["-m", "sparsify.bench.rss", json.dumps(job)], timeout)
    except ChildFailed as exc:
        reason = str(exc)
        return {
            "available": False,
            "reason": reason if reason.startswith("timed out") else f"child failed: {reason}",
        }


def measure_all(
    spec: dict[str, Any],
    artifacts: dict[str, Any],
    backends: Sequence[str],
    input_shape: Sequence[int],
) -> dict[str, Any]:
    """:func:`measure` for every backend (compiled is skipped: its compile dominates;
    deepsparse's own process reports its memory in the timing entries)."""
    out: dict[str, Any] = {}
    for b in backends:
        if b in artifacts["unavailable"]:
            out[b] = {"available": False, "reason": artifacts["unavailable"][b]}
        elif b == "compiled":
            out[b] = {"available": False, "reason": "not measured: inductor's compile dominates"}
        elif b == "deepsparse":
            out[b] = {
                "available": False,
                "reason": "not measured here: its worker process reports worker_peak_rss "
                "in the timing entries",
            }
        else:
            out[b] = measure(spec, b, artifacts["paths"], input_shape)
    return out


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
