"""The second-order solver's fused CPU evaluation: ``core_ops/_native/registration.c``
as the custom op ``gradcv::linearise_homography``.

:class:`gradcv.registration.second_order._Linearisation` evaluates, for a working set
of pairs at their homographies ``G``, about 40 elementwise PyTorch passes over the
pixels (sampling, photometric fit, robust residual, ESM gradient, the products its
normal equations are moments of). On the CPU, without autograd and without masks, the
C kernel does that per-pixel work pair by pair in four passes over planes that stay in
cache, and returns the same numbers to float rounding: per pair, in float64, the
moments of the products its normal equations are made of and the sums the rest of the
evaluation needs. Everything after (the gathers into the normal equations, the Schur
elimination of the photometric coefficients, the relaxation) stays in PyTorch. Differentiable solves,
CUDA, masks, float64, ``GRADCV_NATIVE=0`` and a build without the library take the
PyTorch code.

Threads: a call's pairs are shared whole by its threads (PyTorch's OpenMP team, or this
package's pool where there is none). With fewer pairs than threads (one pair, the common
call) on PyTorch's OpenMP team, a pair's plane of 2^15 pixels or more (and more than 16
rows) is cut into row blocks that the threads share, in phases joined between them
(sampling and the photometric fit's sums; the fit; residual and moments, whose gradient
and Laplacian read the neighbouring blocks' rows). The pool does not split a pair: its
hand-offs made one pair on two threads no faster than on one. The blocks' size depends on
the plane's size only, and a pair's sums are added in block order however its blocks are
run, so every thread count, on the team or the pool, gives the same bits.

"To float rounding" has two limits: a pixel exactly on the inside rule's border (a source
position of exactly -0.5 or ``w - 0.5`` level pixels) may be counted inside by one path
and outside by the other, since the C decides in double what PyTorch decides in float32;
and the C's double sums are vectorised per CPU (AVX-512, AVX2, plain), so their last bits
may differ between machines (never between thread counts on one machine). The op has no
autograd formula: it is called only without autograd (a differentiable solve takes the
PyTorch code), and under grad mode PyTorch's own "no autograd" error says so.
"""

from __future__ import annotations

import torch

from gradcv.core_ops import _native
from gradcv.core_ops.errors import ArgumentValueError, DeviceError, DTypeError, ShapeError

#: The loss codes of ``registration.c``.
LOSSES = {"l2": 0, "l1": 1, "charbonnier": 2}
#: Per-pair statistics (float64): loss numerator ``sum(inside * err)``, ``sum(inside)``
#: over pixels and channels, the relaxation's numerator ``sum((robust eps)² w |g|²)``,
#: the photometric Gram matrix ``ΦᵀWΦ`` (4 x 4, the first ``k x k`` used; the inside
#: pixels' for least squares, the reweighted one otherwise) and ``ΦᵀWr`` (4).
STATS = 23
# Below this many pixel values a call runs on one thread: waking the team costs more
# than a small working set's evaluation.
_PARALLEL_MIN_VALUES = 1 << 15


#: The photometric column counts the kernel takes (the models of
#: :data:`gradcv.registration.objective.PHOTOMETRIC_TERMS`: none, gain + bias, tone, exposure).
TERMS = (0, 2, 3, 4)


def available(src: torch.Tensor) -> bool:
    """Whether the fused evaluation can run for the level images ``src``."""
    return src.device.type == "cpu" and src.dtype == torch.float32 and _native.registration_library() is not None


