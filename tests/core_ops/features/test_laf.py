"""Tests for core_ops.features.laf: parity with Kornia where the conventions agree, the
pixel convention of normalize_laf and of patch extraction at every pyramid level,
gradients, batching and typed errors.

Tolerances: the LAF algebra is compared to Kornia to 1e-5 in float32 (the same formulas in
another order; Kornia adds 1e-10 to the determinant before the root, far below that).
Patch samples of a linear ramp are exact for bilinear sampling, so the 0.05 px bound of
the issue is checked directly on sample values divided by the ramp's slope.
"""

from __future__ import annotations

import math

import kornia.feature as KF
import pytest
import torch
from torch.autograd import gradcheck

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from gradcv.core_ops.features.laf import (
    denormalize_laf,
    ellipse_to_laf,
    extract_patches_from_pyramid,
    extract_patches_simple,
    generate_patch_grid_from_normalized_LAF,
    get_laf_center,
    get_laf_pts_to_draw,
    get_laf_orientation,
    get_laf_scale,
    laf_from_center_scale_ori,
    laf_from_three_points,
    laf_is_filled,
    laf_is_inside_image,
    laf_is_valid,
    laf_to_boundary_points,
    laf_to_three_points,
    make_upright,
    normalize_laf,
    perspective_transform_lafs,
    rotate_laf,
    scale_laf,
    set_laf_orientation,
)
from gradcv.core_ops.pyramid import build_pyramid
from tests.helpers import ignore_compile_warnings, noncontiguous, to_tensor


def _random_lafs(b: int = 2, n: int = 7, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, n, 2, generator=g, dtype=dtype) * 40 + 5
    scale = torch.rand(b, n, 1, 1, generator=g, dtype=dtype) * 5 + 1
    ori = torch.rand(b, n, 1, generator=g, dtype=dtype) * 360 - 180
    return laf_from_center_scale_ori(xy, scale, ori)


def _random_affine_lafs(b: int = 2, n: int = 7, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(b, n, 2, 2, generator=g, dtype=dtype) * 3, torch.rand(b, n, 2, 1, generator=g, dtype=dtype) * 40], -1)


