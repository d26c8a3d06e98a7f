"""Losses and image-quality metrics: SSIM, PSNR, smoothness priors, robust per-pixel
penalties for the solvers, and segmentation losses.

Kornia's names, argument orders and defaults where Kornia has the loss (``ssim``,
``ssim_loss``, ``psnr``, ``total_variation``, ``inverse_depth_smoothness_loss``,
``charbonnier_loss``, ``dice_loss``, ``focal_loss``, ``tversky_loss``); additions are
keyword-only. Each function has a ``torch.nn.Module`` of the CamelCase name.
"""

from gradcv.core_ops.losses.signal_noise import PSNRLoss, psnr, psnr_loss
from gradcv.core_ops.losses.robust import (
    CharbonnierLoss,
    HuberLoss,
    L1Loss,
    L2Loss,
    NCCLoss,
    charbonnier_loss,
    huber_loss,
    l1_loss,
    l2_loss,
    ncc_loss,
)
from gradcv.core_ops.losses.segmentation import DiceLoss, FocalLoss, TverskyLoss, dice_loss, focal_loss, tversky_loss
from gradcv.core_ops.losses.smoothness import (
    InverseDepthSmoothnessLoss,
    TotalVariation,
    inverse_depth_smoothness_loss,
    total_variation,
)
from gradcv.core_ops.losses.structural_similarity import SSIM, SSIMLoss, ssim, ssim_loss

__all__ = [
    "SSIM",
    "CharbonnierLoss",
    "DiceLoss",
    "FocalLoss",
    "HuberLoss",
    "InverseDepthSmoothnessLoss",
    "L1Loss",
    "L2Loss",
    "NCCLoss",
    "PSNRLoss",
    "SSIMLoss",
    "TotalVariation",
    "TverskyLoss",
    "charbonnier_loss",
    "dice_loss",
    "focal_loss",
    "huber_loss",
    "inverse_depth_smoothness_loss",
    "l1_loss",
    "l2_loss",
    "ncc_loss",
    "psnr",
    "psnr_loss",
    "ssim",
    "ssim_loss",
    "total_variation",
    "tversky_loss",
]
