"""Homography estimation from point correspondences: the (weighted, iterated) normalised
DLT, and the one-way and symmetric transfer errors that score a homography.

Everything here is batched over ``B`` independent problems, differentiable, and computed
in float64 whatever the input's floating dtype (the result comes back in the input's
dtype): the DLT's normal matrix squares the condition number of the design matrix, and
float32 would lose half of the digits that Hartley normalisation buys.
"""

from __future__ import annotations

import math

import torch

from gradcv.core_ops._checks import check_choice, check_floating, check_shape
from gradcv.core_ops.errors import ArgumentValueError, DTypeError, ShapeError

_SOLVERS = ("svd", "lu")

#: Below this ``|H[2, 2]| / ||H||_F`` a homography is scaled to unit Frobenius norm
#: rather than to ``H[2, 2] = 1`` (its bottom-right entry is zero up to rounding).
_H22_TOL = 1e-8


# --------------------------------------------------------------------------------------
# Private helpers, shared with ``ransac.py``
# --------------------------------------------------------------------------------------


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with a zero (not infinite) gradient at ``x = 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _squared_norm2(v: torch.Tensor) -> torch.Tensor:
    """``v_x^2 + v_y^2`` of ``(..., 2)`` vectors. Written out because a sum over a last
    dimension of size 2 is a slow reduction on CPU (30 us against 7 us for 2000 points)."""
    return v[..., 0].square() + v[..., 1].square()


def _homogeneous(points: torch.Tensor) -> torch.Tensor:
    """``(..., N, 2)`` -> ``(..., N, 3)`` with a unit last coordinate."""
    return torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)


