"""One shared check that every operator goes through, in the spirit of torchvision v2's
``check_kernel``: given an operator and a batch of sample inputs, it holds the properties
every operator of core_ops promises (DESIGN.md, "core_ops: the operator layer").

- no in-place change of any input (its ``_version`` counter and its values);
- batched equals per-sample (each sample alone, concatenated, equals the batch);
- an empty batch (B = 0) gives an empty batch of the same trailing shape;
- degenerate images (1 x 1, 1 x N, N x 1 crops of every image argument) run and keep
  the batch, dtype and device;
- dtype kept (float32 and float64, float16 and bfloat16 with ``low_precision=True``),
  each within a tolerance of the float64 result on the same (rounded) input;
- device kept, and on a GPU the result equals the CPU's within the float32 tolerance;
- a non-contiguous input gives the contiguous input's result.

Tolerances are relative to the size of the float64 result (``max(1, |ref|_max)``):
float32 ``1e-4``, float16 ``2e-2`` and bfloat16 ``1e-1`` (their unit roundoffs are
``6e-8``, ``5e-4`` and ``4e-3``, and an operator sums tens of products, so a few
hundred roundoffs); the layout and batch checks use ``1e-5`` in float32 (the same
arithmetic in another order).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tests.helpers import noncontiguous

DTYPE_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}
LAYOUT_TOL = 1e-5
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of an operator's result (a tensor, or nested tuples/lists of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flatten(item)]
    return []


def _cast(args: Sequence[Any], dtype: torch.dtype | None, device: torch.device | str) -> list[Any]:
    """Floating tensors to ``dtype`` (if given), every tensor to ``device``; the rest as is."""
    cast = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.to(device=device, dtype=dtype if dtype is not None and a.is_floating_point() else a.dtype)
        cast.append(a)
    return cast


def _scale(t: torch.Tensor) -> float:
    finite = t[torch.isfinite(t)] if t.is_floating_point() else t
    return max(1.0, float(finite.abs().max())) if finite.numel() else 1.0


def _assert_close(got: Any, want: Any, tol: float, what: str) -> None:
    got_t, want_t = _flatten(got), _flatten(want)
    assert len(got_t) == len(want_t), f"{what}: {len(got_t)} outputs, expected {len(want_t)}"
    for i, (g, w) in enumerate(zip(got_t, want_t)):
        assert g.shape == w.shape, f"{what}: output {i} has shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        g, w = g.detach().cpu(), w.detach().cpu()
        if not w.is_floating_point():
            assert torch.equal(g, w), f"{what}: output {i} differs"
            continue
        g, w = g.double(), w.double()
        atol = tol * _scale(w)
        torch.testing.assert_close(g, w, atol=atol, rtol=0, equal_nan=True, msg=lambda m: f"{what}, output {i}: {m}")


def _call_unchanged(op: Callable[..., Any], args: Sequence[Any], what: str) -> Any:
    """Call ``op`` and check that no tensor argument was written to."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    versions = [t._version for t in tensors]
    copies = [t.detach().clone() for t in tensors]
    out = op(*args)
    for i, (t, v, c) in enumerate(zip(tensors, versions, copies)):
        assert t._version == v, f"{what}: tensor argument {i} was modified in place (_version {v} -> {t._version})"
        assert torch.equal(t, c) or (t.is_floating_point() and torch.equal(t.isnan(), c.isnan())
                                     and torch.equal(t.nan_to_num(), c.nan_to_num())), (
            f"{what}: the values of tensor argument {i} changed"
        )
    return out


def _crop(args: Sequence[Any], images: Sequence[bool], h: int, w: int) -> list[Any]:
    """Every image argument cropped to its top-left ``h x w``."""
    return [a[..., :h, :w] if image else a for a, image in zip(args, images)]


