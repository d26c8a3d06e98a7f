"""Grayscale conversion of RGB and BGR images."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from gradcv.core_ops import _native
from gradcv.core_ops._checks import check_shape
from gradcv.core_ops.color._validation import check_color_image
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError

# ITU-R BT.601 luma weights in RGB order: what OpenCV's COLOR_RGB2GRAY and Kornia use.
BT601_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

Weights = Union[torch.Tensor, Sequence[float]]


def _luma(
    red: torch.Tensor, green: torch.Tensor, blue: torch.Tensor, weights: Optional[Weights]
) -> torch.Tensor:
    """Weighted channel sum in one output buffer, accumulated in place.

    Building a weight tensor and calling einsum or matmul is about four times slower on
    batches of images; scaling one channel into a fresh buffer and accumulating the others
    into it touches each pixel the fewest times. The buffer is a fresh temporary, so the
    in-place accumulation is safe for autograd.
    """
    if weights is None:
        weights = BT601_WEIGHTS
    if isinstance(weights, torch.Tensor):
        w = weights.to(device=red.device, dtype=red.dtype)
        w_red, w_green, w_blue = w.unbind()
        return (red * w_red).addcmul_(green, w_green).addcmul_(blue, w_blue)
    w_red, w_green, w_blue = (float(v) for v in weights)
    return (red * w_red).add_(green, alpha=w_green).add_(blue, alpha=w_blue)


def _check_weights(rgb_weights: object) -> None:
    if rgb_weights is None:
        return
    if isinstance(rgb_weights, torch.Tensor):
        check_shape(rgb_weights, [3], "rgb_weights")
        if rgb_weights.is_complex() or rgb_weights.dtype == torch.bool:
            raise DTypeError("rgb_weights", "real", rgb_weights.dtype, f"rgb_weights: expected a real tensor, got {rgb_weights.dtype}")
        return
    if (
        isinstance(rgb_weights, (tuple, list))
        and len(rgb_weights) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rgb_weights)
    ):
        return
    what = "None, a tensor of shape (3,) or three floats"
    raise ArgumentTypeError("rgb_weights", what, rgb_weights, f"rgb_weights: expected {what}, got {rgb_weights!r}")


def rgb_to_grayscale(image: torch.Tensor, rgb_weights: Optional[Weights] = None) -> torch.Tensor:
    """Convert an RGB image to grayscale as a weighted sum of its channels.

    Args:
        image: RGB image with values in ``[0, 1]``.
        rgb_weights: weights of the red, green and blue channels, a tensor of shape
            ``(3,)`` (cast to the image's device and dtype; gradients flow into it) or
            three floats. ``None`` uses the ITU-R BT.601 weights ``(0.299, 0.587, 0.114)``,
            as OpenCV's ``COLOR_RGB2GRAY``.

    Returns:
        The grayscale image, on the device and in the dtype of ``image``.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 1, H, W)`

    Example:
        >>> image = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> rgb_to_grayscale(image)
        tensor([[[[0.299]]]])
        >>> rgb_to_grayscale(image, torch.tensor([0.5, 0.25, 0.25]))
        tensor([[[[0.5]]]])
    """
    check_color_image(image, "image")
    _check_weights(rgb_weights)
    # torch.export records ATen ops only (a program that runs without gradcv, and converts to ONNX)
    if not isinstance(rgb_weights, torch.Tensor) and not _native.needs_decomposition():
        return _grayscale_op(image, [float(v) for v in (rgb_weights or BT601_WEIGHTS)], False)
    red, green, blue = image.unbind(-3)
    return _luma(red, green, blue, rgb_weights).unsqueeze(-3)


def bgr_to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """Convert a BGR image to grayscale with the ITU-R BT.601 weights.

    Args:
        image: BGR image with values in ``[0, 1]``.

    Returns:
        The grayscale image, as OpenCV's ``COLOR_BGR2GRAY``.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 1, H, W)`

    Example:
        >>> image = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> bgr_to_grayscale(image)
        tensor([[[[0.114]]]])
    """
    check_color_image(image, "image")
    if not _native.needs_decomposition():
        return _grayscale_op(image, list(BT601_WEIGHTS), True)
    # Reading the channels in reverse avoids the copy that flipping to RGB first would make.
    blue, green, red = image.unbind(-3)
    return _luma(red, green, blue, None).unsqueeze(-3)


# The operator gradcv::grayscale: the weighted sum of the three channels of
# (*, 3, H, W) with float weights, in RGB order (bgr: the channels are read in reverse),
# as (*, 1, H, W). One pass in C on the CPU (core_ops/_native), _luma elsewhere. Under
# forward-mode AD and functorch's grad/jvp (which custom ops do not support) and for
# tensor weights, the functions above call _luma directly.
@torch.library.custom_op("gradcv::grayscale", mutates_args=())
def _grayscale_op(image: torch.Tensor, weights: list[float], bgr: bool) -> torch.Tensor:
    """The PyTorch code, for every device; the CPU's kernel is below."""
    _check_op_input(image, weights)
    return _grayscale_torch(image, weights, bgr)


