"""Tests for core_ops.geometry.conversions.

References: SciPy's ``Rotation`` (quaternions there are ``(x, y, z, w)``; ours and Kornia's
are ``(w, x, y, z)``) and Kornia 0.9 (its non-deprecated ``axis_angle_*`` spellings, since
its deprecated aliases warn and warnings are errors here).

Tolerances: float64 results are compared to 1e-14 absolute (a few ulps of the O(1)
entries; a float32 constant or temporary anywhere in a float64 path would show up as
~1e-8). Near the identity, where the angle-axis entries are themselves tiny, round trips
are compared relatively (1e-13). float32 results are compared with float64 ones to 1e-5:
near a half turn, the angle comes from ``atan2(s, w)`` with ``w`` known to about one
float32 ulp, so errors of a few 1e-7 are expected.

The angle-axis chart with angles in ``[0, pi]`` (and the canonical ``w >= 0`` quaternion)
jumps at the half turn: ``pi n`` and ``-pi n`` are the same rotation. Round trips there are
compared up to that sign, and at exactly ``pi`` the gradients of the maps into those charts
are checked for being finite rather than with gradcheck, whose finite differences would
straddle the jump.
"""

from __future__ import annotations

import math
from typing import Callable

import kornia.geometry.conversions as kc
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation
from torch.autograd import gradcheck
from torch.autograd.functional import jacobian

from gradcv.core_ops.geometry.conversions import (
    angle_axis_to_quaternion,
    angle_axis_to_rotation_matrix,
    axis_angle_to_quaternion,
    axis_angle_to_rotation_matrix,
    convert_affinematrix_to_homography,
    convert_points_from_homogeneous,
    convert_points_to_homogeneous,
    deg2rad,
    normalize_quaternion,
    quaternion_to_angle_axis,
    quaternion_to_axis_angle,
    quaternion_to_rotation_matrix,
    rad2deg,
    rotation_matrix_to_angle_axis,
    rotation_matrix_to_axis_angle,
    rotation_matrix_to_quaternion,
)
from tests._kernel_check import check_kernel
from tests.core_ops.geometry import _kernel_samples as samples

F64 = torch.float64
AXIS = torch.tensor([1.0, 2.0, -3.0], dtype=F64) / math.sqrt(14.0)
# Up to 1e-2: the float64 series branches (angle < 0.011); from 0.05: the closed forms;
# pi - 1e-6 and pi: half turns.
SPECIAL_ANGLES = [0.0, 1e-8, 1e-4, 1e-2, 0.05, 1.0, math.pi / 2, math.pi - 1e-6, math.pi]

Fn = Callable[[torch.Tensor], torch.Tensor]


