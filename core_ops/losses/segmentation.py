"""Segmentation losses on class logits: Dice, focal and Tversky, with Kornia's names,
arguments, defaults and meaning (``kornia.losses``), so that the two can be swapped.

``pred`` holds logits ``(B, C, H, W)`` (the softmax over dim 1 is taken inside) and
``target`` int64 class indices ``(B, H, W)``; pixels labelled ``ignore_index`` leave the
sums (Dice, Tversky) or contribute 0 (focal, where they still count in the ``'mean'``
denominator, as in Kornia). A label outside ``[0, C)`` that is not ``ignore_index``
raises ``RuntimeError`` (from ``F.one_hot``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradcv.core_ops._checks import check_choice, check_floating, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentValueError, DeviceError, DTypeError, ShapeError
from gradcv.core_ops.losses._common import REDUCTIONS


def _check_labels(pred: object, target: object, spatial: bool = True) -> None:
    """``pred`` floating ``(B, C, H, W)`` (``(B, C, *)`` unless ``spatial``), ``target`` int64 ``(B, H, W)`` (``(B, *)``)."""
    if spatial:
        check_shape(pred, ["B", "C", "H", "W"], "pred")
    else:
        check_tensor(pred, "pred")
    assert isinstance(pred, torch.Tensor)
    if pred.ndim < 2:
        raise ShapeError("pred", ("B", "C", "*"), tuple(pred.shape))
    check_floating(pred, "pred")
    check_tensor(target, "target")
    assert isinstance(target, torch.Tensor)
    if target.dtype != torch.int64:
        raise DTypeError("target", torch.int64, target.dtype, f"target: expected int64 class indices, got {target.dtype}")
    expected = (pred.shape[0], *pred.shape[2:])
    if tuple(target.shape) != expected:
        raise ShapeError("target", expected, tuple(target.shape))
    if target.device != pred.device:
        raise DeviceError("target", pred.device, target.device)


def _check_weight(weight: object, pred: torch.Tensor) -> torch.Tensor | None:
    if weight is None:
        return None
    check_shape(weight, [pred.shape[1]], "weight")
    assert isinstance(weight, torch.Tensor)
    check_floating(weight, "weight")
    if weight.device != pred.device:
        raise DeviceError("weight", pred.device, weight.device)
    return weight


def _one_hot(target: torch.Tensor, num_classes: int, ignore_index: int | None, dtype: torch.dtype):
    """``(one_hot (B, C, *), valid (B, 1, *) or None)``; ignored pixels have an all-zero one-hot row."""
    valid = None
    if ignore_index is not None:
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
    one_hot = F.one_hot(target, num_classes).movedim(-1, 1).to(dtype)
    if valid is None:
        return one_hot, None
    valid = valid.unsqueeze(1)
    return one_hot * valid, valid


def dice_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    average: str = "micro",
    eps: float = 1e-8,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = -100,
) -> torch.Tensor:
    r"""Sørensen-Dice loss ``1 - 2 |X ∩ Y| / (|X| + |Y| + eps)`` of the softmax ``X`` and one-hot ``Y``.

    ``'micro'``: one Dice per sample over all classes and pixels, class ``c`` weighted by
    ``weight[c]`` in both sums. ``'macro'``: one Dice per sample and class, averaged with
    the weights over the classes present in the sample's (non-ignored) target. Then the
    mean over the batch. A sample with nothing to count (all pixels ignored) scores loss 1.

    Args:
        pred: logits ``(B, C, H, W)``.
        target: int64 labels ``(B, H, W)``.
        average: ``'micro'`` or ``'macro'``.
        eps: added to the denominator.
        weight: optional class weights ``(C,)``.
        ignore_index: label to leave out, or ``None``.

    Returns:
        A 0-d tensor.

    Example:
        >>> pred = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])  # (1, 2, 1, 2): certain
        >>> float(dice_loss(pred, torch.tensor([[[0, 1]]]))) < 1e-6
        True
    """
    _check_labels(pred, target)
    check_choice(average, ("micro", "macro"), "average")
    w = _check_weight(weight, pred)
    num_classes = pred.shape[1]
    prob = pred.softmax(1)
    one_hot, valid = _one_hot(target, num_classes, ignore_index, pred.dtype)
    if valid is not None:
        prob = prob * valid
    w = pred.new_ones(num_classes) if w is None else w.to(pred.dtype)
    w4 = w.view(1, -1, 1, 1)
    if average == "micro":
        intersection = (prob * w4 * one_hot).sum((1, 2, 3))
        cardinality = ((prob + one_hot) * w4).sum((1, 2, 3))
    else:
        intersection = (prob * one_hot).sum((2, 3))
        cardinality = (prob + one_hot).sum((2, 3))
    empty = cardinality == 0
    # Safe denominators, so that an empty term has no NaN in its (unused) gradient either.
    loss = 1.0 - (2.0 * intersection / (cardinality + eps).masked_fill(empty, 1.0)).masked_fill(empty, 0.0)
    if average == "macro":
        present_w = w * (one_hot.sum((2, 3)) > 0)
        norm = present_w.sum(-1)
        none = norm == 0
        loss = ((loss * present_w).sum(-1) / norm.masked_fill(none, 1.0)).masked_fill(none, 1.0)
    return loss.mean()


def focal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float | None,
    gamma: float = 2.0,
    reduction: str = "none",
    weight: torch.Tensor | None = None,
    ignore_index: int | None = -100,
) -> torch.Tensor:
    r"""Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al.), Kornia's form.

    ``p_t`` is the softmax probability of the target class; ``alpha_t`` is ``1 - alpha``
    for class 0 and ``alpha`` for the others (``None``: 1 for all); ``weight`` scales
    class ``c``'s slice. ``'none'`` returns the ``(B, C, *)`` map, zero off the target
    class; ``'mean'`` divides its sum by all its elements (``C`` times the pixels).
    ``1 - p_t`` is computed as ``-expm1(log p_t)`` (no cancellation for confident
    predictions), and where it is exactly 0 the factor passes no gradient, so
    ``0 < gamma < 1`` does not produce ``0 * inf``.

    Args:
        pred: logits ``(B, C, *)``.
        target: int64 labels ``(B, *)``.
        alpha: weight of the classes other than 0, or ``None``.
        gamma: focusing exponent, ``>= 0``.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        weight: optional class weights ``(C,)``.
        ignore_index: label that contributes 0, or ``None``.

    Example:
        >>> pred = torch.zeros(1, 2, 1, 1)  # p = 1/2 for both classes
        >>> focal_loss(pred, torch.zeros(1, 1, 1, dtype=torch.long), None, gamma=0.0, reduction="sum")
        tensor(0.6931)
    """
    _check_labels(pred, target, spatial=False)
    check_choice(reduction, REDUCTIONS, "reduction")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
        raise ArgumentValueError("gamma", "a non-negative number", gamma, f"gamma: expected a non-negative number, got {gamma!r}")
    w = _check_weight(weight, pred)
    num_classes = pred.shape[1]
    one_hot, valid = _one_hot(target, num_classes, ignore_index, pred.dtype)
    if valid is not None:
        # An ignored pixel's logits may be anything (inf included): keep them out of the softmax.
        pred = pred.masked_fill(~valid, 0.0)
    log_p = pred.log_softmax(1).masked_fill(one_hot == 0, 0.0)  # only the target slice matters
    q = -torch.expm1(log_p)  # 1 - p
    saturated = q == 0
    factor = torch.where(saturated, q.detach().pow(gamma), q.masked_fill(saturated, 1.0).pow(gamma))
    loss = -factor * log_p * one_hot
    if alpha is not None:
        alpha_c = pred.new_full((num_classes,), float(alpha))
        alpha_c[0] = 1.0 - float(alpha)
        loss = loss * alpha_c.view(1, -1, *([1] * (pred.ndim - 2)))
    if w is not None:
        loss = loss * w.to(pred.dtype).view(1, -1, *([1] * (pred.ndim - 2)))
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def tversky_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    eps: float = 1e-8,
    ignore_index: int | None = -100,
) -> torch.Tensor:
    r"""Tversky loss ``1 - TP / (TP + alpha FP + beta FN + eps)``, per sample and class.

    Averaged over the classes present in each sample's (non-ignored) target, then over
    the batch (Kornia's ``tversky_loss``). ``alpha = beta = 0.5`` is the macro Dice loss
    (with ``2 eps``).

    Args:
        pred: logits ``(B, C, H, W)``.
        target: int64 labels ``(B, H, W)``.
        alpha: weight of the false positives.
        beta: weight of the false negatives.
        eps: added to the denominator.
        ignore_index: label to leave out, or ``None``.

    Example:
        >>> pred = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])
        >>> float(tversky_loss(pred, torch.tensor([[[0, 1]]]), 0.5, 0.5)) < 1e-6
        True
    """
    _check_labels(pred, target)
    prob = pred.softmax(1)
    one_hot, valid = _one_hot(target, pred.shape[1], ignore_index, pred.dtype)
    if valid is not None:
        prob = prob * valid
    tp = (prob * one_hot).sum((2, 3))
    fp = (prob * (1.0 - one_hot)).sum((2, 3))
    fn = ((1.0 - prob) * one_hot).sum((2, 3))
    present = one_hot.sum((2, 3)) > 0
    denominator = (tp + alpha * fp + beta * fn + eps).masked_fill(~present, 1.0)
    score = (tp / denominator).masked_fill(~present, 0.0)
    score = score.sum(-1) / present.sum(-1).clamp_min(1)
    return 1.0 - score.mean()


class DiceLoss(nn.Module):
    """Module form of :func:`dice_loss` (class weights held as a buffer)."""

    weight: torch.Tensor | None

    def __init__(
        self,
        average: str = "micro",
        eps: float = 1e-8,
        weight: torch.Tensor | None = None,
        ignore_index: int | None = -100,
    ) -> None:
        super().__init__()
        check_choice(average, ("micro", "macro"), "average")
        self.average, self.eps, self.ignore_index = average, eps, ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(pred, target, self.average, self.eps, self.weight, self.ignore_index)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss` (class weights held as a buffer)."""

    weight: torch.Tensor | None

    def __init__(
        self,
        alpha: float | None,
        gamma: float = 2.0,
        reduction: str = "none",
        weight: torch.Tensor | None = None,
        ignore_index: int | None = -100,
    ) -> None:
        super().__init__()
        check_choice(reduction, REDUCTIONS, "reduction")
        self.alpha, self.gamma, self.reduction, self.ignore_index = alpha, gamma, reduction, ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(pred, target, self.alpha, self.gamma, self.reduction, self.weight, self.ignore_index)


class TverskyLoss(nn.Module):
    """Module form of :func:`tversky_loss`."""

    def __init__(self, alpha: float, beta: float, eps: float = 1e-8, ignore_index: int | None = -100) -> None:
        super().__init__()
        self.alpha, self.beta, self.eps, self.ignore_index = alpha, beta, eps, ignore_index

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tversky_loss(pred, target, self.alpha, self.beta, self.eps, self.ignore_index)
