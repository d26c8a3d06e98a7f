"""experiments._progress.LevelProgress: the solver callback that draws the apps' bars."""

from __future__ import annotations

import io

import torch

from gradcv.experiments._progress import LevelProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(progress: LevelProgress, levels: int, steps: int) -> None:
    with progress:
        for level in range(levels):
            for step in range(steps):
                progress(level, step, torch.tensor([1.0, float("nan"), 3.0]))


def test_one_line_per_level_off_a_terminal():
    stream = io.StringIO()
    _drive(LevelProgress(3, 10, stream=stream), 3, 4)
    lines = stream.getvalue().splitlines()
    assert lines == [f"level {i}/3: 4/10 steps, loss 2.00000" for i in (1, 2, 3)]  # NaN (stopped) ignored
    assert "\r" not in stream.getvalue()


def test_tqdm_bars_on_a_terminal():
    stream = _Terminal()
    _drive(LevelProgress(2, 8, stream=stream), 2, 8)
    text = stream.getvalue()
    assert "level 1/2" in text and "level 2/2" in text and "8/8" in text and "loss 2.00000" in text


def test_disabled_draws_nothing():
    stream = io.StringIO()
    _drive(LevelProgress(2, 5, enabled=False, stream=stream), 2, 5)
    assert stream.getvalue() == ""