def _random_angle_axis(n: int, dtype: torch.dtype = F64, max_angle: float = math.pi) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    axis = torch.randn(n, 3, generator=g, dtype=F64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    return (axis * torch.rand(n, 1, generator=g, dtype=F64) * max_angle).to(dtype)


def _wxyz(xyzw: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(xyzw[..., [3, 0, 1, 2]]))


def _quaternion(angle: float, axis: torch.Tensor = AXIS) -> torch.Tensor:
    return torch.cat([torch.tensor([math.cos(angle / 2)], dtype=F64), axis * math.sin(angle / 2)])


def _rotation(angle: float) -> torch.Tensor:
    return torch.from_numpy(Rotation.from_rotvec((AXIS * angle).numpy()).as_matrix())


def _assert_same_up_to_sign(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    """``a == b`` or ``a == -b`` per row (last dimension)."""
    plus = (a - b).abs().amax(-1)
    minus = (a + b).abs().amax(-1)
    assert torch.all(torch.minimum(plus, minus) <= atol), (a, b)


# --------------------------------------------------------------------------- units, points


def test_rad2deg_deg2rad_float64_against_numpy() -> None:
    x = torch.linspace(-7.0, 7.0, 101, dtype=F64)
    np.testing.assert_allclose(rad2deg(x).numpy(), np.degrees(x.numpy()), rtol=1e-15, atol=0)
    np.testing.assert_allclose(deg2rad(x).numpy(), np.radians(x.numpy()), rtol=1e-15, atol=0)
    torch.testing.assert_close(deg2rad(rad2deg(x)), x, rtol=1e-15, atol=1e-15)
    assert rad2deg(torch.tensor(math.pi, dtype=F64)).item() == pytest.approx(180.0, rel=1e-15)
    for dtype in (torch.float32, F64):
        assert rad2deg(x.to(dtype)).dtype == dtype and deg2rad(x.to(dtype)).dtype == dtype
    torch.testing.assert_close(rad2deg(x.float()), kc.rad2deg(x.float()))
    torch.testing.assert_close(deg2rad(x.float()), kc.deg2rad(x.float()))


def test_rad2deg_errors() -> None:
    with pytest.raises(TypeError, match="tensor: expected a torch.Tensor"):
        rad2deg(3.14)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tensor: expected a floating tensor"):
        deg2rad(torch.tensor([180]))


def test_points_homogeneous_against_kornia() -> None:
    pts = torch.randn(2, 5, 7, 3, dtype=F64)
    pts[0, 0, :3, -1] = torch.tensor([0.0, 1e-9, -1e-9], dtype=F64)  # at or near infinity
    pts[1, 1, 0, -1] = -2.0
    torch.testing.assert_close(convert_points_from_homogeneous(pts), kc.convert_points_from_homogeneous(pts))
    torch.testing.assert_close(convert_points_to_homogeneous(pts), kc.convert_points_to_homogeneous(pts))
    torch.testing.assert_close(convert_points_from_homogeneous(convert_points_to_homogeneous(pts)), pts)


def test_points_from_homogeneous_values_and_eps() -> None:
    pts = torch.tensor([[2.0, 4.0, -2.0], [2.0, 4.0, 0.0], [2.0, 4.0, 1e-9], [2.0, 4.0, 1e-3]])
    expected = torch.tensor([[-1.0, -2.0], [2.0, 4.0], [2.0, 4.0], [2000.0, 4000.0]])
    torch.testing.assert_close(convert_points_from_homogeneous(pts), expected)
    # eps only picks the branch: w = 1e-3 is left undivided with eps = 1e-2
    torch.testing.assert_close(convert_points_from_homogeneous(pts, eps=1e-2)[3], pts[3, :2])


def test_points_from_homogeneous_gradients_finite_at_infinity() -> None:
    pts = torch.tensor([[2.0, 4.0, 0.0], [2.0, 4.0, 1e-12], [2.0, 4.0, -1e-30], [1.0, 2.0, 2.0]], dtype=F64)
    pts.requires_grad_()
    convert_points_from_homogeneous(pts).sum().backward()
    assert pts.grad is not None and torch.isfinite(pts.grad).all()
    # points at infinity are passed through: d/dxy = 1, d/dw = 0
    torch.testing.assert_close(pts.grad[:3], torch.tensor([[1.0, 1.0, 0.0]] * 3, dtype=F64))
    torch.testing.assert_close(pts.grad[3], torch.tensor([0.5, 0.5, -0.75], dtype=F64))
    regular = torch.randn(3, 4, 3, dtype=F64).add_(torch.tensor([0.0, 0.0, 3.0], dtype=F64)).requires_grad_()
    assert gradcheck(convert_points_from_homogeneous, (regular,))


def test_points_shapes_dtypes_and_errors() -> None:
    for dtype in (torch.float32, F64):
        pts = torch.randn(4, 2, dtype=dtype)
        assert convert_points_to_homogeneous(pts).dtype == dtype
        assert convert_points_from_homogeneous(convert_points_to_homogeneous(pts)).dtype == dtype
    assert convert_points_to_homogeneous(torch.zeros(3, 0, 2)).shape == (3, 0, 3)
    assert convert_points_from_homogeneous(torch.zeros(0, 5, 3)).shape == (0, 5, 2)
    with pytest.raises(ValueError, match=r"points: expected shape \(\*, N, D\), got \(3,\)"):
        convert_points_to_homogeneous(torch.zeros(3))
    with pytest.raises(ValueError, match="points: expected shape"):
        convert_points_from_homogeneous(torch.zeros(3))
    with pytest.raises(ValueError, match="points: expected at least 2"):
        convert_points_from_homogeneous(torch.zeros(4, 1))
    with pytest.raises(TypeError, match="points: expected a floating tensor"):
        convert_points_from_homogeneous(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="points: expected a torch.Tensor"):
        convert_points_to_homogeneous([[1.0, 2.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [(), (3,), (2, 5)])
def test_convert_affinematrix_to_homography(batch: tuple[int, ...]) -> None:
    A = torch.randn(*batch, 2, 3, dtype=F64)
    before = A.clone()
    H = convert_affinematrix_to_homography(A)
    assert H.shape == (*batch, 3, 3) and H.dtype == F64
    assert torch.equal(A, before)
    torch.testing.assert_close(H[..., :2, :], A, rtol=0, atol=0)
    torch.testing.assert_close(H[..., 2, :], torch.tensor([0.0, 0.0, 1.0], dtype=F64).expand(*batch, 3))
    flat = A.reshape(-1, 2, 3)
    torch.testing.assert_close(H.reshape(-1, 3, 3), kc.convert_affinematrix_to_homography(flat))


def test_convert_affinematrix_to_homography_errors_and_gradient() -> None:
    with pytest.raises(ValueError, match=r"A: expected shape \(\*, 2, 3\), got \(3, 3\)"):
        convert_affinematrix_to_homography(torch.eye(3))
    with pytest.raises(TypeError, match="A: expected a torch.Tensor"):
        convert_affinematrix_to_homography(np.zeros((2, 3)))  # type: ignore[arg-type]
    assert gradcheck(convert_affinematrix_to_homography, (torch.randn(2, 2, 3, dtype=F64, requires_grad=True),))


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("dtype,atol", [(F64, 1e-14), (torch.float32, 2e-6)])
def test_angle_axis_to_rotation_matrix_against_scipy(dtype: torch.dtype, atol: float) -> None:
    v = _random_angle_axis(200, F64, max_angle=2 * math.pi)  # beyond pi too: the map is periodic
    specials = torch.stack([AXIS * a for a in SPECIAL_ANGLES])
    v = torch.cat([v, specials])
    expected = torch.from_numpy(Rotation.from_rotvec(v.numpy()).as_matrix())
    R = angle_axis_to_rotation_matrix(v.to(dtype))
    assert R.dtype == dtype
    torch.testing.assert_close(R.double(), expected, rtol=0, atol=atol)


def test_rotation_matrix_to_angle_axis_against_scipy() -> None:
    v = torch.cat([_random_angle_axis(200), torch.stack([AXIS * a for a in SPECIAL_ANGLES[:-1]])])
    R = torch.from_numpy(Rotation.from_rotvec(v.numpy()).as_matrix())
    expected = torch.from_numpy(Rotation.from_matrix(R.numpy()).as_rotvec())
    out = rotation_matrix_to_angle_axis(R)
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(out, v, rtol=1e-13, atol=1e-14)
    # exactly a half turn: either sign of the axis is right
    _assert_same_up_to_sign(rotation_matrix_to_angle_axis(_rotation(math.pi)), AXIS * math.pi, atol=1e-14)


def test_quaternion_conversions_against_scipy() -> None:
    v = torch.cat([_random_angle_axis(200), torch.stack([AXIS * a for a in SPECIAL_ANGLES])])
    rot = Rotation.from_rotvec(v.numpy())
    q_ref = _wxyz(rot.as_quat())  # SciPy: (x, y, z, w)
    R_ref = torch.from_numpy(rot.as_matrix())

    q = angle_axis_to_quaternion(v)
    _assert_same_up_to_sign(q, q_ref, atol=1e-15)
    torch.testing.assert_close(q[:-1, 0], q_ref[:-1, 0].abs(), rtol=0, atol=1e-15)  # w = cos(t / 2) >= 0
    torch.testing.assert_close(quaternion_to_rotation_matrix(q_ref), R_ref, rtol=0, atol=1e-14)

    q_from_R = rotation_matrix_to_quaternion(R_ref)
    _assert_same_up_to_sign(q_from_R, q_ref, atol=1e-15)
    assert torch.all(q_from_R[:, 0] >= 0)

    aa = quaternion_to_angle_axis(q_ref)
    torch.testing.assert_close(aa[:-1], v[:-1], rtol=1e-13, atol=1e-15)
    _assert_same_up_to_sign(aa[-1:], v[-1:], atol=1e-14)
    # q and -q are the same rotation
    torch.testing.assert_close(quaternion_to_angle_axis(-q_ref[:-1]), v[:-1], rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(quaternion_to_rotation_matrix(-q_ref), R_ref, rtol=0, atol=1e-14)


def test_against_kornia() -> None:
    v = _random_angle_axis(100, torch.float32)
    R = angle_axis_to_rotation_matrix(v)
    q = angle_axis_to_quaternion(v)
    torch.testing.assert_close(R, kc.axis_angle_to_rotation_matrix(v))
    torch.testing.assert_close(q, kc.axis_angle_to_quaternion(v))
    torch.testing.assert_close(rotation_matrix_to_angle_axis(R), kc.rotation_matrix_to_axis_angle(R))
    torch.testing.assert_close(quaternion_to_rotation_matrix(q), kc.quaternion_to_rotation_matrix(q))
    torch.testing.assert_close(quaternion_to_angle_axis(q), kc.quaternion_to_axis_angle(q))
    _assert_same_up_to_sign(rotation_matrix_to_quaternion(R), kc.rotation_matrix_to_quaternion(R), atol=1e-6)
    raw = torch.randn(10, 4)
    torch.testing.assert_close(normalize_quaternion(raw), kc.normalize_quaternion(raw))
    torch.testing.assert_close(quaternion_to_rotation_matrix(3 * raw), kc.quaternion_to_rotation_matrix(raw))


def test_kornia_spellings_are_the_same_functions() -> None:
    assert axis_angle_to_rotation_matrix is angle_axis_to_rotation_matrix
    assert rotation_matrix_to_axis_angle is rotation_matrix_to_angle_axis
    assert quaternion_to_axis_angle is quaternion_to_angle_axis
    assert axis_angle_to_quaternion is angle_axis_to_quaternion


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("angle", SPECIAL_ANGLES)
def test_round_trips_at_special_angles(angle: float) -> None:
    v = AXIS * angle
    # tiny angles are compared relatively: the entries themselves are ~angle
    tol = dict(rtol=1e-13, atol=1e-15 * angle)
    R = angle_axis_to_rotation_matrix(v)
    q = angle_axis_to_quaternion(v)
    back_from_R = rotation_matrix_to_angle_axis(R)
    back_from_q = quaternion_to_angle_axis(q)
    q_from_R = rotation_matrix_to_quaternion(R)
    if angle < math.pi:
        torch.testing.assert_close(back_from_R, v, **tol)
        torch.testing.assert_close(back_from_q, v, **tol)
        torch.testing.assert_close(q_from_R, q, rtol=1e-13, atol=1e-15)
    else:
        for out in (back_from_R, back_from_q):
            _assert_same_up_to_sign(out, v, atol=1e-14)
        _assert_same_up_to_sign(q_from_R, q, atol=1e-15)
    torch.testing.assert_close(quaternion_to_rotation_matrix(q), R, rtol=0, atol=1e-15)
    torch.testing.assert_close(angle_axis_to_rotation_matrix(back_from_R), R, rtol=0, atol=1e-15)
    # the half turn comes back as a half turn, never as a rotation through a smaller angle
    torch.testing.assert_close(back_from_R.norm(), torch.tensor(angle, dtype=F64), rtol=1e-14, atol=0)


def test_quaternion_round_trip_up_to_sign_and_canonical_half_turn() -> None:
    q = normalize_quaternion(torch.randn(500, 4, dtype=F64))
    back = rotation_matrix_to_quaternion(quaternion_to_rotation_matrix(q))
    torch.testing.assert_close(back, q * torch.sign(q[:, :1]), rtol=0, atol=1e-14)
    # a half turn: w = 0 and the largest vector component comes out positive
    half_turn = rotation_matrix_to_quaternion(torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=F64)))
    torch.testing.assert_close(half_turn, torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=F64))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    u=st.floats(-1.0, 1.0),
    phi=st.floats(0.0, 2 * math.pi),
    angle=st.floats(0.0, math.pi),
)
def test_random_rotations_property(u: float, phi: float, angle: float) -> None:
    """Axis uniform on the sphere (z = u, longitude phi), angle uniform in [0, pi], float64."""
    r = math.sqrt(max(0.0, 1.0 - u * u))
    v = torch.tensor([r * math.cos(phi), r * math.sin(phi), u], dtype=F64) * angle
    R = angle_axis_to_rotation_matrix(v)
    torch.testing.assert_close(R, torch.from_numpy(Rotation.from_rotvec(v.numpy()).as_matrix()), rtol=0, atol=1e-14)
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-14)
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-14)

    q = angle_axis_to_quaternion(v)
    q_from_R = rotation_matrix_to_quaternion(R)
    aa_from_R = rotation_matrix_to_angle_axis(R)
    aa_from_q = quaternion_to_angle_axis(q)
    torch.testing.assert_close(quaternion_to_rotation_matrix(q), R, rtol=0, atol=1e-14)
    torch.testing.assert_close(q.norm(), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-15)
    if math.pi - angle > 1e-9:  # away from the chart's jump, the round trips are exact
        tol = dict(rtol=1e-12, atol=1e-15 * max(angle, 1e-300))
        torch.testing.assert_close(aa_from_R, v, **tol)
        torch.testing.assert_close(aa_from_q, v, **tol)
        torch.testing.assert_close(q_from_R, q, rtol=0, atol=1e-15)
    else:
        _assert_same_up_to_sign(aa_from_R, v, atol=1e-12)
        _assert_same_up_to_sign(aa_from_q, v, atol=1e-12)
        _assert_same_up_to_sign(q_from_R, q, atol=1e-15)


