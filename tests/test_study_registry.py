"""The study registry: list_studies, run_study (Python) equals `invlab study` (CLI), bad names
and presets are one clear error; `import invlab` installs no log handler, the CLI does."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import invlab
from invlab.studies import get_study, list_studies
from invlab.sweep import ConfigError, ResultsStore

NAMES = ["genuine", "drift", "spectral", "origins", "generalization"]
# `demo` fixes nu (no tuning); one epoch: seconds.
TINY: dict[str, Any] = {"base": "demo", "epochs": 1}
TIMING = {"train_seconds"}  # values that measure time (as tests/test_study_genuine.py)
TIMING_EXTRA = {"measure_seconds", "checkpoint_reused"}  # the CLI run loads the checkpoints


def test_list_studies_names_and_presets() -> None:
    assert [s.name for s in list_studies()] == NAMES
    assert invlab.list_studies() == list_studies()
    for s in list_studies():
        assert {"full", "quick"} <= set(s.presets), s.name
        assert s.description
    assert "demo" in get_study("genuine").presets


def test_unknown_study_lists_the_names() -> None:
    with pytest.raises(ConfigError, match="unknown study 'nope'; known studies: "
                       + ", ".join(NAMES)):
        invlab.run_study("nope", "quick", out="x")


def test_bad_presets_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'fast' for study 'genuine'; "
                                          r"valid: full, quick, demo"):
        invlab.run_study("genuine", "fast", out=tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        invlab.run_study("drift", {"base": "fast"}, out=tmp_path / "b")
    with pytest.raises(ConfigError, match="preset must be a name"):
        invlab.run_study("genuine", 3, out=tmp_path / "c")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nope"):  # an unknown field names itself
        invlab.run_study("genuine", {"base": "demo", "nope": 1}, out=tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_make_preset_routes_fields() -> None:
    """A dict is fields over its base; drift sends non-drift fields to the genuine preset."""
    from invlab.studies import drift, genuine

    p, name, gen = get_study("genuine").make_preset({"base": "demo", "epochs": 3}, seeds=(1,),
                                                    groups=None)
    assert name == "custom" and gen == {}
    assert p == genuine.preset("demo", epochs=3, seeds=(1,))
    p, name, gen = get_study("drift").make_preset("quick", modes=("blend",), epochs=2,
                                                  seeds=(0,), groups=None)
    assert name == "quick" and p == drift.preset("quick", modes=("blend",))
    assert gen == {"epochs": 2, "seeds": (0,)}


def test_cli_dispatches_through_the_registry(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`invlab study NAME` goes through get_study(NAME).run: its preset errors are the
    registry's, as one line, before anything is written."""
    from invlab.cli import main

    rc = main(["study", "drift", "--preset", "fast", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("invlab: error: ")
    assert "unknown preset 'fast' for study 'drift'; valid: full, quick" in err[-1]
    assert not (tmp_path / "o").exists()


def _comparable(path: Path) -> dict[str, list[dict[str, Any]]]:
    dump = ResultsStore(path / "store.sqlite").dump()
    cells = [{**c, "extra": {k: v for k, v in (c.get("extra") or {}).items()
                             if k not in TIMING_EXTRA}} for c in dump["cells"]]
    return {"cells": sorted(cells, key=lambda c: c["cell_id"]),
            "results": sorted(({k: v for k, v in r.items()} for r in dump["results"]
                               if r["metric"] not in TIMING),
                              key=lambda r: (r["cell_id"], r["metric"]))}


@pytest.mark.slow  # ~15-30 s on 2 cores (demo preset, one epoch, measured twice)
def test_run_study_equals_the_cli(mnist_test_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`invlab.run_study` with a dict preset gives the store and the printed tables of
    `invlab study genuine` with the same fields (`--preset demo --epochs 1`)."""
    from invlab.cli import main

    monkeypatch.chdir(tmp_path)
    out = invlab.run_study("genuine", TINY, out="py", checkpoints="ck", progress=False)
    assert Path(out).resolve() == (tmp_path / "py").resolve()
    py_text = get_study("genuine").summary_text(out)
    capsys.readouterr()
    rc = main(["study", "genuine", "--preset", "demo", "--epochs", "1", "--out", "cli",
               "--checkpoints", "ck", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert py_text in text and "(preset 'demo': a reduced run." in text
    assert "| R4 | WT |" in py_text
    py, cli = _comparable(tmp_path / "py"), _comparable(tmp_path / "cli")
    assert len(py["cells"]) == 3 and len(py["results"]) > 10
    assert py == cli
    # `invlab report DIR` rebuilds through the registry: the same files, the same table
    for d in ("py", "cli"):
        assert sorted(invlab.build_report(d, html=False)) == sorted(get_study("genuine").report(d))
    assert get_study("genuine").summary_text("cli") == py_text


# what the report step writes in a demo-preset genuine folder (nu fixed: no nu-search plot)
DEMO_REPORT = {"summary.json", "claims.json", "claims.md", "table1_mnist.md", "table1_mnist.csv",
               "table1_mnist.json", "report.html",
               *[f"{stem}_mnist_r4.{ext}" for stem in ("fig2_tsne", "fig3_saliency")
                 for ext in ("png", "svg")]}
RUN_FILES = {"store.sqlite", "config.yaml", "config.json", "provenance.json"}
# in report.html: when it was rendered, and the store's transient -wal/-shm files in its file list
VOLATILE = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?( ?UTC|[+-]\d\d:\d\d|Z)?"
                      rb"| ?\xc2\xb7 sqlite-(shm|wal) [^<\xc2]*")


def _contents(d: Path) -> dict[str, bytes]:
    """Every report file of ``d`` but the SVGs (they record when they were drawn);
    ``report.html`` without its volatile parts."""
    return {n: VOLATILE.sub(b"", (d / n).read_bytes()) if n == "report.html"
            else (d / n).read_bytes() for n in sorted(DEMO_REPORT) if not n.endswith(".svg")}


@pytest.mark.slow  # ~15-30 s on 2 cores (demo preset, one epoch)
def test_running_and_reporting_are_two_steps(mnist_test_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`run_study(..., report=False)` writes the store, the config and provenance.json but no
    report file; `invlab.build_report(out)` then writes the report (report.html last), and
    `invlab report DIR --html` writes the same files with the same content, printing them."""
    from invlab.cli import main

    monkeypatch.chdir(tmp_path)
    out = invlab.run_study("genuine", TINY, out="r", checkpoints="ck", progress=False,
                           report=False)
    assert out == Path("r")
    run_files = {p.name for p in out.iterdir() if not p.name.startswith(("store.sqlite-", "."))}
    assert run_files == RUN_FILES  # nothing of the report
    written = invlab.build_report(out)
    assert {Path(p).name for p in written} == DEMO_REPORT and written[-1].endswith("report.html")
    first = _contents(out)
    for p in written:
        Path(p).unlink()
    capsys.readouterr()
    assert main(["report", "r", "--html"]) == 0
    assert capsys.readouterr().out.split() == written
    assert _contents(out) == first


def test_import_installs_no_log_handler() -> None:
    """`import invlab` leaves logging alone; `invlab.configure_logging()` (what the CLI calls)
    prints [invlab] lines on the current stderr, once however often it is called."""
    code = ("import logging, invlab, sys; lg = logging.getLogger('invlab');"
            "assert lg.handlers == [] and lg.level == logging.NOTSET, lg.handlers;"
            "lg.info('quiet');"
            "invlab.configure_logging(); invlab.configure_logging();"
            "assert len(lg.handlers) == 1;"
            "logging.getLogger('invlab.data').info('loud %d', 1)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "[invlab] loud 1\n"


def test_cli_prints_invlab_lines(tmp_path: Path) -> None:
    """Once the `invlab` command ran, invlab's INFO records go to stderr as [invlab] lines
    (never to stdout); before, importing invlab printed nothing."""
    code = ("import sys, logging; from invlab.cli import main;"
            "logging.getLogger('invlab.data').info('from the library');"
            "sys.exit(main(['groups', 'list']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # before main() configured logging: nothing, not even a warning
    code = ("import sys, logging; from invlab.cli import main; rc = main(['groups', 'list']);"
            "logging.getLogger('invlab.data').info('after %s', 'main');"
            "logging.getLogger('invlab.data').debug('not shown')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr == "[invlab] after main\n", proc.stderr
    assert "[invlab]" not in proc.stdout


def test_records_propagate(caplog: pytest.LogCaptureFixture) -> None:
    """invlab's loggers propagate: the caller's handlers (and caplog) see the records."""
    with caplog.at_level(logging.INFO, logger="invlab"):
        logging.getLogger("invlab.studies").info("hello %s", "there")
    assert [r.getMessage() for r in caplog.records] == ["hello there"]
