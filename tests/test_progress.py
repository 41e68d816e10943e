"""Progress off a terminal: plain lines with rate and ETA, no control characters."""

from __future__ import annotations

import io
import re

import pytest
import torch

from invlab.metrics import measure
from invlab.models import create_model
from invlab.progress import LogProgress, fmt_seconds, progress_bar

CONTROL = re.compile(r"[\r\x1b]")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_progress_lines_have_rate_and_eta_and_no_control_characters():
    out, clock = io.StringIO(), Clock()
    bar = LogProgress(total=100, desc="measure rotate", unit="img", file=out, clock=clock)
    for _ in range(100):
        clock.t += 0.5  # 2 img/s
        bar.update(1)
    bar.set_postfix(loss="0.123")
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert not CONTROL.search(text)
    # every 10 % (0.5 s apart < interval 10 s, but ≥ min_gap 2 s): 10 lines and the final one
    assert len(lines) == 11, lines
    assert lines[0] == ("[invlab] measure rotate: 10/100 img (10%), 2 img/s, elapsed 0:05, "
                        "ETA 0:45")
    assert lines[-1].endswith("elapsed 0:50, done | loss=0.123")


def test_log_progress_interval_and_short_work_is_silent():
    out, clock = io.StringIO(), Clock()
    bar = LogProgress(total=10_000, desc="x", unit="it", file=out, clock=clock)
    for _ in range(50):  # 0.5 % in 25 s: lines come from the 10 s interval only
        clock.t += 0.5
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "ETA" in lines[0] and "2 it/s" in lines[0]
    quiet = io.StringIO()
    with LogProgress(range(5), desc="short", file=quiet, clock=Clock()) as b2:
        assert list(b2) == [0, 1, 2, 3, 4]  # iteration passes items through
    assert quiet.getvalue() == ""  # finished within min_gap: nothing at all


def test_log_progress_unknown_total_and_slow_rate():
    out, clock = io.StringIO(), Clock()
    bar = LogProgress(total=None, desc="study", unit="cell", file=out, clock=clock)
    clock.t = 30.0
    bar.update(1)
    line = out.getvalue().strip()
    assert line == "[invlab] study: 1 cell, 30 s/cell, elapsed 0:30"
    assert fmt_seconds(3725) == "1:02:05" and fmt_seconds(float("nan")) == "?"


def test_progress_bar_picks_lines_off_a_terminal(monkeypatch):
    monkeypatch.delenv("INVLAB_PROGRESS", raising=False)
    assert isinstance(progress_bar(total=3, file=io.StringIO()), LogProgress)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    from tqdm.auto import tqdm

    bar = progress_bar(total=3, file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv("INVLAB_PROGRESS", "log")
    assert isinstance(progress_bar(total=3, file=Tty()), LogProgress)
    monkeypatch.setenv("INVLAB_PROGRESS", "off")
    off = progress_bar([1, 2], file=io.StringIO())
    assert list(off) == [1, 2] and not isinstance(off, LogProgress)
    monkeypatch.setenv("INVLAB_PROGRESS", "")
    monkeypatch.setenv("INVLAB_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="INVLAB_PROGRESS_INTERVAL"):
        progress_bar(total=3, file=io.StringIO())


def test_measure_piped_progress_is_lines_with_rate_and_eta(capsys, monkeypatch):
    """measure with stderr captured (not a terminal): log lines, no \\r or escapes."""
    monkeypatch.setenv("INVLAB_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("INVLAB_PROGRESS", raising=False)
    model = create_model("mlp5", in_shape=(1, 12, 12), num_classes=4, hidden=16).eval()
    x = torch.rand(12, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    measure(model, x, metrics=["kl", "SI"], n_steps=4, batch_size=3, progress=True)
    err = capsys.readouterr().err
    assert not CONTROL.search(err)
    lines = [ln for ln in err.splitlines() if ln.startswith("[invlab] measure r4: ")]
    assert any("ETA" in ln and "img/s" in ln for ln in lines), err
    assert lines[-1].startswith("[invlab] measure r4: 12/12 img (100%)")


def test_nested_training_progress_piped_has_no_control_characters(capsys, monkeypatch):
    """An outer bar around inner ones (a study around training runs), piped."""
    monkeypatch.setenv("INVLAB_PROGRESS_INTERVAL", "0")
    outer = progress_bar(total=3, desc="study", unit="cell")
    for i in range(3):
        for _ in progress_bar(range(4), desc=f"train {i}", unit="epoch", leave=False,
                              dynamic_ncols=True):
            pass
        outer.set_postfix_str(f"cell {i}")
        outer.update(1)
    outer.close()
    err = capsys.readouterr().err
    assert not CONTROL.search(err)
    assert "[invlab] study: 3/3 cell (100%)" in err and "[invlab] train 2: 4/4 epoch" in err
