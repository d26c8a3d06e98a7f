"""Brightness, contrast, saturation and hue adjustment, as ``kornia.enhance``.

Every factor is a Python float or a tensor that holds one value per image (shape
``(B,)`` for a ``(B, C, H, W)`` batch); more generally any tensor whose shape,
padded with trailing singleton dimensions to the image's rank, broadcasts to the image
without enlarging it (Kornia's rule). Tensor factors are moved to the image's device and
dtype and receive gradients.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from gradcv.core_ops.color._validation import check_any_image, check_color_image, clamp_unit_
from gradcv.core_ops.color.hsv import (
    _SEXTANTS_PER_RADIAN,
    _hue_sextants,
    _rgb_from_hue,
    _saturation,
    _value_and_chroma,
)
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError

Factor = Union[float, torch.Tensor]


def _factor(factor: object, image: torch.Tensor, name: str, *, per_channel: bool) -> Factor:
    """Validate ``factor`` and shape a tensor one to broadcast against ``image``.

    With ``per_channel=False`` the channel dimension of the padded factor must be 1: a
    saturation or hue shift is one number per pixel, not per channel.
    """
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        return float(factor)
    if not isinstance(factor, torch.Tensor):
        raise ArgumentTypeError(
            name, "a float or a tensor", type(factor), f"{name}: expected a float or a tensor, got {type(factor).__name__}"
        )
    if factor.is_complex() or factor.dtype == torch.bool:
        raise DTypeError(name, "real", factor.dtype, f"{name}: expected a real tensor, got {factor.dtype}")
    shape, image_shape = tuple(factor.shape), tuple(image.shape)
    fits = len(shape) <= len(image_shape) and all(f in (1, i) for f, i in zip(shape, image_shape))
    channel_dim = len(image_shape) - 3
    if not per_channel and len(shape) > channel_dim and shape[channel_dim] != 1:
        fits = False
    if not fits:
        expected = "(B,) or one that broadcasts to the image from the left"
        if not per_channel:
            expected += " with size 1 at the channel dimension"
        raise ShapeError(
            name, expected, shape, f"{name}: expected a float or a tensor of shape {expected}; got {shape} for image {image_shape}"
        )
    factor = factor.to(device=image.device, dtype=image.dtype)
    return factor.reshape(shape + (1,) * (len(image_shape) - len(shape)))


def adjust_brightness(image: torch.Tensor, factor: Factor, clip_output: bool = True) -> torch.Tensor:
    """Adjust brightness by adding ``factor`` to every pixel (Szeliski's convention, as Kornia).

    Args:
        image: image with any number of channels, values in ``[0, 1]``.
        factor: the value to add, a float or one per image; 0 leaves the image unchanged.
        clip_output: whether to clamp the result to ``[0, 1]``.

    Returns:
        The adjusted image.

    Shape:
        - image: :math:`(*, C, H, W)`
        - factor: float or :math:`(B,)`
        - output: :math:`(*, C, H, W)`

    Example:
        >>> image = torch.tensor([0.2, 0.9]).view(1, 1, 1, 2)
        >>> adjust_brightness(image, 0.25)
        tensor([[[[0.45, 1.0]]]])
        >>> adjust_brightness(image, 0.25, clip_output=False)
        tensor([[[[0.45, 1.15]]]])
    """
    check_any_image(image, "image")
    out = image + _factor(factor, image, "factor", per_channel=True)
    return clamp_unit_(out) if clip_output else out


def adjust_contrast(image: torch.Tensor, factor: Factor, clip_output: bool = True) -> torch.Tensor:
    """Adjust contrast by multiplying every pixel by ``factor`` (Szeliski's convention, as Kornia).

    Args:
        image: image with any number of channels, values in ``[0, 1]``.
        factor: the non-negative scale, a float or one per image; 1 leaves the image
            unchanged and 0 makes it black. A negative float raises; tensor values are not
            inspected, to avoid synchronising with the device.
        clip_output: whether to clamp the result to ``[0, 1]``.

    Returns:
        The adjusted image.

    Shape:
        - image: :math:`(*, C, H, W)`
        - factor: float or :math:`(B,)`
        - output: :math:`(*, C, H, W)`

    Example:
        >>> image = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2)
        >>> adjust_contrast(image, 2.0)
        tensor([[[[0.4, 1.0]]]])
    """
    check_any_image(image, "image")
    scale = _factor(factor, image, "factor", per_channel=True)
    if isinstance(scale, float) and not scale >= 0:
        raise ArgumentValueError(
            "factor", "a non-negative contrast factor", factor, f"factor: expected a non-negative contrast factor, got {factor!r}"
        )
    out = image * scale
    return clamp_unit_(out) if clip_output else out


def adjust_saturation(image: torch.Tensor, factor: Factor, eps: float = 1e-6) -> torch.Tensor:
    """Scale the HSV saturation of an RGB image by ``factor``, keeping hue and value.

    The result equals ``hsv_to_rgb`` of the image's HSV with saturation
    ``clamp(s * factor, 0, 1)``, as Kornia's ``adjust_saturation``: factor 0 makes each
    pixel ``max(R, G, B)`` (not its luma), 1 leaves the image unchanged, 2 doubles the
    saturation. It is computed without a round trip through HSV: at fixed hue and value,
    scaling the saturation scales every channel's distance below the maximum channel by
    one number per pixel.

    Args:
        image: RGB image with values in ``[0, 1]``.
        factor: saturation scale, a float or one per image.
        eps: added to the value in the saturation's denominator, as in
            :func:`~core_ops.color.rgb_to_hsv`; it keeps the gradient bounded near black.
            Kornia fixes it at ``1e-8``; the results differ by at most
            ``factor * eps``.

    Returns:
        The adjusted RGB image.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - factor: float or :math:`(B,)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> image = torch.tensor([0.8, 0.6, 0.4]).view(1, 3, 1, 1)
        >>> adjust_saturation(image, 0.5).flatten()
        tensor([0.8, 0.7, 0.6])
        >>> adjust_saturation(image, 0.0).flatten()
        tensor([0.8, 0.8, 0.8])
    """
    check_color_image(image, "image")
    scale = _factor(factor, image, "factor", per_channel=False)
    value, chroma = _value_and_chroma(image)
    target_saturation = (_saturation(value, chroma, eps) * scale).clamp_(0.0, 1.0)
    # Ratio of the new chroma (value * new saturation) to the old; where there was no
    # chroma the new one is 0 as well, and the pixel stays grey whatever the ratio.
    chroma_scale = target_saturation * value / torch.where(chroma > 0, chroma, 1.0)
    return value - chroma_scale * (value - image)


def adjust_hue(image: torch.Tensor, factor: Factor) -> torch.Tensor:
    """Rotate the HSV hue of an RGB image by ``factor`` radians; hue wraps around.

    Equal to Kornia's ``adjust_hue`` (``rgb_to_hsv``, add to hue modulo 2π,
    ``hsv_to_rgb``) without materialising the HSV image. ``±π`` give the complementary
    colours; grey pixels are unchanged.

    Args:
        image: RGB image with values in ``[0, 1]``.
        factor: hue shift in radians, nominally in ``[-π, π]`` (any value works: a shift
            of 2π is the identity), a float or one per image.

    Returns:
        The adjusted RGB image.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - factor: float or :math:`(B,)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> adjust_hue(red, 2.0 * torch.pi / 3.0).flatten()  # red -> green
        tensor([0.0, 1.0, 0.0])
    """
    check_color_image(image, "image")
    shift = _factor(factor, image, "factor", per_channel=False)
    value, chroma = _value_and_chroma(image)
    # value * saturation is the chroma itself; using it directly skips the division by
    # value, so black pixels need no guard at all.
    sextant = _hue_sextants(image, chroma) + shift * _SEXTANTS_PER_RADIAN
    return _rgb_from_hue(sextant, value, chroma)


def _keep_factor(module: nn.Module, name: str, factor: Factor) -> None:
    """Store a factor on a module: a plain tensor as a non-persistent buffer, so that it
    follows the module across devices; a Parameter stays a parameter."""
    if isinstance(factor, torch.Tensor) and not isinstance(factor, nn.Parameter):
        module.register_buffer(name, factor, persistent=False)
    else:
        setattr(module, name, factor)


class AdjustBrightness(nn.Module):
    """Module form of :func:`adjust_brightness`.

    Kornia's ``AdjustBrightness`` takes only the factor; ``clip_output`` is the
    function's option, added last so that every Kornia call works unchanged.

    Args:
        brightness_factor: as ``factor`` in :func:`adjust_brightness`.
        clip_output: as in :func:`adjust_brightness`.

    Shape:
        - image: :math:`(*, C, H, W)`
        - output: :math:`(*, C, H, W)`

    Example:
        >>> AdjustBrightness(0.25)(torch.full((1, 1, 1, 2), 0.5))
        tensor([[[[0.75, 0.75]]]])
    """

    def __init__(self, brightness_factor: Factor, clip_output: bool = True) -> None:
        super().__init__()
        _keep_factor(self, "brightness_factor", brightness_factor)
        self.clip_output = clip_output

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Adjust the brightness of ``image`` (:math:`(*, C, H, W)`)."""
        return adjust_brightness(image, self.brightness_factor, self.clip_output)


class AdjustContrast(nn.Module):
    """Module form of :func:`adjust_contrast`.

    Kornia's ``AdjustContrast`` takes only the factor; ``clip_output`` is the function's
    option, added last so that every Kornia call works unchanged.

    Args:
        contrast_factor: as ``factor`` in :func:`adjust_contrast`.
        clip_output: as in :func:`adjust_contrast`.

    Shape:
        - image: :math:`(*, C, H, W)`
        - output: :math:`(*, C, H, W)`

    Example:
        >>> AdjustContrast(0.5)(torch.ones(1, 1, 1, 2))
        tensor([[[[0.5, 0.5]]]])
    """

    def __init__(self, contrast_factor: Factor, clip_output: bool = True) -> None:
        super().__init__()
        _keep_factor(self, "contrast_factor", contrast_factor)
        self.clip_output = clip_output

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Adjust the contrast of ``image`` (:math:`(*, C, H, W)`)."""
        return adjust_contrast(image, self.contrast_factor, self.clip_output)


class AdjustSaturation(nn.Module):
    """Module form of :func:`adjust_saturation`.

    Kornia's ``AdjustSaturation`` takes only the factor; ``eps`` is the function's
    option, added last so that every Kornia call works unchanged.

    Args:
        saturation_factor: as ``factor`` in :func:`adjust_saturation`.
        eps: as in :func:`adjust_saturation`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> AdjustSaturation(0.0)(torch.tensor([0.8, 0.6, 0.4]).view(1, 3, 1, 1)).flatten()
        tensor([0.8, 0.8, 0.8])
    """

    def __init__(self, saturation_factor: Factor, eps: float = 1e-6) -> None:
        super().__init__()
        _keep_factor(self, "saturation_factor", saturation_factor)
        self.eps = eps

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Adjust the saturation of ``image`` (RGB, :math:`(*, 3, H, W)`)."""
        return adjust_saturation(image, self.saturation_factor, self.eps)


class AdjustHue(nn.Module):
    """Module form of :func:`adjust_hue`.

    Args:
        hue_factor: as ``factor`` in :func:`adjust_hue`, in radians.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 3, H, W)`

    Example:
        >>> AdjustHue(torch.pi)(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
        tensor([0.0, 1.0, 1.0])
    """

    def __init__(self, hue_factor: Factor) -> None:
        super().__init__()
        _keep_factor(self, "hue_factor", hue_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Adjust the hue of ``image`` (RGB, :math:`(*, 3, H, W)`)."""
        return adjust_hue(image, self.hue_factor)
