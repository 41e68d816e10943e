"""Checkpoints: safetensors weights + JSON metadata. Loading never unpickles.

The file is a standard ``.safetensors`` file; its string metadata holds one key,
``invlab``, a JSON object with the model name and kwargs, and whatever the caller adds
(group, normalization statistics, training config, seed), plus the invlab version.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from invlab._version import __version__
from invlab.cache import CacheMismatch
from invlab.errors import InvlabError
from invlab.io import atomic_write, remove_stale_temps
from invlab.models import GroupPooled, WeightTied, create_model, list_models
from invlab.models.factory import SPEC, FactoryError, build_from_factory, factory_path, import_factory
from invlab.transforms import TransformError, create_transform


class CheckpointError(InvlabError, ValueError):
    """A checkpoint file is not a valid invlab safetensors checkpoint."""


_PICKLE_HINT = ("invlab never unpickles (pickle can run arbitrary code); convert it with "
                "`invlab.save_checkpoint(model, 'model.safetensors')` from a trusted session")


def _version() -> str:
    return __version__


def _describe(model: nn.Module, factory: Any = None,
              factory_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """How to rebuild ``model``: a registry ``model`` + ``model_kwargs``, or a user
    ``factory`` (import path, marked with ``@model_factory``) + ``factory_kwargs``; plus
    ``wrapper`` for GroupPooled / WeightTied around either."""

    if isinstance(model, GroupPooled):
        inner = _describe(model.model, factory, factory_kwargs)
        return {**inner, "wrapper": {**inner.get("wrapper", {}), "group_pooled": model.group.name}}
    if isinstance(model, WeightTied) and getattr(model, "model_name", None) is None:
        inner = _describe(model.backbone, factory, factory_kwargs)
        tied = {"group": model.group.name, "in_shape": list(model.in_shape)}
        return {**inner, "wrapper": {**inner.get("wrapper", {}), "weight_tied": tied}}
    name = getattr(model, "model_name", None)
    if name is not None and factory is None:
        return {"model": name, "model_kwargs": dict(getattr(model, "model_kwargs", {}))}
    factory = factory if factory is not None else getattr(model, "invlab_factory", None)
    if factory is None:
        raise CheckpointError(
            f"{type(model).__name__} was not built by invlab.create_model; to checkpoint it, "
            "pass factory='package.module:function' (a module-level function marked "
            "@invlab.models.model_factory that rebuilds it, with JSON factory_kwargs) — weights "
            "go in safetensors, the factory's import path in the metadata, never a pickle")

    try:
        spec = factory if isinstance(factory, str) else factory_path(factory)
        import_factory(spec, trusted=False)  # importable and marked, or fail now, not at load
    except FactoryError as e:
        raise CheckpointError(f"cannot checkpoint {type(model).__name__}: {e}") from e
    kwargs = dict(factory_kwargs if factory_kwargs is not None
                  else getattr(model, "invlab_factory_kwargs", None) or {})
    return {"factory": spec, "factory_kwargs": kwargs}


def describe_model(model: nn.Module) -> dict[str, Any]:
    """The metadata that rebuilds ``model`` (registry name or marked factory, wrappers);
    raises :class:`CheckpointError` for a model that could not be rebuilt."""
    return _describe(model)


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], *, factory: Any = None,
                    factory_kwargs: dict[str, Any] | None = None, **metadata: Any) -> Path:
    """Write ``model``'s weights and ``metadata`` (JSON-serializable) atomically.

    A model invlab did not build needs ``factory``: ``"package.module:function"`` (or the
    function itself) marked with :func:`invlab.models.model_factory`, called with
    ``factory_kwargs`` at load time (``train()`` records it for models it built from a
    factory).

    Example:
        >>> save_checkpoint(model, "run/best.safetensors", group="r4", seed=0,
        ...                 normalization={"mean": 0.08, "std": 0.25})
        >>> save_checkpoint(my_cnn, "cnn.safetensors", factory="mylab.models:cnn",
        ...                 factory_kwargs={"width": 32})
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {**_describe(model, factory, factory_kwargs), **metadata,
            "invlab_version": _version()}
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except TypeError as e:
        raise CheckpointError(f"checkpoint metadata must be JSON-serializable: {e}") from e
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    remove_stale_temps(p.parent)
    atomic_write(p, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata={"invlab": meta_json}))
    return p