# --------------------------------------------------------------------------- gradients

# (name, function, input builder from an angle about AXIS)
CONVERSIONS: list[tuple[str, Fn, Callable[[float], torch.Tensor]]] = [
    ("angle_axis_to_rotation_matrix", angle_axis_to_rotation_matrix, lambda a: AXIS * a),
    ("angle_axis_to_quaternion", angle_axis_to_quaternion, lambda a: AXIS * a),
    ("quaternion_to_rotation_matrix", quaternion_to_rotation_matrix, _quaternion),
    ("quaternion_to_angle_axis", quaternion_to_angle_axis, _quaternion),
    ("rotation_matrix_to_quaternion", rotation_matrix_to_quaternion, _rotation),
    ("rotation_matrix_to_angle_axis", rotation_matrix_to_angle_axis, _rotation),
]
# Maps into the [0, pi] angle-axis chart or the w >= 0 quaternion jump at the half turn.
JUMP_AT_PI = {"quaternion_to_angle_axis", "rotation_matrix_to_quaternion", "rotation_matrix_to_angle_axis"}


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-5, 1e-3, 0.05, 1.0, math.pi - 1e-3, math.pi - 1e-6, math.pi])
@pytest.mark.parametrize("name,fn,make", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_gradcheck(name: str, fn: Fn, make: Callable[[float], torch.Tensor], angle: float) -> None:
    x = make(angle).requires_grad_()
    if angle == math.pi and name in JUMP_AT_PI:
        # At the jump, gradcheck's central differences straddle it; what must hold is that
        # the gradient is finite (no 0/0, no sqrt'(0)).
        J = jacobian(fn, x.detach())
        assert torch.isfinite(J).all()
        return
    # Within 1e-6 of pi, w = cos(t / 2) ~ 5e-7: finite differences need a smaller step so
    # that they do not cross w = 0 (the jump) for the maps that have one.
    step = 1e-9 if angle == math.pi - 1e-6 else 1e-6
    assert gradcheck(fn, (x,), eps=step, atol=1e-5, rtol=1e-4, fast_mode=False)


def test_quaternion_to_angle_axis_gradient_at_half_turn_is_the_one_sided_limit() -> None:
    """At exactly w = 0 the quaternion is not negated, so the gradient is the limit w -> 0+."""
    at = jacobian(quaternion_to_angle_axis, _quaternion(math.pi))
    near = jacobian(quaternion_to_angle_axis, _quaternion(math.pi - 1e-9))
    assert torch.isfinite(at).all()
    torch.testing.assert_close(at, near, rtol=1e-6, atol=1e-6)


def test_gradients_at_identity_are_exact() -> None:
    zero = torch.zeros(3, dtype=F64)
    J = jacobian(angle_axis_to_rotation_matrix, zero)  # (3, 3, 3): dR / dv_k = [e_k]x
    generators = torch.zeros(3, 3, 3, dtype=F64)
    for k, (i, j) in enumerate([(2, 1), (0, 2), (1, 0)]):
        generators[i, j, k], generators[j, i, k] = 1.0, -1.0
    torch.testing.assert_close(J, generators, rtol=0, atol=0)
    Jq = jacobian(angle_axis_to_quaternion, zero)
    torch.testing.assert_close(Jq, torch.cat([torch.zeros(1, 3, dtype=F64), 0.5 * torch.eye(3, dtype=F64)]))
    Ja = jacobian(quaternion_to_angle_axis, torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64))
    torch.testing.assert_close(Ja, torch.cat([torch.zeros(3, 1, dtype=F64), 2 * torch.eye(3, dtype=F64)], dim=1))
    # through the matrix: d log(R) / dv at the identity is the identity
    Jm = jacobian(lambda v: rotation_matrix_to_angle_axis(angle_axis_to_rotation_matrix(v)), zero)
    torch.testing.assert_close(Jm, torch.eye(3, dtype=F64), rtol=0, atol=1e-15)


