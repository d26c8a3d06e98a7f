"""Robust homography (and affine) estimation: batched LO-RANSAC.

One call solves ``B`` independent problems. Each round draws a batch of minimal samples
for every problem with a ``torch.Generator``, solves all of them at once in closed form,
and scores every hypothesis on every correspondence in one tensor pass (three matrix
products and a few in-place elementwise passes over ``(B, M, N)``, split along ``M`` only
where the buffers would outgrow the caches). The best hypothesis
of a round, when it beats the problem's best so far, is locally optimised by iterated
weighted DLT on its inliers; the number of rounds adapts to the inlier ratio found. The
winner is refitted on its inliers.

Everything is computed in a Hartley-normalised frame per problem (centroid at the
origin, mean distance ``sqrt(2)``), where float32 scoring is accurate; the threshold is
carried into that frame exactly, because the normalisation is a similarity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcv.core_ops._checks import check_choice, check_floating, check_shape
from gradcv.core_ops.errors import ArgumentValueError, ShapeError
from gradcv.core_ops.geometry.homography import (
    _adjugate,
    _denormalise,
    _dlt_moment_terms,
    _gram_from_moments,
    _hartley,
    _homogeneous,
    _null_vector,
    _scale_homography,
)

MODEL_TYPES = ("homography", "affine")
_SAMPLE_SIZE = {"homography": 4, "affine": 3}

#: Minimal samples drawn in the first round: enough for an all-inlier sample at an
#: inlier ratio of 50% with probability 1 - (1 - 0.5**4)**128 > 0.9997, for a fraction of
#: the cost of a full 2048-sample round; later rounds draw what the adaptive bound still
#: asks for, up to ``batch_size``.
_FIRST_ROUND = 128
#: Fewest samples drawn in a later round (a round has a fixed cost of its own).
_MIN_ROUND = 32
#: Most hypothesis-point pairs scored in one pass, so that the three ``(B, M, N)``
#: float32 buffers of a pass stay in cache (with 2000 points a pass cost 3.6 us per
#: hypothesis up to 512 hypotheses, 12.5 us at 2048). A round is scored in passes of
#: ``min(128, 2**18 // (B N))`` hypotheses, through one workspace allocated per call:
#: buffers allocated per pass were handed back to the kernel by glibc and faulted in
#: afresh each time (7000 page faults and 40% of the time of a 2000-point problem with
#: 80% outliers).
_PASS_PAIRS = 2**18
#: Floor of the product of a triple's signed areas in both images (normalised units, where
#: areas are O(1)) under which the triple counts as collinear.
_COLLINEAR = 1e-10
#: Threshold multipliers of the local optimisation's first refits: the first takes the
#: inliers at twice the threshold, so that a minimal model whose error grows across the
#: image still reaches the whole inlier set; then the threshold shrinks to its nominal
#: value (the iterative least squares of Lebeda, Matas and Chum, BMVC 2012).
_LO_MULTIPLIERS = (2.0, 1.5)


# --------------------------------------------------------------------------------------
# Minimal solvers
# --------------------------------------------------------------------------------------


def _unit(h: torch.Tensor) -> torch.Tensor:
    return h / h.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)


def _cross2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """z-component of the cross product of ``(..., 2)`` vectors."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _minimal_homography(sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Homographies through four correspondences ``(..., 4 points, 2 images, 2)``, in closed form.

    The unique solution of the four-point DLT, without a factorisation: ``A`` maps the
    projective basis ``e0, e1, e2, (1, 1, 1)`` to the four points, with
    ``A = [D123 p0, -D023 p1, D013 p2]`` where ``Dijk`` are the signed areas of the
    triples (Cramer's rule), and ``H = A2 adj(A1)``. The same areas decide validity: a
    sample is kept when no triple is collinear in either image and every triple keeps
    (or every triple flips) its orientation, which any homography that does not send a
    sample point through the line at infinity must do.

    Returns:
        ``vec(H)`` ``(...,  9)`` at unit norm, and the validity mask ``(...)``.
    """
    d = sample[..., 1:, :, :] - sample[..., :1, :, :]  # p1 - p0, p2 - p0, p3 - p0
    # d_i x d_{i+1}: [D012, D023, -D013]; their sum is D123.
    crosses = _cross2(d, d.roll(-1, dims=-3))  # (..., 3, 2 images)
    areas = torch.cat([crosses, crosses.sum(-2, keepdim=True)], dim=-2)
    products = areas[..., 0] * areas[..., 1]
    valid = (products.amin(-1) > _COLLINEAR) | (products.amax(-1) < -_COLLINEAR)
    scales = torch.stack([areas[..., 3, :], -crosses[..., 1, :], -crosses[..., 2, :]], dim=-2)
    columns = _homogeneous(sample[..., :3, :, :]) * scales[..., None]  # (..., 3 columns, 2 images, 3)
    h = (columns[..., 1, :].mT @ _adjugate(columns[..., 0, :].mT)).flatten(-2)
    return _unit(h), valid


def _minimal_affine(sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine maps through three correspondences ``(..., 3 points, 2 images, 2)``:
    ``H = A2 adj(A1)`` with ``A = [p0, p1, p2]`` homogeneous (bottom row ``[0, 0, det A1]``);
    valid where neither triple is collinear. Returns unit-norm ``vec(H)`` and the mask."""
    area = _cross2(sample[..., 1, :, :] - sample[..., 0, :, :], sample[..., 2, :, :] - sample[..., 0, :, :])
    valid = (area.square() > _COLLINEAR).all(-1)
    columns = _homogeneous(sample)
    h = (columns[..., 1, :].mT @ _adjugate(columns[..., 0, :].mT)).flatten(-2)
    return _unit(h), valid


# --------------------------------------------------------------------------------------
# Scoring and refitting, with what they reuse precomputed once per call
# --------------------------------------------------------------------------------------


def _transfer_basis(x1: torch.Tensor, x2: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-correspondence monomials ``(B, 3, 9, N)`` such that ``vec(H) @ basis[:, k]`` is
    ``P_x - u P_w``, ``P_y - v P_w`` and ``scale P_w`` for ``k = 0, 1, 2``, with
    ``P = H [x, y, 1]`` and ``x2 = (u, v)``.

    With it the residual numerators and (scaled) denominators of every hypothesis on
    every point come out of three batched matrix products; with ``scale`` the threshold,
    ``num / den`` is the squared error over the squared threshold. Three ``(M, 9) @ (9, N)``
    products with contiguous outputs are much faster on CPU than one ``(M, 9) @ (9, 3N)``
    (35 us against 240 us for 128 hypotheses and 2000 points) and keep the elementwise
    passes on contiguous memory.
    """
    b, n, _ = x1.shape
    p = _homogeneous(x1).mT  # (B, 3, N)
    basis = x1.new_zeros(b, 3, 9, n)
    basis[:, 0, 0:3] = p
    basis[:, 0, 6:9] = -p * x2[:, None, :, 0]
    basis[:, 1, 3:6] = p
    basis[:, 1, 6:9] = -p * x2[:, None, :, 1]
    basis[:, 2, 6:9] = p * scale[:, None, None]
    return basis


def _relative_errors(h: torch.Tensor, basis: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``e^2 / thr^2`` ``(B, M, N)`` of hypotheses ``(B, M, 9)`` on every correspondence
    (``inf`` for a point mapped to infinity; NaN only for a zero hypothesis), computed in
    ``out[0]`` when a ``(3, B, M, N)`` workspace is given."""
    if out is None:
        out = h.new_empty(3, *h.shape[:-1], basis.shape[-1])
    a, b, c = (torch.bmm(h, basis[:, k], out=out[k]) for k in range(3))
    return a.square_().addcmul_(b, b).div_(c.square_())


def _msac(relative: torch.Tensor, weights: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """MSAC scores ``sum_i w_i max(0, 1 - e_i^2 / thr^2)`` ``(B, M)`` from relative errors
    ``(B, M, N)`` (clamped in place), as ``sum_i w_i - sum_i w_i min(e_i^2 / thr^2, 1)``:
    one clamp and one product. A NaN score (zero hypothesis) becomes -1, below any other."""
    score = total[:, None] - (relative.clamp_(max=1.0) @ weights[..., None])[..., 0]
    return torch.nan_to_num(score, nan=-1.0)


class _Problems:
    """The ``B`` problems of a call, normalised, with what scoring and refitting reuse."""

    def __init__(self, p1: torch.Tensor, p2: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, inl_th: float):
        x, scale, centroid = _hartley(torch.stack([p1, p2]), valid.to(p1.dtype))
        self.x1, self.x2 = x[0], x[1]
        self.scale1, self.scale2 = scale[0], scale[1]
        self.centroid1, self.centroid2 = centroid[0], centroid[1]
        self.w = w
        self.total = w.sum(-1)
        # The threshold in the normalised frame: the normalisation is a similarity.
        self.basis = _transfer_basis(self.x1, self.x2, inl_th * self.scale2)
        self.outer, self.terms = _dlt_moment_terms(self.x1, self.x2)
        self.p = _homogeneous(self.x1)

    def relative_errors(self, h: torch.Tensor) -> torch.Tensor:
        """``e^2 / thr^2`` ``(B, N)`` of one model per problem ``(B, 9)``, NaN-free."""
        return torch.nan_to_num(_relative_errors(h[:, None], self.basis)[:, 0], nan=math.inf)

    def score(self, relative: torch.Tensor) -> torch.Tensor:
        return _msac(relative[:, None].clone(), self.w, self.total)[:, 0]

    def refit(self, model_type: str, weights: torch.Tensor) -> torch.Tensor:
        """Weighted least-squares model ``(B, 9)`` (unit norm).

        Homography: the weighted DLT (algebraic error). Affine: the weighted linear least
        squares of the transfer error itself, which is linear in the affine parameters.
        """
        if model_type == "homography":
            return _null_vector(_gram_from_moments(self.outer, self.terms, weights))
        pw = self.p * weights[..., None]
        # A rank-deficient system (fewer than 3 non-collinear inliers) solves to NaN or
        # inf, zeroed here; such a model scores -1 and is never kept.
        solution = torch.linalg.solve_ex(self.p.mT @ pw, pw.mT @ self.x2)[0].mT  # (B, 2, 3)
        bottom = torch.zeros_like(solution[..., :1, :])
        bottom[..., 0, 2] = 1.0
        h = torch.cat([solution, bottom], dim=-2).flatten(-2)
        return _unit(torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0))


def _required_samples(inliers: torch.Tensor, total: torch.Tensor, sample_size: int, confidence: float) -> torch.Tensor:
    """Samples needed for one all-inlier sample with probability ``confidence``:
    ``log(1 - confidence) / log(1 - ratio^m)`` (float64, possibly ``inf`` or 0)."""
    ratio = (inliers.to(torch.float64) / total.to(torch.float64).clamp(min=1.0)).clamp(0.0, 1.0)
    good = ratio**sample_size
    log_fail = math.log1p(-confidence) if confidence < 1.0 else -math.inf
    needed = log_fail / torch.log1p(-good).clamp(max=-1e-300)
    needed = torch.where(good > 0.0, needed, math.inf)
    return torch.where(good >= 1.0, torch.zeros_like(needed), needed)


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------


def _check_options(
    model_type: object, inl_th: object, batch_size: object, max_iter: object, confidence: object, max_lo_iters: object
) -> None:
    check_choice(model_type, MODEL_TYPES, "model_type")
    if isinstance(inl_th, bool) or not isinstance(inl_th, (int, float)) or not 0 < inl_th < math.inf:
        raise ArgumentValueError("inl_th", "a positive finite float", inl_th, f"inl_th: expected a positive finite float, got {inl_th!r}")
    counts = (("batch_size", batch_size, 1), ("max_iter", max_iter, 1), ("max_lo_iters", max_lo_iters, 0))
    for name, value, least in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ArgumentValueError(name, f"an int >= {least}", value, f"{name}: expected an int >= {least}, got {value!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence <= 1:
        raise ArgumentValueError(
            "confidence", "a float in (0, 1]", confidence, f"confidence: expected a float in (0, 1], got {confidence!r}"
        )


def ransac(
    points1: torch.Tensor,
    points2: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    model_type: str = "homography",
    inl_th: float = 2.0,
    batch_size: int = 2048,
    max_iter: int = 10,
    confidence: float = 0.99,
    max_lo_iters: int = 5,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust homography or affine transform for ``B`` problems at once, by LO-RANSAC.

    Each round draws the same number of minimal samples for every problem, uniformly
    among its valid correspondences; all are solved in closed form, degenerate ones
    (collinear triples, orientation flips) are rejected, and the rest are scored together
    by MSAC (``sum_i w_i max(0, 1 - e_i^2 / inl_th^2)``). When a round's best beats a
    problem's best so far, it is locally optimised: weighted DLT refits on its inliers at
    2 and 1.5 times the threshold, then at the threshold, ``max_lo_iters`` refits at most,
    each kept only if it scores higher (the first that does not ends the optimisation).
    A problem stops once it has drawn ``log(1 - confidence) / log(1 - r^m)`` samples,
    ``r`` being the inlier ratio of its best model and ``m`` the sample size; the call
    stops when all have, or after ``batch_size * max_iter`` samples. The winner is refitted
    on its inliers, and its inliers are recomputed in pixels with the returned matrix.

    Args:
        points1: points in image 1, ``(B, N, 2)``.
        points2: corresponding points in image 2, ``(B, N, 2)``.
        weights: optional non-negative ``(B, N)`` confidences: a correspondence of weight
            0 (as the padding of a ragged batch) is never sampled and never an inlier;
            the others scale their contribution to the score and to the refits.
        model_type: ``'homography'`` (4-point samples) or ``'affine'`` (3-point samples;
            returned with bottom row ``[0, 0, 1]``).
        inl_th: inlier threshold in pixels on the one-way transfer error
            ``||proj(H x1) - x2||``, measured in image 2: the meaning of OpenCV's
            ``ransacReprojThreshold``, so ``inl_th=3.0`` compares with
            ``cv2.findHomography(points1, points2, cv2.RANSAC, 3.0)``.
        batch_size: the most minimal samples in one round; the first round draws
            ``min(batch_size, 128)``, later ones what the stopping bound still asks for
            (at least 32, at most twice the previous round).
        max_iter: sets the sample budget, ``batch_size * max_iter`` (Kornia's number of
            full batches).
        confidence: stopping confidence in ``(0, 1]``; 1 spends the whole budget.
        max_lo_iters: refits per local optimisation; 0 turns it off.
        seed: seeds a private generator on the points' device for reproducible results
            that leave the global generator untouched.
        generator: a generator to draw from, when ``seed`` is not given; with neither,
            the global generator is used.

    Returns:
        ``(models, inliers)``: ``(B, 3, 3)`` models in the points' dtype, scaled to
        ``H[2, 2] = 1`` (as :func:`~core_ops.geometry.homography.find_homography_dlt`), and
        the ``(B, N)`` bool mask of the valid correspondences whose one-way transfer error
        under the returned model is at most ``inl_th``. A problem without a model
        supported by more correspondences than its minimal sample (too few valid points,
        all samples degenerate) gets a zero matrix and an all-False mask.

    Raises:
        TypeError: non-tensor or non-floating input.
        ValueError: bad shapes, fewer correspondences than a minimal sample, bad options.

    Convention:
        Pixel coordinates ``(x, y)``; the model maps points1 to points2,
        ``H @ [x1, y1, 1]^T ~ [x2, y2, 1]^T``. Computed without gradient (refit on the
        returned inliers with ``find_homography_dlt`` to differentiate). All problems
        draw from one generator stream, so a problem's samples depend on its position
        and on the batch size: batched results are equally good, not bit-identical, to
        one-by-one ones. The loop synchronises with the device a few times per round
        (its length depends on the data).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> src = torch.rand(1, 100, 2, generator=g) * 100
        >>> dst = src * 2 + 5
        >>> dst[:, :30] = torch.rand(1, 30, 2, generator=g) * 200  # 30% outliers
        >>> H, inliers = ransac(src, dst, inl_th=1.0, seed=0)
        >>> H.round(decimals=3), int(inliers.sum())
        (tensor([[[2., 0., 5.],
                 [0., 2., 5.],
                 [0., 0., 1.]]]), 70)
    """
    check_shape(points1, ["B", "N", 2], "points1")
    check_shape(points2, ["B", "N", 2], "points2")
    check_floating(points1, "points1")
    check_floating(points2, "points2")
    if points1.shape != points2.shape:
        raise ShapeError(
            "points2", tuple(points1.shape), tuple(points2.shape),
            f"points2: expected the shape of points1 {tuple(points1.shape)}, got {tuple(points2.shape)}",
        )
    _check_options(model_type, inl_th, batch_size, max_iter, confidence, max_lo_iters)
    m = _SAMPLE_SIZE[model_type]
    if points1.shape[1] < m:
        raise ShapeError(
            "points1", ("B", f"N >= {m}", 2), tuple(points1.shape),
            f"points1: expected at least {m} correspondences for {model_type!r}, got {points1.shape[1]}",
        )
    if weights is not None:
        check_shape(weights, ["B", "N"], "weights")
        check_floating(weights, "weights")
        if weights.shape != points1.shape[:2]:
            raise ShapeError("weights", tuple(points1.shape[:2]), tuple(weights.shape))
    if seed is not None:
        generator = torch.Generator(device=points1.device).manual_seed(seed)
    with torch.no_grad():
        return _ransac(
            points1,
            points2,
            weights,
            model_type,
            float(inl_th),
            batch_size,
            max_iter,
            float(confidence),
            max_lo_iters,
            generator,
        )


def _ransac(
    points1: torch.Tensor,
    points2: torch.Tensor,
    weights: torch.Tensor | None,
    model_type: str,
    inl_th: float,
    batch_size: int,
    max_iter: int,
    confidence: float,
    max_lo_iters: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(points1.dtype, points2.dtype)
    device = points1.device
    b, n, _ = points1.shape
    if b == 0:
        return points1.new_zeros(0, 3, 3, dtype=dtype), torch.zeros(0, n, dtype=torch.bool, device=device)
    m = _SAMPLE_SIZE[model_type]
    # Hypotheses are scored in float32 (in the normalised frame errors are O(1)); fitting,
    # local optimisation and the final classification run in float64.
    work = torch.float64 if dtype == torch.float64 else torch.float32
    f64 = torch.float64

    # A correspondence with a non-finite value or a non-positive weight is zeroed, weighs
    # nothing and is never sampled.
    p1, p2 = points1.to(f64), points2.to(f64)
    w = torch.ones_like(p1[..., 0]) if weights is None else weights.to(f64)
    valid = torch.isfinite(p1).all(-1) & torch.isfinite(p2).all(-1) & torch.isfinite(w) & (w > 0)
    if weights is not None or not bool(valid.all()):
        zero = p1.new_zeros(())
        p1, p2 = torch.where(valid[..., None], p1, zero), torch.where(valid[..., None], p2, zero)
        w = torch.where(valid, w, zero)
    problems = _Problems(p1, p2, w, valid, inl_th)
    n_valid = valid.sum(-1)
    # Valid correspondences first, so that indices drawn in [0, n_valid) hit only them.
    order = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)
    # Both images side by side, so that one gather fetches a sample: (B, N, 2 images, 2).
    pairs = torch.stack([problems.x1, problems.x2], dim=-2).to(work)
    basis = problems.basis.to(work)
    w_work, total_work = w.to(work), problems.total.to(work)
    minimal = _minimal_homography if model_type == "homography" else _minimal_affine
    lo_factors = list(_LO_MULTIPLIERS[: max(max_lo_iters - 1, 0)])
    lo_factors += [1.0] * (max_lo_iters - len(lo_factors))

    best_h = problems.x1.new_zeros(b, 9)
    best_score = problems.x1.new_full((b,), -1.0)
    best_relative = torch.full_like(w, math.inf)
    # A problem with too few valid correspondences for a supported model needs no samples.
    needed = torch.where(n_valid > m, math.inf, 0.0).to(f64)
    budget = batch_size * max_iter
    drawn, size = 0, min(batch_size, _FIRST_ROUND)
    n_float = n_valid.to(f64)[:, None]
    per_pass = max(1, min(_FIRST_ROUND, _PASS_PAIRS // (b * n)))
    workspace = basis.new_empty(3, b, per_pass, n)
    while True:
        active = drawn < needed  # problems whose stopping bound is not met yet
        rand = torch.rand(b, size * m, generator=generator, device=device, dtype=f64)
        index = order.gather(1, (rand * n_float).long().clamp_(max=n - 1))
        sample = pairs.gather(1, index[..., None, None].expand(-1, -1, 2, 2)).view(b, size, m, 2, 2)
        hypotheses, ok = minimal(sample)
        scores = torch.cat(
            [
                _msac(_relative_errors(h, basis, workspace[:, :, : h.shape[1]]), w_work, total_work)
                for h in hypotheses.split(per_pass, dim=1)
            ],
            dim=1,
        )
        scores = torch.where(ok, scores, -1.0)
        round_score, arg = scores.max(-1)
        improved = active & (round_score.to(f64) > best_score)
        drawn += size
        if bool(improved.any()):
            candidate = hypotheses.gather(1, arg[:, None, None].expand(-1, 1, 9))[:, 0].to(f64)
            relative = problems.relative_errors(candidate)
            score = problems.score(relative)
            for factor in lo_factors:
                refit = problems.refit(model_type, w * (relative <= factor * factor))
                refit_relative = problems.relative_errors(refit)
                refit_score = problems.score(refit_relative)
                better = improved & (refit_score > score)
                if not bool(better.any()):
                    break
                candidate = torch.where(better[:, None], refit, candidate)
                relative = torch.where(better[:, None], refit_relative, relative)
                score = torch.where(better, refit_score, score)
            improved = improved & (score > best_score)
            best_h = torch.where(improved[:, None], candidate, best_h)
            best_relative = torch.where(improved[:, None], relative, best_relative)
            best_score = torch.where(improved, score, best_score)
            inliers = ((best_relative <= 1.0) & valid).sum(-1)
            bound = _required_samples(inliers, n_valid, m, confidence)
            needed = torch.where(improved, torch.minimum(bound, needed), needed)
        most = needed.max().item()
        if drawn >= min(most, budget):
            break
        # What the bound still asks for, but at most twice the last round: a bound taken from
        # a contaminated early model overestimates, and the next round may well correct it.
        size = min(batch_size, budget - drawn, 2 * size, max(_MIN_ROUND, math.ceil(min(most, budget) - drawn)))

    # Final refit on the inliers of the winner, kept unless it scores lower (a tie goes to
    # the refit, which is fitted to more than a minimal sample).
    refined = problems.refit(model_type, w * (best_relative <= 1.0))
    keep = problems.score(problems.relative_errors(refined)) >= best_score
    best_h = torch.where(keep[:, None], refined, best_h)

    H = _scale_homography(
        _denormalise(best_h, problems.scale1, problems.centroid1, problems.scale2, problems.centroid2)
    )
    if model_type == "affine":
        H = torch.cat([H[..., :2, :], H.new_tensor([0.0, 0.0, 1.0]).expand(b, 1, 3)], dim=-2)
    H = H.to(dtype)
    # Classify with the matrix actually returned, in float64 pixels: error^2 <= inl_th^2.
    projected = _homogeneous(p1) @ H.to(f64).mT
    residual = projected[..., :2] - p2 * projected[..., 2:]
    inliers = valid & (
        residual[..., 0].square() + residual[..., 1].square() <= inl_th**2 * projected[..., 2].square()
    )
    found = torch.isfinite(H).flatten(1).all(-1) & (best_score >= 0) & (inliers.sum(-1) > m)
    return torch.where(found[:, None, None], H, torch.zeros_like(H)), inliers & found[:, None]


class RANSAC(nn.Module):
    """Module form of :func:`ransac`, with Kornia's constructor and ``forward``.

    ``forward(kp1, kp2, weights=None)`` takes ``(N, 2)`` correspondences (and ``(N,)``
    weights) and returns a ``(3, 3)`` model and an ``(N,)`` bool mask, as Kornia's
    ``RANSAC``; ``(B, N, 2)`` inputs give ``(B, 3, 3)`` and ``(B, N)``. A given ``seed``
    reseeds a private generator on every call, so equal calls give equal results.

    Kornia's options beyond the LO-RANSAC core (``score_type``, PROSAC sampling,
    DEGENSAC, ``compile`` and the local-optimisation knobs) are not taken, and
    ``batch_size`` is a number of hypotheses (2048) where Kornia's default is ``'auto'``.

    Example:
        >>> src = torch.rand(200, 2) * 640
        >>> H, inliers = RANSAC(inl_th=3.0, seed=1)(src, src + 10)
        >>> H.shape, inliers.shape, bool(inliers.all())
        (torch.Size([3, 3]), torch.Size([200]), True)
    """

    def __init__(
        self,
        model_type: str = "homography",
        inl_th: float = 2.0,
        batch_size: int = 2048,
        max_iter: int = 10,
        confidence: float = 0.99,
        max_lo_iters: int = 5,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_options(model_type, inl_th, batch_size, max_iter, confidence, max_lo_iters)
        self.model_type, self.inl_th, self.batch_size, self.max_iter = model_type, inl_th, batch_size, max_iter
        self.confidence, self.max_lo_iters, self.seed = confidence, max_lo_iters, seed

    def forward(
        self, kp1: torch.Tensor, kp2: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        unbatched = isinstance(kp1, torch.Tensor) and kp1.ndim == 2
        if unbatched:
            check_shape(kp1, ["N", 2], "kp1")
            check_shape(kp2, ["N", 2], "kp2")
            kp1, kp2 = kp1[None], kp2[None]
            if weights is not None:
                check_shape(weights, ["N"], "weights")
                weights = weights[None]
        model, inliers = ransac(
            kp1,
            kp2,
            weights,
            model_type=self.model_type,
            inl_th=self.inl_th,
            batch_size=self.batch_size,
            max_iter=self.max_iter,
            confidence=self.confidence,
            max_lo_iters=self.max_lo_iters,
            seed=self.seed,
        )
        return (model[0], inliers[0]) if unbatched else (model, inliers)
