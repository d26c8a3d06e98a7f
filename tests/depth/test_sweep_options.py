"""plane_sweep's robust options on small rendered scenes: sub-plane refinement, the per-pixel
minimum over sources, shiftable windows and SGM plane choice, each against the plain
winner-take-all; defaults unchanged; bad option values.

Every threshold below was measured first (the value is in a comment) and asserted with a margin.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, GradcvError
from gradcv.depth.plane_sweep import PlaneSweepResult, plane_sweep
from gradcv.depth.render import RenderedScene, render_scene
from gradcv.depth.scene import SceneConfig
from tests.depth._tiny import on, tiny_plane, tiny_scene, true_range



@pytest.fixture(scope="module")
def scene() -> RenderedScene:
    return tiny_scene()


@pytest.fixture(scope="module")
def plane() -> RenderedScene:
    return tiny_plane()



def _sweep(out: RenderedScene, **kwargs: object) -> PlaneSweepResult:
    return plane_sweep(out.images[None], out.intrinsics[None], out.extrinsics[None], **kwargs)  # type: ignore[arg-type]


def _rel(result: PlaneSweepResult, out: RenderedScene, mask: torch.Tensor) -> torch.Tensor:
    gt = out.depths[:1][mask]
    return (result.depth[mask] - gt).abs() / gt


def _seen(out: RenderedScene) -> torch.Tensor:
    return out.valid[:1] & out.visibility[1:].any(0, keepdim=True)


def test_subpixel_leaves_the_plane_depths_and_is_more_accurate(plane: RenderedScene, device) -> None:
    # A fronto-parallel plane at z = 4 between the planes of a 16-plane sweep of (3, 6).
    mask = _seen(plane)
    assert mask.float().mean() > 0.5
    rng = (3.0, 6.0)
    wta = on(device, _sweep, plane, depth_range=rng, planes=16)
    sub = on(device, _sweep, plane, depth_range=rng, planes=16, subpixel=True)
    planes = sub.plane_depths[0]
    assert torch.equal(planes, wta.plane_depths[0])
    assert torch.equal(sub.valid, wta.valid) and torch.equal(sub.cost, wta.cost)

    def on_a_plane(depth: torch.Tensor) -> torch.Tensor:
        return ((depth[:, None] - planes[None]).abs() / planes[None]).min(1).values < 1e-5

    assert on_a_plane(wta.depth[mask]).all()
    # Measured: 0.4 % of the refined depths fall on a plane depth.
    assert on_a_plane(sub.depth[mask]).float().mean() < 0.05
    d = sub.depth[sub.valid]
    assert (d >= rng[0] * (1 - 1e-5)).all() and (d <= rng[1] * (1 + 1e-5)).all()
    wta_err, sub_err = _rel(wta, plane, mask).mean().item(), _rel(sub, plane, mask).mean().item()
    # Measured AbsRel: winner-take-all 0.0223, refined 0.0055 (32 planes: 0.0110 and 0.0046).
    assert sub_err < 0.01
    assert sub_err < 0.4 * wta_err


def test_subpixel_needs_three_planes(scene: RenderedScene, device) -> None:
    # With two planes there is no parabola to fit: the depths stay the plane depths.
    rng = true_range(scene)
    a = on(device, _sweep, scene, depth_range=rng, planes=2)
    b = on(device, _sweep, scene, depth_range=rng, planes=2, subpixel=True)
    assert torch.equal(a.depth, b.depth) and torch.equal(a.valid, b.valid)


def test_min_over_sources_helps_where_one_source_sees(scene: RenderedScene, device) -> None:
    rng = true_range(scene)
    count = scene.visibility[1:].sum(0, keepdim=True)
    one = scene.valid[:1] & (count == 1)
    both = scene.valid[:1] & (count == 2)
    # Measured: 1396 reference pixels are seen by exactly one of the two sources.
    assert one.sum() > 500
    mean = on(device, _sweep, scene, depth_range=rng, planes=32)
    least = on(device, _sweep, scene, depth_range=rng, planes=32, aggregation="min")
    mean_err, least_err = _rel(mean, scene, one).mean().item(), _rel(least, scene, one).mean().item()
    # Measured AbsRel on them: mean 0.1048, min 0.0700; gross (> 10 %): 0.244 and 0.165.
    assert least_err < 0.8 * mean_err
    assert (_rel(least, scene, one) > 0.1).float().mean() < 0.85 * (_rel(mean, scene, one) > 0.1).float().mean()
    # Where both sources see the pixel the minimum is no worse: measured 0.0332 and 0.0288
    # (seeds 1 and 2: 0.0403 / 0.0420 and 0.0441 / 0.0432).
    assert _rel(least, scene, both).mean() < 1.15 * _rel(mean, scene, both).mean()
    # The minimum's cost is never above the mean's at the same plane choice.
    assert torch.equal(least.valid, mean.valid)
    assert (least.cost[least.valid] <= mean.cost[mean.valid] + 1e-6).all()


def test_shiftable_windows_help_near_depth_edges(device) -> None:
    # Seed 1: on seed 0 the gain is smaller (0.1067 -> 0.1005, 6 %), on seeds 2 and 3 it is
    # 12 % and 6 %; seed 1's 16 % leaves a margin.
    out = tiny_scene(1)
    near = F.max_pool2d(out.edges[:1].float(), 5, 1, 2) > 0  # within 2 px (half the window) of a depth edge
    mask = _seen(out) & near
    assert mask.sum() > 500  # measured 1426
    rng = true_range(out)
    fixed = on(device, _sweep, out, depth_range=rng, planes=32, window=5)
    shifted = on(device, _sweep, out, depth_range=rng, planes=32, window=5, shiftable=True)
    fixed_err, shifted_err = _rel(fixed, out, mask).mean().item(), _rel(shifted, out, mask).mean().item()
    # Measured AbsRel near edges: centred windows 0.0898, shiftable 0.0754.
    assert shifted_err < 0.92 * fixed_err
    # A window of one has nothing to shift.
    one = on(device, _sweep, out, depth_range=rng, planes=8, window=1)
    assert torch.equal(one.depth, on(device, _sweep, out, depth_range=rng, planes=8, window=1, shiftable=True).depth)


def test_sgm_reduces_gross_outliers(device) -> None:
    # Image noise (sigma 0.03) and a 3x3 window make the winner-take-all blotchy.
    out = render_scene(SceneConfig(height=48, width=64, num_views=3, baseline=1.0, supersampling=1, noise_sigma=0.03), seed=0)
    mask = _seen(out)
    rng = true_range(out)
    wta = on(device, _sweep, out, depth_range=rng, planes=32, window=3)
    sgm = on(device, _sweep, out, depth_range=rng, planes=32, window=3, sgm=(0.05, 0.2))
    wta_gross = (_rel(wta, out, mask) > 0.1).float().mean().item()
    sgm_gross = (_rel(sgm, out, mask) > 0.1).float().mean().item()
    # Measured: winner-take-all 0.210 of the pixels off by more than 10 %, SGM 0.144
    # (seeds 1-3: 0.190 -> 0.114, 0.235 -> 0.172, 0.220 -> 0.120).
    assert sgm_gross < 0.8 * wta_gross
    # SGM only chooses the plane: the cost returned is the unaggregated cost of that plane,
    # never below the winner-take-all's least cost, and equal to it where both agree.
    # (SGM may choose, at a few pixels, a plane no source sees there: measured 4 of 3060
    # pixels lose their validity, although the docstring's ``valid`` says "seen for at
    # least one plane"; see the helper's report.)
    assert not (sgm.valid & ~wta.valid).any()
    assert (wta.valid & ~sgm.valid).sum() < 0.01 * wta.valid.sum()
    v = sgm.valid
    assert (sgm.cost[v] >= wta.cost[v] - 1e-7).all()
    same = v & (sgm.depth == wta.depth)
    assert torch.equal(sgm.cost[same], wta.cost[same])
    assert torch.isin(sgm.depth[v], sgm.plane_depths[0]).all()


def test_sgm_helps_without_noise(scene: RenderedScene, device) -> None:
    mask = _seen(scene)
    rng = true_range(scene)
    wta = on(device, _sweep, scene, depth_range=rng, planes=32)
    sgm = on(device, _sweep, scene, depth_range=rng, planes=32, sgm=(0.02, 0.2))
    # Measured: gross outliers 0.145 (winner-take-all, 5x5 window) and 0.131 (SGM).
    assert (_rel(sgm, scene, mask) > 0.1).float().mean() < 0.95 * (_rel(wta, scene, mask) > 0.1).float().mean()


def test_defaults_unchanged(scene: RenderedScene, device) -> None:
    rng = true_range(scene)
    implicit = on(device, _sweep, scene, depth_range=rng, planes=12)
    explicit = on(device, _sweep, scene, depth_range=rng, planes=12, aggregation="mean", shiftable=False, subpixel=False, sgm=None)
    for a, b in zip(implicit, explicit):
        assert torch.equal(a, b)


def test_all_options_chunking_and_batch(scene: RenderedScene) -> None:
    other = tiny_scene(1)
    ranges = torch.tensor([true_range(scene), true_range(other)])
    options = dict(planes=12, aggregation="min", shiftable=True, subpixel=True, sgm=(0.01, 0.1))
    a = _sweep(scene, depth_range=tuple(ranges[0].tolist()), chunk=12, **options)
    b = _sweep(scene, depth_range=tuple(ranges[0].tolist()), chunk=5, **options)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    batched = plane_sweep(torch.stack([scene.images, other.images]), torch.stack([scene.intrinsics, other.intrinsics]),
                          torch.stack([scene.extrinsics, other.extrinsics]), depth_range=ranges, **options)
    for i, s in enumerate((scene, other)):
        single = _sweep(s, depth_range=tuple(ranges[i].tolist()), **options)
        assert torch.equal(batched.valid[i : i + 1], single.valid)
        torch.testing.assert_close(batched.depth[i : i + 1], single.depth)
        torch.testing.assert_close(batched.cost[i : i + 1], single.cost)
    assert torch.isfinite(batched.depth).all()
    assert batched.valid.float().mean() > 0.5


def test_bad_option_values(scene: RenderedScene) -> None:
    cases = [
        (ArgumentValueError, "aggregation", dict(aggregation="max")),
        (ArgumentValueError, "aggregation", dict(aggregation=None)),
        (ArgumentTypeError, "sgm", dict(sgm=(1,))),
        (ArgumentTypeError, "sgm", dict(sgm=(0.1, 0.2, 0.3))),
        (ArgumentTypeError, "sgm", dict(sgm=0.1)),
        (ArgumentTypeError, "sgm", dict(sgm="ab")),
        (ArgumentTypeError, "shiftable", dict(shiftable="yes")),
        (ArgumentTypeError, "shiftable", dict(shiftable=1)),
        (ArgumentTypeError, "subpixel", dict(subpixel=1)),
        (ArgumentTypeError, "subpixel", dict(subpixel=None)),
    ]
    for kind, name, kwargs in cases:
        with pytest.raises(kind) as info:
            _sweep(scene, depth_range=(1.0, 10.0), planes=4, **kwargs)
        assert info.value.name == name and str(info.value).startswith(name), str(info.value)


@pytest.mark.parametrize("pair", [(0.5, 0.1), (-0.1, 0.5), (0.1, float("inf")), (float("nan"), 0.5)])
def test_bad_sgm_penalties(scene: RenderedScene, pair: tuple[float, float]) -> None:
    with pytest.raises(ArgumentValueError) as info:
        _sweep(scene, depth_range=(1.0, 10.0), planes=4, sgm=pair)
    # Named after semi_global_aggregation's p1 / p2 today (see the helper's report).
    assert isinstance(info.value, GradcvError) and info.value.name in ("sgm", "p1", "p2")
