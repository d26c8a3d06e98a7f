"""Dominant gradient orientation of patches and of local affine frames (Lowe's SIFT).

Kornia's names, arguments and return conventions (``kornia.feature.orientation``):
``PatchDominantGradientOrientation`` returns one angle per patch in radians, in the sense
that :class:`LAFOrienter` adds to a LAF's orientation (counter-clockwise on screen, as
:func:`~gradcv.core_ops.features.laf.laf_from_center_scale_ori`; OpenCV's
``KeyPoint.angle`` is the same angle clockwise: ``angle_cv = -degrees(angle) mod 360``).
The histogram is OpenCV's (``cv2.SIFT``): central-difference gradients, a Gaussian window
of sigma ``patch_size / 6`` (OpenCV's ``1.5 sigma`` over a radius of ``4.5 sigma``), 36
bins, smoothed by ``[1, 4, 6, 4, 1] / 16``, the peak refined by a parabola; each
gradient votes linearly into its two nearest bins (OpenCV rounds to one), so the angle is
differentiable. Lowe's extra orientations -- every other local peak above 0.8 of the
maximum -- come as extra frames with a validity mask (:meth:`LAFOrienter.multi_orient`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from gradcv.core_ops._checks import check_floating, check_int, check_real, check_same_device, check_shape
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.core_ops.features.siftdesc import _CPU_BLOCK_BYTES, _gradients, _polar

__all__ = ["LAFOrienter", "PassLAF", "PatchDominantGradientOrientation"]


class PassLAF(nn.Module):
    """Stand-in for an orientation or shape estimator: returns ``laf`` itself (Kornia's)."""

    def forward(self, laf: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """``laf (B, N, 2, 3)``, ``img`` unused -> ``laf``."""
        return laf


def _orientation_constants(patch_size: int, num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian window ``(PS*PS,)`` and the ``(A + 2, A)`` matrix that folds the
    histogram's angle slots into bins and smooths them circularly with ``[1,4,6,4,1]/16``."""
    sigma = patch_size / 6.0
    x = torch.arange(patch_size, dtype=torch.float64) - (patch_size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    window = torch.outer(g, g).reshape(-1)
    o = (num_bins + 1) // 2
    fold = torch.zeros(num_bins + 2, num_bins, dtype=torch.float64)
    fold[torch.arange(num_bins + 2), (torch.arange(num_bins + 2) - o) % num_bins] = 1.0
    smooth = torch.zeros(num_bins, num_bins, dtype=torch.float64)
    for shift, w in zip(range(-2, 3), (1.0, 4.0, 6.0, 4.0, 1.0)):
        smooth[(torch.arange(num_bins) + shift) % num_bins, torch.arange(num_bins)] += w / 16.0
    return window, fold @ smooth


def _blur_matrix(patch_size: int, sigma: float) -> torch.Tensor:
    """``(PS, PS)`` rows of a Gaussian of ``sigma`` pixels, each renormalised to sum 1 (the
    patch border is handled by truncation); ``B @ G @ B^T`` blurs a gradient image ``G``.
    Identity for ``sigma == 0``."""
    if sigma == 0:
        return torch.eye(patch_size, dtype=torch.float64)
    x = torch.arange(patch_size, dtype=torch.float64)
    g = torch.exp(-((x[:, None] - x[None]) ** 2) / (2 * sigma * sigma))
    return g / g.sum(1, keepdim=True)


def _parabolic(hist: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Sub-bin peak position ``index + offset`` of a circular histogram ``(B, A)`` at
    ``index (B, k)``: the vertex of the parabola through the peak and its two neighbours
    (0 where the three are collinear, e.g. an empty histogram)."""
    a = hist.shape[-1]
    centre = hist.gather(-1, index)
    left = hist.gather(-1, (index - 1).remainder(a))
    right = hist.gather(-1, (index + 1).remainder(a))
    denom = left - 2 * centre + right
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    offset = torch.where(denom != 0, 0.5 * (left - right) / safe, torch.zeros_like(denom))
    return index.to(hist.dtype) + offset


def _to_output_angle(position: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Bin position (gradient angle ``2 pi p / A`` from +x towards +y, y down) -> the
    counter-clockwise angle in radians, wrapped to ``(-pi, pi]``."""
    ang = -(2 * math.pi / num_bins) * position
    return torch.remainder(ang + math.pi, 2 * math.pi) - math.pi


class PatchDominantGradientOrientation(nn.Module):
    """The dominant gradient direction of square grayscale patches, in radians.

    Args:
        patch_size: side of the patches in pixels.
        num_angular_bins: histogram bins (OpenCV's 36).
        eps: kept for Kornia's signature; gradients are guarded without it (a flat patch
            gives angle 0, no NaN, in value or derivative).
        peak_ratio: keyword-only; a local peak at least this fraction of the maximum is an
            extra orientation in :meth:`multiple` (Lowe's 0.8).
        blur_sigma: keyword-only; Gaussian blur of the patch's gradients, in patch pixels. ``None`` (default) is ``patch_size / 9``: the keypoint's sigma for a
            patch spanning ``9 sigma``, i.e. the smoothing of the scale-space level on which
            OpenCV measures the orientation, for patches sampled from the plain image
            pyramid (measured on grace_hopper: 0.92 of cv2.SIFT keypoints get one of our
            orientations within 10 degrees, 0.65 without it). ``0`` disables it (Kornia's
            behaviour), for patches already taken from the keypoint's scale-space level.

    Shape:
        ``(B, 1, PS, PS) -> (B,)``.

    Convention:
        Patch pixel ``(i, j)`` is at ``x = j``, ``y = i`` (y down). The returned angle
        points the patch's ``+x`` axis at the dominant gradient (towards brighter values)
        when :class:`LAFOrienter` adds it to the LAF orientation: it is
        ``-atan2(g_y, g_x)`` of that gradient, counter-clockwise on screen, wrapped to
        ``(-pi, pi]`` (Kornia leaves it up to ``pi + pi / num_angular_bins``). OpenCV's
        ``KeyPoint.angle`` of the same gradient is ``-degrees(angle) mod 360``. The
        window (sigma ``PS / 6``) is OpenCV's for a patch spanning ``9 sigma`` of the
        keypoint (a LAF of scale ``4.5 sigma = 2.25 * KeyPoint.size``).

        Differences from Kornia's: central differences (OpenCV's), not Sobel; OpenCV's
        ``[1, 4, 6, 4, 1] / 16`` histogram smoothing, not a 5-tap Gaussian of sigma 1.6;
        bins centred on multiples of ``2 pi / A`` (OpenCV's).

    Example:
        >>> ramp = torch.arange(32.0).repeat(32, 1)[None, None] / 32  # brighter to the right
        >>> PatchDominantGradientOrientation()(ramp).abs().item() < 1e-6
        True
    """

    window: torch.Tensor
    fold_smooth: torch.Tensor
    blur: torch.Tensor

    def __init__(self, patch_size: int = 32, num_angular_bins: int = 36, eps: float = 1e-8, *,
                 peak_ratio: float = 0.8, blur_sigma: Optional[float] = None) -> None:
        super().__init__()
        self.patch_size = check_int(patch_size, "patch_size", 3)
        self.num_ang_bins = check_int(num_angular_bins, "num_angular_bins", 3)
        self.eps = check_real(eps, "eps", low=0.0)
        self.peak_ratio = check_real(peak_ratio, "peak_ratio", low=0.0, high=1.0)
        self.blur_sigma = patch_size / 9.0 if blur_sigma is None else check_real(blur_sigma, "blur_sigma", low=0.0)
        window, fold_smooth = _orientation_constants(patch_size, num_angular_bins)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("fold_smooth", fold_smooth, persistent=False)
        self.register_buffer("blur", _blur_matrix(patch_size, self.blur_sigma), persistent=False)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(patch_size={self.patch_size}, num_ang_bins={self.num_ang_bins}, eps={self.eps}, "
                f"blur_sigma={self.blur_sigma:g})")

    def histogram(self, patch: torch.Tensor) -> torch.Tensor:
        """The smoothed orientation histogram ``(B, num_angular_bins)``: bin ``k`` holds the
        windowed gradient magnitude near the angle ``2 pi k / A`` (from +x towards +y)."""
        check_shape(patch, ["B", 1, self.patch_size, self.patch_size], "patch")
        check_floating(patch, "patch")
        a, ps = self.num_ang_bins, self.patch_size
        window = self.window.to(patch.device, patch.dtype)
        blur = self.blur.to(patch.device, patch.dtype) if self.blur_sigma > 0 else None
        record = torch.is_grad_enabled() and patch.requires_grad
        step = patch.shape[0]
        if patch.device.type == "cpu":  # cache blocking, as SIFTDescriptor's
            step = max(1, _CPU_BLOCK_BYTES // (ps * ps * patch.element_size() * 12))
        parts = []
        for x in patch.split(step) if patch.shape[0] > 0 else (patch,):
            b = x.shape[0]
            gx, gy = _gradients(x)
            if blur is not None:
                # Blur the gradients rather than the patch (the same where the border does
                # not reach): a flat patch keeps an exactly zero gradient.
                gx, gy = blur @ gx @ blur.t(), blur @ gy @ blur.t()
            mag, ang = _polar(gx, gy)
            mag = mag.reshape(b, ps * ps) * window
            # Angle slot t = phi A / (2 pi) + o in (0, A + 1): votes into floor(t), floor(t) + 1.
            t = ang.reshape(b, ps * ps) * (a / (2 * math.pi)) + float((a + 1) // 2)
            lower = torch.floor(t).nan_to_num_(0.0, 0.0, 0.0)  # a non-finite pixel votes NaN into slot 0
            up = mag * (t - lower)
            # float index arithmetic (cheaper than int64), exact below 2**24 in float32
            idx_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
            offsets = torch.arange(b, device=x.device, dtype=idx_dtype) * (a + 2)
            index = (lower.to(idx_dtype) + offsets[:, None]).long().reshape(-1)
            slots = x.new_zeros(b * (a + 2) + 1)
            if record:
                slots = slots.scatter_add(0, torch.cat((index, index + 1)), torch.cat(((mag - up).reshape(-1), up.reshape(-1))))
            else:
                slots.scatter_add_(0, index, (mag - up).reshape(-1))
                slots[1:].scatter_add_(0, index, up.reshape(-1))
            parts.append(slots[:-1].reshape(b, a + 2))
        hist = parts[0] if len(parts) == 1 else torch.cat(parts)
        return hist @ self.fold_smooth.to(patch.device, patch.dtype)

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        """``(B, 1, PS, PS)`` -> ``(B,)`` angles in radians (see the class Convention)."""
        hist = self.histogram(patch)
        index = hist.argmax(-1, keepdim=True)
        return _to_output_angle(_parabolic(hist, index), self.num_ang_bins)[:, 0]

    def multiple(self, patch: torch.Tensor, max_orientations: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowe's orientations: the dominant one, then every other local histogram peak of at
        least ``peak_ratio`` times the maximum, strongest first.

        Args:
            patch: ``(B, 1, PS, PS)``.
            max_orientations: ``k``, the fixed number of slots per patch.

        Returns:
            ``angles (B, k)`` in radians (slot 0 is :meth:`forward`'s angle) and
            ``mask (B, k)``; slot 0 is always valid, an unused slot repeats slot 0's angle
            with ``False`` in the mask.
        """
        check_int(max_orientations, "max_orientations", 1)
        hist = self.histogram(patch)
        a = self.num_ang_bins
        k = min(max_orientations, a)
        top = hist.argmax(-1, keepdim=True)
        left = hist.roll(1, -1)
        right = hist.roll(-1, -1)
        peak = (hist > left) & (hist > right) & (hist >= self.peak_ratio * hist.gather(-1, top))
        peak = peak.scatter(-1, top, False)
        score = torch.where(peak, hist, torch.full_like(hist, -1.0))
        others, other_index = score.topk(k - 1, -1) if k > 1 else (hist[:, :0], top[:, :0])
        index = torch.cat((top, other_index), -1)
        valid = torch.cat((torch.ones_like(top, dtype=torch.bool), others >= 0), -1)
        angles = _to_output_angle(_parabolic(hist, index), a)
        angles = torch.where(valid, angles, angles[:, :1])
        if k < max_orientations:
            pad = max_orientations - k
            angles = torch.cat((angles, angles[:, :1].expand(-1, pad)), -1)
            valid = torch.cat((valid, valid.new_zeros(valid.shape[0], pad)), -1)
        return angles, valid


class LAFOrienter(nn.Module):
    """Orient local affine frames by the dominant gradient of their patches.

    Args:
        patch_size: side of the patch sampled for each LAF.
        num_angular_bins: histogram bins of the default detector (unused with
            ``angle_detector``).
        angle_detector: ``(B, 1, PS, PS) -> (B,)`` radians; default
            :class:`PatchDominantGradientOrientation`.
        max_orientations: keyword-only; slots per LAF in :meth:`multi_orient` (needs a
            detector with a ``multiple`` method, as the default).

    Shape:
        ``laf (B, N, 2, 3), img (B, 1, H, W) -> (B, N, 2, 3)``.

    Convention:
        The patch of each LAF is :func:`~gradcv.core_ops.features.laf.extract_patches_from_pyramid`'s
        (it spans ``2 * scale`` pixels); the output is ``rotate_laf(laf, degrees(angle))``:
        centre and region kept, the patch's ``+x`` axis turned onto the dominant gradient.
        For an OpenCV keypoint of ``sigma = KeyPoint.size / 2``, OpenCV's orientation
        window is this one at LAF scale ``4.5 sigma``; the result's
        :func:`~gradcv.core_ops.features.laf.get_laf_orientation` is then ``-KeyPoint.angle``
        (mod 360) of ``cv2.SIFT``.

    Example:
        >>> from gradcv.core_ops.features.laf import laf_from_center_scale_ori
        >>> img = torch.rand(1, 1, 64, 64)
        >>> laf = laf_from_center_scale_ori(torch.tensor([[[32.0, 32.0]]]), torch.full((1, 1, 1, 1), 10.0))
        >>> LAFOrienter()(laf, img).shape
        torch.Size([1, 1, 2, 3])
    """

    def __init__(self, patch_size: int = 32, num_angular_bins: int = 36, angle_detector: Optional[nn.Module] = None,
                 *, max_orientations: int = 4) -> None:
        super().__init__()
        self.patch_size = check_int(patch_size, "patch_size", 3)
        self.num_ang_bins = check_int(num_angular_bins, "num_angular_bins", 3)
        self.max_orientations = check_int(max_orientations, "max_orientations", 1)
        if angle_detector is None:
            angle_detector = PatchDominantGradientOrientation(patch_size, num_angular_bins)
        elif not isinstance(angle_detector, nn.Module):
            raise ArgumentTypeError("angle_detector", nn.Module, type(angle_detector),
                                    f"angle_detector: expected a torch.nn.Module, got {type(angle_detector).__name__}")
        self.angle_detector = angle_detector

    def __repr__(self) -> str:
        return f"{type(self).__name__}(patch_size={self.patch_size}, angle_detector={self.angle_detector})"

    def _patches(self, laf: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        from gradcv.core_ops.features.laf import extract_patches_from_pyramid

        check_shape(laf, ["B", "N", 2, 3], "laf")
        check_floating(laf, "laf")
        check_shape(img, ["B", 1, "H", "W"], "img")
        check_floating(img, "img")
        if laf.shape[0] != img.shape[0]:
            raise ShapeError("laf", (img.shape[0], "N", 2, 3), tuple(laf.shape),
                             f"laf: expected the batch size of img ({img.shape[0]}), got shape {tuple(laf.shape)}")
        check_same_device(laf, "laf", img, "img")
        ps = self.patch_size
        return extract_patches_from_pyramid(img, laf, ps).reshape(-1, 1, ps, ps)

    def forward(self, laf: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """``laf (B, N, 2, 3)``, ``img (B, 1, H, W)`` -> oriented ``(B, N, 2, 3)``."""
        from gradcv.core_ops.features.laf import rotate_laf

        b, n = laf.shape[:2] if isinstance(laf, torch.Tensor) and laf.ndim == 4 else (0, 0)
        patches = self._patches(laf, img)
        angles = self.angle_detector(patches).reshape(b, n, 1)
        return rotate_laf(laf, torch.rad2deg(angles).to(laf.dtype))

    def multi_orient(
        self, laf: torch.Tensor, img: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowe's multiple orientations as extra frames, with a validity mask.

        Args:
            laf: ``(B, N, 2, 3)``.
            img: ``(B, 1, H, W)``.
            mask: optional ``(B, N)`` bool validity of the input LAFs (e.g. a detector's).

        Returns:
            ``lafs (B, N * k, 2, 3)`` and ``mask (B, N * k)``, ``k = max_orientations``;
            LAF ``n``'s orientations are entries ``n * k .. n * k + k - 1`` (reshape to
            ``(B, N, k, 2, 3)``), the first being :meth:`forward`'s; an unused slot holds
            that first frame again, marked ``False``.
        """
        from gradcv.core_ops.features.laf import rotate_laf

        if not hasattr(self.angle_detector, "multiple"):
            raise ArgumentValueError("angle_detector", "a detector with a multiple() method", type(self.angle_detector).__name__,
                                     "angle_detector: multi_orient needs a detector with a multiple() method, "
                                     f"got {type(self.angle_detector).__name__}")
        patches = self._patches(laf, img)
        b, n = laf.shape[:2]
        k = self.max_orientations
        if mask is not None:
            check_shape(mask, [b, n], "mask")
            if mask.dtype != torch.bool:
                raise ArgumentTypeError("mask", torch.bool, mask.dtype, f"mask: expected a bool tensor, got {mask.dtype}")
        angles, valid = self.angle_detector.multiple(patches, k)
        angles = angles.reshape(b, n * k, 1)
        valid = valid.reshape(b, n, k)
        if mask is not None:
            valid = valid & mask[..., None]
        repeated = laf.unsqueeze(2).expand(b, n, k, 2, 3).reshape(b, n * k, 2, 3)
        return rotate_laf(repeated, torch.rad2deg(angles).to(laf.dtype)), valid.reshape(b, n * k)
