"""``sparsify train RECIPE --out DIR``: one run -> model.safetensors, recipe.yaml, metrics.json."""

from __future__ import annotations

import argparse

from sparsify.cli.common import (
    add_run_options,
    apply_overrides,
    load_data,
    output_dir,
    run_one,
)
from sparsify.errors import SparsifyError
from sparsify.pipeline.distributed import distributed
from sparsify.pipeline.recipe import load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one recipe and write a checkpoint with metrics")
    add_run_options(p)
    p.add_argument(
        "--resume", action="store_true", help="continue from DIR/resume.pt if a killed run left one"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        metavar="N",
        help="save resume state every N epochs (0: never)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    recipe = apply_overrides(load_recipe(args.recipe), args)
    if recipe.sweep() is not None:
        raise SparsifyError(
            f"{args.recipe} gives a list of lambdas (a sweep); run it with 'sparsify sweep'."
        )
    if args.checkpoint_every < 0:
        raise SparsifyError(f"--checkpoint-every must be >= 0; got {args.checkpoint_every}.")
    out = output_dir(args.out, recipe)
    with distributed(recipe.device) as dist:
        metrics = run_one(
            recipe, load_data(recipe), out, args.quiet, dist, args.resume, args.checkpoint_every
        )
    if not dist.is_main:
        return 0
    for row in metrics.get("stages", []):
        print(
            f"  stage {row['name']} ({row['kind']}): test error {row['test_error']:.4f}, "
            f"{row['nonzero_weights']:,} of {row['weight_numel']:,} weights nonzero, "
            f"{row['seconds']:.1f} s"
        )
    val = f", val error {metrics['val_error']:.4f}" if "val_error" in metrics else ""
    print(
        f"{recipe.name}: train error {metrics['train_error']:.4f}{val}, test error {metrics['test_error']:.4f}, "
        f"exact zeros {100 * metrics['zero_fraction']:.2f}% of {metrics['numel']:,} parameters, "
        f"{metrics['seconds']:.1f} s -> {out}"
    )
    return 0
