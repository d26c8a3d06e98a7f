"""Tests for core_ops.geometry.linalg: rigid-transform algebra and transform_points.

References: plain matrix products and ``torch.linalg.inv`` in float64, a homography
applied by hand, and Kornia 0.9's ``kornia.geometry.linalg`` (on the shapes it accepts).

Tolerances: float64 results are compared to 1e-12 (products of O(1) matrices, rounding
~1e-15); float32 results to 1e-5 (rounding ~1e-7 on entries up to ~10).
"""

from __future__ import annotations

import math

import kornia.geometry.linalg as kl
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.autograd import gradcheck

from gradcv.core_ops.geometry.linalg import (
    compose_transformations,
    inverse_transformation,
    relative_transformation,
    transform_points,
)
from tests._kernel_check import check_kernel
from tests.core_ops.geometry import _kernel_samples as samples

F64 = torch.float64


def _rigid(*batch: int, dtype: torch.dtype = F64, seed: int = 0) -> torch.Tensor:
    """Random rigid transforms ``(*batch, 4, 4)`` (rotations from SciPy, translations in [-5, 5])."""
    n = math.prod(batch)
    rng = np.random.default_rng(seed)
    T = torch.eye(4, dtype=F64).repeat(n, 1, 1)
    if n:
        T[:, :3, :3] = torch.from_numpy(Rotation.random(n, random_state=rng).as_matrix())
        T[:, :3, 3] = torch.from_numpy(rng.uniform(-5, 5, size=(n, 3)))
    return T.reshape(*batch, 4, 4).to(dtype)


