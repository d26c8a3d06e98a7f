"""Tests for core_ops.geometry.warpers: homography and depth warps.

References: :func:`~core_ops.geometry.imgwarp.warp_perspective` (itself tested against
OpenCV) for the same homography in pixels; Kornia 0.9's ``homography_warp`` (same
normalised convention with ``align_corners=False``) and ``DepthWarper`` (same pixel
convention); and the required cross-check: on a scene that is one plane, the
plane-induced homography ``H = K_s (R - t n^T / d) K_r^-1`` warps the source exactly as
the depth warp with the plane's per-pixel depth.

Tolerances: float64 warps of real photographs agree to 1e-10 (measured: 1e-13, rounding
of O(100)-pixel positions). float32 warps agree to 1e-4: ``grid_sample`` resolves a
float32 normalised position only to ``W * 2**-25`` px (see ``_build_base_grid``), times
the largest step of the image (about 1 at an edge against zero padding), and the two
sides build their grids by different float32 operations. The float32 identity warp is
exact for power-of-two sizes and within 1e-6 on a 19 x 23 crop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch.autograd import gradcheck

from gradcv.core_ops.errors import GradcvError
from gradcv.core_ops.geometry import warpers
from gradcv.core_ops.geometry.camera import PinholeCamera
from gradcv.core_ops.geometry.conversions import angle_axis_to_rotation_matrix
from gradcv.core_ops.geometry.coordinates import normal_transform_pixel, normalize_homography
from gradcv.core_ops.geometry.imgwarp import warp_perspective
from gradcv.core_ops.geometry.warpers import DepthWarper, HomographyWarper, depth_warp, homography_warp
from tests.helpers import ignore_compile_warnings, noncontiguous, to_tensor
from tests._kernel_check import check_kernel
from tests.core_ops.geometry import _kernel_samples as samples

F64 = torch.float64
PADDINGS = ["zeros", "border", "reflection"]


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def photo(photos) -> torch.Tensor:
    """An RGB crop of a real photograph, odd size, float64: (1, 3, 57, 71)."""
    return to_tensor(photos[3][40:97, 30:101], F64)


@pytest.fixture(scope="module")
def smooth_photo(photos) -> torch.Tensor:
    """A Gaussian-smoothed (sigma 1.5 px) RGB photograph crop, float64: (1, 3, 70, 90)."""
    img = gaussian_filter(photos[3][100:170, 110:200].astype(np.float64), (1.5, 1.5, 0))
    return to_tensor(img, F64)


def _pixel_homography(seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Mild source-to-destination pixel homographies ``(B, 3, 3)``: a few pixels of shift,
    a few percent of rotation/scale, a little perspective."""
    g = torch.Generator().manual_seed(seed)
    H = torch.eye(3, dtype=F64) + 0.03 * torch.randn(batch, 3, 3, generator=g, dtype=F64)
    H[:, 2, :2] *= 0.01
    H[:, :2, 2] = 4 * torch.randn(batch, 2, generator=g, dtype=F64)
    H[:, 2, 2] = 1
    return H


def _normalised_src_homo_dst(H_pix: torch.Tensor, src_size: tuple[int, int], dsize: tuple[int, int]) -> torch.Tensor:
    """The normalised destination-to-source homography of a source-to-destination pixel one:
    ``N_src H^-1 N_dst^-1``, written out with ``normal_transform_pixel``."""
    N_src = normal_transform_pixel(*src_size, dtype=F64)
    N_dst = normal_transform_pixel(*dsize, dtype=F64)
    return N_src @ torch.linalg.inv(H_pix) @ torch.linalg.inv(N_dst)


# ============================================================ homography warps
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_identity_returns_input(photo, mode):
    h, w = photo.shape[-2:]
    eye = torch.eye(3, dtype=F64)[None]
    torch.testing.assert_close(homography_warp(photo, eye, (h, w), mode=mode), photo, rtol=0, atol=1e-12)
    warper = HomographyWarper(h, w, mode=mode).double()
    torch.testing.assert_close(warper(photo, eye), photo, rtol=0, atol=1e-12)
    # Pixel-coordinate identity.
    torch.testing.assert_close(
        homography_warp(photo, eye, (h, w), mode=mode, normalized_coordinates=False), photo, rtol=0, atol=1e-12
    )
    # float32: exact for power-of-two sizes, within 1e-6 on a small odd crop.
    pow2 = photo[..., :32, :64].float()
    assert torch.equal(homography_warp(pow2, eye.float(), (32, 64), mode=mode), pow2)
    small = photo[..., :19, :23].float()
    torch.testing.assert_close(homography_warp(small, eye.float(), (19, 23), mode=mode), small, rtol=0, atol=1e-6)


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("dtype, atol", [(F64, 1e-10), (torch.float32, 1e-4)])
def test_matches_warp_perspective(photo, padding_mode, mode, dtype, atol):
    """The same warp expressed in pixels (warp_perspective, source to destination) and in
    normalised coordinates (homography_warp, destination to source), output size != input."""
    src_size, dsize = tuple(photo.shape[-2:]), (49, 83)
    H_pix = _pixel_homography(seed=1, batch=2)
    x = torch.cat([photo, photo.flip(-1)]).to(dtype)
    want = warp_perspective(x, H_pix.to(dtype), dsize, mode=mode, padding_mode=padding_mode)
    Hn = _normalised_src_homo_dst(H_pix, src_size, dsize)
    torch.testing.assert_close(Hn, normalize_homography(torch.linalg.inv(H_pix), dsize, src_size), rtol=0, atol=1e-14)
    calls = {
        "normalised": lambda: homography_warp(x, Hn.to(dtype), dsize, mode=mode, padding_mode=padding_mode),
        "pixel": lambda: homography_warp(
            x, torch.linalg.inv(H_pix).to(dtype), dsize, mode=mode, padding_mode=padding_mode, normalized_coordinates=False
        ),
        "src->dst pixel": lambda: homography_warp(
            x, H_pix.to(dtype), dsize, mode=mode, padding_mode=padding_mode, normalized_homography=False
        ),
        "module": lambda: HomographyWarper(*dsize, mode=mode, padding_mode=padding_mode).to(dtype)(x, Hn.to(dtype)),
        "module pixel": lambda: HomographyWarper(*dsize, mode=mode, padding_mode=padding_mode, normalized_coordinates=False)(
            x, torch.linalg.inv(H_pix).to(dtype)
        ),
    }
    for name, call in calls.items():
        got = call()
        assert got.dtype == dtype and got.shape == (2, 3, *dsize), name
        torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_matches_kornia(photo, padding_mode):
    import kornia

    dsize = (49, 83)
    Hn = _normalised_src_homo_dst(_pixel_homography(seed=2), tuple(photo.shape[-2:]), dsize)
    ours = homography_warp(photo, Hn, dsize, padding_mode=padding_mode)
    ref = kornia.geometry.transform.homography_warp(photo, Hn, dsize, padding_mode=padding_mode, align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


def test_normalised_homography_carries_between_pyramid_levels(photo):
    """A normalised homography applied to an image and to its 2x average-pooled copy gives
    the 2x average-pooled warp, up to interpolation error, on a smooth image."""
    img = torch.from_numpy(gaussian_filter(photo[0].numpy(), (0, 3, 3)))[None][..., :56, :70]
    Hn = _normalised_src_homo_dst(_pixel_homography(seed=3), (56, 70), (56, 70))
    big = homography_warp(img, Hn, (56, 70), padding_mode="border")
    small = homography_warp(torch.nn.functional.avg_pool2d(img, 2), Hn, (28, 35), padding_mode="border")
    err = (torch.nn.functional.avg_pool2d(big, 2) - small)[..., 3:-3, 3:-3].abs().max()
    assert err < 0.01, err
    # The same check with a pixel homography reused unchanged fails: it moves 2x too far.
    Hp = torch.linalg.inv(_pixel_homography(seed=3))
    wrong = homography_warp(torch.nn.functional.avg_pool2d(img, 2), Hp, (28, 35), normalized_coordinates=False)
    assert (torch.nn.functional.avg_pool2d(homography_warp(img, Hp, (56, 70), normalized_coordinates=False), 2)
            - wrong)[..., 3:-3, 3:-3].abs().max() > 5 * err  # fmt: skip


def test_base_grid_is_built_once_and_reused(photo, monkeypatch):
    h, w = 13, 17
    warper = HomographyWarper(h, w)
    grid = warper.grid
    assert grid.shape == (1, h, w, 2) and grid.dtype == torch.get_default_dtype()
    torch.testing.assert_close(grid[0, 0, 0], torch.tensor([1 / w - 1, 1 / h - 1]), rtol=0, atol=0)
    H = _normalised_src_homo_dst(_pixel_homography(), tuple(photo.shape[-2:]), (h, w))
    first = warper(photo, H)
    homography_warp(photo, H, (h, w))
    # From now on, building a grid is an error: the module and the function reuse the cached one.
    def rebuilt(*args):
        raise AssertionError("the base grid was rebuilt")

    monkeypatch.setattr(warpers, "_build_base_grid", rebuilt)
    before = warpers._cached_base_grid.cache_info()
    torch.testing.assert_close(warper(photo, H), first, rtol=0, atol=0)
    homography_warp(photo, H, (h, w))
    homography_warp(photo.float(), H.float(), (h, w))
    after = warpers._cached_base_grid.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 3
    assert warper.grid is grid
    assert warpers._base_grid(h, w, photo.device, F64) is warpers._base_grid(h, w, photo.device, F64)


def test_precomputed_grid(photo):
    dsize = (21, 26)
    H_pix = torch.linalg.inv(_pixel_homography(seed=4, batch=2))
    x = torch.cat([photo, photo.flip(-2)])
    Hn = normalize_homography(H_pix, dsize, tuple(photo.shape[-2:]))
    for normalized, H in ((True, Hn), (False, H_pix)):
        warper = HomographyWarper(*dsize, normalized_coordinates=normalized).double()
        with pytest.raises(RuntimeError, match="precompute_warp_grid"):
            warper(x)
        warper.precompute_warp_grid(H)
        torch.testing.assert_close(warper(x), warper(x, H), rtol=0, atol=0)
        torch.testing.assert_close(warper(x), homography_warp(x, Hn, dsize), rtol=0, atol=1e-12)


def test_degenerate_homographies_give_zeros_not_nan(photo):
    """A singular homography and one whose horizon crosses the output: no NaN in values or
    gradients, undefined pixels 0 with every padding mode."""
    x = photo.clone().requires_grad_(True)
    horizon = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]], dtype=F64)  # w = u
    for H in (torch.zeros(1, 3, 3, dtype=F64), horizon):
        H = H.clone().requires_grad_(True)
        for padding_mode in PADDINGS:
            out = homography_warp(x, H, (20, 24), padding_mode=padding_mode)
            assert torch.isfinite(out).all()
            gx, gH = torch.autograd.grad(out.sum(), (x, H))
            assert torch.isfinite(gx).all() and torch.isfinite(gH).all()
            if not H.detach().any():
                assert not out.any()
    # The column whose u is 0 sits on the horizon: blank whatever the padding (24 is even: u = 0 is an edge
    # between two columns, so use an odd width).
    out = homography_warp(photo, horizon, (20, 25), padding_mode="border")
    assert not out[..., 12].any() and out[..., 11].abs().sum() > 0


def test_far_positions_keep_their_side(photo):
    """A translation by 5000 image widths sends everything far outside: border padding still
    returns the right-hand column, as ``grid_sample`` does on the exact positions."""
    shift = torch.eye(3, dtype=F64)[None].clone()
    shift[0, 0, 2] = 1e4
    h, w = photo.shape[-2:]
    got = homography_warp(photo, shift, (h, w), padding_mode="border")
    torch.testing.assert_close(got, photo[..., -1:].expand(-1, -1, -1, w), rtol=0, atol=1e-12)


def test_batches_dtypes_and_input_unchanged(photo):
    x = torch.cat([photo, photo.flip(-1), photo.flip(-2)])
    H = _normalised_src_homo_dst(_pixel_homography(seed=5, batch=3), tuple(photo.shape[-2:]), (30, 40))
    before, H_before = x.clone(), H.clone()
    out = homography_warp(x, H, (30, 40))
    assert torch.equal(x, before) and torch.equal(H, H_before)
    for b in range(3):
        torch.testing.assert_close(homography_warp(x[b : b + 1], H[b : b + 1], (30, 40)), out[b : b + 1], rtol=0, atol=0)
    # One homography for the whole batch; non-contiguous input; empty batch; empty output.
    torch.testing.assert_close(homography_warp(x, H[:1], (30, 40))[1], homography_warp(x[1:2], H[:1], (30, 40))[0])
    torch.testing.assert_close(homography_warp(noncontiguous(x), H, (30, 40)), out, rtol=0, atol=0)
    assert homography_warp(x[:0], H[:0], (30, 40)).shape == (0, 3, 30, 40)
    assert homography_warp(x, H, (0, 40)).shape == (3, 3, 0, 40)
    # float32 and half inputs keep their dtype; float32 agrees with float64.
    out32 = homography_warp(x.float(), H.float(), (30, 40))
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, rtol=0, atol=1e-4)
    out16 = homography_warp(x.to(torch.bfloat16), H, (30, 40))
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.double(), out, rtol=0, atol=2e-2)


def test_gradcheck_homography_warp():
    x = torch.rand(2, 2, 5, 6, dtype=F64, requires_grad=True)
    H = (torch.eye(3, dtype=F64) + 0.1 * torch.randn(2, 3, 3, dtype=F64)).requires_grad_(True)
    for padding_mode in PADDINGS:
        assert gradcheck(lambda a, b: homography_warp(a, b, (4, 7), padding_mode=padding_mode), (x, H), fast_mode=False)


# ================================================================= depth warps
def _pose(axis_angle: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``(B, 4, 4)`` rigid transforms from ``(B, 3)`` angle-axis vectors and translations."""
    R = angle_axis_to_rotation_matrix(axis_angle)
    top = torch.cat((R, translation[..., None]), -1)
    bottom = torch.zeros_like(top[:, :1])
    bottom = torch.cat((bottom[..., :3], torch.ones_like(bottom[..., 3:])), -1)
    return torch.cat((top, bottom), 1)


def _K(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=F64)


def _embed(K: torch.Tensor) -> torch.Tensor:
    K4 = torch.eye(4, dtype=K.dtype).repeat(K.shape[0], 1, 1)
    K4[:, :3, :3] = K
    return K4


def _plane_scene(ref_size=(60, 80)):
    """Reference and source cameras, a relative pose and a tilted plane ``n . X + d = 0``
    about 4 units in front of the reference camera; returns the plane's per-pixel depth in
    the reference view and the induced pixel homography (reference -> source)."""
    Hr, Wr = ref_size
    K_r, K_s = _K(70.0, 72.0, 39.5, 29.5), _K(85.0, 83.0, 44.2, 34.1)
    T = _pose(torch.tensor([[0.03, -0.05, 0.02]], dtype=F64), torch.tensor([[0.3, -0.1, 0.2]], dtype=F64))
    n = torch.tensor([0.1, -0.15, 1.0], dtype=F64)
    n, d = n / n.norm(), -4.0
    ys, xs = torch.meshgrid(torch.arange(Hr, dtype=F64), torch.arange(Wr, dtype=F64), indexing="ij")
    rays = torch.stack((xs, ys, torch.ones_like(xs)), -1) @ torch.linalg.inv(K_r[0]).T
    depth = (-d / (rays @ n))[None, None]  # n . (z r) + d = 0
    R, t = T[0, :3, :3], T[0, :3, 3]
    H = K_s[0] @ (R - t[:, None] @ n[None] / d) @ torch.linalg.inv(K_r[0])
    return K_r, K_s, T, depth, H[None]


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_plane_depth_warp_equals_plane_homography(smooth_photo, padding_mode):
    """The required cross-check: one plane, two routes, the same image (to 1e-5; measured 4e-14)."""
    K_r, K_s, T, depth, H = _plane_scene()
    Hs, Ws = smooth_photo.shape[-2:]
    want = warp_perspective(smooth_photo, torch.linalg.inv(H), (60, 80), padding_mode=padding_mode)
    got, valid = depth_warp(smooth_photo, depth, K_r, K_s, T, padding_mode=padding_mode)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # The mask is the reference pixels that H sends inside the source image, edge to edge.
    ys, xs = torch.meshgrid(torch.arange(60, dtype=F64), torch.arange(80, dtype=F64), indexing="ij")
    q = torch.stack((xs, ys, torch.ones_like(xs)), -1) @ H[0].T
    q = q[..., :2] / q[..., 2:]
    inside = (q[..., 0] >= -0.5) & (q[..., 0] <= Ws - 0.5) & (q[..., 1] >= -0.5) & (q[..., 1] <= Hs - 0.5)
    assert torch.equal(valid[0, 0], inside)
    assert 0.5 < inside.double().mean() < 0.99  # both kinds of pixels are there
    # Kornia's class API with world-to-camera extrinsics (any world frame) gives the same.
    E_ref = _pose(torch.tensor([[0.4, 0.1, -0.3]], dtype=F64), torch.tensor([[1.0, 2.0, -0.5]], dtype=F64))
    E_src = T @ E_ref
    size = lambda h, w: (torch.tensor([float(h)], dtype=F64), torch.tensor([float(w)], dtype=F64))  # noqa: E731
    warper = DepthWarper(PinholeCamera(_embed(K_s), E_src, *size(Hs, Ws)), Hs, Ws, padding_mode=padding_mode)
    warper.compute_projection_matrix(PinholeCamera(_embed(K_r), E_ref, *size(60, 80)))
    torch.testing.assert_close(warper(depth, smooth_photo), want, rtol=0, atol=1e-5)
    got2, valid2 = warper.warp_with_mask(depth, smooth_photo)
    assert torch.equal(valid2, valid)


def test_depth_warper_matches_kornia(smooth_photo):
    """Kornia samples the same pixel positions (its grid is corner-aligned and so is its
    ``grid_sample``); its ``z + 1e-12`` division is the only difference."""
    import kornia

    K_r, K_s, T, depth, _ = _plane_scene()
    img = smooth_photo[..., :60, :80].contiguous()
    E_ref = torch.eye(4, dtype=F64)[None]
    size = torch.tensor([60.0], dtype=F64), torch.tensor([80.0], dtype=F64)
    ours = DepthWarper(PinholeCamera(_embed(K_s), T, *size), 60, 80).compute_projection_matrix(
        PinholeCamera(_embed(K_r), E_ref, *size)
    )
    KP = kornia.geometry.camera.PinholeCamera
    ref = kornia.geometry.depth.DepthWarper(KP(_embed(K_s), T, *size), 60, 80).compute_projection_matrix(
        KP(_embed(K_r), E_ref, *size)
    )
    torch.testing.assert_close(ours(depth, img), ref(depth, img), rtol=0, atol=1e-9)


def test_identity_pose_returns_input(photo):
    K = _K(60.0, 61.0, 35.0, 28.0)
    eye = torch.eye(4, dtype=F64)[None]
    depth = torch.rand(1, 1, *photo.shape[-2:], dtype=F64) + 1
    out, valid = depth_warp(photo, depth, K, K, eye)
    torch.testing.assert_close(out, photo, rtol=0, atol=1e-12)
    assert valid.all()
    out32, _ = depth_warp(photo.float(), depth.float(), K.float(), K.float(), eye.float())
    torch.testing.assert_close(out32, photo.float(), rtol=0, atol=1e-4)


def test_valid_mask_behind_camera_and_outside():
    """The source camera stands 1 unit ahead of the reference one, looking the same way:
    points at depth 0.5 are behind it, and their naive projection (through the centre,
    mirrored) lands inside the image; points at depth 100 are in front and inside; a
    lateral shift of 400 units moves these out of the image (by 16 px)."""
    H, W = 6, 8
    K = _K(4.0, 4.0, 3.5, 2.5)
    img = torch.rand(1, 2, H, W, dtype=F64) + 0.5
    depth = torch.full((1, 1, H, W), 100.0, dtype=F64)
    depth[..., : W // 2] = 0.5
    T = _pose(torch.zeros(1, 3, dtype=F64), torch.tensor([[0.0, 0.0, -1.0]], dtype=F64))
    for padding_mode in PADDINGS:
        out, valid = depth_warp(img, depth, K, K, T, padding_mode=padding_mode)
        assert not valid[..., : W // 2].any() and valid[..., W // 2 :].all()
        assert not out[..., : W // 2].any()  # 0 whatever the padding
        assert (out[..., W // 2 :] > 0).all()
    # The naive projection of the points behind would have been inside the image.
    ys, xs = torch.meshgrid(torch.arange(H, dtype=F64), torch.arange(W // 2, dtype=F64), indexing="ij")
    X = torch.stack(((xs - 3.5) / 4 * 0.5, (ys - 2.5) / 4 * 0.5, torch.full_like(xs, 0.5 - 1.0)), -1)
    naive = 4 * X[..., :2] / X[..., 2:] + torch.tensor([3.5, 2.5], dtype=F64)
    assert ((naive[..., 0] > -0.5) & (naive[..., 0] < W - 0.5) & (naive[..., 1] > -0.5) & (naive[..., 1] < H - 0.5)).all()
    # Outside the image, in front of the camera.
    T_side = _pose(torch.zeros(1, 3, dtype=F64), torch.tensor([[400.0, 0.0, 0.0]], dtype=F64))
    far_depth = torch.full((1, 1, H, W), 100.0, dtype=F64)
    out, valid = depth_warp(img, far_depth, K, K, T_side)
    assert not valid.any() and not out.any()
    out_border, _ = depth_warp(img, far_depth, K, K, T_side, padding_mode="border")
    torch.testing.assert_close(out_border, img[..., -1:].expand(-1, -1, -1, W), rtol=0, atol=1e-12)


def test_gradcheck_depth_warp():
    """Full-mode gradcheck w.r.t. the image, the depth and the pose (angle-axis and translation)."""
    g = torch.Generator().manual_seed(7)
    img = torch.rand(2, 2, 5, 6, generator=g, dtype=F64).requires_grad_(True)
    depth = (2 + torch.rand(2, 1, 5, 6, generator=g, dtype=F64)).requires_grad_(True)
    omega = (0.05 * torch.randn(2, 3, generator=g, dtype=F64)).requires_grad_(True)
    trans = (0.2 * torch.randn(2, 3, generator=g, dtype=F64)).requires_grad_(True)
    K_r, K_s = _K(5.0, 5.5, 2.6, 1.9), _K(6.0, 5.0, 2.4, 2.1)

    def fn(img, depth, omega, trans, padding_mode):
        return depth_warp(img, depth, K_r, K_s, _pose(omega, trans), padding_mode=padding_mode)[0]

    for padding_mode in ("zeros", "border"):
        assert gradcheck(lambda *a: fn(*a, padding_mode), (img, depth, omega, trans), fast_mode=False)
    # And w.r.t. the camera matrices.
    K_r, K_s = K_r.clone().requires_grad_(True), K_s.clone().requires_grad_(True)
    pose = _pose(omega.detach(), trans.detach())
    assert gradcheck(lambda a, b: depth_warp(img.detach(), depth.detach(), a, b, pose)[0], (K_r, K_s), fast_mode=False)


def test_depth_warp_batches_dtypes_and_inputs_unchanged(smooth_photo):
    K_r, K_s, T, depth, _ = _plane_scene()
    g = torch.Generator().manual_seed(3)
    img = torch.cat([smooth_photo, smooth_photo.flip(-1), smooth_photo.flip(-2)])
    depths = depth * (1 + 0.2 * torch.rand(3, 1, 60, 80, generator=g, dtype=F64))
    Ts = T @ _pose(0.02 * torch.randn(3, 3, generator=g, dtype=F64), 0.1 * torch.randn(3, 3, generator=g, dtype=F64))
    inputs = (img, depths, K_r, K_s, Ts)
    before = [t.clone() for t in inputs]
    out, valid = depth_warp(*inputs)
    assert all(torch.equal(a, b) for a, b in zip(inputs, before))
    assert out.shape == (3, 3, 60, 80) and valid.shape == (3, 1, 60, 80) and valid.dtype == torch.bool
    for b in range(3):
        o, v = depth_warp(img[b : b + 1], depths[b : b + 1], K_r, K_s, Ts[b : b + 1])
        torch.testing.assert_close(o, out[b : b + 1], rtol=0, atol=1e-14)
        assert torch.equal(v, valid[b : b + 1])
    # (B, 3, 3) camera matrices; non-contiguous image; empty batch.
    o, _ = depth_warp(img, depths, K_r.expand(3, -1, -1), K_s.expand(3, -1, -1), Ts)
    torch.testing.assert_close(o, out, rtol=0, atol=0)
    torch.testing.assert_close(depth_warp(noncontiguous(img), depths, K_r, K_s, Ts)[0], out, rtol=0, atol=0)
    o, v = depth_warp(img[:0], depths[:0], K_r, K_s, Ts[:0])
    assert o.shape == (0, 3, 60, 80) and v.shape == (0, 1, 60, 80)
    # float32 everything; a float32 image with float64 geometry.
    o32, v32 = depth_warp(img.float(), depths.float(), K_r.float(), K_s.float(), Ts.float())
    assert o32.dtype == torch.float32
    torch.testing.assert_close(o32.double(), out, rtol=0, atol=1e-4)
    assert (v32 != valid).double().mean() < 0.01  # pixels on the image edge may flip
    o_mixed, _ = depth_warp(img.float(), depths, K_r, K_s, Ts)
    assert o_mixed.dtype == torch.float32
    torch.testing.assert_close(o_mixed.double(), out, rtol=0, atol=1e-4)  # the grid is rounded to float32


def test_depth_warper_api():
    K = _embed(_K(4.0, 4.0, 2.5, 1.5))
    size = torch.tensor([4.0]), torch.tensor([6.0])
    cam_dst = PinholeCamera(K.float(), _pose(torch.zeros(1, 3), torch.tensor([[0.5, 0.0, 0.0]])), *size)
    cam_src = PinholeCamera(K.float(), torch.eye(4)[None], *size)
    warper = DepthWarper(cam_dst, 4, 6)
    depth = torch.full((1, 1, 4, 6), 2.0)
    with pytest.raises(ValueError, match="compute_projection_matrix"):
        warper(depth, torch.rand(1, 1, 4, 6))
    with pytest.raises(RuntimeError):
        warper.compute_subpixel_step()
    assert warper.compute_projection_matrix(cam_src) is warper
    grid = warper.warp_grid(depth)
    # Points move right by fx * 0.5 / 2 = 1 px: normalised x of pixel x + 1 in a 6-wide image.
    xs = (2 * (torch.arange(6.0) + 1) + 1) / 6 - 1
    torch.testing.assert_close(grid[0, 0, :, 0], xs, rtol=0, atol=1e-6)
    # The sub-pixel step moves the image centre by half a pixel in inverse depth.
    step = warper.compute_subpixel_step()
    assert step.ndim == 0
    # pixel shift = fx * tx * (1 / depth): d shift / d inverse depth = 4 * 0.5 = 2 px.
    torch.testing.assert_close(step, torch.tensor(0.25), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="^patch_dst:"):
        warper(depth, torch.rand(1, 1, 5, 6))


# ============================================================== typed errors
_IMG = torch.rand(2, 3, 5, 6)
_H = torch.eye(3)[None]
_D = torch.ones(2, 1, 5, 6)
_KK = torch.eye(3)[None]
_T = torch.eye(4)[None]
_CAM = PinholeCamera(torch.eye(4)[None], torch.eye(4)[None], torch.ones(1), torch.ones(1))
BAD_INPUT = [
    (lambda: homography_warp(_IMG.numpy(), _H, (5, 6)), TypeError, "patch_src"),
    (lambda: homography_warp(_IMG[0], _H, (5, 6)), ValueError, "patch_src"),
    (lambda: homography_warp(_IMG.long(), _H, (5, 6)), TypeError, "patch_src"),
    (lambda: homography_warp(_IMG, _H[0], (5, 6)), ValueError, "src_homo_dst"),
    (lambda: homography_warp(_IMG, _H.long(), (5, 6)), TypeError, "src_homo_dst"),
    (lambda: homography_warp(_IMG, _H.repeat(3, 1, 1), (5, 6)), ValueError, "src_homo_dst"),
    (lambda: homography_warp(_IMG, _H, 5), TypeError, "dsize"),
    (lambda: homography_warp(_IMG, _H, (5, -1)), ValueError, r"dsize\[1\]"),
    (lambda: homography_warp(_IMG, _H, (5, 6), mode="area"), ValueError, "mode"),
    (lambda: homography_warp(_IMG, _H, (5, 6), padding_mode="fill"), ValueError, "padding_mode"),
    (lambda: homography_warp(_IMG, _H, (5, 6), align_corners=1), TypeError, "align_corners"),
    (lambda: HomographyWarper(0, 6), ValueError, "height"),
    (lambda: HomographyWarper(5, 6.0), TypeError, "width"),
    (lambda: HomographyWarper(5, 6)(_IMG, _H[0]), ValueError, "src_homo_dst"),
    (lambda: HomographyWarper(5, 6).precompute_warp_grid(_H[0]), ValueError, "src_homo_dst"),
    (lambda: depth_warp(_IMG.numpy(), _D, _KK, _KK, _T), TypeError, "image_src"),
    (lambda: depth_warp(_IMG, _D.expand(2, 2, 5, 6), _KK, _KK, _T), ValueError, "depth_ref"),
    (lambda: depth_warp(_IMG, _D[:1], _KK, _KK, _T), ValueError, "depth_ref"),
    (lambda: depth_warp(_IMG, _D.long(), _KK, _KK, _T), TypeError, "depth_ref"),
    (lambda: depth_warp(_IMG, _D, _T, _KK, _T), ValueError, "K_ref"),
    (lambda: depth_warp(_IMG, _D, _KK, _KK.repeat(3, 1, 1), _T), ValueError, "K_src"),
    (lambda: depth_warp(_IMG, _D, _KK, _KK, _KK), ValueError, "src_T_ref"),
    (lambda: depth_warp(_IMG, _D, _KK, _KK, _T.int()), TypeError, "src_T_ref"),
    (lambda: depth_warp(_IMG, _D, _KK, _KK, _T, mode="area"), ValueError, "mode"),
    (lambda: DepthWarper(_KK, 5, 6), TypeError, "pinhole_dst"),
    (lambda: DepthWarper(_CAM, 5, 6).compute_projection_matrix(_KK), TypeError, "pinhole_src"),
    (lambda: DepthWarper(_CAM, 5, 6, padding_mode="fill"), ValueError, "padding_mode"),
]


@pytest.mark.parametrize("call, error, argument", BAD_INPUT, ids=[f"{i}-{a}" for i, (_, _, a) in enumerate(BAD_INPUT)])
def test_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch


# ============================================================== torch.compile
@pytest.mark.slow
@ignore_compile_warnings
def test_compile_fullgraph_matches_eager(smooth_photo):
    torch._dynamo.reset()
    K_r, K_s, T, depth, H = _plane_scene()
    img = smooth_photo.float()
    Hn = normalize_homography(H, (60, 80), tuple(img.shape[-2:])).float()  # reference -> source
    args = (img, depth.float().requires_grad_(True), K_r.float(), K_s.float(), T.float(), Hn)

    def fn(img, depth, K_r, K_s, T, Hn):
        warped, valid = depth_warp(img, depth, K_r, K_s, T)
        return warped, valid, homography_warp(img, Hn, (60, 80))

    compiled = torch.compile(fn, fullgraph=True)
    got, want = compiled(*args), fn(*args)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
    assert (got[1] != want[1]).double().mean() < 0.01
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[0], got[2], rtol=0, atol=1e-4)  # the plane again
    (g_got,) = torch.autograd.grad(got[0].sum(), args[1])
    (g_want,) = torch.autograd.grad(want[0].sum(), args[1])
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------- kernel check
def _depth_inputs() -> tuple[torch.Tensor, ...]:
    image = samples.image()
    depth = 2.0 + samples.image(c=1, seed=5)
    K = samples.camera_matrix()
    T = samples.pose()
    T[:, :3, :3] = torch.linalg.matrix_exp(0.05 * (T[:, :3, :3] - T[:, :3, :3].mT))  # a small motion
    T[:, :3, 3] *= 0.1
    return image, depth, K, K.flip(0), T


KERNEL_CASES = {
    "homography_warp": (lambda x, H: homography_warp(x, H, (8, 12)), (samples.image(), samples.homography(strength=0.01))),
    "homography_warp_pixels": (
        lambda x, H: homography_warp(x, H, (8, 12), "bilinear", "border", True, False, False),
        (samples.image(), samples.homography()),
    ),
    "depth_warp": (lambda *a: depth_warp(*a), _depth_inputs()),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, inputs = KERNEL_CASES[name]
    check_kernel(fn, *inputs, device=device, low_precision=True)
