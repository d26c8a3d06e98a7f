"""Tests for core_ops.filters: parity with OpenCV (interior and border, full images) and with
Kornia on real photographs, exact derivatives on polynomials, the standard operator checks,
gradients of every order through the slice engine, typed errors, and torch.compile.

Tolerances: float32 results are compared to 1e-5. Both sides sum the same float32 products
in different orders, so they can differ by about one ulp of the largest partial sum,
``eps32 * sum|kernel| * max|input|`` (inputs are in [0, 1]). That is below 1e-5 for kernels
whose absolute sum is at most ~80; larger kernels (the 7-tap Sobel ones, up to 1280, where
one float32 ulp of the output is 1.2e-4; random 11x9 kernels) get ``2 eps32 sum|kernel|``
(measured: at most 0.9 eps32 sum|kernel|).
Half-precision results are compared with float64 on the same (rounded) input to
``4 eps(dtype) * gain``, where ``gain`` is the operator's largest absolute kernel sum.
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import kornia
import numpy as np
import pytest
import scipy.ndimage
import torch
from torch.autograd import gradcheck, gradgradcheck

from gradcv.core_ops import _native
from gradcv.core_ops.errors import GradcvError
from gradcv.core_ops.filters import (
    BoxBlur,
    GaussianBlur2d,
    Laplacian,
    MedianBlur,
    Sobel,
    SpatialGradient,
    box_blur,
    correlate_separable,
    filter2d,
    filter2d_separable,
    gaussian_blur2d,
    get_gaussian_kernel1d,
    get_sobel_kernel2d,
    laplacian,
    median_blur,
    pad2d,
    sobel,
    spatial_gradient,
)
from gradcv.core_ops.filters.kernels import default_kernel_size, sobel_taps
from gradcv.core_ops.filters.derivatives import derivative_bank
from gradcv.core_ops.pyramid import pyrdown, pyrup
from tests._kernel_check import check_kernel
from tests.helpers import assert_max_abs_diff, ignore_compile_warnings, small_input, to_numpy, to_tensor

F32_EPS = float(np.finfo(np.float32).eps)
BORDER_TYPES = ("constant", "reflect", "replicate", "circular")
# cv2.filter2D and cv2.sepFilter2D assert `columnBorderType != BORDER_WRAP` (OpenCV 5.0),
# so 'circular' is compared with scipy.ndimage instead.
CV_BORDERS = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE}

Op = Callable[[torch.Tensor], torch.Tensor]


def _abs_sum(taps: tuple[float, ...] | list[float]) -> float:
    return math.fsum(abs(t) for t in taps)


def _bank_gain(bank) -> float:
    """Largest absolute sum over the separable kernels of a bank: the most an output can be per unit input."""
    return max(_abs_sum(ty) * _abs_sum(tx) for ty, tx in bank)


# ====================================================================== OpenCV parity
@pytest.mark.parametrize(
    "kernel_size, sigma",
    [
        ((3, 3), (0.8, 0.8)),
        ((5, 5), (1.0, 1.0)),
        ((7, 3), (2.0, 0.8)),  # anisotropic, non-square
        ((3, 9), (0.6, 2.5)),
        ((11, 11), (3.0, 3.0)),
        (None, (1.3, 2.1)),  # sizes derived from sigma, as ksize=(0, 0)
        (None, 1.6),
        (0, 0.7),
    ],
)
def test_gaussian_blur_matches_opencv(images, kernel_size, sigma):
    sy, sx = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    cv_ksize = (0, 0) if not kernel_size else (kernel_size[1], kernel_size[0])  # OpenCV's order is (w, h)
    for img in images:
        ref = cv2.GaussianBlur(img, cv_ksize, sigmaX=sx, sigmaY=sy)
        ours = to_numpy(gaussian_blur2d(to_tensor(img), kernel_size, sigma))
        assert_max_abs_diff(ours, ref, 1e-5)


@pytest.mark.parametrize("border_type", ["constant", "reflect", "replicate"])
def test_gaussian_blur_border_types_match_opencv(photo_gray, border_type):
    img = photo_gray[3]
    ref = cv2.GaussianBlur(img, (9, 5), sigmaX=1.7, sigmaY=1.1, borderType=CV_BORDERS[border_type])
    # a float sigma runs on the slice engine; a tensor sigma on filter2d_separable or filter2d
    for sigma, separable in [((1.1, 1.7), True), (torch.tensor([[1.1, 1.7]]), True), (torch.tensor([[1.1, 1.7]]), False)]:
        ours = gaussian_blur2d(to_tensor(img), (5, 9), sigma, border_type, separable=separable)
        assert_max_abs_diff(to_numpy(ours), ref, 1e-5)


def test_gaussian_blur_circular_matches_scipy(photo_gray):
    img = photo_gray[3]
    ky, kx = cv2.getGaussianKernel(5, 1.1, cv2.CV_64F), cv2.getGaussianKernel(9, 1.7, cv2.CV_64F)
    ref = scipy.ndimage.correlate(img.astype(np.float64), ky @ kx.T, mode="wrap")
    ours = gaussian_blur2d(to_tensor(img), (5, 9), (1.1, 1.7), "circular")
    assert_max_abs_diff(to_numpy(ours), ref, 1e-5)


def test_default_kernel_size_is_opencvs(photo_gray):
    # OpenCV derives ksize = round(8 sigma + 1) | 1 for floating images; an explicit size
    # that equals it gives the same result, a smaller one does not.
    img = photo_gray[3]
    for sigma in (0.5, 1.0, 1.3, 2.2):
        k = default_kernel_size(sigma)
        assert k == (round(8 * sigma + 1) | 1)
        ref = cv2.GaussianBlur(img, (0, 0), sigma)
        assert_max_abs_diff(to_numpy(gaussian_blur2d(to_tensor(img), (k, k), sigma)), ref, 1e-5)
        short = to_numpy(gaussian_blur2d(to_tensor(img), (k - 2, k - 2), sigma))
        assert np.abs(short - ref).max() > 1e-5


@pytest.mark.parametrize("kernel_size", [(3, 3), (5, 7), (7, 3), (1, 5), (9, 1)])
def test_box_blur_matches_opencv(images, kernel_size):
    for img in images:
        ref = cv2.blur(img, (kernel_size[1], kernel_size[0]))  # OpenCV's ksize is (w, h)
        assert_max_abs_diff(to_numpy(box_blur(to_tensor(img), kernel_size)), ref, 1e-5)


@pytest.mark.parametrize("border_type", ["constant", "reflect", "replicate"])
def test_box_blur_border_types_match_opencv(photos, border_type):
    img = photos[2]
    ref = cv2.blur(img, (3, 5), borderType=CV_BORDERS[border_type])
    assert_max_abs_diff(to_numpy(box_blur(to_tensor(img), (5, 3), border_type)), ref, 1e-5)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_median_blur_matches_opencv_exactly(images, kernel_size):
    # A median selects one of the inputs: no rounding, so the results are equal.
    for img in images:
        ref = cv2.medianBlur(img, kernel_size)  # border: replicate
        np.testing.assert_array_equal(to_numpy(median_blur(to_tensor(img), kernel_size)), ref)


def _sobel_atol(kernel_size: int, abs_sum: float) -> float:
    # See the module docstring: the 7-tap kernels produce outputs up to 1280 where 1e-5 is
    # below one float32 ulp; measured differences stay below 0.9 eps32 * sum|kernel|.
    return 1e-5 if kernel_size <= 5 else 2 * F32_EPS * abs_sum


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("order", [1, 2])
def test_spatial_gradient_matches_opencv_sobel(images, order, kernel_size):
    pairs = [(1, 0), (0, 1)] if order == 1 else [(2, 0), (1, 1), (0, 2)]  # (dx, dy) in output order
    for img in images:
        x = to_tensor(img)
        out = spatial_gradient(x, "sobel", order, normalized=False, kernel_size=kernel_size, border_type="reflect")
        for i, (dx, dy) in enumerate(pairs):
            ref = cv2.Sobel(img, cv2.CV_32F, dx, dy, ksize=kernel_size)
            abs_sum = _abs_sum(sobel_taps(dx, kernel_size)) * _abs_sum(sobel_taps(dy, kernel_size))
            assert_max_abs_diff(to_numpy(out[:, :, i]), ref, _sobel_atol(kernel_size, abs_sum))


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_laplacian_matches_opencv(images, kernel_size):
    xx, _, yy = derivative_bank("sobel", 2, False, kernel_size)
    abs_sum = _bank_gain([xx]) + _bank_gain([yy])
    for img in images:
        ref = cv2.Laplacian(img, cv2.CV_32F, ksize=kernel_size)
        ours = laplacian(to_tensor(img), kernel_size, normalized=False)
        assert_max_abs_diff(to_numpy(ours), ref, _sobel_atol(kernel_size, abs_sum))


def test_laplacian_stencils_are_opencvs():
    impulse = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    impulse[..., 3, 3] = 1.0
    five_point = laplacian(impulse, 1, normalized=False)[0, 0, 2:5, 2:5]
    corners = laplacian(impulse, 3, normalized=False)[0, 0, 2:5, 2:5]
    # correlation with an impulse gives the kernel flipped; these kernels are symmetric
    assert five_point.tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert corners.tolist() == [[2, 0, 2], [0, -8, 0], [2, 0, 2]]


def _correlate_scipy(img: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """scipy.ndimage.correlate of every channel, in float64."""
    img = img.astype(np.float64)
    if img.ndim == 2:
        return scipy.ndimage.correlate(img, kernel, mode=mode)
    return np.stack([scipy.ndimage.correlate(img[..., c], kernel, mode=mode) for c in range(img.shape[-1])], -1)


@pytest.mark.parametrize("kernel_shape", [(3, 3), (5, 3), (1, 7), (11, 9)])  # 11x9 > 81 taps: conv2d path
@pytest.mark.parametrize("border_type", BORDER_TYPES)
def test_filter2d_matches_opencv(images, border_type, kernel_shape):
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal(kernel_shape).astype(np.float32)
    atol = max(1e-5, 2 * F32_EPS * float(np.abs(kernel).sum()))
    for img in images[2:]:  # the two odd-sized photos
        ours = to_numpy(filter2d(to_tensor(img), torch.from_numpy(kernel)[None], border_type))
        if border_type == "circular":
            ref = _correlate_scipy(img, kernel.astype(np.float64), "wrap")
        else:
            ref = cv2.filter2D(img, -1, kernel, borderType=CV_BORDERS[border_type])
        assert_max_abs_diff(ours, ref, atol)


@pytest.mark.parametrize("kernel_shape", [(4, 4), (2, 5), (6, 3)])
def test_filter2d_even_kernel_anchor(photo_gray, kernel_shape):
    # Tap (i, j) weighs offset (i - (ky-1)//2, j - (kx-1)//2): OpenCV's anchor ((kx-1)//2, (ky-1)//2).
    img = photo_gray[3]
    kernel = np.random.default_rng(2).standard_normal(kernel_shape).astype(np.float32)
    ky, kx = kernel_shape
    ref = cv2.filter2D(img, -1, kernel, anchor=((kx - 1) // 2, (ky - 1) // 2), borderType=cv2.BORDER_REFLECT_101)
    assert_max_abs_diff(to_numpy(filter2d(to_tensor(img), torch.from_numpy(kernel)[None])), ref, 1e-5)


@pytest.mark.parametrize("border_type", BORDER_TYPES)
def test_filter2d_separable_matches_opencv(images, border_type):
    rng = np.random.default_rng(3)
    kx, ky = rng.standard_normal(7).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    for img in images[2:]:
        tx, ty = torch.from_numpy(kx)[None], torch.from_numpy(ky)[None]
        if border_type == "circular":
            ref = _correlate_scipy(img, np.outer(ky, kx).astype(np.float64), "wrap")
        else:
            ref = cv2.sepFilter2D(img, -1, kx, ky, borderType=CV_BORDERS[border_type])
        for requires_grad in (False, True):  # slice engine, and plain autograd for learnable kernels
            tx.requires_grad_(requires_grad)
            ty.requires_grad_(requires_grad)
            ours = filter2d_separable(to_tensor(img), tx, ty, border_type)
            assert_max_abs_diff(to_numpy(ours), ref, 1e-5)


@pytest.mark.parametrize("border_type", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape", [(3, 3), (2, 5), (1, 4), (4, 1), (1, 1)])
def test_pad_larger_than_image(shape, border_type):
    """A 9x9 Gaussian and a 7x5 kernel on images smaller than the padding (OpenCV handles it)."""
    img = np.random.default_rng(4).random(shape).astype(np.float32)
    kernel = np.random.default_rng(5).standard_normal((7, 5)).astype(np.float32)
    x = to_tensor(img)
    gauss = to_numpy(gaussian_blur2d(x, 9, 2.0, border_type)).reshape(shape)
    f2d = to_numpy(filter2d(x, torch.from_numpy(kernel)[None], border_type)).reshape(shape)
    if border_type == "circular":
        g = cv2.getGaussianKernel(9, 2.0, cv2.CV_64F)
        ref_gauss = _correlate_scipy(img, g @ g.T, "wrap")
        ref_f2d = _correlate_scipy(img, kernel.astype(np.float64), "wrap")
    else:
        ref_gauss = cv2.GaussianBlur(img, (9, 9), 2.0, borderType=CV_BORDERS[border_type])
        ref_f2d = cv2.filter2D(img, -1, kernel, borderType=CV_BORDERS[border_type])
    assert_max_abs_diff(gauss, ref_gauss, 1e-5)
    assert_max_abs_diff(f2d, ref_f2d, 1e-5)


def test_gaussian_kernel_matches_opencv():
    for k, sigma in [(3, 0.8), (5, 1.0), (9, 1.5), (15, 2.5)]:
        ref = cv2.getGaussianKernel(k, sigma, cv2.CV_64F)[:, 0]
        np.testing.assert_allclose(get_gaussian_kernel1d(k, sigma, dtype=torch.float64)[0].numpy(), ref, atol=1e-15)
    batched = get_gaussian_kernel1d(5, torch.tensor([1.0, 2.0], dtype=torch.float64))
    np.testing.assert_allclose(batched[1].numpy(), cv2.getGaussianKernel(5, 2.0, cv2.CV_64F)[:, 0], atol=1e-15)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_sobel_taps_match_opencv(order, kernel_size):
    kx, _ = cv2.getDerivKernels(order, 1, kernel_size)  # OpenCV needs dx + dy > 0
    assert sobel_taps(order, kernel_size) == tuple(kx[:, 0])


def test_sobel_kernel2d_matches_opencv():
    def kernel2d(dx: int, dy: int) -> np.ndarray:
        kx, ky = cv2.getDerivKernels(dx, dy, 3)
        return np.outer(ky[:, 0], kx[:, 0])  # rows are y

    ref = np.stack([kernel2d(1, 0), kernel2d(0, 1)])
    np.testing.assert_array_equal(get_sobel_kernel2d(dtype=torch.float64).numpy(), ref)


# ====================================================================== Kornia parity
@pytest.mark.parametrize("border_type", BORDER_TYPES)
@pytest.mark.parametrize("kernel_size, sigma", [((5, 5), (1.0, 1.0)), ((7, 3), (2.0, 0.8)), ((3, 11), (0.5, 2.5))])
def test_gaussian_blur_matches_kornia(photos, kernel_size, sigma, border_type):
    x = to_tensor(photos[3])
    ref = kornia.filters.gaussian_blur2d(x, kernel_size, sigma, border_type)
    torch.testing.assert_close(gaussian_blur2d(x, kernel_size, sigma, border_type), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "mode, order, kernel_size",
    [("sobel", 1, 3), ("diff", 1, 3), ("diff", 2, 3), ("sobel", 2, 5)],  # Kornia's 2nd-order Sobel is 5x5
)
@pytest.mark.parametrize("normalized", [True, False])
def test_spatial_gradient_matches_kornia(photos, mode, order, kernel_size, normalized):
    x = to_tensor(photos[3])
    ours = spatial_gradient(x, mode, order, normalized, kernel_size=kernel_size)  # replicate, Kornia's border
    ref = kornia.filters.spatial_gradient(x, mode, order, normalized)
    gain = _bank_gain(derivative_bank(mode, order, normalized, kernel_size))
    torch.testing.assert_close(ours, ref, atol=max(1e-5, 2 * F32_EPS * gain), rtol=0)


@pytest.mark.parametrize("normalized", [True, False])
def test_sobel_matches_kornia(photos, normalized):
    x = to_tensor(photos[2])
    torch.testing.assert_close(sobel(x, normalized), kornia.filters.sobel(x, normalized), atol=1e-5, rtol=0)


@pytest.mark.parametrize("border_type", BORDER_TYPES)
@pytest.mark.parametrize(
    "options",
    [{}, {"normalized": True}, {"padding": "valid"}, {"behaviour": "conv"}],
    ids=["default", "normalized", "valid", "conv"],
)
@pytest.mark.parametrize("kernel_shape", [(1, 3, 5), (1, 4, 6), (2, 5, 5)])  # shared, even, per-sample
def test_filter2d_matches_kornia(photos, border_type, options, kernel_shape):
    x = torch.cat([to_tensor(photos[3][:64, :71]), to_tensor(photos[2][:64, :71])])
    kernel = torch.randn(kernel_shape)
    ref = kornia.filters.filter2d(x, kernel, border_type, **options)
    torch.testing.assert_close(filter2d(x, kernel, border_type, **options), ref, atol=1e-5, rtol=0)


def test_box_blur_matches_kornia(photos):
    x = to_tensor(photos[3])
    torch.testing.assert_close(box_blur(x, (5, 3)), kornia.filters.box_blur(x, (5, 3)), atol=1e-5, rtol=0)


# ============================================================ exact derivatives on polynomials
DERIVATIVE_MODES = [("diff", 3), ("sobel", 1), ("sobel", 3), ("sobel", 5), ("sobel", 7)]


def _grid(h: int = 15, w: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) - h // 2, torch.arange(w, dtype=torch.float64) - w // 2, indexing="ij"
    )
    return xs, ys


def _interior(t: torch.Tensor, kernel_size: int) -> torch.Tensor:
    r = max(kernel_size, 3) // 2
    return t[..., r:-r, r:-r]


@pytest.mark.parametrize("mode, kernel_size", DERIVATIVE_MODES)
@pytest.mark.parametrize("border_type", BORDER_TYPES)
def test_first_derivatives_exact_on_planes(mode, kernel_size, border_type):
    xs, ys = _grid()
    a, b, c = 0.7, -1.3, 0.25
    plane = (a * xs + b * ys + c)[None, None]
    grad = _interior(spatial_gradient(plane, mode, 1, kernel_size=kernel_size, border_type=border_type), kernel_size)
    # x to the right, y down: a plane rising to the right has a positive d/dx
    torch.testing.assert_close(grad[0, 0, 0], torch.full_like(grad[0, 0, 0], a), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad[0, 0, 1], torch.full_like(grad[0, 0, 1], b), atol=1e-12, rtol=0)
    raw = spatial_gradient(plane, mode, 1, False, kernel_size=kernel_size, border_type=border_type)
    raw = _interior(raw, kernel_size)
    # Unnormalised, a unit slope gives the smoothing taps' sum (2^(k-1)) times the difference
    # taps' response (2^(k-2)): 8 for OpenCV's 3x3 Sobel, 128 for 5x5; [-1, 0, 1] alone gives 2.
    unit = 2.0 if mode == "diff" or kernel_size == 1 else 2.0 ** (2 * kernel_size - 3)
    torch.testing.assert_close(raw[0, 0, 0], torch.full_like(raw[0, 0, 0], unit * a), atol=1e-9, rtol=0)


def _quadratic(xs, ys, a, b, c, d=0.3, e=-0.2, g=1.0):
    return a * xs**2 + b * xs * ys + c * ys**2 + d * xs + e * ys + g


@pytest.mark.parametrize("mode, kernel_size", DERIVATIVE_MODES)
def test_second_derivatives_exact_on_quadratics(mode, kernel_size):
    xs, ys = _grid()
    a, b, c = 0.35, -0.6, 0.15
    f = _quadratic(xs, ys, a, b, c)[None, None]
    hess = _interior(spatial_gradient(f, mode, 2, kernel_size=kernel_size, border_type="reflect"), kernel_size)[0, 0]
    for got, want in zip(hess, (2 * a, b, 2 * c)):  # [dxx, dxy, dyy]
        torch.testing.assert_close(got, torch.full_like(got, want), atol=1e-10, rtol=0)
    # f = x y alone: d2/dxdy = +1 (Kornia before 0.9 had it negated)
    xy = _interior(spatial_gradient((xs * ys)[None, None], mode, 2, kernel_size=kernel_size), kernel_size)
    torch.testing.assert_close(xy[0, 0, 1], torch.ones_like(xy[0, 0, 1]), atol=1e-10, rtol=0)
    if mode == "sobel":
        lap = _interior(laplacian(f, kernel_size), kernel_size)[0, 0]
        torch.testing.assert_close(lap, torch.full_like(lap, 2 * a + 2 * c), atol=1e-10, rtol=0)


@pytest.mark.parametrize("mode, kernel_size", DERIVATIVE_MODES)
def test_hessian_determinant_rotation_invariant(mode, kernel_size):
    """det H = 4ac - b^2 for the quadratic, and the same for it rotated by 30 degrees
    (sampled analytically at the rotated coordinates, not warped)."""
    xs, ys = _grid(21, 23)
    a, b, c = 0.4, 0.5, -0.3
    theta = math.radians(30.0)
    ct, st = math.cos(theta), math.sin(theta)
    f = _quadratic(xs, ys, a, b, c)
    f_rot = _quadratic(ct * xs + st * ys, -st * xs + ct * ys, a, b, c)
    dets = []
    hessians = []
    for img in (f, f_rot):
        hess = spatial_gradient(img[None, None], mode, 2, kernel_size=kernel_size)
        hxx, hxy, hyy = _interior(hess, kernel_size)[0, 0]
        hessians.append((hxx, hxy, hyy))
        dets.append(hxx * hyy - hxy * hxy)
    # the rotation changes the individual derivatives...
    assert (hessians[0][0] - hessians[1][0]).abs().min() > 0.1
    # ...but not the determinant
    torch.testing.assert_close(dets[1], dets[0], atol=1e-9, rtol=0)
    torch.testing.assert_close(dets[0], torch.full_like(dets[0], 4 * a * c - b * b), atol=1e-9, rtol=0)


# ====================================================================== standard set
# name -> (operator, gain: the largest absolute kernel sum, which bounds the output per unit input)
OPERATORS: dict[str, tuple[Op, float]] = {
    "gaussian_blur2d": (lambda x: gaussian_blur2d(x, (5, 3), (1.3, 0.7)), 1.0),
    "gaussian_blur2d_auto_size": (lambda x: gaussian_blur2d(x, None, (0.9, 1.4), "replicate"), 1.0),
    "gaussian_blur2d_tensor_sigma": (
        lambda x: gaussian_blur2d(x, (5, 5), torch.tensor([[1.3, 0.7]], dtype=x.dtype, device=x.device), "circular"),
        1.0,
    ),
    "gaussian_blur2d_tensor_sigma_2d": (
        lambda x: gaussian_blur2d(x, (5, 3), torch.tensor([[1.3, 0.7]], dtype=x.dtype, device=x.device), separable=False),
        1.0,
    ),
    "box_blur": (lambda x: box_blur(x, (3, 5), "constant"), 1.0),
    "median_blur": (lambda x: median_blur(x, 5), 1.0),
    "spatial_gradient": (lambda x: spatial_gradient(x), 1.0),
    "spatial_gradient_diff2": (lambda x: spatial_gradient(x, "diff", 2, border_type="reflect"), 4.0),
    "spatial_gradient_sobel2_k7": (
        lambda x: spatial_gradient(x, "sobel", 2, kernel_size=7, border_type="circular"),
        _bank_gain(derivative_bank("sobel", 2, True, 7)),
    ),
    "sobel": (lambda x: sobel(x), 2.0),  # sqrt(dx^2 + dy^2) <= |dx| + |dy|
    "laplacian": (lambda x: laplacian(x, 3), 4.0),
    "filter2d": (
        lambda x: filter2d(x, torch.tensor([[[0.5, -1.0, 0.25], [1.0, 2.0, -0.5]]], dtype=x.dtype, device=x.device)),
        5.25,
    ),
    "filter2d_separable": (
        lambda x: filter2d_separable(
            x,
            torch.tensor([[0.25, 0.5, 0.25]], dtype=x.dtype, device=x.device),
            torch.tensor([[-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device),
            "replicate",
        ),
        2.0,
    ),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_standard(batch, name):
    fn, _ = OPERATORS[name]
    out = fn(batch)
    assert out.dtype == batch.dtype and out.shape[0] == 3
    assert out.shape[-2:] == batch.shape[-2:]
    assert torch.isfinite(out).all()


# The kernel check runs every public image operator of core_ops.filters (OPERATORS, and
# the building blocks below).
KERNEL_OPERATORS: dict[str, Op] = {
    **{name: fn for name, (fn, _) in OPERATORS.items()},
    "pad2d": lambda x: pad2d(x, (2, 1, 0, 3), "reflect"),
    "correlate_separable": lambda x: correlate_separable(x, [((0.25, 0.5, 0.25), (-1.0, 0.0, 1.0))], "replicate"),
    "correlate_separable_valid_stride": lambda x: correlate_separable(
        x, [((1.0, 2.0, 1.0), (1.0, 0.0, -1.0)), ((1.0, 0.0, -1.0), (1.0, 2.0, 1.0))], padding="valid", stride=2
    ),
}
# Operators that need more than one pixel in a dimension (valid correlation with 3 taps).
MIN_SIZE = {"correlate_separable_valid_stride"}


@pytest.mark.parametrize("name", KERNEL_OPERATORS)
def test_kernel(batch, name, device):
    degenerate = () if name in MIN_SIZE else ((1, 1), (1, 5), (5, 1))
    check_kernel(KERNEL_OPERATORS[name], batch, device=device, low_precision=True, degenerate=degenerate)


@pytest.mark.parametrize("name", OPERATORS)
def test_float64(batch, name):
    fn, gain = OPERATORS[name]
    out64 = fn(batch.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), fn(batch), atol=1e-5 * gain, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", OPERATORS)
def test_half_precision(batch, name, dtype):
    fn, gain = OPERATORS[name]
    x = batch.to(dtype)
    out = fn(x)
    assert out.dtype == dtype
    ref = fn(x.double())  # the same rounded input: only the arithmetic differs
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), ref, atol=4 * eps * gain, rtol=0)


@pytest.mark.parametrize(
    "module, fn",
    [
        (
            GaussianBlur2d((5, 3), (1.3, 0.7), "replicate"),
            lambda x: gaussian_blur2d(x, (5, 3), (1.3, 0.7), "replicate"),
        ),
        (GaussianBlur2d(None, 1.2), lambda x: gaussian_blur2d(x, None, 1.2)),
        (BoxBlur((3, 5), "circular"), lambda x: box_blur(x, (3, 5), "circular")),
        (MedianBlur(3, "reflect"), lambda x: median_blur(x, 3, "reflect")),
        (
            SpatialGradient("diff", 2, False, border_type="reflect"),
            lambda x: spatial_gradient(x, "diff", 2, False, border_type="reflect"),
        ),
        (SpatialGradient("sobel", 1, kernel_size=5), lambda x: spatial_gradient(x, "sobel", 1, kernel_size=5)),
        (Sobel(False, 1e-4, border_type="constant"), lambda x: sobel(x, False, 1e-4, border_type="constant")),
        (Laplacian(5, "replicate", False), lambda x: laplacian(x, 5, "replicate", False)),
    ],
    ids=["gaussian", "gaussian_auto", "box", "median", "gradient_diff2", "gradient_sobel5", "sobel", "laplacian"],
)
def test_module_equals_functional(batch, module, fn):
    torch.testing.assert_close(module(batch), fn(batch), atol=0, rtol=0)


def test_gaussian_tensor_sigma_equals_float_sigma(batch):
    sigmas = torch.tensor([[1.3, 0.7], [0.9, 2.0], [2.5, 1.1]])
    per_sample = torch.cat([gaussian_blur2d(batch[i : i + 1], (7, 5), tuple(sigmas[i].tolist())) for i in range(3)])
    for separable in (True, False):
        ours = gaussian_blur2d(batch, (7, 5), sigmas, separable=separable)
        torch.testing.assert_close(ours, per_sample, atol=1e-6, rtol=0)


def test_filter2d_per_sample_kernels(batch):
    kernels = torch.randn(3, 3, 5)
    per_sample = torch.cat([filter2d(batch[i : i + 1], kernels[i : i + 1], "circular") for i in range(3)])
    torch.testing.assert_close(filter2d(batch, kernels, "circular"), per_sample, atol=1e-6, rtol=0)


def test_separable_equals_2d(batch):
    kx, ky = torch.randn(1, 5), torch.randn(1, 3)
    for border_type in BORDER_TYPES:
        for padding in ("same", "valid"):
            ref = filter2d(batch, ky[:, :, None] * kx[:, None, :], border_type, padding=padding)
            ours = filter2d_separable(batch, kx, ky, border_type, padding=padding)
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


# ====================================================================== gradients
# name -> operator taking (input, border_type); the kernels are fixed (slice engine)
GRAD_OPERATORS: dict[str, Callable[[torch.Tensor, str], torch.Tensor]] = {
    "gaussian_blur2d": lambda x, b: gaussian_blur2d(x, (5, 3), (1.3, 0.7), b),
    "gaussian_blur2d_pad_beyond_image": lambda x, b: gaussian_blur2d(x, 15, 2.0, b),  # pad 7 > 6 rows
    "box_blur": lambda x, b: box_blur(x, (3, 5), b),
    "median_blur": lambda x, b: median_blur(x, 3, b),
    "spatial_gradient_sobel": lambda x, b: spatial_gradient(x, border_type=b),
    "spatial_gradient_diff2": lambda x, b: spatial_gradient(x, "diff", 2, border_type=b),
    "spatial_gradient_sobel2_k5": lambda x, b: spatial_gradient(x, "sobel", 2, False, kernel_size=5, border_type=b),
    "sobel": lambda x, b: sobel(x, border_type=b),
    "laplacian": lambda x, b: laplacian(x, 5, b),
    "filter2d": lambda x, b: filter2d(x, torch.tensor([[[0.5, -1.0, 0.25], [1.0, 2.0, -0.5]]], dtype=x.dtype), b),
    "filter2d_separable": lambda x, b: filter2d_separable(
        x,
        torch.tensor([[0.25, 0.5, -0.25]], dtype=x.dtype),
        torch.tensor([[-1.0, 0.5, 1.0, 2.0, 0.1]], dtype=x.dtype),
        b,
    ),
}


@pytest.mark.parametrize("border_type", BORDER_TYPES)
@pytest.mark.parametrize("name", GRAD_OPERATORS)
def test_gradcheck(name, border_type):
    fn = GRAD_OPERATORS[name]
    assert gradcheck(lambda x: fn(x, border_type), (small_input(),), fast_mode=False)


@pytest.mark.parametrize(
    "name, border_type",
    [
        ("gaussian_blur2d_pad_beyond_image", "reflect"),
        ("spatial_gradient_diff2", "circular"),
        ("laplacian", "replicate"),
    ],
)
def test_gradgradcheck(name, border_type):
    # The engine's backward is itself a custom Function whose backward is the forward.
    fn = GRAD_OPERATORS[name]
    assert gradgradcheck(lambda x: fn(x, border_type), (small_input(c=1),), fast_mode=False)


@pytest.mark.parametrize("separable", [True, False])
def test_gradcheck_gaussian_sigma(separable):
    x = small_input(b=2)
    sigma = torch.tensor([[1.1, 0.7], [0.8, 1.9]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, s: gaussian_blur2d(x, (5, 3), s, "reflect", separable), (x, sigma), fast_mode=False)


@pytest.mark.parametrize("border_type", BORDER_TYPES)
def test_gradcheck_filter2d_kernel(border_type):
    x = small_input(b=2)
    kernel = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, k: filter2d(x, k, border_type, normalized=True), (x, kernel), fast_mode=False)
    big = torch.randn(1, 9, 11, dtype=torch.float64, requires_grad=True)  # conv2d path (> 81 taps)
    assert gradcheck(lambda x, k: filter2d(x, k, border_type, behaviour="conv"), (x, big), fast_mode=False)


def test_gradcheck_filter2d_separable_kernels():
    x = small_input(b=2)
    kx = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    ky = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, a, b: filter2d_separable(x, a, b, "reflect"), (x, kx, ky), fast_mode=False)


# ====================================================================== bad input
def _x(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype)


BAD_INPUT = [
    # wrong rank / dtype / type of the image
    (lambda: gaussian_blur2d(_x(3, 8, 8), 3, 1.0), ValueError, "input"),
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8, dtype=torch.uint8), 3, 1.0), TypeError, "input"),
    (lambda: box_blur(np.zeros((1, 1, 8, 8)), 3), TypeError, "input"),
    (lambda: median_blur(_x(1, 1, 1, 8, 8), 3), ValueError, "input"),
    (lambda: spatial_gradient(_x(1, 1, 8, 8, dtype=torch.int64)), TypeError, "input"),
    (lambda: sobel(_x(8, 8)), ValueError, "input"),
    (lambda: laplacian(_x(1, 1, 8, 8, dtype=torch.int32), 3), TypeError, "input"),
    (lambda: filter2d(_x(1, 8, 8), torch.ones(1, 3, 3)), ValueError, "input"),
    (lambda: filter2d_separable(_x(1, 1, 8, 8, dtype=torch.int16), _x(1, 3), _x(1, 3)), TypeError, "input"),
    # kernel sizes
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 4, 1.0), ValueError, "kernel_size"),
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), (3, 0), 1.0), ValueError, "kernel_size"),
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 3.0, 1.0), TypeError, "kernel_size"),
    (lambda: box_blur(_x(1, 1, 8, 8), (3, 4)), ValueError, "kernel_size"),
    (lambda: median_blur(_x(1, 1, 8, 8), 2), ValueError, "kernel_size"),
    (lambda: laplacian(_x(1, 1, 8, 8), 9), ValueError, "kernel_size"),
    (lambda: laplacian(_x(1, 1, 8, 8), (3, 5)), ValueError, "kernel_size"),
    (lambda: spatial_gradient(_x(1, 1, 8, 8), kernel_size=9), ValueError, "kernel_size"),
    (lambda: spatial_gradient(_x(1, 1, 8, 8), kernel_size=4), ValueError, "kernel_size"),
    (lambda: get_gaussian_kernel1d(4, 1.0), ValueError, "kernel_size"),
    (lambda: GaussianBlur2d(6, 1.0), ValueError, "kernel_size"),
    (lambda: BoxBlur(0), ValueError, "kernel_size"),
    (lambda: MedianBlur((3, 2)), ValueError, "kernel_size"),
    (lambda: Laplacian(4), ValueError, "kernel_size"),
    # sigma
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 3, 0.0), ValueError, "sigma"),
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 3, (1.0, -2.0)), ValueError, "sigma"),
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 3, float("nan")), ValueError, "sigma"),
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 3, "1.0"), TypeError, "sigma"),
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 3, torch.tensor([[1, 1]])), TypeError, "sigma"),
    (lambda: gaussian_blur2d(_x(2, 1, 8, 8), 3, torch.ones(3, 2)), ValueError, "sigma"),
    (lambda: gaussian_blur2d(_x(2, 1, 8, 8), 3, torch.ones(2)), ValueError, "sigma"),
    (lambda: gaussian_blur2d(_x(2, 1, 8, 8), None, torch.ones(2, 2)), ValueError, "kernel_size"),
    (lambda: GaussianBlur2d(3, -1.0), ValueError, "sigma"),
    # border type
    (lambda: gaussian_blur2d(_x(1, 1, 8, 8), 3, 1.0, "reflect101"), ValueError, "border_type"),
    (lambda: box_blur(_x(1, 1, 8, 8), 3, "wrap"), ValueError, "border_type"),
    (lambda: median_blur(_x(1, 1, 8, 8), 3, "zeros"), ValueError, "border_type"),
    (lambda: spatial_gradient(_x(1, 1, 8, 8), border_type="symmetric"), ValueError, "border_type"),
    (lambda: sobel(_x(1, 1, 8, 8), border_type="edge"), ValueError, "border_type"),
    (lambda: laplacian(_x(1, 1, 8, 8), 3, "Reflect"), ValueError, "border_type"),
    (lambda: filter2d(_x(1, 1, 8, 8), torch.ones(1, 3, 3), "mirror"), ValueError, "border_type"),
    (lambda: filter2d_separable(_x(1, 1, 8, 8), torch.ones(1, 3), torch.ones(1, 3), "x"), ValueError, "border_type"),
    (lambda: Sobel(border_type="x"), ValueError, "border_type"),
    # kernels
    (lambda: filter2d(_x(3, 1, 8, 8), torch.ones(2, 3, 3)), ValueError, "kernel"),
    (lambda: filter2d(_x(1, 1, 8, 8), torch.ones(3, 3)), ValueError, "kernel"),
    (lambda: filter2d(_x(1, 1, 8, 8), torch.ones(1, 3, 3, dtype=torch.int64)), TypeError, "kernel"),
    (lambda: filter2d(_x(1, 1, 8, 8), torch.ones(1, 0, 3)), ValueError, "kernel"),
    (lambda: filter2d(_x(1, 1, 8, 8), [[[1.0]]]), TypeError, "kernel"),
    (lambda: filter2d_separable(_x(3, 1, 8, 8), torch.ones(2, 3), torch.ones(1, 3)), ValueError, "kernel_x"),
    (lambda: filter2d_separable(_x(3, 1, 8, 8), torch.ones(1, 3), torch.ones(1, 3, 1)), ValueError, "kernel_y"),
    # options
    (lambda: filter2d(_x(1, 1, 8, 8), torch.ones(1, 3, 3), padding="full"), ValueError, "padding"),
    (lambda: filter2d(_x(1, 1, 8, 8), torch.ones(1, 3, 3), behaviour="convolution"), ValueError, "behaviour"),
    (lambda: filter2d(_x(1, 1, 2, 8), torch.ones(1, 3, 3), padding="valid"), ValueError, "input"),
    (lambda: filter2d_separable(_x(1, 1, 8, 2), _x(1, 3), _x(1, 3), padding="valid"), ValueError, "input"),
    (lambda: spatial_gradient(_x(1, 1, 8, 8), "scharr"), ValueError, "mode"),
    (lambda: spatial_gradient(_x(1, 1, 8, 8), order=3), ValueError, "order"),
    (lambda: spatial_gradient(_x(1, 1, 8, 8), order=0), ValueError, "order"),
    (lambda: SpatialGradient("laplace"), ValueError, "mode"),
    (lambda: SpatialGradient(order=3), ValueError, "order"),
]


@pytest.mark.parametrize("call, error, argument", BAD_INPUT, ids=[f"{i}-{a}" for i, (_, _, a) in enumerate(BAD_INPUT)])
def test_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch


# ====================================================================== torch.compile
def _compiled_ops(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    h, w = x.shape[-2:]
    return (
        gaussian_blur2d(x, (5, 3), (1.2, 0.8)),
        spatial_gradient(x, "sobel", 2, kernel_size=5, border_type="reflect"),
        sobel(x),
        pyrdown(x),
        pyrup(x, size=(2 * h - 1, 2 * w)),
    )


@pytest.mark.slow
@ignore_compile_warnings
def test_compile_fullgraph_matches_eager(batch):
    torch._dynamo.reset()
    compiled = torch.compile(_compiled_ops, fullgraph=True)  # inductor
    for got, want in zip(compiled(batch), _compiled_ops(batch), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.slow
@ignore_compile_warnings
def test_compile_fullgraph_gradients_match_eager(batch):
    def loss(x: torch.Tensor) -> torch.Tensor:
        return sum(((o * o).sum() for o in _compiled_ops(x)), torch.zeros((), dtype=x.dtype))

    torch._dynamo.reset()
    x = batch[:1].double().requires_grad_(True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    (got,) = torch.autograd.grad(compiled(x), x)
    (want,) = torch.autograd.grad(loss(x), x)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)



def test_sobel_blockwise_reduction_equals_stacked(monkeypatch, batch):
    """Large inputs take the block-by-block magnitude (the (B, C, 2, H, W) stack of
    derivatives is never held); it gives the stacked path's numbers.

    Runs on the PyTorch path: the native kernel returns before the blockwise reduction,
    which would leave this test nothing to check. The spy makes sure the blockwise path ran.
    """
    import gradcv.core_ops.filters._engine as engine
    import gradcv.core_ops.filters.derivatives as derivatives

    with _native.disabled():
        # the stacked path: the batch is far below _STACK_BYTES
        stacked = {normalized: sobel(batch, normalized) for normalized in (True, False)}
        calls = []
        blockwise = derivatives.filter_reduce

        def spy(*args, **kwargs):
            calls.append(args[0].shape)
            return blockwise(*args, **kwargs)

        monkeypatch.setattr(derivatives, "filter_reduce", spy)
        monkeypatch.setattr(derivatives, "_STACK_BYTES", 0)
        monkeypatch.setattr(engine, "_CPU_BLOCK_BYTES", 1)  # one plane per block
        for normalized in (True, False):
            torch.testing.assert_close(sobel(batch, normalized), stacked[normalized], atol=1e-6, rtol=0)
        assert len(calls) == 2, "the blockwise reduction did not run"
        assert sobel(batch[:0]).shape == (0, *batch.shape[1:])


@pytest.mark.parametrize("border_type", ["replicate", "reflect", "constant", "circular"])
@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 9, 14), (1, 1, 200, 300)])
def test_spatial_gradient_diff_sliced_equals_filter_operator(shape, normalized, border_type):
    """Small inputs take shifted slices, large ones the filter operator: the same numbers
    (the taps are 0, +-1 and +-1/2, so both are exact), and gradients through both."""
    import gradcv.core_ops.filters.derivatives as derivatives

    x = torch.rand(shape, dtype=torch.float64)
    sliced = derivatives._central_differences(x, normalized, border_type)
    bank = derivatives.derivative_bank("diff", 1, normalized, 3)
    assert torch.equal(sliced, derivatives.correlate_separable(x, bank, border_type))
    assert torch.equal(spatial_gradient(x, "diff", 1, normalized, border_type=border_type), sliced)
    small = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: derivatives._central_differences(t, normalized, border_type), (small,))
