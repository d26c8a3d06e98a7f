"""Wall-clock timing for the benchmarks: per-call medians, copy bandwidth, thread counts.

Medians rather than means, because on a shared 2-core machine a few calls land behind a
neighbour's time slice and would drag a mean up (see ``/work/shared/PERFORMANCE.md``).
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

import torch

#: Bytes per copy in :func:`measure_copy_bandwidth`: large enough to spill out of every
#: cache level, small enough to be polite on a machine shared with others.
COPY_BYTES = 64 * 2**20


def parse_device(name: str) -> torch.device:
    """The benchmark's ``device`` setting as a :class:`torch.device`.

    Raises :class:`~gradcv.experiments._cli.UsageError` (one line, exit status 2) for a
    name torch does not know and for CUDA asked for where this PyTorch sees no GPU.
    """
    from gradcv.experiments._cli import UsageError

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as ex:
        raise UsageError(f"device: {name!r} is not a torch device ({str(ex).splitlines()[0] if str(ex) else ex})") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device: expected cpu or cuda, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device: {name} is not available here (use device=cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"device: {name} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def synchronize(device: torch.device | str | None) -> None:
    """Wait for ``device``'s queued work (a no-op off CUDA)."""
    _synchronizer(device)()


def _synchronizer(device: torch.device | str | None) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (a no-op off CUDA)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def time_calls_ms(
    fn: Callable[[], object],
    repetitions: int,
    warmup: int = 3,
    *,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
    min_repetitions: int = 3,
) -> list[float]:
    """Time ``repetitions`` calls of ``fn`` one by one; return each call's milliseconds.

    Args:
        fn: the work to time, called without arguments.
        repetitions: number of timed calls (fewer if ``max_seconds`` runs out).
        warmup: untimed calls first (allocator, caches, lazy initialisation, autotuning).
        device: where ``fn`` runs; on CUDA the device is synchronised after every call,
            since kernels are queued asynchronously and the clock would otherwise stop
            before they ran.
        max_seconds: budget for warm-up and timed calls together. Warm-up stops once a
            quarter of it is spent (after at least one call); timing stops once all of
            it is spent, after at least ``min_repetitions`` calls. ``None``: no limit.
        min_repetitions: timed calls made however long they take.

    Returns:
        One duration in milliseconds per timed call, in call order.
    """
    if repetitions < 1:
        raise ValueError(f"repetitions must be at least 1, got {repetitions}")
    sync = _synchronizer(device)
    start = time.perf_counter()
    warm_deadline = None if max_seconds is None else start + max_seconds / 4
    deadline = None if max_seconds is None else start + max_seconds
    for _ in range(warmup):
        fn()
        sync()
        if warm_deadline is not None and time.perf_counter() > warm_deadline:
            break
    # A collection inside the timed loop would be charged to whichever call it hit.
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    times: list[float] = []
    try:
        for _ in range(repetitions):
            t0 = time.perf_counter()
            fn()
            sync()
            t1 = time.perf_counter()
            times.append((t1 - t0) * 1e3)
            if deadline is not None and t1 > deadline and len(times) >= min_repetitions:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def median_ms(
    fn: Callable[[], object],
    repetitions: int,
    warmup: int = 3,
    *,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
) -> float:
    """Median milliseconds per call of ``fn`` (see :func:`time_calls_ms` for the arguments)."""
    return statistics.median(time_calls_ms(fn, repetitions, warmup, device=device, max_seconds=max_seconds))


def measure_copy_bandwidth(
    nbytes: int = COPY_BYTES,
    repetitions: int = 10,
    *,
    device: torch.device | str = "cpu",
) -> float:
    """Memory bandwidth in bytes per second, from the median time of a large tensor copy.

    A copy of ``nbytes`` reads ``nbytes`` and writes ``nbytes``; both count, so that the
    result divides the bytes an operator reads plus writes into a time floor. It runs
    with the current ``torch.get_num_threads()``: call it after :func:`set_threads`.
    """
    n = max(nbytes // 4, 1)
    src = torch.ones(n, dtype=torch.float32, device=device)
    # Written once before timing so that page faults on fresh memory are not measured.
    dst = torch.zeros_like(src)
    seconds = median_ms(lambda: dst.copy_(src), repetitions, warmup=2, device=device) / 1e3
    return 2 * n * 4 / seconds


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads in PyTorch and, when it is installed, in OpenCV."""
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    torch.set_num_threads(n)
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(n)


def native_status() -> str:
    """Whether gradcv's CPU operators run their fused C kernels, and why (or why not)."""
    try:
        from gradcv.core_ops import _native
    except ImportError as ex:
        return f"unknown ({ex})"
    return _native.status()


def native_dispatch_cost(repetitions: int = 2000) -> str:
    """What calling gradcv's C kernels as PyTorch operators costs per call, in words.

    Times a 1x1x8x8 Sobel magnitude, where the arithmetic is negligible, three ways: the
    public ``sobel`` (checks, then the operator ``gradcv::sobel_magnitude``), the operator
    alone (PyTorch's dispatcher: autograd key, then the CPU implementation), and the C
    kernel called through ctypes directly, as the operators did before they were ops.
    """
    try:
        from gradcv.core_ops import _native
        from gradcv.core_ops.filters import sobel
    except ImportError as ex:
        return f"dispatch cost unknown ({ex})"
    x = torch.rand(1, 1, 8, 8)
    op = torch.ops.gradcv.sobel_magnitude.default
    ways = {
        "sobel()": lambda: sobel(x),
        "the op gradcv::sobel_magnitude": lambda: op(x, "replicate", 1 / 64, 1e-6),
    }
    if _native.library() is not None:
        ways["the C kernel through ctypes"] = lambda: _native.sobel_magnitude(x, "replicate", 1 / 64, 1e-6)
    times = {name: median_ms(fn, repetitions, warmup=100) * 1e3 for name, fn in ways.items()}
    return "dispatch cost, 1x1x8x8 Sobel magnitude, median per call: " + ", ".join(f"{n} {us:.1f} us" for n, us in times.items())
