"""Cost of the proximal L1 step against a training step and against the lecture's loop.

    .venv/bin/python tools/bench_prox.py --out results/bench_prox

For each model and thread count, four things are timed, interleaved in random order
within every repetition, in one process: a plain training step (forward, backward,
SGD step, no penalty), sparsify's prox (``soft_threshold_`` on every parameter), its foreach
formulation (the CUDA path) run on CPU, and the lecture's per-parameter loop (``p.sub_(p.sign() * p.abs().clamp(max=lam))``).
Medians and inter-quartile ranges over the repetitions, with versions and threads, go to
``bench_prox.json`` and ``bench_prox.md``. Both prox variants act on the same tensors
(all parameters, as in the lecture), starting from the same trained-like weights.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

import sparsify
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.penalties.prox import soft_threshold_, soft_threshold_foreach_
from sparsify.pipeline.zoo import build_model
from sparsify.tables import md_table
from sparsify.timing import time_interleaved

LAM = 1e-5  # small enough that the weights keep their values over hundreds of repetitions

CASES = {
    # name: (model, input shape (B, C, H, W))
    "lecture_convnet, MNIST batch 100": ("lecture_convnet", (100, 1, 28, 28)),
    "resnet18, MNIST batch 100": ("torchvision:resnet18", (100, 1, 28, 28)),
    "resnet18, ImageNet-size batch 8": ("torchvision:resnet18", (8, 3, 224, 224)),
}


def lecture_loop(params: list[torch.Tensor], lam: float) -> None:
    """The lecture's snippet, verbatim in spirit."""
    with torch.no_grad():
        for p in params:
            p.sub_(p.sign() * p.abs().clamp(max=lam))


def bench_case(arch: str, shape: tuple[int, ...], reps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=10, in_channels=shape[1])
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.01)
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def ours() -> None:
        soft_threshold_(params, LAM)  # no_grad inside, as penalize_ calls it

    def loop() -> None:
        lecture_loop(params, LAM)

    def foreach() -> None:  # the CUDA path, timed on CPU to show why CPU does not use it
        with torch.no_grad():
            soft_threshold_foreach_(params, LAM)

    fns = {
        "train_step": train_step,
        "prox_sparsify": ours,
        "prox_lecture_loop": loop,
        "prox_foreach": foreach,
    }
    # burn-in of 3 calls each (allocator, caches, lazy init); one call per sample
    timings = time_interleaved(fns, reps=reps, warmup=3, min_sample_s=0.0, seed=seed)
    out = {"params": sum(p.numel() for p in params), "tensors": len(params), "reps": reps}
    for k, t in timings.items():
        q1, med, q3 = t.quartiles
        out[k] = {"median_ms": 1e3 * med, "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3}
    step = out["train_step"]["median_ms"]
    out["prox_fraction_of_step"] = out["prox_sparsify"]["median_ms"] / step
    out["loop_fraction_of_step"] = out["prox_lecture_loop"]["median_ms"] / step
    out["speedup_vs_loop"] = (
        out["prox_lecture_loop"]["median_ms"] / out["prox_sparsify"]["median_ms"]
    )
    return out


def to_markdown(res: dict) -> str:
    lines = [
        "# Proximal step cost (CPU)",
        "",
        f"Command: `{res['command']}`  ",
        f"torch {res['versions']['torch']}, sparsify {res['versions']['sparsify']}, "
        f"{res['versions']['processor']}, {res['versions']['cpus']} CPUs; medians over interleaved repetitions "
        "(IQR in brackets).",
        "",
    ]

    def cell(r: dict, k: str) -> str:
        return f"{r[k]['median_ms']:.3f} [{r[k]['q1_ms']:.3f}-{r[k]['q3_ms']:.3f}]"

    head = ["case", "threads", "params", "train step ms", "sparsify prox ms", "lecture loop ms"]
    head += ["foreach (CUDA path) ms", "prox / step", "speed-up vs loop"]
    body = [
        [
            r["case"],
            r["threads"],
            f"{r['params']:,}",
            cell(r, "train_step"),
            cell(r, "prox_sparsify"),
            cell(r, "prox_lecture_loop"),
            cell(r, "prox_foreach"),
            f"{100 * r['prox_fraction_of_step']:.2f}%",
            f"{r['speedup_vs_loop']:.1f}x",
        ]
        for r in res["rows"]
    ]
    lines.append(md_table(head, body))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench_prox")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    args = ap.parse_args()
    import os
    import sys

    rows = []
    for threads in sorted(set(args.threads)):
        torch.set_num_threads(threads)
        for case, (arch, shape) in CASES.items():
            reps = args.reps if shape[-1] < 100 else max(5, args.reps // 3)
            r = bench_case(arch, shape, reps)
            rows.append({"case": case, "threads": threads, **r})
            print(
                f"{case} threads={threads}: prox {r['prox_sparsify']['median_ms']:.3f} ms = "
                f"{100 * r['prox_fraction_of_step']:.2f}% of a step, {r['speedup_vs_loop']:.1f}x vs loop",
                flush=True,
            )
    res = {
        "command": "python " + " ".join(sys.argv),
        "versions": {
            "torch": torch.__version__,
            "sparsify": sparsify.__version__,
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "lam": LAM,
        "rows": rows,
    }
    out = Path(args.out)
    atomic_write_json(out / "bench_prox.json", res)
    atomic_write_text(out / "bench_prox.md", to_markdown(res))


if __name__ == "__main__":
    main()
