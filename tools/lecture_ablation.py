"""Why our L1 rows differ from the lecture's: seeds, learning rate, LR schedule, scope, epochs.

    .venv/bin/python tools/lecture_ablation.py --data-dir ../shared/data/mnist --out results/lecture_ablation

Starts from recipes/lecture_l1.yaml (SGD lr 0.1, 150 epochs, batch 100, t = lam per step,
penalty on all parameters, one thread) and changes one thing at a time. Seeds are not
varied here: `sparsify sweep recipes/lecture_l1.yaml --seeds 0 1 2` gives every lambda's
mean and spread over seeds (results/lecture_l1). Writes ablation.json and
ablation.md (one row per run: what changed, lambda, errors, exact zeros, final-epoch loss,
largest loss seen in the last 20 epochs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.pipeline.data import load_mnist
from sparsify.pipeline.recipe import Recipe, load_recipe
from sparsify.pipeline.stages import train
from sparsify.tables import md_table

ROOT = Path(__file__).resolve().parents[1]


def variant(base: Recipe, lam: float, **changes: Any) -> Recipe:
    """``base`` with a scalar lambda and nested changes such as ``optimizer={"lr": 0.02}``."""
    d = base.to_dict()
    d["penalties"][0]["lam"] = lam
    for key, value in changes.items():
        if isinstance(value, dict):
            d[key].update(value)
        elif key == "scope":
            d["penalties"][0]["scope"] = value
        elif key == "kind":
            d["penalties"][0]["kind"] = value
            d["penalties"][0].pop("threshold", None)
        else:
            d[key] = value
    return Recipe.from_dict(d)


PLAN: list[tuple[str, float, dict[str, Any]]] = [
    *[("lr 0.02", lam, {"optimizer": {"lr": 0.02}}) for lam in (0.0, 1e-4, 5e-4)],
    ("lr 0.05", 5e-4, {"optimizer": {"lr": 0.05}}),
    *[("cosine LR", lam, {"optimizer": {"lr_schedule": "cosine"}}) for lam in (5e-5, 1e-4, 5e-4)],
    ("weights only (scope prunable)", 5e-4, {"scope": "prunable"}),
    ("300 epochs", 5e-4, {"epochs": 300}),
    ("L1 by subgradient", 1e-4, {"kind": "l1_subgradient"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="results/lecture_ablation")
    args = ap.parse_args()
    base = load_recipe(ROOT / "recipes" / "lecture_l1.yaml")
    data = load_mnist(args.data_dir, base.data.train_subset, base.data.test_subset)
    rows = []
    for what, lam, changes in PLAN:
        recipe = variant(base, lam, **changes)
        result = train(recipe, data, progress=False)
        m, h = result.metrics, result.history
        row = {
            "change": what,
            "lam": lam,
            "train_error": m["train_error"],
            "test_error": m["test_error"],
            "zero_fraction": m["zero_fraction"],
            "final_loss": h[-1]["loss"],
            "max_loss_last_20_epochs": max(e["loss"] for e in h[-20:]),
            "seconds": m["seconds"],
        }
        rows.append(row)
        print(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            flush=True,
        )
        out = Path(args.out)
        atomic_write_json(
            out / "ablation.json",
            {
                "command": "python " + " ".join(sys.argv),
                "base": base.to_dict(),
                "rows": rows,
                "versions": m["versions"],
                "threads": m["threads"],
            },
        )
        head = ["change", "lambda", "train error", "test error", "exact zeros", "final loss"]
        head.append("max loss, last 20 epochs")
        body = [
            [
                r["change"],
                f"{r['lam']:g}",
                f"{r['train_error']:.3f}",
                f"{r['test_error']:.3f}",
                f"{100 * r['zero_fraction']:.1f}%",
                f"{r['final_loss']:.3f}",
                f"{r['max_loss_last_20_epochs']:.3f}",
            ]
            for r in rows
        ]
        atomic_write_text(out / "ablation.md", md_table(head, body) + "\n")


if __name__ == "__main__":
    main()
