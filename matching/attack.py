"""A targeted adversarial attack on two-view matching (the paper's section 4.4, Figure 5).

Given pairs of unrelated images ``(A, B)`` and a homography ``H`` of our choosing, both
images are modified by gradient descent through the whole differentiable feature stack
(detection with soft sub-pixel refinement, orientation, SIFT description) until
:func:`~gradcv.matching.pipeline.match_pair` returns matches consistent with ``H``:

- ``L_loc`` (eq. 7): the squared distance between each keypoint ``p_a`` of A and the
  closest keypoint of B reprojected into A by ``H^-1``;
- ``L_desc`` (eq. 8): the margin loss ``max(0, margin + d(D_a, D_b) - d(D_a, D_neg))``
  between the descriptor of ``p_a``, that of its reprojected partner, and the hardest
  negative (the nearest other descriptor of B): the ratio test then keeps the pair;
- ``L_reg`` (eq. 9): the mean squared deviation of both images from the originals;
- optionally (``min_response``, not in the paper) a hinge lifting both keypoints of each
  attacked pair above a detector response, so that a pipeline with a higher contrast
  threshold (OpenCV's SIFT) detects them too;

``L = L_loc + alpha L_desc + beta L_reg`` per pair, the pairs optimised together (one
batched feature call per step) and stopped one by one by masks.

Success (:class:`AttackMetrics`), judged on the images rounded to 8 bits and matched by
the attacked pipeline: at least ``min_inliers`` (30) RANSAC inliers (3 px) whose matches
agree with the target (``H p_a`` within 3 px of the partner), counted once per keypoint
(:func:`~gradcv.matching.pipeline.distinct_inliers`: the ratio test lets many keypoints
of A match one of B), at least half of the inliers agreeing (counted the same way), and
the estimated homography within 5 px mean corner error of the target.

Convention:
    Pixel ``(x, y)`` with pixel centres at integer coordinates (OpenCV's ``KeyPoint.pt``).
    ``target_homography`` maps ``img_a`` pixels to ``img_b`` pixels,
    ``H @ [xa, ya, 1]^T ~ [xb, yb, 1]^T``, as :attr:`MatchResult.homography`. The corner
    error is the mean over A's four corner pixels ``(0, 0), (W-1, 0), (W-1, H-1), (0, H-1)``
    of the distance between their images under the estimated and the target homography.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from gradcv.core_ops._checks import check_floating, check_shape
from gradcv.core_ops.color.gray import rgb_to_grayscale
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DeviceError, DTypeError, ShapeError
from gradcv.core_ops.features.laf import get_laf_center
from gradcv.core_ops.filters.blur import gaussian_blur2d
from gradcv.core_ops.geometry.linalg import transform_points
from gradcv.matching._threads import run_pieces
from gradcv.matching.attack_config import AttackConfig
from gradcv.matching.config import MatchConfig  # noqa: F401  (the doctest's namespace)
from gradcv.matching.pipeline import MatchStatus, _check_images, distinct_inliers, make_local_feature, match_pair
from gradcv.optim import ProgressCallback, SolverResult, SolverStatus, make_optimizer, resolve_optimizer, sample_status

__all__ = ["AttackMetrics", "AttackResult", "attack_loss", "attack_pair", "evaluate_attack", "quantize_8bit"]

#: Descriptor distance standing for "no negative" (unit descriptors are at most 2 apart).
_FAR = 10.0


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Round intensities in [0, 1] to the 1/255 grid (as saving an 8-bit PNG does), with a
    straight-through gradient (the identity's).

    Example:
        >>> quantize_8bit(torch.tensor([0.1, 0.5])) * 255
        tensor([ 26., 128.])
    """
    rounded = torch.round(img.clamp(0, 1) * 255) / 255
    return img + (rounded - img).detach()


