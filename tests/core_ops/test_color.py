"""Tests for core_ops.color: conversions and adjustments against OpenCV and Kornia on real
photographs, round trips, hue wrap-around, gradients (including where hue is undefined),
and the standard operator checks.

Tolerances: float32 results are compared to 1e-5 unless a reference is known to compute
something slightly different, in which case the test derives the expected difference.
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import kornia
import numpy as np
import pytest
import torch

from gradcv.core_ops import color
from gradcv.core_ops.color import (
    AdjustBrightness,
    AdjustContrast,
    AdjustHue,
    AdjustSaturation,
    BgrToGrayscale,
    BgrToRgb,
    HsvToRgb,
    RgbToBgr,
    RgbToGrayscale,
    RgbToHsv,
    RgbToYcbcr,
    YcbcrToRgb,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    bgr_to_grayscale,
    bgr_to_rgb,
    hsv_to_rgb,
    rgb_to_bgr,
    rgb_to_grayscale,
    rgb_to_hsv,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from tests._kernel_check import check_kernel
from tests.helpers import to_numpy, to_tensor

TWO_PI = 2.0 * math.pi
# OpenCV adds FLT_EPSILON to the denominators of its float HSV conversion.
FLT_EPSILON = float(np.finfo(np.float32).eps)

Op = Callable[[torch.Tensor], torch.Tensor]

# Every RGB -> something operator with fixed options, for the checks that apply to all.
OPERATORS: dict[str, Op] = {
    "rgb_to_grayscale": rgb_to_grayscale,
    "rgb_to_grayscale_weights": lambda x: rgb_to_grayscale(x, torch.tensor([0.2, 0.3, 0.5])),
    "bgr_to_grayscale": bgr_to_grayscale,
    "rgb_to_bgr": rgb_to_bgr,
    "bgr_to_rgb": bgr_to_rgb,
    "rgb_to_hsv": rgb_to_hsv,
    "hsv_to_rgb": hsv_to_rgb,
    "rgb_to_ycbcr": rgb_to_ycbcr,
    "ycbcr_to_rgb": ycbcr_to_rgb,
    "adjust_brightness": lambda x: adjust_brightness(x, 0.2),
    "adjust_brightness_noclip": lambda x: adjust_brightness(x, -0.3, clip_output=False),
    "adjust_contrast": lambda x: adjust_contrast(x, 1.7),
    "adjust_saturation": lambda x: adjust_saturation(x, 1.8),
    "adjust_hue": lambda x: adjust_hue(x, 2.0),
}


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-7) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def assert_close_np(actual: torch.Tensor, expected: np.ndarray, atol: float = 1e-5) -> None:
    """A (1, C, H, W) tensor against an OpenCV HxW(xC) array."""
    np.testing.assert_allclose(to_numpy(actual), expected, atol=atol, rtol=0)


def angle_difference(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor):
    """Signed difference of two angles in radians, wrapped into [-π, π)."""
    return (a - b + math.pi) % TWO_PI - math.pi


@pytest.fixture(scope="module")
def batch(photos) -> torch.Tensor:
    """Three real photographs cropped to one odd size, (3, 3, 33, 47) float32."""
    crops = [to_tensor(p[40:73, 60:107]) for p in photos[:3]]
    return torch.cat(crops)


@pytest.fixture(scope="module")
def common_batch(photos) -> torch.Tensor:
    """All four photographs, a 129 x 131 crop of each around its centre, (4, 3, 129, 131).

    Small enough to keep the tests fast on a shared machine, and still holding the pixels
    that matter here (checked below): every hue sextant, grey, dark, saturated and clipped."""
    crops = []
    for p in photos:
        top, left = (p.shape[0] - 129) // 2, (p.shape[1] - 131) // 2
        crops.append(to_tensor(p[top : top + 129, left : left + 131]))
    x = torch.cat(crops)
    value, low = x.amax(1), x.amin(1)
    sextant = torch.floor(kornia.color.rgb_to_hsv(x)[:, 0] / (math.pi / 3))
    assert torch.unique(sextant).numel() == 6
    assert (value == low).sum() > 100 and (value < 0.05).sum() > 100 and (low == 0).sum() > 100
    assert ((value - low) / value.clamp_min(1e-3) > 0.9).sum() > 100 and (x == 1).sum() > 100
    return x


def degenerate_rgb(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Pixels where HSV is undefined or switches branch: grey, black, white, the six
    sextant boundaries, and hues a hair on either side of 0 = 2π. Shape (1, 3, 1, 12)."""
    pixels = [
        (0.5, 0.5, 0.5),  # grey: hue undefined
        (0.0, 0.0, 0.0),  # black: hue and saturation undefined
        (1.0, 1.0, 1.0),
        (0.8, 0.3, 0.3),  # hue 0: red, g == b
        (0.7, 0.7, 0.2),  # 60 degrees: r == g is the max
        (0.2, 0.7, 0.2),  # 120 degrees
        (0.2, 0.7, 0.7),  # 180 degrees: g == b is the max
        (0.2, 0.2, 0.7),  # 240 degrees
        (0.7, 0.2, 0.7),  # 300 degrees: r == b is the max
        (0.8, 0.3, 0.3 + 1e-9),  # hue just below 2π
        (0.8, 0.3 + 1e-9, 0.3),  # hue just above 0
        (0.6, 0.6, 0.6 - 1e-9),  # almost grey
    ]
    return torch.tensor(pixels, dtype=dtype).T.reshape(1, 3, 1, -1)


