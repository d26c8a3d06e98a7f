"""Random target homographies for the attack's protocol (issue 13's benchmark).

A target is a similarity about the image centre (a rotation of at most ``max_rotation``
degrees and a scale drawn log-uniformly in ``scale``) followed by an independent move of
each corner of at most ``jitter`` times the image's width (x) and height (y): strong enough
that no photograph matches an unrelated one under it by chance, mild enough that most of A
still lands inside B.

Convention:
    Pixel centres at integer coordinates; the corners are ``(0, 0)``, ``(W-1, 0)``,
    ``(W-1, H-1)``, ``(0, H-1)`` and the centre ``((W-1)/2, (H-1)/2)``. The homographies map
    A's pixels to B's, ``H[2, 2] = 1``, float64.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from gradcv.core_ops._checks import check_int, check_real
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError
from gradcv.core_ops.geometry.matrices import get_perspective_transform

__all__ = ["random_homography"]


def random_homography(
    n: int,
    height: int,
    width: int,
    *,
    max_rotation: float = 20.0,
    scale: tuple[float, float] = (0.8, 1.25),
    jitter: float = 0.1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``n`` random homographies of ``height x width`` images (see the module).

    Args:
        n: how many (``>= 0``).
        height, width: the image size in pixels (``>= 2``).
        max_rotation: the rotation is uniform in ``[-max_rotation, max_rotation]`` degrees.
        scale: ``(low, high)``, ``0 < low <= high``; the scale is log-uniform between them.
        jitter: each corner then moves uniformly in ``[-jitter, jitter]`` times the width
            in x and the height in y (``0 <= jitter < 0.25`` keeps the quadrilateral convex
            for any rotation and scale in range).
        generator: the random source (``None``: torch's global one). Each homography takes
            10 draws in order, so the ``i``-th does not depend on ``n``.

    Returns:
        ``(n, 3, 3)`` float64.

    Example:
        >>> H = random_homography(2, 300, 400, generator=torch.Generator().manual_seed(0))
        >>> H.shape, H.dtype, bool((H[:, 2, 2] == 1).all())
        (torch.Size([2, 3, 3]), torch.float64, True)
    """
    check_int(n, "n", 0)
    check_int(height, "height", 2)
    check_int(width, "width", 2)
    check_real(max_rotation, "max_rotation", low=0.0, high=180.0)
    if not isinstance(scale, (tuple, list)) or len(scale) != 2:
        raise ArgumentTypeError("scale", "a (low, high) pair", type(scale), f"scale: expected a (low, high) pair, got {scale!r}")
    low, high = scale
    check_real(low, "scale", low=0.0, low_open=True)
    check_real(high, "scale", low=0.0, low_open=True)
    if low > high:
        raise ArgumentValueError("scale", "low <= high", scale, f"scale: expected low <= high, got {tuple(scale)}")
    check_real(jitter, "jitter", low=0.0, high=0.25, high_open=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError("generator", torch.Generator, type(generator),
                                f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    u = torch.rand(n, 10, generator=generator, dtype=torch.float64)
    angle = math.radians(max_rotation) * (2 * u[:, 0] - 1)
    s = torch.exp(math.log(low) + u[:, 1] * (math.log(high) - math.log(low)))
    cos, sin = s * torch.cos(angle), s * torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    w1, h1 = width - 1.0, height - 1.0
    corners = torch.tensor([[0.0, 0.0], [w1, 0.0], [w1, h1], [0.0, h1]], dtype=torch.float64)
    centre = corners.mean(0)
    moved = (corners - centre) @ rot.transpose(1, 2) + centre
    moved = moved + jitter * (2 * u[:, 2:].reshape(n, 4, 2) - 1) * torch.tensor([width, height], dtype=torch.float64)
    return get_perspective_transform(corners.expand(n, 4, 2), moved)
