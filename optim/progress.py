"""The progress-callback protocol: how a solver reports each step without printing and
without synchronising with the host."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ProgressCallback(Protocol):
    """Called by a solver after every step.

    Args (of the call):
        level: the schedule's level index, 0 at the coarsest.
        iteration: the step on that level, from 0.
        loss: ``(B,)`` each sample's loss (a tensor on the solver's device: reading it,
            as ``float(loss.mean())`` does, synchronises; do it only when drawing).

    Example:
        >>> seen = []
        >>> def record(level: int, iteration: int, loss: torch.Tensor) -> None:
        ...     seen.append((level, iteration))
        >>> isinstance(record, ProgressCallback)
        True
    """

    def __call__(self, level: int, iteration: int, loss: torch.Tensor) -> None: ...
