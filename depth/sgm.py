"""Semi-global aggregation of a plane-sweep cost volume (Hirschmüller's SGM, four paths).

Winner-take-all over a window cost leaves blotches wherever the window is ambiguous
(weak or stretched texture, slanted surfaces seen at a grazing angle). Semi-global
matching adds, along each of four scanline directions, a penalty ``p1`` for a change of
one plane between neighbouring pixels and ``p2`` for a larger jump, and sums the four
path costs: a cheap, edge-preserving approximation of a 2-D smoothness prior that the
winner-take-all then reads. The jump penalty is lowered where the guide image changes
(``p2 / (1 + gamma |I_p - I_{p-r}|)``, never below ``p1``), since depth edges usually
coincide with image edges.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_floating, check_same_device, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentValueError, ShapeError


__all__ = ["semi_global_aggregation"]


def _scan(cost: torch.Tensor, guide: torch.Tensor, p1: float, p2: float, gamma: float) -> torch.Tensor:
    """Path costs along the last axis of ``cost (B, P, L, T)`` (``guide (B, L, T)``)."""
    # Scan order first, so that every step reads and writes contiguous (B, P, L) slices.
    c = cost.permute(3, 0, 1, 2).contiguous()
    jumps = (p2 / (1.0 + gamma * (guide[..., 1:] - guide[..., :-1]).abs())).clamp_min(p1 * 1.0001)
    jumps = jumps.permute(2, 0, 1).unsqueeze(2).contiguous()  # (T - 1, B, 1, L)
    out = torch.empty_like(c)
    prev = c[0]
    out[0] = prev
    P = c.shape[2]
    for t in range(1, c.shape[0]):
        least = prev.amin(1, keepdim=True)
        step = torch.minimum(prev, least + jumps[t - 1])
        if P > 1:
            step[:, :-1] = torch.minimum(step[:, :-1], prev[:, 1:] + p1)
            step[:, 1:] = torch.minimum(step[:, 1:], prev[:, :-1] + p1)
        prev = torch.add(c[t], step - least, out=out[t])
    return out.permute(1, 2, 3, 0)


def semi_global_aggregation(cost: torch.Tensor, guide: torch.Tensor, p1: float, p2: float,
                            gamma: float = 10.0) -> torch.Tensor:
    """Sum of the four scanline path costs of a cost volume.

    Args:
        cost: ``(B, P, H, W)`` matching cost of ``P`` ordered labels (planes); ``inf`` or
            ``NaN`` entries (a plane that no source sees) count as the pixel's largest finite cost.
        guide: ``(B, C, H, W)`` reference image; the jump penalty drops across its edges.
        p1: penalty for a change of one label between neighbours.
        p2: penalty for a larger change (``>= p1``).
        gamma: how fast ``p2`` drops with the guide's difference (``0``: constant ``p2``).

    Returns:
        ``(B, P, H, W)`` aggregated cost (left-right, right-left, top-down, bottom-up).

    Example:
        >>> cost = torch.rand(1, 4, 3, 5)
        >>> semi_global_aggregation(cost, torch.zeros(1, 1, 3, 5), 0.1, 0.5).shape
        torch.Size([1, 4, 3, 5])
    """
    check_tensor(cost, "cost")
    check_floating(cost, "cost")
    check_shape(cost, ["B", "P", "H", "W"], "cost")
    check_tensor(guide, "guide")
    check_shape(guide, ["B", "C", "H", "W"], "guide")
    B, P, H, W = cost.shape
    if guide.shape[0] != B or guide.shape[-2:] != (H, W):
        raise ShapeError("guide", (B, "C", H, W), tuple(guide.shape),
                         f"guide: expected shape ({B}, C, {H}, {W}) (that of cost), got {tuple(guide.shape)}")
    check_same_device(guide, "guide", cost, "cost")
    for name, value in (("p1", p1), ("p2", p2), ("gamma", gamma)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and value < float("inf")):
            raise ArgumentValueError(name, "finite >= 0", value, f"{name}: expected a finite number >= 0, got {value!r}")
    if p2 < p1:
        raise ArgumentValueError("p2", f">= p1 ({p1})", p2, f"p2: expected p2 >= p1 ({p1}), got {p2}")
    if cost.numel() == 0:
        return cost.clone()
    finite = torch.isfinite(cost)
    top = torch.where(finite, cost, torch.full_like(cost, -math.inf)).amax(1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # no finite cost at all: 0
    c = torch.where(finite, cost, top)
    g = guide.to(c.dtype).mean(1)
    total = _scan(c, g, p1, p2, gamma)
    total = total + _scan(c.flip(-1), g.flip(-1), p1, p2, gamma).flip(-1)
    ct, gt = c.transpose(2, 3), g.transpose(1, 2)
    total = total + _scan(ct, gt, p1, p2, gamma).transpose(2, 3)
    total = total + _scan(ct.flip(-1), gt.flip(-1), p1, p2, gamma).flip(-1).transpose(2, 3)
    return total
