"""The centred pyramid (pyrdown_centred, build_centred_pyramid): the map between levels
that its Convention states, on ramps and through grid_sample, for even and odd sizes;
masks as box averages; the standard operator checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops.filters import gaussian_blur2d
from gradcv.core_ops.pyramid import build_centred_pyramid, pyrdown_centred


def _ramp(h: int, w: int, axis: str, device: str = "cpu") -> torch.Tensor:
    """f = x (column index) or f = y (row index), float64, (1, 1, h, w)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device), torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
    return (xs if axis == "x" else ys)[None, None]


@pytest.mark.parametrize("sigma", [0.0, 0.8, 1.5])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_level_pixel_sits_at_two_x_plus_half(sigma, axis, device):
    """On a linear ramp f = x, level-1 pixel x' holds 2 x' + 1/2 (away from the border,
    where the symmetric blur keeps the ramp): the Convention's map."""
    down = pyrdown_centred(_ramp(40, 48, axis, device), sigma).cpu()
    h, w = down.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    expected = 2 * (xs if axis == "x" else ys) + 0.5
    margin = 4
    inner = (slice(margin, -margin), slice(margin, -margin))
    assert torch.allclose(down[0, 0][inner], expected[inner], atol=1e-12)


def test_normalised_point_is_the_same_at_every_level(device):
    """Sampling each level at the same normalised points gives the same value of a
    smooth (linear) image: a normalised homography carries between levels unchanged."""
    img = 0.3 * _ramp(64, 96, "x", device) / 96 + 0.6 * _ramp(64, 96, "y", device) / 64
    pyramid = build_centred_pyramid(img, 4, sigma=0.0)
    grid = (torch.rand(1, 10, 10, 2, dtype=torch.float64) * 1.2 - 0.6).to(device)
    values = [F.grid_sample(level, grid, align_corners=False) for level in pyramid]
    for v in values[1:]:
        assert torch.allclose(v, values[0], atol=1e-12)


def test_odd_size_map_stated_in_convention(device):
    """Odd width: input normalised u is u' (W - 1) / W - 1 / W of the output's u'."""
    W = 33
    img = _ramp(8, W, "x", device)
    down = pyrdown_centred(img, 0.0)
    u_out = torch.linspace(-0.5, 0.5, 7, dtype=torch.float64, device=device)
    u_in = u_out * (W - 1) / W - 1 / W
    def at(image: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        grid = torch.stack([u, torch.zeros_like(u)], -1)[None, None]
        return F.grid_sample(image, grid, align_corners=False)[0, 0, 0]
    assert torch.allclose(at(down, u_out), at(img, u_in), atol=1e-12)


def test_matches_blur_then_box_average(photos, device):
    """The definition: OpenCV-sized Gaussian pre-blur (reflect border), then 2 x 2 means."""
    x = torch.from_numpy(photos[2]).permute(2, 0, 1)[None].contiguous().to(device)  # 300 x 449: odd width
    expected = F.avg_pool2d(gaussian_blur2d(x, None, 0.8), 2)
    assert torch.equal(pyrdown_centred(x, 0.8), expected)
    pyramid = build_centred_pyramid(x, 3, 0.8)
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(300, 449), (150, 224), (75, 112)]
    assert torch.equal(pyramid[1], expected)


def test_mask_is_a_box_average(device):
    mask = torch.zeros(1, 1, 8, 8, device=device)
    mask[..., :3, :] = 1.0
    down = pyrdown_centred(mask, sigma=0.0)
    assert down[0, 0, :, 0].tolist() == [1.0, 0.5, 0.0, 0.0]


def test_batched_equals_per_sample_and_dtype_kept(device):
    x = torch.rand(3, 2, 20, 18, dtype=torch.float64).to(device)
    batched = build_centred_pyramid(x, 3)
    for i in range(3):
        alone = build_centred_pyramid(x[i : i + 1], 3)
        assert all(torch.allclose(b[i : i + 1], a, atol=1e-15) for b, a in zip(batched, alone))
    assert all(p.dtype == torch.float64 for p in batched)
    empty = build_centred_pyramid(torch.zeros(0, 1, 16, 16, device=device), 2)
    assert empty[1].shape == (0, 1, 8, 8)


def test_no_change_to_input_and_one_level_is_input(device):
    x = torch.rand(1, 1, 16, 16, device=device)
    before = x.clone()
    pyramid = build_centred_pyramid(x, 1)
    pyrdown_centred(x)
    assert torch.equal(x, before) and len(pyramid) == 1 and pyramid[0] is x


def test_gradcheck(device):
    x = torch.rand(1, 2, 8, 10, dtype=torch.float64).to(device).requires_grad_(True)

    assert torch.autograd.gradcheck(lambda t: pyrdown_centred(t, 0.8), (x,), fast_mode=False)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: pyrdown_centred(torch.rand(1, 1, 8, 8), -1.0), ValueError, "sigma"),
        (lambda: pyrdown_centred(torch.rand(1, 1, 8, 8), float("nan")), ValueError, "sigma"),
        (lambda: pyrdown_centred(torch.rand(1, 1, 1, 8)), ValueError, "input"),
        (lambda: pyrdown_centred(torch.rand(8, 8)), ValueError, "input"),
        (lambda: build_centred_pyramid(torch.rand(1, 1, 8, 8), 0), ValueError, "levels"),
        (lambda: build_centred_pyramid(torch.rand(1, 1, 8, 8), 2.0), ValueError, "levels"),
        (lambda: build_centred_pyramid(torch.rand(1, 1, 8, 8), True), ValueError, "levels"),
    ],
)
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()
