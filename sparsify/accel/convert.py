"""``sparsify_inference_``: swap prunable layers for sparse inference layers where they are faster.

    report = sparsify_inference_(model, torch.randn(64, 1, 28, 28), threads=1)
    print(report.summary())          # per layer: density, times, kernel chosen, why

Per layer (Linear, Conv2d of any groups), at the layer's real input shape:

    calibrate   time dense and every sparse kernel on a random input of that shape,
                interleaved; per repetition i the paired ratio r_i = t_dense_i / t_kernel_i;
                take the kernel with the best median ratio only if
                median(r) > 1 / (1 - margin)  and  q25(r) > 1,  else keep dense;
                then, with ``example_input``, the whole converted model is timed the same way
                against its dense self, and if median(r) < 1 every layer goes back to dense
                (``report.whole`` says what was measured)
    cost_model  no timing: each CSR-like kernel k is estimated at
                    t_k / t_dense = density / b_k(rows) + F0_k / F
                (its work and bytes scale with the nonzeros; equal to dense at its break-even
                density b_k, measured on the reference machine for the layer's rows per call:
                BREAK_EVEN for torch_csr, SPK_BREAK_EVEN for sparsify's C kernels; b_k halved
                for a Conv2d, whose input is copied: unfold, or the kernels' stride phases;
                plus its fixed cost per call, F0_k = OVERHEAD_FLOPS[k], the dense work that
                takes as long, over the layer's dense work per call F = 2 * weights * rows,
                so a layer with F <= F0_k never goes to k); the lowest estimate wins if it is
                <= 1, spk (spk_csr at one row per call) where the C kernels run,
                torch_csr(_panels) where they do not
    fixed       no timing: the first kernel of ``kernels`` that applies to the layer (for
                benchmarks and tests that must run one kernel; it may be slower than dense)

Candidates in calibrate mode: dense, torch_csr, torch_csr_panels (when the right-hand side
needs more than one panel), scipy_csr, dense_compact (see below), and sparsify's own C kernels
``spk`` (column-blocked) and ``spk_csr`` (plain CSR; only where its packing differs from
``spk``'s), the kernels the torch-free runtime also runs; a grouped conv is not offered to
them; a depthwise conv (groups = in_channels) is offered ``spk_depthwise`` instead, the
dense stencil ``kernels.depthwise_conv2d`` (torch's CPU depthwise convolution is slower than
that on large planes; small ones stay with torch by measurement). Where those kernels cannot
be built (no C compiler, ``SPARSIFY_KERNELS=off``) they are left out and
``report.unavailable`` says why.

A layer denser than ``max_density`` is not offered to the CSR kernels: with int32 indices
CSR reads (1 + 4/4) = 2 values' worth of bytes per stored entry, so above d = 0.5 it moves
more bytes than dense and cannot win. ``dense_compact`` (dense kernel without dead rows and
columns) is timed whenever those remove at least 10% of the weight. Every sparse replacement is checked against the dense
layer on the calibration input (``assert_close`` with rtol = atol = 1e-5); a mismatch
keeps the layer dense. Grouped and depthwise Conv2d run as a block-diagonal CSR matrix
(calibrated like any conv; the cost model, whose table is for groups=1, keeps them dense).

The converter never breaks a model. With ``example_input`` it runs the model once before
(float32, and a float64 copy) and once after converting, without forward hooks (which
would turn torch's fused transformer fast path off and so hide it):

- a layer whose forward never runs is kept dense: its parent reads its weight itself
  (``MultiheadAttention.out_proj``; ``linear1``/``linear2`` of a batch_first
  ``TransformerEncoderLayer`` under torch's fast path) or does not use it. Without
  ``example_input`` these two cases are kept dense by rule;
- if the converted model raises, or max|y - ref64| > 4 * max|y32 - ref64| + 1e-6 * max|ref64|
  (4x fp32's own error on this model and input), the layers are re-applied one at a time and
  each one that breaks the model is reverted to dense with the reason;
- every sparse layer also exposes ``weight`` (the dense view, made on read), so a parent
  that reads it on a path the example did not take still runs, correctly.

Nothing is skipped silently: the report lists every Linear, conv and MultiheadAttention
(name, shape, zeros, choice, reason) and ``report.check`` says how the output was checked.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sparsify import kernels as spk_kernels
from sparsify.accel.dw_project import dw_project_chains, fuse_depthwise_project_
from sparsify.accel.expand_dw import expand_dw_chains, fuse_expand_depthwise_
from sparsify.accel.fold import fold_batchnorm_
from sparsify.accel.fuse import activation_pairs, fuse_activations_, unfuse_
from sparsify.accel.layers import (
    KERNELS,
    SPK_KERNELS,
    STENCIL,
    SparseConv2d,
    conv_supported,
    is_depthwise,
    make_sparse,
    panel_width,
    spk_unavailable_reason,
)
from sparsify.accel.pairs import unfuse_ as unfuse_pairs_
from sparsify.accel.pool import poolable, replace_pools_, restore_
from sparsify.errors import SparsifyError, check_choice
from sparsify.kernels.layouts import auto_kblock
from sparsify.timing import fmt_seconds, paired_ratio, time_interleaved, torch_threads

MODES = ("calibrate", "cost_model", "fixed")
# layers the report lists; only Linear and Conv2d have sparse kernels
REPORTED = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention)
CHECK_RULE = "max|y - ref64| <= 4 * max|y32 - ref64| + 1e-6 * max|ref64|"
FilterFn = Callable[[nn.Module, str], bool]

# Break-even density of torch_csr vs dense Linear (fp32, one thread) against rows per call,
# from results/bench/curves (Linear 1024 and 4096, AMD EPYC, 2 cores). Interpolated in
# log(rows); used only by mode="cost_model".
BREAK_EVEN: tuple[tuple[int, float], ...] = ((1, 0.1), (64, 0.25))
# The same for sparsify's C kernels (spk_csr at one row, spk above) against torch dense, from
# the quiet-machine ladder results/bench/peers/bench.json (Linear 4096x4096, one thread,
# cells "spk" vs "dense", paired speedup s(d) per batch). spk beats dense in every cell
# (d = 0.3 ... 0.01), so the break-even lies above the ladder and is bounded from its two
# densest cells: the cost per nonzero does not grow with density (d * s(d) rises along the
# ladder), so t_spk(d') <= t_spk(d) * d' / d and spk breaks even at d' >= d * s(d):
#   batch 1:   min(0.2 * 1.09, 0.3 * 1.22) = 0.218     batch 16:  min(0.2 * 3.67, 0.3 * 2.83) = 0.733
#   batch 64:  min(0.2 * 3.94, 0.3 * 2.69) = 0.789     batch 256: min(0.2 * 3.16, 0.3 * 2.16) = 0.633
# Margin: / 1.25 (estimated >= 1.25x dense there): 0.17, 0.59, 0.63, 0.51; capped at 0.5, past
# which CSR reads more bytes than dense (max_density) and nothing was measured.
SPK_BREAK_EVEN: tuple[tuple[int, float], ...] = ((1, 0.17), (16, 0.5))
# The fixed cost of one call of a sparse layer, as the dense FLOPs (2 * weights * rows) that
# take as long: F0 in the cost model's  density / b + F0 / F. Measured with
# tools/spk_overhead.py (one thread, density 0.1, load ~1.5 on 2 cores): on layers with next
# to no work (Linear 7x24 and 64x64, batch 1) a call costs ~44 us on spk, ~30 us on
# torch_csr, ~8 us on torch dense (conv 24x5x3x3 at 8x8: spk 70 us, dense 21 us). spk is
# slower than dense up to ~2 MFLOP of dense work per call (Linear 1024^2 batch 1, 2.1 MFLOP:
# 0.96x; 256^2 batch 16, 2.1 MFLOP: 0.79x; conv 32x16x3x3 at 14^2, 1.8 MFLOP: 0.81x) and faster
# from ~7 MFLOP (conv 64x32x3x3 at 14^2: 1.55x; Linear 512^2 batch 16, 8.4 MFLOP: 1.72x):
# F0 = 2 MFLOP gets the verdict (faster or not) of all 22 measured layers right. torch_csr
# loses at 2.1 MFLOP (0.94x, 256^2 batch 16) and wins at 8.4 (1.70x): 1.5 MFLOP. A layer with
# less dense work than F0 stays dense whatever its zeros. Since then a Linear's spk call
# passes torch's buffers to C by address (kernels.spmm_into): rerun (load ~2.9), the tiny
# Linears cost 21-27 us on spk and Linear 1024^2 at batch 1 (2.1 MFLOP) wins 1.39x, 512^2
# (0.5 MFLOP) ties (0.96x): F0 = 1 MFLOP for spk; convs still pay ~60-80 us per call (their
# stride-phase copy), which the conv's halved break-even keeps dense below ~2 MFLOP.
OVERHEAD_FLOPS: dict[str, float] = {
    "spk": 1.0e6,
    "spk_csr": 1.0e6,
    "torch_csr": 1.5e6,
    "torch_csr_panels": 1.5e6,
}
# dense_compact is timed only if dead rows/columns remove >= 10% of the weight; the cost
# model picks it when they remove >= 30% (index_select and scatter cost a few copies)
MAX_COMPACT = 0.9
COST_MODEL_COMPACT = 0.7


@dataclass
class LayerDecision:
    """What the converter did with one layer.

    Attributes:
        name: the module's fully qualified name.
        kind: ``Linear`` or ``Conv2d`` (or the type name of a layer with no sparse kernel).
        shape: weight shape (``in_proj_weight``'s for a MultiheadAttention).
        input_shape: the input shape the decision is for (None if never seen).
        density: nnz / numel of the weight.
        times_s: median seconds per call of each timed candidate (``dense`` included).
        iqr_s: the inter-quartile range of each timed candidate.
        chosen: ``dense`` or a kernel of :data:`~sparsify.accel.layers.KERNELS`.
        speedup: t_dense / t_chosen (None when nothing was timed).
        reason: why, in words.
        zeros: entries of the weight that are exactly zero.
        groups: a conv's groups (1 for everything else).
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
    zeros: int = 0
    groups: int = 1


@dataclass
class InferenceReport:
    """Returned by :func:`sparsify_inference_`: the settings, one decision per layer and how
    the converted model's output was checked (``check`` starts with ``ok``, ``FAILED`` or
    ``not checked``)."""

    mode: str
    batch_size: int
    threads: int
    margin: float
    layers: list[LayerDecision]
    check: str = "not checked"
    unavailable: dict[str, str] = field(default_factory=dict)
    whole: str = "not timed"
    folded: list[str] = field(default_factory=list)  # "conv <- batch norm" folded into it
    fused: list[str] = field(default_factory=list)  # "layer <- activation" fused into it
    pools: list[str] = field(default_factory=list)  # each MaxPool2d: stencil or torch's, why
    blocks: list[str] = field(default_factory=list)  # each 1x1 + depthwise pair: fused or not
    projections: list[str] = field(default_factory=list)  # each depthwise + 1x1: fused or not

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
            "check": self.check,
            "unavailable": dict(self.unavailable),
            "whole": self.whole,
            "folded": list(self.folded),
            "fused": list(self.fused),
            "pools": list(self.pools),
            "blocks": list(self.blocks),
            "projections": list(self.projections),
        }

    def summary(self) -> str:
        """One line per layer: shape, zeros, dense and chosen times, the kernel and the reason."""
        lines = [
            f"sparsify_inference_ ({self.mode}, batch {self.batch_size}, {self.threads} thread(s)): "
            f"{len(self.converted)} of {len(self.layers)} layers converted (sparse, or the depthwise stencil); output check: {self.check}",
            f"  whole model: {self.whole}",
        ]
        if self.folded:
            lines.append(
                f"  {len(self.folded)} BatchNorm2d folded into the conv before them "
                f"({', '.join(self.folded[:3])}{', ...' if len(self.folded) > 3 else ''})"
            )
        if self.fused:
            lines.append(
                f"  {len(self.fused)} activation(s) fused into the converted layer before them "
                f"({', '.join(self.fused[:3])}{', ...' if len(self.fused) > 3 else ''})"
            )
        for line in self.pools:
            lines.append(f"  MaxPool2d {line}")
        for line in self.blocks:
            lines.append(f"  1x1 + depthwise {line}")
        for line in self.projections:
            lines.append(f"  depthwise + 1x1 {line}")
        for k, why in self.unavailable.items():
            lines.append(f"  kernel {k} not offered: {why}")
        for d in self.layers:
            dense = d.times_s.get("dense")
            sparse = {k: v for k, v in d.times_s.items() if k != "dense"}
            best = min(sparse, key=sparse.__getitem__) if sparse else None
            timing = (
                f"dense {fmt_seconds(dense)}, {best} {fmt_seconds(sparse[best])}"
                if dense is not None and best is not None
                else "not timed"
            )
            shape = "x".join(map(str, d.shape)) + (f" g{d.groups}" if d.groups > 1 else "")
            lines.append(
                f"  {d.name:<24} {d.kind:<7} {shape:<14} zeros {d.zeros:>9} "
                f"(density {d.density:6.3f})  {timing:<36} -> {d.chosen}: {d.reason}"
            )
        return "\n".join(lines)


