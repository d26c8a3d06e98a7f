"""First and second image derivatives (Sobel and central differences), and the Sobel magnitude."""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcv.core_ops import _native
from gradcv.core_ops._cache import memo
from gradcv.core_ops._checks import check_border_type, check_choice, check_image, check_kernel_size
from gradcv.core_ops.errors import ArgumentValueError, ShapeError
from gradcv.core_ops.filters._engine import (
    correlate_same_torch,
    correlate_separable,
    correlate_separable_adjoint,
    filter_reduce,
    pad2d,
)
from gradcv.core_ops.filters.kernels import sobel_taps

# Above this size of derivative stack, sobel() without autograd reduces block by block.
_STACK_BYTES = 16 << 20

_DIFF = {0: (0.0, 1.0, 0.0), 1: (-1.0, 0.0, 1.0), 2: (1.0, -2.0, 1.0)}


def _moment(taps: tuple[float, ...], order: int) -> float:
    """Response of a correlation with ``taps`` to ``t^order / order!`` at the centre tap."""
    c = (len(taps) - 1) / 2
    return math.fsum([t * (i - c) ** order for i, t in enumerate(taps)]) / math.factorial(order)


@memo
def derivative_bank(
    mode: str, order: int, normalized: bool, kernel_size: int = 3
) -> tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]:
    """The separable kernels ``(taps_y, taps_x)`` behind :func:`spatial_gradient`.

    Order 1 gives ``[d/dx, d/dy]``; order 2 gives ``[d2/dx2, d2/dxdy, d2/dy2]``.
    Unnormalised, they are OpenCV's ``getDerivKernels`` numbers (mode ``'sobel'``) or
    plain central differences (mode ``'diff'``). Normalised, each is divided by its
    response to the monomial it estimates, so it returns the derivative itself, exactly
    on polynomials of that order, with the right sign (``f = x y`` gives ``d2/dxdy = 1``).
    """
    taps = (lambda o: sobel_taps(o, kernel_size)) if mode == "sobel" else _DIFF.__getitem__
    pairs = [(0, 1), (1, 0)] if order == 1 else [(0, 2), (1, 1), (2, 0)]  # (order in y, order in x)
    bank: list[tuple[tuple[float, ...], tuple[float, ...]]] = []
    for oy, ox in pairs:
        ty, tx = taps(oy), taps(ox)
        if normalized:
            scale = 1.0 / (_moment(ty, oy) * _moment(tx, ox))
            ty = tuple(t * scale for t in ty)
        bank.append((ty, tx))
    return tuple(bank)


def _check_aperture(mode: str, kernel_size: int) -> None:
    check_kernel_size(kernel_size, "kernel_size")
    if mode == "sobel" and kernel_size not in (1, 3, 5, 7):
        raise ArgumentValueError("kernel_size", (1, 3, 5, 7), kernel_size, f"kernel_size: expected one of (1, 3, 5, 7), got {kernel_size}")


def spatial_gradient(
    input: torch.Tensor,
    mode: str = "sobel",
    order: int = 1,
    normalized: bool = True,
    *,
    kernel_size: int = 3,
    border_type: str = "replicate",
) -> torch.Tensor:
    """First or second derivatives of every channel in x and y.

    Args:
        input: image ``(B, C, H, W)``.
        mode: ``'sobel'`` or ``'diff'`` (central differences).
        order: 1 or 2.
        normalized: scale every kernel so that it returns the derivative itself (exact on
            linear surfaces for order 1 and on quadratics for order 2). ``False`` gives
            OpenCV's raw Sobel numbers: 8 times the slope for order 1, as ``cv2.Sobel``.
        kernel_size: Sobel aperture (1, 3, 5, 7), as ``cv2.Sobel``'s ``ksize``; ``'sobel'`` only.
        border_type: ``'replicate'`` (Kornia's behaviour, the default) or any other border
            type; ``'reflect'`` is ``cv2.Sobel``'s default border.

    Returns:
        ``(B, C, 2, H, W)`` holding ``[d/dx, d/dy]`` for order 1, or ``(B, C, 3, H, W)``
        holding ``[d2/dx2, d2/dxdy, d2/dy2]`` for order 2.

    Convention:
        x runs along columns (to the right), y along rows (down), so ``d/dx`` of an image
        that brightens to the right is positive. Second derivatives have the sign of the
        true derivative; Kornia before 0.9 had ``d2/dxdy`` negated (Kornia issue #4710).

    Example:
        >>> ramp = torch.arange(5.0).repeat(5, 1)[None, None]  # f = x
        >>> spatial_gradient(ramp)[0, 0, :, 2, 2]
        tensor([1., 0.])
    """
    check_image(input)
    check_choice(mode, ("sobel", "diff"), "mode")
    check_choice(order, (1, 2), "order")
    check_border_type(border_type)
    _check_aperture(mode, kernel_size)
    if mode == "diff" and order == 1 and input.numel() <= _SLICED_DIFF_VALUES:
        return _central_differences(input, normalized, border_type)
    return correlate_separable(input, derivative_bank(mode, order, normalized, kernel_size), border_type)