# 80-digit references for the maps with a series branch. The float64 series take over at
# angle^2 < eps^(1/4), i.e. angle ~0.011 (quaternion_to_angle_axis: tan(angle / 2) ~0.011).
_BOUND_ANGLE = torch.finfo(F64).eps ** 0.125
REFERENCE_ANGLES = [
    0.0, 1e-8, 1e-6, 1e-4, 3e-4, 1e-3, 3e-3,
    0.99 * _BOUND_ANGLE, 1.01 * _BOUND_ANGLE, 1.98 * _BOUND_ANGLE, 2.02 * _BOUND_ANGLE,
    0.1, 1.0, math.pi - 1e-3, math.pi - 1e-6,
]  # fmt: skip


def _mp_angle_axis_to_rotation_matrix(mp, v: list) -> list:
    t = mp.sqrt(sum(c * c for c in v))
    a, b = (mp.sin(t) / t, (1 - mp.cos(t)) / t**2) if t != 0 else (mp.mpf(1), mp.mpf(0.5))
    x, y, z = v
    K = [[0, -z, y], [z, 0, -x], [-y, x, 0]]
    return [
        (1 if i == j else 0) + a * K[i][j] + b * sum(K[i][m] * K[m][j] for m in range(3))
        for i in range(3)
        for j in range(3)
    ]


