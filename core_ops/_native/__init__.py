"""Fused CPU kernels for the fixed-kernel filters, compiled from ``kernels.c`` on first use.

Eager PyTorch runs a separable filter, or grayscale + Sobel magnitude, as 10-14 passes
over the image; OpenCV runs one. ``kernels.c`` does the same arithmetic in one pass a
row at a time (see its header), which is what closes the gap to OpenCV on CPU
(../shared/PERFORMANCE.md, the README's benchmark section).

How it is built and when it is used:

- The first call that could use it compiles ``kernels.c`` with the system's C compiler
  (``$CC``, else ``cc``; about a second) into a per-user cache
  (``$GRADCV_CACHE_DIR``, else ``$XDG_CACHE_HOME/gradcv``, else ``~/.cache/gradcv``),
  keyed by the source, the compiler and the CPU, and loads it with :mod:`ctypes`. Later
  processes load the cached library.
- Nothing here is required: without a compiler, on a read-only disk, with
  ``GRADCV_NATIVE=0`` in the environment, or when a build fails, :func:`library` returns
  ``None`` and every operator runs its PyTorch code, which gives the same numbers to
  rounding. :func:`status` says which, and why.
- Only forward passes of float32/float64 tensors on the CPU, outside ``torch.compile``
  tracing, take this path; gradients, GPUs and other dtypes use PyTorch.
- ``ctypes`` releases the GIL during a call, so large inputs are split between
  ``torch.get_num_threads()`` threads, as PyTorch's own ops are.
- Results of 32 MiB and more come from reused memory (``_memory``), not fresh pages.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from gradcv.core_ops._native import _memory
from gradcv.core_ops._native._memory import empty_cache  # noqa: F401  (public: frees the idle blocks)

_SOURCE = Path(__file__).with_name("kernels.c")
_FLAGS = ("-O3", "-fPIC", "-shared", "-fno-math-errno", "-ffp-contract=off", "-std=c99")
_ARCH_FLAGS = ("-march=native",)
# Below this many output values per thread, a second thread costs more than it saves
# (a task hand-off is about 20 us; a 256x256 plane's Sobel magnitude about 30 us).
_PARALLEL_MIN_VALUES = 1 << 17

_lock = threading.Lock()
_state: dict[str, object] = {}
_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_pool_pid = 0
_disabled_depth = 0


def _cache_dir() -> Path:
    explicit = os.environ.get("GRADCV_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gradcv"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    parts.append(line.strip())
                if len(parts) >= 4:
                    break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def _build(compiler: str, target: Path) -> None:
    """Compile ``kernels.c`` into ``target`` (written under a temporary name, then renamed,
    so that concurrent processes never load a half-written library)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for arch in (_ARCH_FLAGS, ()):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            cmd = [compiler, *_FLAGS, *arch, "-o", tmp, str(_SOURCE), "-lm"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)
                return
            errors.append(done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"])
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"{compiler} failed: {errors[-1][0]}")


def _load() -> tuple[Optional[ctypes.CDLL], str]:
    if os.environ.get("GRADCV_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by GRADCV_NATIVE"
    if sys.platform == "win32":
        return None, "not built on Windows"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found ($CC, cc, gcc, clang)"
    try:
        source = _SOURCE.read_bytes()
    except OSError as ex:
        return None, f"no kernel source: {ex}"
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(_FLAGS).encode(), _cpu_signature().encode()]))
    name = f"kernels-{key.hexdigest()[:16]}.so"
    target = _cache_dir() / name
    try:
        if not target.exists():
            try:
                _build(compiler, target)
            except OSError:
                # an unwritable cache (a read-only home in a container): build per user in /tmp
                target = Path(tempfile.gettempdir()) / f"gradcv-{os.getuid()}" / name
                if not target.exists():
                    _build(compiler, target)
        lib = ctypes.CDLL(str(target))
        if lib.gradcv_native_version() != 1:
            return None, f"{target} is a different version"
    except (OSError, RuntimeError, subprocess.SubprocessError) as ex:
        return None, f"build failed: {ex}"
    _declare(lib)
    return lib, f"loaded {target}"


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, dbl, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int
    for suffix in ("f32", "f64"):
        fn = getattr(lib, f"separable_correlate_{suffix}")
        fn.argtypes = [ptr, ptr, i64, i64, i64, i64, i64, i64, i64, ptr, i64, ptr, i64, i64, i64, i64, cint, i64, i64]
        fn.restype = cint
        fn = getattr(lib, f"sobel_magnitude_{suffix}")
        fn.argtypes = [ptr, ptr, i64, i64, i64, i64, i64, i64, cint, dbl, dbl]
        fn.restype = cint
        fn = getattr(lib, f"weighted_sum3_{suffix}")
        fn.argtypes = [ptr, ptr, i64, i64, i64, i64, i64, i64, i64, dbl, dbl, dbl]
        fn.restype = cint


def library() -> Optional[ctypes.CDLL]:
    """The loaded kernels, or ``None`` when they cannot (or must not) be used."""
    if _disabled_depth:
        return None
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                lib, why = _load()
                _state["why"] = why
                _state["lib"] = lib
    return _state["lib"]  # type: ignore[return-value]


