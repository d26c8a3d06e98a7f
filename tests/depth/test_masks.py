"""Masks in the depth library: plane_sweep's per-pixel and per-channel ``masks``, the solver's
per-channel masks in ``_Level.photometric``, and ``DepthConfig.saturation`` (clipped channels
left out of the photometric terms) with ``image_sigma``'s validation.

Every threshold below was measured first (the value is in a comment) and asserted with a margin.
"""

from __future__ import annotations

import pytest
import torch

from gradcv.core_ops.errors import GradcvError, ShapeError
from gradcv.core_ops.geometry import depth_warp
from gradcv.depth.config import DepthConfig
from gradcv.depth.plane_sweep import PlaneSweepResult, plane_sweep
from gradcv.depth.render import RenderedScene
from gradcv.depth.solver import _Level, estimate_depth
from tests.depth._tiny import QUICK, _move, on, tiny_plane, tiny_scene, true_range

#: Small and quick: a short run with a coarse sweep.
#: Every sweep option at once (SGM, the minimum over sources, shiftable windows, sub-plane refinement).
ALL_OPTIONS = dict(aggregation="min", shiftable=True, subpixel=True, sgm=(0.02, 0.2))


@pytest.fixture(scope="module")
def scene() -> RenderedScene:
    return tiny_scene()


@pytest.fixture(scope="module")
def plane() -> RenderedScene:
    return tiny_plane()



def _sweep(out: RenderedScene, images: torch.Tensor | None = None, views: list[int] | None = None,
           **kwargs: object) -> PlaneSweepResult:
    images = out.images if images is None else images
    K, E = out.intrinsics, out.extrinsics
    if views is not None:
        images, K, E = images[views], K[views], E[views]
    return plane_sweep(images[None], K[None], E[None], **kwargs)  # type: ignore[arg-type]


def _assert_same(a: PlaneSweepResult, b: PlaneSweepResult) -> None:
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ------------------------------------------------------------------------ plane_sweep


@pytest.mark.parametrize("options", [{}, ALL_OPTIONS], ids=["plain", "all_options"])
def test_all_ones_masks_change_nothing(scene: RenderedScene, options: dict, device) -> None:
    N, C, H, W = scene.images.shape
    rng = true_range(scene)
    base = on(device, _sweep, scene, depth_range=rng, planes=12, **options)
    for shape in ((1, N, 1, H, W), (1, N, C, H, W)):
        for ones in (torch.ones(shape), torch.ones(shape, dtype=torch.bool)):
            _assert_same(on(device, _sweep, scene, depth_range=rng, planes=12, masks=ones, **options), base)


@pytest.mark.parametrize("options", [{}, dict(aggregation="min"), dict(shiftable=True), dict(subpixel=True)],
                         ids=["plain", "min", "shiftable", "subpixel"])
def test_a_channel_masked_everywhere_is_that_channel_removed(scene: RenderedScene, options: dict, device) -> None:
    N, C, H, W = scene.images.shape
    rng = true_range(scene)
    masks = torch.ones(1, N, C, H, W)
    masks[:, :, 1] = 0.0
    masked = on(device, _sweep, scene, depth_range=rng, planes=12, masks=masks, **options)
    removed = on(device, _sweep, scene, images=scene.images[:, [0, 2]], depth_range=rng, planes=12, **options)
    # Measured: bitwise equal; allclose is what is promised.
    assert torch.equal(masked.valid, removed.valid)
    torch.testing.assert_close(masked.depth, removed.depth)
    torch.testing.assert_close(masked.cost, removed.cost)
    # Masking a channel in one view only (the reference here) is the same: a channel counts
    # only where it is usable in both the reference and the source sample.
    ref_only = torch.ones(1, N, C, H, W)
    ref_only[:, 0, 1] = 0.0
    _assert_same(on(device, _sweep, scene, depth_range=rng, planes=12, masks=ref_only, **options), masked)


