"""make_pairs (DeTone's protocol and the full-image variant) and the corner error."""

from __future__ import annotations

import pytest
import torch

from gradcv.core_ops.geometry import warp_perspective
from gradcv.registration.data import corner_error, make_pairs
from tests.helpers import to_tensor


@pytest.fixture(scope="module")
def photos_chw(photos):
    return [to_tensor(p)[0] for p in photos]


@pytest.mark.parametrize("protocol, size", [("detone", 128), ("full", 256)])
def test_make_pairs_shapes_and_seed(photos_chw, protocol, size):
    src, dst, H = make_pairs(photos_chw, 3, protocol=protocol, seed=3)
    assert src.shape == dst.shape == (3, 3, size, size)
    assert H.shape == (3, 3, 3) and H.dtype == torch.float64
    again = make_pairs(photos_chw, 3, protocol=protocol, seed=3)
    other = make_pairs(photos_chw, 3, protocol=protocol, seed=4)
    assert all(torch.equal(a, b) for a, b in zip((src, dst, H), again))
    assert not torch.equal(H, other[2])


@pytest.mark.parametrize("protocol, rho", [("detone", 32), ("full", 32), ("detone", 5)])
def test_homography_maps_src_onto_dst(photos_chw, protocol, rho):
    """The convention the solver is scored against: warp_perspective(src, H) == dst
    wherever the source point lies inside src (bilinear samples of the same photograph at
    the same points; a 1 px erosion keeps the border blend out)."""
    src, dst, H = make_pairs(photos_chw, 4, protocol=protocol, rho=rho, seed=0)
    size = tuple(src.shape[-2:])
    warped = warp_perspective(src, H.float(), size)
    inside = warp_perspective(torch.ones_like(src[:, :1]), H.float(), size)
    inside = -torch.nn.functional.max_pool2d(-(inside > 0.999).float(), 3, 1, 1)
    assert inside.mean() > 0.3
    err = ((warped - dst).abs() * inside).amax()
    assert err < 1e-4
    # And not the inverse convention.
    wrong = warp_perspective(src, torch.linalg.inv(H).float(), size)
    assert ((wrong - dst).abs() * inside).mean() > 10 * ((warped - dst).abs() * inside).mean() + 1e-3


def test_corner_moves_within_rho(photos_chw):
    """DeTone: H^-1 (dst -> src) moves each patch corner by at most rho per axis."""
    rho = 7
    _, _, H = make_pairs(photos_chw, 16, protocol="detone", rho=rho, seed=1)
    c = torch.tensor([[0.0, 0.0, 1.0], [127.0, 0.0, 1.0], [127.0, 127.0, 1.0], [0.0, 127.0, 1.0]], dtype=torch.float64)
    p = c @ torch.linalg.inv(H).transpose(-1, -2)
    moves = p[..., :2] / p[..., 2:] - c[:, :2]
    assert moves.abs().max() <= rho + 1e-9
    assert moves.abs().max() > rho / 2


def test_make_pairs_tensor_input_and_empty():
    imgs = torch.rand(2, 1, 300, 400)
    src, dst, H = make_pairs(imgs, 0, protocol="detone")
    assert src.shape == (0, 1, 128, 128) and H.shape == (0, 3, 3)
    src, _, _ = make_pairs(imgs, 2, protocol="full", rho=16)
    assert src.shape == (2, 1, 256, 256)


def test_make_pairs_bad_input():
    with pytest.raises(ValueError, match="protocol"):
        make_pairs(torch.rand(1, 1, 300, 400), 1, protocol="coco")
    with pytest.raises(ValueError, match="images"):
        make_pairs(torch.rand(300, 400), 1)
    with pytest.raises(TypeError, match="images"):
        make_pairs(torch.zeros(1, 1, 300, 400, dtype=torch.uint8), 1)
    with pytest.raises(ValueError, match="rho"):
        make_pairs(torch.rand(1, 1, 300, 400), 1, rho=-1)


def test_corner_error():
    eye = torch.eye(3, dtype=torch.float64)[None].repeat(2, 1, 1)
    shift = eye.clone()
    shift[0, 0, 2], shift[1, 1, 2] = 3.0, -4.0
    assert torch.allclose(corner_error(shift, eye, (10, 20)), torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert corner_error(eye, eye, (10, 20)).abs().max() == 0
    with pytest.raises(ValueError, match="H_true"):
        corner_error(eye, eye[0], (10, 20))
