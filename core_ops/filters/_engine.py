"""The correlation engine behind every fixed-kernel filter: padding and separable
correlation written as shifted slices, with hand-written adjoints.

Why not ``conv2d``: on CPU, PyTorch's oneDNN convolution allocates a temporary several
times the input on every call for single-channel inputs from batch 8 up, and the page
faults make it 5-20x slower than shifted slices (../shared/PERFORMANCE.md). Why custom
autograd functions: autograd through shifted slices allocates a zero tensor of the full
padded size for every tap in backward; the adjoint of a correlation is the correlation
with the flipped taps, which costs what the forward costs. Each function's backward is
the other function, so gradients of any order exist and stay cheap.

Taps are Python floats, so each tap is one fused multiply-add (``add_(..., alpha=t)``)
and zero taps cost nothing. On the CPU the forward pass runs as one fused C loop
(``gradcv.core_ops._native``) doing the same operations in the same order, when it is built;
the slices below are the fallback, and the path for GPUs, ``torch.compile`` and the
adjoints. Filters whose kernel is a tensor that may require grad
(``filter2d`` with a user kernel, a learnable sigma) use plain autograd instead.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from gradcv.core_ops import _native
from gradcv.core_ops._cache import memo

Taps = tuple[float, ...]
# One output channel: taps along y (rows) and along x (columns).
Bank = tuple[tuple[Taps, Taps], ...]


def _needs_grad(x: torch.Tensor) -> bool:
    # autograd.Function.apply costs tens of microseconds; skip it when nothing records.
    return (x.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling()


# --------------------------------------------------------------------------- padding
def _source_index(n: int, before: int, after: int, border_type: str, device: torch.device) -> torch.Tensor:
    """Index into a length-``n`` axis for each position of the padded axis (not for 'constant')."""
    i = torch.arange(-before, n + after, device=device)
    if border_type == "replicate":
        return i.clamp(0, n - 1)
    if border_type == "circular":
        return i.remainder(n)
    # reflect without repeating the edge (OpenCV's BORDER_REFLECT_101), any pad width
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _pad_forward(x: torch.Tensor, pad: tuple[int, int, int, int], border_type: str) -> torch.Tensor:
    top, bottom, left, right = pad
    h, w = x.shape[-2:]
    if border_type == "constant":
        return F.pad(x, (left, right, top, bottom), mode="constant", value=0.0)
    native = x.ndim in (3, 4) and x.numel() > 0 and x.dtype != torch.bfloat16
    if border_type == "reflect":
        native = native and max(top, bottom) < h and max(left, right) < w
    elif border_type == "circular":
        native = native and max(top, bottom) <= h and max(left, right) <= w
    if native:
        return F.pad(x, (left, right, top, bottom), mode=border_type)
    iy = _source_index(h, top, bottom, border_type, x.device)
    ix = _source_index(w, left, right, border_type, x.device)
    return x.index_select(-2, iy).index_select(-1, ix)


def _pad_adjoint(g: torch.Tensor, pad: tuple[int, int, int, int], border_type: str) -> torch.Tensor:
    """Adjoint of ``_pad_forward``: fold the border strips back onto the pixels they copy."""
    top, bottom, left, right = pad
    hp, wp = g.shape[-2:]
    h, w = hp - top - bottom, wp - left - right
    if border_type == "constant":
        return g[..., top : top + h, left : left + w].clone()
    rows = g[..., top : top + h, :]
    if top or bottom:
        iy = _source_index(h, top, bottom, border_type, g.device)
        rows = rows.clone()
        if top:
            rows.index_add_(-2, iy[:top], g[..., :top, :])
        if bottom:
            rows.index_add_(-2, iy[top + h :], g[..., top + h :, :])
    out = rows[..., left : left + w].clone()
    if left or right:
        ix = _source_index(w, left, right, border_type, g.device)
        if left:
            out.index_add_(-1, ix[:left], rows[..., :left])
        if right:
            out.index_add_(-1, ix[left + w :], rows[..., left + w :])
    return out


class _Pad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pad, border_type):  # type: ignore[override]
        ctx.pad, ctx.border_type = pad, border_type
        return _pad_forward(x, pad, border_type)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return _PadAdjoint.apply(g, ctx.pad, ctx.border_type), None, None


class _PadAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, pad, border_type):  # type: ignore[override]
        ctx.pad, ctx.border_type = pad, border_type
        return _pad_adjoint(g, pad, border_type)

    @staticmethod
    def backward(ctx, h):  # type: ignore[override]
        return _Pad.apply(h, ctx.pad, ctx.border_type), None, None


def pad2d(x: torch.Tensor, pad: tuple[int, int, int, int], border_type: str) -> torch.Tensor:
    """Pad the last two dimensions by ``(top, bottom, left, right)`` pixels.

    Unlike ``F.pad``, any pad width works for every border type (reflection repeats as
    OpenCV's ``BORDER_REFLECT_101`` does), and any number of leading dimensions.
    """
    pad = (int(pad[0]), int(pad[1]), int(pad[2]), int(pad[3]))
    if not any(pad):
        return x
    if not _needs_grad(x):
        return _pad_forward(x, pad, border_type)
    return _Pad.apply(x, pad, border_type)


# ------------------------------------------------------------- separable correlation
def _taps_view(x: torch.Tensor, dim: int, start: int, n: int, stride: int) -> torch.Tensor:
    """``n`` elements of ``x`` along ``dim`` (-1 or -2) from ``start``, every ``stride``-th."""
    if stride == 1:
        return x.narrow(dim, start, n)
    s = slice(start, start + (n - 1) * stride + 1, stride)
    return x[..., s] if dim == -1 else x[..., s, :]


def _correlate_axis(
    x: torch.Tensor, taps: Taps, dim: int, out: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """'valid' correlation of ``x`` with ``taps`` along ``dim`` (-1 or -2), every ``stride``-th output."""
    n = (x.shape[dim] - len(taps)) // stride + 1
    nz = [(i, t) for i, t in enumerate(taps) if t != 0.0]
    if not nz:
        shape = list(x.shape)
        shape[dim] = n
        return x.new_zeros(shape) if out is None else out.zero_()

    def tap(i: int) -> torch.Tensor:
        return _taps_view(x, dim, i, n, stride)

    # The first two taps in one op when either weight is 1 (Sobel and difference taps).
    (i0, t0), rest = nz[0], nz[1:]
    kw = {} if out is None else {"out": out}
    if rest and t0 == 1.0:
        (i1, t1), rest = rest[0], rest[1:]
        y = torch.add(tap(i0), tap(i1), alpha=t1, **kw)
    elif rest and rest[0][1] == 1.0:
        (i1, _), rest = rest[0], rest[1:]
        y = torch.add(tap(i1), tap(i0), alpha=t0, **kw)
    else:
        y = torch.mul(tap(i0), t0, **kw)
    for i, t in rest:
        y.add_(tap(i), alpha=t)
    return y


# Cache blocking on CPU: a pass over a whole batch streams every temporary through main
# memory, and a filter makes 5-10 passes. Working on groups of image planes that fit in
# the L2 cache (2 MiB per core here), padding included, a block at a time,
# was measured 1.7-2x faster for a 5x5 blur of 8x3x256x256. Not done on GPUs, nor under
# torch.compile (which fuses the passes itself).
_CPU_BLOCK_BYTES = 1 << 21


def _blocks(n: int, plane_bytes: int, device: torch.device) -> range:
    block = n
    if device.type == "cpu" and not torch.compiler.is_compiling():
        block = max(1, min(n, _CPU_BLOCK_BYTES // max(plane_bytes, 1)))
    return range(0, n, max(block, 1))


def _out_size(n: int, k: int, stride: int) -> int:
    return (n - k) // stride + 1


def _filter_blocks(
    x: torch.Tensor, spec: "Spec", out: torch.Tensor | None = None
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Pad and correlate ``x`` one cache-sized block of planes at a time.

    Yields ``(planes, result)``: which planes of ``x.reshape(-1, H, W)`` the block holds,
    and their ``(n, K, Ho, Wo)`` result, written into ``out`` (``(*, K, Ho, Wo)``) when
    given. A caller that reduces each block at once (the Sobel magnitude) passes no
    ``out`` and never holds the ``K``-times larger whole result.
    """
    bank, stride, pad, border_type = spec
    h, w = x.shape[-2:]
    ho, wo = _filter_out_hw(h, w, spec)
    planes = x.reshape(-1, h, w)
    out_planes = None if out is None else out.view(-1, len(bank), ho, wo)
    step = _blocks(planes.shape[0], (h + 4) * (w + 4) * x.element_size() * (2 + len(bank)), x.device)
    for start in step:
        rows = slice(start, min(start + step.step, planes.shape[0]))
        block = planes[rows]
        if any(pad):
            block = _pad_forward(block, pad, border_type)
        result = block.new_empty(block.shape[0], len(bank), ho, wo) if out_planes is None else out_planes[rows]
        _correlate_bank_into(block, bank, stride, result)
        yield rows, result


def _filter_out_hw(h: int, w: int, spec: "Spec") -> tuple[int, int]:
    bank, stride, pad, _ = spec
    return (
        _out_size(h + pad[0] + pad[1], len(bank[0][0]), stride),
        _out_size(w + pad[2] + pad[3], len(bank[0][1]), stride),
    )


def _filter_forward(x: torch.Tensor, spec: "Spec") -> torch.Tensor:
    """Pad then correlate ``(*, H, W)`` with every kernel of the bank: ``(*, K, Ho, Wo)``."""
    out = _native.new_empty(x, *x.shape[:-2], len(spec[0]), *_filter_out_hw(*x.shape[-2:], spec))
    if out.numel() == 0:
        return out
    bank, stride, pad, border_type = spec
    if _native.separable_correlate(x, out, bank, pad[0], pad[2], stride, border_type):
        return out
    for _ in _filter_blocks(x, spec, out):
        pass
    return out


def filter_reduce(
    x: torch.Tensor,
    bank: Sequence[tuple[Sequence[float], Sequence[float]]],
    reduce: Callable[[torch.Tensor, torch.Tensor], object],
    border_type: str = "reflect",
) -> torch.Tensor:
    """``reduce`` the responses to ``bank`` block by block, without autograd.

    ``reduce(responses, out)`` writes the ``(n, H, W)`` result of a block's ``(n, K, H, W)``
    responses into ``out``; the full ``(*, K, H, W)`` stack is never held in memory. For
    callers that need no gradient.
    """
    frozen = _freeze(tuple((tuple(ty), tuple(tx)) for ty, tx in bank))
    ky, kx = len(frozen[0][0]), len(frozen[0][1])
    spec: Spec = (frozen, 1, ((ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2), border_type)
    out = x.new_empty(x.shape)
    out_planes = out.view(-1, *x.shape[-2:])
    for rows, block in _filter_blocks(x, spec):
        reduce(block, out_planes[rows])
    return out


def _filter_adjoint(g: torch.Tensor, spec: "Spec", in_hw: tuple[int, int]) -> torch.Tensor:
    """Adjoint of ``_filter_forward``: ``(*, K, Ho, Wo) -> (*, H, W)``."""
    bank, stride, pad, border_type = spec
    h, w = in_hw
    hp, wp = h + pad[0] + pad[1], w + pad[2] + pad[3]
    k, ho, wo = g.shape[-3:]
    out = g.new_empty(*g.shape[:-3], h, w)
    g_planes = g.reshape(-1, k, ho, wo)
    out_planes = out.view(-1, h, w)
    step = _blocks(g_planes.shape[0], hp * wp * g.element_size() * (2 + k), g.device)
    for start in step:
        gp = _correlate_bank_adjoint(g_planes[start : start + step.step], bank, stride, (hp, wp))
        out_planes[start : start + step.step] = _pad_adjoint(gp, pad, border_type) if any(pad) else gp
    return out


def _correlate_bank_into(xp: torch.Tensor, bank: Bank, stride: int, out: torch.Tensor) -> None:
    along_y: dict[Taps, torch.Tensor] = {}
    for k, (ty, tx) in enumerate(bank):
        if ty not in along_y:
            along_y[ty] = _correlate_axis(xp, ty, -2, stride=stride)
        rows = along_y[ty]
        if torch.compiler.is_compiling():
            # Dynamo refuses an out= tensor that is not contiguous, as a channel of ``out`` is.
            out.select(-3, k).copy_(_correlate_axis(rows, tx, -1, stride=stride))
        elif stride == 2:
            _correlate_axis_stride2(rows, tx, out.select(-3, k))
        else:
            _correlate_axis(rows, tx, -1, out=out.select(-3, k), stride=stride)


def _correlate_axis_stride2(x: torch.Tensor, taps: Taps, out: torch.Tensor) -> torch.Tensor:
    """``_correlate_axis(x, taps, -1, out, stride=2)`` on deinterleaved columns."""
    n = out.shape[-1]
    phases = (x[..., 0::2].contiguous(), x[..., 1::2].contiguous())
    first = True
    for i, t in enumerate(taps):
        if t == 0.0:
            continue
        view = phases[i % 2].narrow(-1, i // 2, n)
        if first:
            torch.mul(view, t, out=out)
            first = False
        else:
            out.add_(view, alpha=t)
    if first:
        out.zero_()
    return out


def _correlate_bank_adjoint(g: torch.Tensor, bank: Bank, stride: int, in_hw: tuple[int, int]) -> torch.Tensor:
    """Adjoint of ``_correlate_bank``: ``(*, K, Ho, Wo) -> (*, Hp, Wp)``."""
    ho, wo = g.shape[-2:]
    hp, wp = in_hw
    # Group kernels by y taps: sum the x-adjoints first, then one y-adjoint per group.
    by_y: dict[Taps, torch.Tensor] = {}
    for k, (ty, tx) in enumerate(bank):
        gk = g.select(-3, k)
        acc = by_y.get(ty)
        if acc is None:
            acc = g.new_zeros(*g.shape[:-3], ho, wp)
            by_y[ty] = acc
        for i, t in enumerate(tx):
            if t != 0.0:
                _taps_view(acc, -1, i, wo, stride).add_(gk, alpha=t)
    result = g.new_zeros(*g.shape[:-3], hp, wp)
    for ty, acc in by_y.items():
        for i, t in enumerate(ty):
            if t != 0.0:
                _taps_view(result, -2, i, ho, stride).add_(acc, alpha=t)
    return result


# (bank, stride, (top, bottom, left, right) padding, border type)
Spec = tuple[Bank, int, tuple[int, int, int, int], str]


class _Filter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec):  # type: ignore[override]
        ctx.spec, ctx.in_hw = spec, tuple(x.shape[-2:])
        return _filter_forward(x, spec)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return _FilterAdjoint.apply(g, ctx.spec, ctx.in_hw), None


class _FilterAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, spec, in_hw):  # type: ignore[override]
        ctx.spec = spec
        return _filter_adjoint(g, spec, in_hw)

    @staticmethod
    def backward(ctx, h):  # type: ignore[override]
        return _Filter.apply(h, ctx.spec), None, None


@memo
def _freeze(bank: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]) -> Bank:
    frozen = tuple((tuple(float(t) for t in ty), tuple(float(t) for t in tx)) for ty, tx in bank)
    ky, kx = len(frozen[0][0]), len(frozen[0][1])
    if any(len(ty) != ky or len(tx) != kx for ty, tx in frozen):
        raise ValueError(f"bank: expected kernels of one size, got sizes {[(len(a), len(b)) for a, b in frozen]}")
    return frozen


def correlate_separable(
    x: torch.Tensor,
    bank: Sequence[tuple[Sequence[float], Sequence[float]]],
    border_type: str = "reflect",
    padding: str = "same",
    stride: int = 1,
) -> torch.Tensor:
    """Correlate ``(*, H, W)`` with K separable kernels of Python-float taps.

    Args:
        x: input, any number of leading dimensions.
        bank: K pairs ``(taps_y, taps_x)``; all kernels have the same (odd) size.
        border_type: how ``x`` is extended for ``padding='same'``.
        padding: ``'same'`` (output ``H x W``) or ``'valid'`` (no padding).
        stride: keep every ``stride``-th output pixel in both axes (the others are never computed).

    Returns:
        ``(*, K, Ho, Wo)``; with ``'same'``, ``Ho = ceil(H / stride)``.
    """
    frozen = _freeze(tuple((tuple(ty), tuple(tx)) for ty, tx in bank))
    ky, kx = len(frozen[0][0]), len(frozen[0][1])
    pad = ((ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2) if padding == "same" else (0, 0, 0, 0)
    spec: Spec = (frozen, int(stride), pad, border_type)
    if not _needs_grad(x):
        return _filter_forward(x, spec)
    return _Filter.apply(x, spec)
