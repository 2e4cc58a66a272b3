"""``sparsify_inference_``: swap prunable layers for sparse inference layers where they are faster.

    report = sparsify_inference_(model, torch.randn(64, 1, 28, 28), threads=1)
    print(report.summary())          # per layer: density, times, kernel chosen, why

Per layer (Linear, Conv2d with groups=1), at the layer's real input shape:

    calibrate   time dense and every sparse kernel on a random input of that shape,
                interleaved; per repetition i the paired ratio r_i = t_dense_i / t_kernel_i;
                take the kernel with the best median ratio only if
                median(r) > 1 / (1 - margin)  and  q25(r) > 1,  else keep dense
    cost_model  no timing: sparse (torch_csr) if density <= the break-even density for
                the layer's row count (measured on the reference machine, see
                BREAK_EVEN); Conv2d needs half that density (unfold copies the input)

A layer denser than ``max_density`` is not offered to the CSR kernels: with int32 indices
CSR reads (1 + 4/4) = 2 values' worth of bytes per stored entry, so above d = 0.5 it moves
more bytes than dense and cannot win. ``dense_compact`` (dense kernel without dead rows and
columns) is timed whenever those remove at least 10% of the weight. Every sparse replacement is checked against the dense
layer on the calibration input (``assert_close`` with rtol = atol = 1e-5); a mismatch
keeps the layer dense. Nothing is skipped silently: the report lists every layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sparsify.accel.layers import KERNELS, conv_supported, make_sparse, panel_width
from sparsify.errors import SparsifyError, check_choice
from sparsify.timing import fmt_seconds, paired_ratio, time_interleaved, torch_threads

MODES = ("calibrate", "cost_model")
FilterFn = Callable[[nn.Module, str], bool]

# Break-even density of torch_csr vs dense Linear (fp32, one thread) against rows per call,
# from results/bench/curves (Linear 1024 and 4096, AMD EPYC, 2 cores). Interpolated in
# log(rows); used only by mode="cost_model".
BREAK_EVEN: tuple[tuple[int, float], ...] = ((1, 0.1), (64, 0.25))
# dense_compact is timed only if dead rows/columns remove >= 10% of the weight; the cost
# model picks it when they remove >= 30% (index_select and scatter cost a few copies)
MAX_COMPACT = 0.9
COST_MODEL_COMPACT = 0.7


@dataclass
class LayerDecision:
    """What the converter did with one layer.

    Attributes:
        name: the module's fully qualified name.
        kind: ``Linear`` or ``Conv2d`` (or the type name of a skipped layer).
        shape: weight shape.
        input_shape: the input shape the decision is for (None if never seen).
        density: nnz / numel of the weight.
        times_s: median seconds per call of each timed candidate (``dense`` included).
        iqr_s: the inter-quartile range of each timed candidate.
        chosen: ``dense`` or a kernel of :data:`~sparsify.accel.layers.KERNELS`.
        speedup: t_dense / t_chosen (None when nothing was timed).
        reason: why, in words.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    input_shape: tuple[int, ...] | None
    density: float
    chosen: str
    reason: str
    times_s: dict[str, float] = field(default_factory=dict)
    iqr_s: dict[str, float] = field(default_factory=dict)
    speedup: float | None = None


@dataclass
class InferenceReport:
    """Returned by :func:`sparsify_inference_`: the settings and one decision per layer."""

    mode: str
    batch_size: int
    threads: int
    margin: float
    layers: list[LayerDecision]

    @property
    def converted(self) -> list[LayerDecision]:
        return [d for d in self.layers if d.chosen != "dense"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "margin": self.margin,
            "layers": [asdict(d) for d in self.layers],
        }

    def summary(self) -> str:
        """One line per layer: density, dense and chosen times, the kernel and the reason."""
        lines = [
            f"sparsify_inference_ ({self.mode}, batch {self.batch_size}, {self.threads} thread(s)): "
            f"{len(self.converted)} of {len(self.layers)} layers sparse"
        ]
        for d in self.layers:
            dense = d.times_s.get("dense")
            sparse = {k: v for k, v in d.times_s.items() if k != "dense"}
            best = min(sparse, key=sparse.__getitem__) if sparse else None
            timing = (
                f"dense {fmt_seconds(dense)}, {best} {fmt_seconds(sparse[best])}"
                if dense is not None and best is not None
                else "not timed"
            )
            lines.append(
                f"  {d.name:<24} {d.kind:<7} density {d.density:6.3f}  {timing:<36} -> {d.chosen}: {d.reason}"
            )
        return "\n".join(lines)


