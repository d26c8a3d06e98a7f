"""Multi-scale homography registration by gradient descent on a photometric loss.

The problem: find, for each of ``B`` independent pairs, the homography ``H`` with
``warp_perspective(src, H, (h, w)) ≈ dst``. The solver warps ``src`` into ``dst``'s frame
through a differentiable sampling grid, compares it to ``dst`` over the pixels whose source
lies inside the image (a weight map, never ``masked_select``), and moves the motion
parameters coarse to fine over the centred pyramid (:func:`gradcv.optim.coarse_to_fine`):
by default with Levenberg–Marquardt (ESM steps, :mod:`gradcv.registration.second_order`)
after a 9-start search at the coarsest level (:mod:`gradcv.registration.search`); with
``method='first_order'`` by any ``torch.optim`` or ``torch_optimizer`` optimiser
(:mod:`gradcv.registration.first_order`).

Modules, each importing only those above it: ``config`` and ``motion``; ``sampling``;
``objective``; ``first_order`` and ``second_order``; ``search``; ``checks``; this one.

Convention:
    The parameters live in the isotropic normalised frame of the full image
    (:mod:`gradcv.registration.sampling`), which means the same place at every level of
    the centred pyramid, so they carry over unchanged. The solver optimises ``G``, the
    homography taking ``dst`` frame points to ``src`` frame points (the direction
    sampling needs, so no inverse in the loop); the result is reported as pixel
    ``H = A^-1 G^-1 A`` (``src`` to ``dst``, as ``cv2.warpPerspective``), and also in the
    library's edge-to-edge normalised coordinates.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from gradcv.core_ops.geometry import normalize_homography
from gradcv.core_ops.pyramid import build_centred_pyramid
from gradcv.optim import ProgressCallback, PyramidLevel, SolverResult, SolverStatus, carry_unchanged, coarse_to_fine, sample_status
from gradcv.registration.checks import check_images, check_initial, check_mask, spread
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.motion import motion_matrix, motion_parameters
from gradcv.registration.objective import LevelOutcome, LevelProblem, erode, masked_weight
from gradcv.registration.sampling import LevelGrid, frame_corners, frame_matrix, pixel_homography, project_corners
from gradcv.registration.search import search_level, solve_level
from gradcv.registration.uncertainty import corner_uncertainty

#: A pair whose final warp keeps no more than this fraction of the pixels inside the
#: source cannot be judged: its status is DEGENERATE_INPUT.
MIN_FINAL_OVERLAP = 0.05
#: The rescue's starts span this many times ``search_range``.
RESCUE_RANGE = 1.5
#: A rescue result must keep at least this fraction of the pixels in view (a warp that
#: shrinks the overlap to a sliver fits it trivially).
RESCUE_OVERLAP = 0.25
#: Rescue results whose corners agree to this many pixels count as the same optimum.
RESCUE_AGREEMENT = 1.0


@dataclass
class RegistrationResult(SolverResult):
    """What :func:`register_homography` found (and, from :class:`gradcv.optim.SolverResult`,
    ``loss_history`` per level ``(B, iterations)`` NaN-padded, ``iterations_used (levels,
    B)``, ``wall_time``, ``status (B,)`` and ``converged``).

    Attributes:
        homography: ``(B, 3, 3)`` pixel homographies taking ``src`` pixels to ``dst``
            pixels, ``H[2, 2] = 1``: ``warp_perspective(src, homography, (H, W)) ≈ dst``.
        homography_normalized: the same in edge-to-edge normalised coordinates
            (:func:`gradcv.core_ops.geometry.normalize_homography`).
        homography_per_level: the pixel homography after each level, coarse to fine.

    ``status`` is ``CONVERGED`` where the pair met the stopping tolerance at the finest
    level, ``DEGENERATE_INPUT`` where ``src`` or ``dst`` has no texture, the warp keeps
    no overlap, or the final residual leaves the corners uncertain by more than
    ``config.max_uncertainty`` pixels (:mod:`gradcv.registration.uncertainty`: what a
    near-textureless pair that ended at a wrong optimum shows), ``DIVERGED`` where the
    homography is not finite, ``ITERATION_LIMIT`` otherwise.
    """

    homography: torch.Tensor
    homography_normalized: torch.Tensor
    homography_per_level: list[torch.Tensor]


class HomographyRegistration:
    """The solver: a config, and :meth:`register` to run it on a batch of pairs.

    Args:
        config: a :class:`RegistrationConfig` (default: ``RegistrationConfig()``).
        **overrides: fields of the config to change (``levels=2``...).

    Example:
        >>> x = torch.rand(1, 1, 64, 64)
        >>> reg = HomographyRegistration(RegistrationConfig(levels=2, iterations=5))
        >>> reg.register(x, x).homography.shape
        torch.Size([1, 3, 3])
    """

    def __init__(self, config: RegistrationConfig | None = None, **overrides: Any) -> None:
        config = RegistrationConfig() if config is None else config
        if not isinstance(config, RegistrationConfig):
            raise TypeError(f"config: expected a RegistrationConfig, got {type(config).__name__}")
        self.config = config.replace(**overrides) if overrides else config
        self.config.validate()

    def register(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        *,
        src_mask: torch.Tensor | None = None,
        dst_mask: torch.Tensor | None = None,
        initial_homography: torch.Tensor | None = None,
        callback: ProgressCallback | None = None,
    ) -> RegistrationResult:
        """Register every ``src[b]`` onto ``dst[b]``.

        Args:
            src: ``(B, C, H, W)`` floating images.
            dst: the same shape, dtype and device.
            src_mask, dst_mask: optional ``(B, 1, H, W)`` (or ``(1, 1, H, W)``) weights in
                [0, 1] of the pixels to register (0: ignore, for instance a moving object);
                ``src_mask`` travels with ``src`` through the warp. The pyramid carries
                them down as box averages.
            initial_homography: optional ``(3, 3)`` or ``(B, 3, 3)`` start, in pixel
                coordinates, mapping ``src`` pixels to ``dst`` pixels.
            callback: optional ``callback(level, iteration, loss_per_pair)``
                (:class:`gradcv.optim.ProgressCallback`), called after every step with the
                ``(B,)`` losses; ``level`` counts from 0 at the coarsest.

        Returns:
            A :class:`RegistrationResult`. With ``config.differentiable`` its homographies
            are on the autograd graph of the inputs.

        Raises:
            TypeError, ValueError: naming the offending argument.
        """
        start = time.perf_counter()
        cfg = self.config
        check_images(src, dst, cfg.levels, cfg.min_size)
        B, _, H, W = src.shape
        dtype, device = src.dtype, src.device
        A = frame_matrix(H, W, torch.float64, device)
        corners = frame_corners(H, W, dtype, device)
        theta = self._initial_parameters(initial_homography, src, A, corners)
        src_pyr = build_centred_pyramid(src, cfg.levels, cfg.blur_sigma)
        dst_pyr = build_centred_pyramid(dst, cfg.levels, cfg.blur_sigma)
        mask_pyr = self._mask_pyramid(src_mask, dst_mask, src)
        outcomes: list[LevelOutcome] = []

        def solve(theta: torch.Tensor, level: PyramidLevel) -> torch.Tensor:
            masks = None if mask_pyr is None else mask_pyr[level.level]
            problem = LevelProblem(
                LevelGrid(level.level, (H, W), level.size, dtype, device),
                src_pyr[level.level], dst_pyr[level.level], corners, masks, level, cfg.motion,
            )
            searching = level.is_coarsest and cfg.search_steps > 0 and cfg.search_range > 0
            outcome = (search_level if searching else solve_level)(problem, theta, cfg, callback)
            outcomes.append(outcome)
            return outcome.theta

        sizes = [(int(p.shape[-2]), int(p.shape[-1])) for p in src_pyr]
        thetas = coarse_to_fine(theta, sizes, solve, carry_unchanged)
        if not cfg.differentiable:
            thetas = [t.detach() for t in thetas]
        masks = None if mask_pyr is None else mask_pyr[0]
        judged = self._judge(src, dst, thetas[-1], corners, masks)
        stopped = outcomes[-1].stopped
        if cfg.rescue_steps > 0 and cfg.search_range > 0 and not cfg.differentiable:
            thetas[-1], stopped, judged = self._rescue(
                src, dst, src_mask, dst_mask, initial_homography, thetas[-1], stopped, judged, A, corners
            )
        per_level = [pixel_homography(motion_matrix(cfg.motion, t, corners), A, dtype) for t in thetas]
        homography = per_level[-1]
        return RegistrationResult(
            loss_history=[o.history for o in outcomes],
            iterations_used=torch.stack([o.steps for o in outcomes]),
            wall_time=time.perf_counter() - start,
            status=self._status(judged, homography, stopped),
            homography=homography,
            homography_normalized=normalize_homography(homography, (H, W), (H, W)),
            homography_per_level=per_level,
        )

    def _initial_parameters(
        self, initial_homography: torch.Tensor | None, src: torch.Tensor, A: torch.Tensor, corners: torch.Tensor
    ) -> torch.Tensor:
        """``theta (B, k)`` of the start (the identity unless ``initial_homography``)."""
        B, device = src.shape[0], src.device
        if initial_homography is None:
            G0 = torch.eye(3, dtype=torch.float64, device=device).expand(B, 3, 3)
        else:
            H0 = check_initial(initial_homography, B, src)
            G0 = A @ torch.linalg.inv(H0) @ torch.linalg.inv(A)
        return motion_parameters(self.config.motion, G0, corners).to(src.dtype).contiguous()

    def _mask_pyramid(
        self, src_mask: torch.Tensor | None, dst_mask: torch.Tensor | None, src: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per level, fine to coarse, ``(src_mask, eroded dst_mask)`` or ``None``."""
        if src_mask is None and dst_mask is None:
            return None
        ones = torch.ones_like(src[:, :1])
        s = ones if src_mask is None else check_mask(src_mask, "src_mask", src)
        d = ones if dst_mask is None else check_mask(dst_mask, "dst_mask", src)
        # Box averages only (sigma 0): a mask level is the fraction of valid pixels under it.
        levels = self.config.levels
        return [(sl, erode(dl)) for sl, dl in zip(build_centred_pyramid(s, levels, 0.0), build_centred_pyramid(d, levels, 0.0))]

    def _judge(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        theta: torch.Tensor,
        corners: torch.Tensor,
        masks: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(textured, overlap, uncertainty)`` of the final ``theta``, each ``(B,)``. The
        overlap is the share of the image's pixels the final warp compares: inside the
        source and, with masks, weighted by ``dst_mask`` and the warped ``src_mask`` (the
        loss's own weights); the same weights measure the corners' uncertainty
        (not computed, and reported as zero, where ``config.max_uncertainty`` is ``inf``)."""
        cfg = self.config
        H, W = src.shape[-2:]
        with torch.no_grad():
            textured = (spread(src) >= cfg.min_texture) & (spread(dst) >= cfg.min_texture)
            G = motion_matrix(cfg.motion, theta.detach(), corners)
            grid = LevelGrid(0, (H, W), (H, W), src.dtype, src.device)
            _, weight = grid.sample(src, G)
            weight = masked_weight(grid, weight, G, masks)
            overlap = weight.flatten(1).mean(1)
            if cfg.max_uncertainty == math.inf:
                uncertainty = torch.zeros_like(overlap)
            else:
                uncertainty = corner_uncertainty(grid, src, dst, G, weight, corners, cfg.motion, cfg.photometric)
        return textured, overlap, uncertainty

    def _status(
        self, judged: tuple[torch.Tensor, torch.Tensor, torch.Tensor], homography: torch.Tensor, stopped: torch.Tensor
    ) -> torch.Tensor:
        """The ``(B,)`` :class:`gradcv.optim.SolverStatus` codes: DEGENERATE_INPUT without
        texture, overlap (:data:`MIN_FINAL_OVERLAP`) or a determined result
        (``config.max_uncertainty``)."""
        textured, overlap, uncertainty = judged
        with torch.no_grad():
            finite = torch.isfinite(homography).flatten(1).all(1)
            ok = textured & (overlap > MIN_FINAL_OVERLAP) & (uncertainty <= self.config.max_uncertainty)
        return sample_status(stopped, degenerate=~ok, finite=finite)

    def _rescue(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        src_mask: torch.Tensor | None,
        dst_mask: torch.Tensor | None,
        initial_homography: torch.Tensor | None,
        theta: torch.Tensor,
        stopped: torch.Tensor,
        judged: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        A: torch.Tensor,
        corners: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The pairs left undetermined solved again from a grid of translations (see
        ``config.rescue_steps``); each takes the determined result that the most starts
        agree on (at least two), and keeps its own where there is none. One look at the
        host: nothing more happens when every pair is determined."""
        cfg = self.config
        textured, overlap, uncertainty = judged
        finite = torch.isfinite(theta).all(1)
        redo = (textured & finite & (uncertainty > cfg.max_uncertainty)).nonzero()[:, 0]
        if redo.numel() == 0:
            return theta, stopped, judged
        n, B, device = cfg.rescue_steps, src.shape[0], src.device
        K = (2 * n + 1) ** 2
        ticks = torch.linspace(-1.0, 1.0, 2 * n + 1, dtype=torch.float64, device=device) * RESCUE_RANGE * cfg.search_range
        ty, tx = torch.meshgrid(ticks, ticks, indexing="ij")
        shifts = torch.eye(3, dtype=torch.float64, device=device).repeat(K, 1, 1)
        shifts[:, 0, 2], shifts[:, 1, 2] = tx.flatten(), ty.flatten()
        start = torch.eye(3, dtype=torch.float64, device=device).expand(B, 3, 3)
        if initial_homography is not None:
            start = check_initial(initial_homography, B, src).detach()
        starts = (shifts[None] @ start[redo][:, None]).reshape(-1, 3, 3)  # (R K, 3, 3), pair-major

        def many(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            return (x if x.shape[0] == B else x.expand(B, *x.shape[1:]))[redo].repeat_interleave(K, 0)

        # Judged below, once: the inner solve skips its own uncertainty.
        again = HomographyRegistration(cfg.replace(search_steps=0, rescue_steps=0, max_uncertainty=math.inf))
        s_many, d_many = many(src), many(dst)
        result = again.register(s_many, d_many, src_mask=many(src_mask), dst_mask=many(dst_mask), initial_homography=starts)
        G = A @ torch.linalg.inv(result.homography.to(torch.float64)) @ torch.linalg.inv(A)
        theta_many = motion_parameters(cfg.motion, G, corners).to(theta.dtype)
        masks = self._mask_pyramid(many(src_mask), many(dst_mask), s_many)
        _, ov, un = self._judge(s_many, d_many, theta_many, corners, None if masks is None else masks[0])
        usable = (ov >= RESCUE_OVERLAP) & (un <= cfg.max_uncertainty) & torch.isfinite(theta_many).all(1)
        # Consensus: a true optimum has a basin, so it is reached from more than one start;
        # a determined-looking result that one start alone reaches is not trusted (among 25
        # starts, a wrong one can come out under the bound by chance).
        c = project_corners(G, corners.to(torch.float64)).view(-1, K, 8) * (max(src.shape[-2:]) / 2.0)
        close = (c[:, :, None] - c[:, None]).abs().amax(-1) < RESCUE_AGREEMENT  # (R, K, K)
        ok = usable.view(-1, K)
        support = (close & ok[:, None, :] & ok[:, :, None]).sum(-1)  # (R, K)
        score = torch.where(support >= 2, -support.to(un.dtype) + un.view(-1, K) / (cfg.max_uncertainty + 1.0), math.inf)
        best = score.argmin(1)
        pick = torch.arange(redo.numel(), device=device) * K + best
        better = torch.isfinite(score.gather(1, best[:, None])[:, 0])
        where = redo[better]
        chosen = pick[better]
        theta, stopped = theta.clone(), stopped.clone()
        theta[where] = theta_many[chosen]
        stopped[where] = result.status[chosen] == int(SolverStatus.CONVERGED)
        overlap, uncertainty = overlap.clone(), uncertainty.clone()
        overlap[where], uncertainty[where] = ov[chosen], un[chosen]
        return theta, stopped, (textured, overlap, uncertainty)


def register_homography(
    src: torch.Tensor,
    dst: torch.Tensor,
    *,
    src_mask: torch.Tensor | None = None,
    dst_mask: torch.Tensor | None = None,
    initial_homography: torch.Tensor | None = None,
    config: RegistrationConfig | None = None,
    callback: ProgressCallback | None = None,
    **overrides: Any,
) -> RegistrationResult:
    """Find, for each pair, the homography taking ``src`` pixels to ``dst`` pixels.

    Args:
        src: ``(B, C, H, W)`` floating images; ``B`` independent pairs solved together.
        dst: the same shape, dtype and device.
        src_mask, dst_mask: optional pixel weights, see :meth:`HomographyRegistration.register`.
        initial_homography: optional ``(3, 3)`` or ``(B, 3, 3)`` pixel start, ``src`` to ``dst``.
        config: a :class:`RegistrationConfig` (default: ``RegistrationConfig()``).
        callback: optional ``callback(level, iteration, loss_per_pair)``.
        **overrides: fields of the config to change for this call (``levels=2``...).

    Returns:
        A :class:`RegistrationResult`; ``warp_perspective(src, result.homography, (H, W))``
        approximates ``dst``.

    Convention:
        ``result.homography`` is in pixel coordinates (centres at integers), ``src`` to
        ``dst``, the meaning of ``cv2.warpPerspective``'s matrix.

    Example:
        >>> x = torch.rand(1, 1, 64, 64)
        >>> register_homography(x, x, levels=2, iterations=5).homography[0].diagonal()
        tensor([1., 1., 1.])
    """
    return HomographyRegistration(config, **overrides).register(
        src, dst, src_mask=src_mask, dst_mask=dst_mask, initial_homography=initial_homography, callback=callback
    )
