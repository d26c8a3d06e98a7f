"""The photometric objective of one pyramid level: the problem object the level solvers
take, their outcome, the per-pair loss over the valid pixels and the masks' weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradcv.core_ops.losses import charbonnier_loss, l1_loss, l2_loss, ncc_loss, ssim_loss
from gradcv.optim import PyramidLevel
from gradcv.registration.sampling import LevelGrid


@dataclass(frozen=True, eq=False)  # holds tensors: identity, not value, comparison
class LevelProblem:
    """One pyramid level of a batch of ``B`` registration problems.

    Attributes:
        grid: the level's sampling grids.
        src: ``(B, C, h, w)`` the level's source images.
        dst: ``(B, C, h, w)`` the level's destination images.
        corners: ``(4, 2)`` the image corners in the frame.
        masks: ``(src_mask, dst_mask)``, ``(B, 1, h, w)`` each, or ``None``: the pixel
            weights (``dst_mask`` already eroded; ``src_mask`` moves with the warp).
        level: where the level sits in the coarse-to-fine schedule.
        motion: the motion model's name.
    """

    grid: LevelGrid
    src: torch.Tensor
    dst: torch.Tensor
    corners: torch.Tensor
    masks: tuple[torch.Tensor, torch.Tensor] | None
    level: PyramidLevel
    motion: str

    @property
    def batch(self) -> int:
        return int(self.src.shape[0])

    def repeat(self, k: int) -> "LevelProblem":
        """Every pair repeated ``k`` times in a row (``B * k`` problems), for a multi-start."""
        masks = None if self.masks is None else tuple(m.repeat_interleave(k, 0) for m in self.masks)
        return LevelProblem(
            self.grid, self.src.repeat_interleave(k, 0), self.dst.repeat_interleave(k, 0), self.corners, masks,
            self.level, self.motion,
        )


@dataclass(eq=False)
class LevelOutcome:
    """What a level solver returns.

    Attributes:
        theta: ``(B, k)`` the parameters at the end of the level.
        history: ``(B, iterations)`` each pair's loss before each step, ``NaN`` where the
            pair took no step.
        steps: ``(B,)`` the steps each pair took.
        stopped: ``(B,)`` the pair met the stopping criteria.
        last_loss: ``(B,)`` each pair's loss at the start of the level's last iteration, or
            its final loss if the level ended early (what the multi-start ranks by).
    """

    theta: torch.Tensor
    history: torch.Tensor
    steps: torch.Tensor
    stopped: torch.Tensor
    last_loss: torch.Tensor


def pair_loss(loss: str, warped: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-pair ``sum(w * err) / sum(w)`` over the pixels (and channels), ``(B,)``.

    Args:
        loss: ``'l1'``, ``'l2'``, ``'charbonnier'`` (with ``eps``), ``'ssim'`` or ``'ncc'``.
        warped, target: ``(B, C, h, w)``.
        weight: ``(B, 1, h, w)`` pixel weights (0 outside the image or masked out).
        eps: the Charbonnier penalty's ``eps``.
    """
    if loss == "ncc":
        return ncc_loss(warped, target, "none", mask=weight)
    if loss == "l1":
        err = l1_loss(warped, target, "none", mask=weight)
    elif loss == "l2":
        err = l2_loss(warped, target, "none", mask=weight)
    elif loss == "charbonnier":
        err = charbonnier_loss(warped, target, "none", eps=eps, mask=weight)
    else:
        err = ssim_loss(warped, target, reduction="none", mask=weight)
    total = weight.sum((1, 2, 3)) * warped.shape[1]
    return err.sum((1, 2, 3)) / total.clamp_min(1.0)


def masked_weight(
    grid: LevelGrid, weight: torch.Tensor, G: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """``weight`` times the destination mask and the source mask carried by the warp ``G``
    (``masks = (src_mask, dst_mask)`` at this level, or ``None``)."""
    if masks is None:
        return weight
    src_mask, dst_mask = masks
    return weight * dst_mask * erode(grid.sample(src_mask, G)[0])


def erode(mask: torch.Tensor) -> torch.Tensor:
    """Each pixel's least weight over its 3 x 3 neighbourhood: a pixel's residual and image
    gradient read its neighbours (bilinear sampling, central differences, the pyramid's
    blur), so next to a masked-out region it is not to be trusted either."""
    return -F.max_pool2d(-mask, 3, stride=1, padding=1)


def robust_weight(loss: str, r: torch.Tensor, eps: float) -> torch.Tensor | None:
    """IRLS weights ``psi(r) / r`` of the penalty ``loss`` (``None`` for least squares)."""
    if loss == "l1":
        return 1.0 / r.abs().clamp_min(eps)
    if loss == "charbonnier":
        return torch.rsqrt(r.square() + eps * eps)
    return None
