"""``python -m gradcv.experiments.register``: the bundled pair, every optimizer in conf/optimizer/,
the solver and data groups, the user's own images, and one-line errors. Subprocess runs on
tiny settings; the groups' composition is checked in-process with Hydra's compose API."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
OPTIMIZERS = sorted(p.stem for p in (REPO / "conf" / "optimizer").glob("*.yaml"))
TINY = ["data.protocol=detone", "solver.levels=2", "solver.iterations=10"]


def run(*args: str, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["MPLBACKEND"] = "Agg"
    extra = [f"hydra.run.dir={out}"] if out is not None else []
    return subprocess.run(
        [sys.executable, "-m", "gradcv.experiments.register", *args, *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def test_bundled_pair_writes_metrics_homography_and_figure(tmp_path):
    res = run(*TINY[:2], "solver.iterations=20", out=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "corner error (MACE)" in res.stdout
    assert "level 2/2" in res.stderr  # the progress line of each level
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert math.isfinite(metrics["mace_px"]) and metrics["mace_px"] < metrics["mace_identity_px"]
    assert len(metrics["final_loss_per_level"]) == 2
    H = json.loads((tmp_path / "homography.json").read_text())
    assert np.asarray(H["homography"]).shape == (3, 3) and np.asarray(H["homography_true"]).shape == (3, 3)
    png = (tmp_path / "figure3.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_optimizer_group_is_complete():
    # torch.optim's Adam, SGD, LBFGS and several of torch_optimizer's (issue 5).
    names = {Path(REPO / "conf" / "optimizer" / f"{o}.yaml").read_text().split("name:")[1].split()[0] for o in OPTIMIZERS}
    assert {"Adam", "SGD", "LBFGS"} <= names
    assert len(names - {"Adam", "SGD", "LBFGS", "AdamW"}) >= 3


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_runs(tmp_path, optimizer):
    res = run("solver=first_order", f"optimizer={optimizer}", *TINY, "figure=false", "progress=false", out=tmp_path)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["optimizer"]["name"]
    assert isinstance(metrics["final_loss"], float) and math.isfinite(metrics["final_loss"])


def test_user_images(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, x = np.mgrid[0:72, 0:80].astype(np.float32)
    img = 0.5 + 0.25 * np.sin(x / 5.0) * np.cos(y / 7.0) + 0.2 * np.exp(-((x - 40) ** 2 + (y - 30) ** 2) / 200.0)
    shifted = np.roll(img, 2, axis=1)
    plt.imsave(tmp_path / "a.png", np.stack([img, img * 0.9, 1 - img], -1).clip(0, 1))
    plt.imsave(tmp_path / "b.png", np.stack([shifted, shifted * 0.9, 1 - shifted], -1).clip(0, 1))
    out = tmp_path / "out"
    res = run(f"src={tmp_path / 'a.png'}", f"dst={tmp_path / 'b.png'}", "solver.levels=2", "solver.iterations=20", out=out)
    assert res.returncode == 0, res.stderr
    assert "photometric error" in res.stdout and "MACE" not in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["size"] == [72, 80] and "mace_px" not in metrics
    assert metrics["photometric_error"] < metrics["photometric_error_identity"]
    assert (out / "figure3.png").is_file() and (out / "homography.json").is_file()


def _one_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert lines[0].startswith("register: error: ")
    return lines[0]


def test_missing_image_is_one_line(tmp_path):
    res = run(f"src={tmp_path / 'nope.png'}", f"dst={tmp_path / 'nope.png'}", out=tmp_path / "out")
    assert res.returncode == 1
    assert "nope.png" in _one_line(res)


def test_unreadable_image_is_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image\n")
    res = run(f"src={bad}", f"dst={bad}", out=tmp_path / "out")
    assert res.returncode == 1
    assert "cannot read image" in _one_line(res)


@pytest.mark.parametrize("override", ["solver.levels=abc", "optimizer=nope"])
def test_bad_override_is_one_line_exit_2(tmp_path, override):
    res = run(override, out=tmp_path / "out")
    assert res.returncode == 2
    _one_line(res)


def test_optimizer_with_a_second_order_preset_is_one_line(tmp_path):
    """The optimizer group only drives first-order presets: naming one for the default
    (second-order) preset would be silently ignored, so it is refused."""
    res = run("optimizer=radam", *TINY, out=tmp_path / "out")
    assert res.returncode == 1
    line = _one_line(res)
    assert "optimizer=radam" in line and "solver=first_order" in line


def test_default_preset_with_search(tmp_path):
    """The default preset on the full-size bundled pair: MACE well under a pixel, one
    progress line per level even though pairs stop before the iteration cap."""
    res = run("figure=false", out=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "levenberg_marquardt" in res.stdout
    levels = [line.split()[1].rstrip(":") for line in res.stderr.splitlines() if line.startswith("level ")]
    assert levels == ["1/4", "2/4", "3/4", "4/4"]
    assert json.loads((tmp_path / "metrics.json").read_text())["mace_px"] < 0.05


def test_masks_from_image_files(tmp_path):
    """dst_mask=PATH: a bright occluder pasted into dst is ignored where the mask is black;
    a mask of another size is one line and exit 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    img = 0.5 + 0.25 * np.sin(x / 6.0) * np.cos(y / 9.0) + 0.2 * np.exp(-((x - 60) ** 2 + (y - 50) ** 2) / 300.0)
    moved = np.roll(img, 3, axis=1)
    moved[40:80, 20:60] = 1.0
    mask = np.ones_like(img)
    mask[36:84, 16:64] = 0.0
    for name, arr in (("a.png", img), ("b.png", moved), ("m.png", mask), ("small.png", mask[:64])):
        plt.imsave(tmp_path / name, np.stack([arr] * 3, -1).clip(0, 1))
    args = [f"src={tmp_path / 'a.png'}", f"dst={tmp_path / 'b.png'}", "solver.levels=3", "figure=false"]
    res = run(*args, f"dst_mask={tmp_path / 'm.png'}", out=tmp_path / "out")
    assert res.returncode == 0, res.stderr
    H = np.asarray(json.loads((tmp_path / "out" / "homography.json").read_text())["homography"])
    assert abs(H[0, 2] - 3.0) < 0.05 and abs(H[1, 2]) < 0.05, H
    res = run(*args, f"dst_mask={tmp_path / 'small.png'}", out=tmp_path / "out2")
    assert res.returncode == 1
    assert "dst_mask: expected the size of src" in _one_line(res)


