"""Smoothness priors: total variation and the edge-aware inverse-depth smoothness of the
Kornia paper's equation 4."""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_choice, check_floating, check_image, check_shape
from gradcv.core_ops.errors import DeviceError, DTypeError, ShapeError


def total_variation(img: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    r"""Anisotropic total variation ``sum |d_y I| + sum |d_x I|`` over the last two axes.

    Kornia's definition: the result keeps every leading axis (``(B, C)`` for an image
    batch). ``'sum'`` adds the absolute forward differences; ``'mean'`` averages the
    vertical and the horizontal ones each over its own count, ``(H - 1) W`` and
    ``H (W - 1)``, and adds the two means (an axis of length 1 contributes 0).

    Args:
        img: floating tensor ``(*, H, W)``.
        reduction: ``'sum'`` or ``'mean'``.

    Returns:
        ``(*)``.

    Example:
        >>> total_variation(torch.tensor([[0.0, 1.0], [1.0, 3.0]]))
        tensor(5.)
        >>> total_variation(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3])
    """
    check_shape(img, ["*", "H", "W"], "img")
    check_floating(img, "img")
    check_choice(reduction, ("sum", "mean"), "reduction")
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs().flatten(-2)
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs().flatten(-2)
    if reduction == "sum":
        return dy.sum(-1) + dx.sum(-1)
    # An empty term sums to 0 rather than averaging to NaN.
    dy_term = dy.mean(-1) if dy.shape[-1] else dy.sum(-1)
    dx_term = dx.mean(-1) if dx.shape[-1] else dx.sum(-1)
    return dy_term + dx_term


def inverse_depth_smoothness_loss(idepth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    r"""Edge-aware smoothness of an inverse depth map (the Kornia paper's equation 4).

    .. math::
        L = \operatorname{mean} |\partial_x d|\, e^{-\overline{|\partial_x I|}}
          + \operatorname{mean} |\partial_y d|\, e^{-\overline{|\partial_y I|}}

    with forward differences, and ``\overline{|\partial I|}`` the mean over the image's
    channels of the absolute difference: the paper's ``||\partial I||`` read as Kornia's
    implementation reads it (an L1 norm divided by the channel count), and each mean
    taken over its own differences, as Kornia does, so that the two agree. The image only
    sets the weights; ``idepth`` is what is penalised (a constant inverse depth gives 0).

    Args:
        idepth: inverse depth ``(B, D, H, W)`` (usually ``D = 1``; every channel is weighted alike).
        image: image ``(B, C, H, W)``, values in a unit range (the weights use raw differences).

    Returns:
        A 0-d tensor.

    Example:
        >>> inverse_depth_smoothness_loss(torch.ones(1, 1, 4, 5), torch.rand(1, 3, 4, 5))
        tensor(0.)
    """
    check_image(idepth, "idepth")
    check_image(image, "image")
    if idepth.shape[0] != image.shape[0] or idepth.shape[-2:] != image.shape[-2:]:
        raise ShapeError(
            "image", (idepth.shape[0], "C", *idepth.shape[-2:]), tuple(image.shape),
            f"image: expected batch size and H x W of idepth {tuple(idepth.shape)}, got {tuple(image.shape)}",
        )
    if idepth.dtype != image.dtype:
        raise DTypeError("image", idepth.dtype, image.dtype, f"image: expected the dtype of idepth ({idepth.dtype}), got {image.dtype}")
    if idepth.device != image.device:
        raise DeviceError(
            "image", idepth.device, image.device, f"image: expected the device of idepth ({idepth.device}), got {image.device}"
        )
    d_dx = idepth[..., :, :-1] - idepth[..., :, 1:]
    d_dy = idepth[..., :-1, :] - idepth[..., 1:, :]
    w_x = torch.exp(-(image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True))
    w_y = torch.exp(-(image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True))
    return (d_dx.abs() * w_x).mean() + (d_dy.abs() * w_y).mean()


class TotalVariation(nn.Module):
    """Module form of :func:`total_variation` (Kornia's sums; ``reduction`` is an addition).

    >>> TotalVariation()(torch.ones(2, 3, 4, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        check_choice(reduction, ("sum", "mean"), "reduction")
        self.reduction = reduction

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return total_variation(img, self.reduction)


class InverseDepthSmoothnessLoss(nn.Module):
    """Module form of :func:`inverse_depth_smoothness_loss`.

    >>> InverseDepthSmoothnessLoss()(torch.ones(1, 1, 4, 5), torch.rand(1, 3, 4, 5))
    tensor(0.)
    """

    def forward(self, idepth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return inverse_depth_smoothness_loss(idepth, image)
