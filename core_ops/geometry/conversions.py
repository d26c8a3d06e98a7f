"""Conversions between angle units, homogeneous and Euclidean points, affine matrices and
homographies, and the 3-D rotation parametrisations (angle-axis, quaternion, matrix).

Quaternions are ``(w, x, y, z)``, real part first, as in Kornia 0.9 (SciPy's ``as_quat``
is ``(x, y, z, w)``). An angle-axis vector is the unit rotation axis times the angle in
radians. Rotation matrices act on column vectors from the left, right-handed: a positive
angle about ``+z`` sends ``+x`` towards ``+y``.

Numerics follow PyTorch3D's ``rotation_conversions``: every series that is ``0 / 0`` at the
identity (``sin(t) / t``, ``atan2(s, w) / s``) switches to its Taylor expansion below a
bound where the expansion is exact to the working dtype's rounding, and the discarded
branch of every ``torch.where`` is fed a harmless stand-in (the "double where"), so that
its backward never evaluates ``sqrt'(0)`` or ``1 / 0`` and gradients stay finite and
correct at the identity and at half turns. No ``eps`` is ever added to a value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_floating, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentValueError, ShapeError

__all__ = [
    "angle_axis_to_quaternion",
    "angle_axis_to_rotation_matrix",
    "axis_angle_to_quaternion",
    "axis_angle_to_rotation_matrix",
    "convert_affinematrix_to_homography",
    "convert_points_from_homogeneous",
    "convert_points_to_homogeneous",
    "deg2rad",
    "normalize_quaternion",
    "quaternion_to_angle_axis",
    "quaternion_to_axis_angle",
    "quaternion_to_rotation_matrix",
    "rad2deg",
    "rotation_matrix_to_angle_axis",
    "rotation_matrix_to_axis_angle",
    "rotation_matrix_to_quaternion",
]


def _series_bound(dtype: torch.dtype) -> float:
    """Where a Taylor branch in ``u = angle^2`` takes over: ``u < eps^(1/4)``.

    Above the bound, the closed forms are exact in value but their derivatives cancel
    (``t cos t - sin t`` and the like), which costs ``eps / u`` relative on the small
    Jacobian entries (``dq_x / dv_y`` is of order ``u``): under 1e-11 in float64 at the
    bound, where a bound at ``u < sqrt(eps)`` would leave ``sqrt(eps)``. Below it, the
    series are kept to ``u^3`` (``atan``'s to ``t^6``), so that the derivative of the first
    dropped term costs no more (about 1e-11 relative, under rounding absolute). The tests
    hold every Jacobian entry to 3e-11 relative and a few ulps absolute against an
    80-digit reference, on both sides.
    """
    return torch.finfo(dtype).eps ** 0.25


def _check_float(x: object, dims: list[str | int], name: str) -> None:
    check_shape(x, dims, name)
    assert isinstance(x, torch.Tensor)
    check_floating(x, name)


def rad2deg(tensor: torch.Tensor) -> torch.Tensor:
    """Convert angles from radians to degrees.

    Args:
        tensor: angles in radians, any shape, floating.

    Returns:
        The angles in degrees, same shape and dtype.

    Example:
        >>> rad2deg(torch.tensor(math.pi))
        tensor(180.)
    """
    check_tensor(tensor, "tensor")
    check_floating(tensor, "tensor")
    return tensor * (180.0 / math.pi)


def deg2rad(tensor: torch.Tensor) -> torch.Tensor:
    """Convert angles from degrees to radians.

    Args:
        tensor: angles in degrees, any shape, floating.

    Returns:
        The angles in radians, same shape and dtype.

    Example:
        >>> deg2rad(torch.tensor(180.0))
        tensor(3.1416)
    """
    check_tensor(tensor, "tensor")
    check_floating(tensor, "tensor")
    return tensor * (math.pi / 180.0)


def convert_points_to_homogeneous(points: torch.Tensor) -> torch.Tensor:
    """Append a homogeneous coordinate ``w = 1`` to every point.

    Args:
        points: points ``(*, N, D)``; any dtype (an integer input stays integer).

    Returns:
        ``(*, N, D + 1)``.

    Convention:
        ``w`` is the last component, where :func:`convert_points_from_homogeneous` reads it.

    Example:
        >>> convert_points_to_homogeneous(torch.tensor([[2.0, 3.0]]))
        tensor([[2., 3., 1.]])
    """
    check_shape(points, ["*", "N", "D"], "points")
    return torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)


def convert_points_from_homogeneous(points: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Drop the homogeneous coordinate ``w``, dividing the others by it.

    Args:
        points: homogeneous points ``(*, N, D)``, ``D >= 2``, floating.
        eps: a point is divided by ``w`` only where ``|w| > eps``; elsewhere (points at or
            near infinity) its first ``D - 1`` components are returned unchanged, as OpenCV
            and Kornia do. ``eps`` only picks the branch and never enters the division.

    Returns:
        ``(*, N, D - 1)``. Values and gradients are finite wherever the input is: the
        division sees a stand-in ``w = 1`` on the points that keep scale 1, so its backward
        never meets ``1 / 0``.

    Convention:
        ``w`` is the last component; its sign is kept (``(2, 4, -2)`` gives ``(-1, -2)``).

    Example:
        >>> convert_points_from_homogeneous(torch.tensor([[2.0, 4.0, 2.0], [2.0, 4.0, 0.0]]))
        tensor([[1., 2.],
                [2., 4.]])
    """
    _check_float(points, ["*", "N", "D"], "points")
    if points.shape[-1] < 2:
        raise ShapeError(
            "points", ("*", "N", "D >= 2"), tuple(points.shape),
            f"points: expected at least 2 homogeneous coordinates, got shape {tuple(points.shape)}",
        )
    w = points[..., -1:]
    finite = w.abs() > eps
    safe_w = torch.where(finite, w, torch.ones_like(w))
    scale = torch.where(finite, safe_w.reciprocal(), torch.ones_like(w))
    return points[..., :-1] * scale


def convert_affinematrix_to_homography(A: torch.Tensor) -> torch.Tensor:
    """Append the row ``(0, 0, 1)`` to 2-D affine matrices.

    Args:
        A: affine matrices ``(*, 2, 3)``.

    Returns:
        Homographies ``(*, 3, 3)``; the input is not modified.

    Convention:
        The matrices act on homogeneous column vectors ``(x, y, 1)``; the frame is whatever
        the input's is (pixel or normalised coordinates).

    Example:
        >>> convert_affinematrix_to_homography(torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, 7.0]]))
        tensor([[1., 0., 5.],
                [0., 1., 7.],
                [0., 0., 1.]])
    """
    check_shape(A, ["*", 2, 3], "A")
    last_row = torch.zeros_like(A[..., :1, :])
    last_row[..., 2] = 1
    return torch.cat([A, last_row], dim=-2)


def angle_axis_to_rotation_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from angle-axis vectors (Rodrigues' formula).

    ``R = I + a [v]x + b [v]x^2`` with ``a = sin(t) / t`` and ``b = (1 - cos(t)) / t^2``,
    ``t = |v|``. ``b`` is evaluated as ``sinc(t / 2)^2 / 2``, which has no cancellation;
    below ``t^2 < eps^(1/4)`` both coefficients come from their Taylor series in ``t^2``,
    so the value and the gradient are exact at ``t = 0`` too.

    Args:
        axis_angle: ``(*, 3)`` rotation axis times angle in radians, floating.

    Returns:
        ``(*, 3, 3)`` rotation matrices.

    Convention:
        ``R @ p`` rotates the column vector ``p`` by the right-hand rule about the axis;
        ``(0, 0, pi / 2)`` sends ``(1, 0, 0)`` to ``(0, 1, 0)``. Angles beyond ``pi`` are
        accepted (the map is ``2 pi``-periodic along the axis).

    Example:
        >>> R = angle_axis_to_rotation_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
        >>> (R @ torch.tensor([1.0, 0.0, 0.0])).round(decimals=6)
        tensor([0., 1., 0.])
    """
    _check_float(axis_angle, ["*", 3], "axis_angle")
    vx, vy, vz = axis_angle.unbind(-1)
    theta2 = vx * vx + vy * vy + vz * vz
    small = theta2 < _series_bound(axis_angle.dtype)
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half = 0.5 * theta
    sinc_half = torch.sin(half) / half
    # sin(t)/t = 1 - t^2/6 + t^4/120 - t^6/5040, (1 - cos t)/t^2 = 1/2 - t^2/24 + t^4/720 - t^6/40320.
    a_small = 1.0 - theta2 / 6.0 * (1.0 - theta2 / 20.0 * (1.0 - theta2 / 42.0))
    b_small = 0.5 - theta2 / 24.0 * (1.0 - theta2 / 30.0 * (1.0 - theta2 / 56.0))
    a = torch.where(small, a_small, torch.sin(theta) / theta)
    b = torch.where(small, b_small, 0.5 * sinc_half * sinc_half)
    # R = cos(t) I + a [v]x + b v v^T, with cos(t) = 1 - b t^2 written per diagonal entry
    # as 1 - b (t^2 - v_i^2), which keeps its relative accuracy near the identity.
    bxy, bxz, byz = b * vx * vy, b * vx * vz, b * vy * vz
    ax, ay, az = a * vx, a * vy, a * vz
    entries = [
        1.0 - b * (vy * vy + vz * vz), bxy - az, bxz + ay,
        bxy + az, 1.0 - b * (vx * vx + vz * vz), byz - ax,
        bxz - ay, byz + ax, 1.0 - b * (vx * vx + vy * vy),
    ]  # fmt: skip
    return torch.stack(entries, dim=-1).unflatten(-1, (3, 3))


def rotation_matrix_to_quaternion(rotation_matrix: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Unit quaternions ``(w, x, y, z)`` from rotation matrices.

    Four candidate quaternions are formed, each dividing by one of ``2 |w|``, ``2 |x|``,
    ``2 |y|``, ``2 |z|`` (from the radicands ``r = 4 (w^2, x^2, y^2, z^2)``, linear in the
    matrix), and the one with the largest radicand is kept, as in PyTorch3D. The four
    radicands sum to 4 for any matrix, so the kept one is at least 1: the result and its
    gradient are well conditioned everywhere, the identity and half turns included.

    Args:
        rotation_matrix: ``(*, 3, 3)``, floating. It is not checked for orthonormality; the
            result is exact for a rotation and a smooth extension off the manifold. There
            is no ``check_rotation`` option, unlike Kornia's: checking values would
            synchronise with the device.
        eps: radicands at or below ``eps`` are replaced by 1 before their square root. Only
            discarded candidates can have one, so ``eps`` never changes the result; it keeps
            their backward (``r^-1.5``) from overflowing into ``0 * inf = nan``.

    Returns:
        ``(*, 4)`` quaternions with ``w >= 0``.

    Convention:
        The sign is canonical: ``w >= 0``. For a half turn (``w = 0``) the largest of
        ``|x|, |y|, |z|`` is positive. (Kornia does not canonicalise; ``q`` and ``-q`` are the
        same rotation.)

    Example:
        >>> rotation_matrix_to_quaternion(torch.eye(3))
        tensor([1., 0., 0., 0.])
    """
    _check_float(rotation_matrix, ["*", 3, 3], "rotation_matrix")
    m = rotation_matrix.flatten(-2)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    radicands = torch.stack(
        [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1
    )
    safe = torch.where(radicands > eps, radicands, torch.ones_like(radicands))
    # Row i is the quaternion times 4 q_i, i.e. times 2 sqrt(r_i).
    scaled = torch.stack(
        [
            torch.stack([radicands[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, radicands[..., 1], m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, radicands[..., 2], m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, radicands[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    candidates = scaled / (2.0 * torch.sqrt(safe)).unsqueeze(-1)
    best = radicands.argmax(dim=-1, keepdim=True)
    index = best.unsqueeze(-1).expand(*best.shape, 4)
    quaternion = torch.gather(candidates, -2, index).squeeze(-2)
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def quaternion_to_rotation_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions ``(w, x, y, z)``.

    The quaternion need not be unit: the matrix is that of ``q / |q|``, computed with the
    factor ``2 / |q|^2`` (no square root), so any scale gives the same matrix and the
    gradient is tangent to the sphere of quaternions.

    Args:
        quaternion: ``(*, 4)``, floating.

    Returns:
        ``(*, 3, 3)`` rotation matrices. The zero quaternion, which is no rotation, gives the
        identity with a zero gradient (as Kornia's gives the identity).

    Convention:
        ``q`` and ``-q`` give the same matrix; ``(cos(t / 2), sin(t / 2) n)`` is the
        rotation by ``t`` about ``n`` (right-hand rule, column vectors).

    Example:
        >>> quaternion_to_rotation_matrix(torch.tensor([0.0, 0.0, 0.0, 1.0]))
        tensor([[-1.,  0.,  0.],
                [ 0., -1.,  0.],
                [ 0.,  0.,  1.]])
    """
    _check_float(quaternion, ["*", 4], "quaternion")
    w, x, y, z = quaternion.unbind(-1)
    norm2 = w * w + x * x + y * y + z * z
    nonzero = norm2 > 0
    s = torch.where(nonzero, 2.0 / torch.where(nonzero, norm2, torch.ones_like(norm2)), torch.zeros_like(norm2))
    xx, yy, zz = s * x * x, s * y * y, s * z * z
    xy, xz, yz = s * x * y, s * x * z, s * y * z
    wx, wy, wz = s * w * x, s * w * y, s * w * z
    entries = [
        1.0 - (yy + zz), xy - wz, xz + wy,
        xy + wz, 1.0 - (xx + zz), yz - wx,
        xz - wy, yz + wx, 1.0 - (xx + yy),
    ]  # fmt: skip
    return torch.stack(entries, dim=-1).unflatten(-1, (3, 3))


def quaternion_to_angle_axis(quaternion: torch.Tensor) -> torch.Tensor:
    """Angle-axis vectors from quaternions ``(w, x, y, z)``.

    With ``s = |(x, y, z)|``, the result is ``(x, y, z) * 2 atan2(s, w) / s``. The
    factor is ``0 / 0`` at the identity; where ``(s / w)^2 < eps^(1/4)`` it comes from
    ``atan(t) / t = 1 - t^2 / 3 + t^4 / 5 - t^6 / 7``, so values and gradients are exact
    there.

    Args:
        quaternion: ``(*, 4)``, floating; need not be unit (the result is scale invariant).

    Returns:
        ``(*, 3)`` angle-axis vectors with angle in ``[0, pi]``. The zero quaternion gives
        the zero vector.

    Convention:
        ``q`` and ``-q`` give the same vector: a quaternion with ``w < 0`` is negated first.
        At exactly ``w = 0`` (a half turn) it is kept as given, so ``(0, n)`` gives ``pi n``
        and ``(0, -n)`` gives ``-pi n``, the same rotation; the map jumps there (as every
        angle-axis chart with angles in ``[0, pi]`` must) but its gradient stays finite.

    Example:
        >>> quaternion_to_angle_axis(torch.tensor([math.cos(0.5), 0.0, math.sin(0.5), 0.0]))
        tensor([0., 1., 0.])
    """
    _check_float(quaternion, ["*", 4], "quaternion")
    negative = quaternion[..., :1] < 0
    quaternion = torch.where(negative, -quaternion, quaternion)
    w = quaternion[..., 0]
    vector = quaternion[..., 1:]
    s2 = (vector * vector).sum(-1)
    small = s2 < _series_bound(quaternion.dtype) * (w * w)  # never true at w = 0
    general = ~small & (s2 > 0)  # neither: the zero quaternion
    s = torch.sqrt(torch.where(general, s2, torch.ones_like(s2)))
    k_general = 2.0 * torch.atan2(s, w) / s
    safe_w = torch.where(small, w, torch.ones_like(w))
    t2 = s2 / (safe_w * safe_w)
    atan_t_over_t = 1.0 - t2 * (1.0 / 3.0 - t2 * (1.0 / 5.0 - t2 / 7.0))
    k_small = 2.0 / safe_w * atan_t_over_t
    k = torch.where(small, k_small, torch.where(general, k_general, torch.zeros_like(s2)))
    return vector * k.unsqueeze(-1)


def angle_axis_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """Quaternions ``(w, x, y, z)`` from angle-axis vectors.

    ``(cos(t / 2), v sin(t / 2) / t)`` with ``t = |v|``; below ``t^2 < eps^(1/4)`` both
    components come from their Taylor series in ``t^2``, so the gradient is exact at 0.

    Args:
        axis_angle: ``(*, 3)`` rotation axis times angle in radians, floating.

    Returns:
        ``(*, 4)`` unit quaternions.

    Convention:
        Nothing is canonicalised: angles in ``[0, pi]`` give ``w >= 0``, larger angles the
        ``w < 0`` half of the double cover (``2 pi`` about any axis gives ``(-1, 0, 0, 0)``).

    Example:
        >>> angle_axis_to_quaternion(torch.tensor([0.0, 1.0, 0.0]))
        tensor([0.8776, 0.0000, 0.4794, 0.0000])
    """
    _check_float(axis_angle, ["*", 3], "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < _series_bound(axis_angle.dtype)
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half = 0.5 * theta
    # sin(t/2)/t = (1 - t^2/24 + t^4/1920 - t^6/322560) / 2,
    # cos(t/2) = 1 - t^2/8 + t^4/384 - t^6/46080.
    k_small = 0.5 - theta2 / 48.0 * (1.0 - theta2 / 80.0 * (1.0 - theta2 / 168.0))
    w_small = 1.0 - theta2 / 8.0 * (1.0 - theta2 / 48.0 * (1.0 - theta2 / 120.0))
    k = torch.where(small, k_small, torch.sin(half) / theta)
    w = torch.where(small, w_small, torch.cos(half))
    return torch.cat([w.unsqueeze(-1), axis_angle * k.unsqueeze(-1)], dim=-1)


def rotation_matrix_to_angle_axis(rotation_matrix: torch.Tensor) -> torch.Tensor:
    """Angle-axis vectors from rotation matrices, through :func:`rotation_matrix_to_quaternion`.

    Args:
        rotation_matrix: ``(*, 3, 3)``, floating; not checked for orthonormality. There is
            no ``check_rotation`` option, unlike Kornia's: checking values would
            synchronise with the device.

    Returns:
        ``(*, 3)`` angle-axis vectors, angle in ``[0, pi]``. Gradients are finite and
        correct at the identity and up to the half turn; at exactly ``pi`` the sign of the
        axis follows the canonical quaternion (see :func:`rotation_matrix_to_quaternion`).

    Convention:
        The inverse of :func:`angle_axis_to_rotation_matrix` for angles in ``[0, pi)``.

    Example:
        >>> R = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> rotation_matrix_to_angle_axis(R)
        tensor([1.5708, 0.0000, 0.0000])
    """
    _check_float(rotation_matrix, ["*", 3, 3], "rotation_matrix")
    return quaternion_to_angle_axis(rotation_matrix_to_quaternion(rotation_matrix))


def normalize_quaternion(quaternion: torch.Tensor, eps: float = 1e-12, *, p: float = 2.0) -> torch.Tensor:
    """Divide quaternions by their norm, ``q / max(|q|_p, eps)`` (``F.normalize``).

    Args:
        quaternion: ``(*, 4)``, floating; the component order does not matter here.
        eps: floor on the divisor: the zero quaternion stays zero, with gradient ``I / eps``.
        p: the norm's exponent; only ``p = 2`` gives unit quaternions (rotations).

    Returns:
        ``(*, 4)``; the sign is kept (no ``w >= 0`` canonicalisation).

    Example:
        >>> normalize_quaternion(torch.tensor([1.0, 0.0, 1.0, 0.0]))
        tensor([0.7071, 0.0000, 0.7071, 0.0000])
    """
    _check_float(quaternion, ["*", 4], "quaternion")
    if not p > 0:
        raise ArgumentValueError("p", "a positive norm exponent", p, f"p: expected a positive norm exponent, got {p!r}")
    return F.normalize(quaternion, p=p, dim=-1, eps=eps)


# Kornia 0.9's preferred spellings of the same functions.
axis_angle_to_rotation_matrix = angle_axis_to_rotation_matrix
rotation_matrix_to_axis_angle = rotation_matrix_to_angle_axis
quaternion_to_axis_angle = quaternion_to_angle_axis
axis_angle_to_quaternion = angle_axis_to_quaternion
