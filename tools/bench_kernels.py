"""Benchmark sparsify.kernels against dense and sparse baselines, in one process.

    python tools/bench_kernels.py                              # full grid (several minutes)
    python tools/bench_kernels.py --zeros 90 --batches 1,64 --threads 1 --reps 5   # quick

Linear (out x in, default 4096 x 4096) with random unstructured zeros; per (zeros, batch,
threads) every candidate is timed interleaved (shuffled order per repetition, medians;
sparsify.timing.time_interleaved), threads pinned per candidate:

    sparsify_csr / sparsify_auto      sparsify.kernels.spmm on the csr layout and on the
                                      blocked one that pack(layout="auto") picks
    sparsify_t                        sparsify.kernels.spmm_t (auto layout) on the activation
                                      already transposed, (in, batch) -> (out, batch): what a
                                      runtime that keeps activations transposed pays
    torch_dense                       x @ W.T (torch.set_num_threads)
    ort_dense                         onnxruntime MatMul session, intra_op threads pinned,
                                      session.intra_op.allow_spinning = 0
    scipy_csr                         (W_csr @ x.T).T (scipy is single-threaded)
    torch_csr                         (W_csr @ x.T).T with torch's sparse CSR (MKL)

Effective GFLOP/s count the nonzeros only: 2 * nnz * batch / t. Two probes give the
limits of this machine: the FMA peak of one core (12 independent vector FMA chains in
registers) and the read bandwidth of one core over an array the size of the packed weight
(and one of 256 MB for DRAM); the batch-1 "bandwidth bound" is bytes the kernel must read
(nnz * 8 + ptr + x) / that bandwidth. ``--conv`` adds resnet-like convolutions at batch 1
(sparse_conv2d vs torch and onnxruntime dense Conv).

Writes results/kernels/bench.json and results/kernels/README.md (with this command line,
the load average before and after, and library versions). Timings are only worth reading
on a quiet machine: the README says what the load was.
"""

from __future__ import annotations

import os

# OpenMP threads (ours and torch's) sleep at once after a parallel region instead of
# spinning: with interleaved candidates on 2 cores a spinning pool would steal the next
# candidate's core (onnxruntime gets the same treatment: allow_spinning = 0). Must be set
# before torch and the kernel library load their OpenMP runtimes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime as dt
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import scipy.sparse as sp
import torch
from onnx import TensorProto, helper, numpy_helper

from sparsify import kernels as K
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.timing import (
    cpu_snapshot,
    loadavg,
    machine_info,
    others_busy_cores,
    time_interleaved,
    torch_threads,
)


