"""An inverted-residual block's 1x1 expansion and depthwise conv as one kernel.

mobilenet_v2's blocks widen their input 6x with a 1x1 conv (clamped by ReLU6), run a 3x3
depthwise conv on the wide tensor and project it back. Converted layer by layer, the 1x1 conv
writes the wide tensor (at batch 1, 96 x 112 x 112 floats: 4.8 MB, the largest in the net) and
the depthwise conv reads it back and copies it into its padded buffer. Fused
(``kernels.expand_depthwise_conv2d``), each wide channel is made a row at a time straight into
that buffer and never stored. The converter offers the fusion for every 1x1 conv (on the C
kernels) whose output, through a folded batch norm and a clamp activation at most, goes only
into a depthwise conv (multiplier 1, also on the kernels), and keeps it where it times faster
than the two layers, by the same rule as a layer (``calibrate``; always in the other modes).
The result equals the two layers' within fp32 rounding: the same sums, the 1x1 conv's in
CSR order instead of its packed order.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsify import kernels as spk
from sparsify.accel.fuse import clamp_chains
from sparsify.accel.layers import (
    DepthwiseConv2d,
    SparseConv2d,
    cpu_float32,
    is_depthwise,
    per_shape,
    run_stencil,
)
from sparsify.accel.pairs import fuse_pair_, registered_once
from sparsify.errors import SparsifyError


def _pointwise(m: nn.Module) -> bool:
    """A 1x1 conv at stride 1, no padding, groups 1 (an nn.Conv2d or a converted one)."""
    return (
        getattr(m, "kernel_size", None) == (1, 1)
        and m.stride == (1, 1)
        and m.padding == (0, 0)
        and m.groups == 1
    )


def _depthwise_m1(m: nn.Module) -> bool:
    return is_depthwise(m) and m.out_channels == m.in_channels


def fusable(expand: nn.Module, depthwise: nn.Module) -> bool:
    """``expand`` (a converted 1x1 conv on the spk kernels: stride 1, no padding, groups 1)
    and ``depthwise`` (a :class:`DepthwiseConv2d`, multiplier 1, as many channels) can run as
    one :class:`ExpandDepthwise`; neither with hooks."""
    return (
        isinstance(expand, SparseConv2d)
        and expand.weight_spk is not None
        and _pointwise(expand)
        and type(depthwise) is DepthwiseConv2d
        and depthwise.in_channels == depthwise.out_channels == expand.out_channels
        and not any(m._forward_hooks or m._forward_pre_hooks for m in (expand, depthwise))
    )


class ExpandDepthwise(nn.Module):
    """``depthwise(expand(x))`` in one pass of ``kernels.expand_depthwise_conv2d`` for a
    float32 CPU input that needs no gradient and is at least a vector wide; anything else
    runs the two layers, which stay inside as ``expand`` and ``depthwise``."""

    kernel = "spk_expand_dw"

    def __init__(self, expand: SparseConv2d, depthwise: DepthwiseConv2d) -> None:
        super().__init__()
        if not fusable(expand, depthwise):
            raise SparsifyError(
                f"ExpandDepthwise needs a 1x1 SparseConv2d on the spk kernels and a "
                f"DepthwiseConv2d of as many channels (multiplier 1); got {expand} and "
                f"{depthwise}. Keep the two layers."
            )
        self.expand, self.depthwise = expand, depthwise
        # the CSR the kernel reads (owned here: a packed call holds its addresses)
        self._csr = spk.expand_csr(expand.dense_weight().detach().numpy())

    def _plan(self, x_shape: tuple[int, ...]) -> spk.StencilPlan | None:
        """The checked, packed kernel call for this input shape (``per_shape``), None where
        the C kernels cannot run it."""
        dw = self._modules["depthwise"]

        def make() -> spk.StencilPlan | None:
            csr = tuple(spk._ptr(a) for a in self._csr)
            return dw.plan_on(spk.EXPAND_DEPTHWISE, x_shape, csr)

        return per_shape(self, (x_shape, spk._epoch), make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules  # not self.expand: nn.Module's __getattr__ costs ~0.3 us a read
        expand, dw = modules["expand"], modules["depthwise"]
        w = dw.weight
        if (
            x.dim() == 4
            and cpu_float32(x, w)
            and expand._spk_here
            and x.shape[1] == expand.in_features
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
        ):
            plan = self._plan(x.shape)
            if plan is not None:
                return run_stencil(self, plan, x, dw, expand)
        return dw(expand(x))


def expand_dw_chains(model: nn.Module) -> list[tuple[str, str | None, str]]:
    """``(conv, clamp, depthwise)`` names of the unconverted (batch-norm folded) ``model``
    where a 1x1 conv's output goes, through ``nn.Identity`` and one clamp activation at most
    (``clamp``: its name, or None), only into a depthwise conv of multiplier 1
    (:mod:`sparsify.accel.pairs`, traced)."""
    if not any(_depthwise_m1(m) for m in model.modules()):
        return []
    return clamp_chains(model, lambda m: isinstance(m, nn.Conv2d) and _pointwise(m), _depthwise_m1)


def fuse_expand_depthwise_(
    model: nn.Module,
    chains: list[tuple[str, str | None, str]],
    shapes: dict[str, tuple[int, ...]],
    *,
    timed: bool,
    reps: int,
    margin: float,
) -> tuple[list[str], list[tuple[str, str, nn.Module, nn.Module]]]:
    """In place: for each chain of :func:`expand_dw_chains` whose two layers are now
    :func:`fusable` and whose clamp, if any, went into the conv (it is ``nn.Identity`` now),
    the conv becomes an :class:`ExpandDepthwise` and the depthwise conv ``nn.Identity``,
    where that is faster (``timed``: the converter's rule on a random input of the conv's
    input shape in ``shapes``; a conv whose shape is not there is left alone) or, untimed,
    where the depthwise conv has stride 1 and rows at least two vectors wide (faster in every
    measurement of ``results/probes/2026-12-04-fused/``; some stride-2 and 14-pixel pairs
    were slower).
    Returns a report line per chain tried and what was replaced, for
    :func:`sparsify.accel.pairs.unfuse_`."""
    once = registered_once(model)
    lines, done = [], []
    for a, act, b in chains:
        expand, dw = model.get_submodule(a), model.get_submodule(b)
        if act is not None and type(model.get_submodule(act)) is not nn.Identity:
            continue  # the clamp still runs between them: fusing would skip it
        if not (once(expand) and once(dw) and fusable(expand, dw)):
            continue
        shape = shapes.get(a)
        if shape is None or len(shape) != 4 or shape[3] < spk_width():
            continue
        if not timed and (dw.stride != (1, 1) or shape[3] < 2 * spk_width()):
            continue  # untimed: only where it was faster in every measurement
        line, entry = fuse_pair_(
            model, (a, b), f"{a} + {b}", expand, dw, ExpandDepthwise(expand, dw), shape,
            timed=timed, reps=reps, margin=margin,
        )  # fmt: skip
        lines.append(line)
        done += [entry] if entry else []
    return lines, done


def spk_width() -> int:
    """The C kernels' vector width (1 where they are not available: nothing fuses then)."""
    lib = spk._lib()
    return 1 << 30 if lib is None else int(lib.vector_width)
