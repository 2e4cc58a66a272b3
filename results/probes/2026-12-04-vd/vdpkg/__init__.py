"""A stranger's package for the VD probe: one 1-channel model registered on import (--plugin)."""
import torch
from torch import nn

import sparsify


class Net(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 16, 3, stride=2, padding=1, padding_mode="reflect")
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(), nn.Linear(256, num_classes))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.head(h + self.pw(torch.relu(self.bn(self.dw(h)))))


sparsify.register_model("vd_stranger", lambda num_classes=10, in_channels=1: Net(num_classes, in_channels))
