"""The shared experiment plumbing: one-line errors, flag rewriting, atomic writes."""

from __future__ import annotations

import doctest
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
    from gradcv.experiments._cli import ExperimentError, run_app, run_dir

    def task(cfg):
        mode = cfg.mode
        if mode == "ok":
            (run_dir() / "device.txt").write_text(cfg.device)
        elif mode == "missing":
            open(os.path.join(str(run_dir()), "no", "such", "input.png")).read()
        elif mode == "bug":
            {}["boom"]
        elif mode == "interrupt":
            raise KeyboardInterrupt

    run_app(task, config_name="tiny", app_name="tiny_app")
    """
)


@pytest.fixture
def tiny_app(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text("mode: ok\ndevice: cpu\n")
    script = tmp_path / "tiny_app.py"
    script.write_text(APP)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(script), "--config-dir", str(tmp_path), f"hydra.run.dir={tmp_path / 'run'}", *args]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

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
