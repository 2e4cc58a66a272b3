"""Execute a captured op list with numpy + scipy: sparse weights stay sparse.

Conv2d is im2col + one scipy sparse matmul per layer::

    cols = im2col(x)                  # (C * kh * kw, B * Ho * Wo)
    y    = W_csr @ cols               # (out, B * Ho * Wo), W_csr: (out, C * kh * kw)

Linear is ``(W_csr @ x.T).T``. A fused BatchNorm is ``y * scale + shift`` per output channel
(``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``), the form torch's own
eval-mode kernel uses. All arithmetic is float32, as in torch. No torch import anywhere here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from sparsify.errors import SparsifyError

GRAPH_VERSION = 1
# bounds on an op list's geometry: far beyond any real layer, small enough that an edited
# value cannot make np.pad or a window view allocate without limit
MAX_GEOMETRY = 1024
MAX_DIMS = 32
_OPS = (
    "linear",
    "conv2d",
    "batchnorm",
    "relu",
    "identity",
    "add",
    "flatten",
    "size",
    "maxpool2d",
    "avgpool2d",
    "adaptive_avgpool2d",
    "reshape",
)


class _GraphCheck:
    """Validates an op list field by field; every failure is one line naming op and field."""

    def __init__(self, where: str, tensors: dict[str, np.ndarray]) -> None:
        self.where = where
        self.tensors = tensors
        self.op = "graph"

    def fail(self, field: str, what: str) -> SparsifyError:
        return SparsifyError(
            f"{self.where}: runtime graph, {self.op}: field {field!r} {what}; the manifest was "
            "edited or is corrupted. Re-export the bundle."
        )

    def string(self, d: dict[str, Any], field: str) -> str:
        v = d.get(field)
        if not isinstance(v, str) or not v:
            raise self.fail(field, f"must be a non-empty string, got {_short(v)}")
        return v

    def int_in(self, d: dict[str, Any], field: str, lo: int, hi: int) -> int:
        v = d.get(field)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(field, f"must be an integer in [{lo}, {hi}], got {_short(v)}")
        return v

    def pair(self, d: dict[str, Any], field: str, lo: int) -> None:
        v = d.get(field)
        if (
            not isinstance(v, list)
            or len(v) != 2
            or not all(
                isinstance(x, int) and not isinstance(x, bool) and lo <= x <= MAX_GEOMETRY
                for x in v
            )
        ):
            raise self.fail(
                field, f"must be two integers in [{lo}, {MAX_GEOMETRY}], got {_short(v)}"
            )

    def tensor(self, d: dict[str, Any], field: str, ndim: int | None, optional: bool) -> Any:
        v = d.get(field)
        if v is None and optional:
            return None
        if not isinstance(v, str) or v not in self.tensors:
            raise self.fail(field, f"must name a tensor of the bundle, got {_short(v)}")
        a = self.tensors[v]
        if ndim is not None and a.ndim != ndim:
            raise self.fail(field, f"names {v!r} of shape {list(a.shape)}, not a {ndim}-D tensor")
        return a

    def bn(self, d: dict[str, Any], channels: int | None) -> None:
        bn = d.get("bn")
        if not isinstance(bn, dict):
            raise self.fail("bn", f"must be an object, got {_short(bn)}")
        vectors = [
            self.tensor(bn, k, 1, optional=k in ("weight", "bias"))
            for k in ("running_mean", "running_var", "weight", "bias")
        ]
        sizes = {v.shape[0] for v in vectors if v is not None}
        if len(sizes) != 1 or (channels is not None and sizes != {channels}):
            raise self.fail(
                "bn", f"vectors of lengths {sorted(sizes)} do not fit {channels} channels"
            )
        eps = bn.get("eps")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
            raise self.fail("bn.eps", f"must be a number in [0, 1), got {_short(eps)}")

    def run(self, graph: Any) -> None:
        if not isinstance(graph, dict):
            raise self.fail("graph", f"must be an object, got {type(graph).__name__}")
        if graph.get("version") != GRAPH_VERSION:
            raise SparsifyError(
                f"{self.where}: graph version {_short(graph.get('version'))} is not supported "
                f"(this runtime runs {GRAPH_VERSION}); re-export the bundle with this sparsify."
            )
        ops = graph.get("ops")
        if not isinstance(ops, list) or not ops:
            raise self.fail("ops", "must be a non-empty list")
        known = {self.string(graph, "input"): "input"}
        for i, op in enumerate(ops):
            self.op = f"op {i}"
            if not isinstance(op, dict):
                raise self.fail("ops", f"entry {i} must be an object, got {_short(op)}")
            name = self.string(op, "name")
            self.op = f"op {i} ({name!r})"
            kind = op.get("op")
            if kind not in _OPS:
                raise self.fail("op", f"must be one of {', '.join(_OPS)}, got {_short(kind)}")
            inputs = op.get("inputs")
            arity = 2 if kind == "add" else 1
            if (
                not isinstance(inputs, list)
                or len(inputs) != arity
                or not all(isinstance(x, str) and x in known for x in inputs)
            ):
                raise self.fail(
                    "inputs", f"must list {arity} tensor(s) computed earlier, got {_short(inputs)}"
                )
            if name in known:
                raise self.fail("name", "is used by an earlier op")
            self.check_op(kind, op, known)
            known[name] = kind
        self.op = "graph"
        if self.string(graph, "output") not in known:
            raise self.fail("output", f"must name an op, got {_short(graph.get('output'))}")

    def check_op(self, kind: str, op: dict[str, Any], known: dict[str, str]) -> None:
        if kind in ("linear", "conv2d"):
            w = self.tensor(op, "weight", 2 if kind == "linear" else 4, optional=False)
            bias = self.tensor(op, "bias", 1, optional=True)
            if bias is not None and bias.shape[0] != w.shape[0]:
                raise self.fail("bias", f"has {bias.shape[0]} entries for {w.shape[0]} outputs")
            if op.get("bn") is not None:
                self.bn(op, w.shape[0])
            if kind == "conv2d":
                self.pair(op, "stride", 1)
                self.pair(op, "padding", 0)
                self.pair(op, "dilation", 1)
        elif kind == "batchnorm":
            self.bn(op, None)
        elif kind in ("maxpool2d", "avgpool2d"):
            self.pair(op, "kernel", 1)
            self.pair(op, "stride", 1)
            self.pair(op, "padding", 0)
            if kind == "maxpool2d":
                self.pair(op, "dilation", 1)
            elif not isinstance(op.get("count_include_pad"), bool):
                raise self.fail("count_include_pad", "must be true or false")
        elif kind == "adaptive_avgpool2d":
            size = op.get("output_size")
            if (
                not isinstance(size, list)
                or len(size) != 2
                or not all(
                    s is None
                    or (isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_GEOMETRY)
                    for s in size
                )
            ):
                raise self.fail(
                    "output_size", f"must be two integers in [1, {MAX_GEOMETRY}] or null"
                )
        elif kind == "flatten":
            self.int_in(op, "start_dim", -MAX_DIMS, MAX_DIMS - 1)
            self.int_in(op, "end_dim", -MAX_DIMS, MAX_DIMS - 1)
        elif kind == "size":
            self.int_in(op, "dim", -MAX_DIMS, MAX_DIMS - 1)
        elif kind == "reshape":
            shape = op.get("shape")
            if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS:
                raise self.fail("shape", f"must be a list of 1-{MAX_DIMS} entries")
            for s in shape:
                if isinstance(s, dict):
                    if set(s) != {"ref"} or s["ref"] not in known:
                        raise self.fail("shape", f"entry {_short(s)} must refer to an earlier op")
                elif isinstance(s, bool) or not isinstance(s, int) or not -1 <= s <= 2**32:
                    raise self.fail("shape", f"entry {_short(s)} must be an integer >= -1")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_graph(graph: Any, tensors: dict[str, np.ndarray], where: str = "bundle") -> None:
    """Validate a captured op list against its tensors before anything runs it: known ops,
    inputs computed earlier, weights that exist with the rank their op needs, BatchNorm
    vectors of the right length, geometry (kernel, stride, dilation >= 1, padding >= 0, all
    at most MAX_GEOMETRY), dims within MAX_DIMS, reshape refs to size ops.

    Raises:
        SparsifyError: one line naming ``where``, the op and the field.
    """
    _GraphCheck(where, tensors).run(graph)


def _im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    pad_value: float = 0.0,
) -> tuple[np.ndarray, int, int]:
    """Windows of ``x`` (B, C, H, W) as (B, C, Ho, Wo, kh, kw), padded with ``pad_value``."""
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # extent of a dilated window
    ho = (x.shape[2] - eh) // sh + 1
    wo = (x.shape[3] - ew) // sw + 1
    if ho < 1 or wo < 1:
        raise SparsifyError(
            f"input of spatial size {x.shape[2:]} is smaller than a {kh}x{kw} window; give a larger input."
        )
    win = sliding_window_view(x, (eh, ew), axis=(2, 3))  # (B, C, H', W', eh, ew)
    win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :ho, :wo]  # (B, C, Ho, Wo, kh, kw)
    return win, ho, wo


class _Affine:
    """Per-channel ``y * scale + shift`` of a (fused or standalone) eval-mode BatchNorm."""

    def __init__(self, bn: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        mean = tensors[bn["running_mean"]].astype(np.float32)
        var = tensors[bn["running_var"]].astype(np.float32)
        gamma = tensors[bn["weight"]] if bn.get("weight") else np.ones_like(mean)
        beta = tensors[bn["bias"]] if bn.get("bias") else np.zeros_like(mean)
        invstd = (np.float32(1.0) / np.sqrt(var + np.float32(bn["eps"]))).astype(np.float32)
        self.scale = (gamma * invstd).astype(np.float32)
        self.shift = (beta - mean * self.scale).astype(np.float32)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        view = (1, -1) + (1,) * (y.ndim - 2)  # channel axis 1 of (B, C, ...)
        return y * self.scale.reshape(view) + self.shift.reshape(view)


class RuntimeModel:
    """A callable model: ``model(x)`` maps a float32 numpy batch to the output numpy array.

    Built by :func:`sparsify.runtime.load`; holds each prunable weight once, as CSR.
    """

    def __init__(
        self,
        graph: dict[str, Any],
        tensors: dict[str, np.ndarray],
        sparse: dict[str, Any],
        where: str = "bundle",
    ) -> None:
        check_graph(graph, tensors, where)
        self.input, self.output = graph["input"], graph["output"]
        # (name, input names, function or None for reshape, the op's JSON)
        self.steps: list[tuple[str, list[str], Callable[..., Any] | None, dict[str, Any]]] = [
            (op["name"], list(op["inputs"]), self._build(op, tensors, sparse), op)
            for op in graph["ops"]
        ]

    def _weight(
        self, op: dict[str, Any], tensors: dict[str, np.ndarray], sparse: dict[str, Any]
    ) -> Any:
        name = op["weight"]
        if name in sparse:
            return sp.csr_array(sparse[name])  # matmul runs on CSR whatever format was stored
        w = tensors[name]
        return w.reshape(w.shape[0], -1)  # a dense weight (e.g. not float32) still works

    def _build(
        self, op: dict[str, Any], tensors: dict[str, np.ndarray], sparse: dict[str, Any]
    ) -> Callable[..., Any] | None:
        kind = op["op"]
        if kind in ("linear", "conv2d"):
            w = self._weight(op, tensors, sparse)
            bias = tensors[op["bias"]].astype(np.float32) if op.get("bias") else None
            affine = _Affine(op["bn"], tensors) if op.get("bn") else None
            if kind == "linear":
                return self._linear(w, bias, affine)
            kh, kw = tensors[op["weight"]].shape[2:]
            return self._conv(
                w, bias, affine, (kh, kw), op["stride"], op["padding"], op["dilation"]
            )
        if kind == "batchnorm":
            return _Affine(op["bn"], tensors)
        if kind == "relu":
            return lambda x: np.maximum(x, np.float32(0))
        if kind == "identity":
            return lambda x: x
        if kind == "add":
            return lambda a, b: a + b
        if kind == "flatten":
            return lambda x: _flatten(x, op["start_dim"], op["end_dim"])
        if kind == "size":
            return lambda x: int(x.shape[op["dim"]])
        if kind == "maxpool2d":
            return lambda x: _maxpool(x, op)
        if kind == "avgpool2d":
            return lambda x: _avgpool(x, op)
        if kind == "adaptive_avgpool2d":
            return lambda x: _adaptive_avgpool(x, op["output_size"])
        if kind == "reshape":
            return None  # needs the environment for its refs; handled in __call__
        raise SparsifyError(
            f"op {kind!r} in the bundle's graph is not supported; re-export the bundle."
        )

    @staticmethod
    def _linear(
        w: Any, bias: np.ndarray | None, affine: _Affine | None
    ) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:  # x: (B, in)
            y = np.asarray(w @ x.T).T  # (B, out)
            if bias is not None:
                y = y + bias
            return affine(y) if affine is not None else y

        return run

    @staticmethod
    def _conv(
        w: Any,
        bias: np.ndarray | None,
        affine: _Affine | None,
        kernel: tuple[int, int],
        stride: list[int],
        padding: list[int],
        dilation: list[int],
    ) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:  # x: (B, C, H, W)
            b, c = x.shape[:2]
            win, ho, wo = _im2col(x, kernel, stride, padding, dilation)
            cols = win.transpose(1, 4, 5, 0, 2, 3).reshape(c * kernel[0] * kernel[1], b * ho * wo)
            y = np.asarray(w @ cols)  # (out, B * Ho * Wo)
            y = y.reshape(-1, b, ho, wo).transpose(1, 0, 2, 3)  # (B, out, Ho, Wo)
            if bias is not None:
                y = y + bias.reshape(1, -1, 1, 1)
            return affine(y) if affine is not None else y

        return run

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the graph on ``x`` (cast to float32); returns a new float32 array."""
        env: dict[str, Any] = {self.input: np.ascontiguousarray(x, dtype=np.float32)}
        for name, inputs, fn, op in self.steps:
            args = [env[i] for i in inputs]
            try:
                if fn is None:  # reshape: resolve {"ref": size-node} entries to ints
                    shape = [env[s["ref"]] if isinstance(s, dict) else s for s in op["shape"]]
                    env[name] = args[0].reshape(shape)
                else:
                    env[name] = fn(*args)
            except SparsifyError:
                raise
            except (
                ValueError,
                IndexError,
                TypeError,
            ) as exc:  # numpy: shapes that do not fit the op
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise SparsifyError(
                    f"op {name!r} ({op['op']}) cannot run on an input of shape "
                    f"{tuple(np.shape(x))} ({first}); give the input shape the model was "
                    "exported with."
                ) from None
        return np.asarray(env[self.output], dtype=np.float32, order="C")


