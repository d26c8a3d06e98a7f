"""Argument checks shared by the colour operators.

The fast path reads only metadata; the helpers in ``core_ops._checks`` are called (and
format their message) only once a check has already failed.
"""

from __future__ import annotations

import torch

from gradcv.core_ops._checks import check_floating, check_shape


def check_color_image(image: object, name: str = "image") -> None:
    """Raise unless ``image`` is a floating ``(*, 3, H, W)`` tensor.

    Raises:
        TypeError: ``image`` is not a tensor, or not floating.
        ValueError: ``image`` has fewer than three dimensions or not three channels.
    """
    if (
        isinstance(image, torch.Tensor)
        and image.ndim >= 3
        and image.shape[-3] == 3
        and image.is_floating_point()
    ):
        return
    check_shape(image, ["*", 3, "H", "W"], name)
    assert isinstance(image, torch.Tensor)
    check_floating(image, name)


def check_any_image(image: object, name: str = "image") -> None:
    """Raise unless ``image`` is a floating ``(*, C, H, W)`` tensor with any channel count."""
    if isinstance(image, torch.Tensor) and image.ndim >= 3 and image.is_floating_point():
        return
    check_shape(image, ["*", "C", "H", "W"], name)
    assert isinstance(image, torch.Tensor)
    check_floating(image, name)


def clamp_unit_(fresh: torch.Tensor) -> torch.Tensor:
    """Clamp a tensor the caller has just allocated into ``[0, 1]`` without another allocation.

    Only for temporaries no caller can see: autograd keeps what it needs for the backward
    of an in-place clamp, so this stays differentiable.
    """
    return fresh.clamp_(0.0, 1.0)
