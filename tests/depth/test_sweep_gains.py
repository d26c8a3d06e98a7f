"""The photometric map the solver's sweep puts every source through: gain and bias matched
over the correspondences of a quick sweep (clipped values left out), not over whole images."""

from __future__ import annotations

import torch

from gradcv.depth.render import RenderedScene
from gradcv.depth.solver import _correspondence_gains, _quick_sweep
from tests.depth._tiny import on, tiny_plane, tiny_scene

GAINS = torch.tensor([1.35, 0.9, 1.1])  # the reference's gain clips its bright values
BIASES = torch.tensor([0.04, -0.02, 0.01])


def _exposed(out: RenderedScene) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, 3, C, H, W)`` views under ``GAINS``/``BIASES`` (clipped to [0, 1]) and their usable masks."""
    views = (out.images * GAINS.view(3, 1, 1, 1) + BIASES.view(3, 1, 1, 1)).clamp(0, 1)[None]
    usable = ((views > 0.002) & (views < 0.998)).to(views.dtype)
    return views, usable


def _poses(out: RenderedScene) -> list[torch.Tensor]:
    E_ref_inv = torch.linalg.inv(out.extrinsics[0])
    return [(out.extrinsics[s] @ E_ref_inv)[None] for s in (1, 2)]


def _true_map(s: int) -> tuple[float, float]:
    """``ref = a * source + b`` of the unclipped values."""
    a = float(GAINS[0] / GAINS[s])
    return a, float(BIASES[0] - a * BIASES[s])


def test_gains_at_the_true_depth_are_exact_where_whole_image_moments_are_not(device) -> None:
    out = tiny_plane()  # a textured plane: the views see its texture at the same scale
    views, usable = _exposed(out)
    assert 0.03 < float((usable[0, 0] == 0).float().mean()) < 0.3  # the reference is clipped (measured 0.12)
    depth, valid = out.depths[0][None], out.valid[0][None]
    gain, bias = on(device, _correspondence_gains, views, usable, out.intrinsics[None], _poses(out), 0, depth, valid)
    assert gain.shape == bias.shape == (1, 3, 1, 1, 1)
    assert float(gain[0, 0]) == 1.0 and float(bias[0, 0]) == 0.0
    mu, sd = views.mean((2, 3, 4)), views.std((2, 3, 4))
    for s in (1, 2):
        a, b = _true_map(s)
        # Measured: gains within 0.13 % and 0.73 %, biases within 0.002 of the truth; the
        # whole images' moments are off by 3.4 % and 6.1 % (clipping and what each view
        # alone sees).
        assert abs(float(gain[0, s]) / a - 1) < 0.015, (s, float(gain[0, s]), a)
        assert abs(float(bias[0, s]) - b) < 0.005, (s, float(bias[0, s]), b)
        assert abs(float(sd[0, 0] / sd[0, s]) / a - 1) > 0.025


def test_clipped_values_are_left_out_of_the_moments(device) -> None:
    out = tiny_plane()
    views, usable = _exposed(out)
    depth, valid = out.depths[0][None], out.valid[0][None]
    gain, _ = on(device, _correspondence_gains, views, None, out.intrinsics[None], _poses(out), 0, depth, valid)
    # Without the masks the clipped reference values pull the gain down (measured 3.6 % and 6.0 %).
    for s in (1, 2):
        assert float(gain[0, s]) < 0.97 * _true_map(s)[0]


def test_no_correspondence_keeps_the_identity_and_batches_are_independent(device) -> None:
    out = tiny_scene()
    views, usable = _exposed(out)
    depth, valid = out.depths[0][None], out.valid[0][None]
    views2, usable2, depth2 = torch.cat([views, views]), torch.cat([usable, usable]), torch.cat([depth, depth])
    valid2 = torch.cat([valid, torch.zeros_like(valid)])  # the second problem has no pixel to match
    K = out.intrinsics[None].expand(2, -1, -1, -1)
    poses = [p.expand(2, -1, -1) for p in _poses(out)]
    gain, bias = on(device, _correspondence_gains, views2, usable2, K, poses, 0, depth2, valid2)
    one, one_bias = on(device, _correspondence_gains, views, usable, out.intrinsics[None], _poses(out), 0, depth, valid)
    torch.testing.assert_close(gain[:1], one)
    torch.testing.assert_close(bias[:1], one_bias)
    assert torch.equal(gain[1], torch.ones_like(gain[1])) and torch.equal(bias[1], torch.zeros_like(bias[1]))


def test_quick_sweep_gives_its_depth_at_the_views_size(device) -> None:
    out = tiny_plane()
    views = out.images[None]
    rng = torch.tensor([[0.5, 100.0]])
    narrowed, depth, valid = on(device, _quick_sweep, views, out.intrinsics[None], out.extrinsics[None], 0, rng, 0, 48)
    assert narrowed.shape == (1, 2) and depth.shape == valid.shape == (1, 1, 48, 64) and valid.dtype == torch.bool
    # The sweep runs at 16 x 12 and is upsampled by 4 (nearest): 4 x 4 blocks of one value.
    assert torch.equal(depth, depth[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1))
    assert float(valid.float().mean()) > 0.9
    near, far = narrowed[0].tolist()
    assert near < 4.0 < far  # the plane is at 4 m
    # Its median depth is the plane's within a few of its coarse planes (measured 3.79 m).
    assert abs(float(depth[valid].median()) - 4.0) < 0.6
