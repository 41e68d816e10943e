"""One function derives the executor from the study flags (no Ray needed, nothing started)."""

from __future__ import annotations

import sys

import pytest

from invlab.sweep import ProcessPoolExecutorBackend, SerialExecutor, choose_executor
from invlab.sweep.ray_executor import RayExecutor


def test_defaults_follow_workers() -> None:
    assert isinstance(choose_executor(None, 1), SerialExecutor)
    ex = choose_executor(None, 2)
    assert isinstance(ex, ProcessPoolExecutorBackend) and ex.workers == 2
    assert isinstance(choose_executor("serial", 4), SerialExecutor)


def test_ray_names_and_addresses() -> None:
    ex = choose_executor("ray", 3)
    assert isinstance(ex, RayExecutor) and ex.workers == 3 and ex.address is None
    assert choose_executor("ray", 1, ray_address="auto").address == "auto"
    assert choose_executor(None, 1, ray_address="auto").address == "auto"  # implies ray
    inst = SerialExecutor()
    assert choose_executor(inst, 8) is inst


@pytest.mark.parametrize(("args", "match"), [
    (("process", 1), None),
    (("spark", 1), "unknown executor 'spark'; expected one of serial, process, ray"),
    (("serial", 1, "auto"), "--ray-address 'auto' needs --executor ray"),
    (("serial", 0), "--workers must be an int >= 1, found 0"),
    (("ray", 1, " "), "ray address must be 'auto' or host:port"),
])
def test_bad_flags_are_one_line_errors(args: tuple, match: str | None) -> None:
    name, workers, *addr = args
    if match is None:
        choose_executor(name, workers)
        return
    with pytest.raises(ValueError, match=match):
        choose_executor(name, workers, ray_address=addr[0] if addr else None)


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import invlab.sweep.ray_executor as R

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert not R.ray_available()
    with pytest.raises(ValueError, match=r"pip install 'invlab\[ray\]'"):
        list(RayExecutor(1).map_unordered(abs, [1]))


@pytest.mark.parametrize("study", ["genuine", "drift", "spectral"])
def test_every_study_command_has_the_flags(study: str) -> None:
    from invlab.cli import build_parser
    from invlab.cli.study import executor_from_flags

    args = build_parser().parse_args(["study", study, "--executor", "ray", "--ray-address",
                                      "auto", "--workers", "2"])
    ex = executor_from_flags(args)
    assert isinstance(ex, RayExecutor) and ex.address == "auto"
    assert isinstance(executor_from_flags(build_parser().parse_args(["study", study])),
                      SerialExecutor)


def test_cli_refuses_ray_address_without_ray(capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.cli import main

    code = main(["study", "genuine", "--executor", "serial", "--ray-address", "auto",
                 "--out", "/nonexistent/x"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "invlab: error: --ray-address 'auto' needs --executor ray (found 'serial')")
