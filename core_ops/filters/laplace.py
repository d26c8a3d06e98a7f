"""Laplacian with OpenCV's stencils."""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_border_type, check_image, check_kernel_size
from gradcv.core_ops.errors import ArgumentValueError
from gradcv.core_ops.filters._engine import correlate_separable
from gradcv.core_ops.filters.derivatives import derivative_bank


def laplacian(
    input: torch.Tensor, kernel_size: tuple[int, int] | int, border_type: str = "reflect", normalized: bool = True
) -> torch.Tensor:
    """Laplacian ``d2/dx2 + d2/dy2`` of every channel, with OpenCV's stencils.

    ``kernel_size`` is ``cv2.Laplacian``'s ``ksize``: 1 gives the 5-point stencil
    ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``, 3 gives ``[[2, 0, 2], [0, -8, 0], [2, 0, 2]]``,
    and larger sizes the sum of the second-order Sobel kernels. Kornia's signature is
    kept, but not its numbers: Kornia uses an all-ones stencil with ``-(k^2 - 1)`` at the
    centre, and its ``normalized`` divides by the absolute sum. Here ``normalized=True``
    scales the stencil to return the Laplacian itself (exact on quadratics), and
    ``normalized=False`` gives ``cv2.Laplacian``'s numbers.

    Args:
        input: image ``(B, C, H, W)``.
        kernel_size: 1, 3, 5 or 7 (an int, or a pair of equal ints).
        border_type: ``'reflect'`` (REFLECT_101, OpenCV's default), ``'constant'``, ``'replicate'``, ``'circular'``.
        normalized: see above.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> r = torch.arange(5.0)
        >>> f = (r[None, :] ** 2 + r[:, None] ** 2)[None, None]  # laplacian = 4
        >>> laplacian(f, 3)[0, 0, 2, 2]
        tensor(4.)
    """
    check_image(input)
    check_border_type(border_type)
    ky, kx = check_kernel_size(kernel_size)
    if ky != kx or ky not in (1, 3, 5, 7):
        raise ArgumentValueError("kernel_size", (1, 3, 5, 7), kernel_size, f"kernel_size: expected 1, 3, 5 or 7, got {kernel_size!r}")
    xx, _, yy = derivative_bank("sobel", 2, normalized, ky)
    both = correlate_separable(input, (xx, yy), border_type)
    return both.sum(-3)


class Laplacian(nn.Module):
    """Module form of :func:`laplacian`."""

    def __init__(self, kernel_size: tuple[int, int] | int, border_type: str = "reflect", normalized: bool = True) -> None:
        super().__init__()
        check_kernel_size(kernel_size)
        check_border_type(border_type)
        self.kernel_size, self.border_type, self.normalized = kernel_size, border_type, normalized

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return laplacian(input, self.kernel_size, self.border_type, self.normalized)
