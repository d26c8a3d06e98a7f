"""Benchmarks made of rows: one library's call for one task and mode, timed at each thread
count, written as CSV and JSON, and summarised as gradcv's ratio to each reference.

OpenCV has no autograd: its rows are forward only, and gradcv's forward rows are compared
with them; Kornia's rows are compared mode for mode.
"""

from __future__ import annotations

import resource
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gradcv.experiments._cli import atomic_write_text, write_metrics
from gradcv.experiments._timing import set_threads, time_calls_ms

FORWARD = "forward"


@dataclass
class Row:
    task: str
    library: str
    mode: str
    fn: Callable[[], object]
    repetitions: int


@dataclass
class Measurement:
    median_ms: float
    minor_faults_per_call: float


Key = tuple[int, str, str, str]  # threads, task, library, mode


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_rows(rows: list[Row], thread_counts: list[int], warmup: int) -> dict[Key, Measurement]:
    """Median ms and page faults per call of every row at every thread count, printing a line each.

    Page faults are counted because they are the cliff PERFORMANCE.md describes (oneDNN's
    temporaries, glibc returning large blocks to the kernel).
    """
    results: dict[Key, Measurement] = {}
    for threads in thread_counts:
        set_threads(threads)
        for row in rows:
            before = _minor_faults()
            ms = statistics.median(time_calls_ms(row.fn, row.repetitions, warmup))
            faults = (_minor_faults() - before) / (row.repetitions + warmup)
            results[(threads, row.task, row.library, row.mode)] = Measurement(ms, faults)
            print(
                f"threads={threads}  {row.task:<30s} {row.library:<7s} {row.mode:<30s} {ms:9.3f} ms"
                f"  {faults:7.0f} page faults/call",
                flush=True,
            )
    return results


def ratio_lines(results: dict[Key, Measurement]) -> list[str]:
    """gradcv's time over OpenCV's (forward rows) and over Kornia's (same mode)."""
    lines = []
    for (threads, task, library, mode), m in sorted(results.items()):
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
    """``csv_name`` then ``metrics.json`` (last: it marks the folder complete) in ``out``, each written atomically."""
    csv = "threads,task,library,mode,median_ms,minor_faults_per_call\n" + "".join(
        f'{t},"{task}",{lib},"{mode}",{m.median_ms:.6f},{m.minor_faults_per_call:.1f}\n'
        for (t, task, lib, mode), m in results.items()
    )
    atomic_write_text(out / csv_name, csv)
    rows = [
        {"threads": t, "task": task, "library": lib, "mode": mode, "median_ms": m.median_ms,
         "minor_faults_per_call": m.minor_faults_per_call}
        for (t, task, lib, mode), m in results.items()
    ]
    write_metrics({**metrics, "median_ms": rows}, out)


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
