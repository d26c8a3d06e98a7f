"""The coarse-to-fine schedule: solve on the coarsest level of a centred pyramid
(:func:`gradcv.core_ops.pyramid.build_centred_pyramid`), carry the state one level finer,
solve again, down to full resolution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
import torch.nn.functional as F

State = TypeVar("State")


@dataclass(frozen=True)
class PyramidLevel:
    """One level of the schedule.

    Attributes:
        index: position in the schedule, 0 at the coarsest (what progress callbacks get).
        level: pyramid level, 0 at full resolution; pixels are ``2**level`` input pixels.
        count: number of levels in the schedule.
        size: ``(h, w)`` of the level's images.
    """

    index: int
    level: int
    count: int
    size: tuple[int, int]

    @property
    def is_finest(self) -> bool:
        """Whether this is the full-resolution level (the last one solved)."""
        return self.level == 0

    @property
    def is_coarsest(self) -> bool:
        """Whether this is the first level solved."""
        return self.index == 0


def schedule(sizes: Sequence[tuple[int, int]]) -> list[PyramidLevel]:
    """The levels of a pyramid, coarse to fine, from its image sizes listed fine to coarse
    (as :func:`~gradcv.core_ops.pyramid.build_centred_pyramid` returns its levels).

    Example:
        >>> [(p.index, p.level, p.size) for p in schedule([(64, 64), (32, 32)])]
        [(0, 1, (32, 32)), (1, 0, (64, 64))]
    """
    n = len(sizes)
    if n < 1:
        raise ValueError("sizes: expected at least one level")
    return [PyramidLevel(i, n - 1 - i, n, (int(sizes[n - 1 - i][0]), int(sizes[n - 1 - i][1]))) for i in range(n)]


def carry_unchanged(state: State, coarser: PyramidLevel, finer: PyramidLevel) -> State:
    """The carry of a state that means the same at every level: parameters in normalised
    coordinates, such as a homography in the centred pyramid's normalised frame."""
    return state


def carry_upsampled(state: torch.Tensor, coarser: PyramidLevel, finer: PyramidLevel) -> torch.Tensor:
    """The carry of a per-pixel state (a depth map ``(B, C, h, w)``): bilinear upsampling
    to the finer level's size, ``align_corners=False`` like the centred pyramid, so a
    value stays where it was in normalised coordinates. Values are not rescaled (a depth
    is a depth at every level; a disparity in pixels would be doubled by its solver).

    Convention:
        Finer pixel ``x`` reads the coarser level at ``(x - 1/2) / 2``: the inverse of the
        centred pyramid's ``2 x_l + 1/2`` (exact for even sizes).
    """
    return F.interpolate(state, size=finer.size, mode="bilinear", align_corners=False)


def coarse_to_fine(
    initial: State,
    sizes: Sequence[tuple[int, int]],
    solve: Callable[[State, PyramidLevel], State],
    carry: Callable[[State, PyramidLevel, PyramidLevel], State] = carry_unchanged,
) -> list[State]:
    """Run ``solve`` on every level, coarse to fine, carrying the state between levels.

    Args:
        initial: the state at the coarsest level.
        sizes: the pyramid's image sizes, fine to coarse (``[tuple(p.shape[-2:]) for p in
            pyramid]``); its length is the number of levels.
        solve: ``solve(state, level) -> state``: the level's solve from ``state``.
        carry: ``carry(state, coarser, finer) -> state``: the coarser level's result as the
            finer level's start; :func:`carry_unchanged` (normalised parameters) or
            :func:`carry_upsampled` (per-pixel maps).

    Returns:
        The state after each level, coarse to fine (the last is the full-resolution result).

    Example:
        >>> depth = torch.ones(1, 1, 4, 4)
        >>> out = coarse_to_fine(depth, [(8, 8), (4, 4)], lambda d, level: d * 2, carry_upsampled)
        >>> [tuple(d.shape[-2:]) for d in out], float(out[-1].mean())
        ([(4, 4), (8, 8)], 4.0)
    """
    levels = schedule(sizes)
    states: list[State] = []
    state = initial
    for level in levels:
        if states:
            state = carry(state, levels[level.index - 1], level)
        state = solve(state, level)
        states.append(state)
    return states
