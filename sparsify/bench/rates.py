"""Effective GFLOP/s of a bench run, and each sparse backend against the run's dense peak.

The work of one call is counted over the Linear and Conv weights the input runs through
(bias, activations and other ops are not counted), per input sample, at batch 1:

    nnz_flops   = sum over calls of 2 * nnz(W)   * rows   (the work a sparse kernel must do)
    dense_flops = sum over calls of 2 * numel(W) * rows   (the work dense code does)

where rows is what the weight multiplies per call: the leading dims of a Linear's input, the
output positions of a conv. A call at batch b does b times that work, so for a backend that
takes t seconds per call

    gflops_nnz   = nnz_flops * b / t / 1e9    every backend (zeros do no work)
    gflops_dense = dense_flops * b / t / 1e9  dense backends only (they multiply the zeros)

The dense peak of a run is, per thread count, the best ``gflops_dense`` of any dense backend
at any source and batch of that run; each sparse backend's ``pct_of_dense_peak`` is
100 * gflops_nnz / that peak: how close it gets, on the work that matters, to what dense
code reached on the same machine in the same run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

# backends that multiply the full weight, zeros included (ort_compact is decoded to dense)
DENSE_BACKENDS = ("dense", "compiled", "ort_dense", "ort_compact")


def work_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """``{"nnz_flops_per_sample", "dense_flops_per_sample", "calls"}`` of ``model`` on one
    input of ``input_shape`` (see the module docstring), from one forward at batch 1."""
    counted = {"nnz": 0, "dense": 0, "calls": 0}

    def hook(m: nn.Module, _inp: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        width = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        rows = out.numel() // max(1, width)  # Linear: leading dims; conv: output positions
        w = m.weight
        counted["nnz"] += 2 * int((w != 0).sum()) * rows
        counted["dense"] += 2 * w.numel() * rows
        counted["calls"] += 1

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return {
        "nnz_flops_per_sample": counted["nnz"],
        "dense_flops_per_sample": counted["dense"],
        "calls": counted["calls"],
        "counted": "2 * weights * rows over every Linear/Conv call, per input sample",
    }


def add_rates_(result: dict[str, Any]) -> dict[str, Any]:
    """Add ``gflops_nnz`` (and ``gflops_dense`` for dense backends) to every timed backend
    entry of a ``run_bench`` result, ``result["dense_peak"]`` per thread count (a JSON key:
    the count as a string), and ``pct_of_dense_peak`` to every sparse backend's entry.
    Sources without ``work`` (none counted) are left as they are. Returns the peaks."""
    peaks: dict[str, dict[str, Any]] = {}
    for src in result["sources"]:
        work = src.get("work")
        if not work:
            continue
        for p in src["points"]:
            for name, e in p["backends"].items():
                t = e.get("median_s")
                if not e.get("available") or not t or not math.isfinite(t):
                    continue
                e["gflops_nnz"] = work["nnz_flops_per_sample"] * p["batch"] / t / 1e9
                if name in DENSE_BACKENDS:
                    rate = work["dense_flops_per_sample"] * p["batch"] / t / 1e9
                    e["gflops_dense"] = rate
                    key = str(p["threads"])
                    if rate > peaks.get(key, {}).get("gflops", -1.0):
                        peaks[key] = {
                            "gflops": rate,
                            "backend": name,
                            "batch": p["batch"],
                            "source": src["label"],
                        }
    for src in result["sources"]:
        for p in src["points"]:
            peak = peaks.get(str(p["threads"]))
            for name, e in p["backends"].items():
                if peak and "gflops_nnz" in e and name not in DENSE_BACKENDS:
                    e["pct_of_dense_peak"] = 100.0 * e["gflops_nnz"] / peak["gflops"]
    result["dense_peak"] = peaks
    return peaks
