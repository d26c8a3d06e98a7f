"""Second-order level solver (``method='levenberg_marquardt'`` or ``'gauss_newton'``).

Same problem, pyramid, frame and sampling as the first-order solver, solved by
Gauss–Newton steps on the photometric residuals ``r = src(G p) - dst(p)`` over the pixels
``p`` whose source lies inside the image. Three choices make it fast and wide-basined:

- *Compositional update on the motion's group*: ``G <- G expm(sum_k delta_k E_k)`` with
  ``E_k`` the generators of the motion model (:func:`gradcv.registration.motion.generators`),
  so every step stays in the model and the Jacobian of the warp at ``delta = 0`` is a
  fixed per-pixel table, computed once per level.
- *ESM* (efficient second-order minimisation, Benhimane and Malis 2004): the image
  gradient in the Jacobian is the mean of the warped source's and the destination's
  (central differences, :func:`gradcv.core_ops.filters.spatial_gradient`), which
  approximates the second-order Taylor term for free and converges from much farther
  than forward-additive Gauss–Newton (measured on DeTone pairs at rho = 32).
- *One warp per iteration*: the normal equations ``(JᵀWJ + λ diag JᵀWJ) δ = -JᵀWr``
  are solved batched in float64; a pair's proposal is evaluated by the next iteration's
  warp, kept when it lowers that pair's loss and otherwise undone (its stored normal
  equations re-solved with more damping), all by masks. Every 4 iterations one look at
  the host drops the pairs that have stopped from the working set
  (:class:`gradcv.optim.WorkingSet`) and ends the level once none moves; on the CPU,
  where such a look costs nothing, the level also ends after any step once none moves.

On the levels above the finest the residual is ``coarse_loss`` (least squares by
default); on the finest it is ``loss``, made robust by iteratively reweighting for
``'l1'`` (weights ``1 / max(|r|, eps)``) and ``'charbonnier'`` (``1 / sqrt(r² + eps²)``),
Charbonnier's steps lengthened by how much those weights overestimate the penalty's
curvature (:func:`_relaxation`: up to threefold on noisy pairs, not at all on exact ones;
L1, whose curvature is zero almost everywhere, keeps the plain steps).
``levenberg_marquardt`` damps by λ (tenfold down on an accepted step, tenfold up, to at
least 1, on a rejected one); ``gauss_newton`` keeps λ = 0 and halves its step on a
rejection instead (doubling it back, up to the full step, on an acceptance).

A pair stops once a proposed step moves the image corners less than ``step_tolerance``
pixels of the level being solved (such a step is kept without evaluating it: at that
size the loss no longer tells, and a Gauss–Newton step that small is a refinement), or a
kept one changes its loss by less than ``tolerance``, relatively, once a rejected one
moves them less than
:data:`_REJECTED_STOP` times that (the loss is at its floor), or once its damping or step
length saturates.

On the CPU (float32, no masks, not differentiable) an evaluation's per-pixel work runs in
C (:mod:`gradcv.registration._native_eval`): sampling, photometric fit, robust residual, ESM
gradient and the moments of the products, pair by pair in cache, the same numbers to float
rounding as the PyTorch code, which stays for the other cases (and ``GRADCV_NATIVE=0``).

Differentiable (``config.differentiable``): the loop runs with autograd on and never
detaches a step, and the working set stays whole (compaction is bookkeeping, not maths,
but it would cut the graph's batch). The gradient of the result is then the exact
derivative of the iteration map composed over the iterations that ran, with the
accept/reject decisions and the stops held fixed (they are piecewise constant in the
data). Near convergence it approaches the implicit-function derivative of the optimum,
``-(JᵀWJ)⁻¹ ∂(JᵀWr)/∂data``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradcv.core_ops.filters import spatial_gradient
from gradcv.optim import PerSampleStopping, ProgressCallback, StoppingCriteria, WorkingSet, pad_history
from gradcv.registration import _native_eval
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.motion import generators, motion_matrix, motion_parameters
from gradcv.registration.objective import (
    PHOTOMETRIC_TERMS,
    LevelOutcome,
    LevelProblem,
    apply_photometric,
    level_photometric,
    masked_weight,
    photometric_columns,
    photometric_gram,
    photometric_solve,
    residual_loss,
    ridged,
)
from gradcv.registration.sampling import LevelGrid, project_corners

_LAMBDA_START, _LAMBDA_MIN, _LAMBDA_MAX = 1e-4, 1e-8, 1e6
# After a rejected step the damping is at least this: below it the damped step is the
# rejected one again (measured: the 10x ramp from 1e-8 spent 5 iterations before the step
# changed; at 1e-2 the next two proposals still moved 98 % and 80 % as far and were
# rejected in turn; at 1 a step shrinks to about a third at once: 8 % less time a
# photometric pair at B = 1, the same accuracy on 192 pairs of each protocol, seeds 1-2,
# and on 96 held out, seeds 0 and 3).
_LAMBDA_REJECTED = 1.0
_ALPHA_MIN = 2.0**-12
# A proposal that raises the loss although it moves the corners less than this many times
# ``step_tolerance`` (level pixels) stops the pair: the loss is at its floor (the bilinear
# resampling's), and the damping would only shrink the step below the tolerance over the
# next 4-5 evaluations without a kept step (measured on 192 pairs of each protocol, seeds 1-2: the same
# accuracy, a third fewer evaluations).
_REJECTED_STOP = 10.0
# The reweighted step is lengthened by 1 / (_RELAX_SCALE * ratio), at most _RELAX_MAX-fold,
# where ratio <= 1 is how much the reweighted matrix overestimates the penalty's curvature
# (:func:`_relaxation`). Measured (seeds 1-2 tuning, 0 and 3 held out, 96-192 pairs of each
# protocol): photometric pairs converge in fewer evaluations and nearer their optimum (held
# out: median 0.0414 -> 0.0396 px, geometric mean 0.0452 -> 0.0425); on exact resamples,
# whose finest-level residuals are near eps, the factor stays near 1 (_RELAX_SCALE 1.2
# instead of 1.5 left them less accurate: median 0.0005 -> 0.0007 px).
_RELAX_MAX = 3.0
_RELAX_SCALE = 1.5
_COMPACT_EVERY = 4
# On CPU the per-pixel work runs on blocks of pairs of at most this many pixels, so that
# its dozen temporaries stay in cache and out of fresh, page-faulting allocations: at
# 24 pairs of 256 x 256 one block of all of them made each elementwise pass 3 ms.
_BLOCK_ELEMENTS = 1 << 17


def central_differences(image: torch.Tensor) -> torch.Tensor:
    """``(B, C, 2, h, w)``: ``[d/dx, d/dy]`` by central differences in level pixels,
    replicated borders (``spatial_gradient``'s ``'diff'`` mode, normalised)."""
    return spatial_gradient(image, "diff", 1, True, border_type="replicate")


@dataclass(frozen=True, eq=False)
class _Moments:
    """The constant tables that turn per-pixel products into the normal equations.

    d(warped point)/d delta at delta = 0, for a generator E and a frame point p, is
    (E p)_xy - p (E p)_z, a quadratic in p. With the monomials m(p) = (1, x, y, x², xy, y²)
    it is (Cx m(p), Cy m(p)), so J = gx Cx m + gy Cy m and the normal equations reduce to
    image moments: A = sum_ab Ca (sum_n w ga gb m mᵀ) Cbᵀ, b = sum_a Ca (sum_n w r ga m),
    moments of x^a y^b up to a + b = 4: nothing of size (B, N, P) is ever made, so a large
    batch costs what its pixels cost. The frame is separable (x depends on the column
    only, y on the row), so every moment sum_n S(n) x^a y^b is Yᵀ S X with the power
    tables X (w, 5) and Y (h, 5).
    """

    C2: torch.Tensor  # (P, 12): J = [gx m, gy m] C2ᵀ
    X: torch.Tensor  # (w, 5)
    Y: torch.Tensor  # (h, 5)
    gather: torch.Tensor  # (144 + 12,) the moments' positions in the blocks of A and b
    gather_photometric: torch.Tensor  # (48,) those of up to 4 photometric columns
    generators: torch.Tensor  # (P, 9)

    @staticmethod
    def build(problem: LevelProblem, frame_to_level: float, dtype: torch.dtype) -> "_Moments":
        return _Moments.of_grid(problem.grid, problem.motion, frame_to_level, dtype)

    @staticmethod
    def of_grid(grid: LevelGrid, motion: str, frame_to_level: float, dtype: torch.dtype) -> "_Moments":
        """The tables of ``motion`` on the level ``grid`` (``frame_to_level``: level pixels
        per frame unit)."""
        device = grid.points.device
        gens = generators(motion, torch.float64, device).reshape(-1, 9)  # (P, 9): E00 ... E22
        select, gather, gather_photometric = _moment_constants(device)
        powers = torch.arange(5, dtype=dtype, device=device)
        X = grid.points[0, 0, :, 0, None] ** powers
        Y = grid.points[0, :, 0, 1, None] ** powers
        return _Moments((gens @ select) * frame_to_level, X, Y, gather, gather_photometric, gens)


@functools.lru_cache(maxsize=8)
def _moment_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tables that depend on nothing but the device (made once): ``select (9, 12)``
    taking a generator's entries to ``[Cx, Cy]``, and the moments' gathers."""
    # (E p)_x = E00 x + E01 y + E02; minus x (E p)_z = x (E20 x + E21 y + E22): Cx over the
    # monomials (1, x, y, x², xy, y²) is (E02, E00 - E22, E01, -E20, -E21, 0); likewise Cy.
    select = torch.zeros(9, 12, dtype=torch.float64)
    for entry, column, sign in ((2, 0, 1), (0, 1, 1), (8, 1, -1), (1, 2, 1), (6, 3, -1), (7, 4, -1),
                                (5, 6, 1), (3, 7, 1), (4, 8, 1), (8, 8, -1), (6, 10, -1), (7, 11, -1)):
        select[entry, column] = sign
    # One gather takes the (5, n, 5, 5) moments to the (12, 12) block matrix [[xx, xy],
    # [xy, yy]] and the 12-vector [x r, y r] of every pair; m has exponents:
    ex = torch.tensor([0, 1, 0, 2, 1, 0])
    ey = torch.tensor([0, 0, 1, 0, 1, 2])
    i, j = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    block = (i >= 6).long() + (j >= 6).long()  # xx: 0, xy: 1, yy: 2
    a_ij, b_ij = ex[i % 6] + ex[j % 6], ey[i % 6] + ey[j % 6]
    k = torch.arange(12)
    gather = torch.cat([(block * 25 + b_ij * 5 + a_ij).flatten(), (3 + k // 6) * 25 + ey[k % 6] * 5 + ex[k % 6]])
    # The photometric columns' [x phi_j, y phi_j] moments (products 5 + 2j, 6 + 2j), 6
    # monomials each, for up to 4 columns (a model with fewer reads the first ones).
    k = torch.arange(12 * 4)
    gather_photometric = (5 + k // 6) * 25 + ey[k % 6] * 5 + ex[k % 6]
    return select.to(device), gather.to(device), gather_photometric.to(device)


class _Linearisation:
    """The loss and normal equations of the working set at ``G``."""

    def __init__(self, problem: LevelProblem, config: RegistrationConfig, moments: _Moments) -> None:
        self.problem, self.config, self.moments = problem, config, moments
        self.work: dict[str, torch.Tensor] = {
            "src": problem.src,
            "dst": problem.dst,
            "centres": problem.grid.centres(problem.src),
            "grad": central_differences(problem.dst) * 2.0,  # unhalved, see _esm_gradient
        }
        if problem.masks is not None:
            self.work["src_mask"], self.work["dst_mask"] = problem.masks
        self.buffer: torch.Tensor | None = None
        # The fused C evaluation (registration/_native_eval.py) where it applies: the same
        # numbers to float rounding, without the PyTorch path's ~40 passes over the pixels.
        self.native = (
            not config.differentiable and not torch.is_grad_enabled() and problem.masks is None
            and config.loss in _native_eval.LOSSES and _native_eval.available(problem.src)
            and problem.src.shape[-2] * problem.src.shape[-1] < 2**31  # the kernel's int32 offsets
        )
        if self.native:
            grid, (h, w) = problem.grid, problem.grid.size
            self.work = {k: v.contiguous() for k, v in self.work.items() if k != "centres"}
            self.frame = (grid.xs.to(torch.float64), grid.ys.to(torch.float64))
            # level pixels per frame unit, from to_grid as the PyTorch path's positions are
            self.scale = (float(grid.to_grid[0]) * w / 2.0, float(grid.to_grid[1]) * h / 2.0)
            # float32 as the kernel reads them (the tables take theta's dtype, which is src's today)
            self.powers = (moments.X.T[1:].to(torch.float32).contiguous(), moments.Y.to(torch.float32).contiguous())

    def keep(self, keep: torch.Tensor) -> None:
        """Restrict the working tensors to the positions ``keep``."""
        self.work = {k: v[keep] for k, v in self.work.items()}

    def __call__(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss (n,), A (n, P, P), b (n, P))``, on CPU block by block of pairs."""
        n = G.shape[0]
        C, (h, w) = self.problem.src.shape[1], self.problem.grid.size
        if self.native:
            return self._fused(G, self.work)
        block = max(1, _BLOCK_ELEMENTS // (C * h * w)) if G.device.type == "cpu" else n
        if n <= block:
            return self._block(G, self.work)
        parts = [self._block(G[i : i + block], {k: v[i : i + block] for k, v in self.work.items()}) for i in range(0, n, block)]
        loss, A, b = (torch.cat(x) for x in zip(*parts))
        return loss, A, b

    def _block(self, G: torch.Tensor, work: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, grid, m = self.config, self.problem.grid, self.moments
        warped, inside = grid.sample(work["src"], G, work["centres"])
        if "src_mask" in work:
            inside = masked_weight(grid, inside, G, (work["src_mask"], work["dst_mask"]))
        phi = photometric_columns(cfg.photometric, warped)
        fitted = warped
        if phi is not None:
            D, e = photometric_gram(phi, inside, work["dst"] - warped)
            fitted = apply_photometric(warped, phi, photometric_solve(D, e))
        r = fitted - work["dst"]
        loss, robust = residual_loss(cfg.loss, r, inside, cfg.charbonnier_eps)
        gx, gy = _esm_gradient(fitted, work["grad"])
        weights = inside if robust is None else inside * robust
        wgx, wgy = weights * gx, weights * gy
        pairs: tuple = ((wgx, gx), (wgx, gy), (wgy, gy), (wgx, r), (wgy, r))
        terms = PHOTOMETRIC_TERMS[cfg.photometric]
        for j, term in enumerate(terms):
            column = None if term == "bias" else phi[:, j]
            pairs += ((wgx, column), (wgy, column))
        # The products' buffer is kept from one evaluation to the next: a fresh one of
        # this size (megabytes at 256²) page-faulted on every evaluation (~850 faults).
        sums = self.buffer = _products(pairs, self.buffer)
        n, (h, w) = G.shape[0], grid.size
        K = len(pairs)
        moments = m.Y.T @ (sums.view(K * n, h, w) @ m.X)  # (Kn, 5, 5): [row power, column power]
        moments = moments.view(K, n, 25).transpose(0, 1).reshape(n, 25 * K)
        picked = moments[:, m.gather].to(torch.float64)
        A = m.C2 @ picked[:, :144].view(n, 12, 12) @ m.C2.T
        b = picked[:, 144:] @ m.C2.T
        if phi is not None:
            k = len(terms)
            cross = moments[:, m.gather_photometric[: 12 * k]].to(torch.float64).view(n, k, 12) @ m.C2.T  # (n, k, P)
            # The fit's Gram matrix is the Schur block's unless robust weights change W.
            D, e = photometric_gram(phi, weights, r) if robust is not None else (D, _gram_rhs(phi, weights, r))
            A, b = _eliminate_photometric(A, b, cross.transpose(1, 2), D, e)
        if robust is not None and cfg.loss == "charbonnier" and not cfg.differentiable:  # the step -A⁻¹b lengthened (see _relaxation)
            # w |g|² per pixel: the products already made where there is one channel
            wg2 = (sums[0] + sums[2])[:, None] if r.shape[1] == 1 else wgx * gx + wgy * gy
            b = b * _relaxation(cfg, robust, wg2, moments[:, 0] + moments[:, 50])[:, None]
        return loss, A, b

    def _fused(self, G: torch.Tensor, work: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_block`'s numbers (to float rounding) with its per-pixel work in C, all
        pairs in one call: the products' moments and the per-pair sums come from the
        kernel; the gathers, the photometric elimination and the relaxation are
        :meth:`_block`'s."""
        cfg, m = self.config, self.moments
        src = work["src"]
        n = G.shape[0]
        k = len(PHOTOMETRIC_TERMS[cfg.photometric])
        D = (G - torch.eye(3, dtype=G.dtype, device=G.device)).to(torch.float64).reshape(n, 9).contiguous()
        moments, stats = _native_eval.linearise_homography(
            src, work["dst"], work["grad"], D, *self.frame, *self.scale, k, _native_eval.LOSSES[cfg.loss],
            cfg.charbonnier_eps, *self.powers,
        )
        loss = (stats[:, 0] / stats[:, 1].clamp_min(1.0)).to(src.dtype)
        picked = moments[:, m.gather]
        A = m.C2 @ picked[:, :144].view(n, 12, 12) @ m.C2.T
        b = picked[:, 144:] @ m.C2.T
        if k:
            cross = moments[:, m.gather_photometric[: 12 * k]].view(n, k, 12) @ m.C2.T
            Dm = stats[:, 3:19].view(n, 4, 4)[:, :k, :k]
            A, b = _eliminate_photometric(A, b, cross.transpose(1, 2), Dm, stats[:, 19 : 19 + k])
        if cfg.loss == "charbonnier":
            b = b * _relaxation(cfg, None, stats[:, 2], moments[:, 0] + moments[:, 50])[:, None]
        return loss, A, b


def _esm_gradient(fitted: torch.Tensor, dst_differences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ESM's gradient: the mean of ``fitted``'s and the destination's central differences
    (level pixels, replicated borders; :func:`central_differences`' numbers), ``(gx, gy)``
    each ``(B, C, h, w)``, given the destination's differences ``x[+1] - x[-1]`` unhalved
    ``(B, C, 2, h, w)``. Halving is exact, so ``(d_fitted + d_dst) / 4`` is that mean bit
    for bit, without stacking ``fitted``'s pair."""
    p = F.pad(fitted, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2] + dst_differences[:, :, 0]).mul_(0.25)
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1] + dst_differences[:, :, 1]).mul_(0.25)
    return gx, gy


def _relaxation(config: RegistrationConfig, robust: torch.Tensor | None, wg2: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``(n,)`` the factor the reweighted step is lengthened by (``robust`` ``None``:
    ``wg2`` is already the numerator ``sum((robust eps)² w |g|²) (n,)``, as the fused
    evaluation gives it).

    Reweighting takes the penalty's curvature as ``psi(r) / r`` where it is ``rho''(r)``,
    smaller (for the Charbonnier penalty ``rho'' = psi(r) / r * eps² / (r² + eps²)``; 0 for
    L1): the normal equations' matrix overestimates the Hessian, so the steps fall short
    and the iterations converge linearly. Their ratio, averaged with the Jacobian's weights
    ``sum w |g|² (rho'' / (psi / r)) / sum w |g|²``, estimates the scalar by which the
    matrix is too large; the step is divided by :data:`_RELAX_SCALE` times it (an average
    over directions: a part only), at most :data:`_RELAX_MAX`-fold. Noisy pairs (ratio
    about 0.3) take steps about twice as long, up to three times; exact resamples near their optimum (ratio
    near 1) the plain ones. The step is still checked by its loss (kept only if the loss
    falls). Not with ``differentiable``: an unrolled solve keeps the plain steps, whose
    iteration map (and so its derivative) does not depend on this factor's data."""
    numerator = wg2 if robust is None else ((robust * config.charbonnier_eps).square() * wg2).sum((1, 2, 3))
    ratio = numerator / total.clamp_min(torch.finfo(total.dtype).tiny).to(numerator.dtype)
    return (1.0 / (_RELAX_SCALE * ratio.to(torch.float64))).clamp(1.0, _RELAX_MAX)


def _gram_rhs(phi: torch.Tensor, weight: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``ΦᵀWr (B, k)`` in float64."""
    B, k = phi.shape[:2]
    N = math.prod(r.shape[1:])  # explicit: an empty batch has no -1 to infer
    PW = phi.reshape(B, k, N) * weight.expand_as(r).reshape(B, 1, N)
    return (PW @ r.reshape(B, N, 1))[..., 0].to(torch.float64)


def _eliminate_photometric(
    A: torch.Tensor, b: torch.Tensor, C: torch.Tensor, D: torch.Tensor, e: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The motion's normal equations with the photometric coefficients solved for jointly:
    the Schur complement ``A - C D^-1 Cᵀ``, ``b - C D^-1 e`` of their block, where
    ``C = JᵀWΦ (n, P, k)``, ``D = ΦᵀWΦ (n, k, k)`` and ``e = ΦᵀWr (n, k)`` (the model's
    columns Φ are the Jacobian of the residual in its coefficients; ``D`` regularised as
    every photometric solve is, :func:`~gradcv.registration.objective.ridged`)."""
    D = ridged(D)
    P = C.shape[1]
    solved = C @ torch.linalg.solve(D, torch.cat([C.transpose(1, 2), e[..., None]], -1))  # (n, P, P + 1)
    A_s, b_s = A - solved[..., :P], b - solved[..., P]
    ok = torch.isfinite(A_s).flatten(1).all(1) & torch.isfinite(b_s).all(1)
    return torch.where(ok[:, None, None], A_s, A), torch.where(ok[:, None], b_s, b)


def _products(pairs: tuple[tuple[torch.Tensor, torch.Tensor | None], ...], buffer: torch.Tensor | None = None) -> torch.Tensor:
    """``(len(pairs), n, h, w)``: each pair's channel sum of products (of the first alone
    where the second is ``None``). Without autograd, written into one buffer (``out=``
    saves a copy per product): ``buffer`` where it has that shape, dtype and device, else
    a new one; with autograd, stacked."""
    u0 = pairs[0][0]
    n, C, h, w = u0.shape
    if torch.is_grad_enabled():
        return torch.stack([(u if v is None else u * v).sum(1) for u, v in pairs])
    shape = (len(pairs), n, h, w)
    fits = buffer is not None and buffer.shape == shape and buffer.dtype == u0.dtype and buffer.device == u0.device
    sums = buffer if fits else torch.empty(shape, dtype=u0.dtype, device=u0.device)
    channel = sums[:, :, None]  # (K, n, 1, h, w): a product of one channel is written as it is
    for k, (u, v) in enumerate(pairs):
        if v is None:
            torch.sum(u, 1, out=sums[k])
        elif C == 1:
            torch.mul(u, v, out=channel[k])
        else:
            torch.sum(u * v, 1, out=sums[k])
    return sums


def _propose(
    G: torch.Tensor, A: torch.Tensor, b: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor, gens: torch.Tensor
) -> torch.Tensor:
    """The damped, compositional step from ``G``: ``G expm(sum delta_k E_k)``."""
    diag = torch.diagonal(A, dim1=-2, dim2=-1)
    damp = lam[:, None] * diag + 1e-9 * diag.mean(-1, keepdim=True) + 1e-30
    delta = -torch.linalg.solve(A + torch.diag_embed(damp), b.unsqueeze(-1)).squeeze(-1)
    delta = torch.where(torch.isfinite(delta), delta, torch.zeros_like(delta)) * alpha[:, None]
    # exp of the step's generator by Horner's Taylor series to the 6th power: exact to
    # 2e-4 relative for the largest coarse steps, to rounding for the final ones, and a
    # sixth of matrix_exp's cost (a proposal is checked by its loss anyway).
    D = (delta @ gens).view(-1, 3, 3)
    eye = torch.eye(3, dtype=torch.float64, device=G.device).expand_as(D)
    step = eye
    for k in range(6, 0, -1):
        step = torch.baddbmm(eye, D, step, alpha=1.0 / k)
    G_new = G.to(torch.float64) @ step
    return (G_new / G_new[:, 2:, 2:]).to(G.dtype)


def _adapt(
    lm: bool, accept: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lam, alpha, stuck)`` after a step: Levenberg–Marquardt's damping goes tenfold down
    on an accepted proposal and up (to at least ``_LAMBDA_REJECTED``) on a rejected one;
    Gauss–Newton's step length doubles or halves instead. A pair is stuck once either
    saturates on a rejection."""
    if lm:
        lam = torch.where(accept, lam * 0.1, (lam * 10.0).clamp_min(_LAMBDA_REJECTED)).clamp(_LAMBDA_MIN, _LAMBDA_MAX)
        return lam, alpha, ~accept & (lam >= _LAMBDA_MAX)
    alpha = torch.where(accept, alpha * 2.0, alpha * 0.5).clamp(max=1.0)
    return lam, alpha, ~accept & (alpha < _ALPHA_MIN)


def solve_second_order(
    problem: LevelProblem,
    theta: torch.Tensor,
    config: RegistrationConfig,
    callback: ProgressCallback | None = None,
) -> LevelOutcome:
    """At most ``config.iterations`` iterations on one level from ``theta (B, k)``; the
    outcome's ``theta`` is the best parameters found for each pair."""
    # Levels above the finest are blurred and resampled, so their residuals are not
    # outliers but mismatch, and least squares converges there quadratically where the
    # reweighted penalties crawl linearly; the finest level uses the configured loss. The
    # coarse levels fit gain and bias at most (level_photometric).
    if not problem.level.is_finest:
        photometric = level_photometric(config.photometric, False)
        config = dataclasses.replace(config, loss=config.coarse_loss, photometric=photometric)
    with torch.set_grad_enabled(config.differentiable):
        return _iterate(problem, theta, config, callback)


def _frame_to_level(problem: LevelProblem, dtype: torch.dtype) -> float:
    """Frame units -> this level's pixels. Steps are measured in the level's own pixels:
    a coarse level only has to settle to a hundredth of *its* pixel, the finer ones refine
    from there (measured: a third fewer iterations, the same final accuracy). From the
    sizes, not a float() of the grid's device tensor (a host sync on CUDA once per level);
    rounded through the working dtype as ``grid.to_grid`` is, so the value is the same bit
    for bit."""
    full, (_, w) = max(problem.grid.full) / 2.0, problem.grid.size
    to_grid = float(torch.tensor(2 * full / (2.0**problem.level.level * w), dtype=dtype))
    return to_grid * w / 2.0


def _iterate(
    problem: LevelProblem, theta: torch.Tensor, config: RegistrationConfig, callback: ProgressCallback | None
) -> LevelOutcome:
    """The level's loop: propose, evaluate by the next linearisation, keep or undo per
    pair, stop per pair, compact the working set every ``_COMPACT_EVERY`` iterations."""
    B = problem.batch
    dtype, device = theta.dtype, theta.device
    lm = config.method == "levenberg_marquardt"
    frame_to_level = _frame_to_level(problem, dtype)
    moments = _Moments.build(problem, frame_to_level, dtype)
    linearise = _Linearisation(problem, config, moments)
    # patience 1: a small proposal, kept or not, means the pair sits at its optimum (a
    # rejected one there would otherwise climb the damping for a dozen steps).
    stop = PerSampleStopping(StoppingCriteria(config.tolerance, config.step_tolerance, 1), B, device)
    work = WorkingSet(B, device)

    G_all = motion_matrix(problem.motion, theta if config.differentiable else theta.detach(), problem.corners)
    G = G_all
    loss, A, b = linearise(G)
    loss_all = loss.clone()
    steps_all = torch.zeros(B, dtype=torch.long, device=device)
    active_all = torch.ones(B, dtype=torch.bool, device=device)
    lam = torch.full((B,), _LAMBDA_START if lm else 0.0, dtype=torch.float64, device=device)
    alpha = torch.ones(B, dtype=torch.float64, device=device)
    losses: list[torch.Tensor] = []
    corners = project_corners(G, problem.corners)
    eager = device.type == "cpu"
    for step in range(config.iterations):
        losses.append(loss_all)  # never written in place: the working set scatters out of place
        cand = _propose(G, A, b, lam, alpha, moments.generators)
        c_corners = project_corners(cand, problem.corners)
        moved = (c_corners - corners).norm(dim=-1).amax(-1) * frame_to_level
        # A step under the tolerance is kept without evaluating it, and ends the pair.
        tiny, active = moved < config.step_tolerance, stop.active
        skip = eager and not bool((active & ~tiny).any())  # nothing else to evaluate
        c_loss, c_A, c_b = (loss, A, b) if skip else linearise(cand)
        accept = active & (tiny | (torch.isfinite(c_loss) & (c_loss < loss)))
        change = (loss - c_loss) / loss.clamp_min(torch.finfo(dtype).tiny)
        lam, alpha, stuck = _adapt(lm, accept, lam, alpha)
        stuck = stuck | (~accept & (moved < _REJECTED_STOP * config.step_tolerance))
        a, measured = accept[:, None], accept & ~tiny
        G = torch.where(a[..., None], cand, G)
        corners = torch.where(a[..., None], c_corners, corners)
        loss = torch.where(measured, c_loss, loss)
        A = torch.where(a[..., None], c_A, A)
        b = torch.where(a, c_b, b)
        # A rejected proposal's loss change does not count (NaN is never small).
        stop.update(torch.where(accept, change, torch.nan), moved, stuck)
        loss_all = work.scatter(loss_all, loss)
        if callback is not None:
            callback(problem.level.index, step, loss_all)
        last = step == config.iterations - 1
        compact = step % _COMPACT_EVERY == _COMPACT_EVERY - 1
        # On the CPU a look at the host costs nothing: the level ends as soon as no pair
        # moves, not at the next compaction (same result, up to 3 evaluations less).
        done = eager and not (compact or last) and not bool(stop.active.any())
        if compact or last or done:
            G_all, active_all = work.scatter(G_all, G), work.scatter(active_all, stop.active)
            steps_all = work.scatter(steps_all, stop.steps)
            if done:
                break
            # No look at the host after the last step: the loop ends there anyway (a level
            # of at most _COMPACT_EVERY - 1 iterations reads nothing back).
            if not last and not bool(stop.active.all()):
                if not bool(stop.active.any()):
                    break
                if not config.differentiable:
                    keep = work.keep(stop.active)
                    G, corners, loss, A, b, lam, alpha = (x[keep] for x in (G, corners, loss, A, b, lam, alpha))
                    stop.select(keep)
                    linearise.keep(keep)
    last_loss = losses[-1] if len(losses) == config.iterations else loss_all
    theta = motion_parameters(problem.motion, G_all, problem.corners).to(dtype)
    return LevelOutcome(theta, pad_history(losses, steps_all, config.iterations), steps_all, ~active_all, last_loss)
