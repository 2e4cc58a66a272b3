"""What folding batch norms into convs buys, on whole torchvision convnets, in one run.

    python tools/bench_fold.py --out results/bench/fold      # ~3 minutes on one core

Each model (3x224x224 input, the round(0.1 * numel) largest weights of every conv and Linear
kept, as ``sparsify bench --density 0.1`` does) runs in four forms, timed interleaved in one
process with ``sparsify.timing.time_interleaved`` (medians of ``--reps`` samples, order shuffled
per repetition):

- ``dense``: torch as given;
- ``dense_folded``: the same after ``fold_batchnorm_`` alone (no sparse layer);
- ``converter_unfolded``: ``sparsify_inference_(..., fold_batchnorm=False)``;
- ``converter``: ``sparsify_inference_`` as shipped (folding on).

Speedups are medians of paired per-repetition ratios t_dense / t. Every form's output is
checked against ``dense`` first (max |diff| recorded). Writes ``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tools/bench_kernels.py

import torch

from sparsify.accel import sparsify_inference_
from sparsify.accel.fold import fold_batchnorm_
from sparsify.bench.sources import impose_density_
from sparsify.fileio import atomic_write_text
from sparsify.timing import loadavg, machine_info, paired_ratio, time_interleaved, torch_threads

FORMS = ("dense", "dense_folded", "converter_unfolded", "converter")


def forms(name: str, batch: int, density: float, reps: int) -> tuple[dict, dict, torch.Tensor]:
    """The four forms of torchvision model ``name`` (eval, zeros imposed), what folding and
    conversion reported, and the input batch."""
    import torchvision

    torch.manual_seed(0)
    dense = getattr(torchvision.models, name)().eval()
    impose_density_(dense, density)
    x = torch.randn(batch, 3, 224, 224)
    out = {"dense": dense, **{f: copy.deepcopy(dense) for f in FORMS[1:]}}
    info = {"folded_dense": len(fold_batchnorm_(out["dense_folded"]))}
    for form, fold in (("converter_unfolded", False), ("converter", True)):
        rep = sparsify_inference_(out[form], x, fold_batchnorm=fold, reps=reps)
        info[form] = {
            "folded": len(rep.folded),
            "sparse_layers": sum(d.chosen != "dense" for d in rep.layers),
            "whole": rep.whole,
        }
    return out, info, x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="folder for bench.json and bench.md")
    args = p.parse_args(argv)
    rows, load_start = [], loadavg()
    with torch_threads(args.threads), torch.inference_mode():
        for name in args.models:
            for b in args.batches:
                models, info, x = forms(name, b, args.density, args.reps)
                ref = models["dense"](x)
                diffs = {f: float((m(x) - ref).abs().max()) for f, m in models.items()}
                t = time_interleaved(
                    {f: (lambda m=m, x=x: m(x)) for f, m in models.items()}, reps=args.reps
                )
                row = {"model": name, "batch": b, "report": info, "max_abs_diff": diffs, "time": {}}
                for f in FORMS:
                    r = paired_ratio(t["dense"].samples, t[f].samples)
                    row["time"][f] = {
                        "s": t[f].median,
                        "speedup": r.median,
                        "q25": r.q25,
                        "q75": r.q75,
                    }
                rows.append(row)
                print(
                    f"{name} b{b}: "
                    + ", ".join(f"{f} {row['time'][f]['s'] * 1e3:.1f} ms ({row['time'][f]['speedup']:.2f}x)" for f in FORMS)
                )  # fmt: skip
    if args.out is None:
        return 0
    meta = dict(
        command="python tools/bench_fold.py " + " ".join(sys.argv[1:] if argv is None else argv),
        threads=args.threads, reps=args.reps, density=args.density, machine=machine_info(),
        load_average_start=load_start, load_average_end=loadavg(),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench.json", json.dumps(dict(meta, rows=rows), indent=1))
    lines = [
        "# Batch norms folded into convs: whole convnets, one thread",
        "",
        f"`{meta['command']}`; {args.threads} thread(s), medians of {args.reps} interleaved "
        f"samples, ms per call (speedup over torch dense); load average {load_start} at start, "
        f"{meta['load_average_end']} at end; torch {meta['machine']['torch']}.",
        "",
        "| model | batch | BN folded | " + " | ".join(FORMS) + " |",
        "|---|---:|---:|" + "---:|" * len(FORMS),
    ]
    for r in rows:
        cells = [f"{r['time'][f]['s'] * 1e3:.1f} ({r['time'][f]['speedup']:.2f}x)" for f in FORMS]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['report']['converter']['folded']} | "
            + " | ".join(cells)
            + " |"
        )
    atomic_write_text(args.out / "bench.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
