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
``objective``; ``first_order`` and ``second_order``; ``search``; ``checks``; ``features``
(``gradcv.core_ops`` only); this one.

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
from gradcv.optim import ProgressCallback, PyramidLevel, SolverResult, carry_unchanged, coarse_to_fine, sample_status
from gradcv.registration.checks import check_images, check_initial, check_mask, spread
from gradcv.registration.config import LEAST_SQUARES, RegistrationConfig
from gradcv.registration.features import MIN_IMAGE_SIZE, feature_homography
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
#: The rescue's pruning: ``(level, keep)``: after pyramid ``level`` each pair keeps its
#: ``keep`` distinct candidates of lowest loss for the finer levels (the coarse levels
#: cost little a start, the finest most of all).
RESCUE_PRUNE = ((2, 8), (1, 2))
#: The first pruning stage runs every start once from each of these levels, counted down
#: from the coarsest (0: the coarsest itself; a 16² view of a near-textureless patch can
#: miss a basin that 32² shows).
RESCUE_ENTRIES = (0, 1)
#: Iterations per level of the first pruning stage (where every start runs).
RESCUE_ITERATIONS = 6
#: The pruning ranks a candidate by its loss (a mean over the pixels in view) divided by
#: this power of its overlap: a warp that keeps less in view fits it more easily (tuning
#: seeds: 1 recovered one more rocket and one more camera pair of 160 than 0).
RESCUE_OVERLAP_POWER = 1.0
#: Results at level ``l`` whose corners agree to ``RESCUE_CLUSTER 2^(l - 1)`` full-resolution
#: pixels are one candidate.
RESCUE_CLUSTER = 3.0
#: A rescue candidate must be determined to this fraction of the bound (measured on the
#: tuning seeds: candidates at the truth 0.00-0.08 px; wrong ones that more than one start
#: reached down to 0.42 px)...
RESCUE_ACCEPT = 0.5
#: ...and one that only one start reached, to this fraction.
RESCUE_SINGLE = 0.2
#: A pair that did not stop at the finest level is also rescued once its uncertainty
#: exceeds this fraction of the bound (measured: pairs left 4 px off end there at 0.38-0.41
#: px, every pair registered to the truth at 0.19 px or less).
RESCUE_UNSETTLED = 0.5
#: The rescue's start similarities about the image centre, ``(angle in radians, scale)``,
#: each composed with every translation.
RESCUE_TURNS = ((0.0, 1.0), (-0.3, 1.0), (0.3, 1.0), (0.0, 0.85), (0.0, 1.2))
#: The feature start (``config.feature_start``) is refined on this many of the finest
#: levels: it is within a few pixels of the truth (mostly tenths), and the coarse levels of
#: the pairs it serves hold wrong basins (tuning seeds, rocket's DeTone pairs of seeds 4-9:
#: 99.2 % from the finest level alone, 99.2 % from two in 9 % more time, 98.3 % from three).
FEATURE_LEVELS = 1
#: A refined feature start is taken only if no corner coordinate moved more than this many
#: pixels from the features' homography (measured on the tuning seeds: 64 refined starts at
#: the truth moved up to 5.6 px, from a start 2.6 px off; the wrong optima of the pairs the
#: feature start serves lie 9-40 px from the truth). At 2 px, 3 of the 64 went to the grid.
FEATURE_AGREEMENT = 8.0


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
        thetas, outcomes = self._solve(cfg, theta, src_pyr, dst_pyr, mask_pyr, (H, W), corners, callback)
        if not cfg.differentiable:
            thetas = [t.detach() for t in thetas]
        masks = None if mask_pyr is None else mask_pyr[0]
        judged = self._judge(src, dst, thetas[-1], corners, masks)
        stopped = outcomes[-1].stopped
        if cfg.rescue_steps > 0 and cfg.search_range > 0 and not cfg.differentiable and math.isfinite(cfg.max_uncertainty):
            thetas[-1], stopped, judged = self._rescue(
                (src, dst), (src_pyr, dst_pyr, mask_pyr), theta, thetas[-1], stopped, judged, corners
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

    @staticmethod
    def _solve(
        cfg: RegistrationConfig,
        theta: torch.Tensor,
        src_pyr: list[torch.Tensor],
        dst_pyr: list[torch.Tensor],
        mask_pyr: list[tuple[torch.Tensor, torch.Tensor]] | None,
        full: tuple[int, int],
        corners: torch.Tensor,
        callback: ProgressCallback | None = None,
        levels: range | None = None,
    ) -> tuple[list[torch.Tensor], list[LevelOutcome]]:
        """The pyramid's levels (those of ``levels``, pyramid numbering, 0 the finest; all of
        them by default) solved coarse to fine from ``theta``: each level's result and
        outcome, coarse to fine. The coarsest level of the pyramid is searched
        (``config.search_steps``)."""
        dtype, device = src_pyr[0].dtype, src_pyr[0].device
        outcomes: list[LevelOutcome] = []
        thetas: list[torch.Tensor] = []

        def solve(theta: torch.Tensor, level: PyramidLevel) -> torch.Tensor:
            if levels is not None and level.level not in levels:
                return theta
            masks = None if mask_pyr is None else mask_pyr[level.level]
            problem = LevelProblem(
                LevelGrid(level.level, full, level.size, dtype, device),
                src_pyr[level.level], dst_pyr[level.level], corners, masks, level, cfg.motion,
            )
            searching = level.is_coarsest and cfg.search_steps > 0 and cfg.search_range > 0
            outcome = (search_level if searching else solve_level)(problem, theta, cfg, callback)
            outcomes.append(outcome)
            thetas.append(outcome.theta)
            return outcome.theta

        sizes = [(int(p.shape[-2]), int(p.shape[-1])) for p in src_pyr]
        coarse_to_fine(theta, sizes, solve, carry_unchanged)
        return thetas, outcomes

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
                # First order stops on a small step, which a decaying rate makes small
                # anywhere: its result is judged with the step to its loss's optimum still
                # to go (the second-order solvers stop on that step itself).
                loss = cfg.loss if cfg.method == "first_order" and cfg.loss in LEAST_SQUARES else None
                uncertainty = corner_uncertainty(
                    grid, src, dst, G, weight, corners, cfg.motion, cfg.photometric, loss=loss, eps=cfg.charbonnier_eps
                )
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
        images: tuple[torch.Tensor, torch.Tensor],
        pyramids: tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]] | None],
        theta0: torch.Tensor,
        theta: torch.Tensor,
        stopped: torch.Tensor,
        judged: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        corners: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The pairs left undetermined (uncertainty above the bound, or above
        :data:`RESCUE_UNSETTLED` of it where the pair did not stop, or a warp that keeps
        less than :data:`RESCUE_OVERLAP` of what the masks leave in view) solved again:
        first from their matched features (``config.feature_start``,
        :meth:`_feature_rescue`, which also takes up the pairs that did not stop), then,
        those it did not settle, from the grid of ``config.rescue_steps``
        (:meth:`_grid_rescue`). One look at the host: nothing more happens when every pair
        is determined (and, with the feature start, stopped)."""
        cfg = self.config
        textured = judged[0]
        redo, floor, sliver, grid = _undetermined(cfg, judged, torch.isfinite(theta).all(1), stopped, pyramids[2])
        if redo.numel() == 0:
            return theta, stopped, judged
        inner = cfg.replace(search_steps=0, rescue_steps=0, max_uncertainty=math.inf)
        if cfg.feature_start > 0:
            theta, stopped, overlap, uncertainty, taken = self._feature_rescue(
                images, pyramids, inner, redo, theta, stopped, judged[1:], floor, sliver, corners
            )
            judged = (textured, overlap, uncertainty)
            redo = redo[grid & ~taken]  # one more look at the host
            if redo.numel() == 0:
                return theta, stopped, judged
        return self._grid_rescue(images, pyramids, inner, redo, theta0, theta, stopped, judged, (floor, sliver), corners)

    def _grid_rescue(
        self,
        images: tuple[torch.Tensor, torch.Tensor],
        pyramids: tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]] | None],
        inner: RegistrationConfig,
        redo: torch.Tensor,
        theta0: torch.Tensor,
        theta: torch.Tensor,
        stopped: torch.Tensor,
        judged: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        bounds: tuple[torch.Tensor, torch.Tensor],
        corners: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The pairs ``redo`` solved again (see ``config.rescue_steps``) from
        :func:`rescue_starts`, pruned as they go down the pyramid (:data:`RESCUE_PRUNE`):
        every start through the coarse levels, where a start costs little, only the few
        distinct results of lowest loss through the fine ones. Each pair takes the
        determined candidate of lowest uncertainty among those that more than one start
        reached (or, reached by one, determined to :data:`RESCUE_SINGLE` of the bound), if
        it is more certain than its own result (or that was a sliver: ``bounds = (floor,
        sliver)``, see :func:`_undetermined`)."""
        cfg = self.config
        src, dst = images
        src_pyr, dst_pyr, mask_pyr = pyramids
        textured, overlap, uncertainty = judged
        floor, sliver = bounds
        R, device, H, W = redo.numel(), src.device, src.shape[-2], src.shape[-1]
        to_px = max(H, W) / 2.0

        def take(index: torch.Tensor, levels: range) -> tuple[list, list, list | None]:
            return _rows(src_pyr, index, levels), _rows(dst_pyr, index, levels), _rows(mask_pyr, index, levels)

        t = rescue_starts(cfg, theta0[redo], corners, to_px)  # (R K, k), pair-major
        S = t.shape[0] // R
        # Which of the S starts are behind each candidate (R, K, S): a start entered at two
        # levels, or merged into two clusters, still counts once.
        members = torch.eye(S, dtype=torch.bool, device=device).expand(R, S, S)
        top = cfg.levels
        for level, keep in RESCUE_PRUNE:
            if level >= top:
                continue
            # All candidates through the levels down to ``level``; the best distinct go on.
            # The first time, the starts also enter below the coarsest level (RESCUE_ENTRIES).
            entries = [e for e in RESCUE_ENTRIES if top - e > level] if top == cfg.levels else [0]
            k = members.shape[1]
            sp, dp, mp = take(redo.repeat_interleave(k), range(level, top))
            ends, losses = [], []
            first = inner.replace(iterations=min(inner.iterations, RESCUE_ITERATIONS)) if top == cfg.levels else inner
            for e in entries:
                thetas, outcomes = self._solve(first, t, sp, dp, mp, (H, W), corners, levels=range(level, top - e))
                ends.append(thetas[-1].view(R, k, -1))
                losses.append(outcomes[-1].last_loss.view(R, k))
            n = len(entries)
            if n > 1:
                sp, dp, mp = take(redo.repeat_interleave(k * n), range(level, level + 1))
            t_all = torch.cat(ends, 1).reshape(R * k * n, -1)
            losses_all, members_all = torch.cat(losses, 1).flatten(), members.repeat(1, n, 1)
            t, members = _prune(cfg, t_all, losses_all, members_all, floor[redo], level, sp, mp, corners, keep)
            top = level
        # The last candidates through the fine levels.
        M = members.shape[1]
        index = redo.repeat_interleave(M)
        sp, dp, mp = take(index, range(0, top))
        thetas, outcomes = self._solve(inner, t, sp, dp, mp, (H, W), corners, levels=range(0, top))
        t2 = thetas[-1]
        _, ov, un = self._judge(src[index], dst[index], t2, corners, None if mp is None else mp[0])
        best, better = _choose(cfg, t2, ov, un, members, floor[redo], corners, to_px, uncertainty[redo], sliver[redo])
        chosen = (torch.arange(R, device=device) * M + best)[better]
        where = redo[better]
        theta, stopped = theta.clone(), stopped.clone()
        theta[where] = t2[chosen].to(theta.dtype)
        stopped[where] = outcomes[-1].stopped[chosen]
        overlap, uncertainty = overlap.clone(), uncertainty.clone()
        overlap[where], uncertainty[where] = ov[chosen], un[chosen]
        return theta, stopped, (textured, overlap, uncertainty)

    def _feature_rescue(
        self,
        images: tuple[torch.Tensor, torch.Tensor],
        pyramids: tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]] | None],
        inner: RegistrationConfig,
        redo: torch.Tensor,
        theta: torch.Tensor,
        stopped: torch.Tensor,
        judged: tuple[torch.Tensor, torch.Tensor],
        floor: torch.Tensor,
        sliver: torch.Tensor,
        corners: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rescue's first try (``config.feature_start``): the pairs ``redo`` started from
        their matched features' homography (:func:`feature_homography`) and refined on the
        :data:`FEATURE_LEVELS` finest levels. A pair takes the result if its features found a
        homography, the refinement stayed within :data:`FEATURE_AGREEMENT` pixels of it (two
        independent estimates agree: the consensus the grid asks of two starts), it keeps
        ``floor`` in view, its uncertainty is within :data:`RESCUE_ACCEPT` of the bound, and
        it is more certain than the pair's own result (or that was a ``sliver``). Returns
        ``(theta, stopped, overlap, uncertainty, taken)``: the results updated where taken,
        and ``taken (len(redo),)``, which of ``redo`` took it."""
        cfg = self.config
        src, dst = images
        src_pyr, dst_pyr, mask_pyr = pyramids
        overlap, uncertainty = judged
        H, W = src.shape[-2:]
        if min(H, W) < MIN_IMAGE_SIZE:  # no descriptor patch fits: nothing to start from
            return theta, stopped, overlap, uncertainty, torch.zeros_like(redo, dtype=torch.bool)
        masks = None if mask_pyr is None else tuple(m[redo] for m in mask_pyr[0])
        found_h, found = feature_homography(src[redo], dst[redo], cfg.feature_start, masks)
        # Only the pairs whose features found a homography are refined (the others could not
        # be taken): one look at the host, after RANSAC's, which looks every round.
        hit = found.nonzero().squeeze(1)
        none = torch.zeros_like(redo, dtype=torch.bool)
        if hit.numel() == 0:
            return theta, stopped, overlap, uncertainty, none
        redo, found_h = redo[hit], found_h[hit]
        A = frame_matrix(H, W, torch.float64, src.device)
        # inv_ex: no error check, so no look at the host (found_h is checked invertible)
        G = A @ torch.linalg.inv_ex(found_h)[0] @ torch.linalg.inv_ex(A)[0]
        start = motion_parameters(cfg.motion, G, corners).to(theta.dtype)
        top = min(FEATURE_LEVELS, cfg.levels)
        levels = range(0, top)
        sp, dp, mp = _rows(src_pyr, redo, levels), _rows(dst_pyr, redo, levels), _rows(mask_pyr, redo, levels)
        thetas, outcomes = self._solve(inner, start, sp, dp, mp, (H, W), corners, levels=levels)
        refined = thetas[-1]
        _, ov, un = self._judge(src[redo], dst[redo], refined, corners, None if mp is None else mp[0])
        with torch.no_grad():
            c0 = project_corners(motion_matrix(cfg.motion, start, corners).to(torch.float64), corners.to(torch.float64))
            c1 = project_corners(motion_matrix(cfg.motion, refined, corners).to(torch.float64), corners.to(torch.float64))
            moved = (c1 - c0).abs().flatten(1).amax(1) * (max(H, W) / 2.0)
            take = (
                (moved < FEATURE_AGREEMENT) & (ov >= floor[redo]) & torch.isfinite(refined).all(1)
                & (un <= RESCUE_ACCEPT * cfg.max_uncertainty) & ((un < uncertainty[redo]) | sliver[redo])
            )
            # written back without a look at the host (boolean indexing would be one)
            taken = torch.zeros_like(stopped).index_put((redo,), take)
            theta = torch.where(taken[:, None], theta.index_copy(0, redo, refined.to(theta.dtype)), theta)
            stopped = torch.where(taken, stopped.index_copy(0, redo, outcomes[-1].stopped), stopped)
            overlap = torch.where(taken, overlap.index_copy(0, redo, ov.to(overlap.dtype)), overlap)
            uncertainty = torch.where(taken, uncertainty.index_copy(0, redo, un.to(uncertainty.dtype)), uncertainty)
        return theta, stopped, overlap, uncertainty, none.index_put((hit,), take)


def _undetermined(
    cfg: RegistrationConfig,
    judged: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    finite: torch.Tensor,
    stopped: torch.Tensor,
    mask_pyr: list[tuple[torch.Tensor, torch.Tensor]] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(redo, floor, sliver, grid)``: the indices of the pairs the rescue takes up (one
    host read), per pair the overlap a result must keep, :data:`RESCUE_OVERLAP` of what the
    masks leave to compare (at most the smaller mask's share: masks alone never make a
    sliver), and whether its own result keeps less; ``grid (len(redo),)``: which of them the
    grid solves again (the undetermined ones). With ``config.feature_start`` the pairs that
    did not stop, determined or not, are also taken up, by the feature start alone."""
    textured, overlap, uncertainty = judged
    unsettled = ~stopped & (uncertainty > RESCUE_UNSETTLED * cfg.max_uncertainty)
    coverage = torch.ones_like(overlap) if mask_pyr is None else torch.minimum(*(m.flatten(1).mean(1) for m in mask_pyr[0]))
    floor = RESCUE_OVERLAP * coverage
    sliver = overlap < floor
    need = textured & finite & ((uncertainty > cfg.max_uncertainty) | unsettled | sliver)
    if cfg.feature_start == 0:
        redo = need.nonzero()[:, 0]
        return redo, floor, sliver, torch.ones_like(redo, dtype=torch.bool)
    redo = (need | (textured & finite & ~stopped)).nonzero()[:, 0]
    return redo, floor, sliver, need[redo]


