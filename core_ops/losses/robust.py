"""Per-pixel penalties for the solvers' photometric terms: L1, L2, Charbonnier, Huber, and
zero-mean normalised cross-correlation as a loss.

One calling convention for all: ``(input, target, reduction, ..., *, mask=None)``.
``'none'`` returns the per-element penalty (times the mask), ``'sum'`` its sum and
``'mean'`` ``sum(mask * loss) / sum(mask)`` (the plain mean without a mask; 0 for an
all-zero mask). A mask is a floating or bool weight in ``[0, 1]`` that broadcasts to the
input, e.g. ``(B, 1, H, W)`` for the pixels that a warp left valid.

Names and defaults follow the library users will compare with: ``l1_loss``,
``l2_loss`` (squared error, ``F.mse_loss``) and ``huber_loss`` follow
``torch.nn.functional`` (``reduction='mean'``); ``charbonnier_loss`` is Kornia's
(``reduction='none'``, and ``eps=1`` gives Kornia's ``sqrt(d^2 + 1) - 1``).
"""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_image
from gradcv.core_ops.losses._common import (
    check_broadcast_mask,
    check_mask,
    check_pair,
    check_positive,
    check_reduction,
    reduce_loss,
)


def _prepare(
    input: torch.Tensor, target: torch.Tensor, reduction: str, mask: torch.Tensor | None, names: tuple[str, str]
) -> torch.Tensor | None:
    check_pair(input, target, names)
    check_reduction(reduction)
    return None if mask is None else check_broadcast_mask(mask, input)


def l1_loss(
    input: torch.Tensor, target: torch.Tensor, reduction: str = "mean", *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Absolute error ``|input - target|`` (``F.l1_loss`` plus a mask).

    Args:
        input: floating tensor of any shape.
        target: tensor of the same shape, dtype and device.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        mask: optional weights broadcastable to ``input``.

    Example:
        >>> l1_loss(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0]))
        tensor(1.5000)
    """
    m = _prepare(input, target, reduction, mask, ("input", "target"))
    return reduce_loss((input - target).abs(), reduction, m)


def l2_loss(
    input: torch.Tensor, target: torch.Tensor, reduction: str = "mean", *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared error ``(input - target)^2``; the mean is the MSE (``F.mse_loss`` plus a mask).

    Example:
        >>> l2_loss(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0]))
        tensor(2.5000)
    """
    m = _prepare(input, target, reduction, mask, ("input", "target"))
    return reduce_loss((input - target).square(), reduction, m)


def charbonnier_loss(
    img1: torch.Tensor,
    img2: torch.Tensor,
    reduction: str = "none",
    *,
    eps: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Charbonnier penalty ``sqrt(d^2 + eps^2) - eps`` of ``d = img1 - img2``.

    Smooth everywhere (slope ``d / sqrt(d^2 + eps^2)``, 0 at ``d = 0``), quadratic for
    ``|d| << eps`` and ``|d| - eps`` for ``|d| >> eps``. Kornia's name, argument order and
    default ``reduction='none'``; the default ``eps=1`` is Kornia's (Barron's ``alpha=1``,
    ``c=1``), and the solvers' usual Charbonnier is ``eps`` around ``1e-3``. Evaluated as
    ``d^2 / (sqrt(d^2 + eps^2) + eps)``, which does not cancel for small residuals.

    Example:
        >>> charbonnier_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.0, -1.0]), eps=3.0)
        tensor([0.0000, 2.0000])
    """
    e = check_positive(eps, "eps")
    m = _prepare(img1, img2, reduction, mask, ("img1", "img2"))
    sq = (img1 - img2).square()
    return reduce_loss(sq / ((sq + e * e).sqrt() + e), reduction, m)


def huber_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Huber penalty: ``d^2 / 2`` for ``|d| < delta``, ``delta (|d| - delta / 2)`` beyond (``F.huber_loss`` plus a mask).

    Example:
        >>> huber_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction="none")
        tensor([0.1250, 2.5000])
    """
    dl = check_positive(delta, "delta")
    m = _prepare(input, target, reduction, mask, ("input", "target"))
    a = (input - target).abs()
    # min(|d|, delta) keeps one formula with a continuous gradient: q (|d| - q / 2).
    q = a.clamp(max=dl)
    return reduce_loss(q * (a - 0.5 * q), reduction, m)


