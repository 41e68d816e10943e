"""A tiny Vision Transformer (patch embedding + pre-norm transformer blocks) for small images.

Attention is written with plain ``Linear`` layers (no ``nn.MultiheadAttention``) so the model
works under ``torch.func.functional_call`` + ``vmap`` (the zoo's stacked trainer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _Block(nn.Module):
    """Pre-norm block: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``. ``[N, T, D] -> [N, T, D]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # [N, heads, T, d/heads]
        att = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.norm2(x))


class ViTTiny(nn.Module):
    """Patchify (``patch``×``patch``, non-overlapping; default: 7, 6, 4 or 2, whichever tiles
    the image first), linear embed, class token, learned
    position embedding, ``depth`` blocks, final LayerNorm; the class token is the feature.

    Shapes: ``[N, C, H, W] -> forward_features [N, dim] -> [N, num_classes]``; H and W
    must be multiples of ``patch``.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 36, 36), num_classes: int = 9,
                 patch: int | None = None, dim: int = 32, depth: int = 2, heads: int = 2,
                 mlp_ratio: int = 2) -> None:
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        if patch is None:  # the largest of 7, 6, 4, 2 that tiles the image (28 -> 7, 36 -> 6)
            patch = next((p for p in (7, 6, 4, 2) if h % p == 0 and w % p == 0), 7)
        if h % patch or w % patch or dim % heads:
            raise ValueError(f"need H, W multiples of patch and dim divisible by heads; found "
                             f"in_shape={tuple(in_shape)}, patch={patch}, dim={dim}, heads={heads}")
        self.in_shape = (c, h, w)
        self.patch = patch
        self.model_kwargs = {"in_shape": [c, h, w], "num_classes": num_classes, "patch": patch,
                             "dim": dim, "depth": depth, "heads": heads, "mlp_ratio": mlp_ratio}
        tokens = (h // patch) * (w // patch)
        self.embed = nn.Linear(c * patch * patch, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W] -> [N, T, C·patch²]`` (row-major patches)."""
        n, c, h, w = x.shape
        p = self.patch
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, (h // p) * (w // p), c * p * p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(self.patchify(x))
        z = torch.cat([self.cls.expand(z.shape[0], -1, -1), z], dim=1) + self.pos
        return self.norm(self.blocks(z))[:, 0]

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
