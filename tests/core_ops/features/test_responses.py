"""Harris, GFTT, Hessian and DoG responses against Kornia and OpenCV on a real image crop."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from gradcv.core_ops.errors import ArgumentValueError, DTypeError, GradcvError, ShapeError
from gradcv.core_ops.features.responses import (
    BlobDoG,
    BlobDoGSingle,
    BlobHessian,
    CornerGFTT,
    CornerHarris,
    dog_response,
    dog_response_single,
    gftt_response,
    harris_response,
    hessian_response,
)
from tests.helpers import assert_standard, to_tensor

kornia_feature = pytest.importorskip("kornia.feature")


@pytest.fixture(scope="module")
def crop(photo_gray) -> np.ndarray:
    """A 60 x 77 grayscale crop (odd width) of grace_hopper, float64 in [0, 1]."""
    return np.ascontiguousarray(photo_gray[0][200:260, 180:257], dtype=np.float64)


def _cv_gradients(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Normalised Sobel: the raw OpenCV numbers are 8 times the slope.
    dx = cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8
    dy = cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8
    return dx, dy


def _cv_structure(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dx, dy = _cv_gradients(img)
    blur = lambda a: cv2.GaussianBlur(a, (7, 7), 1.0, borderType=cv2.BORDER_REFLECT_101)  # noqa: E731
    return blur(dx * dx), blur(dy * dy), blur(dx * dy)


def test_harris_matches_opencv_primitives(crop, device):
    a, c, b = _cv_structure(crop)
    ref = a * c - b * b - 0.05 * (a + c) ** 2
    ours = harris_response(to_tensor(crop, torch.float64).to(device), 0.05)[0, 0].cpu().numpy()
    assert np.abs(ours - ref).max() <= 1e-10 * np.abs(ref).max()
    assert np.abs(ref).max() > 1e-5  # a textured crop (Harris scales as intensity^4): the comparison means something


def test_gftt_matches_opencv_eigenvalues(crop, device):
    a, c, b = _cv_structure(crop)
    ref = np.linalg.eigvalsh(np.stack([np.stack([a, b], -1), np.stack([b, c], -1)], -1))[..., 0]
    ours = gftt_response(to_tensor(crop, torch.float64).to(device))[0, 0].cpu().numpy()
    assert np.abs(ours - ref).max() <= 1e-12


def test_hessian_is_the_true_determinant(crop, device):
    # Kornia 0.9's 'sobel' second derivatives are the normalised Sobel applied twice:
    # OpenCV's Sobel of the Sobel, divided by 8 * 8 (interior: the border differs).
    d = lambda a, ox, oy: cv2.Sobel(a, cv2.CV_64F, ox, oy, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8  # noqa: E731
    dx, dy = d(crop, 1, 0), d(crop, 0, 1)
    ref = d(dx, 1, 0) * d(dy, 0, 1) - d(dx, 0, 1) ** 2
    ours = hessian_response(to_tensor(crop, torch.float64).to(device))[0, 0].cpu().numpy()
    assert np.abs(ours - ref)[2:-2, 2:-2].max() <= 1e-12
    x = to_tensor(crop, torch.float64)
    torch.testing.assert_close(hessian_response(x.to(device)).cpu(), kornia_feature.hessian_response(x), rtol=0, atol=1e-14)
    # On a quadratic the determinant is exact: f = x^2 + 3xy - y^2 -> det = 2 * -2 - 9 = -13.
    y, x = torch.meshgrid(torch.arange(9.0, dtype=torch.float64), torch.arange(9.0, dtype=torch.float64), indexing="ij")
    q = (x * x + 3 * x * y - y * y)[None, None].to(device)
    for mode in ("sobel", "diff"):
        torch.testing.assert_close(hessian_response(q, mode)[0, 0, 2:-2, 2:-2].cpu(), torch.full((5, 5), -13.0, dtype=torch.float64))


@pytest.mark.parametrize("grads_mode", ["sobel", "diff"])
def test_harris_gftt_match_kornia(crop, grads_mode, device):
    x = torch.cat([to_tensor(crop, torch.float64), to_tensor(crop[::-1, ::-1].copy() ** 2, torch.float64)])
    s = torch.tensor([1.3, 2.0], dtype=torch.float64)
    xd, sd = x.to(device), s.to(device)
    torch.testing.assert_close(harris_response(xd, 0.04, grads_mode, sd).cpu(), kornia_feature.harris_response(x, 0.04, grads_mode, s), rtol=0, atol=1e-14)
    torch.testing.assert_close(gftt_response(xd, grads_mode, sd).cpu(), kornia_feature.gftt_response(x, grads_mode, s), rtol=0, atol=1e-14)


def test_hessian_diff_matches_kornia(crop, device):
    x = to_tensor(crop, torch.float64)
    torch.testing.assert_close(hessian_response(x.to(device), "diff").cpu(), kornia_feature.hessian_response(x, "diff"), rtol=0, atol=1e-14)


def _rotated_blob(theta: float) -> torch.Tensor:
    """An anisotropic Gaussian blob (sigmas 3 and 1.8) with its long axis at ``theta``, centred in 41 x 41."""
    y, x = torch.meshgrid(torch.arange(41.0, dtype=torch.float64) - 20, torch.arange(41.0, dtype=torch.float64) - 20, indexing="ij")
    u = math.cos(theta) * x + math.sin(theta) * y
    v = -math.sin(theta) * x + math.cos(theta) * y
    return torch.exp(-(u**2) / (2 * 3.0**2) - v**2 / (2 * 1.8**2))[None, None]


def test_hessian_rotation_invariant(device):
    # The determinant at the blob's centre is the same whatever the blob's orientation; a
    # determinant whose dxy were scaled unlike dxx and dyy would change with the angle.
    ours = [hessian_response(_rotated_blob(t).to(device))[0, 0, 20, 20].item() for t in (0.0, math.pi / 6, math.pi / 4)]
    assert max(ours) / min(ours) < 1.03
    assert ours[0] > 0.015  # a blob: positive determinant


@pytest.mark.parametrize("fn", [lambda x: harris_response(x), gftt_response, hessian_response])
def test_rot90_equivariant(crop, fn, device):
    x = to_tensor(crop, torch.float64).to(device)
    torch.testing.assert_close(fn(torch.rot90(x, 1, (-2, -1))), torch.rot90(fn(x), 1, (-2, -1)), rtol=0, atol=1e-13)


def test_dog_response_and_single_match_kornia(crop, device):
    stack = torch.rand(2, 1, 5, 12, 13, dtype=torch.float64)
    torch.testing.assert_close(dog_response(stack.to(device)).cpu(), kornia_feature.dog_response(stack), rtol=0, atol=0)
    assert dog_response(stack.to(device)).shape == (2, 1, 4, 12, 13)
    x = to_tensor(crop, torch.float64)
    for s1, s2 in [(1.0, 1.6), (0.7, 2.3)]:
        torch.testing.assert_close(dog_response_single(x.to(device), s1, s2).cpu(), kornia_feature.dog_response_single(x, s1, s2), rtol=0, atol=1e-14)
        torch.testing.assert_close(BlobDoGSingle(s1, s2)(x.to(device)), dog_response_single(x.to(device), s1, s2), rtol=0, atol=0)


def test_modules_equal_functions(crop, device):
    x = to_tensor(crop).to(device)
    s = torch.tensor([2.0], device=device)
    torch.testing.assert_close(CornerHarris(0.05)(x, s), harris_response(x, 0.05, sigmas=s), rtol=0, atol=0)
    torch.testing.assert_close(CornerHarris(torch.tensor(0.05), "diff")(x), harris_response(x, 0.05, "diff"), rtol=0, atol=0)
    torch.testing.assert_close(CornerGFTT()(x, s), gftt_response(x, sigmas=s), rtol=0, atol=0)
    torch.testing.assert_close(BlobHessian()(x, s), hessian_response(x, sigmas=s), rtol=0, atol=0)
    stack = torch.rand(1, 1, 4, 8, 8, device=device)
    torch.testing.assert_close(BlobDoG()(stack, s), dog_response(stack), rtol=0, atol=0)
    assert "CornerHarris" in repr(CornerHarris(0.04)) and "sigma1=1.0" in repr(BlobDoGSingle())


@pytest.mark.parametrize("mode", ["sobel", "diff"])
def test_hessian_in_chunks_equals_whole_batch(monkeypatch, mode, device):
    # Large inputs are computed a block of rows at a time on the CPU (no autograd; one pass
    # on a GPU): same values exactly.
    from gradcv.core_ops.features import responses

    x = torch.rand(5, 2, 23, 20, dtype=torch.float64).to(device).transpose(-1, -2)  # non-contiguous
    s = torch.rand(5, dtype=torch.float64).to(device) + 0.5
    whole = hessian_response(x, mode, s)
    plain = hessian_response(x, mode)
    # Blocks of 8 rows (the smallest): 23 rows in 3 blocks, the last one short.
    monkeypatch.setattr(responses, "_CHUNK_BYTES", 1)
    assert torch.equal(hessian_response(x, mode, s), whole)
    assert torch.equal(hessian_response(x, mode), plain)
    assert torch.equal(hessian_response(x, mode, s)[3:4], hessian_response(x[3:4], mode, s[3:4]))
    inplace = x.clone()
    assert responses._hessian_response_into(inplace, mode, s, inplace) is inplace
    assert torch.equal(inplace, whole)
    # With autograd it stays one expression: the gradient flows.
    xg = x.clone().requires_grad_(True)
    hessian_response(xg, mode, s).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_sigmas_scale_by_fourth_power(crop, device):
    x = to_tensor(crop, torch.float64).to(device).expand(2, -1, -1, -1)
    s = torch.tensor([1.0, 2.0], dtype=torch.float64, device=device)
    for fn in (harris_response, gftt_response, hessian_response):
        out = fn(x, sigmas=s)
        torch.testing.assert_close(out[1], 16 * out[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("fn", [lambda x: harris_response(x), gftt_response, hessian_response, lambda x: dog_response_single(x)])
def test_standard_batch_noncontiguous_empty(photo_gray, fn, device):
    x = torch.stack([to_tensor(photo_gray[i][50:80, 60:95])[0] for i in range(3)]).repeat(1, 2, 1, 1).to(device)
    assert_standard(fn, x, atol=1e-6)
    assert fn(x.double()).dtype == torch.float64 and fn(x).dtype == torch.float32


@pytest.mark.parametrize(
    "fn",
    [lambda x: harris_response(x, 0.04), gftt_response, hessian_response, lambda x: dog_response_single(x, 0.8, 1.2),
     lambda x: harris_response(x, 0.04, "diff"), lambda x: hessian_response(x, "diff")],
)
def test_gradcheck(fn, device):
    torch.manual_seed(0)
    x = torch.rand(1, 1, 6, 7, dtype=torch.float64).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=False)


def test_gradcheck_sigmas(device):
    x = torch.rand(2, 1, 6, 7, dtype=torch.float64).to(device).requires_grad_(True)
    s = torch.tensor([1.3, 2.0], dtype=torch.float64, device=device, requires_grad=True)
    for fn in (lambda a, b: harris_response(a, 0.04, sigmas=b), lambda a, b: gftt_response(a, sigmas=b), lambda a, b: hessian_response(a, sigmas=b)):
        assert torch.autograd.gradcheck(fn, (x, s), fast_mode=False)


def test_gradcheck_dog(device):
    x = torch.rand(1, 1, 3, 4, 5, dtype=torch.float64).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(dog_response, (x,), fast_mode=False)


def test_gftt_gradient_finite_on_flat_image(device):
    x = torch.full((1, 1, 9, 9), 0.5, dtype=torch.float64, device=device, requires_grad=True)

    gftt_response(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_bad_input():
    with pytest.raises(ShapeError, match="^input"):
        harris_response(torch.rand(8, 8))
    with pytest.raises(DTypeError, match="^input"):
        hessian_response(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="^sigmas"):
        gftt_response(torch.rand(2, 1, 8, 8), sigmas=torch.ones(3))
    with pytest.raises(ArgumentValueError, match="^grads_mode"):
        BlobHessian("scharr")
    with pytest.raises(ArgumentValueError, match="^grads_mode"):
        harris_response(torch.rand(1, 1, 8, 8), grads_mode="x")
    with pytest.raises(ShapeError, match="^input"):
        dog_response(torch.rand(1, 1, 8, 8))
    with pytest.raises(ArgumentValueError, match="^sigma1"):
        dog_response_single(torch.rand(1, 1, 8, 8), -1.0)
    with pytest.raises(GradcvError, match="^k"):
        CornerHarris("a")  # type: ignore[arg-type]