# ---------------------------------------------------------------------------- OpenCV


@pytest.mark.parametrize("which", range(4))
def test_grayscale_matches_opencv(photos, which):
    rgb = photos[which]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    assert_close_np(rgb_to_grayscale(to_tensor(rgb)), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert_close_np(bgr_to_grayscale(to_tensor(bgr)), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


@pytest.mark.parametrize("which", range(4))
def test_channel_order_matches_opencv(photos, which):
    rgb = photos[which]
    np.testing.assert_array_equal(to_numpy(rgb_to_bgr(to_tensor(rgb))), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(to_numpy(bgr_to_rgb(to_tensor(rgb))), cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("which", range(4))
def test_rgb_to_hsv_matches_opencv(photos, which):
    rgb = photos[which]
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float64)  # H in degrees
    # OpenCV divides the chroma by (V + FLT_EPSILON): the same eps makes S agree exactly.
    hsv = to_numpy(rgb_to_hsv(to_tensor(rgb), eps=FLT_EPSILON)).astype(np.float64)
    np.testing.assert_allclose(hsv[..., 1], expected[..., 1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(hsv[..., 2], expected[..., 2], atol=1e-5, rtol=0)
    assert hsv[..., 0].min() >= 0 and hsv[..., 0].max() < TWO_PI
    chroma = rgb.max(-1).astype(np.float64) - rgb.min(-1)
    coloured = chroma > 0
    assert coloured.mean() > 0.9  # the comparison below covers most of the photograph
    # OpenCV also divides the hue by (chroma + FLT_EPSILON), which biases a hue within its
    # sextant by up to (π/3) FLT_EPSILON / chroma: 3.2e-5 rad on the darkest 8-bit steps.
    hue_error = np.abs(angle_difference(hsv[..., 0], np.deg2rad(expected[..., 0])))
    allowed = 1e-5 + (math.pi / 3) * FLT_EPSILON / np.where(coloured, chroma, 1.0)
    assert np.all(hue_error[coloured] <= allowed[coloured]), hue_error[coloured].max()
    # Both put the undefined hue of grey pixels at 0.
    np.testing.assert_array_equal(hsv[~coloured, 0], 0.0)
    np.testing.assert_array_equal(expected[~coloured, 0], 0.0)


@pytest.mark.parametrize("which", range(4))
def test_hsv_to_rgb_matches_opencv(photos, which):
    hsv = cv2.cvtColor(photos[which], cv2.COLOR_RGB2HSV)
    hsv_radians = to_tensor(hsv)
    hsv_radians[:, 0] = torch.deg2rad(hsv_radians[:, 0])
    assert_close_np(hsv_to_rgb(hsv_radians), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def test_hsv_to_rgb_matches_opencv_on_every_hue():
    # Hues on every sextant, on the sextant boundaries, and with every saturation.
    hue = np.linspace(0, 360, 721, dtype=np.float32)[:-1]  # 0.5 degree steps hit each boundary
    saturation = np.linspace(0, 1, 11, dtype=np.float32)
    h, s = np.meshgrid(hue, saturation)
    hsv = np.stack([h, s, np.full_like(h, 0.75)], -1)
    hsv_radians = to_tensor(hsv)
    hsv_radians[:, 0] = torch.deg2rad(hsv_radians[:, 0])
    assert_close_np(hsv_to_rgb(hsv_radians), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


@pytest.mark.parametrize("which", range(4))
def test_ycbcr_matches_opencv(photos, which):
    rgb = photos[which]
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    ycbcr = ycrcb[..., [0, 2, 1]]  # OpenCV's order is Y, Cr, Cb; Kornia's (and ours) Y, Cb, Cr
    np.testing.assert_allclose(to_numpy(rgb_to_ycbcr(to_tensor(rgb))), ycbcr, atol=1e-5, rtol=0)

    # OpenCV inverts with coefficients rounded to three digits (1.403, 0.714, 0.344, 1.773);
    # ours are the exact inverse of the forward transform, as Kornia 0.9. The two must differ
    # by no more than the rounding of each coefficient times its chroma.
    ours = to_numpy(ycbcr_to_rgb(to_tensor(np.ascontiguousarray(ycbcr)))).astype(np.float64)
    theirs = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB).astype(np.float64)
    cr, cb = ycrcb[..., 1].astype(np.float64) - 0.5, ycrcb[..., 2].astype(np.float64) - 0.5
    kr, kg, kb = 0.299, 0.587, 0.114
    rounding = np.stack(
        [
            abs(1 / 0.713 - 1.403) * np.abs(cr),
            abs(kr / (kg * 0.713) - 0.714) * np.abs(cr) + abs(kb / (kg * 0.564) - 0.344) * np.abs(cb),
            abs(1 / 0.564 - 1.773) * np.abs(cb),
        ],
        -1,
    )
    assert np.all(np.abs(ours - theirs) <= rounding + 1e-5)
    assert np.abs(ours - theirs).max() > 1e-5  # the difference is real: OpenCV is not the reference here
    # ...and ours is the one that inverts the forward transform.
    np.testing.assert_allclose(ours, rgb, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- Kornia


CONVERSIONS = {
    "rgb_to_grayscale": (rgb_to_grayscale, kornia.color.rgb_to_grayscale),
    "bgr_to_grayscale": (bgr_to_grayscale, kornia.color.bgr_to_grayscale),
    "rgb_to_bgr": (rgb_to_bgr, kornia.color.rgb_to_bgr),
    "hsv_to_rgb": (hsv_to_rgb, kornia.color.hsv_to_rgb),
    "rgb_to_ycbcr": (rgb_to_ycbcr, kornia.color.rgb_to_ycbcr),
    "ycbcr_to_rgb": (ycbcr_to_rgb, kornia.color.ycbcr_to_rgb),
}


@pytest.mark.parametrize("name", CONVERSIONS)
def test_conversions_match_kornia(common_batch, name):
    ours, theirs = CONVERSIONS[name]
    x = rgb_to_hsv(common_batch) if name == "hsv_to_rgb" else common_batch
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


def test_rgb_to_hsv_matches_kornia(common_batch):
    ours, theirs = rgb_to_hsv(common_batch), kornia.color.rgb_to_hsv(common_batch)
    torch.testing.assert_close(ours[:, 1:], theirs[:, 1:], atol=1e-5, rtol=0)
    assert angle_difference(ours[:, 0], theirs[:, 0]).abs().max() <= 1e-5


ADJUSTMENTS = {
    "brightness": (adjust_brightness, kornia.enhance.adjust_brightness, [0.0, 0.3, -0.45]),
    "contrast": (adjust_contrast, kornia.enhance.adjust_contrast, [0.0, 0.6, 1.0, 2.5]),
    "saturation": (adjust_saturation, kornia.enhance.adjust_saturation, [0.0, 0.5, 1.0, 1.7, 4.0]),
    "hue": (adjust_hue, kornia.enhance.adjust_hue, [-math.pi, -1.0, 0.0, 0.4, 2.5, math.pi]),
}


@pytest.mark.parametrize("name", ADJUSTMENTS)
def test_adjust_matches_kornia(common_batch, name):
    ours, theirs, factors = ADJUSTMENTS[name]
    for factor in factors:
        close(ours(common_batch, factor), theirs(common_batch, factor), atol=1e-5)
    # One factor per image, as a tensor.
    per_image = torch.tensor((factors[-2:] * 2)[:4])
    close(ours(common_batch, per_image), theirs(common_batch, per_image), atol=1e-5)


@pytest.mark.parametrize("name", ["brightness", "contrast"])
def test_adjust_without_clipping_matches_kornia(common_batch, name):
    ours, theirs, _ = ADJUSTMENTS[name]
    factor = {"brightness": 0.7, "contrast": 1.7}[name]
    out = ours(common_batch, factor, clip_output=False)
    assert out.max() > 1.2  # clipping would have changed these
    torch.testing.assert_close(out, theirs(common_batch, factor, clip_output=False), atol=1e-5, rtol=0)


def test_adjust_saturation_eps_is_the_only_difference_from_kornia(common_batch):
    # Kornia fixes the saturation eps at 1e-8; with that eps the two agree to float rounding.
    ours = adjust_saturation(common_batch, 1.7, eps=1e-8)
    close(ours, kornia.enhance.adjust_saturation(common_batch, 1.7), atol=2e-6)


# --------------------------------------------------------- hand-computed expectations


def pixel(*values: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).view(1, 3, 1, 1)


def test_hand_computed_conversions():
    orange = pixel(0.8, 0.6, 0.4)  # hue 30 degrees, saturation 0.5, value 0.8
    close(rgb_to_hsv(orange), pixel(math.pi / 6, 0.5, 0.8))
    torch.testing.assert_close(hsv_to_rgb(pixel(math.pi / 6, 0.5, 0.8)), orange)
    y = 0.299 * 0.8 + 0.587 * 0.6 + 0.114 * 0.4
    close(rgb_to_grayscale(orange).flatten(), torch.tensor([y], dtype=torch.float64))
    close(rgb_to_ycbcr(orange), pixel(y, 0.564 * (0.4 - y) + 0.5, 0.713 * (0.8 - y) + 0.5))


def test_hand_computed_adjustments():
    x = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64).view(1, 1, 1, 3)

    def row(*values: float) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, 3)

    close(adjust_brightness(x, 0.25), row(0.45, 0.85, 1.0))
    close(adjust_brightness(x, 0.25, clip_output=False), row(0.45, 0.85, 1.15))
    close(adjust_contrast(x, 1.5), row(0.3, 0.9, 1.0))
    close(adjust_contrast(x, 1.5, clip_output=False), row(0.3, 0.9, 1.35))

    orange = pixel(0.8, 0.6, 0.4)  # hue 30 degrees, saturation 0.5, value 0.8
    # Half the saturation: the channels move halfway up to the value.
    torch.testing.assert_close(adjust_saturation(orange, 0.5, eps=0.0), pixel(0.8, 0.7, 0.6))
    # Triple the saturation clips it to 1: the smallest channel reaches 0, the hue stays.
    torch.testing.assert_close(adjust_saturation(orange, 3.0, eps=0.0), pixel(0.8, 0.4, 0.0))
    torch.testing.assert_close(adjust_saturation(orange, 0.0), pixel(0.8, 0.8, 0.8))
    # Hue +90 degrees: 30 -> 120 (green); +180: the complementary colour.
    torch.testing.assert_close(adjust_hue(orange, math.pi / 2), pixel(0.4, 0.8, 0.4))
    torch.testing.assert_close(adjust_hue(orange, math.pi), pixel(0.4, 0.6, 0.8))
    torch.testing.assert_close(adjust_hue(orange, -math.pi), pixel(0.4, 0.6, 0.8))


# ----------------------------------------------------------------------- round trips


def test_round_trips(common_batch):
    x = common_batch
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5, rtol=0)
    assert torch.equal(bgr_to_rgb(rgb_to_bgr(x)), x)
    torch.testing.assert_close(bgr_to_grayscale(rgb_to_bgr(x)), rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_hsv_round_trip_from_hsv():
    # Every hue, including the sextant boundaries; saturation and value away from 0,
    # where hue and saturation would be undefined.
    hue = torch.linspace(0, TWO_PI, 361, dtype=torch.float64)[:-1]
    sat = torch.linspace(0.05, 1.0, 9, dtype=torch.float64)
    h, s = torch.meshgrid(hue, sat, indexing="ij")
    hsv = torch.stack([h, s, torch.full_like(h, 0.6)])[None]
    back = rgb_to_hsv(hsv_to_rgb(hsv), eps=0.0)
    torch.testing.assert_close(back[:, 1:], hsv[:, 1:], atol=1e-12, rtol=0)
    assert angle_difference(back[:, 0], hsv[:, 0]).abs().max() < 1e-12


# -------------------------------------------------------------------------- hue wrap


def test_adjust_hue_wraps(common_batch):
    x = common_batch
    torch.testing.assert_close(adjust_hue(adjust_hue(x, math.pi), -math.pi), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(adjust_hue(x, 2.5), -2.5), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x, TWO_PI), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x, -TWO_PI + 0.3), adjust_hue(x, 0.3), atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x, math.pi), adjust_hue(x, -math.pi), atol=1e-5, rtol=0)


def test_hue_across_zero():
    red = pixel(1.0, 0.0, 0.0)
    torch.testing.assert_close(adjust_hue(red, -math.pi / 3), pixel(1.0, 0.0, 1.0))  # back across 0: magenta
    torch.testing.assert_close(adjust_hue(red, math.pi / 3), pixel(1.0, 1.0, 0.0))  # yellow
    magenta_red = pixel(1.0, 0.0, 0.2)  # hue just below 2π
    hue = rgb_to_hsv(magenta_red)[0, 0].item()
    assert TWO_PI - 0.25 < hue < TWO_PI
    torch.testing.assert_close(adjust_hue(magenta_red, 0.3), hsv_to_rgb(pixel(hue + 0.3 - TWO_PI, 1.0, 1.0)))


def test_hue_stays_below_two_pi_at_the_wrap():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        tiny = torch.finfo(dtype).eps
        # Red with blue a hair above green: the hue is -tiny mod 2π, which may round to 2π.
        x = pixel(1.0, 0.5, 0.5 + tiny, dtype=dtype)
        hue = rgb_to_hsv(x)[0, 0].item()
        assert 0 <= hue < TWO_PI, (dtype, hue)
        assert min(hue, TWO_PI - hue) < 0.05  # within two bfloat16 steps of 2π


def test_hsv_to_rgb_wraps_any_hue():
    hsv = pixel(1.0, 0.7, 0.9)
    for turns in (-2, -1, 1, 3):
        shifted = hsv.clone()
        shifted[:, 0] += turns * TWO_PI
        torch.testing.assert_close(hsv_to_rgb(shifted), hsv_to_rgb(hsv))


# ------------------------------------------------------------------------- gradients


def _random_image(shape=(2, 3, 3, 4), low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    return (low + (high - low) * torch.rand(*shape, dtype=torch.float64)).requires_grad_()


def _gradcheck(fn, *inputs) -> None:
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=False)


@pytest.mark.parametrize(
    "name",
    [
        "rgb_to_grayscale", "bgr_to_grayscale", "rgb_to_bgr", "bgr_to_rgb", "rgb_to_hsv", "rgb_to_ycbcr",
        "adjust_saturation", "adjust_hue",
    ],  # fmt: skip
)
def test_gradcheck_generic(name):
    _gradcheck(OPERATORS[name], _random_image())


def test_gradcheck_grayscale_weights():
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64, requires_grad=True)
    _gradcheck(rgb_to_grayscale, _random_image(), weights)


def test_gradcheck_hsv_to_rgb_with_grey_pixels():
    hsv = torch.rand(2, 3, 3, 4, dtype=torch.float64)
    hsv[:, 0] *= TWO_PI
    hsv[:, 1, 0] = 0.0  # a row of grey pixels: the hue has no effect there
    _gradcheck(hsv_to_rgb, hsv.requires_grad_())


def test_gradcheck_ycbcr_to_rgb():
    # Inside the colour gamut, where the final clamp is inactive.
    ycbcr = rgb_to_ycbcr(_random_image(low=0.1, high=0.9)).detach().requires_grad_()
    _gradcheck(ycbcr_to_rgb, ycbcr)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
def test_gradcheck_adjust_with_factor(name):
    fn = ADJUSTMENTS[name][0]
    factors = {"brightness": [0.1, -0.2], "contrast": [0.7, 1.2], "saturation": [0.5, 1.5], "hue": [-2.0, 1.0]}
    factor_t = torch.tensor(factors[name], dtype=torch.float64, requires_grad=True)
    _gradcheck(fn, _random_image(), factor_t)


def test_gradcheck_adjust_saturation_clipped():
    # A large factor saturates most pixels: the clamp branch.
    _gradcheck(lambda x: adjust_saturation(x, 20.0), _random_image())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["rgb_to_hsv", "adjust_saturation", "adjust_hue"])
