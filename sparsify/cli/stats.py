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


def run(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    params = {
        k: v for k, v in ckpt.state_dict.items() if k in dict(ckpt.build_model().named_parameters())
    }
    stats = state_dict_stats(params)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
