"""``sparsify export CHECKPOINT --format scipy|onnx|all --out DIR [--dynamic DIMS]``: files
that shrink and load back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sparsify.cli.shapes import add_input_shape
from sparsify.errors import SparsifyError

FORMATS = ("scipy", "onnx", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint as a scipy bundle and/or ONNX")
    p.add_argument("checkpoint", help="run directory or its model.safetensors")
    p.add_argument("--format", choices=FORMATS, default="scipy", help="scipy bundle, ONNX, or both")
    p.add_argument(
        "--out", required=True, help="output directory (with --format all: DIR/scipy and DIR/onnx)"
    )
    p.add_argument(
        "--sparse-format",
        choices=("csr", "csc", "coo", "bsr"),
        default="csr",
        help="scipy layout of each prunable weight (default csr)",
    )
    p.add_argument(
        "--blocksize", type=int, nargs=2, metavar=("R", "C"), help="BSR block shape (default 1 1)"
    )
    p.add_argument(
        "--store",
        choices=("both", "scipy", "compact"),
        default="both",
        help="scipy arrays, the compact encoding, or both (default)",
    )
    p.add_argument(
        "--codec",
        choices=("auto", "none", "zlib"),
        default="auto",
        help="auto (default): deflate an array's byte planes where that makes it smaller; "
        "zlib: always; none: raw (lossless in every case)",
    )
    p.add_argument(
        "--no-graph",
        action="store_true",
        help="weights only: skip capturing the forward (no model is built: works for a "
        "checkpoint that names no registered model)",
    )
    p.add_argument(
        "--dynamic",
        metavar="DIMS",
        help="ONNX: more dynamic dimensions besides the batch (always dynamic), comma-separated "
        "names or axis numbers: height,width for (B, C, H, W), sequence for (B, S, E), or e.g. "
        "2,3; refused in one line where the model cannot take another size",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="ONNX: run the compact file in onnxruntime on a random batch of 2 and print its "
        "error against a float64 run of the model, next to fp32's own noise (exit 2 if over "
        "4x the noise)",
    )
    add_input_shape(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparsify.export.scipy_bundle import export_scipy_bundle
    from sparsify.pipeline.checkpoint import load_checkpoint

    if args.dynamic and args.format == "scipy":
        raise SparsifyError("--dynamic applies to ONNX files; add --format onnx or --format all.")
    ckpt = load_checkpoint(args.checkpoint)
    provenance: dict[str, Any] = ckpt.provenance()
    if args.input_shape is not None:
        provenance["input_shape"] = list(ckpt.resolve_input_shape(args.input_shape))
    out = Path(args.out)
    needs_model = args.format != "scipy" or not args.no_graph
    if args.format != "scipy":
        from sparsify.export.onnx import dynamic_axes

        example = ckpt.example_input(input_shape=args.input_shape)
        dims = dynamic_axes(tuple(example.shape), args.dynamic)  # a bad name fails before work
    model = ckpt.build_model() if needs_model else None
    if args.format in ("scipy", "all"):
        target = out / "scipy" if args.format == "all" else out
        manifest = export_scipy_bundle(
            model if model is not None else ckpt.state_dict,
            target,
            provenance=provenance,
            sparse_format=args.sparse_format,
            blocksize=tuple(args.blocksize) if args.blocksize else None,
            store=args.store,
            codec=args.codec,
            graph=not args.no_graph,
        )
        sparse = [t for t in manifest["tensors"] if t["storage"] == "sparse"]
        for t in sparse:
            scheme = t["compact"]["scheme"] if "compact" in t else "-"
            print(f"  {t['name']:<40} density {t['density']:.4f}  compact {scheme}")
        total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        print(
            f"wrote {target}: {len(manifest['tensors'])} tensors, {len(sparse)} sparse, "
            f"{total:,} bytes"
        )
    if args.format in ("onnx", "all"):
        from sparsify.export.onnx import export_onnx

        target = out / "onnx" if args.format == "all" else out
        assert model is not None  # built above for every ONNX format
        export_onnx(
            model,
            target,
            example,
            provenance=provenance,
            dynamic=args.dynamic,
            debug=getattr(args, "debug", False),
        )
        print(
            f"wrote {target} (input shape {list(example.shape[1:])}, dynamic: "
            f"{', '.join(dims.values())})"
        )
        if args.check:
            check_compact(model, target, example)
    return 0


def check_compact(model: Any, target: Path, example: Any) -> None:
    """Print the compact ONNX's error in onnxruntime against a float64 run of ``model`` on a
    random batch of 2 (:func:`sparsify.export.onnx.fidelity`); refuse past the bound."""
    import torch

    from sparsify.export.onnx import COMPACT_FILE, INPUT_NAME, fidelity, ort_session

    x = torch.randn((2, *example.shape[1:]), generator=torch.Generator().manual_seed(0))
    session = ort_session(target / COMPACT_FILE, threads=1)
    result = fidelity(model, x, session.run(None, {INPUT_NAME: x.numpy()})[0])
    print(f"check: onnxruntime, {COMPACT_FILE}, batch 2: {result}")
    if not result.ok:
        raise SparsifyError(
            f"{COMPACT_FILE} differs from a float64 run by more than fp32 noise allows "
            f"({result.error:.2e} > {result.bound:.2e}); rerun with --debug and report it."
        )
