"""Local affine frames (LAFs): construction, accessors and patch extraction.

A LAF is a ``(B, N, 2, 3)`` tensor ``[A | c]``: ``c = (x, y)`` is the keypoint in pixels
and ``A`` (2 x 2, in pixels) maps the patch frame onto the image. Names, arguments,
defaults and return conventions are Kornia's (``kornia.feature.laf``, 0.9).

Convention:
    Pixel ``(x, y)``: x to the right, y down, pixel centres at integer coordinates (OpenCV's
    ``KeyPoint.pt``); the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. The region of a
    LAF is the ellipse ``c + A u`` over the unit disc ``|u| <= 1``; its patch is the square
    ``c + A [-1, 1]^2`` (``2 * scale`` pixels across for an isotropic frame). The first column
    of ``A`` is the image of the patch's x axis, the second that of its y axis. The scale is
    ``sqrt(|det A|)`` and the orientation ``atan2(a12, a11)`` in degrees (Kornia's), so
    ``laf_from_center_scale_ori(xy, s, ori)`` has ``A = s [[cos, sin], [-sin, cos]]``: a
    positive angle turns the patch's x axis counter-clockwise on screen (y down).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_bool, check_floating, check_int, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ShapeError
from gradcv.core_ops.pyramid import pyrdown

__all__ = [
    "denormalize_laf",
    "ellipse_to_laf",
    "extract_patches_from_pyramid",
    "extract_patches_simple",
    "generate_patch_grid_from_normalized_LAF",
    "get_laf_pts_to_draw",
    "get_laf_center",
    "get_laf_orientation",
    "get_laf_scale",
    "laf_from_center_scale_ori",
    "laf_from_three_points",
    "laf_is_filled",
    "laf_is_inside_image",
    "laf_is_valid",
    "laf_to_boundary_points",
    "laf_to_three_points",
    "make_upright",
    "normalize_laf",
    "perspective_transform_lafs",
    "rotate_laf",
    "scale_laf",
    "set_laf_orientation",
]


# ---------------------------------------------------------------------------- helpers
def _check_laf(laf: object, name: str) -> torch.Tensor:
    """A floating ``(B, N, 2, 3)`` tensor (Kornia's ``KORNIA_CHECK_LAF``), typed errors naming ``name``."""
    check_shape(laf, ["B", "N", 2, 3], name)
    assert isinstance(laf, torch.Tensor)
    check_floating(laf, name)
    return laf


def _check_images(images: object, name: str) -> torch.Tensor:
    check_shape(images, ["B", "C", "H", "W"], name)
    assert isinstance(images, torch.Tensor)
    return images


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with a zero (not infinite) gradient at ``x == 0``."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _rotation(angles_degrees: torch.Tensor) -> torch.Tensor:
    """``(*) -> (*, 2, 2)``: ``[[cos, sin], [-sin, cos]]`` (Kornia's ``angle_to_rotation_matrix``)."""
    a = torch.deg2rad(angles_degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    return torch.stack([cos, sin, -sin, cos], dim=-1).unflatten(-1, (2, 2))


def _det(laf: torch.Tensor) -> torch.Tensor:
    """``det A`` as ``(B, N, 1, 1)``, in float32 for a float16 LAF (its products overflow)."""
    work = laf.float() if laf.dtype == torch.float16 else laf
    return work[..., 0:1, 0:1] * work[..., 1:2, 1:2] - work[..., 0:1, 1:2] * work[..., 1:2, 0:1]


# ---------------------------------------------------------------------------- accessors
def get_laf_scale(LAF: torch.Tensor) -> torch.Tensor:
    """The scale ``sqrt(|det A|)`` of the LAFs.

    Kornia adds ``1e-10`` to the determinant before the root; here the root is
    gradient-safe instead (zero gradient at a zero determinant), so a degenerate frame
    reads back exactly 0.

    Args:
        LAF: ``(B, N, 2, 3)``.

    Returns:
        ``(B, N, 1, 1)``, in the LAF's dtype.

    Convention:
        See the module's Convention: the patch of a LAF spans ``2 * scale`` pixels.

    Example:
        >>> get_laf_scale(torch.tensor([[[[2.0, 0.0, 5.0], [0.0, 8.0, 3.0]]]]))
        tensor([[[[4.]]]])
    """
    _check_laf(LAF, "LAF")
    return _safe_sqrt(_det(LAF).abs()).to(LAF.dtype)


def get_laf_center(LAF: torch.Tensor) -> torch.Tensor:
    """The centres (keypoints) of the LAFs.

    Args:
        LAF: ``(B, N, 2, 3)``.

    Returns:
        ``(B, N, 2)`` as ``(x, y)``.

    Convention:
        Pixels with centres at integer coordinates (OpenCV's ``KeyPoint.pt``).

    Example:
        >>> get_laf_center(torch.tensor([[[[2.0, 0.0, 5.0], [0.0, 8.0, 3.0]]]]))
        tensor([[[5., 3.]]])
    """
    _check_laf(LAF, "LAF")
    return LAF[..., 2]


def get_laf_orientation(LAF: torch.Tensor) -> torch.Tensor:
    """The orientations of the LAFs, in degrees in ``[-180, 180]``.

    Args:
        LAF: ``(B, N, 2, 3)``.

    Returns:
        ``(B, N, 1)``: ``atan2(a12, a11)`` in degrees.

    Convention:
        The angle of :func:`laf_from_center_scale_ori` (module Convention).

    Example:
        >>> lafs = laf_from_center_scale_ori(torch.zeros(1, 1, 2), ori=torch.tensor([[[30.0]]]))
        >>> get_laf_orientation(lafs).round(decimals=4)
        tensor([[[30.]]])
    """
    _check_laf(LAF, "LAF")
    return torch.rad2deg(torch.atan2(LAF[..., 0, 1], LAF[..., 0, 0])).unsqueeze(-1)


def rotate_laf(LAF: torch.Tensor, angles_degrees: torch.Tensor) -> torch.Tensor:
    """Rotate the LAFs' patch frames by ``angles_degrees`` (added to their orientation).

    Args:
        LAF: ``(B, N, 2, 3)``.
        angles_degrees: ``(B, N, 1)`` (or ``(B, N)``, which Kornia's reshape also takes).

    Returns:
        ``[A R | c]`` with ``R = [[cos, sin], [-sin, cos]]``, ``(B, N, 2, 3)``.

    Convention:
        The centre and the region (the ellipse) are kept; the orientation grows by the angle.

    Example:
        >>> lafs = laf_from_center_scale_ori(torch.zeros(1, 1, 2), ori=torch.tensor([[[10.0]]]))
        >>> get_laf_orientation(rotate_laf(lafs, torch.tensor([[[20.0]]]))).round(decimals=4)
        tensor([[[30.]]])
    """
    _check_laf(LAF, "LAF")
    b, n = LAF.shape[:2]
    if not (isinstance(angles_degrees, torch.Tensor) and angles_degrees.shape == (b, n)):
        check_shape(angles_degrees, [b, n, 1], "angles_degrees")
    rot = _rotation(angles_degrees.reshape(b, n).to(LAF.dtype))
    return torch.cat([LAF[..., :2] @ rot, LAF[..., 2:]], dim=-1)


def set_laf_orientation(LAF: torch.Tensor, angles_degrees: torch.Tensor) -> torch.Tensor:
    """Set the LAFs' orientation to ``angles_degrees`` (rotating by the difference).

    Args:
        LAF: ``(B, N, 2, 3)``.
        angles_degrees: ``(B, N, 1)``.

    Returns:
        ``(B, N, 2, 3)`` whose :func:`get_laf_orientation` is ``angles_degrees`` (wrapped to
        ``[-180, 180]``).

    Convention:
        As :func:`rotate_laf`.

    Example:
        >>> lafs = laf_from_center_scale_ori(torch.zeros(1, 1, 2), ori=torch.tensor([[[10.0]]]))
        >>> get_laf_orientation(set_laf_orientation(lafs, torch.tensor([[[-45.0]]]))).round(decimals=4)
        tensor([[[-45.]]])
    """
    _check_laf(LAF, "LAF")
    b, n = LAF.shape[:2]
    check_shape(angles_degrees, [b, n, 1], "angles_degrees")
    return rotate_laf(LAF, angles_degrees - get_laf_orientation(LAF))


def laf_from_center_scale_ori(
    xy: torch.Tensor, scale: torch.Tensor | None = None, ori: torch.Tensor | None = None
) -> torch.Tensor:
    """Make LAFs from keypoint centres, scales and orientations.

    Args:
        xy: ``(B, N, 2)`` centres.
        scale: ``(B, N, 1, 1)``; ``None`` for 1.
        ori: ``(B, N, 1)`` in degrees; ``None`` for 0.

    Returns:
        ``(B, N, 2, 3)``: ``[scale * R(ori) | xy]`` with ``R = [[cos, sin], [-sin, cos]]``.

    Convention:
        ``xy`` in pixels, centres at integers (an OpenCV ``KeyPoint.pt`` as it is); the patch
        of :func:`extract_patches_from_pyramid` spans ``2 * scale`` pixels (module Convention).

    Example:
        >>> laf_from_center_scale_ori(torch.tensor([[[5.0, 7.0]]]), torch.full((1, 1, 1, 1), 2.0), torch.tensor([[[30.0]]]))
        tensor([[[[ 1.7321,  1.0000,  5.0000],
                  [-1.0000,  1.7321,  7.0000]]]])
    """
    check_shape(xy, ["B", "N", 2], "xy")
    check_floating(xy, "xy")
    b, n = xy.shape[:2]
    if ori is None:
        rot = torch.eye(2, dtype=xy.dtype, device=xy.device).expand(b, n, 2, 2)
    else:
        check_shape(ori, [b, n, 1], "ori")
        rot = _rotation(ori[..., 0].to(xy.dtype))
    if scale is not None:
        check_shape(scale, [b, n, 1, 1], "scale")
        rot = rot * scale.to(xy.dtype)
    return torch.cat([rot, xy.unsqueeze(-1)], dim=-1)


def scale_laf(laf: torch.Tensor, scale_coef: float | torch.Tensor) -> torch.Tensor:
    """Multiply the LAFs' ``A`` by ``scale_coef`` (the centres are kept).

    Kornia rejects an ``int`` coefficient; here an ``int`` is taken as a ``float``.

    Args:
        laf: ``(B, N, 2, 3)``.
        scale_coef: a number, or a tensor broadcastable to ``(B, N, 2, 2)`` (e.g. ``(B, N, 1, 1)``).

    Returns:
        ``[k A | c]``, ``(B, N, 2, 3)``.

    Convention:
        The scale becomes ``|k|`` times the old one; the region grows about the centre.

    Example:
        >>> scale_laf(torch.tensor([[[[1.0, 0.0, 5.0], [0.0, 1.0, 3.0]]]]), 2.0)
        tensor([[[[2., 0., 5.],
                  [0., 2., 3.]]]])
    """
    if isinstance(scale_coef, bool) or not isinstance(scale_coef, (int, float, torch.Tensor)):
        raise ArgumentTypeError(
            "scale_coef", "a float or a torch.Tensor", type(scale_coef),
            f"scale_coef: expected a float or a torch.Tensor, got {type(scale_coef).__name__}",
        )
    _check_laf(laf, "laf")
    return torch.cat([scale_coef * laf[..., :2], laf[..., 2:]], dim=-1)


def make_upright(laf: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Rectify the LAFs to upright: ``A`` becomes lower triangular with the same region.

    Args:
        laf: ``(B, N, 2, 3)``.
        eps: added to ``|first row of A|`` where it divides, for safety.

    Returns:
        ``[U | c]`` with ``U`` lower triangular, positive diagonal, ``U U^T = A A^T``:
        orientation 0, the same ellipse and scale (a mirrored ``A`` loses the reflection).
        The all-zero padding LAF is returned unchanged.

    Convention:
        Centre unchanged; for ``det A > 0``, ``A = U R(orientation)``.

    Example:
        >>> lafs = laf_from_center_scale_ori(torch.zeros(1, 1, 2), torch.full((1, 1, 1, 1), 3.0), torch.tensor([[[40.0]]]))
        >>> make_upright(lafs)
        tensor([[[[3., 0., 0.],
                  [0., 3., 0.]]]])
    """
    _check_laf(laf, "laf")
    dtype = laf.dtype
    work = laf.float() if dtype == torch.float16 else laf
    filled = work.ne(0).any(dim=-1).any(dim=-1)[..., None, None]
    a00, a01, a10, a11 = work[..., 0, 0], work[..., 0, 1], work[..., 1, 0], work[..., 1, 1]
    n0 = _safe_sqrt(a00 * a00 + a01 * a01)
    d = n0 + eps
    det = (a00 * a11 - a01 * a10).abs()
    zero = torch.zeros_like(n0)
    upright = torch.stack([n0, zero, (a10 * a00 + a11 * a01) / d, det / d], dim=-1).unflatten(-1, (2, 2))
    out = torch.cat([upright, work[..., 2:]], dim=-1)
    return torch.where(filled, out, work).to(dtype)


def ellipse_to_laf(ells: torch.Tensor) -> torch.Tensor:
    """Convert ellipses ``[x, y, a, b, c]`` (Oxford affine-region format) to LAFs.

    Args:
        ells: ``(B, N, 5)``: the region ``a u^2 + 2 b u v + c v^2 <= 1`` around ``(x, y)``.

    Returns:
        ``(B, N, 2, 3)`` with ``A`` the lower-triangular Cholesky factor of
        ``inverse([[a, b], [b, c]])`` (what :func:`make_upright` gives for that region).
        A degenerate ellipse gives non-finite entries, as in Kornia.

    Convention:
        ``(x, y)`` is the LAF centre unchanged (pixels, centres at integers).

    Example:
        >>> ellipse_to_laf(torch.tensor([[[10.0, 20.0, 0.25, 0.0, 0.04]]])).abs()
        tensor([[[[ 2.,  0., 10.],
                  [ 0.,  5., 20.]]]])
    """
    check_shape(ells, ["B", "N", 5], "ells")
    check_floating(ells, "ells")
    a, b, c = ells[..., 2], ells[..., 3], ells[..., 4]
    sqrt_c = c.sqrt()
    b_c = b / sqrt_c
    sqrt_schur = (a - b_c * b_c).sqrt()  # sqrt(det / c)
    l00 = 1.0 / sqrt_schur
    l10 = -b_c / (sqrt_c * sqrt_schur)
    l11 = 1.0 / sqrt_c
    A = torch.stack([l00, torch.zeros_like(l00), l10, l11], dim=-1).unflatten(-1, (2, 2))
    return torch.cat([A, ells[..., :2, None]], dim=-1)


def laf_to_boundary_points(LAF: torch.Tensor, n_pts: int = 50) -> torch.Tensor:
    """The centre and ``n_pts - 1`` points on the boundary of each LAF's region.

    Args:
        LAF: ``(B, N, 2, 3)``.
        n_pts: number of points, the centre included (>= 2).

    Returns:
        ``(B, N, n_pts, 2)``: point 0 is ``c``, then ``c + A (sin t, cos t)`` for ``t`` from
        0 to ``2 pi`` in ``n_pts - 1`` equal steps (a closed outline, as Kornia).

    Convention:
        Pixels, centres at integers.

    Example:
        >>> laf_to_boundary_points(torch.tensor([[[[2.0, 0.0, 5.0], [0.0, 2.0, 3.0]]]]), 6)[0, 0].round(decimals=4)
        tensor([[5., 3.],
                [5., 5.],
                [7., 3.],
                [5., 1.],
                [3., 3.],
                [5., 5.]])
    """
    _check_laf(LAF, "LAF")
    check_int(n_pts, "n_pts", 2)
    build = torch.promote_types(LAF.dtype, torch.float32)
    t = torch.linspace(0, 2 * math.pi, n_pts - 1, dtype=build, device=LAF.device)
    u = torch.stack([torch.sin(t), torch.cos(t)], dim=-1)
    u = torch.cat([u.new_zeros(1, 2), u], dim=0).to(LAF.dtype)  # (n_pts, 2)
    return torch.einsum("bnij,pj->bnpi", LAF[..., :2], u) + LAF[..., None, :, 2]


def laf_to_three_points(laf: torch.Tensor) -> torch.Tensor:
    """LAFs to the three points ``c + A[:, 0]``, ``c + A[:, 1]``, ``c`` (as columns).

    Args:
        laf: ``(B, N, 2, 3)``.

    Returns:
        ``(B, N, 2, 3)``; :func:`laf_from_three_points` inverts it.

    Convention:
        Pixels, centres at integers.

    Example:
        >>> laf_to_three_points(torch.tensor([[[[2.0, 0.0, 5.0], [0.0, 2.0, 3.0]]]]))
        tensor([[[[7., 5., 5.],
                  [3., 5., 3.]]]])
    """
    _check_laf(laf, "laf")
    return torch.stack([laf[..., 2] + laf[..., 0], laf[..., 2] + laf[..., 1], laf[..., 2]], dim=-1)


def laf_from_three_points(threepts: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`laf_to_three_points`.

    Args:
        threepts: ``(B, N, 2, 3)``: columns ``c + A[:, 0]``, ``c + A[:, 1]``, ``c``.

    Returns:
        ``(B, N, 2, 3)``.

    Convention:
        Pixels, centres at integers.

    Example:
        >>> laf_from_three_points(torch.tensor([[[[7.0, 5.0, 5.0], [3.0, 5.0, 3.0]]]]))
        tensor([[[[2., 0., 5.],
                  [0., 2., 3.]]]])
    """
    _check_laf(threepts, "threepts")
    c = threepts[..., 2]
    return torch.stack([threepts[..., 0] - c, threepts[..., 1] - c, c], dim=-1)


def perspective_transform_lafs(trans_01: torch.Tensor, lafs_1: torch.Tensor) -> torch.Tensor:
    """Map LAFs through homographies: the three points of :func:`laf_to_three_points`.

    Args:
        trans_01: ``(B, 3, 3)`` mapping pixels of frame 1 to frame 0.
        lafs_1: ``(B, N, 2, 3)`` in frame 1.

    Returns:
        ``(B, N, 2, 3)`` in frame 0: the centre maps exactly, ``A`` is the chord through the
        mapped axis tips (for an affine map: the Jacobian times ``A``).

    Convention:
        Both frames in pixels, centres at integers.

    Example:
        >>> H = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])
        >>> perspective_transform_lafs(H, torch.tensor([[[[1.0, 0.0, 5.0], [0.0, 1.0, 3.0]]]]))
        tensor([[[[ 2.,  0., 11.],
                  [ 0.,  2.,  6.]]]])
    """
    _check_laf(lafs_1, "lafs_1")
    b, n = lafs_1.shape[:2]
    check_shape(trans_01, [b, 3, 3], "trans_01")
    pts = laf_to_three_points(lafs_1).transpose(-1, -2)  # (B, N, 3, 2)
    h = trans_01.to(lafs_1.dtype)
    xyw = torch.einsum("bij,bnpj->bnpi", h[:, :, :2], pts) + h[:, None, None, :, 2]
    w = xyw[..., 2:]
    w = torch.where(w.abs() > 1e-8, w, torch.ones_like(w))
    return laf_from_three_points((xyw[..., :2] / w).transpose(-1, -2))


def laf_is_valid(laf: torch.Tensor) -> torch.Tensor:
    """Which LAFs are finite with a finite non-zero determinant.

    Args:
        laf: ``(B, N, 2, 3)``.

    Returns:
        ``(B, N)`` bool.

    Example:
        >>> laf_is_valid(torch.tensor([[[[1.0, 0.0, 5.0], [0.0, 1.0, 3.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]]))
        tensor([[ True, False]])
    """
    _check_laf(laf, "laf")
    det = _det(laf)[..., 0, 0]
    return laf.isfinite().all(dim=-1).all(dim=-1) & det.isfinite() & (det != 0)


def laf_is_filled(laf: torch.Tensor) -> torch.Tensor:
    """Which slots hold a frame rather than the all-zero padding of a fixed-size output.

    Args:
        laf: ``(B, N, 2, 3)``.

    Returns:
        ``(B, N)`` bool: False exactly for all-zero LAFs.

    Example:
        >>> laf_is_filled(torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]]))
        tensor([[ True, False]])
    """
    _check_laf(laf, "laf")
    return laf.ne(0).any(dim=-1).any(dim=-1)


def laf_is_inside_image(laf: torch.Tensor, images: torch.Tensor, border: int = 0) -> torch.Tensor:
    """Which LAF regions lie inside the image, ``border`` pixels from its outer pixel centres.

    Args:
        laf: ``(B, N, 2, 3)``.
        images: ``(B, C, H, W)`` (only the size is read).
        border: extra margin in pixels.

    Returns:
        ``(B, N)`` bool.

    Convention:
        The region (ellipse ``c + A u``, ``|u| <= 1``) spans ``c_i +- |row i of A|`` along
        axis ``i``; it is inside when that lies within ``[border, W - 1 - border]`` in x and
        ``[border, H - 1 - border]`` in y: the pixel centres, so that bilinear sampling of the
        region never reads past the border (Kornia's bounds).

    Example:
        >>> laf = torch.tensor([[[[2.0, 0.0, 5.0], [0.0, 2.0, 3.0]], [[2.0, 0.0, 1.0], [0.0, 2.0, 3.0]]]])
        >>> laf_is_inside_image(laf, torch.zeros(1, 1, 8, 8))
        tensor([[ True, False]])
    """
    _check_laf(laf, "laf")
    _check_images(images, "images")
    h, w = images.shape[-2:]
    extent = _safe_sqrt((laf[..., :2] ** 2).sum(-1))
    lo = laf[..., 2] - extent
    hi = laf[..., 2] + extent
    return (lo[..., 0] >= border) & (hi[..., 0] <= w - 1 - border) & (lo[..., 1] >= border) & (hi[..., 1] <= h - 1 - border)


def get_laf_pts_to_draw(LAF: torch.Tensor, img_idx: int = 0) -> tuple[list[float], list[float]]:
    """The outlines of image ``img_idx``'s LAFs as two lists ``(x, y)`` for ``plt.plot``.

    Args:
        LAF: ``(B, N, 2, 3)``.
        img_idx: which image of the batch.

    Returns:
        ``(x, y)``: nested lists ``[n_pts][N]`` of :func:`laf_to_boundary_points` (Kornia's layout).

    Convention:
        Pixels, centres at integers (``plt.imshow``'s pixel centres too).

    Example:
        >>> x, y = get_laf_pts_to_draw(torch.tensor([[[[2.0, 0.0, 5.0], [0.0, 2.0, 3.0]]]]))
        >>> len(x), len(x[0])
        (50, 1)
    """
    _check_laf(LAF, "LAF")
    check_int(img_idx, "img_idx", 0)
    pts = laf_to_boundary_points(LAF[img_idx : img_idx + 1])[0].detach().permute(1, 0, 2).cpu()
    return pts[..., 0].tolist(), pts[..., 1].tolist()


# ---------------------------------------------------------------------------- normalisation
def _norm_coefs(laf: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    h, w = images.shape[-2:]
    size = laf.new_tensor([float(w), float(h)])
    return size, size.new_tensor(0.5), float(min(h, w))


def normalize_laf(LAF: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """LAFs from pixels to the image's ``[0, 1]`` frame (edge to edge).

    Deliberate difference from Kornia: Kornia maps the centre to ``x / (W - 1)`` (pixel
    centres 0 and ``W - 1`` to 0 and 1) and divides ``A`` by ``min(H - 1, W - 1)``; that is
    the ``align_corners=True`` frame, which disagrees with an ``align_corners=False``
    resize away from the image centre. Here the image's outer edges map to 0 and 1, as
    gradcv's normalised coordinates (``u = 2 x_n - 1`` is the ``[-1, 1]``, ``align_corners=False``
    coordinate), so a normalised LAF denormalised at another resolution of the same image
    lands on the same physical region.

    Args:
        LAF: ``(B, N, 2, 3)`` in pixels.
        images: ``(B, C, H, W)`` (only the size is read).

    Returns:
        ``(B, N, 2, 3)``: centre ``((x + 0.5) / W, (y + 0.5) / H)``, ``A / min(H, W)``.

    Convention:
        Input in pixels with centres at integers; output edge to edge in ``[0, 1]``.

    Example:
        >>> normalize_laf(torch.tensor([[[[4.0, 0.0, -0.5], [0.0, 4.0, 7.5]]]]), torch.zeros(1, 1, 8, 16))
        tensor([[[[0.5000, 0.0000, 0.0000],
                  [0.0000, 0.5000, 1.0000]]]])
    """
    _check_laf(LAF, "LAF")
    _check_images(images, "images")
    size, half, min_size = _norm_coefs(LAF, images)
    return torch.cat([LAF[..., :2] / min_size, ((LAF[..., 2] + half) / size).unsqueeze(-1)], dim=-1)


def denormalize_laf(LAF: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`normalize_laf`: LAFs from the ``[0, 1]`` frame to pixels.

    Deliberate difference from Kornia as in :func:`normalize_laf` (Kornia: ``x (W - 1)``,
    ``A min(H - 1, W - 1)``).

    Args:
        LAF: ``(B, N, 2, 3)`` normalised.
        images: ``(B, C, H, W)`` (only the size is read).

    Returns:
        ``(B, N, 2, 3)``: centre ``(x_n W - 0.5, y_n H - 0.5)``, ``A min(H, W)``.

    Convention:
        Output pixels with centres at integers.

    Example:
        >>> denormalize_laf(torch.tensor([[[[0.5, 0.0, 0.0], [0.0, 0.5, 1.0]]]]), torch.zeros(1, 1, 8, 16))
        tensor([[[[ 4.0000,  0.0000, -0.5000],
                  [ 0.0000,  4.0000,  7.5000]]]])
    """
    _check_laf(LAF, "LAF")
    _check_images(images, "images")
    size, half, min_size = _norm_coefs(LAF, images)
    return torch.cat([LAF[..., :2] * min_size, (LAF[..., 2] * size - half).unsqueeze(-1)], dim=-1)


# ---------------------------------------------------------------------------- patches
def _check_extraction(img: object, laf: object, PS: object, normalize: object) -> None:
    check_tensor(img, "img")
    check_shape(img, ["B", "C", "H", "W"], "img")
    assert isinstance(img, torch.Tensor)
    check_floating(img, "img")
    _check_laf(laf, "laf")
    assert isinstance(laf, torch.Tensor)
    if laf.shape[0] != img.shape[0]:
        raise ShapeError(
            "laf", (img.shape[0], "N", 2, 3), tuple(laf.shape),
            f"laf: expected the batch size of img ({img.shape[0]}), got shape {tuple(laf.shape)}",
        )
    check_int(PS, "PS", 1)
    check_bool(normalize, "normalize_lafs_before_extraction")


def _prepare(img: torch.Tensor, laf: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LAF in pixels in the sampling dtype, non-finite frames zeroed, and their mask."""
    dtype = torch.promote_types(torch.promote_types(img.dtype, laf.dtype), torch.float32)
    laf = laf.to(device=img.device, dtype=dtype)
    if not normalize:
        laf = denormalize_laf(laf, img)
    invalid = ~laf.isfinite().all(dim=-1).all(dim=-1)
    return laf.masked_fill(invalid[..., None, None], 0.0), invalid, img.to(dtype)


def _empty_patches(img: torch.Tensor, laf: torch.Tensor, PS: int) -> torch.Tensor:
    # A zero that autograd traces to both inputs, so a loss on no patches still backpropagates.
    link = img.flatten()[:0].sum() + laf.flatten()[:0].sum().to(img.dtype)
    b, n = laf.shape[:2]
    return img.new_zeros(b, n, img.shape[1], PS, PS) + link


# Bytes of the sampling grid of one chunk of keypoints: small chunks keep the grid and the
# samples in cache (2 MiB measured fastest for 2500 patches of 32 or 41 pixels).
_GRID_BYTES = 1 << 21


def _sample(
    src: torch.Tensor, laf_px: torch.Tensor, factor: torch.Tensor, offset: torch.Tensor, extent: torch.Tensor,
    PS: int, out_dtype: torch.dtype,
) -> torch.Tensor:
    """Bilinear ``PS x PS`` patches ``(B, N, C, PS, PS)`` of ``src`` (an image or the atlas).

    Cell ``(i, j)`` of LAF ``n`` reads ``src`` at pixel ``factor * (c + A (u_j, u_i)) + offset``,
    clamped to ``[offset, offset + extent]`` (the outer pixel centres of the LAF's level);
    ``factor`` is ``(B, N)``, ``offset`` and ``extent`` ``(B, N, 2)``. The grid is one matrix
    product ``[u_x, u_y, 1] @ theta`` laid out cell-major, ``(B, PS*PS, N, 2)``, so that
    building it costs one pass and ``grid_sample`` walks neighbouring keypoints' cells together.
    """
    b, n = laf_px.shape[:2]
    c = src.shape[1]
    ha, wa = src.shape[-2:]
    k = laf_px.new_tensor([2.0 / wa, 2.0 / ha])  # atlas pixels -> grid_sample's [-1, 1]
    b0 = k / 2 - 1
    a = laf_px[..., :2] * factor[..., None, None]
    t = laf_px[..., 2] * factor[..., None] + offset
    theta = torch.stack([a[..., 0] * k, a[..., 1] * k, t * k + b0], dim=1)  # (B, 3, N, 2)
    u = (2.0 * torch.arange(PS, dtype=laf_px.dtype, device=laf_px.device) + 1.0) / PS - 1.0
    base = torch.stack([u.repeat(PS), u.repeat_interleave(PS), torch.ones_like(u).repeat(PS)], dim=-1)
    lo = (offset * k + b0)[:, None]
    hi = ((offset + extent) * k + b0)[:, None]
    # Keypoints in chunks whose grid stays under _GRID_BYTES: the peak memory is then the
    # output plus one chunk, whatever N (a single chunk for small N).
    chunk = max(1, _GRID_BYTES // (b * PS * PS * 2 * laf_px.element_size()))
    out = None
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        grid = torch.matmul(base, theta[:, :, n0:n1].reshape(b, 3, (n1 - n0) * 2)).view(b, PS * PS, n1 - n0, 2)
        if torch.is_grad_enabled() and grid.requires_grad:
            grid = torch.clamp(grid, lo[:, :, n0:n1], hi[:, :, n0:n1])
        else:
            grid = grid.clamp_(lo[:, :, n0:n1], hi[:, :, n0:n1])
        part = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, PS*PS, n)
        part = part.view(b, c, PS, PS, n1 - n0).permute(0, 4, 1, 2, 3)
        if n0 == 0 and n1 == n:
            return part.contiguous().to(out_dtype)
        if out is None:
            out = src.new_empty(b, n, c, PS, PS, dtype=out_dtype)
        out[:, n0:n1] = part
        del grid, part  # free this chunk before the next one is made
    assert out is not None
    return out


def generate_patch_grid_from_normalized_LAF(img: torch.Tensor, LAF: torch.Tensor, PS: int = 32) -> torch.Tensor:
    """The ``grid_sample`` grid of each LAF's ``PS x PS`` patch in ``img``.

    Args:
        img: ``(B, C, H, W)`` (only the size is read).
        LAF: ``(B, N, 2, 3)`` in :func:`normalize_laf`'s frame for ``img`` (gradcv's edge-to-edge
            frame; Kornia's is ``align_corners=True``-like, see :func:`normalize_laf`).
        PS: patch size.

    Returns:
        ``(B * N, PS, PS, 2)`` for ``grid_sample(..., align_corners=False)``.

    Convention:
        Cell ``(i, j)`` is image pixel ``c + A (u_j, u_i)``, ``u_k = (2 k + 1) / PS - 1``, as
        :func:`extract_patches_from_pyramid`; pixel ``x`` is ``(2 x + 1) / W - 1`` in the grid.

    Example:
        >>> img = torch.zeros(1, 1, 4, 4)
        >>> laf = normalize_laf(torch.tensor([[[[2.0, 0.0, 1.5], [0.0, 2.0, 1.5]]]]), img)
        >>> generate_patch_grid_from_normalized_LAF(img, laf, 2)[0, :, :, 0]
        tensor([[-0.5000,  0.5000],
                [-0.5000,  0.5000]])
    """
    _check_images(img, "img")
    _check_laf(LAF, "LAF")
    check_int(PS, "PS", 1)
    b, n = LAF.shape[:2]
    h, w = img.shape[-2:]
    laf_px = denormalize_laf(LAF, img)
    u = (2.0 * torch.arange(PS, dtype=LAF.dtype, device=LAF.device) + 1.0) / PS - 1.0
    pts = (laf_px[..., None, None, :, 0] * u[:, None] + laf_px[..., None, None, :, 1] * u[:, None, None]
           + laf_px[..., None, None, :, 2])  # (B, N, PS, PS, 2)
    size = LAF.new_tensor([float(w), float(h)])
    return ((2.0 * pts + 1.0) / size - 1.0).reshape(b * n, PS, PS, 2)


def extract_patches_simple(
    img: torch.Tensor, laf: torch.Tensor, PS: int = 32, normalize_lafs_before_extraction: bool = True
) -> torch.Tensor:
    """Sample a ``PS x PS`` patch per LAF from ``img`` itself (no pyramid: large LAFs alias).

    Args:
        img: ``(B, C, H, W)``.
        laf: ``(B, N, 2, 3)`` in pixels. Kornia's parameter name is kept:
            ``normalize_lafs_before_extraction=True`` means ``laf`` is in pixels (Kornia
            normalises it internally); ``False`` means it is already in :func:`normalize_laf`'s
            frame for ``img`` (gradcv's edge-to-edge frame, not Kornia's).
        PS: patch size.
        normalize_lafs_before_extraction: see ``laf``.

    Returns:
        ``(B, N, C, PS, PS)`` in ``img``'s dtype; a non-finite LAF gives a zero patch.

    Convention:
        As :func:`extract_patches_from_pyramid`, always at level 0.

    Example:
        >>> img = torch.arange(25.0).view(1, 1, 5, 5)
        >>> laf = laf_from_center_scale_ori(torch.tensor([[[2.0, 2.0]]]), torch.full((1, 1, 1, 1), 1.5))
        >>> extract_patches_simple(img, laf, PS=3)[0, 0, 0].round(decimals=4)
        tensor([[ 6.,  7.,  8.],
                [11., 12., 13.],
                [16., 17., 18.]])
    """
    _check_extraction(img, laf, PS, normalize_lafs_before_extraction)
    if laf.shape[0] == 0 or laf.shape[1] == 0:
        return _empty_patches(img, laf, PS)
    laf_px, invalid, src = _prepare(img, laf, normalize_lafs_before_extraction)
    out = _sample(src, laf_px, *_level_zero(laf_px, img), PS, img.dtype)
    return out.masked_fill(invalid[..., None, None, None], 0.0)


def _level_zero(laf_px: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``factor``, ``offset`` and ``extent`` of :func:`_sample` for sampling ``img`` itself."""
    b, n = laf_px.shape[:2]
    h, w = img.shape[-2:]
    extent = laf_px.new_tensor([w - 1.0, h - 1.0]).expand(b, n, 2)
    return laf_px.new_ones(b, n), laf_px.new_zeros(b, n, 2), extent


def _pyramid_sizes(h: int, w: int, PS: int) -> list[tuple[int, int]]:
    """Level sizes of :func:`pyrdown` (``ceil`` halving) while the shorter side stays >= ``PS``."""
    sizes = [(h, w)]
    while min(sizes[-1]) > 2:
        nh, nw = (sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2
        if min(nh, nw) < PS:
            break
        sizes.append((nh, nw))
    return sizes


def extract_patches_from_pyramid(
    img: torch.Tensor, laf: torch.Tensor, PS: int = 32, normalize_lafs_before_extraction: bool = True
) -> torch.Tensor:
    """Sample a ``PS x PS`` patch per LAF from the pyramid level that suits its scale.

    All levels are packed into one atlas (each with a one-pixel replicated guard), so that
    keypoints of every level are sampled together by ``grid_sample``, in cache-sized chunks
    of keypoints (2 MiB of sampling grid each; peak memory is the output plus one chunk): no
    per-keypoint work, no host sync; differentiable with respect to ``img`` and ``laf`` (the
    level choice is piecewise constant in the scale). 2500 patches of 41 x 41 from a
    640 x 480 image: about 25 ms at one thread (Kornia 0.9: 135 ms).

    Args:
        img: ``(B, C, H, W)``.
        laf: ``(B, N, 2, 3)`` in pixels (see :func:`extract_patches_simple` for
            ``normalize_lafs_before_extraction=False``).
        PS: patch size.
        normalize_lafs_before_extraction: ``True``: ``laf`` is in pixels; ``False``: ``laf`` is
            in :func:`normalize_laf`'s frame for ``img``.

    Returns:
        ``(B, N, C, PS, PS)`` in ``img``'s dtype (sampled in at least float32); a non-finite
        LAF gives a zero patch.

    Convention:
        Cell ``(i, j)`` (row ``i``, column ``j``) samples ``c + A (u_j, u_i)`` with
        ``u_k = (2 k + 1) / PS - 1``, ``[A | c]`` in pixels with centres at integers: the
        cells tile the square ``c + A [-1, 1]^2``, i.e. ``2 * scale`` pixels across for an
        isotropic LAF, row 0 on the patch's ``-y`` side (the top of an upright LAF), and for
        an odd ``PS`` the centre cell is exactly ``c`` (for an even ``PS`` the centre falls
        between the four middle cells). Kornia 0.9 samples the same level-0 positions.

        Level ``l = floor(log2(2 s / PS))`` for ``s = sqrt(|det A|)`` (Kornia's rule: the
        cell spacing is 1 to 2 level pixels, never an upsampling), clamped to the levels
        that exist: level 0 is ``img``, level ``l + 1`` is :func:`pyrdown` of level ``l``,
        made while its shorter side is at least ``PS``. :func:`pyrdown` decimates exactly
        (its pixel ``x'`` is pixel ``2 x'`` of the level below), so image pixel ``x`` is
        ``x / 2**l`` at level ``l`` -- not Kornia's ``(x + 0.5) / 2**l - 0.5``, which is the
        map of Kornia's own (resize-style) ``pyrdown``. Samples beyond a level's outer pixel
        centres read the border pixel (replicate), as in Kornia.

    Example:
        >>> img = torch.arange(64.0).view(1, 1, 8, 8)
        >>> laf = laf_from_center_scale_ori(torch.tensor([[[3.0, 4.0]]]), torch.full((1, 1, 1, 1), 1.5))
        >>> extract_patches_from_pyramid(img, laf, PS=3)[0, 0, 0].round(decimals=4)
        tensor([[26., 27., 28.],
                [34., 35., 36.],
                [42., 43., 44.]])
    """
    _check_extraction(img, laf, PS, normalize_lafs_before_extraction)
    if laf.shape[0] == 0 or laf.shape[1] == 0:
        return _empty_patches(img, laf, PS)
    laf_px, invalid, src = _prepare(img, laf, normalize_lafs_before_extraction)
    h, w = img.shape[-2:]
    sizes = _pyramid_sizes(h, w, PS)
    if len(sizes) == 1:
        out = _sample(src, laf_px, *_level_zero(laf_px, img), PS, img.dtype)
        return out.masked_fill(invalid[..., None, None, None], 0.0)

    # Atlas: level 0 on the left, levels 1.. stacked in a column on its right; each level
    # sits inside a one-pixel replicated guard, so that a sample clamped to a level's outer
    # pixel centre never mixes in a neighbour's pixels through rounding.
    offsets = [(1, 1)]
    x_col, y = w + 3, 0
    for lh, lw in sizes[1:]:
        offsets.append((x_col, y + 1))
        y += lh + 2
    atlas_h = max(h + 2, y)
    atlas_w = x_col + max(lw for _, lw in sizes[1:]) + 1
    atlas = src.new_zeros(src.shape[0], src.shape[1], atlas_h, atlas_w)
    level = src
    for i, ((lh, lw), (ox, oy)) in enumerate(zip(sizes, offsets)):
        if i > 0:
            level = pyrdown(level)
        atlas[..., oy - 1 : oy + lh + 1, ox - 1 : ox + lw + 1] = F.pad(level, (1, 1, 1, 1), mode="replicate")

    table = laf_px.new_tensor(
        [[2.0**-i, ox, oy, lw - 1.0, lh - 1.0] for i, ((lh, lw), (ox, oy)) in enumerate(zip(sizes, offsets))]
    )
    scale = get_laf_scale(laf_px.detach())[..., 0, 0]
    # floor(log2(2 s / PS)); a zero scale gives -inf, clamped to level 0.
    idx = torch.log2(2.0 * scale / PS).floor().clamp(0, len(sizes) - 1).long()
    per = table[idx]  # (B, N, 5)
    out = _sample(atlas, laf_px, per[..., 0], per[..., 1:3], per[..., 3:5], PS, img.dtype)
    return out.masked_fill(invalid[..., None, None, None], 0.0)