def _check_header(p: Path) -> None:
    """Accept only the safetensors layout: u64-LE header length, then a JSON object."""
    with open(p, "rb") as fh:
        head = fh.read(16)
    size = p.stat().st_size
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 8 + n <= size:
            return
    if head[:1] == b"\x80" or head[:2] == b"PK":
        kind = "a pickle" if head[:1] == b"\x80" else "a torch.save zip archive (pickle inside)"
        raise CheckpointError(f"{p}: this is {kind}, not a safetensors checkpoint. {_PICKLE_HINT}")
    if len(head) < 9:
        raise CheckpointError(f"{p}: too short for a safetensors file ({size} bytes)")
    raise CheckpointError(f"{p}: not a safetensors file (expected an 8-byte header length "
                          "followed by a JSON header), or truncated")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's invlab metadata, without loading weights."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    _check_header(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("invlab")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p}: corrupt safetensors file ({e})") from e
    if raw is None:
        raise CheckpointError(f"{p}: safetensors file without invlab metadata (not saved by "
                              "invlab.save_checkpoint)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: invlab metadata is not valid JSON ({e})") from e
    validate_metadata(meta, p)
    return meta


# Sane bounds for integer model arguments (hidden width, depth, classes, image size):
# anything above is rejected before a model is built, whatever the header says.
MAX_MODEL_INT = 65_536
_SCALARS = (str, int, float, bool, type(None))


def _bad(p: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{p}: malformed invlab metadata: {what}; the file was not written "
                           "by invlab.save_checkpoint or has been edited")


def _check_kwarg(p: Path, key: str, v: Any) -> None:
    items = v if isinstance(v, list) else [v]
    for x in items:
        if not isinstance(x, _SCALARS):
            raise _bad(p, f"model_kwargs[{key!r}] must be a scalar or a list of scalars, "
                          f"found {type(x).__name__}")
        if isinstance(x, int) and not isinstance(x, bool) and not 0 < x <= MAX_MODEL_INT:
            raise _bad(p, f"model_kwargs[{key!r}] = {x} is outside 1..{MAX_MODEL_INT}")
        if isinstance(x, float) and not math.isfinite(x):
            raise _bad(p, f"model_kwargs[{key!r}] = {x} is not finite")


def validate_metadata(meta: Any, path: str | os.PathLike[str] = "<checkpoint>") -> None:
    """Check the schema of invlab metadata before anything is built from it.

    ``meta`` must be a JSON object with ``model`` (a registered name), ``model_kwargs`` (an
    object of scalars / lists of scalars, ints in ``1..MAX_MODEL_INT``), optional
    ``wrapper`` (``{"group_pooled": str}``), ``group`` (str), ``seed`` (int),
    ``normalization`` (``{"mean": finite, "std": finite > 0}``) and object-valued ``train``,
    ``data``, ``data_fingerprint``. Other keys are kept as the caller's. Raises
    :class:`CheckpointError` naming the file and the offending key.
    """
    p = Path(path)
    if not isinstance(meta, dict):
        raise _bad(p, f"expected a JSON object, found {type(meta).__name__}")
    if "factory" in meta:
        _validate_factory(meta, p)
    else:
        name = meta.get("model")
        if not isinstance(name, str) or name not in list_models():
            raise CheckpointError(f"{p}: metadata does not describe a known model: 'model' must "
                                  f"be one of {sorted(list_models())}, found {name!r}")
    kwargs = meta.get("model_kwargs", {})
    if not isinstance(kwargs, dict):
        raise _bad(p, f"'model_kwargs' must be an object, found {type(kwargs).__name__}")
    for k, v in kwargs.items():
        _check_kwarg(p, k, v)
    _validate_wrapper(meta.get("wrapper"), p)
    for key, tp in (("group", str), ("seed", int), ("train", dict), ("data", dict),
                    ("data_fingerprint", dict), ("normalization", dict)):
        if meta.get(key) is not None and not isinstance(meta[key], tp):
            raise _bad(p, f"{key!r} must be a {tp.__name__}, found {type(meta[key]).__name__}")
    _validate_group_and_data(meta, p)
    norm = meta.get("normalization")
    if norm is not None and not _valid_normalization(norm):
        raise _bad(p, "'normalization' must be {'mean': m, 'std': s} with finite numbers (or "
                      f"equal-length per-channel lists) and s > 0, found {norm!r}")


