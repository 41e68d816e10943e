"""Training batches ``g·x`` read from a precomputed orbit of the training images.

For an exact group acting by a pixel permutation (``Group.pixel_table``), the orbit of the
whole training set is built once,

    orbit[e·N + i] = g_e·x_i          ([|G|·N, C, H, W], float copies of the same pixels),

and a batch with one element per sample, ``g_k·x_{i_k}``, is then a single ``index_select``
of rows ``g_k·N + i_k``. IR's pair batch ``[g·x, h·(g·x)]`` is one ``index_select`` too,
through the composition table ``(h·g)`` read off the pixel tables. A pixel permutation only
copies values, so the batches are bit-identical to ``group.act(x[idx], g)`` (and to
``torch.cat([xg, group.act(xg, h)])``): training gives the same weights either way, only
faster (one memory copy per batch instead of an index, a table lookup and a gather;
``benchmarks/train_orbit.py``).

The orbit costs ``|G|`` copies of the training images (none for the trivial group ``t1``,
whose batches index the images themselves); above ``max_bytes`` (default
1 GiB), or for a group that is not a pixel permutation on these images, batches are made
with ``group.act`` per batch as before.
"""

from __future__ import annotations

import torch

from invlab.groups import Group

ORBIT_MAX_BYTES = 1 << 30


class OrbitBatches:
    """``take(idx, g) = g·images[idx]``, ``take_pair(idx, g, h) = [g·x, h·(g·x)]``.

    Args:
        group: the group whose elements are drawn per sample.
        images: training images ``[N, C, H, W]``.
        max_bytes: largest orbit to precompute (default ``ORBIT_MAX_BYTES``, 1 GiB); 0
            disables it (per-batch ``group.act``).
    """

    def __init__(self, group: Group, images: torch.Tensor, max_bytes: int | None = None) -> None:
        group.check_input(images)
        max_bytes = ORBIT_MAX_BYTES if max_bytes is None else max_bytes
        self.group, self.images = group, images
        self.n = images.shape[0]
        self.orbit: torch.Tensor | None = None
        self.compose: torch.Tensor | None = None  # compose[h, g] = index of h·g
        table = (group.pixel_table(images.shape[-2], images.shape[-1])
                 if images.dim() == 4 and group.is_exact else None)
        size = group.order * images.numel() * images.element_size()
        if table is None or size > max_bytes:
            return
        self.compose = _composition(table)
        if self.compose is not None:
            self.compose = self.compose.to(images.device)
        table = table.to(images.device)
        n, c, h, w = images.shape
        if bool((table == torch.arange(h * w, device=table.device)).all()):  # the trivial group: no copy
            self.orbit = images.contiguous()
            return
        flat = images.reshape(n, c, h * w)
        orbit = torch.empty(group.order, n, c, h * w, dtype=images.dtype, device=images.device)
        # one gather per element into one buffer; Group.orbit would stack |G| temporaries
        # (twice the memory at the peak) and was 1.6x slower here
        for e in range(group.order):
            torch.gather(flat, 2, table[e].expand(n, c, h * w), out=orbit[e])
        self.orbit = orbit.view(group.order * n, c, h, w)

    @property
    def precomputed(self) -> bool:
        """Whether batches come from the precomputed orbit (else from ``group.act``)."""
        return self.orbit is not None

    def take(self, idx: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``g_k·images[idx_k]`` for each k: ``idx, g [n] -> [n, C, H, W]``."""
        if self.orbit is None:
            return self.group.act(self.images[idx], g)
        return self.orbit.index_select(0, g * self.n + idx)

    def take_pair(self, idx: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``[g·x; h·(g·x)]`` with ``x = images[idx]``: ``idx, g, h [n] -> [2n, C, H, W]``."""
        if self.orbit is None or self.compose is None:
            xg = self.take(idx, g)
            return torch.cat([xg, self.group.act(xg, h)])
        rows = torch.cat([g * self.n + idx, self.compose[h, g] * self.n + idx])
        return self.orbit.index_select(0, rows)


def _composition(table: torch.Tensor) -> torch.Tensor | None:
    """``[order, order]`` long tensor ``c`` with ``h·(g·x) == c[h, g]·x`` pixel for pixel,
    from the pixel tables (``(g·x)[p] = x[T_g[p]]``, so ``h·(g·x)`` reads ``x[T_g[T_h]]``);
    None if some product is not in the table (not a group on this grid)."""
    order = table.shape[0]
    out = torch.empty(order, order, dtype=torch.long)
    for h in range(order):
        for g in range(order):
            hit = (table == table[g][table[h]]).all(dim=1).nonzero()
            if hit.numel() == 0:
                return None
            out[h, g] = hit[0, 0]
    return out
