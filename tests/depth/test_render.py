"""The synthetic renderer: exact geometry (checked through the depth warper), determinism, config checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from gradcv.core_ops.geometry import depth_warp
from gradcv.core_ops.pyramid import build_pyramid
from gradcv.depth.render import RenderedScene, SceneConfig, make_cameras, make_scene, render_scene

# A 1 m baseline makes a 3 % depth error a sub-pixel but measurable shift at 96 x 72
# (about 0.5 px at 5 m), so the scaled-depth check below has power.
WARP_CONFIG = SceneConfig(height=72, width=96, supersampling=2, baseline=1.0)


@pytest.fixture(scope="module")
def rendered() -> RenderedScene:
    return render_scene(WARP_CONFIG, seed=0)


def _warp_error(out: RenderedScene, src: int, scale: float) -> tuple[float, float]:
    """Mean absolute colour error of source ``src`` warped into the reference by the
    reference depth times ``scale``, on the pixels where the warp must be exact: valid,
    visible in the source, two pixels away from any surface boundary in either view, and
    two pixels inside the source image. Returns the error and the fraction of pixels used."""
    src_T_ref = out.extrinsics[src : src + 1] @ torch.linalg.inv(out.extrinsics[:1])
    K_ref, K_src = out.intrinsics[:1], out.intrinsics[src : src + 1]
    warped, inside = depth_warp(out.images[src : src + 1], out.depths[:1] * scale, K_ref, K_src, src_T_ref)
    near_ref = F.max_pool2d((out.boundaries[:1] | out.edges[:1]).float(), 5, 1, 2) > 0
    src_boundary = F.max_pool2d(out.boundaries[src : src + 1].float(), 5, 1, 2)
    near_src, _ = depth_warp(src_boundary, out.depths[:1], K_ref, K_src, src_T_ref)
    near_rim = F.max_pool2d((~inside).float(), 5, 1, 2) > 0
    mask = out.valid[:1] & out.visibility[src : src + 1] & ~near_ref & (near_src == 0) & ~near_rim
    error = (warped - out.images[:1]).abs().mean(1, keepdim=True)[mask].mean()
    return float(error), float(mask.float().mean())


@pytest.mark.parametrize("src", [1, 2])
def test_true_depth_warps_source_onto_reference(rendered: RenderedScene, src: int) -> None:
    error, used = _warp_error(rendered, src, 1.0)
    assert used > 0.2
    # Measured 0.0042 (view 1) and 0.0034 (view 2): bilinear resampling and the view-dependent
    # texture filtering are all that is left.
    assert error <= 0.01
    # Measured 2.2x / 2.4x (depth x 1.03) and 2.4x / 2.7x (x 0.97).
    for scale in (1.03, 0.97):
        wrong, _ = _warp_error(rendered, src, scale)
        assert wrong >= 1.7 * error, (scale, wrong, error)


def _grace_hopper() -> torch.Tensor:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg
    import numpy as np

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = mpimg.imread(f, format="jpg")
    return torch.from_numpy(np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0).permute(2, 0, 1)


def test_photograph_texture_warps_consistently() -> None:
    out = render_scene(WARP_CONFIG, seed=0, texture=_grace_hopper())
    for src in (1, 2):
        error, _ = _warp_error(out, src, 1.0)
        # Measured 0.0105 / 0.0116: the photograph's sharp detail at the selected mip level
        # and its tile seams resample less exactly than the procedural texture.
        assert error <= 0.015
        wrong, _ = _warp_error(out, src, 1.03)
        assert wrong >= 1.4 * error  # measured 1.7x


def test_depth_is_camera_z_not_range() -> None:
    out = render_scene(SceneConfig(height=24, width=32, num_views=1, supersampling=1, kind="plane", plane_depth=3.0))
    assert out.valid.all()
    torch.testing.assert_close(out.depths, torch.full_like(out.depths, 3.0), rtol=1e-5, atol=0)
    assert not out.edges.any()


def test_cameras_follow_the_pixel_centre_convention() -> None:
    K, E = make_cameras(SceneConfig(height=48, width=64, num_views=4))
    assert K.shape == (4, 3, 3) and E.shape == (4, 4, 4)
    assert K[0, 0, 2] == 31.5 and K[0, 1, 2] == 23.5
    assert abs(float(K[0, 0, 0]) - 32.0 / math.tan(math.pi / 6)) < 1e-4
    torch.testing.assert_close(E[0], torch.eye(4))
    torch.testing.assert_close(E[:, :3, :3] @ E[:, :3, :3].transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-6, rtol=0)


def test_shapes_and_ranges() -> None:
    config = SceneConfig(height=30, width=40, num_views=4, supersampling=1, noise_sigma=0.02, gain_jitter=0.1, bias_jitter=0.05)
    out = render_scene(config, seed=3)
    assert out.images.shape == (4, 3, 30, 40) and out.images.dtype == torch.float32
    for mask in (out.valid, out.visibility, out.edges, out.boundaries):
        assert mask.shape == (4, 1, 30, 40) and mask.dtype == torch.bool
    assert out.depths.shape == (4, 1, 30, 40) and out.intrinsics.shape == (4, 3, 3) and out.extrinsics.shape == (4, 4, 4)
    assert 0 <= out.images.min() and out.images.max() <= 1
    assert out.valid.all()  # inside a closed room every ray hits
    assert torch.equal(out.visibility[0], out.valid[0])
    assert not (out.edges & ~out.valid).any()


def test_visibility_marks_occlusions(rendered: RenderedScene) -> None:
    for src in (1, 2):
        seen = rendered.visibility[src].float().mean()
        assert 0.5 < seen < 1.0  # the boxes and spheres hide part of the room from each source
    assert rendered.edges.float().mean() > 0.01


def test_seeded_determinism() -> None:
    config = SceneConfig(height=24, width=32, num_views=2, supersampling=1, noise_sigma=0.01)
    a, b, c = render_scene(config, seed=5), render_scene(config, seed=5), render_scene(config, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.depths, b.depths)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.depths, c.depths)
    assert torch.equal(make_scene(5).quad_origin, make_scene(5).quad_origin)


def test_texture_is_broadband() -> None:
    out = render_scene(SceneConfig(height=96, width=128, num_views=1, supersampling=1))
    coarsest = build_pyramid(out.images[:1].mean(1, keepdim=True), 5)[-1]  # level 4: 8 x 6
    assert coarsest.shape[-2:] == (6, 8)
    assert coarsest[..., :, 1:].sub(coarsest[..., :, :-1]).abs().mean() > 0.01
    fine = out.images[:1].mean(1, keepdim=True)
    assert fine[..., :, 1:].sub(fine[..., :, :-1]).abs().mean() > 0.01


def test_prefiltering_keeps_a_distant_plane_from_aliasing() -> None:
    # One ray per pixel against 4 x 4 rays on a plane 15 m away (0.5 m a pixel): the texture
    # goes down to 8 mm, and without its pre-filtering the two differ by 0.04 on average
    # (measured); with it, by 0.002, while the plane keeps its coarse texture.
    config = SceneConfig(height=24, width=32, num_views=1, supersampling=1, kind="plane", plane_depth=15.0)
    one = render_scene(config)
    many = render_scene(SceneConfig(**{**config.__dict__, "supersampling": 4}))
    assert (one.images - many.images).abs().mean() < 0.005
    assert one.images.std(dim=(-1, -2)).min() > 0.03


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"height": 0}, ArgumentValueError),
        ({"width": 2.5}, ArgumentTypeError),
        ({"num_views": True}, ArgumentTypeError),
        ({"supersampling": 0}, ArgumentValueError),
        ({"fov_deg": 180.0}, ArgumentValueError),
        ({"noise_sigma": -0.1}, ArgumentValueError),
        ({"gain_jitter": 1.0}, ArgumentValueError),
        ({"baseline": float("nan")}, ArgumentValueError),
        ({"baseline": "1"}, ArgumentTypeError),
        ({"kind": "forest"}, ArgumentValueError),
        ({"plane_depth": 0.0}, ArgumentValueError),
    ],
)
def test_bad_config_raises_typed_errors(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        SceneConfig(**kwargs)


def test_bad_arguments_raise_typed_errors() -> None:
    with pytest.raises(ArgumentTypeError):
        render_scene({"height": 10})  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        make_scene(1.5)  # type: ignore[arg-type]
    with pytest.raises(ArgumentValueError):
        make_scene(0, "forest")
    with pytest.raises(ShapeError):
        render_scene(SceneConfig(height=8, width=8, num_views=1), texture=torch.rand(8, 8))
    with pytest.raises(DTypeError):
        render_scene(SceneConfig(height=8, width=8, num_views=1), texture=torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ArgumentValueError):
        render_scene(SceneConfig(height=8, width=8, num_views=1), texture=torch.rand(3, 8, 8), texture_size=0.0)


def test_config_is_comparable() -> None:
    assert SceneConfig() == SceneConfig()
    assert SceneConfig(baseline=0.2) != SceneConfig()
    assert hash(SceneConfig()) == hash(SceneConfig())


def test_default_config_is_three_views_of_320_by_240_at_60_degrees() -> None:
    # Rendering it takes about 2.9 s on one thread: the cameras are checked, not the images.
    config = SceneConfig()
    assert (config.num_views, config.height, config.width, config.fov_deg, config.supersampling) == (3, 240, 320, 60.0, 2)
    K, E = make_cameras(config)
    assert K.shape == (3, 3, 3) and E.shape == (3, 4, 4)
    assert K[0, 0, 2] == 159.5 and K[0, 1, 2] == 119.5
    assert abs(2 * math.degrees(math.atan(160 / float(K[0, 0, 0]))) - 60.0) < 1e-4
