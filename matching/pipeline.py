"""Two-view matching: detection -> orientation -> SIFT description -> descriptor matching
-> RANSAC homography, batched over independent image pairs.

:func:`match_pair` runs one ``gradcv.core_ops.features`` pipeline (:class:`HessianSIFT` or
:class:`SIFTFeature`) on both images of every pair in one batched call, matches the
descriptors of each pair with the batched, masked matchers of
:mod:`gradcv.core_ops.features.matching`, and fits a homography per pair with the batched
LO-RANSAC of :func:`gradcv.core_ops.geometry.robust.ransac`. Every data-dependent size
(features, matches, inliers) is a fixed number of slots with a validity mask.

Gradients: the keypoints, LAFs, descriptors and match distances keep the autograd graph
of the images when those require grad (detection refinement, orientation, patch sampling,
description and the distances of the selected pairs are differentiable; which pairs are
selected is not). RANSAC runs without gradient: refit the returned inliers with
:func:`~gradcv.core_ops.geometry.homography.find_homography_dlt` to differentiate a
homography.

Convention:
    Pixel ``(x, y)``, x to the right, y down, pixel centres at integer coordinates
    (OpenCV's ``KeyPoint.pt``). ``homography`` maps ``img1`` pixels to ``img2`` pixels:
    ``H @ [x1, y1, 1]^T ~ [x2, y2, 1]^T``, scaled to ``H[2, 2] = 1``.
"""

from __future__ import annotations

import enum
import functools
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from gradcv.core_ops._checks import check_floating, check_same_device, check_shape
from gradcv.core_ops.color.gray import rgb_to_grayscale
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from gradcv.core_ops.features.integrated import HessianSIFT, LocalFeature, SIFTFeature
from gradcv.core_ops.features.laf import get_laf_center
from gradcv.core_ops.features.matching import match_mnn, match_snn
from gradcv.core_ops.geometry.robust import ransac
from gradcv.matching._threads import run_pieces, side_by_side_count
from gradcv.matching.config import MatchConfig

__all__ = ["MatchResult", "MatchStatus", "PATCH_SIZE", "distinct_inliers", "make_local_feature", "match_descriptors", "match_pair"]

#: Side of the descriptor patches: the smallest image side the pipeline takes.
PATCH_SIZE = 41
#: Correspondences in a homography's minimal sample.
_MINIMAL = 4


class MatchStatus(enum.IntEnum):
    """Outcome of a pair (its code in :attr:`MatchResult.status`); the codes of
    :class:`gradcv.optim.SolverStatus` where the meaning is shared (0 success, 2 degenerate
    input, 3 non-finite)."""

    FOUND = 0  #: a homography with ``min_inliers`` inliers on as many distinct keypoints of each image
    FEW_INLIERS = 1  #: features were found but no homography has ``min_inliers`` distinct inliers
    DEGENERATE_INPUT = 2  #: fewer than 4 features in an image (no texture)
    NON_FINITE = 3  #: the homography is not finite