def _mp_angle_axis_to_quaternion(mp, v: list) -> list:
    t = mp.sqrt(sum(c * c for c in v))
    k = mp.sin(t / 2) / t if t != 0 else mp.mpf(0.5)
    return [mp.cos(t / 2)] + [c * k for c in v]


def _mp_quaternion_to_angle_axis(mp, q: list) -> list:
    if q[0] < 0:
        q = [-c for c in q]
    s = mp.sqrt(sum(c * c for c in q[1:]))
    k = 2 * mp.atan2(s, q[0]) / s if s != 0 else 2 / q[0]
    return [c * k for c in q[1:]]


def _mp_jacobian(mp, f: Callable, x: torch.Tensor) -> torch.Tensor:
    """Central differences with step 1e-20 at 80 digits: accurate to ~1e-40, absolute."""
    h = mp.mpf("1e-20")
    base = [mp.mpf(float(c)) for c in x]
    columns = []
    for k in range(len(base)):
        plus = f(mp, [c + h if i == k else c for i, c in enumerate(base)])
        minus = f(mp, [c - h if i == k else c for i, c in enumerate(base)])
        columns.append([float((p - m) / (2 * h)) for p, m in zip(plus, minus)])
    return torch.tensor(columns, dtype=F64).T


@pytest.mark.parametrize("angle", REFERENCE_ANGLES)
def test_jacobians_against_high_precision_reference(angle: float) -> None:
    """Every Jacobian entry, the small ones (``dq_x / dv_y`` is of order angle^2) included,
    to 3e-11 relative (or 1e-16 of the Jacobian's size), and all to 1e-15 of the
    Jacobian's size (a few ulps), on both sides of the series bound.

    A series that is exact in value can still fail this through the derivative of its
    first dropped term, and a closed form used too close to 0 fails it through cancellation
    in its derivative (``eps / angle^2`` relative on the small entries)."""
    mpmath = pytest.importorskip("mpmath")
    mp = mpmath.mp.clone()
    mp.dps = 80
    for fn, ref, x in [
        (angle_axis_to_rotation_matrix, _mp_angle_axis_to_rotation_matrix, AXIS * angle),
        (angle_axis_to_quaternion, _mp_angle_axis_to_quaternion, AXIS * angle),
        (quaternion_to_angle_axis, _mp_quaternion_to_angle_axis, _quaternion(angle)),
    ]:
        J = jacobian(fn, x).reshape(-1, x.numel())
        J_ref = _mp_jacobian(mp, ref, x)
        error, size = (J - J_ref).abs(), J_ref.abs().max()
        assert torch.all(error <= 3e-11 * J_ref.abs() + 1e-16 * size), (fn.__name__, "relative", error)
        assert torch.all(error <= 1e-15 * size), (fn.__name__, "absolute", error.max())


