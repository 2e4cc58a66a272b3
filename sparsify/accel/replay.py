"""Replay: a converted model's forward as a fixed list of kernel calls, per input shape.

At batch 1 a converted layer's own work can be a few microseconds while its Python call
(``nn.Module.__call__``, the forward's checks, the plan lookup, the output allocation) costs
15-21 us, run cold because each kernel evicts the interpreter's working set: on
mobilenet_v2 at 90% zeros that was 22% of the forward (`results/probes/2026-12-04-overhead/`).
:class:`Replay` wraps a converted model and, on the first call with an input shape, records
what one forward does (traced by ``torch.fx``, the converted layers as leaves): each
converted layer that ran on the C kernels becomes its one recorded kernel call, bound to an
output buffer of its own; every other node (residual adds, pooling, layers left to torch)
runs as in the model. Later calls with that shape run the list:

    replay = Replay(model)             # model converted by sparsify_inference_, in eval mode
    y = replay(x)                      # first call per shape: records, checks, returns
    y = replay(x)                      # the recorded kernel calls; y is a new tensor

Contract: the replay of a shape is checked once, bitwise, against the model's own output on
the input that recorded it, and refused (the model runs as is) if it differs. It stays valid
while the model is not changed: ``.to()`` / ``.cuda()`` / ``.double()`` on the Replay, a copy or
a pickle drop every recording; after changing the wrapped model in place (new weights,
another conversion) call :meth:`Replay.reset`. Forward hooks of the converted layers do not
run in a replay. A model that ``torch.fx`` cannot trace runs as is (``replay.why`` says why).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from sparsify import kernels as spk
from sparsify.errors import SparsifyError

# the kernel entry points a converted layer's fast path calls once per forward, and where in
# their arguments the input address, output address and thread count are
_ENTRIES: dict[str, tuple[int, int, int]] = {
    "sparse_conv2d_into": (1, 2, 4),  # (plan, x, y, bias, threads, act)
    "stencil_run": (1, 5, 6),  # (plan, x, w, bias, act, y, threads, ...)
    "spmm_into": (1, 3, 5),  # (sw, x, batch, y, bias, threads, act)
}
MAX_SHAPES = 8  # recordings kept per Replay (one per input shape)


class _LeafTracer(fx.Tracer):
    """torch.fx's tracer with sparsify's converted layers as leaves (they are called, not
    traced through)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("sparsify.accel.") or super().is_leaf_module(
            m, qualname
        )


@dataclass
class _Kernel:
    """One recorded kernel call: ``fn(*args)`` with the input, output and thread slots
    filled at each replay."""

    fn: Callable[..., Any]
    args: list[Any]
    x_slot: int
    y_slot: int
    t_slot: int
    src: int  # index of the node whose value is the input
    out: torch.Tensor  # this node's own output buffer
    module: nn.Module  # kept alive: the recorded addresses are its bias and activation


@dataclass
class _Program:
    steps: list[tuple[int, Any]]  # (node index, _Kernel or (fn, args, kwargs) of the node)
    n_nodes: int
    inp: int  # index of the input node
    output: Any  # fx output structure with node indices in place of nodes
    buffers: frozenset[int]  # the kernel steps' buffers (storage addresses)
    kernels: int  # how many steps are recorded kernel calls


def _recording(calls: list[tuple[str, tuple]]) -> dict[str, Callable[..., Any]]:
    """Wrappers of the kernel entries that append (name, args) to ``calls`` and run them."""

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def rec(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, None if kwargs else args))  # keywords: not replayed
            return real(*args, **kwargs)

        return rec

    return {name: wrap(name, getattr(spk, name)) for name in _ENTRIES}


