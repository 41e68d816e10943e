"""``invlab.allocator``: the CLI's glibc thresholds reach this process and its children."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from invlab import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_thresholds_are_applied_and_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.setenv(name, "0")  # recorded, so the session's environment is restored after
        monkeypatch.delenv(name)
    assert allocator.keep_freed_memory()
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(allocator.MMAP_THRESHOLD)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_TRIM_THRESHOLD_'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(allocator.TRIM_THRESHOLD)


def test_a_users_own_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert not allocator.keep_freed_memory()
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "131072"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