def _break_even(rows: int, pts: tuple[tuple[int, float], ...] = BREAK_EVEN) -> float:
    """The break-even density of table ``pts`` at ``rows``, interpolated in log(rows) and
    held constant outside the table."""
    if rows <= pts[0][0]:
        return pts[0][1]
    for (r0, d0), (r1, d1) in zip(pts, pts[1:]):
        if rows <= r1:
            t = (math.log(rows) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return d0 + t * (d1 - d0)
    return pts[-1][1]


@contextmanager
def _forwards_recorded(
    modules: dict[str, nn.Module], shapes: dict[str, tuple[int, ...]]
) -> Iterator[None]:
    """Within the block, record into ``shapes`` the first input shape of each named module
    whose forward runs.

    An instance attribute ``forward`` wraps the class's, rather than a forward (pre-)hook:
    torch's fused transformer path turns itself off when any submodule has a hook, so a
    hook would observe a different model from the one that will run.
    """
    for name, m in modules.items():

        def forward(*args: Any, _m: nn.Module = m, _name: str = name, **kwargs: Any) -> Any:
            if args and isinstance(args[0], torch.Tensor):
                shapes.setdefault(_name, tuple(args[0].shape))
            else:
                shapes.setdefault(_name, ())
            return type(_m).forward(_m, *args, **kwargs)

        m.forward = forward
    try:
        yield
    finally:
        for m in modules.values():
            del m.forward


def _record_inputs(
    model: nn.Module, names: list[str], example_input: Any
) -> tuple[dict[str, tuple[int, ...]], Any]:
    """Input shape of each named module whose forward runs on ``example_input`` (a module
    missing from the result never ran) and the model's output."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    with _forwards_recorded({n: modules[n] for n in names}, shapes), torch.inference_mode():
        out = model(example_input)
    return shapes, out


def _tensors(out: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a model output (tensor, tuple/list, dict), in order."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max |a - b| over paired tensors, in float64; inf if the outputs do not pair up."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return math.inf
    return max(
        (float((x.double() - y.double()).abs().max()) for x, y in zip(a, b) if x.numel()),
        default=0.0,
    )


class _OutputCheck:
    """Whether a converted model still computes the original's output, within fp32 noise.

    With a float64 copy of the original: pass iff max|y - ref64| <= 4 * noise + 1e-6 * scale,
    noise = max|y32 - ref64| (float32's own error on this model and input), scale = max|ref64|.
    Without (the copy cannot be made or run in float64): pass iff
    max|y - y32| <= 1e-5 * max(1, max|y32|).
    """

    def __init__(self, model: nn.Module, example_input: Any, y32: Any) -> None:
        self.example_input = example_input
        self.y32 = [t.clone() for t in _tensors(y32)]
        self.ref64: list[torch.Tensor] | None = None
        try:
            double = copy.deepcopy(model).double()
            x64 = example_input.double() if example_input.is_floating_point() else example_input
            with torch.inference_mode():
                self.ref64 = _tensors(double(x64))
            del double
        except Exception:  # a module without float64 support: compare with float32 instead
            self.ref64 = None
        if self.ref64 is not None and _max_diff(self.y32, self.ref64) == math.inf:
            self.ref64 = None
        if self.ref64 is not None:
            self.noise = _max_diff(self.y32, self.ref64)
            self.scale = max((float(t.abs().max()) for t in self.ref64 if t.numel()), default=0.0)
            self.bound = 4 * self.noise + 1e-6 * self.scale
        else:
            self.scale = max((float(t.abs().max()) for t in self.y32 if t.numel()), default=0.0)
            self.bound = 1e-5 * max(1.0, self.scale)

    def __call__(self, model: nn.Module, sparse: dict[str, nn.Module]) -> tuple[str, set[str]]:
        """Run ``model`` once; ``("", called)`` if its output passes, else ``(why, called)``;
        ``called``: the names in ``sparse`` whose forward ran."""
        shapes: dict[str, tuple[int, ...]] = {}
        try:
            with _forwards_recorded(sparse, shapes), torch.inference_mode():
                y = _tensors(model(self.example_input))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            return f"the model raised {type(exc).__name__}: {first}", set(shapes)
        if self.ref64 is not None:
            err = _max_diff(y, self.ref64)
            what = f"max|y - ref64| {err:.2e}"
            limit = f"4 * fp32 noise {self.noise:.2e} + 1e-6 * {self.scale:.2g}"
        else:
            err = _max_diff(y, self.y32)
            what = f"max|y - y32| {err:.2e}"
            limit = f"1e-5 * {max(1.0, self.scale):.2g} (no float64 copy: fp32 noise unknown)"
        self.last = f"{what} <= {limit}"
        if err <= self.bound:
            return "", set(shapes)
        return f"the output differs beyond fp32 noise: {what} > {limit}", set(shapes)


def _parent_reads(model: nn.Module, example: bool) -> dict[str, str]:
    """fqn -> reason, for layers whose parent reads their weight itself instead of calling
    them, known by rule: ``MultiheadAttention.out_proj`` always; without an example input
    (nothing can be observed) ``linear1``/``linear2`` of a batch_first TransformerEncoderLayer,
    which torch's fused fast path (eval mode, no grad) bypasses."""
    out = {}
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.MultiheadAttention):
            out[prefix + "out_proj"] = (
                "kept dense: MultiheadAttention reads out_proj.weight itself "
                "(F.multi_head_attention_forward) and never calls out_proj"
            )
        if not example and isinstance(m, nn.TransformerEncoderLayer) and m.self_attn.batch_first:
            for child in ("linear1", "linear2"):
                out[prefix + child] = (
                    f"kept dense: TransformerEncoderLayer (batch_first) in eval mode without grad "
                    f"takes torch's fused fast path, which reads {child}.weight itself; pass "
                    "example_input to check whether it does here"
                )
    return out


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
    example: bool = True,
    overhead_flops: float | None = None,
) -> tuple[LayerDecision, nn.Module | None]:
    d = _listed(name, module)
    d.input_shape = shape
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        what = (
            "MultiheadAttention passes in_proj_weight to F.multi_head_attention_forward itself "
            "(its out_proj is listed on its own)"
            if isinstance(module, nn.MultiheadAttention)
            else f"{d.kind} has no sparse kernel (only Linear and Conv2d)"
        )
        d.reason = f"kept dense: {what}"
        return d, None
    w = module.weight
    if isinstance(module, nn.Conv2d) and not conv_supported(module):
        d.reason = "kept dense: a 'same'-padded or non-zero-padded Conv2d has no sparse kernel"
        return d, None
    if w.dtype != torch.float32 or w.device.type != "cpu":
        d.reason = (
            f"kept dense: sparse kernels here are float32 CPU (weight is {w.dtype}, {w.device})"
        )
        return d, None
    if shape is None:
        d.reason = (
            "kept dense: its forward never ran on example_input (its parent reads its weight "
            "itself, e.g. torch's fused transformer fast path, or does not use it)"
            if example
            else "kept dense: the layer's input shape is unknown without example_input"
        )
        return d, None
    density = d.density
    groups = d.groups
    if not is_depthwise(module):
        kernels = tuple(k for k in kernels if k != STENCIL)
    if groups > 1:  # dropping dead filters would regroup the conv; spk convs are groups=1
        kernels = tuple(k for k in kernels if k != "dense_compact" and k not in SPK_KERNELS)
    if w[0].numel() < 2 * auto_kblock(density):  # spk's "auto" packing is plain CSR here
        kernels = tuple(k for k in kernels if k != "spk_csr" or "spk" not in kernels)
    compact = _compact_fraction(w)
    if compact > MAX_COMPACT:  # too few dead rows/columns: dense_compact is dense plus copies
        kernels = tuple(k for k in kernels if k != "dense_compact")
    if density > max_density:
        # CSR cannot win on bytes here; dropping dead rows/columns still can, and so can the
        # stencil, and, timed, a groups=1 conv's spk kernel: it does no im2col, which beats
        # torch's dense conv on few input channels at any density (LeNet-5's conv1 at 90%:
        # 1.9x at batch 1, results/probes/2026-12-04/dense_convs_on_spk.txt)
        keep = ("dense_compact", STENCIL)
        if mode == "calibrate" and isinstance(module, nn.Conv2d):
            keep += ("spk",)
        kernels = tuple(k for k in kernels if k in keep)
        if not kernels:
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
    width = w[0].numel() * groups  # columns of the (block-diagonal) CSR matrix
    if panel_width(width, rows) >= width:  # one panel is torch_csr
        kernels = tuple(k for k in kernels if k != "torch_csr_panels")
    if not kernels:
        d.reason = (
            "kept dense: no sparse kernel applies (dense_compact needs >= 10% dead rows/columns;"
            " torch_csr_panels needs a right-hand side too wide for one panel; spk and spk_csr"
            " need groups=1" + (f", this conv has groups={groups})" if groups > 1 else ")")
        )
        return d, None
    if mode == "fixed":
        d.chosen = kernels[0]
        d.reason = f"fixed: the first of the given kernels that applies ({kernels[0]}), untimed"
        return d, make_sparse(module, kernels[0], rows)
    if mode == "cost_model":
        if groups > 1:
            d.reason = (
                f"kept dense: cost model: grouped Conv2d (groups={groups}): the break-even table "
                "is for groups=1 (unfold copies every input channel for filters that read "
                f"1/{groups} of them); mode='calibrate' times it"
            )
            return d, None
        conv = 0.5 if isinstance(module, nn.Conv2d) else 1.0
        flops = 2 * w.numel() * rows  # the layer's dense work per call
        # (kernel, its break-even density here), best first: ties go to the C kernels
        options = [
            (k, _break_even(rows, SPK_BREAK_EVEN) * conv)
            for k in _spk_order(rows, isinstance(module, nn.Linear))
            if k in kernels
        ][:1]
        options += [
            (k, _break_even(rows) * conv) for k in ("torch_csr_panels", "torch_csr") if k in kernels
        ][:1]
        limit = max((b for _, b in options), default=_break_even(rows) * conv)

        def f0(k: str) -> float:
            return OVERHEAD_FLOPS[k] if overhead_flops is None else overhead_flops

        def estimate(k: str, b: float) -> float:  # t_k / t_dense
            return density / b + f0(k) / flops

        if options:
            best, b = min(options, key=lambda o: estimate(*o))
            est = estimate(best, b)
            if est <= 1.0:
                d.chosen = best
                d.reason = (
                    f"cost model: density {density:.3f} / {best}'s break-even {b:.3f} + "
                    f"per-call overhead {f0(best):,.0f} / {flops:,} FLOP of dense work = "
                    f"{est:.2f}x dense time (estimated)"
                )
                return d, make_sparse(module, best, rows)
            if density <= b:  # sparse enough, too small: the fixed cost per call decides
                d.reason = (
                    f"kept dense: cost model: {flops:,} FLOP of dense work per call is too "
                    f"little for {best}'s per-call overhead (worth {f0(best):,.0f} FLOP of "
                    f"dense time): density {density:.3f} / break-even {b:.3f} + overhead = "
                    f"{est:.2f}x dense time (estimated)"
                )
                return d, None
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
        other = _other_lanes(sparse.get("spk"), module, rows, x, ref)
        if other is not None:
            fns[OTHER_LANES] = lambda: other(x)
        timings = time_interleaved(fns, reps=reps, warmup=1, min_sample_s=1e-3)
    lanes_note = ""
    if other is not None:  # keep the faster way to run spk, under its own name
        alt = timings.pop(OTHER_LANES)
        r = paired_ratio(timings["spk"].samples, alt.samples)
        if r.median > 1.0:
            sparse["spk"], timings["spk"] = other, alt
        on = sparse["spk"].lanes_at(tuple(x.shape))
        lanes_note = (
            f"; spk {'with' if on else 'without'} the batch in the vector lanes "
            f"({max(r.median, 1 / r.median):.2f}x faster than the other way)"
        )
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
        if best == "spk":
            d.reason += lanes_note
        return d, sparse[best]
    d.speedup = 1.0
    d.reason = (
        f"kept dense: best sparse ({best}) is {med:.2f}x dense (lower quartile {q25:.2f}x); "
        f"needs > {need:.2f}x with the lower quartile > 1"
    )
    return d, None