def _rows(pyramid: list | None, index: torch.Tensor, levels: range) -> list | None:
    """A pyramid's (or mask pyramid's pairs') rows ``index`` on ``levels``, empty batches
    elsewhere: the solves read only their levels, and copying the 128² level for hundreds
    of starts cost more than solving them at 16²."""
    if pyramid is None:
        return None
    return [(tuple(x[index] for x in p) if isinstance(p, tuple) else p[index]) if i in levels
            else (tuple(x[:0] for x in p) if isinstance(p, tuple) else p[:0]) for i, p in enumerate(pyramid)]


def _choose(
    cfg: RegistrationConfig,
    theta: torch.Tensor,
    overlap: torch.Tensor,
    uncertainty: torch.Tensor,
    members: torch.Tensor,
    floor: torch.Tensor,
    corners: torch.Tensor,
    to_px: float,
    own: torch.Tensor,
    sliver: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(best (R,), better (R,))``: which of each pair's ``M`` final rescue candidates
    ``theta (R M, k)`` (``members (R, M, S)``: which of the ``S`` starts are behind each) it
    takes, and whether it takes it: the determined candidate (``floor (R,)`` in view, a
    quarter of what the masks leave; ``uncertainty`` within :data:`RESCUE_ACCEPT` of the
    bound) of lowest uncertainty among those trusted, if more certain than the pair's
    ``own`` result or that was a ``sliver``."""
    R, M = members.shape[:2]
    in_view = (overlap.view(R, M) >= floor[:, None]).flatten()
    usable = in_view & (uncertainty <= RESCUE_ACCEPT * cfg.max_uncertainty) & torch.isfinite(theta).all(1)
    # Consensus: a true optimum has a basin, so it is reached from more than one start;
    # a determined-looking result that one start alone reaches must be determined far
    # better than the bound (a wrong one can come out under it by chance).
    G = motion_matrix(cfg.motion, theta, corners).to(torch.float64)
    c = project_corners(G, corners.to(torch.float64)).view(R, M, 8) * to_px
    agree = (c[:, :, None] - c[:, None]).abs().amax(-1) < RESCUE_AGREEMENT  # (R, M, M)
    reach = (agree[..., None] & members[:, None]).any(2).sum(-1)  # distinct starts that ended there
    un = uncertainty.view(R, M)
    trusted = usable.view(R, M) & members.any(-1) & ((reach >= 2) | (un <= RESCUE_SINGLE * cfg.max_uncertainty))
    score = torch.where(trusted, un, math.inf)
    best = score.argmin(1)
    least = score.gather(1, best[:, None])[:, 0]
    return best, torch.isfinite(least) & ((least < own) | sliver)


def _prune(
    cfg: RegistrationConfig,
    theta: torch.Tensor,
    loss: torch.Tensor,
    members: torch.Tensor,
    floor: torch.Tensor,
    level: int,
    src_pyr: list[torch.Tensor],
    mask_pyr: list[tuple[torch.Tensor, torch.Tensor]] | None,
    corners: torch.Tensor,
    keep: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``keep`` distinct results of lowest loss per overlap
    (:data:`RESCUE_OVERLAP_POWER`) at pyramid ``level`` of each pair's
    ``K`` candidates ``theta (R K, k)`` (those whose warp keeps ``floor (R,)`` of the level
    in view: :data:`RESCUE_OVERLAP` of what the masks leave; results whose corners agree to ``RESCUE_CLUSTER 2^(level - 1)`` pixels
    are one): ``(theta (R keep, k), members (R, keep, S))``, ``members`` the starts behind
    each (the union of the ``members (R, K, S)`` of the results merged into it, each result
    merged into one kept candidate only; none where a pair has fewer)."""
    R, K = members.shape[:2]
    keep = min(keep, K)
    H, W = src_pyr[0].shape[-2:]
    device = theta.device
    grid = LevelGrid(level, (H, W), tuple(src_pyr[level].shape[-2:]), theta.dtype, device)
    with torch.no_grad():
        G = motion_matrix(cfg.motion, theta, corners)
        _, inside = grid.sample(src_pyr[level], G)
        overlap = masked_weight(grid, inside, G, None if mask_pyr is None else mask_pyr[level]).flatten(1).mean(1)
        ok = (overlap.view(R, K) >= floor[:, None]) & (torch.isfinite(loss) & torch.isfinite(theta).all(1)).view(R, K) & members.any(-1)
        c = project_corners(G.to(torch.float64), corners.to(torch.float64)).view(R, K, 8) * (max(H, W) / 2.0)
        # (R, K, K); cdist's max-norm, not a broadcast (R, K, K, 8) difference: a tenth of the time
        close = torch.cdist(c, c, p=math.inf) < RESCUE_CLUSTER * 2.0 ** (level - 1)
        ranked = loss.to(torch.float64) / overlap.to(torch.float64).clamp_min(1e-6) ** RESCUE_OVERLAP_POWER
        score = torch.where(ok, ranked.view(R, K), math.inf)
        rows = torch.arange(R, device=device)
        picks, groups = [], []
        for _ in range(keep):  # greedily: the lowest loss, then leave out its cluster
            best = score.argmin(1)
            # its cluster among the results not merged yet (a finite score: usable, not yet left out)
            cluster = close[rows, best] & torch.isfinite(score)  # (R, K)
            picks.append(best)
            groups.append((cluster[..., None] & members).any(1))  # (R, S)
            score = torch.where(close[rows, best], math.inf, score)
        pick = torch.stack(picks, 1)
    chosen = theta.view(R, K, -1).gather(1, pick[..., None].expand(R, keep, theta.shape[1]))
    return chosen.reshape(R * keep, -1), torch.stack(groups, 1)


def rescue_starts(config: RegistrationConfig, theta: torch.Tensor, corners: torch.Tensor, to_px: float) -> torch.Tensor:
    """``(R K, k)``: each of the ``R`` starts ``theta`` composed with the ``K`` moves of the
    rescue (pair-major): the translations of a ``(2 n + 1)²`` grid spanning
    ``±RESCUE_RANGE search_range`` pixels (``n = config.rescue_steps``), each composed with
    the similarities of :data:`RESCUE_TURNS` about the image centre."""
    R, device = theta.shape[0], theta.device
    n = config.rescue_steps
    ticks = torch.linspace(-1.0, 1.0, 2 * n + 1, dtype=torch.float64, device=device) * RESCUE_RANGE * config.search_range / to_px
    ty, tx = torch.meshgrid(ticks, ticks, indexing="ij")
    moves = []
    for angle, scale in RESCUE_TURNS:
        m = torch.zeros(tx.numel(), 3, 3, dtype=torch.float64, device=device)
        m[:, 0, 0] = m[:, 1, 1] = scale * math.cos(angle)
        m[:, 0, 1], m[:, 1, 0] = -scale * math.sin(angle), scale * math.sin(angle)
        m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = tx.flatten(), ty.flatten(), 1.0
        moves.append(m)
    move = torch.cat(moves)
    K = move.shape[0]
    G0 = motion_matrix(config.motion, theta.detach(), corners).to(torch.float64)
    G = (move[None] @ G0[:, None]).reshape(R * K, 3, 3)
    return motion_parameters(config.motion, G, corners).to(theta.dtype)


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
