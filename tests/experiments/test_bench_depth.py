"""The depth benchmark app: one tiny run in a subprocess checked for its outputs and the
target lines, command-line mistakes (one line, exit 2), a failure just before
metrics.json, and in-process checks of the scoring mask, the batched columns and the
target logic."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradcv.depth import SceneConfig, render_scene
from gradcv.experiments.bench_depth import CSV_COLUMNS, METRIC_COLUMNS, OFF_EDGE_COLUMNS, check_targets, render_batch, run_method, score
from tests.experiments.run_folders import app_outputs, assert_metrics_last

REPO = Path(__file__).resolve().parents[2]
TINY = ["scenes=2", "scene.height=48", "scene.width=64", "methods=[default,sweep64]", "solver.iterations=5", "solver.scales=2",
        "batch=2"]
TINY_SCENE = SceneConfig(height=24, width=32, supersampling=1)


def run_module(*args: str, cwd: Path = REPO, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = ["-c", code] if code is not None else ["-m", "gradcv.experiments.bench_depth"]
    return subprocess.run([sys.executable, *command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench_depth")
    return run_module(*TINY, f"hydra.run.dir={out}"), out


def test_tiny_run_writes_csv_metrics_table_and_targets(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar off a terminal
    names = {p.name for p in out.iterdir()}
    assert {"results.csv", "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".hydra"], names
    assert_metrics_last(out)
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    assert [(r["seed"], r["method"]) for r in rows] == [("1000", "default"), ("1000", "sweep64"), ("1001", "default"), ("1001", "sweep64")]
    for r in rows:
        values = {c: float(r[c]) for c in [*METRIC_COLUMNS, *OFF_EDGE_COLUMNS, "coverage", "seconds"]}
        assert all(math.isfinite(v) for v in values.values()), r
        assert 0 <= values["delta1"] <= values["delta2"] <= values["delta3"] <= 1
        assert 0 < values["coverage"] <= 1 and values["seconds"] > 0 and int(r["pixels"]) > 0 and int(r["batch"]) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [1000, 1001] and metrics["scene_config"]["width"] == 64
    assert set(metrics["summary"]) == {"default", "sweep64"}
    assert all(v is not None and math.isfinite(v) for s in metrics["summary"].values() for v in s.values())
    assert metrics["ratio_abs_rel_default_to_sweep128"] is None  # no sweep128 column
    assert [t["passed"] is None for t in metrics["targets"]] == [False, False, True, False]
    lines = proc.stdout.splitlines()
    targets = lines[lines.index("targets (default column):") + 1 :][:4]
    assert [t[:8] for t in targets][2] == "  [SKIP]" and all(t[:8] in ("  [PASS]", "  [FAIL]", "  [SKIP]") for t in targets)
    assert "AbsRel <= 0.01 on every scene" in targets[0] and "<= 10 s per scene at 1 thread" in targets[3]
    assert any("2 scene(s) per call" in line for line in lines)
    assert lines[-1].startswith("outputs:") and str(out) in lines[-1]


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["nosuchkey=1"], "nosuchkey"),
        (["methods=[default,sweeps]"], "methods"),
        (["scene.height=0"], "scene.height"),
        (["solver.iterations=0"], "solver.iterations"),
    ],
)
def test_bad_command_line_is_one_line_exit_2(args, mentions, tmp_path):
    proc = run_module(*args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_depth: error:") and mentions in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []  # Hydra's run folder is removed again


FAIL_AT_METRICS = """
import sys
import gradcv.experiments.bench_depth as app
def fail(*args, **kwargs):
    raise OSError(28, "No space left on device")