OTHER_LANES = "spk, the other way"  # a timing key only, never a kernel name


def _other_lanes(
    layer: nn.Module | None, conv: nn.Module, rows: int, x: torch.Tensor, ref: torch.Tensor
) -> nn.Module | None:
    """For a conv on spk where both ways can run (a batch of at least one full vector of
    images, a kernel above 1x1), a second spk layer that runs the other way (the batch in
    the vector lanes or one image at a time) than ``lanes_pay`` picked for ``layer``, if it
    reproduces the dense output: calibration times both. None where there is no choice."""
    if not isinstance(layer, SparseConv2d) or layer.weight_spk is None:
        return None
    lib = spk_kernels._lib()
    if lib is None or x.shape[0] < lib.vector_width or math.prod(layer.kernel_size) == 1:
        return None
    other = make_sparse(conv, "spk", rows)
    other.use_lanes_(not layer.lanes_at(tuple(x.shape)))
    try:
        torch.testing.assert_close(other(x), ref, rtol=1e-5, atol=1e-5)
    except AssertionError:
        return None
    return other


def _spk_order(rows: int, linear: bool) -> tuple[str, ...]:
    """The C kernels in order of preference for a layer: plain CSR packing for a Linear at one
    row per call (gather dot products, memory-bound), column-blocked above and for convs
    (results/kernels/README.md)."""
    return ("spk_csr", "spk") if linear and rows == 1 else ("spk", "spk_csr")


