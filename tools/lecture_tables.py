"""The lecture's two tables next to ours: mean ± sd over seeds from the committed sweeps.

    .venv/bin/python tools/lecture_tables.py          # writes results/lecture_tables.md

Reads results/lecture_l1/results.json and results/lecture_l2/results.json (made by
`sparsify sweep recipes/lecture_l{1,2}.yaml --seeds 0 1 2 ...`), and puts the lecture's
published train/test errors (EE-559 5.4, copied below) beside our mean ± sample standard
deviation over the seeds; errors as fractions like the lecture's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sparsify.fileio import atomic_write_text
from sparsify.tables import md_table

ROOT = Path(__file__).resolve().parents[1]

# lambda: (train error, test error) as printed in the lecture
LECTURE_L2 = {
    0.0: (0.000, 0.064),
    0.001: (0.000, 0.063),
    0.002: (0.000, 0.064),
    0.004: (0.005, 0.065),
    0.01: (0.022, 0.075),
    0.02: (0.048, 0.101),
}
LECTURE_L1 = {
    0.0: (0.000, 0.064),
    1e-5: (0.000, 0.063),
    2e-5: (0.000, 0.067),
    5e-5: (0.004, 0.068),
    1e-4: (0.087, 0.128),
    2e-4: (0.057, 0.101),
    5e-4: (0.496, 0.516),
}
WEIGHTS = ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, sd


def table(results: dict[str, Any], lecture: dict[float, tuple[float, float]], l1: bool) -> str:
    """One Markdown table: lambda, the lecture's errors, ours (mean ± sd), exact zeros."""
    rows = results["rows"]
    head = ["lambda", "lecture train", "lecture test", "ours train", "ours test", "seeds"]
    head += ["exact zeros (all params)"]
    if l1:
        head += [f"{w.split('.')[0]} weights" for w in WEIGHTS]
    body = []
    for lam in sorted({r["lam"] for r in rows}):
        mine = [r for r in rows if r["lam"] == lam]
        lt, ls = lecture.get(lam, (float("nan"), float("nan")))
        cells = [f"{lam:g}", f"{lt:.3f}", f"{ls:.3f}"]
        for k in ("train_error", "test_error"):
            m, sd = mean_sd([r[k] for r in mine])
            cells.append(f"**{m:.3f}** ± {sd:.3f}")
        cells.append(str(len(mine)))
        m, sd = mean_sd([100 * r["zero_fraction"] for r in mine])
        cells.append(f"{m:.1f} ± {sd:.1f}%")
        if l1:
            for w in WEIGHTS:
                m, _ = mean_sd([100 * r["layers"][w]["zero_fraction"] for r in mine])
                cells.append(f"{m:.1f}%")
        body.append(cells)
    return md_table(head, body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"))
    args = ap.parse_args()
    root = Path(args.results)
    l1 = json.loads((root / "lecture_l1" / "results.json").read_text())
    l2 = json.loads((root / "lecture_l2" / "results.json").read_text())
    text = [
        "# The lecture's tables next to ours",
        "",
        "Made by `python tools/lecture_tables.py` from `lecture_l1/results.json` and",
        f"`lecture_l2/results.json` (seeds {l1.get('seeds')}, torch {l1['versions']['torch']},",
        f"{l1['threads']} thread, {l1['device']}). Ours: mean ± sample standard deviation over",
        "the seeds. Errors are fractions, as in the lecture.",
        "",
        "## L2 penalty in the loss (`lambda * sum(w^2)`)",
        "",
        table(l2, LECTURE_L2, l1=False),
        "",
        "## L1 by the proximal step after each SGD step (`t = lambda` per step)",
        "",
        table(l1, LECTURE_L1, l1=True),
        "",
    ]
    atomic_write_text(root / "lecture_tables.md", "\n".join(text))
    print(f"wrote {root / 'lecture_tables.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
