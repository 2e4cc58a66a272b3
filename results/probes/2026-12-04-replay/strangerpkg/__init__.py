"""A stranger's package: one model, registered on import (for sparsify --plugin)."""
import torch
from torch import nn

import sparsify


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.pw(torch.nn.functional.relu6(self.bn(self.dw(x))))


class Stranger(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 24, 3, stride=2, groups=2)
        self.block = Block(24)
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.head = nn.Linear(24 * 16, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.block(torch.relu(self.stem(x)))).flatten(1))


sparsify.register_model("stranger", lambda num_classes=7, in_channels=2: Stranger(num_classes, in_channels))
