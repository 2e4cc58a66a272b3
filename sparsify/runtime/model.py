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
        self, graph: dict[str, Any], tensors: dict[str, np.ndarray], sparse: dict[str, Any]
    ) -> None:
        if graph.get("version") != GRAPH_VERSION:
            raise SparsifyError(
                f"graph version {graph.get('version')!r} is not supported (this runtime runs "
                f"{GRAPH_VERSION}); re-export the bundle with this sparsify."
            )
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
            if fn is None:  # reshape: resolve {"ref": size-node} entries to ints
                shape = [env[s["ref"]] if isinstance(s, dict) else s for s in op["shape"]]
                env[name] = args[0].reshape(shape)
            else:
                env[name] = fn(*args)
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
