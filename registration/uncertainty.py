"""How well the data determine a registration: the standard deviation of the image corners
that the final residual implies, without the ground truth.

At the optimum the motion ``delta`` solves the normal equations ``A delta = -J̃ᵀWr`` of the
least-squares residual ``r = fitted - dst`` (``J̃``: the per-pixel Jacobian of the residual
in the motion, with the photometric model's columns projected out, which is their Schur
complement; ``A = J̃ᵀWJ̃``). If ``r`` were independent noise the covariance of ``delta``
would be ``σ² A⁻¹``; a misfit left by a wrong optimum is not independent but smooth, so the
covariance is taken *cluster-robust* (the sandwich ``A⁻¹ (Σ_b s_b s_bᵀ) A⁻¹`` over blocks
``b`` of :data:`BLOCK` x :data:`BLOCK` pixels, ``s_b = Σ_{p in b} J̃ w r``): equal to
``σ² A⁻¹`` for white noise, and as large as the misfit's spatial coherence makes it
otherwise. To it is added the white-noise covariance ``σ₀² A⁻¹`` of
:data:`NOISE_FLOOR`, the least noise an image holds, so that a motion the data cannot see
is undetermined even where the model fits exactly. Mapped to the four corners (pixels of
the full image), its largest standard deviation is what :func:`corner_uncertainty`
returns.

That covariance describes a result *at* an optimum. The first-order solvers stop on a small
step, which a decaying learning rate makes small anywhere: Adam under the cosine schedule
stopped rocket's DeTone pairs 1-6 px off and still descending, the covariance there 0.30-0.43
px. Given the ``loss`` the result minimised, :func:`corner_uncertainty` returns the corners'
root-mean-square error instead: the variance plus the square of the step to that loss's
optimum which its reweighted normal equations (IRLS, the second-order solver's weights) still
ask for. At a stationary point the step is ~0 (first order on the tuning seeds' DeTone and
photometric pairs: no pair registered to the truth changed status); the least-squares step
would not do, since at the optimum of L1 or Charbonnier it measures the two losses'
disagreement under noise and JPEG (up to ~0.6 px, 14 of 48 first-order photometric pairs
flagged). The second-order solvers stop on that very step and pass no loss.

What it separates (measured on 192 DeTone, 144 full-image and 144 photometric pairs cut
from the six bundled photographs at seeds 1-2, at the solver's results): the pairs
registered to the truth stay below 0.2 px on exact resamples and below 0.37 px under the
photometric protocol's noise, JPEG and blur; the pairs that end 6-90 px off (near-textureless
sky and smoke, where a wrong shift leaves a smooth residual that gain and bias nearly
absorb) come out at 0.7-6500 px, those 4 px off at 0.4. The solver's bound
(``RegistrationConfig.max_uncertainty``) is 0.5 px. Library code: torch
only, batched, no host synchronisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_str_choice
from gradcv.registration.config import LEAST_SQUARES
from gradcv.registration.motion import generators
from gradcv.registration.objective import (
    PHOTOMETRIC_TERMS,
    apply_photometric,
    photometric_columns,
    residual_loss,
    photometric_gram,
    photometric_solve,
    ridged,
)
from gradcv.registration.sampling import LevelGrid
from gradcv.registration.second_order import _esm_gradient, _Moments, _products, central_differences

#: Side, in pixels, of the blocks over which the residual may be correlated.
BLOCK = 8
#: The least noise the covariance assumes, in intensity units of images in [0, 1]: 8-bit
#: quantisation's (1 / 255 / sqrt(12)). A pair whose model fits *exactly* along some
#: motion (a ramp shifted along its slope, which the bias absorbs) leaves a residual of
#: rounding noise, and the sandwich alone then scales that direction's infinite variance by
#: ~0: the verdict depended on float rounding (a 32² ramp judged determined 2.6-16 px off).
#: With ``σ₀² A⁻¹`` added the direction is undetermined whatever the rounding; on a
#: textured pair it adds ~1e-3 px or less (a 128² patch of gradients 0.01 per pixel:
#: 0.0009 px).
NOISE_FLOOR = 1.0 / 255.0 / math.sqrt(12.0)
# The per-pixel products are made for this many values (pairs x channels x h x w) at once,
# so that they stay in cache (as the level solver's blocks).
_CHUNK_ELEMENTS = 1 << 18


def corner_uncertainty(
    grid: LevelGrid,
    src: torch.Tensor,
    dst: torch.Tensor,
    G: torch.Tensor,
    weight: torch.Tensor,
    corners: torch.Tensor,
    motion: str,
    photometric: str,
    *,
    loss: str | None = None,
    eps: float = 1e-3,
) -> torch.Tensor:
    """``(B,)`` the largest standard deviation, in full-resolution pixels, of the four image
    corners' coordinates implied by the least-squares residual at ``G`` (module doc).

    Args:
        grid: the full-resolution level's grid.
        src, dst: ``(B, C, H, W)`` the images.
        G: ``(B, 3, 3)`` the final motion (``dst`` frame points to ``src`` frame points).
        weight: ``(B, 1, H, W)`` the pixels compared (inside the source, times the masks).
        corners: ``(4, 2)`` the image corners in the frame.
        motion: the motion model (its generators are the parameters).
        photometric: the photometric model fitted with the motion.
        loss: ``None`` for a result known to be stationary; ``'l1'``, ``'l2'`` or
            ``'charbonnier'`` (with ``eps``, its IRLS weights' floor) for one that may have
            stopped short of that loss's optimum: the corners' root-mean-square error, the
            variance plus the square of the step still to go (module doc).
        eps: see ``loss``.

    ``inf`` where the normal equations are singular (no texture in some direction).
    """
    if loss is not None:
        check_str_choice(loss, LEAST_SQUARES, "loss")
    B = src.shape[0]
    if B == 0:
        return src.new_zeros(0)
    C, (h, w) = src.shape[1], grid.size
    chunk = max(1, _CHUNK_ELEMENTS // (C * h * w))
    parts = [
        _uncertainty(
            grid, src[i : i + chunk], dst[i : i + chunk], G[i : i + chunk], weight[i : i + chunk], corners, motion, photometric, loss, eps
        )
        for i in range(0, B, chunk)
    ]
    return torch.cat(parts)


def _uncertainty(
    grid: LevelGrid, src: torch.Tensor, dst: torch.Tensor, G: torch.Tensor, weight: torch.Tensor,
    corners: torch.Tensor, motion: str, photometric: str, loss: str | None = None, eps: float = 1e-3,
) -> torch.Tensor:
    """The chunk's ``(B,)`` uncertainty: the covariance's variances and, given a ``loss``,
    the squared step to its optimum, from the same moments reweighted by its IRLS weights."""
    var, _, bad, r = _variances(grid, src, dst, G, weight, corners, motion, photometric)
    if loss is not None:
        _, robust = residual_loss(loss, r, weight, eps)
        reweighted = weight.to(src.dtype) if robust is None else weight * robust
        _, step, singular, _ = _variances(grid, src, dst, G, reweighted, corners, motion, photometric, step=True)
        var, bad = var + step * step, bad | singular
    std = var.clamp_min(0.0).amax(-1).sqrt()
    bad = ~torch.isfinite(std) | bad
    return torch.where(bad, torch.full_like(std, math.inf), std).to(src.dtype)


def _variances(
    grid: LevelGrid, src: torch.Tensor, dst: torch.Tensor, G: torch.Tensor, weight: torch.Tensor,
    corners: torch.Tensor, motion: str, photometric: str, step: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(var (B, 8), None, singular (B,), r)``: the corners' variances, whether ``A`` is
    not finite, and the residual; with ``step``, ``(None, step (B, 8), singular, r)``
    instead: the Gauss-Newton step ``A⁻¹ J̃ᵀWr`` mapped to the corners (the first-order
    judgement reweights for it, and needs no second covariance). Nothing of size (pixels x parameters) is made: the per-pixel Jacobian is ``J = gx Cx
    m + gy Cy m`` with the monomials ``m = (1, x, y, x², xy, y²)`` of the frame point (the
    level solver's :class:`gradcv.registration.second_order._Moments`), so ``A``, the
    photometric cross terms ``JᵀWΦ`` and the block sums ``s_b`` are moments of a few
    per-pixel products: ``A`` and ``JᵀWΦ`` over the image from the solver's separable
    tables, ``s_b`` over each block from the powers of ``x`` and ``y`` up to 2."""
    B, C, h, w = src.shape
    dtype = src.dtype
    warped, _ = grid.sample(src, G)
    weight = weight.to(dtype)
    phi = photometric_columns(photometric, warped)
    fitted = warped
    if phi is not None:
        D, e = photometric_gram(phi, weight, dst - warped)
        fitted = apply_photometric(warped, phi, photometric_solve(D, e))
    r = fitted - dst
    gx, gy = _esm_gradient(fitted, central_differences(dst) * 2.0)  # level pixels (unhalved differences: see there)
    frame_to_level = max(grid.full) / 2.0 * grid.size[1] / grid.full[1]  # from sizes: no look at the device
    m = _Moments.of_grid(grid, motion, frame_to_level, dtype)
    wgx, wgy = weight * gx, weight * gy
    # In the level solver's order: A's three products, the residual's two, then each
    # photometric column's two (the tables' gathers read them there).
    pairs: tuple = ((wgx, gx), (wgx, gy), (wgy, gy), (wgx, r), (wgy, r))
    terms = PHOTOMETRIC_TERMS[photometric]
    for j, term in enumerate(terms):
        column = None if term == "bias" else phi[:, j]
        pairs += ((wgx, column), (wgy, column))
    wr = weight * r
    pairs += tuple((wr, None if term == "bias" else phi[:, j]) for j, term in enumerate(terms))
    sums = _products(pairs)  # (K, B, h, w), summed over the channels
    k = len(terms)
    K = 5 + 2 * k
    moments = m.Y.T @ (sums[:K].reshape(K * B, h, w) @ m.X)  # (K B, 5, 5): [row power, column power]
    moments = moments.view(K, B, 25).transpose(0, 1).reshape(B, 25 * K)
    A = m.C2 @ moments[:, m.gather[:144]].to(torch.float64).view(B, 12, 12) @ m.C2.T  # (B, P, P)
    s = _block_moments(sums[3:5], grid) @ m.C2.T  # (B, blocks, P): the block sums of J w r
    P = A.shape[-1]
    if phi is not None:  # project the photometric columns out (their Schur complement)
        cross = (moments[:, m.gather_photometric[: 12 * k]].to(torch.float64).view(B, k, 12) @ m.C2.T).transpose(1, 2)
        coef = torch.linalg.solve(ridged(D), cross.transpose(1, 2)).transpose(1, 2)  # (B, P, k): J̃ = J - coef Φ
        A = A - coef @ cross.transpose(1, 2)
        s = s - _block_sums(sums[K:]) @ coef.transpose(1, 2)
    eye = torch.eye(P, dtype=A.dtype, device=A.device)
    ridge = (1e-12 * A.diagonal(dim1=-2, dim2=-1).sum(-1) + 1e-300)[:, None, None] * eye
    Jc = _corner_jacobian(G, corners, motion, grid)  # (B, 8, P), pixels per parameter
    singular = ~torch.isfinite(A).flatten(1).all(1)
    if step:  # J̃ᵀWr is the sum of the block sums; the covariance is the other call's
        return None, (Jc @ torch.linalg.solve(A + ridge, s.sum(1)[..., None]))[..., 0], singular, r
    S = s.transpose(1, 2) @ s  # (B, P, P)
    # inv(A) S inv(A) + σ₀² inv(A) by two solves; a singular A (no texture along a
    # direction) is inf, or, held finite by the ridge, σ₀² / ridge along that direction.
    Ainv_S = torch.linalg.solve(A + ridge, S)
    cov = torch.linalg.solve(A + ridge, Ainv_S.transpose(1, 2) + NOISE_FLOOR**2 * eye)
    var = (Jc @ cov @ Jc.transpose(1, 2)).diagonal(dim1=-2, dim2=-1)
    return var, None, singular, r


def _padded(fields: torch.Tensor) -> torch.Tensor:
    """``(..., h, w)`` zero-padded to whole blocks."""
    h, w = fields.shape[-2:]
    return F.pad(fields, (0, (-w) % BLOCK, 0, (-h) % BLOCK))


def _block_sums(fields: torch.Tensor) -> torch.Tensor:
    """``(B, blocks, k)`` the sums of the ``(k, B, h, w)`` fields over each block, in float64."""
    k, B = fields.shape[:2]
    p = _padded(fields)
    sums = F.avg_pool2d(p.reshape(k * B, 1, *p.shape[-2:]), BLOCK) * (BLOCK * BLOCK)
    return sums.view(k, B, -1).permute(1, 2, 0).to(torch.float64)


def _block_moments(fields: torch.Tensor, grid: LevelGrid) -> torch.Tensor:
    """``(B, blocks, 12)``: the moments ``sum f m`` over each block of the fields ``(2, B, h,
    w)`` (``[gx, gy]`` parts), ``m`` the six monomials, in float64."""
    _, B, h, w = fields.shape
    p = _padded(fields)
    hp, wp = p.shape[-2:]
    powers = torch.arange(3, dtype=fields.dtype, device=fields.device)
    X = F.pad(grid.xs, (0, wp - w))[:, None] ** powers  # (w', 3); padded columns hold zeros
    Y = F.pad(grid.ys, (0, hp - h))[:, None] ** powers
    bx = torch.einsum("knhqj,qja->knhqa", p.view(2, B, hp, wp // BLOCK, BLOCK), X.view(-1, BLOCK, 3))
    by = torch.einsum("knpiqa,pic->knpqca", bx.reshape(2, B, hp // BLOCK, BLOCK, wp // BLOCK, 3), Y.view(-1, BLOCK, 3))
    # monomial (x^a y^c) at c * 3 + a: 1, x, y, x², xy, y²
    mono = by.reshape(2, B, -1, 9)[..., [0, 1, 3, 2, 4, 6]]  # (2, B, blocks, 6)
    return mono.permute(1, 2, 0, 3).reshape(B, -1, 12).to(torch.float64)


def _corner_jacobian(G: torch.Tensor, corners: torch.Tensor, motion: str, grid: LevelGrid) -> torch.Tensor:
    """``(B, 8, P)``: d (the corners ``G c`` in full-resolution pixels) / d delta_k."""
    gens = generators(motion, torch.float64, G.device)
    c = torch.cat([corners.to(torch.float64), torch.ones_like(corners[:, :1], dtype=torch.float64)], 1)  # (4, 3)
    Gd = G.to(torch.float64)
    q = c @ Gd.transpose(1, 2)  # (B, 4, 3): G c
    dq = torch.einsum("bij,kjl,nl->bkni", Gd, gens, c)  # (B, P, 4, 3): G E_k c
    z = q[:, None, :, 2:]
    d = (dq[..., :2] * z - q[:, None, :, :2] * dq[..., 2:]) / (z * z)  # (B, P, 4, 2) frame units
    full = max(grid.full) / 2.0  # frame unit -> full-resolution pixels
    return (d * full).flatten(2).transpose(1, 2)