def test_gradients_finite_where_hue_is_undefined_or_switches(name, dtype):
    x = degenerate_rgb(dtype).requires_grad_()
    out = OPERATORS[name](x)
    assert torch.isfinite(out).all()
    (out * torch.rand_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all(), x.grad


def test_hue_gradient_is_zero_at_grey_and_black():
    x = degenerate_rgb().requires_grad_()
    rgb_to_hsv(x)[:, 0].sum().backward()
    assert torch.equal(x.grad[..., :3], torch.zeros_like(x.grad[..., :3]))  # grey, black, white
    assert x.grad[..., 3:].abs().sum() > 0


def test_black_is_safe_without_eps():
    # The guard, not eps, keeps black pixels finite: eps=0 must work too.
    x = degenerate_rgb().requires_grad_()
    hsv = rgb_to_hsv(x, eps=0.0)
    assert torch.isfinite(hsv).all() and hsv[0, 1, 0, 1] == 0  # black: saturation 0
    hsv[:, 1].sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[..., 1], torch.zeros(1, 3, 1, dtype=x.dtype))  # nothing flows from black
    y = degenerate_rgb().requires_grad_()
    adjust_saturation(y, 1.5, eps=0.0).sum().backward()
    assert torch.isfinite(y.grad).all()


def test_gradients_finite_in_hsv_to_rgb_at_sextant_boundaries():
    hue = torch.arange(7, dtype=torch.float64) * math.pi / 3
    saturation = torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0, 1.0, 0.3], dtype=torch.float64)
    hsv = torch.stack([hue, saturation, torch.full_like(hue, 0.7)])
    hsv = hsv.view(1, 3, 1, 7).requires_grad_()
    hsv_to_rgb(hsv).sum().backward()
    assert torch.isfinite(hsv.grad).all()


