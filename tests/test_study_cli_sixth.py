"""A sixth study touches no CLI code: registered with its own flags (``Study.arguments`` and
``Study.keywords``, here functions of this module), ``invlab study toy`` lists it, parses its
flags, runs it through the registry and prints its summary; the CLI module names no study."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import invlab.cli.study
from invlab.cli import main
from invlab.studies import Study, get_study, list_studies, register
from invlab.studies import registry as registry_module
from invlab.studies.flags import common_arguments, common_keywords
from invlab.sweep import ConfigError, ResultsStore

CALLS: list[dict[str, Any]] = []  # what the toy runner was given


@dataclass(frozen=True)
class ToyPreset:
    size: int = 3
    seeds: tuple[int, ...] = (0,)
    epochs: int = 1


def preset(name: str, **fields: Any) -> ToyPreset:
    """The toy study's presets (``Study.module`` is this module: ``preset`` and the runner)."""
    return replace({"full": ToyPreset(size=10, seeds=(0, 1, 2)), "quick": ToyPreset()}[name],
                   **fields)


def run_toy(p: ToyPreset, out: str | Path, checkpoints: str, **kw: Any) -> Path:
    """One cell: the preset's size, in ``out/store.sqlite``."""
    CALLS.append({"preset": p, "checkpoints": checkpoints, **kw})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ResultsStore(out / "store.sqlite") as store:
        store.put_cell(f"toy-{p.size}", "toy", {"size": p.size},
                       [{"metric": "size", "value": float(p.size)}], 0.0)
    return out


def build_report(out: str | Path) -> list[str]:
    """The toy report (``Study.report_module`` is this module too)."""
    with ResultsStore(Path(out) / "store.sqlite") as store:
        sizes = sorted(r["value"] for r in store.rows("toy"))
    path = Path(out) / "toy.csv"
    path.write_text("size\n" + "".join(f"{s:g}\n" for s in sizes))
    return [str(path)]


def summary(out: str | Path) -> str:
    return "toy summary: sizes " + (Path(out) / "toy.csv").read_text().split("\n", 1)[1].strip()


def toy_arguments(parser: argparse.ArgumentParser, study: Study) -> None:
    """The common flags and one of its own."""
    common_arguments(parser, study)
    parser.add_argument("--size", type=int, default=None, help="how big the toy is")


def toy_keywords(args: argparse.Namespace) -> dict[str, Any]:
    if args.size is not None and args.size < 1:
        raise ConfigError(None, f"--size {args.size} is no toy; give N >= 1")
    return {"size": args.size, **common_keywords(args)}


class ToyStudy(Study):
    @property
    def presets(self) -> tuple[str, ...]:  # type: ignore[override]
        """No ``toy.yaml`` in the package: the presets of :func:`preset`."""
        return ("full", "quick")


@pytest.fixture
def toy() -> Iterator[Study]:
    CALLS.clear()
    study = register(ToyStudy("toy", "a sixth study, registered by a test", __name__, "run_toy",
                              __name__, summary="summary", reduced_note="a toy run",
                              arguments=f"{__name__}:toy_arguments",
                              keywords=f"{__name__}:toy_keywords"))
    try:
        yield study
    finally:
        registry_module._REGISTRY.pop("toy", None)


def test_a_sixth_study_has_its_flags(toy: Study, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["study", "--help"])
    assert e.value.code == 0 and "a sixth study, registered by a test" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["study", "toy", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0
    assert "--size SIZE how big the toy is" in text and "(default runs/toy)" in text
    assert "--seeds SEEDS" in text and "--executor" in text  # the common flags


def test_a_sixth_study_runs_through_the_cli(toy: Study, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    rc = main(["study", "toy", "--quick", "--size", "5", "--seeds", "2", "--out", str(out),
               "--no-progress"])
    stdout = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert len(CALLS) == 1
    call = CALLS[0]
    assert call["preset"] == ToyPreset(size=5, seeds=(0, 1), epochs=1)
    assert call["preset_name"] == "quick" and call["progress"] is False
    assert call["checkpoints"] == str(Path("runs") / "checkpoints-quick")
    assert stdout[0] == "(preset 'quick': a toy run)"
    assert stdout[1] == "toy summary: sizes 5"
    assert stdout[2].startswith("wall time ") and f"summary.json in {out}/" in stdout[2]
    assert (out / "toy.csv").exists() and (out / "report.html").exists()
    assert (out / "provenance.json").exists()


def test_a_sixth_study_checks_its_flags(toy: Study, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["study", "toy", "--size", "0", "--out", str(tmp_path / "o")])
    assert rc == 2 and not CALLS and not (tmp_path / "o").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["invlab: error: --size 0 is no toy; give N >= 1"]


def test_gone_when_unregistered(capsys: pytest.CaptureFixture[str]) -> None:
    """The fixture's cleanup leaves the five studies (and no toy sub-command)."""
    assert "toy" not in [s.name for s in list_studies()]
    with pytest.raises(SystemExit):
        main(["study", "toy"])
    assert "invalid choice: 'toy'" in capsys.readouterr().err


def test_the_study_cli_names_no_study() -> None:
    """Every study's flags and pre-run checks live in the studies layer."""
    source = inspect.getsource(invlab.cli.study)
    for s in list_studies():
        assert s.name not in source, s.name


def test_a_simple_study_needs_no_flag_functions() -> None:
    """Spectral takes only the common flags: the defaults of ``Study.arguments/keywords``."""
    spectral = get_study("spectral")
    assert spectral.arguments == Study.arguments == "invlab.studies.flags:common_arguments"
    assert spectral.keywords == Study.keywords == "invlab.studies.flags:common_keywords"
