"""kernels.depthwise_project_conv2d and DepthwiseProject given what a stranger might pass.

    PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-dwproject/hostile.py

Each line: the input, then what happened (the result's check, or the exception's type and
its one-line message)."""

import numpy as np
import torch

from sparsify import kernels as K
from sparsify.errors import SparsifyError

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 8, 9, 20)).astype(np.float32)
w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
pw = rng.standard_normal((4, 8)).astype(np.float32)


def ref(xx, ww, pww, s=1, p=1):
    h = torch.nn.functional.conv2d(
        torch.from_numpy(xx).double(), torch.from_numpy(ww).double(), None, s, p, groups=ww.shape[0]
    )
    return np.einsum("oe,nehw->nohw", pww, h.numpy())


def attempt(label, fn, check=None):
    try:
        y = fn()
        print(f"{label}: ok" + (f", {check(y)}" if check else ""))
    except (SparsifyError, ValueError, TypeError, MemoryError) as err:
        msg = str(err)
        print(
            f"{label}: {type(err).__name__} ({'one line' if chr(10) not in msg else 'MULTI-LINE'}): {msg}"
        )


def close(want):
    return lambda y: f"max err {float(np.abs(y - want).max()):.1e}, shape {y.shape}"


attempt(
    "float64 input",
    lambda: K.depthwise_project_conv2d(x.astype(np.float64), w, None, pw, padding=1),
    close(ref(x, w, pw)),
)
attempt(
    "non-contiguous x (a transposed view)",
    lambda: K.depthwise_project_conv2d(
        np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), w, None, pw, padding=1
    ),
    close(ref(x, w, pw)),
)
attempt(
    "batch 0",
    lambda: K.depthwise_project_conv2d(x[:0], w, None, pw, padding=1),
    lambda y: f"shape {y.shape}",
)
attempt(
    "no output channels",
    lambda: K.depthwise_project_conv2d(x, w, None, pw[:0], padding=1),
    lambda y: f"shape {y.shape}",
)
attempt(
    "NaN and inf in x",
    lambda: K.depthwise_project_conv2d(
        np.where(rng.random(x.shape) < 0.01, np.nan, x).astype(np.float32), w, None, pw, padding=1
    ),
    lambda y: f"NaN outputs {int(np.isnan(y).sum())} of {y.size}",
)
attempt(
    "clamp lo > hi", lambda: K.depthwise_project_conv2d(x, w, None, pw, padding=1, clamp=(1.0, 0.0))
)
attempt(
    "clamp with NaN",
    lambda: K.depthwise_project_conv2d(
        x, w, None, pw, padding=1, project_clamp=(float("nan"), 1.0)
    ),
)
attempt(
    "bias of the wrong length",
    lambda: K.depthwise_project_conv2d(x, w, np.zeros(7, np.float32), pw, padding=1),
)
attempt(
    "project bias of the wrong length",
    lambda: K.depthwise_project_conv2d(x, w, None, pw, np.zeros(3, np.float32), padding=1),
)
attempt(
    "a depth multiplier of 2",
    lambda: K.depthwise_project_conv2d(
        x, np.concatenate([w, w]), None, rng.standard_normal((4, 16)).astype(np.float32), padding=1
    ),
)
attempt("a 3-D x", lambda: K.depthwise_project_conv2d(x[0], w, None, pw, padding=1))
attempt(
    "input smaller than the kernel",
    lambda: K.depthwise_project_conv2d(x[:, :, :1, :1], w, None, pw),
)
attempt("negative padding", lambda: K.depthwise_project_conv2d(x, w, None, pw, padding=-1))
attempt("stride 0", lambda: K.depthwise_project_conv2d(x, w, None, pw, stride=0))
attempt("threads 0", lambda: K.depthwise_project_conv2d(x, w, None, pw, padding=1, threads=0))
attempt("a string for the weight", lambda: K.depthwise_project_conv2d(x, "w", None, pw, padding=1))
attempt(
    "expand_weight of the wrong width",
    lambda: K.depthwise_project_conv2d(x, w, None, pw, expand_weight=np.ones((8, 3), np.float32)),
)
attempt(
    "expand_weight, planes under a vector (two steps)",
    lambda: K.depthwise_project_conv2d(
        x[:, :3, :, :5], w, None, pw, padding=1, expand_weight=np.ones((8, 3), np.float32)
    ),
    close(
        ref(
            np.einsum("ec,nchw->nehw", np.ones((8, 3), np.float32), x[:, :3, :, :5]).astype(
                np.float32
            ),
            w,
            pw,
        )
    ),
)
