"""Model registry (timm-style explicit table) and ``create_model``.

Every model maps ``[N, C, H, W]`` images to ``[N, num_classes]`` logits and exposes
``forward_features`` (penultimate representation ``[N, D]``) and ``forward_head``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from invlab.errors import InvlabError
from invlab.models.cnn import CNNSmall
from invlab.models.factory import model_factory
from invlab.models.lenet import CNNMedium
from invlab.models.mlp import MLP5, WeightTiedMLP5
from invlab.models.pooled import GroupPooled
from invlab.models.pretrained import PRETRAINED, load_pretrained
from invlab.models.tied import WeightTied
from invlab.models.vit import ViTTiny
from invlab.transforms import TransformError

__all__ = ["MLP5", "WeightTiedMLP5", "CNNSmall", "GroupPooled", "WeightTied", "CNNMedium",
           "ViTTiny", "create_model", "list_models", "model_factory", "ModelError"]


class ModelError(InvlabError, ValueError):
    """Unknown model name or invalid model arguments."""


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "mlp5": (MLP5, "5 hidden ReLU layers of width 128 (M23's MLP, 233k params at 36x36, 9 classes)"),
    "wt_mlp5": (WeightTiedMLP5, "mlp5 with a group weight-tied first layer, max-pooled over the group "
                "after the ReLU: invariant by construction"),
    "cnn_small": (CNNSmall, "3 conv layers (16/32/64) + global average pool + linear head"),
    "mlp": (MLP5, "ReLU MLP with configurable hidden width and depth (hidden=128, depth=5)"),
    "cnn_medium": (CNNMedium, "LeNet-style: two 5x5 conv stages (width, 2*width) + hidden FC"),
    "vit_tiny": (ViTTiny, "tiny ViT: 7x7 patches at 28x28 (6x6 at 36x36), dim 32, 2 pre-norm blocks, cls token"),
}


def _tied(base: str) -> Callable[..., nn.Module]:
    """``wt_<base>``: the registered ``base`` with its first layer tied (:class:`WeightTied`)."""
    def build(group: str = "r4", pool: str = "max", **kwargs: Any) -> nn.Module:
        backbone = _REGISTRY[base][0](**kwargs)
        model = WeightTied(backbone, group, pool=pool)
        model.model_kwargs = {**getattr(backbone, "model_kwargs", kwargs),  # type: ignore
                              "group": model.group.name, "pool": pool}
        return model
    return build


_NOT_TIEABLE = {"vit_tiny"}
"""Models whose first layer does not see the image (the ViT's patch projection acts on a
reshaped input), so weight tying over the image group is not defined for them."""


def _derived() -> dict[str, tuple[Callable[..., nn.Module], str]]:
    """``wt_<name>`` for every registered model without a dedicated weight-tied class
    (except :data:`_NOT_TIEABLE`)."""
    return {f"wt_{k}": (_tied(k), f"{k} with its first layer weight-tied over the group and "
                        "max-pooled (WeightTied): invariant by construction")
            for k in list(_REGISTRY) if not k.startswith("wt_") and f"wt_{k}" not in _REGISTRY
            and k not in _NOT_TIEABLE}


def list_models() -> dict[str, str]:
    """Registered model names and one-line descriptions (``wt_<name>`` derived for every
    model whose first layer is tied generically)."""
    return {k: d for k, (_, d) in {**_REGISTRY, **_derived()}.items()}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("wt_mlp5", group="r4", num_classes=9)``.

    The model keeps ``model.model_name`` and ``model.model_kwargs`` (JSON-serializable) so
    a checkpoint can rebuild it.
    """
    table = {**_REGISTRY, **_derived()}
    if name not in table:
        if name in PRETRAINED:  # e.g. create_model("efficientnet_lite0", pretrained=True)
            try:
                return load_pretrained(name, **kwargs)
            except TypeError as e:
                raise ModelError(f"bad arguments for model {name!r}: {e}") from e
        raise ModelError(f"unknown model {name!r}; valid names: {', '.join(sorted(table))}; "
                         f"pretrained: {', '.join(sorted(PRETRAINED))}")
    try:
        model = table[name][0](**kwargs)
    except TransformError:
        raise  # already names the group/transform and what is wrong (GroupError included)
    except (TypeError, ValueError) as e:
        raise ModelError(f"bad arguments for model {name!r}: {e}") from e
    model.model_name = name  # type: ignore[assignment]
    model.model_kwargs = dict(getattr(model, "model_kwargs", kwargs))  # type: ignore[assignment]
    return model
