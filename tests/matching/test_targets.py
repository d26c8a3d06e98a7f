"""matching.targets.random_homography: the attack benchmark's target protocol."""

from __future__ import annotations

import math

import pytest
import torch

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError
from gradcv.core_ops.geometry.linalg import transform_points
from gradcv.matching.targets import random_homography

H_, W_ = 300, 400
CORNERS = torch.tensor([[0.0, 0.0], [W_ - 1.0, 0.0], [W_ - 1.0, H_ - 1.0], [0.0, H_ - 1.0]], dtype=torch.float64)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_without_randomness() -> None:
    H = random_homography(3, H_, W_, max_rotation=0.0, scale=(1.0, 1.0), jitter=0.0, generator=_gen())
    torch.testing.assert_close(H, torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-9, rtol=0)


def test_seeded_and_independent_of_n() -> None:
    a = random_homography(5, H_, W_, generator=_gen(3))
    b = random_homography(5, H_, W_, generator=_gen(3))
    c = random_homography(2, H_, W_, generator=_gen(3))
    assert a.dtype == torch.float64 and a.shape == (5, 3, 3)
    assert torch.equal(a, b) and torch.equal(a[:1], c[:1])
    assert not torch.equal(a[0], a[1])
    assert torch.equal(a[:, 2, 2], torch.ones(5, dtype=torch.float64))


def test_corners_within_the_protocol() -> None:
    """Without jitter the corners are a similarity of the originals about the centre (rotation
    and scale in range); with it, each corner is at most jitter * size away from that."""
    n, rot, (lo, hi), jit = 200, 20.0, (0.8, 1.25), 0.1
    sim = random_homography(n, H_, W_, max_rotation=rot, scale=(lo, hi), jitter=0.0, generator=_gen(1))
    full = random_homography(n, H_, W_, max_rotation=rot, scale=(lo, hi), jitter=jit, generator=_gen(1))
    p = transform_points(sim, CORNERS.expand(n, 4, 2))
    centre = CORNERS.mean(0)
    v0, v1 = CORNERS[0] - centre, p[:, 0] - centre
    scale = v1.norm(dim=-1) / v0.norm()
    angle = torch.rad2deg(torch.atan2(v0[0] * v1[:, 1] - v0[1] * v1[:, 0], (v0 * v1).sum(-1)))
    assert bool((scale >= lo - 1e-9).all() and (scale <= hi + 1e-9).all())
    assert bool((angle.abs() <= rot + 1e-9).all()) and float(angle.abs().max()) > 0.8 * rot
    moved = transform_points(full, CORNERS.expand(n, 4, 2)) - p
    assert bool((moved[..., 0].abs() <= jit * W_ + 1e-6).all() and (moved[..., 1].abs() <= jit * H_ + 1e-6).all())
    assert float(moved.abs().amax()) > 0.5 * jit * H_
    assert bool(torch.isfinite(torch.linalg.inv(full)).all())


def test_global_generator_and_empty() -> None:
    torch.manual_seed(0)
    a = random_homography(2, 64, 64)
    torch.manual_seed(0)
    assert torch.equal(a, random_homography(2, 64, 64))
    assert random_homography(0, 64, 64).shape == (0, 3, 3)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(n=-1), ArgumentValueError, "n"),
        (dict(n=1.5), ArgumentTypeError, "n"),
        (dict(height=1), ArgumentValueError, "height"),
        (dict(max_rotation=-1.0), ArgumentValueError, "max_rotation"),
        (dict(scale=(1.2, 0.8)), ArgumentValueError, "scale"),
        (dict(scale=(0.0, 1.0)), ArgumentValueError, "scale"),
        (dict(scale=1.0), ArgumentTypeError, "scale"),
        (dict(jitter=0.25), ArgumentValueError, "jitter"),
        (dict(jitter=math.nan), ArgumentValueError, "jitter"),
        (dict(generator=0), ArgumentTypeError, "generator"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, name: str) -> None:
    args = dict(n=1, height=H_, width=W_)
    args.update(kwargs)
    n, h, w = args.pop("n"), args.pop("height"), args.pop("width")
    with pytest.raises(error, match=name):
        random_homography(n, h, w, **args)
