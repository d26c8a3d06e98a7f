"""Tests for core_ops.geometry.camera: the pinhole camera and the orthographic projection.

References: OpenCV's ``projectPoints`` (zero distortion), Kornia 0.9's ``PinholeCamera``,
``project_points``/``unproject_points`` and orthographic projection, and an image test
of :meth:`PinholeCamera.scale`: a blob rendered at the projection of a 3-D point, average
pooled 2 x 2, has its centroid where the scaled camera projects the point.

Tolerances: float64 projections of O(1) geometry with O(100) focal lengths are compared
to 1e-9 px (rounding ~1e-13; OpenCV computes in float64 too); float32 to 1e-3 px
(rounding ~1e-5 on coordinates up to ~500). The blob centroid is exact up to the
Gaussian's sampling and truncation error, below 1e-12 px for sigma = 2 px kept 15 px
from the borders.
"""

from __future__ import annotations

import cv2
import kornia
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.autograd import gradcheck

from gradcv.core_ops.errors import GradcvError
from gradcv.core_ops.geometry.camera import (
    PinholeCamera,
    dx_project_points_orthographic,
    project_points,
    project_points_orthographic,
    unproject_points,
    unproject_points_orthographic,
)
from tests._kernel_check import check_kernel
from tests.core_ops.geometry import _kernel_samples as samples

F64 = torch.float64


def _rigid(n: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    """``(n, 4, 4)`` random rigid transforms (SciPy rotations, translations in [-1, 1])."""
    rng = np.random.default_rng(seed)
    T = torch.eye(4, dtype=F64).repeat(n, 1, 1)
    T[:, :3, :3] = torch.from_numpy(Rotation.random(n, random_state=rng).as_matrix())
    T[:, :3, 3] = torch.from_numpy(rng.uniform(-1, 1, size=(n, 3)))
    return T.to(dtype)


def _intrinsics(n: int, seed: int = 0, dtype: torch.dtype = F64, skew: bool = False) -> torch.Tensor:
    """``(n, 4, 4)`` intrinsics of ~640 x 480 cameras, focal lengths 300-600 px."""
    g = torch.Generator().manual_seed(seed)
    K = torch.eye(4, dtype=F64).repeat(n, 1, 1)
    K[:, 0, 0] = 300 + 300 * torch.rand(n, generator=g, dtype=F64)
    K[:, 1, 1] = K[:, 0, 0] * (0.9 + 0.2 * torch.rand(n, generator=g, dtype=F64))
    K[:, 0, 2] = 300 + 40 * torch.rand(n, generator=g, dtype=F64)
    K[:, 1, 2] = 220 + 40 * torch.rand(n, generator=g, dtype=F64)
    if skew:
        K[:, 0, 1] = 5 * torch.randn(n, generator=g, dtype=F64)
    return K.to(dtype)


def _camera(n: int = 3, seed: int = 0, dtype: torch.dtype = F64, skew: bool = False) -> PinholeCamera:
    size = torch.full((n,), 480.0, dtype=dtype), torch.full((n,), 640.0, dtype=dtype)
    return PinholeCamera(_intrinsics(n, seed, dtype, skew), _rigid(n, seed, dtype), *size)


def _points_in_front(cam: PinholeCamera, n_points: int, seed: int = 1) -> torch.Tensor:
    """``(B, N, 3)`` world points 2-6 units in front of each camera."""
    g = torch.Generator().manual_seed(seed)
    B, dtype = cam.batch_size, cam.intrinsics.dtype
    local = torch.rand(B, n_points, 3, generator=g, dtype=F64) * torch.tensor([2.0, 2.0, 4.0], dtype=F64)
    local = local - torch.tensor([1.0, 1.0, -2.0], dtype=F64)
    E = cam.extrinsics.to(F64)
    world = (local - E[:, None, :3, 3]) @ E[:, :3, :3]  # R^T (X - t)
    return world.to(dtype)


# ----------------------------------------------------------------- round trips
@pytest.mark.parametrize("skew", [False, True])
def test_project_unproject_round_trip(skew):
    cam = _camera(4, skew=skew)
    X = _points_in_front(cam, 50)
    uv = cam.project(X)
    z = (X @ cam.rotation_matrix.transpose(-1, -2) + cam.translation_vector.transpose(-1, -2))[..., 2:]
    back = cam.unproject(uv, z)
    torch.testing.assert_close(back, X, rtol=0, atol=1e-12)
    # Camera-frame functions.
    Xc = X @ cam.rotation_matrix.transpose(-1, -2) + cam.translation_vector.transpose(-1, -2)
    uv_c = project_points(Xc, cam.camera_matrix)
    torch.testing.assert_close(uv_c, uv, rtol=0, atol=1e-9)
    torch.testing.assert_close(unproject_points(uv_c, Xc[..., 2:], cam.camera_matrix), Xc, rtol=0, atol=1e-12)
    # normalize=True reads the depth as the ray length.
    ray = Xc.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(unproject_points(uv_c, ray, cam.camera_matrix, normalize=True), Xc, rtol=0, atol=1e-12)


def test_round_trip_float32():
    cam = _camera(2, dtype=torch.float32)
    X = _points_in_front(cam, 20)
    uv = cam.project(X)
    z = (X @ cam.rotation_matrix.transpose(-1, -2) + cam.translation_vector.transpose(-1, -2))[..., 2:]
    assert uv.dtype == torch.float32 and cam.unproject(uv, z).dtype == torch.float32
    torch.testing.assert_close(cam.unproject(uv, z), X, rtol=0, atol=1e-4)
    ref = _camera(2).project(X.double())
    torch.testing.assert_close(uv.double(), ref, rtol=0, atol=1e-3)


def test_skew_is_the_full_matrix_product():
    K = _intrinsics(2, skew=True)[:, :3, :3]
    X = torch.rand(2, 7, 3, dtype=F64) + torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    h = X @ K.transpose(-1, -2)
    torch.testing.assert_close(project_points(X, K), h[..., :2] / h[..., 2:], rtol=0, atol=1e-10)


# --------------------------------------------------------------- references
def test_project_points_matches_opencv():
    cam = _camera(3)
    X = _points_in_front(cam, 40)
    for b in range(3):
        K = cam.camera_matrix[b].numpy()
        R, t = cam.rotation_matrix[b].numpy(), cam.translation_vector[b, :, 0].numpy()
        rvec = cv2.Rodrigues(R)[0]
        ref, _ = cv2.projectPoints(X[b].numpy(), rvec, t, K, np.zeros(5))
        np.testing.assert_allclose(cam.project(X)[b].numpy(), ref[:, 0], rtol=0, atol=1e-9)
        # Camera-frame points with zero pose.
        Xc = X[b] @ cam.rotation_matrix[b].T + cam.translation_vector[b, :, 0]
        ref_c, _ = cv2.projectPoints(Xc.numpy(), np.zeros(3), np.zeros(3), K, np.zeros(5))
        np.testing.assert_allclose(project_points(Xc, cam.camera_matrix[b]).numpy(), ref_c[:, 0], rtol=0, atol=1e-9)


def _kornia_camera(cam: PinholeCamera) -> kornia.geometry.camera.PinholeCamera:
    return kornia.geometry.camera.PinholeCamera(cam.intrinsics, cam.extrinsics, cam.height, cam.width)


def test_pinhole_matches_kornia():
    cam = _camera(3)
    kcam = _kornia_camera(cam)
    X = _points_in_front(cam, 30)
    torch.testing.assert_close(cam.project(X), kcam.project(X), rtol=0, atol=1e-9)
    uv = cam.project(X)
    depth = torch.rand(3, 30, 1, dtype=F64) + 1
    torch.testing.assert_close(cam.unproject(uv, depth), kcam.unproject(uv, depth), rtol=0, atol=1e-10)
    torch.testing.assert_close(cam.intrinsics_inverse(), kcam.intrinsics_inverse(), rtol=0, atol=1e-14)
    for name in ("fx", "fy", "cx", "cy", "tx", "ty", "tz", "rt_matrix", "camera_matrix", "rotation_matrix",
                 "translation_vector", "intrinsics", "extrinsics"):  # fmt: skip
        torch.testing.assert_close(getattr(cam, name), getattr(kcam, name), rtol=0, atol=0)
    assert cam.batch_size == kcam.batch_size == 3
    assert cam.device() == kcam.device()


def test_from_parameters_matches_kornia():
    args = dict(fx=torch.tensor([100.0, 200.0]), fy=torch.tensor([110.0, 210.0]), cx=torch.tensor([31.5, 40.0]),
                cy=torch.tensor([23.5, 20.0]), height=48, width=64, tx=torch.tensor([1.0, 2.0]),
                ty=torch.tensor([3.0, 4.0]), tz=torch.tensor([5.0, 6.0]), batch_size=2, device="cpu",
                dtype=torch.float64)  # fmt: skip
    cam = PinholeCamera.from_parameters(**args)
    kcam = kornia.geometry.camera.PinholeCamera.from_parameters(**args)
    for name in ("intrinsics", "extrinsics", "height", "width"):
        torch.testing.assert_close(getattr(cam, name), getattr(kcam, name), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(5, 3), (5, 8, 3)])
def test_project_points_matches_kornia(shape):
    K = _intrinsics(5)[:, :3, :3]
    X = torch.rand(*shape, dtype=F64) + torch.tensor([-0.5, -0.5, 1.0], dtype=F64)
    torch.testing.assert_close(project_points(X, K), kornia.geometry.camera.project_points(X, K), rtol=0, atol=1e-10)
    uv = torch.rand(*shape[:-1], 2, dtype=F64) * 400
    depth = torch.rand(*shape[:-1], 1, dtype=F64) + 1
    for normalize in (False, True):
        ours = unproject_points(uv, depth, K, normalize=normalize)
        ref = kornia.geometry.camera.unproject_points(uv, depth, K, normalize=normalize)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_project_points_broadcasting():
    """``(B, 3, 3)`` serves ``(B, M, N, 3)`` points (one matrix per leading index); ``(3, 3)`` serves any."""
    K = _intrinsics(2)[:, :3, :3]
    X = torch.rand(2, 3, 4, 3, dtype=F64) + torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    out = project_points(X, K)
    assert out.shape == (2, 3, 4, 2)
    for b in range(2):
        torch.testing.assert_close(out[b], project_points(X[b], K[b]), rtol=0, atol=0)
    assert project_points(X, K[0]).shape == (2, 3, 4, 2)


