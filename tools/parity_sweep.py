"""Parity sweep: export -> onnxruntime (dense, compact) / torch-free runtime / ReferenceEvaluator.

    PYTHONPATH=. .venv/bin/python tools/parity_sweep.py                 # one model per family
    PYTHONPATH=. .venv/bin/python tools/parity_sweep.py --all           # every torchvision classifier
    PYTHONPATH=. .venv/bin/python tools/parity_sweep.py --models resnet18 encoder --reference

Per model (random init, seed 0): zero 90% of each Conv/Linear weight (and of each
MultiheadAttention ``in_proj_weight``), rescale the surviving weights by 1/sqrt(0.1) to keep the
activation scale, re-initialise a zero-initialised weight (ViT's head) with N(0, 0.02), give
every BatchNorm real running statistics (one BatchNorm at a time in train mode on the
evaluation inputs, the others in eval mode), export with a batch-2 example (:func:`sparsify.export.onnx.export_onnx`), then on random inputs at batch 2 and 1:

- ``ref64``: the same module in float64; ``noise``: max |torch float32 - ref64|, fp32's own
  error on this model;
- max |y - ref64| for onnxruntime on the dense and the compact file, the torch-free runtime
  (:func:`sparsify.runtime.load_onnx_model`) on the compact file and, with ``--reference``,
  onnx's ReferenceEvaluator on the dense file (slow);
- pass when every error is <= 4 * noise + 1e-6 * max|ref64| (outputs of a randomly
  initialised, 90%-zeroed net can be tiny, so the floor is relative) and onnxruntime's compact output is
  bit-identical to its dense output; otherwise the first failing check, in one line;
- sizes: dense ONNX, gzip -9 of it, compact ONNX; the runtime's weight bytes (CSR + dense)
  against the dense float32 parameters; times of each stage.

Writes ``parity.json`` and ``parity.md`` (with the command) into ``--out``.
"""

from __future__ import annotations

import argparse
import gzip
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from sparsify.export import onnx as sonnx
from sparsify.fileio import atomic_write_json, atomic_write_text
from sparsify.probe import run_json_child
from sparsify.runtime import load_onnx_model

FAMILIES = [
    "resnet18",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "shufflenet_v2_x0_5",
    "squeezenet1_0",
    "regnet_y_400mf",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "encoder",
]
# models whose architecture needs a larger input than --size
MIN_SIZE = {"inception_v3": 96, "maxvit_t": 224}
_RUNTIME_RSS = r"""
import json, sys
from sparsify.probe import vm_hwm, vm_rss
from sparsify.runtime import load_onnx_model
before = vm_rss()
model = load_onnx_model(sys.argv[1])
after = vm_rss()
print(json.dumps({"rss_before": before, "rss_after": after, "peak": vm_hwm()}))
"""
TOLERANCE = "max|y - ref64| <= 4 * max|torch32 - ref64| + 1e-6 * max|ref64|"


class Encoder(nn.Module):
    """nn.TransformerEncoder (2 layers, d_model 64, 4 heads, batch_first) + mean pool + head."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 16, 64) -> (B, 10)
        return self.head(self.encoder(x).mean(dim=1))


def build(name: str, size: int) -> tuple[nn.Module, tuple[int, ...]]:
    """(model, input shape without batch) for a torchvision classifier name or ``encoder``."""
    if name == "encoder":
        return Encoder(), (16, 64)
    size = max(size, MIN_SIZE.get(name, 0))
    kwargs: dict[str, Any] = {"image_size": size} if name.startswith("vit_") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    return model, (3, size, size)


def sparsify_weights_(
    model: nn.Module, shape: tuple[int, ...], data: torch.Tensor, fraction: float = 0.9
) -> None:
    """Zero ``fraction`` of each Conv/Linear/in_proj weight; calibrate BatchNorm statistics on
    ``data`` (the evaluation inputs), as training fits them to its data."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            weights = [m.weight] if isinstance(m, (nn.Conv2d, nn.Linear)) else []
            if isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
                weights.append(m.in_proj_weight)
            for w in weights:
                if not w.any():  # zero-initialised (ViT's head): the output would be constant
                    w.normal_(0.0, 0.02, generator=g)
                w[torch.rand(w.shape, generator=g) < fraction] = 0.0
                w /= (1.0 - fraction) ** 0.5  # keep the activation scale (as dropout does)
        model.eval()
        # one BatchNorm at a time, in definition order, the others in eval mode: its statistics
        # are those of what it sees at inference. A random net with 90% zeros reacts so
        # differently to different inputs that statistics from other inputs (or from a
        # train-mode pass of all BatchNorms at once) leave some nets dead on the test inputs.
        for bn in [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]:
            bn.reset_running_stats()
            bn.momentum = None  # the plain average of this one pass
            bn.train()
            model(data)
            bn.eval()
    model.eval()


