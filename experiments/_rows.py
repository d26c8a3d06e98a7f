"""Benchmarks made of rows: one library's call for one task and mode, timed at each thread
count, written as CSV and JSON, and summarised as gradcv's ratio to each reference.

OpenCV has no autograd: its rows are forward only, and gradcv's forward rows are compared
with them; Kornia's rows are compared mode for mode. A "gradcv (torch.compile)" row
(:func:`compiled_row`) is compiled just before it is timed, and compared with eager
gradcv's row of the same task and mode ("compiled/eager").
"""

from __future__ import annotations

import resource
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gradcv.experiments._cli import atomic_write_text, write_metrics
from gradcv.experiments._compiled import COMPILED, RATIO, CompileFailed, compile_call
from gradcv.experiments._timing import set_threads, time_calls_ms

FORWARD = "forward"


@dataclass
class Row:
    """One timed call. ``fn`` is the call; or, for a compiled row, ``prepare`` builds it
    just before timing and returns it with its preparation (compile) seconds."""

    task: str
    library: str
    mode: str
    fn: Callable[[], object] | None
    repetitions: int
    prepare: Callable[[], tuple[Callable[[], object], float]] | None = None


@dataclass
class Measurement:
    median_ms: float
    minor_faults_per_call: float
    compile_seconds: float | None = None


def compiled_row(task: str, mode: str, fn: Callable, call: Callable[[Callable], object], repetitions: int,
                 device: torch.device | str | None = None) -> Row:
    """The "gradcv (torch.compile)" row of ``task`` and ``mode``: ``call(compiled fn)``,
    compiled at each thread count just before it is timed (see ``_compiled``)."""
    return Row(task, COMPILED, mode, None, repetitions, prepare=lambda: compile_call(fn, call, device))


Key = tuple[int, str, str, str]  # threads, task, library, mode


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_rows(rows: list[Row], thread_counts: list[int], warmup: int, *, device: torch.device | str | None = None,
              notes: list[str] | None = None) -> dict[Key, Measurement]:
    """Median ms and page faults per call of every row at every thread count, printing a line each.

    Page faults are counted because they are the cliff PERFORMANCE.md describes (oneDNN's
    temporaries, glibc returning large blocks to the kernel). On CUDA (``device``) every
    call is followed by a synchronisation, so that the clock sees the kernels run. A
    row whose ``prepare`` fails to compile is skipped, with every later row of its
    library, and a one-line note is appended to ``notes``.
    """
    results: dict[Key, Measurement] = {}
    skipped: set[str] = set()
    width = max((len(row.library) for row in rows), default=7)
    for threads in thread_counts:
        set_threads(threads)
        for row in rows:
            if row.library in skipped:
                continue
            call, prepare_s = row.fn, None
            if row.prepare is not None:
                try:
                    call, prepare_s = row.prepare()
                except CompileFailed as ex:
                    skipped.add(row.library)
                    note = f"{row.library} rows skipped: {ex}"
                    if notes is not None:
                        notes.append(note)
                    print(f"threads={threads}  {row.task:<30s} {note}", flush=True)
                    continue
            assert call is not None, f"row {row.task} {row.library} {row.mode} has neither fn nor prepare"
            before = _minor_faults()
            ms = statistics.median(time_calls_ms(call, row.repetitions, warmup, device=device))
            faults = (_minor_faults() - before) / (row.repetitions + warmup)
            results[(threads, row.task, row.library, row.mode)] = Measurement(ms, faults, prepare_s)
            compiled = "" if prepare_s is None else f"  (compiled in {prepare_s:.1f} s)"
            print(
                f"threads={threads}  {row.task:<30s} {row.library:<{width}s} {row.mode:<30s} {ms:9.3f} ms"
                f"  {faults:7.0f} page faults/call{compiled}",
                flush=True,
            )
    return results


def compiled_ratios(results: dict[Key, Measurement]) -> list[dict[str, object]]:
    """Each compiled row's time over eager gradcv's of the same thread count, task and mode."""
    out = []
    for (threads, task, library, mode), m in results.items():
        eager = results.get((threads, task, "gradcv", mode))
        if library == COMPILED and eager and eager.median_ms > 0:
            out.append({"threads": threads, "task": task, "mode": mode, "compiled_ms": m.median_ms, "eager_ms": eager.median_ms,
                        RATIO: m.median_ms / eager.median_ms, "compile_seconds": m.compile_seconds})
    return out


def ratio_lines(results: dict[Key, Measurement]) -> list[str]:
    """gradcv's time over OpenCV's (forward rows) and over Kornia's (same mode), and the
    compiled rows' over eager gradcv's."""
    lines = []
    for (threads, task, library, mode), m in sorted(results.items()):
        eager = results.get((threads, task, "gradcv", mode))
        if library == COMPILED and eager and eager.median_ms > 0:
            took = "" if m.compile_seconds is None else f" (compiled in {m.compile_seconds:.1f} s)"
            lines.append(f"  threads={threads} {task}, {mode}: {RATIO} = {m.median_ms / eager.median_ms:.2f}x{took}")
        if library != "gradcv":
            continue
        parts = []
        opencv = results.get((threads, task, "OpenCV", FORWARD))
        if mode == FORWARD and opencv:
            parts.append(f"{m.median_ms / opencv.median_ms:.2f}x OpenCV")
        kornia = results.get((threads, task, "Kornia", mode))
        if kornia:
            parts.append(f"{m.median_ms / kornia.median_ms:.2f}x Kornia")
        if parts:
            lines.append(f"  threads={threads} {task}, {mode}: gradcv = " + ", ".join(parts))
    return lines


def write_results(out: Path, csv_name: str, results: dict[Key, Measurement], metrics: dict[str, object]) -> None:
    """``csv_name`` then ``metrics.json`` (last: it marks the folder complete) in ``out``, each written atomically.

    ``metrics.json`` gets every row's median (and compile seconds for compiled rows) under
    ``median_ms``, and the compiled/eager ratios under ``compiled/eager`` when there are any.
    """
    csv = "threads,task,library,mode,median_ms,minor_faults_per_call\n" + "".join(
        f'{t},"{task}",{lib},"{mode}",{m.median_ms:.6f},{m.minor_faults_per_call:.1f}\n'
        for (t, task, lib, mode), m in results.items()
    )
    atomic_write_text(out / csv_name, csv)
    rows = [
        {"threads": t, "task": task, "library": lib, "mode": mode, "median_ms": m.median_ms,
         "minor_faults_per_call": m.minor_faults_per_call,
         **({} if m.compile_seconds is None else {"compile_seconds": m.compile_seconds})}
        for (t, task, lib, mode), m in results.items()
    ]
    compiled = compiled_ratios(results)
    write_metrics({**metrics, "median_ms": rows, **({RATIO: compiled} if compiled else {})}, out)


def report(out: Path, csv_name: str, results: dict[Key, Measurement], notes: list[str], shape: tuple[int, ...]) -> None:
    """Print the ratios, the notes and where the outputs went."""
    print(f"\nratios (median ms, same run, input {shape}):")
    print("\n".join(ratio_lines(results)))
    for note in notes:
        print(f"note: {note}")
    print(f"outputs: {csv_name} and metrics.json in {out}", flush=True)


def target_line(target: dict) -> str:
    """One line of a benchmark's target list: ``  [PASS|FAIL|SKIP] name: detail``
    (``passed`` None: a column it needs did not run)."""
    mark = "SKIP" if target["passed"] is None else ("PASS" if target["passed"] else "FAIL")
    return f"  [{mark}] {target['target']}: {target['detail']}"
