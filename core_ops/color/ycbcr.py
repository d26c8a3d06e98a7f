"""RGB <-> YCbCr, full range in ``[0, 1]``, as Kornia and OpenCV's floating-point path."""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops.color._validation import check_color_image, clamp_unit_
from gradcv.core_ops.color.gray import BT601_WEIGHTS, _luma

# Chroma scales of the forward transform (OpenCV's and Kornia's); the chroma channels
# are centred on 0.5.
_CB_SCALE = 0.564
_CR_SCALE = 0.713
_OFFSET = 0.5

# The inverse is derived from the forward constants instead of being rounded to three
# digits as OpenCV's (1.403, 0.714, 0.344, 1.773), which leaves a round-trip error of
# up to 2.4e-4; Kornia 0.9 made the same change.
_KR, _KG, _KB = BT601_WEIGHTS
_CR_TO_R = 1.0 / _CR_SCALE
_CB_TO_B = 1.0 / _CB_SCALE
_CR_TO_G = _KR / (_KG * _CR_SCALE)
_CB_TO_G = _KB / (_KG * _CB_SCALE)


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """Convert an RGB image to YCbCr.

    ``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 0.564 (B - Y) + 0.5`` and
    ``Cr = 0.713 (R - Y) + 0.5``, all in ``[0, 1]`` for RGB in ``[0, 1]``. The channel
    order is Kornia's ``Y, Cb, Cr``; OpenCV's ``COLOR_RGB2YCrCb`` gives ``Y, Cr, Cb``.

    Args:
        image: RGB image with values in ``[0, 1]``.

    Returns:
        The YCbCr image.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> rgb_to_ycbcr(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
        tensor([0.2990, 0.3314, 0.9998])
    """
    check_color_image(image, "image")
    red, green, blue = image.unbind(-3)
    luma = _luma(red, green, blue, None)
    cb = (blue - luma).mul_(_CB_SCALE).add_(_OFFSET)
    cr = (red - luma).mul_(_CR_SCALE).add_(_OFFSET)
    return torch.stack((luma, cb, cr), dim=-3)


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Convert a YCbCr image to RGB, the exact inverse of :func:`rgb_to_ycbcr`.

    The result is clamped to ``[0, 1]``, as Kornia does (so the gradient is zero where
    a channel would leave that range).

    Args:
        image: YCbCr image, channels ordered ``Y, Cb, Cr``, values in ``[0, 1]``.

    Returns:
        The RGB image in ``[0, 1]``.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> rgb = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
        >>> ycbcr_to_rgb(rgb_to_ycbcr(rgb)).flatten()
        tensor([0.2000, 0.5000, 0.9000])
    """
    check_color_image(image, "image")
    luma, cb, cr = image.unbind(-3)
    cb = cb - _OFFSET
    cr = cr - _OFFSET
    red = torch.add(luma, cr, alpha=_CR_TO_R)
    green = torch.add(luma, cr, alpha=-_CR_TO_G).add_(cb, alpha=-_CB_TO_G)
    blue = torch.add(luma, cb, alpha=_CB_TO_B)
    return clamp_unit_(torch.stack((red, green, blue), dim=-3))


class RgbToYcbcr(nn.Module):
    """Module form of :func:`rgb_to_ycbcr`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> RgbToYcbcr()(torch.rand(2, 3, 4, 5)).shape
        torch.Size([2, 3, 4, 5])
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Convert ``image`` (RGB, :math:`(*, 3, H, W)`) to YCbCr."""
        return rgb_to_ycbcr(image)


class YcbcrToRgb(nn.Module):
    """Module form of :func:`ycbcr_to_rgb`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> YcbcrToRgb()(torch.rand(2, 3, 4, 5)).shape
        torch.Size([2, 3, 4, 5])
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Convert ``image`` (YCbCr, :math:`(*, 3, H, W)`) to RGB."""
        return ycbcr_to_rgb(image)
