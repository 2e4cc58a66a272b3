"""What the converter chooses, and what the torch-free runtime runs, on one sparse Linear.

    python tools/bench_converter_runtime.py                   # 4096x4096, 90% zeros, batch 1 and 64
    python tools/bench_converter_runtime.py --zeros 95 --batches 1,16,64 --threads 1

Per batch, in one process:

1. the converter (``sparsify_inference_``, mode calibrate, at that batch and thread count) on
   ``nn.Sequential(Linear)``: its choice and every candidate's calibration time;
2. interleaved timing (sparsify.timing.time_interleaved, medians) of torch dense, the
   converted model, and the torch-free runtime (``sparsify.runtime.load_onnx_model`` of a
   one-MatMul ONNX file whose weight initializer is mostly zeros) with ``kernels="spk"`` and
   ``kernels="scipy"``; each output is checked against torch dense.

Threads: torch is pinned with ``torch.set_num_threads`` and OpenMP (the spk kernels in the
runtime) with OMP_NUM_THREADS, set here before anything loads. Writes
results/kernels/converter_runtime.json and .md with the command, the load average before and
after, and library versions; timings are only worth reading on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import sys


def _early_threads(argv: list[str]) -> None:
    """OMP_NUM_THREADS from --threads before numpy/torch/the kernels start OpenMP."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            os.environ["OMP_NUM_THREADS"] = argv[i + 1]
        elif a.startswith("--threads="):
            os.environ["OMP_NUM_THREADS"] = a.split("=", 1)[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_early_threads(sys.argv[1:])

import copy  # noqa: E402
import datetime as dt  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from sparsify import kernels as K  # noqa: E402
from sparsify.accel import sparsify_inference_  # noqa: E402
from sparsify.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from sparsify.runtime import load_onnx_model  # noqa: E402
from sparsify.timing import loadavg, machine_info, time_interleaved, torch_threads  # noqa: E402


def matmul_onnx(w: np.ndarray, path: Path) -> None:
    """Y = X @ W^T as one MatMul, W^T (in, out) a plain initializer; batch dynamic."""
    out_f, in_f = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_f])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w.T), "wt")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)


def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    lin = nn.Linear(args.in_features, args.out_features, bias=False)
    with torch.no_grad():
        keep = torch.from_numpy(rng.random(lin.weight.shape) >= args.zeros / 100)
        lin.weight.mul_(keep)
    dense = nn.Sequential(lin).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparsify-bench-") as tmp:
        path = Path(tmp) / "linear.onnx"
        matmul_onnx(lin.weight.detach().numpy(), path)
        rt = {k: load_onnx_model(path, verify=False, kernels=k) for k in ("spk", "scipy")}
        for batch in args.batches:
            x = torch.randn(batch, args.in_features)
            xn = x.numpy()
            conv = copy.deepcopy(dense)
            before = loadavg()
            report = sparsify_inference_(conv, x, threads=args.threads, reps=args.reps)
            d = report.layers[0]
            with torch.inference_mode():
                want = dense(x).numpy()
                got = {"converter": conv(x).numpy()}
            got.update({f"runtime_{k}": m(xn) for k, m in rt.items()})
            err = {k: float(np.abs(v - want).max()) for k, v in got.items()}
            with torch_threads(args.threads), torch.inference_mode():
                fns = {
                    "torch_dense": lambda x=x: dense(x),
                    "converter": lambda x=x, conv=conv: conv(x),
                    "runtime_spk": lambda xn=xn: rt["spk"](xn),
                    "runtime_scipy": lambda xn=xn: rt["scipy"](xn),
                }
                t = time_interleaved(fns, reps=args.reps, warmup=1, min_sample_s=args.min_sample_s)
            rows.append(
                {
                    "batch": batch,
                    "threads": args.threads,
                    "zeros_pct": args.zeros,
                    "converter_choice": d.chosen,
                    "converter_reason": d.reason,
                    "calibration_ms": {k: v * 1e3 for k, v in d.times_s.items()},
                    "median_ms": {k: v.median * 1e3 for k, v in t.items()},
                    "iqr_ms": {k: v.iqr * 1e3 for k, v in t.items()},
                    "max_abs_diff_vs_torch_dense": err,
                    "load_before": before,
                    "load_after": loadavg(),
                }
            )
            print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict[str, Any]) -> str:
    m = r["median_ms"]
    return (
        f"| {r['zeros_pct']}% | {r['batch']} | {r['threads']} | {r['converter_choice']} | "
        f"{m['torch_dense']:.3f} | {m['converter']:.3f} | {m['torch_dense'] / m['converter']:.2f}x | "
        f"{m['runtime_spk']:.3f} | {m['runtime_scipy']:.3f} | "
        f"{m['runtime_scipy'] / m['runtime_spk']:.2f}x | {r['load_before'][0]} -> {r['load_after'][0]} |"
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Converter choice and runtime kernels on a sparse Linear",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Date {report['date']}; {report['machine'].get('cpu', 'CPU')}; kernels "
        f"{report['kernels'].get('isa', 'unavailable')}; OMP_NUM_THREADS="
        f"{report['omp_num_threads']}; torch {report['machine'].get('torch')}.",
        f"Load average (1/5/15 min) before {report['load_before']}, after "
        f"{report['load_after']}. **The machine was loaded** (2 cores shared with other "
        "agents' test suites and sweeps while this ran): absolute times are inflated and noisy; "
        "the ratios, taken from interleaved samples, are the part to read, and should be "
        "re-measured on a quiet machine.",
        "",
        f"Linear {report['out_features']}x{report['in_features']}, random unstructured zeros, "
        "no bias, fp32. Converter = `sparsify_inference_(model, x, threads=T)` (calibrate, at "
        "that batch); runtime = `sparsify.runtime.load_onnx_model(one-MatMul .onnx, "
        "kernels=...)`. Median ms per call, interleaved.",
        "",
        "| zeros | batch | threads | converter chose | torch dense | converter | vs dense | "
        "runtime spk | runtime scipy | spk vs scipy | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(_line(r) for r in report["rows"]),
        "",
        "Calibration (ms per call of each candidate the converter timed):",
        "",
    ]
    for r in report["rows"]:
        cal = ", ".join(f"{k} {v:.3f}" for k, v in r["calibration_ms"].items())
        lines.append(
            f"- batch {r['batch']}: {cal}; -> {r['converter_choice']}: {r['converter_reason']}"
        )
    lines += [
        "",
        "Max |y - torch dense| per path: "
        + "; ".join(
            f"batch {r['batch']}: "
            + ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs_diff_vs_torch_dense"].items())
            for r in report["rows"]
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    ap.add_argument("--zeros", type=int, default=90, help="percent zeros")
    ap.add_argument("--batches", type=ints, default=[1, 64])
    ap.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads")
    ap.add_argument("--out-features", type=int, default=4096)
    ap.add_argument("--in-features", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions (medians)")
    ap.add_argument("--min-sample-s", type=float, default=0.02)
    ap.add_argument("--out", type=Path, default=Path("results/kernels"))
    args = ap.parse_args(argv)
    load_before = loadavg()
    rows = bench(args)
    report = {
        "command": "python "
        + shlex.join(["tools/bench_converter_runtime.py", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "kernels": K.info(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "out_features": args.out_features,
        "in_features": args.in_features,
        "load_before": load_before,
        "load_after": loadavg(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "converter_runtime.json", report)
    atomic_write_text(args.out / "converter_runtime.md", markdown(report))
    print(f"wrote {args.out / 'converter_runtime.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
