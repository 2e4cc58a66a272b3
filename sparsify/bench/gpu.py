"""The GPU side of the harness (``--device cuda``): cuBLAS dense, cuSPARSE CSR, 2:4 semi-structured.

Backends, each against ``cuda_dense_fp32`` in one interleaved group:

    cuda_dense_fp32   nn.Linear / Conv2d in float32 (cuBLAS / cuDNN; TF32 off)
    cuda_dense_bf16   the same model cast to bfloat16
    cuda_csr          Linear/Conv2d as torch CSR (cuSPARSE SpMM), float32
    cuda_2to4_bf16    Linear weights as ``to_sparse_semi_structured`` (bfloat16; compute
                      capability >= 8.0), only when every Linear weight satisfies 2:4

Timing uses CUDA events around ``inner`` calls per sample (the stream is synchronised
once per sample, never inside the timed loop). The CPU-side logic here (2:4 checks and
pruning, case lists, tables) runs and is tested without a GPU.
"""

from __future__ import annotations

import copy
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from sparsify.errors import SparsifyError

GPU_BACKENDS = ("cuda_dense_fp32", "cuda_dense_bf16", "cuda_csr", "cuda_2to4_bf16")


def is_2to4(w: torch.Tensor) -> bool:
    """True when every group of 4 consecutive entries along each row has >= 2 zeros."""
    if w.dim() != 2 or w.shape[1] % 4:
        return False
    groups = (w != 0).reshape(w.shape[0], -1, 4).sum(dim=-1)
    return bool((groups <= 2).all())


def prune_2to4_(w: torch.Tensor) -> torch.Tensor:
    """Zero the 2 smallest-|w| entries of every group of 4 along each row, in place."""
    if w.dim() != 2 or w.shape[1] % 4:
        raise SparsifyError(
            f"2:4 pruning needs a 2-D weight whose columns are a multiple of 4; got {tuple(w.shape)}."
        )
    with torch.no_grad():
        g = w.reshape(w.shape[0], -1, 4)
        drop = g.abs().topk(2, dim=-1, largest=False).indices
        g.scatter_(-1, drop, 0.0)
    return w


def semi_structured_ok(model: nn.Module) -> tuple[bool, str]:
    """Whether every Linear of ``model`` can take a 2:4 semi-structured weight, and why not."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return False, "no Linear layer"
    for m in linears:
        w = m.weight
        if not is_2to4(w):
            return False, "weights do not satisfy 2:4 (use --pattern 2:4 to impose it)"
        # CUTLASS/cuSPARSELt tile constraints: rows and columns multiples of 64 and 128
        if w.shape[0] % 64 or w.shape[1] % 128:
            return False, f"weight {tuple(w.shape)} is not a multiple of (64, 128)"
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    if torch.cuda.get_device_capability(0) < (8, 0):
        return False, "2:4 needs compute capability >= 8.0"
    return True, ""


def cuda_time_interleaved(
    fns: dict[str, Callable[[], Any]], reps: int = 20, warmup: int = 3, inner: int = 10
) -> dict[str, list[float]]:
    """Seconds per call of each fn: CUDA events around ``inner`` calls, shuffled order per rep."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    for _ in range(reps):
        rng.shuffle(order)
        for k in order:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fns[k]()
            end.record()
            end.synchronize()
            samples[k].append(start.elapsed_time(end) / 1e3 / inner)
    return samples


def build_gpu_model(model: nn.Module, backend: str) -> nn.Module:
    """``model`` on CUDA in the form ``backend`` runs (see module docstring).

    Raises:
        SparsifyError: unknown backend; ValueError/RuntimeError from torch propagate
            (the harness records them as unavailable).
    """
    m = copy.deepcopy(model).cuda().eval()
    if backend == "cuda_dense_fp32":
        return m
    if backend == "cuda_dense_bf16":
        return m.to(torch.bfloat16)
    if backend == "cuda_csr":
        from sparsify.accel.convert import _candidates, _set_module
        from sparsify.accel.layers import conv_supported, make_sparse

        for fqn, mod in _candidates(m, None):
            if isinstance(mod, nn.Linear) or conv_supported(mod):
                _set_module(m, fqn, make_sparse(mod, "torch_csr"))
        return m
    if backend == "cuda_2to4_bf16":
        from torch.sparse import to_sparse_semi_structured

        m = m.to(torch.bfloat16)
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                mod.weight = nn.Parameter(
                    to_sparse_semi_structured(mod.weight.detach()), requires_grad=False
                )
        return m
    raise SparsifyError(f"unknown GPU backend {backend!r}; choose from {', '.join(GPU_BACKENDS)}.")


def bench_gpu_point(
    model: nn.Module, input_shape: Sequence[int], batch: int, reps: int = 20
) -> dict[str, Any]:
    """Every GPU backend against cuda_dense_fp32 at one batch size; unavailable ones say why."""
    if not torch.cuda.is_available():
        raise SparsifyError("--device cuda needs a CUDA GPU; none is visible. Use --device cpu.")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    x32 = torch.randn(batch, *input_shape, device="cuda")
    out: dict[str, Any] = {"batch": batch, "backends": {}}
    fns, outs = {}, {}
    ok24, why24 = semi_structured_ok(model)
    with torch.inference_mode():
        for b in GPU_BACKENDS:
            if b == "cuda_2to4_bf16" and not ok24:
                out["backends"][b] = {"available": False, "reason": why24}
                continue
            try:
                m = build_gpu_model(model, b)
                x = x32.to(torch.bfloat16) if "bf16" in b else x32
                outs[b] = m(x).float()
                fns[b] = lambda m=m, x=x: m(x)
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                out["backends"][b] = {
                    "available": False,
                    "reason": f"{type(exc).__name__}: {str(exc)[:160]}",
                }
        samples = cuda_time_interleaved(fns, reps=reps)
    ref, dense = outs["cuda_dense_fp32"], samples["cuda_dense_fp32"]
    for b, s in samples.items():
        ratios = [d / t for d, t in zip(dense, s)]
        out["backends"][b] = {
            "available": True,
            "median_s": statistics.median(s),
            "iqr_s": _iqr(s),
            "speedup_vs_dense": statistics.median(ratios),
            "speedup_iqr": _iqr(ratios),
            "max_abs_diff": float((outs[b] - ref).abs().max()),
        }
    return out


def _iqr(v: Sequence[float]) -> float:
    if len(v) < 2:
        return 0.0
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[2] - q[0]


def gpu_table_markdown(rows: Sequence[dict[str, Any]], device: str) -> str:
    """Markdown: one row per (case, batch), one column per backend, 'median (speedup x)'."""
    lines = [
        f"# GPU benchmark on {device}",
        "",
        "Median time per call (CUDA events), speedup vs cuda_dense_fp32 in parentheses.",
        "",
        "| case | batch | " + " | ".join(GPU_BACKENDS) + " |",
        "|---|---:|" + "---:|" * len(GPU_BACKENDS),
    ]
    for r in rows:
        cells = []
        for b in GPU_BACKENDS:
            e = r["backends"].get(b, {})
            if e.get("available"):
                cells.append(f"{e['median_s'] * 1e6:.1f} µs ({e['speedup_vs_dense']:.2f}x)")
            else:
                cells.append("–")
        lines.append(f"| {r['case']} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