@dataclass
class AttackMetrics:
    """Success figures of ``B`` pairs of 8-bit images under a target homography.

    Attributes:
        inliers: ``(B,)`` RANSAC inliers, counted once per keypoint.
        consistent_inliers: ``(B,)`` those whose match agrees with the target (within
            ``consistency_threshold``), counted once per keypoint.
        consistent_fraction: ``(B,)`` float64 ``consistent_inliers / inliers`` (0 without inliers).
        corner_error: ``(B,)`` float64 mean corner error of the estimated homography to the
            target in pixels; ``inf`` where RANSAC found none (never NaN).
        success: ``(B,)`` bool, the three criteria together.
        match_status: ``(B,)`` int8 :class:`~gradcv.matching.pipeline.MatchStatus` of the match.
        psnr_a, psnr_b: ``(B,)`` float64 PSNR (dB, peak 1) of each 8-bit image against the
            original; ``inf`` where unchanged.
        linf_a, linf_b: ``(B,)`` float64 largest absolute change of a pixel.
    """

    inliers: torch.Tensor
    consistent_inliers: torch.Tensor
    consistent_fraction: torch.Tensor
    corner_error: torch.Tensor
    success: torch.Tensor
    match_status: torch.Tensor
    psnr_a: torch.Tensor
    psnr_b: torch.Tensor
    linf_a: torch.Tensor
    linf_b: torch.Tensor


@dataclass
class AttackResult(SolverResult):
    """What :func:`attack_pair` did to ``B`` pairs (a :class:`~gradcv.optim.SolverResult`:
    ``loss_history`` is one ``(B, iterations)`` level, NaN after a pair stopped;
    ``status`` is ``CONVERGED`` for a pair that succeeds, ``ITERATION_LIMIT`` for one that
    does not, ``DEGENERATE_INPUT`` for a pair with fewer than 4 features in an image (no
    texture: not attacked), ``DIVERGED`` for non-finite losses).

    Attributes:
        adversarial_a, adversarial_b: ``(B, C, H, W)`` the modified images (on the 1/255
            grid when ``quantize``), detached.
        before, after: :class:`AttackMetrics` of the originals and of the modified images,
            both rounded to 8 bits.
        target_homography: ``(B, 3, 3)`` float64 the target.
        config: the :class:`AttackConfig` used.
    """

    adversarial_a: torch.Tensor
    adversarial_b: torch.Tensor
    before: AttackMetrics
    after: AttackMetrics
    target_homography: torch.Tensor
    config: AttackConfig

    @property
    def success(self) -> torch.Tensor:
        """``(B,)`` bool: the 8-bit modified pair succeeds (``after.success``)."""
        return self.after.success


def _corners(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=dtype, device=device)