def ort_session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """A CPU session with pinned intra-op threads and no spinning (fair to the others)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def matmul_model(w: np.ndarray) -> onnx.ModelProto:
    """Y = X @ W^T as one MatMul with W^T (in, out) as an initializer; batch dynamic."""
    out_f, in_f = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_f])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "wt")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def conv_model(w: np.ndarray, stride: int, padding: int) -> onnx.ModelProto:
    """One dense Conv node (NCHW, groups 1) with W as an initializer."""
    oc, ic, kh, kw = w.shape
    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], strides=[stride] * 2, pads=[padding] * 4, kernel_shape=[kh, kw]
    )
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ic, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def random_sparse(rng: np.random.Generator, shape: tuple[int, ...], zeros: float) -> np.ndarray:
    """Normal values with a fraction ``zeros`` of exact zeros, uniformly placed."""
    w = rng.standard_normal(shape).astype(np.float32)
    return np.where(rng.random(shape) < zeros, 0, w).astype(np.float32)


def probes(weight_bytes: list[int]) -> dict[str, Any]:
    """FMA peak of one core and one-core read bandwidth over arrays of the given sizes."""
    lib = K.build.load()
    if lib is None:
        return {}
    iters = 2_000_000
    flops = 2 * lib.vector_width * 12 * iters
    t = min(_once(lambda: lib.lib.spk_fma_peak_probe(iters)) for _ in range(15))
    out: dict[str, Any] = {"fma_peak_gflops_1core": flops / t / 1e9, "read_gbs_1core": {}}
    for nbytes in sorted(set(weight_bytes)) + [256 << 20]:
        a = np.ones(max(nbytes // 4, 1024), np.float32)
        t = min(
            _once(lambda a=a: lib.lib.spk_read_bandwidth_probe(a.ctypes.data, a.size, 1))
            for _ in range(15)
        )
        out["read_gbs_1core"][str(nbytes)] = a.nbytes / t / 1e9
    return out


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bandwidth_for(probe: dict[str, Any], nbytes: int) -> float | None:
    """Read bandwidth (GB/s) measured for the probe array closest in size to nbytes."""
    table = probe.get("read_gbs_1core") or {}
    if not table:
        return None
    key = min(table, key=lambda k: abs(int(k) - nbytes))
    return table[key]


def bench_linear(args: argparse.Namespace, probe_out: dict[str, Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    out_f, in_f = args.out_features, args.in_features
    weights = {z: random_sparse(rng, (out_f, in_f), z / 100) for z in args.zeros}
    probe_out.update(probes([int(np.count_nonzero(w)) * 8 for w in weights.values()]))
    for z, w in weights.items():
        nnz = int(np.count_nonzero(w))
        sw_csr = K.pack(w, "csr")
        sw_blk = K.pack(w, "auto")
        csr = sp.csr_matrix(w)
        tcsr = torch.from_numpy(w).to_sparse_csr()
        tw = torch.from_numpy(w)
        sessions = {t: ort_session(matmul_model(w), t) for t in args.threads}
        for batch in args.batches:
            x = rng.standard_normal((batch, in_f)).astype(np.float32)
            tx = torch.from_numpy(x)
            xt = np.ascontiguousarray(x.T)
            out = np.empty((batch, out_f), np.float32)
            out_t = np.empty((out_f, batch), np.float32)
            for threads in args.threads:
                sess = sessions[threads]
                fns = {
                    "sparsify_csr": lambda sw=sw_csr, x=x, out=out, t=threads: K.spmm(
                        sw, x, out, threads=t
                    ),
                    "sparsify_auto": lambda sw=sw_blk, x=x, out=out, t=threads: K.spmm(
                        sw, x, out, threads=t
                    ),
                    "sparsify_t": lambda sw=sw_blk, x=xt, out=out_t, t=threads: K.spmm_t(
                        sw, x, out, threads=t
                    ),
                    "torch_dense": lambda tx=tx, tw=tw: tx @ tw.T,
                    "ort_dense": lambda s=sess, x=x: s.run(None, {"x": x}),
                    "torch_csr": lambda tx=tx, m=tcsr: (m @ tx.T).T,
                }
                if threads == 1:
                    fns["scipy_csr"] = lambda x=x, m=csr: (m @ x.T).T
                with torch_threads(threads):
                    load_before, snap = loadavg(), cpu_snapshot()
                    timings = time_interleaved(fns, reps=args.reps, min_sample_s=args.min_sample_s)
                    load_after, others = loadavg(), others_busy_cores(snap, cpu_snapshot())
                ms = {k: v.median * 1e3 for k, v in timings.items()}
                best = min(("sparsify_csr", "sparsify_auto"), key=ms.__getitem__)
                row = {
                    "zeros_pct": z,
                    "nnz": nnz,
                    "batch": batch,
                    "threads": threads,
                    "median_ms": ms,
                    "iqr_ms": {k: v.iqr * 1e3 for k, v in timings.items()},
                    "gflops_nnz": {k: 2 * nnz * batch / (v / 1e3) / 1e9 for k, v in ms.items()},
                    "best_sparsify": best,
                    "auto_kblock": sw_blk.kblock,
                    "speedup_vs_ort_dense": ms["ort_dense"] / ms[best],
                    "load_before": load_before,
                    "load_after": load_after,
                    "other_cores_busy": others,
                }
                if batch == 1:
                    need = nnz * 8 + sw_csr.ptr.nbytes + in_f * 4
                    bw = bandwidth_for(probe_out, nnz * 8)
                    if bw:
                        row["bandwidth_bound_ms"] = need / (bw * threads * 1e9) * 1e3
                        row["pct_of_bandwidth_bound"] = 100 * row["bandwidth_bound_ms"] / ms[best]
                rows.append(row)
                print(_linear_line(row), flush=True)
    return rows


def _linear_line(r: dict[str, Any]) -> str:
    ms = r["median_ms"]
    return (
        f"zeros {r['zeros_pct']}% batch {r['batch']:>3} threads {r['threads']}: "
        + " ".join(f"{k}={v:.3f}" for k, v in ms.items())
        + f" ms | best {r['best_sparsify']} {r['gflops_nnz'][r['best_sparsify']]:.1f} GFLOP/s,"
        f" {r['speedup_vs_ort_dense']:.2f}x ORT dense | load {r['load_before']}"
    )


CONV_LAYERS = [
    # name, (oc, ic, k), stride, padding, input size
    ("stem7x7/2", (64, 3, 7), 2, 3, 224),
    ("3x3 64@56", (64, 64, 3), 1, 1, 56),
    ("3x3 128@28", (128, 128, 3), 1, 1, 28),
    ("3x3/2 256@28", (256, 128, 3), 2, 1, 28),
    ("3x3 256@14", (256, 256, 3), 1, 1, 14),
    ("3x3 512@7", (512, 512, 3), 1, 1, 7),
    ("1x1/2 128<-64@56", (128, 64, 1), 2, 0, 56),
    ("1x1 96<-32@28 (mbv2)", (96, 32, 1), 1, 0, 28),
]


def bench_conv(args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows = []
    for name, (oc, ic, k), s, p, size in CONV_LAYERS:
        w = random_sparse(rng, (oc, ic, k, k), args.conv_zeros / 100)
        x = rng.standard_normal((1, ic, size, size)).astype(np.float32)
        sw = K.pack(w)
        tw, tx = torch.from_numpy(w), torch.from_numpy(x)
        for threads in args.threads:
            sess = ort_session(conv_model(w, s, p), threads)
            fns = {
                "sparsify": lambda sw=sw, x=x, s=s, p=p, t=threads: K.sparse_conv2d(
                    sw, x, s, p, threads=t
                ),
                "torch_dense": lambda tx=tx, tw=tw, s=s, p=p: torch.nn.functional.conv2d(
                    tx, tw, None, s, p
                ),
                "ort_dense": lambda sess=sess, x=x: sess.run(None, {"x": x}),
            }
            with torch_threads(threads):
                timings = time_interleaved(fns, reps=args.reps, min_sample_s=args.min_sample_s)
            ms = {kk: v.median * 1e3 for kk, v in timings.items()}
            ho = (size + 2 * p - k) // s + 1
            flops = 2 * sw.nnz * ho * ho
            row = {
                "layer": name,
                "zeros_pct": args.conv_zeros,
                "threads": threads,
                "median_ms": ms,
                "gflops_nnz_sparsify": flops / (ms["sparsify"] / 1e3) / 1e9,
                "speedup_vs_ort_dense": ms["ort_dense"] / ms["sparsify"],
                "load": loadavg(),
            }
            rows.append(row)
            print(
                f"conv {name} threads {threads}: "
                + " ".join(f"{kk}={v:.3f}" for kk, v in ms.items())
                + f" ms | {row['speedup_vs_ort_dense']:.2f}x ORT dense",
                flush=True,
            )
    return rows


def _fmt_other(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# sparsify.kernels benchmark",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Date {report['date']}; CPU {m['cpu']} ({m['cpu_count']} cores); kernels "
        f"{report['kernels'].get('isa')} ({report['kernels'].get('flags')}, "
        f"{report['kernels'].get('compiler_version')}); torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}, scipy {m['scipy']}, numpy {m['numpy']}.",
        f"Load average (1/5/15 min) before {report['load_start']}, after {report['load_end']}"
        + (
            " — **NOISY: other work was running; rerun on a quiet machine**"
            if report["noisy"]
            else ""
        )
        + "."
        + (
            f" Other processes kept {report['other_cores_busy']:.2f} cores busy during the"
            f" median Linear cell, {report['max_other_cores_busy']:.2f} during the worst"
            " (/proc/stat busy time minus this process's; the load average also counts the"
            " benchmark's own threads)."
            if report.get("other_cores_busy") is not None
            and report.get("max_other_cores_busy") is not None
            else ""
        ),
        "",
    ]
    pr = report.get("probes") or {}
    if pr:
        bw = ", ".join(
            f"{int(k) / 2**20:.0f} MiB: {v:.1f} GB/s" for k, v in pr["read_gbs_1core"].items()
        )
        lines += [
            f"Probes (one core): FMA peak {pr['fma_peak_gflops_1core']:.0f} GFLOP/s; read bandwidth {bw}.",
            "",
        ]
    lines += [
        f"## Linear {report['shape'][0]}x{report['shape'][1]}: median ms (effective GFLOP/s on nonzeros)",
        "",
        "Best = the faster of sparsify_csr and sparsify_auto (same input and output layout as "
        "torch and onnxruntime); sparsify_t takes the activation transposed (in, batch) and "
        "returns (out, batch), what a runtime keeping activations transposed would pay. "
        "% BW bound (batch 1) = (bytes the kernel must read / one-core read bandwidth over an "
        "array that size, x threads) / measured time. Two-thread rows mean nothing while the "
        "load average is above ~0.5 on this 2-core machine.",
        "",
    ]
    names = [
        "sparsify_csr",
        "sparsify_auto",
        "sparsify_t",
        "torch_dense",
        "ort_dense",
        "torch_csr",
        "scipy_csr",
    ]
    lines.append(
        "| zeros | batch | threads | "
        + " | ".join(names)
        + " | best vs ORT dense | % BW bound | load | other cores busy |"
    )
    lines.append("|" + "---|" * (len(names) + 7))
    for r in report["linear"]:
        cells = []
        for n in names:
            if n in r["median_ms"]:
                cells.append(f"{r['median_ms'][n]:.3f} ({r['gflops_nnz'][n]:.1f})")
            else:
                cells.append("–")
        bwp = f"{r['pct_of_bandwidth_bound']:.0f}%" if "pct_of_bandwidth_bound" in r else ""
        lines.append(
            f"| {r['zeros_pct']}% | {r['batch']} | {r['threads']} | "
            + " | ".join(cells)
            + f" | {r['speedup_vs_ort_dense']:.2f}x | {bwp} | {r['load_before'][0] if r['load_before'] else ''}"
            + f" | {_fmt_other(r.get('other_cores_busy'))} |"
        )
    if report.get("conv"):
        lines += [
            "",
            f"## Convolutions, batch 1, {report['conv'][0]['zeros_pct']}% zeros: median ms",
            "",
        ]
        lines.append(
            "| layer | threads | sparsify | torch dense | ORT dense | vs ORT dense | GFLOP/s nnz |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for r in report["conv"]:
            ms = r["median_ms"]
            lines.append(
                f"| {r['layer']} | {r['threads']} | {ms['sparsify']:.3f} | {ms['torch_dense']:.3f} | "
                f"{ms['ort_dense']:.3f} | {r['speedup_vs_ort_dense']:.2f}x | {r['gflops_nnz_sparsify']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    ap.add_argument("--zeros", type=ints, default=[70, 80, 90, 95, 98, 99], help="percent zeros")
    ap.add_argument("--batches", type=ints, default=[1, 16, 64, 256])
    ap.add_argument("--threads", type=ints, default=[1, 2])
    ap.add_argument("--out-features", type=int, default=4096)
    ap.add_argument("--in-features", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=9, help="interleaved repetitions (medians)")
    ap.add_argument("--min-sample-s", type=float, default=0.02)
    ap.add_argument("--conv", action="store_true", help="also time resnet-like convolutions")
    ap.add_argument("--conv-zeros", type=int, default=90)
    ap.add_argument("--out", type=Path, default=Path("results/kernels"))
    ap.add_argument(
        "--max-load",
        type=float,
        default=0.5,
        help="without /proc/stat: a 1-min load above this marks the run noisy",
    )
    ap.add_argument(
        "--max-other",
        type=float,
        default=0.1,
        help="other processes keeping more than this many cores busy during a cell (on "
        "average, from /proc/stat) mark the run noisy",
    )
    args = ap.parse_args(argv)
    for flag in ("max_load", "max_other"):
        v = getattr(args, flag)
        if not (math.isfinite(v) and v >= 0):
            ap.error(f"--{flag.replace('_', '-')} must be a finite number >= 0; got {v!r}")
    if not K.available():
        print(f"sparsify.kernels unavailable: {K.info()}", file=sys.stderr)
        return 2
    load_start = loadavg()
    report: dict[str, Any] = {
        "command": "python "
        + shlex.join(["tools/bench_kernels.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "kernels": K.info(),
        "shape": [args.out_features, args.in_features],
        "load_start": load_start,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "probes": {},
    }
    report["linear"] = bench_linear(args, report["probes"])
    report["conv"] = bench_conv(args) if args.conv else []
    report["load_end"] = loadavg()
    loads = [r["load_before"][0] for r in report["linear"] if r["load_before"]] + (
        [load_start[0]] if load_start else []
    )
    report["max_load_1min"] = max(loads) if loads else None
    report["median_load_1min"] = statistics.median(loads) if loads else None
    # the load average counts this benchmark's own threads (a quiet 2-core machine reads
    # 1-2 by the end of a run), so where /proc/stat allows, judge by what others used
    cells = [r["other_cores_busy"] for r in report["linear"] if r["other_cores_busy"] is not None]
    report["other_cores_busy"] = statistics.median(cells) if cells else None
    report["max_other_cores_busy"] = max(cells) if cells else None
    if report["max_other_cores_busy"] is not None:
        report["noisy"] = report["max_other_cores_busy"] > args.max_other
    else:
        report["noisy"] = bool(loads) and max(loads) > args.max_load
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "bench.json", report)
    atomic_write_text(args.out / "README.md", markdown(report))
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
