"""Max pooling on the kernels' stencil: torch's NCHW ``max_pool2d`` is slow on this CPU.

On the project's Zen 4 host torch 2.14's CPU max pooling of a (1, 64, 112, 112) NCHW tensor
(resnet's 3x3 stride-2 pool) took 7.1 ms, about a third of a converted resnet18 at batch 1,
where ``kernels.max_pool2d`` (the depthwise stencil with a max in place of the weighted sum)
took 0.78 ms (results/probes/2026-12-04/maxpool.txt). The converter offers it to each ``nn.MaxPool2d`` it can
reproduce exactly (ceil_mode=False, no indices) wherever it offers the depthwise stencil, timed
against torch's at the layer's input shape in ``calibrate`` mode. The outputs are the same
floats: a max picks one of its inputs, and a NaN in a window gives NaN, as in torch.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from sparsify import kernels as spk
from sparsify.accel.layers import per_shape, reused_empty
from sparsify.errors import SparsifyError
from sparsify.timing import fmt_seconds, race, verdict


def poolable(module: nn.Module) -> bool:
    """A plain ``nn.MaxPool2d`` (not a subclass) that :class:`StencilMaxPool2d` reproduces:
    ceil_mode=False and return_indices=False, without hooks."""
    return (
        type(module) is nn.MaxPool2d
        and not module.ceil_mode
        and not module.return_indices
        and not (module._forward_hooks or module._forward_pre_hooks)
    )


class StencilMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed by ``kernels.max_pool2d`` for a float32 CPU input that needs
    no gradient; anything else takes torch's ``max_pool2d``, as the original did."""

    kernel = "spk_maxpool"

    @classmethod
    def from_pool(cls, pool: nn.MaxPool2d) -> StencilMaxPool2d:
        """The same pooling (see :func:`poolable`)."""
        if poolable(pool):
            return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation)
        raise SparsifyError(
            f"StencilMaxPool2d reproduces an nn.MaxPool2d without ceil_mode, indices or "
            f"hooks; got {pool}. Keep this pool as it is."
        )

    def _plan(self, x_shape: tuple[int, ...]) -> spk.StencilPlan | None:
        """The checked, packed kernel call for this input shape
        (:func:`~sparsify.accel.layers.per_shape`), None where the C kernels are not available."""

        def make() -> spk.StencilPlan | None:
            k, s, p, d, out_hw = spk._pool_geometry(
                x_shape, self.kernel_size, self.stride, self.padding, self.dilation
            )
            return spk.stencil_plan(spk.MAX_POOL, x_shape, k, s, p, d, 1, out_hw)

        return per_shape(self, (x_shape, spk._epoch), make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() == 4
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and not (x.requires_grad and torch.is_grad_enabled())
        ):
            plan = self._plan(tuple(x.shape))
            if plan is not None:
                x = x.contiguous()
                y = reused_empty(self, plan.out_shape)
                spk.stencil_run(
                    plan, x.data_ptr(), None, None, None, y.data_ptr(), torch.get_num_threads()
                )
                return y
        return super().forward(x)


def replace_pools_(
    model: nn.Module,
    shapes: dict[str, tuple[int, ...]] | None,
    *,
    timed: bool,
    reps: int,
    margin: float,
) -> tuple[list[str], list[tuple[str, nn.Module]]]:
    """In place: each :func:`poolable` MaxPool2d of ``model`` whose input shape is in
    ``shapes`` (None: every one, its shape unknown; then ``timed`` must be False) becomes a :class:`StencilMaxPool2d` where that is faster (``timed``: paired
    interleaved times on a random input of that shape, the converter's rule: median ratio >
    1 / (1 - margin) and lower quartile > 1) or always (not ``timed``). Returns one line per
    pool for the report, and ``(name, original)`` of each replaced, for :func:`restore_`."""
    lines, done = [], []
    for name, pool in list(model.named_modules()):
        if not name or not poolable(pool):
            continue
        if shapes is not None and (name not in shapes or len(shapes[name]) != 4):
            continue
        new = StencilMaxPool2d.from_pool(pool)
        measure = partial(_timed, pool, new, None if shapes is None else shapes[name], reps, margin)
        line, take = verdict(name, timed, measure, "kept torch's", "stencil")
        lines.append(line)
        if not take:
            continue
        model.set_submodule(name, new)
        done.append((name, pool))
    return lines, done


def _timed(
    pool: nn.Module, new: nn.Module, shape: tuple[int, ...], reps: int, margin: float
) -> tuple[str, bool]:
    """(what was measured, whether the stencil wins by the converter's rule)."""
    x = torch.randn(shape)
    with torch.inference_mode():
        if not torch.equal(new(x), pool(x)):
            return "the stencil's output differed", False
        t_torch, t_new, r, faster = race(lambda: pool(x), lambda: new(x), reps, margin)
    said = (
        f"stencil {fmt_seconds(t_new.median)} against torch's "
        f"{fmt_seconds(t_torch.median)}, {r.median:.2f}x (lower quartile {r.q25:.2f}x)"
    )
    return said, faster


def restore_(model: nn.Module, replaced: list[tuple[str, nn.Module]]) -> None:
    """Undo :func:`replace_pools_`."""
    for name, pool in replaced:
        model.set_submodule(name, pool)
