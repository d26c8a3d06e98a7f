"""The SSIM benchmark app end to end in a subprocess, with tiny settings: one run checked
from several angles, and command-line mistakes that must give one line and exit 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.experiments.run_folders import assert_metrics_last

REPO = Path(__file__).resolve().parents[2]
TINY = ["batch=1", "channels=1", "image_size=24", "window_size=9", "sigma=1.0", "repetitions=2", "backward_repetitions=2", "warmup=1",
        "threads=[1]", "compile=false", "device=cpu"]


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "gradcv.experiments.bench_ssim", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench_ssim")
    return run_module(*TINY, f"hydra.run.dir={out}"), out


def test_tiny_run_succeeds_quietly_and_writes_outputs(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # warnings are errors in this project: a library warning would show here
    names = {p.name for p in out.iterdir()}
    assert {"ssim_benchmark.csv", "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".hydra"], names
    assert_metrics_last(out)
    assert proc.stdout.splitlines()[-1].startswith("outputs:") and str(out) in proc.stdout.splitlines()[-1]


def test_tiny_run_csv_metrics_and_ratios(tiny_run):
    proc, out = tiny_run
    with open(out / "ssim_benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["threads", "library", "mode", "median_ms", "calls"]
    assert {(r["library"], r["mode"]) for r in rows} == {
        ("gradcv", "forward"), ("gradcv", "forward + backward"), ("Kornia", "forward"),
        ("Kornia", "forward + backward"), ("scikit-image", "forward"),
    }
    assert all(float(r["median_ms"]) > 0 and int(r["calls"]) == 2 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input"] == [1, 1, 24, 24] and metrics["config"]["window_size"] == 9
    assert metrics["device"] == "cpu" and "compiled/eager" not in metrics  # compile=false: no compiled rows
    assert set(metrics["ratios"]["1"]) == {
        "gradcv/Kornia forward", "gradcv/Kornia forward + backward", "gradcv/scikit-image forward"
    }
    # sigma 1.0 is not Kornia's window, so no Kornia comparison (and a note); scikit-image's
    # window for sigma 1.0 is 9 taps, so its mean SSIM is compared
    assert "gradcv_vs_kornia_mean_abs_diff" not in metrics["agreement"]
    assert metrics["agreement"]["gradcv_vs_skimage_mean_abs_diff"] < 1e-4
    assert any("sigma 1.5" in n for n in metrics["notes"])
    assert "gradcv/Kornia forward + backward" in proc.stdout


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["nosuchkey=1"], "nosuchkey"),  # unknown key
        (["window_size=4"], "window_size"),  # checked by the task itself
        pytest.param(["device=cuda"], "device: cuda is not available here", marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without CUDA")),
    ],
)
def test_bad_command_line_is_one_line_exit_2(args, mentions, tmp_path):
    proc = run_module(*args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_ssim: error:") and mentions in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "ssim_benchmark.csv").exists()
