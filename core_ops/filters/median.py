"""Median blur."""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_border_type, check_image, check_kernel_size
from gradcv.core_ops.filters._engine import pad2d


def median_blur(input: torch.Tensor, kernel_size: tuple[int, int] | int, border_type: str = "replicate") -> torch.Tensor:
    """Median over a ``k_y x k_x`` window of every channel, as ``cv2.medianBlur``.

    The default border is ``'replicate'``, OpenCV's for ``medianBlur``, so that the
    result equals OpenCV's at the border too (Kornia pads differently).

    Args:
        input: image ``(B, C, H, W)``.
        kernel_size: ``(k_y, k_x)`` or one int; odd.
        border_type: ``'replicate'``, ``'reflect'`` (REFLECT_101), ``'constant'`` or ``'circular'``.

    Returns:
        ``(B, C, H, W)``. Differentiable: the gradient goes to the median pixel of each window.

    Example:
        >>> x = torch.tensor([[[[0.0, 9.0, 1.0], [2.0, 3.0, 8.0], [4.0, 5.0, 6.0]]]])
        >>> median_blur(x, 3)[0, 0, 1, 1]
        tensor(4.)
    """
    check_image(input)
    check_border_type(border_type)
    ky, kx = check_kernel_size(kernel_size)
    h, w = input.shape[-2:]
    xp = pad2d(input, ((ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2), border_type)
    # One view per window offset; the median of an odd count is unique.
    windows = torch.stack([xp[..., i : i + h, j : j + w] for i in range(ky) for j in range(kx)], dim=0)
    return windows.median(dim=0).values


class MedianBlur(nn.Module):
    """Module form of :func:`median_blur`.

    ``border_type`` defaults to ``'replicate'``, OpenCV's ``medianBlur`` border, where
    Kornia's default is ``'reflect'`` (see :func:`median_blur`).
    """

    def __init__(self, kernel_size: tuple[int, int] | int, border_type: str = "replicate") -> None:
        super().__init__()
        check_kernel_size(kernel_size)
        check_border_type(border_type)
        self.kernel_size, self.border_type = kernel_size, border_type

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return median_blur(input, self.kernel_size, self.border_type)
