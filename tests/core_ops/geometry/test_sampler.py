"""The pixel-coordinate bilinear sampler under the warps (``core_ops.geometry._sampler``).

What is pinned: the C loops equal the PyTorch path (which CI also runs alone, with
``GRADCV_NATIVE=0``) and ``grid_sample`` on the same positions, for every padding,
in float32 (1e-5: different but equally rounded sums) and float64 (1e-12); both
gradients, checked by ``gradcheck`` in float64 through the operators and through
``warp_perspective``'s matrix; an identity warp returns a photograph exactly at odd
sizes (what ``grid_sample``'s normalised coordinates cannot do in float32);
undefined positions; layouts; batches; threads; the operators' registration; errors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops import _native
from gradcv.core_ops.errors import ArgumentValueError, ShapeError
from gradcv.core_ops.geometry import warp_affine, warp_perspective
from gradcv.core_ops.geometry._sampler import sample_bilinear, warp_bilinear_matrix
from gradcv.experiments._images import sample_photo

PADDINGS = ["zeros", "border", "reflection"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
needs_native = pytest.mark.skipif(_native.library() is None, reason=f"native kernels unavailable: {_native.status()}")


def _photo(dtype: torch.dtype = torch.float32, h: int = 37, w: int = 53) -> torch.Tensor:
    img = sample_photo()[None]
    return F.interpolate(img, size=(h, w), mode="area").to(dtype)


def _grid(b: int, h: int, w: int, src_hw: tuple[int, int], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Positions inside, across the edges and far outside of a ``src_hw`` image."""
    g = torch.Generator().manual_seed(seed)
    hs, ws = src_hw
    x = torch.rand(b, h, w, generator=g, dtype=torch.float64) * (ws + 8) - 4
    y = torch.rand(b, h, w, generator=g, dtype=torch.float64) * (hs + 8) - 4
    grid = torch.stack((x, y), -1)
    grid[:, 0, 0] = torch.tensor([3.0 * ws, -5.0 * hs], dtype=torch.float64)  # far out, beyond a reflection period
    grid[:, 0, 1] = torch.tensor([ws - 1.0, hs - 1.0], dtype=torch.float64)  # the last pixel exactly
    return grid.to(dtype)


