"""Hard non-maxima suppression in 2-D and 3-D, with one winner per plateau.

Kornia's names and arguments (``kornia.geometry.subpix.nms2d`` / ``nms3d`` and the
modules ``NonMaximaSuppression2d`` / ``NonMaximaSuppression3d``).

A position is kept when its value is at least every value in its window and strictly
greater than the values that come *before* it in raster order (earlier levels, then
earlier rows, then earlier columns). On distinct values that is Kornia's strict maximum;
on ties it keeps exactly one position where Kornia's strict rule keeps none (a flat
peak of two equal pixels is lost by Kornia) and a ``>=`` rule keeps a cluster. No two
kept positions lie in each other's window. As in Kornia, a position whose window does
not fit inside the tensor is never kept. A NaN is never kept, and a window holding one
keeps nothing (the running maxima propagate NaN).

Each window maximum is a separable running maximum of shifted slices (``k - 1``
``torch.maximum`` passes per axis), so the cost is ``O(k_d + k_y + k_x)`` per position.
"""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_bool, check_shape
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError

__all__ = ["NonMaximaSuppression2d", "NonMaximaSuppression3d", "nms2d", "nms3d"]


def _check_kernel(kernel_size: object, n: int) -> tuple[int, ...]:
    ok = isinstance(kernel_size, (tuple, list)) and len(kernel_size) == n and all(
        isinstance(k, int) and not isinstance(k, bool) for k in kernel_size
    )
    if not ok:
        raise ArgumentTypeError(
            "kernel_size", f"a tuple of {n} ints", kernel_size, f"kernel_size: expected a tuple of {n} ints, got {kernel_size!r}"
        )
    if not all(k >= 1 and k % 2 == 1 for k in kernel_size):  # type: ignore[union-attr]
        raise ArgumentValueError("kernel_size", "positive odd sizes", kernel_size, f"kernel_size: expected positive odd sizes, got {kernel_size!r}")
    return tuple(kernel_size)  # type: ignore[arg-type]


def _check_input(input: object, dims: list[str]) -> torch.Tensor:
    check_shape(input, dims, "input")
    assert isinstance(input, torch.Tensor)
    if input.is_complex() or input.dtype == torch.bool:
        raise DTypeError("input", "real", input.dtype, f"input: expected a real tensor, got {input.dtype}")
    return input


def _running_max(x: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """Maximum over every length-``k`` window along ``dim`` ('valid': the size shrinks by ``k - 1``)."""
    if k == 1:
        return x
    n = x.shape[dim] - k + 1
    out = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, 1, n))
    for i in range(2, k):
        out = torch.maximum(out, x.narrow(dim, i, n))
    return out


