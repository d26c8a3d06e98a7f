"""Rigid transformations as ``(*, 4, 4)`` matrices: composition, exact inverse, relative
pose, and applying a transform (rigid, affine or projective) to points.

Frames are named as in Kornia: ``trans_ab`` maps points in frame ``b`` to frame ``a``,
``p_a = trans_ab @ p_b`` on homogeneous column vectors. So ``transform_points(trans_01,
points_1)`` returns ``points_0`` and ``compose_transformations(trans_01, trans_12)`` returns
``trans_02``.
"""

from __future__ import annotations

import torch

from gradcv.core_ops._checks import check_floating, check_shape
from gradcv.core_ops.errors import DTypeError, ShapeError
from gradcv.core_ops.geometry.conversions import convert_points_from_homogeneous

__all__ = ["compose_transformations", "inverse_transformation", "relative_transformation", "transform_points"]


def _check_matrices(x: object, size: int, name: str) -> None:
    check_shape(x, ["*", size, size], name)
    assert isinstance(x, torch.Tensor)
    check_floating(x, name)


def _check_same_dtype(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.dtype != b.dtype:
        raise DTypeError(name_b, a.dtype, b.dtype, f"{name_a}, {name_b}: expected the same dtype, got {a.dtype} and {b.dtype}")


def _batch_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> torch.Size:
    try:
        return torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ShapeError(
            name_b, f"a batch shape that broadcasts with {name_a}'s {tuple(a.shape[:-2])}", tuple(b.shape),
            f"{name_a}, {name_b}: batch shapes do not broadcast, got {tuple(a.shape)} and {tuple(b.shape)}",
        ) from None


def _rigid(rotation: torch.Tensor, translation: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """``[[R, t], [0, 0, 0, 1]]`` from ``R (*, 3, 3)`` and ``t (*, 3, 1)``, broadcast to ``batch``."""
    top = torch.cat([rotation.expand(*batch, 3, 3), translation.expand(*batch, 3, 1)], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], dim=-2)


def compose_transformations(trans_01: torch.Tensor, trans_12: torch.Tensor) -> torch.Tensor:
    """Compose two transformations: ``trans_02 = trans_01 @ trans_12``.

    Args:
        trans_01: ``(*, 4, 4)``, maps frame 1 to frame 0.
        trans_12: ``(*, 4, 4)``, maps frame 2 to frame 1; the batch shapes broadcast.

    Returns:
        ``(*, 4, 4)`` ``trans_02 = [[R_01 R_12, R_01 t_12 + t_01], [0, 0, 0, 1]]``.

    Convention:
        As Kornia, only the top three rows of each input are read and the last row of the
        result is ``(0, 0, 0, 1)``: exact for rigid and affine inputs.

    Example:
        >>> t = torch.eye(4)
        >>> t[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
        >>> compose_transformations(t, t)[:3, 3]
        tensor([2., 4., 6.])
    """
    _check_matrices(trans_01, 4, "trans_01")
    _check_matrices(trans_12, 4, "trans_12")
    _check_same_dtype(trans_01, trans_12, "trans_01", "trans_12")
    batch = _batch_shape(trans_01, trans_12, "trans_01", "trans_12")
    rmat_01, tvec_01 = trans_01[..., :3, :3], trans_01[..., :3, 3:]
    rmat_12, tvec_12 = trans_12[..., :3, :3], trans_12[..., :3, 3:]
    return _rigid(rmat_01 @ rmat_12, rmat_01 @ tvec_12 + tvec_01, batch)


def inverse_transformation(trans_12: torch.Tensor) -> torch.Tensor:
    """Invert rigid transformations exactly: ``[[R^T, -R^T t], [0, 0, 0, 1]]``.

    Args:
        trans_12: ``(*, 4, 4)`` rigid transformations ``[[R, t], [0, 0, 0, 1]]``.

    Returns:
        ``(*, 4, 4)`` ``trans_21``. The rotation block is transposed, not inverted, so the
        result is exact to rounding and cheap, but only for a rigid input (not validated: a
        scaled or projective matrix gives a wrong result; use ``torch.linalg.inv`` there).

    Example:
        >>> t = torch.eye(4)
        >>> t[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> t[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
        >>> inverse_transformation(t)[:3, 3]
        tensor([-2.,  1., -3.])
    """
    _check_matrices(trans_12, 4, "trans_12")
    rmat_21 = trans_12[..., :3, :3].transpose(-1, -2)
    return _rigid(rmat_21, -(rmat_21 @ trans_12[..., :3, 3:]), trans_12.shape[:-2])


def relative_transformation(trans_01: torch.Tensor, trans_02: torch.Tensor) -> torch.Tensor:
    """The transformation between two poses: ``trans_12 = trans_01^-1 @ trans_02``.

    Args:
        trans_01: ``(*, 4, 4)`` rigid, maps frame 1 to frame 0.
        trans_02: ``(*, 4, 4)``, maps frame 2 to frame 0; the batch shapes broadcast.

    Returns:
        ``(*, 4, 4)`` ``trans_12 = [[R_01^T R_02, R_01^T (t_02 - t_01)], [0, 0, 0, 1]]``.

    Convention:
        ``trans_01`` is inverted as in :func:`inverse_transformation` (rigid, not
        validated); the last row of ``trans_02`` is not read.

    Example:
        >>> t = torch.eye(4)
        >>> t[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
        >>> relative_transformation(t, torch.eye(4))[:3, 3]
        tensor([-1., -2., -3.])
    """
    _check_matrices(trans_01, 4, "trans_01")
    _check_matrices(trans_02, 4, "trans_02")
    _check_same_dtype(trans_01, trans_02, "trans_01", "trans_02")
    batch = _batch_shape(trans_01, trans_02, "trans_01", "trans_02")
    rmat_10 = trans_01[..., :3, :3].transpose(-1, -2)
    rmat_12 = rmat_10 @ trans_02[..., :3, :3]
    tvec_12 = rmat_10 @ (trans_02[..., :3, 3:] - trans_01[..., :3, 3:])
    return _rigid(rmat_12, tvec_12, batch)


def transform_points(trans_01: torch.Tensor, points_1: torch.Tensor) -> torch.Tensor:
    """Apply ``(D+1) x (D+1)`` transformations (rigid, affine or projective) to D-D points.

    Each point is lifted to ``(p, 1)``, multiplied by the matrix and divided by the
    resulting ``w`` with :func:`convert_points_from_homogeneous` (points sent to
    ``|w| <= 1e-8`` keep their unscaled coordinates; values and gradients stay finite).

    Args:
        trans_01: ``(*T, D + 1, D + 1)``.
        points_1: ``(*P, N, D)``, same dtype. As in Kornia, the transform batch lines up with
            the *leading* dimensions of the point batch, each of size 1 or equal: ``(B, 3, 3)``
            transforms ``(B, N, 2)`` or ``(B, M, N, 2)`` points (one transform per leading
            index, shared over ``M``), and ``(3, 3)`` or ``(1, 3, 3)`` transforms any points.

    Returns:
        ``(*P, N, D)``, the shape of ``points_1``.

    Convention:
        Points are row vectors in the frame of the matrix (pixel ``(x, y)`` for a pixel
        homography, normalised coordinates for a normalised one); ``trans_01`` maps frame 1
        to frame 0.

    Example:
        >>> H = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
        >>> transform_points(H, torch.tensor([[1.0, 1.0], [0.0, 3.0]]))
        tensor([[3., 2.],
                [1., 6.]])
    """
    check_shape(trans_01, ["*", "D1", "D1"], "trans_01")
    check_shape(points_1, ["*", "N", "D"], "points_1")
    assert isinstance(trans_01, torch.Tensor) and isinstance(points_1, torch.Tensor)
    check_floating(trans_01, "trans_01")
    check_floating(points_1, "points_1")
    _check_same_dtype(trans_01, points_1, "trans_01", "points_1")
    size = points_1.shape[-1] + 1
    if trans_01.shape[-2:] != (size, size):
        raise ShapeError(
            "trans_01", ("*", size, size), tuple(trans_01.shape),
            f"trans_01: expected shape (*, {size}, {size}) for points of dimension {size - 1}, "
            f"got {tuple(trans_01.shape)}",
        )
    tbatch, pbatch = trans_01.shape[:-2], points_1.shape[:-2]
    if len(tbatch) > len(pbatch):
        if any(d != 1 for d in tbatch):
            raise ShapeError(
                "trans_01", (*pbatch, size, size), tuple(trans_01.shape),
                f"trans_01, points_1: a batch of transforms needs a batch of points, "
                f"got {tuple(trans_01.shape)} and {tuple(points_1.shape)}",
            )
        trans_01 = trans_01.reshape(size, size)
        tbatch = trans_01.shape[:-2]
    if any(t not in (1, p) for t, p in zip(tbatch, pbatch)):
        raise ShapeError(
            "trans_01", (*pbatch, size, size), tuple(trans_01.shape),
            f"trans_01, points_1: the transform batch must match the leading point batch "
            f"dimensions (or be 1), got {tuple(trans_01.shape)} and {tuple(points_1.shape)}",
        )
    # Trailing singleton dimensions make matmul broadcast the transform batch left-aligned.
    trans = trans_01.reshape(*tbatch, *([1] * (len(pbatch) - len(tbatch))), size, size)
    linear, offset = trans[..., :, :-1], trans[..., :, -1]
    # (p, 1) @ T^T without building (p, 1): p @ T[:, :-1]^T + T[:, -1].
    points_0_h = points_1 @ linear.transpose(-1, -2) + offset.unsqueeze(-2)
    return convert_points_from_homogeneous(points_0_h)
