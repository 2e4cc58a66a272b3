"""``run_bench``: every backend against torch dense, per (source, threads, batch), in one process.

For each source, thread count and batch size, every available backend is timed in one
interleaved group with ``dense`` (see :mod:`sparsify.timing`); the ratio of a backend
is  speedup = t_dense / t_backend,  reported as the median over repetitions of the paired
per-repetition ratios, with their IQR (pairing cancels drift shared by both). Outputs are
checked against dense: max |y - y_dense| and whether the argmax predictions agree.
Peak RSS per backend is measured in a fresh process each (:mod:`sparsify.bench.rss`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsify.bench.backends import (
    BACKENDS,
    BackendUnavailable,
    build_runner,
    clean_info,
    prepare_artifacts,
    to_numpy,
)
from sparsify.bench.sources import load_source
from sparsify.errors import SparsifyError
from sparsify.timing import loadavg, machine_info, paired_ratio, time_interleaved, torch_threads

DEFAULT_BATCHES = (1, 16, 64, 256)


def bench_point(
    source: Any,
    artifacts: dict[str, Any],
    backends: Sequence[str],
    batch: int,
    threads: int,
    reps: int,
    log: Callable[[str], None],
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``backends`` against dense for one (batch, threads); see the module docstring."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *source.input_shape, generator=gen)
    result: dict[str, Any] = {"batch": batch, "threads": threads, "backends": {}}
    with torch_threads(threads), torch.inference_mode():
        runners, fns, outs = {}, {}, {}
        for name in ["dense", *[b for b in backends if b != "dense"]]:
            try:
                r = build_runner(name, source, artifacts, batch, threads, log)
                xi = r.prepare(x)
                outs[name] = to_numpy(r.fn(xi))
                runners[name] = r
                fns[name] = lambda r=r, xi=xi: r.fn(xi)
            except BackendUnavailable as exc:
                result["backends"][name] = {"available": False, "reason": str(exc)}
        timings = time_interleaved(fns, reps=reps, warmup=2, min_sample_s=5e-3, seed=seed)
    ref = outs["dense"]
    for name, t in timings.items():
        ratio = paired_ratio(timings["dense"].samples, t.samples)
        diff = float(np.max(np.abs(outs[name] - ref))) if ref.size else 0.0
        result["backends"][name] = {
            "available": True,
            **t.to_dict(),
            "speedup_vs_dense": ratio.median,
            "speedup_iqr": ratio.iqr,
            "max_abs_diff": diff,
            "same_predictions": bool(
                np.array_equal(outs[name].argmax(axis=-1), ref.argmax(axis=-1))
            ),
            **clean_info(runners[name].info),
        }
    return result


def run_bench(
    specs: Sequence[dict[str, Any]],
    *,
    backends: Sequence[str] = BACKENDS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    threads: Sequence[int] = (1,),
    reps: int = 15,
    rss: bool = True,
    command: str = "",
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Benchmark every source of ``specs``; returns the JSON-ready result (see bench.md).

    Raises:
        SparsifyError: unknown backend, empty batches/threads, an unloadable source.
    """
    for b in backends:
        if b not in BACKENDS:
            raise SparsifyError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}.")
    if not batches or not threads or any(int(b) < 1 for b in (*batches, *threads)):
        raise SparsifyError("batch sizes and thread counts must be integers >= 1.")
    started = time.time()
    out: dict[str, Any] = {
        "command": command,
        "machine": machine_info(),
        "loadavg_start": loadavg(),
        "settings": {
            "backends": list(backends),
            "batches": [int(b) for b in batches],
            "threads": [int(t) for t in threads],
            "reps": reps,
            "timing": "interleaved, shuffled per repetition, warm-up 2, samples >= 5 ms",
            "ratio": "speedup = median over repetitions of t_dense / t_backend (paired)",
        },
        "sources": [],
    }
    total = len(specs) * len(batches) * len(threads)
    step = 0
    for spec in specs:
        source = load_source(spec)
        log(f"source {source.label}")
        entry: dict[str, Any] = {"spec": spec, "label": source.label, "points": []}
        entry["layers"] = _layer_densities(source.model)
        with tempfile.TemporaryDirectory(prefix="sparsify-bench-") as tmp:
            artifacts = prepare_artifacts(source, Path(tmp), tuple(backends), log)
            entry["unavailable"] = dict(artifacts["unavailable"])
            for t in threads:
                for b in batches:
                    step += 1
                    t0 = time.perf_counter()
                    point = bench_point(source, artifacts, backends, int(b), int(t), reps, log)
                    entry["points"].append(point)
                    best = _best(point)
                    log(
                        f"[{step}/{total}] {source.label}: threads {t}, batch {b}: "
                        f"best {best} ({time.perf_counter() - t0:.1f} s)"
                    )
            if rss:
                from sparsify.bench.rss import measure_all

                log(f"  peak RSS per backend (one process each) for {source.label}")
                entry["rss"] = measure_all(spec, artifacts, backends, source.input_shape)
        out["sources"].append(entry)
    out["loadavg_end"] = loadavg()
    out["wall_s"] = round(time.time() - started, 1)
    return out


def _layer_densities(model: torch.nn.Module) -> dict[str, float]:
    return {
        n: float((p != 0).sum().item()) / p.numel()
        for n, p in model.named_parameters()
        if p.dim() >= 2
    }


def _best(point: dict[str, Any]) -> str:
    ok = {k: v for k, v in point["backends"].items() if v.get("available")}
    if not ok:
        return "none"
    k = max(ok, key=lambda n: ok[n]["speedup_vs_dense"])
    return f"{k} {ok[k]['speedup_vs_dense']:.2f}x"