# Up to this many input values, first-order central differences run as shifted slices:
# solvers call them once per iteration on small pyramid levels, where the filter
# operator's dispatch (about 30 us hot, 90-125 us between a solver's other work) costs
# more than the few elementwise passes (27 against 34 us hot on a 128x128 level; the operator wins from about 40,000 values).
_SLICED_DIFF_VALUES = 1 << 17


def _central_differences(x: torch.Tensor, normalized: bool, border_type: str) -> torch.Tensor:
    """``[d/dx, d/dy]`` by central differences as ``(*, 2, H, W)``: the same numbers as the
    filter engine's ``(0, 1/2, 0) x (-1, 0, 1)`` correlation (halving is exact), in plain
    PyTorch ops, which every tracer and autograd mode sees as they are."""
    padded = pad2d(x, (1, 1, 1, 1), border_type)
    dx = padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]
    dy = padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]
    grad = torch.stack((dx, dy), -3)
    return grad.mul_(0.5) if normalized else grad


def sobel(
    input: torch.Tensor, normalized: bool = True, eps: float = 1e-6, *, border_type: str = "replicate"
) -> torch.Tensor:
    """Sobel gradient magnitude ``sqrt(dx^2 + dy^2 + eps)`` of every channel.

    Args:
        input: image ``(B, C, H, W)``.
        normalized: use normalised derivatives (see :func:`spatial_gradient`).
        eps: added under the square root, so the gradient is finite on flat regions.
        border_type: as :func:`spatial_gradient`.

    Returns:
        ``(B, C, H, W)``.

    Runs as the operator ``gradcv::sobel_magnitude`` (one fused pass in C on the CPU when
    built), which fake tensors, tracers, ``torch.compile``, ``torch.export``, vmap and
    autograd see as one op; under forward-mode AD and functorch's grad/jvp transforms
    the derivative filters run instead.

    Example:
        >>> ramp = torch.arange(5.0).repeat(5, 1)[None, None]
        >>> sobel(ramp)[0, 0, 2, 2]
        tensor(1.0000)
    """
    check_image(input)
    check_border_type(border_type)
    # Raw Sobel taps have weights of 1, which the engine fuses; the normalisation (1/8 on
    # each derivative) goes into the magnitude instead, for free.
    scale = 1.0 / 64.0 if normalized else 1.0
    # torch.export records ATen ops only (a program that runs without gradcv, and converts to ONNX)
    if _native.needs_decomposition():
        gx, gy = spatial_gradient(input, "sobel", 1, False, border_type=border_type).unbind(-3)
        return _magnitude(gx, gy, scale, eps)
    return _sobel_magnitude_op(input, border_type, float(scale), float(eps))


# The operator gradcv::sobel_magnitude: sqrt(eps + scale (dx^2 + dy^2)) of OpenCV's raw
# 3x3 Sobel derivatives of (*, H, W), one fused pass in C on the CPU (core_ops/_native),
# the derivative filters and _magnitude elsewhere.
@torch.library.custom_op("gradcv::sobel_magnitude", mutates_args=())
def _sobel_magnitude_op(x: torch.Tensor, border_type: str, scale: float, eps: float) -> torch.Tensor:
    """The PyTorch code, for every device; the CPU's kernel is below."""
    _check_op_input(x, border_type)
    return _sobel_magnitude_torch(x, border_type, scale, eps)


@_native.cpu_kernel("sobel_magnitude")
def _sobel_magnitude_cpu(x: torch.Tensor, border_type: str, scale: float, eps: float) -> torch.Tensor:
    _check_op_input(x, border_type)
    fused = _native.sobel_magnitude(x, border_type, scale, eps)
    return fused if fused is not None else _sobel_magnitude_torch(x, border_type, scale, eps)


