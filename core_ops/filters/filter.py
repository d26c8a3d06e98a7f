"""Correlation of images with user-given kernels: ``filter2d`` and ``filter2d_separable``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_border_type, check_choice, check_floating, check_image, check_shape
from gradcv.core_ops.errors import ShapeError
from gradcv.core_ops.filters._engine import correlate_separable, pad2d

# Above this many taps a 2-D kernel goes through a grouped convolution instead of slices.
_MAX_SLICE_TAPS = 81


def _same_padding(ky: int, kx: int) -> tuple[int, int, int, int]:
    # For even sizes the extra row/column goes after, as in Kornia and scipy.ndimage.
    return ((ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2)


def _check_kernel(kernel: object, name: str, batch: int, dims: list[str]) -> torch.Tensor:
    check_shape(kernel, ["B", *dims], name)
    assert isinstance(kernel, torch.Tensor)
    check_floating(kernel, name)
    if kernel.shape[0] not in (1, batch):
        raise ShapeError(
            name, (f"1 or {batch}", *dims), tuple(kernel.shape),
            f"{name}: expected a kernel batch of 1 or {batch} (the input's), got {kernel.shape[0]}",
        )
    if any(s == 0 for s in kernel.shape[1:]):
        raise ShapeError(name, ("B", *dims), tuple(kernel.shape), f"{name}: expected non-empty kernel, got shape {tuple(kernel.shape)}")
    return kernel


def _correlate2d_tensor(xp: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'valid' correlation of ``(B, C, Hp, Wp)`` with per-sample kernels ``(1|B, ky, kx)``."""
    b, c, hp, wp = xp.shape
    kb, ky, kx = kernel.shape
    ho, wo = hp - ky + 1, wp - kx + 1
    if ky * kx > _MAX_SLICE_TAPS and b * c > 0:
        weight = kernel[:, None].expand(b, c, ky, kx).reshape(b * c, 1, ky, kx)
        return F.conv2d(xp.reshape(1, b * c, hp, wp), weight, groups=b * c).view(b, c, ho, wo)
    w = kernel.reshape(kb, 1, ky * kx, 1, 1)
    out = xp[..., 0:ho, 0:wo] * w[:, :, 0]
    for i in range(ky):
        for j in range(kx):
            if i or j:
                out = out.addcmul(xp[..., i : i + ho, j : j + wo], w[:, :, i * kx + j])
    return out


def filter2d(
    input: torch.Tensor,
    kernel: torch.Tensor,
    border_type: str = "reflect",
    normalized: bool = False,
    padding: str = "same",
    behaviour: str = "corr",
) -> torch.Tensor:
    """Filter every channel of an image with a 2-D kernel (cross-correlation by default).

    Args:
        input: image ``(B, C, H, W)``.
        kernel: ``(1, ky, kx)`` shared by the batch, or ``(B, ky, kx)`` one per sample.
            It may require grad.
        border_type: ``'constant'`` (zeros), ``'reflect'`` (OpenCV's BORDER_REFLECT_101),
            ``'replicate'`` or ``'circular'``.
        normalized: divide the kernel by the sum of its absolute values.
        padding: ``'same'`` (output ``H x W``) or ``'valid'``.
        behaviour: ``'corr'`` or ``'conv'`` (the kernel flipped).

    Returns:
        ``(B, C, H, W)`` for ``'same'``; ``(B, C, H - ky + 1, W - kx + 1)`` for ``'valid'``.

    Convention:
        Tap ``(i, j)`` of a ``ky x kx`` kernel weighs the pixel at offset
        ``(i - (ky - 1) // 2, j - (kx - 1) // 2)`` (rows, columns) from the output pixel,
        as ``cv2.filter2D`` with its default anchor for odd sizes.

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[..., 1, 1] = 1.0
        >>> filter2d(x, torch.arange(9.0).view(1, 3, 3), border_type="constant")[0, 0]
        tensor([[8., 7., 6.],
                [5., 4., 3.],
                [2., 1., 0.]])
    """
    check_image(input)
    kernel = _check_kernel(kernel, "kernel", input.shape[0], ["ky", "kx"])
    check_border_type(border_type)
    check_choice(padding, ("same", "valid"), "padding")
    check_choice(behaviour, ("corr", "conv"), "behaviour")
    kernel = kernel.to(device=input.device, dtype=input.dtype)
    if behaviour == "conv":
        kernel = kernel.flip(-2, -1)
    if normalized:
        kernel = kernel / kernel.abs().sum((-2, -1), keepdim=True)
    ky, kx = kernel.shape[-2:]
    if padding == "same":
        input = pad2d(input, _same_padding(ky, kx), border_type)
    elif input.shape[-2] < ky or input.shape[-1] < kx:
        raise ShapeError(
            "input", ("B", "C", f"H >= {ky}", f"W >= {kx}"), tuple(input.shape),
            f"input: expected at least {ky}x{kx} pixels for padding='valid', got {tuple(input.shape)}",
        )
    return _correlate2d_tensor(input, kernel)


