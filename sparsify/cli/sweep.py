"""``sparsify sweep RECIPE --out DIR``: one run per lambda, then results.json and results.md."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from typing import Any

from sparsify.cli.common import (
    add_run_options,
    apply_overrides,
    load_data,
    output_dir,
    run_one,
)
from sparsify.errors import SparsifyError
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.pipeline.recipe import Recipe, load_recipe
from sparsify.tables import md_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train once per lambda of a recipe's lambda list; tabulate")
    add_run_options(p)
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="run every lambda once per seed (default: the recipe's seed); results.md then "
        "gives mean and standard deviation over the seeds",
    )
    p.set_defaults(func=run)


def run_dir_name(kind: str, lam: float, seed: int | None = None, exact: bool = False) -> str:
    """Folder of one sweep run, e.g. ``l1_prox_lam_0.0001`` (``_seed1`` with several seeds).

    ``exact`` writes lambda as Python's shortest round-trip repr instead of ``%g``: used when
    two lambdas of one sweep print alike under ``%g`` (1e-4 and 1.0000001e-4), so no run
    overwrites another.
    """
    name = f"{kind}_lam_{lam!r}" if exact else f"{kind}_lam_{lam:g}"
    return name if seed is None else f"{name}_seed{seed}"


def lam_text(lam: float, rows: list[dict[str, Any]]) -> str:
    """``%g`` of lambda, or its exact repr when another lambda of the sweep prints alike."""
    short = {f"{r['lam']:g}" for r in rows if r["lam"] != lam}
    return repr(lam) if f"{lam:g}" in short else f"{lam:g}"


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def seeds_markdown(rows: list[dict[str, Any]]) -> str:
    """Per lambda, mean ± sample standard deviation over the seeds' runs."""
    lams = list(dict.fromkeys(r["lam"] for r in rows))
    has_val = "val_error" in rows[0]
    head = ["lambda", "seeds", "train error", *(["val error"] if has_val else [])]
    head += ["test error", "zeros (all params)", "zeros (Linear/Conv weights)"]
    has_late = all("max_late_loss" in r for r in rows)
    if has_late:  # per seed: a spike in one run is what the mean would hide
        head += ["final loss (per seed)", "max loss, last 20% of epochs (per seed)"]
    body = []
    for lam in lams:
        mine = [r for r in rows if r["lam"] == lam]
        cells = [lam_text(lam, rows), ",".join(str(r["seed"]) for r in mine)]
        keys = ["train_error", *(["val_error"] if has_val else []), "test_error"]
        for k in keys:
            m, sd = _mean_sd([100 * r[k] for r in mine])
            cells.append(f"{m:.2f} ± {sd:.2f}%")
        for k in ("zero_fraction", "weight_zero_fraction"):
            m, sd = _mean_sd([100 * r[k] for r in mine])
            cells.append(f"{m:.1f} ± {sd:.1f}%")
        if has_late:
            cells.append(" / ".join(f"{r['final_loss']:.3f}" for r in mine))
            cells.append(" / ".join(f"{r['max_late_loss']:.3f}" for r in mine))
        body.append(cells)
    return (
        "Mean ± sample standard deviation over the seeds (errors in %):\n\n"
        + md_table(head, body)
        + "\n\nEvery run:\n"
    )


def results_markdown(rows: list[dict[str, Any]], recipe: Recipe, command: str) -> str:
    """The sweep as a Markdown table: lambda, errors, exact zeros overall and per tensor.

    A staged recipe gets a second table: per stage, test error and nonzero weights
    (``compression = weights of the train stage / nonzero weights``) and seconds.
    """
    text = _main_table(rows, recipe, command)
    if rows and "stages" in rows[0]:
        text += (
            "\nThe table above is the final model's (after the last stage; a shrink stage "
            "leaves narrower tensors, so its zero fractions are of the smaller tensors).\n\n"
        )
        text += _stage_table(rows)
    return text


