"""Paired-by-seed gap between two recipes' runs: ``B - A`` in points of error, per seed and overall.

    .venv/bin/python tools/paired_gap.py lenet300_vd_t95 lenet300_gmp_t95 \
        --dirs results/compare results/compare/seeds34 --out results/compare/seeds34/paired.json

Reads ``<dir>/<recipe>_seed<S>/metrics.json`` of ``tools/compare_methods.py`` from every
``--dirs`` folder and pairs the runs of A and B that share a seed (same split, same init):
``gap_s = error_B(s) - error_A(s)`` for the validation and the test split, then the mean and
sample sd of the gaps. A positive gap means A is better. Seeds with only one of the two runs are
listed and left out. Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from compare_methods import mean_sd

from sparsify.fileio import atomic_write_text


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 2: the ``sparsify`` CLI's convention for bad input."""
    print(f"paired_gap.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def errors(dirs: list[Path], recipe: str) -> dict[int, dict[str, float]]:
    """``{seed: {"val": e, "test": e, "dir": folder}}`` of ``recipe``'s finished runs."""
    out: dict[int, dict[str, Any]] = {}
    for d in dirs:
        for run in sorted(d.glob(f"{recipe}_seed*")):
            m = run / "metrics.json"
            if m.is_file():
                seed = int(run.name.rsplit("_seed", 1)[1])
                if seed in out:
                    fail(
                        f"{recipe} seed {seed} is in two folders ({out[seed]['dir']}, {d}); pass one."
                    )
                try:
                    data = json.loads(m.read_text())
                    val, test = float(data["val_error"]), float(data["test_error"])
                except (ValueError, KeyError, TypeError) as e:
                    fail(
                        f"{m}: not a finished run's metrics ({type(e).__name__}: {e}); a run "
                        "without a validation split has no val_error: pair runs that carve one."
                    )
                out[seed] = {"val": val, "test": test, "dir": str(d)}
    return out


def paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per-seed rows and mean ± sd of ``B - A`` (points) on validation and test."""
    seeds = sorted(set(a) & set(b))
    rows = [
        {
            "seed": s,
            **{f"{k}_{x}": 100 * r[s][x] for k, r in (("a", a), ("b", b)) for x in ("val", "test")},
        }
        for s in seeds
    ]
    summary = {}
    for x in ("val", "test"):
        m, sd = mean_sd([r[f"b_{x}"] - r[f"a_{x}"] for r in rows]) if rows else (float("nan"),) * 2
        summary[f"gap_{x}"] = {"mean": m, "sd": sd}
    return {"seeds": seeds, "unpaired": sorted(set(a) ^ set(b)), "rows": rows, **summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="recipe A (the method)")
    p.add_argument("b", help="recipe B (the baseline)")
    p.add_argument("--dirs", nargs="+", type=Path, default=[Path("results/compare")])
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = p.parse_args()
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        fail(
            f"--dirs: no such folder {', '.join(missing)}; pass the --out of compare_methods.py runs."
        )
    res = {"a": args.a, "b": args.b, **paired(errors(args.dirs, args.a), errors(args.dirs, args.b))}
    if not res["seeds"]:
        fail(
            f"no seed has runs of both {args.a} and {args.b} under {', '.join(map(str, args.dirs))}"
        )
    print(f"seed  {args.a} val/test %  {args.b} val/test %  gap val/test (B - A)")
    for r in res["rows"]:
        print(
            f"{r['seed']:>4}  {r['a_val']:.2f} / {r['a_test']:.2f}  {r['b_val']:.2f} / {r['b_test']:.2f}"
            f"  {r['b_val'] - r['a_val']:+.2f} / {r['b_test'] - r['a_test']:+.2f}"
        )
    v, t = res["gap_val"], res["gap_test"]
    print(f"mean ± sd over {len(res['seeds'])} seeds: val {v['mean']:+.2f} ± {v['sd']:.2f}, "
          f"test {t['mean']:+.2f} ± {t['sd']:.2f}")  # fmt: skip
    if res["unpaired"]:
        print(f"left out (one run only): seeds {res['unpaired']}")
    if args.out is not None:
        try:
            atomic_write_text(args.out, json.dumps(res, indent=1) + "\n")
        except OSError as e:
            fail(f"cannot write {args.out} ({e.strerror}); pass --out in a writable folder.")


if __name__ == "__main__":
    main()
