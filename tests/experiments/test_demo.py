"""``python -m gradcv.experiments.demo``: every stage into one run folder with a summary, a
failing stage reported while the others run, and the parts of the stage runner (progress
read from the apps' output, a stage whose app is missing). The runs are subprocesses on
tiny settings (seconds a stage)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

def overrides(stage: str, *items: str) -> str:
    """``<stage>.overrides=[...]`` with each override quoted, as the command line needs."""
    return f"{stage}.overrides=[" + ",".join(f'"{item}"' for item in items) + "]"


TINY_SOBEL = overrides("sobel", "batch_sizes=[1,2]", "repetitions=2", "warmup=0", "image_size=32", "max_seconds_per_cell=0.5",
                       "compile=false")
TINY_REGISTER = overrides("register", "data.protocol=detone", "solver.levels=2", "solver.iterations=10")
TINY_DEPTH = overrides("depth", "data.height=48", "data.width=64", "data.supersampling=1", "solver.scales=2",
                       "solver.sweep_level=1", "solver.iterations=5", "solver.planes=8")
TINY_ATTACK = overrides("attack", "data.height=96", "data.width=128", "attack.iterations=2", "match.num_features=64")
TINY = [TINY_SOBEL, TINY_REGISTER, TINY_DEPTH, TINY_ATTACK, "sweep_planes=8"]


def run(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, "-m", "gradcv.experiments.demo", *args, f"hydra.run.dir={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_every_stage_into_one_folder_with_a_summary(tmp_path):
    res = run(*TINY, out=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1].endswith("(also summary.md, summary.png)")
    assert str(tmp_path / "summary.html") in res.stdout.splitlines()[-1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    stages = metrics["stages"]
    assert list(stages) == ["sobel", "register", "depth", "attack"]
    for name, figure in (("sobel", "sobel_benchmark.png"), ("register", "figure3.png"), ("depth", "figure4.png"),
                         ("attack", "figure5.png")):
        assert stages[name]["status"] == "done", stages[name]
        folder = tmp_path / name
        # the app's own outputs, its metrics.json last, the composed config and its log
        assert (folder / figure).read_bytes().startswith(b"\x89PNG")
        assert json.loads((folder / "metrics.json").read_text())
        assert (folder / "config.yaml").is_file() and (folder / "log.txt").read_text().strip()
    # the demo's overrides reached the apps
    assert json.loads((tmp_path / "register" / "metrics.json").read_text())["size"] == [128, 128]
    assert json.loads((tmp_path / "depth" / "metrics.json").read_text())["size"] == [48, 64]
    sobel_csv = (tmp_path / "sobel" / "sobel_benchmark.csv").read_text()
    assert {line.split(",")[1] for line in sobel_csv.splitlines()[1:]} == {"1", "2"}

    headline = stages["register"]["headline"]
    assert headline["mace_px"] < headline["mace_identity_px"]
    refs = stages["register"]["references"]
    if _has("cv2"):
        assert refs["OpenCV"]["method"] == "ECC" and refs["OpenCV"]["mace_px"] >= 0
    if _has("kornia"):
        assert refs["Kornia"]["mace_px"] >= 0
        assert "Kornia" in stages["sobel"]["references"]
    depth = stages["depth"]
    assert 0 <= depth["headline"]["abs_rel"] < 1 and 0 <= depth["headline"]["delta1"] <= 1
    sweep = depth["references"]["plane sweep (8 planes)"]
    assert 0 <= sweep["abs_rel"] and 0 <= sweep["delta1"] <= 1

    attack = stages["attack"]["headline"]
    assert isinstance(attack["success"], bool) and attack["iterations"] <= 2 and len(attack["psnr_db"]) == 2
    if _has("cv2"):
        assert "after" in stages["attack"]["references"]["OpenCV"]

    md = (tmp_path / "summary.md").read_text()
    for text in ("Figure 2", "Figure 3", "Figure 4", "Figure 5", "sobel/sobel_benchmark.png", "register/figure3.png", "attack/figure5.png",
                 "OpenCV ECC" if _has("cv2") else "corner error", "plane sweep"):
        assert text in md, text
    page = (tmp_path / "summary.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4  # self-contained
    assert (tmp_path / "summary.png").read_bytes().startswith(b"\x89PNG")
    # the progress bars (stderr is no terminal here: tqdm still draws, without the clock)
    for i, name in enumerate(stages, start=1):
        assert f"[{i}/4] {name}" in res.stderr


def test_a_failing_stage_is_reported_and_the_others_run(tmp_path):
    missing = tmp_path / "no_such_image.png"
    res = run(TINY_SOBEL, TINY_REGISTER, f'register.extra=["src={missing}","dst={missing}"]', "stages=[register,sobel]",
              "progress=false", out=tmp_path / "out")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("demo: error: 1 of 2 stages failed: register: ") and "no_such_image.png" in lines[0]
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["failed"] == ["register"]
    assert metrics["stages"]["register"]["status"] == "failed"
    assert metrics["stages"]["sobel"]["status"] == "done"  # the next stage still ran
    assert (out / "sobel" / "sobel_benchmark.png").is_file()
    assert "Traceback" in (out / "register" / "log.txt").read_text()  # the details, for a bug report
    md = (out / "summary.md").read_text()
    assert "| register | 3 | failed in" in md and "no_such_image.png" in md
    assert "summary:" in res.stdout


def test_bad_stage_name_is_one_line(tmp_path):
    res = run("stages=[register,nope]", out=tmp_path / "out")
    assert res.returncode == 2
    assert res.stderr.strip() == "demo: error: stages: expected some of sobel, register, depth, attack, got ['register', 'nope']"
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_one_line_before_any_stage(tmp_path):
    res = run("--device", "cuda", out=tmp_path / "out")
    assert res.returncode == 1
    assert res.stderr.strip() == "demo: error: device: cuda is not available here (use device=cpu)"
    assert not (tmp_path / "out").exists()


def test_progress_is_read_from_the_apps_output():
    from gradcv.experiments.demo import StageOutput, progress_of

    assert progress_of("level 2/4:  50%|#####     | 15/30 [00:00<00:00, 9.1it/s, loss 0.1]", False) == pytest.approx(0.375)
    assert progress_of("level 2/4: 13/30 steps, loss 0.00034", True) == pytest.approx(0.5)
    assert progress_of("[ 3/12] threads=1 batch=1    OpenCV", False) == pytest.approx(2 / 12)
    assert progress_of("[ 3/12] threads=1 batch=1    OpenCV     0.071 ms  (30 calls)", True) == pytest.approx(3 / 12)
    assert progress_of("register: wrote /tmp/x", True) is None

    seen: list[float | None] = []
    log = io.StringIO()
    stream = StageOutput(log, lambda fraction, line: seen.append(fraction))
    stream.write("\rlevel 1/2:   0%|   | 0/10 [00:00<?, ?it/s]")
    stream.write("\rlevel 1/2: 100%|###| 10/10 [00:00<00:00, 9.1it/s]\n")
    stream.write("done\n")
    stream.close_log()
    assert log.getvalue() == "level 1/2: 100%|###| 10/10 [00:00<00:00, 9.1it/s]\ndone\n"  # a bar's last state only
    assert seen == [0.0, 0.5, None]


def test_a_stage_whose_app_is_missing_is_skipped(tmp_path, monkeypatch):
    import gradcv.experiments.demo as demo

    monkeypatch.setitem(demo.STAGES, "attack", demo.Stage("_no_such_app", "attack", 5, "figure5.png", "missing"))
    conf = demo.DemoConfig(progress=False)
    result = demo.run_stage("attack", 1, 1, conf, tmp_path, io.StringIO())
    assert result.status == "skipped" and "gradcv.experiments._no_such_app is not in this version" in result.message
    assert not (tmp_path / "attack").exists()


def test_an_interrupted_stage_says_so_and_stops_the_demo(tmp_path, monkeypatch):
    import gradcv.experiments.demo as demo

    def interrupted(*args, **kwargs):
        print("composing")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "compose_stage", interrupted)
    result = demo.StageResult("register")
    with pytest.raises(KeyboardInterrupt):
        demo.run_stage("register", 1, 1, demo.DemoConfig(progress=False), tmp_path, io.StringIO(), result)
    assert result.status == "interrupted" and result.seconds >= 0
    assert (tmp_path / "register" / "log.txt").read_text() == "composing\ninterrupted\n"
    md = demo.summary_markdown([result, demo.StageResult("depth", status="not run")], tmp_path, 1.0, False)
    assert "| register | 3 | interrupted in" in md and "| depth | 4 | not run |" in md and "Incomplete" in md
