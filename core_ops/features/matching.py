"""Descriptor matching: nearest neighbour, mutual, ratio test (SNN), symmetric ratio test
(SMNN) and FGINN, with Kornia's names, signatures and returns (``kornia.feature``, 0.9).

Every function takes ``(N, D)`` descriptors, as Kornia, or ``(B, N, D)`` ones batched over
independent pairs with keyword-only validity masks ``mask1`` / ``mask2``.

Returns:
    Unbatched (``(N, D)`` and ``(M, D)`` in), Kornia's convention: ``(dists (K, 1),
    idxs (K, 2))``, one row per match, ``idxs`` the int64 pairs ``(index in desc1, index in
    desc2)`` in ascending ``desc1`` order. ``dists`` is the L2 distance for ``nn`` / ``mnn``
    (the entry of ``dm`` when given), the ratio of the nearest to the second-nearest
    distance for ``snn`` (the larger of the two directions' ratios for ``smnn``; FGINN's
    ratio for ``fginn``). Ratio tests keep ``ratio <= th``.

    Batched (``(B, N, D)`` and ``(B, M, D)`` in): fixed-size ``(dists (B, N, 1), idxs
    (B, N, 2), mask (B, N))`` -- slot ``i`` of item ``b`` is desc1's descriptor ``i``, since
    each of these matchers gives it at most one partner. Where ``mask[b, i]`` is True,
    ``idxs[b, i] = (i, j)`` and ``dists[b, i]`` are what the unbatched function returns for
    that pair (indices into the padded tensors); where it is False, ``idxs[b, i] = (i, 0)``
    and ``dists[b, i] = 0``. ``mask1`` / ``mask2`` (``(B, N)`` / ``(B, M)`` bool) mark the
    valid descriptors: padding is never a neighbour, never matched, and its values (even
    NaN) never reach a result or a gradient.

Distances: the neighbours are selected from ``|a|^2 + |b|^2 - 2 a.b`` (batched matrix
products without autograd, made in blocks of rows into one reused buffer and reduced block
by block), and the distances of the selected pairs only are then computed directly,
``|a - b|``, gradient-safe (zero gradient at zero distance): exact values, and a backward
pass that never holds the ``N x M`` matrix. ``mnn`` (and ``fginn(mutual=True)``) get both
directions from one product (column minima); ``smnn`` makes the second direction's
product. Ties between candidates closer than the float rounding of the product may be broken
differently from Kornia's; of exactly tied rows, ``mnn`` keeps the first.

Speed (2500 x 2500, 128-D float32, one thread, this project's CPU): ``nn`` 14 ms, ``mnn``
16 ms, ``snn`` 19 ms, ``smnn`` 37 ms (Kornia 0.9: 17 / 43 / 20 / 51 ms); the matrix product
alone is about 11 ms of each.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from gradcv.core_ops._checks import check_bool, check_floating, check_real, check_same_device, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError


__all__ = [
    "DescriptorMatcher",
    "match_fginn",
    "match_mnn",
    "match_nn",
    "match_smnn",
    "match_smnn_batched",
    "match_snn",
]

_MODES = ("nn", "mnn", "snn", "smnn")


class _Knn(NamedTuple):
    dist: torch.Tensor  # (B, N, k): distance to the k nearest valid partners (0 where none)
    idx: torch.Tensor  # (B, N, k) long (0 where none)
    found: torch.Tensor  # (B, N, k) bool


class _Prepared(NamedTuple):
    d1: torch.Tensor  # (B, N, D) in the working dtype, padding zeroed
    d2: torch.Tensor
    dm: torch.Tensor | None  # (B, N, M) given distances
    valid1: torch.Tensor | None  # (B, N) bool
    valid2: torch.Tensor | None
    batched: bool
    out_dtype: torch.dtype


# ---------------------------------------------------------------------------- input
def _prepare(
    desc1: object, desc2: object, dm: object, mask1: object, mask2: object
) -> _Prepared:
    check_tensor(desc1, "desc1")
    check_tensor(desc2, "desc2")
    assert isinstance(desc1, torch.Tensor) and isinstance(desc2, torch.Tensor)
    if desc1.ndim == 2:
        check_shape(desc2, ["M", desc1.shape[1]], "desc2")
        batched = False
    elif desc1.ndim == 3:
        check_shape(desc2, [desc1.shape[0], "M", desc1.shape[2]], "desc2")
        batched = True
    else:
        raise ShapeError("desc1", "(N, D) or (B, N, D)", tuple(desc1.shape),
                         f"desc1: expected shape (N, D) or (B, N, D), got {tuple(desc1.shape)}")
    check_floating(desc1, "desc1")
    check_floating(desc2, "desc2")
    if desc1.dtype != desc2.dtype:
        raise DTypeError("desc2", desc1.dtype, desc2.dtype, f"desc2: expected the dtype of desc1 ({desc1.dtype}), got {desc2.dtype}")
    check_same_device(desc2, "desc2", desc1, "desc1")
    if not batched and (mask1 is not None or mask2 is not None):
        raise ArgumentValueError("mask1" if mask1 is not None else "mask2", "None for (N, D) descriptors", "a mask",
                                 "mask1/mask2: validity masks are for batched (B, N, D) descriptors")
    d1 = desc1 if batched else desc1[None]
    d2 = desc2 if batched else desc2[None]
    b, n, m = d1.shape[0], d1.shape[1], d2.shape[1]
    out_dtype = desc1.dtype
    if dm is not None:
        check_shape(dm, [b, n, m] if batched else [n, m], "dm")
        assert isinstance(dm, torch.Tensor)
        check_floating(dm, "dm")
        check_same_device(dm, "dm", desc1, "desc1")
        dm = dm if batched else dm[None]
        out_dtype = dm.dtype
    valid = []
    for mask, size, name in ((mask1, n, "mask1"), (mask2, m, "mask2")):
        if mask is None:
            valid.append(None)
            continue
        check_shape(mask, [b, size], name)
        assert isinstance(mask, torch.Tensor)
        if mask.dtype != torch.bool:
            raise DTypeError(name, torch.bool, mask.dtype, f"{name}: expected a bool tensor, got {mask.dtype}")
        valid.append(mask.to(d1.device))
    work = torch.float32 if d1.dtype in (torch.float16, torch.bfloat16) else d1.dtype
    d1, d2 = d1.to(work), d2.to(work)
    # Padding is zeroed *before* any arithmetic: NaN padding would otherwise poison the
    # matrix product and the gradient.
    if valid[0] is not None:
        d1 = torch.where(valid[0][..., None], d1, torch.zeros_like(d1))
    if valid[1] is not None:
        d2 = torch.where(valid[1][..., None], d2, torch.zeros_like(d2))
    return _Prepared(d1, d2, dm, valid[0], valid[1], batched, out_dtype)


def _check_th(th: object) -> float:
    return check_real(th, "th", low=0.0)


# ---------------------------------------------------------------------------- neighbours
# Bytes of one block of the distance matrix: small enough to stay in cache and to be
# allocated once per call (a fresh N x M matrix costs page faults on every call).
_BLOCK_BYTES = 1 << 22


class _Selection(NamedTuple):
    vals: torch.Tensor  # (B, N, k) the ordering values (inf: no valid partner)
    idx: torch.Tensor  # (B, N, k) long
    col_min: torch.Tensor | None  # (B, M) each column's minimum of the same values


def _select(
    a: torch.Tensor, b: torch.Tensor, va: torch.Tensor | None, vb: torch.Tensor | None, dm: torch.Tensor | None,
    k: int, *, col_min: bool = False,
) -> _Selection:
    """The ``k`` nearest valid rows of ``b`` for each row of ``a``, without autograd.

    Ordered by ``dm`` when given, else by ``|a|^2 + |b|^2 - 2 a.b`` (``|a|^2`` is left out
    unless the column minima are wanted: it does not change a row's order). The matrix is
    made in blocks of rows into one reused buffer, reduced block by block.
    """
    with torch.no_grad():
        bsz, n = a.shape[:2]
        m = b.shape[1]
        kk = min(k, m)
        vals = a.new_empty(bsz, n, kk)
        idx = torch.empty(bsz, n, kk, dtype=torch.long, device=a.device)
        cmin = a.new_full((bsz, m), float("inf")) if col_min else None
        if dm is None:
            n2 = (b * b).sum(-1)[:, None, :]
            n1 = (a * a).sum(-1)[:, :, None] if col_min else None
            bt = b.transpose(1, 2)
            rows = max(1, min(n, _BLOCK_BYTES // (a.element_size() * bsz * max(m, 1))))
            buf = a.new_empty(bsz * rows * m)
        else:
            rows = n
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            if dm is None:
                blk = buf[: bsz * (r1 - r0) * m].view(bsz, r1 - r0, m)
                torch.baddbmm(n2, a[:, r0:r1], bt, alpha=-2.0, out=blk)
                if n1 is not None:
                    blk.add_(n1[:, r0:r1])
            else:
                blk = dm.detach().to(a.dtype, copy=True)
            if va is not None:
                blk.masked_fill_(~va[:, r0:r1, None], float("inf"))
            if vb is not None:
                blk.masked_fill_(~vb[:, None, :], float("inf"))
            if cmin is not None:
                torch.minimum(cmin, blk.amin(dim=1), out=cmin)
            if kk <= 2:
                # min, blank it, min again: half the time of topk(2) (the block is scratch).
                v, i = blk.min(dim=-1, keepdim=True)
                if kk == 2:
                    blk.scatter_(-1, i, float("inf"))
                    v2, i2 = blk.min(dim=-1, keepdim=True)
                    v, i = torch.cat([v, v2], -1), torch.cat([i, i2], -1)
            else:
                v, i = blk.topk(kk, dim=-1, largest=False)
            vals[:, r0:r1] = v
            idx[:, r0:r1] = i
    return _Selection(vals, idx, cmin)


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _knn(sel: _Selection, k: int, a: torch.Tensor, b: torch.Tensor, dm: torch.Tensor | None) -> _Knn:
    """The exact distances ``|a_i - b_j|`` (or ``dm``'s entries) of the selected neighbours,
    padded to ``k`` columns; missing neighbours (fewer than ``k`` valid) are flagged."""
    bsz, n, kk = sel.idx.shape
    found = torch.isfinite(sel.vals)
    idx = torch.where(found, sel.idx, torch.zeros_like(sel.idx))
    if dm is not None:
        dist = dm.gather(-1, idx)
    else:
        partner = b.gather(1, idx.reshape(bsz, n * kk, 1).expand(-1, -1, b.shape[-1])).view(bsz, n, kk, -1)
        dist = _safe_norm(a[:, :, None, :] - partner)
    dist = torch.where(found, dist, torch.zeros_like(dist))
    if kk < k:
        pad = k - kk
        dist = torch.cat([dist, dist.new_zeros(bsz, n, pad)], -1)
        idx = torch.cat([idx, idx.new_zeros(bsz, n, pad)], -1)
        found = torch.cat([found, found.new_zeros(bsz, n, pad)], -1)
    return _Knn(dist, idx, found)


def _rows(p: _Prepared, k: int, *, col_min: bool = False) -> tuple[_Knn, _Selection]:
    sel = _select(p.d1, p.d2, p.valid1, p.valid2, p.dm, k, col_min=col_min)
    return _knn(sel, k, p.d1, p.d2, p.dm), sel


def _cols(p: _Prepared, k: int) -> _Knn:
    dm_t = None if p.dm is None else p.dm.transpose(1, 2)
    return _knn(_select(p.d2, p.d1, p.valid2, p.valid1, dm_t, k), k, p.d2, p.d1, dm_t)


def _mutual_by_value(rows: _Knn, sel: _Selection) -> torch.Tensor:
    """Row ``i``'s nearest column ``j`` has ``i`` as its nearest row: ``j``'s column minimum is
    row ``i``'s value, and of the rows that tie there (duplicates) ``i`` is the first, as
    ``torch.min`` picks. One matrix product serves both directions."""
    n = rows.idx.shape[1]
    j = rows.idx[..., 0]
    hit = rows.found[..., 0] & (sel.vals[..., 0] == sel.col_min.gather(1, j))
    i = torch.arange(n, device=j.device).expand_as(j)
    first = torch.full_like(sel.col_min, n, dtype=torch.long).scatter_reduce(
        1, j, torch.where(hit, i, torch.full_like(i, n)), reduce="amin"
    )
    return hit & (first.gather(1, j) == i)


def _ratio(knn: _Knn) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest over second-nearest distance and where it is defined (two neighbours, second > 0).

    Operands are substituted before the division so that an undefined ratio leaves no NaN in
    the backward pass either."""
    defined = knn.found[..., 1] & (knn.dist[..., 1] > 0)
    ratio = torch.where(defined, knn.dist[..., 0], torch.zeros_like(knn.dist[..., 0])) / torch.where(
        defined, knn.dist[..., 1], torch.ones_like(knn.dist[..., 1])
    )
    return ratio, defined


def _mutual(rows: _Knn, cols: _Knn) -> torch.Tensor:
    n = rows.idx.shape[1]
    back = cols.idx[..., 0].gather(1, rows.idx[..., 0])
    return back == torch.arange(n, device=back.device)


def _finish(
    p: _Prepared, dists: torch.Tensor, idx2: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if p.valid1 is not None:
        keep = keep & p.valid1
    b, n = keep.shape
    dists = torch.where(keep, dists, torch.zeros_like(dists)).to(p.out_dtype)
    idx2 = torch.where(keep, idx2, torch.zeros_like(idx2))
    idxs = torch.stack([torch.arange(n, device=idx2.device).expand(b, n), idx2], dim=-1)
    if p.batched:
        return dists[..., None], idxs, keep
    k = keep[0]
    return dists[0][k][:, None], idxs[0][k]


def _empty(p: _Prepared) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, n = p.d1.shape[:2]
    link = p.d1.flatten()[:0].sum() + p.d2.flatten()[:0].sum()  # keeps the graph for a zero gradient
    if p.dm is not None:
        link = link + p.dm.flatten()[:0].sum().to(link.dtype)
    dists = (p.d1.new_zeros(b, n) + link).to(p.out_dtype)
    return _finish(p, dists, torch.zeros(b, n, dtype=torch.long, device=p.d1.device), torch.zeros(b, n, dtype=torch.bool, device=p.d1.device))


# ---------------------------------------------------------------------------- matchers
def match_nn(
    desc1: torch.Tensor, desc2: torch.Tensor, dm: torch.Tensor | None = None, *,
    mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Nearest neighbour in ``desc2`` of each descriptor of ``desc1``.

    Args:
        desc1: ``(N, D)`` or ``(B, N, D)`` descriptors.
        desc2: ``(M, D)`` or ``(B, M, D)``, the same dtype.
        dm: optional distances ``(N, M)`` / ``(B, N, M)`` (any "smaller is better" matrix)
            used instead of the L2 distances.
        mask1: batched only: ``(B, N)`` bool, the valid rows of ``desc1``.
        mask2: batched only: ``(B, M)`` bool, the valid rows of ``desc2``.

    Returns:
        Unbatched: ``(dists (N, 1), idxs (N, 2))`` (Kornia's); batched: ``(dists (B, N, 1),
        idxs (B, N, 2), mask (B, N))`` (see the module's Returns).

    Example:
        >>> d1 = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
        >>> d2 = torch.tensor([[3.0, 1.0], [0.0, 2.0], [9.0, 9.0]])
        >>> match_nn(d1, d2)
        (tensor([[2.],
                [1.]]), tensor([[0, 1],
                [1, 0]]))
    """
    p = _prepare(desc1, desc2, dm, mask1, mask2)
    if p.d1.shape[0] == 0 or p.d1.shape[1] == 0 or p.d2.shape[1] == 0:
        return _empty(p)
    rows, _ = _rows(p, 1)
    return _finish(p, rows.dist[..., 0], rows.idx[..., 0], rows.found[..., 0])


def match_mnn(
    desc1: torch.Tensor, desc2: torch.Tensor, dm: torch.Tensor | None = None, *,
    mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Mutual nearest neighbours: pairs that are each other's nearest neighbour.

    Args:
        desc1: ``(N, D)`` or ``(B, N, D)`` descriptors.
        desc2: ``(M, D)`` or ``(B, M, D)``, the same dtype.
        dm: optional distances ``(N, M)`` / ``(B, N, M)`` used instead of the L2 ones.
        mask1: batched only: ``(B, N)`` bool, the valid rows of ``desc1``.
        mask2: batched only: ``(B, M)`` bool, the valid rows of ``desc2``.

    Returns:
        Unbatched: ``(dists (K, 1), idxs (K, 2))``, ``K <= min(N, M)``; batched: ``(dists
        (B, N, 1), idxs (B, N, 2), mask (B, N))``.

    Example:
        >>> d1 = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
        >>> d2 = torch.tensor([[3.0, 1.0], [2.9, 0.0]])
        >>> match_mnn(d1, d2)[1]
        tensor([[1, 1]])
    """
    p = _prepare(desc1, desc2, dm, mask1, mask2)
    if p.d1.shape[0] == 0 or p.d1.shape[1] == 0 or p.d2.shape[1] == 0:
        return _empty(p)
    rows, sel = _rows(p, 1, col_min=True)
    keep = _mutual_by_value(rows, sel)
    return _finish(p, rows.dist[..., 0], rows.idx[..., 0], keep)


def match_snn(
    desc1: torch.Tensor, desc2: torch.Tensor, th: float = 0.8, dm: torch.Tensor | None = None, *,
    mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Lowe's ratio test: nearest neighbours whose nearest / second-nearest distance is ``<= th``.

    Args:
        desc1: ``(N, D)`` or ``(B, N, D)`` descriptors.
        desc2: ``(M, D)`` or ``(B, M, D)``, the same dtype.
        th: ratio threshold (inclusive).
        dm: optional non-negative distances ``(N, M)`` / ``(B, N, M)`` used instead of the
            L2 ones (squared distances need ``th ** 2``).
        mask1: batched only: ``(B, N)`` bool, the valid rows of ``desc1``.
        mask2: batched only: ``(B, M)`` bool, the valid rows of ``desc2``.

    Returns:
        Unbatched: ``(ratios (K, 1), idxs (K, 2))``; batched: ``(ratios (B, N, 1), idxs
        (B, N, 2), mask (B, N))``. Fewer than two (valid) ``desc2`` rows, or a zero
        second-nearest distance, give no match.

    Example:
        >>> d1 = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
        >>> d2 = torch.tensor([[3.0, 1.0], [0.0, 2.0], [9.0, 9.0]])
        >>> match_snn(d1, d2, 0.5)
        (tensor([[0.2774]]), tensor([[1, 0]]))
    """
    th = _check_th(th)
    p = _prepare(desc1, desc2, dm, mask1, mask2)
    if p.d1.shape[0] == 0 or p.d1.shape[1] == 0 or p.d2.shape[1] < 2:
        return _empty(p)
    rows, _ = _rows(p, 2)
    ratio, defined = _ratio(rows)
    return _finish(p, ratio, rows.idx[..., 0], defined & (ratio <= th))


def match_smnn(
    desc1: torch.Tensor, desc2: torch.Tensor, th: float = 0.95, dm: torch.Tensor | None = None, *,
    mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Symmetric ratio test: mutual nearest neighbours passing the ratio test both ways.

    Args:
        desc1: ``(N, D)`` or ``(B, N, D)`` descriptors.
        desc2: ``(M, D)`` or ``(B, M, D)``, the same dtype.
        th: ratio threshold (inclusive), Kornia's default 0.95.
        dm: optional non-negative distances ``(N, M)`` / ``(B, N, M)``.
        mask1: batched only: ``(B, N)`` bool, the valid rows of ``desc1``.
        mask2: batched only: ``(B, M)`` bool, the valid rows of ``desc2``.

    Returns:
        Unbatched: ``(ratios (K, 1), idxs (K, 2))`` with the larger of the two ratios;
        batched: ``(ratios (B, N, 1), idxs (B, N, 2), mask (B, N))``. Needs two (valid)
        descriptors on each side.

    Example:
        >>> a = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
        >>> match_smnn(a, a.flip(0) + 0.1)[1]
        tensor([[0, 2],
                [1, 1],
                [2, 0]])
    """
    th = _check_th(th)
    p = _prepare(desc1, desc2, dm, mask1, mask2)
    if p.d1.shape[0] == 0 or p.d1.shape[1] < 2 or p.d2.shape[1] < 2:
        return _empty(p)
    (rows, _), cols = _rows(p, 2), _cols(p, 2)
    ratio1, defined1 = _ratio(rows)
    ratio2, defined2 = _ratio(cols)
    j = rows.idx[..., 0]
    back_ratio, back_defined = ratio2.gather(1, j), defined2.gather(1, j)
    keep = defined1 & back_defined & _mutual(rows, cols) & (ratio1 <= th) & (back_ratio <= th)
    return _finish(p, torch.maximum(ratio1, back_ratio), j, keep)


def match_smnn_batched(
    desc1: torch.Tensor, desc2: torch.Tensor, th: float = 0.95, dm: torch.Tensor | None = None,
    mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kornia's flat form of the batched :func:`match_smnn`: the matches of all items in one list.

    Args:
        desc1: ``(B, N, D)``.
        desc2: ``(B, M, D)``.
        th: ratio threshold (inclusive).
        dm: optional ``(B, N, M)`` distances.
        mask1: optional ``(B, N)`` bool validity of ``desc1``'s rows.
        mask2: optional ``(B, M)`` bool validity of ``desc2``'s rows.

    Returns:
        ``ratios (K, 1)`` and ``indices (K, 3)`` int64 rows ``(batch, index in desc1, index in
        desc2)``, sorted by batch then ``desc1`` index (a data-dependent size: use
        :func:`match_smnn`'s fixed-size batched form where that matters).

    Example:
        >>> a = torch.tensor([[[0., 0.], [1., 1.], [2., 2.]]])
        >>> match_smnn_batched(a, a.flip(1))[1]
        tensor([[0, 0, 2],
                [0, 1, 1],
                [0, 2, 0]])
    """
    check_shape(desc1, ["B", "N", "D"], "desc1")
    dists, idxs, mask = match_smnn(desc1, desc2, th, dm, mask1=mask1, mask2=mask2)
    batch, row = mask.nonzero(as_tuple=True)
    return dists[batch, row], torch.cat([batch[:, None], idxs[batch, row]], dim=-1)


def match_fginn(
    desc1: torch.Tensor, desc2: torch.Tensor, lafs1: torch.Tensor, lafs2: torch.Tensor,
    th: float = 0.8, spatial_th: float = 10.0, mutual: bool = False, dm: torch.Tensor | None = None, *,
    mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """First geometrically inconsistent nearest neighbour ratio test (FGINN, Mishkin et al.).

    The second neighbour is the nearest of the ``min(10, M)`` nearest candidates (the first
    excluded) whose ``lafs2`` centre lies at least ``spatial_th`` from the first one's; with
    none, the ratio is 0 and the match is kept (Kornia's convention).

    Args:
        desc1: ``(N, D)`` or ``(B, N, D)`` descriptors.
        desc2: ``(M, D)`` or ``(B, M, D)``, the same dtype.
        lafs1: ``(1, N, 2, 3)`` / ``(B, N, 2, 3)``; not read (Kornia's API symmetry).
        lafs2: ``(1, M, 2, 3)`` / ``(B, M, 2, 3)``: only the centres are read.
        th: ratio threshold (inclusive).
        spatial_th: in the units of the ``lafs2`` centres (pixels).
        mutual: also require mutual nearest neighbours.
        dm: optional non-negative distances.
        mask1: batched only: ``(B, N)`` bool.
        mask2: batched only: ``(B, M)`` bool.

    Returns:
        As :func:`match_snn`.

    Example:
        >>> d1 = torch.tensor([[0.0, 0.0]])
        >>> d2 = torch.tensor([[0.0, 1.0], [0.0, 1.1], [5.0, 5.0]])
        >>> lafs = torch.zeros(1, 3, 2, 3)
        >>> match_fginn(d1, d2, torch.zeros(1, 1, 2, 3), lafs)[1]  # both near ones at the same place
        tensor([[0, 0]])
    """
    th = _check_th(th)
    spatial_th = check_real(spatial_th, "spatial_th")
    check_bool(mutual, "mutual")
    p = _prepare(desc1, desc2, dm, mask1, mask2)
    b, n, m = p.d1.shape[0], p.d1.shape[1], p.d2.shape[1]
    check_shape(lafs2, [b if p.batched else 1, m, 2, 3], "lafs2")
    check_shape(lafs1, [b if p.batched else 1, n, 2, 3], "lafs1")
    if b == 0 or n == 0 or m < 2:
        return _empty(p)
    rows, sel = _rows(p, max(2, min(10, m)), col_min=mutual)
    with torch.no_grad():
        xy2 = lafs2[..., 2].to(p.d1)  # (B, M, 2)
        k = rows.idx.shape[-1]
        cxy = xy2.gather(1, rows.idx.reshape(b, n * k, 1).expand(-1, -1, 2)).view(b, n, k, 2)
        far = (cxy - cxy[:, :, :1]).norm(dim=-1) >= spatial_th
        competitor = far[..., 1:] & rows.found[..., 1:]
    second = torch.where(competitor, rows.dist[..., 1:], torch.full_like(rows.dist[..., 1:], float("inf"))).min(-1).values
    has_second = torch.isfinite(second)
    defined = rows.found[..., 0] & (~has_second | (second > 0))
    ratio = torch.where(has_second & defined, rows.dist[..., 0], torch.zeros_like(second)) / torch.where(
        has_second & defined, second, torch.ones_like(second)
    )
    keep = defined & (ratio <= th)
    if mutual:
        keep = keep & _mutual_by_value(rows, sel)
    return _finish(p, ratio, rows.idx[..., 0], keep)


class DescriptorMatcher(nn.Module):
    """Module form of the descriptor matchers: ``match_mode`` in ``'nn'``, ``'mnn'``,
    ``'snn'``, ``'smnn'`` (case-insensitive), with ``th`` for the ratio tests.

    Kornia raises ``NotImplementedError`` for an unknown mode; here it is an
    ``ArgumentValueError`` (a ``ValueError``) naming ``match_mode``.

    Args:
        match_mode: which matcher.
        th: ratio threshold of ``'snn'`` and ``'smnn'`` (0.8 for both, as Kornia).

    Returns:
        From ``forward(desc1, desc2, *, mask1=None, mask2=None)``: what the matcher returns
        (unbatched ``(dists, idxs)``, batched ``(dists, idxs, mask)``).

    Example:
        >>> d1 = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
        >>> d2 = torch.tensor([[3.0, 1.0], [0.0, 2.0], [9.0, 9.0]])
        >>> DescriptorMatcher("snn", 0.8)(d1, d2)[1]
        tensor([[0, 1],
                [1, 0]])
    """

    def __init__(self, match_mode: str = "snn", th: float = 0.8) -> None:
        super().__init__()
        if not isinstance(match_mode, str):
            raise ArgumentTypeError("match_mode", "a str", match_mode, f"match_mode: expected one of {_MODES}, got {match_mode!r}")
        mode = match_mode.lower()
        if mode not in _MODES:
            raise ArgumentValueError("match_mode", _MODES, match_mode, f"match_mode: expected one of {_MODES}, got {match_mode!r}")
        self.known_modes = list(_MODES)
        self.match_mode = mode
        self.th = _check_th(th)

    def forward(
        self, desc1: torch.Tensor, desc2: torch.Tensor, *,
        mask1: torch.Tensor | None = None, mask2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        if self.match_mode == "nn":
            return match_nn(desc1, desc2, mask1=mask1, mask2=mask2)
        if self.match_mode == "mnn":
            return match_mnn(desc1, desc2, mask1=mask1, mask2=mask2)
        if self.match_mode == "snn":
            return match_snn(desc1, desc2, self.th, mask1=mask1, mask2=mask2)
        return match_smnn(desc1, desc2, self.th, mask1=mask1, mask2=mask2)
