"""Shrink: physically remove dead output neurons/channels, so the dense model itself gets smaller.

A Linear row or Conv filter whose weights are all zero is *dead*: its output no longer
depends on the input. It is removed together with the matching input slice of every layer
that reads it (and its BatchNorm entries). The result computes the same function (checked
on an example input, 1e-5) with smaller dense matrices, in any runtime.

How the network is read (torch.fx, nothing hard-coded per model):
    * every Linear/Conv (groups=1) *produces* a channel set, and *consumes* the set of its input;
    * per-channel ops pass a set through unchanged: BatchNorm (its entries are sliced),
      elementwise activations, Dropout, max/adaptive pooling, flatten (a channel then
      covers H*W consecutive features of the consuming Linear);
    * an elementwise op of two sets (a residual ``add``) *ties* them: one set, whose channel
      c is live if any of its producers has c live (the union of live channels);
    * anything else that touches a set (the model output, concat, grouped convs, reshapes
      to other shapes, padded average pooling, ...) *pins* it: all its channels are kept.

A dead channel is not always silent: a zero filter with bias b emits the constant b, then
relu(b), BatchNorm's shift, a max-pool of a constant, ... so the consumer sees a spatially
uniform constant k. It is *folded*: the consumer's bias absorbs ``W[:, c] . k`` (a bias is
created if the consumer had none). For a consumer conv with zero padding the constant's
contribution differs at the borders (fewer taps see it), which no bias can express: such
a channel is *kept* unless its constant is exactly 0. Constants are read from one forward
pass in eval mode and checked to be uniform. Equivalence is therefore an eval-mode contract:
in train mode BatchNorm normalises with batch statistics, under which a dead channel's
constant (and so the folded bias) would differ.

Saving: the shrunk model has the original module tree with narrower tensors, so its
state_dict alone describes it; :func:`resize_to_state_dict_` rebuilds a zoo model at those
widths before a strict ``load_state_dict``.
"""

from __future__ import annotations

import math
import operator
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from sparsify.errors import SparsifyError
from sparsify.structure.surgery import BN_TYPES, CONV_TYPES, resize_to_state_dict_, set_param

__all__ = [
    "ShrinkReport",
    "build_checkpoint_model",
    "count_macs",
    "count_params",
    "layer_widths",
    "measure_latency",
    "resize_to_state_dict_",
    "shrink_",
]

# channel-wise ops that map a spatially uniform input to a uniform output
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
PASS_FUNCTIONS: set[Any] = {
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.dropout,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
}
PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone"}
BINARY_FUNCTIONS: set[Any] = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.mul,
    torch.add,
    torch.sub,
    torch.mul,
}
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_"}


# ----------------------------------------------------------------------------- graph reading


@dataclass
class _Group:
    """One tied channel set: who writes it, who slices it per channel, who reads it."""

    size: int
    producers: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)  # BatchNorm modules
    consumers: list[tuple[str, int, fx.Node]] = field(default_factory=list)  # (name, expand, input)
    pinned: list[str] = field(default_factory=list)


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps every node's value (shapes and constants come from it)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