# ------------------------------------------------------------------- standard checks


# Hue is ill-conditioned near grey, where a float32 and a float64 hue may differ by any
# amount (test_half_precision compares it where it is well conditioned).
HUE_DEPENDENT = {"rgb_to_hsv", "adjust_hue"}


@pytest.mark.parametrize("name", OPERATORS)
def test_kernel(batch, name, device):
    check_kernel(OPERATORS[name], batch, device=device, low_precision=True, compare_dtypes=name not in HUE_DEPENDENT)


def test_kernel_per_sample_factors(batch, device):
    factor = torch.tensor([0.5, 1.0, 1.5])
    check_kernel(lambda x, f: adjust_saturation(x, f), batch, factor, device=device)
    check_kernel(lambda x, f: adjust_contrast(x, f), batch, factor, device=device)
    check_kernel(lambda x, f: adjust_brightness(x, f), batch, factor - 1.0, device=device)


@pytest.mark.parametrize("name", OPERATORS)
def test_shapes_and_dtypes(batch, name):
    for dtype in (torch.float32, torch.float64):
        x = batch.to(dtype)
        out = OPERATORS[name](x)
        channels = 1 if "grayscale" in name else 3
        assert out.shape == (3, channels, 33, 47) and out.dtype == dtype and out.device == x.device
    # Kornia's (*, C, H, W): a single image and extra leading dimensions.
    out = OPERATORS[name](batch)
    torch.testing.assert_close(OPERATORS[name](batch[0]), out[0], atol=0, rtol=0)
    torch.testing.assert_close(OPERATORS[name](batch.view(1, 3, 3, 33, 47)), out[None], atol=0, rtol=0)


