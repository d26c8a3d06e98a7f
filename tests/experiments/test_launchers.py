"""Hydra sweeps (-m) on launcher plugins: the config group conf/hydra/launcher/ that every
app finds (gradcv_joblib, gradcv_slurm), and a two-job sweep of the registration app on
joblib and on submitit's local executor, each job writing its own complete run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.protocol=detone", "solver.levels=2", "solver.iterations=5", "figure=false", "progress=false"]


def _register(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "gradcv.experiments.register", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_two_jobs(sweep: Path, launcher_target: str) -> None:
    for job, seed in ((0, 0), (1, 1)):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert f"seed {seed})" in metrics["input"] and metrics["mace_px"] >= 0
        hydra = yaml.safe_load((sweep / str(job) / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["launcher"]["_target_"] == launcher_target and hydra["job"]["num"] == job


@pytest.mark.parametrize(
    ("launcher", "target", "extra"),
    [
        ("gradcv_joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", []),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
         ["hydra.launcher.timeout_min=5"]),
    ],
)
def test_two_job_sweep_runs_on_the_launcher(launcher, target, extra, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _register("-m", f"hydra/launcher={launcher}", *extra, *TINY, "data.seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_two_jobs(sweep, target)
    if launcher == "submitit_local":  # the jobs ran as submitit jobs, with their own logs
        assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2


@pytest.mark.parametrize("launcher, extra", [("gradcv_joblib", []), ("submitit_local", ["hydra.launcher.timeout_min=5"])])
def test_a_failed_job_fails_the_sweep_on_the_launcher(launcher, extra, tmp_path):
    """A job that fails in the plugin's worker process prints its one line there, its folder
    is removed, the good job's stays, and the sweep exits non-zero (it exited 0 before)."""
    sweep = tmp_path / "sweep"
    proc = _register("-m", f"hydra/launcher={launcher}", *extra, *TINY, "solver.iterations=0,5", f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if launcher == "gradcv_joblib":  # submitit keeps the worker's stderr in its own log
        assert proc.stderr.count("register: error: ") == 1 and "solver.iterations" in proc.stderr
    assert not (sweep / "0").exists()
    assert (sweep / "1" / "metrics.json").is_file()


def test_slurm_launcher_config_composes_and_takes_overrides(tmp_path):
    proc = _register("--cfg", "hydra", "hydra/launcher=gradcv_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
                     "hydra.launcher.timeout_min=30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["timeout_min"]) == ("gpu", 1, 30)
    assert launcher["cpus_per_task"] == 4 and launcher["tasks_per_node"] == 1  # the file's placeholders
    assert list(tmp_path.iterdir()) == []  # --cfg makes no run folder


def test_every_shipped_launcher_config_is_found_by_an_app():
    shipped = sorted(p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml"))
    assert shipped == ["gradcv_joblib", "gradcv_slurm"]
    proc = _register("--info", "defaults", "hydra/launcher=gradcv_joblib", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "hydra/launcher/gradcv_joblib" in proc.stdout