def test_degenerate_inputs_have_finite_gradients() -> None:
    for fn, x in [
        (quaternion_to_rotation_matrix, torch.zeros(4, dtype=F64)),
        (quaternion_to_angle_axis, torch.zeros(4, dtype=F64)),
        (normalize_quaternion, torch.zeros(4, dtype=F64)),
        # the four radicands of the zero matrix are 1: a tie, still finite
        (rotation_matrix_to_quaternion, torch.zeros(3, 3, dtype=F64)),
        (rotation_matrix_to_angle_axis, torch.zeros(3, 3, dtype=F64)),
    ]:
        out = fn(x)
        assert torch.isfinite(out).all() and torch.isfinite(jacobian(fn, x)).all(), fn.__name__
    torch.testing.assert_close(quaternion_to_rotation_matrix(torch.zeros(4)), torch.eye(3))
    torch.testing.assert_close(quaternion_to_angle_axis(torch.zeros(4)), torch.zeros(3))


# --------------------------------------------------------------------------- shapes, dtypes, errors

SHAPED: list[tuple[Fn, int | tuple[int, int], int | tuple[int, int]]] = [
    (angle_axis_to_rotation_matrix, 3, (3, 3)),
    (angle_axis_to_quaternion, 3, 4),
    (quaternion_to_rotation_matrix, 4, (3, 3)),
    (quaternion_to_angle_axis, 4, 3),
    (rotation_matrix_to_quaternion, (3, 3), 4),
    (rotation_matrix_to_angle_axis, (3, 3), 3),
    (normalize_quaternion, 4, 4),
]


