"""The registration benchmark app: one tiny run in a subprocess checked for its outputs,
command-line mistakes (one line, exit 2), and the coordinate conventions of its OpenCV
and Kornia columns checked against known homographies."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gradcv.core_ops.pyramid import build_centred_pyramid
from gradcv.experiments.bench_registration import CSV_COLUMNS, ecc_pair, kornia_to_pixel, load_photograph, run_gradcv, throughput
from gradcv.registration import RegistrationConfig, corner_error, make_pairs

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "pairs=2", "protocol=detone", "iterations=3", "kornia_iterations=3", "ecc_iterations=5",
    "throughput_batch=3", "threads=1", "photos=[grace_hopper]", "presets=[default,first_order,paper]",
    "timing_pairs=1", "timing_threads=[1]",
]
METHODS = {"gradcv default", "gradcv first_order", "gradcv paper", "OpenCV ECC 3-level", "OpenCV ECC single-scale", "Kornia ImageRegistrator"}


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "gradcv.experiments.bench_registration", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench_registration")
    return run_module(*TINY, f"hydra.run.dir={out}"), out


def test_tiny_run_writes_csv_metrics_and_table(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    names = {p.name for p in out.iterdir()}
    assert {"registration_benchmark.csv", "registration_throughput.csv", "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".hydra"], names
    with open(out / "registration_benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    assert {r["method"] for r in rows} == METHODS and {r["protocol"] for r in rows} == {"detone"}
    for r in rows:
        assert int(r["pairs"]) == 2
        assert all(math.isfinite(float(r[c])) for c in CSV_COLUMNS[3:]), r
        assert 0 <= float(r["success_1px"]) <= float(r["success_3px"]) <= float(r["success_10px"]) <= 1
        assert float(r["mean_ms_per_pair"]) > 0
    with open(out / "registration_throughput.csv", newline="") as f:
        (tput,) = list(csv.DictReader(f))
    assert tput["method"] == "gradcv default" and int(tput["batch"]) == 3
    assert float(tput["pairs_per_s_batch"]) > 0 and float(tput["pairs_per_s_b1"]) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["pairs"] == 2 and len(metrics["results"]) == len(METHODS)
    assert metrics["device"] == "cpu"
    assert all(len(r["mace_px"]) == 2 and all(math.isfinite(m) for m in r["mace_px"]) for r in metrics["results"])
    lines = proc.stdout.splitlines()
    assert any("Kornia ImageRegistrator" in line and "detone" in line for line in lines)
    assert any(line.startswith("throughput detone, gradcv default") for line in lines)
    assert lines[-1].startswith("outputs:") and str(out) in lines[-1]


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["nosuchkey=1"], "nosuchkey"),  # unknown key
        (["pairs=abc"], "pairs"),  # wrong type
        (["protocol=sideways"], "protocol"),  # checked by the task
        (["presets=[fastest]"], "presets"),
        (["device=abacus"], "device"),  # not a torch device
    ],
)
def test_bad_command_line_is_one_line_exit_2(args, mentions, tmp_path):
    proc = run_module(*args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_registration: error:") and mentions in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "registration_benchmark.csv").exists()


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src, dst, H = make_pairs(load_photograph(), 1, protocol="full", rho=8, seed=3)
    return src, dst, H


def test_kornia_conversion_matches_its_warper(pair):
    # The pixel homography, put into Kornia's convention (dst -> src, normalised with
    # align_corners=False), must make Kornia's own warper reproduce warp_perspective.
    from kornia.geometry.transform import HomographyWarper

    from gradcv.core_ops.geometry import warp_perspective
    from gradcv.experiments.bench_registration import _kornia_frame

    src, _, H = pair
    size = tuple(src.shape[-2:])
    N = torch.from_numpy(_kornia_frame(*size))
    M = N @ torch.linalg.inv(H[0]) @ torch.linalg.inv(N)
    ours = warp_perspective(src, H.float(), size)
    theirs = HomographyWarper(*size)(src, M[None].float())
    assert (ours - theirs)[..., 16:-16, 16:-16].abs().max() < 1e-3
    assert float(corner_error(kornia_to_pixel(M, size), H[0], size)) < 1e-6


def test_ecc_coarse_to_fine_recovers_a_known_homography(pair):
    import cv2

    src, dst, H = pair
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-6)

    def levels(x: torch.Tensor) -> list[np.ndarray]:
        return [np.ascontiguousarray(level[0, 0].numpy()) for level in build_centred_pyramid(x, 3, 0.8)]

    est = ecc_pair(levels(src), levels(dst), criteria, 5)
    assert float(corner_error(torch.from_numpy(est), H[0], tuple(src.shape[-2:]))) < 0.5


def test_gradcv_columns_run_on_the_device(pair, device):
    """run_gradcv and throughput take CPU pairs, solve on ``device`` and hand back CPU
    float64 homographies that match the CPU's."""
    src, dst, H = pair
    config = RegistrationConfig(levels=2, iterations=5)
    est = run_gradcv(src, dst, config, device)
    assert est.homography.device.type == "cpu" and est.homography.dtype == torch.float64
    reference = run_gradcv(src, dst, config).homography
    assert torch.allclose(est.homography, reference, atol=1e-3)
    row = throughput("full", "default", config, src.expand(2, -1, -1, -1), dst.expand(2, -1, -1, -1), H.expand(2, 3, 3),
                     est.seconds, None, device)
    assert row["batch"] == 2 and row["pairs_per_s_batch"] > 0 and math.isnan(row["batch_ms_per_pair_over_ecc"])


def test_detone_error_is_detones_four_point_error_dst_corners_into_src():
    """On DeTone pairs the bench scores dst's corners mapped back into src (DeTone's 4-point
    error); elsewhere src's corners into dst. A singular estimate counts as the identity."""
    from gradcv.experiments.bench_registration import mace_px

    _, _, H = make_pairs(torch.rand(1, 1, 200, 260, generator=torch.Generator().manual_seed(0)), 3, protocol="detone", seed=5)
    H = H.to(torch.float64)
    shift = torch.tensor([[1.0, 0.0, 0.7], [0.0, 1.0, -0.4], [0.0, 0.0, 1.0]], dtype=torch.float64)
    H_est = shift @ H  # 0.7 / 0.4 px off in dst: exactly that in src only where H is a translation
    size = (128, 128)
    detone, full = mace_px("detone", H_est, H, size), mace_px("full", H_est, H, size)
    assert torch.allclose(detone, corner_error(torch.linalg.inv(H_est), torch.linalg.inv(H), size))
    assert torch.allclose(full, corner_error(H_est, H, size))
    assert not torch.allclose(detone, full)
    singular = H_est.clone()
    singular[0] = 0.0
    assert torch.allclose(mace_px("detone", singular, H, size)[0],
                          corner_error(torch.eye(3, dtype=torch.float64)[None], torch.linalg.inv(H[:1]), size)[0])
