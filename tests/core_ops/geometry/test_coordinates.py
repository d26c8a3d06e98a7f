"""Tests for core_ops.geometry.coordinates: the pixel <-> normalised convention of DESIGN.md.

Pixel centres sit at integers and normalised coordinates span [-1, 1] edge to edge
(``u = (2x + 1) / W - 1``, grid_sample's ``align_corners=False``). The tests pin the
formulas on hand-computed values, the round trips, agreement with ``grid_sample`` (the
consumer of normalised coordinates), agreement with Kornia's ``align_corners=False``
matrices, and the property the convention exists for: a normalised point or homography
means the same place at every pyramid level.

Tolerances: float64 round trips are exact to a few ulps (1e-12 on values up to 1e3);
float32 ones to ``4 eps32 * max|value|``.
"""

from __future__ import annotations

import cv2
import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from gradcv.core_ops.errors import GradcvError
from gradcv.core_ops.geometry.coordinates import (
    denormal_transform_pixel,
    denormalize_homography,
    denormalize_pixel_coordinates,
    denormalize_pixel_coordinates3d,
    normal_transform_pixel,
    normalize_homography,
    normalize_pixel_coordinates,
    normalize_pixel_coordinates3d,
)
from gradcv.core_ops.geometry.transform import warp_perspective
from tests._kernel_check import check_kernel
from tests.core_ops.geometry import _kernel_samples as samples
from tests.helpers import to_numpy, to_tensor

F32_EPS = float(torch.finfo(torch.float32).eps)
SIZES = [(1, 1), (1, 7), (5, 1), (4, 6), (7, 5), (257, 233), (600, 512)]


