"""Channels-last convolution weights for the duration of a measurement (CPU speed).

On CPU, oneDNN's convolutions are 2–3× faster for the small CNNs of the studies when the
weight is stored channels-last (``[O, I, kH, kW]`` with strides of ``[O, kH, kW, I]``): the
values are the same, only the memory layout changes, and outputs agree with the default
layout to float rounding (logits ~1e-7; ``tests/test_measure_memory_format.py``). ``measure`` runs
the model this way and restores the original weight tensors afterwards, so a caller's
model is never left changed. 1-channel weights get exact channels-last strides too, so
that the first convolution of a grayscale CNN outputs channels-last and the max-pool after
it runs there (~4× faster than in the default layout; ``cnn_medium``: 13 → 7 ms per
256-image forward on 2 cores). Only ``nn.Conv2d`` weights are touched (a layer whose forward
is ``F.conv2d``, which accepts any strides); a model whose outputs differ on a probe batch,
or that fails with the new layout, is run as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

CL = torch.channels_last


def _channels_last_strides(w: torch.Tensor) -> tuple[int, int, int, int]:
    """Exact channels-last strides ``(kH·kW·I, 1, kW·I, I)`` of ``w`` ``[O, I, kH, kW]``.
    ``w.contiguous(memory_format=channels_last)`` is not enough when ``I = 1``: a 1-channel
    weight already counts as channels-last and keeps the default strides, oneDNN then
    returns the output in the default layout, and the ReLU and max-pool after the first
    convolution of a grayscale CNN run there, ~4× slower."""
    _, i, kh, kw = w.shape
    return (kh * kw * i, 1, kw * i, i)


Saved = list[tuple[nn.Parameter, torch.Tensor]]


def _swap(model: nn.Module) -> Saved:
    saved: Saved = []
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if (isinstance(mod, nn.Conv2d) and isinstance(w, nn.Parameter) and w.dim() == 4
                and w.device.type == "cpu"):
            strides = _channels_last_strides(w)
            if w.stride() != strides:
                saved.append((w, w.data))
                w.data = torch.empty_strided(w.shape, strides, dtype=w.dtype,
                                             device=w.device).copy_(w.data)
    return saved


def _restore(saved: Saved) -> None:
    for w, data in saved:
        w.data = data


@contextmanager
def channels_last_convs(model: object, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        probe: torch.Tensor | None = None) -> Iterator[bool]:
    """Run the block with ``model``'s ``nn.Conv2d`` weights channels-last; yields whether
    they were switched. With ``forward`` and ``probe`` (a few input images), the switch is
    kept only if ``forward(probe)`` runs and matches the original layout's output."""
    if not isinstance(model, nn.Module):
        yield False
        return
    saved = _swap(model)
    if saved and forward is not None and probe is not None:
        try:
            with torch.no_grad():
                fast = forward(probe)
            _restore(saved)
            with torch.no_grad():
                ref = forward(probe)
            ok = (isinstance(fast, torch.Tensor) and fast.shape == ref.shape
                  and bool(torch.allclose(fast, ref, rtol=1e-4, atol=1e-5)))
        except Exception:  # noqa: BLE001 - any failure: keep the model's own layout
            _restore(saved)
            ok = False
        saved = _swap(model) if ok else []
    try:
        yield bool(saved)
    finally:
        _restore(saved)
