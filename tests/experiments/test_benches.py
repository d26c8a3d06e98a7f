"""The smaller benchmark apps end to end in a subprocess, with tiny settings: each runs,
writes its outputs atomically in the run folder, and turns a bad override into one line
and a non-zero exit."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# app -> (tiny overrides, the CSV it writes)
APPS = {
    "bench_filters": (["batch=1", "channels=1", "image_size=32", "repetitions=2", "backward_repetitions=2", "warmup=1", "threads=[1]"], "filters_benchmark.csv"),
    "bench_warp": (["batch=1", "channels=1", "image_size=32", "repetitions=2", "backward_repetitions=2", "warmup=1", "threads=[1]"], "warp_benchmark.csv"),
    "bench_ransac": (["problems=2", "points=200", "repetitions=2", "warmup=1", "threads=[1]"], "ransac_benchmark.csv"),
}


def run_app(app: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{app}", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
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
    json.loads((tmp_path / "metrics.json").read_text())
    assert "outputs:" in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize("app", sorted(APPS))
def test_bad_override_is_one_line(app, tmp_path):
    proc = run_app(app, "nosuchkey=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{app}: error:") and "nosuchkey" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