def _maxima_mask(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """The kept positions of the last ``len(kernel)`` axes of ``x`` (see the module), full size."""
    nd = len(kernel)
    mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    if any(n < k for n, k in zip(x.shape[-nd:], kernel)) or x.numel() == 0:
        return mask
    half = [k // 2 for k in kernel]
    mask[tuple([...] + [slice(h, n - h) for h, n in zip(half, x.shape[-nd:])])] = _interior_maxima(x, kernel)
    return mask


def _interior_maxima(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """The kept positions among those whose window fits ('valid' size: each of the last
    ``len(kernel)`` axes shrinks by ``k - 1``). Every axis must be at least its ``k``."""
    nd = len(kernel)
    dims = list(range(x.dim() - nd, x.dim()))
    half = [k // 2 for k in kernel]
    sizes = [x.shape[d] - k + 1 for d, k in zip(dims, kernel)]
    centre = x
    for d, h, s in zip(dims, half, sizes):
        centre = centre.narrow(d, h, s)
    # partial[i]: the maximum over the windows of axes i.. (later axes 'valid'), axes < i untouched.
    partial = [x] * (nd + 1)
    for i in range(nd - 1, -1, -1):
        partial[i] = _running_max(partial[i + 1], dims[i], kernel[i])
    # Everything before the centre in raster order: for each axis i, the half-window before
    # the centre along axis i, at the centre along the axes before i, over the full window
    # along the axes after i (already windowed in partial[i + 1]).
    before: torch.Tensor | None = None
    for i in range(nd):
        if half[i] == 0:
            continue
        # Index j of the running maximum of length h covers j .. j + h - 1: the half-window before centre j + h.
        part = _running_max(partial[i + 1].narrow(dims[i], 0, sizes[i] + half[i] - 1), dims[i], half[i])
        for a in range(i):
            part = part.narrow(dims[a], half[a], sizes[a])
        before = part if before is None else torch.maximum(before, part)
    keep = centre >= partial[0]
    if before is not None:
        keep &= centre > before
    return keep


def _interior_maxima_333(x: torch.Tensor, threshold: float | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_interior_maxima` for a 3x3x3 window over the last three axes of ``(N, D, H, W)``,
    with fewer passes: no full-window maximum, but 'above every earlier neighbour' and 'at
    least every later one' directly (13 neighbours each). ``out``: an optional bool result."""
    n, d, h, w = x.shape
    rx = torch.maximum(x[..., :-2], x[..., 1:-1])
    torch.maximum(rx, x[..., 2:], out=rx)  # (N, D, H, W - 2): the row maxima
    ry = torch.maximum(rx[:, :, :-2], rx[:, :, 1:-1])
    torch.maximum(ry, rx[:, :, 2:], out=ry)  # (N, D, H - 2, W - 2): the 3x3 maxima
    centre = x[:, 1:-1, 1:-1, 1:-1]
    before = torch.maximum(ry[:, :-2], rx[:, 1:-1, :-2])  # level below; row above
    torch.maximum(before, x[:, 1:-1, 1:-1, :-2], out=before)  # left neighbour
    if threshold is not None:
        before.clamp_min_(threshold)
    after = torch.maximum(ry[:, 2:], rx[:, 1:-1, 2:])  # level above; row below
    torch.maximum(after, x[:, 1:-1, 1:-1, 2:], out=after)  # right neighbour
    keep = torch.gt(centre, before, out=out) if out is not None else torch.gt(centre, before)
    keep &= centre >= after
    return keep


def nms2d(input: torch.Tensor, kernel_size: tuple[int, int], mask_only: bool = False) -> torch.Tensor:
    """Keep the maxima of each ``kernel_size`` window, one per plateau, zero the rest.

    Args:
        input: ``(B, C, H, W)`` responses (any real dtype).
        kernel_size: ``(k_y, k_x)``, odd.
        mask_only: return the boolean mask of the kept positions instead.

    Returns:
        ``input`` with the non-maxima set to zero, or a ``(B, C, H, W)`` boolean mask.
        Differs from Kornia only on ties (see the module): Kornia keeps no position of a
        plateau, this keeps its first in raster order.

    Convention:
        Positions are the input's own pixels; nothing moves.

    Example:
        >>> x = torch.tensor([[[[0., 0, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0]]]])
        >>> nms2d(x, (3, 3), mask_only=True).nonzero().tolist()
        [[0, 0, 1, 1]]
    """
    x = _check_input(input, ["B", "C", "H", "W"])
    kernel = _check_kernel(kernel_size, 2)
    check_bool(mask_only, "mask_only")
    mask = _maxima_mask(x, kernel)
    return mask if mask_only else torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def nms3d(input: torch.Tensor, kernel_size: tuple[int, int, int], mask_only: bool = False) -> torch.Tensor:
    """Keep the maxima of each ``(k_d, k_y, k_x)`` window of a volume, one per plateau.

    Args:
        input: ``(B, C, D, H, W)`` responses (a scale space: levels, rows, columns).
        kernel_size: ``(k_d, k_y, k_x)``, odd.
        mask_only: return the boolean mask of the kept positions instead.

    Returns:
        ``input`` with the non-maxima set to zero, or a boolean mask of its shape. Ties as
        :func:`nms2d`.

    Convention:
        Positions are the input's own voxels; nothing moves.

    Example:
        >>> v = torch.zeros(1, 1, 3, 4, 4); v[0, 0, 1, 2, 1] = 1.0
        >>> nms3d(v, (3, 3, 3), mask_only=True).nonzero().tolist()
        [[0, 0, 1, 2, 1]]
    """
    x = _check_input(input, ["B", "C", "D", "H", "W"])
    kernel = _check_kernel(kernel_size, 3)
    check_bool(mask_only, "mask_only")
    if kernel == (3, 3, 3) and min(x.shape[-3:]) >= 3 and x.numel() > 0:
        mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        # detached: the mask has no gradient, and the fast path writes into its temporaries
        # with out=, which autograd refuses on an input that requires grad
        mask[..., 1:-1, 1:-1, 1:-1] = _interior_maxima_333(x.detach().reshape(-1, *x.shape[-3:])).reshape(*x.shape[:-3], *(n - 2 for n in x.shape[-3:]))
    else:
        mask = _maxima_mask(x, kernel)
    return mask if mask_only else torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


class NonMaximaSuppression2d(nn.Module):
    """Module of :func:`nms2d`.

    Example:
        >>> NonMaximaSuppression2d((3, 3))(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(self, kernel_size: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size = _check_kernel(kernel_size, 2)

    def forward(self, x: torch.Tensor, mask_only: bool = False) -> torch.Tensor:
        return nms2d(x, self.kernel_size, mask_only)  # type: ignore[arg-type]


class NonMaximaSuppression3d(nn.Module):
    """Module of :func:`nms3d`.

    Example:
        >>> NonMaximaSuppression3d((3, 3, 3))(torch.rand(1, 1, 3, 8, 8)).shape
        torch.Size([1, 1, 3, 8, 8])
    """

    def __init__(self, kernel_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel_size = _check_kernel(kernel_size, 3)

    def forward(self, x: torch.Tensor, mask_only: bool = False) -> torch.Tensor:
        return nms3d(x, self.kernel_size, mask_only)  # type: ignore[arg-type]
