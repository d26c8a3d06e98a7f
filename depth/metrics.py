"""Depth-map error metrics of Eigen et al. (2014), per problem of a batch.

The seven numbers that depth estimation papers report (Eigen, Puhrsch and Fergus,
"Depth Map Prediction from a Single Image using a Multi-Scale Deep Network", NIPS 2014),
with ``d`` the predicted and ``d*`` the ground-truth depth over the ``n`` valid pixels:

- ``abs_rel``  = mean(|d - d*| / d*)
- ``sq_rel``   = mean((d - d*)² / d*)
- ``rmse``     = sqrt(mean((d - d*)²))
- ``rmse_log`` = sqrt(mean((log d - log d*)²))
- ``delta1``, ``delta2``, ``delta3`` = fraction of pixels with max(d / d*, d* / d) < 1.25, 1.25², 1.25³

A pixel is valid where the optional mask is true, both depths are finite and both are
strictly positive (``gt == 0`` is the usual "no measurement" value of depth sensors).
"""

from __future__ import annotations

import torch

from gradcv.core_ops._checks import check_floating, check_same_device, check_shape, check_tensor
from gradcv.core_ops.errors import DTypeError, ShapeError


__all__ = ["METRIC_NAMES", "metrics"]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")


def metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Eigen et al. (2014) depth metrics of each problem of a batch.

    Args:
        pred: predicted depth, floating.
        gt: ground-truth depth, floating, same shape as ``pred``; ``0`` (or any value
            ``<= 0``, or a non-finite one) marks a pixel without measurement.
        mask: optional boolean mask of the pixels to score, same shape.

    Returns:
        A dict from the names in :data:`METRIC_NAMES` (``abs_rel``, ``sq_rel``, ``rmse``,
        ``rmse_log``, ``delta1``, ``delta2``, ``delta3``) to ``(B,)`` tensors in the
        floating dtype that ``pred`` and ``gt`` promote to. A problem without any valid
        pixel gets NaN in every metric.

    Shape:
        - pred, gt, mask: ``(B, 1, H, W)``.
        - each value: ``(B,)``.

    Raises:
        ShapeError: a tensor is not ``(B, 1, H, W)`` or the shapes differ.
        DTypeError: ``pred`` or ``gt`` is not floating, or ``mask`` is not boolean.

    Example:
        >>> gt = torch.tensor([1.0, 2.0, 4.0, 0.0]).reshape(1, 1, 2, 2)
        >>> m = metrics(1.1 * gt, gt)
        >>> round(float(m["abs_rel"][0]), 6), float(m["delta1"][0])
        (0.1, 1.0)
    """
    check_shape(pred, ["B", 1, "H", "W"], "pred")
    check_shape(gt, ["B", 1, "H", "W"], "gt")
    check_floating(pred, "pred")
    check_floating(gt, "gt")
    if gt.shape != pred.shape:
        raise ShapeError("gt", tuple(pred.shape), tuple(gt.shape),
                         f"gt: expected the shape of pred {tuple(pred.shape)}, got {tuple(gt.shape)}")
    check_same_device(gt, "gt", pred, "pred")
    dtype = torch.promote_types(pred.dtype, gt.dtype)
    pred = pred.to(dtype)
    gt = gt.to(dtype)
    valid = torch.isfinite(pred) & torch.isfinite(gt) & (pred > 0) & (gt > 0)
    if mask is not None:
        check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise DTypeError("mask", torch.bool, mask.dtype, f"mask: expected a torch.bool tensor, got {mask.dtype}")
        if mask.shape != pred.shape:
            raise ShapeError("mask", tuple(pred.shape), tuple(mask.shape),
                             f"mask: expected the shape of pred {tuple(pred.shape)}, got {tuple(mask.shape)}")
        check_same_device(mask, "mask", pred, "pred")
        valid = valid & mask
    # Invalid pixels get d = d* = 1: every error term is exactly 0 there and the ratio 1,
    # so sums over all pixels equal sums over the valid ones, without NaN in any gradient.
    one = torch.ones((), dtype=dtype, device=pred.device)
    d = torch.where(valid, pred, one)
    g = torch.where(valid, gt, one)
    w = valid.to(dtype)
    n = w.flatten(1).sum(1)  # (B,); 0 gives 0/0 = NaN below, as documented

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(1) / n

    diff = d - g
    log_diff = torch.log(d) - torch.log(g)
    ratio = torch.maximum(d / g, g / d)
    return {
        "abs_rel": mean(diff.abs() / g),
        "sq_rel": mean(diff * diff / g),
        "rmse": torch.sqrt(mean(diff * diff)),
        "rmse_log": torch.sqrt(mean(log_diff * log_diff)),
        "delta1": mean((ratio < 1.25).to(dtype)),
        "delta2": mean((ratio < 1.25**2).to(dtype)),
        "delta3": mean((ratio < 1.25**3).to(dtype)),
    }