@torch.library.custom_op("gradcv::linearise_homography", mutates_args=(), device_types="cpu")
def linearise_homography(
    src: torch.Tensor, dst: torch.Tensor, grad: torch.Tensor, D: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
    scale_x: float, scale_y: float, terms: int, loss: int, eps: float, X: torch.Tensor, Y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluates ``n`` pairs: contiguous float32 ``src``, ``dst (n, C, h, w)``, the
    destination's unhalved central differences ``grad (n, C, 2, h, w)``, ``D = G - I``
    ``(n, 9)`` float64, the level's frame coordinates ``xs (w,)``, ``ys (h,)`` float64 and
    its level pixels per frame unit; ``terms`` photometric columns (the first ``terms`` of
    gain, bias, curve, blur), ``loss`` a :data:`LOSSES` code; the powers ``X (4, w)``
    (``x^1 .. x^4``) and ``Y (h, 5)`` (``y^0 .. y^4``) float32. Returns the moments
    ``(n, K * 25)`` of the ``K = 5 + 2 terms`` products (``_Linearisation._block``'s, in its
    order: product, row power, column power) and the per-pair statistics ``(n, STATS)``.
    Only the moments the normal equations read are computed: for the products after the
    first three (``w gx r``, ``w gy r`` and the photometric columns'), the row powers 3 and
    4 are returned as zeros. Bad shapes, dtypes, devices, ``terms`` or ``loss`` raise
    typed errors naming the argument."""
    _check_arguments(src, dst, grad, D, xs, ys, terms, loss, X, Y)
    n, C, h, w = src.shape
    K = 5 + 2 * terms
    src, dst, grad, D, xs, ys, X, Y = (t.contiguous() for t in (src, dst, grad, D, xs, ys, X, Y))
    moments = torch.empty(n, K * 25, dtype=torch.float64)
    stats = torch.empty(n, STATS, dtype=torch.float64)
    lib = _native.registration_library()
    if lib is None:
        raise RuntimeError("gradcv::linearise_homography: the native registration library is not loaded")
    if n:
        threads = torch.get_num_threads() if n * C * h * w >= _PARALLEL_MIN_VALUES else 1
        gomp = _native._gomp_parallel() if threads > 1 else None
        args = (
            src.data_ptr(), dst.data_ptr(), grad.data_ptr(), D.data_ptr(), xs.data_ptr(), ys.data_ptr(), scale_x, scale_y,
            n, C, h, w, terms, loss, eps, X.data_ptr(), Y.data_ptr(), moments.data_ptr(), stats.data_ptr(),
        )
        if threads > 1 and gomp is None:  # no OpenMP team to run on: the module's pool, whole pairs
            if n > 1:
                _native._run_shared(lib.linearise_shared_f32, (), args, min(threads, n))
            elif lib.linearise_f32(None, 1, *args):
                raise MemoryError("gradcv::linearise_homography: out of memory for its scratch planes")
        elif lib.linearise_f32(gomp, threads, *args):
            raise MemoryError("gradcv::linearise_homography: out of memory for its scratch planes")
    return moments, stats


def _check_arguments(
    src: torch.Tensor, dst: torch.Tensor, grad: torch.Tensor, D: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
    terms: int, loss: int, X: torch.Tensor, Y: torch.Tensor,
) -> None:
    """Typed errors for what the kernel would read wrongly or out of bounds (shapes, dtypes
    and sizes only: no look at the values, so no host sync)."""
    if src.ndim != 4:
        raise ShapeError("src", ("n", "C", "h", "w"), tuple(src.shape))
    n, C, h, w = src.shape
    shapes = {"dst": (dst, (n, C, h, w)), "grad": (grad, (n, C, 2, h, w)), "D": (D, (n, 9)), "xs": (xs, (w,)),
              "ys": (ys, (h,)), "X": (X, (4, w)), "Y": (Y, (h, 5))}
    for name, (t, shape) in {"src": (src, tuple(src.shape)), **shapes}.items():
        if name != "src" and tuple(t.shape) != shape:
            raise ShapeError(name, shape, tuple(t.shape))
        wanted = torch.float64 if name in ("D", "xs", "ys") else torch.float32
        if t.dtype != wanted:
            raise DTypeError(name, wanted, t.dtype)
        if t.device.type != "cpu":
            raise DeviceError(name, "cpu", t.device)
    if C < 1:
        raise ShapeError("src", ("n", "C >= 1", "h", "w"), tuple(src.shape))
    if terms not in TERMS:
        raise ArgumentValueError("terms", TERMS, terms)
    if loss not in LOSSES.values():
        raise ArgumentValueError("loss", tuple(LOSSES.values()), loss)
    if h * w >= 2**31:
        raise ShapeError("src", "planes of fewer than 2**31 pixels (int32 offsets)", tuple(src.shape))


@linearise_homography.register_fake
def _(src, dst, grad, D, xs, ys, scale_x, scale_y, terms, loss, eps, X, Y):  # type: ignore[no-untyped-def]
    n = src.shape[0]
    return src.new_empty(n, (5 + 2 * terms) * 25, dtype=torch.float64), src.new_empty(n, STATS, dtype=torch.float64)
