"""Sample inputs for the kernel check of the geometry operators: batches of 3, well
conditioned (rotations, near-identity homographies, exact correspondences), float32."""

from __future__ import annotations

import torch

B = 3


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image(c: int = 2, h: int = 9, w: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, c, h, w, generator=generator(seed))


def points(n: int = 6, d: int = 2, scale: float = 10.0, seed: int = 1) -> torch.Tensor:
    return torch.rand(B, n, d, generator=generator(seed)) * scale


def axis_angle(seed: int = 2) -> torch.Tensor:
    """Rotations of 0.3 to 2.5 rad about random axes (away from 0 and pi, where the
    conversions switch branch)."""
    g = generator(seed)
    axis = torch.nn.functional.normalize(torch.randn(B, 3, generator=g), dim=-1)
    return axis * (0.3 + 2.2 * torch.rand(B, 1, generator=g))


def rotation(seed: int = 2) -> torch.Tensor:
    return torch.linalg.matrix_exp(_skew(axis_angle(seed)))


def pose(seed: int = 3) -> torch.Tensor:
    """Rigid transforms (B, 4, 4)."""
    T = torch.eye(4).repeat(B, 1, 1)
    T[:, :3, :3] = rotation(seed)
    T[:, :3, 3] = torch.randn(B, 3, generator=generator(seed))
    return T


def homography(seed: int = 4, strength: float = 0.05) -> torch.Tensor:
    """Near-identity homographies of a 10 x 10 pixel frame (B, 3, 3)."""
    g = generator(seed)
    spread = torch.tensor([[1.0, 1.0, 10.0], [1.0, 1.0, 10.0], [0.01, 0.01, 0.0]])
    return torch.eye(3) + strength * torch.randn(B, 3, 3, generator=g) * spread


def camera_matrix() -> torch.Tensor:
    """Pinhole intrinsics (B, 3, 3), a different focal length per sample."""
    K = torch.tensor([[8.0, 0.0, 5.0], [0.0, 9.0, 4.0], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)
    K[:, :2, :2] *= torch.arange(1.0, B + 1.0).view(B, 1, 1)
    return K


def quaternion(seed: int = 5) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(B, 4, generator=generator(seed)), dim=-1)


def _skew(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).view(*v.shape[:-1], 3, 3)
