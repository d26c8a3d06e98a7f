"""The frame the parameters live in, and the sampling of an image at ``G p`` for every
pixel ``p`` of a pyramid level.

Convention:
    The *isotropic normalised frame of the full image*: a full-resolution pixel ``(x, y)``
    (centres at integers) has frame coordinates ``((x - (W - 1) / 2) / s, (y - (H - 1) / 2)
    / s)`` with ``s = max(H, W) / 2``, so the long side spans ``[-1, 1]`` edge to edge and
    rotations stay rotations on non-square images. A pixel ``x_l`` of level ``l`` of the
    centred pyramid (:func:`gradcv.core_ops.pyramid.build_centred_pyramid`) sits at
    full-resolution ``2^l (x_l + 1/2) - 1/2``: the frame, hence the parameters, mean the
    same place at every level and carry over unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradcv.core_ops.geometry.warpers import _base_grid


def frame_matrix(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``A (3, 3)``: full-resolution pixels to the frame."""
    s = max(height, width) / 2.0
    return torch.tensor(
        [[1 / s, 0.0, -(width - 1) / (2 * s)], [0.0, 1 / s, -(height - 1) / (2 * s)], [0.0, 0.0, 1.0]],
        dtype=dtype,
        device=device,
    )


def frame_corners(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The four image corners (pixel edges) in the frame, ``(4, 2)``, clockwise from the top left."""
    m = max(height, width)
    ax, ay = width / m, height / m
    return torch.tensor([[-ax, -ay], [ax, -ay], [ax, ay], [-ax, ay]], dtype=dtype, device=device)


def project_corners(G: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """``(B, 4, 2)``: the frame ``corners (4, 2)`` moved by ``G (B, 3, 3)`` (what the
    step tolerances measure)."""
    corners_h = torch.cat([corners, torch.ones_like(corners[:, :1])], -1)
    q = corners_h @ G.transpose(-1, -2)
    return q[..., :2] / q[..., 2:].clamp_min(1e-6)


def pixel_homography(G: torch.Tensor, A: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The pixel homography ``A^-1 G^-1 A`` (``src`` to ``dst``, ``H[2, 2] = 1``) of the
    frame homography ``G`` (``dst`` to ``src``), computed in float64, returned in ``dtype``."""
    Hp = torch.linalg.inv(A) @ torch.linalg.inv(G.to(torch.float64)) @ A
    return (Hp / Hp[:, 2:, 2:]).to(dtype)


class LevelGrid:
    """The grids of one pyramid level: frame coordinates and ``grid_sample`` coordinates
    of its pixel centres, and the frame-to-level scale.

    Args:
        level: pyramid level (0: full resolution); a pixel is ``2**level`` full pixels.
        full: ``(H, W)`` of the full-resolution image.
        size: ``(h, w)`` of this level.
        dtype, device: of the grids.
    """

    def __init__(
        self, level: int, full: tuple[int, int], size: tuple[int, int], dtype: torch.dtype, device: torch.device
    ) -> None:
        h, w = size
        hf, wf = full
        s = max(hf, wf) / 2.0
        step = 2.0**level
        xs = (step * (torch.arange(w, dtype=torch.float64, device=device) + 0.5) - 0.5 - (wf - 1) / 2) / s
        ys = (step * (torch.arange(h, dtype=torch.float64, device=device) + 0.5) - 0.5 - (hf - 1) / 2) / s
        self.points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None].to(dtype)  # (1, h, w, 2)
        self.xs, self.ys = xs.to(dtype), ys.to(dtype)  # the frame is separable: x by column, y by row
        self.base = _base_grid(h, w, device, dtype)  # (1, h, w, 2), exact pixel centres
        self.base_x, self.base_y = self.base[0, :1, :, 0], self.base[0, :, :1, 1]  # (1, w), (h, 1)
        # frame units -> grid_sample units: frame -> level pixels (s / 2^l) -> normalised (2 / w, 2 / h).
        self.to_grid = torch.tensor([2 * s / (step * w), 2 * s / (step * h)], dtype=dtype, device=device)
        self.size = size
        self.full = full

    def sample(
        self, image: torch.Tensor, G: torch.Tensor, at_centres: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` sampled at ``G p`` for every pixel ``p`` of this level, and the weights
        ``(B, 1, h, w)`` of the pixels whose source lies inside the image.

        Written as a displacement from the pixel-centre grid, and, given ``at_centres``
        (``image`` sampled at that grid, see :meth:`centres`), as
        ``image + (sample(grid) - at_centres)``: ``grid_sample`` resolves a float32
        position to ``W * 2**-24`` px only, so the identity would otherwise leave residuals
        of 1e-7 whose L1 gradient (a sign) Adam scales up to a full step. This way the
        identity ``G`` reproduces ``image`` bit for bit (zero residual, zero gradient: an
        identity problem stays the identity at every level)."""
        gx, gy, inside = self._planes(G)
        grid = torch.stack((torch.where(inside, gx, 0.0), torch.where(inside, gy, 0.0)), -1)
        warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if at_centres is not None:
            warped = image + (warped - at_centres)
        return warped, inside[:, None].to(image.dtype)

    def _planes(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``grid_sample`` x and y coordinates of ``G p`` for every pixel ``p`` of this
        level and the mask of the points inside the image, as ``(B, h, w)`` planes.

        ``D = G - I`` applied to ``(p, 1)`` for every pixel, separably: a column term
        ``(x, 1)`` and a row term ``y``, one pass per plane; the planes are contiguous,
        so every pass runs along whole rows (a ``(B, h, w, 3)`` layout with its last axis
        sliced made each pass several times slower)."""
        D = G - torch.eye(3, dtype=G.dtype, device=G.device)
        cols = self.xs[None, :, None] * D[:, None, :, 0] + D[:, None, :, 2]  # (B, w, 3)
        rows = self.ys[None, :, None] * D[:, None, :, 1]  # (B, h, 3)
        rows, cols = rows.transpose(1, 2)[..., None], cols.transpose(1, 2)[:, :, None, :]  # (B, 3, h, 1), (B, 3, 1, w)
        dx, dy, dz = (rows[:, k] + cols[:, k] for k in range(3))  # (B, h, w) each (one broadcast add of all three was slower)
        den = 1.0 + dz
        positive = den > 1e-6
        den = torch.where(positive, den, 1.0)
        sx = (dx - self.xs * dz) / den
        sy = (dy - self.ys[:, None] * dz) / den
        gx = torch.addcmul(self.base_x, sx, self.to_grid[0])
        gy = torch.addcmul(self.base_y, sy, self.to_grid[1])
        inside = positive & (gx.abs() <= 1.0) & (gy.abs() <= 1.0)
        return gx, gy, inside

    def centres(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` as ``grid_sample`` reads it at the pixel-centre grid (within 1e-7 of it)."""
        grid = self.base.expand(image.shape[0], -1, -1, -1)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
