"""Bilinear sampling in pixel coordinates: the sampler under the warps.

What it does:
    ``out[b, c, y, x] = image[b, c]`` read bilinearly at a source position ``(sx, sy)`` in
    pixels, pixel centres at integers (``DESIGN.md``). The position of each output pixel
    comes either from a grid ``(B, h, w, 2)`` of positions (:func:`sample_bilinear`: the
    warpers, whose grids are per-pixel) or from a matrix ``(B, 3, 3)`` per image taking
    the output pixel ``(x, y, 1)`` to homogeneous source coordinates
    (:func:`warp_bilinear_matrix`: ``warp_perspective`` and ``warp_affine``). The matrix
    form never materialises a grid, and computes every position in float64:
    ``n_i = M[i, 0] x + (M[i, 1] y + M[i, 2])``, ``(sx, sy) = (n_0, n_1) * (1 / n_2)``. A
    position with integer coordinates reads its pixel with weight exactly 1, so the
    identity returns its input exactly in every dtype and at every size (``grid_sample``'s
    normalised coordinates resolve positions only to ``W * 2**-24`` pixels in float32).

    Padding (``grid_sample``'s rules with ``align_corners=False``): ``'zeros'`` reads 0
    outside the image; ``'border'`` clamps the position to ``[0, W - 1]``;
    ``'reflection'`` mirrors it about the image edges ``-0.5`` and ``W - 0.5``, then
    clamps. Gradients of the position through a clamp are 0 at and beyond its limits.
    A position that is not finite, or a matrix row 2 that is 0 there, reads 0 whatever
    the padding, with zero gradient.

How it runs:
    Four operators, each with a shape-only (fake) implementation:
    ``gradcv::grid_sampler_2d`` and ``gradcv::warp_bilinear`` (forward), and their
    ``..._backward`` (gradients with respect to the image and the grid or the matrix,
    each computed only when asked for), the backward registered as the forward's
    autograd formula. On the CPU, in float32 and float64, they run the C loops of
    ``core_ops/_native/kernels.c`` (positions and weights once per output pixel for all
    channels; large calls split between ``torch.get_num_threads()`` threads); elsewhere,
    with ``GRADCV_NATIVE=0`` or without the built library, the PyTorch code below, which
    does the same arithmetic (the same float64 positions, the same weights and sums in the
    image's dtype). Forward-mode AD and functorch's grad/jvp transforms differentiate the
    PyTorch code directly. The backward operators have no derivative themselves (no
    second derivatives through the sampler).
"""

from __future__ import annotations

import torch

from gradcv.core_ops import _native
from gradcv.core_ops.errors import ArgumentValueError, ShapeError

__all__ = ["PADDING_MODES", "sample_bilinear", "warp_bilinear_matrix"]

PADDING_MODES = ("zeros", "border", "reflection")
_OUTSIDE = -2.0  # where undefined positions go: every tap outside the image


