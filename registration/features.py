"""A start from matched local features, for the pairs the direct solver leaves undetermined.

A DeTone pair cut from a near-textureless part of a photograph (sky, smoke) can have its
only coarse-level basin in the wrong place: no start of the rescue's grid reaches the truth.
Local features do not need a basin: Hessian blobs, upright SIFT descriptors, mutual nearest
neighbours and LO-RANSAC give a homography a few tenths of a pixel from the truth wherever a
dozen features repeat, which the direct solver then refines
(:meth:`gradcv.registration.solver.HomographyRegistration._rescue`). Built from ``gradcv.core_ops.features`` and
``gradcv.core_ops.geometry`` directly: the registration solver does not depend on
``gradcv.matching``.

The configuration is chosen for the small images of the rescue (measured on DeTone pairs,
128², seeds 1-2 of rocket, coffee and camera, 20 pairs each): Hessian blobs on the doubled
image (without it a 128² patch of rocket has 84 features and 70 % of its pairs come within
2 px; doubled, 256 of them and 100 %; DoG on the doubled image 90 % of rocket's), upright
frames (the same success as Lowe's orientations in 3/4 of the time: the rescue's motions
turn the image little), 256 features per image (128: 85-90 % of rocket's and coffee's within
2 px), mutual nearest neighbours, RootSIFT on a 32-pixel patch: ~45 ms a pair (two 128²
images) on one thread, nearly all of it detection and description.

Convention:
    Pixel coordinates, centres at integers; the homography maps ``src`` pixels to ``dst``
    pixels (:func:`gradcv.registration.register_homography`'s meaning).
"""

from __future__ import annotations

import functools

import torch

from gradcv.core_ops.color.gray import rgb_to_grayscale
from gradcv.core_ops.features.integrated import MIN_IMAGE_SIZE, SIFT_DESCRIPTOR_SCALE, LocalFeature
from gradcv.core_ops.features.laf import get_laf_center
from gradcv.core_ops.features.matching import match_mnn
from gradcv.core_ops.features.responses import BlobHessian
from gradcv.core_ops.features.scale_space_detector import ScaleSpaceDetector
from gradcv.core_ops.features.siftdesc import LAFDescriptor, SIFTDescriptor
from gradcv.core_ops.geometry.robust import ransac
from gradcv.core_ops.pyramid import ScalePyramid

#: RANSAC's inlier threshold (pixels of ``dst``, one-way transfer error): OpenCV's
#: ``findHomography`` default.
FEATURE_THRESHOLD = 3.0
#: A feature homography needs this many inliers (mutual nearest neighbours: each on its own
#: keypoint of both images) to be a start.
FEATURE_MIN_INLIERS = 12
#: RANSAC's budget: ``(batch, rounds)`` of minimal samples, and its stopping confidence.
FEATURE_RANSAC = (256, 4, 0.999)
#: Pixels across the descriptor's patch (the window is SIFT's whatever the size; 32 is
#: ``SIFTFeature``'s): on 64 DeTone pairs of four photographs (tuning seeds) the same starts
#: (100 % within 3 px, median 0.27 px) as ``HessianSIFT``'s 41, in ~10 % less time (the
#: detector's pyramid and maxima are most of it).
FEATURE_PATCH = 32


@functools.lru_cache(maxsize=4)
def _local_feature(num_features: int, device: torch.device) -> LocalFeature:
    """The detector and descriptor, made once per feature count and device (the module
    holds constant buffers only): ``HessianSIFT``'s upright detector (Hessian blobs of a
    3-level-per-octave pyramid of the doubled image, soft refinement, every maximum) with
    RootSIFT sampled on :data:`FEATURE_PATCH` pixels."""
    pyramid = ScalePyramid(3, 1.6, 15, double_image=True, extra_levels=2)
    detector = ScaleSpaceDetector(num_features, SIFT_DESCRIPTOR_SCALE, pyramid, BlobHessian(), "soft", contrast_threshold=0.0)
    descriptor = LAFDescriptor(SIFTDescriptor(FEATURE_PATCH, rootsift=True), patch_size=FEATURE_PATCH)
    return LocalFeature(detector, descriptor).to(device)


