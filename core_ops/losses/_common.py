"""Checks and reductions shared by the losses.

Every loss reduces the same way: ``'none'`` returns the per-element loss (times the mask,
when one is given), ``'sum'`` its sum and ``'mean'`` its weighted mean
``sum(mask * loss) / sum(mask)`` (the plain mean without a mask). A mask is a weight in
``[0, 1]``, floating or bool, broadcastable to the loss; its values are never inspected
(no device sync), and an all-zero mask gives a mean of 0, not NaN.
"""

from __future__ import annotations

from typing import Sequence

import torch

from gradcv.core_ops._checks import check_choice, check_floating, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DeviceError, DTypeError, ShapeError

REDUCTIONS = ("none", "mean", "sum")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """``ShapeError``, ``DTypeError`` or ``DeviceError`` (on ``names[1]``) unless the two tensors
    have one shape, dtype and device."""
    if a.shape != b.shape:
        raise ShapeError(
            names[1], tuple(a.shape), tuple(b.shape),
            f"{names[1]}: expected the shape of {names[0]} {tuple(a.shape)}, got {tuple(b.shape)}",
        )
    if a.dtype != b.dtype:
        raise DTypeError(names[1], a.dtype, b.dtype, f"{names[1]}: expected the dtype of {names[0]} ({a.dtype}), got {b.dtype}")
    if a.device != b.device:
        raise DeviceError(
            names[1], a.device, b.device, f"{names[1]}: expected the device of {names[0]} ({a.device}), got {b.device}"
        )


def check_pair(a: object, b: object, names: tuple[str, str] = ("input", "target")) -> None:
    """Two floating tensors of one shape, dtype and device (no broadcasting)."""
    check_tensor(a, names[0])
    check_tensor(b, names[1])
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    check_floating(a, names[0])
    check_floating(b, names[1])
    check_same_shape(a, b, names)


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number ``> 0`` (``>= 0`` with ``allow_zero``), returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(name, "a number", value, f"{name}: expected a number, got {value!r}")
    v = float(value)
    ok = (v >= 0 if allow_zero else v > 0) and v != float("inf")  # NaN fails both comparisons
    if not ok:
        what = f"a finite {'non-negative' if allow_zero else 'positive'} number"
        raise ArgumentValueError(name, what, value, f"{name}: expected {what}, got {value!r}")
    return v


def check_mask(mask: object, like: torch.Tensor, shapes: Sequence[tuple[int, ...]], name: str = "mask") -> torch.Tensor:
    """Check ``mask`` against the accepted ``shapes`` and return it in ``like``'s dtype.

    Raises:
        ArgumentTypeError: not a tensor.
        DTypeError: neither floating nor bool.
        ShapeError: a shape not in ``shapes``.
        DeviceError: another device than ``like``.
    """
    check_tensor(mask, name)
    assert isinstance(mask, torch.Tensor)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise DTypeError(name, "floating or bool", mask.dtype, f"{name}: expected a floating or bool tensor, got {mask.dtype}")
    if tuple(mask.shape) not in [tuple(s) for s in shapes]:
        wanted = " or ".join(str(tuple(s)) for s in shapes)
        raise ShapeError(name, wanted, tuple(mask.shape), f"{name}: expected shape {wanted}, got {tuple(mask.shape)}")
    if mask.device != like.device:
        raise DeviceError(name, like.device, mask.device)
    return mask.to(like.dtype)


def check_reduction(reduction: object) -> str:
    check_choice(reduction, REDUCTIONS, "reduction")
    return reduction  # type: ignore[return-value]


def reduce_loss(loss: torch.Tensor, reduction: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``reduction`` to a per-element ``loss``, weighted by ``mask`` (see the module docstring)."""
    if mask is not None:
        loss = loss * mask
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if mask is None:
        return loss.mean()
    weight = mask.expand_as(loss).sum()
    # An empty mask leaves total == 0: return 0 rather than 0/0.
    return total / weight.clamp_min(torch.finfo(weight.dtype).tiny)


def check_broadcast_mask(mask: object, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A floating or bool mask that broadcasts to ``like``'s shape without enlarging it; in ``like``'s dtype."""
    check_tensor(mask, name)
    assert isinstance(mask, torch.Tensor)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise DTypeError(name, "floating or bool", mask.dtype, f"{name}: expected a floating or bool tensor, got {mask.dtype}")
    ok = mask.ndim <= like.ndim and all(
        m in (1, s) for m, s in zip(mask.shape[::-1], like.shape[::-1])
    )
    if not ok:
        wanted = f"a shape that broadcasts to {tuple(like.shape)}"
        raise ShapeError(name, wanted, tuple(mask.shape), f"{name}: expected {wanted}, got {tuple(mask.shape)}")
    if mask.device != like.device:
        raise DeviceError(name, like.device, mask.device)
    return mask.to(like.dtype)
