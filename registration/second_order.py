"""Second-order (Gauss–Newton / Levenberg–Marquardt) level solver for
:class:`registration.solver.HomographyRegistration` (``method='gauss_newton'`` or
``'levenberg_marquardt'``).

Same problem, parametrisation, pyramid, frame and sampling as the first-order solver
(it reuses :class:`registration.solver._Level`, :func:`registration.solver._motion_matrix`).
Per pair, on the residuals ``r = warp(src; theta) - dst`` over the pixels whose source
lies inside the image (weights ``w``), it solves

    (JᵀWJ + λ diag(JᵀWJ)) δ = -JᵀWr

batched with ``torch.linalg.solve`` on ``(B, P, P)``, and accepts ``theta + δ`` only where
it lowers the pair's mean squared residual (masks, no host sync); λ falls tenfold on an
accepted step and rises tenfold on a rejected one, per pair. ``gauss_newton`` keeps λ = 0
and halves its step length on a rejected step (doubling it back, up to the full step, on
an accepted one).

The Jacobian is analytic: the image gradients (central differences of the level image,
sampled at the same warped grid) times ``d (G p) / d theta`` at every pixel, through
``d G / d theta`` (autograd on the 3x3 motion matrix, one pass per entry) and the chain rule of the perspective division.

The residual is least squares (L2): ``config.loss`` and ``config.symmetric``, and the
optimiser settings (``optimizer``, ``lr``, ``schedule``), are ignored. The loss history
records the per-pair mean squared residual at the current parameters before each step.
A pair stops once its proposed step moves the image corners less than
``step_tolerance`` px (or its accepted loss changes by less than ``tolerance``,
relatively) for ``min(patience, 3)`` consecutive iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from registration.config import RegistrationConfig


def _gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``image`` (level pixels), replicate borders."""
    pad = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2])
    gy = 0.5 * (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1])
    return gx, gy


def _motion_jacobian(motion_of, th: torch.Tensor) -> torch.Tensor:
    """``d G / d theta``, ``(B, 3, 3, P)``: reverse mode on the tiny 3x3 graph, one pass per
    matrix entry (the pairs are independent, so the batch sum separates them)."""
    with torch.enable_grad():
        t = th.detach().requires_grad_(True)
        G = motion_of(t)
        B, P = t.shape
        rows = []
        for i in range(9):
            entry = G.reshape(B, 9)[:, i]
            if entry.requires_grad:
                (g,) = torch.autograd.grad(entry.sum(), t, retain_graph=True, allow_unused=True)
            else:
                g = None
            rows.append(torch.zeros_like(t) if g is None else g)
    return torch.stack(rows, 1).reshape(B, 3, 3, P).detach()