def _gray(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` float32 grey of ``(N, C, H, W)`` images: BT.601 for 3 channels, the
    mean of the channels otherwise."""
    images = images.detach()
    if images.shape[1] == 3:
        images = rgb_to_grayscale(images)
    elif images.shape[1] != 1:
        images = images.mean(1, keepdim=True)
    return images.to(torch.float32).contiguous()


def feature_homography(
    src: torch.Tensor,
    dst: torch.Tensor,
    num_features: int,
    masks: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The homography of each pair from matched local features.

    Args:
        src, dst: ``(R, C, H, W)`` images (values about [0, 1]; any floating dtype, any
            device).
        num_features: features detected per image (the strongest Hessian responses).
        masks: optional ``(src_mask, dst_mask)``, each ``(R, 1, H, W)``: features are
            detected only where a mask is above one half.

    Returns:
        ``(H (R, 3, 3) float64, found (R,) bool)``: pixel homographies taking ``src`` pixels
        to ``dst`` pixels, ``H[2, 2] = 1``, and whether each is a start: at least
        :data:`FEATURE_MIN_INLIERS` RANSAC inliers, finite, orientation-preserving on
        ``dst``'s corners (:func:`_preserves_orientation`). Where
        not found, ``H`` is the identity. Images smaller than the detector's ``MIN_IMAGE_SIZE`` (41 px)
        find none. Without gradient. RANSAC reads the host a few times per round (its
        loop's length depends on the data); the rest runs where the images are.
    """
    R, device = src.shape[0], src.device
    eye = torch.eye(3, dtype=torch.float64, device=device).repeat(R, 1, 1)
    found = torch.zeros(R, dtype=torch.bool, device=device)
    if R == 0 or min(src.shape[-2:]) < MIN_IMAGE_SIZE:
        return eye, found
    with torch.no_grad():
        images = torch.cat([_gray(src), _gray(dst)])
        mask = None if masks is None else (torch.cat([masks[0], masks[1]]).detach() > 0.5).to(images.dtype)
        feature = _local_feature(num_features, device)
        lafs, _, descriptors, valid = feature.detect_and_describe(images, mask)
        keypoints = get_laf_center(lafs).to(torch.float64)
        _, idx, matched = match_mnn(descriptors[:R], descriptors[R:], mask1=valid[:R], mask2=valid[R:])
        p1 = keypoints[:R].gather(1, idx[..., :1].expand(-1, -1, 2))
        p2 = keypoints[R:].gather(1, idx[..., 1:].expand(-1, -1, 2))
        batch, rounds, confidence = FEATURE_RANSAC
        H, inliers = ransac(
            p1, p2, matched.to(torch.float64), inl_th=FEATURE_THRESHOLD, batch_size=batch, max_iter=rounds,
            confidence=confidence, seed=0,
        )
        count = (inliers & matched).sum(1)
        finite = torch.isfinite(H).flatten(1).all(1) & (H.abs().flatten(1).amax(1) > 0)
        safe = torch.where(finite[:, None, None], H, eye)
        found = finite & (count >= FEATURE_MIN_INLIERS) & _preserves_orientation(safe, src.shape[-2:])
        return torch.where(found[:, None, None], safe, eye), found


def _preserves_orientation(H: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(R,)``: whether ``H^-1`` (``dst`` to ``src``, the direction the solver works in)
    keeps the orientation at the four corners of ``dst``: its Jacobian determinant there,
    ``det(H^-1) / w^3``, is positive (``w`` the homogeneous coordinate of the corner's image).
    Testing ``det(H) > 0`` alone is wrong: a DeTone pair with a strong perspective has its
    ``src`` straddle the line ``H`` sends to infinity, and ``det(H) < 0`` with ``H[2, 2] = 1``
    (measured on a rocket pair, whose truth is such a matrix)."""
    h, w = size
    inverse, info = torch.linalg.inv_ex(H)  # no error (and no look at the host) on a singular H
    corners = torch.tensor([[0.0, 0.0, 1.0], [w - 1.0, 0.0, 1.0], [w - 1.0, h - 1.0, 1.0], [0.0, h - 1.0, 1.0]],
                           dtype=H.dtype, device=H.device)
    third = corners @ inverse[:, 2:].transpose(-1, -2)  # (R, 4, 1): w of each corner's image
    det = torch.linalg.det(inverse)
    ok = (det[:, None] * third[..., 0] > 0).all(1)
    return ok & (info == 0) & torch.isfinite(inverse).flatten(1).all(1)
