"""Max pooling on the kernels' stencil in the converter (sparsify.accel.pool)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsify import kernels as spk
from sparsify.accel import sparsify_inference_
from sparsify.accel.pool import StencilMaxPool2d, poolable
from sparsify.errors import SparsifyError

pytestmark = pytest.mark.skipif(not spk.available(), reason="sparsify.kernels not compiled here")


def _stem() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(16, 8, 3, padding=1),
        nn.MaxPool2d(2, ceil_mode=True),  # ceil_mode: not reproduced, stays torch's
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 4),
    ).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight[torch.rand(m.weight.shape) < 0.8] = 0.0
    return model


@pytest.mark.parametrize("mode", ["fixed", "cost_model", "calibrate"])
def test_max_pools_go_on_the_stencil_and_keep_the_output(mode: str) -> None:
    model = _stem()
    x = torch.randn(2, 3, 19, 19)
    with torch.no_grad():
        ref = model(x)
    converted = copy.deepcopy(model)
    report = sparsify_inference_(converted, x, mode=mode, reps=3)
    assert len(report.pools) == 1 and report.pools[0].startswith("2: "), report.pools
    assert type(converted[4]) is nn.MaxPool2d  # ceil_mode=True: not offered
    if mode != "calibrate" or "kept torch's" not in report.pools[0]:
        assert isinstance(converted[2], StencilMaxPool2d)
    assert "MaxPool2d 2:" in report.summary() and report.to_dict()["pools"] == report.pools
    with torch.inference_mode():
        torch.testing.assert_close(converted(x), ref, rtol=1e-5, atol=1e-5)


def test_pools_are_not_offered_without_the_stencil_kernel() -> None:
    model = _stem()
    report = sparsify_inference_(model, torch.randn(1, 3, 19, 19), mode="fixed", kernels=("spk",))
    assert report.pools == [] and type(model[2]) is nn.MaxPool2d


def test_the_stencil_pool_is_exact_passes_gradients_and_refuses_what_it_cannot_do() -> None:
    pool = nn.MaxPool2d((3, 2), stride=(2, 1), padding=1, dilation=(1, 2))
    new = StencilMaxPool2d.from_pool(pool)
    x = torch.randn(2, 4, 13, 11)
    x[0, 1, 2, 3] = float("nan")
    with torch.inference_mode():
        assert torch.equal(new(x).isnan(), pool(x).isnan())
        torch.testing.assert_close(new(x), pool(x), equal_nan=True, rtol=0, atol=0)
        assert new(x[:, :, :5, :4]).shape == pool(x[:, :, :5, :4]).shape  # a new shape
    xg = torch.randn(1, 2, 6, 6, requires_grad=True)
    new(xg).sum().backward()  # torch's path: gradients flow
    assert xg.grad is not None and xg.grad.sum() > 0
    for bad in (nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, return_indices=True)):
        assert not poolable(bad)
        with pytest.raises(SparsifyError, match="Keep this pool"):
            StencilMaxPool2d.from_pool(bad)
