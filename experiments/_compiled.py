"""The benchmarks' "gradcv (torch.compile)" column: an operator under
``torch.compile(fullgraph=True, dynamic=False)``, compiled for one input shape just before
it is timed, beside the same operator in eager mode.

Dynamo's caches are reset before each compile: with ``dynamic=False`` every new shape or
mode (input requiring grad or not) is a recompilation, and past Dynamo's recompile limit
(8) it would fall back to eager and time the wrong thing. Inductor's CPU code bakes the
current thread count into its parallel loops, so each thread count compiles again. The
first call (which compiles, the backward too when the call differentiates) is made while
preparing: its seconds are recorded as the compile time, never timed.

When torch.compile cannot build the graph (no C++ compiler, a graph break under
``fullgraph=True``), :class:`CompileFailed` carries a one-line reason and the benchmark
skips the compiled column with a note instead of failing.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, TypeVar

import torch

from gradcv.experiments._timing import synchronize

#: The library name of compiled rows and columns.
COMPILED = "gradcv (torch.compile)"
#: The key of the compiled column's time over eager gradcv's (below 1: compiling pays).
RATIO = "compiled/eager"

# PyTorch's own deprecation warnings raised while compiling, not about this code (see
# tests/helpers.py COMPILE_WARNINGS): silenced around the compiling call only, so that a
# benchmark run with warnings as errors still compiles.
_COMPILE_WARNINGS = (
    r"<class 'torch\.autograd\.function\.Function'> should not be instantiated",
    r"`torch\.jit\.script_method` is deprecated",
)

F = TypeVar("F", bound=Callable[..., object])


class CompileFailed(Exception):
    """torch.compile could not build the compiled column; ``str()`` is a one-line reason."""


def one_line(ex: BaseException) -> str:
    """``<type>: <first line of the message>``."""
    text = str(ex).strip()
    return f"{type(ex).__name__}: {text.splitlines()[0]}" if text else type(ex).__name__


def compile_fn(fn: F, call: Callable[[F], object], device: torch.device | str | None = None,
               reset: bool = True) -> tuple[F, float]:
    """``fn`` under ``torch.compile(fullgraph=True, dynamic=False)``, compiled by one
    ``call(compiled)`` (the shapes it passes are the ones compiled for).

    Args:
        fn: the eager operator (a function or an ``nn.Module``), taking tensors.
        call: what one call does with the compiled ``fn``, e.g. ``lambda f: f(x)`` or
            ``lambda f: f(xg).sum().backward()`` (which compiles the backward too).
        device: where ``fn`` runs (synchronised after the compiling call on CUDA).
        reset: reset Dynamo first. ``False`` keeps the graphs compiled since the last reset:
            for rows that are all compiled before any is timed (a reset would throw the
            earlier rows' graphs away, and they would compile again while being timed).

    Returns:
        ``(compiled, compile_seconds)``: the wall time of resetting Dynamo, compiling and
        the first call.

    Raises:
        CompileFailed: with a one-line reason, when compiling or the first call fails.
    """
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            for message in _COMPILE_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            if reset:
                torch.compiler.reset()
            compiled = torch.compile(fn, fullgraph=True, dynamic=False)
            call(compiled)
            synchronize(device)
    except Exception as ex:
        raise CompileFailed(one_line(ex)) from ex
    return compiled, time.perf_counter() - t0


def compile_call(fn: F, call: Callable[[F], object], device: torch.device | str | None = None,
                 reset: bool = True) -> tuple[Callable[[], object], float]:
    """:func:`compile_fn`, ready to time: ``(lambda: call(compiled), compile_seconds)``."""
    compiled, seconds = compile_fn(fn, call, device, reset)
    return (lambda: call(compiled)), seconds
