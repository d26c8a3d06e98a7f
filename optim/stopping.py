"""Per-sample stopping by masks: each of a batch's independent problems stops on its own,
and its parameters freeze, without the loop ever asking the host which ones did."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StoppingCriteria:
    """When a sample counts as settled.

    Attributes:
        tolerance: the relative loss change below which a step is small (0: never).
        step_tolerance: the step size (in the solver's unit: pixels for registration)
            below which a step is small (0: never).
        patience: consecutive small steps after which the sample stops (>= 1).
    """

    tolerance: float = 0.0
    step_tolerance: float = 0.0
    patience: int = 1

    def __post_init__(self) -> None:
        for name in ("tolerance", "step_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int):
            raise TypeError(f"patience: expected an int, got {type(self.patience).__name__}")
        if self.patience < 1:
            raise ValueError(f"patience: expected >= 1, got {self.patience}")


def relative_change(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``|previous - current| / |previous|`` per sample (``NaN``, hence never small, where
    ``previous`` is infinite, as before a first step)."""
    tiny = torch.finfo(current.dtype).tiny
    return (previous - current).abs() / previous.abs().clamp_min(tiny)


def keep_stopped(new: torch.Tensor, old: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``new`` where the sample is active, ``old`` where it stopped (``active`` is ``(B,)``,
    broadcast over the trailing dimensions): stopped samples freeze whatever an
    optimiser's momentum says. Differentiable in both."""
    return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)


class PerSampleStopping:
    """The stopping state of a batch: which samples are active, and for how many steps
    each has been small.

    Args:
        criteria: the thresholds.
        batch: number of samples.
        device: where the masks live (the solver's device: no transfer in the loop).

    Example:
        >>> stop = PerSampleStopping(StoppingCriteria(tolerance=1e-3, patience=2), 2, torch.device("cpu"))
        >>> for change in ([1e-4, 1.0], [1e-4, 1.0]):
        ...     active = stop.update(torch.tensor(change))
        >>> active.tolist()
        [False, True]
    """

    def __init__(self, criteria: StoppingCriteria, batch: int, device: torch.device) -> None:
        self.criteria = criteria
        self.active = torch.ones(batch, dtype=torch.bool, device=device)
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.steps = torch.zeros(batch, dtype=torch.long, device=device)

    def update(
        self,
        change: torch.Tensor,
        step_size: torch.Tensor | None = None,
        stop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Account for one step of every sample and return the new ``active`` mask.

        Args:
            change: ``(B,)`` relative loss change of the step (:func:`relative_change`;
                ``NaN`` or ``inf`` for a step that does not count, as a rejected one).
            step_size: ``(B,)`` step size, or ``None`` where none is known yet.
            stop: ``(B,)`` samples to stop now whatever their count (a saturated damping...).

        Returns:
            ``(B,)`` bool, also kept as :attr:`active`; :attr:`steps` counts the steps each
            sample took while active.
        """
        small = change < self.criteria.tolerance
        if step_size is not None:
            small = small | (step_size < self.criteria.step_tolerance)
        self.steps = self.steps + self.active.long()
        if self.criteria.patience == 1:
            # The first small step stops: no count to keep (a few tensor ops less per step).
            active = self.active & ~small
        else:
            self.count = torch.where(small & self.active, self.count + 1, torch.zeros_like(self.count))
            active = self.active & (self.count < self.criteria.patience)
        if stop is not None:
            active = active & ~stop
        self.active = active
        return active

    def select(self, keep: torch.Tensor) -> None:
        """Keep the samples indexed by ``keep`` (working-set compaction)."""
        self.active, self.count, self.steps = self.active[keep], self.count[keep], self.steps[keep]
