"""Model zoo: the lecture's convnet, LeNet-300-100, LeNet-5 (Caffe) and torchvision classifiers.

``build_model(name)`` is the one entry point; a name ``torchvision:<fn>`` builds any
torchvision classifier with ``num_classes`` outputs and its stem adapted to ``in_channels``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from sparsify.errors import SparsifyError

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


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


def _set_param(mod: nn.Module, name: str, value: torch.Tensor | None, like: object) -> None:
    if value is None:
        mod.register_parameter(name, None)
        return
    grad = like.requires_grad if isinstance(like, torch.Tensor) else True
    setattr(mod, name, nn.Parameter(value.detach().contiguous().clone(), requires_grad=grad))


@torch.no_grad()
def resize_to_state_dict_(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Give every Linear/Conv/BatchNorm of ``model`` the widths of ``state``; return those changed.

    Use it before ``model.load_state_dict(state, strict=True)`` to load a shrunk checkpoint
    into a freshly built model of the same architecture. Tensors are allocated empty: the
    load fills them. A bias present in ``state`` but absent in the module is created.
    It lives here, not in :mod:`sparsify.shrink`, because checkpoint loading needs it and
    a checkpoint may not import a later stage.
    """
    changed = []
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        w = state.get(prefix + "weight")
        if isinstance(mod, (nn.Linear, *CONV_TYPES)) and w is not None:
            has_bias = (prefix + "bias") in state
            if tuple(w.shape) == tuple(mod.weight.shape) and has_bias == (mod.bias is not None):
                continue
            _set_param(mod, "weight", torch.empty(w.shape, dtype=mod.weight.dtype), mod.weight)
            _set_param(
                mod,
                "bias",
                torch.empty(w.shape[0], dtype=w.dtype) if has_bias else None,
                mod.weight,
            )
            if isinstance(mod, nn.Linear):
                mod.out_features, mod.in_features = w.shape
            else:
                mod.out_channels, mod.in_channels = w.shape[0], w.shape[1] * mod.groups
            changed.append(name)
        elif isinstance(mod, BN_TYPES):
            ref = state.get(prefix + "running_mean", w)
            if ref is None or ref.shape[0] == mod.num_features:
                continue
            n = ref.shape[0]
            for pname in ("weight", "bias"):
                if getattr(mod, pname) is not None:
                    _set_param(mod, pname, torch.empty(n), getattr(mod, pname))
            for bname in ("running_mean", "running_var"):
                if getattr(mod, bname) is not None:
                    setattr(mod, bname, torch.empty(n))
            mod.num_features = n
            changed.append(name)
    return changed