MAX_PAD = 4096  #: largest ``data.pad_to`` (canvas side in pixels) a checkpoint may state
_DATA_INTS = {"exclude_class": (0, MAX_MODEL_INT), "pad_to": (1, MAX_PAD),
              "n_train": (0, 2**40), "n_val": (0, 2**40), "n_test_max": (0, 2**40),
              "data_seed": (0, 2**63 - 1)}


def _validate_group_and_data(meta: dict[str, Any], p: Path) -> None:
    """``group`` must be a transform spec invlab knows; the integer fields of ``data`` (the
    class left out, the canvas size, split sizes, seed) ints in range, so a hand-edited
    ``pad_to = 1e9`` fails here, naming the file, not as a storage overflow later."""

    group = meta.get("group")
    if group is not None:
        try:
            create_transform(group)
        except TransformError as e:
            raise _bad(p, f"'group' = {group!r}: {e}") from None
    data = meta.get("data") or {}
    for key, (lo, hi) in _DATA_INTS.items():
        v = data.get(key)
        if v is None and key == "exclude_class":
            continue
        if key in data and not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
            raise _bad(p, f"data.{key} must be an int in {lo}..{hi}, found {v!r}")


def _valid_normalization(norm: dict[str, Any]) -> bool:
    """``{"mean": m, "std": s}``: finite scalars, or equal-length per-channel lists; ``s > 0``."""
    def values(v: Any) -> list[float] | None:
        vs = v if isinstance(v, list) else [v]
        ok = bool(vs) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                              and math.isfinite(x) for x in vs)
        return [float(x) for x in vs] if ok else None

    mean, std = values(norm.get("mean")), values(norm.get("std"))
    return (mean is not None and std is not None and len(mean) == len(std)
            and all(s > 0 for s in std))


def _validate_factory(meta: dict[str, Any], p: Path) -> None:
    """``factory``: ``module:function``; ``factory_kwargs``: object of scalars / lists."""

    spec = meta.get("factory")
    if not isinstance(spec, str) or not SPEC.match(spec):
        raise _bad(p, f"'factory' must be 'package.module:function', found {spec!r}")
    kwargs = meta.get("factory_kwargs", {})
    if not isinstance(kwargs, dict):
        raise _bad(p, f"'factory_kwargs' must be an object, found {type(kwargs).__name__}")
    for k, v in kwargs.items():
        _check_kwarg(p, k, v)


def _validate_wrapper(wrapper: Any, p: Path) -> None:
    """``{"group_pooled": str, "weight_tied": {"group": str, "in_shape": [C, H, W]}}``."""
    if wrapper is None:
        return
    ok = isinstance(wrapper, dict) and set(wrapper) <= {"group_pooled", "weight_tied"}
    if ok and "group_pooled" in wrapper:
        ok = isinstance(wrapper["group_pooled"], str)
    if ok and "weight_tied" in wrapper:
        wt = wrapper["weight_tied"]
        ok = isinstance(wt, dict) and set(wt) == {"group", "in_shape"} and isinstance(
            wt["group"], str) and isinstance(wt["in_shape"], list) and len(wt["in_shape"]) == 3
        if ok:
            _check_kwarg(p, "weight_tied.in_shape", wt["in_shape"])
    if not ok:
        raise _bad(p, "'wrapper' must be {'group_pooled': <group>, 'weight_tied': {'group': "
                      f"<group>, 'in_shape': [C, H, W]}} (either key optional), found {wrapper!r}")


