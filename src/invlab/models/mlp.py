"""The paper's MLP (M23 §4) and its weight-tied, group-invariant variant."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from invlab.groups import Group
from invlab.transforms import TransformSet, create_transform
from invlab.transforms.spec import require_group


def _hidden_stack(width: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


class MLP5(nn.Module):
    """``depth`` hidden ReLU layers of ``hidden`` units, then a linear head.

    With the defaults (``in_shape=(1, 36, 36)``, 9 classes) it has 233,225 parameters.

    Shapes: ``x [N, C, H, W] -> forward_features [N, hidden] -> logits [N, num_classes]``.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 36, 36), num_classes: int = 9,
                 hidden: int = 128, depth: int = 5) -> None:
        super().__init__()
        if depth < 1 or hidden < 1 or num_classes < 1 or len(in_shape) != 3:
            raise ValueError(
                f"need depth>=1, hidden>=1, num_classes>=1 and in_shape=(C, H, W); found "
                f"depth={depth}, hidden={hidden}, num_classes={num_classes}, in_shape={in_shape}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.model_kwargs = {"in_shape": list(self.in_shape), "num_classes": num_classes,
                             "hidden": hidden, "depth": depth}
        d_in = self.in_shape[0] * self.in_shape[1] * self.in_shape[2]
        self.input = nn.Linear(d_in, hidden)
        self.hidden = _hidden_stack(hidden, depth - 1)
        self.head = nn.Linear(hidden, num_classes)

    def forward_first(self, x: torch.Tensor) -> torch.Tensor:
        """First hidden layer ``ReLU(W·x + b)``: ``[N, C, H, W] -> [N, hidden]``."""
        return torch.relu(self.input(x.flatten(1)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.forward_first(x))

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class WeightTiedMLP5(MLP5):
    """MLP5 whose first layer is tied over a group and pooled after the ReLU (M23's WT).

    ``h(x) = pool_g ReLU(W·(g·x) + b)`` with ``pool`` = max (default) or mean. Since every
    group here permutes pixels, ``W·(g·x) = (g⁻¹·W)·x``: the transformed weights are stacked
    into one ``[|G|·hidden, C·H·W]`` matrix, so the whole orbit costs one matmul. The model is
    invariant by construction: ``f(g·x) = f(x)`` for every ``g`` in the group.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 36, 36), num_classes: int = 9,
                 hidden: int = 128, depth: int = 5, group: str | TransformSet = "r4",
                 pool: str = "max") -> None:
        super().__init__(in_shape, num_classes, hidden, depth)
        if pool not in ("max", "mean"):
            raise ValueError(f"pool must be 'max' or 'mean', found {pool!r}")
        self.group: Group = require_group(create_transform(group), "weight tying (wt_mlp5)")
        self.group.check_input(torch.empty(1, *self.in_shape))
        self.pool = pool
        self.model_kwargs.update(group=self.group.name, pool=pool)

    def tied_weight(self) -> torch.Tensor:
        """``[|G|·hidden, C·H·W]``: rows ``g⁻¹·W`` for every element ``g``."""
        w = self.input.weight.view(-1, *self.in_shape)
        stacked = [self.group.act(w, self.group.inverse(g)) for g in self.group.elements]
        return torch.cat(stacked).flatten(1)

    def forward_first(self, x: torch.Tensor) -> torch.Tensor:
        n, k = x.shape[0], self.group.order
        pre = x.flatten(1) @ self.tied_weight().T  # [N, |G|*hidden]
        act = torch.relu(pre.view(n, k, -1) + self.input.bias)
        return act.amax(1) if self.pool == "max" else act.mean(1)
