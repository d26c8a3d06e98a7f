"""RGB <-> HSV, with hue in radians as Kornia.

Hue is undefined for grey pixels (``r == g == b``) and saturation for black ones. Both
are computed with the double-``where`` pattern: the divisor is replaced by one wherever
it is zero *before* dividing, and the result is then selected away, so neither the value
nor the gradient ever sees ``0 / 0``. That keeps gradients finite everywhere without
relying on a tiny constant in the denominator, whose reciprocal would make gradients
explode near zero (``eps`` in :func:`rgb_to_hsv` is Kornia's, kept for compatibility;
``eps=0`` is safe).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcv.core_ops.color._validation import check_color_image

_TWO_PI = 2.0 * math.pi
# Hue is computed in sextants (units of 60 degrees, [0, 6)) and scaled to radians once.
_RADIANS_PER_SEXTANT = math.pi / 3.0
_SEXTANTS_PER_RADIAN = 3.0 / math.pi


def _hue_sextants(image: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Hue of ``image`` in sextants, in ``[-1, 5]`` (not yet wrapped); 0 where grey.

    ``chroma`` is ``max - min`` over the channels, ``(*, 1, H, W)``.
    """
    red, green, blue = image.split(1, dim=-3)
    has_hue = chroma > 0
    safe_chroma = torch.where(has_hue, chroma, 1.0)
    # The first maximal channel picks the sextant; at ties either choice gives the same hue.
    red_is_max = (red >= green) & (red >= blue)
    green_is_max = green >= blue
    numerator = torch.where(red_is_max, green - blue, torch.where(green_is_max, blue - red, red - green))
    ratio = numerator / safe_chroma
    sextant = torch.where(red_is_max, ratio, torch.where(green_is_max, ratio + 2.0, ratio + 4.0))
    return torch.where(has_hue, sextant, 0.0)


def _saturation(value: torch.Tensor, chroma: torch.Tensor, eps: float) -> torch.Tensor:
    """``chroma / (value + eps)``, and 0 (with zero gradient) for black pixels."""
    lit = value > 0
    return torch.where(lit, chroma / torch.where(lit, value + eps, 1.0), 0.0)


def _value_and_chroma(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel maximum and ``max - min``, both ``(*, 1, H, W)``."""
    value = image.amax(dim=-3, keepdim=True)
    return value, value - image.amin(dim=-3, keepdim=True)


def _rgb_from_hue(sextant: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """RGB from hue (in sextants, any real value: it wraps), value and chroma ``value * s``.

    Each channel sits ``chroma`` below ``value`` times a trapezoidal ramp of the hue that is
    0 on the channel's own third of the circle, 1 on the opposite third and linear between;
    the channels are the same ramp shifted by 5, 3 and 1 sextants. This is the sextant table
    of the textbook conversion without branches.
    """
    channels = []
    for shift in (5.0, 3.0, 1.0):
        k = torch.remainder(sextant + shift, 6.0)
        ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        channels.append(value - chroma * ramp)
    return torch.cat(channels, dim=-3)


def rgb_to_hsv(image: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Convert an RGB image to HSV.

    Hue is in radians in ``[0, 2π)``, saturation and value in ``[0, 1]``. Grey pixels get
    hue 0 and black pixels saturation 0, both with zero gradient, so backpropagation never
    produces NaN or infinity.

    Args:
        image: RGB image with values in ``[0, 1]``.
        eps: added to the value in the denominator of the saturation
            ``(max - min) / (max + eps)``, as Kornia does; it bounds the saturation's
            gradient near black. ``eps=1.1920929e-07`` (``FLT_EPSILON``) reproduces OpenCV.

    Returns:
        The HSV image, channels ordered hue, saturation, value.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> rgb = torch.tensor([[0.0, 0.5], [0.5, 0.5], [1.0, 0.5]]).view(1, 3, 1, 2)
        >>> rgb_to_hsv(rgb).flatten(1)  # azure (210 degrees), then grey
        tensor([[3.6652, 0.0000, 1.0000, 0.0000, 1.0000, 0.5000]])
    """
    check_color_image(image, "image")
    value, chroma = _value_and_chroma(image)
    hue = torch.remainder(_hue_sextants(image, chroma), 6.0) * _RADIANS_PER_SEXTANT
    # A tiny negative hue wraps to a number that rounds to the period itself; that is 0.
    hue = hue.masked_fill(hue >= _TWO_PI, 0.0)
    return torch.cat((hue, _saturation(value, chroma, eps), value), dim=-3)


def hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Convert an HSV image to RGB.

    Args:
        image: HSV image: hue in radians (any value; it wraps modulo 2π), saturation and
            value in ``[0, 1]``.

    Returns:
        The RGB image.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> hsv = torch.tensor([2.0 * math.pi / 3.0, 1.0, 0.5]).view(1, 3, 1, 1)
        >>> hsv_to_rgb(hsv).flatten()  # hue 120 degrees: green
        tensor([0.0, 0.5, 0.0])
    """
    check_color_image(image, "image")
    hue, saturation, value = image.split(1, dim=-3)
    return _rgb_from_hue(hue * _SEXTANTS_PER_RADIAN, value, value * saturation)


class RgbToHsv(nn.Module):
    """Module form of :func:`rgb_to_hsv`.

    Args:
        eps: as in :func:`rgb_to_hsv`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> RgbToHsv()(torch.rand(2, 3, 4, 5)).shape
        torch.Size([2, 3, 4, 5])
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Convert ``image`` (RGB, :math:`(*, 3, H, W)`) to HSV."""
        return rgb_to_hsv(image, self.eps)


class HsvToRgb(nn.Module):
    """Module form of :func:`hsv_to_rgb`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> HsvToRgb()(torch.rand(2, 3, 4, 5)).shape
        torch.Size([2, 3, 4, 5])
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Convert ``image`` (HSV, :math:`(*, 3, H, W)`) to RGB."""
        return hsv_to_rgb(image)
