"""``sparsify bench --device cuda``: :func:`~sparsify.bench.gpu.bench_gpu_point` over sources and batches."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sparsify.bench.gpu import bench_gpu_point
from sparsify.bench.sources import load_source
from sparsify.timing import machine_info


def run_gpu_bench(
    specs: Sequence[dict[str, Any]],
    *,
    batches: Sequence[int],
    reps: int = 20,
    command: str = "",
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """One row per (source, batch): every GPU backend against cuda_dense_fp32."""
    t0 = time.time()
    rows = []
    for spec in specs:
        source = load_source(spec)
        for b in batches:
            row = bench_gpu_point(source.model, source.input_shape, int(b), reps)
            rows.append({"case": source.label, "spec": spec, **row})
            log(f"{source.label} batch {b}: done ({time.time() - t0:.0f} s)")
    return {"command": command, "machine": machine_info(), "rows": rows, "wall_s": time.time() - t0}