class _Analysis:
    """Channel sets of an fx graph, by one pass in topological order."""

    def __init__(self, gm: fx.GraphModule, values: Mapping[fx.Node, Any]) -> None:
        self.gm = gm
        self.values = values
        self.parent: dict[int, int] = {}
        self.groups: dict[int, _Group] = {}
        self.flow: dict[fx.Node, tuple[int, int]] = {}  # node -> (group, features per channel)
        self.calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            self._visit(node)
        for name, count in self.calls.items():
            if count > 1:  # a layer applied twice would need the same slice at two places
                for gid in self._groups_touching(name):
                    self._pin(gid, f"{name} is called {count} times")

    # union-find over group ids
    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def _new(self, size: int) -> int:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.groups[gid] = _Group(size)
        return gid

    def _union(self, a: int, b: int, where: str) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        ga, gb = self.groups[a], self.groups[b]
        if ga.size != gb.size:
            ga.pinned.append(f"{where} ties {ga.size} to {gb.size} channels")
        self.parent[b] = a
        ga.producers += gb.producers
        ga.per_channel += gb.per_channel
        ga.consumers += gb.consumers
        ga.pinned += gb.pinned
        del self.groups[b]
        return a

    def _pin(self, gid: int, reason: str) -> None:
        self.groups[self.find(gid)].pinned.append(reason)

    def _pin_inputs(self, node: fx.Node, reason: str) -> None:
        for arg in node.all_input_nodes:
            if arg in self.flow:
                self._pin(self.flow[arg][0], reason)

    def _groups_touching(self, name: str) -> set[int]:
        out = set()
        for gid, g in self.groups.items():
            if (
                name in g.producers
                or name in g.per_channel
                or any(c[0] == name for c in g.consumers)
            ):
                out.add(gid)
        return out

    def _ndim(self, node: Any) -> int:
        v = self.values.get(node) if isinstance(node, fx.Node) else None
        return v.dim() if torch.is_tensor(v) else -1

    def _visit(self, node: fx.Node) -> None:
        if node.op in ("placeholder", "get_attr"):
            return
        if node.op == "output":
            self._pin_inputs(node, "reaches the model output")
            return
        if node.op == "call_module":
            self._visit_module(node, self.gm.get_submodule(str(node.target)))
            return
        target = node.target
        src = node.args[0] if node.args else None
        if node.op == "call_method" and target == "size":
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim != 0:  # size(0) (the batch) does not change; other sizes would
                self._pin_inputs(node, f"reads {node.name}")
            return
        unary = (node.op == "call_function" and target in PASS_FUNCTIONS) or (
            node.op == "call_method" and target in PASS_METHODS
        )
        if unary and isinstance(src, fx.Node):
            others = [a for a in node.all_input_nodes if a is not src and a in self.flow]
            if not others and src in self.flow:
                self.flow[node] = self.flow[src]
                return
        binary = (node.op == "call_function" and target in BINARY_FUNCTIONS) or (
            node.op == "call_method" and target in BINARY_METHODS
        )
        if binary:
            self._visit_binary(node)
            return
        if self._is_flatten(node) and isinstance(src, fx.Node):
            self._flatten(node, src)
            return
        self._pin_inputs(node, f"{node.name} ({node.op} {getattr(target, '__name__', target)})")

    def _visit_module(self, node: fx.Node, mod: nn.Module) -> None:
        name = str(node.target)
        self.calls[name] = self.calls.get(name, 0) + 1
        src = node.args[0] if node.args else None
        src_flow = self.flow.get(src) if isinstance(src, fx.Node) else None
        if len(node.all_input_nodes) > 1:
            self._pin_inputs(node, f"{name} takes several inputs")
            return
        if isinstance(mod, nn.Linear) and self._ndim(src) == 2 and self._ndim(node) == 2:
            if src_flow is not None:
                self._consume(name, mod.in_features, src_flow, src)
            self._produce(node, name, mod.out_features)
        elif isinstance(mod, CONV_TYPES) and mod.groups == 1:
            if src_flow is not None:
                self._consume(name, mod.in_channels, src_flow, src)
            self._produce(node, name, mod.out_channels)
        elif isinstance(mod, BN_TYPES):
            if src_flow is None:
                return
            gid, expand = src_flow
            if expand != 1 or self.groups[self.find(gid)].size != mod.num_features:
                self._pin(gid, f"{name} normalises features, not channels")
                return
            self.groups[self.find(gid)].per_channel.append(name)
            self.flow[node] = src_flow
        elif src_flow is not None and self._passes(mod):
            self.flow[node] = src_flow
        elif isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1 and src_flow:
            self._flatten(node, src)
        else:
            self._pin_inputs(node, f"{name} ({type(mod).__name__})")

    @staticmethod
    def _passes(mod: nn.Module) -> bool:
        """Channel-wise and uniform-preserving (zero-padded average pooling is not)."""
        if isinstance(mod, AVG_POOLS):
            return not mod.count_include_pad or not any(_tuple(mod.padding))
        return isinstance(mod, PASS_MODULES)

    def _produce(self, node: fx.Node, name: str, size: int) -> None:
        gid = self._new(size)
        self.groups[gid].producers.append(name)
        self.flow[node] = (gid, 1)

    def _consume(self, name: str, width: int, src_flow: tuple[int, int], src: fx.Node) -> None:
        gid, expand = src_flow
        g = self.groups[self.find(gid)]
        if g.size * expand != width:
            self._pin(gid, f"{name} reads {width} features from {g.size}x{expand}")
            return
        g.consumers.append((name, expand, src))

    def _visit_binary(self, node: fx.Node) -> None:
        tensors = [
            a for a in node.args if isinstance(a, fx.Node) and torch.is_tensor(self.values.get(a))
        ]
        flows = [self.flow.get(a) for a in tensors]
        if not tensors or any(f is None for f in flows):
            self._pin_inputs(node, f"{node.name} mixes tied channels with a fixed tensor")
            return
        if len({f[1] for f in flows}) > 1 or len({self._ndim(a) for a in tensors}) > 1:
            self._pin_inputs(node, f"{node.name} combines tensors of different layouts")
            return
        gid = flows[0][0]
        for f in flows[1:]:
            gid = self._union(gid, f[0], node.name)
        self.flow[node] = (gid, flows[0][1])

    def _is_flatten(self, node: fx.Node) -> bool:
        if node.op == "call_function" and node.target is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return start == 1 and end == -1
        if node.op == "call_method" and node.target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return start == 1 and end == -1
        if node.op == "call_method" and node.target in ("view", "reshape"):
            shape = node.args[1:]
            if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
                shape = tuple(shape[0])
            return len(shape) == 2 and shape[1] == -1 and self._ndim(node) == 2
        return False

    def _flatten(self, node: fx.Node, src: fx.Node) -> None:
        if src not in self.flow:
            return
        gid, expand = self.flow[src]
        shape = self.values[src].shape  # (B, C, *spatial)
        self.flow[node] = (gid, expand * math.prod(shape[2:]))