def _header_shapes(p: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` from the safetensors header, without loading tensors."""
    try:
        with safe_open(str(p), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype()))
                    for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p}: corrupt safetensors file ({e})") from e


def _build_user(meta: dict[str, Any], p: Path) -> nn.Module:
    """Import the (marked) factory the metadata names and call it with its kwargs."""

    try:
        fn = import_factory(meta["factory"], trusted=False)
        model, _ = build_from_factory(fn, meta.get("factory_kwargs") or {}, meta["factory"])
    except FactoryError as e:
        raise CheckpointError(f"{p}: {e}") from e
    model.invlab_factory = meta["factory"]  # type: ignore[assignment]
    model.invlab_factory_kwargs = dict(meta.get("factory_kwargs") or {})  # type: ignore
    return model


def _build(meta: dict[str, Any], p: Path) -> nn.Module:
    try:
        model: nn.Module = (_build_user(meta, p) if "factory" in meta else
                            create_model(meta["model"], **meta.get("model_kwargs", {})))
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{p}: metadata does not describe a known model ({e})") from e
    wrapper = meta.get("wrapper") or {}
    if "weight_tied" in wrapper:
        wt = wrapper["weight_tied"]
        try:
            model = WeightTied(model, wt["group"], in_shape=wt["in_shape"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{p}: bad 'wrapper' in metadata ({e})") from e
    if "group_pooled" in wrapper:
        try:
            model = GroupPooled(model, wrapper["group_pooled"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{p}: bad 'wrapper' in metadata ({e})") from e
    return model


_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}


def check_shapes(meta: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Compare the header's tensor names/shapes/dtypes with the model the metadata describes,
    built on the ``meta`` device (no memory is allocated). Raises :class:`CheckpointError`."""
    p = Path(path)
    found = _header_shapes(p)
    with torch.device("meta"):
        model = _build(meta, p)
    expected = {k: (tuple(v.shape), _DTYPES.get(v.dtype, str(v.dtype)))
                for k, v in model.state_dict().items()}
    if expected == found:
        return
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    raise CheckpointError(
        f"{p}: weights do not match the metadata's model "
        f"{meta.get('model', meta.get('factory'))!r} "
        f"{meta.get('model_kwargs', meta.get('factory_kwargs', {}))}: "
        f"missing {missing}, unexpected {extra}, wrong shape "
        + ", ".join(_diff(k, expected[k], found[k]) for k in wrong))


def _diff(k: str, e: tuple[tuple[int, ...], str], f: tuple[tuple[int, ...], str]) -> str:
    if e[1] != f[1]:
        return f"{k} (expected {e[0]} {e[1]}, found {f[0]} {f[1]})"
    return f"{k} (expected {e[0]}, found {f[0]})"


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from metadata and load its weights (strict). Returns (model, meta).

    The metadata's schema (:func:`validate_metadata`) and the tensor shapes in the
    safetensors header (:func:`check_shapes`) are checked before the model is built, so a
    hostile ``hidden: 200000`` is rejected without allocating anything.

    Raises:
        CheckpointError: a pickle / torch.save file, a non-invlab or corrupt file, malformed
            metadata, or weights that do not match the model the metadata describes (names
            the keys/shapes).
    """
    p = Path(path)
    remove_stale_temps(p.parent)
    meta = read_metadata(p)  # schema-validated
    check_shapes(meta, p)    # header vs a meta-device model: nothing allocated yet
    model = _build(meta, p)
    try:
        state = safetensors.torch.load_file(str(p))
    except Exception as e:
        raise CheckpointError(f"{p}: corrupt safetensors file ({e})") from e
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def load_as_recorded(path: str | os.PathLike[str], meta: dict[str, Any]
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_checkpoint` of a cache entry whose metadata ``meta`` was already verified
    against its key: the file must still be readable and hold exactly ``meta``.

    Raises:
        invlab.cache.CacheMismatch: unreadable, or changed since ``meta`` was read.
    """
    try:
        model, loaded = load_checkpoint(path)
    except (CheckpointError, OSError) as e:
        raise CacheMismatch(Path(path), f"not a readable checkpoint ({e})") from e
    if loaded != meta:
        raise CacheMismatch(Path(path), "the file changed while it was read")
    return model, loaded
