"""A small CNN for later studies."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CNNSmall(nn.Module):
    """conv3x3(16)-pool-conv3x3(32)-pool-conv3x3(64)-global-avg-pool-linear.

    Shapes: ``[N, C, H, W] -> forward_features [N, width*4] -> [N, num_classes]``.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 36, 36), num_classes: int = 9,
                 width: int = 16) -> None:
        super().__init__()
        c = int(in_shape[0])
        self.in_shape = tuple(int(s) for s in in_shape)
        self.model_kwargs = {"in_shape": list(self.in_shape), "num_classes": num_classes,
                             "width": width}
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
