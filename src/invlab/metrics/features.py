"""Capture a model's features at named layers with forward hooks (any ``nn.Module``).

``layers=None`` means the penultimate features: ``model.forward_features(x)`` when the model
has it (invlab's models), else the input of the model's last ``nn.Linear`` (captured by a
forward pre-hook during the ordinary forward pass). A named layer is any submodule
(``model.get_submodule(name)``, e.g. ``"features.3"`` or ``"3"`` in an ``nn.Sequential``);
its output is captured and flattened to ``[R, D]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from invlab.metrics.errors import MeasureError

__all__ = ["DEFAULT_LAYER", "FeatureCapture", "resolve_layers"]

DEFAULT_LAYER = "penultimate"
"""Key of the default layer (``forward_features`` or the input of the last Linear)."""


def _last_linear(model: nn.Module) -> str | None:
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


def resolve_layers(model: Any, layers: Sequence[str] | str | None) -> list[str]:
    """Validated layer names (``[DEFAULT_LAYER]`` when None).

    Raises:
        MeasureError: a name that is not a submodule (the message lists some valid ones), or
            no default layer (no ``forward_features`` and no ``nn.Linear``).
    """
    if layers is None:
        if hasattr(model, "forward_features"):
            return [DEFAULT_LAYER]
        if not isinstance(model, nn.Module) or _last_linear(model) is None:
            raise MeasureError(
                "representation_invariance: the model has no forward_features and no "
                "nn.Linear; name the layer(s) with layers=['<submodule name>']")
        return [DEFAULT_LAYER]
    if isinstance(layers, str):
        layers = [s for s in layers.split(",") if s.strip()]
    if not isinstance(model, nn.Module):
        raise MeasureError("layers=[...] needs the model to be an nn.Module")
    names = [str(s).strip() for s in layers]
    valid = [n for n, _ in model.named_modules() if n]
    for s in names:
        if s != DEFAULT_LAYER and s not in valid:
            raise MeasureError(
                f"layer {s!r} is not a submodule of {type(model).__name__}; valid names "
                f"include: {', '.join(valid[:20])}{' ...' if len(valid) > 20 else ''}")
    return list(dict.fromkeys(names))


class FeatureCapture:
    """Forward hooks recording ``[R, D]`` features of the layers during a forward pass.

    ``uses_forward_features`` is True when the default layer is ``model.forward_features``
    (then :meth:`forward_features` must be called separately).
    """

    def __init__(self, model: Any, layers: list[str],
                 pre: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.model = model
        self.layers = layers
        self.pre = pre
        self.uses_forward_features = (DEFAULT_LAYER in layers
                                      and hasattr(model, "forward_features"))
        self.out: dict[str, torch.Tensor] = {}

    @property
    def hooked(self) -> list[str]:
        """Layers captured by hooks during the ordinary forward."""
        return [s for s in self.layers if not (s == DEFAULT_LAYER and self.uses_forward_features)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x) if self.pre is not None else x
        return self.model.forward_features(x).reshape(x.shape[0], -1)

    @contextmanager
    def hooks(self):  # type: ignore[no-untyped-def]
        """Register the hooks for the duration of a ``with`` block."""
        handles = []

        def save(name: str) -> Callable[..., None]:
            def fn(_m: nn.Module, inp: Any, out: Any = None) -> None:
                t = out if out is not None else inp[0]
                self.out[name] = t.reshape(t.shape[0], -1)
            return fn

        try:
            for s in self.hooked:
                if s == DEFAULT_LAYER:
                    mod = self.model.get_submodule(_last_linear(self.model))
                    handles.append(mod.register_forward_pre_hook(save(s)))
                else:
                    mod = self.model.get_submodule(s)
                    handles.append(mod.register_forward_hook(save(s)))
            yield self
        finally:
            for h in handles:
                h.remove()