def _listed(name: str, module: nn.Module) -> LayerDecision:
    """A dense decision with the layer's shape, zeros and density filled in."""
    if isinstance(module, nn.MultiheadAttention):
        ws = [module.in_proj_weight] if module.in_proj_weight is not None else []
        ws = ws or [module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]
        shape = tuple(ws[0].shape) if len(ws) == 1 else (sum(len(w) for w in ws), ws[0].shape[1])
    else:
        ws = [module.weight]
        shape = tuple(module.weight.shape)
    numel = sum(w.numel() for w in ws)
    zeros = numel - sum(int((w != 0).sum()) for w in ws)
    return LayerDecision(
        name,
        type(module).__name__,
        shape,
        None,
        (numel - zeros) / max(1, numel),
        "dense",
        "",
        zeros=zeros,
        groups=int(getattr(module, "groups", 1)),
    )


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
    verify: bool = True,
    overhead_flops: float | None = None,
    fold_batchnorm: bool = True,
    fuse_activations: bool = True,
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
        mode: ``"calibrate"`` (time each layer), ``"cost_model"`` (break-even tables,
            spk where the C kernels run; see the module docstring) or ``"fixed"`` (the first
            applicable kernel of ``kernels``, untimed).
        kernels: kernels to consider, in order of preference for ``"fixed"`` (subset of
            ``("torch_csr", "torch_csr_panels", "scipy_csr", "dense_compact", "spk",
            "spk_csr", "spk_depthwise")``). ``spk``/``spk_csr``/``spk_depthwise`` are
            dropped, with the reason in ``report.unavailable``, where sparsify's compiled
            kernels cannot run.
        max_density: layers denser than this are not offered the CSR kernels, in [0, 1]
            (``dense_compact`` and the depthwise stencil still are; in ``"calibrate"`` mode a
            groups=1 Conv2d is still timed on ``spk``, whose conv does no im2col).
        margin: the median paired ratio t_dense / t_sparse must exceed 1 / (1 - margin), in [0, 1).
        reps: timed samples per candidate (interleaved), >= 1.
        filter_fn: ``(module, fqn) -> bool`` choosing layers (default: every Linear, conv
            and MultiheadAttention; only Linear and Conv2d have sparse kernels, the others are
            listed as kept dense).
        verify: with ``example_input``, run the converted model on it and revert each layer
            that makes it raise or leave fp32 noise (see the module docstring); costs a
            float64 copy of the model while converting.
        overhead_flops: ``"cost_model"`` only: the fixed cost of one sparse call, as dense
            FLOPs (F0 in the module docstring), >= 0. None: the measured
            :data:`OVERHEAD_FLOPS` per kernel; 0: the break-even tables alone.
        fold_batchnorm: first fold each eval-mode BatchNorm2d whose only input is a Conv2d's
            output, read by nothing else (adjacent in an ``nn.Sequential``, or so wired in a
            ``forward`` as ``torch.fx`` traces it), into that conv
            (:func:`~sparsify.accel.fold.fold_batchnorm_`; same zeros, one pass less; the
            batch norm becomes ``nn.Identity``);
            ``report.folded`` lists the pairs. The output check compares with the unfolded model.
        fuse_activations: last, fuse each ReLU/ReLU6/Hardtanh whose only input is a converted
            layer's output (read by nothing else) into that layer, if it runs on the C
            kernels (:mod:`~sparsify.accel.fuse`; the activation becomes ``nn.Identity``);
            ``report.fused`` lists the pairs. With ``verify`` the fused model is checked
            again, and unfused if it fails.

    Where ``spk_depthwise`` is among the kernels, each ``nn.MaxPool2d`` (ceil_mode=False, no
    indices) is also offered the kernels' max-pool stencil (:mod:`~sparsify.accel.pool`),
    timed against torch's at its input shape in ``"calibrate"`` mode (needs
    ``example_input``), untimed otherwise; ``report.pools`` says what each got. Likewise,
    with ``fuse_activations``, a converted 1x1 conv whose output (through its fused clamp)
    goes only into a depthwise conv on the stencil (an inverted-residual block's expansion) is
    offered one kernel for the two (:mod:`~sparsify.accel.expand_dw`), timed against the two
    apart; ``report.blocks`` says what each pair got. Then a depthwise conv on the stencil (or
    such a fused pair) whose output goes only into a converted 1x1 conv (the block's
    projection) is offered one kernel for both in ``"calibrate"`` mode
    (:mod:`~sparsify.accel.dw_project`); ``report.projections`` says what each got.

    Returns:
        An :class:`InferenceReport` with one :class:`LayerDecision` per listed layer, in
        ``named_modules`` order, and ``check``: how the converted model's output was checked.

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
    if overhead_flops is not None and not (math.isfinite(overhead_flops) and overhead_flops >= 0):
        raise SparsifyError(
            f"The 'overhead_flops' parameter of sparsify_inference_ must be None or a float in the range [0, inf). Got {overhead_flops!r} instead."
        )
    if threads is not None and int(threads) < 1:
        raise SparsifyError(
            f"The 'threads' parameter of sparsify_inference_ must be an integer >= 1 or None. Got {threads!r} instead."
        )
    unavailable: dict[str, str] = {}
    compiled = (*SPK_KERNELS, STENCIL)  # the kernels that need sparsify's C library
    why_spk = spk_unavailable_reason() if set(kernels) & set(compiled) else None
    if why_spk is not None:
        unavailable = {k: why_spk for k in kernels if k in compiled}
        kernels = tuple(k for k in kernels if k not in compiled)
    model.eval()
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, REPORTED) and (filter_fn is None or filter_fn(m, n))
    ]
    if any(name == "" for name, _ in layers):
        raise SparsifyError(
            f"sparsify_inference_ replaces layers inside a model; got a bare {type(model).__name__}: "
            "wrap it, e.g. nn.Sequential(layer)."
        )
    pools = [n for n, m in model.named_modules() if n and poolable(m)] if STENCIL in kernels else []
    check: _OutputCheck | None = None
    if example_input is not None:
        shapes, y32 = _record_inputs(model, [n for n, _ in layers] + pools, example_input)
        batch = int(example_input.shape[0])
        if verify:
            check = _OutputCheck(model, example_input, y32)
        del y32
    else:
        shapes = {
            n: (int(batch_size), m.in_features) for n, m in layers if isinstance(m, nn.Linear)
        }
        batch = int(batch_size)
    folded = [f"{c} <- {b}" for c, b in fold_batchnorm_(model)] if fold_batchnorm else []
    # found on the unconverted model: torch.fx traces its own layers, not the sparse ones
    act_pairs = activation_pairs(model, {n for n, _ in layers}) if fuse_activations else []
    stencil_chains = fuse_activations and STENCIL in kernels and {"spk", "spk_csr"} & set(kernels)
    chains = expand_dw_chains(model) if stencil_chains else []
    proj_chains = dw_project_chains(model) if stencil_chains else []
    rules = _parent_reads(model, example_input is not None)
    decisions: dict[str, LayerDecision] = {}
    originals: dict[str, nn.Module] = {}  # name -> the dense module, to revert to
    sparse: dict[str, nn.Module] = {}
    with torch_threads(threads) as n_threads, torch.no_grad():
        for name, module in layers:
            if name in rules:
                d, new = _listed(name, module), None
                d.input_shape, d.reason = shapes.get(name), rules[name]
            else:
                d, new = _decide(
                    name,
                    module,
                    shapes.get(name),
                    mode=mode,
                    kernels=tuple(kernels),
                    max_density=max_density,
                    margin=margin,
                    reps=int(reps),
                    example=example_input is not None,
                    overhead_flops=overhead_flops,
                )
            if new is not None:
                originals[name], sparse[name] = module, new
                model.set_submodule(name, new)
            decisions[name] = d
    report = InferenceReport(
        mode,
        batch,
        n_threads,
        margin,
        list(decisions.values()),
        unavailable=unavailable,
        folded=folded,
    )
    if check is not None:
        report.check = _check_and_revert(model, check, sparse, originals, decisions)
        if mode == "calibrate" and sparse and report.check.startswith("ok"):
            with torch_threads(threads), torch.inference_mode():
                report.whole = _time_whole(
                    model, example_input, sparse, originals, decisions, int(reps)
                )
        if report.check.startswith("ok"):  # counted last: the whole-model timing may revert
            report.check += f" ({len(sparse)} layer(s) sparse)"
    elif example_input is None:
        report.check = "not checked: no example_input to run"
    else:
        report.check = "not checked: verify=False"
    if (pools or act_pairs or chains or proj_chains) and (
        check is None or report.check.startswith("ok")
    ):
        # the pools to offer, with their input shapes; None: all, untimed (no example input)
        pool_shapes = (
            {n: shapes[n] for n in pools if n in shapes} if example_input is not None else None
        )
        if mode == "calibrate" and pool_shapes is None:
            pool_shapes = {}  # nothing to time them on
        chain_shapes = (
            {a: shapes[a] for a, _, _ in chains + proj_chains if a in shapes}
            if example_input is not None
            else None
        )
        with torch_threads(threads), torch.no_grad():
            _finish_checked(
                model, act_pairs, pool_shapes, mode, reps, margin, check, sparse, report,
                chains, proj_chains, chain_shapes,
            )  # fmt: skip
    return report


