"""Progress bars for the apps, driven by a solver's progress callback
(:class:`gradcv.optim.ProgressCallback`): one tqdm bar per pyramid level on a terminal,
one summary line per level otherwise (logs and pipes get no carriage returns)."""

from __future__ import annotations

import math
import sys
from typing import IO, Any

import torch


class LevelProgress:
    """A progress callback that draws one bar per level: ``level i/n``, the steps done and
    the batch's mean loss (``NaN``-aware: stopped samples are padded with ``NaN``).

    A level ends when the next one starts (samples may stop before ``iterations``) or at
    :meth:`close`; use it as a context manager. The loss is read from the device only when
    a bar is redrawn, every ``iterations // 40`` steps, so the solver keeps running
    without a host synchronisation per step.

    Args:
        levels: number of levels.
        iterations: the most steps per level (the bar's total).
        enabled: ``False`` makes every call a no-op.
        stream: where to draw (default ``sys.stderr``).
    """

    def __init__(self, levels: int, iterations: int, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.levels, self.iterations, self.enabled = levels, iterations, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = max(1, iterations // 40)
        self._bar: Any = None
        self._level: int | None = None
        self._step = 0
        self._loss: torch.Tensor | None = None

    def __call__(self, level: int, iteration: int, loss: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self._level is not None and level != self._level:
            self._end_level()
        if self._level is None:
            self._start_level(level)
        self._step, self._loss = iteration + 1, loss
        if self._bar is not None and (iteration % self.every == 0 or iteration + 1 == self.iterations):
            self._bar.n = self._step
            self._bar.set_postfix_str(f"loss {_mean(loss):.5f}", refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        """End the current level's bar (or print its line)."""
        if self.enabled and self._level is not None:
            self._end_level()

    def __enter__(self) -> "LevelProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _description(self, level: int) -> str:
        return f"level {level + 1}/{self.levels}"

    def _start_level(self, level: int) -> None:
        self._level, self._step, self._loss = level, 0, None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.iterations, desc=self._description(level), file=self.stream, leave=True,
                             unit="it", dynamic_ncols=True)

    def _end_level(self) -> None:
        assert self._level is not None
        loss = _mean(self._loss) if self._loss is not None else math.nan
        if self._bar is not None:
            self._bar.n = self._step
            self._bar.set_postfix_str(f"loss {loss:.5f}", refresh=False)
            self._bar.close()
            self._bar = None
        else:
            self.stream.write(f"{self._description(self._level)}: {self._step}/{self.iterations} steps, loss {loss:.5f}\n")
            self.stream.flush()
        self._level = None


def _mean(loss: torch.Tensor) -> float:
    """The mean over the samples that still report a loss (one read from the device)."""
    return float(torch.nanmean(loss.detach().float()))
