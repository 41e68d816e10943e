"""Reports are rebuilt from the results store alone (no checkpoints, no data, no training)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from invlab import build_report
from invlab.cli import main
from test_study_genuine import REPORT_FILES, shared_tiny_study


@pytest.fixture
def study_copy(mnist_test_dir: Path, tmp_path_factory: pytest.TempPathFactory,
               tmp_path: Path) -> Path:
    """A private copy of the session's tiny genuine study (``out/`` and ``ck/``)."""
    root = tmp_path / "study"
    shutil.copytree(shared_tiny_study(tmp_path_factory), root)
    return root


def _wipe(root: Path) -> str:
    """Delete every report output and the checkpoint folder; return the old summary."""
    out = root / "out"
    summary = (out / "summary.json").read_text()
    for name in REPORT_FILES:
        (out / name).unlink()
    leftovers = [p.name for p in out.iterdir() if p.suffix in (".png", ".svg", ".md", ".csv")
                 or p.name.startswith(("table1_", "fig", "summary"))]
    assert leftovers == []
    shutil.rmtree(root / "ck")
    return summary


def test_build_report_from_the_store_alone(study_copy: Path) -> None:
    summary = _wipe(study_copy)
    written = build_report(str(study_copy / "out"))
    assert {Path(p).name for p in written} == {*REPORT_FILES, "report.html"}
    assert Path(written[-1]).name == "report.html"  # rendered from the files written before
    for name in REPORT_FILES:
        assert (study_copy / "out" / name).stat().st_size > 0, name
    assert (study_copy / "out" / "summary.json").read_text() == summary
    assert not (study_copy / "ck").exists()  # nothing was retrained


def test_cli_report_rebuilds_everything(study_copy: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    summary = _wipe(study_copy)
    assert main(["report", str(study_copy / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert {Path(p).name for p in printed} == set(REPORT_FILES)
    for name in REPORT_FILES:
        assert (study_copy / "out" / name).is_file(), name
    assert (study_copy / "out" / "summary.json").read_text() == summary


def test_report_is_stable_when_rebuilt_twice(study_copy: Path) -> None:
    out = study_copy / "out"
    build_report(str(out))
    first = {n: (out / n).read_bytes() for n in ("summary.json", "table1_mnist.md",
                                                  "table1_mnist.csv", "table1_mnist.json")}
    build_report(str(out))
    assert first == {n: (out / n).read_bytes() for n in first}


@pytest.mark.parametrize("kind", ["missing", "empty", "unknown_study"])
def test_bad_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  kind: str) -> None:
    d = tmp_path / "nothing-here"
    if kind == "empty":
        d.mkdir()
    elif kind == "unknown_study":
        # a store without any known study
        from invlab.sweep import ResultsStore

        d.mkdir()
        ResultsStore(d / "store.sqlite").put_cell("c1", "other", {"a": 1},
                                                  [{"metric": "m", "value": 1.0}], 0.1)
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invlab: error:")
    assert str(d) in err
    if kind == "unknown_study":
        assert "no known study" in err and "other" in err
    else:
        assert "no results store" in err
    with pytest.raises((FileNotFoundError, ValueError)):
        build_report(str(d))


def test_cli_report_html_writes_what_build_report_writes(study_copy: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`invlab report DIR --html` is `invlab.build_report(DIR)`: the same paths, printed in
    order, with the same content (report.html and the SVGs aside: they record when they were
    drawn)."""
    out = study_copy / "out"
    written = build_report(str(out))
    assert Path(written[-1]).name == "report.html"
    first = {p: Path(p).read_bytes() for p in written[:-1] if not p.endswith(".svg")}
    for p in written:
        Path(p).unlink()
    assert main(["report", str(out), "--html"]) == 0
    assert capsys.readouterr().out.split() == written
    assert {p: Path(p).read_bytes() for p in first} == first
    assert all(Path(p).is_file() for p in written)
