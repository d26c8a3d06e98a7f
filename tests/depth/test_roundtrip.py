"""Issue 11's round trip: render a scene, write it in both calibration formats (images as
8-bit PNG, depth as 16-bit PNG in millimetres and as .npy), read it back: the same
cameras, images and depths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gradcv.depth import read_colmap_text, read_json, write_colmap_text, write_depth, write_json
from gradcv.depth.render import render_scene
from gradcv.depth.scene import SceneConfig


def _read_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, object]:
    from PIL import Image

    scene = render_scene(SceneConfig(height=30, width=40, num_views=3, supersampling=1), seed=3)
    folder = tmp_path_factory.mktemp("scene")
    (folder / "images").mkdir()
    (folder / "depth").mkdir()
    names = []
    for i, (image, depth) in enumerate(zip(scene.images, scene.depths)):
        name = f"view{i}.png"
        pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / "images" / name)
        write_depth(folder / "depth" / name, depth[0])
        write_depth(folder / "depth" / f"view{i}.npy", depth[0])
        names.append(name)
    sizes = [tuple(scene.images.shape[-2:])] * len(names)
    write_colmap_text(folder / "sparse", scene.intrinsics, scene.extrinsics, names, sizes)
    write_json(
        folder / "views.json", scene.intrinsics, scene.extrinsics, [folder / "images" / n for n in names],
        sizes=sizes, names=names, depths=[folder / "depth" / f"view{i}.npy" for i in range(len(names))],
    )
    return folder, scene


def _check(calibration, scene, depth_tolerance: float, pose_tolerance: float = 1e-9) -> None:
    torch.testing.assert_close(calibration.intrinsics, scene.intrinsics.double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(calibration.extrinsics, scene.extrinsics.double(), rtol=0, atol=pose_tolerance)
    for i, image in enumerate(calibration.images):
        # 8-bit PNG: half a grey level
        assert (image - scene.images[i]).abs().max() <= 0.5 / 255 + 1e-6
    for i, depth in enumerate(calibration.depths):
        assert depth is not None
        torch.testing.assert_close(torch.as_tensor(depth), scene.depths[i, 0].double(), rtol=0, atol=depth_tolerance)


def test_colmap_round_trip(written) -> None:
    folder, scene = written
    calibration = read_colmap_text(
        folder / "sparse", image_folder=folder / "images", depth_folder=folder / "depth", read_image=_read_png
    )
    assert calibration.names == [f"view{i}.png" for i in range(3)]
    # the depth folder holds both files per view: the loader reads one of them
    # COLMAP stores a quaternion, which makes the renderer's float32 rotation orthonormal
    # in float64 again: a few float32 ulps
    _check(calibration, scene, depth_tolerance=0.5e-3 + 1e-9, pose_tolerance=1e-6)


def test_json_round_trip(written) -> None:
    folder, scene = written
    calibration = read_json(folder / "views.json", read_image=_read_png)
    _check(calibration, scene, depth_tolerance=1e-6)
