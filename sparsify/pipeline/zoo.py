"""Model zoo: the lecture's convnet, LeNet-300-100, LeNet-5 (Caffe) and torchvision classifiers.

``build_model(name)`` is the one entry point; a name ``torchvision:<fn>`` builds any
torchvision classifier with ``num_classes`` outputs and its stem adapted to ``in_channels``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sparsify.errors import SparsifyError


class LectureConvNet(nn.Module):
    """EE-559's MNIST convnet: conv5(32)-pool3-relu, conv5(64)-pool2-relu, fc256->200-relu, fc->10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.fc1 = nn.Linear(256, 200)
        self.fc2 = nn.Linear(200, num_classes)
        self.pool1 = nn.MaxPool2d(3)
        self.pool2 = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 28, 28)
        x = self.relu(self.pool1(self.conv1(x)))  # (B, 32, 8, 8)
        x = self.relu(self.pool2(self.conv2(x)))  # (B, 64, 2, 2)
        x = self.relu(self.fc1(self.flatten(x)))  # (B, 200)
        return self.fc2(x)  # (B, classes)


class LeNet300100(nn.Module):
    """LeNet-300-100: 784 -> 300 -> 100 -> classes, ReLU (Han et al. 2015's baseline MLP)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * 28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 28, 28)
        x = self.relu(self.fc1(self.flatten(x)))  # (B, 300)
        x = self.relu(self.fc2(x))  # (B, 100)
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5, Caffe variant: conv5(20)-pool2, conv5(50)-pool2, fc800->500-relu, fc->classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, num_classes)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 28, 28)
        x = self.pool(self.conv1(x))  # (B, 20, 12, 12)
        x = self.pool(self.conv2(x))  # (B, 50, 4, 4)
        x = self.relu(self.fc1(self.flatten(x)))  # (B, 500)
        return self.fc2(x)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lecture_convnet": LectureConvNet,
    "lenet300_100": LeNet300100,
    "lenet5": LeNet5,
}
TORCHVISION_PREFIX = "torchvision:"


def _adapt_stem(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d so the network accepts ``in_channels`` (torchvision assumes 3)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != in_channels:
                    setattr(
                        parent,
                        child_name,
                        nn.Conv2d(
                            in_channels,
                            child.out_channels,
                            kernel_size=child.kernel_size,
                            stride=child.stride,
                            padding=child.padding,
                            dilation=child.dilation,
                            groups=1,
                            bias=child.bias is not None,
                        ),
                    )
                return
    raise SparsifyError(
        "model has no Conv2d stem to adapt to in_channels; set model.in_channels: 3."
    )


def model_names() -> list[str]:
    """Names accepted by :func:`build_model` (torchvision ones are listed by prefix)."""
    return sorted(MODELS) + [TORCHVISION_PREFIX + "<classifier>"]


def build_model(name: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Return a freshly initialised model by name (see :func:`model_names`).

    Raises:
        SparsifyError: unknown name, or a torchvision name that is not a classifier builder.
    """
    if name in MODELS:
        return MODELS[name](num_classes=num_classes, in_channels=in_channels)
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision

        arch = name[len(TORCHVISION_PREFIX) :]
        available = torchvision.models.list_models(module=torchvision.models)
        if arch not in available:
            raise SparsifyError(
                f"Unknown torchvision classifier {arch!r} in model.name; choose one of "
                f"torchvision.models.list_models(), e.g. 'torchvision:resnet18'."
            )
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if in_channels != 3:
            _adapt_stem(model, in_channels)
        return model
    raise SparsifyError(
        f"Unknown model {name!r} in model.name; choose one of {', '.join(model_names())}."
    )
