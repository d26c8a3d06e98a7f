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
and zero taps cost nothing. Filters whose kernel is a tensor that may require grad
(``filter2d`` with a user kernel, a learnable sigma) use plain autograd instead.

The filter and its adjoint are PyTorch operators, ``gradcv::separable_correlate`` and
``gradcv::separable_correlate_adjoint`` (``torch.library.custom_op``, taps as float
lists): each has a shape-only (fake) implementation, an autograd formula (the other
one), and a vmap rule, so fake tensors, ``make_fx``, ``torch.jit.trace``,
``torch.export`` and ``torch.compile`` record the op and run it on any input. On the
CPU the filter's implementation runs one fused C loop (``gradcv.core_ops._native``)
doing the same operations in the same order, when it is built; the slices below are
the fallback and the code for every other device. Forward-mode AD and functorch's
grad/jvp transforms, which custom ops do not support, differentiate the slices
directly (:func:`_filter_functional`).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from gradcv.core_ops import _native
from gradcv.core_ops._cache import memo
from gradcv.core_ops.errors import ArgumentValueError, ShapeError

Taps = tuple[float, ...]
# One output channel: taps along y (rows) and along x (columns).
Bank = tuple[tuple[Taps, Taps], ...]


def _needs_grad(x: torch.Tensor) -> bool:
    # autograd.Function.apply costs tens of microseconds; skip it when nothing records.
    # Forward-mode AD and functorch's grad/jvp differentiate the plain ops instead: they
    # cannot use an old-style autograd.Function.
    if _native.needs_decomposition():
        return False
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
# was measured 1.7-2x faster for a 5x5 blur of 8x3x256x256. Not done on GPUs. (The
# blocks run inside the ops' implementations, which torch.compile never traces.)
_CPU_BLOCK_BYTES = 1 << 21


def _blocks(n: int, plane_bytes: int, device: torch.device) -> range:
    block = n
    if device.type == "cpu":
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


def _filter_forward(x: torch.Tensor, spec: "Spec", out: torch.Tensor | None = None) -> torch.Tensor:
    """Pad then correlate ``(*, H, W)`` with every kernel of the bank: ``(*, K, Ho, Wo)``,
    in PyTorch code, without autograd, into ``out`` when given."""
    if out is None:
        out = x.new_empty(*x.shape[:-2], len(spec[0]), *_filter_out_hw(*x.shape[-2:], spec))
    if out.numel() == 0:
        return out
    for _ in _filter_blocks(x, spec, out):
        pass
    return out


def _filter_functional(x: torch.Tensor, spec: "Spec") -> torch.Tensor:
    """``_filter_forward`` as differentiable ops on whole tensors, no ``out=``: what
    forward-mode AD and functorch's grad/jvp transforms differentiate."""
    bank, stride, pad, border_type = spec
    xp = _pad_forward(x, pad, border_type) if any(pad) else x
    along_y: dict[Taps, torch.Tensor] = {}
    responses = []
    for ty, tx in bank:
        if ty not in along_y:
            along_y[ty] = _correlate_axis(xp, ty, -2, stride=stride)
        responses.append(_correlate_axis(along_y[ty], tx, -1, stride=stride))
    return torch.stack(responses, -3)


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
        if stride == 2:
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


@memo
def _freeze(bank: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]) -> Bank:
    frozen = tuple((tuple(float(t) for t in ty), tuple(float(t) for t in tx)) for ty, tx in bank)
    ky, kx = len(frozen[0][0]), len(frozen[0][1])
    if any(len(ty) != ky or len(tx) != kx for ty, tx in frozen):
        raise ArgumentValueError("bank", "kernels of one size", [(len(a), len(b)) for a, b in frozen], f"bank: expected kernels of one size, got sizes {[(len(a), len(b)) for a, b in frozen]}")
    return frozen


# ------------------------------------------------------------------ the operators
@memo
def _flat_taps(bank: Bank) -> tuple[list[float], list[float]]:
    """The bank as the ops' arguments: every kernel's y taps, then every kernel's x taps."""
    return [t for ty, _ in bank for t in ty], [t for _, tx in bank for t in tx]


