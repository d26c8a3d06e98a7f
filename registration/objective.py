"""The photometric objective of one pyramid level: the problem object the level solvers
take, their outcome, the per-pair loss over the valid pixels and the masks' weights."""

from __future__ import annotations

import math
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


def residual_loss(loss: str, r: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(pair_loss (B,), IRLS weights or None)`` of the least-squares family (``'l1'``,
    ``'l2'``, ``'charbonnier'``) from the residual ``r = warped - target``: the numbers of
    :func:`pair_loss` and :func:`robust_weight`, bit for bit, sharing their passes over
    ``r`` (the second-order solver's evaluation)."""
    if loss == "charbonnier":
        sq = r.square()
        t = sq + eps * eps
        err, robust = sq / (t.sqrt() + eps), torch.rsqrt(t)
    elif loss == "l1":
        err = r.abs()
        robust = 1.0 / err.clamp_min(eps)
    else:
        err, robust = r.square(), None
    total = weight.sum((1, 2, 3)) * r.shape[1]
    return (err * weight).sum((1, 2, 3)) / total.clamp_min(1.0), robust


#: The photometric model's terms for each ``config.photometric``: the columns ``phi`` of
#: ``dst(p) ≈ src(G p) + sum_j c_j phi_j(p)``, linear in the per-pair coefficients ``c``.
#: ``gain``: the warped source (centred at 0.5), ``bias``: 1, ``curve``: the warped source
#: squared (centred at 0.5; a gamma change, to second order), ``blur``: its Laplacian
#: (a Gaussian blur of variance ``2 c`` of either image, to first order).
PHOTOMETRIC_TERMS = {
    "none": (), "gain_bias": ("gain", "bias"), "tone": ("gain", "bias", "curve"), "exposure": ("gain", "bias", "curve", "blur"),
}


def level_photometric(photometric: str, finest: bool) -> str:
    """The model used on a level: the configured one on the finest; gain and bias at most
    on the coarser ones, where the extra terms' freedom let a wrong start of the search
    fit a masked pair better than the right one (a DeTone pair with an occluder masked
    out ended 60-110 px off with them, 0.001 px without)."""
    return photometric if finest or photometric == "none" else "gain_bias"


def photometric_columns(photometric: str, warped: torch.Tensor) -> torch.Tensor | None:
    """``(B, k, C, h, w)`` the model's columns at ``warped`` (``None`` for ``'none'``)."""
    terms = PHOTOMETRIC_TERMS[photometric]
    if not terms:
        return None
    if torch.is_grad_enabled():  # stacked, as autograd needs (out= is not differentiable)
        centred = warped - 0.5
        columns = {"gain": lambda: centred, "bias": lambda: torch.ones_like(warped), "curve": centred.square, "blur": lambda: laplacian(warped)}
        return torch.stack([columns[t]() for t in terms], 1)
    # Written in place into one tensor: the same numbers without the stack's copy.
    out = warped.new_empty(warped.shape[0], len(terms), *warped.shape[1:])
    centred = warped - 0.5
    for j, term in enumerate(terms):
        if term == "gain":
            torch.sub(warped, 0.5, out=out[:, j])
        elif term == "bias":
            out[:, j].fill_(1.0)
        elif term == "curve":
            torch.square(centred, out=out[:, j])
        else:
            laplacian(warped, out[:, j])
    return out


def laplacian(image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The 5-point Laplacian of every channel, replicated borders (into ``out`` if given)."""
    p = F.pad(image, (1, 1, 1, 1), mode="replicate")
    total = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    return total - 4 * image if out is None else torch.sub(total, 4 * image, out=out)


def photometric_gram(phi: torch.Tensor, weight: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ΦᵀWΦ (B, k, k), ΦᵀWr (B, k))`` in float64 over the pixels and channels."""
    B, k = phi.shape[:2]
    N = math.prod(r.shape[1:])  # explicit: an empty batch has no -1 to infer
    P = phi.reshape(B, k, N)
    PW = P * weight.expand_as(r).reshape(B, 1, N)
    return (PW @ P.transpose(1, 2)).to(torch.float64), (PW @ r.reshape(B, N, 1))[..., 0].to(torch.float64)


def ridged(D: torch.Tensor) -> torch.Tensor:
    """The photometric Gram matrices ``D (B, k, k)`` lightly regularised for a solve:
    ``D + (1e-9 trace(D) + 1e-30) I``, so that a column without support (the blur's on a
    flat image) gets 0 instead of a singular system. Every solve with ``D`` uses it (the
    fit, the solver's elimination, the uncertainty's projection)."""
    k = D.shape[-1]
    ridge = 1e-9 * D.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) + 1e-30
    return D + ridge[..., None] * torch.eye(k, dtype=D.dtype, device=D.device)


def photometric_solve(D: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``D^-1 e`` per pair, lightly regularised (:func:`ridged`: a column without support,
    the blur's on a flat image, gets 0); 0 where not finite. A zero ``e`` gives exactly 0."""
    c = torch.linalg.solve(ridged(D), e[..., None])[..., 0]
    return torch.where(torch.isfinite(c), c, torch.zeros_like(c))


def apply_photometric(warped: torch.Tensor, phi: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``warped + sum_j c_j phi_j`` (``c (B, k)``)."""
    return warped + (c.to(warped.dtype)[:, :, None, None, None] * phi).sum(1)


def fit_photometric(photometric: str, warped: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``warped`` with the photometric model ``photometric`` (:data:`PHOTOMETRIC_TERMS`)
    fitted to ``target`` by weighted least squares over ``weight (B, 1 or C, h, w)``
    (``'none'``: ``warped`` itself). Fitted on ``target - warped``, so a pair whose
    residual is exactly zero stays exact. Differentiable."""
    phi = photometric_columns(photometric, warped)
    if phi is None:
        return warped
    D, e = photometric_gram(phi, weight, target - warped)
    return apply_photometric(warped, phi, photometric_solve(D, e))


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
