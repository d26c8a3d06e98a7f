"""The plane-sweep baseline: accuracy on a rendered scene, batching, input errors, textureless input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from gradcv.depth.plane_sweep import PlaneSweepResult, plane_sweep
from gradcv.depth.render import RenderedScene, render_scene
from gradcv.depth.scene import SceneConfig
from tests.depth._tiny import on

CONFIG = SceneConfig(height=48, width=64, num_views=3, baseline=1.0, supersampling=1)


@pytest.fixture(scope="module")
def scene() -> RenderedScene:
    return render_scene(CONFIG, seed=0)


def _true_range(out: RenderedScene) -> tuple[float, float]:
    d = out.depths[0][out.valid[0]]
    return float(d.min()), float(d.max())


def _scored(out: RenderedScene) -> torch.Tensor:
    """Valid reference pixels seen by a source, two pixels away from any boundary."""
    near = F.max_pool2d((out.edges[:1] | out.boundaries[:1]).float(), 5, 1, 2) > 0
    seen = out.visibility[1:].any(0, keepdim=True)
    return out.valid[:1] & seen & ~near


def _sweep(out: RenderedScene, **kwargs: object) -> PlaneSweepResult:
    return plane_sweep(out.images[None], out.intrinsics[None], out.extrinsics[None], **kwargs)  # type: ignore[arg-type]


def test_sweep_recovers_rendered_depth(scene: RenderedScene, device) -> None:
    result = on(device, _sweep, scene, depth_range=_true_range(scene), planes=32)
    assert result.depth.shape == result.cost.shape == result.valid.shape == (1, 1, 48, 64)
    assert result.plane_depths.shape == (1, 32)
    mask = _scored(scene)
    assert mask.float().mean() > 0.2
    assert result.valid[mask].all()
    gt = scene.depths[:1][mask]
    rel = (result.depth[mask] - gt).abs() / gt
    constant = (gt.median() - gt).abs() / gt
    # Measured: median 0.014, mean 0.026 (constant guess at the median depth: mean 0.24).
    assert rel.median() < 0.05
    assert rel.mean() < 0.06
    assert rel.mean() < 0.3 * constant.mean()
    # The winning depth is one of the planes, all within the range.
    lo, hi = _true_range(scene)
    d = result.depth[result.valid]
    assert (d >= lo * (1 - 1e-5)).all() and (d <= hi * (1 + 1e-5)).all()


def test_planes_uniform_in_inverse_depth(scene: RenderedScene, device) -> None:
    result = on(device, _sweep, scene, depth_range=(2.0, 8.0), planes=4, window=1)
    torch.testing.assert_close(1.0 / result.plane_depths[0], torch.tensor([0.125, 0.25, 0.375, 0.5]))


def test_chunking_does_not_change_the_result(scene: RenderedScene) -> None:
    rng = _true_range(scene)
    a = _sweep(scene, depth_range=rng, planes=12, chunk=12)
    b = _sweep(scene, depth_range=rng, planes=12, chunk=5)
    assert torch.equal(a.depth, b.depth) and torch.equal(a.valid, b.valid)
    torch.testing.assert_close(a.cost, b.cost)


def test_batched_equals_one_by_one(scene: RenderedScene) -> None:
    other = render_scene(CONFIG, seed=1)
    scenes = [scene, other]
    ranges = torch.tensor([_true_range(s) for s in scenes])
    batched = plane_sweep(
        torch.stack([s.images for s in scenes]), torch.stack([s.intrinsics for s in scenes]),
        torch.stack([s.extrinsics for s in scenes]), depth_range=ranges, planes=16,
    )
    for i, s in enumerate(scenes):
        single = _sweep(s, depth_range=tuple(ranges[i].tolist()), planes=16)
        torch.testing.assert_close(batched.depth[i : i + 1], single.depth)
        torch.testing.assert_close(batched.cost[i : i + 1], single.cost)
        assert torch.equal(batched.valid[i : i + 1], single.valid)


def test_other_reference_index(scene: RenderedScene, device) -> None:
    # Views reordered so the reference sits at index 2: same answer.
    order = [1, 2, 0]
    rng = _true_range(scene)
    a = on(device, _sweep, scene, depth_range=rng, planes=8)
    b = on(device, plane_sweep,
        scene.images[order][None], scene.intrinsics[order][None], scene.extrinsics[order][None], 2,
        depth_range=rng, planes=8,
    )
    torch.testing.assert_close(a.depth, b.depth)


def test_textureless_scene_gives_no_nan(scene: RenderedScene, device) -> None:
    images = torch.full((1, 3, 3, 48, 64), 0.5)
    result = on(device, plane_sweep, images, scene.intrinsics[None], scene.extrinsics[None], depth_range=(1.0, 10.0), planes=8)
    assert not torch.isnan(result.depth).any() and not torch.isnan(result.cost).any()
    assert (result.cost[result.valid] == 0).all()
    assert (result.depth[result.valid] > 0).all()


def test_unseen_pixels_are_invalid(device) -> None:
    # A source 100 m to the side sees nothing of the reference.
    K = torch.tensor([[40.0, 0.0, 15.5], [0.0, 40.0, 11.5], [0.0, 0.0, 1.0]]).expand(1, 2, 3, 3)
    E = torch.eye(4).repeat(1, 2, 1, 1)
    E[0, 1, 0, 3] = 100.0
    result = on(device, plane_sweep, torch.rand(1, 2, 1, 24, 32), K, E, depth_range=(1.0, 2.0), planes=2)
    assert not result.valid.any()
    assert (result.depth == 0).all() and torch.isinf(result.cost).all()


def test_bad_inputs(scene: RenderedScene) -> None:
    imgs, K, E = scene.images[None], scene.intrinsics[None], scene.extrinsics[None]
    rng = (2.0, 8.0)
    cases = [
        (ShapeError, "intrinsics", dict(intrinsics=K[:, :2])),
        (ShapeError, "extrinsics", dict(extrinsics=E[:, :2])),
        (ShapeError, "images", dict(images=imgs[0])),
        (ShapeError, "images", dict(images=imgs[:, :1], intrinsics=K[:, :1], extrinsics=E[:, :1])),
        (ShapeError, "intrinsics", dict(intrinsics=E)),
        (DTypeError, "images", dict(images=(imgs * 255).to(torch.uint8))),
        (ArgumentValueError, "ref_index", dict(ref_index=3)),
        (ArgumentValueError, "ref_index", dict(ref_index=-1)),
        (ArgumentTypeError, "ref_index", dict(ref_index=1.0)),
        (ArgumentValueError, "depth_range", dict(depth_range=(8.0, 2.0))),
        (ArgumentValueError, "depth_range", dict(depth_range=(2.0, 2.0))),
        (ArgumentValueError, "depth_range", dict(depth_range=(0.0, 2.0))),
        (ArgumentValueError, "depth_range", dict(depth_range=(-1.0, 2.0))),
        (ArgumentTypeError, "depth_range", dict(depth_range=2.0)),
        (ShapeError, "depth_range", dict(depth_range=torch.ones(2, 2))),
        (ArgumentValueError, "planes", dict(planes=1)),
        (ArgumentTypeError, "planes", dict(planes=8.0)),
        (ArgumentValueError, "window", dict(window=4)),
    ]
    for error, name, override in cases:
        kwargs = dict(images=imgs, intrinsics=K, extrinsics=E, depth_range=rng, planes=2)
        kwargs.update(override)
        with pytest.raises(error) as info:
            plane_sweep(**kwargs)  # type: ignore[arg-type]
        assert info.value.name == name, (override, info.value)
