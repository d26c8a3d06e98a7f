"""The wheel, installed as a user would: one ``gradcv`` package with its configs and native
kernels, console scripts that work from any folder.

The checkout is copied and built into a wheel (copied so that the build leaves nothing in
the working tree), the wheel goes into a fresh virtual environment, and the apps run
from an empty folder. The new environment reuses this one's site-packages through a
``.pth`` file, so torch, Hydra and the references are neither downloaded nor copied;
``.pth`` files inside a directory added that way are not processed, so this
environment's editable install of gradcv stays invisible there. About 12 s in all (a C
build, a virtual environment, four interpreters importing torch): not marked slow.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Console script -> module of gradcv.experiments (pyproject.toml's [project.scripts]).
SCRIPTS = {
    "gradcv-register": "register",
    "gradcv-bench-registration": "bench_registration",
    "gradcv-bench-sobel": "bench_sobel",
    "gradcv-bench-filters": "bench_filters",
    "gradcv-bench-warp": "bench_warp",
    "gradcv-bench-ssim": "bench_ssim",
    "gradcv-bench-ransac": "bench_ransac",
    "gradcv-depth": "depth",
    "gradcv-bench-depth": "bench_depth",
    "gradcv-bench-depth-warp": "bench_depth_warp",
    "gradcv-bench-features": "bench_features",
    "gradcv-attack": "attack",
    "gradcv-bench-attack": "bench_attack",
    "gradcv-demo": "demo",
}

#: What is not part of the source tree: environments, build products, run folders.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "outputs", "multirun", "*.egg-info", "__pycache__",
    ".pytest_cache", ".hypothesis", "*.so", "*.pyc",
)


def _run(cmd: list[str | Path], *, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # Nothing from this session may leak in: no PYTHONPATH to the checkout, no full errors.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR", "PYTHONHOME")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


class Installed:
    """The built wheel and the environment it is installed in."""

    def __init__(self, root: Path) -> None:
        source, wheels, self.venv, self.empty = root / "source", root / "wheels", root / "venv", root / "empty"
        self.empty.mkdir()
        shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", wheels, source], cwd=root)
        (self.wheel,) = wheels.glob("gradcv-*.whl")
        with zipfile.ZipFile(self.wheel) as z:
            self.names = z.namelist()

        # A plain venv (sys.executable is this venv's python: venv builds on the base one).
        _run([sys.executable, "-m", "venv", "--without-pip", self.venv], cwd=root)
        self.python = self.venv / "bin" / "python"
        self.site = Path(_run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout.strip())
        ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        (self.site / "reuse_test_environment.pth").write_text("".join(f"{p}\n" for p in ours))
        # pip comes through the .pth too; it sees this environment's gradcv there, hence
        # --ignore-installed (it would otherwise call the wheel already installed).
        _run([self.python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", self.wheel], cwd=self.empty)

    def script(self, name: str) -> Path:
        return self.venv / "bin" / name


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    # The build uses this environment's setuptools (no build isolation: nothing is
    # downloaded); Python 3.12's venv no longer brings it.
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("no setuptools here to build the wheel with")
    return Installed(tmp_path_factory.mktemp("packaging"))


def test_wheel_holds_one_package_with_configs(installed):
    tops = {name.split("/")[0] for name in installed.names}
    assert tops == {"gradcv", "gradcv-0.1.0.dist-info"}, tops
    configs = {f"gradcv/{p.relative_to(REPO).as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert configs and configs <= set(installed.names), sorted(configs - set(installed.names))
    for top in ("core_ops", "registration", "experiments", "optim"):
        assert f"gradcv/{top}/__init__.py" in installed.names
    assert not [n for n in installed.names if n.startswith("gradcv/tests/") or n == "gradcv/setup.py"]


def test_wheel_holds_the_native_kernels_when_a_compiler_exists(installed):
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the wheel is the PyTorch path only")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert f"gradcv/core_ops/_native/_kernels{suffix}" in installed.names, [n for n in installed.names if "_native" in n]


def test_installed_package_comes_from_the_environment(installed):
    code = (
        "import importlib.util, gradcv.core_ops, gradcv.experiments._cli as cli; "
        "print(gradcv.core_ops.__file__); print(cli.CONF_DIR); "
        "print([m for m in ('core_ops', 'registration', 'experiments', 'optim', 'depth', 'matching') if importlib.util.find_spec(m)])"
    )
    core_ops, conf_dir, stray = _run([installed.python, "-c", code], cwd=installed.empty).stdout.splitlines()
    assert Path(core_ops).is_relative_to(installed.site), core_ops
    assert Path(conf_dir) == installed.site / "gradcv" / "conf" and (Path(conf_dir) / "bench_sobel.yaml").is_file()
    assert stray == "[]"  # no top-level package of those generic names
    assert sorted(p.name for p in installed.site.iterdir() if not p.name.endswith(".pth")) == ["gradcv", "gradcv-0.1.0.dist-info"]


def test_console_script_runs_from_an_empty_folder(installed):
    proc = _run(
        [installed.script("gradcv-bench-sobel"), "batch_sizes=[1]", "repetitions=2", "warmup=0", "image_size=16", "max_seconds_per_cell=2"],
        cwd=installed.empty,
    )
    (metrics,) = installed.empty.glob("outputs/bench_sobel/*/*/metrics.json")
    assert (metrics.parent / "sobel_benchmark.csv").is_file() and (metrics.parent / "sobel_benchmark.png").is_file()
    assert str(metrics.parent) in proc.stdout.splitlines()[-1]


def test_registration_study_runs_with_no_arguments(installed):
    # The check: one app, no arguments, on the data that ships with the install.
    _run([installed.script("gradcv-register")], cwd=installed.empty)
    (metrics,) = installed.empty.glob("outputs/register/*/*/metrics.json")
    assert (metrics.parent / "figure3.png").is_file() and (metrics.parent / "homography.json").is_file()


def test_every_console_script_shows_its_app_in_help(installed):
    assert all(installed.script(name).is_file() for name in SCRIPTS)
    # One interpreter for all of them (a torch import each would cost seconds): each entry
    # point is loaded as the generated script does, and called with --help.
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "names = sys.argv[1:]\n"
        "for ep in entry_points(group='console_scripts'):\n"
        "    if ep.name in names:\n"
        "        sys.argv = [ep.name, '--help']\n"
        "        try:\n"
        "            ep.load()()\n"
        "        except SystemExit as ex:\n"
        "            print(f'== {ep.name} {ep.value} exit {ex.code}', flush=True)\n"
    )
    proc = _run([installed.python, "-c", code, *SCRIPTS], cwd=installed.empty)
    for name, module in SCRIPTS.items():
        assert f"== {name} gradcv.experiments.{module}:main exit 0" in proc.stdout, proc.stderr
        assert f"{module} is powered by Hydra" in proc.stdout, proc.stdout
