"""The sampler's fast paths (``core_ops/_native/kernels.c``): pieces of rows whose 2 x 2
blocks all lie inside the image skip padding and masks, float32 rows are read 16 outputs at a
time where the CPU has AVX-512 (by permutes of a few windows of plain loads where the blocks lie
close together, else by gathers; the forward from a matrix with zeros or border padding
computes positions, taps and samples 16 outputs at a time in one pass; the backward finds its
taps, and reads the blocks for the position gradients, 16 at a time), the matrix gradient
sums eight lanes at a time, the image gradient sums each block's shared column before scattering
it (2 to 4 float32 channels into one packed plane, a vector of four per pixel), a broadcast
output gradient (``sum()``'s) is read in place, and threads share the work in pieces.

What is pinned: on warps where most of the output reads the interior and the rest crosses
the edges, every path gives the PyTorch path's values and gradients (which CI also runs
alone with ``GRADCV_NATIVE=0``), and ``grid_sample``'s on the same positions on every
device; a broadcast gradient gives the same gradients as the same values made contiguous;
each channel of a packed image gradient is the same bits as that channel's gradient alone.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops import _native
from gradcv.core_ops.geometry._sampler import sample_bilinear, warp_bilinear_matrix
from gradcv.experiments._images import sample_photo

PADDINGS = ["zeros", "border", "reflection"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _photo(b: int, dtype: torch.dtype, device: str = "cpu", h: int = 41, w: int = 70) -> torch.Tensor:
    img = F.interpolate(sample_photo()[None], size=(h, w), mode="area").to(dtype)
    return img.repeat(b, 1, 1, 1).to(device)


def _matrices(b: int, h: int, w: int, device: str = "cpu") -> torch.Tensor:
    """Output-to-source homographies that keep most of a (h, w) output inside the source:
    a mild perspective and a shift of a few pixels, different per image."""
    g = torch.Generator().manual_seed(3)
    m = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    m[:, :2, :2] += 0.06 * torch.rand(b, 2, 2, generator=g, dtype=torch.float64) - 0.03
    m[:, :2, 2] = 5 * torch.rand(b, 2, generator=g, dtype=torch.float64) - 2.5
    m[:, 2, :2] = (0.002 * torch.rand(b, 2, generator=g, dtype=torch.float64) - 0.001) * 64 / max(h, w)
    return m.to(device)


def _positions(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The source pixel positions ``(B, h, w, 2)`` of ``m (x, y, 1)``, float64."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    p = torch.stack((xs, ys, torch.ones_like(xs)), -1).to(m.device)  # (h, w, 3)
    n = torch.einsum("bij,hwj->bhwi", m.double(), p)
    return n[..., :2] / n[..., 2:]


def _grid_sample(image: torch.Tensor, grid: torch.Tensor, padding: str) -> torch.Tensor:
    """``grid_sample`` at pixel positions, in float64 on the CPU (the reference)."""
    h, w = image.shape[-2:]
    g = grid.detach().double().cpu()
    u = torch.stack(((2 * g[..., 0] + 1) / w - 1, (2 * g[..., 1] + 1) / h - 1), -1)
    return F.grid_sample(image.detach().double().cpu(), u, padding_mode=padding, align_corners=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", PADDINGS)
def test_mostly_interior_warps_match_the_pytorch_path(padding, dtype):
    b, h, w = 3, 41, 70
    image = _photo(b, dtype).requires_grad_(True)
    matrix = _matrices(b, h, w).requires_grad_(True)
    grid = _positions(matrix.detach(), h, w).to(dtype).requires_grad_(True)
    weights = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(1), dtype=dtype)

    def run():
        out_m = warp_bilinear_matrix(image, matrix, (h, w), padding)
        out_g = sample_bilinear(image, grid, padding)
        grads = torch.autograd.grad((out_m * weights).sum() + (out_g * weights).sum(), (image, matrix, grid))
        return (out_m.detach(), out_g.detach()) + grads

    native = run()
    with _native.disabled():
        reference = run()
    for a, r in zip(native, reference):
        scale = max(1.0, r.abs().max().item())
        torch.testing.assert_close(a, r, atol=10 * TOL[dtype] * scale, rtol=0)
    expected = _grid_sample(image, grid, padding).to(dtype)
    torch.testing.assert_close(native[0], expected, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(native[1], expected, atol=TOL[dtype], rtol=0)
    # the test reads the interior and the edges both: most positions inside, some not
    pos = grid.detach()
    inside = ((pos[..., 0] > 0) & (pos[..., 0] < w - 1) & (pos[..., 1] > 0) & (pos[..., 1] < h - 1)).double().mean()
    assert 0.5 < inside < 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_broadcast_gradient_is_the_contiguous_one(device, dtype):
    b, h, w = 2, 41, 70
    image = _photo(b, dtype, device).requires_grad_(True)
    matrix = _matrices(b, h, w, device).requires_grad_(True)
    grid = _positions(matrix.detach(), h, w).to(dtype).requires_grad_(True)
    ones = torch.ones(b, 3, h, w, dtype=dtype, device=device)
    # the C loops read a broadcast gradient in place and sum in the same order: equal bits; the
    # PyTorch path on a GPU scatters with atomics (any order): equal to rounding
    atol = 0.0 if device == "cpu" else 10 * TOL[dtype]
    rtol = 0.0 if device == "cpu" else 1e-4 if dtype == torch.float32 else 1e-10
    cases = [
        (lambda: warp_bilinear_matrix(image, matrix, (h, w), "border"), (image, matrix)),
        (lambda: sample_bilinear(image, grid, "zeros"), (image, grid)),
    ]
    for out, inputs in cases:
        broadcast = torch.autograd.grad(out().sum(), inputs)  # the output gradient is one scalar, expanded
        dense = torch.autograd.grad((out() * ones).sum(), inputs)
        for a, r in zip(broadcast, dense):
            torch.testing.assert_close(a, r, atol=atol, rtol=rtol)
    # a gradient broadcast over the channels only, and one with a transposed row layout
    g = torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
    for grad_out in (g.expand(b, 3, h, w), g.transpose(-1, -2).contiguous().transpose(-1, -2).expand(b, 3, h, w)):
        a = torch.autograd.grad(warp_bilinear_matrix(image, matrix, (h, w), "zeros"), (image, matrix), grad_out)
        r = torch.autograd.grad(warp_bilinear_matrix(image, matrix, (h, w), "zeros"), (image, matrix), grad_out.contiguous())
        for x, y in zip(a, r):
            torch.testing.assert_close(x, y, atol=atol, rtol=rtol)


def test_the_matrix_gradient_matches_finite_differences_of_the_grid_gradient(device):
    """The matrix gradient is the grid gradient pushed through the projection (chain rule),
    whatever the order of its sums: checked on a mostly interior float64 warp."""
    b, h, w = 2, 41, 70
    image = _photo(b, torch.float64, device)
    matrix = _matrices(b, h, w, device).requires_grad_(True)
    weights = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(device)
    (direct,) = torch.autograd.grad((warp_bilinear_matrix(image, matrix, (h, w), "zeros") * weights).sum(), (matrix,))
    grid = _positions(matrix, h, w)  # differentiable in the matrix, through PyTorch ops
    (chained,) = torch.autograd.grad((sample_bilinear(image, grid, "zeros") * weights).sum(), (matrix,))
    torch.testing.assert_close(direct, chained, atol=1e-9 * max(1.0, chained.abs().max().item()), rtol=0)


@pytest.mark.skipif(_native.library() is None, reason="native kernels unavailable")
@pytest.mark.parametrize("team", ["openmp", "pool"])
@pytest.mark.parametrize("b", [1, 3])
def test_two_threads_give_the_one_thread_result(monkeypatch, b, team):
    """Threads take pieces (row bands; whole images for the image and matrix gradients)
    from a counter shared in C, on PyTorch's OpenMP team where there is one, else on the
    module's pool: any split gives the one-thread bits."""
    if team == "pool":
        monkeypatch.setitem(_native._state, "gomp_pid", os.getpid())
        monkeypatch.setitem(_native._state, "gomp", None)
    elif _native._gomp_parallel() is None:
        pytest.skip("PyTorch runs no libgomp here")
    monkeypatch.setattr(_native, "_PARALLEL_MIN_VALUES", 1 << 10)
    monkeypatch.setattr(_native, "_PIECE_VALUES", 3 * 70 * 3)  # 3 rows a piece: many pieces
    h, w = 41, 70
    image = _photo(b, torch.float32).requires_grad_(True)
    matrix = _matrices(b, h, w).requires_grad_(True)
    grid = _positions(matrix.detach(), h, w).float().requires_grad_(True)
    weights = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(1))

    def run():
        out_m = warp_bilinear_matrix(image, matrix, (h, w), "zeros")
        out_g = sample_bilinear(image, grid, "border")
        grads = torch.autograd.grad((out_m * weights).sum() + (out_g * weights).sum(), (image, matrix, grid))
        (grid_only,) = torch.autograd.grad((sample_bilinear(image.detach(), grid, "zeros") * weights).sum(), grid)
        return (out_m, out_g, *grads, grid_only)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(2)
        double = run()
    finally:
        torch.set_num_threads(before)
    for one, two in zip(single, double):
        torch.testing.assert_close(two, one, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_image_gradient_alone_is_the_one_beside_the_matrix_gradient(dtype):
    """Asked for alone, the image gradient comes from the forward's taps (16 at a time in
    float32 with AVX-512) and a scatter that sums each block's shared column once: the same
    bits as beside the matrix gradient (whose taps are found with their derivatives), and the
    PyTorch path's values, on warps that magnify (outputs repeat a block), shrink (outputs skip
    blocks) and cross the edges, with rows not a multiple of 16 long."""
    b, h, w = 3, 41, 70
    image = _photo(b, dtype).requires_grad_(True)
    matrix = _matrices(b, h, w)
    matrix[:, :2, :2] *= torch.tensor([0.55, 1.0, 1.8], dtype=torch.float64)[:, None, None]  # per image
    matrix = matrix.requires_grad_(True)
    weights = torch.rand(b, 3, 37, 53, generator=torch.Generator().manual_seed(5), dtype=dtype)
    for padding in PADDINGS:
        out = lambda: warp_bilinear_matrix(image, matrix, (37, 53), padding) * weights  # noqa: E731
        (alone,) = torch.autograd.grad(out().sum(), (image,))
        beside, _ = torch.autograd.grad(out().sum(), (image, matrix))
        torch.testing.assert_close(alone, beside, atol=0, rtol=0)
        with _native.disabled():
            (reference,) = torch.autograd.grad(out().sum(), (image,))
        torch.testing.assert_close(alone, reference, atol=10 * TOL[dtype] * max(1.0, reference.abs().max().item()), rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_channel_of_the_image_gradient_is_its_gradient_alone(dtype):
    """Three or four channels of a float32 image gradient are summed in one packed plane (a
    vector of four per pixel, on CPUs with AVX-512), one channel alone in its own plane: every
    channel's gradient is the same bits either way, for 2 to 5 channels, every padding, on
    warps that magnify, shrink, turn by 80 degrees (each source row then gets the top of some
    blocks and the bottom of others in one output row: the order of the sums shows) and cross
    the edges (rows not a multiple of 16 long)."""
    b, h, w, ho, wo = 4, 29, 45, 31, 38
    matrix = _matrices(b, h, w)
    matrix[:, :2, :2] *= torch.tensor([0.6, 1.0, 1.7, 0.8], dtype=torch.float64)[:, None, None]
    turn = torch.tensor([[0.17, -0.98, 0.0], [0.98, 0.17, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    centre = torch.tensor([[1.0, 0.0, w / 2], [0.0, 1.0, h / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    matrix[3] = centre @ turn @ torch.linalg.inv(centre) @ matrix[3]
    gen = torch.Generator().manual_seed(11)
    for channels in (2, 3, 4, 5):
        image = torch.rand(b, channels, h, w, generator=gen, dtype=dtype).requires_grad_(True)
        weights = torch.randn(b, channels, ho, wo, generator=gen, dtype=dtype)
        for padding in PADDINGS:
            (whole,) = torch.autograd.grad((warp_bilinear_matrix(image, matrix, (ho, wo), padding) * weights).sum(), (image,))
            for c in range(channels):
                plane = image[:, c : c + 1].detach().requires_grad_(True)
                (alone,) = torch.autograd.grad((warp_bilinear_matrix(plane, matrix, (ho, wo), padding) * weights[:, c : c + 1]).sum(), (plane,))
                torch.testing.assert_close(whole[:, c : c + 1], alone, rtol=0, atol=0)


def test_a_plane_too_large_to_pack_gives_each_channel_its_gradient_alone():
    """Above 2^20 source pixels the three channels are scattered in place, not packed: each
    channel's gradient is still its gradient alone, bit for bit (a small output, so cheap)."""
    gen = torch.Generator().manual_seed(5)
    h, w = 1024, 1025
    image = torch.rand(1, 3, h, w, generator=gen).requires_grad_(True)
    matrix = torch.tensor([[[3.9, 0.3, 20.0], [-0.2, 4.1, 11.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    weights = torch.randn(1, 3, 40, 56, generator=gen)
    (whole,) = torch.autograd.grad((warp_bilinear_matrix(image, matrix, (40, 56), "zeros") * weights).sum(), (image,))
    assert whole.abs().sum() > 0
    for c in range(3):
        plane = image[:, c : c + 1].detach().requires_grad_(True)
        (alone,) = torch.autograd.grad((warp_bilinear_matrix(plane, matrix, (40, 56), "zeros") * weights[:, c : c + 1]).sum(), (plane,))
        torch.testing.assert_close(whole[:, c : c + 1], alone, rtol=0, atol=0)


def _windows_needed(m: torch.Tensor, h: int, w: int, ho: int, wo: int) -> torch.Tensor:
    """For each 16 outputs of a row (float32 AVX-512 paths), how many windows of 31 plane values
    hold their blocks' top-left corners (kernels.c's windows16, greedy from the smallest), or 0
    (gathers) where more than four are needed, the corners lie more than 3 rows + 30 values
    apart, or a window would cross the plane's end; every output clamped inside, as the taps are."""
    pos = _positions(m, ho, wo)
    fx = pos[..., 0].clamp(0, w - 2).floor().long()
    fy = pos[..., 1].clamp(0, h - 2).floor().long()
    corners = (fy * w + fx)[..., : wo - wo % 16].reshape(-1, 16)
    counts = []
    for row in corners.tolist():
        left, n = sorted(row), 0
        if left[-1] - left[0] > 3 * w + 30:
            counts.append(0)
            continue
        while left:
            if left[0] + w + 32 > h * w:
                n = 0
                break
            left, n = [v for v in left if v - left[0] > 30], n + 1
        counts.append(n if n <= 4 else 0)
    return torch.tensor(counts)


def test_blocks_read_by_windows_and_by_gathers_match_the_pytorch_path():
    # rotations from none to steep (one to four windows of 31 values per 16 outputs, then
    # gathers) and a 2.5x zoom out (16 outputs span more than 31 columns: gathers), on an
    # output whose last rows read the image's last rows (a window there would cross the plane)
    b, h, w, ho, wo = 5, 64, 96, 64, 96
    image = _photo(b, torch.float32, h=h, w=w).requires_grad_(True)
    m = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    for k, deg in enumerate([0.0, 4.0, 12.0, 40.0]):
        t = torch.tensor(deg * torch.pi / 180, dtype=torch.float64)
        m[k, :2, :2] = torch.stack([torch.stack([t.cos(), -t.sin()]), torch.stack([t.sin(), t.cos()])])
        m[k, :2, 2] = torch.tensor([0.3 + 0.1 * k, 0.6])
    m[4, 0, 0] = 2.5
    counts = _windows_needed(m, h, w, ho, wo)
    assert {0, 1, 2, 3, 4} <= set(counts.tolist())
    matrix = m.clone().requires_grad_(True)
    weights = torch.rand(b, 3, ho, wo, generator=torch.Generator().manual_seed(2))

    def run():
        out = warp_bilinear_matrix(image, matrix, (ho, wo), "zeros")
        return (out.detach(),) + torch.autograd.grad((out * weights).sum(), (image, matrix))

    native = run()
    with _native.disabled():
        reference = run()
    for a, r in zip(native, reference):
        torch.testing.assert_close(a, r, atol=10 * TOL[torch.float32] * max(1.0, r.abs().max().item()), rtol=0)


def test_the_kept_packed_plane_carries_nothing_between_calls():
    # each thread keeps the image gradient's packed plane between calls (kernels.c's
    # zeroed_take): a call after larger, smaller and 4-channel ones gives its own first result
    def image_gradient(c: int, h: int, w: int) -> torch.Tensor:
        image = _photo(2, torch.float32, h=h, w=w)[:, :1].repeat(1, c, 1, 1).requires_grad_(True)
        matrix = _matrices(2, h, w)
        out = warp_bilinear_matrix(image, matrix, (h, w), "zeros")
        weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(c * h * w))
        return torch.autograd.grad((out * weights).sum(), image)[0]

    first = image_gradient(3, 41, 70)
    for c, h, w in [(3, 97, 130), (4, 41, 70), (3, 20, 33), (4, 150, 90)]:
        image_gradient(c, h, w)
    assert torch.equal(image_gradient(3, 41, 70), first)
