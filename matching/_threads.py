"""Independent pieces of work side by side on CPU threads, one intra-op thread each.

A pair's feature stack is tens of thousands of small operations, which a second intra-op
thread speeds up by only about 1.45x (400 x 300, forward and backward); pieces that do
not depend on each other (the chunks of pairs of one attack step, the image chunks of
one :func:`~gradcv.matching.pipeline.match_pair` call) run faster on threads of their
own. Each piece then computes what it computes alone on one thread: the same bits as a
1-thread run.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch

T = TypeVar("T")

_lock = threading.Lock()
_pool: Optional[ThreadPoolExecutor] = None
_pool_key: tuple[int, int] = (0, 0)


def _side_pool(workers: int) -> ThreadPoolExecutor:
    """The ``workers`` threads that run pieces side by side, kept for the process's life:
    threads made afresh every attack step allocate from fresh malloc arenas, whose memory
    comes back page fault by page fault (1.0 against 0.7 s per pair-step at 2 threads).
    Made again after a fork (a child has the pool but not its threads) or for another
    thread count; a replaced pool is not shut down (another thread may still be using it),
    its threads end once it is idle and nobody holds it."""
    global _pool, _pool_key
    with _lock:
        if _pool is None or _pool_key != (os.getpid(), workers):
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradcv-matching")
            _pool_key = (os.getpid(), workers)
        return _pool


def side_by_side_count(pieces: int, device: torch.device) -> int:
    """How many of ``pieces`` go side by side: all of them on a CPU with several threads
    (each on a worker of one intra-op thread, queued when there are more pieces than
    threads), none on other devices, with one thread or while torch.compile traces. All or
    none: a piece left to the caller's thread would run with every thread, and reductions
    split over threads round differently, so its result would depend on where it sat."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or pieces < 2 or torch.compiler.is_compiling():
        return 0
    return pieces


def run_pieces(fn: Callable[..., T], args: Sequence[tuple[Any, ...]], device: torch.device) -> list[T]:
    """``[fn(*a) for a in args]``, side by side on threads of one intra-op thread each (with
    the caller's grad mode) where :func:`side_by_side_count` allows, else on the caller's
    thread.

    While the pieces run, the process-wide BLAS and pthreadpool thread counts are 1
    (``torch.set_num_threads`` in the workers); the caller's count is restored after them.
    """
    if not side_by_side_count(len(args), device):
        return [fn(*a) for a in args]
    threads = torch.get_num_threads()
    grad = torch.is_grad_enabled()

    def piece(a: tuple[Any, ...]) -> T:
        torch.set_num_threads(1)
        with torch.set_grad_enabled(grad):
            return fn(*a)

    try:
        return list(_side_pool(threads).map(piece, args))
    finally:
        torch.set_num_threads(threads)
