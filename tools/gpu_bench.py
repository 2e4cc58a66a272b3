"""The whole GPU table in under 5 minutes on one H100/H200: Linear layers, dense vs sparse.

    .venv/bin/python tools/gpu_bench.py --out results/bench/gpu

For Linear n x n (n in 1024, 4096, 8192) at batch 1, 16, 64, 256, against cuBLAS fp32:
cuBLAS bf16, cuSPARSE CSR fp32 at 50/90/95/99% zeros, and 2:4 semi-structured bf16 on
2:4-pruned weights. Timed with CUDA events, interleaved (sparsify.bench.gpu). A deadline
(default 270 s) stops early and marks the rest as not run, so the script always finishes.
Writes gpu_bench.json and gpu_bench.md with the device named.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

SIZES = (1024, 4096, 8192)
BATCHES = (1, 16, 64, 256)
DENSITIES = (0.5, 0.1, 0.05, 0.01)


def cases(sizes=SIZES, densities=DENSITIES) -> list[dict[str, Any]]:
    """One case per (size, sparsity pattern): unstructured densities, then 2:4."""
    out = []
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


def build_case(case: dict[str, Any]) -> Any:
    """The (CPU) nn.Linear of a case, zeros imposed; 2:4 cases pruned per group of 4."""
    import torch
    from torch import nn

    from sparsify.bench.gpu import prune_2to4_
    from sparsify.bench.sources import impose_density_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(case["n"], case["n"])).eval()
    if case["pattern"] == "2:4":
        prune_2to4_(model[0].weight.data)
    else:
        impose_density_(model, case["density"])
    return model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/gpu")
    p.add_argument("--deadline", type=float, default=270.0, help="seconds before stopping early")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()

    import torch

    from sparsify.bench.gpu import bench_gpu_point, gpu_table_markdown
    from sparsify.fileio import atomic_write_json, atomic_write_text
    from sparsify.timing import machine_info

    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device visible; run it on a GPU machine.", file=sys.stderr)
        return 2
    t0 = time.time()
    rows, skipped = [], []
    for case in cases():
        model = build_case(case)
        for b in BATCHES:
            if time.time() - t0 > args.deadline:
                skipped.append(f"{case['label']} batch {b}")
                continue
            row = bench_gpu_point(model, (case["n"],), b, args.reps)
            rows.append({"case": case["label"], **case, **row})
            print(
                f"{case['label']} batch {b}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True
            )
        torch.cuda.empty_cache()
    info = machine_info()
    result = {"machine": info, "rows": rows, "not_run": skipped, "wall_s": time.time() - t0}
    out = Path(args.out)
    atomic_write_json(out / "gpu_bench.json", result)
    md = gpu_table_markdown(rows, info.get("gpu", "cuda"))
    if skipped:
        md += f"\nNot run (deadline {args.deadline:.0f} s): {', '.join(skipped)}\n"
    atomic_write_text(out / "gpu_bench.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
