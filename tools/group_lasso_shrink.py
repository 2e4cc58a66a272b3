"""Group-lasso prox training, then physical shrinking: neurons/channels kept, params, FLOPs, latency.

    .venv/bin/python tools/group_lasso_shrink.py --data-dir ../shared/data/mnist

For each model (LeNet-300-100 and the lecture convnet) and each lambda: train on a real-MNIST
subset with SGD + ``GroupLassoProx`` (one ``penalize_`` line in a plain loop), evaluate,
``shrink_`` the model, check the shrunk model's test predictions are the same, and time
both dense models on CPU (median of interleaved runs). Writes ``results/group_lasso/``
``results.json`` and ``results.md``. About 4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import sparsify
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.penalties import GroupLassoProx, freeze_support_, penalize_
from sparsify.pipeline.data.mnist import load_mnist
from sparsify.pipeline.loop import evaluate
from sparsify.pipeline.zoo import build_model
from sparsify.structure.shrink import shrink_
from sparsify.tables import md_table
from sparsify.timing import measure_latency

# (model, lambdas, epochs, lr, output layer): lambdas bracket "some units gone" .. "most
# gone"; the output layer is excluded (a dead class row would remove a class)
PLAN = [
    ("lenet300_100", [0.0, 0.05, 0.1, 0.15], 12, 0.02, "fc3"),
    ("lecture_convnet", [0.0, 0.05, 0.1, 0.15], 6, 0.02, "fc2"),
]
DEBIAS_EPOCHS = 3


def fit(model: torch.nn.Module, opt: torch.optim.Optimizer, data: Any, epochs: int) -> float:
    """Plain mini-batch training (batch 100); returns the seconds it took."""
    x, y = data.train_x, data.train_y
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            idx = perm[i : i + 100]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - t0


def train_one(
    name: str, lam: float, epochs: int, lr: float, output: str, data: Any, seed: int
) -> tuple[torch.nn.Module, float]:
    """SGD (momentum 0.9) with the group-lasso prox (t = lr * lam per step), output layer excluded."""
    torch.manual_seed(seed)
    model = build_model(name)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if lam > 0:
        penalize_(
            model, opt, GroupLassoProx(lam=lam, threshold="lr_lambda", exclude=[f"^{output}\\."])
        )
    seconds = fit(model, opt, data, epochs)
    return model.eval(), seconds


def debias(model: torch.nn.Module, lr: float, data: Any, epochs: int) -> float:
    """Fine-tune the shrunk model without the penalty, its remaining zeros frozen."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    handle = freeze_support_(model, opt)
    seconds = fit(model, opt, data, epochs)
    handle.remove()
    model.eval()
    return seconds


