"""``reused_empty``: a converted layer's large output is reused only where nobody can see it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsify import kernels as spk
from sparsify.accel import layers
from sparsify.accel.layers import REUSE_MIN_BYTES, reused_empty
from sparsify.accel.pool import StencilMaxPool2d

BIG = (1, 2, 2048, REUSE_MIN_BYTES // (4 * 2 * 2048))  # exactly REUSE_MIN_BYTES


def _reusable() -> bool:
    return layers._FREE_REFS is not None


@pytest.mark.skipif(not _reusable(), reason="reference counts cannot be trusted here")
def test_an_output_nobody_holds_is_reused_and_one_still_held_is_not() -> None:
    m = nn.Module()
    y = reused_empty(m, BIG)
    addr = y.data_ptr()
    del y
    again = reused_empty(m, BIG)
    assert again.data_ptr() == addr  # dropped by the caller: its memory comes back
    again.fill_(1.0)
    other = reused_empty(m, BIG)  # `again` is still held: a fresh tensor
    assert other.data_ptr() != addr
    assert bool((again == 1.0).all())
    del again, other


@pytest.mark.skipif(not _reusable(), reason="reference counts cannot be trusted here")
def test_a_view_or_another_mode_keeps_the_output_from_being_reused() -> None:
    m = nn.Module()
    y = reused_empty(m, BIG)
    view = y[0, 1]  # a view shares the memory: overwriting it would change `view`
    addr = y.data_ptr()
    del y
    assert reused_empty(m, BIG).data_ptr() != addr
    del view
    y = reused_empty(m, BIG)
    storage = y.untyped_storage()  # the memory held without the tensor or a view of it
    addr = y.data_ptr()
    del y
    assert reused_empty(m, BIG).data_ptr() != addr
    del storage
    y = reused_empty(m, BIG)
    array = y.numpy()  # numpy's view holds the memory, not the tensor
    addr = y.data_ptr()
    del y
    assert reused_empty(m, BIG).data_ptr() != addr
    del array
    with torch.inference_mode():  # an inference tensor is never handed to normal mode
        y = reused_empty(m, BIG)
        assert y.is_inference()
        del y
    y = reused_empty(m, BIG)
    assert not y.is_inference()


def test_small_outputs_are_never_kept() -> None:
    m = nn.Module()
    reused_empty(m, (1, 3, 8, 8))
    assert "_last_out" not in m.__dict__
    shape = (BIG[0], BIG[1], BIG[2], BIG[3] - 1)  # one float column under the bound
    reused_empty(m, shape)
    assert "_last_out" not in m.__dict__


@pytest.mark.skipif(not spk.available(), reason="the C kernels are not compiled here")
def test_a_layer_reusing_its_output_still_returns_right_values() -> None:
    """The stencil pool on a >= 32 MiB output, called twice on different inputs: the
    second call writes into the first output (dropped), and both equal torch's pool."""
    pool = StencilMaxPool2d(kernel_size=1)
    first_addr = None
    with torch.inference_mode():
        for seed in (0, 1):
            x = torch.randn(BIG, generator=torch.Generator().manual_seed(seed))
            y = pool(x)
            assert torch.equal(y, torch.nn.functional.max_pool2d(x, 1))
            if first_addr is None:
                first_addr = y.data_ptr()
            elif _reusable():
                assert y.data_ptr() == first_addr
            del y
