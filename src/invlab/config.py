"""Cell configs: frozen dataclasses, their canonical dict form, stable ids and validation.

A cell is one frozen dataclass instance. Its id is a hash of its *resolved* config::

    cell_id(cfg) = sha256(canonical_json({"type": type(cfg).__name__,
                                           "config": config_to_dict(cfg)}))[:16]

where canonical JSON has sorted keys, no whitespace and no NaN/inf. The type name is part of
the id so two config classes with the same fields never share a cell. A field can be left
out of the id with ``field(metadata={"cell_id": False})`` (e.g. a worker count that does not
change the numbers); it is still stored with the config. A field added to a config after
results were stored can keep the old ids with ``field(default=..., metadata=ID_IF_NOT_DEFAULT)``:
it enters the id only when it differs from its default (so its default must reproduce the
behaviour from before the field existed).

Validation lives in ``__post_init__``: first :func:`validate` (field types, so the value
checks compare like with like), then value checks that raise :class:`ConfigError` naming the
field, most easily through :func:`check`::

    @dataclass(frozen=True)
    class Cell:
        group: str = "r4"
        lr: float = 8e-4

        def __post_init__(self) -> None:
            validate(self)
            check("group", self.group in ("r4", "t3"), f"expected 'r4' or 't3', got {self.group!r}")
            check("lr", self.lr > 0, f"expected > 0, got {self.lr}")
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any, TypeVar, Union

from invlab.errors import InvlabError

__all__ = [
    "ID_IF_NOT_DEFAULT",
    "ConfigError",
    "canonical_json",
    "cell_id",
    "check",
    "config_to_dict",
    "from_dict",
    "id_dict",
    "validate",
]

T = TypeVar("T")

CELL_ID_LENGTH = 16


class ConfigError(InvlabError, ValueError):
    """A config value is invalid. ``field`` names the offending field (dotted for nested)."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def check(field_name: str, condition: Any, message: str) -> None:
    """Raise :class:`ConfigError` for ``field_name`` with ``message`` unless ``condition``.

    Use in ``__post_init__``: ``check("lr", self.lr > 0, f"expected > 0, got {self.lr}")``.
    """
    if not condition:
        raise ConfigError(field_name, message)


# --------------------------------------------------------------------------- dict form

ID_IF_NOT_DEFAULT: dict[str, Any] = {"id_if_not_default": True}
"""Field metadata: the field is part of ids only when its value differs from its default."""


def _omitted_from_id(f: dataclasses.Field[Any], value: Any) -> bool:
    if not f.metadata.get("cell_id", True):
        return True
    return bool(f.metadata.get("id_if_not_default")) and value == f.default


def _to_plain(obj: Any, *, for_id: bool, path: str) -> Any:
    """Recursively convert ``obj`` to JSON-compatible Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if for_id and _omitted_from_id(f, getattr(obj, f.name)):
                continue
            sub = f"{path}.{f.name}" if path else f.name
            out[f.name] = _to_plain(getattr(obj, f.name), for_id=for_id, path=sub)
        return out
    if isinstance(obj, enum.Enum):
        return _to_plain(obj.value, for_id=for_id, path=path)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ConfigError(path or None, f"expected a finite number, got {obj!r}")
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ConfigError(path or None, f"mapping keys must be str, got {k!r}")
            out[k] = _to_plain(v, for_id=for_id, path=f"{path}.{k}" if path else k)
        return out
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v, for_id=for_id, path=f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        items = [_to_plain(v, for_id=for_id, path=path) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    # numpy / torch scalars
    item = getattr(obj, "item", None)
    if callable(item) and getattr(obj, "ndim", None) == 0:
        return _to_plain(item(), for_id=for_id, path=path)
    raise ConfigError(
        path or None,
        f"cannot serialize a value of type {type(obj).__name__} ({obj!r}); "
        "use str/int/float/bool/None, tuples, dicts or nested dataclasses",
    )


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """``dataclasses.asdict(cfg)`` with tuples → lists, enums → values, paths → str.

    The result is plain JSON data, suitable for storage and for :func:`from_dict`.
    Raises :class:`ConfigError` for values that have no JSON form (NaN, objects).
    """
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return _to_plain(cfg, for_id=False, path="")


def id_dict(cfg: Any) -> dict[str, Any]:
    """The fields a config's ids hash: :func:`config_to_dict` without the fields left out of
    :func:`cell_id` (``metadata={"cell_id": False}``, ``ID_IF_NOT_DEFAULT`` at the default)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return _to_plain(cfg, for_id=True, path="")


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, compact separators, UTF-8, NaN/inf rejected."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def cell_id(cfg: Any) -> str:
    """Stable id of a cell: first 16 hex chars of sha256 of its canonical JSON.

    The hashed document is ``{"type": type(cfg).__name__, "config": <fields>}`` with
    fields marked ``metadata={"cell_id": False}`` left out (and ``ID_IF_NOT_DEFAULT`` fields
    at their default). Same resolved config ⇒ same
    id, across processes and Python versions; any field change ⇒ a different id.
    """
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"cell_id expects a dataclass instance, got {type(cfg).__name__}")
    doc = {"type": type(cfg).__name__, "config": _to_plain(cfg, for_id=True, path="")}
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()[:CELL_ID_LENGTH]


