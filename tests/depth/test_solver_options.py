"""The depth solver's newer options: DepthConfig validation of each, the number of levels
solved, runs with each option on a tiny scene, the softmin source aggregation against min
and mean, and batching with coarse corrections."""

from __future__ import annotations

import math

import pytest
import torch

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, GradcvError
from gradcv.depth.config import DepthConfig
from gradcv.depth.render import RenderedScene, SceneConfig, render_scene
from gradcv.depth.solver import _away_from_depth_edges, _Level, _narrow_range, estimate_depth, pyramid_levels, solved_levels
from tests.depth._tiny import QUICK, _move, on, tiny_plane, tiny_scene




@pytest.fixture(scope="module")
def scene() -> RenderedScene:
    return tiny_scene()


def _inputs(out: RenderedScene) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return out.images[None], out.intrinsics[None], out.extrinsics[None]


def _range(out: RenderedScene) -> tuple[float, float]:
    d = out.depths[0][out.valid[0]]
    return float(d.min()) * 0.9, float(d.max()) * 1.1


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize("field,value,kind", [
    ("sweep_window", 4, ArgumentValueError),
    ("sweep_window", 0, ArgumentValueError),
    ("sweep_window", 5.0, ArgumentTypeError),
    ("range_planes", 1, ArgumentValueError),
    ("range_planes", -2, ArgumentValueError),
    ("sgm_p1", -0.1, ArgumentValueError),
    ("sgm_p1", math.inf, ArgumentValueError),
    ("sgm_p2", -0.1, ArgumentValueError),
    ("sgm_p2", math.nan, ArgumentValueError),
    ("sgm_p2", "0.1", ArgumentTypeError),
    ("correction_levels", -1, ArgumentValueError),
    ("correction_levels", 1.5, ArgumentTypeError),
    ("correction_gate", -0.1, ArgumentValueError),
    ("correction_gate", "0.2", ArgumentTypeError),
    ("saturation", -0.1, ArgumentValueError),
    ("saturation", 0.5, ArgumentValueError),
    ("saturation", 0.7, ArgumentValueError),
    ("saturation", math.nan, ArgumentValueError),
    ("saturation", "x", ArgumentTypeError),
    ("saturation", True, ArgumentTypeError),
    ("image_sigma", -1, ArgumentValueError),
    ("image_sigma", math.inf, ArgumentValueError),
    ("image_sigma", "0.6", ArgumentTypeError),
    ("full_resolution_loss", "yes", ArgumentTypeError),
    ("full_resolution_loss", 1, ArgumentTypeError),
    ("aggregation", "max", ArgumentValueError),
    ("aggregation", None, ArgumentTypeError),
    ("softmin_temperature", 0.0, ArgumentValueError),
    ("softmin_temperature", -0.02, ArgumentValueError),
    ("softmin_temperature", math.inf, ArgumentValueError),
])
def test_config_rejects_bad_values(field: str, value: object, kind: type) -> None:
    for make in (lambda: DepthConfig(**{field: value}), lambda: DepthConfig.default().replace(**{field: value}),
                 lambda: DepthConfig.paper(**{field: value})):
        with pytest.raises(kind) as info:
            make()
        assert isinstance(info.value, GradcvError)
        assert info.value.name == field and str(info.value).startswith(field), str(info.value)


def test_config_rejects_p2_below_p1() -> None:
    with pytest.raises(ArgumentValueError) as info:
        DepthConfig(sgm_p1=0.05, sgm_p2=0.01)
    assert info.value.name == "sgm_p2" and str(info.value).startswith("sgm_p2")
    # p2 = 0 turns SGM off (winner-take-all), whatever p1; p2 = p1 is allowed.
    DepthConfig(sgm_p1=0.05, sgm_p2=0.0)
    DepthConfig(sgm_p1=0.05, sgm_p2=0.05)


def test_config_accepts_edge_values() -> None:
    config = DepthConfig(sweep_window=1, range_planes=0, correction_levels=0,
                         full_resolution_loss=True, aggregation="softmin", softmin_temperature=1e-9)
    assert config.range_planes == 0 and config.correction_levels == 0
    DepthConfig(range_planes=2, sgm_p1=0.0, sgm_p2=0.0)
    for aggregation in ("mean", "min", "softmin"):
        assert DepthConfig(aggregation=aggregation).aggregation == aggregation


def test_estimate_depth_rejects_bad_overrides(scene: RenderedScene) -> None:
    with pytest.raises(ArgumentValueError, match="^softmin_temperature"):
        estimate_depth(*_inputs(scene), softmin_temperature=0.0)
    with pytest.raises(ArgumentTypeError, match="^full_resolution_loss"):
        estimate_depth(*_inputs(scene), full_resolution_loss="yes")


# ----------------------------------------------------------------------------- levels


def test_pyramid_levels() -> None:
    assert pyramid_levels(DepthConfig(scales=7, min_size=8), 48, 64) == 3  # 48, 24, 12 (6 < 8)
    assert pyramid_levels(DepthConfig(scales=2, min_size=8), 48, 64) == 2
    assert pyramid_levels(DepthConfig(scales=7, min_size=4), 12, 16) == 2
    assert pyramid_levels(DepthConfig(scales=7, min_size=8), 12, 16) == 1
    assert pyramid_levels(DepthConfig(scales=1), 480, 640) == 1


