"""Prox vs magnitude pruning at equal sparsity and equal epochs, mean ± sd over seeds.

    .venv/bin/python tools/compare_methods.py --seeds 0 1 2 --data-dir ../shared/data/mnist
    .venv/bin/python tools/compare_methods.py --table-only     # rebuild the table from runs

Runs every recipe of ``recipes/compare/`` (or ``--recipes``) once per seed through
``sparsify train`` (one subprocess per run, the recipe's pinned thread count, the seed
changed in a copy of the recipe), into ``results/compare/<recipe>_seed<S>/``. A finished run
(its ``metrics.json`` exists) is not rerun, and a run killed midway (its ``resume.pt`` is
left) continues from its last epoch (``sparsify train --resume``), so the tool resumes where
it stopped. ``results/compare/summary.{md,json}`` then give, for every recipe of
``recipes/compare/`` (and of ``--recipes``) with finished runs: sparsity reached, validation
error (the split settings may be chosen on) and test error (reported, never used to choose),
each as mean ± sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sparsify.fileio import atomic_write_text
from sparsify.tables import md_table

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "compare"


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value: no spread is known)."""
    m = sum(values) / len(values)
    sd = (
        (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        if len(values) > 1
        else float("nan")
    )
    return m, sd


def run_one(recipe: Path, seed: int, data_dir: str | None, out: Path) -> None:
    """``sparsify train`` on a copy of ``recipe`` with ``seed``, into ``out`` (continued
    from ``out/resume.pt`` where a killed run left one)."""
    spec = yaml.safe_load(recipe.read_text())
    spec["seed"] = seed
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / recipe.name
        copy.write_text(yaml.safe_dump(spec, sort_keys=False))
        cmd = [sys.executable, "-m", "sparsify", "train", str(copy), "--out", str(out), "-q"]
        if data_dir:
            cmd += ["--data-dir", str(Path(data_dir).resolve())]
        if (out / "resume.pt").is_file():
            cmd.append("--resume")
        # from the checkout: recipes name earlier runs (model.init) relative to it
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def row(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary row: mean and sd of sparsity, val error and test error over ``runs``."""
    out: dict[str, Any] = {"recipe": name, "seeds": [r["seed"] for r in runs]}
    for key in ("reached", "val_error", "test_error"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        m, sd = mean_sd(vals) if vals else (None, None)
        out[key] = None if m is None else (m, None if sd != sd else sd)  # JSON has no NaN
    return out


def fmt(ms: tuple[float, float | None] | None, pct: bool = True) -> str:
    """``mean ± sd`` in percent."""
    if ms is None:
        return "n/a"
    if ms[1] is None:  # one seed: no spread to show
        return f"{100 * ms[0]:.2f} (1 seed)" if pct else f"{ms[0]:.4f} (1 seed)"
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}" if pct else f"{ms[0]:.4f} ± {ms[1]:.4f}"


def collect(names: list[str], out: Path = OUT) -> list[dict[str, Any]]:
    """Summary rows from every finished ``<out>/<name>_seed*/metrics.json``."""
    rows = []
    for name in names:
        runs = []
        for d in sorted(out.glob(f"{name}_seed*")):
            f = d / "metrics.json"
            if not f.is_file():
                continue
            m = json.loads(f.read_text())
            sp = m.get("sparsity") or {}
            runs.append(
                {
                    "seed": int(d.name.rsplit("_seed", 1)[1]),
                    "reached": sp.get("reached"),
                    "val_error": m.get("val_error"),
                    "test_error": m.get("test_error"),
                }
            )
        if runs:
            rows.append(row(name, runs))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="*", type=Path, default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--table-only", action="store_true", help="only rebuild the summary")
    p.add_argument("--out", type=Path, default=OUT, help="runs and summary (default: %(default)s)")
    args = p.parse_args()
    shipped = sorted((ROOT / "recipes" / "compare").glob("*.yaml"))
    recipes = args.recipes or shipped
    # the summary lists every recipe with runs, not only the ones this call ran
    names = sorted({r.stem for r in shipped} | {r.stem for r in recipes})
    if not args.table_only:
        for seed in args.seeds:  # seed-major: a partial run still has every method
            for recipe in recipes:
                out = args.out / f"{recipe.stem}_seed{seed}"
                if not (out / "metrics.json").is_file():
                    run_one(recipe, seed, args.data_dir, out)
    rows = collect(names, args.out)
    head = ["recipe", "seeds", "zeros reached %", "val error %", "test error %"]
    body = [
        [
            r["recipe"],
            " ".join(map(str, r["seeds"])),
            fmt(r["reached"]),
            fmt(r["val_error"]),
            fmt(r["test_error"]),
        ]
        for r in rows
    ]
    text = (
        "# Prox vs magnitude pruning at equal sparsity and epochs\n\n"
        "Made by `tools/compare_methods.py`; mean ± sample sd over the seeds. Validation error is "
        "on images held out of the training set; the test error is reported, never used to "
        "choose.\n\n" + md_table(head, body) + "\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.md", text)
    atomic_write_text(args.out / "summary.json", json.dumps(rows, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
