"""Speedup of sparse kernels over dense Linear against density, the bandwidth bound, break-even.

For a Linear of (out, in) at batch B with a fraction d of its weights nonzero:

    speedup(kernel) = t_dense / t_kernel      (interleaved medians, same process)
    bound(d)        = dense bytes / sparse bytes = 1 / (d * (1 + idx_bytes / val_bytes))

the batch-1 limit when a matrix-vector product streams its weight from memory once
(float32 values; int32 indices -> 1/(2d), 16-bit indices -> 1/(1.5d)). The break-even
density of a kernel is where its speedup crosses 1, linearly interpolated between the two
measured densities around the crossing (None if it never loses or never wins).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsify.bench.backends import SPARSE_MM_FILE, Runner, ort_sparse_mm_runner, sparse_mm_model
from sparsify.bench.sources import impose_density_
from sparsify.tables import md_table
from sparsify.timing import loadavg, machine_info, paired_ratio, time_interleaved, torch_threads

DENSITIES = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01)
SIZES = (1024, 4096)
BATCHES = (1, 64)
# kernels a curve can time: accel.KERNELS minus dense_compact, plus ORT and the converter
CURVE_KERNELS = ("torch_csr", "torch_csr_panels", "scipy_csr", "ort_sparse_mm", "converter")


def bandwidth_bound(density: float, idx_bytes: int = 4, val_bytes: int = 4) -> float:
    """dense bytes / CSR bytes = 1 / (d * (1 + idx_bytes / val_bytes)) (row pointers ignored)."""
    return 1.0 / (density * (1.0 + idx_bytes / val_bytes))


def break_even(densities: Sequence[float], speedups: Sequence[float | None]) -> float | None:
    """The density where speedup crosses 1 going from sparse to dense (linear interpolation).

    Returns None when the kernel never wins or wins at every measured density.
    """
    pts = sorted((d, s) for d, s in zip(densities, speedups) if s is not None)
    for (d0, s0), (d1, s1) in zip(pts, pts[1:]):
        if s0 >= 1.0 > s1:
            return d0 + (s0 - 1.0) * (d1 - d0) / (s0 - s1)
    return None


def _ort_single(linear: nn.Linear, threads: int) -> Runner:
    """An ORT SparseToDenseMatMul runner for one Linear (the file is gone once the session
    holds the model: :func:`sparsify.export.onnx.ort_session` builds it from memory)."""
    model = nn.Sequential(linear)
    data, _ = sparse_mm_model(model, 2)
    with tempfile.TemporaryDirectory(prefix="sparsify-curves-") as tmp:
        path = Path(tmp) / SPARSE_MM_FILE
        path.write_bytes(data)
        return ort_sparse_mm_runner(str(path), model, threads)


def curve_point(
    n: int, batch: int, density: float, threads: int, reps: int, kernels: Sequence[str]
) -> dict[str, Any]:
    """Times of dense and each kernel for Linear(n, n) at ``density``, batch ``batch``."""
    from sparsify.accel import SparseLinear, sparsify_inference_
    from sparsify.accel.layers import panel_width

    torch.manual_seed(0)
    lin = nn.Linear(n, n).eval()
    impose_density_(lin, density)
    x = torch.randn(batch, n)
    fns: dict[str, Callable[[], Any]] = {}
    info: dict[str, Any] = {}
    with torch.inference_mode():
        ref = lin(x)
        fns["dense"] = lambda: lin(x)
        for k in kernels:
            if k in ("torch_csr", "scipy_csr"):
                m = SparseLinear(lin, k)
                fns[k] = lambda m=m: m(x)
            elif k == "torch_csr_panels" and panel_width(n, batch) < n:  # else = torch_csr
                m = SparseLinear(lin, k, rhs_cols=batch)
                fns[k] = lambda m=m: m(x)
            elif k == "converter":
                conv = nn.Sequential(nn.Linear(n, n)).eval()
                conv.load_state_dict(nn.Sequential(lin).state_dict())
                report = sparsify_inference_(conv, x, threads=threads)
                info["converter_choice"] = report.layers[0].chosen
                fns[k] = lambda c=conv: c(x)
            elif k == "ort_sparse_mm":
                r = _ort_single(lin, threads)
                xi = r.prepare(x)
                fns[k] = lambda r=r, xi=xi: r.fn(xi)
        diffs = {}
        for k, fn in fns.items():
            out = fn()
            out = out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out))
            diffs[k] = float((out - ref).abs().max())
        t = time_interleaved(fns, reps=reps, warmup=2, min_sample_s=5e-3)
    dense = t["dense"].samples
    return {
        "density": density,
        "zeros": 1.0 - density,
        "times_s": {k: v.median for k, v in t.items()},
        "iqr_s": {k: v.iqr for k, v in t.items()},
        "speedup": {k: paired_ratio(dense, v.samples).median for k, v in t.items() if k != "dense"},
        "max_abs_diff": diffs,
        **info,
    }


def run_curves(
    *,
    sizes: Sequence[int] = SIZES,
    batches: Sequence[int] = BATCHES,
    densities: Sequence[float] = DENSITIES,
    threads: int = 1,
    reps: int = 9,
    kernels: Sequence[str] = CURVE_KERNELS,
    command: str = "",
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """All curves: ``{"curves": [{"n", "batch", "points", "break_even", ...}], ...}``."""
    out: dict[str, Any] = {
        "command": command,
        "machine": machine_info(),
        "threads": threads,
        "reps": reps,
        "loadavg_start": loadavg(),
        "bound": "1 / (d * (1 + idx_bytes / val_bytes)); int32 and 16-bit indices, float32 values",
        "curves": [],
    }
    total, step = len(sizes) * len(batches) * len(densities), 0
    with torch_threads(threads):
        for n in sizes:
            for b in batches:
                pts = []
                for d in densities:
                    step += 1
                    pts.append(curve_point(n, b, d, threads, reps, kernels))
                    best = max(pts[-1]["speedup"].items(), key=lambda kv: kv[1])
                    log(
                        f"[{step}/{total}] Linear {n}x{n} batch {b} density {d}: best {best[0]} {best[1]:.2f}x"
                    )
                be = {
                    k: break_even([p["density"] for p in pts], [p["speedup"].get(k) for p in pts])
                    for k in kernels
                }
                out["curves"].append(
                    {
                        "n": n,
                        "batch": b,
                        "points": pts,
                        "break_even_density": be,
                        "bound_int32": [bandwidth_bound(p["density"], 4) for p in pts],
                        "bound_int16": [bandwidth_bound(p["density"], 2) for p in pts],
                    }
                )
    out["loadavg_end"] = loadavg()
    return out


def plot_curves(result: dict[str, Any]) -> bytes:
    """A PNG: one panel per (n, batch), speedup vs zero fraction, bounds and break-evens."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["curves"]
    cols = max(1, len({c["batch"] for c in curves}))
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax, c in zip(axes.flat, curves):
        z = [p["zeros"] * 100 for p in c["points"]]
        ax.plot(z, c["bound_int32"], "k--", lw=1, label="bandwidth bound (int32 idx)")
        ax.plot(z, c["bound_int16"], "k:", lw=1, label="bandwidth bound (16-bit idx)")
        for k in c["break_even_density"]:
            ys = [p["speedup"].get(k) for p in c["points"]]
            if all(y is None for y in ys):
                continue
            (line,) = ax.plot(z, [np.nan if y is None else y for y in ys], "o-", ms=3, label=k)
            be = c["break_even_density"][k]
            if be is not None:
                ax.axvline((1 - be) * 100, color=line.get_color(), lw=0.8, alpha=0.6)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("zeros (%)")
        ax.set_ylabel("speedup vs torch dense")
        ax.set_title(f"Linear {c['n']}x{c['n']}, batch {c['batch']}, {result['threads']} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def curves_markdown(result: dict[str, Any]) -> str:
    """Speedup tables and break-even densities."""
    lines = [
        "# Speedup vs density, Linear layers",
        "",
        f"Command: `{result.get('command', '')}`; {result['threads']} thread(s); "
        f"load average {result.get('loadavg_start')} -> {result.get('loadavg_end')}; "
        f"torch {result['machine']['torch']} on {result['machine']['cpu']}.",
        "",
        "Speedup = t_dense / t_kernel (median of paired interleaved ratios). Bound = 1/(d(1+idx/val)).",
        "",
    ]
    for c in result["curves"]:
        ks = list(c["break_even_density"])
        body = [
            [
                f"{p['zeros']:.0%}",
                f"{p['times_s']['dense'] * 1e3:.3f} ms",
                *[f"{p['speedup'][k]:.2f}x" if k in p["speedup"] else "–" for k in ks],
                f"{b32:.2f}x",
                f"{b16:.2f}x",
            ]
            for p, b32, b16 in zip(c["points"], c["bound_int32"], c["bound_int16"])
        ]
        head = ["zeros", "dense", *ks, "bound int32", "bound 16-bit"]
        lines += [
            f"## Linear {c['n']}x{c['n']}, batch {c['batch']}",
            "",
            md_table(head, body, "r" * len(head)),
        ]
        be = ", ".join(
            f"{k} {break_even_text(v, [p['speedup'].get(k) for p in c['points']])}"
            for k, v in c["break_even_density"].items()
        )
        lines += ["", f"Break-even density: {be}.", ""]
    return "\n".join(lines)


def break_even_text(v: float | None, speedups: Sequence[float | None]) -> str:
    """The break-even density ``v`` in words, or why there is none (never measured, never
    slower, never faster than dense)."""
    if v is not None:
        return f"{v:.3f} ({1 - v:.1%} zeros)"
    got = [s for s in speedups if s is not None]
    if not got:
        return "not measured here"
    if all(s >= 1.0 for s in got):
        return "none in range (never slower than dense)"
    return "none in range (never faster than dense)"
