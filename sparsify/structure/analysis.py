"""Reading a network's channel structure from its torch.fx graph (for :func:`shrink_`).

How the network is read (nothing hard-coded per model):
    * every Linear/Conv (groups=1) *produces* a channel set, and *consumes* the set of its input;
    * per-channel ops pass a set through unchanged: BatchNorm (its entries are sliced),
      elementwise activations, Dropout, max/adaptive pooling, flatten (a channel then
      covers H*W consecutive features of the consuming Linear);
    * an elementwise op of two sets (a residual ``add``) *ties* them: one set (union-find),
      whose channel c is live if any of its producers has c live;
    * anything else that touches a set (the model output, concat, grouped convs, reshapes
      to other shapes, padded average pooling, ...) *pins* it: all its channels are kept.

The op tables below are the whole vocabulary; an op not in them pins what it touches.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from sparsify.structure.surgery import BN_TYPES, CONV_TYPES

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


@dataclass
class ChannelGroup:
    """One tied channel set: who writes it, who slices it per channel, who reads it, and
    why it must be kept whole (``pinned``; empty when its dead channels may go)."""

    size: int
    producers: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)  # BatchNorm modules
    consumers: list[tuple[str, int, fx.Node]] = field(default_factory=list)  # (name, expand, input)
    pinned: list[str] = field(default_factory=list)


class Recorder(fx.Interpreter):
    """Runs the graph once and keeps every node's value in ``values`` (shapes and constants
    come from it)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


class ChannelAnalysis:
    """Channel sets of an fx graph, by one pass in topological order (see the module docstring).

    ``groups``: root id -> :class:`ChannelGroup`; ``flow``: node -> (group id, features per
    channel); ``find`` is the union-find root of a group id; ``pin`` keeps a group whole.
    """

    def __init__(self, gm: fx.GraphModule, values: Mapping[fx.Node, Any]) -> None:
        self.gm = gm
        self.values = values
        self.parent: dict[int, int] = {}
        self.groups: dict[int, ChannelGroup] = {}
        self.flow: dict[fx.Node, tuple[int, int]] = {}  # node -> (group, features per channel)
        self.calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            self._visit(node)
        for name, count in self.calls.items():
            if count > 1:  # a layer applied twice would need the same slice at two places
                for gid in self._groups_touching(name):
                    self.pin(gid, f"{name} is called {count} times")

    # union-find over group ids
    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def _new(self, size: int) -> int:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.groups[gid] = ChannelGroup(size)
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

    def pin(self, gid: int, reason: str) -> None:
        self.groups[self.find(gid)].pinned.append(reason)

    def _pin_inputs(self, node: fx.Node, reason: str) -> None:
        for arg in node.all_input_nodes:
            if arg in self.flow:
                self.pin(self.flow[arg][0], reason)

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
                self.pin(gid, f"{name} normalises features, not channels")
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
            return not mod.count_include_pad or not any(as_tuple(mod.padding))
        return isinstance(mod, PASS_MODULES)

    def _produce(self, node: fx.Node, name: str, size: int) -> None:
        gid = self._new(size)
        self.groups[gid].producers.append(name)
        self.flow[node] = (gid, 1)

    def _consume(self, name: str, width: int, src_flow: tuple[int, int], src: fx.Node) -> None:
        gid, expand = src_flow
        g = self.groups[self.find(gid)]
        if g.size * expand != width:
            self.pin(gid, f"{name} reads {width} features from {g.size}x{expand}")
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


def as_tuple(x: Any) -> tuple[int, ...]:
    """A padding/stride argument as a tuple of ints (``"valid"`` -> (0,), ``"same"`` -> (1,))."""
    if isinstance(x, str):  # "valid" is no padding; "same" pads whenever the kernel is > 1
        return (0,) if x == "valid" else (1,)
    return tuple(x) if isinstance(x, (tuple, list)) else (int(x),)
