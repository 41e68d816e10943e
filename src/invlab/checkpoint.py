"""Checkpoints: safetensors weights + JSON metadata. Loading never unpickles.

The file is a standard ``.safetensors`` file; its string metadata holds one key,
``invlab``, a JSON object with the model name and kwargs, and whatever the caller adds
(group, normalization statistics, training config, seed), plus the invlab version.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from torch import nn

from invlab.models import GroupPooled, create_model


class CheckpointError(ValueError):
    """A checkpoint file is not a valid invlab safetensors checkpoint."""


_PICKLE_HINT = ("invlab never unpickles (pickle can run arbitrary code); convert it with "
                "`invlab.save_checkpoint(model, 'model.safetensors')` from a trusted session")


def _version() -> str:
    from invlab import __version__
    return __version__


def _describe(model: nn.Module) -> dict[str, Any]:
    if isinstance(model, GroupPooled):
        return {"model": _describe(model.model)["model"], "model_kwargs": _describe(model.model)[
            "model_kwargs"], "wrapper": {"group_pooled": model.group.name}}
    name = getattr(model, "model_name", None)
    if name is None:
        raise CheckpointError(
            f"{type(model).__name__} was not built by invlab.create_model, so a checkpoint "
            "could not rebuild it; create it with create_model(name, **kwargs)")
    return {"model": name, "model_kwargs": dict(getattr(model, "model_kwargs", {}))}


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], **metadata: Any) -> Path:
    """Write ``model``'s weights and ``metadata`` (JSON-serializable) atomically.

    Example:
        >>> save_checkpoint(model, "run/best.safetensors", group="r4", seed=0,
        ...                 normalization={"mean": 0.08, "std": 0.25})
    """
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {**_describe(model), **metadata, "invlab_version": _version()}
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except TypeError as e:
        raise CheckpointError(f"checkpoint metadata must be JSON-serializable: {e}") from e
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={"invlab": meta_json})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
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
    from safetensors import safe_open

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
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: invlab metadata is not valid JSON ({e})") from e


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from metadata and load its weights (strict). Returns (model, meta).

    Raises:
        CheckpointError: a pickle / torch.save file, a non-invlab or corrupt file, or weights
            that do not match the model the metadata describes (names the keys/shapes).
    """
    from safetensors.torch import load_file

    p = Path(path)
    meta = read_metadata(p)
    try:
        model: nn.Module = create_model(meta["model"], **meta.get("model_kwargs", {}))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{p}: metadata does not describe a known model ({e})") from e
    wrapper = meta.get("wrapper") or {}
    if "group_pooled" in wrapper:
        model = GroupPooled(model, wrapper["group_pooled"])
    try:
        state = load_file(str(p))
    except Exception as e:
        raise CheckpointError(f"{p}: corrupt safetensors file ({e})") from e
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        shape = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise CheckpointError(
            f"{p}: weights do not match the metadata's model {meta['model']!r}: "
            f"missing {missing}, unexpected {extra}, wrong shape "
            + ", ".join(f"{k} (expected {expected[k]}, found {found[k]})" for k in shape))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta
