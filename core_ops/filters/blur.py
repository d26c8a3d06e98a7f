"""Gaussian and box blur."""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_border_type, check_image, check_kernel_size, check_sigma
from gradcv.core_ops.errors import ArgumentValueError, ShapeError
from gradcv.core_ops.filters._engine import correlate_separable
from gradcv.core_ops.filters.filter import filter2d, filter2d_separable
from gradcv.core_ops.filters.kernels import default_kernel_size, gaussian_taps, get_gaussian_kernel1d, get_gaussian_kernel2d


def gaussian_blur2d(
    input: torch.Tensor,
    kernel_size: tuple[int, int] | int | None,
    sigma: tuple[float, float] | float | torch.Tensor,
    border_type: str = "reflect",
    separable: bool = True,
) -> torch.Tensor:
    """Blur every channel with a Gaussian, as ``cv2.GaussianBlur`` on a floating image.

    Args:
        input: image ``(B, C, H, W)``.
        kernel_size: ``(k_y, k_x)``, one odd int, or ``None`` (or 0) to derive it from
            sigma as OpenCV does for floating images: ``round(8 sigma + 1) | 1``.
        sigma: ``(sigma_y, sigma_x)``, one float, or a tensor ``(B, 2)`` of per-sample
            pairs (differentiable; ``kernel_size`` must then be given).
        border_type: ``'reflect'`` (OpenCV's default BORDER_REFLECT_101), ``'constant'``,
            ``'replicate'`` or ``'circular'``.
        separable: two 1-D passes (default) or one 2-D pass; the result is the same.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> gaussian_blur2d(x, (5, 5), (1.5, 1.5)).shape
        torch.Size([2, 3, 16, 16])
    """
    check_image(input)
    check_border_type(border_type)
    sig = check_sigma(sigma)
    if kernel_size is None or kernel_size == 0:
        if isinstance(sig, torch.Tensor):
            raise ArgumentValueError(
                "kernel_size", "explicit sizes when sigma is a tensor", kernel_size,
                "kernel_size: expected explicit sizes when sigma is a tensor, got None",
            )
        kernel_size = (default_kernel_size(sig[0]), default_kernel_size(sig[1]))
    ky, kx = check_kernel_size(kernel_size)
    if isinstance(sig, torch.Tensor):
        if sig.ndim != 2 or sig.shape[1] != 2 or sig.shape[0] not in (1, input.shape[0]):
            raise ShapeError("sigma", "(B, 2) or (1, 2)", tuple(sig.shape))
        sig = sig.to(device=input.device, dtype=input.dtype)
        if separable:
            kernel_y = get_gaussian_kernel1d(ky, sig[:, 0])
            kernel_x = get_gaussian_kernel1d(kx, sig[:, 1])
            return filter2d_separable(input, kernel_x, kernel_y, border_type)
        return filter2d(input, get_gaussian_kernel2d((ky, kx), sig), border_type)
    bank = [(gaussian_taps(ky, sig[0]), gaussian_taps(kx, sig[1]))]
    return correlate_separable(input, bank, border_type).squeeze(-3)


def box_blur(
    input: torch.Tensor, kernel_size: tuple[int, int] | int, border_type: str = "reflect", separable: bool = True
) -> torch.Tensor:
    """Mean over a ``k_y x k_x`` window, as ``cv2.blur`` (normalised box filter).

    Args:
        input: image ``(B, C, H, W)``.
        kernel_size: ``(k_y, k_x)`` or one int; odd.
        border_type: ``'reflect'`` (REFLECT_101, OpenCV's default), ``'constant'``, ``'replicate'``, ``'circular'``.
        separable: kept for Kornia's signature; the box is always applied as two 1-D passes.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> box_blur(torch.ones(1, 1, 4, 4), 3)[0, 0, 0]
        tensor([1., 1., 1., 1.])
    """
    check_image(input)
    check_border_type(border_type)
    ky, kx = check_kernel_size(kernel_size)
    bank = [((1.0 / ky,) * ky, (1.0 / kx,) * kx)]
    return correlate_separable(input, bank, border_type).squeeze(-3)


class GaussianBlur2d(nn.Module):
    """Module form of :func:`gaussian_blur2d`."""

    def __init__(
        self,
        kernel_size: tuple[int, int] | int | None,
        sigma: tuple[float, float] | float | torch.Tensor,
        border_type: str = "reflect",
        separable: bool = True,
    ) -> None:
        super().__init__()
        check_border_type(border_type)
        check_sigma(sigma)
        if kernel_size is not None and kernel_size != 0:
            check_kernel_size(kernel_size)
        self.kernel_size, self.sigma, self.border_type, self.separable = kernel_size, sigma, border_type, separable

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return gaussian_blur2d(input, self.kernel_size, self.sigma, self.border_type, self.separable)


class BoxBlur(nn.Module):
    """Module form of :func:`box_blur`."""

    def __init__(self, kernel_size: tuple[int, int] | int, border_type: str = "reflect", separable: bool = True) -> None:
        super().__init__()
        check_kernel_size(kernel_size)
        check_border_type(border_type)
        self.kernel_size, self.border_type, self.separable = kernel_size, border_type, separable

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return box_blur(input, self.kernel_size, self.border_type, self.separable)
