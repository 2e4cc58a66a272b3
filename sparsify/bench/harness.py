"""``run_bench``: every backend against torch dense, per (source, threads, batch), in one process.

For each source, thread count and batch size, every available backend is timed in one
interleaved group with ``dense`` (see :mod:`sparsify.timing`); the ratio of a backend
is  speedup = t_dense / t_backend,  reported as the median over repetitions of the paired
per-repetition ratios, with their IQR (pairing cancels drift shared by both). Outputs are
checked against dense: max |y - y_dense| and whether the argmax predictions agree.
Peak RSS per backend is measured in a fresh process each (:mod:`sparsify.bench.rss`).
Effective GFLOP/s per backend (on the nonzeros; dense backends also on the full weight) and
each sparse backend as a percentage of the run's dense peak: :mod:`sparsify.bench.rates`.
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
from sparsify.bench.rates import add_rates_, work_per_sample
from sparsify.bench.sources import load_source
from sparsify.errors import SparsifyError
from sparsify.timing import (
    Timing,
    cpu_snapshot,
    loadavg,
    machine_info,
    others_busy_cores,
    paired_ratio,
    time_interleaved,
    torch_threads,
)

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
    runners: dict[str, Any] = {}
    own: dict[str, list[float]] = {}  # seconds per run that out-of-process runners measured
    try:
        with torch_threads(threads), torch.inference_mode():
            fns, outs = {}, {}
            for name in ["dense", *[b for b in backends if b != "dense"]]:
                try:
                    r = build_runner(name, source, artifacts, batch, threads, log)
                    runners[name] = r
                    xi = r.prepare(x)
                    outs[name] = to_numpy(r.fn(xi))
                    if r.timed is not None:
                        own[name] = []
                        fns[name] = lambda t=r.timed, got=own[name]: got.append(t())
                    else:
                        fns[name] = lambda r=r, xi=xi: r.fn(xi)
                except BackendUnavailable as exc:
                    if name in runners:
                        runners.pop(name).close()
                    result["backends"][name] = {"available": False, "reason": str(exc)}
            pids = tuple(p for r in runners.values() for p in r.pids)
            before = cpu_snapshot(pids)
            timings = time_interleaved(fns, reps=reps, warmup=2, min_sample_s=5e-3, seed=seed)
            busy = others_busy_cores(before, cpu_snapshot(pids))
            result["other_busy_cores"] = None if busy is None else round(busy, 3)
    finally:
        for r in runners.values():
            r.close()
    for name, got in own.items():
        timings[name] = _own_timing(timings[name], got, runners[name])
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
    deepsparse_python: str | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Benchmark every source of ``specs``; returns the JSON-ready result (see bench.md).

    ``deepsparse_python``: the DeepSparse virtualenv's python for the ``deepsparse`` backend
    (default: $SPARSIFY_DEEPSPARSE_PYTHON, then .venv-deepsparse beside the checkout).

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
            "rates": "gflops_nnz = 2 * nnz * rows / t, gflops_dense = 2 * weights * rows / t "
            "(dense backends); dense_peak = best gflops_dense per thread count in this run; "
            "pct_of_dense_peak = 100 * gflops_nnz / dense_peak (sparse backends)",
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
        entry["work"] = work_per_sample(source.model, source.input_shape)
        with tempfile.TemporaryDirectory(prefix="sparsify-bench-") as tmp:
            artifacts = prepare_artifacts(
                source, Path(tmp), tuple(backends), log, deepsparse_python
            )
            entry["unavailable"] = dict(artifacts["unavailable"])
            out["machine"].update(artifacts.get("versions", {}))
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
    add_rates_(out)
    busy = [
        p["other_busy_cores"]
        for e in out["sources"]
        for p in e["points"]
        if p.get("other_busy_cores") is not None
    ]
    # cores kept busy by processes other than the bench and its workers, worst point: unlike
    # the load average, the bench's own threads do not count (sparsify.timing.others_busy_cores)
    out["other_busy_cores_max"] = max(busy) if busy else None
    out["loadavg_end"] = loadavg()
    out["wall_s"] = round(time.time() - started, 1)
    return out


def _own_timing(t: Timing, got: list[float], runner: Any) -> Timing:
    """The samples an out-of-process runner measured itself, in the harness's repetitions.

    Each repetition made ``t.inner`` back-to-back timed calls (the last ``reps * inner``
    entries of ``got``, in order): its sample is their mean. The harness-side wall time per
    run (pipe and scheduling included) goes to ``runner.info["wall_s_per_run"]``.
    """
    k, n, reps = runner.runs_per_timed(), t.inner, len(t.samples)
    tail = got[len(got) - reps * n :]
    runner.info["wall_s_per_run"] = t.median / k
    samples = tuple(float(np.mean(tail[i * n : (i + 1) * n])) for i in range(reps))
    return Timing(samples, n * k)


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