def _finish_checked(
    model: nn.Module,
    pairs: list[tuple[str, str]],
    pool_shapes: dict[str, tuple[int, ...]] | None,
    mode: str,
    reps: int,
    margin: float,
    check: _OutputCheck | None,
    sparse: dict[str, nn.Module],
    report: InferenceReport,
    chains: list[tuple[str, str | None, str]],
    proj_chains: list[tuple[str, str | None, str]],
    chain_shapes: dict[str, tuple[int, ...]] | None,
) -> None:
    """The last steps, on the decided model: max pools on the stencil where faster, the
    activations of ``pairs`` fused into the converted layers, the 1x1 + depthwise ``chains``
    fused where faster, then the depthwise + 1x1 ``proj_chains``; with a ``check``, run it
    again and undo them all if the output no longer passes (noted in ``report.check``).
    Fills ``report.pools``, ``report.fused``, ``report.blocks`` and ``report.projections``."""
    report.pools, pooled = replace_pools_(
        model, pool_shapes, timed=mode == "calibrate", reps=int(reps), margin=margin
    )
    fused = fuse_activations_(model, pairs) if sparse else []
    blocks: list = []
    if chains and sparse and chain_shapes:
        report.blocks, blocks = fuse_expand_depthwise_(
            model, list(chains), chain_shapes, timed=mode == "calibrate", reps=int(reps),
            margin=margin,
        )  # fmt: skip
    projected: list = []
    if proj_chains and sparse and chain_shapes:
        expanded = {b: a for a, b, _, _ in blocks}  # depthwise -> the pair now holding it
        report.projections, projected = fuse_depthwise_project_(
            model, list(proj_chains), expanded, chain_shapes, timed=mode == "calibrate",
            reps=int(reps), margin=margin,
        )  # fmt: skip
    if (fused or pooled or blocks or projected) and check is not None:
        why, _ = check(model, sparse)
        if why:
            unfuse_pairs_(model, projected)
            unfuse_pairs_(model, blocks)
            unfuse_(model, fused)
            restore_(model, pooled)
            report.check += f"; pools and activations left as they were: with them {why}"
            report.pools = [f"{line} (undone)" for line in report.pools]
            report.blocks = [f"{line} (undone)" for line in report.blocks]
            report.projections = [f"{line} (undone)" for line in report.projections]
            return
    report.fused = [f"{a} <- {b}" for a, b, _ in fused]