class Replay(nn.Module):
    """``model``'s forward, replayed per input shape as its recorded kernel calls (module
    docstring). ``replay.why`` says why the last shape is not replayed (None: it is)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise SparsifyError(
                f"Replay wraps an nn.Module (a model converted by sparsify_inference_); got "
                f"{type(model).__name__}."
            )
        self.model = model
        self._programs: dict[tuple, _Program | None] = {}
        self.why: str | None = None
        # one replay at a time: the recorded buffers and argument lists are shared
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Drop every recording (after the wrapped model was changed in place)."""
        self._programs = {}

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        self.reset()  # the recorded addresses are the old tensors'
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_programs"] = {}  # addresses mean nothing in a copy or another process
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``model(*args, **kwargs)``; replayed where that is one tensor (module docstring)."""
        if len(args) != 1 or kwargs or not self._replayable(args[0]):
            return self.model(*args, **kwargs)
        if not self._lock.acquire(blocking=False):
            return self.model(*args)  # another thread is replaying: the model is safe to share
        try:
            return self._forward(args[0])
        finally:
            self._lock.release()

    def _forward(self, x: torch.Tensor) -> Any:
        key = (tuple(x.shape), torch.is_inference_mode_enabled())
        if key not in self._programs:
            if len(self._programs) >= MAX_SHAPES:
                self._programs.pop(next(iter(self._programs)))
            return self._record(x, key)
        program = self._programs[key]
        if program is None:
            return self.model(x)
        return _run(program, x, torch.get_num_threads())

    def _replayable(self, x: Any) -> bool:
        return (
            isinstance(x, torch.Tensor)
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and x.is_contiguous()
            and not (torch.is_grad_enabled() and x.requires_grad)
            and not self.model.training
        )

    def _record(self, x: torch.Tensor, key: tuple) -> Any:
        """Trace, run once node by node recording the kernel calls, check a replay of them
        against that output bitwise; keep the program (or None, with ``why``)."""
        ref = self.model(x)
        try:
            program = _capture(self.model, x)
        except SparsifyError as err:
            self.why = str(err)
            self._programs[key] = None
            return ref
        again = _run(program, x, torch.get_num_threads())
        if not _same(ref, again):
            self.why = "the recorded calls did not reproduce the model's output; it runs as is"
            self._programs[key] = None
            return ref
        self.why = None
        self._programs[key] = program
        return again

    def summary(self) -> dict[str, Any]:
        """Per recorded shape: steps and how many of them are kernel calls (None: refused)."""
        return {
            str(list(k[0])): None if p is None else {"steps": len(p.steps), "kernels": p.kernels}
            for k, p in self._programs.items()
        }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _capture(model: nn.Module, x: torch.Tensor) -> _Program:
    """Trace ``model`` and run it once on ``x`` node by node; each converted layer whose call
    made exactly one kernel call, on its input in place, into its output, becomes that call."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as err:  # fx raises many types on untraceable Python
        raise SparsifyError(
            f"torch.fx cannot trace this model ({type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0][:120]}); "
            "it runs as is."
        ) from None
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SparsifyError(
            f"the model's forward takes {len(placeholders)} inputs; replay takes one tensor."
        )
    inp = index[placeholders[0]]
    env: list[Any] = [None] * len(nodes)
    steps: list[tuple[int, Any]] = []
    output: Any = None
    kernels = 0
    modules = dict(model.named_modules())
    for i, node in enumerate(nodes):
        if node.op == "placeholder":
            env[i] = x
            continue
        if node.op == "output":
            output = fx.node.map_arg(node.args[0], lambda n: _Ref(index[n]))
            continue
        args = fx.node.map_arg(node.args, lambda n: _Ref(index[n]))
        kwargs = fx.node.map_arg(node.kwargs, lambda n: _Ref(index[n]))
        if node.op == "call_module":
            fn: Callable[..., Any] = modules[node.target]
        elif node.op == "call_function":
            fn = node.target
        elif node.op == "call_method":
            fn = getattr(torch.Tensor, node.target)
        else:  # get_attr: a parameter or buffer read in forward
            env[i] = _attr(model, node.target)
            steps.append((i, (_attr, (model, node.target), {})))
            continue
        if isinstance(fn, nn.Identity) and len(args) == 1 and not kwargs:
            env[i] = env[args[0]]
            steps.append((i, _Alias(args[0])))
            continue
        step = None
        if node.op == "call_module" and type(fn).__module__.startswith("sparsify.accel."):
            step = _kernel_step(fn, args, kwargs, env)
        if step is not None:
            kernel, value = step
            env[i] = value
            steps.append((i, kernel))
            kernels += 1
        else:
            env[i] = fn(*_values(args, env), **_values(kwargs, env))
            steps.append((i, (fn, args, kwargs)))
    _share_buffers(steps, env, output, len(nodes))
    buffers = frozenset(
        s.out.untyped_storage().data_ptr() for _, s in steps if isinstance(s, _Kernel)
    )
    return _Program(
        steps=steps, n_nodes=len(nodes), inp=inp, output=output, buffers=buffers, kernels=kernels
    )


def _refs(tree: Any) -> list[int]:
    """The node indices (``_Ref``) in a node's args, kwargs or output structure."""
    out: list[int] = []
    fx.node.map_aggregate(tree, lambda a: out.append(int(a)) if isinstance(a, _Ref) else a)
    return out


def _storages(value: Any) -> set[int]:
    found: set[int] = set()
    fx.node.map_aggregate(
        value,
        lambda t: found.add(t.untyped_storage().data_ptr()) if isinstance(t, torch.Tensor) else t,
    )
    return found


def _reads(step: Any) -> list[int]:
    """The nodes a step reads."""
    if isinstance(step, _Kernel):
        return [step.src]
    if isinstance(step, _Alias):
        return [int(step)]
    return _refs(step[1:])  # (fn, args, kwargs)


