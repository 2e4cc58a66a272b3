"""Capture a model's forward as a JSON op list that :mod:`sparsify.runtime` executes.

``capture_graph(model)`` traces with ``torch.fx.symbolic_trace`` and maps every node to one
of the runtime's ops; anything else is refused here, at export time, with its name, so a
bundle never holds a graph the runtime cannot run. Op list (``GRAPH_VERSION`` 1)::

    {"version": 1, "input": "x", "output": "fc2",
     "ops": [{"name": "conv1", "op": "conv2d", "inputs": ["x"], "weight": "conv1.weight",
              "bias": "conv1.bias", "stride": [1, 1], "padding": [0, 0],
              "dilation": [1, 1], "bn": null}, ...]}

Ops: linear, conv2d, relu, maxpool2d, avgpool2d, adaptive_avgpool2d, flatten, reshape,
size, add, identity (Dropout in eval, Identity, contiguous) and batchnorm. A BatchNorm whose
input is a conv/linear used by nothing else is fused into it (``"bn"``: the runtime applies
``y * scale + shift`` with ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``
after the sparse matmul, so the stored weights stay bit-identical to the checkpoint).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from sparsify.errors import SparsifyError
from sparsify.runtime.model import GRAPH_VERSION  # one source: the runtime states what it runs

SUPPORTED = (
    "nn.Linear, nn.Conv2d (groups=1, zero padding), nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, "
    "nn.AdaptiveAvgPool2d, nn.Flatten, nn.BatchNorm1d/2d (running stats), nn.Dropout, "
    "nn.Identity, +, torch.add, torch.flatten, torch.relu, F.relu, .view/.reshape/.flatten/"
    ".relu/.size/.contiguous"
)
_ADD = (operator.add, operator.iadd, torch.add)
_RELU = (torch.relu, F.relu, torch.relu_)


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _refuse(node: torch.fx.Node, what: str) -> SparsifyError:
    return SparsifyError(
        f"cannot export the graph: {what} (node {node.name!r}) is not supported by "
        f"the bundle's op list; supported: {SUPPORTED}. Export --format onnx instead "
        "(sparsify.runtime.load runs the compact ONNX, any op included), or --no-graph for "
        "the weights alone."
    )


def _bn_fields(node: torch.fx.Node, mod: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    if mod.running_mean is None or mod.running_var is None:
        raise _refuse(node, f"{type(mod).__name__} without running stats")
    prefix = f"{node.target}."
    return {
        "weight": prefix + "weight" if mod.weight is not None else None,
        "bias": prefix + "bias" if mod.bias is not None else None,
        "running_mean": prefix + "running_mean",
        "running_var": prefix + "running_var",
        "eps": float(mod.eps),
    }


def _module_op(node: torch.fx.Node, mod: nn.Module) -> dict[str, Any]:
    """Translate one call_module node; raises for modules the runtime cannot run."""
    name = str(node.target)
    if isinstance(mod, nn.Linear):
        return {
            "op": "linear",
            "weight": f"{name}.weight",
            "bias": f"{name}.bias" if mod.bias is not None else None,
            "bn": None,
        }
    if isinstance(mod, nn.Conv2d):
        if mod.groups != 1:
            raise _refuse(node, f"Conv2d with groups={mod.groups}")
        if mod.padding_mode != "zeros":
            raise _refuse(node, f"Conv2d with padding_mode={mod.padding_mode!r}")
        if isinstance(mod.padding, str):
            if mod.padding != "valid":
                raise _refuse(node, f"Conv2d with padding={mod.padding!r}")
            padding = [0, 0]
        else:
            padding = _pair(mod.padding)
        return {
            "op": "conv2d",
            "weight": f"{name}.weight",
            "bias": f"{name}.bias" if mod.bias is not None else None,
            "stride": _pair(mod.stride),
            "padding": padding,
            "dilation": _pair(mod.dilation),
            "bn": None,
        }
    if isinstance(mod, nn.ReLU):
        return {"op": "relu"}
    if isinstance(mod, nn.MaxPool2d):
        if mod.ceil_mode or mod.return_indices:
            raise _refuse(node, "MaxPool2d with ceil_mode or return_indices")
        return {
            "op": "maxpool2d",
            "kernel": _pair(mod.kernel_size),
            "stride": _pair(mod.stride if mod.stride is not None else mod.kernel_size),
            "padding": _pair(mod.padding),
            "dilation": _pair(mod.dilation),
        }
    if isinstance(mod, nn.AvgPool2d):
        if mod.ceil_mode or mod.divisor_override is not None:
            raise _refuse(node, "AvgPool2d with ceil_mode or divisor_override")
        return {
            "op": "avgpool2d",
            "kernel": _pair(mod.kernel_size),
            "stride": _pair(mod.stride if mod.stride is not None else mod.kernel_size),
            "padding": _pair(mod.padding),
            "count_include_pad": bool(mod.count_include_pad),
        }
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        size = mod.output_size
        size = [size, size] if isinstance(size, int) else list(size)
        return {
            "op": "adaptive_avgpool2d",
            "output_size": [None if s is None else int(s) for s in size],
        }
    if isinstance(mod, nn.Flatten):
        return {"op": "flatten", "start_dim": int(mod.start_dim), "end_dim": int(mod.end_dim)}
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"op": "batchnorm", "bn": _bn_fields(node, mod)}
    if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)):
        return {"op": "identity"}  # eval mode: dropout is the identity
    raise _refuse(node, f"module {type(mod).__module__}.{type(mod).__name__}")


def _arg(node: torch.fx.Node, value: Any) -> Any:
    """A literal int or a reference ``{"ref": node}`` to an int produced by a size op."""
    if isinstance(value, torch.fx.Node):
        return {"ref": value.name}
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise _refuse(node, f"argument {value!r}")


def _function_op(node: torch.fx.Node) -> tuple[dict[str, Any], list[torch.fx.Node]]:
    """Translate call_function / call_method nodes; returns the op and its tensor inputs."""
    target, args, kwargs = node.target, node.args, dict(node.kwargs)
    if node.op == "call_function":
        if target in _ADD:
            if kwargs.get("alpha", 1) != 1 or len(args) != 2:
                raise _refuse(node, "add with alpha")
            if not all(isinstance(a, torch.fx.Node) for a in args):
                raise _refuse(node, "add of a tensor and a constant")
            return {"op": "add"}, list(args)
        if target in _RELU:
            return {"op": "relu"}, [args[0]]
        if target is torch.flatten:
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            return {"op": "flatten", "start_dim": int(start), "end_dim": int(end)}, [args[0]]
        raise _refuse(node, f"function {getattr(target, '__name__', target)!r}")
    if node.op == "call_method":
        if target == "relu":
            return {"op": "relu"}, [args[0]]
        if target == "contiguous":
            return {"op": "identity"}, [args[0]]
        if target == "flatten":
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            return {"op": "flatten", "start_dim": int(start), "end_dim": int(end)}, [args[0]]
        if target in ("view", "reshape"):
            shape = args[1:]
            if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
                shape = tuple(shape[0])
            return {"op": "reshape", "shape": [_arg(node, s) for s in shape]}, [args[0]]
        if target == "size":
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dim is None:
                raise _refuse(node, ".size() without a dim")
            return {"op": "size", "dim": int(dim)}, [args[0]]
        raise _refuse(node, f"method .{target}()")
    raise _refuse(node, f"node kind {node.op!r}")


def capture_graph(model: nn.Module) -> dict[str, Any]:
    """Trace ``model`` (in eval mode) into the runtime's JSON op list; see the module docstring.

    Raises:
        SparsifyError: the model cannot be traced, or uses an op the runtime lacks (named).
    """
    was_training = model.training
    model.eval()
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SparsifyError(
            f"cannot export the graph: torch.fx cannot trace {type(model).__name__} ({first}); "
            "export with graph=False (--no-graph) for the weights alone."
        ) from None
    finally:
        model.train(was_training)
    modules = dict(traced.named_modules())
    ops: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    alias: dict[str, str] = {}  # fused BatchNorm node -> the conv/linear op that carries it
    graph_input: str | None = None
    graph_output: str | None = None

    def ref(n: torch.fx.Node) -> str:
        return alias.get(n.name, n.name)

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            if graph_input is not None:
                raise _refuse(node, "a second input")
            graph_input = node.name
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                raise _refuse(node, "an output that is not a single tensor")
            graph_output = ref(out)
            continue
        if node.op == "call_module":
            op = _module_op(node, modules[str(node.target)])
            inputs = [a for a in node.args if isinstance(a, torch.fx.Node)]
            if len(inputs) != 1 or len(node.args) != 1 or node.kwargs:
                raise _refuse(node, f"module {node.target} called with extra arguments")
            src = inputs[0]
            producer = by_name.get(ref(src))
            if (
                op["op"] == "batchnorm"
                and producer is not None
                and producer["op"] in ("linear", "conv2d")
                and producer["bn"] is None
                and len(src.users) == 1
            ):
                producer["bn"] = op["bn"]  # fold: conv -> bn becomes one op
                alias[node.name] = producer["name"]
                continue
        elif node.op in ("call_function", "call_method"):
            op, inputs = _function_op(node)
        else:
            raise _refuse(node, f"node kind {node.op!r} ({node.target})")
        entry = {"name": node.name, **op, "inputs": [ref(a) for a in inputs]}
        for a in op.get("shape", []):
            if isinstance(a, dict):
                a["ref"] = alias.get(a["ref"], a["ref"])
        ops.append(entry)
        by_name[node.name] = entry
    if graph_input is None or graph_output is None:
        raise SparsifyError("cannot export the graph: the model has no input or no output.")
    return {"version": GRAPH_VERSION, "input": graph_input, "output": graph_output, "ops": ops}
