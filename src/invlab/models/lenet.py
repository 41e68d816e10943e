"""A LeNet-style medium CNN: two 5×5 conv stages and a fully connected hidden layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CNNMedium(nn.Module):
    """conv5x5(w)-ReLU-pool2-conv5x5(2w)-ReLU-pool2-flatten-linear(hidden)-ReLU-linear.

    Shapes: ``[N, C, H, W] -> forward_features [N, hidden] -> [N, num_classes]``
    (H and W divisible by 4).
    """

    def __init__(self, in_shape: Sequence[int] = (1, 36, 36), num_classes: int = 9,
                 width: int = 8, hidden: int = 64) -> None:
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        if h % 4 or w % 4 or width < 1 or hidden < 1:
            raise ValueError(f"need H, W divisible by 4, width >= 1 and hidden >= 1; found "
                             f"in_shape={tuple(in_shape)}, width={width}, hidden={hidden}")
        self.in_shape = (c, h, w)
        self.model_kwargs = {"in_shape": [c, h, w], "num_classes": num_classes, "width": width,
                             "hidden": hidden}
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