def _time_whole(
    model: nn.Module,
    example_input: torch.Tensor,
    sparse: dict[str, nn.Module],
    originals: dict[str, nn.Module],
    decisions: dict[str, LayerDecision],
    reps: int,
) -> str:
    """Time the converted model against its dense self on ``example_input`` (interleaved,
    paired ratios r_i = t_dense_i / t_sparse_i). Per-layer gains can vanish in the whole
    model (call overhead, cache effects between layers): if median(r) < 1 every layer goes
    back to dense, so the converter never hands back a model slower than the one it got.
    Returns ``report.whole``."""
    dense_mods = {n: originals[n] for n in sparse}
    sparse_mods = dict(sparse)

    def run(mods: dict[str, nn.Module]) -> Any:
        for name, m in mods.items():
            model.set_submodule(name, m)
        return model(example_input)

    timings = time_interleaved(
        {"dense_model": lambda: run(dense_mods), "sparse_model": lambda: run(sparse_mods)},
        reps=max(reps, 5),
        warmup=1,
        min_sample_s=1e-3,
    )
    for name, m in sparse_mods.items():  # leave the converted layers in place
        model.set_submodule(name, m)
    r = paired_ratio(timings["dense_model"].samples, timings["sparse_model"].samples)
    t_dense, t_sparse = timings["dense_model"].median, timings["sparse_model"].median
    said = (
        f"{r.median:.2f}x dense (lower quartile {r.q25:.2f}x; {fmt_seconds(t_sparse)} against "
        f"{fmt_seconds(t_dense)})"
    )
    if r.median >= 1.0:
        return said
    _revert_all(
        model,
        originals,
        sparse,
        decisions,
        f"reverted to dense: the whole converted model ran {r.median:.2f}x dense",
    )
    return f"{said}: slower than dense as a whole, so every layer was reverted"


