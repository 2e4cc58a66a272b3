"""``sparsify footprint CHECKPOINT --out DIR``: bytes per layer in each form vs the entropy bound."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsify.cli.paths import check_out_dir
from sparsify.cli.shapes import add_input_shape


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "footprint", help="per-layer bytes (dense, checkpoint, scipy, compact, gzip) vs the bound"
    )
    p.add_argument("checkpoint", help="run directory or its model.safetensors")
    p.add_argument("--out", required=True, help="directory for footprint.json and footprint.md")
    p.add_argument(
        "--sparse-format",
        choices=("csr", "csc", "coo", "bsr"),
        default="csr",
        help="scipy layout measured in the scipy column (default csr)",
    )
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX and onnxruntime columns")
    add_input_shape(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparsify.footprint import footprint, onnx_columns, to_markdown, write_footprint
    from sparsify.pipeline.checkpoint import load_checkpoint

    check_out_dir(Path(args.out))
    ckpt = load_checkpoint(args.checkpoint)
    extra = None
    if not args.no_onnx:  # the ONNX columns trace the model: its input shape is needed
        example = ckpt.example_input(input_shape=args.input_shape)
        extra = onnx_columns(ckpt.build_model(), example)
    result = footprint(
        ckpt.state_dict,
        sparse_format=args.sparse_format,
        extra_columns=extra,
        checkpoint_file=ckpt.path,
        provenance=ckpt.provenance(),
    )
    json_path, md_path = write_footprint(result, args.out, title=f"Footprint of {args.checkpoint}")
    print(to_markdown(result, f"Footprint of {args.checkpoint}"))
    print(f"wrote {json_path} and {md_path}")
    return 0
