"""Reused memory for large CPU results of the fused kernels.

PyTorch's CPU allocator hands every request of 32 MiB or more (glibc's largest mmap
threshold on 64-bit) fresh pages from the kernel, and frees them on release. A fresh
page costs a fault and the kernel's zeroing of it: for a 64 MiB result, 16,385 faults
and 27 ms to fill here; 7 ms on transparent huge pages; and still 4-7 ms of zeroing
against a 9-15 ms kernel, measured on grayscale + Sobel magnitude of 256 RGB 256x256
images (../shared/PERFORMANCE.md has the same cliff for oneDNN's temporaries). OpenCV,
looping over images, reuses one small buffer and never pays it.

So results of ``_POOLED_BYTES`` and more live in private anonymous mappings (advised onto
huge pages) that go back to a small pool when the last tensor viewing them dies, and are
handed out again, as PyTorch's CUDA caching allocator does on GPUs. The pool keeps at most
``GRADCV_CPU_CACHE_MB`` (default 256) MiB of idle memory; ``GRADCV_CPU_CACHE_MB=0``
turns it off, and :func:`empty_cache` releases the idle blocks.

The tensor is an ordinary CPU tensor made with ``torch.from_numpy`` over the mapping: the
one visible difference is that its storage cannot be resized (``resize_`` to a larger
size raises).
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import threading

import numpy as np
import torch

_POOLED_BYTES = 32 << 20
_HUGE_PAGE = 1 << 21
_TYPESTR = {torch.float32: "<f4", torch.float64: "<f8"}

_lock = threading.Lock()
_idle: list[mmap.mmap] = []  # blocks no tensor uses, smallest first


def _limit() -> int:
    try:
        return max(0, int(float(os.environ.get("GRADCV_CPU_CACHE_MB", "256")) * (1 << 20)))
    except ValueError:
        return 256 << 20


class _Block:
    """Owns one mapping while tensors view it; gives it back to the pool when they die.

    numpy keeps this object as the base of the array made from ``__array_interface__``,
    and ``torch.from_numpy`` keeps that array alive for as long as the tensor's storage
    lives, so ``__del__`` runs exactly when the last view is gone.
    """

    __slots__ = ("mapping", "__array_interface__")

    def __init__(self, mapping: mmap.mmap, shape: tuple[int, ...], typestr: str) -> None:
        self.mapping = mapping
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))  # no export kept
        self.__array_interface__ = {"shape": shape, "typestr": typestr, "data": (address, False), "version": 3}

    def __del__(self) -> None:
        try:
            _release(self.mapping)
        except Exception:  # interpreter shutdown: the module's globals may be gone
            pass


def _release(mapping: mmap.mmap) -> None:
    with _lock:
        idle = sum(len(m) for m in _idle)
        if idle + len(mapping) <= _limit():
            _idle.append(mapping)
            _idle.sort(key=len)
            return
    mapping.close()


def _take(nbytes: int) -> mmap.mmap | None:
    """The smallest idle block that holds ``nbytes`` without wasting more than half of it."""
    with _lock:
        for i, mapping in enumerate(_idle):
            if nbytes <= len(mapping) <= 2 * nbytes:
                return _idle.pop(i)
    return None


def _new_block(nbytes: int) -> mmap.mmap:
    size = -(-nbytes // _HUGE_PAGE) * _HUGE_PAGE
    # Private, so that a forked child writing into an inherited block copies the pages
    # instead of writing into its parent's memory.
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mapping.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages: a hint, nothing more
            pass
    return mapping


def empty(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised contiguous tensor of ``shape`` with ``like``'s dtype and device;
    from the pool when it is a large float CPU result, else from PyTorch."""
    typestr = _TYPESTR.get(like.dtype)
    nbytes = math.prod(shape) * like.element_size()
    if (
        typestr is None
        or nbytes < _POOLED_BYTES
        or like.device.type != "cpu"
        or not hasattr(mmap, "MAP_PRIVATE")
        or torch.compiler.is_compiling()
        or _limit() == 0
    ):
        return like.new_empty(shape)
    mapping = _take(nbytes) or _new_block(nbytes)
    return torch.from_numpy(np.asarray(_Block(mapping, tuple(shape), typestr)))


def empty_cache() -> int:
    """Unmap every idle block; returns the bytes released."""
    with _lock:
        blocks = list(_idle)
        _idle.clear()
    released = sum(len(m) for m in blocks)
    for mapping in blocks:
        mapping.close()
    return released


def idle_bytes() -> int:
    """Bytes the pool holds for reuse."""
    with _lock:
        return sum(len(m) for m in _idle)