def _matrix(b: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    """Output-to-source perspective matrices with a little rotation, scale and shift."""
    g = torch.Generator().manual_seed(seed)
    m = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    m[:, :2, :2] += 0.2 * torch.rand(b, 2, 2, generator=g, dtype=torch.float64) - 0.1
    m[:, :2, 2] = 6 * torch.rand(b, 2, generator=g, dtype=torch.float64) - 3
    m[:, 2, :2] = 0.004 * torch.rand(b, 2, generator=g, dtype=torch.float64) - 0.002
    return m.to(dtype)


def _grid_sample(image: torch.Tensor, grid: torch.Tensor, padding: str) -> torch.Tensor:
    h, w = image.shape[-2:]
    g = grid.double()
    u = torch.stack(((2 * g[..., 0] + 1) / w - 1, (2 * g[..., 1] + 1) / h - 1), -1)
    return F.grid_sample(image.double(), u, padding_mode=padding, align_corners=False)


def _both(fn, *args):
    native = fn(*args)
    with _native.disabled():
        return native, fn(*args)


# ------------------------------------------------------------------ forward values
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", PADDINGS)
def test_grid_sampling_is_grid_sample_and_the_pytorch_path(padding, dtype, device):
    image = _photo(dtype).repeat(2, 1, 1, 1)
    grid = _grid(2, 9, 11, image.shape[-2:], dtype)
    native, torch_path = _both(sample_bilinear, image.to(device), grid.to(device), padding)
    reference = _grid_sample(image, grid, padding).to(dtype)
    torch.testing.assert_close(native.cpu(), reference, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(torch_path.cpu(), reference, atol=TOL[dtype], rtol=0)
    assert native.dtype == dtype and native.shape == (2, 3, 9, 11) and native.device == torch.device(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", PADDINGS)
def test_matrix_warps_sample_at_the_projected_positions(padding, dtype, device):
    image = _photo(dtype).repeat(3, 1, 1, 1)
    m = _matrix(3)
    native, torch_path = (r.cpu() for r in _both(warp_bilinear_matrix, image.to(device), m.to(device), (15, 21), padding))
    ys, xs = torch.meshgrid(torch.arange(15.0, dtype=torch.float64), torch.arange(21.0, dtype=torch.float64), indexing="ij")
    n = torch.einsum("bij,hwj->bhwi", m, torch.stack((xs, ys, torch.ones_like(xs)), -1))
    reference = _grid_sample(image, n[..., :2] / n[..., 2:], padding).to(dtype)
    torch.testing.assert_close(native, reference, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(torch_path, reference, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("size", [(37, 53), (61, 97), (300, 400)])
@pytest.mark.parametrize("warp", ["perspective", "affine"])
def test_an_identity_warp_returns_a_photograph_exactly_in_float32(warp, size, device):
    image = _photo(torch.float32, *size).to(device)
    eye = torch.eye(3, device=device)
    if warp == "perspective":
        out = warp_perspective(image, eye[None], size, padding_mode="border")
    else:
        out = warp_affine(image, eye[None, :2], size)
    assert (out - image).abs().max() <= 1e-6


def test_integer_shifts_are_exact_and_blank_outside(device):
    image = _photo(torch.float32, 31, 45).to(device)
    shift = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]]], device=device)
    out = warp_perspective(image, shift, (31, 45))
    torch.testing.assert_close(out[..., :29, 3:], image[..., 2:, :42], atol=0, rtol=0)
    assert out[..., :, :3].abs().max() == 0 and out[..., 29:, :].abs().max() == 0


@pytest.mark.parametrize("padding", PADDINGS)
def test_undefined_positions_read_zero_with_zero_gradient(padding, device):
    image = _photo(torch.float64, 8, 9).to(device).requires_grad_(True)
    grid = _grid(1, 4, 5, (8, 9), torch.float64).to(device)
    grid[0, 1, 2, 0] = float("nan")
    grid[0, 2, 3, 1] = float("inf")
    grid.requires_grad_(True)
    for disabled in (False, True):
        with _native.disabled() if disabled else torch.enable_grad():
            out = sample_bilinear(image, grid, padding)
            gi, gg = torch.autograd.grad(out.sum(), (image, grid))
        assert out[0, :, 1, 2].abs().max() == 0 and out[0, :, 2, 3].abs().max() == 0
        assert torch.isfinite(gi).all() and torch.isfinite(gg).all()
        assert gg[0, 1, 2].abs().max() == 0 and gg[0, 2, 3].abs().max() == 0
    # a matrix whose last row vanishes at a pixel: that pixel reads 0
    m = torch.eye(3, dtype=torch.float64, device=device)[None].clone()
    m[0, 2] = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64, device=device)  # d = x - 2: zero at x = 2
    for out in _both(warp_bilinear_matrix, image.detach(), m, (3, 5), padding):
        assert out[..., 2].abs().max() == 0 and torch.isfinite(out).all()


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("native", [True, False])
def test_gradcheck_through_the_operators(padding, native, device):
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 2, 6, 7, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    grid = _grid(2, 3, 4, (6, 7), torch.float64, seed=2)
    grid[:, 0, 0] = torch.tensor([8.3, -1.7], dtype=torch.float64)  # outside, within reach of reflection and border
    grid[:, 0, 1] = torch.tensor([5.6, 4.2], dtype=torch.float64)  # not the kink of an integer position
    grid = grid.to(device).requires_grad_(True)
    matrix = _matrix(2, seed=3).to(device).requires_grad_(True)
    with torch.enable_grad() if native else _native.disabled():
        assert torch.autograd.gradcheck(lambda i, q: sample_bilinear(i, q, padding), (image, grid))
        assert torch.autograd.gradcheck(lambda i, m: warp_bilinear_matrix(i, m, (4, 5), padding), (image, matrix))


def test_gradcheck_of_warp_perspective_with_respect_to_the_homography(device):
    g = torch.Generator().manual_seed(4)
    image = torch.rand(1, 2, 9, 8, generator=g, dtype=torch.float64).to(device)
    M = torch.linalg.inv(_matrix(1, seed=5)).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: warp_perspective(image, m, (7, 8), padding_mode="border"), (M,))
    A = M.detach()[:, :2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: warp_affine(image, a, (7, 8)), (A,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", PADDINGS)
def test_native_gradients_are_the_pytorch_paths(padding, dtype):
    image = _photo(dtype).repeat(2, 1, 1, 1).requires_grad_(True)
    grid = _grid(2, 9, 11, image.shape[-2:], dtype).requires_grad_(True)
    matrix = _matrix(2).requires_grad_(True)
    weights = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(6), dtype=dtype)

    def grads():
        a = torch.autograd.grad((sample_bilinear(image, grid, padding) * weights).sum(), (image, grid))
        b = torch.autograd.grad((warp_bilinear_matrix(image, matrix, (9, 11), padding) * weights).sum(), (image, matrix))
        return a + b

    native, torch_path = _both(grads)
    for a, b in zip(native, torch_path):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, atol=10 * TOL[dtype] * scale, rtol=0)
    # and the image gradient is grid_sample's
    (reference,) = torch.autograd.grad((_grid_sample(image, grid.detach(), padding) * weights).sum(), (image,))
    torch.testing.assert_close(native[0], reference.to(dtype), atol=10 * TOL[dtype], rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # functorch's own import
def test_forward_mode_and_functorch_differentiate_the_pytorch_code():
    image = _photo(torch.float64, 8, 9)
    m = _matrix(1)
    jac = torch.func.jacrev(lambda q: warp_bilinear_matrix(image, q, (3, 4), "zeros"))(m)
    tangent = torch.rand_like(m)
    _, jvp = torch.func.jvp(lambda q: warp_bilinear_matrix(image, q, (3, 4), "zeros"), (m,), (tangent,))
    torch.testing.assert_close(jvp, torch.einsum("...ij,ij->...", jac[..., 0, :, :], tangent[0]), atol=1e-10, rtol=0)
    m.requires_grad_(True)
    (grad,) = torch.autograd.grad(warp_bilinear_matrix(image, m, (3, 4), "zeros").sum(), (m,))
    torch.testing.assert_close(jac.sum((0, 1, 2, 3)), grad, atol=1e-10, rtol=0)


# --------------------------------------------------------------- layouts, batches
def test_noncontiguous_inputs_and_batches_match_the_loop(device):
    image = (_photo(torch.float32).repeat(3, 1, 1, 1) * torch.tensor([1.0, 0.5, 2.0])[:, None, None, None]).to(device)
    grid = _grid(3, 9, 11, image.shape[-2:], torch.float32).to(device)
    m = _matrix(3).to(device)
    whole = sample_bilinear(image, grid, "border")
    strided = sample_bilinear(image.to(memory_format=torch.channels_last), grid.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3), "border")
    torch.testing.assert_close(strided, whole, atol=0, rtol=0)
    loop = torch.cat([sample_bilinear(image[i : i + 1], grid[i : i + 1], "border") for i in range(3)])
    torch.testing.assert_close(loop, whole, atol=0, rtol=0)
    warped = warp_bilinear_matrix(image, m, (9, 11))
    loop = torch.cat([warp_bilinear_matrix(image[i : i + 1], m[i : i + 1], (9, 11)) for i in range(3)])
    torch.testing.assert_close(loop, warped, atol=0, rtol=0)
    torch.testing.assert_close(warp_bilinear_matrix(image[:, :, ::2, 1::2], m, (9, 11)), warp_bilinear_matrix(image[:, :, ::2, 1::2].contiguous(), m, (9, 11)), atol=0, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1, 1, 5), (2, 3, 4, 1), (1, 2, 1, 1)])
def test_thin_and_empty_images(shape, device):
    image = torch.rand(shape, dtype=torch.float64).to(device)
    grid = _grid(shape[0], 3, 4, shape[-2:], torch.float64).to(device)
    native, torch_path = _both(sample_bilinear, image, grid, "border")
    torch.testing.assert_close(native, torch_path, atol=0, rtol=0)
    torch.testing.assert_close(native.cpu(), _grid_sample(image.cpu(), grid.cpu(), "border"), atol=1e-12, rtol=0)
    assert sample_bilinear(image[:0], grid[:0], "zeros").shape == (0, shape[1], 3, 4)
    assert warp_bilinear_matrix(image, _matrix(shape[0]).to(device), (0, 4)).shape == (shape[0], shape[1], 0, 4)


@needs_native
def test_two_threads_give_the_one_thread_result(monkeypatch):
    monkeypatch.setattr(_native, "_PARALLEL_MIN_VALUES", 1 << 10)
    image = _photo(torch.float32, 64, 48)
    cases = [(image.repeat(4, 1, 1, 1), _matrix(4)), (image, _matrix(1))]  # split by images, then by rows
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            run = []
            for x, m in cases:
                x = x.clone().requires_grad_(True)
                m = m.clone().requires_grad_(True)
                out = warp_bilinear_matrix(x, m, (50, 70), "reflection")
                run += [out, *torch.autograd.grad(out.square().sum(), (x, m))]
            results.append(run)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ---------------------------------------------------------- registration, errors
def test_the_ops_are_registered_completely():
    g = torch.Generator().manual_seed(7)
    image = torch.rand(2, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    grid = _grid(2, 3, 4, (6, 7), torch.float64).requires_grad_(True)
    matrix = _matrix(2).requires_grad_(True)
    grad = torch.rand(2, 2, 3, 4, generator=g, dtype=torch.float64)
    ops = torch.ops.gradcv
    for op, args in (
        (ops.grid_sampler_2d.default, (image, grid, "reflection")),
        (ops.warp_bilinear.default, (image, matrix, 3, 4, "border")),
        (ops.grid_sampler_2d_backward.default, (grad, image.detach(), grid.detach(), "zeros", True, True)),
        (ops.warp_bilinear_backward.default, (grad, image.detach(), matrix.detach(), "zeros", False, True)),
    ):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_bad_arguments_raise_typed_errors():
    image = torch.rand(1, 1, 5, 5)
    with pytest.raises(ArgumentValueError, match="padding_mode"):
        sample_bilinear(image, torch.zeros(1, 2, 2, 2), "wrap")
    with pytest.raises(ShapeError, match="grid"):
        sample_bilinear(image, torch.zeros(1, 2, 2, 3))
    with pytest.raises(ShapeError, match="grid"):
        sample_bilinear(image, torch.zeros(2, 2, 2, 2))
    with pytest.raises(ShapeError, match="matrix"):
        warp_bilinear_matrix(image, torch.eye(3)[None].repeat(2, 1, 1), (4, 4))
    with pytest.raises(ShapeError, match="image"):
        warp_bilinear_matrix(image[0], torch.eye(3)[None], (4, 4))