@_sobel_magnitude_op.register_fake
def _sobel_magnitude_fake(x: torch.Tensor, border_type: str, scale: float, eps: float) -> torch.Tensor:
    _check_op_input(x, border_type)
    return x.new_empty(x.shape)


def _check_op_input(x: torch.Tensor, border_type: str) -> None:
    # the op is public (torch.ops.gradcv): it checks what the C kernel relies on
    if x.ndim < 2:
        raise ShapeError("input", ("*", "H", "W"), tuple(x.shape), f"input: expected at least 2 dimensions (*, H, W), got shape {tuple(x.shape)}")
    if border_type not in _native.BORDERS:
        raise ArgumentValueError("border_type", tuple(_native.BORDERS), border_type, f"border_type: expected one of {tuple(_native.BORDERS)}, got {border_type!r}")


def _sobel_magnitude_torch(x: torch.Tensor, border_type: str, scale: float, eps: float) -> torch.Tensor:
    bank = derivative_bank("sobel", 1, False, 3)
    if 2 * x.numel() * x.element_size() > _STACK_BYTES:
        # The (*, 2, H, W) stack of derivatives would be large: reduce each cache-sized
        # block to its magnitude at once instead, so the stack is never held (measured
        # 1.6x faster from 64 images of 256x256 up, where the stack's fresh pages cost
        # more than the per-block Python overhead; slower below).
        return filter_reduce(x, bank, lambda g, out: _magnitude(g[:, 0], g[:, 1], scale, eps, out), border_type)
    gx, gy = correlate_same_torch(x, bank, border_type).unbind(-3)
    return _magnitude(gx, gy, scale, eps)


def _sobel_magnitude_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, ctx.border_type, ctx.scale, _ = inputs
    ctx.save_for_backward(x, output)


def _sobel_magnitude_backward(ctx, grad):  # type: ignore[no-untyped-def]
    # d magnitude / d (dx, dy) = scale (dx, dy) / magnitude; then the derivative filters'
    # adjoint. Made of differentiable ops, so second derivatives exist.
    x, magnitude = ctx.saved_tensors
    bank = derivative_bank("sobel", 1, False, 3)
    derivatives = correlate_separable(x, bank, ctx.border_type)
    weights = (grad * ctx.scale / magnitude).unsqueeze(-3)
    return correlate_separable_adjoint(derivatives * weights, bank, tuple(x.shape[-2:]), ctx.border_type), None, None, None


_sobel_magnitude_op.register_autograd(_sobel_magnitude_backward, setup_context=_sobel_magnitude_setup)
torch.library.register_vmap(_sobel_magnitude_op, _native.batch_first_vmap(_sobel_magnitude_op))


def _magnitude(
    gx: torch.Tensor, gy: torch.Tensor, scale: float, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``sqrt(eps + scale (gx^2 + gy^2))`` in three passes, into ``out`` when given; in
    place on its own result, which is safe for autograd (addcmul keeps its inputs, sqrt_
    keeps its result)."""
    kw = {} if out is None else {"out": out}
    magnitude = torch.addcmul(gx.new_full((), eps), gx, gx, value=scale, **kw)
    return magnitude.addcmul_(gy, gy, value=scale).sqrt_()


class SpatialGradient(nn.Module):
    """Module form of :func:`spatial_gradient`."""

    def __init__(
        self,
        mode: str = "sobel",
        order: int = 1,
        normalized: bool = True,
        *,
        kernel_size: int = 3,
        border_type: str = "replicate",
    ) -> None:
        super().__init__()
        check_choice(mode, ("sobel", "diff"), "mode")
        check_choice(order, (1, 2), "order")
        check_border_type(border_type)
        _check_aperture(mode, kernel_size)
        self.mode, self.order, self.normalized = mode, order, normalized
        self.kernel_size, self.border_type = kernel_size, border_type

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return spatial_gradient(
            input, self.mode, self.order, self.normalized, kernel_size=self.kernel_size, border_type=self.border_type
        )


class Sobel(nn.Module):
    """Module form of :func:`sobel`."""

    def __init__(self, normalized: bool = True, eps: float = 1e-6, *, border_type: str = "replicate") -> None:
        super().__init__()
        check_border_type(border_type)
        self.normalized, self.eps, self.border_type = normalized, eps, border_type

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return sobel(input, self.normalized, self.eps, border_type=self.border_type)
