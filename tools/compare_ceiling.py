"""How far each issue-14 cell is from its dense twin: can any pruning method win by 0.2 points?

    .venv/bin/python tools/compare_ceiling.py            # writes results/compare/ceiling.{md,json}

Issue 14 asks that sparsify's best method beat gradual magnitude pruning (GMP) by >= 0.2 points
of test error at 95% and 98% zeros on LeNet-300-100 and LeNet-5. For every such cell (and its
twin with shifted digits) this reads the finished runs of ``tools/compare_methods.py``
(``results/compare/<recipe>_seed<S>/metrics.json``) and sets side by side:

- GMP's error and the dense twin's (same data, split, seeds, epochs, optimizers, nothing
  pruned), and GMP - dense paired by seed (the two runs of a seed share split and init);
- the error a win would need, ``GMP - 0.2``, and how far that lies below the dense twin:
  a positive ``needed - dense`` is room, a negative one means the win must beat a dense model
  trained the same way;
- the best other method of the cell with >= 3 seeds, chosen by validation error (test
  reported only), and its lead over GMP on test.

Mean ± sample sd over seeds, in percent. Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from compare_methods import OUT, mean_sd

from sparsify.fileio import atomic_write_text
from sparsify.tables import md_table

WIN = 0.002  # issue 14's margin: 0.2 points of test error

# (model, shifts, zeros, GMP recipe, dense twin, other methods of the same cell). Rows marked
# "ft" fine-tune the dense twin, so their epochs exceed GMP's by the twin's own.
CELLS: list[tuple[str, bool, int, str, str, list[str]]] = [
    ("LeNet-300-100", False, 95, "lenet300_gmp_t95", "lenet300_dense",
     ["lenet300_prox_t95", "lenet300_oneshot_t95", "lenet300ft_gmp_t95", "lenet300ft_gmp_kd90_t95",
      "lenet300_vd_t95"]),
    ("LeNet-300-100", False, 98, "lenet300_gmp_t98", "lenet300_dense",
     ["lenet300_prox_t98", "lenet300_oneshot_t98", "lenet300ft_gmp_t98", "lenet300ft_gmp_kd90_t98",
      "lenet300_vd_t98"]),
    ("LeNet-300-100", True, 95, "lenet300_gmp_aug_t95", "lenet300_dense_aug",
     ["lenet300_prox_aug_t95", "lenet300_gmp_aug_kd_t95", "lenet300ft_gmp_aug_t95",
      "lenet300ft_gmp_aug_kd90_t95"]),
    ("LeNet-300-100", True, 98, "lenet300_gmp_aug_t98", "lenet300_dense_aug",
     ["lenet300_gmp_aug_kd_t98", "lenet300ft_gmp_aug_t98", "lenet300ft_gmp_aug_kd90_t98"]),
    ("LeNet-5", False, 95, "lenet5_gmp_t95", "lenet5_dense",
     ["lenet5_prox_t95", "lenet5_oneshot_t95"]),
    ("LeNet-5", False, 98, "lenet5_gmp_t98", "lenet5_dense",
     ["lenet5_prox_t98", "lenet5_oneshot_t98", "lenet5_vd_t98"]),
    ("LeNet-5", True, 95, "lenet5_gmp_aug_t95", "lenet5_dense_aug",
     ["lenet5ft_gmp_aug_t95", "lenet5ft_gmp_aug_kd90_t95"]),
    ("LeNet-5", True, 98, "lenet5_gmp_aug_t98", "lenet5_dense_aug",
     ["lenet5ft_gmp_aug_t98", "lenet5ft_gmp_aug_kd90_t98"]),
]  # fmt: skip


def seed_errors(recipe: str, out: Path = OUT) -> dict[int, tuple[float, float]]:
    """``{seed: (val_error, test_error)}`` of every finished run of ``recipe``."""
    runs = {}
    for d in sorted(out.glob(f"{recipe}_seed*")):
        f = d / "metrics.json"
        if f.is_file():
            m = json.loads(f.read_text())
            runs[int(d.name.rsplit("_seed", 1)[1])] = (m["val_error"], m["test_error"])
    return runs


def pct(ms: tuple[float, float]) -> str:
    """``mean ± sd`` of fractions, in percent."""
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"


def cell_row(cell: tuple[str, bool, int, str, str, list[str]], out: Path = OUT) -> dict[str, Any]:
    """One cell: GMP, dense twin, paired gap, the error a win needs, the best other method."""
    model, shifts, zeros, gmp, dense, others = cell
    g, d = seed_errors(gmp, out), seed_errors(dense, out)
    seeds = sorted(set(g) & set(d))
    if len(seeds) < 3:
        raise SystemExit(f"{gmp} / {dense}: {len(seeds)} common seeds; run compare_methods first")
    g_test = mean_sd([g[s][1] for s in seeds])
    d_test = mean_sd([d[s][1] for s in seeds])
    gap = mean_sd([g[s][1] - d[s][1] for s in seeds])
    row: dict[str, Any] = {
        "model": model, "shifts": shifts, "zeros": zeros, "seeds": seeds,
        "gmp": gmp, "gmp_test": g_test, "dense": dense, "dense_test": d_test,
        "gmp_minus_dense": gap, "win_needs": g_test[0] - WIN,
        "needed_minus_dense": g_test[0] - WIN - d_test[0],
    }  # fmt: skip
    scored = []
    for name in others:
        r = seed_errors(name, out)
        if len(r) >= 3:
            scored.append((mean_sd([v for v, _ in r.values()])[0], name, r))
    if scored:
        _, name, r = min(scored)
        t = mean_sd([e for _, e in r.values()])
        row |= {"best_other": name, "best_other_test": t, "best_other_lead": g_test[0] - t[0]}
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`cell_row` rows."""
    body = []
    for r in rows:
        best = r.get("best_other")
        body.append(
            [
                r["model"], "yes" if r["shifts"] else "no", f"{r['zeros']}%",
                pct(r["gmp_test"]), pct(r["dense_test"]), pct(r["gmp_minus_dense"]),
                f"{100 * r['win_needs']:.2f}", f"{100 * r['needed_minus_dense']:+.2f}",
                f"`{best}` {pct(r['best_other_test'])}" if best else "—",
                f"{100 * r['best_other_lead']:+.2f}" if best else "—",
            ]
        )  # fmt: skip
    head = [
        "model", "shifts", "zeros", "GMP test %", "dense twin test %", "GMP - dense (paired)",
        "a win needs <= %", "needed - dense", "best other by val: test %", "its lead over GMP",
    ]  # fmt: skip
    return md_table(head, body)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", type=Path, default=OUT, help="runs and ceiling.{md,json} (default: %(default)s)"
    )
    out = p.parse_args().out
    rows = [cell_row(c, out) for c in CELLS]
    md = (
        "# How far GMP is from its dense twin (issue 14's cells)\n\n"
        "Made by `tools/compare_ceiling.py` from the runs of `tools/compare_methods.py`; "
        "mean ± sample sd over seeds 0-2, in percent of test error. `needed - dense` < 0: "
        "a 0.2-point win over GMP must beat the dense model trained the same way by that much. "
        "`ft` recipes fine-tune the dense twin (its epochs come on top).\n\n" + table(rows)
    )
    atomic_write_text(out / "ceiling.md", md)
    atomic_write_text(out / "ceiling.json", json.dumps(rows, indent=1) + "\n")
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
