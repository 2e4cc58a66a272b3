"""Parity sweep: export -> onnxruntime / torch-free runtime / converter / scipy bundle vs float64.

    PYTHONPATH=. .venv/bin/python tools/parity_sweep.py                  # one model per family
    PYTHONPATH=. .venv/bin/python tools/parity_sweep.py --all --skip-larger-than 200M
    PYTHONPATH=. .venv/bin/python tools/parity_sweep.py --models squeezenet1_0 encoder --stem sample

Models: torchvision classifiers by name, ``encoder`` (nn.TransformerEncoder) and
``attention`` (nn.MultiheadAttention); ``--all`` is every name of
``torchvision.models.list_models(module=torchvision.models)`` plus those two.

Each model runs in its own process (this script with ``--child``) under a guard: a wall-clock
``--timeout`` and a ``--max-rss`` on the resident memory of its whole process group, polled;
a model that crashes, times out or outgrows the memory is listed with a one-line reason and the
sweep goes on. ``--skip-larger-than`` lists a model with more parameters as skipped without
building it (parameters are counted on the meta device). Each finished model is appended to
``<stem>.jsonl`` in ``--out`` and ``<stem>.csv`` / ``<stem>.md`` are rewritten from it, so an
interrupted sweep resumes where it stopped (``--fresh`` starts over).

Per model (random init, seed 0): zero 90% of each Conv/Linear weight (and of each
MultiheadAttention ``in_proj_weight``), rescale the surviving weights by 1/sqrt(0.1) to keep the
activation scale, re-initialise a zero-initialised weight (ViT's head) with N(0, 0.02), give
every BatchNorm real running statistics (one BatchNorm at a time in train mode on the
evaluation inputs, the others in eval mode), export with a batch-2 example
(:func:`sparsify.export.onnx.export_onnx`; height/width or sequence dynamic too where this
export_onnx offers it and the model allows), then on random inputs at batch 2, batch 1 and
another input size (``--size`` * 1.5, or a 1.5x longer sequence) where the model allows:

- ``ref64``: the same module in float64; ``noise``: max |torch float32 - ref64|, fp32's own
  error on this model and input;
- max |y - ref64| for onnxruntime on the dense and the compact file, the torch-free runtime
  (:func:`sparsify.runtime.load_onnx_model`, onnx's ReferenceEvaluator with sparse kernels) on
  the compact file, the converter (:func:`sparsify.accel.sparsify_inference_`, cost model, on
  a copy of the model), the scipy bundle's runtime where the bundle graph holds the model and,
  with ``--reference``, onnx's plain ReferenceEvaluator on the dense file (slow);
- pass when every error is <= 4 * noise + 1e-6 * max|ref64| and onnxruntime's compact output is
  bit-identical to its dense output; otherwise the first failing checks, in one line;
- sizes: dense ONNX, gzip -9 of it, compact ONNX, the scipy bundle directory (or ``n/a:`` and
  the bundle exporter's reason); the runtime's weight bytes; times of each stage.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import inspect
import io
import json
import os
import shlex
import signal
import subprocess
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

import sparsify.runtime
from sparsify.accel import sparsify_inference_
from sparsify.errors import SparsifyError
from sparsify.export import onnx as sonnx
from sparsify.export.scipy_bundle import export_scipy_bundle
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
    "attention",
]
EXTRA = ["encoder", "attention"]  # models built here, not by torchvision
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


class Attention(nn.Module):
    """Linear -> nn.MultiheadAttention (4 heads, batch_first) -> mean pool -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(32, 64)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 16, 32) -> (B, 10)
        h = self.proj(x)
        y, _ = self.attn(h, h, h, need_weights=False)
        return self.head(y.mean(dim=1))


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
    if name == "attention":
        return Attention(), (16, 32)
    size = max(size, MIN_SIZE.get(name, 0))
    kwargs: dict[str, Any] = {}
    if name.startswith("vit_"):  # vit_h_14: the side must be a multiple of the patch
        patch = int(name.rsplit("_", 1)[1])
        size = -(-size // patch) * patch
        kwargs["image_size"] = size
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


def _err(y: np.ndarray, ref: np.ndarray) -> float:
    if y.shape != ref.shape:
        raise ValueError(f"output shape {y.shape} != torch's {ref.shape}")
    return float(np.abs(y.astype(np.float64) - ref).max())


def _line(exc: BaseException) -> str:
    """The exception as one short line: type and the first line of its message."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}"


def other_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The second input size checked: images 1.5x the side (a multiple of 32), sequences 1.5x
    as long."""
    if len(shape) == 2:  # (S, E)
        return (shape[0] * 3 // 2, shape[1])
    side = max(shape[1] + 32, (shape[1] * 3 // 2 + 31) // 32 * 32)
    return (shape[0], side, side)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export(model: nn.Module, out: Path, example: torch.Tensor) -> tuple[bool, str]:
    """Export with the spatial/sequence dims dynamic where this ``export_onnx`` offers it and
    the model allows; ``(dynamic, why not)``."""
    if "dynamic" not in inspect.signature(sonnx.export_onnx).parameters:
        sonnx.export_onnx(model, out, example_input=example)
        return False, "n/a: this export_onnx makes only the batch dynamic"
    dims = ("sequence",) if example.dim() == 3 else ("height", "width")
    try:
        sonnx.export_onnx(model, out, example_input=example, dynamic=dims)
        return True, ""
    except Exception as exc:  # the model cannot take another size: export it fixed
        sonnx.export_onnx(model, out, example_input=example)
        return False, f"n/a: {_line(exc)}"


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
        cases = {b: rng.standard_normal((b, *shape)).astype(np.float32) for b in (2, 1)}
        sparsify_weights_(model, shape, torch.from_numpy(np.concatenate(list(cases.values()))))
        inputs: dict[str, np.ndarray] = {f"b{b}": x for b, x in cases.items()}
        other = other_shape(name, shape)
        x_other = rng.standard_normal((2, *other)).astype(np.float32)
        stage = "torch at another size"
        try:
            with torch.no_grad():
                model(torch.from_numpy(x_other))
            inputs["other"] = x_other
            row["other_input"] = list(other)
        except Exception as exc:  # ViT's fixed image_size, ...
            row["other_input"] = f"n/a: torch: {_line(exc)}"
        stage = "export"
        t = time.perf_counter()
        out = work / name
        dynamic, why_fixed = export(model, out, torch.randn(2, *shape))
        times["export"] = time.perf_counter() - t
        if not dynamic and "other" in inputs:  # torch, the converter (and bundle) still run it
            row["other_input"] = why_fixed
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
        stage = "scipy bundle"
        t = time.perf_counter()
        bundle = None
        try:
            export_scipy_bundle(model, out / "bundle")
            row["bundle_bytes"] = _dir_bytes(out / "bundle")
            bundle = sparsify.runtime.load(out / "bundle")
        except SparsifyError as exc:  # the bundle graph cannot hold this model
            row["bundle_bytes"] = f"n/a: {_line(exc)}"
        times["bundle"] = time.perf_counter() - t
        stage = "converter"
        t = time.perf_counter()
        converted = copy.deepcopy(model)
        # the break-even tables alone (no per-call overhead term): a parity check wants the
        # sparse kernels exercised on these small inputs, not the fastest choice
        report = sparsify_inference_(
            converted, torch.from_numpy(cases[2]), mode="cost_model", threads=1, overhead_flops=0
        )
        times["converter"] = time.perf_counter() - t
        row["converter"] = {
            "sparse": len(report.converted),
            "layers": len(report.layers),
            "reverted": sum(d.reason.startswith("reverted") for d in report.layers),
            "check": report.check,
        }
        evaluator = None
        if reference:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(str(out / sonnx.DENSE_FILE))
        errors: dict[str, dict[str, float]] = {}
        failures: list[str] = []
        for case, x in inputs.items():
            stage = f"torch ({case})"
            with torch.no_grad():
                ref = model.double()(torch.from_numpy(x).double()).numpy()
                t32 = model.float()(torch.from_numpy(x)).numpy()
            noise = _err(t32, ref)
            if len(x) > 1 and np.array_equal(ref[0], ref[1]):
                failures.append(
                    "vacuous: the output does not depend on the input (the zeroed network is dead)"
                )
            scale = float(np.abs(ref).max())
            bound = 4 * noise + 1e-6 * scale
            got: dict[str, float] = {"noise": noise, "max_abs_ref": scale}
            runs: dict[str, Any] = {}
            if case != "other" or dynamic:  # a fixed export refuses another size
                runs["ort_dense"] = lambda x=x: ort_dense.run(None, {sonnx.INPUT_NAME: x})[0]
                runs["ort_compact"] = lambda x=x: ort_compact.run(None, {sonnx.INPUT_NAME: x})[0]
                runs["runtime"] = lambda x=x: ours(x)
            with torch.no_grad():
                got["converter"] = _err(converted(torch.from_numpy(x)).numpy(), ref)
            if bundle is not None:
                runs["bundle"] = lambda x=x: bundle(x)
            if evaluator is not None and "runtime" in runs:
                runs["reference"] = lambda x=x: evaluator.run(None, {sonnx.INPUT_NAME: x})[0]
            outputs = {}
            for key, run in runs.items():
                stage = f"{key} ({case})"
                t = time.perf_counter()
                outputs[key] = run()
                times[f"{key}_{case}"] = time.perf_counter() - t
                got[key] = _err(outputs[key], ref)
            if "ort_dense" in outputs and not np.array_equal(
                outputs["ort_dense"], outputs["ort_compact"]
            ):
                failures.append(f"{case}: onnxruntime compact != dense bit for bit")
            for key in ("ort_dense", "ort_compact", "runtime", "converter", "bundle", "reference"):
                if key in got and not got[key] <= bound:
                    failures.append(
                        f"{case}: {key} error {got[key]:.2e} > 4 * fp32 noise "
                        f"{noise:.2e} + 1e-6 * {scale:.1e}"
                    )
            errors[case] = got
        if "other" in errors and isinstance(row.get("other_input"), str):
            checked = ", ".join(k for k in ERROR_KEYS if k in errors["other"])
            row["other_input"] = f"{why_fixed} (checked at {list(other)}: torch, {checked})"
        row["errors"] = errors
        row["status"] = "pass" if not failures else "fail"
        row["reason"] = "; ".join(failures)
    except Exception as exc:  # a sweep records every failure and goes on
        row["reason"] = f"{stage}: {_line(exc)}"
        row["traceback"] = traceback.format_exc(limit=8)
    return row


# --- one process per model, under a time and memory guard ----------------------------------


def count_params(name: str, size: int) -> int | None:
    """Parameters of ``name`` counted on the meta device (nothing allocated), else as
    torchvision's weights metadata states them (RegNetY computes its widths with tensor ops
    that the meta device cannot run); None if neither knows."""
    try:
        with torch.device("meta"):
            model, _ = build(name, size)
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:
        pass
    try:
        weights = torchvision.models.get_model_weights(name)
        return int(next(iter(weights)).meta["num_params"])
    except Exception:
        return None


def _group_rss(sid: int) -> int:
    """Resident bytes of every process in session ``sid`` (the child and what it started)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid:  # field 6 of /proc/PID/stat: the session id
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return total


def run_guarded(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """:func:`sweep_one` for ``name`` in a child process (its own session), killed past
    ``args.timeout`` seconds or ``args.max_rss`` resident bytes; a one-line reason if so."""
    row_file = work / f"{name}.row.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--size", str(args.size)]
    cmd += ["--work", str(work), "--row-file", str(row_file), "--threads", str(args.threads)]
    cmd += ["--reference"] * args.reference + ["--rss"] * args.rss
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    peak = 0
    killed = ""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True
        )
        while proc.poll() is None:
            time.sleep(0.5)
            peak = max(peak, _group_rss(proc.pid))
            elapsed = time.perf_counter() - start
            if elapsed > args.timeout:
                killed = f"timed out after {args.timeout:.0f} s"
            elif peak > args.max_rss:
                killed = f"killed: resident memory {peak / 2**30:.1f} GiB > --max-rss {args.max_rss / 2**30:.1f} GiB"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what it started
                proc.wait()
                break
        err.seek(0)
        stderr = io.TextIOWrapper(err, errors="replace").read()
    if not killed and row_file.is_file():
        row = json.loads(row_file.read_text())
    else:
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        reason = killed or f"crashed: exit code {proc.returncode}: {last[0][:200]}"
        row = {"model": name, "status": "fail", "reason": reason, "seconds": {}}
    row_file.unlink(missing_ok=True)
    row["seconds"]["total"] = time.perf_counter() - start
    row["peak_rss_bytes"] = peak
    return row


# --- results: <stem>.jsonl (appended), <stem>.csv and <stem>.md (rewritten) ----------------

ERROR_KEYS = ("ort_dense", "ort_compact", "runtime", "converter", "bundle", "reference")
CSV_COLUMNS = [
    "model", "status", "reason", "params", "input", "other_input", "noise", "max_abs_ref",
    *(f"{k}_err" for k in ERROR_KEYS), *(f"{k}_x_noise" for k in ERROR_KEYS),
    "dense_onnx_bytes", "dense_gzip9_bytes", "compact_onnx_bytes", "bundle_bytes",
    "runtime_weight_bytes", "converter", "peak_rss_bytes", "seconds",
]  # fmt: skip


def worst(row: dict[str, Any], key: str) -> tuple[float, float] | None:
    """(worst error, worst error / fp32 noise) of one runtime over the checked inputs."""
    errs = [e for e in row.get("errors", {}).values() if key in e]
    if not errs:
        return None
    ratio = max(
        e[key] / e["noise"] if e["noise"] > 0 else (0.0 if e[key] == 0 else np.inf) for e in errs
    )
    return max(e[key] for e in errs), float(ratio)


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV row."""
    out = {k: row.get(k, "") for k in CSV_COLUMNS}
    out["input"] = "x".join(map(str, row.get("input", [])))
    other = row.get("other_input", "")
    out["other_input"] = "x".join(map(str, other)) if isinstance(other, list) else other
    for key in ("noise", "max_abs_ref"):
        vals = [e[key] for e in row.get("errors", {}).values()]
        out[key] = f"{max(vals):.3e}" if vals else ""
    for key in ERROR_KEYS:
        w = worst(row, key)
        out[f"{key}_err"] = f"{w[0]:.3e}" if w else ""
        out[f"{key}_x_noise"] = f"{w[1]:.2f}" if w else ""
    conv = row.get("converter")
    out["converter"] = (
        f"{conv['sparse']}/{conv['layers']} sparse, {conv['reverted']} reverted; {conv['check']}"
        if conv
        else ""
    )
    out["seconds"] = f"{row.get('seconds', {}).get('total', 0):.1f}"
    return out


def _mb(n: Any) -> str:
    if isinstance(n, str):
        return n
    return "" if n is None else f"{n / 1e6:.2f}"


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """The results as a Markdown table, with the command and the tolerance."""
    lines = [
        "# Parity sweep: export -> onnxruntime / torch-free runtime / converter / bundle",
        "",
        f"Command: `{command}`.",
        "",
        "Random init (seed 0), 90% of each Conv/Linear/in_proj weight zeroed, BatchNorm "
        "statistics from the evaluation inputs; exported from a batch-2 example, checked at "
        "batch 2, batch 1 and another input size where the model (and the export) allow. "
        f"Pass: {TOLERANCE} for every runtime, and onnxruntime's compact output bit-identical "
        "to its dense output. Errors are the worst over the inputs, as a multiple of "
        "'noise' (torch float32 vs float64 on the same input); converter: "
        "`sparsify_inference_(mode='cost_model', overhead_flops=0)`, layers sparse / listed; "
        "bundle: the scipy "
        "bundle directory, or why its graph cannot hold the model.",
        "",
        "| model | input | other size | params | noise | x noise: ort dense | ort compact "
        "| runtime | converter | bundle | dense MB | gzip -9 MB | compact MB | bundle MB "
        "| converter | s | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        f = flat(r)
        conv = r.get("converter")
        status = {"pass": "pass", "skipped": "skipped"}.get(r["status"], "FAIL")
        if r["reason"]:
            status += f": {r['reason']}"
        if not isinstance(r.get("params"), int):  # crashed or killed before it counted
            lines.append(f"| {r['model']} |" + " |" * 15 + f" {f['seconds']} | {status} |")
            continue
        other = "n/a" if str(f["other_input"]).startswith("n/a") else f["other_input"]
        bundle = r.get("bundle_bytes")
        cells = [
            r["model"],
            f["input"],
            other,
            f"{r['params'] / 1e6:.2f}M",
            f["noise"],
            *(f[f"{k}_x_noise"] for k in ERROR_KEYS[:-1]),
            _mb(r.get("dense_onnx_bytes")),
            _mb(r.get("dense_gzip9_bytes")),
            _mb(r.get("compact_onnx_bytes")),
            "n/a" if isinstance(bundle, str) else _mb(bundle),
            f"{conv['sparse']}/{conv['layers']}" if conv else "",
            f["seconds"],
            status,
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    passed = sum(r["status"] == "pass" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    lines += ["", f"{passed}/{len(rows) - skipped} pass ({skipped} skipped)."]
    reasons = [
        (r["model"], k, r[k])
        for r in rows
        for k in ("other_input", "bundle_bytes")
        if isinstance(r.get(k), str)
    ]
    if reasons:
        lines += ["", "Where another size or the bundle is n/a, why:", ""]
        lines += [
            f"- {m} ({'other size' if k == 'other_input' else 'bundle'}): {why[5:]}"
            for m, k, why in reasons
        ]
    return "\n".join(lines) + "\n"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``.jsonl`` results file (none if it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_tables(out: Path, stem: str, rows: list[dict[str, Any]], command: str) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat(r) for r in rows)
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_text(out / f"{stem}.md", markdown(rows, command))


def parse_count(text: str) -> int:
    """``"200M"`` / ``"1.5G"`` / ``"5000"`` -> a count."""
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:].upper(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 200M)") from None


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; exit status 1 if any model fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=FAMILIES, help="torchvision names, 'encoder', 'attention'"
    )
    parser.add_argument(
        "--all", action="store_true", help="every torchvision classifier + encoder + attention"
    )
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument(
        "--reference", action="store_true", help="also onnx ReferenceEvaluator (slow)"
    )
    parser.add_argument(
        "--rss", action="store_true", help="also resident memory of each runtime (fresh processes)"
    )
    parser.add_argument(
        "--skip-larger-than", type=parse_count, default=None, metavar="PARAMS",
        help="list models with more parameters as skipped (e.g. 200M)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per model")
    parser.add_argument(
        "--max-rss", type=parse_count, default=parse_count("32G"), metavar="BYTES",
        help="resident memory per model, its subprocesses included (default 32G)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch/ORT threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("results/parity"))
    parser.add_argument("--stem", default="parity", help="results file names (default parity)")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--row-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:  # one model, in this process; the parent guards it
        row = sweep_one(args.child, args.size, args.reference, args.work, args.rss)
        atomic_write_json(args.row_file, row)
        return 0
    names = list(args.models)
    if args.all:
        names = [*torchvision.models.list_models(module=torchvision.models), *EXTRA]
    command = "PYTHONPATH=. .venv/bin/python tools/parity_sweep.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv or sys.argv[1:])
        else ""
    )
    config = {"size": args.size, "reference": args.reference, "rss": args.rss}
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"{args.stem}.jsonl"
    if args.fresh:
        jsonl.unlink(missing_ok=True)
    rows = read_rows(jsonl)
    if any(r.get("config") != config for r in rows):
        raise SystemExit(
            f"{jsonl} holds results of other settings than {config}; pass --fresh to start "
            "over or --stem to write elsewhere."
        )
    done = {r["model"] for r in rows}
    for name in names:
        if name in done:
            print(f"{name}: already in {jsonl}", flush=True)
            continue
        n = count_params(name, args.size)
        if args.skip_larger_than is not None and n is not None and n > args.skip_larger_than:
            row = {
                "model": name, "status": "skipped", "params": n, "seconds": {},
                "reason": f"{n / 1e6:.0f}M parameters > --skip-larger-than {args.skip_larger_than / 1e6:.0f}M",
            }  # fmt: skip
        else:
            with tempfile.TemporaryDirectory(prefix="parity.") as tmp:
                row = run_guarded(name, args, Path(tmp))
        if "params" not in row and n is not None:  # crashed or killed before counting
            row["params"] = n
        row["config"] = config
        rows.append(row)
        with jsonl.open("a") as fh:  # one line per model: an interrupted sweep resumes here
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        write_tables(args.out, args.stem, rows, command)
        print(
            f"{name}: {row['status']} {row['reason']} ({row['seconds'].get('total', 0):.0f} s)",
            flush=True,
        )
    write_tables(args.out, args.stem, rows, command)
    return 0 if all(r["status"] in ("pass", "skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
