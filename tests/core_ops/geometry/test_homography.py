"""Tests for core_ops.geometry.homography: exact recovery from 4 and from N points,
parity with Kornia (same normalised algebraic problem) and with OpenCV's least-squares
``findHomography(method=0)`` on noisy points, weights, gradients, transfer errors by
hand, degenerate input, batches, dtypes and typed errors.

Tolerances: exact data in float64 is recovered to 1e-6 relative (measured: 1e-11 for
four points, 3e-13 for fifty). Kornia solves the same problem in float64: agreement to
1e-9 relative (measured 8e-13). OpenCV's method 0 polishes the DLT with Levenberg-
Marquardt on the geometric error, which we do not: for 300 points with 1 px noise under
perspective of the DeTone protocol the two optima differ by 0.06 px on average (0.11 px
at most over 20 problems) at the image corners, while each is 0.4 px from the truth; the
test allows 0.25 px, and our distance to the truth within 10% of OpenCV's.
"""

from __future__ import annotations

import math

import cv2
import kornia
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from gradcv.core_ops.geometry.homography import (
    _transform_points,
    find_homography_dlt,
    find_homography_dlt_iterated,
    oneway_transfer_error,
    symmetric_transfer_error,
)
from tests._kernel_check import check_kernel
from tests.core_ops.geometry import _kernel_samples as samples

W, H = 640, 480
CORNERS = np.array([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], dtype=np.float64)


def random_homographies(rng: np.random.Generator, batch: int, rho: float = 0.25) -> torch.Tensor:
    """Homographies that move the corners of a 640x480 image by up to ``rho`` times its
    shorter side (the DeTone et al. protocol), ``(B, 3, 3)`` float64 with ``H[2, 2] = 1``."""
    out = []
    for _ in range(batch):
        moved = CORNERS + rng.uniform(-rho * H, rho * H, size=CORNERS.shape)
        out.append(cv2.getPerspectiveTransform(CORNERS.astype(np.float32), moved.astype(np.float32)))
    return torch.from_numpy(np.stack(out)).double()


def random_points(rng: np.random.Generator, batch: int, n: int) -> torch.Tensor:
    return torch.from_numpy(rng.uniform([0, 0], [W - 1, H - 1], size=(batch, n, 2)))


def corner_distance(H1: torch.Tensor, H2: torch.Tensor) -> torch.Tensor:
    """Largest distance (px) between the image corners mapped by ``H1`` and by ``H2``, per batch element."""
    corners = torch.from_numpy(CORNERS)[None].expand(H1.shape[0], -1, -1).to(H1)
    return (_transform_points(H1, corners) - _transform_points(H2.to(H1), corners)).norm(dim=-1).amax(-1)


@pytest.fixture
def exact():
    """Three realistic homographies and 50 exact correspondences each, float64."""
    rng = np.random.default_rng(1)
    Hs = random_homographies(rng, 3)
    p1 = random_points(rng, 3, 50)
    return p1, _transform_points(Hs, p1), Hs


# ---------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("solver", ["svd", "lu"])
@pytest.mark.parametrize("n", [4, 5, 50])
def test_recovers_exact_homography(exact, n, solver):
    p1, p2, Hs = exact
    est = find_homography_dlt(p1[:, :n], p2[:, :n], solver=solver)
    assert est.dtype == torch.float64
    torch.testing.assert_close(est, Hs, rtol=1e-6, atol=1e-6 * Hs.abs().amax().item())
    assert (est[:, 2, 2] == 1).all()


def test_float32_input_is_fitted_in_float64(exact):
    p1, p2, _ = exact
    p1_32, p2_32 = p1.float(), p2.float()
    est32 = find_homography_dlt(p1_32, p2_32)
    assert est32.dtype == torch.float32
    # The float64 fit of the very same (rounded) float32 points, rounded once at the end.
    torch.testing.assert_close(est32, find_homography_dlt(p1_32.double(), p2_32.double()).float(), rtol=1e-6, atol=0)


