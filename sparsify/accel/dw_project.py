"""A depthwise conv and the 1x1 projection after it as one kernel.

An inverted-residual block ends with a 3x3 depthwise conv (clamped by ReLU6) whose output
goes only into a 1x1 conv that projects it back to the narrow width. Converted layer by
layer, the depthwise conv (or the fused expansion + depthwise conv of
:mod:`sparsify.accel.expand_dw`) writes its E-channel output and the projection reads it
back: at batch 8 on mobilenet_v2's 112-28 pixel blocks 3-15 MB each way, more than the L2
holds. Fused (``kernels.stencil_plan(DEPTHWISE_PROJECT, ...)``), each image is done a band of
output rows at a time: every channel's rows of the band go into a buffer that stays in L2 and
the projection reads them from there. With an expansion in front, the whole block up to the
residual add is one kernel. The converter offers the fusion for every depthwise conv (or
fused pair) on the C kernels whose output, through a folded batch norm and a clamp it fused,
goes only into a converted 1x1 conv, and keeps it where it times faster than the layers
apart (``calibrate``; untimed modes: never, until measurements say where it always wins).
The result equals the layers' within fp32 rounding: the same depthwise sums, the projection's
in CSR order instead of its packed order.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsify import kernels as spk
from sparsify.accel.expand_dw import ExpandDepthwise, _depthwise_m1, _pointwise
from sparsify.accel.fuse import clamp_chains
from sparsify.accel.layers import (
    DepthwiseConv2d,
    SparseConv2d,
    cpu_float32,
    per_shape,
    run_stencil,
)
from sparsify.accel.pairs import fuse_pair_, registered_once
from sparsify.errors import SparsifyError


def fusable(source: nn.Module, project: nn.Module) -> bool:
    """``source`` (a :class:`DepthwiseConv2d` of multiplier 1, or an :class:`ExpandDepthwise`)
    and ``project`` (a converted 1x1 conv on the spk kernels: stride 1, no padding, groups 1,
    reading all of its channels) can run as one :class:`DepthwiseProject`; none with hooks."""
    dw = source.depthwise if type(source) is ExpandDepthwise else source
    return (
        type(dw) is DepthwiseConv2d
        and dw.in_channels == dw.out_channels
        and isinstance(project, SparseConv2d)
        and project.weight_spk is not None
        and _pointwise(project)
        and project.in_features == dw.out_channels
        and not any(m._forward_hooks or m._forward_pre_hooks for m in (source, dw, project))
    )


class DepthwiseProject(nn.Module):
    """``project(source(x))`` in one pass of the C kernels for a float32 CPU input that needs
    no gradient (and, with an expansion, is at least a vector wide); anything else runs the
    layers, which stay inside as ``source`` and ``project``."""

    kernel = "spk_dw_project"

    def __init__(self, source: DepthwiseConv2d | ExpandDepthwise, project: SparseConv2d) -> None:
        super().__init__()
        if not fusable(source, project):
            raise SparsifyError(
                f"DepthwiseProject needs a DepthwiseConv2d (multiplier 1) or ExpandDepthwise and "
                f"a 1x1 SparseConv2d on the spk kernels reading all its channels; got {source} "
                f"and {project}. Keep the layers apart."
            )
        self.source, self.project = source, project
        # the projection's CSR the kernel reads (owned here: a packed call holds its addresses)
        self._csr = spk.expand_csr(project.dense_weight().detach().numpy())

    def _depthwise(self) -> DepthwiseConv2d:
        source = self._modules["source"]
        return source._modules["depthwise"] if type(source) is ExpandDepthwise else source

    def _plan(self, x_shape: tuple[int, ...]) -> spk.StencilPlan | None:
        """The checked, packed kernel call for this input shape (``per_shape``), None where
        the C kernels cannot run it."""
        source, dw = self._modules["source"], self._depthwise()

        def make() -> spk.StencilPlan | None:
            expanded = type(source) is ExpandDepthwise
            csr = tuple(spk._ptr(a) for a in source._csr) if expanded else None
            project = (*(spk._ptr(a) for a in self._csr), self._modules["project"].out_features)
            return dw.plan_on(spk.DEPTHWISE_PROJECT, x_shape, csr, project)

        return per_shape(self, (x_shape, spk._epoch), make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules  # not self.source: nn.Module's __getattr__ costs ~0.3 us a read
        source, project = modules["source"], modules["project"]
        expand = source._modules["expand"] if type(source) is ExpandDepthwise else None
        dw = self._depthwise()
        w = dw.weight
        if (
            x.dim() == 4
            and cpu_float32(x, w)
            and project._spk_here
            and (expand is None or expand._spk_here)
            and x.shape[1] == (dw.in_channels if expand is None else expand.in_features)
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
        ):
            plan = self._plan(x.shape)
            if plan is not None:
                return run_stencil(self, plan, x, dw, expand, project)
        return project(source(x))


def dw_project_chains(model: nn.Module) -> list[tuple[str, str | None, str]]:
    """``(depthwise, clamp, conv)`` names of the unconverted (batch-norm folded) ``model``
    where a depthwise conv of multiplier 1's output goes, through ``nn.Identity`` and one
    clamp activation at most (``clamp``: its name, or None), only into a 1x1 conv
    (:mod:`sparsify.accel.pairs`, traced)."""
    if not any(_depthwise_m1(m) for m in model.modules()):
        return []
    return clamp_chains(model, _depthwise_m1, lambda m: isinstance(m, nn.Conv2d) and _pointwise(m))


def fuse_depthwise_project_(
    model: nn.Module,
    chains: list[tuple[str, str | None, str]],
    expanded: dict[str, str],
    shapes: dict[str, tuple[int, ...]],
    *,
    timed: bool,
    reps: int,
    margin: float,
) -> tuple[list[str], list[tuple[str, str, nn.Module, nn.Module]]]:
    """In place: for each chain of :func:`dw_project_chains` whose clamp, if any, went into
    the depthwise conv (it is ``nn.Identity`` now) and whose depthwise conv (or, where
    ``expanded`` maps its name to the expansion's, the :class:`ExpandDepthwise` that holds it)
    and 1x1 conv are now :func:`fusable`, the source becomes a :class:`DepthwiseProject` and
    the 1x1 conv ``nn.Identity``, where that is faster (``timed``: the converter's rule on a
    random input of the source's input shape in ``shapes``). Untimed: nothing is fused.
    Returns a report line per chain tried and what was replaced, for
    :func:`sparsify.accel.pairs.unfuse_`."""
    if not timed:
        return [], []
    once = registered_once(model)
    lines, done = [], []
    for d, act, c in chains:
        if act is not None and type(model.get_submodule(act)) is not nn.Identity:
            continue  # the clamp still runs between them: fusing would skip it
        src_name = expanded.get(d, d)
        source, project = model.get_submodule(src_name), model.get_submodule(c)
        if not (once(source) and once(project) and fusable(source, project)):
            continue
        shape = shapes.get(src_name)
        if shape is None or len(shape) != 4:
            continue
        line, entry = fuse_pair_(
            model, (src_name, c), f"{d} + {c}", source, project,
            DepthwiseProject(source, project), shape, timed=timed, reps=reps, margin=margin,
        )  # fmt: skip
        lines.append(line)
        done += [entry] if entry else []
    return lines, done