# -------------------------------------------------------------------- scale
def _blob_centroid(centre: torch.Tensor, height: int, width: int, pool: int, sigma: float) -> torch.Tensor:
    """Render a Gaussian blob at ``centre`` (pixel centres at integers) in a ``height x width``
    image, average-pool ``pool x pool`` blocks, return the centroid ``(x, y)`` of the pooled
    image in its own pixel coordinates."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=F64), torch.arange(width, dtype=F64), indexing="ij")
    img = torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    small = torch.nn.functional.avg_pool2d(img[None, None], pool)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(small.shape[0], dtype=F64), torch.arange(small.shape[1], dtype=F64), indexing="ij")
    total = small.sum()
    return torch.stack(((small * xs).sum() / total, (small * ys).sum() / total))


@pytest.mark.parametrize("pool", [2, 4])
def test_scale_keeps_pixel_centres_on_a_downsampled_image(pool):
    """Pixel ``x'`` of an image average-pooled by ``p`` has its centre at ``p x' + (p - 1) / 2``
    of the full image (``2 x' + 0.5`` for ``p = 2``), so the pooled camera must project to
    ``(x - (p - 1) / 2) / p``: what ``scale(1 / p)`` gives, and what Kornia's ``cx' = cx / p``
    misses by ``(p - 1) / (2 p)`` px.

    The centroid of the pooled blob is that of the full one mapped this way up to the
    blob's aliasing at the pooled rate, ``~exp(-2 pi^2 sigma^2 / p^2)`` (``exp(-44)`` for
    ``sigma = 1.5 p``), and its truncation at 8 sigma from the borders (``exp(-32)``).
    """
    H, W = 192, 256
    sigma = 1.5 * pool
    K = torch.eye(4, dtype=F64)[None]
    K[0, 0, 0], K[0, 1, 1], K[0, 0, 2], K[0, 1, 2] = 180.0, 190.0, 122.6, 99.4
    E = _rigid(1, seed=3)
    cam = PinholeCamera(K, E, torch.tensor([float(H)], dtype=F64), torch.tensor([float(W)], dtype=F64))
    small = cam.scale(torch.tensor([1.0 / pool], dtype=F64))
    assert small.height.item() == H / pool and small.width.item() == W / pool
    kornia_small = _kornia_camera(cam).scale(torch.tensor([1.0 / pool], dtype=F64))
    for local in ([0.1, -0.2, 3.0], [-0.4, 0.1, 2.0], [0.5, 0.35, 4.0]):
        X = (torch.tensor([local], dtype=F64) - E[:, :3, 3]) @ E[0, :3, :3]  # world point
        full = cam.project(X)[0]
        margin = 8 * sigma
        assert (full >= margin).all() and full[0] <= W - 1 - margin and full[1] <= H - 1 - margin, full
        seen = _blob_centroid(full, H, W, pool, sigma)
        torch.testing.assert_close(small.project(X)[0], seen, rtol=0, atol=1e-9)
        off = (kornia_small.project(X)[0] - seen).abs()
        torch.testing.assert_close(off, torch.full((2,), (pool - 1) / (2 * pool), dtype=F64), rtol=0, atol=1e-9)


def test_scale_formula_and_copies():
    cam = _camera(3, skew=True)
    s = torch.tensor([0.5, 2.0, 0.3], dtype=F64)
    before = cam.intrinsics.clone()
    scaled = cam.scale(s)
    torch.testing.assert_close(cam.intrinsics, before, rtol=0, atol=0)  # a new camera
    torch.testing.assert_close(scaled.fx, s * cam.fx, rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled.fy, s * cam.fy, rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled.cx, s * (cam.cx + 0.5) - 0.5, rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled.cy, s * (cam.cy + 0.5) - 0.5, rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled.intrinsics[:, 0, 1], s * cam.intrinsics[:, 0, 1], rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled.height, s * 480, rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled.width, s * 640, rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled.extrinsics, cam.extrinsics, rtol=0, atol=0)
    # A float and a (1,) tensor scale every camera; up then down is the identity.
    torch.testing.assert_close(cam.scale(2.0).scale(torch.tensor([0.5], dtype=F64)).intrinsics, before, rtol=0, atol=1e-12)
    # scale_ updates the camera itself.
    same = cam.clone()
    assert same.scale_(s) is same
    torch.testing.assert_close(same.intrinsics, scaled.intrinsics, rtol=0, atol=0)
    torch.testing.assert_close(same.width, scaled.width, rtol=0, atol=0)


def test_camera_owns_copies_and_setters():
    K, E = _intrinsics(2), _rigid(2)
    h, w = torch.tensor([480.0, 480.0], dtype=F64), torch.tensor([640.0, 640.0], dtype=F64)
    cam = PinholeCamera(K, E, h, w)
    K_before, E_before = K.clone(), E.clone()
    cam.tx = torch.tensor([7.0, 8.0], dtype=F64)
    cam.ty = 1.0
    cam.tz = torch.tensor([3.0, 4.0], dtype=F64)
    torch.testing.assert_close(cam.translation_vector[..., 0], torch.tensor([[7.0, 1.0, 3.0], [8.0, 1.0, 4.0]], dtype=F64))
    torch.testing.assert_close(E, E_before, rtol=0, atol=0)
    torch.testing.assert_close(K, K_before, rtol=0, atol=0)
    c2 = cam.clone()
    c2.tx = 0.0
    assert (cam.tx != 0).all()


# ------------------------------------------------------------- orthographic
@pytest.mark.parametrize("shape", [(3,), (7, 3), (2, 5, 3)])
def test_orthographic_matches_kornia(shape):
    from kornia.geometry.camera import projection_orthographic as ko

    X = torch.randn(*shape, dtype=F64)
    torch.testing.assert_close(project_points_orthographic(X), ko.project_points_orthographic(X), rtol=0, atol=0)
    torch.testing.assert_close(dx_project_points_orthographic(X), ko.dx_project_points_orthographic(X), rtol=0, atol=0)
    uv = X[..., :2]
    for ext in (X[..., 2], X[..., 2:]):
        ours = unproject_points_orthographic(uv, ext)
        torch.testing.assert_close(ours, ko.unproject_points_orthographic(uv, ext), rtol=0, atol=0)
        torch.testing.assert_close(ours, X, rtol=0, atol=0)


# ---------------------------------------------------------------- batching
def test_batched_equals_per_sample_and_empty():
    cam = _camera(3)
    X = _points_in_front(cam, 10)
    out = cam.project(X)
    for b in range(3):
        single = PinholeCamera(cam.intrinsics[b : b + 1], cam.extrinsics[b : b + 1], cam.height[b : b + 1], cam.width[b : b + 1])
        torch.testing.assert_close(single.project(X[b : b + 1]), out[b : b + 1], rtol=0, atol=1e-12)
    assert cam.project(X[:, :0]).shape == (3, 0, 2)
    empty = PinholeCamera(cam.intrinsics[:0], cam.extrinsics[:0], cam.height[:0], cam.width[:0])
    assert empty.project(X[:0]).shape == (0, 10, 2)


def test_inputs_unchanged():
    cam = _camera(2)
    X = _points_in_front(cam, 5)
    X0 = X.clone()
    uv = cam.project(X)
    uv0 = uv.clone()
    cam.unproject(uv, torch.ones(2, 5, 1, dtype=F64))
    assert torch.equal(X, X0) and torch.equal(uv, uv0)


# --------------------------------------------------------------- gradients
def test_gradcheck_project_unproject():
    K = _intrinsics(2, skew=True).requires_grad_(True)
    E = _rigid(2).requires_grad_(True)
    size = torch.tensor([480.0, 480.0], dtype=F64), torch.tensor([640.0, 640.0], dtype=F64)
    X = _points_in_front(PinholeCamera(K.detach(), E.detach(), *size), 4).requires_grad_(True)

    def project(K, E, X):
        return PinholeCamera(K, E, *size).project(X)

    def unproject(K, E, uv, depth):
        return PinholeCamera(K, E, *size).unproject(uv, depth)

    def scaled(K, s, X):
        return PinholeCamera(K, E.detach(), *size).scale(s).project(X)

    assert gradcheck(project, (K, E, X), fast_mode=False)
    uv = (torch.rand(2, 4, 2, dtype=F64) * 400).requires_grad_(True)
    depth = (torch.rand(2, 4, 1, dtype=F64) + 1).requires_grad_(True)
    assert gradcheck(unproject, (K, E, uv, depth), fast_mode=False)
    assert gradcheck(scaled, (K, torch.tensor([0.5, 0.7], dtype=F64, requires_grad=True), X), fast_mode=False)
    assert gradcheck(lambda u, d: unproject_points(u, d, K.detach()[:, :3, :3], normalize=True), (uv, depth), fast_mode=False)


# -------------------------------------------------------------- bad input
_K, _E = _intrinsics(2), _rigid(2)
_H, _W = torch.full((2,), 480.0, dtype=F64), torch.full((2,), 640.0, dtype=F64)
_CAM = PinholeCamera(_K, _E, _H, _W)
BAD_INPUT = [
    (lambda: PinholeCamera(_K.numpy(), _E, _H, _W), TypeError, "intrinsics"),
    (lambda: PinholeCamera(_K[:, :3, :3], _E, _H, _W), ValueError, "intrinsics"),
    (lambda: PinholeCamera(_K.long(), _E, _H, _W), TypeError, "intrinsics"),
    (lambda: PinholeCamera(_K, _E[:1], _H, _W), ValueError, "extrinsics"),
    (lambda: PinholeCamera(_K, _E.float(), _H, _W), TypeError, "intrinsics, extrinsics"),
    (lambda: PinholeCamera(_K, _E, _H[:, None], _W), ValueError, "height"),
    (lambda: PinholeCamera(_K, _E, _H, _W[:1]), ValueError, "width"),
    (lambda: _CAM.project(torch.ones(3, dtype=F64)), ValueError, "point_3d"),
    (lambda: _CAM.project(torch.ones(2, 4, 2, dtype=F64)), ValueError, "point_3d"),
    (lambda: _CAM.project(torch.ones(3, 4, 3, dtype=F64)), ValueError, "extrinsics, point_3d"),
    (lambda: project_points(torch.ones(2, 4, 3), torch.eye(3).repeat(3, 1, 1)), ValueError, "camera_matrix, point_3d"),
    (lambda: _CAM.unproject(torch.ones(2, 4, 2, dtype=F64), torch.ones(2, 4, dtype=F64)), ValueError, "depth"),
    (lambda: _CAM.scale("2"), TypeError, "scale_factor"),
    (lambda: _CAM.scale(torch.ones(3, dtype=F64)), ValueError, "scale_factor"),
    (lambda: project_points(torch.ones(4, 2), torch.eye(3)), ValueError, "point_3d"),
    (lambda: project_points(torch.ones(4, 3), torch.eye(4)), ValueError, "camera_matrix"),
    (lambda: project_points(torch.ones(4, 3, dtype=torch.int64), torch.eye(3)), TypeError, "point_3d"),
    (lambda: project_points(torch.ones(4, 3), torch.eye(3, dtype=F64)), TypeError, "point_3d, camera_matrix"),
    (lambda: unproject_points(torch.ones(4, 2), [1.0], torch.eye(3)), TypeError, "depth"),
    (lambda: unproject_points(torch.ones(4, 2), torch.ones(4, 2), torch.eye(3)), ValueError, "depth"),
    (lambda: project_points_orthographic(torch.ones(4, 2)), ValueError, "points_in_camera"),
    (lambda: unproject_points_orthographic(torch.ones(4, 2), torch.ones(3)), ValueError, "extension"),
]


@pytest.mark.parametrize("call, error, argument", BAD_INPUT, ids=[f"{i}-{a}" for i, (_, _, a) in enumerate(BAD_INPUT)])
def test_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch


# ------------------------------------------------------------------- kernel check
_P3 = samples.points(d=3) + torch.tensor([0.0, 0.0, 2.0])  # in front of the camera
KERNEL_CASES = {
    "project_points": (project_points, (_P3, samples.camera_matrix())),
    "unproject_points": (
        lambda p, d, K: unproject_points(p, d, K, True), (samples.points(), samples.points(d=1) + 1.0, samples.camera_matrix()),
    ),
    "project_points_orthographic": (project_points_orthographic, (_P3,)),
    "dx_project_points_orthographic": (dx_project_points_orthographic, (_P3,)),
    "unproject_points_orthographic": (unproject_points_orthographic, (samples.points(), samples.points(d=1))),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, inputs = KERNEL_CASES[name]
    check_kernel(fn, *inputs, device=device, degenerate=())
