"""Second-order level solver (``method='levenberg_marquardt'`` or ``'gauss_newton'``) for
:class:`registration.solver.HomographyRegistration`.

Same problem, pyramid, frame and sampling as the first-order solver (it reuses
:class:`registration.solver._Level`), solved by Gauss–Newton steps on the photometric
residuals ``r = src(G p) - dst(p)`` over the pixels ``p`` whose source lies inside the
image. Three choices make it fast and wide-basined:

- *Compositional update on the motion's group*: ``G <- G expm(sum_k delta_k E_k)`` with
  ``E_k`` the generators of the motion model (the 8 free entries of a homography; the 6
  of an affinity; scale, rotation and the translations...), so every step stays in the
  model and the Jacobian of the warp at ``delta = 0`` is a fixed per-pixel table,
  computed once per level.
- *ESM* (efficient second-order minimisation, Benhimane and Malis 2004): the image
  gradient in the Jacobian is the mean of the warped source's and the destination's,
  which approximates the second-order Taylor term for free and converges from much
  farther than forward-additive Gauss–Newton (measured on DeTone pairs at rho = 32).
- *One warp per iteration*: the normal equations ``(JᵀWJ + λ diag JᵀWJ) δ = -JᵀWr``
  are solved batched in float64; a pair's proposal is evaluated by the next iteration's
  warp, kept when it lowers that pair's loss and otherwise undone (its stored normal
  equations re-solved with more damping), all by masks. Every 4 iterations one look at
  the host drops the pairs that have stopped from the working set (and ends the level
  once none moves), so a batch costs what its moving pairs cost.

On the levels above the finest the residual is ``coarse_loss`` (least squares by
default); on the finest it is ``loss``: least squares, made robust by iteratively reweighting for
``loss='l1'`` (weights ``1 / max(|r|, eps)``) and ``'charbonnier'`` (``1 / sqrt(r² +
eps²)``), with ``eps = charbonnier_eps``; ``'l2'`` is plain least squares. ``'ssim'`` and
``'ncc'`` are not sums of squares and are refused by :meth:`RegistrationConfig.validate`.
``symmetric`` and the optimiser settings (``optimizer``, ``lr``, ``schedule``) belong to
the first-order solver and are ignored here. ``levenberg_marquardt`` damps by λ (tenfold
down on an accepted step, tenfold up, to at least 1e-2, on a rejected one); ``gauss_newton`` keeps λ = 0
and halves its step on a rejection instead (doubling it back, up to the full step, on
an acceptance).

The loss history records, per iteration, the per-pair loss of the parameters kept so
far (it never rises). A pair stops once a proposed step, kept or not, moves the image
corners less than ``step_tolerance`` pixels of the level being solved (or a kept one
changes its loss by less than ``tolerance``, relatively), or once its damping or step
length saturates.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from gradcv.registration.config import RegistrationConfig

_LAMBDA_START, _LAMBDA_MIN, _LAMBDA_MAX = 1e-4, 1e-8, 1e6
# After a rejected step the damping is at least this: below it the damped step is the
# rejected one again (measured: the 10x ramp from 1e-8 spent 5 iterations before the step
# changed; jumping here took 10 % off a DeTone pair, same results on 200 of them).
_LAMBDA_REJECTED = 1e-2
_ALPHA_MIN = 2.0**-12
_COMPACT_EVERY = 4
# On CPU the per-pixel work runs on blocks of pairs of at most this many pixels, so that
# its dozen temporaries stay in cache and out of fresh, page-faulting allocations: at
# 24 pairs of 256 x 256 one block of all of them made each elementwise pass 3 ms.
_BLOCK_ELEMENTS = 1 << 17


def _generators(motion: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(P, 3, 3)`` generators of the motion model at the identity, in the order of the
    model's parameters (see :func:`registration.solver._motion_matrix`)."""

    def e(i: int, j: int) -> torch.Tensor:
        m = torch.zeros(3, 3, dtype=torch.float64)
        m[i, j] = 1.0
        return m

    translation = [e(0, 2), e(1, 2)]
    rotation = e(1, 0) - e(0, 1)
    if motion == "translation":
        gens = translation
    elif motion == "euclidean":
        gens = [rotation, *translation]
    elif motion == "similarity":
        gens = [e(0, 0) + e(1, 1), rotation, *translation]
    elif motion == "affine":
        gens = [e(0, 0), e(0, 1), e(0, 2), e(1, 0), e(1, 1), e(1, 2)]
    else:  # homography: every entry but the scale
        gens = [e(i, j) for i in range(3) for j in range(3) if (i, j) != (2, 2)]
    return torch.stack(gens).to(dtype=dtype, device=device)