@pytest.mark.parametrize("overrides,given,expected", [
    (dict(sweep_level=0), False, 1),
    (dict(sweep_level=1), False, 2),
    (dict(sweep_level=5), False, 3),  # never more than the pyramid has
    (dict(sweep_level=1, scales=1), False, 1),
    (dict(initialisation="constant", scales=3), False, 3),
    (dict(initialisation="constant", scales=3, full_resolution_loss=True), False, 3),
    (dict(initialisation="uniform_random", scales=2), False, 2),
    (dict(sweep_level=0, scales=3), True, 3),  # a given start solves the whole pyramid
])
def test_solved_levels_match_the_result(scene: RenderedScene, overrides: dict, given: bool, expected: int, device) -> None:
    config = DepthConfig.default(**{**QUICK, "iterations": 2, **overrides})
    initial = scene.depths[:1].clamp_min(1.0) if given else None
    result = on(device, estimate_depth, *_inputs(scene), depth_range=_range(scene), initial_depth=initial, config=config)
    levels = solved_levels(config, 48, 64, initial_depth=given)
    assert levels == expected
    assert len(result.level_depths) == len(result.loss_history) == result.iterations_used.shape[0] == levels
    assert levels <= pyramid_levels(config, 48, 64)
    # Coarse to fine, each level half the next (the centred pyramid), the last full size.
    assert result.level_depths[-1].shape == (1, 1, 48, 64)
    for coarse, fine in zip(result.level_depths[:-1], result.level_depths[1:]):
        assert coarse.shape[-2:] == (fine.shape[-2] // 2, fine.shape[-1] // 2)
    for history in result.loss_history:
        assert history.shape == (1, 2)


# ------------------------------------------------------------------------------- runs


@pytest.mark.parametrize("overrides", [
    dict(aggregation="mean"),
    dict(aggregation="min"),
    dict(aggregation="softmin", softmin_temperature=0.05),
    dict(correction_levels=0),
    dict(correction_levels=3),
    dict(correction_levels=3, correction_gate=0.0),
    dict(correction_levels=8),  # coarser than the image: 1 x 1 corrections
    dict(sweep_level=1),
    dict(initialisation="constant", scales=3, full_resolution_loss=True),
    dict(initialisation="constant", scales=3, full_resolution_loss=True, correction_levels=2),
    dict(sgm_p2=0.0, range_planes=0, sweep_window=3),
])
def test_options_run(scene: RenderedScene, overrides: dict, device) -> None:
    rng = _range(scene)
    result = on(device, estimate_depth, *_inputs(scene), depth_range=rng, **{**QUICK, **overrides})
    assert result.depth.shape == result.valid.shape == result.cost.shape == (1, 1, 48, 64)
    assert torch.isfinite(result.depth).all()
    assert (result.depth >= rng[0] * (1 - 1e-4)).all() and (result.depth <= rng[1] * (1 + 1e-4)).all()
    assert result.valid.float().mean() > 0.5
    for history in result.loss_history:
        assert torch.isfinite(history).all()


# -------------------------------------------------------------- source aggregation


def _level(out: RenderedScene, **overrides: object) -> _Level:
    config = DepthConfig.default(**overrides)
    views, K, E = _inputs(out)
    E_ref_inv = torch.linalg.inv(E[:, 0])
    poses = [E[:, s] @ E_ref_inv for s in range(1, views.shape[1])]
    return _Level(views, None, K, poses, 0, config)


@pytest.fixture(scope="module")
def inverse_depths(scene: RenderedScene) -> list[torch.Tensor]:
    """The true inverse depth (where a source occludes, one source's cost stands out) and a wrong constant one."""
    truth = torch.where(scene.valid[:1], 1.0 / scene.depths[:1].clamp_min(1e-6), torch.full_like(scene.depths[:1], 0.2))
    return [truth, torch.full_like(truth, float(truth.median()) * 1.3)]


def test_softmin_lies_between_min_and_mean(scene: RenderedScene, inverse_depths: list[torch.Tensor], device) -> None:
    scene, inverse_depths = _move(scene, device), _move(inverse_depths, device)
    for inv in inverse_depths:
        least, count = _level(scene, aggregation="min").photometric(inv)
        mean, count_mean = _level(scene, aggregation="mean").photometric(inv)
        assert torch.equal(count, count_mean)
        seen = count > 1  # seen by both sources: there is something to aggregate
        assert seen.float().mean() > 0.5
        previous = least
        for temperature in (1e-4, 1e-2, 0.05, 0.2, 1.0):
            soft, count_soft = _level(scene, aggregation="softmin", softmin_temperature=temperature).photometric(inv)
            assert torch.equal(count_soft, count)
            assert (soft >= least - 1e-6).all() and (soft <= mean + 1e-6).all()
            # A higher temperature never lowers the cost (the weighted mean's derivative in T is a variance).
            assert (soft >= previous - 1e-6).all()
            previous = soft
        # Where one source sees the pixel, every aggregation is that source's cost.
        one = count == 1
        torch.testing.assert_close(least[one], mean[one])


def test_softmin_limits(scene: RenderedScene, inverse_depths: list[torch.Tensor], device) -> None:
    scene, inverse_depths = _move(scene, device), _move(inverse_depths, device)
    for inv in inverse_depths:
        least, count = _level(scene, aggregation="min").photometric(inv)
        mean, _ = _level(scene, aggregation="mean").photometric(inv)
        cold, _ = _level(scene, aggregation="softmin", softmin_temperature=1e-7).photometric(inv)
        hot, _ = _level(scene, aggregation="softmin", softmin_temperature=1e7).photometric(inv)
        seen = count > 0
        torch.testing.assert_close(cold[seen], least[seen], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(hot[seen], mean[seen], rtol=1e-5, atol=1e-6)
        # The default temperature (0.02) is neither: strictly between them somewhere. Measured
        # means over the pixels both sources see, at the true depth: min 0.0332, softmin
        # 0.0347, mean 0.1003 (occlusions make one source's cost stand out).
        default, _ = _level(scene).photometric(inv)
        assert ((default > least + 1e-4) & (default < mean - 1e-4)).any()


# ------------------------------------------------------------------------ range narrowing


def test_narrow_range_keeps_the_scene_and_drops_the_rest(scene: RenderedScene) -> None:
    flat = tiny_plane()
    wide = torch.tensor([[0.5, 100.0], [0.5, 100.0]])
    scenes = (scene, flat)
    views, K, E = (torch.stack([getattr(s, name) for s in scenes]) for name in ("images", "intrinsics", "extrinsics"))
    out = _narrow_range(views, K, E, 0, wide, 0, 48)
    assert out.shape == (2, 2)
    for b, s in enumerate(scenes):
        single = _narrow_range(views[b : b + 1], K[b : b + 1], E[b : b + 1], 0, wide[b : b + 1], 0, 48)
        torch.testing.assert_close(out[b : b + 1], single)
        depths = s.depths[0][s.valid[0]]
        low, high = torch.quantile(depths, torch.tensor([0.02, 0.98])).tolist()
        near, far = out[b].tolist()
        # Measured: room (3.49 to 8.0 m) -> (2.43, 100); plane at 4 m -> (2.31, 10.56).
        assert 0.5 <= near <= low and high <= far <= 100.0, (near, far, low, high)
        span = 1.0 / near - 1.0 / far
        assert span < 0.35 * (1.0 / 0.5 - 1.0 / 100.0), span  # measured 0.20 and 0.17 of it


# --------------------------------------------------------------------------- batching


def test_batch_equals_one_by_one_with_corrections(scene: RenderedScene, device) -> None:
    other = render_scene(SceneConfig(height=48, width=64, baseline=1.0, supersampling=1, noise_sigma=0.01), seed=1)
    images = torch.stack([scene.images, other.images])
    K = torch.stack([scene.intrinsics, other.intrinsics])
    E = torch.stack([scene.extrinsics, other.extrinsics])
    config = DepthConfig.default(**{**QUICK, "iterations": 6}, correction_levels=3, sweep_level=1)
    both = on(device, estimate_depth, images, K, E, config=config)
    for b in range(2):
        one = on(device, estimate_depth, images[b : b + 1], K[b : b + 1], E[b : b + 1], config=config)
        # Measured bitwise equal on CPU; the tolerance allows kernels that round differently.
        torch.testing.assert_close(both.depth[b : b + 1], one.depth, rtol=1e-4, atol=1e-4)
        assert (both.valid[b : b + 1] != one.valid).float().mean() < 1e-3
        for level_both, level_one in zip(both.level_depths, one.level_depths):
            torch.testing.assert_close(level_both[b : b + 1], level_one, rtol=1e-4, atol=1e-4)
        for hist_both, hist_one in zip(both.loss_history, one.loss_history):
            torch.testing.assert_close(hist_both[b : b + 1], hist_one, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------- correction gate


def test_correction_gate_stops_at_depth_edges_only(device) -> None:
    inv = torch.full((2, 1, 20, 24), 0.5, dtype=torch.float64)
    inv[0, :, :, 12:] = 0.8  # a depth edge between columns 11 and 12 (a 60 % step)
    inv[1, :, :, 12:] = 0.55  # a 10 % step: below the 20 % jump
    inv[:, :, 5, 5] = 2.0  # an isolated outlier: the 5x5 median removes it
    inv[:, :, 15:, :] *= torch.linspace(1.0, 1.02, 24, dtype=torch.float64)  # a slanted patch: no edge
    away = on(device, _away_from_depth_edges, inv, 0.2)
    assert away.shape == inv.shape and away.dtype == torch.bool
    near = torch.zeros(20, 24, dtype=torch.bool)
    near[:, 9:15] = True  # columns 11 and 12 are on the edge, and 2 more pixels on each side
    assert torch.equal(away[0, 0], ~near)
    assert away[1].all()
    assert torch.equal(on(device, _away_from_depth_edges, inv, 0.05)[1, 0], ~near)
