"""The package's shape: the layers declared in pyproject.toml ([tool.importlinter], checked by
``lint-imports``) and no import cycle between any two invlab modules.

The cycle check reads every ``import``/``from ... import`` of src/invlab with :mod:`ast`,
at module level *and* inside functions (an import inside a function still ties the two
files together; it only hides it). Imports under ``if TYPE_CHECKING:`` never run and are
left out (as ``exclude_type_checking_imports`` does for lint-imports). Nothing is excluded
otherwise: a package ``__init__`` that re-exports its own submodules is an ordinary edge
``pkg -> pkg.sub`` (none of those submodules imports its package back today).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return found


def _run_lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath), "HOME": str(cwd)}
    return subprocess.run([_lint_imports(), "--no-cache"], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def test_lint_imports_keeps_the_layers() -> None:
    r = _run_lint(ROOT, SRC)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 1 kept, 0 broken." in r.stdout, r.stdout


def test_lint_imports_breaks_on_an_import_that_runs_back_up(tmp_path: Path) -> None:
    """The same contract on a copy of the package with one upward import added (the data
    layer importing the study runner, as it did before :mod:`invlab.config` existed)."""
    _lint_imports()
    shutil.copytree(SRC / "invlab", tmp_path / "src" / "invlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    idx = tmp_path / "src" / "invlab" / "data" / "idx.py"
    idx.write_text(idx.read_text(encoding="utf-8") + "\n\ndef _up():\n"
                   "    from invlab.sweep import ConfigError  # noqa\n", encoding="utf-8")
    r = _run_lint(tmp_path, tmp_path / "src")
    assert r.returncode != 0, r.stdout
    assert "invlab.data is not allowed to import invlab.sweep" in r.stdout, r.stdout
    assert "invlab.data.idx -> invlab.sweep" in r.stdout, r.stdout


# ---------------------------------------------------------------------------- the cycle check


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``dotted name -> (file, is_package)`` for every .py file under ``root`` (a package)."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph(root: Path) -> dict[str, set[str]]:
    """``module -> modules it imports`` inside the package at ``root`` (module level and in
    functions; ``from pkg import sub`` counts as importing ``pkg.sub`` when ``sub`` is a
    module, else ``pkg``)."""
    mods = _modules(root)
    top = root.name
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:  # relative: from .x import y
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    pkg = ".".join(base + ([node.module] if node.module else []))
                else:
                    pkg = node.module or ""
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in mods else pkg for a in node.names]
            for t in targets:
                if t.split(".")[0] != top:
                    continue
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycle_between_invlab_modules() -> None:
    graph = import_graph(SRC / "invlab")
    assert len(graph) > 100 and sum(map(len, graph.values())) > 300  # the graph was read
    found = cycles(graph)
    detail = "; ".join(" <-> ".join(c) for c in found)
    assert not found, f"import cycles between invlab modules: {detail}"


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from demo.sub.b import g\n")
    (pkg / "a.py").write_text("from demo.sub import b\n\ndef f():\n    return b.g()\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    from demo.a import f\n    return f\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from demo.d import x\n")
    (pkg / "d.py").write_text("from . import c\nx = 1\n")
    graph = import_graph(pkg)
    assert graph["demo.a"] == {"demo.sub.b"}
    assert graph["demo.sub.b"] == {"demo.a"}
    assert graph["demo.c"] == set()  # TYPE_CHECKING only
    assert graph["demo.d"] == {"demo.c"}  # relative import
    assert cycles(graph) == [["demo.a", "demo.sub.b"]]
    assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]


# -------------------------------------------------------- the moved names keep their old homes


def test_moved_names_are_the_same_objects_under_their_old_paths() -> None:
    import invlab.config
    import invlab.data.errors
    import invlab.data.sources
    import invlab.io
    import invlab.sweep
    import invlab.sweep.config
    import invlab.sweep.executors
    import invlab.sweep.io
    import invlab.sweep.ray_executor
    import invlab.sweep.wait

    for name in invlab.config.__all__:
        assert getattr(invlab.sweep.config, name) is getattr(invlab.config, name)
    for name in ("ConfigError", "canonical_json", "from_dict", "check", "validate", "cell_id"):
        assert getattr(invlab.sweep, name) is getattr(invlab.config, name)
    for name in ("atomic_write_bytes", "atomic_write_text", "atomic_write_json"):
        assert getattr(invlab.sweep.io, name) is getattr(invlab.io, name)
        assert getattr(invlab.sweep, name) is getattr(invlab.io, name)
    assert invlab.data.sources.DataError is invlab.data.errors.DataError
    assert invlab.data.sources.DataMismatchError is invlab.data.errors.DataMismatchError
    assert invlab.sweep.executors.WAIT is invlab.sweep.wait.WAIT
    assert invlab.sweep.executors.make_executor("ray", 1).__class__ is invlab.sweep.ray_executor.RayExecutor


def test_normalizer_keeps_its_error_and_values() -> None:
    import torch

    from invlab.metrics.errors import MeasureError
    from invlab.metrics.orbit import normalizer
    from invlab.normalization import mean_std

    mean, std = normalizer({"mean": 0.5, "std": [1.0, 2.0, 4.0]}, 3, torch.float32, torch.device("cpu"))
    assert mean.tolist() == [0.5, 0.5, 0.5] and std.tolist() == [1.0, 2.0, 4.0]
    assert normalizer(None, 3, torch.float32, torch.device("cpu")) is None
    with pytest.raises(MeasureError, match="must be > 0"):
        normalizer({"mean": 0.0, "std": 0.0}, 1, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"1 or C = 3 values"):
        mean_std({"mean": [0.0, 0.0], "std": 1.0}, 3, torch.float32, torch.device("cpu"))