def _err(y: np.ndarray, ref: np.ndarray) -> float:
    if y.shape != ref.shape:
        raise ValueError(f"output shape {y.shape} != torch's {ref.shape}")
    return float(np.abs(y.astype(np.float64) - ref).max())


def resident_memory(path: Path) -> dict[str, int]:
    """Resident bytes the torch-free runtime and onnxruntime add when loading ``path``.

    Each in a fresh process (:func:`sparsify.probe.run_json_child`): VmRSS after the
    imports and after loading the model; onnxruntime via
    :func:`sparsify.export.onnx.ort_resident_memory`.
    """
    ours = run_json_child(["-c", _RUNTIME_RSS, str(path)], timeout=600)
    theirs = sonnx.ort_resident_memory(path, timeout=600)
    return {
        "runtime_load_rss_bytes": int(ours["rss_after"]) - int(ours["rss_before"]),
        "runtime_peak_rss_bytes": int(ours["peak"]),
        "ort_session_rss_bytes": int(theirs["session_bytes"]),
    }


def sweep_one(
    name: str, size: int, reference: bool, work: Path, rss: bool = False
) -> dict[str, Any]:
    """Every measurement for one model (see the module docstring); never raises."""
    row: dict[str, Any] = {"model": name, "status": "fail", "reason": ""}
    times: dict[str, float] = {}
    row["seconds"] = times
    stage = "build"
    try:
        torch.manual_seed(0)
        model, shape = build(name, size)
        row["input"] = list(shape)
        row["params"] = int(sum(p.numel() for p in model.parameters()))
        rng = np.random.default_rng(0)
        inputs = {b: rng.standard_normal((b, *shape)).astype(np.float32) for b in (2, 1)}
        sparsify_weights_(model, shape, torch.from_numpy(np.concatenate(list(inputs.values()))))
        stage = "export"
        t = time.perf_counter()
        out = work / name
        sonnx.export_onnx(model, out, example_input=torch.randn(2, *shape))
        times["export"] = time.perf_counter() - t
        dense_bytes = (out / sonnx.DENSE_FILE).read_bytes()
        row["dense_onnx_bytes"] = len(dense_bytes)
        row["dense_gzip9_bytes"] = len(gzip.compress(dense_bytes, compresslevel=9))
        row["compact_onnx_bytes"] = (out / sonnx.COMPACT_FILE).stat().st_size
        del dense_bytes
        stage = "onnxruntime"
        t = time.perf_counter()
        ort_dense = sonnx.ort_session(out / sonnx.DENSE_FILE)
        ort_compact = sonnx.ort_session(out / sonnx.COMPACT_FILE)
        times["ort_sessions"] = time.perf_counter() - t
        stage = "runtime load"
        t = time.perf_counter()
        ours = load_onnx_model(out / sonnx.COMPACT_FILE)
        times["runtime_load"] = time.perf_counter() - t
        mem = ours.memory
        row["runtime_sparse_bytes"] = mem.sparse_bytes
        row["runtime_weight_bytes"] = mem.total_bytes
        row["dense_param_bytes"] = 4 * row["params"]
        row["runtime_densified"] = list(mem.densified)
        if rss:
            stage = "resident memory"
            row.update(resident_memory(out / sonnx.COMPACT_FILE))
        evaluator = None
        if reference:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(str(out / sonnx.DENSE_FILE))
        errors: dict[str, float] = {}
        failures: list[str] = []
        for batch, x in inputs.items():
            stage = f"torch (batch {batch})"
            with torch.no_grad():
                ref = model.double()(torch.from_numpy(x).double()).numpy()
                t32 = model.float()(torch.from_numpy(x)).numpy()
            noise = _err(t32, ref)
            if batch > 1 and np.array_equal(ref[0], ref[1]):
                failures.append(
                    "vacuous: the output does not depend on the input (the zeroed network is dead)"
                )
            scale = float(np.abs(ref).max())
            bound = 4 * noise + 1e-6 * scale
            got: dict[str, float] = {"noise": noise, "max_abs_ref": scale}
            stage = f"onnxruntime (batch {batch})"
            y_dense = ort_dense.run(None, {sonnx.INPUT_NAME: x})[0]
            y_compact = ort_compact.run(None, {sonnx.INPUT_NAME: x})[0]
            got["ort_dense"], got["ort_compact"] = _err(y_dense, ref), _err(y_compact, ref)
            if not np.array_equal(y_dense, y_compact):
                failures.append(f"batch {batch}: onnxruntime compact != dense bit for bit")
            stage = f"runtime (batch {batch})"
            t = time.perf_counter()
            got["runtime"] = _err(ours(x), ref)
            times[f"runtime_run_b{batch}"] = time.perf_counter() - t
            if evaluator is not None:
                stage = f"ReferenceEvaluator (batch {batch})"
                t = time.perf_counter()
                got["reference"] = _err(evaluator.run(None, {sonnx.INPUT_NAME: x})[0], ref)
                times[f"reference_run_b{batch}"] = time.perf_counter() - t
            for key in ("ort_dense", "ort_compact", "runtime", "reference"):
                if key in got and not got[key] <= bound:
                    failures.append(
                        f"batch {batch}: {key} error {got[key]:.2e} > 4 * fp32 noise "
                        f"{noise:.2e} + 1e-6 * {scale:.1e}"
                    )
            errors[f"b{batch}"] = got
        row["errors"] = errors
        row["status"] = "pass" if not failures else "fail"
        row["reason"] = "; ".join(failures)
    except Exception as exc:  # a sweep records every failure and goes on
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        row["reason"] = f"{stage}: {type(exc).__name__}: {first}"
        row["traceback"] = traceback.format_exc(limit=8)
    return row


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.2f}"