def _on(device: str, fn, *args, **kwargs):
    """``fn`` on ``device``: tensor arguments moved there, the tensor result(s) back on the CPU."""
    moved = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(*moved, **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
    return tuple(o.cpu() for o in out) if isinstance(out, tuple) else out.cpu()


@pytest.fixture(scope="module")
def gray_crop() -> torch.Tensor:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg
    import numpy as np

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = mpimg.imread(f, format="jpg")
    gray = np.ascontiguousarray(img[100:220, 150:310, :3] @ np.array([0.299, 0.587, 0.114]), dtype=np.float32) / 255.0
    return to_tensor(gray)  # (1, 1, 120, 160)


# ====================================================================== Kornia parity
def test_construction_and_accessors_match_kornia(device):
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(2, 6, 2, generator=g) * 50
    scale = torch.rand(2, 6, 1, 1, generator=g) * 10 + 0.5
    ori = torch.rand(2, 6, 1, generator=g) * 720 - 360
    ours = _on(device, laf_from_center_scale_ori, xy, scale, ori)
    ref = KF.laf_from_center_scale_ori(xy, scale, ori)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_on(device, laf_from_center_scale_ori, xy), KF.laf_from_center_scale_ori(xy))
    torch.testing.assert_close(_on(device, laf_from_center_scale_ori, xy, scale), KF.laf_from_center_scale_ori(xy, scale))
    lafs = _random_affine_lafs()
    torch.testing.assert_close(_on(device, get_laf_scale, lafs), KF.get_laf_scale(lafs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_on(device, get_laf_center, lafs), KF.get_laf_center(lafs))
    torch.testing.assert_close(_on(device, get_laf_orientation, lafs), KF.get_laf_orientation(lafs), atol=1e-4, rtol=1e-5)
    # ori within [-180, 180] reads back exactly.
    torch.testing.assert_close(_on(device, get_laf_orientation, ours), KF.get_laf_orientation(ref), atol=1e-3, rtol=0)


def test_laf_algebra_matches_kornia(device):
    lafs = _random_affine_lafs(seed=3)
    angles = torch.rand(2, 7, 1, generator=torch.Generator().manual_seed(4)) * 300 - 150
    torch.testing.assert_close(_on(device, scale_laf, lafs, 2.5), KF.scale_laf(lafs, 2.5))
    coef = torch.rand(2, 7, 1, 1) + 0.5
    torch.testing.assert_close(_on(device, scale_laf, lafs, coef), KF.scale_laf(lafs, coef))
    torch.testing.assert_close(_on(device, make_upright, lafs), KF.make_upright(lafs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_on(device, rotate_laf, lafs, angles), KF.rotate_laf(lafs, angles), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_on(device, set_laf_orientation, lafs, angles), KF.set_laf_orientation(lafs, angles), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(_on(device, laf_to_boundary_points, lafs), KF.laf_to_boundary_points(lafs), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(_on(device, laf_to_boundary_points, lafs, 7), KF.laf_to_boundary_points(lafs, 7), atol=1e-4, rtol=1e-5)
    three = _on(device, laf_to_three_points, lafs)
    torch.testing.assert_close(three, KF.laf_to_three_points(lafs))
    torch.testing.assert_close(_on(device, laf_from_three_points, three), KF.laf_from_three_points(three))
    torch.testing.assert_close(_on(device, laf_from_three_points, three), lafs, atol=1e-5, rtol=0)
    H = torch.eye(3).repeat(2, 1, 1) + 0.01 * torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(_on(device, perspective_transform_lafs, H, lafs), KF.perspective_transform_lafs(H, lafs), atol=1e-4, rtol=1e-5)
    img = torch.zeros(2, 1, 48, 40)
    torch.testing.assert_close(_on(device, laf_is_inside_image, lafs, img), KF.laf_is_inside_image(lafs, img))
    torch.testing.assert_close(_on(device, laf_is_inside_image, lafs, img, 3), KF.laf_is_inside_image(lafs, img, 3))
    padded = torch.cat([lafs, torch.zeros(2, 1, 2, 3), torch.full((2, 1, 2, 3), float("nan"))], 1)
    torch.testing.assert_close(_on(device, laf_is_valid, padded), KF.laf_is_valid(padded))
    torch.testing.assert_close(_on(device, laf_is_filled, padded), KF.laf_is_filled(padded))
    # the padding LAF stays all-zero through make_upright
    assert torch.equal(_on(device, make_upright, padded)[:, 7], torch.zeros(2, 2, 3))


def test_make_upright_keeps_the_region(device):
    lafs = _random_affine_lafs(dtype=torch.float64, seed=6).to(device)
    up = make_upright(lafs)
    A, U = lafs[..., :2], up[..., :2]
    torch.testing.assert_close(U @ U.transpose(-1, -2), A @ A.transpose(-1, -2), atol=1e-6, rtol=1e-6)
    assert torch.all(U[..., 0, 1] == 0) and torch.all(U[..., 0, 0] > 0) and torch.all(U[..., 1, 1] > 0)
    torch.testing.assert_close(get_laf_orientation(up).cpu(), torch.zeros(2, 7, 1, dtype=torch.float64), atol=1e-9, rtol=0)


def test_ellipse_to_laf_matches_kornia_and_maps_the_unit_circle_onto_the_ellipse(device):
    g = torch.Generator().manual_seed(7)
    M = torch.randn(2, 5, 2, 2, generator=g, dtype=torch.float64)
    S = M @ M.transpose(-1, -2) + 0.1 * torch.eye(2, dtype=torch.float64)
    ells = torch.cat([torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 30, S[..., 0, 0:1], S[..., 0, 1:2], S[..., 1, 1:2]], -1)
    ours = _on(device, ellipse_to_laf, ells)
    torch.testing.assert_close(ours, KF.ellipse_to_laf(ells), atol=1e-9, rtol=1e-9)
    # boundary points u satisfy u^T S u = 1
    pts = laf_to_boundary_points(ours, 9)[:, :, 1:] - ours[:, :, None, :, 2]
    q = torch.einsum("bnpi,bnij,bnpj->bnp", pts, S, pts)
    torch.testing.assert_close(q, torch.ones_like(q), atol=1e-9, rtol=0)


def test_patches_match_kornia_at_level_zero(gray_crop, device):
    """Kornia 0.9 samples the same level-0 positions (c + A u, pixel centres at integers)."""
    img = gray_crop.expand(2, 1, -1, -1).contiguous()
    lafs = _random_lafs(2, 9, seed=8)  # scales 1..6: level 0 for PS=16
    for PS in (16, 11):
        ours = _on(device, extract_patches_simple, img, lafs, PS)
        torch.testing.assert_close(ours, KF.extract_patches_simple(img, lafs, PS), atol=1e-5, rtol=0)
        torch.testing.assert_close(_on(device, extract_patches_from_pyramid, img, lafs, PS), ours, atol=1e-5, rtol=0)
        torch.testing.assert_close(KF.extract_patches_from_pyramid(img, lafs, PS), ours, atol=1e-5, rtol=0)


# ====================================================================== the pixel convention
def test_normalize_laf_is_edge_to_edge_and_round_trips(device):
    img = torch.zeros(1, 1, 12, 20, device=device)
    laf = torch.tensor([[[[6.0, 0.0, -0.5], [0.0, 6.0, -0.5]], [[1.0, 2.0, 19.5], [3.0, 4.0, 11.5]]]], device=device)
    n = normalize_laf(laf, img)
    torch.testing.assert_close(n[0, 0, :, 2].cpu(), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(n[0, 1, :, 2].cpu(), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(n[0, 0, :, :2].cpu(), torch.eye(2) * 0.5)  # A / min(H, W)
    torch.testing.assert_close(denormalize_laf(n, img), laf)
    # The same physical place at twice the resolution: pixel x -> 2 x + 0.5.
    big = denormalize_laf(n, torch.zeros(1, 1, 24, 40, device=device))
    torch.testing.assert_close(big[..., 2], 2 * laf[..., 2] + 0.5)
    torch.testing.assert_close(big[..., :2], 2 * laf[..., :2])
    # extraction from a normalised LAF equals extraction from the pixel LAF
    rimg = torch.rand(1, 1, 12, 20, device=device)
    lafs = _random_lafs(1, 4, seed=9).to(device) / 4
    torch.testing.assert_close(
        extract_patches_from_pyramid(rimg, normalize_laf(lafs, rimg), 8, normalize_lafs_before_extraction=False),
        extract_patches_from_pyramid(rimg, lafs, 8),
        atol=1e-5, rtol=0,
    )


def test_patch_grid_and_drawing_points(device):
    img = torch.rand(2, 3, 30, 26, generator=torch.Generator().manual_seed(21)).to(device)
    lafs = _random_lafs(2, 4, seed=22).to(device) / 2
    grid = generate_patch_grid_from_normalized_LAF(img, normalize_laf(lafs, img), 6)
    assert grid.shape == (8, 6, 6, 2)
    sampled = torch.nn.functional.grid_sample(
        img.repeat_interleave(4, 0), grid, align_corners=False, padding_mode="border"
    ).view(2, 4, 3, 6, 6)
    torch.testing.assert_close(sampled, extract_patches_simple(img, lafs, 6), atol=1e-5, rtol=0)
    x, y = get_laf_pts_to_draw(lafs, 1)
    from kornia.feature.laf import get_laf_pts_to_draw as kornia_pts_to_draw

    ref = kornia_pts_to_draw(lafs.cpu(), 1)
    torch.testing.assert_close(torch.tensor(x), torch.tensor(ref[0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(y), torch.tensor(ref[1]), atol=1e-4, rtol=0)


def test_odd_patch_of_axis_aligned_laf_is_the_crop(device):
    img = torch.rand(1, 2, 20, 24, generator=torch.Generator().manual_seed(10)).to(device)
    PS = 5
    laf = laf_from_center_scale_ori(torch.tensor([[[7.0, 11.0], [15.0, 6.0]]], device=device), torch.full((1, 2, 1, 1), PS / 2, device=device))
    for fn in (extract_patches_simple, extract_patches_from_pyramid):
        patches = fn(img, laf, PS)
        # float32 grid arithmetic: positions to ~1e-5 px
        torch.testing.assert_close(patches[0, 0], img[0, :, 9:14, 5:10], atol=1e-5, rtol=0)
        torch.testing.assert_close(patches[0, 1], img[0, :, 4:9, 13:18], atol=1e-5, rtol=0)


@pytest.mark.parametrize("PS", [9, 8])
def test_patch_centre_is_the_keypoint_at_every_pyramid_level(PS, device):
    """The issue's test: the centre of a patch extracted at any level is the keypoint, to 0.05 px.

    The image is a ramp ``f = 3 x + 5 y``; pyrdown keeps a ramp a ramp away from the border
    (the binomial kernel is symmetric), so a sample value reads back its position. Kornia's
    map between levels, ``(x + 0.5) / 2**l - 0.5``, would be off by ``0.5 (2**l - 1)`` px.
    """
    h, w = 120, 160
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    img = (3 * xs + 5 * ys)[None, None].to(device)
    n_levels = len(build_pyramid(img, 4))
    assert min(build_pyramid(img, 4)[-1].shape[-2:]) >= PS
    g = torch.Generator().manual_seed(11)
    n = 6
    for level in range(n_levels):
        xy = torch.stack([torch.rand(1, n, generator=g, dtype=torch.float64) * 40 + 60,
                          torch.rand(1, n, generator=g, dtype=torch.float64) * 20 + 50], -1)
        scale = torch.full((1, n, 1, 1), PS / 2 * 2**level * 1.4, dtype=torch.float64)
        ori = torch.rand(1, n, 1, generator=g, dtype=torch.float64) * 360
        lafs = laf_from_center_scale_ori(xy, scale, ori)
        patches = extract_patches_from_pyramid(img, lafs.to(device), PS)[:, :, 0].cpu()
        if PS % 2:
            centre = patches[..., PS // 2, PS // 2]
        else:
            centre = patches[..., PS // 2 - 1 : PS // 2 + 1, PS // 2 - 1 : PS // 2 + 1].mean((-1, -2))
        # position error along the ramp's gradient direction, in pixels
        err = (centre - (3 * xy[..., 0] + 5 * xy[..., 1])).abs() / math.hypot(3, 5)
        assert err.max() < 0.05, (level, err)
        # and every cell away from the border (where reflection bends the ramp) is at c + A u
        u = (2 * torch.arange(PS, dtype=torch.float64) + 1) / PS - 1
        px = lafs[..., 0, 2, None, None] + lafs[..., 0, 0, None, None] * u + lafs[..., 0, 1, None, None] * u[:, None]
        py = lafs[..., 1, 2, None, None] + lafs[..., 1, 0, None, None] * u + lafs[..., 1, 1, None, None] * u[:, None]
        inner = (px > 32) & (px < w - 33) & (py > 32) & (py < h - 33)
        assert inner.sum() > n * PS
        assert ((patches - (3 * px + 5 * py)).abs()[inner] / math.hypot(3, 5)).max() < 0.05


def test_coarse_level_patch_is_the_pyramid_level_crop(gray_crop, device):
    """A LAF at level 1 or 2 reads that pyrdown level's pixels at ``c / 2**l``."""
    img = gray_crop.to(device)
    levels = build_pyramid(img, 3)
    PS = 5
    for lev in (1, 2):
        f = 2**lev
        c = torch.tensor([[[10.0 * f, 8.0 * f]]], device=device)
        # cell spacing of one level pixel: 2 s / PS = 2**lev
        laf = laf_from_center_scale_ori(c, torch.full((1, 1, 1, 1), PS / 2 * f, device=device))
        patch = extract_patches_from_pyramid(img, laf, PS)[0, 0]
        torch.testing.assert_close(patch, levels[lev][0, :, 6:11, 8:13], atol=1e-5, rtol=0)


def test_border_samples_replicate_the_level_border(device):
    img = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(12)).to(device)
    laf = laf_from_center_scale_ori(torch.tensor([[[0.0, 0.0]]], device=device), torch.full((1, 1, 1, 1), 2.5, device=device))
    patch = extract_patches_from_pyramid(img, laf, 5)[0, 0, 0]
    torch.testing.assert_close(patch[:3, :3], img[0, 0, 0, 0].expand(3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(patch[2, 2:], img[0, 0, 0, :3], atol=1e-6, rtol=0)
    # at a coarse level the border is that level's border, not the neighbour in the atlas
    big = laf_from_center_scale_ori(torch.tensor([[[39.0, 39.0]]], device=device), torch.full((1, 1, 1, 1), 10.0, device=device))
    lev = build_pyramid(img, 3)[2]
    patch = extract_patches_from_pyramid(img, big, 5)[0, 0, 0]
    torch.testing.assert_close(patch[2:, 2:], lev[0, 0, -1, -1].expand(3, 3), atol=1e-6, rtol=0)


# ====================================================================== batching, dtypes, gradients
def test_batched_equals_per_sample_noncontiguous_and_dtypes(gray_crop, device):
    img = torch.cat([gray_crop, gray_crop.flip(-1)]).to(device)
    lafs = (_random_lafs(2, 5, seed=13) * torch.tensor([1.0, 1.0, 2.0]) * 2).to(device)  # mixed levels, centres x up to 90
    out = extract_patches_from_pyramid(img, lafs, 12)
    assert out.shape == (2, 5, 1, 12, 12) and out.dtype == torch.float32 and out.is_contiguous()
    per = torch.cat([extract_patches_from_pyramid(img[i : i + 1], lafs[i : i + 1], 12) for i in range(2)])
    torch.testing.assert_close(out, per, atol=1e-6, rtol=0)
    torch.testing.assert_close(extract_patches_from_pyramid(noncontiguous(img), lafs, 12), out, atol=1e-6, rtol=0)
    torch.testing.assert_close(extract_patches_from_pyramid(img, noncontiguous(lafs), 12), out, atol=1e-6, rtol=0)
    out64 = extract_patches_from_pyramid(img.double(), lafs.double(), 12)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, atol=1e-5, rtol=0)
    before = lafs.clone()
    extract_patches_from_pyramid(img, lafs, 12)
    assert torch.equal(before, lafs)
    # multi-channel: each channel is sampled at the same positions
    rgb = torch.cat([img, 2 * img, img.flip(-2)], 1)
    o3 = extract_patches_from_pyramid(rgb, lafs, 12)
    torch.testing.assert_close(o3[:, :, 1], 2 * out[:, :, 0], atol=1e-5, rtol=0)


def test_chunked_sampling_equals_one_chunk(monkeypatch, gray_crop, device):
    """Keypoints are sampled in chunks of bounded grid memory: values and gradients unchanged."""
    import gradcv.core_ops.features.laf as laf_module

    img = torch.cat([gray_crop, gray_crop.flip(-2)]).to(device, torch.float64).requires_grad_(True)
    lafs = (_random_lafs(2, 11, torch.float64, seed=20) * torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64) * 2).to(device).requires_grad_(True)
    whole = extract_patches_from_pyramid(img, lafs, 7)
    g_img, g_laf = torch.autograd.grad((whole * whole).sum(), (img, lafs))
    monkeypatch.setattr(laf_module, "_GRID_BYTES", 2 * 7 * 7 * 2 * 8 * 3)  # 3 keypoints per chunk
    chunked = extract_patches_from_pyramid(img, lafs, 7)
    c_img, c_laf = torch.autograd.grad((chunked * chunked).sum(), (img, lafs))
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=0)
    torch.testing.assert_close(c_img, g_img, atol=1e-10, rtol=0)
    torch.testing.assert_close(c_laf, g_laf, atol=1e-10, rtol=0)
    with torch.no_grad():  # the in-place clamp of the no-gradient path
        torch.testing.assert_close(extract_patches_from_pyramid(img, lafs, 7), whole.detach(), atol=1e-12, rtol=0)


def test_empty_and_invalid_lafs(device):
    img = torch.rand(2, 1, 30, 30, device=device, requires_grad=True)
    empty = extract_patches_from_pyramid(img, torch.zeros(2, 0, 2, 3, device=device), 8)
    assert empty.shape == (2, 0, 1, 8, 8)
    empty.sum().backward()
    assert img.grad is not None
    assert extract_patches_simple(img[:0], torch.zeros(0, 3, 2, 3, device=device), 8).shape == (0, 3, 1, 8, 8)
    lafs = _random_lafs(2, 3, seed=14).to(device) / 2
    lafs[0, 1, 0, 2] = float("nan")
    lafs[1, 2, 1, 1] = float("inf")
    img.grad = None
    out = extract_patches_from_pyramid(img, lafs, 8)
    assert torch.isfinite(out).all()
    assert torch.all(out[0, 1] == 0) and torch.all(out[1, 2] == 0) and out[0, 0].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(img.grad).all()


def test_gradcheck_patches_from_pyramid(device):
    g = torch.Generator().manual_seed(15)
    img = torch.rand(1, 1, 20, 22, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    # scale 2.1 -> level 0; 6.3 -> level 1 (PS = 5); generic angles keep samples off pixel grid lines
    lafs = laf_from_center_scale_ori(
        torch.tensor([[[7.3, 8.6], [10.2, 9.7]]], dtype=torch.float64, device=device),
        torch.tensor([2.1, 6.3], dtype=torch.float64, device=device).view(1, 2, 1, 1),
        torch.tensor([[[17.0], [-33.0]]], dtype=torch.float64, device=device),
    ).requires_grad_(True)
    assert gradcheck(lambda i, l: extract_patches_from_pyramid(i, l, 5), (img, lafs), fast_mode=False)
    assert gradcheck(lambda i, l: extract_patches_simple(i, l, 4), (img, lafs), fast_mode=False)


def test_gradcheck_laf_algebra(device):
    lafs = _random_affine_lafs(1, 3, torch.float64, seed=16).to(device).requires_grad_(True)
    for fn in (get_laf_scale, get_laf_orientation, make_upright, lambda x: laf_to_boundary_points(x, 6),
               lambda x: normalize_laf(x, torch.zeros(1, 1, 9, 13, device=device))):
        assert gradcheck(fn, (lafs,), fast_mode=False)
    g = torch.Generator().manual_seed(17)
    xy = torch.rand(1, 3, 2, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    s = (torch.rand(1, 3, 1, 1, generator=g, dtype=torch.float64) + 1).to(device).requires_grad_(True)
    o = (torch.rand(1, 3, 1, generator=g, dtype=torch.float64) * 90).to(device).requires_grad_(True)
    assert gradcheck(laf_from_center_scale_ori, (xy, s, o), fast_mode=False)
    ells = torch.tensor([[[1.0, 2.0, 0.5, 0.1, 0.3]]], dtype=torch.float64, device=device, requires_grad=True)
    assert gradcheck(ellipse_to_laf, (ells,), fast_mode=False)


def test_degenerate_laf_gradients_are_finite(device):
    z = torch.zeros(1, 2, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    (get_laf_scale(z).sum() + make_upright(z).sum()).backward()
    assert torch.isfinite(z.grad).all()
    assert torch.equal(get_laf_scale(z).cpu(), torch.zeros(1, 2, 1, 1, dtype=torch.float64))



# ====================================================================== bad input
def test_bad_input_raises_typed_errors():
    img = torch.rand(1, 1, 20, 20)
    good = _random_lafs(1, 2)
    with pytest.raises(ShapeError) as e:
        get_laf_scale(torch.zeros(1, 2, 3, 3))
    assert e.value.name == "LAF"
    with pytest.raises(ShapeError) as e:
        extract_patches_from_pyramid(img, torch.zeros(2, 3), 8)
    assert e.value.name == "laf"
    with pytest.raises(ShapeError) as e:
        extract_patches_from_pyramid(img, torch.zeros(2, 3, 2, 3), 8)
    assert e.value.name == "laf"  # batch size differs from img's
    with pytest.raises(ShapeError) as e:
        extract_patches_from_pyramid(torch.rand(20, 20), good, 8)
    assert e.value.name == "img"
    with pytest.raises(DTypeError) as e:
        extract_patches_from_pyramid(img, good.long(), 8)
    assert e.value.name == "laf"
    with pytest.raises(DTypeError) as e:
        extract_patches_simple(img.to(torch.uint8), good, 8)
    assert e.value.name == "img"
    with pytest.raises(ArgumentValueError) as e:
        extract_patches_from_pyramid(img, good, 0)
    assert e.value.name == "PS"
    with pytest.raises(ArgumentTypeError) as e:
        extract_patches_from_pyramid(img, good, 8, normalize_lafs_before_extraction=1)
    assert e.value.name == "normalize_lafs_before_extraction"
    with pytest.raises(ArgumentTypeError) as e:
        scale_laf(good, "2")
    assert e.value.name == "scale_coef"
    with pytest.raises(ShapeError) as e:
        laf_from_center_scale_ori(torch.zeros(1, 2, 3))
    assert e.value.name == "xy"
    with pytest.raises(ShapeError) as e:
        laf_from_center_scale_ori(torch.zeros(1, 2, 2), torch.ones(1, 2, 1))
    assert e.value.name == "scale"
    with pytest.raises(ShapeError) as e:
        rotate_laf(good, torch.zeros(1, 3, 1))
    assert e.value.name == "angles_degrees"
    with pytest.raises(ShapeError) as e:
        ellipse_to_laf(torch.zeros(1, 2, 4))
    assert e.value.name == "ells"
    with pytest.raises(ArgumentTypeError):
        get_laf_center([[1.0]])


def test_half_precision_and_device(device):
    """float16 images are sampled in float32 and returned in float16; the LAF may live elsewhere."""
    g = torch.Generator().manual_seed(18)
    img = torch.rand(1, 1, 40, 48, generator=g)
    lafs = _random_lafs(1, 6, seed=19)
    ref = extract_patches_from_pyramid(img, lafs, 9)
    out = extract_patches_from_pyramid(img.to(device, torch.float16), lafs, 9)
    assert out.dtype == torch.float16 and out.device.type == torch.device(device).type
    torch.testing.assert_close(out.float().cpu(), ref, atol=2e-3, rtol=0)  # float16 rounding of values in [0, 1]
    torch.testing.assert_close(extract_patches_simple(img.to(device), lafs.to(device), 9).cpu(),
                               extract_patches_simple(img, lafs, 9), atol=1e-5, rtol=0)


@ignore_compile_warnings
def test_compiles_without_graph_breaks():
    # aot_eager traces through dynamo and AOTAutograd (any graph break fails with fullgraph=True)
    # without spending seconds on codegen.
    g = torch.Generator().manual_seed(23)
    img = torch.rand(1, 1, 64, 80, generator=g)
    lafs = laf_from_center_scale_ori(torch.rand(1, 12, 2, generator=g) * 60, torch.rand(1, 12, 1, 1, generator=g) * 20 + 2)
    fn = torch.compile(lambda i, l: extract_patches_from_pyramid(i, l, 8), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(img, lafs), extract_patches_from_pyramid(img, lafs, 8), atol=1e-5, rtol=0)