def _psnr_linf(img: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    diff = (img.double() - ref.double()).flatten(1)
    mse = diff.square().mean(1)
    psnr = torch.where(mse > 0, -10 * torch.log10(mse.clamp_min(1e-300)), torch.full_like(mse, math.inf))
    linf = diff.abs().amax(1) if diff.shape[1] else torch.zeros_like(mse)
    return psnr, linf


@torch.no_grad()
def evaluate_attack(
    img_a: torch.Tensor,
    img_b: torch.Tensor,
    target_homography: torch.Tensor,
    config: Optional[AttackConfig] = None,
    reference_a: Optional[torch.Tensor] = None,
    reference_b: Optional[torch.Tensor] = None,
) -> AttackMetrics:
    """The success figures of ``B`` pairs, judged on the images rounded to 8 bits.

    Args:
        img_a, img_b: ``(B, C, H, W)`` images in [0, 1] (rounded here).
        target_homography: ``(B, 3, 3)`` mapping ``img_a`` pixels to ``img_b`` pixels.
        config: thresholds and the pipeline (``config.match``); default ``AttackConfig()``.
        reference_a, reference_b: the originals for PSNR and L-infinity (default: the
            images themselves).

    Returns:
        :class:`AttackMetrics`.
    """
    config = AttackConfig() if config is None else config
    qa, qb = quantize_8bit(img_a), quantize_8bit(img_b)
    result = match_pair(qa, qb, config.match)
    n1, n2 = result.keypoints1.shape[1], result.keypoints2.shape[1]
    target = target_homography.to(device=img_a.device, dtype=torch.float64)
    p1, p2 = result.matched_keypoints()
    mapped = transform_points(target, p1.double())
    agree = (mapped - p2.double()).norm(dim=-1) <= config.consistency_threshold
    consistent_mask = result.inliers & agree
    inliers = distinct_inliers(result.matches, result.inliers, n1, n2)
    consistent = distinct_inliers(result.matches, consistent_mask, n1, n2)
    fraction = consistent.double() / inliers.clamp_min(1).double()

    corners = _corners(img_a.shape[-2], img_a.shape[-1], torch.float64, img_a.device).expand(img_a.shape[0], 4, 2)
    h_est = result.homography
    ok = torch.isfinite(h_est).flatten(1).all(1) & (h_est.abs().flatten(1).amax(1) > 0)
    h_safe = torch.where(ok[:, None, None], h_est, torch.eye(3, dtype=torch.float64, device=h_est.device))
    err = (transform_points(h_safe, corners) - transform_points(target, corners)).norm(dim=-1).mean(1)
    err = torch.where(ok & torch.isfinite(err), err, torch.full_like(err, math.inf))

    success = ((consistent >= config.min_inliers) & (fraction >= config.min_fraction)
               & (err <= config.max_corner_error) & (result.status != int(MatchStatus.DEGENERATE_INPUT)))
    ref_a = img_a if reference_a is None else reference_a
    ref_b = img_b if reference_b is None else reference_b
    psnr_a, linf_a = _psnr_linf(qa, ref_a)
    psnr_b, linf_b = _psnr_linf(qb, ref_b)
    return AttackMetrics(inliers=inliers, consistent_inliers=consistent, consistent_fraction=fraction,
                         corner_error=err, success=success, match_status=result.status, psnr_a=psnr_a, psnr_b=psnr_b,
                         linf_a=linf_a, linf_b=linf_b)


def _pairwise_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(B, N, M)`` Euclidean distances, with a finite gradient at zero distance."""
    sq = x.square().sum(-1)[..., :, None] + y.square().sum(-1)[..., None, :] - 2 * x @ y.transpose(-1, -2)
    return torch.sqrt(sq.clamp_min(1e-12))


def attack_loss(
    kp_a: torch.Tensor,
    kp_b: torch.Tensor,
    desc_a: torch.Tensor,
    desc_b: torch.Tensor,
    valid_a: torch.Tensor,
    valid_b: torch.Tensor,
    target_homography: torch.Tensor,
    image_size: tuple[int, int],
    alpha: float = 1.0,
    margin: float = 1.0,
    loc_radius: Optional[float] = None,
    max_pairs: Optional[int] = None,
    one_to_one: bool = False,
    *,
    responses_a: Optional[torch.Tensor] = None,
    responses_b: Optional[torch.Tensor] = None,
    min_response: Optional[float] = None,
    response_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's ``L_loc`` and ``L_desc`` (eqs. 7, 8) per pair, without ``L_reg``.

    Each valid keypoint ``p_a`` of A whose image under the target falls inside B is paired
    with the keypoint of B whose reprojection ``H^-1 p_b`` is closest (the choice is not
    differentiated); ``loc_radius`` keeps only pairs that close.

    Args:
        kp_a, kp_b: ``(B, N, 2)`` keypoints in pixels.
        desc_a, desc_b: ``(B, N, D)`` unit descriptors.
        valid_a, valid_b: ``(B, N)`` bool.
        target_homography: ``(B, 3, 3)`` A to B.
        image_size: ``(H, W)`` of B (pairs whose ``H p_a`` falls outside are left out).
        alpha: weight of ``L_desc``.
        margin: the margin of ``L_desc``.
        loc_radius: pair distance bound in pixels (``None``: all pairs).
        max_pairs: keep only this many pairs per image pair, those whose descriptors are
            closest to passing the ratio test (smallest ``d_pos / d_neg``; ``None``: all).
        one_to_one: keep a pair only when ``p_a`` is also the keypoint of A closest to its
            partner's reprojection (mutual nearest): success counts each keypoint once, so a
            keypoint of B pulled towards several of A wastes the budget.
        responses_a, responses_b: ``(B, N)`` the detector's responses of the keypoints, for
            ``min_response``.
        min_response: add ``response_weight * (relu(1 - r_a / min_response) + relu(1 - r_b /
            min_response))``, averaged over the kept pairs like the other terms: a hinge
            that lifts both keypoints of a kept pair to this response, so that a detector
            with a higher threshold than the attacked one also finds them (``None``: off).
        response_weight: the hinge's weight.

    Returns:
        ``(loss (B,), l_loc (B,), l_desc (B,))``, means over the kept pairs (0 where none).
    """
    h = target_homography.to(kp_a.dtype)
    q = transform_points(torch.linalg.inv(h), kp_b)  # B's keypoints in A's frame
    with torch.no_grad():
        d2 = torch.cdist(kp_a.detach(), q.detach()).square()
        d2 = torch.where(valid_b[:, None, :], d2, torch.full_like(d2, math.inf))
        best, nn = d2.min(2)
        into_b = transform_points(h, kp_a.detach())
        height, width = image_size
        inside = ((into_b[..., 0] >= 0) & (into_b[..., 0] <= width - 1) & (into_b[..., 1] >= 0)
                  & (into_b[..., 1] <= height - 1))
        keep = valid_a & inside & torch.isfinite(best)
        if one_to_one:
            d2a = torch.where(keep[:, :, None], d2, torch.full_like(d2, math.inf))
            closest_a = d2a.argmin(1)  # (B, Nb): the keypoint of A nearest each of B
            mine = closest_a.gather(1, nn) == torch.arange(kp_a.shape[1], device=kp_a.device)
            keep = keep & mine
        if loc_radius is not None:
            keep = keep & (best <= loc_radius**2)
        weight = keep.to(kp_a.dtype)
        count = weight.sum(1).clamp_min(1)
    q_nn = q.gather(1, nn[..., None].expand(-1, -1, 2))
    l_loc = (kp_a - q_nn).square().sum(-1)
    dist = _pairwise_distance(desc_a, desc_b)
    d_pos = dist.gather(2, nn[..., None]).squeeze(2)
    negative = valid_b[:, None, :] & (torch.arange(dist.shape[2], device=dist.device) != nn[..., None])
    d_neg = torch.where(negative, dist, torch.full_like(dist, _FAR)).amin(2)
    l_desc = torch.relu(margin + d_pos - d_neg)
    if max_pairs is not None and max_pairs < keep.shape[1]:
        with torch.no_grad():
            ratio = torch.where(keep, d_pos / d_neg.clamp_min(1e-6), torch.full_like(d_pos, math.inf))
            chosen = torch.zeros_like(keep).scatter_(1, ratio.topk(max_pairs, 1, largest=False).indices, True)
            keep = keep & chosen
            count = keep.to(kp_a.dtype).sum(1).clamp_min(1)
    zero = torch.zeros((), dtype=kp_a.dtype, device=kp_a.device)
    loc = torch.where(keep, l_loc, zero).sum(1) / count
    desc = torch.where(keep, l_desc, zero).sum(1) / count
    loss = loc + alpha * desc
    if min_response is not None:
        if responses_a is None or responses_b is None:
            raise ArgumentValueError("min_response", "responses_a and responses_b with it", None,
                                     "min_response: give responses_a and responses_b, the keypoints' detector responses")
        r_b = responses_b.gather(1, nn)
        hinge = torch.relu(1 - responses_a / min_response) + torch.relu(1 - r_b / min_response)
        loss = loss + response_weight * torch.where(keep, hinge, zero).sum(1) / count
    return loss, loc, desc


def _check_target(target: object, batch: int, device: torch.device) -> torch.Tensor:
    check_shape(target, ["B", 3, 3], "target_homography")
    assert isinstance(target, torch.Tensor)
    check_floating(target, "target_homography")
    if target.shape[0] != batch:
        raise ShapeError("target_homography", (batch, 3, 3), tuple(target.shape),
                         f"target_homography: expected one homography per pair ({batch}, 3, 3), got {tuple(target.shape)}")
    if target.device != device:
        raise DeviceError("target_homography", device, target.device,
                          f"target_homography: expected a tensor on {device} (the device of the images), got {target.device}")
    t = target.detach().double()
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ArgumentValueError("target_homography", "finite values", "NaN or infinity",
                                 "target_homography: expected finite values, got NaN or infinity")
    if t.numel():
        scale = t.abs().flatten(1).amax(1)
        det = torch.linalg.det(t)
        if bool(((det.abs() <= 1e-9 * scale**3) | (scale == 0)).any()):
            raise ArgumentValueError("target_homography", "invertible homographies", "a singular matrix",
                                     "target_homography: expected invertible homographies, got a singular matrix")
    return t


def _pair_chunks(pairs: int, pixels: int, device: torch.device) -> list[slice]:
    """The pairs of one step in the slices the CPU works through one at a time (all at once
    on a GPU): as many pairs as :data:`CPU_CHUNK_PIXELS` holds images, at least one."""
    from gradcv.core_ops.features.integrated import cpu_chunks

    if device.type != "cpu":
        return [slice(0, pairs)] if pairs else []
    return cpu_chunks(pairs, 2 * pixels)


def _step_loss(x: torch.Tensor, base: torch.Tensor, target: torch.Tensor, feature: Any, config: AttackConfig, sigma: float,
               noise: Optional[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """``(b,)`` the loss of ``b`` pairs ``x (b, 2, C, H, W)`` at one step (the images the
    features see: rounded to 8 bits with a straight-through gradient, then blurred by
    ``sigma``, plus ``noise`` ``(2b, 1, H, W)`` where given)."""
    images = quantize_8bit(x) if config.quantize else x
    seen = images.flatten(0, 1)
    if seen.shape[1] == 3:
        seen = rgb_to_grayscale(seen)
    if sigma >= 0.2:
        seen = gaussian_blur2d(seen, 2 * math.ceil(3 * sigma) + 1, (sigma, sigma))
    if noise is not None:
        seen = seen + noise
    lafs, responses, desc, valid = feature.detect_and_describe(seen)
    kp = get_laf_center(lafs)
    loss, _, _ = attack_loss(kp[0::2], kp[1::2], desc[0::2], desc[1::2], valid[0::2], valid[1::2], target, size,
                             config.alpha, config.margin, config.loc_radius, config.max_pairs, config.one_to_one,
                             responses_a=responses[0::2], responses_b=responses[1::2], min_response=config.min_response,
                             response_weight=config.response_weight)
    return loss + config.beta * (x - base).square().flatten(1).mean(1)


def _chunk_gradient(x: torch.Tensor, base: torch.Tensor, target: torch.Tensor, feature: Any, config: AttackConfig, sigma: float,
                    noise: Optional[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(b,)`` losses of the pairs ``x (b, 2, C, H, W)`` and their gradient with respect
    to ``x`` (a pixel of a pair whose loss is not finite gets none from that pair). The
    pairs are a leaf of their own, so that the gradient has the chunk's size, not the
    batch's."""
    leaf = x.detach().requires_grad_(True)  # a chunk's own leaf
    part = _step_loss(leaf, base, target, feature, config, sigma, noise, size)
    ok = torch.isfinite(part)
    grad, = torch.autograd.grad(torch.where(ok, part, torch.zeros_like(part)).sum(), leaf)
    return part.detach(), grad


def _pair_gradients(x: torch.Tensor, base: torch.Tensor, target: torch.Tensor, feature: Any, config: AttackConfig, sigma: float,
                    generator: torch.Generator, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss (b,), grad (b, 2, C, H, W))`` of one step for the pairs ``x``, chunk by
    chunk (:func:`_pair_chunks`).

    On a CPU with ``n > 1`` intra-op threads and several chunks, ``n`` chunks at a time go
    forward and backward side by side, each on a thread of its own with one intra-op
    thread (:func:`~gradcv.matching._threads.run_pieces`), rather than one after another
    with every operation split ``n`` ways (a pair's feature stack is tens of thousands of
    small operations, which two threads speed up by only 1.45x). Each chunk computes what
    it computes alone on one thread (the same bits as a 1-thread run); the noise is drawn
    beforehand in chunk order (the same stream).
    """
    chunks = _pair_chunks(x.shape[0], size[0] * size[1], x.device)
    noises: list[Optional[torch.Tensor]] = []
    for chunk in chunks:
        n = chunk.stop - chunk.start
        noises.append(config.noise * torch.randn((2 * n, 1, *size), generator=generator, device=x.device, dtype=x.dtype)
                      if config.noise > 0 else None)
    xd = x.detach()
    args = [(xd[c], base[c], target[c], feature, config, sigma, nz, size) for c, nz in zip(chunks, noises)]
    results = run_pieces(_chunk_gradient, args, x.device)
    loss = torch.cat([r[0] for r in results])
    grad = results[0][1] if len(results) == 1 else torch.cat([r[1] for r in results])
    return loss, grad


def _normalize_gradient(grad: torch.Tensor) -> None:
    """Divide each image's gradient (``grad`` ``(b, 2, C, H, W)``) by its root mean square,
    in place (an all-zero gradient stays zero)."""
    rms = grad.square().mean(dim=(2, 3, 4), keepdim=True).sqrt()
    grad.div_(torch.where(rms > 0, rms, torch.ones_like(rms)))


def _project_l2(x: torch.Tensor, base: torch.Tensor, max_mse: float, quantize: bool) -> None:
    """Shrink each image's change ``x - base`` (``(b, 2, C, H, W)``) towards ``base`` so
    that its mean square is at most ``max_mse``, in place, without a host sync. In 8-bit
    mode the bound holds for the rounded images: a second shrink follows where rounding
    pushed one over. ``base`` lies in the L-infinity box and [0, 1], which are convex, so a
    shrink keeps the images inside them."""
    for _ in range(3 if quantize else 1):
        delta = x - base
        seen = (quantize_8bit(x) - base) if quantize else delta
        mse = seen.square().mean(dim=(2, 3, 4), keepdim=True)
        shrink = torch.where(mse > max_mse, (max_mse / mse.clamp_min(1e-30)).sqrt() * (0.995 if quantize else 1.0),
                             torch.ones_like(mse))
        x.copy_(base + delta * shrink)


def _select_state(optimizer: torch.optim.Optimizer, old: torch.Tensor, new: torch.Tensor, keep: torch.Tensor) -> None:
    """Carry an optimiser's per-parameter state over to the kept pairs of a compacted leaf."""
    state = optimizer.state.pop(old, {})
    carried = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.shape == old.shape:
            value = value[keep]
        carried[key] = value
    optimizer.param_groups[0]["params"] = [new]
    if carried:
        optimizer.state[new] = carried


def attack_pair(
    img_a: torch.Tensor,
    img_b: torch.Tensor,
    target_homography: torch.Tensor,
    config: Optional[AttackConfig] = None,
    callback: Optional[ProgressCallback] = None,
    **overrides: Any,
) -> AttackResult:
    """Modify ``B`` pairs of images so that the matching pipeline finds the target
    homography between them (see the module docstring).

    Args:
        img_a: ``(B, C, H, W)`` floating images in [0, 1], ``C`` = 1 or 3.
        img_b: the second image of each pair, the shape, dtype and device of ``img_a``.
        target_homography: ``(B, 3, 3)`` invertible homographies mapping ``img_a`` pixels
            to ``img_b`` pixels.
        config: an :class:`AttackConfig` (default ``AttackConfig.default()``).
        callback: a :class:`~gradcv.optim.ProgressCallback`, called after every step with
            level 0, the step, and the ``(b,)`` losses of the pairs still running.
        **overrides: fields of the config to change (``iterations=100``, ``budget=None``...).

    Returns:
        An :class:`AttackResult`.

    Raises:
        ArgumentTypeError: ``config`` is not an ``AttackConfig``; a bad config value's type.
        ArgumentValueError: an unknown override or bad value; non-finite pixels; a singular
            or non-finite target.
        ShapeError: not ``(B, C, H, W)``, ``C`` not 1 or 3, different channel counts or
            sizes, a side smaller than a patch (41 px), a target not ``(B, 3, 3)``.
        DTypeError: integer images or targets, a dtype mismatch.
        DeviceError: images or target on different devices.

    Convention:
        See the module. The steps sync with the host only at the success checks (every
        ``check_every`` steps), where the pairs that succeeded leave the batch.

    Example:
        >>> a, b = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
        >>> r = attack_pair(a, b, torch.eye(3)[None], iterations=2, match=MatchConfig.paper(num_features=64))
        >>> r.adversarial_a.shape, r.loss_history[0].shape
        (torch.Size([1, 1, 64, 64]), torch.Size([1, 2]))
    """
    start = time.perf_counter()
    if config is None:
        config = AttackConfig.default()
    if not isinstance(config, AttackConfig):
        raise ArgumentTypeError("config", AttackConfig, type(config), f"config: expected an AttackConfig, got {type(config).__name__}")
    if overrides:
        config = config.replace(**overrides)
    _check_images(img_a, img_b)
    batch, _, height, width = img_a.shape
    device, dtype = img_a.device, img_a.dtype
    target = _check_target(target_homography, batch, device)

    orig = torch.stack([img_a.detach(), img_b.detach()], 1).clamp(0, 1)  # (B, 2, C, H, W)
    base = torch.round(orig * 255) / 255 if config.quantize else orig
    before = evaluate_attack(img_a, img_b, target, config, img_a, img_b)
    degenerate = before.match_status == int(MatchStatus.DEGENERATE_INPUT)

    lo, hi = torch.zeros_like(base), torch.ones_like(base)
    if config.budget is not None:
        eps = math.floor(config.budget * 255 + 1e-6) / 255 if config.quantize else config.budget
        lo, hi = (base - eps).clamp_min(0), (base + eps).clamp_max(1)
    if config.quantize:  # the bounds on the grid, so that rounding stays within them
        lo, hi = torch.round(lo * 255) / 255, torch.round(hi * 255) / 255

    feature = make_local_feature(config.match, device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    current = base.clone()  # every pair's latest images
    history = torch.full((batch, config.iterations), math.nan, dtype=dtype, device=device)
    steps = torch.zeros(batch, dtype=torch.long, device=device)
    finite = torch.ones(batch, dtype=torch.bool, device=device)

    active = torch.nonzero(~degenerate).flatten()  # one sync: which pairs are attacked
    x = base[active].clone().requires_grad_(True)
    kwargs = {"momentum": config.momentum} if config.momentum > 0 else {}
    if config.eps is not None and "eps" in inspect.signature(resolve_optimizer(config.optimizer)).parameters:
        kwargs["eps"] = config.eps
    optimizer = make_optimizer([x], config.optimizer, config.lr, kwargs)
    max_mse = None if config.psnr_budget is None else 10.0 ** (-config.psnr_budget / 10.0)
    a_lo, a_hi, a_target = lo[active], hi[active], target[active]
    for it in range(config.iterations):
        if active.numel() == 0:
            break
        sigma = config.blur * float(torch.rand((), generator=generator, device=device)) if config.blur > 0 else 0.0
        # On the CPU the pairs go forward and backward a few at a time, side by side on
        # several threads where there are (_pair_gradients): each pair's loss is its own, and
        # a graph the size of the whole batch made every temporary fresh memory (1.3x the
        # time per pair for 4 pairs of 400 x 300 in one graph).
        loss, grad = _pair_gradients(x, base[active], a_target, feature, config, sigma, generator, (height, width))
        x.grad = grad
        ok = torch.isfinite(loss)
        # A non-finite derivative of the feature stack at some pixel (measured: rare, on
        # 400 x 300 photographs after tens of steps) must not poison the images: that
        # pixel's step is skipped.
        assert x.grad is not None
        torch.nan_to_num_(x.grad, nan=0.0, posinf=0.0, neginf=0.0)
        if config.normalize == "l2":
            _normalize_gradient(x.grad)
        optimizer.step()
        with torch.no_grad():
            x.copy_(torch.minimum(torch.maximum(x, a_lo), a_hi))
            if max_mse is not None:
                _project_l2(x, base[active], max_mse, config.quantize)
            history[active, it] = loss.detach()
            steps[active] += 1
            finite[active] &= ok
        if callback is not None:
            callback(0, it, loss.detach())
        last = it + 1 == config.iterations
        if last or (config.check_every and (it + 1) % config.check_every == 0):
            with torch.no_grad():
                now = quantize_8bit(x) if config.quantize else x.detach()
                current[active] = now.detach()
                if not last:
                    metrics = evaluate_attack(now[:, 0], now[:, 1], a_target, config)
                    stop = metrics.success
                    if config.stop_inliers is not None:
                        stop = stop & (metrics.consistent_inliers >= config.stop_inliers)
                    done = stop | ~finite[active]
                    if bool(done.any()):
                        keep = torch.nonzero(~done).flatten()
                        new = x.detach()[keep].clone().requires_grad_(True)
                        _select_state(optimizer, x, new, keep)
                        x, active = new, active[keep]
                        a_lo, a_hi, a_target = a_lo[keep], a_hi[keep], a_target[keep]

    adv_a, adv_b = current[:, 0].contiguous(), current[:, 1].contiguous()
    after = evaluate_attack(adv_a, adv_b, target, config, img_a, img_b)
    status = sample_status(after.success, degenerate, finite)
    return AttackResult(loss_history=[history], iterations_used=steps[None], wall_time=time.perf_counter() - start,
                        status=status, adversarial_a=adv_a, adversarial_b=adv_b, before=before, after=after,
                        target_homography=target, config=config)