def status() -> str:
    """Whether the native kernels are in use, and why (or why not)."""
    library()
    if _disabled_depth:
        return "disabled by core_ops._native.disabled()"
    return str(_state["why"])


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the PyTorch code paths inside the block (tests hold both paths side by side)."""
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def kernel(name: str, x: torch.Tensor) -> Optional[Callable[..., int]]:
    """The native ``name`` for ``x``'s dtype, or ``None`` when ``x`` must take the PyTorch
    path: off the CPU, another dtype, under ``torch.compile``, or while autograd records
    ``x`` (the kernels' results have no ``grad_fn``; inside an ``autograd.Function``'s
    forward nothing records, so the filter engine's forward does use them)."""
    if x.device.type != "cpu" or x.dtype not in _SUFFIX or torch.compiler.is_compiling():
        return None
    if x.requires_grad and torch.is_grad_enabled():
        return None
    lib = library()
    if lib is None:
        return None
    return getattr(lib, f"{name}_{_SUFFIX[x.dtype]}")


def _executor(workers: int) -> ThreadPoolExecutor:
    """The worker threads, made again after a fork: a forked child inherits the pool's
    bookkeeping but not its threads, and would wait on them forever."""
    global _pool, _pool_size, _pool_pid
    with _lock:
        if _pool is None or _pool_size < workers or _pool_pid != os.getpid():
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradcv-native")
            _pool_size, _pool_pid = workers, os.getpid()
        return _pool


def run(fn: Callable[..., int], src: torch.Tensor, dst: torch.Tensor, planes: int, rows: int, *args: object) -> None:
    """``fn(src, dst, p0, p1, y0, y1, *args)`` over planes ``[0, planes)`` and rows
    ``[0, rows)``, split between up to ``torch.get_num_threads()`` threads when ``dst`` is
    large enough: by planes when there are enough of them, else by rows."""
    pointers = (src.data_ptr(), dst.data_ptr())
    threads = min(torch.get_num_threads(), dst.numel() // _PARALLEL_MIN_VALUES)
    if threads <= 1 or planes * rows <= 1:
        codes = [fn(*pointers, 0, planes, 0, rows, *args)]
    else:
        if planes >= threads:
            cuts = [planes * i // threads for i in range(threads + 1)]
            chunks = [(a, b, 0, rows) for a, b in zip(cuts, cuts[1:]) if b > a]
        else:
            cuts = [rows * i // threads for i in range(threads + 1)]
            chunks = [(0, planes, a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
        pool = _executor(len(chunks) - 1)
        futures = [pool.submit(fn, *pointers, *chunk, *args) for chunk in chunks[1:]]
        codes = [fn(*pointers, *chunks[0], *args)] + [f.result() for f in futures]
    if any(codes):
        raise MemoryError("core_ops native kernel: out of memory for its row buffers")


def new_empty(like: torch.Tensor, *shape: int) -> torch.Tensor:
    """``like.new_empty(shape)``, with large CPU results from reused memory (``_memory``)."""
    return _memory.empty(like, shape)


_BORDERS = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}


@functools.lru_cache(maxsize=256)
def _taps(values: tuple[float, ...]) -> ctypes.Array:
    return (ctypes.c_double * max(len(values), 1))(*values)


def separable_correlate(
    x: torch.Tensor, out: torch.Tensor, bank: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...],
    top: int, left: int, stride: int, border_type: str,
) -> bool:
    """Pad and correlate ``x`` ``(*, H, W)`` with a bank of K separable kernels into
    contiguous ``out`` ``(*, K, Ho, Wo)``; ``False`` (nothing written) when the PyTorch
    path must do it."""
    fn = kernel("separable_correlate", x)
    if fn is None or not out.is_contiguous():
        return False
    planes = x.reshape(-1, *x.shape[-2:]).contiguous()
    n, h, w = planes.shape
    k, ho, wo = out.shape[-3:]
    ky, kx = len(bank[0][0]), len(bank[0][1])
    taps_y = _taps(tuple(t for ty, _ in bank for t in ty))
    taps_x = _taps(tuple(t for _, tx in bank for t in tx))
    run(fn, planes, out, n, ho, h, w, k, taps_y, ky, taps_x, kx, top, left, stride, _BORDERS[border_type], ho, wo)
    return True


def sobel_magnitude(x: torch.Tensor, border_type: str, scale: float, eps: float) -> Optional[torch.Tensor]:
    """``sqrt(eps + scale (dx^2 + dy^2))`` of raw 3x3 Sobel derivatives of ``x``
    ``(*, H, W)``, or ``None`` when the PyTorch path must do it."""
    fn = kernel("sobel_magnitude", x)
    if fn is None or x.numel() == 0:
        return None
    planes = x.reshape(-1, *x.shape[-2:]).contiguous()
    n, h, w = planes.shape
    out = new_empty(planes, *x.shape)
    run(fn, planes, out, n, h, h, w, _BORDERS[border_type], scale, eps)
    return out


def weighted_sum3(image: torch.Tensor, weights: tuple[float, float, float], reverse: bool = False) -> Optional[torch.Tensor]:
    """``(w0 c0 + w1 c1) + w2 c2`` over the channels ``c`` of ``(*, 3, H, W)``, as
    ``(*, 1, H, W)``; with ``reverse``, ``c`` are the channels in reverse order (BGR read
    as RGB). ``None`` when the PyTorch path must do it, including layouts whose channel
    planes are not contiguous."""
    fn = kernel("weighted_sum3", image)
    if fn is None or image.numel() == 0:
        return None
    h, w = image.shape[-2:]
    batch = image.reshape(-1, 3, h, w) if image.ndim != 4 else image
    if batch.stride(-1) != 1 or batch.stride(-2) != w:
        return None
    out = new_empty(image, *image.shape[:-3], 1, h, w)
    first, channel_stride = (batch.select(1, 2), -batch.stride(1)) if reverse else (batch, batch.stride(1))
    run(fn, first, out, batch.shape[0], h * w, h * w, batch.stride(0), channel_stride, *weights)
    return out