app.write_metrics = fail
app.main()
"""


def test_failure_before_metrics_keeps_the_csv_but_no_metrics(tmp_path):
    proc = run_module("scenes=1", "scene.height=24", "scene.width=32", "methods=[sweep8]", f"hydra.run.dir={tmp_path}",
                      code=FAIL_AT_METRICS)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {p.name for p in app_outputs(tmp_path)} == {"results.csv"}


def test_scored_pixels_are_valid_and_seen_by_a_source_and_the_sweep_gets_the_true_range():
    batch = render_batch(TINY_SCENE, [7], torch.device("cpu"))
    r = render_scene(TINY_SCENE, 7)
    expected = r.valid[0] & r.visibility[1:].any(0)
    assert torch.equal(batch.mask[0], expected) and expected.any()
    near_edge = torch.nn.functional.max_pool2d(r.edges[0][None].float(), 7, 1, 3)[0] > 0
    assert torch.equal(batch.off_edges[0], expected & ~near_edge) and r.edges[0].any()
    gt = r.depths[0][r.valid[0]]
    assert torch.equal(batch.depth_range[0], torch.stack([gt.min(), gt.max()]))
    assert batch.images.shape == (1, 3, 3, 24, 32) and batch.intrinsics.shape == (1, 3, 3, 3)


def test_batched_sweep_scores_each_scene_as_alone():
    device = torch.device("cpu")
    both = render_batch(TINY_SCENE, [3, 4], device)
    depth, seconds = run_method("sweep16", both, {}, 5)
    rows = score("sweep16", both, depth, seconds)
    assert [r["seed"] for r in rows] == [3, 4] and all(r["batch"] == 2 and r["seconds"] == seconds / 2 for r in rows)
    for row in rows:
        alone = render_batch(TINY_SCENE, [row["seed"]], device)
        (single,) = score("sweep16", alone, run_method("sweep16", alone, {}, 5)[0], 1.0)
        assert single["abs_rel"] == pytest.approx(row["abs_rel"], rel=1e-5) and single["delta1"] == pytest.approx(row["delta1"])


def _row(seed: int, method: str, abs_rel: float, delta1: float, seconds: float) -> dict:
    return {"seed": seed, "method": method, "abs_rel": abs_rel, "delta1": delta1, "seconds": seconds, "rmse": 0.1, "coverage": 1.0,
            "abs_rel_off_edges": abs_rel, "delta1_off_edges": delta1}


def test_targets_pass_fail_and_skip():
    from gradcv.experiments.bench_depth import summarise

    rows = [_row(0, "default", 0.005, 0.995, 3.0), _row(1, "default", 0.012, 0.999, 12.0),
            _row(0, "sweep128", 0.02, 0.97, 1.0), _row(1, "sweep128", 0.02, 0.97, 1.0)]
    summary = summarise(rows, ["default", "sweep128"])
    got = {t["target"].split(" ")[0]: t["passed"] for t in check_targets(summary, rows, threads=1)}
    # AbsRel fails on scene 1 only, delta passes, the mean ratio 0.0085 / 0.02 passes, time fails on scene 1.
    assert list(got.values()) == [False, True, True, False]
    assert check_targets(summary, rows, threads=2)[3]["passed"] is None  # time checked at one thread only
    only_default = summarise(rows[:2], ["default"])
    assert check_targets(only_default, rows[:2], threads=1)[2]["passed"] is None
    nan = [_row(0, "default", math.nan, math.nan, 1.0)]
    assert [t["passed"] for t in check_targets(summarise(nan, ["default"]), nan, 1)][:2] == [False, False]


def test_scene_notes_name_the_issues_variants():
    from gradcv.experiments.bench_depth import scene_notes

    assert scene_notes(SceneConfig()) == []
    assert ["5-view" in n for n in scene_notes(SceneConfig(num_views=5))] == [True]
    jitter = scene_notes(SceneConfig(gain_jitter=0.15, bias_jitter=0.03, noise_sigma=0.005))
    assert len(jitter) == 1 and "not robust to a per-view gain" in jitter[0]
    assert len(scene_notes(SceneConfig(height=48, width=64, gain_jitter=0.1))) == 3
