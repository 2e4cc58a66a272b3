"""Does the scipy bundle still do anything better than the compact ONNX? Both run torch-free.

    PYTHONPATH=. .venv/bin/python tools/bundle_vs_onnx.py     # -> results/parity/bundle_vs_onnx.{json,md}

For the zoo's lecture convnet (1x28x28) and torchvision's resnet18 (3x64x64), 90% of each
Conv/Linear weight zeroed by magnitude, both exported from the same module
(:func:`sparsify.export.scipy_bundle.export_scipy_bundle`, defaults;
:func:`sparsify.export.onnx.export_onnx`, compact file), then per format:

- size on disk: the bundle directory, the compact ONNX file (and the dense ONNX, for scale);
- load, in a fresh single-threaded process per (format, repetition) that imports only
  numpy + ``sparsify.runtime`` (:func:`sparsify.probe.run_json_child`): seconds of the first
  ``sparsify.runtime.load(path)`` (lazy imports included: what a user waits for) and of a
  second one in the same process; resident memory after the imports, after the first load
  (VmRSS) and the process's peak (VmHWM), which includes one batch-1 and one batch-32 call;
- latency: both loaded in one process, batch 1 and batch 32, interleaved and shuffled
  (:func:`sparsify.timing.time_interleaved`), the median seconds per call of each and the
  median of the per-repetition ratios t_onnx / t_bundle (:func:`sparsify.timing.paired_ratio`);
- max |bundle - onnx| on the same input (both are float32 runs of the same weights).

Medians over ``--reps`` processes; the machine's load is printed with the results (shared CPUs
make single numbers noisy; ratios from interleaved runs are the robust part).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torchvision

from sparsify.bench.sources import impose_density_
from sparsify.export import onnx as sonnx
from sparsify.export.scipy_bundle import export_scipy_bundle
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.pipeline.zoo import build_model
from sparsify.probe import run_json_child

MODELS = {
    "lecture_convnet": (lambda: build_model("lecture_convnet"), (1, 28, 28)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 64, 64)),
}
BATCHES = (1, 32)

# one format per fresh process: what loading costs, in time and resident memory
_LOAD = r"""
import json, sys, time
import numpy as np
from sparsify.probe import vm_hwm, vm_rss
import sparsify.runtime
path, shape = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
before = vm_rss()
t = time.perf_counter(); model = sparsify.runtime.load(path); first = time.perf_counter() - t
after = vm_rss()
t = time.perf_counter(); again = sparsify.runtime.load(path); second = time.perf_counter() - t
del again
rng = np.random.default_rng(0)
for b in (1, 32):
    model(rng.standard_normal((b, *shape)).astype(np.float32))
print(json.dumps({"load_s": first, "reload_s": second, "rss_after_imports": before,
                  "rss_after_load": after, "peak_rss": vm_hwm()}))
"""

# both formats in one process, timed interleaved: the latency comparison
_LATENCY = r"""
import json, sys
import numpy as np
import sparsify.runtime
from sparsify.timing import paired_ratio, time_interleaved
bundle, onnx = sparsify.runtime.load(sys.argv[1]), sparsify.runtime.load(sys.argv[2])
shape = [int(s) for s in sys.argv[3].split(",")]
out = {}
for b in (1, 32):
    x = np.random.default_rng(b).standard_normal((b, *shape)).astype(np.float32)
    diff = float(np.abs(bundle(x) - onnx(x)).max())
    t = time_interleaved({"bundle": lambda: bundle(x), "onnx": lambda: onnx(x)}, reps=15,
                         warmup=2, min_sample_s=0.02)
    r = paired_ratio(t["onnx"].samples, t["bundle"].samples)  # t_onnx / t_bundle
    out[f"b{b}"] = {"bundle_s": t["bundle"].median, "onnx_s": t["onnx"].median,
                    "onnx_over_bundle": r.median, "q25": r.q25, "q75": r.q75,
                    "max_abs_diff": diff}
