"""Pixel and normalised coordinates, and the matrices between them.

Convention (``DESIGN.md``; the one used by every geometric operator in gradcv):
    A pixel coordinate ``(x, y)`` has x to the right and y down, with integer values at
    pixel *centres*, as in OpenCV: an image ``W`` pixels wide spans ``[-0.5, W - 0.5]``.
    Normalised coordinates span ``[-1, 1]`` from the left (top) *edge* of the image to
    the right (bottom) edge, which is ``torch.nn.functional.grid_sample``'s
    ``align_corners=False``:

        u = (2 x + 1) / W - 1,        x = ((u + 1) W - 1) / 2.

    A normalised point therefore means the same place in an image and in any resized
    copy of it (a pyramid level), and a homography between normalised frames carries
    between pyramid levels unchanged.

Kornia's functions of the same names map the first and last pixel *centres* to -1 and 1
(``u = 2 x / (W - 1) - 1``, ``align_corners=True``); the names, argument order and
shapes here are Kornia's, the numbers follow the convention above. Every function says so
in its docstring.
"""

from __future__ import annotations

import torch

from gradcv.core_ops._checks import check_shape
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError

__all__ = [
    "denormal_transform_pixel",
    "denormalize_homography",
    "denormalize_pixel_coordinates",
    "denormalize_pixel_coordinates3d",
    "normal_transform_pixel",
    "normalize_homography",
    "normalize_pixel_coordinates",
    "normalize_pixel_coordinates3d",
]


def _check_sizes(**sizes: object) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(name, int, type(value), f"{name}: expected an int, got {type(value).__name__}")
        if value <= 0:
            raise ArgumentValueError(name, "a positive size", value, f"{name}: expected a positive size, got {value}")


def _check_dsize(dsize: object, name: str) -> tuple[int, int]:
    if not (isinstance(dsize, (tuple, list, torch.Size)) and len(dsize) == 2):
        what = "a (height, width) pair of ints"
        raise ArgumentTypeError(name, what, dsize, f"{name}: expected {what}, got {dsize!r}")
    h, w = dsize
    _check_sizes(**{f"{name}[0]": h, f"{name}[1]": w})
    return int(h), int(w)


def _floating(points: torch.Tensor) -> torch.Tensor:
    # Kornia accepts integer pixel coordinates and returns the default floating dtype.
    return points if points.is_floating_point() else points.to(torch.get_default_dtype())


def _per_axis(points: torch.Tensor, sizes: tuple[int, ...], normalise: bool) -> torch.Tensor:
    """Apply the map of the module's Convention to each component, with the sizes as
    Python numbers (a size tensor would cost a host-to-device copy on a GPU)."""
    if normalise:
        parts = [(2 * points[..., i] + 1) / n - 1 for i, n in enumerate(sizes)]
    else:
        parts = [((points[..., i] + 1) * n - 1) / 2 for i, n in enumerate(sizes)]
    return torch.stack(parts, dim=-1)


def normalize_pixel_coordinates(
    pixel_coordinates: torch.Tensor, height: int, width: int, eps: float = 1e-8
) -> torch.Tensor:
    """Map pixel coordinates ``(x, y)`` to normalised coordinates in ``[-1, 1]``.

    Args:
        pixel_coordinates: points ``(*, 2)`` in ``(x, y)`` order.
        height: image height ``H`` (scales ``y``).
        width: image width ``W`` (scales ``x``).
        eps: kept for Kornia's signature; unused (no size can make the map singular).

    Returns:
        ``(*, 2)``: ``((2 x + 1) / W - 1, (2 y + 1) / H - 1)``, in the input's dtype (the
        default floating dtype for integer input). Not clamped: points outside the image
        map outside ``[-1, 1]``.

    Convention:
        Pixel centres at integers; ``-1`` and ``1`` are the image *edges*
        (``align_corners=False``). Kornia maps the first and last pixel centres to
        ``-1`` and ``1`` instead (``2 x / (W - 1) - 1``).

    Example:
        >>> normalize_pixel_coordinates(torch.tensor([[0.0, 0.0], [3.0, 1.0]]), 2, 4)
        tensor([[-0.7500, -0.5000],
                [ 0.7500,  0.5000]])
    """
    check_shape(pixel_coordinates, ["*", 2], "pixel_coordinates")
    _check_sizes(height=height, width=width)
    return _per_axis(_floating(pixel_coordinates), (width, height), normalise=True)


