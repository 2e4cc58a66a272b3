"""Footprint tables for issue 3's targets, written to results/footprint/ (JSON + Markdown).

    .venv/bin/python tools/footprint_table.py --data-dir /work/shared/data/mnist
    .venv/bin/python tools/footprint_table.py --checkpoint runs/quickstart   # skip training

Models: (a) the lecture convnet trained with L1 (recipes/quickstart.yaml, trained into
runs/footprint_quickstart unless --checkpoint is given), (b) torchvision resnet18 (1x28x28 input, 10 classes) with
90% and 99% of every Linear/Conv weight zeroed at random (seed 0).
Targets checked (at 90% and 99% zeros): compact encoding and the whole compact bundle
directory (arrays.bin + manifest.json, codec='none') <= 1.15x the entropy bound, >= 7.5x
smaller than dense fp32 (at 90%), smaller than gzip of the dense checkpoint; also whether
the default bundle (codec='auto', the "zlib bundle" column) beats gzip.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.footprint import footprint, write_footprint
from sparsify.pipeline.checkpoint import load_checkpoint
from sparsify.pipeline.zoo import build_model
from sparsify.tables import md_table

ROOT = Path(__file__).resolve().parents[1]


def random_zero_resnet18(fraction: float, seed: int = 0) -> torch.nn.Module:
    """resnet18 with ``fraction`` of each rank >= 2 weight set to +0.0 at random (eval mode).

    Measured as a module, not a saved checkpoint: ``save_checkpoint`` currently fails on
    BatchNorm's 0-d ``num_batches_tracked`` (tensors_digest views it as bytes), so the
    checkpoint column is the same tensors serialised by safetensors without the recipe header.
    """
    torch.manual_seed(seed)
    model = build_model("torchvision:resnet18").eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p[torch.rand(p.shape, generator=g) < fraction] = 0.0
    return model


def train_quickstart(out: Path, data_dir: str | None) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "sparsify",
        "train",
        str(ROOT / "recipes" / "quickstart.yaml"),
        "--out",
        str(out),
        "-q",
    ]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    subprocess.run(cmd, check=True)
    return out


def targets(result: dict[str, Any], zeros: float | None) -> dict[str, Any]:
    """The issue's targets on the prunable weights and on the whole model."""
    checks: dict[str, Any] = {}
    for scope in ("prunable", "total"):
        r = result[scope]
        checks[scope] = {
            "compact_over_bound": r["compact_ratio"],
            "compact_bundle_over_bound": r["compact_bundle_ratio"],
            "dense_over_compact": r["dense_bytes"] / r["compact_bytes"],
            "compact_within_1.15x_bound": r["compact_ratio"] <= 1.15,
            "compact_bundle_within_1.15x_bound": r["compact_bundle_ratio"] <= 1.15,
            "compact_smaller_than_gzip": r["compact_bytes"] < r["gzip_bytes"],
            "compact_bundle_smaller_than_gzip": r["compact_bundle_bytes"] < r["gzip_bytes"],
            "compact_zlib_bundle_over_bound": r["compact_zlib_bundle_ratio"],
            "compact_zlib_bundle_smaller_than_gzip": r["compact_zlib_bundle_bytes"]
            < r["gzip_bytes"],
        }
        if zeros is not None and zeros >= 0.9 - 1e-9 and zeros < 0.95:
            checks[scope]["dense_at_least_7.5x_compact"] = (
                r["dense_bytes"] / r["compact_bytes"] >= 7.5
            )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", help="the L1-trained lecture convnet (default: train quickstart)"
    )
    parser.add_argument("--data-dir", help="MNIST folder for training the quickstart recipe")
    parser.add_argument("--out", default=str(ROOT / "results" / "footprint"))
    args = parser.parse_args()
    out = Path(args.out)
    summary: dict[str, Any] = {}
    lines = [
        "# Footprint summary",
        "",
        "Targets of issue 3; `prunable` = Linear/Conv weights, `total` = whole model.",
        "",
    ]
    head = ["model", "scope", "zeros", "compact/bound", "compact bundle/bound", "auto bundle/bound"]
    head += ["dense/compact", "dense fp32 bytes", "gzip bytes", "compact bytes"]
    head += ["compact bundle bytes", "auto bundle bytes", "bound bytes"]
    body: list[list[str]] = []
    ckpt = (
        Path(args.checkpoint)
        if args.checkpoint
        else train_quickstart(ROOT / "runs" / "footprint_quickstart", args.data_dir)
    )
    jobs = [("lecture_l1", ckpt, None, "lecture convnet, quickstart recipe (L1 prox)")]
    for fraction in (0.9, 0.99):
        stem = f"resnet18_{round(fraction * 100)}"
        jobs.append(
            (
                stem,
                random_zero_resnet18(fraction),
                fraction,
                f"resnet18, {fraction:.0%} random zeros",
            )
        )
    for stem, source, fraction, title in jobs:
        if isinstance(source, Path):  # a trained checkpoint: measure its saved tensors
            saved = load_checkpoint(source)
            result = footprint(saved.state_dict, checkpoint_file=saved.path)
        else:
            result = footprint(source)
        write_footprint(result, out, stem=stem, title=f"Footprint: {title}")
        zeros = 1.0 - result["prunable"]["density"]
        summary[stem] = {
            "title": title,
            "prunable_zero_fraction": zeros,
            "targets": targets(result, fraction),
        }
        for scope in ("prunable", "total"):
            r = result[scope]
            body.append(
                [
                    title,
                    scope,
                    f"{1 - r['density']:.4f}",
                    f"{r['compact_ratio']:.3f}",
                    f"{r['compact_bundle_ratio']:.3f}",
                    f"{r['compact_zlib_bundle_ratio']:.3f}",
                    f"{r['dense_bytes'] / r['compact_bytes']:.2f}",
                    f"{r['dense_bytes']:,}",
                    f"{r['gzip_bytes']:,}",
                    f"{r['compact_bytes']:,}",
                    f"{r['compact_bundle_bytes']:,}",
                    f"{r['compact_zlib_bundle_bytes']:,}",
                    f"{r['bound_bytes']:,.0f}",
                ]
            )
    lines += [
        md_table(head, body),
        "",
        "compact = the encoding's payload (all-zero vectors cost 0, other vectors the smaller "
        "of encoded and dense); compact bundle = the whole scipy bundle directory with "
        "store='compact', codec='none' (arrays.bin + minified manifest.json, format "
        "version 2); auto bundle = the same with codec='auto', the default (each array "
        "deflated where that is smaller; JSON key compact_zlib_bundle). gzip = gzip -9 of "
        "the dense safetensors bytes. Pass/fail of each target: summary.json.",
    ]
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
