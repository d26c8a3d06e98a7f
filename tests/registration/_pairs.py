"""Helpers shared by the registration tests: real-photograph crops and known warps."""

from __future__ import annotations

import math

import numpy as np
import torch

from gradcv.core_ops.geometry import warp_perspective
from tests.helpers import to_tensor


def uncertainty_at(src: torch.Tensor, dst: torch.Tensor, H: torch.Tensor, motion: str = "homography",
                   photometric: str = "exposure", loss: str | None = None) -> torch.Tensor:
    """``registration.corner_uncertainty`` at the pixel homography ``H`` (src -> dst), weighted
    by where src's warp is inside, judged with ``loss`` (None: as a stationary result)."""
    from gradcv.registration.sampling import LevelGrid, frame_corners, frame_matrix
    from gradcv.registration.uncertainty import corner_uncertainty

    _, _, h, w = src.shape
    device, dtype = src.device, src.dtype
    A = frame_matrix(h, w, torch.float64, device)
    G = A @ torch.linalg.inv(H.to(device, torch.float64)) @ torch.linalg.inv(A)
    # Scaled to G[2, 2] = 1 as the solver's matrices are: the inverse of a DeTone truth with
    # det(H) < 0 has G[2, 2] < 0, which puts every point behind the camera (no pixel inside).
    G = (G / G[..., 2:, 2:]).to(dtype)
    grid = LevelGrid(0, (h, w), (h, w), dtype, device)
    _, inside = grid.sample(src, G)
    return corner_uncertainty(grid, src, dst, G, inside, frame_corners(h, w, dtype, device), motion, photometric, loss=loss)


def gray(photo: np.ndarray) -> torch.Tensor:
    """HxWx3 float photograph -> (1, 1, H, W) BT.601 grey."""
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return to_tensor(np.ascontiguousarray(photo @ w))


def warped_pair(canvas: torch.Tensor, H: torch.Tensor, top: int, left: int, size: tuple[int, int]):
    """``src`` = the ``size`` crop of ``canvas`` at ``(top, left)``; ``dst`` = the same crop of
    the canvas warped so that ``H`` (pixel, crop frame) takes ``src`` to ``dst``. Both are
    real content wherever ``H`` keeps the crop inside the canvas (no black border)."""
    T = torch.tensor([[1.0, 0.0, left], [0.0, 1.0, top], [0.0, 0.0, 1.0]], dtype=torch.float64)
    H_canvas = T @ H.to(torch.float64) @ torch.linalg.inv(T)
    warped = warp_perspective(canvas, H_canvas[None].to(canvas.dtype), tuple(canvas.shape[-2:]))
    h, w = size
    return canvas[..., top : top + h, left : left + w].contiguous(), warped[..., top : top + h, left : left + w].contiguous()


def similarity(angle_deg: float, scale: float, tx: float, ty: float, centre: tuple[float, float]) -> torch.Tensor:
    """Pixel similarity: rotate by ``angle_deg`` and scale about ``centre``, then translate."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    cx, cy = centre
    return torch.tensor(
        [[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


#: The devices this machine has (the ``device`` fixture's, for module-scoped fixtures).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def on(device: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run on ``device``: tensor arguments moved there, tensor results
    (also inside the solver's result) brought back to the CPU for the checks. On the CPU it
    is the call itself (:func:`tests.depth._tiny.on`)."""
    from tests.depth._tiny import on as _on

    return _on(device, fn, *args, **kwargs)


def exact(a: torch.Tensor, b: torch.Tensor, device: str) -> bool:
    """``a == b`` bit for bit on the CPU; to 1e-6 on another device, whose batched linear
    algebra (``linalg.inv``/``solve`` of the frame matrices) may round the last bit of an
    exact identity differently. Both on the CPU."""
    if device == "cpu":
        return torch.equal(a, b)
    return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, rtol=0, atol=1e-6)
