"""Channel order: RGB and BGR."""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops.color._validation import check_color_image


def rgb_to_bgr(image: torch.Tensor) -> torch.Tensor:
    """Convert an RGB image to BGR by reversing the channel order.

    Args:
        image: RGB image.

    Returns:
        A new tensor holding the BGR image (never a view of ``image``).

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> rgb_to_bgr(torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)).flatten()
        tensor([0.3, 0.2, 0.1])
    """
    check_color_image(image, "image")
    return image.flip(-3)


def bgr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Convert a BGR image to RGB by reversing the channel order.

    Args:
        image: BGR image.

    Returns:
        A new tensor holding the RGB image (never a view of ``image``).

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> bgr_to_rgb(torch.tensor([0.3, 0.2, 0.1]).view(1, 3, 1, 1)).flatten()
        tensor([0.1, 0.2, 0.3])
    """
    check_color_image(image, "image")
    return image.flip(-3)


class RgbToBgr(nn.Module):
    """Module form of :func:`rgb_to_bgr`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> RgbToBgr()(torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)).flatten()
        tensor([0.3, 0.2, 0.1])
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Reverse the channel order of ``image`` (:math:`(*, 3, H, W)`)."""
        return rgb_to_bgr(image)


class BgrToRgb(nn.Module):
    """Module form of :func:`bgr_to_rgb`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> BgrToRgb()(torch.tensor([0.3, 0.2, 0.1]).view(1, 3, 1, 1)).flatten()
        tensor([0.1, 0.2, 0.3])
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Reverse the channel order of ``image`` (:math:`(*, 3, H, W)`)."""
        return bgr_to_rgb(image)
