"""The Figure 2 benchmark app, end to end in a subprocess, with tiny settings.

Each subprocess pays for importing torch and the reference libraries (1-3 s), so the
runs are few: one successful run checked from several angles, and cheap failing ones.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.experiments.run_folders import assert_metrics_last

REPO = Path(__file__).resolve().parents[2]


def run_module(*args: str, cwd: Path = REPO, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m gradcv.experiments.bench_sobel *args`` from the repository root."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "gradcv.experiments.bench_sobel", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One tiny benchmark run, shared by the tests that read its outputs. ``--device cpu``
    is given in the flag spelling to check that it reaches the config."""
    out = tmp_path_factory.mktemp("bench_sobel")
    proc = run_module("batch_sizes=[1,2]", "repetitions=3", "warmup=1", "--device", "cpu", f"hydra.run.dir={out}")
    return proc, out


def test_small_run_succeeds_quietly(small_run):
    proc, _ = small_run
    assert proc.returncode == 0, proc.stderr
    # Warnings are errors in this project: a library warning would show up here.
    assert proc.stderr == ""


def test_small_run_writes_outputs_atomically(small_run):
    _, out = small_run
    names = {p.name for p in out.iterdir()}
    assert {"sobel_benchmark.csv", "sobel_benchmark.png", "metrics.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")], names
    assert (out / "sobel_benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_metrics_last(out)


def test_csv_has_expected_columns_and_positive_times(small_run):
    _, out = small_run
    with open(out / "sobel_benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["threads", "batch_size", "column", "median_ms", "calls"]
    columns = {r["column"] for r in rows}
    # gradcv and the floor are always there; the references whenever installed (they
    # are, in the test environment).
    assert {"gradcv", "floor (memory bandwidth)", "Kornia", "OpenCV", "Pillow (8-bit)", "scikit-image", "SciPy"} <= columns
    assert "gradcv (torch.compile)" in columns  # on by default: the Figure 2 pipeline compiled beside eager
    assert {int(r["batch_size"]) for r in rows} == {1, 2}
    assert {int(r["threads"]) for r in rows} == {1}
    assert all(float(r["median_ms"]) > 0 for r in rows)
    assert all(int(r["calls"]) == 3 for r in rows if r["column"] != "floor (memory bandwidth)")


def test_metrics_and_printed_table(small_run):
    proc, out = small_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"] == "cpu"  # from --device cpu
    assert metrics["config"]["batch_sizes"] == [1, 2]
    assert metrics["copy_bandwidth_bytes_per_s"]["1"] > 0
    assert set(metrics["ratios"]["1"]) == {"gradcv/Kornia", "gradcv/OpenCV", "compiled/eager"}
    assert all(r > 0 for r in metrics["ratios"]["1"]["compiled/eager"].values())
    assert set(metrics["compile_seconds"]["1"]) == {"1", "2"}
    # Same operator, same composition as Kornia: the outputs agree to float rounding.
    assert metrics["gradcv_vs_kornia_max_abs_diff"] < 1e-5
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("batch"))
    assert "gradcv/Kornia" in header and "gradcv/OpenCV" in header
    assert lines[-1].startswith("outputs:") and str(out) in lines[-1]


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["nosuchkey=1"], "nosuchkey"),  # unknown key
        (["repetitions=abc"], "Integer"),  # wrong type, caught by the schema
        (["batch_sizes=[1,"], "batch_sizes=[1,"),  # override grammar
        (["--no-such-flag"], "--no-such-flag"),  # argparse, before Hydra
        (["+repititions=3"], "repititions"),  # misspelt key added with +
        (["threads=0"], "threads"),  # checked by the task itself
        pytest.param(["--device", "cuda"], "device: cuda is not available here", marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without CUDA")),
    ],
)
def test_bad_command_line_prints_one_line(args, mentions, tmp_path):
    proc = run_module(*args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2  # a command-line mistake, whether Hydra or the task finds it
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bench_sobel: error: ")
    assert mentions in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "sobel_benchmark.csv").exists()


# --------------------------------------------------------------------------------------
# Pieces of the app, in process (cheap)
# --------------------------------------------------------------------------------------


def test_missing_reference_is_skipped_with_a_note(monkeypatch):
    from gradcv.experiments import bench_sobel

    monkeypatch.setitem(sys.modules, "cv2", None)  # makes "import cv2" raise ImportError
    notes: list[str] = []
    names = [c.name for c in bench_sobel.reference_columns(notes)]
    assert "OpenCV" not in names and "Kornia" in names
    assert len(notes) == 1 and notes[0].startswith("OpenCV column skipped:")


def test_failed_compile_skips_only_that_column(keep_threads):
    from gradcv.experiments import bench_sobel

    def prepare(images, b):
        raise RuntimeError("no C++ compiler\nmore details")

    images = bench_sobel.Images(tensor=torch.rand(1, 3, 8, 8), nhwc=None, pil=[], source="test")
    conf = bench_sobel.BenchSobelConfig(batch_sizes=[1], repetitions=1, warmup=0, max_seconds_per_cell=None, threads=1, device="cpu", compile=True, image_size=8, seed=0)
    columns = [bench_sobel.Column(bench_sobel.COMPILED, prepare), bench_sobel.gradcv_column(lambda x: x.sum(1, keepdim=True))]
    notes: list[str] = []
    results = bench_sobel.run_cells(columns, images, conf, [1], [1], torch.device("cpu"), notes)
    assert set(results.median_ms[1]) == {"floor (memory bandwidth)", "gradcv"}
    assert notes == ["gradcv (torch.compile) column skipped: RuntimeError: no C++ compiler"]


def test_table_and_csv_from_results():
    from gradcv.experiments import bench_sobel

    results = bench_sobel.Results()
    for column, ms in (("OpenCV", 1.0), ("Kornia", 4.0), ("gradcv", 2.0), ("floor (memory bandwidth)", 0.5)):
        results.record(1, column, 8, ms, calls=None if column.startswith("floor") else 10)
    table = bench_sobel.format_table(results, "CPU (test)", torch.device("cpu"))
    header, row = table.splitlines()[1:3]
    assert header.split()[0] == "batch" and header.rstrip().endswith("gradcv/Kornia  gradcv/OpenCV")
    assert row.split()[0] == "8" and row.split()[-2:] == ["0.50x", "2.00x"]
    assert bench_sobel.results_csv(results).splitlines()[1:3] == ["1,8,OpenCV,1,10", "1,8,Kornia,4,10"]
