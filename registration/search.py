"""The multi-start search at the coarsest level: each pair is started from a grid of
translations, and keeps the start that ends lowest."""

from __future__ import annotations

import math

import torch

from gradcv.optim import ProgressCallback
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.first_order import solve_first_order
from gradcv.registration.motion import motion_matrix, motion_parameters
from gradcv.registration.objective import LevelOutcome, LevelProblem, masked_weight
from gradcv.registration.second_order import solve_second_order

#: Second-order iterations after which the search keeps one start per pair (measured on
#: 200 DeTone pairs: the same picks as racing to the end, 10 % less time a pair).
SEARCH_RACE = 8
#: A start whose warp keeps less than this fraction of the pixels inside can fit the
#: sliver that is left trivially: any start above it is preferred.
MIN_OVERLAP = 0.25


def solve_level(
    problem: LevelProblem, theta: torch.Tensor, config: RegistrationConfig, callback: ProgressCallback | None = None
) -> LevelOutcome:
    """One level by the configured method."""
    solve = solve_first_order if config.method == "first_order" else solve_second_order
    return solve(problem, theta, config, callback)


def translation_starts(theta: torch.Tensor, problem: LevelProblem, config: RegistrationConfig) -> torch.Tensor:
    """``(B * K, k)``: every pair's start composed with each of the ``K = (2 n + 1)²``
    translations of the grid spanning ``±search_range`` full-resolution pixels (pair-major)."""
    B, device = theta.shape[0], theta.device
    n = config.search_steps
    ticks = torch.linspace(-1.0, 1.0, 2 * n + 1, dtype=torch.float64, device=device)
    ticks = ticks * config.search_range / (max(problem.grid.full) / 2.0)  # pixels -> frame units
    ty, tx = torch.meshgrid(ticks, ticks, indexing="ij")
    K = tx.numel()
    shifts = torch.eye(3, dtype=torch.float64, device=device).repeat(K, 1, 1)
    shifts[:, 0, 2], shifts[:, 1, 2] = tx.flatten(), ty.flatten()
    G0 = motion_matrix(problem.motion, theta, problem.corners).to(torch.float64)
    starts = (shifts[None] @ G0[:, None]).reshape(B * K, 3, 3)
    return motion_parameters(problem.motion, starts, problem.corners).to(theta.dtype)


def search_level(
    problem: LevelProblem, theta: torch.Tensor, config: RegistrationConfig, callback: ProgressCallback | None = None
) -> LevelOutcome:
    """The coarsest level solved from ``K = (2 search_steps + 1)²`` starts per pair.

    Each pair keeps the start that ends with the lowest loss among those whose warp keeps
    at least :data:`MIN_OVERLAP` of the pixels inside the source. The K problems of a pair
    are solved as one batch, at the level where they are cheapest; with a second-order
    method the pick is made after :data:`SEARCH_RACE` iterations and only the picked start
    finishes the level. The callback sees the picked starts' losses once the level ends.
    """
    B = problem.batch
    K = (2 * config.search_steps + 1) ** 2
    with torch.set_grad_enabled(config.differentiable):
        starts = translation_starts(theta if config.differentiable else theta.detach(), problem, config)
    race = config.method != "first_order" and SEARCH_RACE < config.iterations
    many = problem.repeat(K)
    raced = solve_level(many, starts, config.replace(iterations=SEARCH_RACE) if race else config)
    pick = _pick(many, raced, B, K)
    outcome = LevelOutcome(
        raced.theta[pick], raced.history[pick], raced.steps[pick], raced.stopped[pick], raced.last_loss[pick]
    )
    if race:
        rest = solve_level(problem, outcome.theta, config.replace(iterations=config.iterations - SEARCH_RACE))
        outcome = LevelOutcome(
            rest.theta, torch.cat([outcome.history, rest.history], 1), outcome.steps + rest.steps, rest.stopped,
            rest.last_loss,
        )
    if callback is not None:
        # Up to the last step any pair took (one read, once the level is over): the columns
        # after it are all NaN padding, not steps.
        recorded = (~torch.isnan(outcome.history)).any(0).nonzero()
        for step in range(int(recorded.max()) + 1 if recorded.numel() else 0):
            callback(problem.level.index, step, outcome.history[:, step])
    return outcome


def _pick(problem: LevelProblem, outcome: LevelOutcome, B: int, K: int) -> torch.Tensor:
    """``(B,)`` the index (into the ``B * K`` starts) of each pair's best start."""
    with torch.no_grad():
        G_end = motion_matrix(problem.motion, outcome.theta.detach(), problem.corners)
        _, inside = problem.grid.sample(problem.src, G_end)
        overlap = masked_weight(problem.grid, inside, G_end, problem.masks).flatten(1).mean(1).view(B, K)
        final = outcome.last_loss.view(B, K)
        final = torch.where(torch.isfinite(final), final, torch.full_like(final, math.inf))
        score = torch.where(overlap >= MIN_OVERLAP, final, final + 1e6)  # prefer any start that overlaps
        return torch.arange(B, device=final.device) * K + score.argmin(1)