def _stage_table(rows: list[dict[str, Any]]) -> str:
    names = [s["name"] for s in rows[0]["stages"]]
    head = ["lambda"]
    for n in names:
        head += [f"test error after {n}", f"nonzero weights after {n}", f"s {n}"]
    lines = [
        "Per stage (compression = Linear/Conv weights of the dense model / nonzero weights):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        dense = r["stages"][0]["weight_numel"]
        cells = [f"{r['lam']:g}"]
        for s in r["stages"]:
            ratio = dense / max(s["nonzero_weights"], 1)
            cells += [
                f"{100 * s['test_error']:.2f}%",
                f"{s['nonzero_weights']:,} ({ratio:.1f}x)",
                f"{s['seconds']:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _main_table(rows: list[dict[str, Any]], recipe: Recipe, command: str) -> str:
    tensors = list(rows[0]["layers"]) if rows else []
    has_val = bool(rows) and "val_error" in rows[0]
    has_late = bool(rows) and all("max_late_loss" in r for r in rows)
    seeds = bool(rows) and len({r.get("seed") for r in rows}) > 1
    head = [
        "lambda",
        *(["seed"] if seeds else []),
        "train error",
        *(["val error"] if has_val else []),
        "test error",
        "zeros (all params)",
        *[f"zeros {t}" for t in tensors],
        *(["final loss", "max loss, last 20% of epochs"] if has_late else []),
        "s/run",
    ]
    lines = [
        f"# Sweep: {recipe.name}",
        "",
        f"Command: `{command}`",
        "",
        *([seeds_markdown(rows)] if seeds else []),
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            lam_text(r["lam"], rows),
            *([str(r["seed"])] if seeds else []),
            f"{r['train_error']:.3f}",
            *([f"{r['val_error']:.3f}"] if has_val else []),
            f"{r['test_error']:.3f}",
            f"{100 * r['zero_fraction']:.1f}%",
            *[f"{100 * r['layers'][t]['zero_fraction']:.1f}%" for t in tensors],
            *([f"{r['final_loss']:.3f}", f"{r['max_late_loss']:.3f}"] if has_late else []),
            f"{r['seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    recipe = apply_overrides(load_recipe(args.recipe), args)
    out = output_dir(args.out, recipe)
    sweep = recipe.sweep()
    index = sweep[0] if sweep else 0
    seeds = list(dict.fromkeys(args.seeds)) if args.seeds else [recipe.seed]
    command = shlex.join(["sparsify", *sys.argv[1:]])  # as typed, also under python -m
    runs = []
    for one in recipe.expand():
        penalty = one.penalties[index] if one.penalties else None
        runs.append(
            (one, float(penalty.lam) if penalty else 0.0, penalty.kind if penalty else "none")
        )
    short = [run_dir_name(kind, lam) for _, lam, kind in runs]
    exact = len(set(short)) < len(short)  # two lambdas print alike: name them exactly
    if exact and len({run_dir_name(k, lam, exact=True) for _, lam, k in runs}) < len(runs):
        raise SparsifyError(
            f"{args.recipe}: a lambda is listed twice in the sweep; remove the duplicate."
        )
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        # the data are loaded per seed: a validation split is carved with the run's seed
        data = None
        for one, lam, kind in runs:
            if len(seeds) > 1 or seed != one.seed:
                one = Recipe.from_dict({**one.to_dict(), "seed": seed}, source="command line")
            data = data or load_data(one)
            name = run_dir_name(kind, lam, seed if len(seeds) > 1 else None, exact)
            m = run_one(one, data, out / name, args.quiet, checkpoint_every=0)
            rows.append(_row(m, lam, kind, seed, name))
            if not args.quiet:
                r = rows[-1]
                print(
                    f"lambda={lam:g} seed={seed}: train {r['train_error']:.3f} "
                    f"test {r['test_error']:.3f} zeros {100 * r['zero_fraction']:.1f}% "
                    f"({r['seconds']:.1f} s)",
                    flush=True,
                )
            # rewrite the tables after every run, so a long sweep can be read while it runs
            results = {
                "recipe": recipe.to_dict(),
                "command": command,
                "seeds": seeds,
                "rows": rows,
                "versions": m["versions"],
                "threads": m["threads"],
                "device": m["device"],
            }
            atomic_write_json(out / "results.json", results)
            atomic_write_text(out / "results.md", results_markdown(rows, recipe, command))
    print(f"{len(rows)} runs -> {out / 'results.md'}")
    return 0


def late_loss(history: list[dict[str, float]], fraction: float = 0.2) -> tuple[float, float]:
    """(final epoch's loss, largest epoch loss over the last ``fraction`` of the epochs).

    The data loss averaged over each epoch (the penalty is not in it). A late spike, where
    the run ends inside or just after a jump in the loss, shows as the second number far
    above the first; then the final errors depend on when training stopped.
    """
    tail = history[-max(1, math.ceil(fraction * len(history))) :]
    return history[-1]["loss"], max(e["loss"] for e in tail)


def _row(m: dict[str, Any], lam: float, kind: str, seed: int, name: str) -> dict[str, Any]:
    """One results.json row from a run's metrics."""
    keys = ("train_error", "test_error", "zero_fraction", "weight_zero_fraction", "seconds")
    row: dict[str, Any] = {"lam": lam, "kind": kind, "seed": seed, "run": name}
    row |= {k: m[k] for k in keys}
    if m.get("history"):
        row["final_loss"], row["max_late_loss"] = late_loss(m["history"])
    row["layers"] = {
        n: {k: e[k] for k in ("numel", "zeros", "zero_fraction")} for n, e in m["layers"].items()
    }
    if "val_error" in m:  # a validation split: the number to choose lambda on
        row["val_error"] = m["val_error"]
    if "stages" in m:  # staged recipe: every stage's numbers (the top level is the last's)
        row["stages"] = m["stages"]
    return row