@_native.cpu_kernel("grayscale")
def _grayscale_cpu(image: torch.Tensor, weights: list[float], bgr: bool) -> torch.Tensor:
    _check_op_input(image, weights)
    fused = _native.weighted_sum3(image, (weights[0], weights[1], weights[2]), reverse=bgr)
    return fused if fused is not None else _grayscale_torch(image, weights, bgr)


@_grayscale_op.register_fake
def _grayscale_fake(image: torch.Tensor, weights: list[float], bgr: bool) -> torch.Tensor:
    _check_op_input(image, weights)
    return image.new_empty(*image.shape[:-3], 1, *image.shape[-2:])


def _check_op_input(image: torch.Tensor, weights: list[float]) -> None:
    # the op is public (torch.ops.gradcv): it checks what the C kernel relies on
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ShapeError("image", ("*", 3, "H", "W"), tuple(image.shape))
    if len(weights) != 3:
        raise ArgumentValueError("weights", "three floats", list(weights), f"weights: expected three floats, got {list(weights)}")


def _grayscale_torch(image: torch.Tensor, weights: list[float], bgr: bool) -> torch.Tensor:
    first, green, last = image.unbind(-3)
    red, blue = (last, first) if bgr else (first, last)
    # contiguous whatever the input's layout, as the fake implementation says
    return _luma(red, green, blue, weights).unsqueeze(-3).contiguous()


def _grayscale_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    _, ctx.weights, ctx.bgr = inputs


def _grayscale_backward(ctx, grad):  # type: ignore[no-untyped-def]
    # linear: each channel's gradient is the output's times that channel's weight
    w_red, w_green, w_blue = ctx.weights
    in_order = (w_blue, w_green, w_red) if ctx.bgr else (w_red, w_green, w_blue)
    return torch.cat([grad * w for w in in_order], dim=-3), None, None


_grayscale_op.register_autograd(_grayscale_backward, setup_context=_grayscale_setup)
torch.library.register_vmap(_grayscale_op, _native.batch_first_vmap(_grayscale_op))


class RgbToGrayscale(nn.Module):
    """Module form of :func:`rgb_to_grayscale`.

    Args:
        rgb_weights: as in :func:`rgb_to_grayscale`; a tensor is kept as a
            (non-persistent) buffer, so it follows the module across devices.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 1, H, W)`

    Example:
        >>> RgbToGrayscale()(torch.ones(2, 3, 4, 5)).shape
        torch.Size([2, 1, 4, 5])
    """

    rgb_weights: Optional[Weights]

    def __init__(self, rgb_weights: Optional[Weights] = None) -> None:
        super().__init__()
        _check_weights(rgb_weights)
        if isinstance(rgb_weights, torch.Tensor) and not isinstance(rgb_weights, nn.Parameter):
            self.register_buffer("rgb_weights", rgb_weights, persistent=False)
        else:
            self.rgb_weights = rgb_weights

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Convert ``image`` (RGB, :math:`(*, 3, H, W)`) to :math:`(*, 1, H, W)` grayscale."""
        return rgb_to_grayscale(image, self.rgb_weights)


class BgrToGrayscale(nn.Module):
    """Module form of :func:`bgr_to_grayscale`.

    Shape:
        - image: :math:`(*, 3, H, W)`
        - output: :math:`(*, 1, H, W)`

    Example:
        >>> BgrToGrayscale()(torch.ones(2, 3, 4, 5)).shape
        torch.Size([2, 1, 4, 5])
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Convert ``image`` (BGR, :math:`(*, 3, H, W)`) to :math:`(*, 1, H, W)` grayscale."""
        return bgr_to_grayscale(image)
