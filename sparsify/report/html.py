"""``build_report``: a results directory -> one self-contained HTML page and a Markdown file.

Inputs found under the directory (searched recursively, each optional):
    results.json    a sweep: error vs lambda, exact zeros per layer vs lambda
    footprint.json  bytes per storage format against the entropy bound
    curves.json     speedup vs density (tools/bench_curves.py)
    bench.json      latency per backend (sparsify bench)
    model.safetensors (a checkpoint, when no sweep is present): exact zeros per layer
Plots are PNG (matplotlib, Agg); the HTML embeds them as base64 data URIs so the page is
one file; the Markdown links the same PNGs written beside it.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsify.errors import SparsifyError, one_line
from sparsify.fileio import atomic_write_bytes, atomic_write_text
from sparsify.tables import md_table

MAX_FILES = 20  # per kind: a report of a huge tree would not be readable anyway


@dataclass
class Section:
    """One part of the report: a heading, text, PNG plots and tables (header row + rows)."""

    title: str
    text: str = ""
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (file stem, png)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _find(root: Path, name: str) -> list[Path]:
    found = sorted(p for p in root.rglob(name) if not any(s.startswith(".") for s in p.parts))
    return found[:MAX_FILES]


def _rel(root: Path, p: Path) -> str:
    return str(p.parent.relative_to(root)) or "."


def _where(root: Path, p: Path) -> str:
    rel = _rel(root, p)
    return "" if rel == "." else f" ({rel})"


def _stem(prefix: str, root: Path, p: Path) -> str:
    rel = _rel(root, p)
    return prefix if rel == "." else f"{prefix}_{rel.replace('/', '_')}"


# --------------------------------------------------------------------------- sections


def sweep_section(root: Path, path: Path) -> Section:
    """Error vs lambda and exact zeros per layer vs lambda, from a sweep's results.json."""
    data = json.loads(path.read_text())
    rows = sorted(data["rows"], key=lambda r: r["lam"])
    plt = _plt()
    lams = [r["lam"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(lams, [r["train_error"] for r in rows], "o-", label="train error")
    ax.plot(lams, [r["test_error"] for r in rows], "s-", label="test error")
    ax.set_xscale("symlog", linthresh=min([x for x in lams if x > 0] or [1e-6]))
    ax.set_xlabel("lambda")
    ax.set_ylabel("error")
    ax2 = ax.twinx()
    ax2.plot(lams, [100 * r["zero_fraction"] for r in rows], "k:", label="zeros (all params, %)")
    ax2.set_ylabel("exact zeros (%)")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.set_title("Error and exact zeros vs lambda")
    err_png = _png(fig)
    layer_names = [n for n in rows[0].get("layers", {}) if n.endswith("weight")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for n in layer_names:
        ax.plot(lams, [100 * r["layers"][n]["zero_fraction"] for r in rows], "o-", ms=3, label=n)
    ax.set_xscale("symlog", linthresh=min([x for x in lams if x > 0] or [1e-6]))
    ax.set_xlabel("lambda")
    ax.set_ylabel("exact zeros (%)")
    ax.set_title("Exact zeros per layer vs lambda")
    ax.legend(fontsize=7)
    zeros_png = _png(fig)
    head = ["lambda", "train error", "test error", "zeros (all)"] + [
        f"zeros {n}" for n in layer_names
    ]
    body = [
        [
            f"{r['lam']:g}",
            f"{r['train_error']:.3f}",
            f"{r['test_error']:.3f}",
            f"{r['zero_fraction']:.1%}",
        ]
        + [f"{r['layers'][n]['zero_fraction']:.1%}" for n in layer_names]
        for r in rows
    ]
    return Section(
        f"Sweep{_where(root, path)}",
        f"Command: {data.get('command', '?')}",
        [("sweep_error", err_png), ("sweep_zeros", zeros_png)],
        [(head, body)],
    )


def checkpoint_section(root: Path, path: Path) -> Section:
    """Exact zeros per layer of one checkpoint."""
    from sparsify.pipeline.checkpoint import load_checkpoint
    from sparsify.stats import state_dict_stats

    ckpt = load_checkpoint(path.parent)
    stats = state_dict_stats({k: v for k, v in ckpt.state_dict.items() if v.dim() >= 2})
    names = list(stats["layers"])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [100 * stats["layers"][n]["zero_fraction"] for n in names])
    ax.set_ylabel("exact zeros (%)")
    ax.set_title(f"Exact zeros per layer: {_rel(root, path)}")
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    body = [
        [n, f"{e['numel']:,}", f"{e['zeros']:,}", f"{e['zero_fraction']:.2%}"]
        for n, e in stats["layers"].items()
    ]
    return Section(
        f"Checkpoint{_where(root, path) or ' (.)'}",
        f"{stats['weight_zero_fraction']:.2%} of weights are exact zeros.",
        [(_stem("zeros", root, path), _png(fig))],
        [(["tensor", "numel", "zeros", "zero %"], body)],
    )


FORMATS = ("dense", "checkpoint", "scipy", "compact", "compact_bundle", "gzip")


def footprint_section(root: Path, path: Path) -> Section:
    """Bytes per format against the entropy bound, from footprint.json."""
    data = json.loads(path.read_text())
    groups = [data["prunable"], data["total"]]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / (len(FORMATS) + 1)
    for i, fmt in enumerate((*FORMATS, "bound")):
        key = f"{fmt}_bytes"
        vals = [g.get(key) or 0 for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], vals, width, label=fmt)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], [g["name"] for g in groups])
    ax.set_yscale("log")
    ax.set_ylabel("bytes")
    ax.set_title("Size per format against the entropy bound")
    ax.legend(fontsize=7)
    head = ["rows", *FORMATS, "bound"] + [f"{f}/bound" for f in FORMATS]
    body = []
    for g in groups:
        cells = [g["name"]] + [f"{g.get(f'{f}_bytes') or 0:,.0f}" for f in FORMATS]
        cells.append(f"{g['bound_bytes']:,.0f}")
        cells += [
            f"{g[f'{f}_bytes'] / g['bound_bytes']:.2f}"
            if g.get(f"{f}_bytes") and g["bound_bytes"]
            else "–"
            for f in FORMATS
        ]
        body.append(cells)
    return Section(f"Footprint{_where(root, path)}", "", [("footprint", _png(fig))], [(head, body)])


