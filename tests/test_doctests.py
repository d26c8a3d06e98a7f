"""Every docstring example in the library runs, imported under its installed name.

pytest's ``--doctest-modules`` would import ``core_ops/filters/blur.py`` as a second module
``core_ops.filters.blur`` beside ``gradcv.core_ops.filters.blur``; a module that registers
PyTorch operators must not run twice, so the examples are collected here instead.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import gradcv

_LIBRARY = ("core_ops", "optim", "registration", "depth", "matching")


def _modules() -> list[str]:
    names = []
    for top in _LIBRARY:
        try:
            package = importlib.import_module(f"gradcv.{top}")
        except ModuleNotFoundError:
            continue
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")]
    # Python sources only: the native kernels are a plain C library, not a Python module.
    return sorted(n for n in names if (importlib.util.find_spec(n).origin or "").endswith(".py"))


def _with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    return [name for name in _modules() if any(t.examples for t in finder.find(importlib.import_module(name)))]


def test_modules_found() -> None:
    assert "gradcv.core_ops.filters.blur" in _modules()
    assert len(_with_examples()) >= 20


@pytest.mark.parametrize("name", _with_examples())
def test_docstring_examples(name: str) -> None:
    # pytest's checker, for its NUMBER flag: floats compare to the precision written.
    from _pytest.doctest import _get_checker, _get_number_flag

    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS | _get_number_flag()
    runner = doctest.DocTestRunner(checker=_get_checker(), optionflags=flags)
    module = importlib.import_module(name)
    report: list[str] = []  # this module's failures only
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, "".join(report)
