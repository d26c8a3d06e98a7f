"""Build script: the ``gradcv`` package mapping and the optional native kernels.

Metadata lives in ``pyproject.toml``; this file only says what setuptools cannot in TOML:

- The repository keeps ``core_ops/``, ``optim/``, ``registration/``, … at its root, and
  installed they are ``gradcv.core_ops``, ``gradcv.optim``, …: ``gradcv`` maps to the
  repository root (a namespace package: the root holds no ``__init__.py``, so pytest and
  a checkout keep working as before), and only the listed folders are packages of it.
- ``core_ops/_native/kernels.c`` and ``registration.c`` are compiled here, at build or
  install time, into plain C shared libraries (no Python or torch headers are used) that
  ``gradcv.core_ops._native`` loads with ctypes. The extensions are optional: without a
  compiler the install still succeeds and every operator runs its PyTorch code
  (``_native.status()`` and ``registration_status()`` say so).
"""

from __future__ import annotations

import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

_TOP = ("core_ops", "optim", "registration", "depth", "matching", "experiments")


class _PlainCBuild(build_ext):
    """Links the kernels as a plain shared library: no Python symbols are needed, and a
    compiler that fails leaves the PyTorch path instead of a failed install."""

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []  # no PyInit_: ctypes loads it, Python never imports it

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as ex:  # noqa: BLE001  (any compiler failure: the PyTorch path stays)
            print(f"warning: gradcv's native kernels were not built ({ex}); the PyTorch code will run")


class _BuildPy(build_py):
    """``gradcv`` is the repository root, whose only module is this script: keep it out."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "gradcv" and m[1] == "setup")]


# -fno-trapping-math: the kernels never read the floating-point exception flags, and without
# it GCC will not if-convert (so not vectorise) loops whose selects compare or convert
# doubles, such as the bilinear sampler's per-pixel tap computation. No result changes.
_flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-std=c99"]
if sysconfig.get_platform().startswith("win"):
    _flags = ["/O2", "/fp:precise"]

setup(
    package_dir={"gradcv": "."},
    packages=["gradcv"] + [f"gradcv.{p}" for p in find_packages(include=[f"{t}*" for t in _TOP])],
    package_data={
        "gradcv": ["conf/*.yaml", "conf/*/*.yaml", "conf/*/*/*.yaml"],
        "gradcv.experiments": ["photos/*.jpg", "photos/*.md"],
        "gradcv.core_ops": ["_native/*.c", "_native/*.h"],
    },
    ext_modules=[
        Extension(
            "gradcv.core_ops._native._kernels",
            sources=["core_ops/_native/kernels.c"],
            depends=["core_ops/_native/cpu_clones.h"],
            extra_compile_args=_flags,
            libraries=["m"] if not sysconfig.get_platform().startswith("win") else [],
            optional=True,
        ),
        # The registration solver's fused evaluation: its own library, so that it is
        # versioned and built (or not) independently of the filters' kernels.
        # -fopenmp-simd: only the `omp simd` reductions (in double) are read, no OpenMP runtime.
        Extension(
            "gradcv.core_ops._native._registration",
            sources=["core_ops/_native/registration.c"],
            depends=["core_ops/_native/cpu_clones.h"],
            extra_compile_args=_flags + ([] if sysconfig.get_platform().startswith("win") else ["-fopenmp-simd"]),
            libraries=["m"] if not sysconfig.get_platform().startswith("win") else [],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": _PlainCBuild, "build_py": _BuildPy},
)