def denormalize_pixel_coordinates(
    pixel_coordinates: torch.Tensor, height: int, width: int, eps: float = 1e-8
) -> torch.Tensor:
    """Map normalised coordinates in ``[-1, 1]`` back to pixel coordinates ``(x, y)``.

    The inverse of :func:`normalize_pixel_coordinates`.

    Args:
        pixel_coordinates: normalised points ``(*, 2)`` in ``(x, y)`` order.
        height: image height ``H``.
        width: image width ``W``.
        eps: kept for Kornia's signature; unused.

    Returns:
        ``(*, 2)``: ``(((u + 1) W - 1) / 2, ((v + 1) H - 1) / 2)``.

    Convention:
        As :func:`normalize_pixel_coordinates`: ``-1`` is the left (top) image edge, pixel
        ``-0.5``; Kornia's version maps it to the first pixel centre, ``0``.

    Example:
        >>> denormalize_pixel_coordinates(torch.tensor([[-1.0, 1.0]]), 2, 4)
        tensor([[-0.5000,  1.5000]])
    """
    check_shape(pixel_coordinates, ["*", 2], "pixel_coordinates")
    _check_sizes(height=height, width=width)
    return _per_axis(_floating(pixel_coordinates), (width, height), normalise=False)


def normalize_pixel_coordinates3d(
    pixel_coordinates: torch.Tensor, depth: int, height: int, width: int, eps: float = 1e-8
) -> torch.Tensor:
    """Map voxel coordinates ``(x, y, z)`` to normalised coordinates in ``[-1, 1]``.

    Args:
        pixel_coordinates: points ``(*, 3)`` in ``(x, y, z)`` order: ``x`` along the
            width, ``y`` along the height, ``z`` along the depth.
        depth: volume depth ``D`` (scales ``z``).
        height: volume height ``H`` (scales ``y``).
        width: volume width ``W`` (scales ``x``).
        eps: kept for Kornia's signature; unused.

    Returns:
        ``(*, 3)``: ``((2 x + 1) / W - 1, (2 y + 1) / H - 1, (2 z + 1) / D - 1)``.

    Convention:
        Voxel centres at integers, ``[-1, 1]`` edge to edge on every axis, and the
        component order ``(x, y, z)`` that ``grid_sample`` reads for 5-D inputs. Kornia's
        function uses the corner-aligned map and the component order ``(z, x, y)`` of
        its ``create_meshgrid3d``; both differ here.

    Example:
        >>> normalize_pixel_coordinates3d(torch.tensor([[0.0, 1.0, 3.0]]), 4, 2, 1)
        tensor([[0.0000, 0.5000, 0.7500]])
    """
    check_shape(pixel_coordinates, ["*", 3], "pixel_coordinates")
    _check_sizes(depth=depth, height=height, width=width)
    return _per_axis(_floating(pixel_coordinates), (width, height, depth), normalise=True)


def denormalize_pixel_coordinates3d(
    pixel_coordinates: torch.Tensor, depth: int, height: int, width: int, eps: float = 1e-8
) -> torch.Tensor:
    """Map normalised coordinates ``(*, 3)`` back to voxel coordinates ``(x, y, z)``.

    The inverse of :func:`normalize_pixel_coordinates3d`.

    Args:
        pixel_coordinates: normalised points ``(*, 3)`` in ``(x, y, z)`` order.
        depth: volume depth ``D``.
        height: volume height ``H``.
        width: volume width ``W``.
        eps: kept for Kornia's signature; unused.

    Returns:
        ``(*, 3)`` voxel coordinates.

    Convention:
        As :func:`normalize_pixel_coordinates3d` (``(x, y, z)`` order, edges at ``±1``).

    Example:
        >>> denormalize_pixel_coordinates3d(torch.tensor([[0.0, 0.5, 0.75]]), 4, 2, 1)
        tensor([[0., 1., 3.]])
    """
    check_shape(pixel_coordinates, ["*", 3], "pixel_coordinates")
    _check_sizes(depth=depth, height=height, width=width)
    return _per_axis(_floating(pixel_coordinates), (width, height, depth), normalise=False)


