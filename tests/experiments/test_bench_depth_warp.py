"""The depth-warp benchmark app: one tiny run in a subprocess checked for its outputs,
the agreement check and the profile summary; command-line mistakes (one line, exit 2);
a failure just before metrics.json; and the columns warping the same problem."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradcv.experiments.bench_depth_warp import (
    BACKWARD,
    GRADCV,
    KORNIA,
    KORNIA_FRAME,
    BenchDepthWarpConfig,
    agreement,
    make_problem,
    warps,
)
from tests.experiments.run_folders import app_outputs, assert_metrics_last

REPO = Path(__file__).resolve().parents[2]
TINY = ["height=24", "width=32", "batches=[1,2]", "threads=[1]", "repetitions=2", "backward_repetitions=2", "warmup=1",
        "profile_repetitions=1", "compile=false", "device=cpu"]
LIBRARIES = {GRADCV, KORNIA, KORNIA_FRAME}


def run_module(*args: str, cwd: Path = REPO, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = ["-c", code] if code is not None else ["-m", "gradcv.experiments.bench_depth_warp"]
    return subprocess.run([sys.executable, *command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_tiny_run_writes_csv_profiles_and_metrics(tmp_path):
    proc = run_module(*TINY, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the profiler's own log lines are filtered out
    names = {p.name for p in app_outputs(tmp_path)}
    assert names == {"results.csv", "profile_gradcv.txt", "profile_kornia.txt", "metrics.json"}
    assert_metrics_last(tmp_path)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = {(r["task"], r["library"], r["mode"]) for r in rows}
    assert len(rows) == len(keys) == 2 * 3 * 2
    assert {k[1] for k in keys} == LIBRARIES and {k[2] for k in keys} == {"forward", BACKWARD}
    assert {k[0] for k in keys} == {"depth_warp 32x24x3 B=1", "depth_warp 32x24x3 B=2"}
    assert all(float(r["median_ms"]) > 0 for r in rows)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and "compiled/eager" not in metrics
    for batch in ("1", "2"):
        assert set(metrics["agreement"][batch]) == {KORNIA, KORNIA_FRAME}
        assert all(d["image_max_abs_diff"] < 1e-4 for d in metrics["agreement"][batch].values())
    assert len(metrics["ratios"]) == 4 and all(r["gradcv_over_kornia"] > 0 for r in metrics["ratios"])
    for library in ("gradcv", "Kornia"):
        p = metrics["profile"][library]
        assert p["batch"] == 2 and sum(p["categories"].values()) == pytest.approx(p["total_ms"], rel=1e-6)
        assert p["categories"]["forward: grid_sample"] > 0 and p["top"]
    assert "grid_sampler_2d_backward" in (tmp_path / "profile_gradcv.txt").read_text()
    out = proc.stdout
    assert "gradcv/Kornia" in out and "where the time goes: gradcv" in out and "where the time goes: Kornia" in out
    assert out.splitlines()[-1].startswith("outputs:")


@pytest.mark.parametrize(("args", "mentions"), [(["nosuchkey=1"], "nosuchkey"), (["threads=[0]"], "threads"),
                                                (["depth_min=3", "depth_max=2"], "depth"),
                                                pytest.param(["device=cuda"], "device: cuda is not available here", marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without CUDA"))])
def test_bad_command_line_is_one_line_exit_2(args, mentions, tmp_path):
    proc = run_module(*args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_depth_warp: error:") and mentions in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


FAIL_AT_METRICS = """
import gradcv.experiments._rows as rows
import gradcv.experiments.bench_depth_warp as app
def fail(*args, **kwargs):
    raise OSError(28, "No space left on device")
rows.write_metrics = fail
app.main()
"""


def test_failure_before_metrics_keeps_the_other_outputs(tmp_path):
    proc = run_module(*TINY, "batches=[1]", "kornia=false", f"hydra.run.dir={tmp_path}", code=FAIL_AT_METRICS)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {p.name for p in app_outputs(tmp_path)} == {"results.csv", "profile_gradcv.txt"}


def test_the_columns_warp_the_same_problem_and_it_is_not_the_identity():
    conf = BenchDepthWarpConfig(height=24, width=32)
    problem = make_problem(conf, 2, torch.Generator().manual_seed(1))
    fns = warps(problem, kornia=True)
    assert set(fns) == LIBRARIES
    ours = fns[GRADCV](problem.depth)
    assert (ours - problem.image).abs().mean() > 0.05  # the views differ: the warp moves pixels
    diffs = agreement(problem, fns)
    for diff in diffs.values():
        assert diff["image_max_abs_diff"] < 1e-5
        assert diff["depth_grad_median_rel_diff"] < 1e-4
    # A shallower depth moves the pixels: the comparison would notice a wrong convention.
    assert (fns[KORNIA](problem.depth * 0.5) - ours).abs().max() > 0.1
