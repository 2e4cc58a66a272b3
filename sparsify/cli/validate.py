"""``sparsify validate RECIPE...``: report every problem of every recipe at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsify.errors import SparsifyError
from sparsify.pipeline.recipe import parse_yaml, read_recipe_text, validate_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check recipes against the schema; list all problems")
    p.add_argument("recipes", nargs="+", help="YAML recipe files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bad = 0
    for name in args.recipes:
        path = Path(name)
        try:
            problems = validate_dict(parse_yaml(read_recipe_text(path), str(path)), str(path))
        except SparsifyError as exc:
            problems = [str(exc)]
        for line in problems:
            print(line)
        if problems:
            bad += 1
        else:
            print(f"{path}: ok")
    return 2 if bad else 0