def _revert(
    model: nn.Module,
    name: str,
    originals: dict[str, nn.Module],
    sparse: dict[str, nn.Module],
    d: LayerDecision,
    reason: str,
) -> None:
    model.set_submodule(name, originals[name])
    del sparse[name]
    d.chosen, d.speedup, d.reason = "dense", None, f"{reason} (was {d.chosen}: {d.reason})"


def _revert_all(
    model: nn.Module,
    originals: dict[str, nn.Module],
    sparse: dict[str, nn.Module],
    decisions: dict[str, LayerDecision],
    reason: str,
) -> None:
    """:func:`_revert` every layer still sparse, each with ``reason``."""
    for name in list(sparse):
        _revert(model, name, originals, sparse, decisions[name], reason)


def _check_and_revert(
    model: nn.Module,
    check: _OutputCheck,
    sparse: dict[str, nn.Module],
    originals: dict[str, nn.Module],
    decisions: dict[str, LayerDecision],
) -> str:
    """Run the converted model on the example. If it passes, revert the sparse layers its
    parents bypass (they would only cost a dense copy per read); if not, re-apply the sparse
    layers one at a time and revert each that breaks the model or is bypassed. Returns
    ``report.check``."""
    bypassed = (
        "kept dense: its parent did not call it once converted (it reads the weight itself,"
        " e.g. torch's fused transformer fast path)"
    )
    why, called = check(model, sparse)
    if not why:
        for name in [n for n in sparse if n not in called]:
            _revert(model, name, originals, sparse, decisions[name], bypassed)
    else:
        candidates = dict(sparse)
        for name in candidates:  # all back to dense, then one at a time
            model.set_submodule(name, originals[name])
        sparse.clear()
        for name, new in candidates.items():
            model.set_submodule(name, new)
            sparse[name] = new
            why_one, called = check(model, sparse)
            if why_one or name not in called:
                reason = (
                    f"reverted to dense: with this layer sparse {why_one}" if why_one else bypassed
                )
                _revert(model, name, originals, sparse, decisions[name], reason)
    why, _ = check(model, sparse)
    if why:  # the layers that passed one by one fail together: leave the model dense
        _revert_all(
            model,
            originals,
            sparse,
            decisions,
            f"reverted to dense: the layers that passed one at a time fail together: {why}",
        )
        why, _ = check(model, sparse)
        if why:  # the dense model itself differs from run to run
            return f"FAILED: the original model fails its own check: {why}"
    return f"ok: {check.last} on example_input"
