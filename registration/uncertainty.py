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
otherwise. Mapped to the four corners (pixels of the full image), its largest standard
deviation is what :func:`corner_uncertainty` returns.

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

from gradcv.core_ops.filters import spatial_gradient
from gradcv.registration.motion import generators
from gradcv.registration.objective import apply_photometric, photometric_columns, photometric_gram, photometric_solve
from gradcv.registration.sampling import LevelGrid

#: Side, in pixels, of the blocks over which the residual may be correlated.
BLOCK = 8
# The per-pixel Jacobian (8 motion columns) is made for this many values (pairs x channels x
# h x w x 8) at once.
_CHUNK_ELEMENTS = 1 << 19


def corner_uncertainty(
    grid: LevelGrid,
    src: torch.Tensor,
    dst: torch.Tensor,
    G: torch.Tensor,
    weight: torch.Tensor,
    corners: torch.Tensor,
    motion: str,
    photometric: str,
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

    ``inf`` where the normal equations are singular (no texture in some direction).
    """
    B = src.shape[0]
    if B == 0:
        return src.new_zeros(0)
    C, (h, w) = src.shape[1], grid.size
    chunk = max(1, _CHUNK_ELEMENTS // (C * h * w * 8))
    parts = [
        _uncertainty(grid, src[i : i + chunk], dst[i : i + chunk], G[i : i + chunk], weight[i : i + chunk], corners, motion, photometric)
        for i in range(0, B, chunk)
    ]
    return torch.cat(parts)


def _uncertainty(
    grid: LevelGrid, src: torch.Tensor, dst: torch.Tensor, G: torch.Tensor, weight: torch.Tensor,
    corners: torch.Tensor, motion: str, photometric: str,
) -> torch.Tensor:
    B, C, h, w = src.shape
    warped, _ = grid.sample(src, G)
    weight = weight.to(src.dtype)
    phi = photometric_columns(photometric, warped)
    fitted = warped
    if phi is not None:
        D, e = photometric_gram(phi, weight, dst - warped)
        fitted = apply_photometric(warped, phi, photometric_solve(D, e))
    r = fitted - dst
    grad = 0.5 * (_gradient(fitted) + _gradient(dst))  # (B, C, 2, h, w), level pixels
    J = _jacobian(grid, grad, motion)  # (B, P, C, h, w)
    P = J.shape[1]
    N = C * h * w
    # Per-pixel products in the images' dtype; the P x P matrices in float64.
    Jf = J.reshape(B, P, N)
    wf = weight.expand(B, C, h, w).reshape(B, 1, N)
    wJ = Jf * wf
    if phi is not None:  # project the photometric columns out (their Schur complement)
        Phi = phi.reshape(B, -1, N)
        k = Phi.shape[1]
        D = ((Phi * wf) @ Phi.transpose(1, 2)).to(torch.float64)
        D = D + (1e-9 * D.diagonal(dim1=-2, dim2=-1).sum(-1) + 1e-30)[:, None, None] * torch.eye(k, dtype=D.dtype, device=D.device)
        cross = (wJ @ Phi.transpose(1, 2)).to(torch.float64)  # (B, P, k)
        coef = torch.linalg.solve(D, cross.transpose(1, 2)).transpose(1, 2).to(Jf.dtype)
        Jf = torch.baddbmm(Jf, coef, Phi, alpha=-1.0)
        wJ = Jf * wf
    A = (wJ @ Jf.transpose(1, 2)).to(torch.float64)  # (B, P, P)
    score = (wJ * r.reshape(B, 1, N)).view(B * P, C, h, w).sum(1, keepdim=True)
    pad = (0, (-w) % BLOCK, 0, (-h) % BLOCK)
    blocks = F.avg_pool2d(F.pad(score, pad), BLOCK) * (BLOCK * BLOCK)  # (B P, 1, h', w') block sums
    s = blocks.view(B, P, -1).to(torch.float64)
    S = s @ s.transpose(1, 2)  # (B, P, P)
    # inv(A) S inv(A) by two solves; a singular A (no texture along a direction) is inf.
    eye = torch.eye(P, dtype=A.dtype, device=A.device)
    ridge = (1e-12 * A.diagonal(dim1=-2, dim2=-1).sum(-1) + 1e-300)[:, None, None] * eye
    Ainv_S = torch.linalg.solve(A + ridge, S)
    cov = torch.linalg.solve(A + ridge, Ainv_S.transpose(1, 2))
    Jc = _corner_jacobian(G, corners, motion, grid)  # (B, 8, P), pixels per parameter
    var = (Jc @ cov @ Jc.transpose(1, 2)).diagonal(dim1=-2, dim2=-1)
    std = var.clamp_min(0.0).amax(-1).sqrt()
    bad = ~torch.isfinite(std) | ~torch.isfinite(A).flatten(1).all(1)
    return torch.where(bad, torch.full_like(std, math.inf), std).to(src.dtype)


def _gradient(image: torch.Tensor) -> torch.Tensor:
    return spatial_gradient(image, "diff", 1, True, border_type="replicate")


def _jacobian(grid: LevelGrid, grad: torch.Tensor, motion: str) -> torch.Tensor:
    """``(B, P, C, h, w)``: d residual / d delta_k of the compositional step ``G expm(δ E_k)``
    at every pixel, in intensity per parameter (the gradient is per level pixel)."""
    gens = generators(motion, grad.dtype, grad.device)  # (P, 3, 3)
    frame_to_level = max(grid.full) / 2.0 * grid.size[1] / grid.full[1]  # from sizes: no look at the device
    x = grid.points[0, ..., 0]  # (h, w)
    y = grid.points[0, ..., 1]
    one = torch.ones_like(x)
    p = torch.stack([x, y, one])  # (3, h, w)
    Ep = torch.einsum("kij,jhw->kihw", gens, p)  # (P, 3, h, w)
    dx = (Ep[:, 0] - x * Ep[:, 2]) * frame_to_level
    dy = (Ep[:, 1] - y * Ep[:, 2]) * frame_to_level
    return grad[:, None, :, 0] * dx[None, :, None] + grad[:, None, :, 1] * dy[None, :, None]


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
