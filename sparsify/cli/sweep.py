"""``sparsify sweep RECIPE --out DIR``: one run per lambda, then results.json and results.md."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from sparsify.cli.common import add_run_options, apply_overrides, load_data, run_one
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.pipeline.recipe import Recipe, load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train once per lambda of a recipe's lambda list; tabulate")
    add_run_options(p)
    p.set_defaults(func=run)


def run_dir_name(kind: str, lam: float) -> str:
    """Folder of one sweep run, e.g. ``l1_prox_lam_0.0001``."""
    return f"{kind}_lam_{lam:g}"


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
    head = [
        "lambda",
        "train error",
        *(["val error"] if has_val else []),
        "test error",
        "zeros (all params)",
        *[f"zeros {t}" for t in tensors],
        "s/run",
    ]
    lines = [
        f"# Sweep: {recipe.name}",
        "",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            f"{r['lam']:g}",
            f"{r['train_error']:.3f}",
            *([f"{r['val_error']:.3f}"] if has_val else []),
            f"{r['test_error']:.3f}",
            f"{100 * r['zero_fraction']:.1f}%",
            *[f"{100 * r['layers'][t]['zero_fraction']:.1f}%" for t in tensors],
            f"{r['seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    recipe = apply_overrides(load_recipe(args.recipe), args)
    out = Path(args.out or recipe.output.dir)
    sweep = recipe.sweep()
    index = sweep[0] if sweep else 0
    data = load_data(recipe)
    command = (
        shlex.join(["sparsify", *sys.argv[1:]])
        if sys.argv[0].endswith("sparsify")
        else shlex.join(sys.argv)
    )
    rows: list[dict[str, Any]] = []
    for one in recipe.expand():
        penalty = one.penalties[index] if one.penalties else None
        lam = float(penalty.lam) if penalty else 0.0
        kind = penalty.kind if penalty else "none"
        m = run_one(one, data, out / run_dir_name(kind, lam), args.quiet, checkpoint_every=0)
        row = {
            "lam": lam,
            "kind": kind,
            "run": run_dir_name(kind, lam),
            **{
                k: m[k]
                for k in (
                    "train_error",
                    "test_error",
                    "zero_fraction",
                    "weight_zero_fraction",
                    "seconds",
                )
            },
            "layers": {
                n: {k: e[k] for k in ("numel", "zeros", "zero_fraction")}
                for n, e in m["layers"].items()
            },
        }
        if "val_error" in m:  # a validation split: the number to choose lambda on
            row["val_error"] = m["val_error"]
        if "stages" in m:  # staged recipe: every stage's numbers (the top level is the last's)
            row["stages"] = m["stages"]
        rows.append(row)
        if not args.quiet:
            print(
                f"lambda={lam:g}: train {row['train_error']:.3f} test {row['test_error']:.3f} "
                f"zeros {100 * row['zero_fraction']:.1f}% ({row['seconds']:.1f} s)",
                flush=True,
            )
        # rewrite the tables after every run, so a long sweep can be read while it runs
        results = {
            "recipe": recipe.to_dict(),
            "command": command,
            "rows": rows,
            "versions": m["versions"],
            "threads": m["threads"],
            "device": m["device"],
        }
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "results.md", results_markdown(rows, recipe, command))
    print(f"{len(rows)} runs -> {out / 'results.md'}")
    return 0
