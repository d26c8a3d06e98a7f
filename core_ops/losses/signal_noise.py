"""Peak signal-to-noise ratio and its loss (Kornia's ``psnr``, ``psnr_loss``, ``PSNRLoss``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcv.core_ops.losses._common import check_pair, check_positive


def psnr(image: torch.Tensor, target: torch.Tensor, max_val: float) -> torch.Tensor:
    r"""Peak signal-to-noise ratio ``10 log10(max_val^2 / MSE)``, in decibels.

    As Kornia: one MSE pooled over every element (batch and channels included), so for a
    batch this is the PSNR of the pooled MSE, not the mean of per-image PSNRs; call it
    per image for those. Identical inputs give ``inf`` (and no gradient there).

    Args:
        image: floating tensor of any shape.
        target: floating tensor of the same shape, dtype and device.
        max_val: the data range (1 for images in ``[0, 1]``).

    Returns:
        A 0-d tensor.

    Example:
        >>> ones = torch.ones(1)
        >>> psnr(ones, 1.2 * ones, 2.0)  # 10 log10(4 / 0.04)
        tensor(20.0000)
    """
    check_pair(image, target, ("image", "target"))
    peak = check_positive(max_val, "max_val")
    mse = (image - target).square().mean()
    return 20.0 * math.log10(peak) - 10.0 * torch.log10(mse)


def psnr_loss(image: torch.Tensor, target: torch.Tensor, max_val: float) -> torch.Tensor:
    """``-psnr(image, target, max_val)``: a loss to minimise.

    >>> ones = torch.ones(1)
    >>> psnr_loss(ones, 1.2 * ones, 2.0)
    tensor(-20.0000)
    """
    return -psnr(image, target, max_val)


class PSNRLoss(nn.Module):
    """Module form of :func:`psnr_loss`.

    >>> PSNRLoss(2.0)(torch.ones(1), 1.2 * torch.ones(1))
    tensor(-20.0000)
    """

    def __init__(self, max_val: float) -> None:
        super().__init__()
        check_positive(max_val, "max_val")
        self.max_val = max_val

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return psnr_loss(image, target, self.max_val)