# ------------------------------------------------------------------ config groups, in-process
SOLVERS = sorted(p.stem for p in (REPO / "conf" / "solver").glob("*.yaml"))


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import gradcv.experiments.register  # noqa: F401  (stores register_schema)
    from gradcv.experiments._cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("register", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    del cfg.hydra
    return OmegaConf.to_object(cfg), choices


@pytest.mark.parametrize("preset", SOLVERS)
def test_solver_group_is_the_library_preset(preset):
    """solver=<preset> composes, with its optimizer, exactly RegistrationConfig.<preset>()."""
    from gradcv.experiments.register import registration_config
    from gradcv.registration import RegistrationConfig

    conf, choices = _compose(f"solver={preset}")
    assert registration_config(conf, choices["optimizer"], choices["solver"]) == getattr(RegistrationConfig, preset)()
    assert set(SOLVERS) == {"default", "second_order", "first_order", "paper"}


def test_solver_fields_override_and_optimizer_choice_wins():
    from gradcv.experiments.register import SolverConfig, registration_config
    from gradcv.registration import RegistrationConfig

    conf, choices = _compose("solver=paper", "solver.levels=4")
    assert registration_config(conf, choices["optimizer"]) == RegistrationConfig.paper(levels=4)
    conf, choices = _compose("solver=paper", "optimizer=radam")
    config = registration_config(conf, choices["optimizer"])
    assert (config.optimizer, config.lr, config.iterations) == ("RAdam", 0.03, 200)
    # The group's schema is the library's config without the optimiser's fields.
    library = {f.name for f in dataclasses.fields(RegistrationConfig)}
    group = {f.name for f in dataclasses.fields(SolverConfig)}
    assert group == library - {"optimizer", "optimizer_kwargs", "lr", "differentiable"}


def test_data_group_and_shortcuts(tmp_path):
    from gradcv.experiments.register import load_pair

    conf, choices = _compose()
    assert choices["data"] == "bundled" and load_pair(conf).truth is not None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.random.default_rng(0).random((40, 48, 3))
    plt.imsave(tmp_path / "a.png", img)
    conf, _ = _compose("data=files", f"data.src={tmp_path / 'a.png'}", f"data.dst={tmp_path / 'a.png'}")
    pair = load_pair(conf)
    assert pair.truth is None and pair.src.shape == (1, 3, 40, 48)
    conf, _ = _compose(f"src={tmp_path / 'a.png'}", f"dst={tmp_path / 'a.png'}")
    assert load_pair(conf).src.shape == (1, 3, 40, 48)


def test_metrics_written_last(tmp_path):
    res = run(*TINY, out=tmp_path)
    assert res.returncode == 0, res.stderr
    times = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix in (".json", ".png")}
    assert set(times) == {"metrics.json", "homography.json", "figure3.png"}
    assert times["metrics.json"] >= max(times.values())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] in {"converged", "iteration_limit"} and metrics["solver"]["levels"] == 2