def _tail(t: int | tuple[int, int]) -> tuple[int, ...]:
    return (t,) if isinstance(t, int) else t


def _valid_input(fn: Fn, batch: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    v = _random_angle_axis(max(1, math.prod(batch)), F64)[: math.prod(batch)].reshape(*batch, 3)
    if fn in (angle_axis_to_rotation_matrix, angle_axis_to_quaternion):
        x = v
    elif fn in (rotation_matrix_to_quaternion, rotation_matrix_to_angle_axis):
        x = angle_axis_to_rotation_matrix(v)
    else:
        x = angle_axis_to_quaternion(v)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3), (0,)])
@pytest.mark.parametrize("fn,tail_in,tail_out", SHAPED, ids=[s[0].__name__ for s in SHAPED])
def test_batch_shapes_and_dtypes(
    fn: Fn, tail_in: int | tuple[int, int], tail_out: int | tuple[int, int], batch: tuple[int, ...], dtype: torch.dtype
) -> None:
    x = _valid_input(fn, batch, dtype)
    assert x.shape == (*batch, *_tail(tail_in))
    before = x.clone()
    out = fn(x)
    assert out.shape == (*batch, *_tail(tail_out)) and out.dtype == dtype
    assert torch.equal(x, before), "the input was changed in place"
    flat = x.reshape(-1, *_tail(tail_in))
    per_sample = [fn(flat[i]) for i in range(flat.shape[0])]
    if per_sample:
        torch.testing.assert_close(out.reshape(-1, *_tail(tail_out)), torch.stack(per_sample), rtol=0, atol=0)


