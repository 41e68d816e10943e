"""Study presets: YAML defaults (``<study>.yaml`` beside this file), flags override."""

from __future__ import annotations

from importlib import resources
from typing import Any, TypeVar

import yaml

from invlab.sweep import ConfigError, from_dict

T = TypeVar("T")


def load_preset(cls: type[T], study: str, name: str, overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from preset ``name`` of ``<study>.yaml`` plus non-None ``overrides``.

    Unknown preset names and unknown/invalid fields raise ``ConfigError`` naming them.
    """

    text = resources.files("invlab.studies").joinpath(f"{study}.yaml").read_text()
    presets = yaml.safe_load(text)
    if name not in presets:
        raise ConfigError("preset", f"unknown preset {name!r} for study {study!r}; valid: "
                          + ", ".join(presets))
    values = dict(presets[name])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(cls, values)
