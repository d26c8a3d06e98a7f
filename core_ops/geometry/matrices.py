"""The matrices of 2-D transforms: homographies from four point pairs, rotations,
translations, shears and their compositions, as OpenCV and Kornia build them.

Convention (``DESIGN.md``):
    Every matrix acts on pixel coordinates ``(x, y, 1)`` (x right, y down, integer values
    at pixel centres) and maps *source* pixels to *destination* pixels: the matrix that
    :func:`~core_ops.geometry.imgwarp.warp_perspective` and
    :func:`~core_ops.geometry.imgwarp.warp_affine` take, and that OpenCV's
    ``getPerspectiveTransform`` / ``getRotationMatrix2D`` return.
"""

from __future__ import annotations

import math

import torch

from gradcv.core_ops._checks import check_floating, check_shape
from gradcv.core_ops.errors import DeviceError, DTypeError, ShapeError

__all__ = [
    "get_affine_matrix2d",
    "get_perspective_transform",
    "get_rotation_matrix2d",
    "get_shear_matrix2d",
    "get_translation_matrix2d",
    "invert_affine_transform",
]


def work_dtype(device: torch.device) -> torch.dtype:
    """The dtype of small 3 x 3 algebra: float64 wherever the device has it (MPS has not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def to_homography(affine: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` affine matrices as ``(B, 3, 3)`` with last row ``(0, 0, 1)``."""
    last = torch.zeros_like(affine[:, :1])
    last[:, :, 2] = 1.0
    return torch.cat((affine, last), dim=1)