def check_kernel(
    op: Callable[..., Any],
    *args: Any,
    device: torch.device | str = "cpu",
    batched: Sequence[bool] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    low_precision: bool = False,
    compare_dtypes: bool = True,
    empty: bool = True,
    degenerate: Sequence[tuple[int, int]] = ((1, 1), (1, 5), (5, 1)),
    tol: float | None = None,
    batched_output: bool = True,
    images: Sequence[bool] | None = None,
    dtype_tol: dict[torch.dtype, float] | None = None,
) -> None:
    """Run the standard properties (see the module docstring) on ``op(*args)``.

    Args:
        op: the operator, called positionally with ``args`` (wrap it in a lambda to fix
            options, e.g. ``reduction="none"``).
        *args: sample inputs, float32 on the CPU: tensors with a batch of at least 2 on
            dimension 0 where ``batched`` says so, and any other values.
        device: where to run (the test's ``device`` fixture).
        batched: per argument, whether it carries the batch on dimension 0 (default: every
            tensor argument). Unbatched tensors (a shared kernel) are passed whole to each
            sample.
        dtypes: floating dtypes the operator must keep.
        low_precision: also float16 and bfloat16.
        compare_dtypes: compare each dtype's result with float64's (off for operators
            whose result is not continuous in the input: thresholds, argmax, rounding).
        empty: check the empty batch.
        degenerate: ``(h, w)`` crops of every image argument that must run; ``()`` when
            the operator has a minimum size.
        tol: the float32 tolerance of the layout and batch checks, relative to the result's
            size (default ``LAYOUT_TOL``).
        batched_output: whether each output has the batch on dimension 0. A loss that
            reduces over the batch (Kornia's ``psnr``, ``dice_loss``) has no per-sample
            result: its batch checks are skipped and its empty batch only has to run.
        images: per argument, whether it is an image (``(..., H, W)``) that the degenerate
            check crops (default: the batched 4-D tensors).
        dtype_tol: per-dtype tolerances that replace ``DTYPE_TOL``'s, for an operator
            whose arithmetic is known to lose more (the caller says why).
    """
    device = torch.device(device)
    tols = {**DTYPE_TOL, **(dtype_tol or {})}
    layout_tol = LAYOUT_TOL if tol is None else tol
    if batched is None:
        batched = [isinstance(a, torch.Tensor) for a in args]
    assert len(batched) == len(args)
    if images is None:
        images = [isinstance(a, torch.Tensor) and b and a.ndim == 4 for a, b in zip(args, batched)]
    sizes = {a.shape[0] for a, b in zip(args, batched) if b}
    assert len(sizes) == 1 and min(sizes) >= 2, f"batched arguments need one batch size >= 2, got {sizes}"
    n = sizes.pop()

    # 1. in-place, dtype and device, each dtype close to float64's
    all_dtypes = list(dtypes) + (list(LOW_PRECISION) if low_precision else [])
    _call_unchanged(op, _cast(args, torch.float64, device), "float64")
    for dtype in all_dtypes:
        cast = _cast(args, dtype, device)
        out = _call_unchanged(op, cast, str(dtype))
        outs = _flatten(out)
        assert outs, "the operator returned no tensor"
        for i, t in enumerate(outs):
            assert t.device == device, f"{dtype}: output {i} on {t.device}, expected {device}"
            if t.is_floating_point():
                assert t.dtype == dtype, f"{dtype} input: output {i} is {t.dtype}"
        if compare_dtypes and dtype != torch.float64:
            # float64 on the same rounded input: only the arithmetic differs
            rounded = op(*_cast(cast, torch.float64, device))
            _assert_close(out, rounded, tols[dtype], f"{dtype} against float64")

    base_args = _cast(args, torch.float32, device)
    base = op(*base_args)
    base_t = _flatten(base)

    # 2. on a GPU, the CPU's result
    if device.type != "cpu":
        on_cpu = op(*_cast(args, torch.float32, "cpu"))
        _assert_close(base, on_cpu, DTYPE_TOL[torch.float32], f"{device} against cpu")

    # 3. batched = per sample
    if batched_output:
        for t in base_t:
            assert t.shape[0] == n, f"output batch {t.shape[0]}, expected {n}"
        samples = [op(*[a[i : i + 1] if b else a for a, b in zip(base_args, batched)]) for i in range(n)]
        per_sample = [torch.cat(parts) for parts in zip(*[_flatten(s) for s in samples])]
        _assert_close(per_sample, base_t, layout_tol, "per-sample against batched")

    # 4. a non-contiguous layout
    strided = [noncontiguous(a) if isinstance(a, torch.Tensor) and a.ndim >= 1 else a for a in base_args]
    _assert_close(op(*strided), base, layout_tol, "non-contiguous against contiguous")

    # 5. the empty batch
    if empty:
        out = _flatten(op(*[a[:0] if b else a for a, b in zip(base_args, batched)]))
        assert len(out) == len(base_t)
        for t, full in zip(out, base_t if batched_output else []):
            assert t.shape[0] == 0 and t.shape[1:] == full.shape[1:], (
                f"empty batch gave {tuple(t.shape)}, expected (0, {', '.join(map(str, full.shape[1:]))})"
            )

    # 6. degenerate images
    for h, w in degenerate:
        out = _flatten(_call_unchanged(op, _crop(base_args, images, h, w), f"{h}x{w} image"))
        for t in out:
            assert t.device == device and (not batched_output or t.shape[0] == n), (
                f"{h}x{w} image: output {tuple(t.shape)} on {t.device}"
            )
            if t.is_floating_point():
                assert t.dtype == torch.float32