def _break_even(rows: int) -> float:
    pts = BREAK_EVEN
    if rows <= pts[0][0]:
        return pts[0][1]
    for (r0, d0), (r1, d1) in zip(pts, pts[1:]):
        if rows <= r1:
            t = (math.log(rows) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return d0 + t * (d1 - d0)
    return pts[-1][1]


def _record_inputs(
    model: nn.Module, names: list[str], example_input: Any
) -> dict[str, tuple[int, ...]]:
    """Input shape of each named module during one forward of ``example_input``."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:

        def hook(_m: nn.Module, args: tuple[Any, ...], _name: str = name) -> None:
            shapes.setdefault(_name, tuple(args[0].shape))

        handles.append(modules[name].register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return shapes


def candidate_layers(
    model: nn.Module, filter_fn: FilterFn | None = None
) -> list[tuple[str, nn.Module]]:
    """``(fqn, module)`` of every Linear/Conv2d of ``model`` that ``filter_fn(module, fqn)``
    accepts (default: all of them), in ``named_modules`` order.

    Replace one with ``model.set_submodule(fqn, new)`` (torch >= 2.2, below the floor).
    """
    out = []
    for name, m in model.named_modules():
        ok = filter_fn(m, name) if filter_fn is not None else isinstance(m, (nn.Linear, nn.Conv2d))
        if ok and isinstance(m, (nn.Linear, nn.Conv2d)):
            out.append((name, m))
    return out


def _decide(
    name: str,
    module: nn.Module,
    shape: tuple[int, ...] | None,
    *,
    mode: str,
    kernels: tuple[str, ...],
    max_density: float,
    margin: float,
    reps: int,
) -> tuple[LayerDecision, nn.Module | None]:
    w = module.weight
    density = float((w != 0).sum().item()) / w.numel()
    d = LayerDecision(name, type(module).__name__, tuple(w.shape), shape, density, "dense", "")
    if isinstance(module, nn.Conv2d) and not conv_supported(module):
        d.reason = "kept dense: grouped/'same'-padded/non-zero-padded Conv2d has no sparse kernel"
        return d, None
    if w.dtype != torch.float32 or w.device.type != "cpu":
        d.reason = (
            f"kept dense: sparse kernels here are float32 CPU (weight is {w.dtype}, {w.device})"
        )
        return d, None
    if shape is None:
        d.reason = (
            "kept dense: the layer's input shape is unknown (it did not run on example_input)"
        )
        return d, None
    compact = _compact_fraction(w)
    if compact > MAX_COMPACT:  # too few dead rows/columns: dense_compact is dense plus copies
        kernels = tuple(k for k in kernels if k != "dense_compact")
    if density > max_density:
        # CSR cannot win here; dropping dead rows/columns still can
        kernels = tuple(k for k in kernels if k == "dense_compact")
        if not kernels or compact > MAX_COMPACT:
            d.reason = (
                f"kept dense: density {density:.3f} > max_density {max_density:g} (CSR reads more "
                f"bytes) and dead rows/columns remove only {1 - compact:.0%} of the weight"
            )
            return d, None
    rows = (
        math.prod(shape[:-1])
        if isinstance(module, nn.Linear)
        else shape[0] * _conv_positions(module, shape)
    )  # columns of the dense operand of W @ x^T per call
    if panel_width(w[0].numel(), rows) >= w[0].numel():  # one panel is torch_csr
        kernels = tuple(k for k in kernels if k != "torch_csr_panels")
    if not kernels:
        d.reason = (
            "kept dense: no sparse kernel applies (dense_compact needs >= 10% dead rows/columns;"
            " torch_csr_panels needs a right-hand side too wide for one panel)"
        )
        return d, None
    if mode == "cost_model":
        limit = _break_even(rows) * (0.5 if isinstance(module, nn.Conv2d) else 1.0)
        csr = next((k for k in ("torch_csr_panels", "torch_csr") if k in kernels), None)
        if density <= limit and csr is not None:
            d.chosen = csr
            d.reason = f"cost model: density {density:.3f} <= break-even {limit:.3f}"
            return d, make_sparse(module, csr, rows)
        if compact <= COST_MODEL_COMPACT and "dense_compact" in kernels:
            d.chosen = "dense_compact"
            d.reason = f"cost model: dead rows/columns leave {compact:.0%} of the weight"
            return d, make_sparse(module, "dense_compact")
        d.reason = f"kept dense: cost model: density {density:.3f} > break-even {limit:.3f}"
        return d, None
    x = torch.randn(shape)
    with torch.inference_mode():
        ref = module(x)
        sparse = {k: make_sparse(module, k, rows) for k in kernels}
        for k, m in list(sparse.items()):
            try:
                torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
            except AssertionError:
                del sparse[k]  # a kernel that does not reproduce dense is never chosen
        fns: dict[str, Callable[[], Any]] = {"dense": lambda: module(x)}
        for k, m in sparse.items():
            fns[k] = lambda m=m: m(x)
        timings = time_interleaved(fns, reps=reps, warmup=1, min_sample_s=1e-3)
    d.times_s = {k: t.median for k, t in timings.items()}
    d.iqr_s = {k: t.iqr for k, t in timings.items()}
    if not sparse:
        d.reason = "kept dense: no sparse kernel matched the dense output within 1e-5"
        d.speedup = 1.0
        return d, None
    # paired per-repetition ratios t_dense / t_kernel: a load spike hits both of a pair
    ratios = {k: paired_ratio(timings["dense"].samples, timings[k].samples) for k in sparse}
    best = max(sparse, key=lambda k: ratios[k].median)
    q25, med = ratios[best].q25, ratios[best].median
    need = 1.0 / (1.0 - margin)
    if med > need and q25 > 1.0:
        d.chosen, d.speedup = best, med
        d.reason = f"calibrated: {med:.2f}x faster than dense (lower quartile {q25:.2f}x)"
        return d, sparse[best]
    d.speedup = 1.0
    d.reason = (
        f"kept dense: best sparse ({best}) is {med:.2f}x dense (lower quartile {q25:.2f}x); "
        f"needs > {need:.2f}x with the lower quartile > 1"
    )
    return d, None


def _compact_fraction(w: torch.Tensor) -> float:
    """(live rows * live columns) / numel of the (out, in * kh * kw) weight matrix."""
    nz = w.detach().reshape(w.shape[0], -1) != 0
    rows = int(nz.any(dim=1).sum())
    cols = int(nz.any(dim=0).sum()) if w.dim() == 2 else nz.shape[1]
    return rows * cols / max(1, nz.numel())


def _conv_positions(conv: nn.Conv2d, shape: tuple[int, ...]) -> int:
    h, w = shape[-2:]
    kh, kw = conv.kernel_size
    ho = (h + 2 * conv.padding[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
    wo = (w + 2 * conv.padding[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
    return max(1, ho * wo)


def sparsify_inference_(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    *,
    batch_size: int = 64,
    threads: int | None = None,
    mode: str = "calibrate",
    kernels: tuple[str, ...] = KERNELS,
    max_density: float = 0.5,
    margin: float = 0.05,
    reps: int = 9,
    filter_fn: FilterFn | None = None,
) -> InferenceReport:
    """Replace, in place, each Linear/Conv2d of ``model`` by a sparse layer where that is faster.

    Args:
        model: a float32 CPU model; put in eval mode (the converted layers hold no grads).
        example_input: one batch as the model will see it; it is run once to learn each
            layer's input shape. Without it, a Linear is assumed to see (batch_size, in)
            and a Conv2d (input shape unknown) stays dense.
        batch_size: rows per call when ``example_input`` is None; with an example input,
            its batch is the one calibrated for.
        threads: torch threads during calibration (None: the current setting). The
            decision is for that thread count; the model is not pinned to it.
        mode: ``"calibrate"`` (time each layer) or ``"cost_model"`` (break-even table).
        kernels: sparse kernels to consider (subset of
            ``("torch_csr", "torch_csr_panels", "scipy_csr", "dense_compact")``).
        max_density: layers denser than this stay dense untimed, in [0, 1].
        margin: the median paired ratio t_dense / t_sparse must exceed 1 / (1 - margin), in [0, 1).
        reps: timed samples per candidate (interleaved), >= 1.
        filter_fn: ``(module, fqn) -> bool`` choosing layers (default: every Linear/Conv2d).

    Returns:
        An :class:`InferenceReport` with one :class:`LayerDecision` per candidate layer.

    Raises:
        SparsifyError: a bad argument.
    """
    check_choice("sparsify_inference_", "mode", mode, MODES)
    for k in kernels:
        check_choice("sparsify_inference_", "kernels", k, KERNELS)
    if not kernels:
        raise SparsifyError(
            "The 'kernels' parameter of sparsify_inference_ must name at least one kernel."
        )
    if not 0.0 <= max_density <= 1.0:
        raise SparsifyError(
            f"The 'max_density' parameter of sparsify_inference_ must be a float in the range [0, 1]. Got {max_density!r} instead."
        )
    if not 0.0 <= margin < 1.0:
        raise SparsifyError(
            f"The 'margin' parameter of sparsify_inference_ must be a float in the range [0, 1). Got {margin!r} instead."
        )
    if int(reps) < 1 or int(batch_size) < 1:
        raise SparsifyError(
            "The 'reps' and 'batch_size' parameters of sparsify_inference_ must be integers >= 1."
        )
    if threads is not None and int(threads) < 1:
        raise SparsifyError(
            f"The 'threads' parameter of sparsify_inference_ must be an integer >= 1 or None. Got {threads!r} instead."
        )
    model.eval()
    layers = candidate_layers(model, filter_fn)
    if any(name == "" for name, _ in layers):
        raise SparsifyError(
            f"sparsify_inference_ replaces layers inside a model; got a bare {type(model).__name__}: "
            "wrap it, e.g. nn.Sequential(layer)."
        )
    if example_input is not None:
        shapes = _record_inputs(model, [n for n, _ in layers], example_input)
        batch = int(example_input.shape[0])
    else:
        shapes = {
            n: (int(batch_size), m.in_features) for n, m in layers if isinstance(m, nn.Linear)
        }
        batch = int(batch_size)
    decisions = []
    with torch_threads(threads) as n_threads, torch.no_grad():
        for name, module in layers:
            d, new = _decide(
                name,
                module,
                shapes.get(name),
                mode=mode,
                kernels=tuple(kernels),
                max_density=max_density,
                margin=margin,
                reps=int(reps),
            )
            if new is not None:
                model.set_submodule(name, new)
            decisions.append(d)
    return InferenceReport(mode, batch, n_threads, margin, decisions)