@memo
def _checked_spec(
    taps_y: Taps, taps_x: Taps, kernels: int, pad: tuple[int, ...], stride: int, border_type: str
) -> Spec:
    """The ops' arguments as a ``Spec``, checked: the ops are public (``torch.ops.gradcv``)
    and the C kernel reads as many taps as these numbers say."""
    if kernels < 1 or not taps_y or not taps_x or len(taps_y) % kernels or len(taps_x) % kernels:
        raise ArgumentValueError(
            "taps_y, taps_x", f"a positive multiple of kernels={kernels} taps each", (len(taps_y), len(taps_x)),
            f"taps_y, taps_x: expected a positive multiple of kernels={kernels} taps each, "
            f"got {len(taps_y)} and {len(taps_x)}"
        )
    if len(pad) != 4 or min(pad) < 0:
        raise ArgumentValueError("pad", "four non-negative ints", list(pad), f"pad: expected four non-negative ints (top, bottom, left, right), got {list(pad)}")
    if stride < 1:
        raise ArgumentValueError("stride", "a positive int", stride, f"stride: expected a positive int, got {stride}")
    if border_type not in _native.BORDERS:
        raise ArgumentValueError("border_type", tuple(_native.BORDERS), border_type, f"border_type: expected one of {tuple(_native.BORDERS)}, got {border_type!r}")
    ky, kx = len(taps_y) // kernels, len(taps_x) // kernels
    bank = tuple((taps_y[k * ky : (k + 1) * ky], taps_x[k * kx : (k + 1) * kx]) for k in range(kernels))
    return bank, stride, (pad[0], pad[1], pad[2], pad[3]), border_type


def _op_spec(
    x: torch.Tensor, dims: int, taps_y: list[float], taps_x: list[float], kernels: int, pad: list[int], stride: int,
    border_type: str,
) -> Spec:
    if x.ndim < dims:
        raise ShapeError("input", ("*",) + ("?",) * dims, tuple(x.shape), f"input: expected at least {dims} dimensions, got shape {tuple(x.shape)}")
    return _checked_spec(tuple(taps_y), tuple(taps_x), kernels, tuple(pad), stride, border_type)


@torch.library.custom_op("gradcv::separable_correlate", mutates_args=())
def _correlate_op(
    x: torch.Tensor, taps_y: list[float], taps_x: list[float], kernels: int, pad: list[int], stride: int,
    border_type: str,
) -> torch.Tensor:
    """Pad ``x`` ``(*, H, W)`` by ``pad`` (top, bottom, left, right) and correlate it with
    ``kernels`` separable kernels, keeping every ``stride``-th pixel: ``(*, K, Ho, Wo)``.
    This body is the PyTorch code, for every device; the CPU's kernel is below."""
    return _filter_forward(x, _op_spec(x, 2, taps_y, taps_x, kernels, pad, stride, border_type))


@_native.cpu_kernel("separable_correlate")
def _correlate_cpu(
    x: torch.Tensor, taps_y: list[float], taps_x: list[float], kernels: int, pad: list[int], stride: int,
    border_type: str,
) -> torch.Tensor:
    spec = _op_spec(x, 2, taps_y, taps_x, kernels, pad, stride, border_type)
    out = x.new_empty(*x.shape[:-2], kernels, *_filter_out_hw(*x.shape[-2:], spec))
    if out.numel() and _native.separable_correlate(x, out, spec[0], pad[0], pad[2], stride, border_type):
        return out
    return _filter_forward(x, spec, out)


@_correlate_op.register_fake
def _correlate_fake(
    x: torch.Tensor, taps_y: list[float], taps_x: list[float], kernels: int, pad: list[int], stride: int,
    border_type: str,
) -> torch.Tensor:
    spec = _op_spec(x, 2, taps_y, taps_x, kernels, pad, stride, border_type)
    return x.new_empty(*x.shape[:-2], kernels, *_filter_out_hw(*x.shape[-2:], spec))


@torch.library.custom_op("gradcv::separable_correlate_adjoint", mutates_args=())
def _adjoint_op(
    g: torch.Tensor, taps_y: list[float], taps_x: list[float], kernels: int, pad: list[int], stride: int,
    border_type: str, height: int, width: int,
) -> torch.Tensor:
    """Adjoint of ``gradcv::separable_correlate`` for an input of ``height x width``:
    ``(*, K, Ho, Wo) -> (*, H, W)``; PyTorch code on every device."""
    spec = _adjoint_spec(g, taps_y, taps_x, kernels, pad, stride, border_type, height, width)
    return _filter_adjoint(g, spec, (height, width))


@_adjoint_op.register_fake
def _adjoint_fake(
    g: torch.Tensor, taps_y: list[float], taps_x: list[float], kernels: int, pad: list[int], stride: int,
    border_type: str, height: int, width: int,
) -> torch.Tensor:
    _adjoint_spec(g, taps_y, taps_x, kernels, pad, stride, border_type, height, width)
    return g.new_empty(*g.shape[:-3], height, width)


def _adjoint_spec(
    g: torch.Tensor, taps_y: list[float], taps_x: list[float], kernels: int, pad: list[int], stride: int,
    border_type: str, height: int, width: int,
) -> Spec:
    spec = _op_spec(g, 3, taps_y, taps_x, kernels, pad, stride, border_type)
    expected = (kernels, *_filter_out_hw(height, width, spec))
    if tuple(g.shape[-3:]) != expected:
        raise ShapeError("g", ("*", *expected), tuple(g.shape), f"g: expected (*, {', '.join(map(str, expected))}) for a {height}x{width} input, got {tuple(g.shape)}")
    return spec


def _correlate_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, *ctx.args = inputs
    ctx.in_hw = tuple(x.shape[-2:])


def _correlate_backward(ctx, g):  # type: ignore[no-untyped-def]
    return (_adjoint_op(g, *ctx.args, *ctx.in_hw),) + (None,) * len(ctx.args)


def _adjoint_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.args = inputs[1:-2]
    ctx.n_args = len(inputs) - 1


def _adjoint_backward(ctx, g):  # type: ignore[no-untyped-def]
    return (_correlate_op(g, *ctx.args),) + (None,) * ctx.n_args


_correlate_op.register_autograd(_correlate_backward, setup_context=_correlate_setup)
_adjoint_op.register_autograd(_adjoint_backward, setup_context=_adjoint_setup)


torch.library.register_vmap(_correlate_op, _native.batch_first_vmap(_correlate_op))
torch.library.register_vmap(_adjoint_op, _native.batch_first_vmap(_adjoint_op))


def correlate_separable(
    x: torch.Tensor,
    bank: Sequence[tuple[Sequence[float], Sequence[float]]],
    border_type: str = "reflect",
    padding: str = "same",
    stride: int = 1,
) -> torch.Tensor:
    """Correlate ``(*, H, W)`` with K separable kernels of Python-float taps.

    Runs the operator ``gradcv::separable_correlate`` (fused C on the CPU when built).

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
    # torch.export records ATen ops only (a program that runs without gradcv, and converts to ONNX)
    if _native.needs_decomposition():
        return _filter_functional(x, (frozen, int(stride), pad, border_type))
    taps_y, taps_x = _flat_taps(frozen)
    return _correlate_op(x, taps_y, taps_x, len(frozen), list(pad), int(stride), border_type)


def correlate_separable_adjoint(
    g: torch.Tensor,
    bank: Sequence[tuple[Sequence[float], Sequence[float]]],
    in_hw: tuple[int, int],
    border_type: str = "reflect",
) -> torch.Tensor:
    """Adjoint of ``correlate_separable(x, bank, border_type)`` ('same' padding, stride 1)
    for an ``x`` of ``in_hw``: ``(*, K, H, W) -> (*, H, W)``, differentiable (operators'
    backward formulas use it)."""
    frozen = _freeze(tuple((tuple(ty), tuple(tx)) for ty, tx in bank))
    ky, kx = len(frozen[0][0]), len(frozen[0][1])
    pad = [(ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2]
    taps_y, taps_x = _flat_taps(frozen)
    return _adjoint_op(g, taps_y, taps_x, len(frozen), pad, 1, border_type, in_hw[0], in_hw[1])


def correlate_same_torch(
    x: torch.Tensor, bank: Sequence[tuple[Sequence[float], Sequence[float]]], border_type: str
) -> torch.Tensor:
    """``correlate_separable(x, bank, border_type)`` in PyTorch code only, without autograd:
    for an operator's own PyTorch implementation."""
    frozen = _freeze(tuple((tuple(ty), tuple(tx)) for ty, tx in bank))
    ky, kx = len(frozen[0][0]), len(frozen[0][1])
    return _filter_forward(x, (frozen, 1, ((ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2), border_type))