def _homography(*batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    H = torch.eye(3, dtype=F64) + 0.1 * torch.randn(*batch, 3, 3, generator=g, dtype=F64)
    H[..., 2, :2] *= 0.1  # mild perspective: w stays near 1 for points in [-1, 1]
    return H


# --------------------------------------------------------------------------- rigid algebra


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_inverse_composes_to_identity_float64(batch: tuple[int, ...]) -> None:
    T = _rigid(*batch)
    T_inv = inverse_transformation(T)
    eye = torch.eye(4, dtype=F64).expand(*batch, 4, 4)
    torch.testing.assert_close(compose_transformations(T, T_inv), eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(compose_transformations(T_inv, T), eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(T_inv, torch.linalg.inv(T), rtol=0, atol=1e-12)
    assert T_inv.shape == (*batch, 4, 4) and T_inv.dtype == F64


def test_inverse_is_exact_transpose_not_a_solve() -> None:
    """R^T is copied, not computed: bit-exact, and the last row is exactly (0, 0, 0, 1)."""
    T = _rigid(7)
    T_inv = inverse_transformation(T)
    assert torch.equal(T_inv[:, :3, :3], T[:, :3, :3].transpose(-1, -2))
    assert torch.equal(T_inv[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64).expand(7, 4))
    torch.testing.assert_close(T_inv, kl.inverse_transformation(T), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype,atol", [(F64, 1e-12), (torch.float32, 1e-5)])
def test_compose_and_relative_against_matmul_and_kornia(dtype: torch.dtype, atol: float) -> None:
    T01, T12 = _rigid(6, dtype=dtype, seed=1), _rigid(6, dtype=dtype, seed=2)
    T02 = compose_transformations(T01, T12)
    assert T02.dtype == dtype
    torch.testing.assert_close(T02, T01 @ T12, rtol=0, atol=atol)
    torch.testing.assert_close(T02, kl.compose_transformations(T01, T12), rtol=0, atol=atol)
    T12_back = relative_transformation(T01, T02)
    torch.testing.assert_close(T12_back, T12, rtol=0, atol=atol)
    torch.testing.assert_close(T12_back, kl.relative_transformation(T01, T02), rtol=0, atol=atol)
    eye = torch.eye(4, dtype=dtype).expand(6, 4, 4)
    torch.testing.assert_close(relative_transformation(T01, T01), eye, rtol=0, atol=atol)


def test_compose_reads_only_the_top_three_rows_as_kornia() -> None:
    A = torch.randn(3, 4, 4, dtype=F64)
    B = torch.randn(3, 4, 4, dtype=F64)
    out = compose_transformations(A, B)
    torch.testing.assert_close(out, kl.compose_transformations(A, B))
    torch.testing.assert_close(out[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64).expand(3, 4))
    affine_B = B.clone()
    affine_B[:, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64)
    affine_A = A.clone()
    affine_A[:, 3] = affine_B[:, 3]
    torch.testing.assert_close(out, affine_A @ affine_B)


@pytest.mark.parametrize(
    "shape_a,shape_b,shape_out",
    [((), (), ()), ((1,), (5,), (5,)), ((5,), (1,), (5,)), ((2, 1), (1, 3), (2, 3)), ((), (4,), (4,))],
)
def test_batch_broadcasting(shape_a: tuple, shape_b: tuple, shape_out: tuple) -> None:
    A, B = _rigid(*shape_a, seed=3), _rigid(*shape_b, seed=4)
    for fn in (compose_transformations, relative_transformation):
        out = fn(A, B)
        assert out.shape == (*shape_out, 4, 4)
        expected = A @ B if fn is compose_transformations else torch.linalg.inv(A) @ B
        torch.testing.assert_close(out, expected.expand(*shape_out, 4, 4), rtol=0, atol=1e-12)
    assert inverse_transformation(_rigid(0)).shape == (0, 4, 4)


def test_rigid_algebra_gradcheck_and_no_inplace() -> None:
    A = _rigid(2, seed=5).requires_grad_()
    B = _rigid(2, seed=6).requires_grad_()
    before = (A.detach().clone(), B.detach().clone())
    assert gradcheck(compose_transformations, (A, B))
    assert gradcheck(relative_transformation, (A, B))
    assert gradcheck(inverse_transformation, (A,))
    assert torch.equal(A.detach(), before[0]) and torch.equal(B.detach(), before[1])


def test_rigid_algebra_errors_name_the_argument() -> None:
    T = torch.eye(4)
    with pytest.raises(ValueError, match=r"^trans_12: expected shape \(\*, 4, 4\), got \(3, 3\)"):
        inverse_transformation(torch.eye(3))
    with pytest.raises(ValueError, match=r"^trans_01: expected shape"):
        compose_transformations(torch.eye(4)[:3], T)
    with pytest.raises(ValueError, match=r"^trans_02: expected shape"):
        relative_transformation(T, torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="^trans_12: expected a torch.Tensor"):
        compose_transformations(T, np.eye(4))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^trans_12: expected a floating tensor"):
        inverse_transformation(torch.eye(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="^trans_01, trans_12: expected the same dtype"):
        compose_transformations(T, T.double())
    with pytest.raises(ValueError, match="^trans_01, trans_02: batch shapes do not broadcast"):
        relative_transformation(torch.eye(4).repeat(2, 1, 1), torch.eye(4).repeat(3, 1, 1))


# --------------------------------------------------------------------------- transform_points


def test_transform_points_hand_computed_homography() -> None:
    H = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.1, 0.2, 1.0]], dtype=F64)
    pts = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5], [10.0, -5.0]], dtype=F64)
    # (x, y) -> ((x + 2y + 3) / w, (4x + 5y + 6) / w) with w = 0.1x + 0.2y + 1
    expected = torch.tensor(
        [[3.0, 6.0], [6.0 / 1.3, 15.0 / 1.3], [2.0 / 0.9, 0.5 / 0.9], [3.0 / 1.0, 21.0 / 1.0]], dtype=F64
    )
    torch.testing.assert_close(transform_points(H, pts), expected, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(transform_points(H.float(), pts.float()), expected.float())


def test_transform_points_rigid_3d() -> None:
    T = _rigid(4, seed=7)
    pts = torch.randn(4, 10, 3, dtype=F64)
    expected = pts @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]
    torch.testing.assert_close(transform_points(T, pts), expected, rtol=0, atol=1e-13)
    # inverse_transformation undoes it
    back = transform_points(inverse_transformation(T), transform_points(T, pts))
    torch.testing.assert_close(back, pts, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "trans_shape,points_shape",
    [
        ((3, 3), (7, 2)),
        ((1, 3, 3), (7, 2)),
        ((3, 3), (4, 7, 2)),
        ((1, 3, 3), (4, 7, 2)),
        ((4, 3, 3), (4, 7, 2)),
        ((4, 3, 3), (4, 5, 7, 2)),  # one transform per leading index, shared over the 5
        ((1, 3, 3), (4, 5, 7, 2)),
        ((3, 3), (4, 5, 7, 2)),
        ((2, 4, 4), (2, 9, 3)),
        ((2, 3, 3), (2, 0, 2)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_transform_points_against_kornia(trans_shape: tuple, points_shape: tuple, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(8)
    d = trans_shape[-1]
    trans = (torch.eye(d, dtype=F64) + 0.1 * torch.randn(trans_shape, generator=g, dtype=F64)).to(dtype)
    points = torch.randn(points_shape, generator=g, dtype=F64).to(dtype)
    before = points.clone()
    out = transform_points(trans, points)
    assert out.shape == points.shape and out.dtype == dtype
    assert torch.equal(points, before)
    torch.testing.assert_close(out, kl.transform_points(trans, points))


def test_transform_points_batched_leading_dimensions() -> None:
    """(B, M, N, D) points with (B, M, D+1, D+1) transforms, and per-sample equality."""
    H = _homography(2, 3, seed=9)
    pts = torch.rand(2, 3, 11, 2, dtype=F64) * 2 - 1
    out = transform_points(H, pts)
    for b in range(2):
        for m in range(3):
            # 1e-15: batched and single matmuls may use different kernels (one ulp apart)
            torch.testing.assert_close(out[b, m], transform_points(H[b, m], pts[b, m]), rtol=0, atol=1e-15)
            torch.testing.assert_close(out[b, m], kl.transform_points(H[b, m][None], pts[b, m][None])[0])


def test_transform_points_at_infinity_is_finite() -> None:
    """A point sent to w = 0 keeps its unscaled coordinates, with finite gradients."""
    H = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    pts = torch.tensor([[0.0, 2.0], [2.0, 3.0]], dtype=F64, requires_grad=True)  # w = x
    out = transform_points(H, pts)
    torch.testing.assert_close(out, torch.tensor([[0.0, 2.0], [1.0, 1.5]], dtype=F64))
    out.sum().backward()
    assert H.grad is not None and pts.grad is not None
    assert torch.isfinite(H.grad).all() and torch.isfinite(pts.grad).all()


def test_transform_points_gradcheck() -> None:
    H = _homography(2, seed=10).requires_grad_()
    pts = (torch.rand(2, 5, 2, dtype=F64) * 2 - 1).requires_grad_()
    assert gradcheck(transform_points, (H, pts))


def test_transform_points_errors_name_the_argument() -> None:
    H = torch.eye(3)
    with pytest.raises(ValueError, match=r"^trans_01: expected shape \(\*, 3, 3\) for points of dimension 2"):
        transform_points(torch.eye(4), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"^trans_01: expected shape \(\*, 3, 3\) .*, got \(3, 4\)"):
        transform_points(torch.zeros(3, 4), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"^trans_01: expected shape \(\*, D1, D1\), got \(3,\)"):
        transform_points(torch.zeros(3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"^points_1: expected shape \(\*, N, D\)"):
        transform_points(H, torch.zeros(2))
    with pytest.raises(ValueError, match="^trans_01, points_1: a batch of transforms needs a batch of points"):
        transform_points(H.repeat(3, 1, 1), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="^trans_01, points_1: the transform batch must match"):
        transform_points(H.repeat(3, 1, 1), torch.zeros(2, 5, 2))
    with pytest.raises(TypeError, match="^trans_01, points_1: expected the same dtype"):
        transform_points(H, torch.zeros(5, 2, dtype=F64))
    with pytest.raises(TypeError, match="^points_1: expected a floating tensor"):
        transform_points(H, torch.zeros(5, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="^trans_01: expected a torch.Tensor"):
        transform_points(np.eye(3), torch.zeros(5, 2))  # type: ignore[arg-type]


# ------------------------------------------------------------------- kernel check
_T1, _T2 = samples.pose(3), samples.pose(7)
KERNEL_CASES = {
    "compose_transformations": (compose_transformations, (_T1, _T2)),
    "inverse_transformation": (inverse_transformation, (_T1,)),
    "relative_transformation": (relative_transformation, (_T1, _T2)),
    "transform_points": (transform_points, (samples.homography(), samples.points())),
    "transform_points_3d": (transform_points, (_T1, samples.points(d=3))),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, inputs = KERNEL_CASES[name]
    check_kernel(fn, *inputs, device=device, degenerate=())
