"""``sparsify stats CHECKPOINT``: exact zeros per tensor, dead units, totals."""

from __future__ import annotations

import argparse
import json

from sparsify.pipeline.checkpoint import load_checkpoint
from sparsify.stats import format_stats, state_dict_stats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="exact-zero counts per layer and overall for a checkpoint")
    p.add_argument("checkpoint", help="run directory or its model.safetensors")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


# buffers a checkpoint of an unnamed model may hold: not weights, so not counted
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def run(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.model_name is not None:  # the parameters are what the model says they are
        names = dict(ckpt.build_model().named_parameters())
    else:  # a user's module saved without a name: every tensor but BatchNorm's buffers
        names = {k: None for k in ckpt.state_dict if k.rsplit(".", 1)[-1] not in _BUFFERS}
    params = {k: v for k, v in ckpt.state_dict.items() if k in names}
    stats = state_dict_stats(params)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