# float16 and bfloat16 compute with 11 and 8 significant bits; the result is compared to the
# float32 computation on the same (rounded) input. The HSV hue, in [0, 2π), loses more
# absolute precision than values in [0, 1] (a few ulp of 2π).
HALF_TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", OPERATORS)
def test_half_precision(batch, name, dtype):
    x = batch.to(dtype)
    out = OPERATORS[name](x)
    assert out.dtype == dtype
    reference = OPERATORS[name](x.float())
    scale = TWO_PI if name == "rgb_to_hsv" else 1.0
    if name == "rgb_to_hsv":
        # Compare hue as an angle, and only where it is well conditioned (chroma not tiny).
        chroma = x.float().amax(1) - x.float().amin(1)
        hue_error = angle_difference(out[:, 0].float(), reference[:, 0])[chroma > 0.05]
        assert hue_error.abs().max() <= HALF_TOLERANCE[dtype] * scale
        out, reference = out[:, 1:], reference[:, 1:]
    torch.testing.assert_close(out.float(), reference, atol=HALF_TOLERANCE[dtype], rtol=0)


def test_meta_device_creates_no_cpu_tensors():
    # Meta tensors carry no data: any operator that built a CPU tensor on the side and
    # combined it with the input would fail here.
    x = torch.empty(2, 3, 8, 9, device="meta")
    for name, fn in OPERATORS.items():
        assert fn(x).device.type == "meta", name
    assert adjust_hue(x, torch.empty(2, device="meta")).device.type == "meta"


