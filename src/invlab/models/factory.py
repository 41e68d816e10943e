"""Model factories: how invlab names, imports and calls a model it did not build.

A *factory* is a function returning an ``nn.Module`` (or ``(nn.Module, normalization)``, the
form ``invlab audit`` and the studies' ``--models`` files use). It is named by an import
path ``"package.module:function"`` (or ``"path/to/file.py:function"`` where a user types it on
the command line). A checkpoint of a user's model stores that path and JSON keyword
arguments beside the safetensors weights, never a pickle.

Loading a checkpoint calls the function it names, so only functions marked with
:func:`model_factory` may be called from a checkpoint: a hostile file naming ``os:system``
is refused before anything is called.

    >>> from invlab.models import model_factory
    >>> @model_factory
    ... def small_cnn(width: int = 16):
    ...     return torch.nn.Sequential(...)
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from invlab.errors import UserCodeError, user_code_error

__all__ = ["FactoryError", "build_from_factory", "factory_path", "import_factory",
           "model_factory"]

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__invlab_model_factory__"
SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class FactoryError(UserCodeError):
    """A factory spec that cannot be imported, called, or trusted (one-line message)."""


def model_factory(fn: F) -> F:
    """Mark ``fn`` as a model factory a checkpoint may call (see the module doc)."""
    setattr(fn, _MARK, True)
    return fn


def factory_path(fn: Callable[..., Any]) -> str:
    """``"module:function"`` of a module-level function, checked to import back to ``fn``."""
    mod, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or mod == "__main__" or mod.startswith("invlab_user_") or "<" in name \
            or "." in name:
        raise FactoryError(f"{getattr(fn, '__name__', fn)!r} is not importable by name (defined "
                           f"in {mod!r} as {name!r}); define the factory at module level in an "
                           "importable module (not a file loaded by path), or pass "
                           "factory='module:function'")
    return f"{mod}:{name}"


def _load_file(path: Path) -> Any:
    name = f"invlab_user_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_" \
           f"{abs(hash(str(path.resolve()))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FactoryError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # the user's code: one line naming the file
        del sys.modules[name]
        raise FactoryError(str(user_code_error(str(path), "importing the file", e))) \
            from e
    return module


def import_factory(spec: str, *, trusted: bool = True) -> Callable[..., Any]:
    """The function named by ``spec`` (``module:function`` or ``FILE.py:function``).

    ``trusted=False`` (a checkpoint names it): only ``module:function`` and only functions
    marked with :func:`model_factory`.
    """
    target, sep, fname = str(spec).rpartition(":")
    if not sep or not target or not fname.isidentifier():
        raise FactoryError(f"{spec!r}: expected module:function or FILE.py:function")
    if target.endswith(".py"):
        if not trusted:
            raise FactoryError(f"{spec!r}: a checkpoint may name an importable module:function "
                               "only, not a file path")
        path = Path(target)
        if not path.is_file():
            raise FactoryError(f"{spec!r}: no such file {path}")
        module = _load_file(path)
    else:
        if not SPEC.match(spec):
            raise FactoryError(f"{spec!r}: expected module:function (a dotted module path)")
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise FactoryError(f"{spec!r}: cannot import module {target!r} ({e}); install the "
                               "package that defines the model or add it to PYTHONPATH") from e
    fn = getattr(module, fname, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise FactoryError(f"{spec!r}: {target} defines no function {fname!r} (found: "
                           f"{', '.join(found) or 'none'})")
    if not trusted and not getattr(fn, _MARK, False):
        raise FactoryError(f"{spec!r} is not marked as a model factory; a checkpoint may only "
                           "call functions decorated with @invlab.models.model_factory (mark it "
                           "in its source if you trust it)")
    return fn  # type: ignore[no-any-return]


def build_from_factory(fn: Callable[..., Any], kwargs: dict[str, Any] | None = None,
                       where: str = "factory") -> tuple[nn.Module, dict[str, Any] | None]:
    """``fn(**kwargs)`` → ``(module, normalization or None)``; accepts either return form."""
    try:
        out = fn(**(kwargs or {}))
    except (Exception, SystemExit) as e:  # sys.exit() in a factory is an error, not an exit
        raise FactoryError(str(user_code_error(where, "the factory", e))) from e
    norm = None
    if isinstance(out, tuple):
        if len(out) != 2:
            raise FactoryError(f"{where}: a factory returns a torch.nn.Module or (Module, "
                               f"normalization), found a tuple of length {len(out)}")
        out, norm = out
    if not isinstance(out, nn.Module):
        raise FactoryError(f"{where}: the factory must return a torch.nn.Module (or (Module, "
                           f"normalization)), found a {type(out).__name__}")
    return out, norm
