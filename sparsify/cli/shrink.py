"""``sparsify shrink CHECKPOINT --out DIR``: remove dead neurons/channels, save the smaller model."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from sparsify.cli.paths import check_out_dir
from sparsify.cli.shapes import add_input_shape
from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import SHRUNK, Checkpoint, load_checkpoint, save_checkpoint
from sparsify.structure.shrink import layer_widths, measure_latency, shrink_


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shrink",
        help="physically remove dead output neurons/channels (same outputs, smaller dense model)",
    )
    p.add_argument("checkpoint", help="run directory or its model.safetensors")
    p.add_argument("--out", required=True, help="directory for the shrunk checkpoint")
    add_input_shape(p)
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="older spelling: the spatial size only, channels from the checkpoint",
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
    if args.out:
        check_out_dir(Path(args.out))
    ckpt = load_checkpoint(args.checkpoint)
    shape = _input_shape(ckpt, args)
    # resize=True: a state_dict shrunk by hand (no ``shrunk`` mark) still loads
    model = ckpt.build_model(resize=True)
    before = copy.deepcopy(model)
    torch.manual_seed(0)  # the example input only has to exercise every path
    x = torch.randn(args.batch_size, *shape)
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
        # `sparsify stats`/`export`/`bench`) resize the registry's model to these widths
        extra_metadata={SHRUNK: json.dumps(layer_widths(model))},
        input_shape=shape,
        model_name=ckpt.model_name,
        model_args=ckpt.model_args,
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


def _input_shape(ckpt: Checkpoint, args: argparse.Namespace) -> tuple[int, ...]:
    """``--input-shape``, else ``--input-size H W`` with the recorded channels, else the
    checkpoint's input shape."""
    if args.input_shape is not None and args.input_size is not None:
        raise SparsifyError("give --input-shape C H W or --input-size H W, not both.")
    if args.input_size is not None:
        recorded = ckpt.input_shape
        if recorded is not None:
            channels = recorded[0]
        elif ckpt.recipe is not None:
            channels = ckpt.recipe.model.in_channels
        else:
            raise SparsifyError(
                f"{ckpt.path}: the checkpoint records no input shape; pass --input-shape C H W."
            )
        return ckpt.resolve_input_shape([channels, *args.input_size])
    return ckpt.resolve_input_shape(args.input_shape)