@torch.no_grad()
def predictions(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()  # a shared machine: say how busy it was
    data = load_mnist(args.data_dir, args.train_subset, args.test_subset)
    example = data.test_x[:8]
    runs = []
    for name, lams, epochs, lr, output in PLAN:
        if args.models and name not in args.models:
            continue
        for lam in lams:
            model, seconds = train_one(name, lam, epochs, lr, output, data, args.seed)
            err_before, _ = evaluate(model, TensorDataset(data.test_x, data.test_y))
            before = copy.deepcopy(model)
            report = shrink_(model, example)
            err_after, _ = evaluate(model, TensorDataset(data.test_x, data.test_y))
            same = bool(
                torch.equal(predictions(before, data.test_x), predictions(model, data.test_x))
            )
            latency = {
                f"batch_{b}": measure_latency(
                    {"before": before, "after": model}, data.test_x[:b], repeats=args.repeats
                )
                for b in (1, 256)
            }
            debias_seconds = debias(model, lr, data, DEBIAS_EPOCHS)
            err_debiased, _ = evaluate(model, TensorDataset(data.test_x, data.test_y))
            row = {
                "model": name,
                "lam": lam,
                "epochs": epochs,
                "lr": lr,
                "train_seconds": round(seconds, 1),
                "test_error_before": err_before,
                "test_error_after": err_after,
                "same_predictions": same,
                "debias_epochs": DEBIAS_EPOCHS,
                "debias_seconds": round(debias_seconds, 1),
                "test_error_debiased": err_debiased,
                "latency_ms": latency,
                **report.to_dict(),
            }
            runs.append(row)
            print(
                f"{name} lam={lam:g}: test error {err_before:.4f} -> {err_after:.4f} "
                f"(debiased {err_debiased:.4f}), params "
                f"{report.params_before:,} -> {report.params_after:,}, MACs {report.macs_before:,} -> "
                f"{report.macs_after:,}, batch-256 latency {latency['batch_256']['before']:.2f} -> "
                f"{latency['batch_256']['after']:.2f} ms ({seconds:.0f} s training)",
                flush=True,
            )
    return {
        "command": "python tools/group_lasso_shrink.py " + " ".join(args.argv),
        "setup": {
            "train_subset": args.train_subset,
            "test_subset": args.test_subset,
            "seed": args.seed,
            "optimizer": "SGD momentum 0.9, batch 100, constant lr",
            "penalty": "GroupLassoProx(threshold='lr_lambda') on every Linear/Conv weight but the output layer's",
            "debias": f"{DEBIAS_EPOCHS} epochs of the same SGD on the shrunk model, no penalty, zeros frozen",
            "latency": f"median of {args.repeats} interleaved runs after 5 warm-up rounds",
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "loadavg_1min_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        },
        "versions": {
            "sparsify": sparsify.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
        },
        "runs": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["setup"]
    lines = [
        "# Group-lasso prox, then `shrink`: structured sparsity as a smaller dense model",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Real MNIST, first {s['train_subset']} training / {s['test_subset']} test images; "
        f"{s['optimizer']}; {s['penalty']}. Debiased: {s['debias']}. Latency: dense PyTorch on CPU, {s['threads']} "
        f"thread(s), {s['latency']}; torch {result['versions']['torch']}, "
        f"{result['versions']['processor']}, {s['cpu_count']} cores shared with other jobs (1-min "
        f"load average {s['loadavg_1min_start_end'][0]} at start, "
        f"{s['loadavg_1min_start_end'][1]} at end: latencies are indicative). `same preds` = the shrunk model predicts the same "
        "class for every test image.",
        "",
    ]
    head = ["model", "lambda", "epochs", "test error before -> after shrink", "same preds"]
    head += ["debiased", "units kept per layer", "params", "MACs / image"]
    head += ["latency b=1 (ms)", "latency b=256 (ms)"]
    body = []
    for r in result["runs"]:
        kept = ", ".join(
            f"{row['name']} {row['out_after']}/{row['out_before']}" for row in r["layers"]
        )
        lat1, lat256 = r["latency_ms"]["batch_1"], r["latency_ms"]["batch_256"]
        body.append(
            [
                r["model"],
                f"{r['lam']:g}",
                r["epochs"],
                f"{100 * r['test_error_before']:.2f}% -> {100 * r['test_error_after']:.2f}%",
                "yes" if r["same_predictions"] else "NO",
                f"{100 * r['test_error_debiased']:.2f}%",
                kept,
                f"{r['params_before']:,} -> {r['params_after']:,} "
                f"({r['params_before'] / r['params_after']:.1f}x)",
                f"{r['macs_before']:,} -> {r['macs_after']:,} "
                f"({r['macs_before'] / r['macs_after']:.1f}x)",
                f"{lat1['before']:.3f} -> {lat1['after']:.3f}",
                f"{lat256['before']:.2f} -> {lat256['after']:.2f} "
                f"({lat256['before'] / lat256['after']:.1f}x)",
            ]
        )
    lines += [
        md_table(head, body),
        "",
        "Units kept = output neurons (Linear) / channels (Conv) left after removing the rows "
        "and filters the prox set to exactly zero; the output layer is never shrunk. Dead "
        "units whose bias still emits a constant were folded into the next layer's bias "
        "(`folded` in results.json). Lambda 0 is the same training without the penalty "
        "(its 'debiased' column is just 3 more epochs).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--train-subset", type=int, default=10_000)
    p.add_argument("--test-subset", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--models", nargs="*", help="subset of the plan's models")
    p.add_argument("--out", default="results/group_lasso")
    args = p.parse_args()
    args.argv = sys.argv[1:]
    result = run(args)
    out = Path(args.out)
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "results.md", markdown(result))
    print(f"wrote {out}/results.json and results.md")


if __name__ == "__main__":
    main()
