"""First-order level solver (``method='first_order'``): any ``torch.optim`` or
``torch_optimizer`` optimiser on the photometric loss of one pyramid level, or, for a
differentiable solve, :class:`gradcv.optim.UnrolledOptimizer`'s out-of-place steps."""

from __future__ import annotations

import math

import torch

from gradcv.optim import (
    PerSampleStopping,
    ProgressCallback,
    StoppingCriteria,
    UnrolledOptimizer,
    keep_stopped,
    make_optimizer,
    pad_history,
    relative_change,
    scheduled_learning_rate,
    set_learning_rate,
)
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.motion import motion_matrix
from gradcv.registration.objective import LevelOutcome, LevelProblem, fit_photometric, level_photometric, masked_weight, pair_loss
from gradcv.registration.sampling import project_corners


def level_loss(
    problem: LevelProblem, theta: torch.Tensor, config: RegistrationConfig, centres: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss (B,), G (B, 3, 3))``: each pair's photometric loss at ``theta`` (averaged
    with the backward warp's when ``config.symmetric``). ``centres``: ``src`` and ``dst``
    as sampled at the pixel centres (:meth:`LevelGrid.centres`)."""
    grid, masks = problem.grid, problem.masks
    G = motion_matrix(problem.motion, theta, problem.corners)
    warped, weight = grid.sample(problem.src, G, centres[0])
    weight = masked_weight(grid, weight, G, masks)
    warped = _photometric(config, warped, problem.dst, weight)
    loss = pair_loss(config.loss, warped, problem.dst, weight, config.charbonnier_eps)
    if config.symmetric:
        G_inv = torch.linalg.inv(G)
        G_inv = G_inv / G_inv[:, 2:, 2:]
        back, weight_back = grid.sample(problem.dst, G_inv, centres[1])
        back_masks = None if masks is None else (masks[1], masks[0])
        weight_back = masked_weight(grid, weight_back, G_inv, back_masks)
        back = _photometric(config, back, problem.src, weight_back)
        loss = 0.5 * (loss + pair_loss(config.loss, back, problem.src, weight_back, config.charbonnier_eps))
    return loss, G


def _photometric(config: RegistrationConfig, warped: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``warped`` with ``config.photometric`` fitted to ``target`` (not for ``'ncc'``, which
    is invariant to gain and bias already)."""
    return warped if config.loss == "ncc" else fit_photometric(config.photometric, warped, target, weight)


def _level_config(problem: LevelProblem, config: RegistrationConfig) -> RegistrationConfig:
    """``config`` with the level's photometric model (:func:`level_photometric`)."""
    photometric = level_photometric(config.photometric, problem.level.is_finest)
    return config if photometric == config.photometric else config.replace(photometric=photometric)


def solve_first_order(
    problem: LevelProblem,
    theta: torch.Tensor,
    config: RegistrationConfig,
    callback: ProgressCallback | None = None,
) -> LevelOutcome:
    """At most ``config.iterations`` optimiser steps on one level, from ``theta (B, k)``.

    Each pair stops on its own (``tolerance``, ``step_tolerance`` in full-resolution
    pixels, ``patience``); a stopped pair's gradient is zeroed and its parameters are
    restored after every step, so momentum cannot move it. With
    ``config.differentiable`` the steps stay on the autograd graph.
    """
    config = _level_config(problem, config)
    if config.differentiable:
        return _unrolled(problem, theta, config, callback)
    theta = theta.detach().clone().requires_grad_(True)
    optimizer = make_optimizer([theta], config.optimizer, config.lr, config.optimizer_kwargs)
    stop = PerSampleStopping(_criteria(config), problem.batch, theta.device)
    centres = (problem.grid.centres(problem.src), problem.grid.centres(problem.dst))
    last: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=False)
        loss, G = level_loss(problem, theta, config, centres)
        # Pairs are independent, so the sum's gradient is each pair's own gradient.
        loss.sum().backward()
        assert theta.grad is not None
        theta.grad.mul_(stop.active[:, None].to(theta.dtype))
        with torch.no_grad():
            last[:] = [loss.detach(), project_corners(G.detach(), problem.corners)]
        return loss.detach().sum()

    track = _Track(problem, config, stop, callback)
    for step in range(config.iterations):
        set_learning_rate(optimizer, _rate(config, step))
        before = theta.detach().clone()
        optimizer.step(closure)
        with torch.no_grad():
            theta.copy_(keep_stopped(theta, before, stop.active))
        track(step, *last)
    return track.outcome(theta.detach())


def _unrolled(
    problem: LevelProblem, theta: torch.Tensor, config: RegistrationConfig, callback: ProgressCallback | None
) -> LevelOutcome:
    """The differentiable variant: ``theta_{k+1} = step(theta_k, grad_k)`` out of place,
    with the gradients themselves on the graph (``create_graph``), so the level's result
    is a differentiable function of the images, the masks and its start."""
    if not theta.requires_grad:
        theta = theta.detach().requires_grad_(True)
    optimizer = UnrolledOptimizer(config.optimizer, config.optimizer_kwargs)
    stop = PerSampleStopping(_criteria(config), problem.batch, theta.device)
    centres = (problem.grid.centres(problem.src), problem.grid.centres(problem.dst))
    track = _Track(problem, config, stop, callback)
    with torch.enable_grad():
        for step in range(config.iterations):
            loss, G = level_loss(problem, theta, config, centres)
            (grad,) = torch.autograd.grad(loss.sum(), theta, create_graph=True)
            active = stop.active
            grad = grad * active[:, None].to(grad.dtype)
            theta = keep_stopped(optimizer.step(theta, grad, _rate(config, step)), theta, active)
            track(step, loss.detach(), project_corners(G.detach(), problem.corners))
    return track.outcome(theta)


class _Track:
    """The bookkeeping both first-order loops share: history, stopping, callback."""

    def __init__(
        self, problem: LevelProblem, config: RegistrationConfig, stop: PerSampleStopping, callback: ProgressCallback | None
    ) -> None:
        self.problem, self.config, self.stop, self.callback = problem, config, stop, callback
        self.pixels = max(problem.grid.full) / 2.0  # frame units -> full-resolution pixels
        self.losses: list[torch.Tensor] = []
        self.previous = torch.full((problem.batch,), math.inf, dtype=problem.src.dtype, device=problem.src.device)
        self.moved_before: torch.Tensor | None = None

    def __call__(self, step: int, loss: torch.Tensor, moved: torch.Tensor) -> None:
        """Account for ``step``, whose loss (before the step) and corners were ``loss``, ``moved``."""
        self.losses.append(loss)
        step_px = None
        if self.moved_before is not None:
            step_px = (moved - self.moved_before).norm(dim=-1).amax(-1) * self.pixels
        self.moved_before = moved
        self.stop.update(relative_change(self.previous, loss), step_px)
        self.previous = loss
        if self.callback is not None:
            self.callback(self.problem.level.index, step, loss)

    def outcome(self, theta: torch.Tensor) -> LevelOutcome:
        history = pad_history(self.losses, self.stop.steps, self.config.iterations)
        return LevelOutcome(theta, history, self.stop.steps, ~self.stop.active, self.losses[-1])


def _criteria(config: RegistrationConfig) -> StoppingCriteria:
    return StoppingCriteria(config.tolerance, config.step_tolerance, config.patience)


def _rate(config: RegistrationConfig, step: int) -> float:
    return scheduled_learning_rate(config.schedule, config.lr, step, config.iterations, config.final_lr_ratio)