def _share_buffers(steps: list[tuple[int, Any]], env: list[Any], output: Any, n: int) -> None:
    """Give the kernel steps output buffers shared by lifetime: a buffer is taken again once
    no later step reads it or anything viewing its memory (a flatten, an in-place add, an
    alias), the smallest free one that fits. One buffer per step would leave every layer
    writing to memory no cache holds (mobilenet_v2, batch 8: 1.02x the model against 1.12x
    shared; results/probes/2026-12-04-replay/share_ab.txt), where the model's own freed
    outputs come back hot from the allocator."""
    last = [-1] * n  # the last step that reads each node
    for pos, (_, step) in enumerate(steps):
        for r in _reads(step):
            last[r] = pos
    for r in _refs(output):
        last[r] = len(steps)  # read after the last step (and cloned)
    owner = {s.out.untyped_storage().data_ptr(): i for i, s in steps if isinstance(s, _Kernel)}
    free_after = {i: last[i] for i in owner.values()}
    for i, _ in steps:  # a node viewing a kernel buffer keeps it alive while it is read
        for ptr in _storages(env[i]):
            k = owner.get(ptr)
            if k is not None:
                free_after[k] = max(free_after[k], last[i])
    pool: list[torch.Tensor] = []
    busy: list[tuple[int, torch.Tensor]] = []  # (free after step, buffer)
    for pos, (_, step) in enumerate(steps):
        if not isinstance(step, _Kernel):
            continue
        pool += [buf for until, buf in busy if until < pos]
        busy = [(until, buf) for until, buf in busy if until >= pos]
        need = step.out.numel()
        fits = [j for j, b in enumerate(pool) if b.numel() >= need]
        if fits:
            buf = pool.pop(min(fits, key=lambda j: pool[j].numel()))
        else:
            buf = torch.empty(need, dtype=step.out.dtype)
        owner_node = owner[step.out.untyped_storage().data_ptr()]
        busy.append((free_after[owner_node], buf))
        step.out = buf[:need].view(step.out.shape)
        step.args[step.y_slot] = step.out.data_ptr()


def _attr(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _values(tree: Any, env: list[Any]) -> Any:
    """``tree`` (args or kwargs of a node, node indices as ``_Ref``) with each index read
    from ``env``."""
    if isinstance(tree, _Ref):
        return env[tree]
    if isinstance(tree, tuple):
        return tuple(_values(t, env) for t in tree)
    if isinstance(tree, list):
        return [_values(t, env) for t in tree]
    if isinstance(tree, dict):
        return {k: _values(v, env) for k, v in tree.items()}
    return tree


class _Alias(int):
    """A step whose value is another node's (an ``nn.Identity``)."""


class _Ref(int):
    """A node index inside a node's arguments (an int argument stays an int)."""


def _kernel_step(
    module: nn.Module, args: Any, kwargs: Any, env: list[Any]
) -> tuple[_Kernel, torch.Tensor] | None:
    """Call ``module`` once, recording its kernel calls; the step that replays its one call
    into a buffer of its own, with that buffer holding this call's output; None where the
    call was anything else (no kernel, several, or not on the input in place)."""
    if kwargs or len(args) != 1 or not isinstance(args[0], _Ref):
        return None
    src = int(args[0])
    xin = env[src]
    if not isinstance(xin, torch.Tensor):
        return None
    calls: list[tuple[str, tuple]] = []
    saved = {name: getattr(spk, name) for name in _ENTRIES}
    try:
        for name, rec in _recording(calls).items():
            setattr(spk, name, rec)
        y = module(xin)
    finally:
        for name, real in saved.items():
            setattr(spk, name, real)
    if len(calls) != 1 or not isinstance(y, torch.Tensor) or not y.is_contiguous():
        return None
    name, recorded = calls[0]
    if recorded is None:
        return None
    x_slot, y_slot, t_slot = _ENTRIES[name]
    if recorded[x_slot] != xin.data_ptr() or recorded[y_slot] != y.data_ptr():
        return None  # a copy of the input, or an output that is not the kernel's
    out = y.clone()  # provisional: _share_buffers gives each step its buffer
    kernel = _Kernel(
        fn=saved[name],
        args=list(recorded),
        x_slot=x_slot,
        y_slot=y_slot,
        t_slot=t_slot,
        src=src,
        out=out,
        module=module,
    )
    kernel.args[y_slot] = out.data_ptr()
    return kernel, out


def _run(program: _Program, x: torch.Tensor, threads: int) -> Any:
    """Run ``program`` on ``x``; outputs in recorded buffers are cloned (the next replay
    overwrites those)."""
    env: list[Any] = [None] * program.n_nodes
    env[program.inp] = x
    for i, step in program.steps:
        if isinstance(step, _Kernel):
            a = step.args
            a[step.x_slot] = env[step.src].data_ptr()
            a[step.t_slot] = threads
            step.fn(*a)
            env[i] = step.out
        elif isinstance(step, _Alias):
            env[i] = env[step]
        else:
            fn, args, kwargs = step
            env[i] = fn(*_values(args, env), **_values(kwargs, env))
    return _fresh(_values(program.output, env), program.buffers)


def _fresh(tree: Any, buffers: set[int]) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.clone() if tree.untyped_storage().data_ptr() in buffers else tree
    if isinstance(tree, (list, tuple)):
        return type(tree)(_fresh(t, buffers) for t in tree)
    if isinstance(tree, dict):
        return {k: _fresh(v, buffers) for k, v in tree.items()}
    return tree
