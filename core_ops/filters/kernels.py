"""Filter kernels: Gaussian, box, Sobel/derivative and Laplacian coefficients.

The ``get_*`` functions return tensors (Kornia's names and shapes). The ``*_taps``
functions return the same numbers as Python floats, computed in double precision, which
is what the fixed-kernel filters feed to the slice engine.
"""

from __future__ import annotations

import math

import torch

from gradcv.core_ops._cache import memo

from gradcv.core_ops._checks import check_kernel_size, check_sigma
from gradcv.core_ops.errors import ArgumentTypeError, DTypeError, ShapeError


def default_kernel_size(sigma: float) -> int:
    """OpenCV's kernel size for a floating image and ``ksize=(0, 0)``: ``round(8 sigma + 1) | 1``.

    The kernel then reaches 4 sigma either side, where the Gaussian is below 3.4e-4 of
    its peak.

    >>> default_kernel_size(1.0), default_kernel_size(1.6)
    (9, 15)
    """
    return int(round(sigma * 4 * 2 + 1)) | 1


@memo
def gaussian_taps(kernel_size: int, sigma: float) -> tuple[float, ...]:
    """Normalised Gaussian samples ``exp(-n^2 / 2 sigma^2)`` at integer offsets ``n`` from the centre."""
    c = (kernel_size - 1) / 2
    g = [math.exp(-((i - c) ** 2) / (2.0 * sigma * sigma)) for i in range(kernel_size)]
    s = math.fsum(g)
    return tuple(v / s for v in g)


def get_gaussian_kernel1d(
    kernel_size: int,
    sigma: float | torch.Tensor,
    force_even: bool = False,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gaussian filter coefficients, normalised to sum 1.

    Args:
        kernel_size: number of taps; odd unless ``force_even``.
        sigma: standard deviation, a float or a tensor ``(B,)`` / ``(B, 1)`` for one kernel per sample.
        force_even: allow an even ``kernel_size`` (centre between the two middle taps).
        device: device of the result (that of ``sigma`` when it is a tensor).
        dtype: dtype of the result (that of ``sigma`` when it is a tensor, else float32).

    Returns:
        ``(B, kernel_size)``, with ``B = 1`` for a float sigma.

    Example:
        >>> get_gaussian_kernel1d(3, 1.0)
        tensor([[0.2741, 0.4519, 0.2741]])
    """
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool):
        raise ArgumentTypeError("kernel_size", int, kernel_size, f"kernel_size: expected an int, got {kernel_size!r}")
    check_kernel_size(kernel_size, odd=not force_even)
    if isinstance(sigma, torch.Tensor):
        if not sigma.is_floating_point():
            raise DTypeError("sigma", "floating", sigma.dtype, f"sigma: expected a floating tensor, got {sigma.dtype}")
        if sigma.ndim > 2 or (sigma.ndim == 2 and sigma.shape[1] != 1):
            raise ShapeError("sigma", "(B,) or (B, 1)", tuple(sigma.shape))
        s = sigma.reshape(-1, 1).to(dtype=dtype or sigma.dtype, device=device or sigma.device)
        n = torch.arange(kernel_size, device=s.device, dtype=s.dtype) - (kernel_size - 1) / 2
        g = torch.exp(-(n * n) / (2 * s * s))
        return g / g.sum(-1, keepdim=True)
    (sy, _) = check_sigma(sigma)  # type: ignore[misc]
    return torch.tensor([gaussian_taps(kernel_size, sy)], device=device, dtype=dtype or torch.float32)


def get_gaussian_kernel2d(
    kernel_size: tuple[int, int] | int,
    sigma: tuple[float, float] | torch.Tensor,
    force_even: bool = False,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """2-D Gaussian: the outer product of the y and x kernels.

    Args:
        kernel_size: ``(k_y, k_x)`` or one int for both.
        sigma: ``(sigma_y, sigma_x)``, or a tensor ``(B, 2)`` of per-sample pairs.
        force_even: allow even sizes.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        ``(B, k_y, k_x)``.

    Example:
        >>> get_gaussian_kernel2d(3, (1.0, 1.0)).sum()
        tensor(1.)
    """
    ky, kx = check_kernel_size(kernel_size, odd=not force_even)
    if isinstance(sigma, torch.Tensor):
        if sigma.ndim != 2 or sigma.shape[1] != 2:
            raise ShapeError("sigma", ("B", 2), tuple(sigma.shape))
        gy = get_gaussian_kernel1d(ky, sigma[:, 0], force_even, device=device, dtype=dtype)
        gx = get_gaussian_kernel1d(kx, sigma[:, 1], force_even, device=device, dtype=dtype)
    else:
        sy, sx = check_sigma(sigma)  # type: ignore[misc]
        gy = get_gaussian_kernel1d(ky, sy, force_even, device=device, dtype=dtype)
        gx = get_gaussian_kernel1d(kx, sx, force_even, device=device, dtype=dtype)
    return gy[:, :, None] * gx[:, None, :]


def get_box_kernel2d(
    kernel_size: tuple[int, int] | int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Normalised box kernel ``(1, k_y, k_x)``.

    >>> get_box_kernel2d(3)[0, 0]
    tensor([0.1111, 0.1111, 0.1111])
    """
    ky, kx = check_kernel_size(kernel_size, odd=False)
    return torch.full((1, ky, kx), 1.0 / (ky * kx), device=device, dtype=dtype or torch.float32)


def sobel_taps(order: int, kernel_size: int) -> tuple[float, ...]:
    """One axis of OpenCV's Sobel kernel: binomial smoothing combined with ``order`` differences.

    ``kernel_size == 1`` is OpenCV's special case: no smoothing, a 3-tap difference.

    >>> sobel_taps(0, 3), sobel_taps(1, 3), sobel_taps(2, 3), sobel_taps(2, 5)
    ((1.0, 2.0, 1.0), (-1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, 0.0, -2.0, 0.0, 1.0))
    """
    if kernel_size == 1:
        return ((0.0, 1.0, 0.0), (-1.0, 0.0, 1.0), (1.0, -2.0, 1.0))[order]
    taps = [1.0]
    for _ in range(kernel_size - order - 1):
        taps = [a + b for a, b in zip([0.0] + taps, taps + [0.0])]
    for _ in range(order):
        taps = [a - b for a, b in zip([0.0] + taps, taps + [0.0])]
    return tuple(taps)


def get_sobel_kernel2d(*, device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The 3x3 Sobel kernels ``(2, 3, 3)``: ``d/dx`` then ``d/dy`` (unnormalised, OpenCV's numbers).

    >>> get_sobel_kernel2d()[0]
    tensor([[-1.,  0.,  1.],
            [-2.,  0.,  2.],
            [-1.,  0.,  1.]])
    """
    s, d = torch.tensor(sobel_taps(0, 3)), torch.tensor(sobel_taps(1, 3))
    return torch.stack([torch.outer(s, d), torch.outer(d, s)]).to(device=device, dtype=dtype or torch.float32)