print(json.dumps(out))
"""


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _median(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(name: str, work: Path, reps: int) -> dict[str, Any]:
    """Sizes, load and latency of the bundle and the compact ONNX of one model."""
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    impose_density_(model, 0.1)
    bundle, onnx_dir = work / f"{name}.bundle", work / f"{name}.onnx"
    export_scipy_bundle(model, bundle)
    sonnx.export_onnx(model, onnx_dir, example_input=torch.randn(2, *shape))
    compact = onnx_dir / sonnx.COMPACT_FILE
    arg = ",".join(map(str, shape))
    loads: dict[str, list[dict[str, Any]]] = {"bundle": [], "onnx": []}
    for _ in range(reps):  # alternate, so drifting load hits both alike
        for fmt, path in (("bundle", bundle), ("onnx", compact)):
            loads[fmt].append(run_json_child(["-c", _LOAD, str(path), arg], timeout=600))
    latency = run_json_child(["-c", _LATENCY, str(bundle), str(compact), arg], timeout=1200)
    return {
        "input": list(shape),
        "params": int(sum(p.numel() for p in model.parameters())),
        "bytes": {
            "bundle_dir": _dir_bytes(bundle),
            "compact_onnx": compact.stat().st_size,
            "dense_onnx": (onnx_dir / sonnx.DENSE_FILE).stat().st_size,
        },
        "load": {fmt: _median(runs) for fmt, runs in loads.items()},
        "load_runs": loads,
        "latency": latency,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Scipy bundle vs compact ONNX in the torch-free runtime",
        "",
        f"Command: `{results['command']}`; one thread; load average at start "
        f"{results['loadavg']}. Medians of {results['reps']} fresh processes per format; "
        "latency interleaved in one process (ratio: median of per-repetition t_onnx / t_bundle).",
        "",
        "| model | format | file MB | load s (first / again) | RSS MB: imports / +load / peak "
        "| b1 ms | b32 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["models"].items():
        for fmt, key in (("bundle", "bundle_dir"), ("onnx", "compact_onnx")):
            ld = r["load"][fmt]
            lat = r["latency"]
            lines.append(
                f"| {name} | {'bundle dir' if fmt == 'bundle' else 'compact ONNX'} "
                f"| {r['bytes'][key] / 1e6:.3f} | {ld['load_s']:.3f} / {ld['reload_s']:.3f} "
                f"| {ld['rss_after_imports'] / 1e6:.0f} / "
                f"{(ld['rss_after_load'] - ld['rss_after_imports']) / 1e6:.1f} / "
                f"{ld['peak_rss'] / 1e6:.0f} "
                f"| {1e3 * lat['b1'][f'{fmt}_s']:.2f} | {1e3 * lat['b32'][f'{fmt}_s']:.2f} |"
            )
        lat = r["latency"]
        lines.append(
            f"| {name} | onnx / bundle | {r['bytes']['compact_onnx'] / r['bytes']['bundle_dir']:.2f}"
            f" | {r['load']['onnx']['load_s'] / r['load']['bundle']['load_s']:.1f}x | "
            f"peak {r['load']['onnx']['peak_rss'] / r['load']['bundle']['peak_rss']:.2f}x "
            f"| {lat['b1']['onnx_over_bundle']:.2f}x | {lat['b32']['onnx_over_bundle']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure every model of :data:`MODELS`; write ``bundle_vs_onnx.json`` and ``.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per format")
    parser.add_argument("--out", type=Path, default=Path("results/parity"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "command": "PYTHONPATH=. .venv/bin/python tools/bundle_vs_onnx.py"
        + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "reps": args.reps,
        "loadavg": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="bundle_vs_onnx.") as tmp:
        for name in MODELS:
            results["models"][name] = measure(name, Path(tmp), args.reps)
            print(name, json.dumps(results["models"][name]["latency"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "bundle_vs_onnx.json", results)
    atomic_write_text(args.out / "bundle_vs_onnx.md", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