def _tuple(x: Any) -> tuple[int, ...]:
    if isinstance(x, str):  # "valid" is no padding; "same" pads whenever the kernel is > 1
        return (0,) if x == "valid" else (1,)
    return tuple(x) if isinstance(x, (tuple, list)) else (int(x),)


# ----------------------------------------------------------------------------- the plan


@dataclass
class ShrinkReport:
    """What :func:`shrink_` did, per tied channel set and per layer, and what it saved.

    ``macs`` are multiply-accumulates of Linear/Conv layers for one sample at the example
    input's size; ``params`` counts every parameter (BatchNorm included).
    """

    groups: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict."""
        return asdict(self)

    def table(self) -> str:
        """Plain-text table: one row per Linear/Conv layer, then the totals."""
        head = f"{'layer':<28} {'kind':<7} {'out kept':>12} {'in kept':>12} {'params':>19}"
        lines = [head, "-" * len(head)]
        for row in self.layers:
            lines.append(
                f"{row['name']:<28} {row['kind']:<7} {row['out_after']:>5}/{row['out_before']:<6} "
                f"{row['in_after']:>5}/{row['in_before']:<6} "
                f"{row['params_after']:>8,}/{row['params_before']:<10,}"
            )
        lines.append("-" * len(head))
        lines.append(
            f"params {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_before / max(self.params_after, 1):.2f}x), MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} ({self.macs_before / max(self.macs_after, 1):.2f}x), "
            f"max |diff| {self.max_abs_diff:.2e}"
        )
        return "\n".join(lines)


def _dead_rows(w: torch.Tensor) -> torch.Tensor:
    return (w.detach().reshape(w.shape[0], -1) == 0).all(dim=1)  # (out,)


def _foldable(mod: nn.Module) -> bool:
    """A uniform input channel adds the same amount at every output position."""
    if isinstance(mod, nn.Linear):
        return True
    return mod.padding_mode != "zeros" or not any(_tuple(mod.padding))


def _channel_constants(
    value: torch.Tensor, size: int, expand: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel: (mean of the values a consumer reads, spread max-min), shapes ``(size,)``."""
    if value.dim() == 2:  # (B, C*E): channel c covers features c*E .. c*E+E-1
        per = value.detach().reshape(value.shape[0], size, expand).transpose(0, 1).reshape(size, -1)
    else:  # (B, C, *spatial)
        per = value.detach().transpose(0, 1).reshape(size, -1)
    return per.mean(dim=1), per.amax(dim=1) - per.amin(dim=1)