def _as_float_taps(kernel: torch.Tensor) -> tuple[float, ...] | None:
    """The taps as Python floats when that costs no device sync and loses no gradient."""
    if kernel.requires_grad or kernel.device.type != "cpu" or kernel.shape[0] != 1:
        return None
    if torch.compiler.is_compiling():
        return None
    return tuple(kernel[0].double().tolist())


def filter2d_separable(
    input: torch.Tensor,
    kernel_x: torch.Tensor,
    kernel_y: torch.Tensor,
    border_type: str = "reflect",
    normalized: bool = False,
    padding: str = "same",
) -> torch.Tensor:
    """Correlate every channel with ``kernel_y`` along y and ``kernel_x`` along x.

    Equal to ``filter2d`` with the outer product ``kernel_y^T kernel_x``, in ``ky + kx``
    taps per pixel instead of ``ky * kx``.

    Args:
        input: image ``(B, C, H, W)``.
        kernel_x: ``(1, kx)`` or ``(B, kx)``.
        kernel_y: ``(1, ky)`` or ``(B, ky)``.
        border_type: ``'constant'``, ``'reflect'`` (REFLECT_101), ``'replicate'`` or ``'circular'``.
        normalized: divide each 1-D kernel by the sum of its absolute values.
        padding: ``'same'`` or ``'valid'``.

    Returns:
        ``(B, C, H, W)`` for ``'same'``, ``(B, C, H - ky + 1, W - kx + 1)`` for ``'valid'``.

    Convention:
        As ``filter2d``: tap ``j`` of ``kernel_x`` weighs the column at offset ``j - (kx - 1) // 2``.

    Example:
        >>> x = torch.ones(2, 3, 5, 5)
        >>> k = torch.tensor([[1.0, 2.0, 1.0]])
        >>> filter2d_separable(x, k, k, normalized=True).allclose(x)
        True
    """
    check_image(input)
    kernel_x = _check_kernel(kernel_x, "kernel_x", input.shape[0], ["kx"])
    kernel_y = _check_kernel(kernel_y, "kernel_y", input.shape[0], ["ky"])
    check_border_type(border_type)
    check_choice(padding, ("same", "valid"), "padding")
    kernel_x = kernel_x.to(device=input.device, dtype=input.dtype)
    kernel_y = kernel_y.to(device=input.device, dtype=input.dtype)
    if normalized:
        kernel_x = kernel_x / kernel_x.abs().sum(-1, keepdim=True)
        kernel_y = kernel_y / kernel_y.abs().sum(-1, keepdim=True)
    ky, kx = kernel_y.shape[-1], kernel_x.shape[-1]
    if padding == "valid" and (input.shape[-2] < ky or input.shape[-1] < kx):
        raise ShapeError(
            "input", ("B", "C", f"H >= {ky}", f"W >= {kx}"), tuple(input.shape),
            f"input: expected at least {ky}x{kx} pixels for padding='valid', got {tuple(input.shape)}",
        )
    tx, ty = _as_float_taps(kernel_x), _as_float_taps(kernel_y)
    if tx is not None and ty is not None:
        return correlate_separable(input, [(ty, tx)], border_type, padding).squeeze(-3)
    if padding == "same":
        input = pad2d(input, _same_padding(ky, kx), border_type)
    rows = _correlate2d_tensor(input, kernel_x[:, None, :])
    return _correlate2d_tensor(rows, kernel_y[:, :, None])
