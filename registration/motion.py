"""The motion models: parameters ``theta (B, k)`` to the frame homography ``G (B, 3, 3)``
and back, and the generators of each model's group at the identity.

Convention:
    ``G`` lives in the isotropic normalised frame of the full image
    (:mod:`gradcv.registration.sampling`) and takes ``dst`` frame points to ``src`` frame
    points. A homography's parameters are the displacements of the four image corners
    (pixel edges) in that frame, ``(B, 8)``; the other models' are listed in
    :func:`motion_matrix`.
"""

from __future__ import annotations

import torch

from gradcv.core_ops.geometry import get_perspective_transform

MOTIONS = ("homography", "affine", "similarity", "euclidean", "translation")
PARAMETER_COUNT = {"translation": 2, "euclidean": 3, "similarity": 4, "affine": 6, "homography": 8}


def motion_matrix(motion: str, theta: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """``G (B, 3, 3)`` from the parameters ``theta (B, k)``.

    Args:
        motion: one of :data:`MOTIONS`. Parameters: ``homography`` the corners'
            displacements ``(dx0, dy0, ..., dx3, dy3)``; ``affine`` ``G - I``'s top two rows;
            ``similarity`` ``(a, b, tx, ty)`` for ``[[1 + a, -b, tx], [b, 1 + a, ty]]``;
            ``euclidean`` ``(angle, tx, ty)``; ``translation`` ``(tx, ty)``.
        theta: ``(B, k)`` parameters.
        corners: ``(4, 2)`` the image corners in the frame (:func:`sampling.frame_corners`).

    Returns:
        ``(B, 3, 3)`` in ``theta``'s dtype (the homography is solved in float64).
    """
    B = theta.shape[0]
    one = torch.ones(B, dtype=theta.dtype, device=theta.device)
    zero = torch.zeros_like(one)
    if motion == "homography":
        c = corners.to(torch.float64).expand(B, 4, 2)
        G = get_perspective_transform(c, c + theta.to(torch.float64).view(B, 4, 2))
        return G.to(theta.dtype)
    if motion == "translation":
        tx, ty = theta.unbind(-1)
        rows = [one, zero, tx, zero, one, ty]
    elif motion == "euclidean":
        a, tx, ty = theta.unbind(-1)
        c, s = torch.cos(a), torch.sin(a)
        rows = [c, -s, tx, s, c, ty]
    elif motion == "similarity":
        a, b, tx, ty = theta.unbind(-1)
        rows = [1 + a, -b, tx, b, 1 + a, ty]
    else:  # affine
        p = theta.unbind(-1)
        rows = [1 + p[0], p[1], p[2], p[3], 1 + p[4], p[5]]
    return torch.stack(rows + [zero, zero, one], -1).view(B, 3, 3)


def motion_parameters(motion: str, G: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Parameters whose :func:`motion_matrix` is ``G``, or ``G``'s projection on the model
    (the affine part for ``affine``, the rotation angle and translation for ``euclidean``...)."""
    G = G / G[:, 2:, 2:]
    if motion == "homography":
        c = corners.to(G.dtype)
        moved = c @ G[:, :2, :2].transpose(-1, -2) + G[:, None, :2, 2]
        w = c @ G[:, 2:, :2].transpose(-1, -2) + G[:, None, 2:, 2]
        return (moved / w - c).flatten(1)
    if motion == "translation":
        return G[:, :2, 2]
    if motion == "euclidean":
        angle = torch.atan2(G[:, 1, 0] - G[:, 0, 1], G[:, 0, 0] + G[:, 1, 1])
        return torch.stack([angle, G[:, 0, 2], G[:, 1, 2]], -1)
    if motion == "similarity":
        a = 0.5 * (G[:, 0, 0] + G[:, 1, 1]) - 1
        b = 0.5 * (G[:, 1, 0] - G[:, 0, 1])
        return torch.stack([a, b, G[:, 0, 2], G[:, 1, 2]], -1)
    eye = torch.eye(3, dtype=G.dtype, device=G.device)
    return (G - eye)[:, :2].flatten(1)


def generators(motion: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(k, 3, 3)`` generators of the model's group at the identity, in the order of its
    parameters: the second-order solver's compositional steps ``G expm(sum delta_k E_k)``
    stay in the model."""

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