def test_per_image_factor_equals_per_sample_calls(batch):
    factors = {
        adjust_brightness: torch.tensor([0.1, -0.2, 0.3]),
        adjust_contrast: torch.tensor([0.5, 1.0, 1.5]),
        adjust_saturation: torch.tensor([0.0, 0.5, 2.0]),
        adjust_hue: torch.tensor([-3.0, 0.5, 3.1]),
    }
    for fn, factor in factors.items():
        together = fn(batch, factor)
        one_by_one = torch.cat([fn(batch[i : i + 1], factor[i].item()) for i in range(3)])
        torch.testing.assert_close(together, one_by_one, atol=1e-6, rtol=0)
        # Kornia's broadcasting: (B, 1, 1, 1) is the same thing.
        torch.testing.assert_close(fn(batch, factor.view(3, 1, 1, 1)), together, atol=0, rtol=0)


def test_grayscale_weights_as_sequence_and_tensor(batch):
    tensor_weights = rgb_to_grayscale(batch, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    torch.testing.assert_close(rgb_to_grayscale(batch, [0.2, 0.3, 0.5]), tensor_weights, atol=1e-6, rtol=0)
    assert tensor_weights.dtype == torch.float32  # weights follow the image
    close(rgb_to_grayscale(batch, torch.tensor([0.299, 0.587, 0.114])), rgb_to_grayscale(batch), atol=1e-6)


# ---------------------------------------------------------------------------- modules


WEIGHTS = [0.2, 0.3, 0.5]
PER_IMAGE = [0.1, 0.2, -0.3]
MODULES = [
    (RgbToGrayscale(), rgb_to_grayscale),
    (RgbToGrayscale(torch.tensor(WEIGHTS)), lambda x: rgb_to_grayscale(x, torch.tensor(WEIGHTS))),
    (BgrToGrayscale(), bgr_to_grayscale),
    (RgbToBgr(), rgb_to_bgr),
    (BgrToRgb(), bgr_to_rgb),
    (RgbToHsv(), rgb_to_hsv),
    (RgbToHsv(eps=1e-3), lambda x: rgb_to_hsv(x, eps=1e-3)),
    (HsvToRgb(), hsv_to_rgb),
    (RgbToYcbcr(), rgb_to_ycbcr),
    (YcbcrToRgb(), ycbcr_to_rgb),
    (AdjustBrightness(0.3), lambda x: adjust_brightness(x, 0.3)),
    (AdjustBrightness(0.3, clip_output=False), lambda x: adjust_brightness(x, 0.3, clip_output=False)),
    (AdjustBrightness(torch.tensor(PER_IMAGE)), lambda x: adjust_brightness(x, torch.tensor(PER_IMAGE))),
    (AdjustContrast(1.4), lambda x: adjust_contrast(x, 1.4)),
    (AdjustContrast(1.4, clip_output=False), lambda x: adjust_contrast(x, 1.4, clip_output=False)),
    (AdjustSaturation(1.6), lambda x: adjust_saturation(x, 1.6)),
    (AdjustSaturation(1.6, eps=1e-3), lambda x: adjust_saturation(x, 1.6, eps=1e-3)),
    (AdjustHue(-1.2), lambda x: adjust_hue(x, -1.2)),
    (AdjustHue(torch.tensor([0.5, -2.0, 3.0])), lambda x: adjust_hue(x, torch.tensor([0.5, -2.0, 3.0]))),
]


MODULE_IDS = [f"{type(module).__name__}-{i}" for i, (module, _) in enumerate(MODULES)]


@pytest.mark.parametrize("module, fn", MODULES, ids=MODULE_IDS)
def test_module_equals_function(batch, module, fn):
    torch.testing.assert_close(module(batch), fn(batch), atol=0, rtol=0)
    assert len(module.state_dict()) == 0  # like Kornia's: nothing to save
    assert torch.equal(torch.nn.Sequential(module)(batch), module(batch))


def test_module_factor_follows_dtype_and_learns(batch):
    module = AdjustHue(torch.tensor([0.5, -2.0, 3.0])).double()
    assert module.hue_factor.dtype == torch.float64
    expected = adjust_hue(batch.double(), torch.tensor([0.5, -2.0, 3.0]))
    close(module(batch.double()), expected, atol=1e-12)
    learnable = AdjustBrightness(torch.nn.Parameter(torch.zeros(3)), clip_output=False)
    assert len(list(learnable.parameters())) == 1
    learnable(batch).sum().backward()
    torch.testing.assert_close(learnable.brightness_factor.grad, torch.full((3,), 3.0 * 33 * 47))


def test_public_names():
    expected = {
        "rgb_to_grayscale", "bgr_to_grayscale", "rgb_to_bgr", "bgr_to_rgb", "rgb_to_hsv", "hsv_to_rgb",
        "rgb_to_ycbcr", "ycbcr_to_rgb", "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue",
        "RgbToGrayscale", "BgrToGrayscale", "RgbToBgr", "BgrToRgb", "RgbToHsv", "HsvToRgb", "RgbToYcbcr",
        "YcbcrToRgb", "AdjustBrightness", "AdjustContrast", "AdjustSaturation", "AdjustHue",
    }  # fmt: skip
    assert set(color.__all__) == expected
    for name in expected:  # Kornia has every one of them, under the same name
        assert hasattr(kornia.color, name) or hasattr(kornia.enhance, name), name


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", OPERATORS)
def test_bad_image(name):
    fn = OPERATORS[name]
    with pytest.raises(ShapeError, match=r"image: expected shape \(\*, (3|C), H, W\), got \(5, 6\)"):
        fn(torch.rand(5, 6))
    with pytest.raises(DTypeError, match=r"image: expected a floating tensor .*got torch.uint8"):
        fn(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ArgumentTypeError, match=r"image: expected a torch.Tensor, got ndarray"):
        fn(np.zeros((1, 3, 4, 4), dtype=np.float32))
    if "brightness" not in name and "contrast" not in name:  # those take any channel count
        with pytest.raises(ShapeError, match=r"image: expected shape \(\*, 3, H, W\), got \(2, 4, 5, 5\)"):
            fn(torch.rand(2, 4, 5, 5))


def test_any_channel_count_for_brightness_and_contrast():
    x = torch.rand(2, 5, 4, 4)
    torch.testing.assert_close(adjust_brightness(x, 0.1), (x + 0.1).clamp(0, 1))
    torch.testing.assert_close(adjust_contrast(x, 0.5), x * 0.5)


@pytest.mark.parametrize("fn", [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue])
def test_bad_factor(batch, fn):
    with pytest.raises(ShapeError, match=r"factor: .*got \(4,\) for image \(3, 3, 33, 47\)"):
        fn(batch, torch.ones(4))  # not one per image
    with pytest.raises(ShapeError, match=r"factor: .*got \(3, 1, 1, 1, 1\)"):
        fn(batch, torch.ones(3, 1, 1, 1, 1))  # more dimensions than the image
    with pytest.raises(ArgumentTypeError, match=r"factor: expected a float or a tensor, got str"):
        fn(batch, "0.5")
    with pytest.raises(ArgumentTypeError, match=r"factor: expected a float or a tensor, got bool"):
        fn(batch, True)
    with pytest.raises(DTypeError, match=r"factor: expected a real tensor, got torch.bool"):
        fn(batch, torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("fn", [adjust_saturation, adjust_hue])
def test_per_channel_factor_rejected_for_saturation_and_hue(batch, fn):
    with pytest.raises(ValueError, match=r"factor: .*size 1 at the channel dimension.*got \(3, 3\)"):
        fn(batch, torch.ones(3, 3))


def test_per_channel_factor_allowed_for_brightness(batch):
    factor = torch.tensor([[0.1, 0.2, 0.3]]).expand(3, 3)
    close(adjust_brightness(batch, factor), (batch + factor[..., None, None]).clamp(0, 1), atol=0)


def test_negative_contrast_rejected(batch):
    with pytest.raises(ArgumentValueError, match=r"factor: expected a non-negative contrast factor, got -0.5"):
        adjust_contrast(batch, -0.5)
    with pytest.raises(ValueError, match=r"factor: .*got nan"):
        adjust_contrast(batch, float("nan"))


def test_bad_grayscale_weights(batch):
    with pytest.raises(ValueError, match=r"rgb_weights: expected shape \(3\), got \(4,\)"):
        rgb_to_grayscale(batch, torch.ones(4))
    with pytest.raises(TypeError, match=r"rgb_weights: expected None, .* or three floats, got \[1.0, 2.0\]"):
        rgb_to_grayscale(batch, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"rgb_weights: expected shape \(3\), got \(4,\)"):
        RgbToGrayscale(torch.ones(4))


# --------------------------------------------------------------------- torch.compile


COMPILED = ["rgb_to_grayscale", "rgb_to_hsv", "hsv_to_rgb", "adjust_saturation", "adjust_hue"]


@pytest.mark.parametrize("name", COMPILED)
def test_compiles_without_graph_breaks(batch, name):
    # aot_eager traces the whole function through dynamo and AOTAutograd (so any graph
    # break or untraceable op fails with fullgraph=True) without spending seconds on codegen.
    fn = OPERATORS[name]
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(batch), fn(batch), atol=1e-6, rtol=0)
