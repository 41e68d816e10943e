"""Weight tying for any backbone whose first layer is ``nn.Linear`` or ``nn.Conv2d``.

``WeightTied(backbone, group)`` replaces the backbone's first layer ``L`` (the first
``Linear``/``Conv2d`` to run, which must see the image itself) by

.. math:: \\tilde L(x) = \\max_{g \\in G} L(g \\cdot x),

so the rest of the network sees a G-invariant input and the whole model is invariant by
construction: ``{L(g·g'·x)}_g = {L(g·x)}_g`` for every ``g'``, since ``G`` is a group. M23's WT
pools *after* the nonlinearity, ``max_g σ(L(g·x))``; for a non-decreasing σ (ReLU, LeakyReLU,
tanh, sigmoid) ``max_g σ(z_g) = σ(max_g z_g)``, so pooling the first layer's output is the same
model; for others (GELU, SiLU) it pools before σ — still exactly invariant. A linear first layer
costs one matmul with the stacked tied weights ``[g⁻¹·W]_g`` (``W·(g·x) = (g⁻¹·W)·x`` for the
pixel permutations of an exact group); a convolution runs on the orbit ``[|G|·N, C, H, W]``.

Where the math does not allow it (refused with a message):

- the transform must be an exact group (``r4``, ``t<n>``, ``flip``, ``d4``): pooling over a
  continuous rotation's grid or a photometric family is not closed, so no invariance follows;
- the first layer must see the image: if the backbone transforms the input first (a stem,
  normalization inside the model), ``g`` does not act on the first layer's input;
- mean pooling: ``mean_g σ(z_g) ≠ σ(mean_g z_g)`` in general and averaging the first layer's
  pre-activations is just ``L`` on the orbit-averaged image, so only ``pool="max"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from invlab.groups import Group
from invlab.transforms import TransformSet, create_transform
from invlab.transforms.spec import require_group

__all__ = ["TiedFirstLayer", "WeightTied", "first_layer"]


class TiedFirstLayer(nn.Module):
    """``max_g L(g·u)`` for the first layer ``L`` (``u`` the image, flattened for Linear)."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, group: Group,
                 in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.layer = layer
        self.group = group
        self.in_shape = in_shape

    def tied_weight(self) -> torch.Tensor:
        """Linear only: ``[|G|·out, C·H·W]``, rows ``g⁻¹·W`` for every element ``g``."""
        w = self.layer.weight.view(-1, *self.in_shape)
        return torch.cat([self.group.act(w, self.group.inverse(g))
                          for g in self.group.elements]).flatten(1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k, n = self.group.order, u.shape[0]
        if isinstance(self.layer, nn.Linear):
            pre = u.flatten(1) @ self.tied_weight().T  # [N, |G|*out]
            pre = pre.view(n, k, -1)
            if self.layer.bias is not None:
                pre = pre + self.layer.bias
            return pre.amax(1)
        out = self.layer(self.group.orbit(u).flatten(0, 1))  # [|G|*N, out, H', W']
        return out.view(k, n, *out.shape[1:]).amax(0)


def first_layer(backbone: nn.Module, in_shape: Sequence[int]
                ) -> tuple[nn.Module, str, nn.Linear | nn.Conv2d]:
    """``(parent, attribute, layer)`` of the first Linear/Conv2d to run on an image of
    ``in_shape``; raises ValueError if it does not see the image itself."""
    first = next((p for p in backbone.parameters()), None)
    if first is not None and first.is_meta:  # shapes only (checkpoint check): registration order
        layer = next((m for m in backbone.modules() if isinstance(m, (nn.Linear, nn.Conv2d))),
                     None)
        if layer is None:
            raise ValueError(f"{type(backbone).__name__} has no nn.Linear or nn.Conv2d layer")
        return _parent_of(backbone, layer)
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, i: seen.append((m, i[0])))
             for m in backbone.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    x = torch.rand(2, *in_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            backbone(x)
    except Exception as e:
        raise ValueError(f"the backbone rejects images of shape {list(in_shape)}: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError(f"{type(backbone).__name__} has no nn.Linear or nn.Conv2d layer to tie")
    layer, inp = seen[0]
    sees_image = (inp.shape == x.shape and torch.equal(inp, x)) or (
        isinstance(layer, nn.Linear) and inp.dim() == 2 and torch.equal(inp, x.flatten(1)))
    if not sees_image:
        raise ValueError(f"the first layer ({type(layer).__name__}) does not see the image "
                         f"(its input has shape {list(inp.shape)} and other values): the backbone "
                         "transforms the input first, so the group does not act on that layer's "
                         "input; weight tying needs a first Linear/Conv2d applied to the image")
    return _parent_of(backbone, layer)


def _parent_of(backbone: nn.Module, layer: nn.Module) -> tuple[nn.Module, str, Any]:
    for parent in backbone.modules():
        for name, child in parent.named_children():
            if child is layer:
                return parent, name, layer
    raise ValueError("the first layer is not a registered submodule")  # pragma: no cover


class WeightTied(nn.Module):
    """Any backbone with its first layer tied over an exact group (see the module doc).

    Args:
        backbone: ``[N, C, H, W] -> [N, K]``, first layer ``nn.Linear`` (on the flattened
            image) or ``nn.Conv2d``; modified in place (its first layer is wrapped).
        group: an exact group spec or object (``r4``, ``t3``, ``flip``, ``d4``).
        in_shape: ``(C, H, W)``; default ``backbone.in_shape``.
        pool: ``"max"`` (the only pooling for which the construction is M23's WT).
    """

    def __init__(self, backbone: nn.Module, group: str | TransformSet = "r4",
                 in_shape: Sequence[int] | None = None, pool: str = "max") -> None:
        super().__init__()
        if pool != "max":
            raise ValueError(f"WeightTied pools with max only (found pool={pool!r}): mean-pooling "
                             "pre-activations is the first layer on the orbit-averaged image, not "
                             "M23's weight tying")
        shape = in_shape if in_shape is not None else getattr(backbone, "in_shape", None)
        if shape is None or len(shape) != 3:
            raise ValueError(f"WeightTied needs in_shape=(C, H, W) (or backbone.in_shape), found "
                             f"{shape!r}")
        self.in_shape = tuple(int(s) for s in shape)
        self.group: Group = require_group(create_transform(group), "weight tying (WeightTied)")
        self.group.check_input(torch.empty(1, *self.in_shape))
        parent, name, layer = first_layer(backbone, self.in_shape)
        setattr(parent, name, TiedFirstLayer(layer, self.group, self.in_shape))  # type: ignore
        self.backbone = backbone
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        if name in ("forward_features", "forward_head"):
            backbone = super().__getattr__("backbone")
            if hasattr(backbone, name):
                return getattr(backbone, name)
        return super().__getattr__(name)