# ----------------------------------------------------------------------- checks
def _check_padding(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ArgumentValueError(
            "padding_mode", PADDING_MODES, padding_mode, f"padding_mode: expected one of {PADDING_MODES}, got {padding_mode!r}"
        )


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 4:
        raise ShapeError("image", ("B", "C", "H", "W"), tuple(image.shape), f"image: expected shape (B, C, H, W), got {tuple(image.shape)}")


def _check_grid(image: torch.Tensor, grid: torch.Tensor) -> None:
    _check_image(image)
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != image.shape[0]:
        raise ShapeError(
            "grid", (image.shape[0], "h", "w", 2), tuple(grid.shape),
            f"grid: expected shape ({image.shape[0]}, h, w, 2), got {tuple(grid.shape)}",
        )


def _check_matrix(image: torch.Tensor, matrix: torch.Tensor, height: int, width: int) -> None:
    _check_image(image)
    if tuple(matrix.shape) != (image.shape[0], 3, 3):
        raise ShapeError(
            "matrix", (image.shape[0], 3, 3), tuple(matrix.shape),
            f"matrix: expected shape ({image.shape[0]}, 3, 3), got {tuple(matrix.shape)}",
        )
    if height < 0 or width < 0:
        raise ArgumentValueError("height, width", "non-negative sizes", (height, width), f"height, width: expected non-negative sizes, got {(height, width)}")


# ---------------------------------------------------------------- PyTorch code
def _pad(x: torch.Tensor, n: int, padding_mode: str) -> torch.Tensor:
    """The position on a length-``n`` axis after the padding rule (differentiable ops)."""
    if padding_mode == "zeros":
        return x.clamp(_OUTSIDE, n + 1.0)
    if padding_mode == "reflection":
        t = (x + 0.5).abs()
        flips = torch.floor(t / n)
        extra = t - flips * n
        x = torch.where(torch.fmod(flips, 2.0) == 0, extra - 0.5, (n - 0.5) - extra)
    return x.clamp(0.0, n - 1.0)


def _pad_factor(x: torch.Tensor, n: int, padding_mode: str) -> torch.Tensor:
    """d(:func:`_pad`)/dx, 0 at and beyond the clamps (as ``grid_sample``'s backward)."""
    if padding_mode == "zeros":
        return ((x >= _OUTSIDE) & (x <= n + 1.0)).to(x.dtype)
    sign = torch.ones_like(x)
    if padding_mode == "reflection":
        t = x + 0.5
        sign = torch.where(t < 0, -sign, sign)
        flips = torch.floor(t.abs() / n)
        sign = torch.where(torch.fmod(flips, 2.0) == 0, sign, -sign)
        x = _pad(x, n, "reflection").clamp(-1.0, n)  # the mirrored position, before the clip
    return sign * ((x > 0) & (x < n - 1.0)).to(x.dtype)


def _taps(
    sx: torch.Tensor, sy: torch.Tensor, h: int, w: int, padding_mode: str, dtype: torch.dtype
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat offsets ``(B, 1, n)`` and masks (in the image and defined) of the taps 00, 01,
    10, 11 (row, column), the fractions ``fx``, ``fy`` ``(B, 1, n)`` in ``dtype``, and the
    positions with undefined ones moved outside, for positions ``sx``, ``sy`` ``(B, h', w')``."""
    defined = torch.isfinite(sx) & torch.isfinite(sy)
    sx = torch.where(defined, sx, _OUTSIDE)
    sy = torch.where(defined, sy, _OUTSIDE)
    px, py = _pad(sx, w, padding_mode), _pad(sy, h, padding_mode)
    x0, y0 = px.detach().floor(), py.detach().floor()
    fx, fy = (px - x0).to(dtype).flatten(1)[:, None], (py - y0).to(dtype).flatten(1)[:, None]
    ix, iy = x0.long().flatten(1)[:, None], y0.long().flatten(1)[:, None]
    offsets, masks = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            cx, cy = ix + dx, iy + dy
            masks.append(((cx >= 0) & (cx < w) & (cy >= 0) & (cy < h) & defined.flatten(1)[:, None]).to(dtype))
            offsets.append(cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1))
    return offsets, masks, fx, fy, sx, sy


def _weights(masks: list[torch.Tensor], fx: torch.Tensor, fy: torch.Tensor) -> list[torch.Tensor]:
    ex, ey = 1 - fx, 1 - fy
    return [ey * ex * masks[0], ey * fx * masks[1], fy * ex * masks[2], fy * fx * masks[3]]


def _gather(flat: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return flat.gather(2, offsets.expand(flat.shape[0], flat.shape[1], -1))


def _sample_torch(image: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Bilinear samples ``(B, C, h', w')`` of ``image`` at ``(sx, sy)`` ``(B, h', w')``, in
    PyTorch ops (differentiable: the decomposition and the fallback)."""
    b, c, h, w = image.shape
    out_hw = sx.shape[1:]
    if h == 0 or w == 0 or sx.numel() == 0:
        return image.new_zeros(b, c, *out_hw)
    offsets, masks, fx, fy, _, _ = _taps(sx, sy, h, w, padding_mode, image.dtype)
    weights = _weights(masks, fx, fy)
    flat = image.reshape(b, c, h * w)
    v = [_gather(flat, o) for o in offsets]
    out = ((weights[0] * v[0] + weights[1] * v[1]) + weights[2] * v[2]) + weights[3] * v[3]
    return out.view(b, c, *out_hw)


def _matrix_positions(
    matrix: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source positions ``(sx, sy)`` ``(B, h, w)`` of the output pixels under ``matrix`` in
    its dtype (as the C loops: ``n_i = M[i, 0] x + (M[i, 1] y + M[i, 2])``), undefined ones
    non-finite, and ``1 / n_2`` (0 where undefined)."""
    xs = torch.arange(width, device=matrix.device, dtype=matrix.dtype)
    ys = torch.arange(height, device=matrix.device, dtype=matrix.dtype)
    rows = torch.addcmul(matrix[:, :, 2:3], matrix[:, :, 1:2], ys)  # (B, 3, h): M[i, 1] y + M[i, 2]
    n = matrix[:, :, 0, None, None] * xs + rows[..., None]  # (B, 3, h, w)
    d = n[:, 2]
    inv = 1 / torch.where(d != 0, d, torch.ones_like(d))
    sx, sy = n[:, 0] * inv, n[:, 1] * inv
    defined = (d != 0) & torch.isfinite(sx) & torch.isfinite(sy)
    nan = torch.full_like(sx, float("nan"))
    return torch.where(defined, sx, nan), torch.where(defined, sy, nan), torch.where(defined, inv, torch.zeros_like(d))


def _warp_torch(image: torch.Tensor, matrix: torch.Tensor, height: int, width: int, padding_mode: str) -> torch.Tensor:
    sx, sy, _ = _matrix_positions(matrix, height, width)
    return _sample_torch(image, sx, sy, padding_mode)


def _grid_torch(image: torch.Tensor, grid: torch.Tensor, padding_mode: str) -> torch.Tensor:
    return _sample_torch(image, grid[..., 0], grid[..., 1], padding_mode)


def _backward_torch(
    grad: torch.Tensor, image: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, padding_mode: str,
    image_grad: bool, position_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`_sample_torch` by hand (no autograd inside an operator):
    ``(grad_image, grad_sx, grad_sy)``, each ``None`` when not asked for."""
    b, c, h, w = image.shape
    out_hw = sx.shape[1:]
    if h == 0 or w == 0 or sx.numel() == 0:
        zeros = sx.new_zeros(sx.shape) if position_grad else None
        return (image.new_zeros(image.shape) if image_grad else None), zeros, zeros
    offsets, masks, fx, fy, sx, sy = _taps(sx, sy, h, w, padding_mode, image.dtype)
    g = grad.reshape(b, c, -1)
    grad_image = grad_sx = grad_sy = None
    if image_grad:
        flat = image.new_zeros(b, c, h * w)
        for o, wt in zip(offsets, _weights(masks, fx, fy)):
            flat.scatter_add_(2, o.expand(b, c, -1), wt * g)
        grad_image = flat.view(image.shape)
    if position_grad:
        flat_image = image.reshape(b, c, h * w)
        v = [m * _gather(flat_image, o) for o, m in zip(offsets, masks)]
        gx = (g * ((1 - fy) * (v[1] - v[0]) + fy * (v[3] - v[2]))).sum(1).view(b, *out_hw)
        gy = (g * ((1 - fx) * (v[2] - v[0]) + fx * (v[3] - v[1]))).sum(1).view(b, *out_hw)
        grad_sx = gx.to(sx.dtype) * _pad_factor(sx, w, padding_mode)
        grad_sy = gy.to(sy.dtype) * _pad_factor(sy, h, padding_mode)
    return grad_image, grad_sx, grad_sy


def _matrix_grad(grad_sx: torch.Tensor, grad_sy: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """The gradient ``(B, 3, 3)`` of the matrix from those of the positions ``(B, h, w)``."""
    height, width = grad_sx.shape[1:]
    sx, sy, inv = _matrix_positions(matrix, height, width)
    qx, qy = grad_sx * inv, grad_sy * inv
    defined = inv != 0
    qz = -(qx * torch.where(defined, sx, 0.0) + qy * torch.where(defined, sy, 0.0))
    q = torch.stack((qx, qy, qz), 1)  # (B, 3, h, w)
    xs = torch.arange(width, device=matrix.device, dtype=matrix.dtype)
    ys = torch.arange(height, device=matrix.device, dtype=matrix.dtype)
    return torch.stack(((q * xs).sum((2, 3)), (q.sum(3) * ys).sum(2), q.sum((2, 3))), 2)


def _unit_rows(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` with unit steps along its last dimension, for the C backward: a gradient
    broadcast over some dimensions (``sum()``'s is broadcast over all) keeps them broadcast
    (stride 0, read in place) instead of being copied to full size; others are made
    contiguous."""
    if grad.stride(-1) == 1 and grad.shape[-1] > 0:
        return grad
    if grad.shape[-1] > 1 and grad.stride(-1) == 0 or any(s == 0 for s in grad.stride()[:-1]):
        index = tuple(slice(0, 1) if (st == 0 and d < grad.ndim - 1) else slice(None) for d, st in enumerate(grad.stride()))
        return grad[index].contiguous().expand(grad.shape)
    return grad.contiguous()


# ------------------------------------------------------------------ operators
def _native_fits(image: torch.Tensor) -> bool:
    """The C loops read 2 x 2 blocks through 32-bit offsets: planes of at least 2 x 2 and
    under 2**31 pixels."""
    h, w = image.shape[-2:]
    return h >= 2 and w >= 2 and h * w < 2**31 - 1


@torch.library.custom_op("gradcv::grid_sampler_2d", mutates_args=())
def _grid_op(image: torch.Tensor, grid: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Bilinear samples of ``image (B, C, H, W)`` at the pixel positions ``grid (B, h, w, 2)``
    (x, y): ``(B, C, h, w)``. This body is the PyTorch code, for every device."""
    _check_grid(image, grid)
    _check_padding(padding_mode)
    return _grid_torch(image, grid.to(image.dtype), padding_mode)


@_native.cpu_kernel("grid_sampler_2d")
def _grid_cpu(image: torch.Tensor, grid: torch.Tensor, padding_mode: str) -> torch.Tensor:
    _check_grid(image, grid)
    _check_padding(padding_mode)
    b, c, h, w = image.shape
    out = image.new_empty(b, c, *grid.shape[1:3])
    if out.numel() == 0:
        return out
    if _native_fits(image) and _native.warp_bilinear(image.contiguous(), out, grid.to(image.dtype).contiguous(), None, padding_mode):
        return out
    return _grid_torch(image, grid.to(image.dtype), padding_mode)


@_grid_op.register_fake
def _grid_fake(image: torch.Tensor, grid: torch.Tensor, padding_mode: str) -> torch.Tensor:
    _check_grid(image, grid)
    _check_padding(padding_mode)
    return image.new_empty(image.shape[0], image.shape[1], grid.shape[1], grid.shape[2])


@torch.library.custom_op("gradcv::grid_sampler_2d_backward", mutates_args=())
def _grid_backward_op(
    grad: torch.Tensor, image: torch.Tensor, grid: torch.Tensor, padding_mode: str, image_grad: bool, grid_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``gradcv::grid_sampler_2d`` with respect to the image and the grid;
    an empty tensor for the one not asked for. PyTorch code on every device."""
    _check_grid(image, grid)
    _check_padding(padding_mode)
    return _grid_backward_default(grad, image, grid, padding_mode, image_grad, grid_grad)


@_native.cpu_kernel("grid_sampler_2d_backward")
def _grid_backward_cpu(
    grad: torch.Tensor, image: torch.Tensor, grid: torch.Tensor, padding_mode: str, image_grad: bool, grid_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_grid(image, grid)
    _check_padding(padding_mode)
    if grad.numel() and _native_fits(image) and _native.kernel("warp_bilinear_backward", image) is not None:
        gi = torch.empty_like(image, memory_format=torch.contiguous_format) if image_grad else None  # zeroed in C
        gg = grid.new_empty(grid.shape, dtype=image.dtype) if grid_grad else None
        if _native.warp_bilinear_backward(_unit_rows(grad), image.contiguous(), gi, gg, None, grid.to(image.dtype).contiguous(), None, padding_mode):
            return (gi if gi is not None else image.new_empty(0)), (gg.to(grid.dtype) if gg is not None else grid.new_empty(0))
    return _grid_backward_default(grad, image, grid, padding_mode, image_grad, grid_grad)


def _grid_backward_default(
    grad: torch.Tensor, image: torch.Tensor, grid: torch.Tensor, padding_mode: str, image_grad: bool, grid_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    gi, gx, gy = _backward_torch(grad, image, grid[..., 0].to(image.dtype), grid[..., 1].to(image.dtype), padding_mode, image_grad, grid_grad)
    gg = torch.stack((gx, gy), -1).to(grid.dtype) if grid_grad else grid.new_empty(0)  # type: ignore[arg-type]
    return (gi if image_grad else image.new_empty(0)), gg  # type: ignore[return-value]


@_grid_backward_op.register_fake
def _grid_backward_fake(
    grad: torch.Tensor, image: torch.Tensor, grid: torch.Tensor, padding_mode: str, image_grad: bool, grid_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_grid(image, grid)
    return (image.new_empty(image.shape) if image_grad else image.new_empty(0)), (grid.new_empty(grid.shape) if grid_grad else grid.new_empty(0))


def _grid_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    image, grid, ctx.padding_mode = inputs
    ctx.save_for_backward(image, grid)


def _grid_backward(ctx, grad):  # type: ignore[no-untyped-def]
    image, grid = ctx.saved_tensors
    image_grad, grid_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (image_grad or grid_grad):
        return None, None, None
    gi, gg = _grid_backward_op(grad, image, grid, ctx.padding_mode, image_grad, grid_grad)
    return (gi if image_grad else None), (gg if grid_grad else None), None


_grid_op.register_autograd(_grid_backward, setup_context=_grid_setup)


@torch.library.custom_op("gradcv::warp_bilinear", mutates_args=())
def _warp_op(image: torch.Tensor, matrix: torch.Tensor, height: int, width: int, padding_mode: str) -> torch.Tensor:
    """Bilinear samples ``(B, C, height, width)`` of ``image (B, C, H, W)`` where
    ``matrix (B, 3, 3)`` takes each output pixel ``(x, y, 1)`` (homogeneous source
    pixels). This body is the PyTorch code, for every device."""
    _check_matrix(image, matrix, height, width)
    _check_padding(padding_mode)
    return _warp_torch(image, matrix, height, width, padding_mode)


@_native.cpu_kernel("warp_bilinear")
def _warp_cpu(image: torch.Tensor, matrix: torch.Tensor, height: int, width: int, padding_mode: str) -> torch.Tensor:
    _check_matrix(image, matrix, height, width)
    _check_padding(padding_mode)
    b, c, h, w = image.shape
    out = image.new_empty(b, c, height, width)
    if out.numel() == 0:
        return out
    mats = matrix.to(torch.float64).contiguous()
    if _native_fits(image) and _native.warp_bilinear(image.contiguous(), out, None, mats, padding_mode):
        return out
    return _warp_torch(image, matrix, height, width, padding_mode)


@_warp_op.register_fake
def _warp_fake(image: torch.Tensor, matrix: torch.Tensor, height: int, width: int, padding_mode: str) -> torch.Tensor:
    _check_matrix(image, matrix, height, width)
    _check_padding(padding_mode)
    return image.new_empty(image.shape[0], image.shape[1], height, width)


def _warp_backward_default(
    grad: torch.Tensor, image: torch.Tensor, matrix: torch.Tensor, padding_mode: str, image_grad: bool, matrix_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = grad.shape[-2:]
    sx, sy, _ = _matrix_positions(matrix, height, width)
    gi, gx, gy = _backward_torch(grad, image, sx, sy, padding_mode, image_grad, matrix_grad)
    gm = _matrix_grad(gx, gy, matrix) if matrix_grad else matrix.new_empty(0)  # type: ignore[arg-type]
    return (gi if image_grad else image.new_empty(0)), gm  # type: ignore[return-value]


@torch.library.custom_op("gradcv::warp_bilinear_backward", mutates_args=())
def _warp_backward_op(
    grad: torch.Tensor, image: torch.Tensor, matrix: torch.Tensor, padding_mode: str, image_grad: bool, matrix_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``gradcv::warp_bilinear`` with respect to the image and the matrix;
    an empty tensor for the one not asked for. PyTorch code on every device."""
    _check_matrix(image, matrix, grad.shape[-2], grad.shape[-1])
    return _warp_backward_default(grad, image, matrix, padding_mode, image_grad, matrix_grad)


@_native.cpu_kernel("warp_bilinear_backward")
def _warp_backward_cpu(
    grad: torch.Tensor, image: torch.Tensor, matrix: torch.Tensor, padding_mode: str, image_grad: bool, matrix_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_matrix(image, matrix, grad.shape[-2], grad.shape[-1])
    _check_padding(padding_mode)
    if grad.numel() and _native_fits(image) and _native.kernel("warp_bilinear_backward", image) is not None:
        # zeroed inside the C loops, by the threads that fill it (a parallel torch fill right
        # before them keeps PyTorch's OpenMP workers spinning on the cores they need)
        gi = torch.empty_like(image, memory_format=torch.contiguous_format) if image_grad else None
        gm = matrix.new_zeros(matrix.shape, dtype=torch.float64) if matrix_grad else None
        mats = matrix.to(torch.float64).contiguous()
        if _native.warp_bilinear_backward(_unit_rows(grad), image.contiguous(), gi, None, gm, None, mats, padding_mode):
            return (gi if gi is not None else image.new_empty(0)), (gm.to(matrix.dtype) if gm is not None else matrix.new_empty(0))
    return _warp_backward_default(grad, image, matrix, padding_mode, image_grad, matrix_grad)


@_warp_backward_op.register_fake
def _warp_backward_fake(
    grad: torch.Tensor, image: torch.Tensor, matrix: torch.Tensor, padding_mode: str, image_grad: bool, matrix_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_matrix(image, matrix, grad.shape[-2], grad.shape[-1])
    return (image.new_empty(image.shape) if image_grad else image.new_empty(0)), (matrix.new_empty(matrix.shape) if matrix_grad else matrix.new_empty(0))


def _warp_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    image, matrix, _, _, ctx.padding_mode = inputs
    ctx.save_for_backward(image, matrix)


def _warp_backward(ctx, grad):  # type: ignore[no-untyped-def]
    image, matrix = ctx.saved_tensors
    image_grad, matrix_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (image_grad or matrix_grad):
        return None, None, None, None, None
    if not torch.is_grad_enabled() and _native.eager_cpu(grad, image, matrix):
        # no graph to record (not create_graph): the op's CPU kernel without the dispatcher
        gi, gm = _warp_backward_cpu(grad, image, matrix, ctx.padding_mode, image_grad, matrix_grad)
    else:
        gi, gm = _warp_backward_op(grad, image, matrix, ctx.padding_mode, image_grad, matrix_grad)
    return (gi if image_grad else None), (gm if matrix_grad else None), None, None, None


_warp_op.register_autograd(_warp_backward, setup_context=_warp_setup)


# ---------------------------------------------------------------- public entry
def sample_bilinear(image: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear samples of ``image`` at pixel positions.

    Args:
        image: ``(B, C, H, W)``, float32 or float64 for the C loops (any floating dtype).
        grid: ``(B, h, w, 2)`` source positions ``(x, y)`` in pixels of ``image``.
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'``.

    Returns:
        ``(B, C, h, w)`` in the dtype of ``image``; differentiable with respect to
        ``image`` and ``grid``.

    Convention:
        Pixel centres at integers; padding and undefined positions as the module docstring.
    """
    if _native.needs_decomposition():
        _check_grid(image, grid)
        _check_padding(padding_mode)
        return _grid_torch(image, grid.to(image.dtype), padding_mode)
    return _grid_op(image, grid, padding_mode)


def warp_bilinear_matrix(
    image: torch.Tensor, matrix: torch.Tensor, dsize: tuple[int, int], padding_mode: str = "zeros"
) -> torch.Tensor:
    """Bilinear samples of ``image`` at ``matrix (x, y, 1)`` for every output pixel.

    Args:
        image: ``(B, C, H, W)``.
        matrix: ``(B, 3, 3)`` taking output pixels to homogeneous source pixels (the
            inverse of a warp's source-to-destination matrix); float64 for exact positions.
        dsize: output size ``(h, w)``.
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'``.

    Returns:
        ``(B, C, h, w)`` in the dtype of ``image``; differentiable with respect to
        ``image`` and ``matrix``.

    Convention:
        Pixel centres at integers in both images; positions computed in ``matrix``'s dtype
        (module docstring).
    """
    height, width = dsize
    if _native.needs_decomposition():
        _check_matrix(image, matrix, height, width)
        _check_padding(padding_mode)
        return _warp_torch(image, matrix, height, width, padding_mode)
    if not (torch.is_grad_enabled() and (image.requires_grad or matrix.requires_grad)) and _native.eager_cpu(image, matrix):
        return _warp_cpu(image, matrix, height, width, padding_mode)  # the op's CPU kernel, without the dispatcher
    return _warp_op(image, matrix, height, width, padding_mode)