def curves_section(root: Path, path: Path) -> Section:
    """Speedup vs density with the bandwidth bound, from curves.json."""
    from sparsify.bench.curves import plot_curves

    data = json.loads(path.read_text())
    head = ["Linear", "batch", "kernel", "break-even density", "zeros at break-even"]
    body = []
    for c in data["curves"]:
        for k, v in c["break_even_density"].items():
            measured = any(k in p["speedup"] for p in c["points"])
            none = "no crossing in range" if measured else "not measured here"
            body.append(
                [f"{c['n']}x{c['n']}", str(c["batch"]), k]
                + (["–", none] if v is None else [f"{v:.3f}", f"{1 - v:.1%}"])
            )
    return Section(
        f"Speedup vs density{_where(root, path)}",
        f"{data['threads']} thread(s); load average {data.get('loadavg_start')} -> "
        f"{data.get('loadavg_end')}; speedup = t_dense / t_kernel.",
        [("curves", plot_curves(data))],
        [(head, body)],
    )


def bench_section(root: Path, path: Path) -> Section:
    """Latency per backend and batch, one panel per (source, threads), from bench.json."""
    data = json.loads(path.read_text())
    plt = _plt()
    panels = [(s, t) for s in data["sources"] for t in sorted({p["threads"] for p in s["points"]})]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.6 * len(panels)), squeeze=False)
    head = [
        "source",
        "threads",
        "batch",
        "backend",
        "median",
        "speedup vs dense",
        "same predictions",
    ]
    body = []
    for ax, (src, t) in zip(axes.flat, panels):
        pts = [p for p in src["points"] if p["threads"] == t]
        names = [
            b
            for b in pts[0]["backends"]
            if any(p["backends"].get(b, {}).get("available") for p in pts)
        ]
        names.sort(key=lambda b: (b != "dense", b))  # the baseline first
        width = 0.8 / max(1, len(names))
        for i, b in enumerate(names):
            vals = [p["backends"].get(b, {}).get("median_s", float("nan")) * 1e3 for p in pts]
            ax.bar([j + i * width for j in range(len(pts))], vals, width, label=b)
        ax.set_xticks(
            [j + 0.4 - width / 2 for j in range(len(pts))], [f"batch {p['batch']}" for p in pts]
        )
        ax.set_yscale("log")
        ax.set_ylabel("ms per call")
        ax.set_title(f"{src['label']}, {t} thread(s)")
        ax.legend(fontsize=7, ncol=2)
        for p in pts:
            for b in names:
                e = p["backends"].get(b, {})
                if e.get("available"):
                    body.append(
                        [
                            src["label"],
                            str(t),
                            str(p["batch"]),
                            b,
                            f"{e['median_s'] * 1e3:.3f} ms",
                            f"{e['speedup_vs_dense']:.2f}x",
                            "yes" if e.get("same_predictions") else "NO",
                        ]
                    )
    m = data.get("machine", {})
    return Section(
        f"Latency per backend{_where(root, path)}",
        f"{m.get('cpu')}, torch {m.get('torch')}; load average {data.get('loadavg_start')} -> "
        f"{data.get('loadavg_end')}.",
        [(_stem("bench", root, path), _png(fig))],
        [(head, body)],
    )


