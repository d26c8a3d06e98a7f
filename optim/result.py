"""What every solver returns: the loss history, iterations used, wall time and a status
per sample; solvers subclass :class:`SolverResult` and add their parameters."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch


class SolverStatus(enum.IntEnum):
    """Why a sample's solve ended (its code in :attr:`SolverResult.status`)."""

    CONVERGED = 0  #: met the stopping criteria on the last level
    ITERATION_LIMIT = 1  #: still moving when the last level's iterations ran out
    DEGENERATE_INPUT = 2  #: the data cannot determine the answer (no texture, no overlap)
    DIVERGED = 3  #: the parameters or the loss became non-finite


def sample_status(
    stopped: torch.Tensor, degenerate: torch.Tensor | None = None, finite: torch.Tensor | None = None
) -> torch.Tensor:
    """The ``(B,)`` int8 :class:`SolverStatus` codes from per-sample masks.

    Args:
        stopped: ``(B,)`` met the stopping criteria on the last level.
        degenerate: ``(B,)`` degenerate input (takes precedence over the iteration outcome).
        finite: ``(B,)`` the result is finite (``False`` takes precedence over all).

    Example:
        >>> sample_status(torch.tensor([True, False, True]), torch.tensor([False, False, True])).tolist()
        [0, 1, 2]
    """
    status = torch.where(stopped, int(SolverStatus.CONVERGED), int(SolverStatus.ITERATION_LIMIT)).to(torch.int8)
    if degenerate is not None:
        status = torch.where(degenerate, torch.full_like(status, int(SolverStatus.DEGENERATE_INPUT)), status)
    if finite is not None:
        status = torch.where(finite, status, torch.full_like(status, int(SolverStatus.DIVERGED)))
    return status


def pad_history(losses: list[torch.Tensor], steps: torch.Tensor, iterations: int) -> torch.Tensor:
    """A level's ``(B, iterations)`` loss history from the per-step ``(B,)`` losses and the
    ``(B,)`` number of steps each sample took: a sample takes steps ``0 .. steps - 1`` (a
    stop is final within a level), and is ``NaN`` from there on, never its last loss
    repeated; steps never run are ``NaN`` too.

    Example:
        >>> h = pad_history([torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.5])], torch.tensor([2, 1]), 3)
        >>> h.tolist()
        [[3.0, 1.0, nan], [2.0, nan, nan]]
    """
    if not losses:
        raise ValueError("losses: expected at least one step")
    history = torch.stack(losses, 1)
    if history.shape[1] < iterations:
        history = torch.cat([history, history.new_full((history.shape[0], iterations - history.shape[1]), math.nan)], 1)
    taken = torch.arange(iterations, device=history.device) < steps.to(history.device)[:, None]
    return torch.where(taken, history, torch.full_like(history, math.nan))


@dataclass
class SolverResult:
    """The part of a result that every solver shares.

    Attributes:
        loss_history: per level, coarse to fine, a ``(B, iterations)`` tensor of each
            sample's loss before each step; ``NaN`` where the sample took no step (it had
            stopped), so ``nanmin``, ``isfinite`` and plots need no bookkeeping.
        iterations_used: ``(levels, B)`` steps each sample took on each level.
        wall_time: seconds spent in the call.
        status: ``(B,)`` int8 :class:`SolverStatus` codes.
    """

    loss_history: list[torch.Tensor]
    iterations_used: torch.Tensor
    wall_time: float
    status: torch.Tensor

    @property
    def converged(self) -> torch.Tensor:
        """``(B,)`` bool: the status is :attr:`SolverStatus.CONVERGED`."""
        return self.status == int(SolverStatus.CONVERGED)

    def final_loss(self, level: int = -1) -> torch.Tensor:
        """``(B,)`` each sample's last recorded loss on ``level`` (default the finest);
        ``NaN`` for a sample that took no step there."""
        history = self.loss_history[level]
        recorded = ~torch.isnan(history)
        last = (recorded.long() * torch.arange(1, history.shape[1] + 1, device=history.device)).argmax(1)
        return history.gather(1, last[:, None]).squeeze(1)
