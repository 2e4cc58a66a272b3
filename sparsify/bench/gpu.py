"""The GPU side of the harness (``--device cuda``): cuBLAS dense, cuSPARSE CSR, 2:4 semi-structured.

Backends, each against ``cuda_dense_fp32`` in one interleaved group:

    cuda_dense_fp32   nn.Linear / Conv2d in float32 (cuBLAS / cuDNN; TF32 off)
    cuda_dense_bf16   the same model cast to bfloat16
    cuda_csr          Linear/Conv2d as torch CSR (cuSPARSE SpMM), float32
    cuda_2to4_bf16    Linear weights as ``to_sparse_semi_structured`` (bfloat16; compute
                      capability >= 8.0; torch's default backend, cuSPARSELt where built),
                      only when every Linear weight satisfies 2:4
    cuda_2to4_cutlass_bf16  the same with torch's CUTLASS 2:4 kernels

Timing is :func:`sparsify.timing.time_interleaved` with CUDA events around ``inner`` calls
per sample (synchronised once per sample, never inside the timed loop); speed-ups are
:func:`sparsify.timing.paired_ratio`. The 2:4 rules are :mod:`sparsify.accel.semi_structured`
(torch's own shape constraints). The CPU-side logic here (case lists, tables) runs and is
tested without a GPU. The GPU table: ``run_gpu_cases`` (``python -m sparsify.bench.gpu``).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsify.accel.semi_structured import (
    prune_2to4_,
    semi_structured_ok,
    to_semi_structured_,
)
from sparsify.errors import SparsifyError
from sparsify.tables import md_table
from sparsify.timing import paired_ratio, time_interleaved

GPU_BACKENDS = (
    "cuda_dense_fp32",
    "cuda_dense_bf16",
    "cuda_csr",
    "cuda_2to4_bf16",
    "cuda_2to4_cutlass_bf16",
)


SIZES = (1024, 4096, 8192)
BATCHES = (1, 16, 64, 256)
DENSITIES = (0.5, 0.1, 0.05, 0.01)


def cases(
    sizes: Sequence[int] = SIZES, densities: Sequence[float] = DENSITIES
) -> list[dict[str, Any]]:
    """One case per (size, sparsity pattern): unstructured densities, then 2:4."""
    out: list[dict[str, Any]] = []
    for n in sizes:
        for d in densities:
            out.append(
                {
                    "n": n,
                    "pattern": "unstructured",
                    "density": d,
                    "label": f"Linear {n} @ {1 - d:.0%} zeros",
                }
            )
        out.append({"n": n, "pattern": "2:4", "density": 0.5, "label": f"Linear {n} @ 2:4"})
    return out


def build_case(case: dict[str, Any]) -> nn.Module:
    """The (CPU) ``nn.Sequential(nn.Linear(n, n))`` of a case: zeros imposed by magnitude,
    or 2:4-pruned per group of 4 (seeded: the same weights on every run)."""
    from sparsify.bench.sources import impose_density_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(case["n"], case["n"])).eval()
    if case["pattern"] == "2:4":
        prune_2to4_(model[0].weight.data)
    else:
        impose_density_(model, case["density"])
    return model


def build_gpu_model(model: nn.Module, backend: str) -> nn.Module:
    """``model`` on CUDA in the form ``backend`` runs (see module docstring).

    Raises:
        SparsifyError: unknown backend; ValueError/RuntimeError from torch propagate
            (the harness records them as unavailable).
    """
    m = copy.deepcopy(model).cuda().eval()
    if backend == "cuda_dense_fp32":
        return m
    if backend == "cuda_dense_bf16":
        return m.to(torch.bfloat16)
    if backend == "cuda_csr":
        from sparsify.accel.convert import candidate_layers
        from sparsify.accel.layers import conv_supported, make_sparse

        for fqn, mod in candidate_layers(m):
            if isinstance(mod, nn.Linear) or conv_supported(mod):
                m.set_submodule(fqn, make_sparse(mod, "torch_csr"))
        return m
    if backend in ("cuda_2to4_bf16", "cuda_2to4_cutlass_bf16"):
        to_semi_structured_(m, torch.bfloat16, "cutlass" if "cutlass" in backend else "default")
        return m
    raise SparsifyError(f"unknown GPU backend {backend!r}; choose from {', '.join(GPU_BACKENDS)}.")


def bench_gpu_point(
    model: nn.Module, input_shape: Sequence[int], batch: int, reps: int = 20
) -> dict[str, Any]:
    """Every GPU backend against cuda_dense_fp32 at one batch size; unavailable ones say why.

    Per backend: median time per call and its speed-up over cuda_dense_fp32 (paired ratio of
    interleaved samples), the output's max abs / relative difference from cuda_dense_fp32,
    ``model_bytes`` (what building the backend's model added to ``torch.cuda.memory_allocated``:
    its weights as stored on the GPU) and ``forward_peak_bytes`` (the allocator's peak above
    that during one call after a first, untimed one: activations and the call's workspace).
    TF32 is off while timing (fp32 means fp32) and restored after.
    """
    if not torch.cuda.is_available():
        raise SparsifyError("--device cuda needs a CUDA GPU; none is visible. Use --device cpu.")
    precision, cudnn_tf32 = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")  # fp32 means fp32: no TF32 in cuBLAS
    torch.backends.cudnn.allow_tf32 = False
    try:
        return _bench_gpu_point(model, input_shape, batch, reps)
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


def _bench_gpu_point(
    model: nn.Module, input_shape: Sequence[int], batch: int, reps: int
) -> dict[str, Any]:
    x32 = torch.randn(batch, *input_shape, device="cuda")
    out: dict[str, Any] = {"batch": batch, "backends": {}}
    fns, outs, held, peak = {}, {}, {}, {}
    ok24, why24 = semi_structured_ok(model)
    with torch.inference_mode():
        for b in GPU_BACKENDS:
            if b.startswith("cuda_2to4") and not ok24:
                out["backends"][b] = {"available": False, "reason": why24}
                continue
            m = x = None
            try:
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                m = build_gpu_model(model, b)
                held[b] = torch.cuda.memory_allocated() - base
                x = x32.to(torch.bfloat16) if "bf16" in b else x32
                y = m(x)  # first call: cuBLAS/cuDNN workspaces, not this backend's activations
                del y
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                y = m(x)
                torch.cuda.synchronize()
                peak[b] = torch.cuda.max_memory_allocated() - before
                outs[b] = y.float()
                fns[b] = lambda m=m, x=x: m(x)
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                m = x = None  # freed before the next backend's memory is read
                out["backends"][b] = {
                    "available": False,
                    "reason": f"{type(exc).__name__}: {str(exc)[:160]}",
                }
        if "cuda_dense_fp32" not in fns:  # no baseline (out of GPU memory, say): no ratios
            why = out["backends"]["cuda_dense_fp32"]["reason"]
            for b in fns:
                out["backends"][b] = {"available": False, "reason": f"no baseline ({why})"}
            return out
        timings = time_interleaved(
            fns, reps=reps, warmup=3, inner=10, events=True, sync=torch.cuda.synchronize
        )
    ref, dense = outs["cuda_dense_fp32"], timings["cuda_dense_fp32"].samples
    for b, t in timings.items():
        ratio = paired_ratio(dense, t.samples)
        out["backends"][b] = {
            "available": True,
            "median_s": t.median,
            "iqr_s": t.iqr,
            "speedup_vs_dense": ratio.median,
            "speedup_iqr": ratio.iqr,
            "max_abs_diff": float((outs[b] - ref).abs().max()),
            "max_rel_diff": float((outs[b] - ref).abs().max() / ref.abs().max().clamp_min(1e-30)),
            "model_bytes": int(held[b]),
            "forward_peak_bytes": int(peak[b]),
        }
    return out


def gpu_table_markdown(rows: Sequence[dict[str, Any]], device: str) -> str:
    """Markdown: one row per (case, batch), one column per backend, 'median (speedup x)'."""
    lines = [
        f"# GPU benchmark on {device}",
        "",
        "Median time per call (CUDA events), speedup vs cuda_dense_fp32 in parentheses.",
        "",
    ]
    body = []
    for r in rows:
        cells = []
        for b in GPU_BACKENDS:
            e = r["backends"].get(b, {})
            if e.get("available"):
                cells.append(f"{e['median_s'] * 1e6:.1f} µs ({e['speedup_vs_dense']:.2f}x)")
            else:
                cells.append("–")
        body.append([r["case"], r["batch"], *cells])
    lines.append(md_table(["case", "batch", *GPU_BACKENDS], body, "lr" + "r" * len(GPU_BACKENDS)))
    mem, seen = [], set()
    for r in rows:  # the weights' bytes do not depend on the batch: one row per case
        if r["case"] in seen:
            continue
        seen.add(r["case"])
        cells = []
        for b in GPU_BACKENDS:
            e = r["backends"].get(b, {})
            cells.append(f"{e['model_bytes'] / 2**20:.2f}" if "model_bytes" in e else "–")
        mem.append([r["case"], *cells])
    if any(c != "–" for row in mem for c in row[1:]):
        lines += [
            "",
            "GPU memory held by the model (MiB, `torch.cuda.memory_allocated` after building it).",
            "",
            md_table(["case", *GPU_BACKENDS], mem, "l" + "r" * len(GPU_BACKENDS)),
        ]
    return "\n".join(lines) + "\n"


def run_gpu_cases(
    out: str | Path = "results/bench/gpu",
    *,
    deadline: float = 270.0,
    reps: int = 20,
    batches: Sequence[int] = BATCHES,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """The whole GPU table (every :func:`cases` entry x ``batches``) into ``out``.

    A ``deadline`` (seconds) stops early and lists the rest as not run, so a run always
    finishes. Writes ``gpu_bench.json`` and ``gpu_bench.md`` (the device named) and returns
    the JSON.

    Raises:
        SparsifyError: no CUDA device is visible.
    """
    from sparsify.fileio import atomic_write_json, atomic_write_text
    from sparsify.timing import machine_info

    if not torch.cuda.is_available():
        raise SparsifyError(
            "the GPU table needs a CUDA GPU; none is visible. Run it on a GPU machine."
        )
    t0 = time.time()
    rows, skipped = [], []
    for case in cases():
        model = build_case(case)
        for b in batches:
            if time.time() - t0 > deadline:
                skipped.append(f"{case['label']} batch {b}")
                continue
            row = bench_gpu_point(model, (case["n"],), b, reps)
            rows.append({"case": case["label"], **case, **row})
            log(f"{case['label']} batch {b}: {time.time() - t0:.0f} s")
        torch.cuda.empty_cache()
    info = machine_info()
    result = {"machine": info, "rows": rows, "not_run": skipped, "wall_s": time.time() - t0}
    atomic_write_json(Path(out) / "gpu_bench.json", result)
    md = gpu_table_markdown(rows, info.get("gpu", "cuda"))
    if skipped:
        md += f"\nNot run (deadline {deadline:.0f} s): {', '.join(skipped)}\n"
    atomic_write_text(Path(out) / "gpu_bench.md", md)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sparsify.bench.gpu --out results/bench/gpu``: the GPU table in < 5 minutes."""
    import argparse

    p = argparse.ArgumentParser(description="GPU table: Linear layers, dense vs sparse (CUDA).")
    p.add_argument("--out", default="results/bench/gpu")
    p.add_argument("--deadline", type=float, default=270.0, help="seconds before stopping early")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args(argv)
    try:
        run_gpu_cases(args.out, deadline=args.deadline, reps=args.reps)
    except SparsifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(args.out) / "gpu_bench.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