def _hartley(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre ``(B, N, 2)`` points and scale them to mean distance sqrt(2).

    Returns ``(normalised points, centre (B, 2), scale (B,))``.
    """
    centre = points.mean(-2, keepdim=True)
    scale = math.sqrt(2.0) / (points - centre).square().sum(-1).sqrt().mean(-1)
    return (points - centre) * scale[:, None, None], centre[:, 0], scale


def _triangle_areas(p: torch.Tensor) -> torch.Tensor:
    """Twice the signed areas of the four triangles of four points ``(B, 4, 2)``: ``(B, 4)``."""
    idx = ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3))
    areas = []
    for i, j, k in idx:
        a, b = p[:, j] - p[:, i], p[:, k] - p[:, i]
        areas.append(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    return torch.stack(areas, -1)


def get_perspective_transform(points_src: torch.Tensor, points_dst: torch.Tensor) -> torch.Tensor:
    """The homography taking four source points to four destination points.

    As ``cv2.getPerspectiveTransform``: the 8 x 8 linear system with ``h33 = 1``, solved
    in float64 on Hartley-normalised points (centred, mean distance sqrt(2)), so that
    its conditioning does not depend on the image size. Differentiable.

    Args:
        points_src: ``(B, 4, 2)`` source points ``(x, y)``.
        points_dst: ``(B, 4, 2)`` destination points.

    Returns:
        ``(B, 3, 3)`` homographies with ``H[2, 2] = 1``, in the dtype of the points. A
        batch entry whose source or destination has three collinear points (no
        homography, or not a unique one) or non-finite points is all NaN, which
        :func:`warp_perspective` turns into a blank image; nothing is checked on the host.

    Convention:
        Pixel coordinates, source to destination: the matrix :func:`warp_perspective` takes.

    Example:
        >>> src = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
        >>> get_perspective_transform(src, 2 * src + 1)
        tensor([[[2., 0., 1.],
                 [0., 2., 1.],
                 [0., 0., 1.]]])
    """
    check_shape(points_src, ["B", 4, 2], "points_src")
    check_shape(points_dst, ["B", 4, 2], "points_dst")
    check_floating(points_src, "points_src")
    check_floating(points_dst, "points_dst")
    if points_src.shape != points_dst.shape:
        raise ShapeError(
            "points_dst", tuple(points_src.shape), tuple(points_dst.shape),
            f"points_dst: expected the shape of points_src {tuple(points_src.shape)}, got {tuple(points_dst.shape)}",
        )
    if points_src.device != points_dst.device:
        raise DeviceError(
            "points_dst", points_src.device, points_dst.device,
            f"points_dst: expected a tensor on {points_src.device}, got {points_dst.device}",
        )
    work = work_dtype(points_src.device)
    ns, cs, ss = _hartley(points_src.to(work))
    nd, cd, sd = _hartley(points_dst.to(work))
    x, y = ns[..., 0], ns[..., 1]
    X, Y = nd[..., 0], nd[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_x = torch.stack((x, y, one, zero, zero, zero, -x * X, -y * X), -1)
    rows_y = torch.stack((zero, zero, zero, x, y, one, -x * Y, -y * Y), -1)
    system = torch.stack((rows_x, rows_y), -2).reshape(-1, 8, 8)
    rhs = torch.stack((X, Y), -1).reshape(-1, 8)
    h, info = torch.linalg.solve_ex(system, rhs)
    Hn = torch.cat((h, one[:, :1]), -1).reshape(-1, 3, 3)
    # Undo the normalisations T p = s (p - c): H = Td^-1 @ Hn @ Ts.
    linear = Hn[:, :, :2] * ss[:, None, None]
    H = torch.cat((linear, Hn[:, :, 2:] - linear @ cs[:, :, None]), 2)  # Hn @ Ts
    H = torch.cat((H[:, :2] / sd[:, None, None] + cd[:, :, None] * H[:, 2:], H[:, 2:]), 1)  # Td^-1 @ ...
    H = H / H[:, 2:3, 2:3]
    area_eps = 1e-9 if work == torch.float64 else 1e-4
    ok = (info == 0) & (_triangle_areas(ns).abs() > area_eps).all(-1) & (_triangle_areas(nd).abs() > area_eps).all(-1)
    H = torch.where(ok[:, None, None], H, torch.full_like(H, float("nan")))
    return H.to(points_src.dtype)


def _check_batch_params(params: dict[str, tuple[object, list[str | int]]]) -> torch.Tensor:
    """Check named tensors against shapes with a shared leading ``B``; returns the first."""
    first: torch.Tensor | None = None
    for name, (value, dims) in params.items():
        check_shape(value, dims, name)
        assert isinstance(value, torch.Tensor)
        check_floating(value, name)
        if first is None:
            first = value
            continue
        if value.shape[0] != first.shape[0]:
            raise ShapeError(
                name, (first.shape[0], *value.shape[1:]), tuple(value.shape),
                f"{name}: expected batch size {first.shape[0]}, got {value.shape[0]}",
            )
        if value.device != first.device:
            raise DeviceError(name, first.device, value.device)
        if value.dtype != first.dtype:
            raise DTypeError(name, first.dtype, value.dtype)
    assert first is not None
    return first


def get_rotation_matrix2d(center: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The affine matrix of a rotation and scaling about a point, as ``cv2.getRotationMatrix2D``.

    Args:
        center: ``(B, 2)`` centres ``(x, y)`` in pixels.
        angle: ``(B,)`` angles in degrees; positive turns the image counter-clockwise
            as displayed (y down), as OpenCV.
        scale: ``(B, 2)`` scale factors ``(s_x, s_y)`` (OpenCV takes one).

    Returns:
        ``(B, 2, 3)``: ``[[a, b, (1 - a) c_x - b c_y], [-c, d, c c_x + (1 - d) c_y]]`` with
        ``a = s_x cos``, ``b = s_y sin``, ``c = s_x sin``, ``d = s_y cos``.

    Convention:
        Pixel coordinates, source to destination (the matrix :func:`warp_affine` takes).

    Example:
        >>> M = get_rotation_matrix2d(torch.tensor([[2.0, 1.0]]), torch.tensor([90.0]), torch.ones(1, 2))
        >>> M.round(decimals=4) + 0.0  # + 0.0: print -0. as 0.
        tensor([[[ 0.,  1.,  1.],
                 [-1.,  0.,  3.]]])
    """
    _check_batch_params({"center": (center, ["B", 2]), "angle": (angle, ["B"]), "scale": (scale, ["B", 2])})
    rad = torch.deg2rad(angle)
    cos, sin = torch.cos(rad), torch.sin(rad)
    a, b = cos * scale[:, 0], sin * scale[:, 1]
    c, d = sin * scale[:, 0], cos * scale[:, 1]
    cx, cy = center[:, 0], center[:, 1]
    row0 = torch.stack((a, b, cx - a * cx - b * cy), -1)
    row1 = torch.stack((-c, d, cy + c * cx - d * cy), -1)
    return torch.stack((row0, row1), -2)


def get_translation_matrix2d(translations: torch.Tensor) -> torch.Tensor:
    """The ``(B, 3, 3)`` matrix translating by ``(B, 2)`` offsets ``(dx, dy)`` in pixels.

    Convention:
        Pixel coordinates, source to destination: positive ``dx`` moves content right.

    Example:
        >>> get_translation_matrix2d(torch.tensor([[2.0, -1.0]]))[0, :2]
        tensor([[ 1.,  0.,  2.],
                [ 0.,  1., -1.]])
    """
    _check_batch_params({"translations": (translations, ["B", 2])})
    eye = torch.eye(3, device=translations.device, dtype=translations.dtype).expand(translations.shape[0], 3, 3)
    return torch.cat((eye[:, :, :2], torch.cat((translations, eye[:, 2:, 2]), -1)[:, :, None]), -1)


def get_shear_matrix2d(
    center: torch.Tensor, sx: torch.Tensor | None = None, sy: torch.Tensor | None = None
) -> torch.Tensor:
    """The ``(B, 3, 3)`` matrix shearing along x then y about ``center``, as Kornia's.

    Args:
        center: ``(B, 2)`` centre ``(c_x, c_y)`` in pixels.
        sx: ``(B,)`` shear angle along x, in radians (0 if ``None``).
        sy: ``(B,)`` shear angle along y, in radians (0 if ``None``).

    Returns:
        ``(B, 3, 3)``: ``x' = x - tan(sx) (y - c_y)``, then ``y' = y - tan(sy) (x' - c_x)``
        (Kornia's negative-tangent convention).

    Convention:
        Pixel coordinates, source to destination.

    Example:
        >>> get_shear_matrix2d(torch.zeros(1, 2), sx=torch.tensor([math.pi / 4]))[0, 0]
        tensor([ 1., -1.,  0.])
    """
    _check_batch_params({"center": (center, ["B", 2])})
    zeros = torch.zeros(center.shape[0], device=center.device, dtype=center.dtype)
    tx = torch.tan(zeros if sx is None else sx)
    ty = torch.tan(zeros if sy is None else sy)
    one = torch.ones_like(tx)
    x, y = center[:, 0], center[:, 1]
    rows = torch.stack(
        (one, -tx, tx * y, -ty, one + tx * ty, ty * (x - tx * y), zeros, zeros, one), -1
    )
    return rows.view(-1, 3, 3)


def get_affine_matrix2d(
    translations: torch.Tensor,
    center: torch.Tensor,
    scale: torch.Tensor,
    angle: torch.Tensor,
    sx: torch.Tensor | None = None,
    sy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compose shear, rotation-and-scale about ``center`` and translation, as Kornia.

    ``T(translations) @ R(center, -angle, scale) @ Shear(center, sx, sy)``.

    Args:
        translations: ``(B, 2)`` offsets ``(dx, dy)`` in pixels.
        center: ``(B, 2)`` centre in pixels.
        scale: ``(B, 2)`` scale factors ``(s_x, s_y)``.
        angle: ``(B,)`` degrees; as in Kornia, positive turns the image *clockwise* here
            (the angle is negated before :func:`get_rotation_matrix2d`).
        sx: ``(B,)`` shear angle along x in radians (see :func:`get_shear_matrix2d`).
        sy: ``(B,)`` shear angle along y in radians.

    Returns:
        ``(B, 3, 3)``.

    Convention:
        Pixel coordinates, source to destination.

    Example:
        >>> get_affine_matrix2d(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1))
        tensor([[[1., 0., 1.],
                 [0., 1., 2.],
                 [0., 0., 1.]]])
    """
    _check_batch_params({"translations": (translations, ["B", 2]), "center": (center, ["B", 2])})
    rotation = get_rotation_matrix2d(center, -angle, scale)
    rotation = torch.cat((rotation[:, :, :2], rotation[:, :, 2:] + translations[:, :, None]), -1)
    matrix = to_homography(rotation)
    if sx is not None or sy is not None:
        matrix = matrix @ get_shear_matrix2d(center, sx, sy)
    return matrix


def invert_affine_transform(matrix: torch.Tensor) -> torch.Tensor:
    """Invert ``(B, 2, 3)`` affine matrices, as ``cv2.invertAffineTransform``.

    A singular matrix gives non-finite entries, which :func:`warp_affine` turns into a
    blank image.

    Convention:
        Any frame: the inverse maps back whatever the matrix maps (pixel coordinates
        throughout gradcv).

    Example:
        >>> invert_affine_transform(torch.tensor([[[2.0, 1.0, 4.0], [1.0, 1.0, -1.0]]]))
        tensor([[[ 1., -1., -5.],
                 [-1.,  2.,  6.]]])
    """
    check_shape(matrix, ["B", 2, 3], "matrix")
    check_floating(matrix, "matrix")
    a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    row0 = torch.stack((ia, ib, -(ia * tx + ib * ty)), -1)
    row1 = torch.stack((ic, id_, -(ic * tx + id_ * ty)), -1)
    return torch.stack((row0, row1), -2)