def solve_level_second_order(
    config: RegistrationConfig,
    theta: torch.Tensor,
    grids,
    s_img: torch.Tensor,
    d_img: torch.Tensor,
    corners: torch.Tensor,
    level: int,
    callback,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``config.iterations`` GN/LM iterations on one level, updating ``theta`` in place.

    Returns ``(losses (iterations, B), steps (B,), stopped (B,))`` as the first-order
    level solver does."""
    from registration.solver import _motion_matrix  # no import cycle at module load

    cfg = config
    B, P = theta.shape
    dtype, device = theta.dtype, theta.device
    h, w = grids.size
    lm = cfg.method == "levenberg_marquardt"
    patience = min(cfg.patience, 3)
    tiny = torch.finfo(dtype).tiny
    pixels = max(grids.full) / 2.0
    corners_h = torch.cat([corners, torch.ones_like(corners[:, :1])], -1)
    s_centres = grids.centres(s_img)
    gx, gy = _gradients(s_img)
    grads = torch.cat([gx, gy], 1)  # (B, 2C, h, w)
    C = s_img.shape[1]

    def evaluate(th: torch.Tensor):
        G = _motion_matrix(cfg.motion, th, corners)
        warped, weight = grids.sample(s_img, G, s_centres)
        r = warped - d_img
        total = (weight.sum((1, 2, 3)) * C).clamp_min(1.0)
        loss = (weight * r.square()).sum((1, 2, 3)) / total
        return loss, r, weight, G

    def corners_of(G: torch.Tensor) -> torch.Tensor:
        q = corners_h @ G.transpose(-1, -2)
        return q[..., :2] / q[..., 2:].clamp_min(1e-6)

    def motion_of(th: torch.Tensor) -> torch.Tensor:
        return _motion_matrix(cfg.motion, th, corners)

    # Homogeneous frame coordinates of this level's pixel centres, (N, 3).
    points = grids.points.reshape(-1, 2)
    points = torch.cat([points, torch.ones_like(points[:, :1])], -1)
    # frame units -> level pixels: s / 2^level
    frame_to_pixels = grids.to_grid[0] * w / 2.0

    with torch.no_grad():
        th = theta.detach().clone()
        lam = torch.full((B,), 1e-3 if lm else 0.0, dtype=dtype, device=device)
        alpha = torch.ones(B, dtype=dtype, device=device)  # Gauss-Newton step length
        active = torch.ones(B, dtype=torch.bool, device=device)
        count = torch.zeros(B, dtype=torch.long, device=device)
        steps = torch.zeros(B, dtype=torch.long, device=device)
        loss, r, weight, G = evaluate(th)
        record = []
        for step in range(cfg.iterations):
            record.append(loss)
            # Jacobian: sampled image gradients x d grid / d theta (forward mode, P passes).
            grid, _ = grids.grid(G)
            g_img = F.grid_sample(grads, grid, mode="bilinear", padding_mode="border", align_corners=False)
            # d G / d theta (3x3 per pair), then the chain rule
            # through u = (G p)_{12} / (G p)_3 at every pixel, analytically.
            dG = _motion_jacobian(motion_of, th)  # (B, 3, 3, P)
            q = torch.einsum("nj,bij->bni", points, G)  # (B, N, 3)
            dq = torch.einsum("nj,bijk->bnik", points, dG)  # (B, N, 3, P)
            q3 = q[..., 2:]
            safe = torch.where(q3.abs() > 1e-6, q3, torch.ones_like(q3))
            du = (dq[..., :2, :] - (q[..., :2] / safe)[..., None] * dq[..., 2:, :]) / safe[..., None]  # (B, N, 2, P)
            du = du * frame_to_pixels
            # (B, 2, C, N) image gradients -> J (B, C, N, P)
            J = torch.einsum("bdcn,bndk->bcnk", g_img.reshape(B, 2, C, h * w), du).reshape(B, C * h * w, P)
            wv = weight.expand(-1, C, -1, -1).reshape(B, C * h * w, 1)
            Jw = J * wv
            A = Jw.transpose(1, 2) @ J  # (B, P, P)
            g = (Jw.transpose(1, 2) @ r.reshape(B, C * h * w, 1)).squeeze(-1)  # (B, P)
            diag = torch.diagonal(A, dim1=-2, dim2=-1)
            damp = lam[:, None] * diag + 1e-9 * (diag.mean(-1, keepdim=True) + 1e-12)
            delta = -torch.linalg.solve(A + torch.diag_embed(damp), g.unsqueeze(-1)).squeeze(-1)
            delta = torch.where(torch.isfinite(delta), delta, torch.zeros_like(delta))
            delta = delta * active[:, None].to(dtype)
            if not lm:
                delta = delta * alpha[:, None]
            cand = th + delta
            new_loss, new_r, new_weight, new_G = evaluate(cand)
            accept = active & torch.isfinite(new_loss) & (new_loss < loss)
            step_px = (corners_of(new_G) - corners_of(G)).norm(dim=-1).amax(-1) * pixels
            change = (loss - new_loss).abs() / loss.abs().clamp_min(tiny)
            small = (step_px < cfg.step_tolerance) | (accept & (change < cfg.tolerance))
            a1 = accept[:, None]
            th = torch.where(a1, cand, th)
            loss = torch.where(accept, new_loss, loss)
            r = torch.where(accept[:, None, None, None], new_r, r)
            weight = torch.where(accept[:, None, None, None], new_weight, weight)
            G = torch.where(accept[:, None, None], new_G, G)
            if lm:
                lam = torch.where(accept, (lam * 0.1).clamp_min(1e-7), (lam * 10.0).clamp_max(1e7))
            else:
                alpha = torch.where(accept, (alpha * 2.0).clamp_max(1.0), alpha * 0.5)
            count = torch.where(small & active, count + 1, torch.zeros_like(count))
            steps = steps + active.long()
            active = active & (count < patience)
            if callback is not None:
                callback(level, step, loss)
        theta.copy_(th)
    return torch.stack(record), steps, ~active
