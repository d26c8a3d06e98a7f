"""``python -m gradcv.experiments.depth``: the rendered scene writes every output (depth
maps, point cloud, Figure 4, metrics.json last), a user's folder in COLMAP text and JSON
form, and one-line errors for bad folders, files and overrides. Tiny problems (64x48,
two scales of a few iterations); one run in a subprocess (the command line itself), the
others in-process through ``run_app``, as the CLI would run them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.experiments.run_folders import assert_metrics_last

REPO = Path(__file__).resolve().parents[2]
TINY_SOLVER = ["solver.scales=2", "solver.sweep_level=1", "solver.iterations=5", "solver.planes=8"]
TINY = ["data.height=48", "data.width=64", "data.supersampling=1", *TINY_SOLVER]
OUTPUTS = {"depth.npy", "depth.png", "depth_color.png", "points.ply", "figure4.png", "metrics.json"}


def run_module(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "gradcv.experiments.depth", *args, f"hydra.run.dir={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def run_inprocess(capsys: pytest.CaptureFixture[str], *args: str, out: Path) -> tuple[int, str, str]:
    """The app as its ``main`` runs it: ``(exit status, stdout, stderr)``."""
    from gradcv.experiments._cli import run_app
    from gradcv.experiments.depth import depth

    with pytest.raises(SystemExit) as exit_info:
        run_app(depth, config_name="depth", argv=[*args, f"hydra.run.dir={out}"])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("depth: error: ")
    return lines[0]


def _check_outputs(folder: Path) -> dict:
    from gradcv.depth import read_depth
    from gradcv.experiments._ply import read_ply

    assert OUTPUTS <= {p.name for p in folder.iterdir()}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert_metrics_last(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    depth = np.load(folder / "depth.npy")
    assert depth.dtype == np.float32 and depth.shape == tuple(metrics["size"])
    valid = depth > 0
    assert valid.mean() == pytest.approx(metrics["valid_fraction"])
    # the 16-bit PNG holds the same depths to the millimetre (rounding: half of one), but
    # those beyond its 65.535 m (0: no measurement), which metrics.json counts
    png = read_depth(folder / "depth.png").numpy()
    in_png = valid & (depth <= 65.535)
    assert (np.abs(png - depth)[in_png] <= 0.0005 + 1e-6).all() and (png[~in_png] == 0).all()
    assert int((valid & ~in_png).sum()) == metrics["depth_png_beyond_range_pixels"]
    vertices = read_ply(folder / "points.ply")
    assert len(vertices) == int(valid.sum()) == metrics["point_count"]
    assert np.isfinite(np.stack([vertices[n] for n in "xyz"])).all()
    assert (folder / "depth_color.png").read_bytes().startswith(b"\x89PNG")
    assert (folder / "figure4.png").read_bytes().startswith(b"\x89PNG")
    for key in ("valid_fraction", "mean_photometric_cost", "wall_time_s", "total_time_s"):
        assert math.isfinite(metrics[key]), key
    near, far = metrics["depth_range"]
    assert 0 < near < far
    return metrics


# ----------------------------------------------------------------------------- the scene
def test_rendered_scene_writes_every_output(tmp_path):
    res = run_module(*TINY, out=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "AbsRel" in res.stdout and "level 2/2" in res.stderr  # a progress line per scale
    metrics = _check_outputs(tmp_path)
    assert set(metrics["metrics"]) == {"abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"}
    assert all(math.isfinite(v) for v in metrics["metrics"].values())
    assert metrics["scored_pixel_count"] > 0.8 * 48 * 64
    from gradcv.depth import DepthConfig

    assert metrics["solver"]["scales"] == 2 and metrics["solver"]["optimizer"] == DepthConfig.default().optimizer
    assert metrics["valid_fraction"] > 0.25  # the point cloud and PNG checks above are not empty


def test_point_cloud_is_in_world_coordinates(tmp_path, capsys):
    """The reference's valid pixels, back-projected with K and the inverse extrinsic: a view
    other than view 0 (the world frame) as reference moves the points into the world."""
    from gradcv.depth import SceneConfig, render_scene
    from gradcv.experiments._ply import read_ply
    from gradcv.experiments.depth import back_project

    status, out, err = run_inprocess(capsys, *TINY, "ref_index=1", "figure=false", "progress=false", out=tmp_path)
    assert status == 0, err
    depth = np.load(tmp_path / "depth.npy")
    vertices = read_ply(tmp_path / "points.ply")
    scene = render_scene(SceneConfig(height=48, width=64, supersampling=1), 0)
    points = back_project(depth, depth > 0, scene.intrinsics[1], scene.extrinsics[1])
    np.testing.assert_allclose(np.stack([vertices[n] for n in "xyz"], 1), points, rtol=1e-6, atol=1e-5)
    # back_project inverts the camera: true depth gives the world points that project back to the pixels
    truth = scene.depths[1, 0].double().numpy()
    world = back_project(truth, truth > 0, scene.intrinsics[1], scene.extrinsics[1])
    cam = (scene.extrinsics[1].double().numpy() @ np.c_[world, np.ones(len(world))].T)[:3]
    pix = scene.intrinsics[1].double().numpy() @ cam
    ys, xs = np.nonzero(truth > 0)
    np.testing.assert_allclose(pix[:2] / pix[2], np.stack([xs, ys]), atol=1e-6)
    assert not (tmp_path / "figure4.png").exists()


def test_config_is_the_library_preset_with_overrides():
    import dataclasses

    from gradcv.depth import DepthConfig
    from gradcv.experiments.depth import DepthAppConfig, SolverConfig, depth_config

    assert depth_config(DepthAppConfig()) == DepthConfig.default()
    conf = DepthAppConfig(preset="paper", seed=3)
    conf.solver.lr = 0.02
    conf.solver.iterations = [10, 20, 30, 40, 50, 60, 70]
    assert depth_config(conf) == DepthConfig.paper(lr=0.02, seed=3, iterations=(10, 20, 30, 40, 50, 60, 70))
    # The solver node's schema is the library's config but its seed (the app's top-level seed).
    assert {f.name for f in dataclasses.fields(SolverConfig)} == {f.name for f in dataclasses.fields(DepthConfig)} - {"seed"}


# ----------------------------------------------------------------------------- user folders
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A rendered 64x48 scene written as a user's capture: PNG images, a COLMAP text model
    in sparse/, views.json, and ground truth depth as .npy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradcv.depth import SceneConfig, render_scene, write_colmap_text, write_depth, write_json

    scene = render_scene(SceneConfig(height=48, width=64, supersampling=1), seed=1)
    root = tmp_path_factory.mktemp("capture")
    (root / "images").mkdir()
    (root / "depth").mkdir()
    names = [f"view{i}.png" for i in range(len(scene.images))]
    for name, image, depth in zip(names, scene.images, scene.depths):
        plt.imsave(root / "images" / name, image.permute(1, 2, 0).clamp(0, 1).numpy())
        write_depth((root / "depth" / name).with_suffix(".npy"), depth[0])
    sizes = [(48, 64)] * len(names)
    write_colmap_text(root / "sparse", scene.intrinsics, scene.extrinsics, names, sizes)
    write_json(root / "views.json", scene.intrinsics, scene.extrinsics, [root / "images" / n for n in names],
               sizes=sizes, names=names, depths=[(root / "depth" / n).with_suffix(".npy") for n in names])
    return root


def test_json_folder_with_truth(folder, tmp_path, capsys):
    status, out, err = run_inprocess(capsys, "data=json", f"data.path={folder}", *TINY_SOLVER, out=tmp_path)
    assert status == 0, err
    assert "AbsRel" in out
    metrics = _check_outputs(tmp_path)
    assert all(math.isfinite(v) for v in metrics["metrics"].values())
    assert metrics["views"] == ["view0.png", "view1.png", "view2.png"]


def test_colmap_folder_without_truth(folder, tmp_path, capsys):
    args = ["data=colmap", f"data.path={folder / 'sparse'}", f"data.image_folder={folder / 'images'}"]
    status, out, err = run_inprocess(capsys, *args, *TINY_SOLVER, "figure=false", out=tmp_path)
    assert status == 0, err
    assert "AbsRel" not in out and "mean photometric cost" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "metrics" not in metrics and math.isfinite(metrics["mean_photometric_cost"])
    assert 0 < metrics["valid_fraction"] <= 1
    # with the depth folder, the metrics are back
    status, out, err = run_inprocess(capsys, *args, f"data.depth_folder={folder / 'depth'}", *TINY_SOLVER,
                                     "figure=false", "progress=false", out=tmp_path / "gt")
    assert status == 0, err
    assert math.isfinite(json.loads((tmp_path / "gt" / "metrics.json").read_text())["metrics"]["abs_rel"])


# ----------------------------------------------------------------------------- bad input
def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_missing_folder_is_one_line(tmp_path, capsys):
    status, out, err = run_inprocess(capsys, "data=colmap", f"data.path={tmp_path / 'nope'}", out=tmp_path / "out")
    assert status == 1
    assert "no such folder" in _one_line(err) and "nope" in err
    assert not (tmp_path / "out").exists()  # a failed run leaves no folder


def test_malformed_cameras_is_one_line(folder, tmp_path, capsys):
    copy = _copy(folder, tmp_path)
    cameras = copy / "sparse" / "cameras.txt"
    lines = cameras.read_text().splitlines()
    lines[-1] = lines[-1].replace("PINHOLE 64", "PINHOLE sixty-four")
    cameras.write_text("\n".join(lines) + "\n")
    status, _, err = run_inprocess(capsys, "data=colmap", f"data.path={copy / 'sparse'}",
                                   f"data.image_folder={copy / 'images'}", out=tmp_path / "out")
    assert status == 1
    assert "cameras.txt" in _one_line(err) and "line" in err


def test_distorted_camera_is_one_line(folder, tmp_path, capsys):
    copy = _copy(folder, tmp_path)
    cameras = copy / "sparse" / "cameras.txt"
    cameras.write_text(cameras.read_text().replace("1 PINHOLE", "1 SIMPLE_RADIAL").replace(" 32.5 24.5\n", " 32.5 24.5 0.1\n", 1))
    status, _, err = run_inprocess(capsys, "data=colmap", f"data.path={copy / 'sparse'}", out=tmp_path / "out")
    assert status == 1
    assert "undistort" in _one_line(err)


def test_malformed_json_is_one_line(folder, tmp_path, capsys):
    copy = _copy(folder, tmp_path)
    (copy / "views.json").write_text('{"views": [\n  {"image": "images/view0.png",\n')
    status, _, err = run_inprocess(capsys, "data=json", f"data.path={copy}", out=tmp_path / "out")
    assert status == 1
    assert "views.json" in _one_line(err) and "invalid JSON" in err


def test_image_size_mismatch_is_one_line(folder, tmp_path, capsys):
    import matplotlib.pyplot as plt

    copy = _copy(folder, tmp_path)
    plt.imsave(copy / "images" / "view1.png", np.zeros((40, 64, 3)))
    status, _, err = run_inprocess(capsys, "data=json", f"data.path={copy / 'views.json'}", out=tmp_path / "out")
    assert status == 1
    assert "view1.png" in _one_line(err) and "64 x 40" in err


@pytest.mark.parametrize(
    ("override", "expected_status", "words"),
    [
        ("solver.lr=abc", 2, "solver.lr"),
        ("solver.nope=1", 2, "nope"),
        ("preset=fast", 1, "preset"),
        ("solver.lr=-1", 1, "solver.lr"),
        ("data=bundled", 2, "protocol"),  # the registration app's option
        ("data.height=abc", 2, "data.height"),
        ("ref_index=5", 1, "ref_index"),
    ],
)
def test_bad_override_is_one_line(tmp_path, capsys, override, expected_status, words):
    status, _, err = run_inprocess(capsys, override, *TINY, out=tmp_path / "out")
    assert status == expected_status, err
    assert words in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_synthetic_fields_refused_with_a_user_folder(folder, tmp_path, capsys):
    status, _, err = run_inprocess(capsys, "data=json", f"data.path={folder}", "data.height=48", out=tmp_path / "out")
    assert status == 1
    assert "data.height" in _one_line(err) and "synthetic" in err


def test_register_data_group_unchanged():
    """The data options added for this app (synthetic, colmap, json) do not change what
    gradcv-register composes: its default is still the bundled pair."""
    from hydra import compose, initialize_config_dir

    import gradcv.experiments.depth  # noqa: F401  (stores depth_schema)
    import gradcv.experiments.register  # noqa: F401  (stores register_schema)
    from gradcv.experiments._cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("register")
        assert cfg.data.source == "bundled"
        cfg = compose("depth")
        assert cfg.data.source == "synthetic" and cfg.preset == "default"


def test_chosen_views(folder, tmp_path, capsys):
    """data.views picks views by name or index; ref_index counts in the chosen list."""
    args = ["data=colmap", f"data.path={folder / 'sparse'}", f"data.image_folder={folder / 'images'}",
            f"data.depth_folder={folder / 'depth'}", *TINY_SOLVER, "figure=false", "progress=false"]
    status, out, err = run_inprocess(capsys, *args, "data.views=[view2.png,0]", "ref_index=1", out=tmp_path / "a")
    assert status == 0, err
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["views"] == ["view2.png", "view0.png"] and metrics["ref_index"] == 1
    assert math.isfinite(metrics["metrics"]["abs_rel"])
    status, _, err = run_inprocess(capsys, *args, "data.views=[view9.png,0]", out=tmp_path / "b")
    assert status == 1 and "view9.png" in _one_line(err)


def test_interrupted_run_keeps_finished_outputs(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the point cloud is written: exit 130, the depth maps written before it
    stay, no half-written file and no metrics.json (the folder is not complete)."""
    from gradcv.experiments import _ply

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_ply, "write_ply", interrupted)
    status, _, err = run_inprocess(capsys, *TINY, "progress=false", out=tmp_path)
    assert status == 130 and "interrupted" in err
    names = {p.name for p in tmp_path.iterdir()}
    assert {"depth.npy", "depth.png", "depth_color.png"} <= names
    assert "metrics.json" not in names and "points.ply" not in names
    assert not [n for n in names if n.endswith(".tmp")]
