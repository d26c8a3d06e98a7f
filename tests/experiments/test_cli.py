"""The shared experiment plumbing: one-line errors, flag rewriting, atomic writes, run
folders (nothing left by a failed task, metrics.json last)."""

from __future__ import annotations

import doctest
import json
import math
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradcv.experiments import _cli
from gradcv.experiments._cli import (
    ExperimentError,
    UsageError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    describe_error,
    rewrite_flags,
    save_figure,
    write_metrics,
)

REPO = Path(__file__).resolve().parents[2]


def test_doctests():
    assert doctest.testmod(_cli).failed == 0


# --------------------------------------------------------------------------------------
# Flags and error lines
# --------------------------------------------------------------------------------------


def test_rewrite_flags():
    assert rewrite_flags(["--device", "cuda", "a=1"], ["device"]) == ["device=cuda", "a=1"]
    assert rewrite_flags(["--device=cuda:1"], ["device"]) == ["device=cuda:1"]
    # Hydra's own flags and other keys are left alone.
    assert rewrite_flags(["--cfg", "job", "--threads", "2"], ["device"]) == ["--cfg", "job", "--threads", "2"]
    with pytest.raises(UsageError, match="--device needs a value"):
        rewrite_flags(["--device"], ["device"])
    with pytest.raises(UsageError, match="--device needs a value"):
        rewrite_flags(["--device", "--cfg", "job"], ["device"])


def test_describe_error_is_one_line():
    assert describe_error(ExperimentError("threads must be positive")) == "threads must be positive"
    assert describe_error(KeyError("x")) == "KeyError: 'x'"
    assert describe_error(ValueError("two\n   lines")) == "ValueError: two lines"
    missing = FileNotFoundError(2, "No such file or directory", "/no/such.png")
    assert describe_error(missing) == "No such file or directory: '/no/such.png'"
    assert describe_error(RuntimeError()) == "RuntimeError"


def test_config_to_object_refuses_unknown_keys():
    from dataclasses import dataclass

    from omegaconf import OmegaConf, open_dict

    @dataclass
    class Conf:
        a: int = 1

    cfg = OmegaConf.structured(Conf)
    assert _cli.config_to_object(cfg, Conf) == Conf(a=1)
    with open_dict(cfg):
        cfg.b = 2  # what "+b=2" on the command line does
    with pytest.raises(UsageError, match="unknown config key: b"):
        _cli.config_to_object(cfg, Conf)


# A tiny app in a file of its own (Hydra finds the job's file from the task function),
# with its config in the test's folder, reached through Hydra's --config-dir flag.
APP = textwrap.dedent(
    """
    import os
    from gradcv.experiments._cli import ExperimentError, UsageError, atomic_write_bytes, run_app, run_dir, write_metrics

    def task(cfg):
        mode = cfg.mode
        if mode == "ok":
            (run_dir() / "device.txt").write_text(cfg.device)
            write_metrics({"device": cfg.device})
        elif mode == "missing":
            open(os.path.join(str(run_dir()), "no", "such", "input.png")).read()
        elif mode == "bug":
            {}["boom"]
        elif mode == "bad_value":
            raise UsageError("threads must be positive, got 0")
        elif mode == "interrupt":
            raise KeyboardInterrupt
        elif mode in ("figure_then_bug", "figure_then_interrupt"):
            atomic_write_bytes(run_dir() / "figure.png", b"png")
            if mode == "figure_then_bug":
                raise ExperimentError("the table failed")
            raise KeyboardInterrupt
        elif mode == "metrics_then_bug":
            atomic_write_bytes(run_dir() / "figure.png", b"png")
            write_metrics({"done": True})
            raise BrokenPipeError(32, "Broken pipe")

    run_app(task, config_name="tiny", app_name="tiny_app")
    """
)