def test_matches_kornia_on_noisy_weighted_points():
    rng = np.random.default_rng(2)
    Hs = random_homographies(rng, 4)
    p1 = random_points(rng, 4, 30)
    p2 = _transform_points(Hs, p1) + torch.from_numpy(rng.normal(0, 2.0, (4, 30, 2)))
    weights = torch.from_numpy(rng.uniform(0.1, 1.0, (4, 30)))
    for w in (None, weights):
        ours = find_homography_dlt(p1, p2, w)
        ref = kornia.geometry.homography.find_homography_dlt(p1, p2, w, solver="svd")
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_matches_opencv_least_squares_on_noisy_points():
    rng = np.random.default_rng(3)
    Hs = random_homographies(rng, 10)
    p1 = random_points(rng, 10, 300)
    p2 = _transform_points(Hs, p1) + torch.from_numpy(rng.normal(0, 1.0, (10, 300, 2)))
    ours = find_homography_dlt(p1, p2)
    ref = torch.from_numpy(np.stack([cv2.findHomography(a.numpy(), b.numpy(), 0)[0] for a, b in zip(p1, p2)]))
    assert corner_distance(ours, ref).max() < 0.25
    # As accurate as OpenCV's geometric fit, and both are estimates: neither equals the truth.
    ours_error, ref_error = corner_distance(ours, Hs).mean(), corner_distance(ref, Hs).mean()
    assert ours_error < 1.1 * ref_error
    assert ours_error > 0.25


def test_zero_weight_outliers_are_ignored(exact):
    p1, p2, Hs = exact
    p2 = p2.clone()
    p2[:, :10] += torch.tensor([40.0, -25.0], dtype=torch.float64)  # gross outliers
    weights = torch.ones(p1.shape[:2], dtype=torch.float64)
    weights[:, :10] = 0
    torch.testing.assert_close(find_homography_dlt(p1, p2, weights), Hs, rtol=1e-6, atol=1e-6 * Hs.abs().amax().item())
    assert corner_distance(find_homography_dlt(p1, p2), Hs).min() > 1.0  # the outliers matter without weights


def test_only_relative_weights_matter(exact):
    p1, p2, _ = exact
    noisy = p2 + torch.randn_like(p2)
    weights = torch.rand(p1.shape[:2], dtype=torch.float64) + 0.1
    torch.testing.assert_close(
        find_homography_dlt(p1, noisy, weights), find_homography_dlt(p1, noisy, 7.5 * weights), rtol=1e-9, atol=1e-9
    )