def _flatten(x: np.ndarray, start: int, end: int) -> np.ndarray:
    start, end = start % x.ndim, end % x.ndim
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])


def _maxpool(x: np.ndarray, op: dict[str, Any]) -> np.ndarray:
    # torch pads max pooling with -inf: padding never wins
    win, _, _ = _im2col(
        x, tuple(op["kernel"]), op["stride"], op["padding"], op["dilation"], -np.inf
    )
    return win.max(axis=(4, 5))


def _avgpool(x: np.ndarray, op: dict[str, Any]) -> np.ndarray:
    kernel, stride, padding = tuple(op["kernel"]), op["stride"], op["padding"]
    win, _, _ = _im2col(x, kernel, stride, padding, [1, 1])
    total = win.sum(axis=(4, 5), dtype=np.float32)
    if op["count_include_pad"] or not any(padding):
        return total / np.float32(kernel[0] * kernel[1])
    ones = np.ones((1, 1) + x.shape[2:], np.float32)
    count, _, _ = _im2col(ones, kernel, stride, padding, [1, 1])
    return total / count.sum(axis=(4, 5))


def _adaptive_avgpool(x: np.ndarray, output_size: list[int | None]) -> np.ndarray:
    h, w = x.shape[2:]
    oh = output_size[0] if output_size[0] is not None else h
    ow = output_size[1] if output_size[1] is not None else w
    out = np.empty(x.shape[:2] + (oh, ow), np.float32)
    for i in range(oh):  # torch's bins: [floor(i*H/oh), ceil((i+1)*H/oh))
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=np.float32)
    return out
