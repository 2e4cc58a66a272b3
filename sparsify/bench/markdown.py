"""Markdown for a ``run_bench`` result: latency tables with speedups, memory, what was skipped."""

from __future__ import annotations

from typing import Any

from sparsify.tables import md_table
from sparsify.timing import fmt_seconds


def _mib(b: int | None) -> str:
    return "–" if b is None or b < 0 else f"{b / 2**20:.1f}"


def _rates_table(
    src: dict[str, Any], backends: list[str], threads: int, peak: dict[str, Any] | None
) -> list[str]:
    """Effective GFLOP/s per (batch, backend): on the nonzeros, then the dense backends' rate
    on the full weight, or a sparse backend's share of the dense peak (sparsify.bench.rates)."""
    points = [p for p in src["points"] if p["threads"] == threads]
    if not any("gflops_nnz" in e for p in points for e in p["backends"].values()):
        return []
    body = []
    for p in points:
        cells = []
        for b in backends:
            e = p["backends"].get(b, {})
            if "gflops_nnz" not in e:
                cells.append("n/a")
            elif "gflops_dense" in e:
                cells.append(f"{e['gflops_nnz']:.3g} (full weight {e['gflops_dense']:.3g})")
            elif "pct_of_dense_peak" in e:
                pct = e["pct_of_dense_peak"]
                cells.append(
                    f"{e['gflops_nnz']:.3g} ({pct:.0f}% of peak)"
                    if pct >= 10
                    else f"{e['gflops_nnz']:.3g} ({pct:.2g}% of peak)"
                )
            else:
                cells.append(f"{e['gflops_nnz']:.3g}")
        body.append([p["batch"], *cells])
    peak_text = f"{peak['gflops']:.1f} GFLOP/s" if peak else "none measured"
    return [
        f"Effective GFLOP/s, {threads} thread(s), counted on the nonzeros (2 * nnz * rows / t); "
        f"dense backends also on the full weight; sparse ones as % of this run's dense peak "
        f"({peak_text}):",
        "",
        md_table(["batch", *backends], body, "r" + "l" * len(backends)),
        "",
    ]


def to_markdown(result: dict[str, Any], title: str = "Benchmark") -> str:
    """One latency table per (source, threads), a memory table per source, then notes."""
    m = result["machine"]
    lines = [
        f"# {title}",
        "",
        f"Command: `{result.get('command', '')}`",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs; torch {m['torch']}, numpy {m['numpy']}, "
        f"scipy {m['scipy']}, onnxruntime {m.get('onnxruntime')}, "
        + (f"DeepSparse {m['deepsparse']}, " if m.get("deepsparse") else "")
        + f"Python {m['python']}. "
        f"Load average at start {result.get('loadavg_start')}, at end {result.get('loadavg_end')}"
        + (
            f"; cores kept busy by other processes while timing, worst point: "
            f"{result['other_busy_cores_max']:.2f}."
            if result.get("other_busy_cores_max") is not None
            else "."
        ),
        "",
        "Each cell: median time per call, then speedup = t_dense / t (median of paired "
        "per-repetition ratios, IQR after ±), all backends interleaved in one run "
        "(deepsparse in its own worker process, its rounds timed from this one).",
        "",
    ]
    peaks = result.get("dense_peak") or {}
    for threads, pk in sorted(peaks.items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"Dense peak of this run, {threads} thread(s): {pk['gflops']:.1f} GFLOP/s "
            f"({pk['backend']}, {pk['source']}, batch {pk['batch']})."
        )
    if peaks:
        lines.append("")
    for src in result["sources"]:
        lines += [f"## {src['label']}", ""]
        dens = src.get("layers", {})
        if dens:
            lines.append(
                "Weight density per layer: "
                + ", ".join(f"{k} {v:.3f}" for k, v in dens.items())
                + "."
            )
            lines.append("")
        from sparsify.bench.backends import BACKENDS

        seen = {b for p in src["points"] for b in p["backends"]}
        # JSON sorts keys; show the baseline first and the rest in BACKENDS order
        backends = [b for b in BACKENDS if b in seen] + sorted(seen - set(BACKENDS))
        for threads in sorted({p["threads"] for p in src["points"]}):
            body = []
            for p in (q for q in src["points"] if q["threads"] == threads):
                cells = []
                for b in backends:
                    e = p["backends"].get(b, {})
                    if not e.get("available"):
                        cells.append("n/a")
                        continue
                    cell = f"{fmt_seconds(e['median_s'])} ({e['speedup_vs_dense']:.2f}x ±{e['speedup_iqr']:.2f})"
                    if not e.get("same_predictions", True):
                        cell += " ⚠ predictions differ"
                    cells.append(cell)
                body.append([p["batch"], *cells])
            lines += [
                f"### {threads} thread(s)",
                "",
                md_table(["batch", *backends], body, "r" + "l" * len(backends)),
                "",
            ]
            lines += _rates_table(src, backends, threads, peaks.get(str(threads)))
        if src.get("rss"):
            body = []
            for b, e in src["rss"].items():
                if not e.get("available"):
                    body.append([b, f"n/a: {e.get('reason', '')}", "", "", "", ""])
                    continue
                body.append(
                    [
                        b,
                        _mib(e["rss_after_imports"]),
                        _mib(e["rss_steady"]),
                        _mib(e["model_bytes"]),
                        _mib(e["peak_rss"]),
                        e["torch_imported"],
                    ]
                )
            head = [
                "backend",
                "after imports",
                "steady",
                "model (steady - imports)",
                "peak",
                "torch loaded",
            ]
            lines += [
                "Memory (fresh process per backend, batch 64, 1 thread; MiB):",
                "",
                md_table(head, body, "lrrrrl"),
                "",
            ]
        notes = dict(src.get("unavailable", {}))
        for p in src["points"]:
            for b, e in p["backends"].items():
                if not e.get("available"):
                    notes.setdefault(b, e.get("reason", ""))
        for p in src["points"]:
            for b, e in p["backends"].items():
                if e.get("compile_s") is not None:
                    notes.setdefault(f"{b} compile", f"{e['compile_s']} s at batch {p['batch']}")
                if e.get("deepsparse") and e.get("worker_peak_rss"):
                    notes[f"deepsparse at batch {p['batch']}"] = (
                        f"DeepSparse {e['deepsparse']} ({e.get('isa')}), static-batch ONNX opset "
                        f"{e.get('opset')}, worker process peak RSS {_mib(e['worker_peak_rss'])} MiB"
                    )
        if notes:
            lines += ["Not run / notes:", ""] + [f"- {b}: {r}" for b, r in notes.items()] + [""]
    for n in result.get("notes", []):
        lines.append(f"- {n}")
    return "\n".join(lines).rstrip() + "\n"
