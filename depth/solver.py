"""Multi-view depth of a reference view by gradient descent on a photometric loss.

For each of ``B`` independent problems, the per-pixel (normalised) inverse depth of the
reference view is moved, coarse to fine over the levels solved, so that every source,
warped into the reference through :func:`gradcv.core_ops.geometry.depth_warp`, matches
the reference: ``alpha (1 - SSIM) / 2 + (1 - alpha) L1`` per source (each warped source's
mean and std matched to the reference's over their overlap, so a per-view gain and bias
cost nothing; clipped channels left out), aggregated over the sources that see the pixel
(mean, min, or softmin: the mean where they agree, the best where one is occluded), plus
``lambda`` times an edge-aware smoothness (first or second order) of the inverse depth.

The start decides the basin: gradient descent cannot carry a pixel across a depth edge or
out of an occluded source's minimum. The default starts from a full-resolution plane
sweep (per-pixel minimum over sources, shiftable windows, semi-global plane choice,
parabolic sub-plane fit) over a range narrowed by a quick coarse sweep, whose
correspondences also match each view's gain and bias to the reference's (clipped values
left out), and descends at full resolution only, its step a sum of per-pixel and coarser corrections (so smooth errors
move as fast as pixel ones). Without a ``depth_range`` the range comes from the cameras
(:func:`derive_depth_range`).

Convention:
    Pixel centres at integers; depth is the reference camera's ``z``. Level ``l`` of the
    centred pyramid has ``x_l = (x + 1/2) / 2^l - 1/2``, so its camera matrix is ``S K``
    with ``S = [[s, 0, s/2 - 1/2], [0, s, s/2 - 1/2], [0, 0, 1]]``, ``s = 2^-l``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_floating, check_same_device, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.core_ops.filters import box_blur, gaussian_blur2d, median_blur
from gradcv.core_ops.geometry import depth_warp
from gradcv.core_ops.losses import ssim
from gradcv.core_ops.pyramid import build_centred_pyramid
from gradcv.depth.config import DepthConfig
from gradcv.depth.plane_sweep import _depth_range, plane_sweep
from gradcv.optim import (
    PerSampleStopping,
    ProgressCallback,
    PyramidLevel,
    SolverResult,
    StoppingCriteria,
    carry_upsampled,
    coarse_to_fine,
    keep_stopped,
    make_optimizer,
    pad_history,
    relative_change,
    sample_status,
    scheduled_learning_rate,
    set_learning_rate,
)

__all__ = ["DepthResult", "estimate_depth", "level_intrinsics", "derive_depth_range", "pyramid_levels", "solved_levels"]


@dataclass
class DepthResult(SolverResult):
    """What :func:`estimate_depth` found (and, from :class:`gradcv.optim.SolverResult`,
    ``loss_history`` per level, ``iterations_used``, ``wall_time`` and ``status``).

    Attributes:
        depth: ``(B, 1, H, W)`` z-depth of the reference view.
        valid: ``(B, 1, H, W)`` bool: seen by at least one source, textured, and with a
            final photometric cost below ``config.residual_threshold``.
        cost: ``(B, 1, H, W)`` final per-pixel photometric cost (``inf`` where no source sees it).
        depth_range: ``(B, 2)`` the ``(min, max)`` depth range used.
        level_depths: the depth reached at each pyramid level, coarse to fine, each
            ``(B, 1, h_l, w_l)`` in that level's pixels (the paper's Figure 4 columns; the
            camera matrices of level ``l`` are :func:`level_intrinsics` ``(K, l)``, and
            level ``l`` is ``level_depths[-1 - l]``).
        initial_depth: ``(B, 1, h, w)`` the start at the coarsest level solved (the plane
            sweep's depth, the constant or random start, or ``initial_depth`` resampled).
    """

    depth: torch.Tensor
    valid: torch.Tensor
    cost: torch.Tensor
    depth_range: torch.Tensor
    level_depths: list[torch.Tensor] = dataclasses.field(default_factory=list)
    initial_depth: torch.Tensor | None = None


def pyramid_levels(config: DepthConfig, height: int, width: int) -> int:
    """Levels of the pyramid built for an image: ``config.scales``, fewer where a side
    would drop below ``config.min_size``.

    Example:
        >>> pyramid_levels(DepthConfig(scales=7, min_size=8), 48, 64)
        3
    """
    levels = 1
    while levels < config.scales and min(height, width) // 2**levels >= config.min_size:
        levels += 1
    return levels


def solved_levels(config: DepthConfig, height: int, width: int, initial_depth: bool = False) -> int:
    """How many levels :func:`estimate_depth` solves (the length of ``loss_history`` and
    ``level_depths``): the pyramid's, or, when it starts from its plane sweep, the sweep's
    level and those finer.

    Example:
        >>> solved_levels(DepthConfig(scales=4, sweep_level=1), 240, 320)
        2
    """
    levels = pyramid_levels(config, height, width)
    if not initial_depth and config.initialisation == "plane_sweep":
        levels = min(levels, config.sweep_level + 1)
    return levels


def level_intrinsics(K: torch.Tensor, level: int) -> torch.Tensor:
    """``S K``: the camera matrices of level ``level`` of the centred pyramid.

    Example:
        >>> level_intrinsics(torch.eye(3)[None], 1)[0]
        tensor([[ 0.5000,  0.0000, -0.2500],
                [ 0.0000,  0.5000, -0.2500],
                [ 0.0000,  0.0000,  1.0000]])
    """
    s = 0.5**level
    S = torch.tensor([[s, 0.0, s / 2 - 0.5], [0.0, s, s / 2 - 0.5], [0.0, 0.0, 1.0]], dtype=K.dtype, device=K.device)
    return S @ K


def derive_depth_range(intrinsics: torch.Tensor, extrinsics: torch.Tensor, ref_index: int, width: int,
                       fraction: float) -> torch.Tensor:
    """``(B, 2)`` depth range from the cameras: the near depth is where the disparity to
    the nearest source reaches ``fraction * width`` pixels; the far one is 1000 times it."""
    N = intrinsics.shape[1]
    E_ref_inv = torch.linalg.inv(extrinsics[:, ref_index].double())
    f = intrinsics[:, ref_index, :2, :2].double().diagonal(dim1=-2, dim2=-1).abs().max(-1).values
    baselines = []
    for s in range(N):
        if s != ref_index:
            t = (extrinsics[:, s].double() @ E_ref_inv)[:, :3, 3]
            lateral = t[:, :2].norm(dim=-1)
            baselines.append(torch.where(lateral > 1e-9 * t.norm(dim=-1).clamp_min(1e-300), lateral, t.norm(dim=-1)))
    nearest = torch.stack(baselines, 1).min(1).values.clamp_min(1e-12)
    near = f * nearest / (fraction * width)
    return torch.stack([near, near * 1000.0], 1)


def _check_inputs(images: Any, intrinsics: Any, extrinsics: Any, ref_index: Any) -> None:
    for name, x in (("images", images), ("intrinsics", intrinsics), ("extrinsics", extrinsics)):
        check_tensor(x, name)
        check_floating(x, name)
    check_shape(images, ["B", "N", "C", "H", "W"], "images")
    B, N = images.shape[:2]
    check_shape(intrinsics, ["B", "N", 3, 3], "intrinsics")
    check_shape(extrinsics, ["B", "N", 4, 4], "extrinsics")
    for name, cams in (("intrinsics", intrinsics), ("extrinsics", extrinsics)):
        if cams.shape[:2] != (B, N):
            raise ShapeError(name, (B, N) + tuple(cams.shape[2:]), tuple(cams.shape),
                             f"{name}: expected batch and view sizes ({B}, {N}) (those of images), got {tuple(cams.shape[:2])}")
        check_same_device(cams, name, images, "images")
    if N < 2:
        raise ShapeError("images", ("B", "N >= 2", "C", "H", "W"), tuple(images.shape),
                         f"images: expected at least 2 views (a reference and a source), got {N}")
    if isinstance(ref_index, bool) or not isinstance(ref_index, int):
        raise ArgumentTypeError("ref_index", int, type(ref_index), f"ref_index: expected an int, got {type(ref_index).__name__}")
    if not 0 <= ref_index < N:
        raise ArgumentValueError("ref_index", f"0 <= ref_index < {N}", ref_index,
                                 f"ref_index: expected 0 <= ref_index < {N} (the number of views), got {ref_index}")
    if not torch.isfinite(images).all():
        raise ArgumentValueError("images", "finite", "non-finite values", "images: expected finite values")
    if not torch.isfinite(intrinsics).all():
        raise ArgumentValueError("intrinsics", "finite", "non-finite values", "intrinsics: expected finite values")
    det = torch.linalg.det(intrinsics.double())
    scale = intrinsics.double().abs().flatten(-2).amax(-1).clamp_min(1e-300) ** 3
    if not ((det.abs() > 1e-12 * scale).all()):
        raise ArgumentValueError("intrinsics", "invertible 3x3 matrices", "singular",
                                 "intrinsics: expected invertible camera matrices, got a singular one")
    if not torch.isfinite(extrinsics).all():
        raise ArgumentValueError("extrinsics", "finite", "non-finite values", "extrinsics: expected finite poses")
    det = torch.linalg.det(extrinsics.double()[..., :3, :3])
    if not (det.abs() > 1e-9).all():
        raise ArgumentValueError("extrinsics", "invertible poses", "singular", "extrinsics: expected invertible poses")


def _check_masks(masks: Any, images: torch.Tensor) -> torch.Tensor | None:
    if masks is None:
        return None
    check_tensor(masks, "masks")
    B, N, _, H, W = images.shape
    if masks.dim() == 4:
        masks = masks[:, :, None]
    if masks.dim() != 5 or masks.shape[0] not in (1, B) or masks.shape[1] != N or masks.shape[2] != 1 or masks.shape[-2:] != (H, W):
        raise ShapeError("masks", (B, N, 1, H, W), tuple(masks.shape),
                         f"masks: expected shape ({B}, {N}, 1, {H}, {W}) (one per view), got {tuple(masks.shape)}")
    check_same_device(masks, "masks", images, "images")
    return masks.expand(B, N, 1, H, W).to(images.dtype)


def _smoothness(inv: torch.Tensor, ref: torch.Tensor, order: int, gamma: float) -> torch.Tensor:
    """``(B,)`` edge-aware smoothness of ``inv`` normalised by its mean."""
    d = inv / inv.mean((1, 2, 3), keepdim=True).detach().clamp_min(1e-12)
    gx = (ref[..., :, 1:] - ref[..., :, :-1]).abs().mean(1, keepdim=True)
    gy = (ref[..., 1:, :] - ref[..., :-1, :]).abs().mean(1, keepdim=True)
    if order == 1:
        dx = (d[..., :, 1:] - d[..., :, :-1]).abs() * torch.exp(-gamma * gx)
        dy = (d[..., 1:, :] - d[..., :-1, :]).abs() * torch.exp(-gamma * gy)
    else:
        dx = (d[..., :, 2:] - 2 * d[..., :, 1:-1] + d[..., :, :-2]).abs()
        dy = (d[..., 2:, :] - 2 * d[..., 1:-1, :] + d[..., :-2, :]).abs()
        dx = dx * torch.exp(-gamma * torch.maximum(gx[..., :, 1:], gx[..., :, :-1]))
        dy = dy * torch.exp(-gamma * torch.maximum(gy[..., 1:, :], gy[..., :-1, :]))
    return dx.mean((1, 2, 3)) + dy.mean((1, 2, 3))


def _away_from_depth_edges(inv: torch.Tensor, jump: float, radius: int = 2) -> torch.Tensor:
    """``(B, 1, h, w)`` bool: pixels farther than ``radius`` from a depth edge of ``inv``,
    an edge being a relative inverse-depth step above ``jump`` between 4-neighbours of
    its 5x5 median (so that isolated outliers of a sweep are not edges)."""
    g = median_blur(inv, 5)
    edge = torch.zeros_like(g, dtype=torch.bool)
    for dim in (-1, -2):
        n = g.shape[dim]
        a, b = g.narrow(dim, 1, n - 1), g.narrow(dim, 0, n - 1)
        step = (a - b).abs() > jump * torch.minimum(a, b)
        edge.narrow(dim, 1, n - 1).logical_or_(step)
        edge.narrow(dim, 0, n - 1).logical_or_(step)
    near = F.max_pool2d(edge.to(inv.dtype), 2 * radius + 1, 1, radius)
    return near == 0


class _Level:
    """The photometric problem of one pyramid level."""

    def __init__(self, views: torch.Tensor, masks: torch.Tensor | None, K: torch.Tensor, poses: list[torch.Tensor],
                 ref_index: int, cfg: DepthConfig) -> None:
        self.views, self.masks, self.K, self.poses, self.ref_index, self.cfg = views, masks, K, poses, ref_index, cfg
        self.ref = views[:, ref_index]
        self.sources = [s for s in range(views.shape[1]) if s != ref_index]

    def photometric(self, inv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cost (B,1,h,w), count (B,1,h,w))``: the source-averaged cost and how many see each pixel."""
        cfg, ref = self.cfg, self.ref
        depth = 1.0 / inv.clamp_min(1e-12)
        total = torch.zeros_like(inv)
        count = torch.zeros_like(inv)
        best = torch.full_like(inv, 1e4)
        costs: list[torch.Tensor] = []
        seens: list[torch.Tensor] = []
        for s, pose in zip(self.sources, self.poses):
            source = self.views[:, s] if self.masks is None else torch.cat([self.views[:, s], self.masks[:, s].detach()], 1)
            # One warp for the image and its mask (the projection is most of a warp's cost).
            warped, seen = depth_warp(source, depth, self.K[:, self.ref_index], self.K[:, s], pose, padding_mode="border")
            w = seen.to(inv.dtype)
            channels = None  # per-channel weights (B, C, h, w) where masks make channels unusable
            if self.masks is not None:
                C = self.views.shape[2]
                warped, m = warped[:, :C], warped[:, C:].detach()  # a mask is thresholded: no gradient through it
                channels = (w * (m > 0.5).to(inv.dtype) * (self.masks[:, self.ref_index] > 0.5).to(inv.dtype)).expand_as(warped)
                w = (channels.sum(1, keepdim=True) > 0).to(inv.dtype)
            if cfg.normalise_gain:
                with torch.no_grad():
                    wc = w.expand_as(warped) if channels is None else channels
                    n = wc.sum((1, 2, 3), keepdim=True).clamp_min(1.0)
                    mr = (ref * wc).sum((1, 2, 3), keepdim=True) / n
                    ms = (warped * wc).sum((1, 2, 3), keepdim=True) / n
                    sr = (((ref - mr) ** 2) * wc).sum((1, 2, 3), keepdim=True) / n
                    ss = (((warped - ms) ** 2) * wc).sum((1, 2, 3), keepdim=True) / n
                    gain = (sr.sqrt() / ss.sqrt().clamp_min(1e-6)).clamp(0.2, 5.0)
                warped = (warped - ms) * gain + mr
            if channels is None:
                l1 = (warped - ref).abs().mean(1, keepdim=True)
            else:
                per_pixel = channels.sum(1, keepdim=True).clamp_min(1.0)
                l1 = ((warped - ref).abs() * channels).sum(1, keepdim=True) / per_pixel
            if cfg.alpha > 0:
                sim = ssim(warped, ref, cfg.ssim_window, sigma=cfg.ssim_window / 4.0)
                sim = sim.mean(1, keepdim=True) if channels is None else (sim * channels).sum(1, keepdim=True) / per_pixel
                cost = cfg.alpha * (1 - sim) / 2 + (1 - cfg.alpha) * l1
            else:
                cost = l1
            if cfg.aggregation == "min":
                best = torch.where(w > 0, torch.minimum(best, cost), best)
            elif cfg.aggregation == "softmin":
                costs.append(cost)
                seens.append(w)
            else:
                total = total + cost * w
            count = count + w
        if cfg.aggregation == "min":
            return torch.where(count > 0, best, torch.zeros_like(best)), count
        if cfg.aggregation == "softmin":
            # Weights softmax(-cost / T) over the sources that see the pixel (not
            # differentiated): the mean where the sources agree, the best one where one
            # of them is occluded and its cost stands out.
            stacked, seen = torch.stack(costs), torch.stack(seens)
            with torch.no_grad():
                logits = torch.where(seen > 0, -stacked / cfg.softmin_temperature, torch.full_like(stacked, -1e30))
                weights = torch.softmax(logits, 0) * seen
            return (weights * stacked).sum(0), count
        return total / count.clamp_min(1.0), count

    def loss(self, inv: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the level's loss."""
        cost, count = self.photometric(inv)
        seen = (count > 0).to(inv.dtype)
        photo = (cost * seen).sum((1, 2, 3)) / seen.sum((1, 2, 3)).clamp_min(1.0)
        if self.cfg.smoothness > 0:
            photo = photo + self.cfg.smoothness * _smoothness(inv, self.ref, self.cfg.smoothness_order, self.cfg.edge_gamma)
        return photo


def _narrow_range(views: torch.Tensor, K: torch.Tensor, E: torch.Tensor, ref_index: int, rng: torch.Tensor,
                  level: int, planes: int) -> torch.Tensor:
    """``(B, 2)`` the depth range of a quick sweep two levels coarser than ``level``
    (:func:`_quick_sweep`'s range)."""
    return _quick_sweep(views, K, E, ref_index, rng, level, planes)[0]


def _quick_sweep(views: torch.Tensor, K: torch.Tensor, E: torch.Tensor, ref_index: int, rng: torch.Tensor,
                 level: int, planes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(range (B, 2), depth (B, 1, h, w), valid (B, 1, h, w))`` of a quick sweep two levels
    coarser than ``level`` (``views`` are that level's, ``(B, N, C, h, w)``).

    The range: the sweep's 2nd and 98th inverse-depth percentiles over the pixels it sees,
    widened by half their span and by two of its planes on each side, within ``rng``. The
    depth and the pixels it sees, upsampled (nearest) to ``views``' size."""
    B, N, C = views.shape[:3]
    extra = 2
    small = build_centred_pyramid(views.reshape(B * N, C, *views.shape[-2:]), extra + 1, 0.8)[-1]
    small = small.view(B, N, C, *small.shape[-2:])
    sweep = plane_sweep(small, level_intrinsics(K, level + extra), E, ref_index, depth_range=rng, planes=planes,
                        window=3, aggregation="min", shiftable=True)
    inv_lo, inv_hi = 1.0 / rng[:, 1], 1.0 / rng[:, 0]
    step = (inv_hi - inv_lo) / (planes - 1)
    seen = sweep.valid.flatten(1)
    inv = torch.where(seen, 1.0 / sweep.depth.flatten(1).to(rng.dtype), torch.full_like(seen, math.nan, dtype=rng.dtype))
    q = torch.nanquantile(inv, torch.tensor([0.02, 0.98], dtype=rng.dtype, device=rng.device), dim=1)  # (2, B)
    span = q[1] - q[0]
    low = torch.maximum(q[0] - 0.5 * span - 2 * step, inv_lo)
    high = torch.minimum(q[1] + 0.5 * span + 2 * step, inv_hi)
    # Too few pixels seen, or an empty interval: keep the range given.
    keep = (seen.sum(1) >= 16) & (high > low)
    out = torch.where(keep[:, None], torch.stack([1.0 / high, 1.0 / low], 1), rng)
    size = tuple(views.shape[-2:])
    depth = F.interpolate(torch.where(sweep.valid, sweep.depth, torch.ones_like(sweep.depth)), size=size, mode="nearest")
    valid = F.interpolate(sweep.valid.to(views.dtype), size=size, mode="nearest") > 0.5
    return out, depth, valid


def _correspondence_gains(views: torch.Tensor, masks: torch.Tensor | None, K: torch.Tensor, poses: list[torch.Tensor],
                          ref_index: int, depth: torch.Tensor, valid: torch.Tensor,
                          min_pixels: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gain, bias)``, each ``(B, N, 1, 1, 1)``: the affine map ``gain * view + bias`` that
    matches each source's mean and std to the reference's over the reference pixels that
    ``depth`` puts in correspondence with it (seen, ``valid``, away from depth edges, and
    usable in both views by ``masks``: clipped values are censored, so they must not enter
    the moments). The source is sampled at the nearest pixel: bilinear interpolation would
    lower its std and bias the gain up. A source with fewer than ``min_pixels`` such pixels
    keeps ``(1, 0)``; the reference is ``(1, 0)``."""
    B, N, C, h, w = views.shape
    gain = torch.ones(B, N, 1, 1, 1, dtype=views.dtype, device=views.device)
    bias = torch.zeros_like(gain)
    depth = depth.clamp_min(1e-12)
    ok = valid & _away_from_depth_edges(1.0 / depth, 0.2, 1)
    ref = views[:, ref_index]
    ref_ok = ok.expand_as(ref) if masks is None else ok & (masks[:, ref_index] > 0.999).expand_as(ref)
    sources = [s for s in range(N) if s != ref_index]
    for s, pose in zip(sources, poses):
        src = views[:, s] if masks is None else torch.cat([views[:, s], masks[:, s].expand(B, C, h, w)], 1)
        warped, seen = depth_warp(src, depth, K[:, ref_index], K[:, s], pose, mode="nearest", padding_mode="border")
        use = ref_ok & seen
        if masks is not None:
            warped, usable = warped[:, :C], warped[:, C:]
            use = use & (usable > 0.999)
        m = use.to(views.dtype)
        n = m.sum((1, 2, 3), keepdim=True)
        mr = (ref * m).sum((1, 2, 3), keepdim=True) / n.clamp_min(1.0)
        ms = (warped * m).sum((1, 2, 3), keepdim=True) / n.clamp_min(1.0)
        sr = (((ref - mr) ** 2) * m).sum((1, 2, 3), keepdim=True) / n.clamp_min(1.0)
        ss = (((warped - ms) ** 2) * m).sum((1, 2, 3), keepdim=True) / n.clamp_min(1.0)
        g = (sr.sqrt() / ss.sqrt().clamp_min(1e-6)).clamp(0.2, 5.0)
        enough = (n >= min_pixels) & (ss > 1e-12)
        gain[:, s] = torch.where(enough, g, torch.ones_like(g))
        bias[:, s] = torch.where(enough, mr - g * ms, torch.zeros_like(mr))
    return gain, bias


def _to_param(inv: torch.Tensor, unit: torch.Tensor, kind: str) -> torch.Tensor:
    """The optimised variable: inverse depth, depth or log depth in units of ``unit``
    (a typical inverse depth of the problem, so that a step of ``lr`` is relative)."""
    x = inv / unit
    if kind == "inverse_depth":
        return x
    if kind == "depth":
        return 1.0 / x
    return -torch.log(x)


def _from_param(theta: torch.Tensor, unit: torch.Tensor, kind: str, bounds: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The inverse depth of ``theta``, clamped to ``bounds`` (``(B, 1, 1, 1)`` inverse depths)."""
    if kind == "inverse_depth":
        x = theta
    elif kind == "depth":
        x = 1.0 / theta.clamp_min(torch.finfo(theta.dtype).tiny)
    else:
        x = torch.exp(-theta)
    return torch.minimum(torch.maximum(x * unit, bounds[0]), bounds[1])


def estimate_depth(
    images: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    ref_index: int = 0,
    *,
    depth_range: tuple[float, float] | torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    initial_depth: torch.Tensor | None = None,
    config: DepthConfig | None = None,
    callback: ProgressCallback | None = None,
    **overrides: Any,
) -> DepthResult:
    """Depth of the reference view of each of ``B`` multi-view problems.

    Args:
        images: ``(B, N, C, H, W)`` floating views in ``[0, 1]``, ``N >= 2``.
        intrinsics: ``(B, N, 3, 3)`` camera matrices.
        extrinsics: ``(B, N, 4, 4)`` world-to-camera transforms.
        ref_index: the reference view.
        depth_range: ``(min, max)`` or ``(B, 2)``; by default derived from the cameras
            (:func:`derive_depth_range`).
        masks: optional ``(B, N, 1, H, W)`` (or ``(B, N, H, W)``) weights; pixels below 0.5 are ignored.
        initial_depth: optional ``(B, 1, H, W)`` start (replaces the initialisation).
        config: a :class:`~gradcv.depth.config.DepthConfig` (default ``DepthConfig.default()``).
        callback: optional ``callback(level, iteration, loss)``.
        **overrides: config fields to change for this call.

    Returns:
        A :class:`DepthResult`.

    Raises:
        ShapeError, ArgumentTypeError, ArgumentValueError: naming the argument.

    Example:
        >>> K = torch.tensor([[8.0, 0.0, 7.5], [0.0, 8.0, 5.5], [0.0, 0.0, 1.0]]).expand(1, 2, 3, 3)
        >>> E = torch.eye(4).repeat(1, 2, 1, 1); E[0, 1, 0, 3] = -0.5
        >>> img = torch.rand(1, 2, 1, 12, 16)
        >>> estimate_depth(img, K, E, scales=1, iterations=2, planes=4).depth.shape
        torch.Size([1, 1, 12, 16])
    """
    start = time.perf_counter()
    cfg = DepthConfig.default() if config is None else config
    if not isinstance(cfg, DepthConfig):
        raise ArgumentTypeError("config", DepthConfig, type(cfg), f"config: expected a DepthConfig, got {type(cfg).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    _check_inputs(images, intrinsics, extrinsics, ref_index)
    B, N, C, H, W = images.shape
    dtype, device = images.dtype, images.device
    work = torch.float64 if dtype == torch.float64 else torch.float32
    masks = _check_masks(masks, images)
    if cfg.saturation > 0:
        # Clipped pixels carry no texture: their data term is dropped and smoothness (and
        # the sweep's SGM) fills them from their neighbours.
        with torch.no_grad():
            clipped = (images >= 1.0 - cfg.saturation) | (images <= cfg.saturation)
        if float(clipped.float().mean()) > 1e-3:  # a few stray values are not worth the masked path's cost
            usable = (~clipped).to(images.dtype)  # per channel: a clipped channel is dropped, not the pixel
            masks = usable if masks is None else masks * usable
    if depth_range is None:
        rng = derive_depth_range(intrinsics, extrinsics, ref_index, W, cfg.disparity_fraction).to(work)
    else:
        near, far = _depth_range(depth_range, B, images.to(work))
        rng = torch.stack([near, far], 1)
    scale = (1.0 / rng[:, 0]).view(B, 1, 1, 1).to(dtype)  # the largest inverse depth
    lo = (rng[:, 0] / rng[:, 1]).view(B, 1, 1, 1).to(dtype)  # the smallest normalised inverse depth

    levels = pyramid_levels(cfg, H, W)
    flat = images.reshape(B * N, C, H, W)
    if cfg.image_sigma > 0:
        k = 2 * math.ceil(3 * cfg.image_sigma) + 1
        flat = gaussian_blur2d(flat, (k, k), (cfg.image_sigma, cfg.image_sigma), border_type="replicate")
    view_pyr = [p.view(B, N, C, *p.shape[-2:]) for p in build_centred_pyramid(flat, levels, cfg.blur_sigma)]
    mask_pyr = None
    if masks is not None:
        Cm = masks.shape[2]
        mask_pyr = [p.view(B, N, Cm, *p.shape[-2:]) for p in build_centred_pyramid(masks.reshape(B * N, Cm, H, W), levels, 0.0)]
    E_ref_inv = torch.linalg.inv(extrinsics[:, ref_index].to(work))
    poses = [(extrinsics[:, s].to(work) @ E_ref_inv).to(dtype) for s in range(N) if s != ref_index]
    sizes = [(int(p.shape[-2]), int(p.shape[-1])) for p in view_pyr]

    # Initial inverse depth, at the coarsest level solved (the sweep's level when the
    # initialisation is a plane sweep: the levels above it would only blur its edges).
    if initial_depth is None and cfg.initialisation == "plane_sweep":
        levels = solved_levels(cfg, H, W)
        view_pyr, sizes = view_pyr[:levels], sizes[:levels]
        if mask_pyr is not None:
            mask_pyr = mask_pyr[:levels]
    hc, wc = sizes[-1]
    if initial_depth is not None:
        check_tensor(initial_depth, "initial_depth")
        check_shape(initial_depth, [B, 1, H, W], "initial_depth")
        check_same_device(initial_depth, "initial_depth", images, "images")
        if not (torch.isfinite(initial_depth).all() and (initial_depth > 0).all()):
            raise ArgumentValueError("initial_depth", "finite > 0", "other", "initial_depth: expected finite positive depths")
        inv0 = F.interpolate(1.0 / initial_depth.to(dtype), size=(hc, wc), mode="area")
    elif cfg.initialisation == "plane_sweep":
        sweep_views = view_pyr[-1]
        if cfg.normalise_gain:  # the sweep's absolute difference is not robust to gain: match whole images
            mu = sweep_views.mean((2, 3, 4), keepdim=True)
            sd = sweep_views.std((2, 3, 4), keepdim=True).clamp_min(1e-6)
            sweep_views = (sweep_views - mu) / sd * sd[:, ref_index : ref_index + 1] + mu[:, ref_index : ref_index + 1]
        sweep_range = rng
        if cfg.range_planes > 0 and min(sizes[-1]) >= 16:
            sweep_range, coarse, seen = _quick_sweep(sweep_views, intrinsics.to(dtype), extrinsics.to(dtype), ref_index,
                                                     rng, levels - 1, cfg.range_planes)
            if cfg.normalise_gain:
                # Whole-image moments are biased by clipping and by what each view alone
                # sees; the quick sweep's correspondences refine them (on a bright clipped
                # reference they were 2 % off the true gain, enough to move the sweep's
                # plane choice).
                gain, bias = _correspondence_gains(
                    sweep_views, None if mask_pyr is None else mask_pyr[levels - 1],
                    level_intrinsics(intrinsics.to(dtype), levels - 1), poses, ref_index, coarse, seen)
                sweep_views = sweep_views * gain + bias
        sgm = (cfg.sgm_p1, cfg.sgm_p2) if cfg.sgm_p2 > 0 else None
        sweep = plane_sweep(sweep_views, level_intrinsics(intrinsics.to(dtype), levels - 1), extrinsics.to(dtype),
                            ref_index, depth_range=sweep_range, planes=cfg.planes, window=cfg.sweep_window,
                            aggregation="min", shiftable=True, subpixel=True, sgm=sgm,
                            masks=None if mask_pyr is None else mask_pyr[levels - 1])
        inv0 = torch.where(sweep.valid, 1.0 / sweep.depth.clamp_min(1e-12), 0.5 * scale * (1 + lo))
    elif cfg.initialisation == "constant":
        inv0 = (0.5 * scale * (1 + lo)).expand(B, 1, hc, wc)
    else:
        g = torch.Generator(device="cpu").manual_seed(cfg.seed)
        u = torch.rand(B, 1, hc, wc, generator=g, dtype=dtype).to(device)
        inv0 = scale * (lo + (1 - lo) * u)
    inv0 = torch.minimum(torch.maximum(inv0.to(dtype), lo * scale), scale.expand_as(inv0))
    bounds = (lo * scale, scale)
    # The parameter's unit: each problem's median initial inverse depth, so that lr is a relative step.
    unit = inv0.flatten(1).median(1).values.view(B, 1, 1, 1).clamp_min(1e-12)

    histories: list[torch.Tensor] = []
    steps_used: list[torch.Tensor] = []
    stopped_last = torch.zeros(B, dtype=torch.bool, device=device)
    criteria = StoppingCriteria(tolerance=cfg.tolerance, patience=cfg.patience)
    opt_kwargs = {"momentum": cfg.momentum} if cfg.optimizer == "SGD" else {}

    def solve(inv: torch.Tensor, level: PyramidLevel) -> torch.Tensor:
        nonlocal stopped_last
        at = 0 if cfg.full_resolution_loss else level.level
        problem = _Level(view_pyr[at], None if mask_pyr is None else mask_pyr[at],
                         level_intrinsics(intrinsics.to(dtype), at), poses, ref_index, cfg)
        full_size = (H, W) if at != level.level else None
        base = _to_param(inv.detach(), unit, cfg.parameterisation)
        h, w = base.shape[-2:]
        # The step is a sum of corrections at this level's size and `correction_levels`
        # coarser ones, bilinearly upsampled: a low-frequency error moves as fast as a
        # pixel's (a pyramid parameterisation; 0: one value per pixel).
        thetas = [torch.zeros(B, 1, -(-h // 2**j), -(-w // 2**j), dtype=dtype, device=device, requires_grad=True)
                  for j in range(cfg.correction_levels + 1)]

        # Coarser corrections stop short of the start's depth edges: upsampled, they would
        # move both sides of an edge together and widen the foreground into a halo.
        gate = None
        if cfg.correction_gate > 0 and cfg.correction_levels > 0:
            gate = _away_from_depth_edges(inv.detach(), cfg.correction_gate).to(dtype)

        def param() -> torch.Tensor:
            x = base + thetas[0]
            for t in thetas[1:]:
                up = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
                x = x + (up if gate is None else up * gate)
            return x

        opt = make_optimizer(thetas, cfg.optimizer, cfg.lr, opt_kwargs)
        stop = PerSampleStopping(criteria, B, device)
        iterations = cfg.iterations_at(level.index, level.count)
        losses: list[torch.Tensor] = []
        previous = torch.full((B,), math.inf, dtype=dtype, device=device)
        for it in range(iterations):
            set_learning_rate(opt, scheduled_learning_rate(cfg.lr_schedule, cfg.lr, it, iterations))
            before = [t.detach().clone() for t in thetas]
            opt.zero_grad(set_to_none=True)
            current = _from_param(param(), unit, cfg.parameterisation, bounds)
            if full_size is not None:
                current = F.interpolate(current, size=full_size, mode="bilinear", align_corners=False)
            loss = problem.loss(current)
            loss.sum().backward()
            for t in thetas:
                t.grad = torch.where(torch.isfinite(t.grad), t.grad, torch.zeros_like(t.grad))
            opt.step()
            active = stop.active
            with torch.no_grad():
                for t, b in zip(thetas, before):
                    t.copy_(keep_stopped(t, b, active))
            losses.append(loss.detach())
            if callback is not None:
                callback(level.index, it, loss.detach())
            stop.update(relative_change(previous, loss.detach()))
            previous = loss.detach()
        histories.append(pad_history(losses, stop.steps, iterations))
        steps_used.append(stop.steps)
        stopped_last = ~stop.active
        with torch.no_grad():
            return _from_param(param(), unit, cfg.parameterisation, bounds)

    invs = coarse_to_fine(inv0, sizes, solve, carry_upsampled)
    inv = invs[-1]
    with torch.no_grad():
        final = _Level(view_pyr[0], None if mask_pyr is None else mask_pyr[0], intrinsics.to(dtype), poses, ref_index, cfg)
        cost, count = final.photometric(inv)
        ref = images[:, ref_index]
        mean = box_blur(ref, 7, border_type="replicate")
        spread = (box_blur(ref * ref, 7, border_type="replicate") - mean * mean).clamp_min(0).sqrt().amax(1, keepdim=True)
        seen = count > 0
        valid = seen & (cost < cfg.residual_threshold) & (spread >= cfg.min_texture) & torch.isfinite(inv)
        cost = torch.where(seen, cost, torch.full_like(cost, math.inf))
        depth = 1.0 / inv
        finite = torch.isfinite(depth).flatten(1).all(1)
        degenerate = valid.flatten(1).float().mean(1) < 0.05
    return DepthResult(
        loss_history=histories,
        iterations_used=torch.stack(steps_used),
        wall_time=time.perf_counter() - start,
        status=sample_status(stopped_last, degenerate=degenerate, finite=finite),
        depth=depth,
        valid=valid,
        cost=cost,
        depth_range=rng.to(dtype),
        level_depths=[1.0 / v for v in invs],
        initial_depth=1.0 / inv0,
    )