# --------------------------------------------------------------------------- rendering

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;overflow-x:auto}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#f0f0f0}td:first-child{text-align:left}
img{max-width:100%;display:block;margin:1em 0}h2{border-bottom:1px solid #ddd}"""


def render_html(title: str, sections: Sequence[Section]) -> str:
    """One self-contained page: images as base64 data URIs, no external resource."""
    e = html.escape
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>",
    ]
    for s in sections:
        out.append(f"<section><h2>{e(s.title)}</h2>")
        if s.text:
            out.append(f"<p>{e(s.text)}</p>")
        for stem, png in s.images:
            b64 = base64.b64encode(png).decode("ascii")
            out.append(f"<img alt='{e(stem)}' src='data:image/png;base64,{b64}'>")
        for head, body in s.tables:
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body]
            out.append("</table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """Markdown linking ``report_<stem>.png`` files written beside it."""
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        lines += [f"![{stem}](report_{stem}.png)\n" for stem, _ in s.images]
        for head, body in s.tables:
            lines += [md_table(head, body), ""]
    return "\n".join(lines)


def collect_sections(root: Path) -> list[Section]:
    """Every section the directory has inputs for (see the module docstring).

    Raises:
        SparsifyError: an input file that is not the JSON its section expects (one line
            naming the file).
    """
    sections: list[Section] = []
    sweeps = _find(root, "results.json")
    for p in sweeps:
        sections.append(_section(sweep_section, root, p))
    if not sweeps:
        sections += [
            _section(checkpoint_section, root, p) for p in _find(root, "model.safetensors")
        ]
    sections += [_section(footprint_section, root, p) for p in _find(root, "footprint.json")]
    sections += [_section(curves_section, root, p) for p in _find(root, "curves.json")]
    sections += [_section(bench_section, root, p) for p in _find(root, "bench.json")]
    return sections


def _section(build: Callable[[Path, Path], Section], root: Path, path: Path) -> Section:
    """``build(root, path)``; a file that is not what sparsify wrote there (not JSON, not an
    object, a key missing or of the wrong type) is one line naming it."""
    try:
        return build(root, path)
    except SparsifyError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        what = f"missing key {exc}" if isinstance(exc, KeyError) else one_line(str(exc))[:120]
        raise SparsifyError(
            f"{path} is not a {path.name} that sparsify wrote ({what}); regenerate it or "
            "move it out of the folder."
        ) from None


def build_report(
    directory: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write ``report.html``, ``report.md`` and ``report_*.png`` for ``directory``.

    Returns the written paths.

    Raises:
        SparsifyError: the directory does not exist or holds nothing to report.
    """
    root = Path(directory)
    if not root.is_dir():
        raise SparsifyError(
            f"{root} is not a directory; give a sweep, export or bench output directory."
        )
    sections = collect_sections(root)
    if not sections:
        raise SparsifyError(
            f"{root} holds no results.json, footprint.json, curves.json, bench.json or checkpoint; "
            "point sparsify report at a sweep, footprint or bench output directory."
        )
    out = Path(out_dir) if out_dir else root
    title = title or f"sparsify report: {root.resolve().name}"
    written = [atomic_write_text(out / "report.html", render_html(title, sections))]
    seen: set[str] = set()
    for s in sections:
        for i, (stem, png) in enumerate(s.images):
            if stem in seen:  # two sections made the same stem: keep both files
                stem = f"{stem}_{len(seen)}"
                s.images[i] = (stem, png)
            seen.add(stem)
            written.append(atomic_write_bytes(out / f"report_{stem}.png", png))
    written.insert(1, atomic_write_text(out / "report.md", render_markdown(title, sections)))
    return written
