"""A stranger's package for the stop-32 probe (--plugin stripes): a 3-channel 24x32 dataset
of noisy stripes (5 classes: orientation and frequency) and a small CNN outside the zoo."""

import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

import sparsify
from sparsify.pipeline.data import DatasetSplits


def _stripes(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=g)
    angle = (y % 3).float() * math.pi / 3 + 0.2 * torch.randn(n, generator=g)
    freq = 0.35 + 0.25 * (y // 3).float()
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(32.0), indexing="ij")
    phase = torch.rand(n, generator=g) * 2 * math.pi
    t = xx[None] * angle.cos()[:, None, None] + yy[None] * angle.sin()[:, None, None]
    img = torch.sin(freq[:, None, None] * t + phase[:, None, None])
    x = img[:, None].repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.5, -0.5])[None, :, None, None]
    x = x + 1.2 * torch.randn(x.shape, generator=g)
    return TensorDataset(x, y)


def make(request) -> DatasetSplits:
    return DatasetSplits(_stripes(3000, 0), _stripes(1000, 1), (3, 24, 32), 5)


class Net(nn.Module):
    def __init__(self, num_classes: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 24, 5, stride=2, padding=2, padding_mode="circular"),
            nn.GELU(),
            nn.Conv2d(24, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.GELU(),
            nn.AdaptiveMaxPool2d((3, 4)),
            nn.Flatten(),
            nn.Linear(384, 64),
            nn.GELU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.body(x)


sparsify.register_dataset("stripes", make)
sparsify.register_model("stripes_net", lambda num_classes=5, in_channels=3: Net(num_classes, in_channels))
