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
"""

from __future__ import annotations

import torch

from gradcv.core_ops import _native

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
    order: product, row power, column power) and the per-pair statistics ``(n, STATS)``."""
    n, C, h, w = src.shape
    K = 5 + 2 * terms
    src, dst, grad, D, xs, ys, X, Y = (t.contiguous() for t in (src, dst, grad, D, xs, ys, X, Y))
    moments = torch.empty(n, K * 25, dtype=torch.float64)
    stats = torch.empty(n, STATS, dtype=torch.float64)
    lib = _native.registration_library()
    if lib is None:
        raise RuntimeError("gradcv::linearise_homography: the native registration library is not loaded")
    if n:
        threads = min(torch.get_num_threads(), n) if n * C * h * w >= _PARALLEL_MIN_VALUES else 1
        gomp = _native._gomp_parallel() if threads > 1 else None
        args = (
            src.data_ptr(), dst.data_ptr(), grad.data_ptr(), D.data_ptr(), xs.data_ptr(), ys.data_ptr(), scale_x, scale_y,
            n, C, h, w, terms, loss, eps, X.data_ptr(), Y.data_ptr(), moments.data_ptr(), stats.data_ptr(),
        )
        if threads > 1 and gomp is None:  # no OpenMP team to run on: the module's pool
            _native._run_shared(lib.linearise_shared_f32, (), args, threads)
        elif lib.linearise_f32(gomp, threads, *args):
            raise MemoryError("gradcv::linearise_homography: out of memory for its scratch planes")
    return moments, stats


@linearise_homography.register_fake
def _(src, dst, grad, D, xs, ys, scale_x, scale_y, terms, loss, eps, X, Y):  # type: ignore[no-untyped-def]
    n = src.shape[0]
    return src.new_empty(n, (5 + 2 * terms) * 25, dtype=torch.float64), src.new_empty(n, STATS, dtype=torch.float64)