def _transform_points(H: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply homographies ``(B, 3, 3)`` to points ``(B, N, 2)``; batch dimensions broadcast.

    A point mapped to infinity (``w = 0``) comes out as ``inf`` (never NaN), with a
    finite gradient.
    """
    projected = _homogeneous(points) @ H.mT
    w = projected[..., 2:]
    w_safe = torch.where(w == 0, torch.ones_like(w), w)
    out = projected[..., :2] / w_safe
    return torch.where(w == 0, torch.full_like(out, math.inf), out)


def _adjugate(H: torch.Tensor) -> torch.Tensor:
    """Adjugate of ``(..., 3, 3)`` matrices: ``det(H) H^-1``, finite and differentiable everywhere.

    As a projective map the adjugate of an invertible homography *is* its inverse (the
    scale does not matter), with no division that could blow up near singularity.
    """
    columns = H.mT  # row i of the adjugate is c_{i+1} x c_{i+2} for the columns c_i of H
    return torch.linalg.cross(columns.roll(-1, dims=-2), columns.roll(-2, dims=-2), dim=-1)


def _check_correspondences(points1: object, points2: object, weights: object | None, min_points: int) -> None:
    """Typed checks of ``(B, N, 2)`` correspondences and optional ``(B, N)`` weights."""
    check_shape(points1, ["B", "N", 2], "points1")
    check_shape(points2, ["B", "N", 2], "points2")
    assert isinstance(points1, torch.Tensor) and isinstance(points2, torch.Tensor)
    check_floating(points1, "points1")
    check_floating(points2, "points2")
    if points1.shape != points2.shape:
        raise ShapeError(
            "points2", tuple(points1.shape), tuple(points2.shape),
            f"points2: expected the shape of points1 {tuple(points1.shape)}, got {tuple(points2.shape)}",
        )
    if points1.shape[1] < min_points:
        raise ShapeError(
            "points1", ("B", f"N >= {min_points}", 2), tuple(points1.shape),
            f"points1: expected at least {min_points} correspondences, got {points1.shape[1]}",
        )
    if weights is not None:
        check_shape(weights, ["B", "N"], "weights")
        assert isinstance(weights, torch.Tensor)
        check_floating(weights, "weights")
        if weights.shape != points1.shape[:2]:
            raise ShapeError("weights", tuple(points1.shape[:2]), tuple(weights.shape))


def _finite_inputs(
    points1: torch.Tensor, points2: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 copies of the inputs in which a correspondence with any non-finite value
    (either point or its weight) has zero coordinates and zero weight."""
    p1, p2 = points1.to(torch.float64), points2.to(torch.float64)
    w = torch.ones_like(p1[..., 0]) if weights is None else weights.to(torch.float64)
    valid = torch.isfinite(p1).all(-1) & torch.isfinite(p2).all(-1) & torch.isfinite(w)
    zero = torch.zeros((), dtype=torch.float64, device=p1.device)
    p1 = torch.where(valid[..., None], p1, zero)
    p2 = torch.where(valid[..., None], p2, zero)
    return p1, p2, torch.where(valid, w, zero)


def _hartley(points: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted Hartley normalisation of ``(B, N, 2)`` points.

    Returns ``(normalised points, scale (B,), centroid (B, 2))``: the weighted centroid
    goes to the origin and the weighted mean distance from it to ``sqrt(2)``, so that
    ``normalised = scale * (points - centroid)``. Points that all coincide (or carry no
    weight) get the scale ``sqrt(2)`` instead of an infinite one.
    """
    total = weights.sum(-1, keepdim=True)
    total = torch.where(total > 0, total, torch.ones_like(total))
    centroid = (weights[..., None] * points).sum(-2) / total
    centred = points - centroid[..., None, :]
    distance = _safe_sqrt(_squared_norm2(centred))
    mean = (weights * distance).sum(-1, keepdim=True) / total
    scale = math.sqrt(2.0) / torch.where(mean > 0, mean, torch.ones_like(mean))
    return centred * scale[..., None], scale[..., 0], centroid


def _dlt_moment_terms(x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-correspondence terms ``(p p^T (B, N, 9), [1, u, v, u^2 + v^2] (B, N, 4))`` of the
    DLT normal matrix, with ``p = (x, y, 1)`` from ``x1`` and ``(u, v)`` from ``x2``."""
    p = _homogeneous(x1)
    outer = (p[..., :, None] * p[..., None, :]).flatten(-2)
    terms = torch.cat([torch.ones_like(x2[..., :1]), x2, _squared_norm2(x2)[..., None]], dim=-1)
    return outer, terms


def _gram_layout() -> tuple[list[int], list[float]]:
    """Where each entry of the 9x9 DLT normal matrix comes from in the flattened moments
    ``(3, 3, 4)`` (index of ``p_i p_j`` times 4 plus the moment), and with which sign."""
    # Blocks (row, column) -> (moment, sign): [[S, 0, -Su], [0, S, -Sv], [-Su, -Sv, Sr]].
    blocks = {(0, 0): (0, 1.0), (1, 1): (0, 1.0), (0, 2): (1, -1.0), (2, 0): (1, -1.0),
              (1, 2): (2, -1.0), (2, 1): (2, -1.0), (2, 2): (3, 1.0)}
    index, sign = [], []
    for row in range(9):
        for col in range(9):
            moment, value = blocks.get((row // 3, col // 3), (0, 0.0))
            index.append((row % 3 * 3 + col % 3) * 4 + moment)
            sign.append(value)
    return index, sign


# Built once on the CPU (a tensor from a list costs 10 us per call); moved per device on use.
_GRAM_INDEX, _GRAM_SIGN = (torch.tensor(v) for v in _gram_layout())


def _gram_from_moments(outer: torch.Tensor, terms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(B, 9, 9)`` normal matrix ``[[S, 0, -Su], [0, S, -Sv], [-Su, -Sv, Sr]]`` from the
    weighted moments ``S = sum w p p^T``, ``Su = sum w u p p^T``, ``Sv``, ``Sr = sum w (u^2 + v^2) p p^T``.

    Each correspondence's DLT rows ``[0, -p, v p]`` and ``[p, 0, -u p]`` add up to that
    block pattern, so one ``(9, N) @ (N, 4)`` product replaces the ``(9, 2N) @ (2N, 9)``
    one over the full design matrix, and one gather lays the moments out.
    """
    moments = (outer.mT @ (terms * weights[..., None])).flatten(-2)  # (B, 36)
    index = _GRAM_INDEX.to(moments.device)
    sign = _GRAM_SIGN.to(moments.device, moments.dtype)
    return (moments[..., index] * sign).unflatten(-1, (9, 9))


def _dlt_gram(x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted normal matrix ``A^T W A`` ``(B, 9, 9)`` of the DLT system of ``(B, N, 2)`` points.

    Each correspondence ``(x, y) -> (u, v)`` gives the rows ``[0, -p, v p]`` and
    ``[p, 0, -u p]`` with ``p = (x, y, 1)``, whose dot products with the row-major
    ``vec(H)`` vanish exactly when ``H p ~ (u, v, 1)``; both rows carry its weight.
    """
    return _gram_from_moments(*_dlt_moment_terms(x1, x2), weights)


def _null_vector(gram: torch.Tensor, solver: str = "svd") -> torch.Tensor:
    """``vec(H)`` ``(B, 9)`` minimising ``h^T G h`` for DLT normal matrices ``G`` ``(B, 9, 9)``.

    ``'svd'``: the unit vector of least ``h^T G h``, i.e. the right singular vector of
    the weighted design matrix for its smallest singular value. It is computed as the
    eigenvector of the symmetric 9x9 ``G`` for its smallest eigenvalue (``eigh``), which
    is that singular vector, at a fraction of the cost of an SVD and with a gradient that
    involves only the gaps between the smallest eigenvalue and the others.
    ``'lu'`` (Kornia's default): fix ``h[8] = 1`` and solve the leading 8x8 block;
    where that block is singular (``h[8] = 0`` or a degenerate configuration) the
    ``'svd'`` vector is used instead.
    """
    _, vectors = torch.linalg.eigh(gram)
    h = vectors[..., 0]
    if solver == "svd":
        return h
    head, info = torch.linalg.solve_ex(gram[..., :8, :8], -gram[..., :8, 8:])
    solved = torch.cat([head[..., 0], torch.ones_like(head[..., :1, 0])], dim=-1)
    ok = (info == 0) & torch.isfinite(solved).all(-1)
    return torch.where(ok[..., None], solved, h)


def _denormalise(
    h: torch.Tensor, scale1: torch.Tensor, centroid1: torch.Tensor, scale2: torch.Tensor, centroid2: torch.Tensor
) -> torch.Tensor:
    """``T2^-1 Hn T1`` for ``vec(Hn)`` ``(B, 9)`` estimated on Hartley-normalised points.

    ``T`` maps a point ``p`` to ``scale (p - centroid)``; written out entry by entry so
    that no 3x3 inverse is taken.
    """
    Hn = h.unflatten(-1, (3, 3))
    # Hn T1: columns 0 and 1 scale by s1, column 2 picks up -s1 (Hn[:, :2] @ c1).
    s1 = scale1[..., None]
    left = Hn[..., :, :2] * s1[..., None]
    right = Hn[..., :, 2:] - (left * centroid1[..., None, :]).sum(-1, keepdim=True)
    M = torch.cat([left, right], dim=-1)
    # T2^-1 M: rows 0 and 1 become M_r / s2 + c2_r M_2, row 2 stays.
    top = M[..., :2, :] / scale2[..., None, None] + centroid2[..., :, None] * M[..., 2:, :]
    return torch.cat([top, M[..., 2:, :]], dim=-2)


def _scale_homography(H: torch.Tensor) -> torch.Tensor:
    """Scale ``(B, 3, 3)`` homographies to ``H[2, 2] = 1``, or to unit Frobenius norm (with
    a positive largest entry) where ``|H[2, 2]| <= 1e-8 ||H||_F``."""
    h22 = H[..., 2, 2]
    norm = H.flatten(-2).norm(dim=-1)
    good = h22.abs() > _H22_TOL * norm
    largest = H.flatten(-2).gather(-1, H.detach().flatten(-2).abs().argmax(-1, keepdim=True))[..., 0]
    fallback = torch.where(norm > 0, norm, torch.ones_like(norm)) * torch.where(largest < 0, -1.0, 1.0).to(H)
    return H / torch.where(good, h22, fallback)[..., None, None]


def _fit_homography(
    p1: torch.Tensor, p2: torch.Tensor, weights: torch.Tensor, solver: str
) -> torch.Tensor:
    """Normalised weighted DLT on float64 inputs already cleaned by :func:`_finite_inputs`."""
    x1, s1, c1 = _hartley(p1, weights)
    x2, s2, c2 = _hartley(p2, weights)
    h = _null_vector(_dlt_gram(x1, x2, weights), solver)
    return _scale_homography(_denormalise(h, s1, c1, s2, c2))


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def oneway_transfer_error(
    pts1: torch.Tensor, pts2: torch.Tensor, H: torch.Tensor, squared: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Transfer error in image 2: distance between ``H`` applied to ``pts1`` and ``pts2``.

    This is OpenCV's reprojection error (``cv2.findHomography``'s RANSAC threshold is on
    its square root) and Hartley & Zisserman's error in one image (eq. 4.6).

    Args:
        pts1: points in image 1, ``(B, N, 2)``.
        pts2: points in image 2, ``(B, N, 2)``.
        H: homographies ``(B, 3, 3)`` mapping image 1 to image 2; batch dimensions of
            ``pts1``, ``pts2`` and ``H`` broadcast (one point set against many ``H``).
        squared: return the squared distance (the default, as Kornia).
        eps: accepted for Kornia compatibility and unused, as in Kornia 0.9: the error
            does not depend on the scale of ``H`` and an exact match scores exactly 0.

    Returns:
        ``(B, N)`` distances (squared by default), in the promoted dtype of the inputs.
        A point that ``H`` maps to infinity scores ``inf`` (with a finite gradient).

    Convention:
        Pixel coordinates ``(x, y)`` in both images; ``H @ [x1, y1, 1]^T ~ [x2, y2, 1]^T``.

    Example:
        >>> H = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # shift x by 2
        >>> oneway_transfer_error(torch.zeros(1, 1, 2), torch.tensor([[[3.0, 4.0]]]), H, squared=False)
        tensor([[4.1231]])
    """
    check_shape(pts1, ["B", "N", 2], "pts1")
    check_shape(pts2, ["B", "N", 2], "pts2")
    check_shape(H, ["B", 3, 3], "H")
    dtype = torch.promote_types(torch.promote_types(pts1.dtype, pts2.dtype), H.dtype)
    if not dtype.is_floating_point:
        raise DTypeError(
            "pts1, pts2, H", "floating", (pts1.dtype, pts2.dtype, H.dtype),
            f"pts1, pts2, H: expected floating tensors, got {pts1.dtype}, {pts2.dtype}, {H.dtype}",
        )
    pts1, pts2, H = pts1.to(dtype), pts2.to(dtype), H.to(dtype)
    projected = _homogeneous(pts1) @ H.mT
    w = projected[..., 2]
    at_infinity = w == 0
    w_safe = torch.where(at_infinity, torch.ones_like(w), w)
    # (P_xy - w pts2) / w: one division per point instead of two.
    residual = projected[..., :2] - w[..., None] * pts2
    err2 = _squared_norm2(residual) / w_safe.square()
    err2 = torch.where(at_infinity, torch.full_like(err2, math.inf), err2)
    return err2 if squared else _safe_sqrt(err2)


def symmetric_transfer_error(
    pts1: torch.Tensor, pts2: torch.Tensor, H: torch.Tensor, squared: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Symmetric transfer error: image-2 error of ``H`` plus image-1 error of ``H^-1``.

    Hartley & Zisserman's eq. 4.7: ``d(x1, H^-1 x2)^2 + d(x2, H x1)^2``.

    Args:
        pts1: points in image 1, ``(B, N, 2)``.
        pts2: points in image 2, ``(B, N, 2)``.
        H: homographies ``(B, 3, 3)`` mapping image 1 to image 2 (batch dimensions broadcast).
        squared: return the sum of squares (default) rather than its square root.
        eps: unused, as in :func:`oneway_transfer_error`.

    Returns:
        ``(B, N)``, in the promoted dtype of the inputs. A singular ``H`` (``det H == 0``)
        scores ``inf`` for every point, as does a point mapped to infinity either way.

    Convention:
        As :func:`oneway_transfer_error`. The backward transfer uses the adjugate of
        ``H``, which equals ``H^-1`` up to scale, so no inverse is taken and the gradient
        stays finite near singular ``H``.

    Example:
        >>> H = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])  # zoom by 2
        >>> symmetric_transfer_error(torch.ones(1, 1, 2), torch.tensor([[[3.0, 2.0]]]), H)
        tensor([[1.2500]])
    """
    check_shape(H, ["B", 3, 3], "H")
    adj = _adjugate(H)
    det = (H[..., 0, :] * adj[..., :, 0]).sum(-1)
    there = oneway_transfer_error(pts1, pts2, H, True)
    back = oneway_transfer_error(pts2, pts1, adj, True)
    total = there + back
    total = torch.where((det == 0)[..., None], torch.full_like(total, math.inf), total)
    return total if squared else _safe_sqrt(total)


def find_homography_dlt(
    points1: torch.Tensor, points2: torch.Tensor, weights: torch.Tensor | None = None, solver: str = "svd"
) -> torch.Tensor:
    """Homography from four or more correspondences by the normalised, weighted DLT.

    Hartley normalisation (weighted centroid to the origin, weighted mean distance to
    ``sqrt(2)``) of each image, then the weighted algebraic least-squares fit
    ``min_h sum_i w_i ||A_i h||^2`` subject to ``||h|| = 1``, then denormalisation.

    Args:
        points1: points in image 1, ``(B, N, 2)`` with ``N >= 4``.
        points2: corresponding points in image 2, ``(B, N, 2)``.
        weights: optional non-negative ``(B, N)`` weights of the correspondences' squared
            algebraic residuals; zero removes a correspondence (from the normalisation too),
            and only relative weights matter.
        solver: ``'svd'`` (default): the right singular vector of the weighted design matrix
            with the smallest singular value, computed by ``torch.linalg.eigh`` of its 9x9
            Gram matrix in float64; ``'lu'``: Kornia's ``h[8] = 1`` gauge, an 8x8 solve,
            which gives the same ``H`` on exact data and a slightly different least-squares
            problem on noisy data.

    Returns:
        ``(B, 3, 3)`` homographies in the promoted dtype of ``points1`` and ``points2``,
        scaled so that ``H[2, 2] = 1``, or to unit Frobenius norm with a positive largest
        entry when ``|H[2, 2]| <= 1e-8 ||H||_F``.

    Degenerate input:
        A correspondence with a non-finite coordinate or weight counts as weight 0 (so a
        NaN never reaches the result). Where the weighted correspondences do not fix a
        unique homography (fewer than four with non-zero weight, three collinear among
        four, all collinear, coincident), the result is still finite: one member of the
        family of exact or least-squares solutions, which may be singular. Gradients are
        only meaningful for a unique solution (they involve ``1 / (lambda_1 - lambda_0)``
        for the two smallest eigenvalues of the Gram matrix).

    Raises:
        TypeError: non-tensor or non-floating input.
        ValueError: shapes that are not ``(B, N, 2)``, differ, or have ``N < 4``; weights
            that are not ``(B, N)``; an unknown solver.

    Convention:
        Pixel coordinates ``(x, y)``; ``H @ [x1, y1, 1]^T ~ [x2, y2, 1]^T``. Computed in
        float64 whatever the input dtype; differentiable w.r.t. points and weights.

    Example:
        >>> square = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
        >>> find_homography_dlt(square, 2 * square + 3)
        tensor([[[2., 0., 3.],
                 [0., 2., 3.],
                 [0., 0., 1.]]])
    """
    _check_correspondences(points1, points2, weights, 4)
    check_choice(solver, _SOLVERS, "solver")
    dtype = torch.promote_types(points1.dtype, points2.dtype)
    p1, p2, w = _finite_inputs(points1, points2, weights)
    return _fit_homography(p1, p2, w, solver).to(dtype)


def find_homography_dlt_iterated(
    points1: torch.Tensor,
    points2: torch.Tensor,
    weights: torch.Tensor | None,
    soft_inl_th: float = 3.0,
    n_iter: int = 5,
) -> torch.Tensor:
    """Homography by iteratively reweighted normalised DLT (IRLS).

    The first solve uses ``weights``; each of the ``n_iter - 1`` later ones multiplies
    them by the Gaussian kernel ``exp(-e^2 / (2 soft_inl_th^2))`` of the symmetric
    transfer error ``e`` of the previous estimate, so outliers fade out.

    Args:
        points1: points in image 1, ``(B, N, 2)`` with ``N >= 4``.
        points2: corresponding points in image 2, ``(B, N, 2)``.
        weights: initial non-negative ``(B, N)`` weights, or ``None`` for all ones.
        soft_inl_th: standard deviation of the re-weighting kernel, in pixels: a
            correspondence with ``e = soft_inl_th`` keeps ``exp(-1/2)`` of its weight.
        n_iter: number of solves, including the first (at least 1).

    Returns:
        ``(B, 3, 3)`` homographies, scaled as :func:`find_homography_dlt`.

    Raises:
        TypeError, ValueError: as :func:`find_homography_dlt`; ``ValueError`` also for
            ``n_iter < 1`` or a non-positive ``soft_inl_th``.

    Convention:
        As :func:`find_homography_dlt`. Unlike Kornia, the kernel multiplies the given
        weights instead of replacing them, so a correspondence given weight 0 stays out.

    Example:
        >>> src = torch.cartesian_prod(torch.arange(4.0), torch.arange(4.0))[None] * 10  # 4x4 grid
        >>> dst = src + 1
        >>> dst[0, 5] += 4.0  # one outlier
        >>> find_homography_dlt(src, dst)[0, :2].round(decimals=2)
        tensor([[1.0500, 0.0100, 1.1300],
                [0.0100, 1.0500, 1.1300]])
        >>> find_homography_dlt_iterated(src, dst, None, soft_inl_th=1.0, n_iter=10)[0, :2].round(decimals=2) + 0.0
        tensor([[1., 0., 1.],
                [0., 1., 1.]])
    """
    _check_correspondences(points1, points2, weights, 4)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ArgumentValueError("n_iter", "a positive int", n_iter, f"n_iter: expected a positive int, got {n_iter!r}")
    if not soft_inl_th > 0:
        raise ArgumentValueError(
            "soft_inl_th", "a positive float", soft_inl_th, f"soft_inl_th: expected a positive float, got {soft_inl_th!r}"
        )
    dtype = torch.promote_types(points1.dtype, points2.dtype)
    p1, p2, w = _finite_inputs(points1, points2, weights)
    H = _fit_homography(p1, p2, w, "svd")
    for _ in range(n_iter - 1):
        err2 = symmetric_transfer_error(p1, p2, H, True)
        H = _fit_homography(p1, p2, w * torch.exp(-err2 / (2.0 * soft_inl_th**2)), "svd")
    return H.to(dtype)
