"""``sparsify shrink CHECKPOINT --out DIR``: remove dead neurons/channels, save the smaller model."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import SHRUNK, load_checkpoint, save_checkpoint
from sparsify.structure.shrink import build_checkpoint_model, layer_widths, measure_latency, shrink_


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shrink",
        help="physically remove dead output neurons/channels (same outputs, smaller dense model)",
    )
    p.add_argument("checkpoint", help="run directory or its model.safetensors")
    p.add_argument("--out", required=True, help="directory for the shrunk checkpoint")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=(28, 28),
        metavar=("H", "W"),
        help="spatial size of one input image (default: 28 28, MNIST)",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="batch used for the latency timing (default 64)"
    )
    p.add_argument(
        "--repeats", type=int, default=50, help="timed rounds per model (median; default 50)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for the timing (default 1, reproducible)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.repeats < 1 or args.threads < 1:
        raise SparsifyError("--batch-size, --repeats and --threads must be >= 1.")
    ckpt = load_checkpoint(args.checkpoint)
    model = build_checkpoint_model(ckpt)
    before = copy.deepcopy(model)
    torch.manual_seed(0)  # the example input only has to exercise every path
    x = torch.randn(args.batch_size, ckpt.recipe.model.in_channels, *args.input_size)
    report = shrink_(model, x)
    torch.set_num_threads(args.threads)
    latency = measure_latency({"before": before, "after": model}, x, repeats=args.repeats)
    result = {
        **report.to_dict(),
        "latency_ms": latency,
        "latency_setup": {
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "source": str(ckpt.path),
    }
    metrics_path = ckpt.path.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    save_checkpoint(
        Path(args.out),
        model,
        ckpt.recipe,
        {**metrics, "shrink": result},
        # marks the checkpoint as shrunk: load_checkpoint(...).build_model() (and so
        # `sparsify stats`/`export`) resize the recipe's model to these widths
        extra_metadata={SHRUNK: json.dumps(layer_widths(model))},
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report.table())
        print(
            f"dense latency (batch {args.batch_size}, {torch.get_num_threads()} thread(s), median "
            f"of {args.repeats}): {latency['before']:.3f} ms -> {latency['after']:.3f} ms "
            f"({latency['before'] / latency['after']:.2f}x)"
        )
        print(f"wrote {Path(args.out)}")
    return 0