@dataclass
class MatchResult:
    """What :func:`match_pair` found for ``B`` pairs.

    Not a :class:`gradcv.optim.SolverResult`: the pipeline is not iterative, so it has no
    loss history nor iterations; it shares that class's ``wall_time`` and ``status``
    fields (:class:`MatchStatus` codes, numbered as ``SolverStatus`` where they mean the same).

    Attributes:
        keypoints1: ``(B, N1, 2)`` keypoints of ``img1`` (the LAF centres) in pixels; zero
            at padding slots.
        keypoints2: ``(B, N2, 2)`` keypoints of ``img2``.
        matches: ``(B, M, 2)`` int64 index pairs ``(i into keypoints1, j into
            keypoints2)``, the valid ones first, in ascending ``i``; ``(0, 0)`` where
            ``match_mask`` is False. ``M = N1`` (each keypoint of ``img1`` has at most
            one partner).
        match_mask: ``(B, M)`` bool, the valid matches.
        match_distances: ``(B, M)`` the matcher's score of each match: the
            nearest / second-nearest distance ratio for ``'snn'``, the descriptor distance
            for ``'mnn'``; zero where invalid. Differentiable.
        inliers: ``(B, M)`` bool, RANSAC's inliers among the valid matches (one-way
            transfer error ``<= ransac_threshold`` under ``homography``).
        homography: ``(B, 3, 3)`` float64 pixel homographies mapping ``img1`` to
            ``img2``, ``H[2, 2] = 1``; zero where RANSAC found no model.
        lafs1, lafs2: ``(B, N, 2, 3)`` the local affine frames described (zero at padding).
        responses1, responses2: ``(B, N)`` detector responses (zero at padding).
        descriptors1, descriptors2: ``(B, N, 128)`` descriptors (zero at padding).
        valid1, valid2: ``(B, N)`` bool feature validity masks.
        status: ``(B,)`` int8 :class:`MatchStatus` codes.
        wall_time: seconds spent in the call.
        config: the :class:`MatchConfig` used.
    """

    keypoints1: torch.Tensor
    keypoints2: torch.Tensor
    matches: torch.Tensor
    match_mask: torch.Tensor
    match_distances: torch.Tensor
    inliers: torch.Tensor
    homography: torch.Tensor
    lafs1: torch.Tensor
    lafs2: torch.Tensor
    responses1: torch.Tensor
    responses2: torch.Tensor
    descriptors1: torch.Tensor
    descriptors2: torch.Tensor
    valid1: torch.Tensor
    valid2: torch.Tensor
    status: torch.Tensor
    wall_time: float
    config: MatchConfig

    @property
    def num_matches(self) -> torch.Tensor:
        """``(B,)`` int64 valid matches per pair."""
        return self.match_mask.sum(1)

    @property
    def num_inliers(self) -> torch.Tensor:
        """``(B,)`` int64 RANSAC inliers per pair."""
        return self.inliers.sum(1)

    @property
    def num_distinct_inliers(self) -> torch.Tensor:
        """``(B,)`` int64 inliers counted once per keypoint: the fewer of the distinct
        keypoints of ``img1`` and of ``img2`` among the inliers (see :func:`distinct_inliers`)."""
        return distinct_inliers(self.matches, self.inliers, self.keypoints1.shape[1], self.keypoints2.shape[1])

    @property
    def found(self) -> torch.Tensor:
        """``(B,)`` bool: the status is :attr:`MatchStatus.FOUND`."""
        return self.status == int(MatchStatus.FOUND)

    def matched_keypoints(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, M, 2)`` keypoints of ``img1`` and of ``img2`` of each match slot (zero where
        ``match_mask`` is False); differentiable."""
        return _matched_points(self.keypoints1, self.keypoints2, self.matches, self.match_mask)


def _feature_key(config: MatchConfig) -> tuple:
    return (config.detector, config.num_features, config.orientation, config.max_orientations, config.rootsift,
            config.subpix, config.contrast_threshold, config.double_image, config.scale_smoothing)


@functools.lru_cache(maxsize=8)
def _cached_local_feature(key: tuple, device: torch.device) -> LocalFeature:
    detector, num_features, orientation, max_orientations, rootsift, subpix, contrast, double_image, smoothing = key
    options: dict[str, Any] = dict(subpix_module=subpix, double_image=double_image, max_orientations=max_orientations,
                                   scale_smoothing=smoothing)
    if contrast is not None:
        options["contrast_threshold"] = contrast
    cls = HessianSIFT if detector == "hessian" else SIFTFeature
    return cls(num_features, upright=not orientation, rootsift=rootsift, **options).to(device)


def make_local_feature(config: Optional[MatchConfig] = None, device: torch.device | str = "cpu") -> LocalFeature:
    """The ``LocalFeature`` of a config (:class:`HessianSIFT` or :class:`SIFTFeature`),
    built once per config and device and reused (the modules hold only constant buffers).

    Example:
        >>> type(make_local_feature(MatchConfig(detector="dog", num_features=16))).__name__
        'SIFTFeature'
    """
    config = MatchConfig() if config is None else config
    if not isinstance(config, MatchConfig):
        raise ArgumentTypeError("config", MatchConfig, type(config), f"config: expected a MatchConfig, got {type(config).__name__}")
    return _cached_local_feature(_feature_key(config), torch.device(device))


def match_descriptors(
    desc1: torch.Tensor, desc2: torch.Tensor, valid1: torch.Tensor, valid2: torch.Tensor, config: MatchConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match ``(B, N1, D)`` against ``(B, N2, D)`` descriptors with the config's matcher.

    Returns:
        ``(matches (B, N1, 2) int64, match_mask (B, N1) bool, match_distances (B, N1))``,
        compacted: the valid matches first, in ascending index into ``desc1`` (see
        :class:`MatchResult`).
    """
    if config.matcher == "snn":
        dists, idxs, mask = match_snn(desc1, desc2, config.ratio, mask1=valid1, mask2=valid2)
    else:
        dists, idxs, mask = match_mnn(desc1, desc2, mask1=valid1, mask2=valid2)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    mask = mask.gather(1, order)
    idxs = torch.where(mask[..., None], idxs.gather(1, order[..., None].expand(-1, -1, 2)), 0)
    dists = dists[..., 0].gather(1, order)
    dists = torch.where(mask, dists, torch.zeros((), dtype=dists.dtype, device=dists.device))
    return idxs, mask, dists


