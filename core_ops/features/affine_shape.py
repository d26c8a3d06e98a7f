"""Affine shape of local features from the second-moment matrix of patch gradients
(Baumberg 2000; the shape adaptation of Mikolajczyk & Schmid's Hessian-Affine).

Kornia's names, arguments and return conventions (``kornia.feature.affine_shape``):
:class:`PatchAffineShapeEstimator` returns the normalised second-moment matrix
``(a, b, c)`` of each patch, :class:`LAFAffineShapeEstimator` turns a LAF into the ellipse
of that matrix (one step of the iterative adaptation; call it repeatedly to converge).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from gradcv.core_ops._checks import check_bool, check_floating, check_int, check_real, check_same_device, check_shape
from gradcv.core_ops.errors import ArgumentTypeError, ShapeError
from gradcv.core_ops.filters import spatial_gradient

__all__ = ["LAFAffineShapeEstimator", "PatchAffineShapeEstimator"]


def _gaussian_window(patch_size: int) -> torch.Tensor:
    """Kornia's weighting: a ``patch_size`` square Gaussian of sigma ``patch_size / sqrt 2``,
    summing to 1."""
    sigma = patch_size / math.sqrt(2.0)
    x = torch.arange(patch_size, dtype=torch.float64) - (patch_size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g)


class PatchAffineShapeEstimator(nn.Module):
    """The second-moment matrix of the gradients of square grayscale patches.

    Args:
        patch_size: side of the patches in pixels.
        eps: a matrix whose normalised determinant ``(a c - b^2) / max^2`` is at most
            ``eps`` (a flat patch, a straight edge in any direction) is returned as the
            circle ``(1, 0, 1)``.

    Shape:
        ``(B, 1, PS, PS) -> (B, 1, 3)``.

    Convention:
        ``(a, b, c) = (<g_x^2>, <g_x g_y>, <g_y^2>)``: means over the patch of products of
        its Sobel gradients (x right, y down, replicated border), each gradient weighted by
        Kornia's Gaussian window (sigma ``PS / sqrt 2``), divided by the largest of the
        three, so the largest is 1 (Kornia's numbers). The region it describes is the
        ellipse ``x^T [[a, b], [b, c]] x = const``, elongated across the strongest
        gradients.

        Difference from Kornia: Kornia returns the circle when two of the three entries are
        below ``eps`` (so a negative ``b`` counts, and a diagonal edge passes as a singular
        matrix, Kornia issue #5824); here the test is on the determinant, symmetric in
        ``b``'s sign.

    Example:
        >>> PatchAffineShapeEstimator()(torch.zeros(2, 1, 19, 19))[0]
        tensor([[1., 0., 1.]])
    """

    weighting: torch.Tensor

    def __init__(self, patch_size: int = 19, eps: float = 1e-10) -> None:
        super().__init__()
        self.patch_size = check_int(patch_size, "patch_size", 2)
        self.eps = check_real(eps, "eps", low=0.0)
        self.register_buffer("weighting", _gaussian_window(patch_size), persistent=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(patch_size={self.patch_size}, eps={self.eps})"

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        """``(B, 1, PS, PS)`` -> ``(B, 1, 3)`` normalised ``(a, b, c)``."""
        check_shape(patch, ["B", 1, self.patch_size, self.patch_size], "patch")
        check_floating(patch, "patch")
        dtype = patch.dtype
        work = patch.float() if dtype in (torch.float16, torch.bfloat16) else patch
        grads = spatial_gradient(work, "sobel", 1) * self.weighting.to(work.device, work.dtype)
        gx, gy = grads[:, 0, 0], grads[:, 0, 1]
        moments = torch.stack(((gx * gx).mean((-2, -1)), (gx * gy).mean((-2, -1)), (gy * gy).mean((-2, -1))), -1)
        top = moments.abs().amax(-1, keepdim=True)
        safe_top = torch.where(top > 0, top, torch.ones_like(top))
        normalised = moments / safe_top
        det = normalised[:, 0] * normalised[:, 2] - normalised[:, 1].square()
        bad = ~(det > self.eps) | ~(top[:, 0] > 0)
        circle = normalised.new_tensor([1.0, 0.0, 1.0]).expand_as(normalised)
        out = torch.where(bad[:, None], circle, normalised)
        return out.to(dtype)[:, None]


def _inverse_sqrt_unit(m: torch.Tensor) -> torch.Tensor:
    """``M^{-1/2}`` scaled to determinant 1 for symmetric positive-definite ``(..., 3)``
    ``(a, b, c)``, as ``(..., 2, 2)``; closed form: with ``s = sqrt(det M)`` and
    ``t = sqrt(a + c + 2 s)``, ``sqrt(M) = (M + s I) / t``, so the result is
    ``[[c + s, -b], [-b, a + s]] / (t sqrt(s))``."""
    a, b, c = m.unbind(-1)
    s = torch.sqrt(a * c - b * b)
    t = torch.sqrt(a + c + 2 * s)
    k = t * torch.sqrt(s)
    return torch.stack((c + s, -b, -b, a + s), -1).unflatten(-1, (2, 2)) / k[..., None, None]


class LAFAffineShapeEstimator(nn.Module):
    """Reshape local affine frames to the second-moment ellipse of their patches.

    Args:
        patch_size: side of the patch sampled for each LAF.
        affine_shape_detector: ``(B, 1, PS, PS) -> (B, 1, 3)``; default
            :class:`PatchAffineShapeEstimator` at ``patch_size``.
        preserve_orientation: keep each LAF's orientation (default); ``False`` returns
            upright LAFs (for an orientation estimator to run after).

    Shape:
        ``laf (B, N, 2, 3), img (B, 1, H, W) -> (B, N, 2, 3)``.

    Convention:
        Each patch is sampled (:func:`~gradcv.core_ops.features.laf.extract_patches_from_pyramid`)
        through the upright form of its LAF (:func:`~gradcv.core_ops.features.laf.make_upright`)
        of scale ``s``; with ``M`` the detector's matrix in that patch's frame, the output
        shape is ``s * U @ M^{-1/2} / det(M^{-1/2})^{1/2}`` (``U`` the upright frame over its
        scale), then turned to the input's orientation. So ``A A^T`` is proportional to the
        inverse of ``M`` in image coordinates, the centre and the scale ``sqrt|det A|`` are
        kept, and an input already matching the structure changes little: one call is one
        step of Baumberg's iteration. A degenerate matrix (circle) or a non-finite result
        leaves that LAF's shape as the upright input's. Kornia's numbers where its
        conventions agree (its ellipse-to-LAF choice of the square root is lower-triangular,
        ours symmetric: the same ellipse, the same LAF after orientation is set).

    Example:
        >>> from gradcv.core_ops.features.laf import laf_from_center_scale_ori
        >>> laf = laf_from_center_scale_ori(torch.tensor([[[16.0, 16.0]]]), torch.full((1, 1, 1, 1), 5.0))
        >>> LAFAffineShapeEstimator()(laf, torch.rand(1, 1, 32, 32)).shape
        torch.Size([1, 1, 2, 3])
    """

    def __init__(self, patch_size: int = 32, affine_shape_detector: Optional[nn.Module] = None,
                 preserve_orientation: bool = True) -> None:
        super().__init__()
        self.patch_size = check_int(patch_size, "patch_size", 2)
        self.preserve_orientation = check_bool(preserve_orientation, "preserve_orientation")
        if affine_shape_detector is None:
            affine_shape_detector = PatchAffineShapeEstimator(patch_size)
        elif not isinstance(affine_shape_detector, nn.Module):
            raise ArgumentTypeError("affine_shape_detector", nn.Module, type(affine_shape_detector),
                                    "affine_shape_detector: expected a torch.nn.Module, "
                                    f"got {type(affine_shape_detector).__name__}")
        self.affine_shape_detector = affine_shape_detector

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(patch_size={self.patch_size}, affine_shape_detector="
                f"{self.affine_shape_detector}, preserve_orientation={self.preserve_orientation})")

    def forward(self, laf: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """``laf (B, N, 2, 3)``, ``img (B, 1, H, W)`` -> reshaped ``(B, N, 2, 3)``."""
        from gradcv.core_ops.features.laf import extract_patches_from_pyramid, make_upright

        check_shape(laf, ["B", "N", 2, 3], "laf")
        check_floating(laf, "laf")
        check_shape(img, ["B", 1, "H", "W"], "img")
        check_floating(img, "img")
        if laf.shape[0] != img.shape[0]:
            raise ShapeError("laf", (img.shape[0], "N", 2, 3), tuple(laf.shape),
                             f"laf: expected the batch size of img ({img.shape[0]}), got shape {tuple(laf.shape)}")
        check_same_device(laf, "laf", img, "img")
        b, n = laf.shape[:2]
        ps = self.patch_size
        frame = make_upright(laf)
        patches = extract_patches_from_pyramid(img, frame, ps).reshape(b * n, 1, ps, ps)
        m = self.affine_shape_detector(patches).reshape(b, n, 3).to(laf.dtype)
        a, bb, c = m.unbind(-1)
        good = torch.isfinite(m).all(-1) & (a > 0) & (c > 0) & (a * c - bb * bb > 0)
        circle = m.new_tensor([1.0, 0.0, 1.0])
        shape = _inverse_sqrt_unit(torch.where(good[..., None], m, circle))
        det_frame = frame[..., 0, 0] * frame[..., 1, 1] - frame[..., 0, 1] * frame[..., 1, 0]
        scale = torch.sqrt(det_frame.abs())
        valid = good & torch.isfinite(det_frame) & (scale > 0)
        safe_scale = torch.where(valid, scale, torch.ones_like(scale))[..., None, None]
        unit_frame = frame[..., :2] / safe_scale
        new = (unit_frame @ shape) * safe_scale
        new = torch.where(valid[..., None, None], new, frame[..., :2])
        out = torch.cat((new, laf[..., 2:]), -1)
        out = make_upright(out)
        if self.preserve_orientation:
            # The orientation of the input, as laf.py's get_laf_orientation reads it: the
            # upright shape times the rotation R(angle) = [[cos, sin], [-sin, cos]].
            angle = torch.atan2(laf[..., 0, 1], laf[..., 0, 0])
            cos, sin = torch.cos(angle), torch.sin(angle)
            rot = torch.stack((cos, sin, -sin, cos), -1).unflatten(-1, (2, 2))
            out = torch.cat((out[..., :2] @ rot, out[..., 2:]), -1)
        return out
