"""Model zoo: the lecture's convnet and the LeNets have the published shapes."""

from __future__ import annotations

import pytest
import torch

from sparsify.errors import SparsifyError
from sparsify.pipeline.zoo import build_model


@pytest.mark.parametrize(
    "name,params",
    [
        # conv 1->32 k5 (832) + conv 32->64 k5 (51,264) + fc 256->200 (51,400) + fc 200->10 (2,010)
        ("lecture_convnet", 832 + 51264 + 51400 + 2010),
        ("lenet300_100", 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10),  # 266,610
        ("lenet5", 520 + 25050 + 400500 + 5010),  # 431,080 (Caffe variant)
    ],
)
def test_zoo_shapes(name: str, params: int) -> None:
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_torchvision_classifier_by_name_with_one_channel() -> None:
    model = build_model("torchvision:resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_models() -> None:
    with pytest.raises(SparsifyError, match="Unknown model 'lenet6'"):
        build_model("lenet6")
    with pytest.raises(SparsifyError, match="Unknown torchvision classifier 'resnet19'"):
        build_model("torchvision:resnet19")