def test_float32_matches_float64() -> None:
    v = torch.cat([_random_angle_axis(300), torch.stack([AXIS * a for a in SPECIAL_ANGLES[:-1]])])
    R = angle_axis_to_rotation_matrix(v)
    q = angle_axis_to_quaternion(v)
    for fn, x in [
        (angle_axis_to_rotation_matrix, v),
        (angle_axis_to_quaternion, v),
        (quaternion_to_rotation_matrix, q),
        (quaternion_to_angle_axis, q),
        (rotation_matrix_to_quaternion, R),
        (rotation_matrix_to_angle_axis, R),
    ]:
        torch.testing.assert_close(fn(x.float()).double(), fn(x), rtol=0, atol=1e-5, msg=fn.__name__)


@pytest.mark.parametrize("fn,tail_in,tail_out", SHAPED, ids=[s[0].__name__ for s in SHAPED])
def test_errors_name_the_argument(fn: Fn, tail_in: int | tuple[int, int], tail_out: int | tuple[int, int]) -> None:
    name = "axis_angle" if fn in (angle_axis_to_rotation_matrix, angle_axis_to_quaternion) else (
        "rotation_matrix" if isinstance(tail_in, tuple) else "quaternion"
    )
    wrong = (2, 5) if isinstance(tail_in, int) else (2, 3, 4)
    with pytest.raises(ValueError, match=rf"^{name}: expected shape"):
        fn(torch.zeros(wrong))
    with pytest.raises(TypeError, match=rf"^{name}: expected a floating tensor"):
        fn(torch.zeros(2, *_tail(tail_in), dtype=torch.int32))
    with pytest.raises(TypeError, match=rf"^{name}: expected a torch.Tensor"):
        fn(np.zeros(_tail(tail_in)))  # type: ignore[arg-type]


def test_normalize_quaternion() -> None:
    q = torch.randn(4, 7, 4, dtype=F64)
    unit = normalize_quaternion(q)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(4, 7, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(normalize_quaternion(-q), -unit, rtol=0, atol=0)  # sign kept
    torch.testing.assert_close(normalize_quaternion(q, p=1.0).abs().sum(-1), torch.ones(4, 7, dtype=F64))
    torch.testing.assert_close(normalize_quaternion(torch.zeros(4)), torch.zeros(4))
    assert gradcheck(normalize_quaternion, (q[:2].clone().requires_grad_(),))
    with pytest.raises(ValueError, match="p: expected a positive"):
        normalize_quaternion(q, p=0.0)


# ------------------------------------------------------------------- kernel check
_AA, _Q, _R = samples.axis_angle(), samples.quaternion(), samples.rotation()
# name -> (operator, inputs); none of them reads an image, so no degenerate crops.
KERNEL_CASES = {
    "angle_axis_to_quaternion": (angle_axis_to_quaternion, (_AA,)),
    "axis_angle_to_quaternion": (axis_angle_to_quaternion, (_AA,)),
    "angle_axis_to_rotation_matrix": (angle_axis_to_rotation_matrix, (_AA,)),
    "axis_angle_to_rotation_matrix": (axis_angle_to_rotation_matrix, (_AA,)),
    "convert_affinematrix_to_homography": (convert_affinematrix_to_homography, (samples.homography()[:, :2],)),
    "convert_points_from_homogeneous": (convert_points_from_homogeneous, (samples.points(d=3) + 1.0,)),
    "convert_points_to_homogeneous": (convert_points_to_homogeneous, (samples.points(),)),
    "deg2rad": (deg2rad, (samples.points(scale=360.0),)),
    "rad2deg": (rad2deg, (samples.points(scale=6.0),)),
    "normalize_quaternion": (normalize_quaternion, (3 * _Q,)),
    "quaternion_to_angle_axis": (quaternion_to_angle_axis, (_Q,)),
    "quaternion_to_axis_angle": (quaternion_to_axis_angle, (_Q,)),
    "quaternion_to_rotation_matrix": (quaternion_to_rotation_matrix, (_Q,)),
    "rotation_matrix_to_angle_axis": (rotation_matrix_to_angle_axis, (_R,)),
    "rotation_matrix_to_axis_angle": (rotation_matrix_to_axis_angle, (_R,)),
    "rotation_matrix_to_quaternion": (rotation_matrix_to_quaternion, (_R,)),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, inputs = KERNEL_CASES[name]
    check_kernel(fn, *inputs, device=device, degenerate=())