def random_homography(gen: torch.Generator, batch: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Near-identity homographies (a few per cent of shear, scale and perspective)."""
    size = torch.tensor([[0.05, 0.05, 0.1], [0.05, 0.05, 0.1], [0.05, 0.05, 0.0]], dtype=dtype)
    noise = torch.randn(batch, 3, 3, generator=gen, dtype=dtype) * size
    return torch.eye(3, dtype=dtype) + noise


# ============================================================== formulas and round trips
@pytest.mark.parametrize("height, width", SIZES)
def test_normalize_maps_pixel_edges_and_centres(height, width):
    edges = [[-0.5, -0.5], [width - 0.5, height - 0.5]]
    centres = [[0.0, 0.0], [width - 1.0, height - 1.0], [(width - 1) / 2, (height - 1) / 2]]
    points = torch.tensor(edges + centres, dtype=torch.float64)
    expected = torch.tensor(
        [[-1.0, -1.0], [1.0, 1.0], [1 / width - 1, 1 / height - 1], [1 - 1 / width, 1 - 1 / height], [0.0, 0.0]],
        dtype=torch.float64,
    )
    got = normalize_pixel_coordinates(points, height, width)
    torch.testing.assert_close(got, expected, atol=1e-15, rtol=0)
    torch.testing.assert_close(denormalize_pixel_coordinates(expected, height, width), points, atol=1e-12, rtol=0)


def test_normalize_is_not_kornias_corner_aligned_map():
    """The one place gradcv and Kornia differ on purpose: Kornia sends pixel 0 to -1."""
    p = torch.tensor([[0.0, 0.0]])
    assert torch.equal(kornia.geometry.conversions.normalize_pixel_coordinates(p, 4, 8), torch.tensor([[-1.0, -1.0]]))
    assert torch.equal(normalize_pixel_coordinates(p, 4, 8), torch.tensor([[-0.875, -0.75]]))


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 4 * F32_EPS * 700)])
@pytest.mark.parametrize("height, width", SIZES)
def test_round_trips(dtype, atol, height, width):
    gen = torch.Generator().manual_seed(height * 1000 + width)
    pix = (torch.rand(3, 11, 2, generator=gen, dtype=dtype) * 1.4 - 0.2) * torch.tensor([width, height], dtype=dtype)
    norm = normalize_pixel_coordinates(pix, height, width)
    torch.testing.assert_close(denormalize_pixel_coordinates(norm, height, width), pix, atol=atol, rtol=0)
    u = torch.rand(5, 2, generator=gen, dtype=dtype) * 3 - 1.5  # inside and outside [-1, 1]
    back = normalize_pixel_coordinates(denormalize_pixel_coordinates(u, height, width), height, width)
    torch.testing.assert_close(back, u, atol=atol, rtol=0)
    vox = torch.rand(4, 3, generator=gen, dtype=dtype) * torch.tensor([width, height, 3], dtype=dtype)
    back = denormalize_pixel_coordinates3d(normalize_pixel_coordinates3d(vox, 3, height, width), 3, height, width)
    torch.testing.assert_close(back, vox, atol=atol, rtol=0)


def test_normalize_3d_formula_and_component_order():
    depth, height, width = 4, 2, 5
    vox = torch.tensor([[0.0, 1.0, 3.0], [-0.5, -0.5, 3.5]], dtype=torch.float64)  # (x, y, z)
    expected = torch.tensor([[1 / 5 - 1, 0.5, 0.75], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(normalize_pixel_coordinates3d(vox, depth, height, width), expected, atol=1e-15, rtol=0)


def test_integer_points_give_default_float():
    out = normalize_pixel_coordinates(torch.tensor([[1, 2]]), 4, 4)
    assert out.dtype == torch.get_default_dtype()
    torch.testing.assert_close(out, torch.tensor([[-0.25, 0.25]]))


# ===================================================== agreement with grid_sample (2-D, 3-D)
def test_grid_sample_reads_normalised_pixel_centres():
    """The values grid_sample returns at normalised pixel centres are those pixels."""
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(1, 2, 7, 9, generator=gen, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(7.0, dtype=torch.float64), torch.arange(9.0, dtype=torch.float64), indexing="ij")
    grid = normalize_pixel_coordinates(torch.stack((xs, ys), -1), 7, 9)[None]
    out = F.grid_sample(img, grid, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, img, atol=1e-14, rtol=0)


def test_grid_sample_3d_reads_xyz_order():
    gen = torch.Generator().manual_seed(2)
    vol = torch.rand(1, 1, 3, 4, 5, generator=gen, dtype=torch.float64)  # (D, H, W) = (3, 4, 5)
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (3, 4, 5)), indexing="ij")
    grid = normalize_pixel_coordinates3d(torch.stack((x, y, z), -1), 3, 4, 5)[None]
    out = F.grid_sample(vol, grid, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, vol, atol=1e-14, rtol=0)


# ================================================================== matrices
@pytest.mark.parametrize("height, width", SIZES)
def test_normal_transform_pixel_matches_point_maps_and_inverse(height, width):
    N = normal_transform_pixel(height, width, dtype=torch.float64)
    D = denormal_transform_pixel(height, width, dtype=torch.float64)
    assert N.shape == (1, 3, 3) and D.shape == (1, 3, 3)
    torch.testing.assert_close(N @ D, torch.eye(3, dtype=torch.float64)[None], atol=1e-13, rtol=0)
    pts = torch.tensor([[0.0, 0.0], [width - 1.0, 0.5], [2.5, height + 3.0]], dtype=torch.float64)
    homog = torch.cat((pts, torch.ones(3, 1, dtype=torch.float64)), -1)
    torch.testing.assert_close((homog @ N[0].T)[:, :2], normalize_pixel_coordinates(pts, height, width), atol=1e-13, rtol=0)


@pytest.mark.parametrize("height, width", [(4, 6), (7, 5), (1, 3)])
def test_normal_transform_pixel_equals_kornias_align_corners_false(height, width):
    ours = normal_transform_pixel(height, width, dtype=torch.float64)
    ref = kornia.geometry.conversions.normal_transform_pixel(height, width, dtype=torch.float64, align_corners=False)
    torch.testing.assert_close(ours, ref, atol=1e-15, rtol=0)


def test_normal_transform_pixel_dtype_device_defaults():
    assert normal_transform_pixel(3, 4).dtype == torch.get_default_dtype()
    assert denormal_transform_pixel(3, 4, device="cpu", dtype=torch.float64).dtype == torch.float64


def test_normalize_homography_definition_and_round_trip():
    gen = torch.Generator().manual_seed(3)
    pixel_scale = torch.tensor([[1.0, 1.0, 20.0], [1.0, 1.0, 20.0], [1e-3, 1e-3, 1.0]], dtype=torch.float64)
    H = random_homography(gen, batch=4) * pixel_scale
    src, dst = (30, 41), (17, 64)
    Ns = normal_transform_pixel(*src, dtype=torch.float64)
    Nd = normal_transform_pixel(*dst, dtype=torch.float64)
    Hn = normalize_homography(H, src, dst)
    torch.testing.assert_close(Hn, Nd @ H @ torch.linalg.inv(Ns), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(denormalize_homography(Hn, src, dst), H, atol=1e-10, rtol=1e-12)
    ref = kornia.geometry.conversions.normalize_homography(H, src, dst, align_corners=False)
    torch.testing.assert_close(Hn, ref, atol=1e-12, rtol=1e-12)
    assert normalize_homography(H[0], src, dst).shape == (3, 3)  # the leading shape is kept


def test_identity_homography_stays_exact():
    eye = torch.eye(3)[None]
    assert torch.equal(normalize_homography(eye, (37, 53), (37, 53)), eye)
    assert torch.equal(denormalize_homography(eye, (37, 53), (37, 53)), eye)


def test_pixel_translation_is_2_over_W_normalised():
    H = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    Hn = normalize_homography(H, (10, 8), (10, 8))
    torch.testing.assert_close(Hn[:2, 2], torch.tensor([2 * 2 / 8, -3 * 2 / 10], dtype=torch.float64), atol=1e-15, rtol=0)


# ===================================================== the same place at every pyramid level
@pytest.mark.parametrize("height, width", [(64, 48), (36, 100)])
def test_half_size_pixel_maps_to_same_normalised_point(height, width):
    """Pixel x of a half-size level covers pixels 2x and 2x+1 of the full level: centre 2x + 0.5."""
    gen = torch.Generator().manual_seed(4)
    half = torch.rand(50, 2, generator=gen, dtype=torch.float64) * torch.tensor([width / 2, height / 2], dtype=torch.float64)
    full = 2 * half + 0.5
    got = normalize_pixel_coordinates(half, height // 2, width // 2)
    torch.testing.assert_close(got, normalize_pixel_coordinates(full, height, width), atol=1e-14, rtol=0)


def test_normalised_homography_moves_a_point_to_the_same_place_at_every_level():
    gen = torch.Generator().manual_seed(5)
    Hn = random_homography(gen, batch=3)
    u = torch.rand(3, 20, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    uh = torch.cat((u, torch.ones(3, 20, 1, dtype=torch.float64)), -1) @ Hn.transpose(1, 2)
    expected = uh[..., :2] / uh[..., 2:]
    for level in range(4):
        size = (480 >> level, 640 >> level)
        H = denormalize_homography(Hn, size, size)
        p = denormalize_pixel_coordinates(u, *size)
        ph = torch.cat((p, torch.ones(3, 20, 1, dtype=torch.float64)), -1) @ H.transpose(1, 2)
        got = normalize_pixel_coordinates(ph[..., :2] / ph[..., 2:], *size)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_normalised_identity_warp_to_half_size_is_2x2_area_average(photos):
    """Warping by the normalised identity into a half-size image samples at 2x + 0.5:
    bilinear there is the mean of a 2 x 2 block, ``cv2.resize(INTER_AREA)``. A
    corner-aligned convention (Kornia's default) samples elsewhere and fails this."""
    img = photos[1][:400, :600]  # even sizes
    x = to_tensor(img, torch.float64)
    size = (200, 300)
    H = denormalize_homography(torch.eye(3, dtype=torch.float64)[None], (400, 600), size)
    out = warp_perspective(x, H, size)
    torch.testing.assert_close(out, F.avg_pool2d(x, 2), atol=1e-12, rtol=0)
    ref = cv2.resize(img, (300, 200), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(to_numpy(out), ref, atol=1e-6, rtol=0)


def test_normalised_translation_carries_between_levels_exactly(photos):
    """A normalised shift of 4/W is 2 pixels at full size and 1 pixel at half size: the
    half-size warp of the 2 x 2-averaged image equals the average of the full-size warp."""
    x = to_tensor(photos[0][:512, :512], torch.float64)
    Hn = torch.tensor([[[1.0, 0.0, 4 / 512], [0.0, 1.0, -8 / 512], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    full = warp_perspective(x, denormalize_homography(Hn, (512, 512), (512, 512)), (512, 512))
    half_in = F.avg_pool2d(x, 2)
    half = warp_perspective(half_in, denormalize_homography(Hn, (256, 256), (256, 256)), (256, 256))
    torch.testing.assert_close(F.avg_pool2d(full, 2), half, atol=1e-12, rtol=0)


# ================================================================== gradients, errors
def test_gradcheck():
    gen = torch.Generator().manual_seed(6)
    p = torch.rand(2, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: normalize_pixel_coordinates(t, 5, 7), (p,), fast_mode=False)
    assert gradcheck(lambda t: denormalize_pixel_coordinates(t, 5, 7), (p,), fast_mode=False)
    H = random_homography(gen, batch=2).requires_grad_(True)
    assert gradcheck(lambda t: normalize_homography(t, (5, 7), (9, 4)), (H,), fast_mode=False)


BAD_INPUT = [
    (lambda: normalize_pixel_coordinates([[0.0, 0.0]], 3, 3), TypeError, "pixel_coordinates"),
    (lambda: normalize_pixel_coordinates(torch.zeros(3, 3), 3, 3), ValueError, "pixel_coordinates"),
    (lambda: denormalize_pixel_coordinates(torch.zeros(3), 3, 3), ValueError, "pixel_coordinates"),
    (lambda: normalize_pixel_coordinates(torch.zeros(1, 2), 0, 3), ValueError, "height"),
    (lambda: normalize_pixel_coordinates(torch.zeros(1, 2), 3, 2.5), TypeError, "width"),
    (lambda: normalize_pixel_coordinates3d(torch.zeros(1, 2), 3, 3, 3), ValueError, "pixel_coordinates"),
    (lambda: denormalize_pixel_coordinates3d(torch.zeros(1, 3), -1, 3, 3), ValueError, "depth"),
    (lambda: normal_transform_pixel(0, 3), ValueError, "height"),
    (lambda: normal_transform_pixel(3, 3, dtype=torch.int64), TypeError, "dtype"),
    (lambda: normalize_homography(torch.zeros(2, 3), (3, 3), (3, 3)), ValueError, "dst_pix_trans_src_pix"),
    (lambda: normalize_homography(torch.zeros(3, 3, dtype=torch.int64), (3, 3), (3, 3)), TypeError, "dst_pix_trans_src_pix"),
    (lambda: normalize_homography(torch.eye(3), (3,), (3, 3)), TypeError, "dsize_src"),
    (lambda: denormalize_homography(torch.eye(3), (3, 3), (3, 0)), ValueError, r"dsize_dst\[1\]"),
    (lambda: denormalize_homography(torch.eye(4), (3, 3), (3, 3)), ValueError, "dst_norm_trans_src_norm"),
]


@pytest.mark.parametrize("call, error, argument", BAD_INPUT, ids=[f"{i}-{a}" for i, (_, _, a) in enumerate(BAD_INPUT)])
def test_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch


# ------------------------------------------------------------------- kernel check
# normal_transform_pixel and denormal_transform_pixel take sizes, not tensors: nothing to batch.
KERNEL_CASES = {
    "normalize_pixel_coordinates": (lambda p: normalize_pixel_coordinates(p, 9, 11), samples.points()),
    "denormalize_pixel_coordinates": (lambda p: denormalize_pixel_coordinates(p, 9, 11), samples.points(scale=1.0)),
    "normalize_pixel_coordinates3d": (lambda p: normalize_pixel_coordinates3d(p, 5, 9, 11), samples.points(d=3)),
    "denormalize_pixel_coordinates3d": (
        lambda p: denormalize_pixel_coordinates3d(p, 5, 9, 11), samples.points(d=3, scale=1.0),
    ),
    "normalize_homography": (lambda H: normalize_homography(H, (9, 11), (7, 8)), samples.homography()),
    "denormalize_homography": (lambda H: denormalize_homography(H, (9, 11), (7, 8)), samples.homography(strength=0.01)),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, x = KERNEL_CASES[name]
    check_kernel(fn, x, device=device, low_precision=True, degenerate=())
