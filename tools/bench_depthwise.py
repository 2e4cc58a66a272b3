"""torch's depthwise Conv2d against sparsify's stencil (``spk_depthwise``) on mobilenet_v2's
depthwise layers, one run, interleaved.

    python tools/bench_depthwise.py --out results/kernels/depthwise    # ~1 minute on one core

For each of mobilenet_v2's 17 depthwise convs (3x3, at 3x224x224 input; channels, plane and
stride from torchvision's model) and each batch: the layer as torch runs it
(``nn.Conv2d.forward``) and as the converter's :class:`~sparsify.accel.layers.DepthwiseConv2d`
runs it, timed with ``sparsify.timing.time_interleaved`` (medians of ``--reps`` samples, the
two candidates' order shuffled per repetition), and the median of the paired per-repetition
ratios t_torch / t_stencil with its quartiles. Outputs are checked equal within 1e-5 first.
Writes ``bench.json`` (every time, versions, threads, load average) and ``bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tools/bench_kernels.py

import torch
from torch import nn

from sparsify.accel.layers import DepthwiseConv2d, spk_unavailable_reason
from sparsify.fileio import atomic_write_text
from sparsify.timing import (
    fmt_seconds,
    loadavg,
    machine_info,
    paired_ratio,
    time_interleaved,
    torch_threads,
)


def mobilenet_depthwise(input_hw: int = 224) -> list[tuple[str, nn.Conv2d, tuple[int, int, int]]]:
    """(name, conv, (C, H, W) input) of every depthwise conv of torchvision's mobilenet_v2."""
    import torchvision

    model = torchvision.models.mobilenet_v2().eval()
    shapes: dict[str, tuple[int, int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, a, n=n: shapes.__setitem__(n, tuple(a[0].shape[1:])))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, input_hw, input_hw))
    for h in hooks:
        h.remove()
    modules = dict(model.named_modules())
    return [(n, modules[n], s) for n, s in shapes.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--out", type=Path, default=None, help="folder for bench.json and bench.md")
    args = p.parse_args(argv)
    why = spk_unavailable_reason()
    if why is not None:
        print(f"the C kernels are unavailable: {why}")
        return 1
    torch.manual_seed(0)
    rows, load_start = [], loadavg()
    with torch_threads(args.threads), torch.inference_mode():
        for name, conv, chw in mobilenet_depthwise():
            stencil = DepthwiseConv2d.from_conv(conv)
            for b in args.batches:
                x = torch.randn(b, *chw)
                torch.testing.assert_close(stencil(x), conv(x), rtol=1e-5, atol=1e-5)
                t = time_interleaved(
                    {
                        "torch": lambda x=x, m=conv: m(x),
                        "stencil": lambda x=x, m=stencil: m(x),
                    },
                    reps=args.reps,
                    min_sample_s=5e-3,
                )
                r = paired_ratio(t["torch"].samples, t["stencil"].samples)
                rows.append(
                    {
                        "layer": name,
                        "channels": conv.out_channels,
                        "input_hw": list(chw[1:]),
                        "stride": conv.stride[0],
                        "batch": b,
                        "torch_s": t["torch"].median,
                        "stencil_s": t["stencil"].median,
                        "speedup": r.median,
                        "speedup_q25": r.q25,
                        "speedup_q75": r.q75,
                    }
                )
                print(
                    f"{name:<22} {conv.out_channels:>4} @{chw[1]}x{chw[2]} s{conv.stride[0]} "
                    f"b{b}: torch {fmt_seconds(t['torch'].median):>9}  stencil "
                    f"{fmt_seconds(t['stencil'].median):>9}  {r.median:.2f}x "
                    f"[{r.q25:.2f}, {r.q75:.2f}]"
                )
    totals = {
        b: (
            sum(r["torch_s"] for r in rows if r["batch"] == b),
            sum(r["stencil_s"] for r in rows if r["batch"] == b),
        )
        for b in args.batches
    }
    for b, (tt, ts) in totals.items():
        print(f"all 17 layers, batch {b}: torch {fmt_seconds(tt)}, stencil {fmt_seconds(ts)}")
    if args.out is not None:
        meta = {
            "command": "python tools/bench_depthwise.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "threads": args.threads,
            "reps": args.reps,
            "load_average_start": load_start,
            "load_average_end": loadavg(),
            "machine": machine_info(),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "bench.json", json.dumps({**meta, "rows": rows}, indent=1))
        lines = [
            "# mobilenet_v2's depthwise convs: torch vs sparsify's stencil",
            "",
            f"`{meta['command']}`; {args.threads} thread(s), medians of {args.reps} interleaved "
            f"samples; load average {load_start} at start, {meta['load_average_end']} at end; "
            f"torch {meta['machine']['torch']}.",
            "",
            "| layer | channels | input | stride | batch | torch | stencil | speedup [q25, q75] |",
            "|---|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['layer']} | {r['channels']} | {r['input_hw'][0]}x{r['input_hw'][1]} | "
                f"{r['stride']} | {r['batch']} | {fmt_seconds(r['torch_s'])} | "
                f"{fmt_seconds(r['stencil_s'])} | {r['speedup']:.2f}x "
                f"[{r['speedup_q25']:.2f}, {r['speedup_q75']:.2f}] |"
            )
        lines.append("")
        for b, (tt, ts) in totals.items():
            lines.append(
                f"All 17 layers at batch {b}: torch {fmt_seconds(tt)}, stencil {fmt_seconds(ts)}."
            )
        atomic_write_text(args.out / "bench.md", "\n".join(lines) + "\n")
        print(f"wrote {args.out}/bench.json and bench.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
