"""The smaller benchmark apps end to end in a subprocess, with tiny settings: each runs,
writes its outputs atomically in the run folder with metrics.json last, and turns a bad
override (``device=cuda`` where there is no GPU among them) into one line and a non-zero
exit. bench_filters runs with its compiled rows (the other apps' tiny runs leave them out:
compiling costs seconds a graph). Every benchmark app (those with tests of their own
too) is checked to leave no metrics.json when it fails just before writing it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.experiments.run_folders import app_outputs, assert_metrics_last

REPO = Path(__file__).resolve().parents[2]

# app -> (tiny overrides, the CSV it writes)
APPS = {
    "bench_filters": (["batch=1", "channels=1", "image_size=16", "repetitions=2", "backward_repetitions=2", "warmup=1", "threads=[1]"], "filters_benchmark.csv"),
    "bench_warp": (["batch=1", "channels=1", "image_size=32", "repetitions=2", "backward_repetitions=2", "warmup=1", "threads=[1]", "compile=false"], "warp_benchmark.csv"),
    "bench_ransac": (["problems=2", "points=200", "repetitions=2", "warmup=1", "threads=[1]", "device=cpu"], "ransac_benchmark.csv"),
}
#: bench_filters' compiled rows: one per gradcv row (task, mode).
FILTERS_COMPILED = {
    ("gaussian_blur2d 5x5 sigma 1.0", "forward"), ("gaussian_blur2d 5x5 sigma 1.0", "forward, input requires grad"),
    ("gaussian_blur2d 5x5 sigma 1.0", "forward + backward"), ("pyrdown", "forward"), ("pyrdown", "forward + backward"),
}


def run_app(app: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", f"gradcv.experiments.{app}", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("app", sorted(APPS))
def test_tiny_run_writes_csv_and_metrics(app, tmp_path):
    overrides, csv_name = APPS[app]
    proc = run_app(app, *overrides, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    names = {p.name for p in tmp_path.iterdir()}
    assert {csv_name, "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".hydra"], names
    with open(tmp_path / csv_name, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and any("gradcv" in " ".join(r.values()) for r in rows)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["device"] == "cpu"
    assert_metrics_last(tmp_path)
    assert "outputs:" in proc.stdout.splitlines()[-1]
    compiled = {(r["task"], r["mode"]) for r in rows if r["library"] == "gradcv (torch.compile)"} if app != "bench_ransac" else set()
    if app == "bench_filters":  # compile: true by default; compiled beside eager, ratios and compile times in metrics.json
        assert compiled == FILTERS_COMPILED
        ratios = metrics["compiled/eager"]
        assert {(r["task"], r["mode"]) for r in ratios} == FILTERS_COMPILED
        assert all(r["compiled/eager"] > 0 and r["compile_seconds"] > 0 and r["threads"] == 1 for r in ratios)
        assert "compiled/eager = " in proc.stdout
    else:
        assert not compiled and "compiled/eager" not in metrics


@pytest.mark.parametrize("app", sorted(APPS))
@pytest.mark.parametrize("override", ["nosuchkey=1", "threads=[0]", pytest.param("device=cuda", marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without CUDA"))])
def test_bad_value_is_one_line_and_leaves_no_folder(app, override, tmp_path):
    # Run from an empty folder with the default run folder: Hydra makes
    # outputs/<app>/<date>/<time>/ before the task rejects threads=[0]; it must go again.
    proc = run_app(app, override, cwd=tmp_path)
    assert proc.returncode == 2  # a command-line mistake, whether Hydra or the task finds it
    lines = proc.stderr.strip().splitlines()
    key = override.split("=")[0]
    assert len(lines) == 1 and lines[0].startswith(f"{app}: error:") and key in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []


# Every benchmark app: tiny overrides and the outputs it writes before metrics.json.
ALL_APPS = {
    **{app: ([*overrides, "compile=false"] if app == "bench_filters" else overrides, {csv_name}) for app, (overrides, csv_name) in APPS.items()},
    "bench_sobel": (["batch_sizes=[1]", "repetitions=2", "warmup=0", "image_size=16", "compile=false"], {"sobel_benchmark.csv", "sobel_benchmark.png"}),
    "bench_ssim": (
        ["batch=1", "channels=1", "image_size=24", "window_size=9", "sigma=1.0", "repetitions=2", "backward_repetitions=2", "warmup=1", "threads=[1]",
         "compile=false"],
        {"ssim_benchmark.csv"},
    ),
}

# Runs the app with its write_metrics replaced by a failure: what a Ctrl-C or a full disk
# just before the last write does.
FAIL_AT_METRICS = """
import sys, importlib
app = importlib.import_module("gradcv.experiments." + sys.argv[1])
def fail(*args, **kwargs):
    raise {error}
for name, module in list(sys.modules.items()):
    if name.startswith("gradcv.experiments.") and hasattr(module, "write_metrics"):
        module.write_metrics = fail
sys.argv = sys.argv[1:]
app.main()
"""


@pytest.mark.parametrize(("app", "error", "status"), [(app, "OSError(28, 'No space left on device')", 1) for app in sorted(ALL_APPS)] + [("bench_filters", "KeyboardInterrupt", 130)])
def test_failure_before_metrics_keeps_outputs_but_no_metrics(app, error, status, tmp_path):
    overrides, written_first = ALL_APPS[app]
    (tmp_path / "metrics.json").write_text("{}")  # an earlier run's: it must not survive either
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, "-c", FAIL_AT_METRICS.format(error=error), app, *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == status, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {p.name for p in app_outputs(tmp_path)} == written_first