def markdown(rows: list[dict[str, Any]], command: str, total_s: float) -> str:
    """The results as a Markdown table, with the command and the tolerance."""
    lines = [
        "# Parity sweep: export -> onnxruntime / torch-free runtime",
        "",
        f"Command: `{command}` ({total_s:.0f} s on this machine).",
        "",
        "Random init (seed 0), 90% of each Conv/Linear/in_proj weight zeroed, BatchNorm "
        "statistics from random data; exported from a batch-2 example, checked at batch 2 "
        f"and 1. Pass: {TOLERANCE} for every runtime, and onnxruntime's compact output "
        "bit-identical to its dense output. Errors are the worst over both batches; "
        "'noise' is torch float32 vs float64.",
        "",
        "| model | input | params | max abs ref | noise | ort dense | ort compact | runtime | reference "
        "| dense MB | gzip -9 MB | compact MB | runtime weights MB (CSR) | dense params MB "
        "| load RSS MB: runtime / ort | runtime load s | run s (b2) | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        errs = r.get("errors", {})

        def worst(key: str, errs: dict[str, Any] = errs) -> str:
            vals = [e[key] for e in errs.values() if key in e]
            return f"{max(vals):.1e}" if vals else ""

        t = r.get("seconds", {})
        status = "pass" if r["status"] == "pass" else f"FAIL: {r['reason']}"
        weights = (
            f"{_mb(r.get('runtime_weight_bytes'))} ({_mb(r.get('runtime_sparse_bytes'))})"
            if "runtime_weight_bytes" in r
            else ""
        )
        rss = (
            f"{_mb(r['runtime_load_rss_bytes'])} / {_mb(r['ort_session_rss_bytes'])}"
            if "runtime_load_rss_bytes" in r
            else ""
        )
        lines.append(
            f"| {r['model']} | {'x'.join(map(str, r.get('input', [])))} "
            f"| {r.get('params', 0) / 1e6:.2f}M | {worst('max_abs_ref')} | {worst('noise')} | {worst('ort_dense')} "
            f"| {worst('ort_compact')} | {worst('runtime')} | {worst('reference')} "
            f"| {_mb(r.get('dense_onnx_bytes'))} | {_mb(r.get('dense_gzip9_bytes'))} "
            f"| {_mb(r.get('compact_onnx_bytes'))} | {weights} "
            f"| {_mb(r.get('dense_param_bytes'))} "
            f"| {rss} | {t.get('runtime_load', 0):.2f} | {t.get('runtime_run_b2', 0):.2f} | {status} |"
        )
    passed = sum(r["status"] == "pass" for r in rows)
    lines += ["", f"{passed}/{len(rows)} pass.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; exit status 1 if any model fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=FAMILIES, help="torchvision names or 'encoder'"
    )
    parser.add_argument("--all", action="store_true", help="every torchvision classifier + encoder")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument(
        "--reference", action="store_true", help="also onnx ReferenceEvaluator (slow)"
    )
    parser.add_argument(
        "--rss", action="store_true", help="also resident memory of each runtime (fresh processes)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/parity"))
    args = parser.parse_args(argv)
    names = args.models
    if args.all:
        names = [*torchvision.models.list_models(module=torchvision.models), "encoder"]
    command = "PYTHONPATH=. .venv/bin/python tools/parity_sweep.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv or sys.argv[1:])
        else ""
    )
    torch.set_num_threads(1)
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parity.") as tmp:
        for name in names:
            t = time.perf_counter()
            row = sweep_one(name, args.size, args.reference, Path(tmp), args.rss)
            row["seconds"]["total"] = time.perf_counter() - t
            rows.append(row)
            print(
                f"{name}: {row['status']} {row['reason']} ({row['seconds']['total']:.0f} s)",
                flush=True,
            )
            for f in (Path(tmp) / name).glob("*"):
                f.unlink()
    total = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        args.out / "parity.json",
        {"command": command, "tolerance": TOLERANCE, "seconds": total, "models": rows},
    )
    atomic_write_text(args.out / "parity.md", markdown(rows, command, total))
    return 0 if all(r["status"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
