"""The gradient-descent depth solver on small exact scenes (64 x 48, baseline 1.0)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.depth.config import DepthConfig
from gradcv.depth.metrics import metrics
from gradcv.depth.render import RenderedScene, SceneConfig, render_scene
from gradcv.depth.solver import DepthResult, estimate_depth
from gradcv.optim import SolverStatus
from tests.depth._tiny import on


SCENE = SceneConfig(height=48, width=64, baseline=1.0)


@pytest.fixture(scope="module")
def scene() -> RenderedScene:
    return render_scene(SCENE, seed=0)


@pytest.fixture(scope="module")
def jittered() -> RenderedScene:
    return render_scene(SceneConfig(height=48, width=64, baseline=1.0, gain_jitter=0.15, bias_jitter=0.03,
                                    noise_sigma=0.005), seed=0)


def _inputs(out: RenderedScene) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return out.images[None], out.intrinsics[None], out.extrinsics[None]


def _abs_rel_mask(out: RenderedScene) -> torch.Tensor:
    visible = out.visibility[1:].any(0, keepdim=True) & out.valid[:1]
    return visible & ~(F.max_pool2d(out.edges[:1].float(), 5, 1, 2) > 0)


def _abs_rel(out: RenderedScene, result: DepthResult) -> tuple[float, float]:
    """AbsRel on valid, visible, non-edge reference pixels, and the fraction of those kept."""
    visible = out.visibility[1:].any(0, keepdim=True) & out.valid[:1]
    near_edge = F.max_pool2d(out.edges[:1].float(), 5, 1, 2) > 0
    mask = visible & ~near_edge
    kept = mask & result.valid[:1]
    return float(metrics(result.depth[:1], out.depths[:1], kept)["abs_rel"][0]), float(kept.sum() / mask.sum())


_SOLVED: dict[str, DepthResult] = {}


@pytest.fixture
def solved(scene: RenderedScene, device: str) -> DepthResult:
    """The default solve of ``scene`` on ``device`` (once per device for the session)."""
    if device not in _SOLVED:
        _SOLVED[device] = on(device, estimate_depth, *_inputs(scene))
    return _SOLVED[device]


def test_default_beats_its_plane_sweep_start(scene: RenderedScene, solved: DepthResult, device) -> None:
    start = on(device, estimate_depth, *_inputs(scene), iterations=1, lr=1e-12)
    start_err, _ = _abs_rel(scene, start)
    err, kept = _abs_rel(scene, solved)
    # Measured: 0.056 after the solve, 0.094 for its full-resolution sweep start; 99.4 % kept.
    # (A 64 x 48 image with disparities up to a fifth of its width is far from the 320 x 240
    # scenes the default is tuned on, where it reaches AbsRel 0.009: see bench_depth.)
    assert err < 0.75 * start_err, (err, start_err)
    assert err < 0.07, err
    assert kept > 0.9
    assert solved.depth.shape == (1, 1, 48, 64) and solved.valid.dtype == torch.bool
    assert torch.isfinite(solved.depth).all()
    assert len(solved.loss_history) == solved.iterations_used.shape[0]
    # The start is kept (Figure 4's first column): the sweep's depth at the first level solved.
    assert solved.initial_depth is not None and solved.initial_depth.shape == solved.level_depths[0].shape
    start_only = float(metrics(solved.initial_depth, scene.depths[:1], _abs_rel_mask(scene))["abs_rel"][0])
    assert start_only > err, (start_only, err)
    assert solved.wall_time > 0 and solved.status.shape == (1,)


def test_gain_and_bias_between_views(jittered: RenderedScene, device) -> None:
    err, kept = _abs_rel(jittered, on(device, estimate_depth, *_inputs(jittered)))
    # Measured 0.064 (0.056 without the jitter); the raw 128-plane sweep gets 0.160 here.
    assert err < 0.08, err
    assert kept > 0.8


def test_batch_equals_one_by_one(scene: RenderedScene, jittered: RenderedScene, device) -> None:
    images = torch.stack([scene.images, jittered.images])
    K = torch.stack([scene.intrinsics, jittered.intrinsics])
    E = torch.stack([scene.extrinsics, jittered.extrinsics])
    config = DepthConfig.default(iterations=10)
    both = on(device, estimate_depth, images, K, E, config=config)
    for b in range(2):
        one = on(device, estimate_depth, images[b : b + 1], K[b : b + 1], E[b : b + 1], config=config)
        # Independent problems (per-sample losses summed, per-element Adam): measured bitwise
        # equal on CPU; the tolerance allows batched kernels that round differently elsewhere.
        torch.testing.assert_close(both.depth[b : b + 1], one.depth, rtol=1e-3, atol=1e-3)
        assert torch.equal(both.valid[b : b + 1], one.valid) or (both.valid[b : b + 1] != one.valid).float().mean() < 1e-3


def test_textureless_scene_is_flagged(device) -> None:
    K = torch.tensor([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]]).expand(1, 3, 3, 3)
    E = torch.eye(4).repeat(1, 3, 1, 1)
    E[0, 1, 0, 3], E[0, 2, 0, 3] = -0.5, 0.5
    images = torch.full((1, 3, 3, 48, 64), 0.5)
    result = on(device, estimate_depth, images, K, E, iterations=5)
    assert torch.isfinite(result.depth).all()
    assert not result.valid.any()
    assert int(result.status[0]) == int(SolverStatus.DEGENERATE_INPUT)


def _cams() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    K = torch.tensor([[20.0, 0.0, 7.5], [0.0, 20.0, 5.5], [0.0, 0.0, 1.0]]).repeat(1, 2, 1, 1)
    E = torch.eye(4).repeat(1, 2, 1, 1)
    E[0, 1, 0, 3] = -0.5
    return torch.rand(1, 2, 1, 12, 16, generator=torch.Generator().manual_seed(0)), K, E


def test_bad_inputs_raise_typed_errors() -> None:
    images, K, E = _cams()
    with pytest.raises(ShapeError, match="intrinsics"):
        estimate_depth(images, K.repeat(1, 2, 1, 1), E)
    with pytest.raises(ShapeError, match="extrinsics"):
        estimate_depth(images, K, E[:, :1])
    singular = K.clone()
    singular[0, 1, 0, 0] = 0.0
    singular[0, 1, 0, 2] = 0.0
    with pytest.raises(ArgumentValueError, match="intrinsics"):
        estimate_depth(images, singular, E)
    with pytest.raises(ArgumentValueError, match="ref_index"):
        estimate_depth(images, K, E, 2)
    with pytest.raises(ArgumentTypeError, match="ref_index"):
        estimate_depth(images, K, E, 1.0)
    bad = E.clone()
    bad[0, 1, 0, 3] = math.nan
    with pytest.raises(ArgumentValueError, match="extrinsics"):
        estimate_depth(images, K, bad)
    with pytest.raises(ArgumentValueError, match="depth_range"):
        estimate_depth(images, K, E, depth_range=(2.0, 1.0))
    with pytest.raises(ShapeError, match="masks"):
        estimate_depth(images, K, E, masks=torch.ones(1, 3, 1, 12, 16))
    with pytest.raises(ShapeError, match="images"):
        estimate_depth(images[:, :1], K[:, :1], E[:, :1])
    with pytest.raises(ArgumentValueError, match="smoothness_order"):
        estimate_depth(images, K, E, smoothness_order=3)
    with pytest.raises(ArgumentValueError, match="overrides"):
        estimate_depth(images, K, E, no_such_field=1)


@pytest.mark.parametrize("parameterisation", ["inverse_depth", "depth", "log_depth"])
@pytest.mark.parametrize("initialisation", ["constant", "uniform_random"])
def test_options_run(parameterisation: str, initialisation: str, device) -> None:
    images, K, E = _cams()
    mask = torch.ones(1, 2, 1, 12, 16)
    result = on(device, estimate_depth, images, K, E, depth_range=(1.0, 10.0), masks=mask, scales=2, iterations=3,
                            parameterisation=parameterisation, initialisation=initialisation)
    assert torch.isfinite(result.depth).all()
    assert (result.depth >= 1.0 - 1e-4).all() and (result.depth <= 10.0 + 1e-3).all()


def test_paper_preset_runs(device) -> None:
    images, K, E = _cams()
    seen: list[tuple[int, int]] = []
    result = on(device, estimate_depth, images, K, E, config=DepthConfig.paper(iterations=2),
                            callback=lambda level, it, loss: seen.append((level, it)))
    assert torch.isfinite(result.depth).all()
    assert seen[0] == (0, 0) and len(seen) == 2 * result.iterations_used.shape[0]


def test_min_aggregation_runs(scene: RenderedScene, device) -> None:
    result = on(device, estimate_depth, *_inputs(scene), aggregation="min", iterations=10)
    err, _ = _abs_rel(scene, result)
    assert math.isfinite(err) and err < 0.1, err


def test_history_is_padded_after_a_problem_stops(scene: RenderedScene, jittered: RenderedScene, device) -> None:
    """Two problems that stop at different steps: each level's history holds a loss for
    exactly the steps a problem took and NaN after it stopped (never its last loss repeated)."""
    images = torch.stack([scene.images, jittered.images])
    K = torch.stack([scene.intrinsics, jittered.intrinsics])
    E = torch.stack([scene.extrinsics, jittered.extrinsics])
    result = on(device, estimate_depth, images, K, E, tolerance=2e-2, patience=1)
    stopped_early = False
    for level, history in enumerate(result.loss_history):
        recorded = (~torch.isnan(history)).sum(1)
        assert torch.equal(recorded, result.iterations_used[level]), (level, recorded, result.iterations_used[level])
        stopped_early |= bool((recorded < history.shape[1]).any())
    assert stopped_early  # the case this test is about happened
