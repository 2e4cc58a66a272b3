from torch import nn

import sparsify


class TinyNet(nn.Module):
    def __init__(self, num_classes=3, in_channels=3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


sparsify.register_model(
    "tiny_net", lambda num_classes=3, in_channels=3: TinyNet(num_classes, in_channels)
)
