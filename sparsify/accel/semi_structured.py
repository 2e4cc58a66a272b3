"""2:4 semi-structured inference on CUDA: ONE 2:4 rule and ONE shape rule, torch's own.

A weight is 2:4 when every group of 4 consecutive inputs of each row holds at most 2
nonzeros (:func:`sparsify.penalties.nm.check_nm` with n=2, m=4: the training projection and
this conversion share that definition). ``torch.sparse.to_sparse_semi_structured`` also
needs each dimension to be a multiple of a per-dtype minimum, which this module reads from
torch's ``_DTYPE_SHAPE_CONSTRAINTS`` of the backend torch will use (cuSPARSELt, or CUTLASS
when forced) instead of hard-coding it: for bfloat16 that is (16, 16) for cuSPARSELt and
(32, 64) for CUTLASS on torch 2.x.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsify.errors import SparsifyError, check_choice
from sparsify.penalties.nm import check_nm, nm_project_


def is_2to4(w: torch.Tensor) -> bool:
    """True when ``w`` is 2-D and every group of 4 consecutive inputs per row has <= 2 nonzeros."""
    return w.dim() == 2 and check_nm(w, 2, 4)


def prune_2to4_(w: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every group of 4 along each row, zero the rest (+0.0), in place.

    Raises:
        SparsifyError: ``w`` is not 2-D or its columns are not a multiple of 4.
    """
    if w.dim() != 2 or w.shape[1] % 4:
        raise SparsifyError(
            f"2:4 pruning needs a 2-D weight whose columns are a multiple of 4; got {tuple(w.shape)}."
        )
    nm_project_([w], 2, 4)
    return w


def semi_structured_fits(
    shape: tuple[int, ...], dtype: torch.dtype, backend: str = "default"
) -> str | None:
    """None when a 2-D weight of ``shape``/``dtype`` fits ``backend``'s 2:4 kernels, else why.

    The kernels need each dimension to be a multiple of a per-dtype minimum (CUTLASS fp16/bf16:
    rows of 32, columns of 64; cuSPARSELt: 16 and 16), read from torch itself; ``"default"``
    is the backend ``to_sparse_semi_structured`` picks.
    """
    from torch.sparse import SparseSemiStructuredTensor
    from torch.sparse.semi_structured import (
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    cutlass = backend == "cutlass" or (
        backend == "default" and SparseSemiStructuredTensor._FORCE_CUTLASS
    )
    cls = SparseSemiStructuredTensorCUTLASS if cutlass else SparseSemiStructuredTensorCUSPARSELT
    limits = cls._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    if limits is None:
        return f"dtype {dtype} is not supported by {cls.__name__}"
    if len(shape) != 2:
        return f"shape {shape} is not 2-D"
    rows, cols = shape
    r, c = limits.sparse_min_rows, limits.sparse_min_cols
    if rows < r or rows % r or cols < c or cols % c:
        return f"shape {shape} is not a multiple of ({r}, {c})"
    return None


def semi_structured_ok(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> tuple[bool, str]:
    """Whether every Linear of ``model`` can take a 2:4 semi-structured ``dtype`` weight here.

    Returns ``(True, "")`` or ``(False, why)``: no Linear, a weight not 2:4, a shape
    :func:`semi_structured_fits` refuses, no CUDA, or compute capability < 8.0.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return False, "no Linear layer"
    for name, m in linears:
        if not is_2to4(m.weight):
            return False, f"{name}: weights do not satisfy 2:4 (use --pattern 2:4 to impose it)"
        why = semi_structured_fits(tuple(m.weight.shape), dtype)
        if why is not None:
            return False, f"{name}: {why}"
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    if torch.cuda.get_device_capability(0) < (8, 0):
        return False, "2:4 needs compute capability >= 8.0"
    return True, ""


SEMI_STRUCTURED_BACKENDS = ("default", "cusparselt", "cutlass")


@torch.no_grad()
def to_semi_structured_(
    model: nn.Module, dtype: torch.dtype = torch.bfloat16, backend: str = "default"
) -> dict[str, str]:
    """Swap every 2:4 Linear weight of a CUDA ``model`` for a semi-structured sparse tensor.

    The whole model is cast to ``dtype`` (fp16/bf16: the sparse kernels take one dtype for
    both operands). Linear layers whose weight is not 2:4 or whose shape the kernels refuse
    stay dense; the returned dict says, per Linear, "converted" or why it was skipped.
    ``backend``: torch's choice (``"default"``: cuSPARSELt where torch was built with it),
    or ``"cusparselt"`` / ``"cutlass"`` explicitly (torch's CUTLASS kernels: compute
    capability 8.x only; ``python -m sparsify.bench.gpu`` times both where they run).

    Raises:
        SparsifyError: no CUDA device, a GPU older than compute capability 8.0, a dtype
            other than float16/bfloat16, an unknown backend, or "cutlass" off 8.x.
    """
    check_choice("to_semi_structured_", "backend", backend, SEMI_STRUCTURED_BACKENDS)
    if dtype not in (torch.float16, torch.bfloat16):
        raise SparsifyError(f"to_semi_structured_ needs dtype float16 or bfloat16; got {dtype}.")
    if not torch.cuda.is_available():
        raise SparsifyError(
            "2:4 semi-structured tensors need a CUDA GPU; none is visible (keep the dense model)."
        )
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise SparsifyError(f"model is on {device}; move it with model.cuda() first.")
    if torch.cuda.get_device_capability(device) < (8, 0):
        raise SparsifyError(
            "2:4 semi-structured sparsity needs compute capability >= 8.0 (Ampere or newer)."
        )
    major, minor = torch.cuda.get_device_capability(device)
    if backend == "cutlass" and major != 8:  # torch builds its CUTLASS 2:4 kernels for sm_8x
        raise SparsifyError(
            f"torch's CUTLASS 2:4 kernels run on compute capability 8.x only (this GPU is "
            f"{major}.{minor}); use backend='cusparselt' or 'default'."
        )
    import torch.sparse as ts

    make = {
        "default": ts.to_sparse_semi_structured,
        "cusparselt": ts.SparseSemiStructuredTensorCUSPARSELT.from_dense,
        "cutlass": ts.SparseSemiStructuredTensorCUTLASS.from_dense,
    }[backend]
    model.to(dtype)
    report: dict[str, str] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        w = mod.weight
        if not is_2to4(w):
            report[name] = "skipped: weight is not 2:4"
        elif (why := semi_structured_fits(tuple(w.shape), dtype, backend)) is not None:
            report[name] = f"skipped: {why}"
        else:
            mod.weight = nn.Parameter(make(w.detach().contiguous()), requires_grad=False)
            report[name] = "converted"
    return report