def _plan_group(
    a: _Analysis, g: _Group, modules: Mapping[str, nn.Module]
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
    """(channels kept, bias increment per consumer, report row) for one tied set."""
    keep = torch.ones(g.size, dtype=torch.bool)
    info: dict[str, Any] = {
        "producers": g.producers,
        "consumers": [c[0] for c in g.consumers],
        "channels": g.size,
        "pinned": sorted(set(g.pinned)),
    }
    deltas: dict[str, torch.Tensor] = {}
    dead = torch.ones(g.size, dtype=torch.bool)
    for name in g.producers:
        dead &= _dead_rows(modules[name].weight).cpu()
    info["dead"] = int(dead.sum())
    if g.pinned or not dead.any():
        info.update(kept=g.size, removed=0, folded=0, kept_constant=0)
        return keep, deltas, info
    removable = dead.clone()
    constants = {}
    for name, expand, src in g.consumers:
        k, spread = _channel_constants(a.values[src], g.size, expand)
        k, spread = k.cpu(), spread.cpu()
        uniform = spread <= 1e-6 * (1 + k.abs())
        if not bool(uniform[dead].all()):  # a dead channel must be constant; keep it if not
            removable &= uniform
        if not _foldable(modules[name]):
            removable &= k == 0
        constants[name] = (k, expand)
    if bool(removable.all()):  # an empty layer is not a layer: keep one channel
        removable[0] = False
    keep = ~removable
    folded = torch.zeros(g.size, dtype=torch.bool)  # removed, but some consumer saw k != 0
    for name, expand, _ in g.consumers:
        mod = modules[name]
        k, _ = constants[name]
        gone = removable & (k != 0)
        folded |= gone
        if not gone.any():
            continue
        w = mod.weight.detach()
        kk = k.to(w)
        if isinstance(mod, nn.Linear):
            cols = _expand_index(gone.to(w.device), expand)  # (C*E,)
            delta = w[:, cols] @ kk.repeat_interleave(expand)[cols]
        else:  # every output position sees all kh*kw taps of input channel c (no padding)
            delta = w[:, gone.to(w.device)].flatten(2).sum(dim=2) @ kk[gone.to(w.device)]
        deltas[name] = delta
    info.update(
        kept=int(keep.sum()),
        removed=int(removable.sum()),
        folded=int(folded.sum()),
        kept_constant=int((dead & keep).sum()),
    )
    return keep, deltas, info


def _expand_index(mask: torch.Tensor, expand: int) -> torch.Tensor:
    return mask.repeat_interleave(expand)


# ----------------------------------------------------------------------------- applying


@torch.no_grad()
def _slice_out(mod: nn.Module, keep: torch.Tensor) -> None:
    idx = keep.nonzero().flatten().to(mod.weight.device)
    set_param(mod, "weight", mod.weight[idx], mod.weight)
    if mod.bias is not None:
        set_param(mod, "bias", mod.bias[idx], mod.bias)
    if isinstance(mod, nn.Linear):
        mod.out_features = len(idx)
    else:
        mod.out_channels = len(idx)


@torch.no_grad()
def _add_bias(mod: nn.Module, delta: torch.Tensor) -> None:
    bias = mod.bias.detach() if mod.bias is not None else torch.zeros_like(delta)
    set_param(mod, "bias", bias + delta, mod.bias if mod.bias is not None else mod.weight)


@torch.no_grad()
def _slice_in(mod: nn.Module, keep: torch.Tensor, expand: int) -> None:
    w = mod.weight
    cols = _expand_index(keep.to(w.device), expand).nonzero().flatten()
    set_param(mod, "weight", w[:, cols], w)
    if isinstance(mod, nn.Linear):
        mod.in_features = len(cols)
    else:
        mod.in_channels = len(cols)


@torch.no_grad()
def _slice_bn(mod: nn.Module, keep: torch.Tensor) -> None:
    idx = keep.nonzero().flatten()
    for pname in ("weight", "bias"):
        p = getattr(mod, pname)
        if p is not None:
            set_param(mod, pname, p[idx.to(p.device)], p)
    for bname in ("running_mean", "running_var"):
        b = getattr(mod, bname)
        if b is not None:
            setattr(mod, bname, b[idx.to(b.device)].clone())
    mod.num_features = len(idx)


def count_params(model: nn.Module) -> int:
    """Every parameter's element count (BatchNorm affine included, buffers not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per Linear/Conv layer for ONE sample of ``example``'s shape.

    Linear: ``in * out``; Conv: ``out * (in / groups) * prod(kernel) * prod(output spatial)``.
    """
    macs: dict[str, int] = {}
    hooks = []

    def make(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
            if isinstance(mod, nn.Linear):
                per = mod.in_features * mod.out_features * (out[0].numel() // mod.out_features)
            else:
                per = mod.weight[0].numel() * out[0].numel()  # (in/groups*k) per output element
            macs[name] = macs.get(name, 0) + per

        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, *CONV_TYPES)):
            hooks.append(mod.register_forward_hook(make(name)))
    was_training = model.training
    try:
        model.eval()
        model(example[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return macs


def _layer_rows(model: nn.Module) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            rows[name] = {"kind": "linear", "out": mod.out_features, "in": mod.in_features}
        elif isinstance(mod, CONV_TYPES):
            rows[name] = {"kind": "conv", "out": mod.out_channels, "in": mod.in_channels}
        else:
            continue
        rows[name]["params"] = sum(p.numel() for p in mod.parameters(recurse=False))
    return rows


def shrink_(
    model: nn.Module,
    example: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    exclude: Sequence[str] = (),
) -> ShrinkReport:
    """Remove dead output units of ``model`` in place; the function computed stays the same.

    Contract: for the model in eval mode, ``model(x)`` after equals ``model(x)`` before within
    ``atol + rtol * |before|`` (checked on ``example``, else an error). Modules keep their
    names and types; only widths change (``out_features``/``in_channels``/``num_features``...),
    and a consumer that absorbs a constant may gain a bias.

    Args:
        model: any module torch.fx can trace (the zoo models, torchvision CNNs).
        example: an input batch (B >= 1) of the shape the model expects.
        atol, rtol: tolerance of the equivalence check.
        exclude: regexes on layer names; a channel set produced by a matching layer keeps
            all its units (reported as pinned), e.g. ``["^fc3$"]``.

    Returns:
        A :class:`ShrinkReport` (channels kept per set and per layer, params, MACs).

    Raises:
        SparsifyError: the model cannot be traced, an exclude pattern is not a regex, or
            (a bug) its outputs changed.
    """
    for pattern in exclude:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SparsifyError(
                f"shrink_: exclude pattern {pattern!r} is not a valid regular expression ({exc})."
            ) from None
    was_training = model.training
    model.eval()
    try:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types for untraceable Python control flow
            raise SparsifyError(
                f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); "
                "shrink needs a model without data-dependent control flow."
            ) from None
        modules = dict(gm.named_modules())
        with torch.no_grad():
            rec = _Recorder(gm)
            reference = rec.run(example)
        analysis = _Analysis(gm, rec.values)
        for pattern in exclude:
            rx = re.compile(pattern)
            for gid, g in analysis.groups.items():
                hit = [n for n in g.producers if rx.search(n)]
                if hit:
                    analysis._pin(gid, f"{hit[0]} matches exclude pattern {pattern!r}")
        layers_before = _layer_rows(model)
        params_before = count_params(model)
        macs_before = sum(count_macs(model, example).values())

        plans = []
        for g in analysis.groups.values():
            plans.append((g, *_plan_group(analysis, g, modules)))
        # Apply only after every plan is made, in three passes over disjoint dimensions:
        # folds first (a delta is over the consumer's full, unsliced output), then input
        # columns, then output rows (a layer may consume and produce the same tied set).
        for _g, _keep, deltas, _ in plans:
            for name, delta in deltas.items():
                _add_bias(modules[name], delta)
        for g, keep, _, _ in plans:
            if not bool(keep.all()):
                for name, expand, _src in g.consumers:
                    _slice_in(modules[name], keep, expand)
        for g, keep, _, _ in plans:
            if not bool(keep.all()):
                for name in g.producers:
                    _slice_out(modules[name], keep)
                for name in g.per_channel:
                    _slice_bn(modules[name], keep)

        with torch.no_grad():
            after = model(example)
        diff = (after - reference).abs()
        max_diff = float(diff.max()) if diff.numel() else 0.0
        if bool((diff > atol + rtol * reference.abs()).any()):
            raise SparsifyError(
                f"shrink changed the outputs of {type(model).__name__} by up to {max_diff:.3g} "
                f"(> atol {atol:g}); the model is modified: reload it and report this bug."
            )
        layers_after = _layer_rows(model)
        macs = count_macs(model, example)
        rows = [
            {
                "name": name,
                "kind": before["kind"],
                "out_before": before["out"],
                "out_after": layers_after[name]["out"],
                "in_before": before["in"],
                "in_after": layers_after[name]["in"],
                "params_before": before["params"],
                "params_after": layers_after[name]["params"],
                "macs_after": macs.get(name, 0),
            }
            for name, before in layers_before.items()
        ]
        return ShrinkReport(
            groups=[info for _, _, _, info in plans],
            layers=rows,
            params_before=params_before,
            params_after=count_params(model),
            macs_before=macs_before,
            macs_after=sum(macs.values()),
            max_abs_diff=max_diff,
        )
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- loading, timing


@torch.inference_mode()
def measure_latency(
    models: Mapping[str, nn.Module], x: torch.Tensor, repeats: int = 50, warmup: int = 5
) -> dict[str, float]:
    """Median wall time (ms) of ``model(x)`` for each model, runs interleaved.

    Each round runs every model once, in an order that alternates between rounds, so slow
    drifts of a shared machine hit all models alike. ``warmup`` rounds are not timed.
    CUDA is synchronised around each call; CPU needs no synchronisation.
    """
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    for m in models.values():
        m.eval()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for r in range(warmup + repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            sync()
            t0 = time.perf_counter()
            models[n](x)
            sync()
            if r >= warmup:
                times[n].append(1e3 * (time.perf_counter() - t0))
    return {n: statistics.median(ts) for n, ts in times.items()}


def build_checkpoint_model(ckpt: Any) -> nn.Module:
    """The model of a (possibly shrunk) :class:`~sparsify.pipeline.checkpoint.Checkpoint`, in eval mode.

    Builds the recipe's architecture, gives it the checkpoint's widths with
    :func:`resize_to_state_dict_`, then loads the weights strictly (names must all match).
    Unlike ``Checkpoint.build_model`` it resizes even without the ``shrunk`` metadata (a
    state_dict saved from a model shrunk by hand).

    Raises:
        SparsifyError: the weights' names do not fit the recipe's model.
    """
    return ckpt.build_model(resize=True)


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """``{layer: [out, in]}`` for every Linear/Conv (``in`` counts input channels/features).

    What a shrunk checkpoint stores as its ``shrunk`` metadata (JSON), for people and tools;
    loading reads the widths from the tensors themselves.
    """
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            out[name] = [mod.out_features, mod.in_features]
        elif isinstance(mod, CONV_TYPES):
            out[name] = [mod.out_channels, mod.in_channels]
    return out