# --------------------------------------------------------------------------- coercion

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NoneType = type(None)


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is Union or origin is types.UnionType


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _mismatch(value: Any, tp: Any, path: str) -> ConfigError:
    """The one message for a value that does not fit its annotation."""
    return ConfigError(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _coerce_union(value: Any, tp: Any, path: str) -> Any:
    """``Optional[X]`` / ``X | Y``: None where allowed, an exact member type as is, else the
    first member the value coerces to."""
    args = typing.get_args(tp)
    if value is None:
        if _NoneType in args:
            return None
        raise _mismatch(value, tp, path)
    # exact type match first, so Union[int, str] keeps "3" a str
    for a in args:
        if a is not _NoneType and isinstance(a, type) and type(value) is a:
            return value
    for a in args:
        if a is _NoneType:
            continue
        try:
            return _coerce(value, a, path)
        except ConfigError:
            pass
    raise _mismatch(value, tp, path)


def _coerce_literal(value: Any, tp: Any, path: str) -> Any:
    """``Literal[...]``: an allowed value of the same type, else one the value coerces to."""
    allowed = typing.get_args(tp)
    for a in allowed:
        if value == a and type(value) is type(a):
            return a
    for a in allowed:  # "3" -> 3 for Literal[1, 3] from the command line
        try:
            if _coerce(value, type(a), path) == a:
                return a
        except ConfigError:
            pass
    raise ConfigError(path, f"expected one of {list(allowed)}, got {value!r}")


def _coerce_sequence(value: Any, tp: Any, path: str) -> Any:
    """``tuple[X, Y]`` (fixed length), ``tuple[X, ...]``, ``list[X]``, ``set[X]``,
    ``frozenset[X]``: any list/tuple/set (not a str), item by item."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise _mismatch(value, tp, path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(
                path, f"expected {len(args)} items ({_type_name(tp)}), got {len(value)}"
            )
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in
                     enumerate(zip(value, args)))
    elem = args[0] if args else Any
    items = [_coerce(v, elem, f"{path}[{i}]") for i, v in enumerate(value)]
    return origin(items)


def _coerce_mapping(value: Any, tp: Any, path: str) -> Any:
    """``dict[str, X]`` / ``Mapping[str, X]`` / ``dict``: keys as str, values coerced."""
    if not isinstance(value, Mapping):
        raise _mismatch(value, tp, path)
    args = typing.get_args(tp)
    vt = args[1] if len(args) == 2 else Any
    return {str(k): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}


def _coerce_dataclass(value: Any, tp: Any, path: str) -> Any:
    """A nested config: an instance as is, a mapping through :func:`from_dict`."""
    if isinstance(value, tp):
        return value
    if isinstance(value, Mapping):
        return from_dict(tp, value, _prefix=path)
    raise _mismatch(value, tp, path)


def _coerce_enum(value: Any, tp: Any, path: str) -> Any:
    """An Enum: a member as is, else by value, else by name."""
    if isinstance(value, tp):
        return value
    try:
        return tp(value)
    except ValueError:
        try:
            return tp[value]
        except (KeyError, TypeError):
            pass
    raise ConfigError(path, f"expected one of {[m.value for m in tp]}, got {value!r}")


def _coerce_bool(value: Any, tp: Any, path: str) -> bool:
    """A bool, 0/1, or true/yes/on/1 and false/no/off/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _mismatch(value, tp, path)


def _coerce_int(value: Any, tp: Any, path: str) -> int:
    """An int (not a bool), a whole float, or a str spelling either."""
    if isinstance(value, bool):
        raise _mismatch(value, tp, path)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            f = float(value)
        except ValueError:
            raise _mismatch(value, tp, path) from None
        if f.is_integer():
            return int(f)
    raise _mismatch(value, tp, path)


def _coerce_float(value: Any, tp: Any, path: str) -> float:
    """An int or float (not a bool), or a str spelling one."""
    if isinstance(value, bool):
        raise _mismatch(value, tp, path)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _mismatch(value, tp, path) from None
    raise _mismatch(value, tp, path)


def _coerce_str(value: Any, tp: Any, path: str) -> str:
    """A str, or a path as its str."""
    if isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    raise _mismatch(value, tp, path)


def _coerce_path(value: Any, tp: Any, path: str) -> Any:
    """A ``Path``-like annotation: from a str or another path."""
    if isinstance(value, (str, PurePath)):
        return tp(value)
    raise _mismatch(value, tp, path)


def _coerce_instance(value: Any, tp: Any, path: str) -> Any:
    """Any other class: an instance is accepted as is, nothing is converted."""
    if isinstance(value, tp):
        return value
    raise _mismatch(value, tp, path)


_Coercer = Callable[[Any, Any, str], Any]
_SCALARS: dict[type, _Coercer] = {
    bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str,
}


def _coercer_for(tp: Any) -> _Coercer | None:
    """The coercer for annotation ``tp``, by its form; None for a form left unchecked
    (``Any``, a string forward reference, a TypeVar, …)."""
    if tp is Any or tp is object:
        return None
    if _is_union(tp):
        return _coerce_union
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return _coerce_literal
    if origin in (tuple, list, set, frozenset):
        return _coerce_sequence
    if origin in (dict, Mapping) or tp is dict:
        return _coerce_mapping
    if not isinstance(tp, type):
        return None
    if dataclasses.is_dataclass(tp):
        return _coerce_dataclass
    if issubclass(tp, enum.Enum):
        return _coerce_enum
    if tp in _SCALARS:
        return _SCALARS[tp]
    if issubclass(tp, PurePath):
        return _coerce_path
    return _coerce_instance


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Coerce ``value`` to annotation ``tp`` where the conversion is obvious, else raise
    :class:`ConfigError` naming ``path``. Dispatches on the annotation's form
    (:func:`_coercer_for`); an unknown form leaves the value as is."""
    coercer = _coercer_for(tp)
    return value if coercer is None else coercer(value, tp, path)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: fall back to no coercion
        return {f.name: Any for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], d: Mapping[str, Any], *, _prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping (YAML, JSON, flags).

    Unknown keys raise :class:`ConfigError` naming them and listing the valid ones; missing
    required fields are named too. Values are coerced where the conversion is obvious
    (``"3"`` → 3 for int, 1 → 1.0 for float, ``"true"`` → True, list → tuple, dict →
    nested dataclass, str → Enum/Path, and the members of ``Optional``/``Literal``);
    anything else raises a ConfigError naming the field. ``__post_init__`` validation runs
    as usual.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict expects a dataclass type, got {cls!r}")
    if not isinstance(d, Mapping):
        raise ConfigError(_prefix or None,
                          f"expected a mapping for {cls.__name__}, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in d if k not in fields)
    if unknown:
        names = ", ".join(f"{_prefix}.{k}" if _prefix else k for k in unknown)
        raise ConfigError(
            names,
            f"unknown key(s) for {cls.__name__}; valid keys: {sorted(fields)}",
        )
    missing = [
        n for n, f in fields.items()
        if n not in d and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        names = ", ".join(f"{_prefix}.{k}" if _prefix else k for k in missing)
        raise ConfigError(names, f"missing required field(s) for {cls.__name__}")
    hints = _hints(cls)
    kwargs = {}
    for k, v in d.items():
        path = f"{_prefix}.{k}" if _prefix else str(k)
        kwargs[k] = _coerce(v, hints.get(k, Any), path)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if _prefix and e.field and not e.field.startswith(_prefix + "."):
            raise ConfigError(f"{_prefix}.{e.field}", str(e).split(": ", 1)[-1]) from e
        raise


def validate(cfg: T) -> T:
    """Check a config instance's field types; return it unchanged.

    Call it first thing in ``__post_init__``. Checks that every field holds a value of its
    annotated type (without coercing: an int where a float is annotated is accepted, a str
    where an int is annotated is not), that nested dataclasses are valid, and that the
    config has a JSON form (so it has a :func:`cell_id`). Value checks (ranges, choices) follow in ``__post_init__``.
    Raises :class:`ConfigError` naming the first bad field.
    """
    _validate(cfg, "")
    config_to_dict(cfg)
    return cfg


def _validate(cfg: Any, prefix: str) -> None:
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"validate expects a dataclass instance, got {type(cfg).__name__}")
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints.get(f.name, Any)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _validate(value, path)
        coerced = _coerce(value, tp, path)
        ok = coerced == value and (
            type(coerced) is type(value)
            or (type(value) is int and type(coerced) is float)  # 3 is a fine float
        )
        if not ok:
            raise ConfigError(
                path,
                f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}; "
                "build configs with from_dict() to coerce strings and lists",
            )