def _gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``image`` in level pixels, replicated borders."""
    pad = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2])
    gy = 0.5 * (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1])
    return gx, gy


def _robust_weight(config: RegistrationConfig, r: torch.Tensor) -> torch.Tensor | None:
    """IRLS weights ``psi(r) / r`` of the configured penalty (``None`` for least squares)."""
    eps = config.charbonnier_eps
    if config.loss == "l1":
        return 1.0 / r.abs().clamp_min(eps)
    if config.loss == "charbonnier":
        return torch.rsqrt(r.square() + eps * eps)
    return None


def solve_level_second_order(
    config: RegistrationConfig,
    theta: torch.Tensor,
    grids,
    s_img: torch.Tensor,
    d_img: torch.Tensor,
    corners: torch.Tensor,
    level: int,
    callback,
    masks: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run at most ``config.iterations`` iterations on one level, updating ``theta`` in
    place (it is left at the best parameters found). ``masks``: this level's
    ``(src_mask, dst_mask)`` weights, or ``None``.

    Returns ``(losses (iterations, B), steps (B,), stopped (B,))`` as the first-order
    level solver does."""
    from gradcv.registration.solver import _masked, _motion_matrix, _motion_parameters, _pair_loss  # no cycle at load

    # Levels above the finest are blurred and resampled, so their residuals are not
    # outliers but mismatch, and least squares converges there quadratically where the
    # reweighted penalties crawl linearly; the finest level uses the configured loss.
    final = tuple(grids.size) == tuple(grids.full)
    cfg = config if final or config.coarse_loss == config.loss else dataclasses.replace(config, loss=config.coarse_loss)
    B, P = theta.shape
    dtype, device = theta.dtype, theta.device
    C = s_img.shape[1]
    h, w = grids.size
    lm = cfg.method == "levenberg_marquardt"
    tiny = torch.finfo(dtype).tiny
    # frame units -> this level's pixels. Steps are measured in the level's own pixels:
    # a coarse level only has to settle to a hundredth of *its* pixel, the finer ones
    # refine from there (measured: a third fewer iterations, the same final accuracy).
    frame_to_level = float(grids.to_grid[0]) * w / 2.0
    corners_h = torch.cat([corners, torch.ones_like(corners[:, :1])], -1)

    # d(warped point)/d delta at delta = 0, for a generator E and a frame point p:
    # (E p)_xy - p (E p)_z, a quadratic in p. With the monomials m(p) = (1, x, y, x², xy,
    # y²) it is (Cx m(p), Cy m(p)), so J = gx Cx m + gy Cy m and the normal equations
    # reduce to image moments: A = sum_ab Ca (sum_n w ga gb m mᵀ) Cbᵀ, b = sum_a Ca (sum_n
    # w r ga m), moments of x^a y^b up to a + b = 4: nothing of size (B, N, P) is ever
    # made, so a large batch costs what its pixels cost.
    gens = _generators(cfg.motion, torch.float64, device)  # (P, 3, 3)
    Cx = torch.zeros(P, 6, dtype=torch.float64, device=device)
    Cy = torch.zeros_like(Cx)
    # (E p)_x = E00 x + E01 y + E02; minus x (E p)_z = x (E20 x + E21 y + E22).
    Cx[:, 0], Cx[:, 1], Cx[:, 2] = gens[:, 0, 2], gens[:, 0, 0] - gens[:, 2, 2], gens[:, 0, 1]
    Cx[:, 3], Cx[:, 4] = -gens[:, 2, 0], -gens[:, 2, 1]
    Cy[:, 0], Cy[:, 1], Cy[:, 2] = gens[:, 1, 2], gens[:, 1, 0], gens[:, 1, 1] - gens[:, 2, 2]
    Cy[:, 4], Cy[:, 5] = -gens[:, 2, 0], -gens[:, 2, 1]
    Cx, Cy = Cx * frame_to_level, Cy * frame_to_level
    gens_flat = gens.reshape(P, 9)
    C2 = torch.cat([Cx, Cy], 1)  # (P, 12): J = [gx m, gy m] C2ᵀ
    # The frame is separable (x depends on the column only, y on the row), so every moment
    # sum_n S(n) x^a y^b is Yᵀ S X with the power tables X (w, 5) and Y (h, 5): two small
    # products that read S once, whatever the image size.
    powers = torch.arange(5, dtype=dtype, device=device)
    X = grids.points[0, 0, :, 0, None] ** powers  # (w, 5)
    Y = grids.points[0, :, 0, 1, None] ** powers  # (h, 5)
    # One gather takes the (5, n, 5, 5) moments to the (12, 12) block matrix [[xx, xy], [xy,
    # yy]] and the 12-vector [x r, y r] of every pair; m = (1, x, y, x², xy, y²) has exponents:
    ex = torch.tensor([0, 1, 0, 2, 1, 0])
    ey = torch.tensor([0, 0, 1, 0, 1, 2])
    i, j = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    block = (i >= 6).long() + (j >= 6).long()  # xx: 0, xy: 1, yy: 2
    a_ij, b_ij = ex[i % 6] + ex[j % 6], ey[i % 6] + ey[j % 6]
    k = torch.arange(12)
    gather = torch.cat([(block * 25 + b_ij * 5 + a_ij).flatten(), (3 + k // 6) * 25 + ey[k % 6] * 5 + ex[k % 6]])
    gather = gather.to(device)

    # The working set: the pairs still moving. Every few iterations the stopped ones are
    # dropped (one look at the host; free on CPU, one sync every ``_COMPACT_EVERY``
    # iterations on a GPU), so a batch costs what its slowest pairs' pixels cost, not
    # ``B`` times the slowest pair's iterations.
    work = {
        "src": s_img,
        "dst": d_img,
        "centres": grids.centres(s_img),
        "grad": torch.cat(_gradients(d_img), 1),
    }
    if masks is not None:
        work["src_mask"], work["dst_mask"] = masks

    def corners_of(G: torch.Tensor) -> torch.Tensor:
        q = corners_h @ G.transpose(-1, -2)
        return q[..., :2] / q[..., 2:].clamp_min(1e-6)

    def linearise(G: torch.Tensor):
        """Loss, and the normal equations (A (b, P, P), b (b, P)) of the working set at ``G``,
        on CPU block by block of pairs (see ``_BLOCK_ELEMENTS``)."""
        n = G.shape[0]
        block = max(1, _BLOCK_ELEMENTS // (C * h * w)) if G.device.type == "cpu" else n
        if n <= block:
            return linearise_block(G, work)
        parts = [
            linearise_block(G[i : i + block], {k: v[i : i + block] for k, v in work.items()})
            for i in range(0, n, block)
        ]
        return tuple(torch.cat(x) for x in zip(*parts))

    def linearise_block(G: torch.Tensor, work: dict[str, torch.Tensor]):
        n = G.shape[0]
        warped, inside = grids.sample(work["src"], G, work["centres"])
        if "src_mask" in work:
            inside = _masked(grids, inside, G, (work["src_mask"], work["dst_mask"]))
        r = warped - work["dst"]
        loss = _pair_loss(cfg, warped, work["dst"], inside)  # the first-order solver's, cancellation-free
        wgx, wgy = _gradients(warped)
        tgx, tgy = work["grad"].split(C, 1)
        gx, gy = 0.5 * (wgx + tgx), 0.5 * (wgy + tgy)  # ESM: the mean of both gradients
        robust = _robust_weight(cfg, r)
        weights = inside if robust is None else inside * robust
        wgx, wgy = weights * gx, weights * gy
        sums = torch.empty(5, n, h, w, dtype=dtype, device=device)
        for k, (u, v) in enumerate(((wgx, gx), (wgx, gy), (wgy, gy), (wgx, r), (wgy, r))):
            if C == 1:
                torch.mul(u.squeeze(1), v.squeeze(1), out=sums[k])
            else:
                torch.sum(u * v, 1, out=sums[k])
        moments = Y.T @ (sums.view(5 * n, h, w) @ X)  # (5n, 5, 5): [row power, column power]
        moments = moments.view(5, n, 25).transpose(0, 1).reshape(n, 125)
        picked = moments[:, gather].to(torch.float64)
        A = C2 @ picked[:, :144].view(n, 12, 12) @ C2.T
        b = picked[:, 144:] @ C2.T
        return loss, A, b

    def propose(G: torch.Tensor, A: torch.Tensor, b: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor):
        diag = torch.diagonal(A, dim1=-2, dim2=-1)
        damp = lam[:, None] * diag + 1e-9 * diag.mean(-1, keepdim=True) + 1e-30
        delta = -torch.linalg.solve(A + torch.diag_embed(damp), b.unsqueeze(-1)).squeeze(-1)
        delta = torch.where(torch.isfinite(delta), delta, torch.zeros_like(delta)) * alpha[:, None]
        # exp of the step's generator by Horner's Taylor series to the 6th power: exact to
        # 2e-4 relative for the largest coarse steps, to rounding for the final ones, and a
        # sixth of matrix_exp's cost (a proposal is checked by its loss anyway).
        D = (delta @ gens_flat).view(-1, 3, 3)
        eye = torch.eye(3, dtype=torch.float64, device=device).expand_as(D)
        step = eye
        for k in range(6, 0, -1):
            step = torch.baddbmm(eye, D, step, alpha=1.0 / k)
        G_new = G.to(torch.float64) @ step
        return (G_new / G_new[:, 2:, 2:]).to(dtype)

    with torch.no_grad():
        G_all = _motion_matrix(cfg.motion, theta.detach(), corners)
        G = G_all
        loss, A, b = linearise(G)
        loss_all = loss.clone()
        lam = torch.full((B,), _LAMBDA_START if lm else 0.0, dtype=torch.float64, device=device)
        alpha = torch.ones(B, dtype=torch.float64, device=device)
        active = torch.ones(B, dtype=torch.bool, device=device)
        active_all = active.clone()
        steps = torch.zeros(B, dtype=torch.long, device=device)
        index = torch.arange(B, device=device)
        record = []
        for step in range(cfg.iterations):
            record.append(loss_all.clone())
            cand = propose(G, A, b, lam, alpha)
            c_loss, c_A, c_b = linearise(cand)
            accept = active & torch.isfinite(c_loss) & (c_loss < loss)
            moved = (corners_of(cand) - corners_of(G)).norm(dim=-1).amax(-1) * frame_to_level
            change = (loss - c_loss) / loss.clamp_min(tiny)
            # A proposal this small, kept or not, means the pair sits at its optimum (a
            # rejected one at the optimum would otherwise climb the damping for a dozen steps).
            settled = active & ((moved < cfg.step_tolerance) | (accept & (change < cfg.tolerance)))
            if lm:
                lam = torch.where(accept, lam * 0.1, (lam * 10.0).clamp_min(_LAMBDA_REJECTED)).clamp(_LAMBDA_MIN, _LAMBDA_MAX)
                stuck = ~accept & (lam >= _LAMBDA_MAX)
            else:
                alpha = torch.where(accept, alpha * 2.0, alpha * 0.5).clamp(max=1.0)
                stuck = ~accept & (alpha < _ALPHA_MIN)
            a = accept[:, None]
            G = torch.where(a[..., None], cand, G)
            loss = torch.where(accept, c_loss, loss)
            A = torch.where(a[..., None], c_A, A)
            b = torch.where(a, c_b, b)
            steps[index] += active.long()
            active = active & ~settled & ~stuck
            loss_all[index] = loss
            if callback is not None:
                callback(level, step, loss_all.clone())
            if step % _COMPACT_EVERY == _COMPACT_EVERY - 1 or step == cfg.iterations - 1:
                G_all[index], active_all[index] = G, active
                if not bool(active.all()):
                    if not bool(active.any()):
                        break
                    keep = active.nonzero().squeeze(1)
                    index = index[keep]
                    G, loss, A, b, lam, alpha, active = (x[keep] for x in (G, loss, A, b, lam, alpha, active))
                    work = {k: v[keep] for k, v in work.items()}
        record += [loss_all.clone()] * (cfg.iterations - len(record))
        theta.copy_(_motion_parameters(cfg.motion, G_all, corners).to(dtype))
    return torch.stack(record), steps, ~active_all