@pytest.fixture
def tiny_app(tmp_path: Path):
    """``run(*args, run_dir=...)`` runs the tiny app from the empty folder ``work``; with
    ``run_dir=None`` Hydra's default run folder (``outputs/<date>/<time>`` in ``work``)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "tiny.yaml").write_text("mode: ok\ndevice: cpu\n")
    script = tmp_path / "tiny_app.py"
    script.write_text(APP)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}

    def run(*args: str, run_dir: Path | None = tmp_path / "run") -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(script), "--config-dir", str(conf), *args]
        if run_dir is not None:
            cmd.append(f"hydra.run.dir={run_dir}")
        return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=60)

    return run, tmp_path / "run"


@pytest.mark.parametrize(
    ("mode", "status", "line"),
    [
        ("missing", 1, "tiny_app: error: No such file or directory: '"),
        ("bug", 1, "tiny_app: error: KeyError: 'boom'"),
        ("interrupt", 130, "tiny_app: interrupted"),
    ],
)
def test_task_failures_print_one_line(tiny_app, mode, status, line):
    run, _ = tiny_app
    proc = run(f"mode={mode}")
    assert proc.returncode == status
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(line)


def test_device_flag_becomes_an_override(tiny_app):
    run, out = tiny_app
    proc = run("--device", "meta")
    assert proc.returncode == 0, proc.stderr
    assert (out / "device.txt").read_text() == "meta"


# --------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_successful_run_keeps_its_folder(tiny_app, tmp_path):
    run, _ = tiny_app
    proc = run(run_dir=None)
    assert proc.returncode == 0, proc.stderr
    (metrics,) = (tmp_path / "work").glob("outputs/*/*/metrics.json")
    assert {p.name for p in metrics.parent.iterdir()} == {".hydra", "tiny_app.log", "device.txt", "metrics.json"}
    assert json.loads(metrics.read_text()) == {"device": "cpu"}


@pytest.mark.parametrize(("mode", "status"), [("missing", 1), ("bad_value", 2), ("interrupt", 130)])
def test_failed_task_leaves_no_folder(tiny_app, tmp_path, mode, status):
    # Hydra has made outputs/<date>/<time>/ with .hydra/ and a log before the task fails.
    run, _ = tiny_app
    proc = run(f"mode={mode}", run_dir=None)
    assert proc.returncode == status, proc.stderr
    assert _tree(tmp_path / "work") == []


def test_bad_override_leaves_no_folder(tiny_app, tmp_path):
    run, _ = tiny_app
    proc = run("nosuchkey=1", run_dir=None)
    assert proc.returncode == 2 and "nosuchkey" in proc.stderr
    assert _tree(tmp_path / "work") == []


def test_failed_task_keeps_folders_it_did_not_create(tiny_app, tmp_path):
    run, _ = tiny_app
    (tmp_path / "work" / "outputs").mkdir()
    (tmp_path / "work" / "outputs" / "notes.txt").write_text("mine")
    assert run("mode=bug", run_dir=None).returncode == 1
    assert _tree(tmp_path / "work") == ["outputs", "outputs/notes.txt"]

    # An existing folder given as the run folder stays, even when the task wrote nothing;
    # a metrics.json left there by an earlier run goes: the folder is not complete now.
    given = tmp_path / "given"
    given.mkdir()
    (given / "metrics.json").write_text("{}")
    assert run("mode=bug", run_dir=given).returncode == 1
    assert given.is_dir() and not (given / "metrics.json").exists()


@pytest.mark.parametrize(("mode", "status"), [("figure_then_bug", 1), ("figure_then_interrupt", 130)])
def test_failed_task_keeps_its_outputs_but_not_metrics(tiny_app, mode, status):
    run, out = tiny_app
    out.mkdir()
    (out / "metrics.json").write_text('{"stale": true}')  # from an earlier run in the same folder
    proc = run(f"mode={mode}")
    assert proc.returncode == status
    assert {p.name for p in out.iterdir()} == {".hydra", "tiny_app.log", "figure.png"}


def test_failure_after_metrics_keeps_them(tiny_app):
    # Every output was complete when metrics.json was written (printing failed after it).
    run, out = tiny_app
    proc = run("mode=metrics_then_bug")
    assert proc.returncode == 1 and proc.stderr.startswith("tiny_app: error: Broken pipe")
    assert json.loads((out / "metrics.json").read_text()) == {"done": True}


def test_sweep_folders(tiny_app, tmp_path):
    run, _ = tiny_app
    work = tmp_path / "work"
    # Every job failed without writing anything: no sweep folder at all.
    proc = run("-m", "mode=missing,bug", run_dir=None)
    assert proc.returncode == 1, proc.stderr
    assert _tree(work) == []
    # One job succeeded: its folder stays, with the sweep's multirun.yaml; the failed one goes.
    proc = run("-m", "mode=ok,missing", run_dir=None)
    assert proc.returncode == 1, proc.stderr
    (sweep,) = work.glob("multirun/*/*")
    assert {p.name for p in sweep.iterdir()} == {"multirun.yaml", "0"}
    assert (sweep / "0" / "metrics.json").is_file()


# --------------------------------------------------------------------------------------
# write_metrics
# --------------------------------------------------------------------------------------


def test_write_metrics_is_strict_json(tmp_path: Path):
    import numpy as np
    import torch

    metrics = {
        "mace": float("nan"),
        "worst": math.inf,
        "f1": np.float32(0.5),
        "count": np.int64(3),
        "ok": np.bool_(True),
        "per_level": np.array([1.0, np.inf]),
        "homography": torch.eye(2, dtype=torch.float64),
        "shape": (1, 3),
        "image": tmp_path / "a.png",
        "nested": {"1": [math.nan, 2]},
    }
    path = write_metrics(metrics, tmp_path)
    assert path == tmp_path / "metrics.json"
    assert json.loads(path.read_text()) == {
        "mace": None,
        "worst": None,
        "f1": 0.5,
        "count": 3,
        "ok": True,
        "per_level": [1.0, None],
        "homography": [[1.0, 0.0], [0.0, 1.0]],
        "shape": [1, 3],
        "image": str(tmp_path / "a.png"),
        "nested": {"1": [None, 2]},
    }
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_write_metrics_refuses_what_json_cannot_hold(tmp_path: Path):
    with pytest.raises(TypeError, match="object has no JSON form"):
        write_metrics({"model": object()}, tmp_path)
    with pytest.raises(TypeError, match="keys must be strings"):
        write_metrics({(1, 2): 3}, tmp_path)
    assert os.listdir(tmp_path) == []


def test_write_metrics_twice_in_one_job_is_an_error(tmp_path: Path, monkeypatch):
    runs = _cli._RunFolders()
    runs.jobs[tmp_path] = _cli._JobState.RUNNING
    monkeypatch.setattr(_cli, "_RUNS", runs)
    write_metrics({"a": 1}, tmp_path)
    with pytest.raises(ValueError, match="last write"):
        write_metrics({"a": 2}, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1}


def test_callback_override_stays_with_the_overrides():
    # argparse takes the overrides as one run of positionals, and --info takes an optional value.
    extra = _cli._with_run_folder_callback
    assert extra(["a=1", "--cfg", "job"], ["a=1"])[1:] == ["a=1", "--cfg", "job"]
    assert extra(["--cfg", "job", "a=1", "b=2"], ["a=1", "b=2"])[:2] == ["--cfg", "job"]
    assert extra(["--info"], [])[1:] == ["--info"]
    assert extra(["--version"], None) == ["--version"]
    for args, overrides in ((["a=1", "--cfg", "job"], ["a=1"]), (["--cfg", "job", "a=1"], ["a=1"]), (["--info"], [])):
        parsed = _cli.check_hydra_flags(extra(args, overrides))  # Hydra's parser accepts it
        assert parsed[0].startswith("++hydra.callbacks.gradcv_run_folders._target_=") and parsed[1:] == overrides


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------


def test_atomic_write_text_and_bytes(tmp_path: Path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    atomic_write_bytes(target, b"\x00\x01")  # replaces the old content
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # as open() would make it


def test_atomic_write_leaves_nothing_when_the_write_fails(tmp_path: Path):
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(target) as f:
            f.write("half a ta")
            raise RuntimeError("disk on fire")
    assert os.listdir(tmp_path) == []

    # An existing file keeps its old content, also on KeyboardInterrupt.
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write("new, but only ha")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_save_figure(tmp_path: Path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    target = tmp_path / "plot.png"
    save_figure(fig, target, dpi=50)
    assert target.read_bytes()[:4] == b"\x89PNG"

    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        save_figure(fig, target, format="no-such-format")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["plot.png"]