def _matched_points(
    kp1: torch.Tensor, kp2: torch.Tensor, matches: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    p1 = kp1.gather(1, matches[..., :1].expand(-1, -1, 2))
    p2 = kp2.gather(1, matches[..., 1:].expand(-1, -1, 2))
    zero = torch.zeros((), dtype=kp1.dtype, device=kp1.device)
    return torch.where(mask[..., None], p1, zero), torch.where(mask[..., None], p2, zero)


def distinct_inliers(matches: torch.Tensor, inliers: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """``(B,)`` the fewer of the distinct ``img1`` and the distinct ``img2`` keypoints among
    the inliers.

    The ratio test lets many keypoints of ``img1`` match one of ``img2``; on unrelated
    images RANSAC then finds near-singular homographies that send a row of ``img1``
    keypoints onto that one point (measured: 13 "inliers" on 4 keypoints of ``img2``
    between two unrelated 640 x 480 photographs). Counted once per keypoint, such a
    model has the support it really has.

    Args:
        matches: ``(B, M, 2)`` index pairs.
        inliers: ``(B, M)`` bool.
        n1, n2: keypoint slots of ``img1`` and ``img2``.

    Example:
        >>> matches = torch.tensor([[[0, 5], [1, 5], [2, 5], [3, 6]]])
        >>> distinct_inliers(matches, torch.tensor([[True, True, True, True]]), 4, 8)
        tensor([2])
    """
    counts = []
    for side, n in ((0, n1), (1, n2)):
        hit = torch.zeros(inliers.shape[0], max(n, 1), dtype=torch.int32, device=inliers.device)
        hit.scatter_add_(1, matches[..., side], inliers.to(torch.int32))
        counts.append((hit > 0).sum(1))
    return torch.minimum(counts[0], counts[1])


def _check_images(img1: object, img2: object) -> None:
    """Both ``(B, C, H, W)`` floating, C in (1, 3), the same shape, dtype and device, at
    least a patch on each side, finite."""
    for img, name in ((img1, "img1"), (img2, "img2")):
        check_shape(img, ["B", "C", "H", "W"], name)
        assert isinstance(img, torch.Tensor)
        if img.shape[1] not in (1, 3):
            raise ShapeError(name, ("B", "1 or 3", "H", "W"), tuple(img.shape),
                             f"{name}: expected 1 (gray) or 3 (RGB) channels, got shape {tuple(img.shape)}")
        check_floating(img, name)
    assert isinstance(img1, torch.Tensor) and isinstance(img2, torch.Tensor)
    if img2.shape != img1.shape:
        raise ShapeError("img2", tuple(img1.shape), tuple(img2.shape),
                         f"img2: expected the shape of img1 {tuple(img1.shape)}, got {tuple(img2.shape)}")
    check_same_device(img2, "img2", img1, "img1")
    if img2.dtype != img1.dtype:
        raise DTypeError("img2", img1.dtype, img2.dtype, f"img2: expected dtype {img1.dtype} (the dtype of img1), got {img2.dtype}")
    if min(img1.shape[-2:]) < PATCH_SIZE:
        raise ShapeError("img1", ("B", "C", f"H >= {PATCH_SIZE}", f"W >= {PATCH_SIZE}"), tuple(img1.shape),
                         f"img1: expected height and width of at least a patch ({PATCH_SIZE} pixels), got {tuple(img1.shape)}")
    for img, name in ((img1, "img1"), (img2, "img2")):
        if img.numel() and not bool(torch.isfinite(img).all()):
            raise ArgumentValueError(name, "finite values", "NaN or infinity", f"{name}: expected finite values, got NaN or infinity")


def _resolve_config(config: object, overrides: dict[str, Any]) -> MatchConfig:
    if config is None:
        config = MatchConfig()
    if not isinstance(config, MatchConfig):
        raise ArgumentTypeError("config", MatchConfig, type(config), f"config: expected a MatchConfig, got {type(config).__name__}")
    return config.replace(**overrides) if overrides else config


def _features(feature: LocalFeature, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``feature.detect_and_describe(images)``; on a CPU with several threads, the chunks
    it would work through one after another (:data:`CPU_CHUNK_PIXELS`) go side by side
    instead, one intra-op thread each (:func:`~gradcv.matching._threads.run_pieces`):
    the same values, each chunk's those of a 1-thread run."""
    from gradcv.core_ops.features.integrated import cpu_chunks

    h, w = images.shape[-2:]
    chunks = cpu_chunks(images.shape[0], h * w)
    if side_by_side_count(len(chunks), images.device) == 0:
        return feature.detect_and_describe(images)
    parts = run_pieces(feature.detect_and_describe, [(images[c],) for c in chunks], images.device)
    return tuple(torch.cat(t, 0) for t in zip(*parts))  # type: ignore[return-value]


def match_pair(img1: torch.Tensor, img2: torch.Tensor, config: Optional[MatchConfig] = None, **overrides: Any) -> MatchResult:
    """Match ``B`` image pairs and fit a homography to each: features of both images (one
    batched call), descriptor matching, RANSAC.

    Args:
        img1: ``(B, C, H, W)`` floating images, ``C`` = 1 (gray) or 3 (RGB, converted with
            the BT.601 weights inside), values in [0, 1].
        img2: the second image of each pair, the shape, dtype and device of ``img1``.
        config: a :class:`MatchConfig` (default: ``MatchConfig()``).
        **overrides: fields of the config to change (``matcher='mnn'``, ``num_features=500``...).

    Returns:
        A :class:`MatchResult`.

    Raises:
        ArgumentTypeError: ``config`` is not a ``MatchConfig``, or a bad config value's type.
        ArgumentValueError: an unknown override, a bad config value, non-finite pixels.
        ShapeError: not ``(B, C, H, W)``, ``C`` not 1 or 3, ``img2``'s shape not
            ``img1``'s (channels or size), a side smaller than a patch (41 px).
        DTypeError: integer images, or ``img2``'s dtype not ``img1``'s.
        DeviceError: ``img2`` on another device than ``img1``.

    Convention:
        See the module: pixel centres at integer coordinates; ``homography`` maps ``img1``
        pixels to ``img2`` pixels. RANSAC draws the samples of all pairs from one seeded
        stream, so a pair's homography in a batch is equally good as, not bit-identical
        to, the one of a call on that pair alone; the features and matches are the same.

    Example:
        >>> img = torch.rand(1, 1, 64, 64)
        >>> r = match_pair(img, img, num_features=64)
        >>> r.matches.shape[-1], r.homography.shape, r.status.dtype
        (2, torch.Size([1, 3, 3]), torch.int8)
    """
    start = time.perf_counter()
    config = _resolve_config(config, overrides)
    _check_images(img1, img2)
    b = img1.shape[0]
    images = torch.cat([img1, img2])
    if images.shape[1] == 3:
        images = rgb_to_grayscale(images)
    feature = make_local_feature(config, images.device)
    lafs, responses, descriptors, valid = _features(feature, images)
    lafs1, lafs2 = lafs[:b], lafs[b:]
    desc1, desc2 = descriptors[:b], descriptors[b:]
    valid1, valid2 = valid[:b], valid[b:]
    kp1, kp2 = get_laf_center(lafs1), get_laf_center(lafs2)
    matches, match_mask, distances = match_descriptors(desc1, desc2, valid1, valid2, config)

    m = matches.shape[1]
    if b > 0 and m >= _MINIMAL:
        with torch.no_grad():
            # The valid matches come first: RANSAC sees only the slots some pair fills (one
            # host sync). It scores every hypothesis on every slot, and ratio-tested matches
            # fill a few dozen of the N1 slots (5-18 of 1000 on unrelated 400 x 300 pairs:
            # 70 ms a pair alone, 140 ms a pair in a batch of 4, where every pair is scored
            # until the last one stops). Padding weighs nothing and is never sampled, so the
            # model is the same up to float rounding.
            used = min(m, max(_MINIMAL, int(match_mask.sum(1).max())))
            p1, p2 = _matched_points(kp1.detach().double(), kp2.detach().double(), matches[:, :used], match_mask[:, :used])
            homography, inliers = ransac(
                p1, p2, match_mask[:, :used].double(), inl_th=config.ransac_threshold, batch_size=config.ransac_batch_size,
                max_iter=config.ransac_iterations, confidence=config.ransac_confidence, seed=config.seed,
            )
            if used < m:
                inliers = torch.cat([inliers, inliers.new_zeros(b, m - used)], 1)
        inliers = inliers & match_mask
    else:
        homography = torch.zeros(b, 3, 3, dtype=torch.float64, device=images.device)
        inliers = torch.zeros_like(match_mask)

    count = distinct_inliers(matches, inliers, kp1.shape[1], kp2.shape[1])
    status = torch.where(count >= config.min_inliers, int(MatchStatus.FOUND), int(MatchStatus.FEW_INLIERS))
    degenerate = (valid1.sum(1) < _MINIMAL) | (valid2.sum(1) < _MINIMAL)
    status = torch.where(degenerate, int(MatchStatus.DEGENERATE_INPUT), status)
    finite = torch.isfinite(homography).flatten(1).all(1)
    status = torch.where(finite, status, int(MatchStatus.NON_FINITE)).to(torch.int8)

    return MatchResult(
        keypoints1=kp1, keypoints2=kp2, matches=matches, match_mask=match_mask, match_distances=distances,
        inliers=inliers, homography=homography, lafs1=lafs1, lafs2=lafs2, responses1=responses[:b],
        responses2=responses[b:], descriptors1=desc1, descriptors2=desc2, valid1=valid1, valid2=valid2,
        status=status, wall_time=time.perf_counter() - start, config=config,
    )
