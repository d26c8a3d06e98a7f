"""Tests for core_ops.pyramid: pyrdown/pyrup against OpenCV on real photographs (odd sizes
included), the pixel mapping (decimation is exact, pyrup is its inverse), build_pyramid,
the Gaussian scale space, gradients and typed errors.

Tolerances: float32 results are compared to 1e-5 (OpenCV sums the same products in another
order: differences are a few float32 ulps of values in [0, 1]). ScalePyramid blurs level by
level; how far that is from one Gaussian blur is bounded from the kernels themselves (see
``test_scale_pyramid_levels_are_gaussian_blurs``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from gradcv.core_ops.errors import GradcvError
from gradcv.core_ops.filters import filter2d, gaussian_blur2d, pad2d
from gradcv.core_ops.filters.kernels import default_kernel_size, gaussian_taps
from gradcv.core_ops.pyramid import (
    PyrDown,
    PyrUp,
    ScalePyramid,
    build_centred_pyramid,
    build_pyramid,
    pyrdown,
    pyrdown_centred,
    pyrup,
)
from tests._kernel_check import check_kernel
from tests.helpers import assert_max_abs_diff, small_input, to_numpy, to_tensor

BORDER_TYPES = ("constant", "reflect", "replicate", "circular")
# cv2.pyrDown supports these (not BORDER_CONSTANT); cv2.pyrUp only BORDER_DEFAULT (REFLECT_101).
CV_PYRDOWN_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE, "circular": cv2.BORDER_WRAP}
BINOMIAL5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates (y, x) of an h x w image, float64."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return ys, xs


def binomial_blur(x: torch.Tensor, border_type: str) -> torch.Tensor:
    """The full-resolution 5x5 binomial blur, through filter2d's tensor-kernel path (not the engine's stride)."""
    kernel = torch.outer(BINOMIAL5, BINOMIAL5).to(x.dtype)[None]
    return filter2d(x, kernel, border_type)


# ====================================================================== OpenCV parity
@pytest.mark.parametrize("border_type", CV_PYRDOWN_BORDERS)
def test_pyrdown_matches_opencv(images, border_type):
    for img in images:
        ref = cv2.pyrDown(img, borderType=CV_PYRDOWN_BORDERS[border_type])
        assert_max_abs_diff(to_numpy(pyrdown(to_tensor(img), border_type)), ref, 1e-5)


@pytest.mark.parametrize(
    "odd", [(False, False), (True, False), (False, True), (True, True)], ids=["even", "odd_h", "odd_w", "odd_hw"]
)
def test_pyrup_matches_opencv(images, odd):
    for img in images:
        h, w = img.shape[:2]
        size = (2 * h - odd[0], 2 * w - odd[1])
        ref = cv2.pyrUp(img, dstsize=(size[1], size[0]))  # OpenCV's dstsize is (w, h)
        assert_max_abs_diff(to_numpy(pyrup(to_tensor(img), size=size)), ref, 1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 1), (2, 3), (3, 5), (5, 2), (7, 9)])
def test_tiny_images_match_opencv(shape):
    """Images smaller than the 5x5 kernel: the border is folded more than once."""
    img = np.random.default_rng(6).random(shape).astype(np.float32)
    x = to_tensor(img)
    for border_type, cv_border in CV_PYRDOWN_BORDERS.items():
        ref = cv2.pyrDown(img, borderType=cv_border)
        assert_max_abs_diff(to_numpy(pyrdown(x, border_type)).reshape(ref.shape), ref, 1e-5)
    h, w = shape
    for size in [(2 * h, 2 * w), (2 * h - 1, 2 * w - 1)]:
        ref = cv2.pyrUp(img, dstsize=(size[1], size[0]))
        assert_max_abs_diff(to_numpy(pyrup(x, size=size)).reshape(ref.shape), ref, 1e-5)


# ====================================================================== pixel mapping
@pytest.mark.parametrize("border_type", BORDER_TYPES)
@pytest.mark.parametrize("shape", [(9, 12), (10, 7), (5, 5)])
def test_pyrdown_is_exact_decimation(shape, border_type):
    """Output pixel (x', y') is the full-resolution binomial blur at (2x', 2y'), for single
    bright pixels anywhere (borders included) and for a smooth function."""
    h, w = shape
    impulses = torch.zeros(h * w, 1, h, w, dtype=torch.float64)
    impulses.view(h * w, -1)[torch.arange(h * w), torch.arange(h * w)] = 1.0
    ys, xs = _grid(h, w)
    smooth = (torch.sin(0.4 * xs + 0.1) * torch.cos(0.3 * ys) + 0.05 * xs * ys)[None, None]
    for x in (impulses, smooth):
        expected = binomial_blur(x, border_type)[..., ::2, ::2]
        torch.testing.assert_close(pyrdown(x, border_type), expected, atol=1e-12, rtol=0)


def test_pyrdown_single_bright_pixel():
    x = torch.zeros(1, 1, 11, 13, dtype=torch.float64)
    x[..., 4, 6] = 1.0  # even position: lands on output pixel (3, 2)
    out = pyrdown(x)[0, 0]
    taps = torch.tensor([1.0, 6.0, 1.0], dtype=torch.float64) / 16  # the binomial at even offsets
    torch.testing.assert_close(out[1:4, 2:5], torch.outer(taps, taps), atol=1e-15, rtol=0)
    assert out.sum().item() == pytest.approx(out[1:4, 2:5].sum().item(), abs=1e-15)
    assert out.argmax().item() == 2 * out.shape[-1] + 3
    x = torch.zeros(1, 1, 11, 13, dtype=torch.float64)
    x[..., 5, 7] = 1.0  # odd position: shared between output pixels 2 and 3 on both axes
    out = pyrdown(x)[0, 0]
    half = torch.tensor([4.0, 4.0], dtype=torch.float64) / 16
    torch.testing.assert_close(out[2:4, 3:5], torch.outer(half, half), atol=1e-15, rtol=0)


def test_pyrup_single_bright_pixel():
    """Input pixel (x, y) lands on output pixel (2x, 2y)."""
    x = torch.zeros(1, 1, 6, 7, dtype=torch.float64)
    x[..., 2, 3] = 1.0
    out = pyrup(x)[0, 0]
    taps = 2 * BINOMIAL5
    torch.testing.assert_close(out[2:7, 4:9], torch.outer(taps, taps), atol=1e-15, rtol=0)
    assert out.argmax().item() == 4 * out.shape[-1] + 6
    assert out.sum().item() == pytest.approx(4.0, abs=1e-12)


def test_pyrup_is_four_times_the_adjoint_of_pyrdown():
    """With a circular border and even sizes, pyrup = 4 pyrdown^T (stuffing is the adjoint of decimation)."""
    x = torch.randn(2, 3, 10, 14, dtype=torch.float64)
    y = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    lhs = 4 * (pyrdown(x, "circular") * y).sum()
    rhs = (x * pyrup(y, "circular")).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


@pytest.mark.parametrize("border_type", ["reflect", "replicate", "circular"])
def test_pyrup_keeps_constants(border_type):
    x = torch.full((1, 2, 5, 6), 0.3, dtype=torch.float64)
    torch.testing.assert_close(pyrup(x, border_type), torch.full((1, 2, 10, 12), 0.3, dtype=torch.float64))
    torch.testing.assert_close(pyrup(x, border_type, size=(9, 11)), torch.full((1, 2, 9, 11), 0.3, dtype=torch.float64))


@pytest.mark.parametrize("border_type", ["constant", "replicate", "circular"])
@pytest.mark.parametrize("size", [None, (13, 16), (14, 15)])
def test_pyrup_border_extends_the_input(size, border_type):
    """With these borders pyrup upsamples the input as extended by the border: the same as
    upsampling the input padded by 3 pixels (so the pad is out of the kernel's reach) and
    cropping. ('reflect' follows OpenCV instead: it reflects the upsampled image.)"""
    x = torch.rand(1, 2, 7, 8, dtype=torch.float64)
    h, w = size or (14, 16)
    padded = pyrup(pad2d(x, (3, 3, 3, 3), border_type), "reflect")
    torch.testing.assert_close(pyrup(x, border_type, size=size), padded[..., 6 : 6 + h, 6 : 6 + w], atol=1e-14, rtol=0)


@pytest.mark.parametrize("shape", [(16, 20), (17, 21), (15, 18)])
def test_pyrup_inverts_pyrdown_mapping_on_planes(shape):
    """A plane survives pyrdown then pyrup exactly away from the border, odd sizes included:
    both use the same pixel mapping (x -> x / 2 -> x)."""
    h, w = shape
    ys, xs = _grid(h, w)
    plane = (0.3 * xs - 0.7 * ys + 2.0)[None, None]
    down = pyrdown(plane)
    ys2, xs2 = _grid(*down.shape[-2:])
    torch.testing.assert_close(down[..., 2:-2, 2:-2], (0.3 * 2 * xs2 - 0.7 * 2 * ys2 + 2.0)[2:-2, 2:-2][None, None])
    up = pyrup(down, size=(h, w))
    assert up.shape == plane.shape
    torch.testing.assert_close(up[..., 6:-6, 6:-6], plane[..., 6:-6, 6:-6], atol=1e-12, rtol=0)


# ====================================================================== build_pyramid
@pytest.mark.parametrize("border_type", ["reflect", "circular"])
def test_build_pyramid_is_repeated_pyrdown(photos, border_type):
    x = to_tensor(photos[3])  # 257 x 233
    levels = build_pyramid(x, 5, border_type)
    assert [tuple(p.shape[-2:]) for p in levels] == [(257, 233), (129, 117), (65, 59), (33, 30), (17, 15)]
    assert levels[0] is x
    current = x
    for level in levels[1:]:
        current = pyrdown(current, border_type)
        torch.testing.assert_close(level, current, atol=0, rtol=0)


def test_build_pyramid_single_level(batch):
    levels = build_pyramid(batch, 1)
    assert len(levels) == 1 and torch.equal(levels[0], batch)


# ====================================================================== ScalePyramid
def test_scale_pyramid_shapes_sigmas_and_distances(photos):
    x = torch.cat([to_tensor(photos[0][:64, :71]), to_tensor(photos[1][:64, :71])])
    pyramid, sigmas, dists = ScalePyramid(3, 1.6, 15)(x)
    assert [tuple(p.shape) for p in pyramid] == [(2, 3, 6, 64, 71), (2, 3, 6, 32, 36), (2, 3, 6, 16, 18)]
    expected_sigmas = torch.tensor([1.6 * 2 ** (i / 3) for i in range(6)])
    for o, (s, d) in enumerate(zip(sigmas, dists, strict=True)):
        assert s.shape == (2, 6) and d.shape == (2, 6)
        torch.testing.assert_close(s, expected_sigmas.expand(2, -1))
        torch.testing.assert_close(d, torch.full((2, 6), 2.0**o))
    pyramid, _, dists = ScalePyramid(2, 1.6, 15, double_image=True, extra_levels=1)(x)
    assert [tuple(p.shape) for p in pyramid] == [
        (2, 3, 3, 128, 142),
        (2, 3, 3, 64, 71),
        (2, 3, 3, 32, 36),
        (2, 3, 3, 16, 18),
    ]
    assert [d[0, 0].item() for d in dists] == [0.5, 1.0, 2.0, 4.0]


def test_scale_pyramid_octaves_are_exact_decimations(photos):
    x = to_tensor(photos[3])
    n_levels = 3
    pyramid, _, _ = ScalePyramid(n_levels, 1.6, 20)(x)
    assert len(pyramid) == 4
    for finer, coarser in zip(pyramid, pyramid[1:]):
        assert torch.equal(coarser[:, :, 0], finer[:, :, n_levels][..., ::2, ::2])


def test_scale_pyramid_first_level_blur(photos):
    """Level 0 is the input blurred from input_sigma to init_sigma: sqrt(1.6^2 - 0.5^2)."""
    x = to_tensor(photos[3])
    pyramid, _, _ = ScalePyramid(3, 1.6, 15, input_sigma=0.5)(x)
    s = math.sqrt(1.6**2 - 0.5**2)
    torch.testing.assert_close(pyramid[0][:, :, 0], gaussian_blur2d(x, None, s), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_levels, init_sigma", [(3, 1.6), (2, 1.0), (4, 2.0)])
def test_scale_pyramid_levels_are_gaussian_blurs(photos, n_levels, init_sigma):
    """Level i is level 0 blurred by sqrt(sigma_i^2 - sigma_0^2) (Gaussian blurs add in variance).

    The pyramid gets there through i small blurs. Each is a sampled Gaussian truncated at
    4 sigma, so the composition is not exactly one Gaussian; its distance from one is at most
    ||k_steps - k_single||_1 * max|level 0| (REFLECT_101 extension commutes with symmetric
    blurs, so borders add nothing). That bound, computed here in float64 from the
    documented kernels (1e-4 to 2e-4), plus 1e-5 for float32 rounding, is the tolerance.
    A wrong sigma at any level changes the result by ~1e-2.
    """
    x = to_tensor(photos[3])
    pyramid, _, _ = ScalePyramid(n_levels, init_sigma, 60)(x)
    sigmas = [init_sigma * 2 ** (i / n_levels) for i in range(n_levels + 3)]
    for octave in pyramid:
        level0 = octave[:, :, 0]
        steps = np.array([1.0])
        for i in range(1, octave.shape[2]):
            step = math.sqrt(sigmas[i] ** 2 - sigmas[i - 1] ** 2)
            steps = np.convolve(steps, gaussian_taps(default_kernel_size(step), step))
            total = math.sqrt(sigmas[i] ** 2 - sigmas[0] ** 2)
            single = np.array(gaussian_taps(default_kernel_size(total), total))
            n = max(len(steps), len(single))
            a, b = np.pad(steps, (n - len(steps)) // 2), np.pad(single, (n - len(single)) // 2)
            bound = np.abs(np.outer(a, a) - np.outer(b, b)).sum() * level0.abs().max().item()
            expected = gaussian_blur2d(level0, default_kernel_size(total), total)
            torch.testing.assert_close(octave[:, :, i], expected, atol=bound + 1e-5, rtol=0)


def test_scale_pyramid_double_image_mapping(photos):
    """double_image puts input pixel (x, y) at (2x, 2y)."""
    x = to_tensor(photos[3][:40, :50])
    # init_sigma below the doubled input blur (2 * 0.5): level 0 is the doubled image itself
    pyramid, _, _ = ScalePyramid(2, 0.9, 15, double_image=True, input_sigma=0.5)(x)
    level0 = pyramid[0][:, :, 0]
    assert level0.shape[-2:] == (80, 100)
    assert torch.equal(level0[..., ::2, ::2], x)
    torch.testing.assert_close(level0[..., 1:-1:2, ::2], 0.5 * (x[..., :-1, :] + x[..., 1:, :]), atol=1e-7, rtol=0)
    torch.testing.assert_close(level0[..., ::2, 1:-1:2], 0.5 * (x[..., :-1] + x[..., 1:]), atol=1e-7, rtol=0)
    # with a blur: a plane a x + b y + c becomes a x'/2 + b y'/2 + c away from the border
    ys, xs = _grid(30, 34)
    plane = (0.2 * xs - 0.1 * ys + 1.0)[None, None]
    level0 = ScalePyramid(2, 1.6, 15, double_image=True)(plane)[0][0][:, :, 0]
    ys2, xs2 = _grid(60, 68)
    expected = 0.2 * xs2 / 2 - 0.1 * ys2 / 2 + 1.0
    torch.testing.assert_close(level0[0, 0, 12:-12, 12:-12], expected[12:-12, 12:-12], atol=1e-12, rtol=0)


@pytest.mark.parametrize("double_image", [False, True])
def test_scale_pyramid_same_with_and_without_autograd(double_image):
    # Without autograd the levels are blurred into a preallocated octave; with it they are
    # stacked (the recorded graph): the same numbers either way, and the gradient flows.
    x = torch.rand(2, 3, 41, 37, dtype=torch.float64).transpose(-1, -2)  # non-contiguous
    module = ScalePyramid(3, 1.6, 9, double_image=double_image)
    with torch.no_grad():
        plain = module(x)[0]
    xg = x.clone().requires_grad_(True)
    recorded = module(xg)[0]
    assert len(plain) == len(recorded) >= 2
    for a, b in zip(plain, recorded):
        assert a.shape == b.shape and a.is_contiguous()
        assert torch.equal(a, b.detach())
    sum(p.square().sum() for p in recorded).backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


# ====================================================================== standard set
def _scale_pyramid_flat(x: torch.Tensor) -> torch.Tensor:
    """Every octave of a small ScalePyramid, flattened into (B, C, N)."""
    pyramid, _, _ = ScalePyramid(2, 1.6, 5, extra_levels=1)(x)
    return torch.cat([p.flatten(2) for p in pyramid], dim=-1)


# name -> operator; each output is a convex combination of inputs (gain 1)
OPERATORS = {
    "pyrdown": lambda x: pyrdown(x),
    "pyrdown_circular": lambda x: pyrdown(x, "circular"),
    "pyrup": lambda x: pyrup(x),
    "pyrup_odd_size": lambda x: pyrup(x, "replicate", size=(2 * x.shape[-2] - 1, 2 * x.shape[-1])),
    "scale_pyramid": _scale_pyramid_flat,
}


@pytest.mark.parametrize("name", OPERATORS)
def test_standard(batch, name):
    fn = OPERATORS[name]
    out = fn(batch)
    assert out.dtype == batch.dtype and out.shape[:2] == batch.shape[:2]
    assert torch.isfinite(out).all()


# Every public pyramid operator, whole results (lists of levels, sigmas and distances).
KERNEL_OPERATORS = {
    **OPERATORS,
    "build_pyramid": lambda x: build_pyramid(x, 3, "replicate"),
    "scale_pyramid_all_outputs": lambda x: ScalePyramid(2, 1.6, 5, extra_levels=1)(x),
    "pyrdown_centred": lambda x: pyrdown_centred(x),
    "build_centred_pyramid": lambda x: build_centred_pyramid(x, 3),
}


# The centred pyramid halves: it needs 2 x 2 pixels per level below the finest.
SMALLEST = {"pyrdown_centred": 2, "build_centred_pyramid": 4}


@pytest.mark.parametrize("name", KERNEL_OPERATORS)
def test_kernel(batch, name, device):
    m = SMALLEST.get(name, 1)
    check_kernel(KERNEL_OPERATORS[name], batch, device=device, low_precision=True, degenerate=((m, m), (m, 5), (5, m)))


@pytest.mark.parametrize("name", OPERATORS)
def test_float64(batch, name):
    fn = OPERATORS[name]
    out64 = fn(batch.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), fn(batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", OPERATORS)
def test_half_precision(batch, name, dtype):
    fn = OPERATORS[name]
    x = batch.to(dtype)
    out = fn(x)
    assert out.dtype == dtype
    # ScalePyramid chains up to 4 blurs in half precision; 4 eps covers them (measured: 2.2 eps).
    torch.testing.assert_close(out.double(), fn(x.double()), atol=4 * torch.finfo(dtype).eps, rtol=0)


def test_module_equals_functional(batch):
    torch.testing.assert_close(PyrDown("replicate")(batch), pyrdown(batch, "replicate"), atol=0, rtol=0)
    torch.testing.assert_close(PyrUp("circular")(batch), pyrup(batch, "circular"), atol=0, rtol=0)
    torch.testing.assert_close(PyrUp()(batch, (37, 45)), pyrup(batch, size=(37, 45)), atol=0, rtol=0)


# ====================================================================== gradients
@pytest.mark.parametrize("border_type", BORDER_TYPES)
def test_gradcheck_pyrdown_pyrup(border_type):
    x = small_input()
    assert gradcheck(lambda x: pyrdown(x, border_type), (x,), fast_mode=False)
    assert gradcheck(lambda x: pyrup(x, border_type), (x,), fast_mode=False)
    assert gradcheck(lambda x: pyrup(x, border_type, size=(11, 14)), (x,), fast_mode=False)
    tiny = torch.rand(1, 1, 3, 2, dtype=torch.float64, requires_grad=True)  # smaller than the kernel
    assert gradcheck(lambda x: pyrdown(x, border_type), (tiny,), fast_mode=False)


def test_gradgradcheck_pyrdown_pyrup():
    x = small_input(c=1)
    assert gradgradcheck(lambda x: pyrdown(x, "reflect"), (x,), fast_mode=False)
    assert gradgradcheck(lambda x: pyrup(x, "circular", size=(11, 13)), (x,), fast_mode=False)


@pytest.mark.parametrize("double_image", [False, True])
def test_gradcheck_scale_pyramid(double_image):
    # 8x9 with min_size 4 gives two octaves; the 13-tap step blur pads past the image.
    x = torch.rand(1, 1, 8, 9, dtype=torch.float64, requires_grad=True)
    sp = ScalePyramid(2, 1.0, 4, double_image=double_image, extra_levels=1)
    assert len(sp(x)[0]) == (3 if double_image else 2)
    assert gradcheck(lambda x: torch.cat([p.flatten() for p in sp(x)[0]]), (x,), fast_mode=False)


def test_gradcheck_build_pyramid():
    x = small_input()
    assert gradcheck(lambda x: tuple(build_pyramid(x, 3, "replicate")), (x,), fast_mode=False)


# ====================================================================== bad input
def _x(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype)


BAD_INPUT = [
    (lambda: pyrdown(_x(3, 8, 8)), ValueError, "input"),
    (lambda: pyrdown(_x(1, 1, 8, 8, dtype=torch.uint8)), TypeError, "input"),
    (lambda: pyrup(_x(1, 1, 1, 8, 8)), ValueError, "input"),
    (lambda: pyrup(_x(1, 1, 8, 8, dtype=torch.int64)), TypeError, "input"),
    (lambda: build_pyramid(_x(8, 8), 2), ValueError, "input"),
    (lambda: build_pyramid(np.zeros((1, 1, 8, 8)), 2), TypeError, "input"),
    (lambda: ScalePyramid()(_x(1, 1, 32, 32, dtype=torch.int32)), TypeError, "input"),
    (lambda: ScalePyramid()(_x(32, 32)), ValueError, "input"),
    (lambda: pyrdown(_x(1, 1, 8, 8), "reflect101"), ValueError, "border_type"),
    (lambda: pyrup(_x(1, 1, 8, 8), "wrap"), ValueError, "border_type"),
    (lambda: build_pyramid(_x(1, 1, 8, 8), 1, "edge"), ValueError, "border_type"),
    (lambda: PyrDown("zeros"), ValueError, "border_type"),
    (lambda: PyrUp("symmetric"), ValueError, "border_type"),
    (lambda: build_pyramid(_x(1, 1, 8, 8), 0), ValueError, "max_level"),
    (lambda: build_pyramid(_x(1, 1, 8, 8), -2), ValueError, "max_level"),
    (lambda: build_pyramid(_x(1, 1, 8, 8), 2.0), ValueError, "max_level"),
    (lambda: build_pyramid(_x(1, 1, 8, 8), True), ValueError, "max_level"),
    (lambda: pyrup(_x(1, 1, 4, 5), size=(9, 10)), ValueError, "size"),  # 2H + 1: OpenCV's odd case, not offered
    (lambda: pyrup(_x(1, 1, 4, 5), size=(8, 11)), ValueError, "size"),
    (lambda: pyrup(_x(1, 1, 4, 5), size=(6, 10)), ValueError, "size"),
    (lambda: pyrup(_x(1, 1, 4, 5), size=(8, 8)), ValueError, "size"),
    (lambda: PyrUp()(_x(1, 1, 4, 5), (10, 10)), ValueError, "size"),
    (lambda: ScalePyramid(n_levels=0), ValueError, "n_levels"),
    (lambda: ScalePyramid(init_sigma=0.0), ValueError, "init_sigma"),
    (lambda: ScalePyramid(init_sigma=float("nan")), ValueError, "init_sigma"),
    (lambda: ScalePyramid(min_size=0), ValueError, "min_size"),
    (lambda: ScalePyramid(extra_levels=-1), ValueError, "extra_levels"),
]


@pytest.mark.parametrize("call, error, argument", BAD_INPUT, ids=[f"{i}-{a}" for i, (_, _, a) in enumerate(BAD_INPUT)])
def test_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch
