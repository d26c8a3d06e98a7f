"""Tests for core_ops.geometry.transform: warp_perspective / warp_affine and the matrices,
rotate / translate / scale / shear / affine, resize, and their Modules.

References: OpenCV 5 (``warpPerspective``, ``warpAffine``, ``getPerspectiveTransform``,
``getRotationMatrix2D``, ``resize``; its warps interpolate with exact float weights),
PIL (antialiased resize) and Kornia (matrices, Modules).

Tolerances (float32, images in [0, 1]):
- Warps against OpenCV, 1e-4: both compute source positions in float32, and PyTorch's
  ``grid_sample`` resolves a float32 normalised coordinate only to about ``W * 2**-24``
  pixels (3.6e-5 px at W = 600, see ``core_ops.geometry.imgwarp``); times image steps of
  up to ~1 per pixel this gives differences up to ~1e-4. Measured: <= 1.1e-4 on whole
  images, which is why pixels whose source lies within 1 px of the edge (where a sample
  blends with the zero border, a step of up to 1) are left out.
- Identity warps: exact for power-of-two sizes and for nearest; otherwise within
  ``2 * max(H, W) * 2**-24 * max step`` (the resolution above, on both axes); float64 1e-12.
- Resize against OpenCV, 2e-5: the same interpolation weights rounded differently
  (measured <= 1.1e-5); against PIL's antialiased resize 1e-5 (measured 3.4e-6).
"""

from __future__ import annotations


import cv2
import kornia
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image
from torch.autograd import gradcheck

from gradcv.core_ops.errors import DTypeError, GradcvError
from gradcv.core_ops.filters import gaussian_blur2d
from gradcv.core_ops.geometry.transform import (
    Affine,
    Resize,
    Rotate,
    Scale,
    Shear,
    Translate,
    affine,
    get_affine_matrix2d,
    get_perspective_transform,
    get_rotation_matrix2d,
    get_shear_matrix2d,
    get_translation_matrix2d,
    invert_affine_transform,
    resize,
    rotate,
    scale,
    shear,
    translate,
    warp_affine,
    warp_perspective,
)
from gradcv.core_ops import _native
from tests.helpers import assert_standard, ignore_compile_warnings, noncontiguous, to_numpy, to_tensor
from tests._kernel_check import check_kernel
from tests.core_ops.geometry import _kernel_samples as samples

F32_EPS = float(np.finfo(np.float32).eps)
MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection", "fill")
CV_INTER = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "bicubic": cv2.INTER_CUBIC}
# align_corners=False reflection mirrors about the image edge: OpenCV's BORDER_REFLECT.
CV_BORDER = {"zeros": cv2.BORDER_CONSTANT, "border": cv2.BORDER_REPLICATE, "reflection": cv2.BORDER_REFLECT}


# ------------------------------------------------------------------------ helpers
def realistic_homographies(height: int, width: int, n: int, seed: int, spread: float = 0.08) -> list[np.ndarray]:
    """Homographies moving each image corner by up to ``spread`` of the image size (float64)."""
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    out = []
    for _ in range(n):
        moved = (corners + rng.uniform(-spread, spread, (4, 2)) * [width, height]).astype(np.float32)
        out.append(cv2.getPerspectiveTransform(corners, moved))
    return out


def realistic_affines(height: int, width: int, n: int, seed: int) -> list[np.ndarray]:
    """Rotation (up to 30 deg), anisotropic scale, shear and translation (2 x 3, float64)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        R = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), rng.uniform(-30, 30), rng.uniform(0.8, 1.25))
        S = np.array([[1, rng.uniform(-0.15, 0.15), 0], [rng.uniform(-0.1, 0.1), 1, 0], [0, 0, 1]])
        A = np.vstack([R, [0, 0, 1]]) @ S
        A[:2, 2] += rng.uniform(-0.05, 0.05, 2) * [width, height]
        out.append(A[:2])
    return out


def source_positions(M: np.ndarray, dsize: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source pixel positions ``M^-1 p`` of the destination pixels, and the projective denominators."""
    M3 = M if M.shape == (3, 3) else np.vstack([M, [0, 0, 1]])
    Minv = np.linalg.inv(M3)
    ys, xs = np.mgrid[0 : dsize[0], 0 : dsize[1]].astype(np.float64)
    den = Minv[2, 0] * xs + Minv[2, 1] * ys + Minv[2, 2]
    sx = (Minv[0, 0] * xs + Minv[0, 1] * ys + Minv[0, 2]) / den
    sy = (Minv[1, 0] * xs + Minv[1, 1] * ys + Minv[1, 2]) / den
    return sx, sy, den


def interior(M: np.ndarray, dsize: tuple[int, int], src_hw: tuple[int, int], margin: float = 1.0) -> np.ndarray:
    """Destination pixels whose source lies at least ``margin`` pixels inside the source image."""
    sx, sy, den = source_positions(M, dsize)
    h, w = src_hw
    return (den > 0) & (sx >= margin) & (sx <= w - 1 - margin) & (sy >= margin) & (sy <= h - 1 - margin)


def max_step(img: np.ndarray) -> float:
    """Largest difference between horizontally or vertically adjacent pixels."""
    return float(max(np.abs(np.diff(img, axis=0)).max(), np.abs(np.diff(img, axis=1)).max()))


def assert_max_abs_diff(ours: np.ndarray, ref: np.ndarray, atol: float, mask: np.ndarray | None = None) -> None:
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    if mask is not None:
        diff = diff[mask]
    assert diff.size > 0
    assert float(diff.max()) <= atol, f"max abs diff {float(diff.max()):.3g} > {atol:.3g}"


def ours_perspective(img: np.ndarray, M: np.ndarray, dsize: tuple[int, int], **kw) -> np.ndarray:
    return to_numpy(warp_perspective(to_tensor(img), torch.from_numpy(M)[None], dsize, **kw))


def ours_affine(img: np.ndarray, M: np.ndarray, dsize: tuple[int, int], **kw) -> np.ndarray:
    return to_numpy(warp_affine(to_tensor(img), torch.from_numpy(M)[None], dsize, **kw))


@pytest.fixture(scope="module")
def batch(photos) -> torch.Tensor:
    """Three RGB crops of different photographs, odd sizes: (3, 3, 19, 23)."""
    return torch.cat([to_tensor(p[40:59, 60:83]) for p in photos[:3]])


def homography_batch(n: int, height: int, width: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.stack(realistic_homographies(height, width, n, seed))).to(dtype)


# ===================================================================== OpenCV parity
def exact_bilinear(img: np.ndarray, M: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """The warp in float64 by an independent sampler (SciPy), zero outside the image."""
    sx, sy, _ = source_positions(M, dsize)
    img64 = img.astype(np.float64)
    channels = [
        scipy.ndimage.map_coordinates(img64[..., c], [sy, sx], order=1, mode="grid-constant", cval=0.0)
        for c in range(img.shape[-1])
    ]
    return np.stack(channels, -1)


@pytest.mark.parametrize("index", range(4))
def test_warp_perspective_bilinear_matches_opencv(photos, index):
    """Against the float64 answer to 1e-4 (measured <= 6.3e-5 inside, 9.3e-5 with the
    border); against OpenCV's float32 warp, whose own error is up to 8.7e-5, to the sum."""
    img = photos[index]
    h, w = img.shape[:2]
    for k, M in enumerate(realistic_homographies(h, w, 3, seed=index)):
        dsize = (h, w) if k != 2 else (h // 2 + 3, w + 17)  # another output size too
        ref = cv2.warpPerspective(img, M, dsize[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        exact = exact_bilinear(img, M, dsize)
        ours = ours_perspective(img, M, dsize)
        mask = interior(M, dsize, (h, w))
        assert_max_abs_diff(ours, exact, 1e-4, mask)
        assert_max_abs_diff(ours, exact, 1.5e-4)  # whole image, zero border included
        assert_max_abs_diff(ours, ref, 1.5e-4, mask)
        assert_max_abs_diff(ref, exact, 1e-4, mask)  # (the reference's own error)


@pytest.mark.parametrize("index", range(4))
def test_warp_perspective_nearest_matches_opencv(photos, index):
    """Ties (a source position at exactly .5) and positions within float32 rounding of
    one may round either way; at most 0.05 % of the pixels may differ."""
    img = photos[index]
    h, w = img.shape[:2]
    for M in realistic_homographies(h, w, 3, seed=10 + index):
        ref = cv2.warpPerspective(img, M, (w, h), flags=cv2.INTER_NEAREST)
        ours = ours_perspective(img, M, (h, w), mode="nearest")
        mask = interior(M, (h, w), (h, w))
        mismatched = np.any(ours != ref, axis=-1)[mask]
        assert mismatched.mean() <= 5e-4, f"{mismatched.sum()} of {mismatched.size} pixels differ"
        sx, sy, _ = source_positions(M, (h, w))
        to_tie = np.minimum(np.abs(sx - np.floor(sx) - 0.5), np.abs(sy - np.floor(sy) - 0.5))
        near_tie = (to_tie < 1e-4)[mask]  # float32 positions are good to ~4e-5 px here
        assert not np.any(mismatched & ~near_tie), "a pixel away from a rounding tie differs"


@pytest.mark.parametrize("index", range(4))
def test_warp_perspective_bicubic_matches_opencv(photos, index):
    """OpenCV's INTER_CUBIC and grid_sample's bicubic are the same Keys cubic (a = -0.75);
    the cubic weights carry the position error with a slope up to ~1.25x the bilinear one."""
    img = photos[index]
    h, w = img.shape[:2]
    for M in realistic_homographies(h, w, 2, seed=20 + index):
        ref = cv2.warpPerspective(img, M, (w, h), flags=cv2.INTER_CUBIC)
        ours = ours_perspective(img, M, (h, w), mode="bicubic")
        assert_max_abs_diff(ours, ref, 1.5e-4, interior(M, (h, w), (h, w), margin=2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("index", range(4))
def test_warp_affine_matches_opencv(photos, index, mode):
    img = photos[index]
    h, w = img.shape[:2]
    for M in realistic_affines(h, w, 2, seed=30 + index):
        ref = cv2.warpAffine(img, M, (w, h), flags=CV_INTER[mode])
        ours = ours_affine(img, M, (h, w), mode=mode)
        mask = interior(M, (h, w), (h, w), margin=2)
        if mode == "nearest":
            assert np.any(ours != ref, axis=-1)[mask].mean() <= 5e-4
        else:
            assert_max_abs_diff(ours, ref, 1.5e-4, mask)
            if mode == "bilinear":
                assert_max_abs_diff(ours, exact_bilinear(img, M, (h, w)), 1e-4, mask)


@pytest.mark.parametrize("padding_mode", ["border", "reflection"])
def test_padding_modes_match_opencv_borders(photos, padding_mode):
    """Whole images, with the borders: replicate and reflect (about the edge)."""
    img = photos[3]
    h, w = img.shape[:2]
    M = realistic_homographies(h, w, 1, seed=40, spread=0.2)[0]
    ref = cv2.warpPerspective(img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=CV_BORDER[padding_mode])
    ours = ours_perspective(img, M, (h, w), padding_mode=padding_mode)
    sx, sy, den = source_positions(M, (h, w))
    far = (den > 0) & (np.abs(sx) < 3 * w) & (np.abs(sy) < 3 * h)
    assert_max_abs_diff(ours, ref, 2e-4, far)


def test_fill_padding_matches_opencv_border_value(photos):
    img = photos[2]
    h, w = img.shape[:2]
    M = realistic_homographies(h, w, 1, seed=41, spread=0.2)[0]
    fill = (0.2, 0.5, 0.8)
    ref = cv2.warpPerspective(img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    ours = ours_perspective(img, M, (h, w), padding_mode="fill", fill_value=torch.tensor(fill))
    assert_max_abs_diff(ours, ref, 3e-4)


def test_warp_perspective_matches_kornia(photos):
    """Kornia 0.9's warp_perspective uses the same pixel convention (whatever align_corners)."""
    img = photos[1]
    h, w = img.shape[:2]
    M = homography_batch(2, h, w, seed=50)
    x = to_tensor(img).expand(2, -1, -1, -1)
    for align_corners in (True, False):
        ref = kornia.geometry.transform.warp_perspective(x, M, (h, w), align_corners=align_corners)
        torch.testing.assert_close(warp_perspective(x, M, (h, w), align_corners=align_corners), ref, atol=2e-4, rtol=0)


# =================================================================== identity warps
IDENTITY_SIZES = [(1, 1), (1, 5), (3, 1), (7, 5), (16, 32), (33, 65), (64, 64), (101, 257)]


@pytest.mark.parametrize("size", IDENTITY_SIZES)
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_identity_float64_is_exact(mode, padding_mode, size):
    gen = torch.Generator().manual_seed(size[0] * 1000 + size[1])
    x = torch.rand(2, 3, *size, generator=gen, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)[None]
    torch.testing.assert_close(warp_perspective(x, eye, size, mode, padding_mode), x, atol=1e-12, rtol=0)
    torch.testing.assert_close(warp_affine(x, eye[:, :2], size, mode, padding_mode), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("size", IDENTITY_SIZES)
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_identity_float32(mode, padding_mode, size):
    """Bit-exact for nearest and for power-of-two sizes; elsewhere within grid_sample's
    float32 position resolution (module docstring of ``imgwarp``)."""
    gen = torch.Generator().manual_seed(size[0] * 1000 + size[1])
    x = torch.rand(2, 3, *size, generator=gen)
    eye = torch.eye(3)[None]
    for out in (warp_perspective(x, eye, size, mode, padding_mode), warp_affine(x, eye[:, :2], size, mode, padding_mode)):
        if mode == "nearest" or all(n & (n - 1) == 0 for n in size):
            assert torch.equal(out, x)
        else:
            bound = 2 * max(size) * 2.0**-24 * 1.0  # steps of random values are below 1
            torch.testing.assert_close(out, x, atol=bound, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_identity_on_photos(photos, mode):
    for img in photos:
        h, w = img.shape[:2]
        x32, x64 = to_tensor(img), to_tensor(img, torch.float64)
        out32 = warp_perspective(x32, torch.eye(3)[None], (h, w), mode)
        if mode == "nearest":
            assert torch.equal(out32, x32)
        else:
            bound = 2 * max(h, w) * 2.0**-24 * max_step(img)
            err = float((out32 - x32).abs().max())
            assert err <= bound, f"{img.shape}: {err:.3g} > {bound:.3g}"
        out64 = warp_perspective(x64, torch.eye(3, dtype=torch.float64)[None], (h, w), mode)
        torch.testing.assert_close(out64, x64, atol=1e-12, rtol=0)


def test_power_of_two_photo_identity_is_bit_exact(photos):
    x = to_tensor(photos[0][:512, :256])
    for mode in MODES:
        assert torch.equal(warp_perspective(x, torch.eye(3)[None], (512, 256), mode), x)


# ======================================================================= H then H^-1
def test_affine_there_and_back_is_exact_on_a_linear_ramp():
    """Bilinear interpolation reproduces a linear function exactly. Enlarging maps (scale
    1.3, up to 10 degrees about the centre) send every pixel of the intermediate image
    inside the source, so the intermediate is exactly the warped ramp, and warping it back
    returns the ramp wherever the second warp samples inside the intermediate."""
    h, w = 61, 83
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (0.3 + 0.004 * xs - 0.003 * ys)[None, None]
    for angle in (-10.0, 3.0, 10.0):
        M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.3)
        Mt = torch.from_numpy(M)[None]
        back = warp_affine(warp_affine(ramp, Mt, (h, w)), invert_affine_transform(Mt), (h, w))
        qx, qy, _ = source_positions(np.linalg.inv(np.vstack([M, [0, 0, 1]])), (h, w))  # where the 2nd warp samples
        ok = (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)
        assert ok.mean() > 0.5
        assert float((back - ramp).abs()[0, 0].numpy()[ok].max()) <= 1e-12


def test_perspective_there_and_back_returns_the_interior(photos):
    """On a smooth image (Gaussian, sigma 2) a bilinear resampling errs by at most
    ``B = (max|I_xx| + max|I_yy|) / 8`` (a pixel squared times the curvature), so two
    resamplings by at most about ``2 B``. A half-pixel convention slip shows in the
    mean error: 9.2e-3 for a (0.5, 0.5) shift, against 1.3e-3 for the round trip."""
    x = gaussian_blur2d(to_tensor(photos[3]), (13, 13), (2.0, 2.0))
    h, w = x.shape[-2:]
    img = x[0].numpy()
    B = (np.abs(np.diff(img, 2, axis=2)).max() + np.abs(np.diff(img, 2, axis=1)).max()) / 8
    M = realistic_homographies(h, w, 1, seed=61)[0]
    Mt = torch.from_numpy(M)[None]
    back = warp_perspective(warp_perspective(x, Mt, (h, w)), torch.linalg.inv(Mt), (h, w))
    sx, sy, den = source_positions(np.linalg.inv(M), (h, w))  # where each pixel went
    ok = (den > 0) & (sx >= 2) & (sx <= w - 3) & (sy >= 2) & (sy <= h - 3)
    ok[:2], ok[-2:], ok[:, :2], ok[:, -2:] = False, False, False, False
    diff = (back - x).abs().amax(1)[0].numpy()
    assert ok.sum() > 0.5 * h * w
    assert diff[ok].max() <= 2 * B
    shifted = warp_perspective(x, torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]]), (h, w))
    slip = float((shifted - x).abs().amax(1)[0].numpy()[ok].mean())
    assert diff[ok].mean() <= slip / 5


# ========================================================================= matrices
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_get_perspective_transform_matches_opencv(dtype):
    """OpenCV solves the unnormalised system in float64 (relative error ~1e-8 here)."""
    rtol = 1e-6
    rng = np.random.default_rng(70)
    for h, w in [(480, 640), (257, 233), (20, 30)]:
        src = (np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]) + rng.uniform(-5, 5, (4, 2))).astype(np.float32)
        dst = np.stack([src + rng.uniform(-0.15, 0.15, (4, 2)) * [w, h] for _ in range(3)]).astype(np.float32)
        ref = np.stack([cv2.getPerspectiveTransform(src, d) for d in dst])
        ours = get_perspective_transform(torch.from_numpy(src).to(dtype).expand(3, 4, 2), torch.from_numpy(dst).to(dtype))
        assert ours.dtype == dtype and ours.shape == (3, 3, 3)
        rel = np.abs(ours.double().numpy() - ref).max() / np.abs(ref).max()
        assert rel <= rtol, rel


def test_get_perspective_transform_maps_the_points():
    gen = torch.Generator().manual_seed(71)
    src = torch.tensor([[0.0, 0.0], [99.0, 0.0], [99.0, 79.0], [0.0, 79.0]], dtype=torch.float64).expand(5, 4, 2)
    dst = src + torch.randn(5, 4, 2, generator=gen, dtype=torch.float64) * 8
    H = get_perspective_transform(src, dst)
    mapped = torch.cat((src, torch.ones(5, 4, 1, dtype=torch.float64)), -1) @ H.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], dst, atol=1e-9, rtol=0)
    torch.testing.assert_close(H[:, 2, 2], torch.ones(5, dtype=torch.float64))


def test_get_perspective_transform_degenerate_is_nan_and_warps_to_zeros():
    src = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.0, 5.0]], [[0.0, 0.0], [9.0, 0.0], [9.0, 9.0], [0.0, 9.0]]])
    dst = src[1:].expand(2, 4, 2).clone()
    H = get_perspective_transform(src, dst)  # the first source has three collinear points
    assert torch.isnan(H[0]).all() and torch.isfinite(H[1]).all()
    out = warp_perspective(torch.rand(2, 1, 8, 8), H, (8, 8))
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros(1, 8, 8))


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_get_rotation_matrix2d_matches_opencv(dtype, atol):
    rng = np.random.default_rng(72)
    for _ in range(5):
        # OpenCV takes the centre as a Point2f: float32 values.
        center = rng.uniform(-50, 300, 2).astype(np.float32).astype(np.float64)
        angle, s = rng.uniform(-180, 180), rng.uniform(0.5, 2.0)
        ref = cv2.getRotationMatrix2D(tuple(center), angle, s)
        ours = get_rotation_matrix2d(
            torch.tensor(center, dtype=dtype)[None], torch.tensor([angle], dtype=dtype), torch.full((1, 2), s, dtype=dtype)
        )
        np.testing.assert_allclose(ours[0].double().numpy(), ref, atol=atol * 300, rtol=0)


def test_matrix_builders_match_kornia():
    gen = torch.Generator().manual_seed(73)
    B = 4
    center = torch.rand(B, 2, generator=gen, dtype=torch.float64) * 100
    angle = torch.rand(B, generator=gen, dtype=torch.float64) * 360 - 180
    sc = torch.rand(B, 2, generator=gen, dtype=torch.float64) + 0.5
    trans = torch.randn(B, 2, generator=gen, dtype=torch.float64) * 10
    sx, sy = torch.randn(2, B, generator=gen, dtype=torch.float64) * 0.3
    K = kornia.geometry.transform
    pairs = [
        (get_rotation_matrix2d(center, angle, sc), K.get_rotation_matrix2d(center, angle, sc)),
        (get_affine_matrix2d(trans, center, sc, angle), K.get_affine_matrix2d(trans, center, sc, angle)),
        (get_affine_matrix2d(trans, center, sc, angle, sx, sy), K.get_affine_matrix2d(trans, center, sc, angle, sx, sy)),
        (get_shear_matrix2d(center, sx, sy), K.get_shear_matrix2d(center, sx, sy)),
        (get_shear_matrix2d(center, sy=sy), K.get_shear_matrix2d(center, sy=sy)),
        (get_translation_matrix2d(trans), K.get_translation_matrix2d(trans)),
    ]
    for ours, ref in pairs:
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-12)


def test_invert_affine_transform_matches_opencv():
    for M in realistic_affines(100, 120, 4, seed=74):
        ours = invert_affine_transform(torch.from_numpy(M)[None])[0].numpy()
        np.testing.assert_allclose(ours, cv2.invertAffineTransform(M), atol=1e-12, rtol=0)


# ============================================================ rotate, translate, scale, shear
def _center(img: np.ndarray) -> tuple[float, float]:
    return ((img.shape[1] - 1) / 2, (img.shape[0] - 1) / 2)


@pytest.mark.parametrize("index", [2, 3])
def test_rotate_matches_opencv(photos, index):
    img = photos[index]
    h, w = img.shape[:2]
    angles = [17.0, -90.0, 135.5]
    x = to_tensor(img).expand(len(angles), -1, -1, -1)
    ours = rotate(x, torch.tensor(angles))
    for i, angle in enumerate(angles):
        M = cv2.getRotationMatrix2D(_center(img), angle, 1.0)
        ref = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR)
        assert_max_abs_diff(to_numpy(ours[i : i + 1]), ref, 1e-4, interior(M, (h, w), (h, w)))
    center = torch.tensor([[40.0, 25.5]])
    M = cv2.getRotationMatrix2D((40.0, 25.5), 33.0, 1.0)
    ref = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_NEAREST)
    got = to_numpy(rotate(to_tensor(img), torch.tensor([33.0]), center, mode="nearest"))
    assert np.any(got != ref, axis=-1)[interior(M, (h, w), (h, w))].mean() <= 5e-4


def test_translate_scale_shear_match_opencv(photos):
    img = photos[3]
    h, w = img.shape[:2]
    x = to_tensor(img)
    cases = [
        (translate(x, torch.tensor([[3.25, -7.5]])), np.array([[1, 0, 3.25], [0, 1, -7.5]])),
        (scale(x, torch.tensor([1.37])), cv2.getRotationMatrix2D(_center(img), 0, 1.37)),
        (scale(x, torch.tensor([[0.8, 1.2]]), torch.tensor([[10.0, 20.0]])), np.array([[0.8, 0, 2.0], [0, 1.2, -4.0]])),
        (shear(x, torch.tensor([[0.2, -0.1]])), np.array([[1, 0.2, 0], [-0.1, 1, 0]])),
    ]
    for ours, M in cases:
        ref = cv2.warpAffine(img, M.astype(np.float64), (w, h), flags=cv2.INTER_LINEAR)
        assert_max_abs_diff(to_numpy(ours), ref, 1e-4, interior(M, (h, w), (h, w)))


def test_integer_translation_shifts_exactly():
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    out = translate(x, torch.tensor([[2.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(out[..., :-1, 2:], x[..., 1:, :-2], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[..., :, :2], torch.zeros_like(out[..., :, :2]), atol=1e-12, rtol=0)


def test_affine_module_matches_kornia(batch):
    angle = torch.tensor([10.0, -25.0, 40.0])
    trans = torch.tensor([[1.5, -2.0], [0.0, 3.0], [-1.0, -1.0]])
    sc = torch.tensor([[1.1, 0.9], [1.0, 1.0], [0.8, 1.2]])
    sh = torch.tensor([[0.1, 0.0], [0.0, -0.2], [0.05, 0.05]])
    ours = Affine(angle, trans, sc, sh)(batch)
    ref = kornia.geometry.transform.Affine(angle, trans, sc, sh)(batch)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_modules_equal_functions(batch):
    angle = torch.tensor([30.0, 45.0, -60.0])
    trans = torch.tensor([[1.0, 2.0]])
    factor = torch.tensor([[0.9, 1.1]])
    sh = torch.tensor([[0.1, -0.2]])
    assert torch.equal(Rotate(angle)(batch), rotate(batch, angle))
    assert torch.equal(Translate(trans, mode="nearest")(batch), translate(batch, trans, mode="nearest"))
    assert torch.equal(Scale(factor, padding_mode="border")(batch), scale(batch, factor, padding_mode="border"))
    assert torch.equal(Shear(sh)(batch), shear(batch, sh))
    assert torch.equal(Resize((7, 9), "bicubic")(batch), resize(batch, (7, 9), "bicubic"))
    assert torch.equal(Affine(angle=angle)(batch), rotate(batch, angle))


def test_module_buffers_follow_to_and_parameters_train(batch):
    m = Rotate(torch.tensor([30.0])).to(torch.float64)
    assert m.angle.dtype == torch.float64 and "angle" not in m.state_dict()
    out = m(batch.double())
    assert out.dtype == torch.float64
    p = torch.nn.Parameter(torch.tensor([5.0]))
    m = Rotate(p)
    m(batch).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_unbatched_images_and_broadcast_parameters(batch):
    img = batch[0]
    assert rotate(img, torch.tensor([20.0])).shape == img.shape
    out = rotate(img, torch.tensor([20.0, 40.0]))
    assert out.shape == (2, *img.shape)
    torch.testing.assert_close(out[1], rotate(img, torch.tensor([40.0])), atol=0, rtol=0)
    assert affine(img, torch.eye(2, 3)[None]).shape == img.shape


# ========================================================================== resize
RESIZE_MODES = [
    ("bilinear", cv2.INTER_LINEAR),
    ("nearest", cv2.INTER_NEAREST),
    ("nearest-exact", cv2.INTER_NEAREST_EXACT),
    ("bicubic", cv2.INTER_CUBIC),
]


@pytest.mark.parametrize("size", [(514, 466), (400, 300), (128, 116), (64, 58), (300, 100)])
@pytest.mark.parametrize("mode, flag", RESIZE_MODES, ids=[m for m, _ in RESIZE_MODES])
def test_resize_matches_opencv(photos, mode, flag, size):
    img = photos[3]
    ref = cv2.resize(img, size[::-1], interpolation=flag)
    assert_max_abs_diff(to_numpy(resize(to_tensor(img), size, mode)), ref, 2e-5)


def test_resize_area_matches_inter_area_for_integer_factors(photos):
    img = photos[1][:400, :600]
    for size in [(200, 300), (100, 150), (80, 120)]:
        ref = cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA)
        assert_max_abs_diff(to_numpy(resize(to_tensor(img), size, "area")), ref, 2e-6)


def test_resize_by_half_averages_2x2_blocks(photos):
    """Output pixel x samples the input at 2x + 0.5 (the normalised coordinate is kept)."""
    x = to_tensor(photos[0][:512, :256], torch.float64)
    torch.testing.assert_close(resize(x, (256, 128)), F.avg_pool2d(x, 2), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode, pil", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_resize_antialias_matches_pil(photos, mode, pil):
    img = photos[3]
    for h, w in [(128, 116), (100, 77), (64, 58)]:
        ref = np.stack([np.asarray(Image.fromarray(img[..., c], mode="F").resize((w, h), pil)) for c in range(3)], -1)
        assert_max_abs_diff(to_numpy(resize(to_tensor(img), (h, w), mode, antialias=True)), ref, 1e-5)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
def test_resize_antialias_removes_aliasing(mode):
    """A one-pixel checkerboard downscaled by 4: aliasing gives a constant 0 or 1 image,
    low-pass filtering its mean, 0.5."""
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float()[None, None]
    plain = resize(checker, (16, 16), mode)
    smooth = resize(checker, (16, 16), mode, antialias=True)
    inner = smooth[..., 2:-2, 2:-2]
    assert (inner - 0.5).abs().max() <= 0.05
    if mode.startswith("nearest"):
        assert (plain - 0.5).abs().min() >= 0.45


def test_resize_antialias_is_a_no_op_when_upscaling(batch):
    for mode in ("bilinear", "nearest"):
        assert torch.equal(resize(batch, (40, 50), mode, antialias=True), resize(batch, (40, 50), mode))


def test_resize_int_size_follows_kornia_side_rule():
    x = torch.rand(1, 3, 30, 50)
    for side in ("short", "long", "vert", "horz"):
        for size in (10, 24):
            ref = kornia.geometry.transform.resize(x, size, side=side)
            assert resize(x, size, side=side).shape == ref.shape


def test_resize_shapes():
    assert resize(torch.rand(30, 40), (15, 20)).shape == (15, 20)
    assert resize(torch.rand(2, 4, 3, 30, 40), (15, 20)).shape == (2, 4, 3, 15, 20)
    assert resize(torch.rand(2, 3, 30, 40), (0, 20)).shape == (2, 3, 0, 20)
    assert resize(torch.rand(0, 3, 30, 40), (15, 20)).shape == (0, 3, 15, 20)


# ============================================== the standard set: batches, dtypes, gradients
@pytest.mark.parametrize("mode", MODES)
def test_standard_checks_warp_perspective(batch, mode):
    M = homography_batch(batch.shape[0], 19, 23, seed=80)
    index = {"i": 0}

    def fn(x: torch.Tensor) -> torch.Tensor:
        # The matrices follow the samples when assert_standard slices the batch.
        m = M if x.shape[0] == M.shape[0] else M[index["i"] : index["i"] + x.shape[0]]
        if x.shape[0] == 1:
            index["i"] = (index["i"] + 1) % M.shape[0]
        return warp_perspective(x, m, (17, 29), mode)

    assert_standard(fn, batch)


def test_standard_checks_transforms(batch):
    angle = torch.tensor([12.0])
    for fn in (
        lambda x: warp_affine(x, torch.tensor([[[0.9, 0.1, 1.0], [-0.1, 1.1, -2.0]]]), (21, 20), "bicubic"),
        lambda x: rotate(x, angle),
        lambda x: translate(x, torch.tensor([[1.5, -0.5]])),
        lambda x: scale(x, torch.tensor([1.2])),
        lambda x: shear(x, torch.tensor([[0.1, 0.2]])),
        lambda x: resize(x, (11, 31)),
        lambda x: resize(x, (7, 9), "bilinear", antialias=True),
        lambda x: resize(x, (7, 9), "nearest", antialias=True),
    ):
        assert_standard(fn, batch)


def test_matrix_batch_of_one_broadcasts(batch):
    M = homography_batch(1, 19, 23, seed=81)
    out = warp_perspective(batch, M, (19, 23))
    torch.testing.assert_close(out, warp_perspective(batch, M.expand(3, 3, 3), (19, 23)), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_out(batch, dtype):
    x = batch.to(dtype)
    for matrix_dtype in (torch.float32, torch.float64):
        M = homography_batch(3, 19, 23, seed=82, dtype=matrix_dtype)
        out = warp_perspective(x, M, (10, 12))
        assert out.dtype == dtype and out.shape == (3, 3, 10, 12)


def test_half_precision_on_cpu_samples_in_float32(batch):
    M = homography_batch(3, 19, 23, seed=83)
    for dtype in (torch.float16, torch.bfloat16):
        out = warp_perspective(batch.to(dtype), M, (19, 23))
        assert out.dtype == dtype
        ref = warp_perspective(batch.to(dtype).float(), M, (19, 23))
        torch.testing.assert_close(out.float(), ref, atol=float(torch.finfo(dtype).eps), rtol=0)


def test_zero_output_size_and_empty_batch(batch):
    M = homography_batch(3, 19, 23)
    assert warp_perspective(batch, M, (0, 5)).shape == (3, 3, 0, 5)
    assert warp_affine(batch, M[:, :2], (4, 0)).shape == (3, 3, 4, 0)
    assert warp_perspective(batch[:0], M[:0], (4, 5)).shape == (0, 3, 4, 5)
    assert warp_perspective(batch[:0], M[:1], (4, 5)).shape == (0, 3, 4, 5)


def test_noncontiguous_matrix_and_image(batch):
    M = homography_batch(3, 19, 23, seed=84)
    Mt = M.transpose(1, 2).contiguous().transpose(1, 2)
    assert not Mt.is_contiguous()
    got = warp_perspective(noncontiguous(batch), Mt, (19, 23))
    torch.testing.assert_close(got, warp_perspective(batch, M, (19, 23)), atol=0, rtol=0)


def test_gradcheck_warp_perspective():
    gen = torch.Generator().manual_seed(90)
    x = torch.rand(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    size = torch.tensor([[0.05, 0.05, 0.3], [0.05, 0.05, 0.3], [0.01, 0.01, 0.0]], dtype=torch.float64)
    M = (torch.eye(3, dtype=torch.float64) + torch.randn(2, 3, 3, generator=gen, dtype=torch.float64) * size).requires_grad_(True)
    assert gradcheck(lambda a, m: warp_perspective(a, m, (5, 8)), (x, M), fast_mode=False)
    fill = torch.tensor([0.3, 0.6], dtype=torch.float64)
    for padding in ("border", "reflection", "fill"):
        assert gradcheck(lambda a, m: warp_perspective(a, m, (5, 8), "bilinear", padding, fill_value=fill), (x, M), fast_mode=False)
    assert gradcheck(lambda a, m: warp_perspective(a, m, (5, 8), "bicubic"), (x, M), fast_mode=False)


def test_gradcheck_warp_affine_and_transforms():
    gen = torch.Generator().manual_seed(91)
    x = torch.rand(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    A = torch.eye(2, 3, dtype=torch.float64) + torch.randn(2, 2, 3, generator=gen, dtype=torch.float64) * 0.05
    A.requires_grad_(True)
    assert gradcheck(lambda a, m: warp_affine(a, m, (5, 8)), (x, A), fast_mode=False)
    angle = torch.tensor([10.0, -20.0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, t: rotate(a, t), (x, angle), fast_mode=False)


def test_gradcheck_get_perspective_transform():
    gen = torch.Generator().manual_seed(92)
    src = torch.tensor([[0.0, 0.0], [9.0, 0.0], [9.0, 7.0], [0.0, 7.0]], dtype=torch.float64).expand(2, 4, 2).clone()
    dst = src + torch.randn(2, 4, 2, generator=gen, dtype=torch.float64)
    src.requires_grad_(True)
    dst.requires_grad_(True)
    assert gradcheck(get_perspective_transform, (src, dst), fast_mode=False)


def test_gradients_float32_match_float64(batch):
    """The custom backward of the perspective grid agrees with float64 autograd."""
    M = homography_batch(3, 19, 23, seed=93)
    grads = []
    for dtype in (torch.float32, torch.float64):
        x = batch.detach().to(dtype).clone().requires_grad_(True)
        m = M.detach().to(dtype).clone().requires_grad_(True)
        warp_perspective(x, m, (19, 23)).square().sum().backward()
        grads.append((x.grad.double(), m.grad.double()))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-2, rtol=1e-3)


# ===================================================== singular and non-finite matrices
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_singular_and_non_finite_matrices_give_blank_images(batch, mode, padding_mode):
    singular = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]])
    bad = torch.stack((singular, torch.full((3, 3), float("nan")), torch.eye(3) * float("inf")))
    fill = torch.tensor([0.25, 0.5, 0.75])
    out = warp_perspective(batch, bad, (19, 23), mode, padding_mode, fill_value=fill)
    expected = fill.view(1, 3, 1, 1).expand_as(out) if padding_mode == "fill" else torch.zeros_like(out)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    out = warp_affine(batch, bad[:, :2], (19, 23), mode, padding_mode, fill_value=fill)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_singular_matrix_has_zero_gradient(batch):
    M = torch.tensor([[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]]], requires_grad=True)
    warp_perspective(batch[:1], M, (19, 23)).sum().backward()
    assert torch.equal(M.grad, torch.zeros_like(M))


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_line_at_infinity_inside_the_output_stays_finite(batch, padding_mode):
    """Row y = 10 of the output maps to infinity (its denominator is exactly 0)."""
    Minv = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, -1.0]])
    M = torch.linalg.inv(Minv)[None]
    out = warp_perspective(batch[:1], M, (19, 23), padding_mode=padding_mode)
    assert torch.isfinite(out).all()
    if padding_mode != "fill":
        assert torch.equal(out[..., 10, :], torch.zeros_like(out[..., 10, :]))
    x = batch[:1].clone().requires_grad_(True)
    m = M.clone().requires_grad_(True)
    warp_perspective(x, m, (19, 23), padding_mode=padding_mode).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.grad).all()


# ========================================================================== errors
IMG, EYE = torch.zeros(1, 1, 4, 4), torch.eye(3)[None]
BAD_INPUT = [
    (lambda: warp_perspective(np.zeros((1, 1, 4, 4)), torch.eye(3)[None], (4, 4)), TypeError, "src"),
    (lambda: warp_perspective(torch.zeros(1, 4, 4), torch.eye(3)[None], (4, 4)), ValueError, "src"),
    (lambda: warp_perspective(torch.zeros(1, 1, 4, 4, dtype=torch.int64), torch.eye(3)[None], (4, 4)), TypeError, "src"),
    (lambda: warp_perspective(torch.zeros(1, 1, 4, 4), torch.eye(3), (4, 4)), ValueError, "M"),
    (lambda: warp_perspective(torch.zeros(1, 1, 4, 4), torch.eye(3, dtype=torch.int64)[None], (4, 4)), TypeError, "M"),
    (lambda: warp_perspective(torch.zeros(2, 1, 4, 4), torch.eye(3).expand(3, 3, 3), (4, 4)), ValueError, "M"),
    (lambda: warp_perspective(torch.zeros(1, 1, 4, 4), torch.eye(3)[None], 4), TypeError, "dsize"),
    (lambda: warp_perspective(torch.zeros(1, 1, 4, 4), torch.eye(3)[None], (4, -1)), ValueError, "dsize"),
    (lambda: warp_perspective(torch.zeros(1, 1, 4, 4), torch.eye(3)[None], (4, 4), "area"), ValueError, "mode"),
    (lambda: warp_perspective(IMG, EYE, (4, 4), padding_mode="wrap"), ValueError, "padding_mode"),
    (lambda: warp_perspective(IMG, EYE, (4, 4), align_corners=None), TypeError, "align_corners"),
    (lambda: warp_perspective(IMG.expand(1, 2, 4, 4), EYE, (4, 4), "bilinear", "fill", fill_value=torch.zeros(3)), ValueError, "fill_value"),
    (lambda: warp_affine(torch.zeros(1, 1, 4, 4), torch.eye(3)[None], (4, 4)), ValueError, "M"),
    (lambda: get_perspective_transform(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)), ValueError, "points_src"),
    (lambda: get_perspective_transform(torch.zeros(1, 4, 2), torch.zeros(2, 4, 2)), ValueError, "points_dst"),
    (lambda: get_rotation_matrix2d(torch.zeros(1, 2), torch.zeros(2), torch.ones(1, 2)), ValueError, "angle"),
    (lambda: get_rotation_matrix2d(torch.zeros(1, 2), torch.zeros(1).double(), torch.ones(1, 2)), DTypeError, "angle"),
    (lambda: invert_affine_transform(torch.zeros(1, 3, 3)), ValueError, "matrix"),
    (lambda: rotate(torch.zeros(4, 4), torch.zeros(1)), ValueError, "tensor"),
    (lambda: rotate(torch.zeros(1, 1, 4, 4), 30.0), TypeError, "angle"),
    (lambda: rotate(torch.zeros(2, 1, 4, 4), torch.zeros(3)), ValueError, "angle"),
    (lambda: translate(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3)), ValueError, "translation"),
    (lambda: scale(torch.zeros(1, 1, 4, 4), torch.ones(1), torch.zeros(1, 3)), ValueError, "center"),
    (lambda: shear(torch.zeros(1, 1, 4, 4), torch.zeros(2, 2, 2)), ValueError, "shear"),
    (lambda: resize(torch.zeros(4), (2, 2)), ValueError, "input"),
    (lambda: resize(torch.zeros(1, 1, 4, 4), (2, 2), "linear"), ValueError, "interpolation"),
    (lambda: resize(torch.zeros(1, 1, 4, 4), (2, 2.0)), TypeError, "size"),
    (lambda: resize(torch.zeros(1, 1, 4, 4), (2, 2), "nearest", align_corners=True), ValueError, "align_corners"),
    (lambda: resize(torch.zeros(1, 1, 4, 4), 2, side="left"), ValueError, "side"),
    (lambda: Rotate(torch.zeros(1), mode="box"), ValueError, "mode"),
    (lambda: Resize(4, "cubic"), ValueError, "interpolation"),
    (lambda: Affine(), ValueError, "Affine"),
    (lambda: Affine(angle=torch.zeros(2), translation=torch.zeros(3, 2)), ValueError, "Affine"),
]


@pytest.mark.parametrize("call, error, argument", BAD_INPUT, ids=[f"{i}-{a}" for i, (_, _, a) in enumerate(BAD_INPUT)])
def test_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch


# =============================================== the bilinear warp's eager CPU shortcuts
def _awkward_matrices() -> torch.Tensor:
    """Invertible homographies beside a singular one, one with a NaN, one with an infinity
    and one whose inverse overflows."""
    M = homography_batch(3, 19, 23, seed=7).double()
    singular = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    nan = M[0].clone()
    nan[1, 2] = float("nan")
    inf = M[1].clone()
    inf[0, 0] = float("inf")
    tiny = torch.diag(torch.tensor([1e-300, 1e-300, 1.0], dtype=torch.float64))
    return torch.cat((M, torch.stack((singular, nan, inf, tiny))))


@pytest.mark.skipif(_native.library() is None, reason="needs the native kernels")
def test_native_sampling_matrices_are_the_pytorch_codes():
    from gradcv.core_ops.geometry.imgwarp import _bilinear_matrices

    M = _awkward_matrices()
    A, ok = _bilinear_matrices(M, 19, 23)
    with _native.disabled():
        A_ref, ok_ref = _bilinear_matrices(M, 19, 23)
    assert ok.tolist() == ok_ref.tolist() == [True, True, True, False, False, False, False]
    torch.testing.assert_close(A, A_ref, rtol=1e-13, atol=0)
    far = torch.tensor([[0.0, 0.0, -2.0 * (19 + 23) - 4.0], [0.0, 0.0, -2.0 * (19 + 23) - 4.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(A[3:], far.expand(4, 3, 3))
    torch.testing.assert_close(A[:3] @ M[:3], torch.eye(3, dtype=torch.float64).expand(3, 3, 3), rtol=0, atol=1e-12)


@pytest.mark.skipif(_native.library() is None, reason="needs the native kernels")
def test_native_sampling_matrices_gradcheck():
    from gradcv.core_ops.geometry.imgwarp import _bilinear_matrices

    M = _awkward_matrices()[[0, 1, 2, 3]].requires_grad_(True)
    # finite differences of the singular matrix would leave it; it is checked alone below
    assert torch.autograd.gradcheck(lambda m: _bilinear_matrices(m, 19, 23)[0], (M[:3].detach().requires_grad_(True),))
    (g,) = torch.autograd.grad(_bilinear_matrices(M, 19, 23)[0].sum(), M)
    assert torch.isfinite(g).all() and torch.equal(g[3], torch.zeros(3, 3, dtype=torch.float64))  # the far matrix is constant


@pytest.mark.skipif(_native.library() is None, reason="needs the native kernels")
def test_an_eager_cpu_warp_skips_the_dispatcher_only_without_autograd(monkeypatch, batch):
    from gradcv.core_ops.geometry import _sampler

    M = homography_batch(3, 19, 23, seed=95)
    want = warp_perspective(batch, M, (17, 21))
    def count(name: str) -> list[int]:
        """Replace ``_sampler.<name>`` by a wrapper that counts its calls."""
        calls: list[int] = []
        op = getattr(_sampler, name)

        def counted(*args):
            calls.append(1)
            return op(*args)

        monkeypatch.setattr(_sampler, name, counted)
        return calls

    calls = count("_warp_op")
    got = warp_perspective(batch, M, (17, 21))
    assert torch.equal(got, want) and calls == []  # no autograd: the kernel directly
    x = batch.clone().requires_grad_(True)
    backward_calls = count("_warp_backward_op")
    y = warp_perspective(x, M, (17, 21))
    assert torch.equal(y, want) and calls == [1]  # autograd records the op
    (g,) = torch.autograd.grad(y.sum(), x)
    assert backward_calls == []  # its backward, recording nothing, calls the kernel directly
    with _native.disabled():
        (g_ref,) = torch.autograd.grad(warp_perspective(x, M, (17, 21)).sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-5)
    calls.clear()
    with torch.no_grad():
        assert torch.equal(warp_perspective(x, M, (17, 21)), want) and calls == []
    # a tracer's tensors and vmap's batched ones go through the dispatcher
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = warp_perspective(mode.from_tensor(batch), mode.from_tensor(M), (17, 21))
    assert fake.shape == want.shape and calls == [1]
    got = torch.vmap(lambda x, m: warp_perspective(x[None], m[None], (17, 21))[0])(batch, M)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


# ==================================================================== torch.compile
@pytest.mark.slow
@ignore_compile_warnings
def test_compile_fullgraph_matches_eager(batch):
    torch._dynamo.reset()
    M = homography_batch(3, 19, 23, seed=95).requires_grad_(True)

    def fn(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return warp_perspective(x, m, (17, 21))

    compiled = torch.compile(fn, fullgraph=True)
    got = compiled(batch, M)
    want = fn(batch, M)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    (g_got,) = torch.autograd.grad(got.sum(), M)
    (g_want,) = torch.autograd.grad(want.sum(), M)
    torch.testing.assert_close(g_got, g_want, atol=1e-3, rtol=1e-4)


# ------------------------------------------------------------------- kernel check
_IMG, _H = samples.image(), samples.homography()
_V2 = samples.points(n=1, scale=2.0)[:, 0] - 1.0  # (B, 2) in [-1, 1]
_ANGLE = torch.tensor([10.0, -35.0, 80.0])
_CORNERS = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 8.0], [0.0, 8.0]]).repeat(3, 1, 1)
# name -> (operator, inputs, checked in float16/bfloat16, degenerate crops (None: the default))
KERNEL_CASES = {
    "warp_perspective": (lambda x, H: warp_perspective(x, H, (7, 12)), (_IMG, _H), True, None),
    "warp_perspective_fill": (
        lambda x, H: warp_perspective(x, H, (7, 12), "nearest", "fill", False, torch.tensor([0.5, 1.0], device=x.device)),
        (_IMG, _H), True, None,
    ),
    "warp_affine": (lambda x, H: warp_affine(x, H[:, :2], (9, 10), "bicubic", "border"), (_IMG, _H), True, None),
    "affine": (lambda x, H: affine(x, H[:, :2]), (_IMG, _H), True, None),
    "rotate": (lambda x, a: rotate(x, a), (_IMG, _ANGLE), True, None),
    "rotate_centre": (lambda x, a, c: rotate(x, a, c), (_IMG, _ANGLE, 3.0 * _V2 + 4.0), True, None),
    "translate": (lambda x, t: translate(x, t), (_IMG, 3.0 * _V2), True, None),
    "scale": (lambda x, s: scale(x, s), (_IMG, 1.0 + 0.3 * _V2), True, None),
    "shear": (lambda x, s: shear(x, s, "nearest", "reflection"), (_IMG, 0.3 * _V2), True, None),
    "resize": (lambda x: resize(x, (5, 13)), (_IMG,), True, None),
    # PyTorch's antialiased interpolation has no float16 kernel on the CPU
    "resize_side_antialias": (lambda x: resize(x, 6, "bilinear", side="long", antialias=True), (_IMG,), False, None),
    "get_affine_matrix2d": (
        lambda t, c, s, a: get_affine_matrix2d(t, c, s, a), (_V2, 4.0 + _V2, 1.0 + 0.2 * _V2, _ANGLE), True, (),
    ),
    "get_perspective_transform": (
        get_perspective_transform, (_CORNERS, _CORNERS + 0.5 * samples.points(n=4, scale=1.0)), False, (),
    ),
    "get_rotation_matrix2d": (get_rotation_matrix2d, (4.0 + _V2, _ANGLE, 1.0 + 0.2 * _V2), True, ()),
    "get_shear_matrix2d": (
        lambda c, sx, sy: get_shear_matrix2d(c, sx, sy), (4.0 + _V2, 0.2 * _V2[:, 0], 0.1 * _V2[:, 1]), True, (),
    ),
    "get_translation_matrix2d": (get_translation_matrix2d, (_V2,), True, ()),
    "invert_affine_transform": (invert_affine_transform, (_H[:, :2],), False, ()),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, inputs, low_precision, degenerate = KERNEL_CASES[name]
    options = {} if degenerate is None else {"degenerate": degenerate}
    check_kernel(fn, *inputs, device=device, low_precision=low_precision, **options)
