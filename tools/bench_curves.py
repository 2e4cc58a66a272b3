"""Speedup vs density (50% to 99% zeros) for Linear 1024 and 4096 at batch 1 and 64.

    .venv/bin/python tools/bench_curves.py --out results/bench

Writes curves.json, curves.md and curves.png: per (size, batch) the speedup over torch dense
of torch CSR, scipy CSR, onnxruntime SparseToDenseMatMul and the converter, the
memory-bandwidth bound 1/(d(1+idx/val)) for int32 and 16-bit indices, and each kernel's
break-even density. Waits for a quiet machine first (1-minute load <= --max-load).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from sparsify.bench.curves import (
    BATCHES,
    DENSITIES,
    SIZES,
    curves_markdown,
    plot_curves,
    run_curves,
)
from sparsify.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from sparsify.timing import loadavg


def wait_quiet(max_load: float, patience_s: float) -> None:
    """Sleep in 60 s steps until the 1-minute load is <= max_load or patience runs out."""
    t0 = time.time()
    while (load := loadavg()) and load[0] > max_load and time.time() - t0 < patience_s:
        print(f"load {load} > {max_load}: waiting 60 s", file=sys.stderr, flush=True)
        time.sleep(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--max-load", type=float, default=1.3)
    p.add_argument("--patience", type=float, default=0, help="seconds to wait for a quiet machine")
    args = p.parse_args()
    if args.patience:
        wait_quiet(args.max_load, args.patience)
    result = run_curves(
        sizes=args.sizes,
        batches=args.batches,
        densities=args.densities,
        threads=args.threads,
        reps=args.reps,
        command="python tools/bench_curves.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    out = Path(args.out)
    atomic_write_json(out / "curves.json", result)
    atomic_write_text(out / "curves.md", curves_markdown(result))
    atomic_write_bytes(out / "curves.png", plot_curves(result))
    print(curves_markdown(result))


if __name__ == "__main__":
    main()