# ---------------------------------------------------------------------------- gradients
def _well_conditioned(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Points spread over a 64x48 image, a moderate perspective, 0.5 px noise: distinct singular values."""
    rng = np.random.default_rng(4)
    Hs = random_homographies(rng, 2, rho=0.15)
    p1 = random_points(rng, 2, n) / 10
    scale = torch.diag(torch.tensor([0.1, 0.1, 1.0], dtype=torch.float64))
    Hs = scale @ Hs @ scale.inverse()  # the same motion on the 64x48 image
    p2 = _transform_points(Hs, p1) + torch.from_numpy(rng.normal(0, 0.05, (2, n, 2)))
    return p1.requires_grad_(True), p2.requires_grad_(True)


@pytest.mark.parametrize("solver", ["svd", "lu"])
def test_gradcheck_points(solver):
    p1, p2 = _well_conditioned()
    assert gradcheck(lambda a, b: find_homography_dlt(a, b, solver=solver), (p1, p2), fast_mode=False)


def test_gradcheck_weights_and_iterated():
    p1, p2 = _well_conditioned()
    weights = torch.rand(p1.shape[:2], dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    weights.requires_grad_(True)
    assert gradcheck(lambda a, b, w: find_homography_dlt(a, b, w), (p1, p2, weights), fast_mode=False)
    assert gradcheck(lambda a, b: find_homography_dlt_iterated(a, b, None, 1.0, 3), (p1, p2), fast_mode=False)


def test_gradient_is_finite_on_exact_data(exact):
    p1, p2, _ = exact
    p1 = p1.clone().requires_grad_(True)
    find_homography_dlt(p1, p2)[:, :2].sum().backward()
    assert torch.isfinite(p1.grad).all() and p1.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- transfer errors
def test_oneway_transfer_error_by_hand():
    Hm = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 1.0, -1.0], [0.0, 0.5, 1.0]]], dtype=torch.float64)
    pts1 = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, -2.0]]], dtype=torch.float64)
    # H [1, 2, 1] = [3, 1, 2] -> (1.5, 0.5); H [0, 0, 1] = [1, -1, 1] -> (1, -1); H [3, -2, 1] = [7, -3, 0] -> infinity.
    pts2 = torch.tensor([[[4.5, 4.5], [1.0, -1.0], [0.0, 0.0]]], dtype=torch.float64)
    err2 = oneway_transfer_error(pts1, pts2, Hm)
    torch.testing.assert_close(err2[0, :2], torch.tensor([9.0 + 16.0, 0.0], dtype=torch.float64))
    assert err2[0, 2] == math.inf
    err = oneway_transfer_error(pts1, pts2, Hm, squared=False)
    torch.testing.assert_close(err[0, :2], torch.tensor([5.0, 0.0], dtype=torch.float64))
    # The scale of H does not matter.
    torch.testing.assert_close(oneway_transfer_error(pts1, pts2, -3 * Hm)[0, :2], err2[0, :2])


def test_symmetric_transfer_error_by_hand():
    Hm = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])  # zoom by 2
    pts1 = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    pts2 = torch.tensor([[[3.0, 2.0], [4.0, 0.0]]])
    # Forward: (2, 2) vs (3, 2) -> 1; backward: (1.5, 1) vs (1, 1) -> 0.25. Second pair exact.
    torch.testing.assert_close(symmetric_transfer_error(pts1, pts2, Hm), torch.tensor([[1.25, 0.0]]))
    root = symmetric_transfer_error(pts1, pts2, Hm, squared=False)
    torch.testing.assert_close(root, torch.tensor([[1.25**0.5, 0.0]]))
    singular = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    assert torch.isinf(symmetric_transfer_error(pts1, pts2, singular)).all()


def test_transfer_errors_match_kornia(exact):
    p1, p2, Hs = exact
    noisy = p2 + torch.randn_like(p2)
    for ours, ref in (
        (oneway_transfer_error, kornia.geometry.homography.oneway_transfer_error),
        (symmetric_transfer_error, kornia.geometry.homography.symmetric_transfer_error),
    ):
        for squared in (True, False):
            torch.testing.assert_close(
                ours(p1, noisy, Hs, squared), ref(p1, noisy, Hs, squared), rtol=1e-10, atol=1e-10
            )


def test_transfer_error_gradient_is_zero_not_nan_at_an_exact_match(exact):
    p1, p2, Hs = exact
    Hg = Hs.clone().requires_grad_(True)
    for fn in (oneway_transfer_error, symmetric_transfer_error):
        Hg.grad = None
        fn(p1, p2, Hg, squared=False).sum().backward()
        assert torch.isfinite(Hg.grad).all()


def test_transfer_errors_broadcast_one_point_set_over_many_homographies(exact):
    p1, p2, Hs = exact
    many = oneway_transfer_error(p1[:1], p2[:1], Hs)
    assert many.shape == (3, 50)
    torch.testing.assert_close(many[1], oneway_transfer_error(p1[:1], p2[:1], Hs[1:2])[0])


# ---------------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("solver", ["svd", "lu"])
def test_degenerate_configurations_give_finite_results(solver):
    line = torch.stack([torch.arange(6.0), 2 * torch.arange(6.0) + 1], dim=-1)[None]
    square = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    collinear_triple = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])
    for p1, p2 in (
        (line, line * 3),  # all collinear
        (collinear_triple, square),  # three of four collinear on one side
        (torch.zeros(1, 4, 2), torch.ones(1, 4, 2)),  # all coincident
        (square, torch.full((1, 4, 2), math.nan)),  # nothing finite
    ):
        assert torch.isfinite(find_homography_dlt(p1, p2, solver=solver)).all()
        assert torch.isfinite(find_homography_dlt_iterated(p1, p2, None)).all()


def test_non_finite_correspondences_are_ignored(exact):
    p1, p2, Hs = exact
    p1, p2 = p1.clone(), p2.clone()
    p1[0, 3, 0] = math.nan
    p2[1, 7, 1] = math.inf
    weights = torch.ones(p1.shape[:2], dtype=torch.float64)
    weights[2, 0] = math.nan
    est = find_homography_dlt(p1, p2, weights)
    torch.testing.assert_close(est, Hs, rtol=1e-6, atol=1e-6 * Hs.abs().amax().item())


def test_zero_bottom_right_entry_falls_back_to_unit_norm():
    swap = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)  # x <-> w
    p1 = torch.tensor([[[1.0, 0.5], [2.0, 1.0], [3.0, -1.0], [0.5, 2.0], [4.0, 3.0]]], dtype=torch.float64)
    est = find_homography_dlt(p1, _transform_points(swap, p1))
    torch.testing.assert_close(est.flatten(1).norm(dim=-1), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(est, swap / swap.norm(), atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------- standard checks
def test_batched_equals_per_sample_and_input_unchanged(exact):
    p1, p2, _ = exact
    noisy = p2 + torch.randn_like(p2)
    weights = torch.rand(p1.shape[:2], dtype=torch.float64)
    before = (p1.clone(), noisy.clone(), weights.clone())
    batched = find_homography_dlt(p1, noisy, weights)
    iterated = find_homography_dlt_iterated(p1, noisy, weights)
    for i in range(3):
        one = (p1[i : i + 1], noisy[i : i + 1], weights[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], find_homography_dlt(*one))
        torch.testing.assert_close(iterated[i : i + 1], find_homography_dlt_iterated(*one))
    for a, b in zip(before, (p1, noisy, weights)):
        assert torch.equal(a, b)


def test_empty_batch_and_dtypes():
    assert find_homography_dlt(torch.zeros(0, 4, 2), torch.zeros(0, 4, 2)).shape == (0, 3, 3)
    square = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert find_homography_dlt(square.to(dtype), (square * 2).to(dtype)).dtype == dtype


def test_iterated_downweights_an_outlier_and_keeps_zero_weights_out():
    src = torch.cartesian_prod(torch.arange(4.0), torch.arange(4.0))[None].double() * 10
    dst = src + 1
    dst[0, 5] += 4.0
    shift = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    assert corner_distance(find_homography_dlt(src, dst), shift) > 1
    assert corner_distance(find_homography_dlt_iterated(src, dst, None, soft_inl_th=1.0, n_iter=10), shift) < 1e-3
    weights = torch.ones(1, 16, dtype=torch.float64)
    weights[0, 5] = 0
    torch.testing.assert_close(find_homography_dlt_iterated(src, dst, weights, n_iter=3), shift, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (([[0.0, 0.0]] * 4, torch.zeros(1, 4, 2)), TypeError),  # not a tensor
        ((torch.zeros(1, 4, 2, dtype=torch.int64), torch.zeros(1, 4, 2, dtype=torch.int64)), TypeError),
        ((torch.zeros(4, 2), torch.zeros(4, 2)), ValueError),  # no batch
        ((torch.zeros(1, 4, 3), torch.zeros(1, 4, 3)), ValueError),  # homogeneous
        ((torch.zeros(1, 4, 2), torch.zeros(1, 5, 2)), ValueError),  # different N
        ((torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)), ValueError),  # fewer than 4
        ((torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.ones(1, 5)), ValueError),  # weights shape
        ((torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.ones(1, 4, dtype=torch.int64)), TypeError),
    ],
)
def test_typed_errors(args, error):
    with pytest.raises(error, match="points|weights"):
        find_homography_dlt(*args)
    with pytest.raises(error, match="points|weights"):
        find_homography_dlt_iterated(*args) if len(args) == 3 else find_homography_dlt_iterated(*args, None)


def test_option_errors():
    square = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="solver"):
        find_homography_dlt(square, square, solver="qr")
    with pytest.raises(ValueError, match="n_iter"):
        find_homography_dlt_iterated(square, square, None, n_iter=0)
    with pytest.raises(ValueError, match="soft_inl_th"):
        find_homography_dlt_iterated(square, square, None, soft_inl_th=0.0)
    with pytest.raises(ValueError, match="H"):
        oneway_transfer_error(square, square, torch.eye(3))
    with pytest.raises(TypeError, match="floating"):
        oneway_transfer_error(square.long(), square.long(), torch.eye(3, dtype=torch.long)[None])


def test_compiles_without_graph_breaks(exact):
    p1, p2, Hs = exact
    noisy = p2 + torch.randn_like(p2)
    for fn in (find_homography_dlt, lambda a, b: symmetric_transfer_error(a, b, Hs, squared=False)):
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(p1, noisy), fn(p1, noisy), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------- kernel check
_H = samples.homography()
_P1 = samples.points(n=12)
_P2 = _transform_points(_H, _P1)  # exact correspondences: a well-posed fit
_NOISY = _P2 + 0.05 * torch.randn(_P2.shape, generator=samples.generator(9))
KERNEL_CASES = {
    "find_homography_dlt": (lambda a, b: find_homography_dlt(a, b), (_P1, _P2)),
    "find_homography_dlt_weighted": (
        lambda a, b, w: find_homography_dlt(a, b, w), (_P1, _NOISY, torch.rand(3, 12, generator=samples.generator(8))),
    ),
    "find_homography_dlt_iterated": (lambda a, b: find_homography_dlt_iterated(a, b, None, 0.5, 3), (_P1, _NOISY)),
    "oneway_transfer_error": (oneway_transfer_error, (_P1, _NOISY, _H)),
    "symmetric_transfer_error": (lambda a, b, H: symmetric_transfer_error(a, b, H, False), (_P1, _NOISY, _H)),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, inputs = KERNEL_CASES[name]
    check_kernel(fn, *inputs, device=device, degenerate=())