def _pixel_matrix(
    rows: tuple[tuple[float, float, float], tuple[float, float, float]],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not (dtype.is_floating_point or dtype.is_complex):
        raise DTypeError("dtype", "floating", dtype, f"dtype: expected a floating dtype, got {dtype}")
    return torch.tensor([[rows[0], rows[1], (0.0, 0.0, 1.0)]], device=device, dtype=dtype)


def normal_transform_pixel(
    height: int,
    width: int,
    eps: float = 1e-14,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The matrix taking homogeneous pixel coordinates to normalised coordinates.

    Args:
        height: image height ``H``.
        width: image width ``W``.
        eps: kept for Kornia's signature; unused.
        device: device of the result.
        dtype: floating dtype of the result (default: ``torch.get_default_dtype()``).

    Returns:
        ``(1, 3, 3)``: ``[[2/W, 0, 1/W - 1], [0, 2/H, 1/H - 1], [0, 0, 1]]``, acting on
        column vectors ``(x, y, 1)``.

    Convention:
        Pixel centres at integers to ``[-1, 1]`` edge to edge (as
        :func:`normalize_pixel_coordinates`). Kornia's default is the corner-aligned
        ``[[2/(W-1), 0, -1], ...]`` (its ``align_corners=True``).

    Example:
        >>> normal_transform_pixel(2, 4)
        tensor([[[ 0.5000,  0.0000, -0.7500],
                 [ 0.0000,  1.0000, -0.5000],
                 [ 0.0000,  0.0000,  1.0000]]])
    """
    _check_sizes(height=height, width=width)
    rows = ((2.0 / width, 0.0, 1.0 / width - 1.0), (0.0, 2.0 / height, 1.0 / height - 1.0))
    return _pixel_matrix(rows, device, dtype)


def denormal_transform_pixel(
    height: int,
    width: int,
    eps: float = 1e-14,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The matrix taking homogeneous normalised coordinates to pixel coordinates.

    The inverse of :func:`normal_transform_pixel`.

    Args:
        height: image height ``H``.
        width: image width ``W``.
        eps: kept for Kornia's signature; unused.
        device: device of the result.
        dtype: floating dtype of the result (default: ``torch.get_default_dtype()``).

    Returns:
        ``(1, 3, 3)``: ``[[W/2, 0, (W-1)/2], [0, H/2, (H-1)/2], [0, 0, 1]]``.

    Convention:
        ``[-1, 1]`` edge to edge to pixel centres at integers (Kornia's is corner-aligned).

    Example:
        >>> denormal_transform_pixel(2, 4)
        tensor([[[2.0000, 0.0000, 1.5000],
                 [0.0000, 1.0000, 0.5000],
                 [0.0000, 0.0000, 1.0000]]])
    """
    _check_sizes(height=height, width=width)
    rows = ((width / 2.0, 0.0, (width - 1) / 2.0), (0.0, height / 2.0, (height - 1) / 2.0))
    return _pixel_matrix(rows, device, dtype)


def _check_homography(matrix: object, name: str) -> torch.Tensor:
    check_shape(matrix, ["*", 3, 3], name)
    assert isinstance(matrix, torch.Tensor)
    if not matrix.is_floating_point():
        raise DTypeError(name, "floating", matrix.dtype, f"{name}: expected a floating tensor, got {matrix.dtype}")
    return matrix


Scaling = tuple[float, float, float, float]  # (s_x, s_y, o_x, o_y): [[s_x, 0, o_x], [0, s_y, o_y], [0, 0, 1]]


def _rescale(matrix: torch.Tensor, src: Scaling, dst: Scaling) -> torch.Tensor:
    """``T_dst @ matrix @ T_src`` for diagonal-plus-offset matrices ``T = [[sx, 0, ox], [0, sy, oy], [0, 0, 1]]``.

    Written out rather than as two matrix products: exact where the entries allow it
    (the identity stays the identity to the last bit for equal sizes).
    """
    sx, sy, ox, oy = src
    tx, ty, px, py = dst
    # matrix @ T_src: column 0 times sx, column 1 times sy, column 2 plus ox col0 + oy col1.
    c0, c1, c2 = matrix[..., 0], matrix[..., 1], matrix[..., 2]
    m = torch.stack((c0 * sx, c1 * sy, c2 + c0 * ox + c1 * oy), dim=-1)
    # T_dst @ m: row 0 times tx plus px row 2, row 1 times ty plus py row 2.
    r0, r1, r2 = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    return torch.stack((r0 * tx + r2 * px, r1 * ty + r2 * py, r2), dim=-2)


def _normalising(height: int, width: int) -> Scaling:
    return 2.0 / width, 2.0 / height, 1.0 / width - 1.0, 1.0 / height - 1.0


def _denormalising(height: int, width: int) -> Scaling:
    return width / 2.0, height / 2.0, (width - 1) / 2.0, (height - 1) / 2.0


def normalize_homography(
    dst_pix_trans_src_pix: torch.Tensor, dsize_src: tuple[int, int], dsize_dst: tuple[int, int]
) -> torch.Tensor:
    """Express a homography between pixel frames in normalised coordinates.

    Args:
        dst_pix_trans_src_pix: homographies ``(*, 3, 3)`` taking source pixels to
            destination pixels.
        dsize_src: source image size ``(height, width)``.
        dsize_dst: destination image size ``(height, width)``.

    Returns:
        ``(*, 3, 3)``: ``N_dst @ H @ N_src^-1`` with ``N`` from
        :func:`normal_transform_pixel`, taking normalised source points to normalised
        destination points.

    Convention:
        Normalised coordinates span ``[-1, 1]`` edge to edge, so the result is the same
        for every pyramid level of the two images, and there is no ``align_corners``
        argument. Kornia's default is corner-aligned, and Kornia returns ``(1, 3, 3)`` for a ``(3, 3)`` input where this keeps the shape.

    Example:
        >>> H = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # 2 px right
        >>> normalize_homography(H, (4, 8), (4, 8))[0]
        tensor([1.0000, 0.0000, 0.5000])
    """
    H = _check_homography(dst_pix_trans_src_pix, "dst_pix_trans_src_pix")
    hs, ws = _check_dsize(dsize_src, "dsize_src")
    hd, wd = _check_dsize(dsize_dst, "dsize_dst")
    return _rescale(H, _denormalising(hs, ws), _normalising(hd, wd))


def denormalize_homography(
    dst_norm_trans_src_norm: torch.Tensor, dsize_src: tuple[int, int], dsize_dst: tuple[int, int]
) -> torch.Tensor:
    """Express a homography between normalised frames in pixel coordinates.

    The inverse of :func:`normalize_homography`.

    Args:
        dst_norm_trans_src_norm: homographies ``(*, 3, 3)`` between normalised frames.
        dsize_src: source image size ``(height, width)``.
        dsize_dst: destination image size ``(height, width)``.

    Returns:
        ``(*, 3, 3)``: ``N_dst^-1 @ H @ N_src``, taking source pixels to destination pixels.

    Convention:
        As :func:`normalize_homography` (edge-to-edge normalisation, shape kept): there
        is no ``align_corners`` argument, unlike Kornia's. The first argument is named for
        what it is; Kornia calls it ``dst_pix_trans_src_pix``.

    Example:
        >>> Hn = torch.diag(torch.tensor([0.5, 0.5, 1.0]))  # shrink about the image centre
        >>> denormalize_homography(Hn, (5, 9), (5, 9))
        tensor([[0.5000, 0.0000, 2.0000],
                [0.0000, 0.5000, 1.0000],
                [0.0000, 0.0000, 1.0000]])
    """
    H = _check_homography(dst_norm_trans_src_norm, "dst_norm_trans_src_norm")
    hs, ws = _check_dsize(dsize_src, "dsize_src")
    hd, wd = _check_dsize(dsize_dst, "dsize_dst")
    return _rescale(H, _normalising(hs, ws), _denormalising(hd, wd))