def ncc_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    *,
    eps: float = 1e-8,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""``1 - ZNCC``: one minus the zero-mean normalised cross-correlation of each image.

    For each sample and channel, over the pixels (mask-weighted when a mask is given):

    .. math::
        \text{ZNCC} = \frac{\operatorname{cov}(x, y)}{\sqrt{(\operatorname{var} x + \epsilon)(\operatorname{var} y + \epsilon)}}

    then averaged over the channels: the loss of a sample is in ``[0, 2]`` (0 for images
    equal up to a positive gain and an offset per channel) and ignores exposure changes.
    ``eps`` (in squared intensity units) keeps a constant image finite: its ZNCC is 0 and
    its gradient finite.

    Args:
        input: image ``(B, C, H, W)``.
        target: image of the same shape, dtype and device.
        reduction: ``'mean'`` or ``'sum'`` over the batch, or ``'none'``: ``(B,)``.
        eps: non-negative variance floor.
        mask: optional weights ``(B, 1, H, W)`` or ``(B, C, H, W)``: the statistics become
            mask-weighted means.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> ncc_loss(x, 2 * x + 1, reduction="none").abs().max() < 1e-5
        tensor(True)
    """
    check_image(input, "input")
    check_pair(input, target)
    check_reduction(reduction)
    e = check_positive(eps, "eps", allow_zero=True)
    weight = total = None
    if mask is not None:
        b, c, h, w = input.shape
        weight = check_mask(mask, input, [(b, 1, h, w), (b, c, h, w)])
        # An all-zero mask gives 0 / tiny = 0 for every statistic, hence ZNCC 0.
        total = weight.expand_as(input).sum((-2, -1), keepdim=True).clamp_min(torch.finfo(input.dtype).tiny)

    def mean(t: torch.Tensor) -> torch.Tensor:
        """Per-channel (mask-weighted) mean over the pixels."""
        if weight is None:
            return t.mean((-2, -1), keepdim=True)
        return (weight * t).sum((-2, -1), keepdim=True) / total

    xc = input - mean(input)
    yc = target - mean(target)
    cov, var_x, var_y = mean(xc * yc), mean(xc * xc), mean(yc * yc)
    zncc = (cov * torch.rsqrt((var_x + e) * (var_y + e))).flatten(1).mean(1)
    return reduce_loss(1.0 - zncc, reduction)


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`; the mask is passed per call."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return l1_loss(input, target, self.reduction, mask=mask)


class L2Loss(nn.Module):
    """Module form of :func:`l2_loss`; the mask is passed per call."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return l2_loss(input, target, self.reduction, mask=mask)


class CharbonnierLoss(nn.Module):
    """Module form of :func:`charbonnier_loss`; the mask is passed per call."""

    def __init__(self, reduction: str = "none", *, eps: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.eps = check_positive(eps, "eps")

    def forward(self, img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return charbonnier_loss(img1, img2, self.reduction, eps=self.eps, mask=mask)


class HuberLoss(nn.Module):
    """Module form of :func:`huber_loss`; the mask is passed per call."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.delta = check_positive(delta, "delta")

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return huber_loss(input, target, self.reduction, self.delta, mask=mask)


class NCCLoss(nn.Module):
    """Module form of :func:`ncc_loss`; the mask is passed per call."""

    def __init__(self, reduction: str = "mean", *, eps: float = 1e-8) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.eps = check_positive(eps, "eps", allow_zero=True)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return ncc_loss(input, target, self.reduction, eps=self.eps, mask=mask)