def test_a_channel_mask_with_sgm_still_chooses_on_the_remaining_channels(scene: RenderedScene, device) -> None:
    # With SGM the guidance is the whole reference (every channel), so the depths may differ
    # from a run on the images without the channel; the costs the SGM chose from may not.
    N, C, H, W = scene.images.shape
    rng = true_range(scene)
    masks = torch.ones(1, N, C, H, W)
    masks[:, :, 1] = 0.0
    masked = on(device, _sweep, scene, depth_range=rng, planes=12, masks=masks, sgm=(0.02, 0.2))
    removed = on(device, _sweep, scene, images=scene.images[:, [0, 2]], depth_range=rng, planes=12, sgm=(0.02, 0.2))
    assert torch.equal(masked.valid, removed.valid)
    assert torch.isin(masked.depth[masked.valid], masked.plane_depths[0]).all()
    # Where both chose the same plane their costs agree.
    same = masked.valid & (masked.depth == removed.depth)
    assert same.float().mean() > 0.8  # measured 0.99 of the pixels
    torch.testing.assert_close(masked.cost[same], removed.cost[same])


def _always_masked(out: RenderedScene, masks: torch.Tensor, source: int, plane_depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference pixels whose sample in ``source`` is masked (or outside it) on every plane, and
    those whose sample is usable wherever it is inside the image, on every plane."""
    _, _, H, W = out.images.shape
    pose = (out.extrinsics[source] @ torch.linalg.inv(out.extrinsics[0]))[None]
    masked = torch.ones(1, 1, H, W, dtype=torch.bool)
    usable = torch.ones(1, 1, H, W, dtype=torch.bool)
    for z in plane_depths.tolist():
        m, seen = depth_warp(masks[:, source], torch.full((1, 1, H, W), z), out.intrinsics[:1], out.intrinsics[source : source + 1],
                             pose, padding_mode="border")
        masked &= (m < 0.5) | ~seen
        usable &= (m > 0.5) | ~seen
    return masked, usable


@pytest.mark.parametrize("window", [1, 5])
def test_a_region_masked_in_one_source_leaves_the_other(scene: RenderedScene, window: int, device) -> None:
    N, C, H, W = scene.images.shape
    rng = true_range(scene)
    masks = torch.ones(1, N, 1, H, W)
    masks[0, 2, :, :, : W // 2] = 0.0  # the left half of source 2
    kwargs = dict(depth_range=rng, planes=12, window=window)
    masked = on(device, _sweep, scene, masks=masks, **kwargs)
    full = on(device, _sweep, scene, **kwargs)
    other = on(device, _sweep, scene, views=[0, 1], **kwargs)  # the reference and source 1 alone
    dead, live = _always_masked(scene, masks, 2, full.plane_depths[0])
    # Measured: 1139 reference pixels only ever see source 2 in its masked half, 1850 never do.
    assert dead.sum() > 500 and live.sum() > 500
    # Where source 2 is masked on every plane, the sweep is source 1's alone (or unseen).
    assert torch.equal(masked.valid[dead], other.valid[dead])
    assert torch.equal(masked.depth[dead], other.depth[dead])
    torch.testing.assert_close(masked.cost[dead], other.cost[dead])
    assert not masked.valid[dead & ~other.valid].any()
    if window == 1:
        # Where it is usable on every plane, nothing changes.
        assert torch.equal(masked.valid[live], full.valid[live])
        assert torch.equal(masked.depth[live], full.depth[live])
        torch.testing.assert_close(masked.cost[live], full.cost[live])
    # (With window 5, 33 of those 1850 pixels change cost: the window of a usable centre
    # averages in the masked samples' zero cost; see the report masktests-report.md.)
    # Masking source 2 everywhere is the run without it.
    gone = torch.ones(1, N, 1, H, W)
    gone[0, 2] = 0.0
    everywhere = on(device, _sweep, scene, masks=gone, **kwargs)
    assert torch.equal(everywhere.valid, other.valid) and torch.equal(everywhere.depth, other.depth)
    torch.testing.assert_close(everywhere.cost[other.valid], other.cost[other.valid])


def test_a_reference_pixel_with_no_usable_channel_costs_nothing(plane: RenderedScene, device) -> None:
    N, C, H, W = plane.images.shape
    # 17 planes in (3, 6): the middle one (inverse depth 1/4) is the plane's depth, 4.
    kwargs = dict(depth_range=(3.0, 6.0), planes=17)
    square = torch.zeros(1, 1, H, W, dtype=torch.bool)
    square[..., 18:30, 26:38] = True
    for masks in (torch.ones(1, N, 1, H, W), torch.ones(1, N, C, H, W)):
        masks[0, 0][:, square[0, 0]] = 0.0  # every channel of the reference in the square
        wta = on(device, _sweep, plane, masks=masks, **kwargs)
        assert (wta.cost[square] == 0).all() and wta.valid[square].all()
        # Without SGM every plane ties at 0 and the tie goes to the farthest plane, plane 0.
        assert (wta.depth[square] == wta.plane_depths[0, 0]).all()
        assert float(wta.plane_depths[0, 0]) == pytest.approx(6.0)
        for options in (dict(sgm=(0.02, 0.2)), ALL_OPTIONS):
            sgm = on(device, _sweep, plane, masks=masks, **kwargs, **options)  # type: ignore[arg-type]
            assert (sgm.cost[square] == 0).all() and sgm.valid[square].all()
            # SGM fills the square from its neighbours: the plane's depth. Measured: 4.0 exactly
            # (error 0), with and without the other options (16 planes in (3, 6), where 4 is no
            # plane: 3.91 or 4.09, the unmasked sweep's own error there).
            err = (sgm.depth[square] - 4.0).abs() / 4.0
            assert err.max() < 0.02
    # One channel masked in the reference is not "no usable channel": the others still cost.
    one = torch.ones(1, N, C, H, W)
    one[0, 0, 1][square[0, 0]] = 0.0
    assert (on(device, _sweep, plane, masks=one, **kwargs).cost[square] > 0).all()  # measured min 0.0009


def test_bad_mask_shapes(scene: RenderedScene) -> None:
    N, C, H, W = scene.images.shape
    shapes = [(1, N, 2, H, W), (1, N - 1, 1, H, W), (2, N, 1, H, W), (1, N, 1, H, W - 1), (1, N, 1, H + 1, W),
              (N, 1, H, W), (1, N, 1, 1, H, W)]
    for shape in shapes:
        with pytest.raises(ShapeError) as info:
            _sweep(scene, depth_range=(1.0, 10.0), planes=4, masks=torch.ones(shape))
        assert info.value.name == "masks" and str(info.value).startswith("masks"), str(info.value)
    for bad in ("x", [[1.0]]):
        with pytest.raises(GradcvError) as info:
            _sweep(scene, depth_range=(1.0, 10.0), planes=4, masks=bad)
        assert info.value.name == "masks", str(info.value)


# ------------------------------------------------------------------ _Level.photometric


def _level(out: RenderedScene, masks: torch.Tensor | None, images: torch.Tensor | None = None,
           **overrides: object) -> _Level:
    config = DepthConfig.default(**overrides)
    views = (out.images if images is None else images)[None]
    K, E = out.intrinsics[None].to(views.dtype), out.extrinsics[None].to(views.dtype)
    E_ref_inv = torch.linalg.inv(E[:, 0])
    poses = [E[:, s] @ E_ref_inv for s in range(1, views.shape[1])]
    return _Level(views, None if masks is None else masks.to(views.device), K, poses, 0, config)


@pytest.fixture(scope="module")
def inverse_depths(scene: RenderedScene) -> list[torch.Tensor]:
    truth = torch.where(scene.valid[:1], 1.0 / scene.depths[:1].clamp_min(1e-6), torch.full_like(scene.depths[:1], 0.2))
    return [truth, torch.full_like(truth, float(truth.median()) * 1.3)]


@pytest.mark.parametrize("overrides", [{}, dict(aggregation="min"), dict(aggregation="mean"),
                                       dict(alpha=0.0, normalise_gain=False)],
                         ids=["default", "min", "mean", "l1_only"])
def test_photometric_all_usable_channel_masks_are_no_masks(scene: RenderedScene, inverse_depths: list[torch.Tensor],
                                                           overrides: dict, device) -> None:
    scene, inverse_depths = _move(scene, device), _move(inverse_depths, device)
    N, C, H, W = scene.images.shape
    for inv in inverse_depths:
        plain, count = _level(scene, None, **overrides).photometric(inv)
        for ones in (torch.ones(1, N, C, H, W), torch.ones(1, N, 1, H, W)):
            masked, masked_count = _level(scene, ones, **overrides).photometric(inv)
            assert torch.equal(masked_count, count)
            torch.testing.assert_close(masked, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("overrides", [{}, dict(aggregation="mean")], ids=["default", "mean"])
def test_photometric_a_channel_masked_everywhere_is_that_channel_removed(
        scene: RenderedScene, inverse_depths: list[torch.Tensor], overrides: dict, device) -> None:
    scene, inverse_depths = _move(scene, device), _move(inverse_depths, device)
    N, C, H, W = scene.images.shape
    # In float64 they agree to 1e-13; in float32 the gain normalisation's sums (over C or C - 1
    # channels) round differently and SSIM amplifies it where the texture is flat: measured
    # 4.6e-5 at most (a wrong constant depth, default config), 0 without SSIM or the gain.
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
        masks = torch.ones(1, N, C, H, W, dtype=dtype)
        masks[:, 0, 1] = 0.0  # channel 1 of the reference: it counts in no source pair
        images = scene.images.to(dtype)
        for inv in inverse_depths:
            inv = inv.to(dtype)
            masked, count = _level(scene, masks, images=images, **overrides).photometric(inv)
            removed, removed_count = _level(scene, None, images=images[:, [0, 2]], **overrides).photometric(inv)
            assert torch.equal(count, removed_count)
            torch.testing.assert_close(masked, removed, rtol=0, atol=atol)


def test_photometric_masks_carry_no_gradient_and_keep_the_depths(scene: RenderedScene,
                                                                 inverse_depths: list[torch.Tensor], device) -> None:
    scene, inverse_depths = _move(scene, device), _move(inverse_depths, device)
    N, C, H, W = scene.images.shape
    masks = torch.ones(1, N, C, H, W, device=device)

    masks[:, 1, 2, :, : W // 2] = 0.0
    masks.requires_grad_(True)
    inv = inverse_depths[1].clone().requires_grad_(True)
    cost, count = _level(scene, masks).photometric(inv)
    cost.sum().backward()
    assert masks.grad is None
    assert inv.grad is not None and torch.isfinite(inv.grad).all() and inv.grad.abs().sum() > 0


# ---------------------------------------------------------- estimate_depth's saturation


def _solve(out: RenderedScene, images: torch.Tensor, **overrides: object) -> torch.Tensor:
    d = out.depths[0][out.valid[0]]
    rng = (float(d.min()) * 0.9, float(d.max()) * 1.1)
    return estimate_depth(images[None], out.intrinsics[None], out.extrinsics[None], depth_range=rng, **QUICK, **overrides)


def _clipped(images: torch.Tensor, saturation: float = 0.002) -> float:
    return float(((images >= 1 - saturation) | (images <= saturation)).float().mean())


def _abs_rel(out: RenderedScene, depth: torch.Tensor) -> float:
    mask = out.valid[:1] & out.visibility[1:].any(0, keepdim=True)
    gt = out.depths[:1][mask]
    return float(((depth.reshape(out.depths[:1].shape)[mask] - gt).abs() / gt).mean())


def test_saturation_below_the_threshold_keeps_the_plain_path(scene: RenderedScene) -> None:
    # Seed 0 has a few clipped values (0.043 %, black texels), fewer than 0.1 %.
    assert 0 < _clipped(scene.images) < 1e-3
    default = _solve(scene, scene.images)
    off = _solve(scene, scene.images, saturation=0.0)
    # Measured: bitwise equal.
    torch.testing.assert_close(default.depth, off.depth, rtol=0, atol=0)
    assert torch.equal(default.valid, off.valid)


def test_saturated_highlights_drop_out(device) -> None:
    # Blown highlights in the reference's channel 1: its brightest 20 % read 1 (2.2 % of all
    # values clip). The unclipped values stay consistent with the sources, the clipped ones are
    # wrong, and the default saturation leaves them out.
    out = tiny_scene(2)
    images = out.images.clone()
    channel = images[0, 1]
    images[0, 1] = torch.where(channel >= torch.quantile(channel, 0.8), torch.ones_like(channel), channel)
    assert _clipped(images) > 0.01
    masked = on(device, _solve, out, images)
    plain = on(device, _solve, out, images, saturation=0.0)
    assert torch.isfinite(masked.depth).all() and (masked.depth[masked.valid] > 0).all()
    assert torch.isfinite(masked.cost[masked.valid]).all()
    assert masked.valid.float().mean() > 0.8  # measured 0.98
    assert not torch.equal(masked.depth, plain.depth)
    # Measured AbsRel on the pixels a source sees: 0.0983 with the default saturation, 0.1089
    # with saturation=0. Not so on every seed: seed 1 0.0860 / 0.0917, but seed 0 0.1208 / 0.1145
    # (and with iterations=20, planes=32: seeds 0-2 0.106/0.100, 0.080/0.085, 0.091/0.104).
    assert _abs_rel(out, masked.depth) < 0.97 * _abs_rel(out, plain.depth)


def test_a_saturated_reference_channel_stays_finite(scene: RenderedScene, device) -> None:
    # The reference's channel 1 tripled and clipped (6 % of all values clip): the solve stays
    # finite. (It is not more accurate than saturation=0: the tripled unclipped values are
    # inconsistent with the sources either way; see the report.)
    images = scene.images.clone()
    images[0, 1] = (images[0, 1] * 3).clamp(max=1)
    assert _clipped(images) > 0.03
    result = on(device, _solve, scene, images)
    assert torch.isfinite(result.depth).all() and (result.depth > 0).all()
    assert torch.isfinite(result.cost[result.valid]).all()
    assert result.valid.float().mean() > 0.5  # measured 0.75
    # Measured AbsRel: 0.396 with the default saturation, 0.386-0.387 with saturation=0 (the
    # last digit depends on the thread count); seeds 1 and 2: 0.428 / 0.377 and 0.388 / 0.353.


def test_a_fully_clipped_reference_region_is_filled_and_flagged_invalid(plane: RenderedScene, device) -> None:
    # A white square (every channel clipped) in the reference view of the plane at z = 4.
    images = plane.images.clone()
    images[0, :, 18:30, 26:38] = 1.0
    square = torch.zeros(1, 1, 48, 64, dtype=torch.bool)
    square[..., 18:30, 26:38] = True
    masked = on(device, _solve, plane, images)
    plain = on(device, _solve, plane, images, saturation=0.0)
    assert torch.isfinite(masked.depth).all() and (masked.depth > 0).all()
    # The docstring: "a pixel with no channel left gets its depth from its neighbours and is
    # flagged invalid".
    assert not masked.valid[square].any()
    assert masked.valid[~square].float().mean() > 0.8  # measured 0.96
    err = (masked.depth[square] - 4.0).abs() / 4.0
    plain_err = (plain.depth[square] - 4.0).abs() / 4.0
    # Measured relative error in the square: mean 0.018 (max 0.049) with the default
    # saturation, 0.074 (max 0.100, the depth range's bound) with saturation=0.
    assert err.mean() < 0.04 and err.mean() < 0.5 * plain_err.mean()


def test_config_accepts_saturation_and_image_sigma_bounds() -> None:
    assert DepthConfig.default().saturation == pytest.approx(0.002)
    assert DepthConfig.default().image_sigma == pytest.approx(0.6)
    for value in (0.0, 0.1, 0.499):
        assert DepthConfig(saturation=value).saturation == value
    assert DepthConfig(image_sigma=0).image_sigma == 0


def test_user_masks_combine_with_saturation(device) -> None:
    # The highlights scene of seed 2 and a user mask over a square of the reference.
    out = tiny_scene(2)
    images = out.images.clone()
    channel = images[0, 1]
    images[0, 1] = torch.where(channel >= torch.quantile(channel, 0.8), torch.ones_like(channel), channel)
    N, C, H, W = images.shape
    user = torch.ones(1, N, 1, H, W)
    user[0, 0, :, 18:30, 26:38] = 0.0
    square = torch.zeros(1, 1, H, W, dtype=torch.bool)
    square[..., 18:30, 26:38] = True
    both = on(device, _solve, out, images, masks=user)
    saturation_only = on(device, _solve, out, images)
    user_only = on(device, _solve, out, images, masks=user, saturation=0.0)
    assert torch.isfinite(both.depth).all() and (both.depth > 0).all()
    # Measured: neither alone gives the combined result (0.96 and 0.98 of the depths differ),
    # and the user-masked square is invalid with or without saturation.
    assert (both.depth != saturation_only.depth).float().mean() > 0.5
    assert (both.depth != user_only.depth).float().mean() > 0.5
    assert not both.valid[square].any() and not user_only.valid[square].any()
    # User masks are per pixel: per-channel ones are refused, naming masks.
    with pytest.raises(ShapeError) as info:
        on(device, _solve, out, images, masks=torch.ones(1, N, C, H, W))
    assert info.value.name == "masks" and str(info.value).startswith("masks")
