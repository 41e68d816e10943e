"""The release: one version source, a changelog entry and a citation for it, and (slow) a wheel
that installs into a fresh virtual environment and works with no source tree on the path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import invlab

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_source() -> None:
    """pyproject reads the version from invlab/_version.py; the package, the installed
    metadata, CITATION.cff and the newest CHANGELOG entry all say the same."""
    from invlab._version import __version__

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "invlab._version.__version__"}
    assert invlab.__version__ == __version__ == "0.2.0"
    assert version("invlab") == __version__  # the editable install's metadata
    assert str(yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"]) == __version__
    entries = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert entries and entries[0] == __version__
    # nothing else spells a version of its own
    for path in (ROOT / "src" / "invlab").rglob("*.py"):
        if path.name != "_version.py":
            assert not re.search(r'^__version__\s*=', path.read_text(), re.M), path


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"invlab {invlab.__version__}"


SMOKE = """
import sys, torch, invlab
assert "site-packages" in invlab.__file__, invlab.__file__
x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 10))
pooled = invlab.GroupPooled(net, "r4")
m = invlab.measure(pooled.eval(), x, group="r4", metrics=["kl", "logit_l2"])
assert abs(m.summary["kl"]) < 1e-6 and m.summary["logit_l2"] < 1e-9, m.summary
m = invlab.measure(net.eval(), x, transform="rotate:30", metrics=["kl"])
assert m.summary["kl"] > 0
print("measured", sorted(m.summary), invlab.__version__)
"""


@pytest.mark.slow  # builds a wheel and installs torch into a new venv: 1-3 min
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=900)
    wheels = list(dist.glob("invlab-*.whl"))
    assert [w.name for w in wheels] == [f"invlab-{invlab.__version__}-py3-none-any.whl"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, cli = venv / "bin" / "python", venv / "bin" / "invlab"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
                    "torch==2.13.0", str(wheels[0])], check=True, timeout=1800)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    work = tmp_path / "elsewhere"  # no source tree on the path: not the repository's folder
    work.mkdir()

    def run(*argv: str) -> str:
        p = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        return p.stdout

    assert run(str(cli), "--version").strip() == f"invlab {invlab.__version__}"
    listing = run(str(cli), "transforms", "list")
    assert "rotate" in listing and "r4" in listing
    where = run(str(py), "-c", "import invlab; print(invlab.__file__)").strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT / "src")
    assert "measured ['kl']" in run(str(py), "-c", SMOKE)
    # the packaged study presets and the report template came with the wheel
    assert "genuine" in run(str(py), "-c", "import invlab; print([s.presets for s in "
                                            "invlab.list_studies()]); print('genuine')")
