"""Fused CPU kernels for the fixed-kernel filters: ``kernels.c``, built with the package.

Eager PyTorch runs a separable filter, or grayscale + Sobel magnitude, as 10-14 passes
over the image; OpenCV runs one. ``kernels.c`` does the same arithmetic in one pass a
row at a time (see its header), which is what closes the gap to OpenCV on CPU
(../shared/PERFORMANCE.md, the README's benchmark section).

How it is built and loaded:

- ``setup.py`` compiles ``kernels.c`` when the package is built or installed, as the
  optional extension ``gradcv.core_ops._native._kernels`` (plain C, no Python or torch
  headers), into ``_kernels<suffix>`` beside this file. One portable build: with GCC on
  x86-64 each kernel is compiled for x86-64-v4, x86-64-v3 and the baseline, and the
  dynamic loader picks the clone the CPU supports. Nothing compiles at import or call time.
- :func:`library` loads it with :mod:`ctypes` on first use, and only when all of these
  hold; otherwise it returns ``None``, :func:`status` says why, and every operator runs
  its PyTorch code, which gives the same numbers to rounding:

  * ``GRADCV_NATIVE`` is not ``0``/``false``/``no``/``off``;
  * the file exists (an install without a C compiler has none: "not built");
  * the file and the directory holding it belong to root or to the current user, and
    neither is writable by its group or by others. The library runs with the
    process's rights, so it must be as trusted as the package's own ``.py`` files
    beside it; a directory another user can write is one where that user can plant a
    library. Nothing is looked up anywhere else (no cache, no temporary directory);
  * it loads, and its ``gradcv_native_version()`` is :data:`VERSION` (a stale build of
    another ``kernels.c`` is refused, not called with the wrong arguments).
- The kernels are called only from the CPU implementations of the operators' custom ops
  (``gradcv::separable_correlate``, ``gradcv::sobel_magnitude``,
  ``gradcv::grayscale``, and the bilinear sampler's ``gradcv::warp_bilinear``,
  ``gradcv::grid_sampler_2d`` and their backward ops in ``core_ops/geometry/_sampler.py``),
  below PyTorch's dispatcher: fake tensors, tracers, vmap
  and autograd see the op, never a data pointer. :func:`needs_decomposition` says when
  an operator must run its PyTorch code instead of the op (forward-mode AD and
  functorch's grad/jvp transforms, which custom ops do not support).
- ``registration.c``, the second-order registration solver's fused evaluation, is a
  second optional library built the same way (``gradcv.core_ops._native._registration``),
  loaded by :func:`registration_library` under the same checks and switches, with its own
  version (:data:`REGISTRATION_VERSION`); ``registration/_native_eval.py`` calls it.
- ``ctypes`` releases the GIL during a call, so large inputs are split between
  ``torch.get_num_threads()`` threads, as PyTorch's own ops are: the filters' on this
  module's pool; the sampler's on PyTorch's own OpenMP team where PyTorch runs one
  (libgomp's ``GOMP_parallel``, :func:`_gomp_parallel`), whose threads are still spinning
  after PyTorch's last parallel op, where a pool thread would wait for the core one of them
  holds (right after a ``sum()`` over the output, the backward ran on one thread: 2-thread
  forward + backward with respect to the matrix 4.7-5.0 ms on the pool, 3.0 ms on the team).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.machinery
import multiprocessing
import os
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.autograd.forward_ad as _forward_ad

#: The ABI of ``kernels.c`` this module calls (its ``gradcv_native_version()``).
VERSION = 6
#: The ABI of ``registration.c`` (its ``gradcv_registration_version()``).
REGISTRATION_VERSION = 4
_HERE = Path(__file__).resolve().parent
# Below this many output values per thread, a second thread costs more than it saves:
# waking an idle worker costs tens of microseconds (more on a virtual machine's idle
# core), a 256x256 plane's Sobel magnitude about 30. Grayscale + Sobel magnitude of
# RGB 256x256 on 2 threads, in us, for 2^17 / 2^18 / 2^19 values: batch 4 435 / 313 /
# 313, batch 8 598 / 598 / 569, batch 16 911 / 906 / 906 (one thread: 316, 570, 1050).
_PARALLEL_MIN_VALUES = 1 << 19
_OFF = ("0", "false", "no", "off")

_lock = threading.Lock()
_state: dict[str, object] = {}
_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_pool_pid = 0
_disabled_depth = 0


def _untrusted(path: Path) -> Optional[str]:
    """Why ``path`` must not be loaded (see the module docstring), or ``None``."""
    for item in (path, path.parent):
        info = os.stat(item)
        if info.st_uid not in (0, os.getuid()):
            return f"{item} belongs to uid {info.st_uid}, neither root nor this user"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{item} is writable by other users (mode {stat.filemode(info.st_mode)})"
    return None


def _load(
    directory: Path = _HERE, name: str = "_kernels", version_symbol: str = "gradcv_native_version",
    expected: Optional[int] = None,
) -> tuple[Optional[ctypes.CDLL], str]:
    """The library ``name`` built into ``directory``, or ``None`` and the reason: the
    filters' kernels by default, or another of the package's plain-C libraries (the
    registration's, :func:`registration_library`) under the same checks, whose
    ``version_symbol()`` must return ``expected`` (:data:`VERSION` when ``None``)."""
    if os.environ.get("GRADCV_NATIVE", "1").strip().lower() in _OFF:
        return None, "disabled by GRADCV_NATIVE"
    if sys.platform == "win32":
        # setup.py's plain-C link exports no symbols there, and who may write the
        # directory is a matter of ACLs this module does not read
        return None, "not used on Windows"
    found = [directory / f"{name}{s}" for s in importlib.machinery.EXTENSION_SUFFIXES]
    found = [p for p in found if p.is_file()]
    if not found:
        return None, f"not built: no {name} library in {directory} (installed without a C compiler?)"
    try:
        path = found[0].resolve()  # a link is judged by where it leads
        why = _untrusted(path)
        if why is not None:
            return None, f"not loaded: {why}"
        lib = ctypes.CDLL(str(path))
        version = getattr(lib, version_symbol)()
    except (OSError, AttributeError) as ex:
        return None, f"not loaded: {path}: {ex}"
    expected = VERSION if expected is None else expected
    if version != expected:
        return None, f"not loaded: {path} is version {version}, this module needs {expected} (rebuild the package)"
    try:  # a build of the right version without an entry point: not loaded, not a crash later
        _DECLARATIONS[name](lib)
    except AttributeError as ex:
        return None, f"not loaded: {path}: {ex}"
    return lib, f"loaded {path}"


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
        fn = getattr(lib, f"warp_bilinear_{suffix}")
        fn.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, ptr, ptr, cint]
        fn.restype = cint
        fn = getattr(lib, f"warp_bilinear_backward_{suffix}")
        fn.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, ptr, ptr, cint, i64, i64, i64]
        fn.restype = cint
        fn = getattr(lib, f"warp_bilinear_team_{suffix}")
        fn.argtypes = [ptr, i64, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, ptr, ptr, cint]
        fn.restype = cint
        fn = getattr(lib, f"warp_bilinear_backward_team_{suffix}")
        fn.argtypes = [ptr, i64, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, ptr, ptr, cint, i64, i64, i64]
        fn.restype = cint
    lib.sampling_matrices.argtypes = [ptr, i64, i64, i64, ptr, ptr]
    lib.sampling_matrices.restype = None


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


def _declare_registration(lib: ctypes.CDLL) -> None:
    i64, ptr, dbl, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int
    lib.linearise_f32.argtypes = [ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, dbl, dbl, i64, i64, i64, i64, i64, cint, dbl, ptr, ptr, ptr, ptr]
    lib.linearise_f32.restype = cint
    lib.linearise_shared_f32.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, dbl, dbl, i64, i64, i64, i64, i64, cint, dbl, ptr, ptr, ptr, ptr]
    lib.linearise_shared_f32.restype = cint
    lib.linearise_workspace_bytes.argtypes = [i64, i64, i64, i64, i64]
    lib.linearise_workspace_bytes.restype = i64


#: Each library's ctypes declarations, by its name (see :func:`_load`).
_DECLARATIONS = {"_kernels": _declare, "_registration": _declare_registration}


def registration_library() -> Optional[ctypes.CDLL]:
    """The second-order registration solver's fused evaluation (``registration.c``, built
    as ``_registration`` beside the filters' ``_kernels``, loaded under the same checks, its
    ``gradcv_registration_version()`` :data:`REGISTRATION_VERSION`), or ``None`` when it
    cannot (or must not) be used; :func:`registration_status` says why."""
    if _disabled_depth:
        return None
    if "registration" not in _state:
        with _lock:
            if "registration" not in _state:
                lib, why = _load(_HERE, "_registration", "gradcv_registration_version", REGISTRATION_VERSION)
                _state["registration_why"] = why
                _state["registration"] = lib
    return _state["registration"]  # type: ignore[return-value]


def registration_status() -> str:
    """Whether the registration's native evaluation is in use, and why (or why not)."""
    registration_library()
    if _disabled_depth:
        return "disabled by core_ops._native.disabled()"
    return str(_state["registration_why"])


def status() -> str:
    """Whether the native kernels are in use, and why (or why not)."""
    library()
    if _disabled_depth:
        return "disabled by core_ops._native.disabled()"
    return str(_state["why"])


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the PyTorch code paths inside the block (tests hold both paths side by side).

    Process-wide, not per thread: another thread's calls inside the block take the
    PyTorch path too.
    """
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


def needs_decomposition() -> bool:
    """Whether operators must run their PyTorch code rather than their custom op.

    True under forward-mode AD (``torch.autograd.forward_ad``, which ``torch.func.jvp``
    uses too) and under functorch's grad and jvp transforms: ``torch.library`` has no
    way to register a jvp, so a custom op would return a result without its tangent,
    and functorch's grad transform refuses a custom op's autograd formula. The PyTorch
    code is made of ATen ops, which support both. Under ``torch.compile`` the op is used;
    under ``torch.export`` the PyTorch code (a portable program of ATen ops).
    This reads the global autograd state, never a tensor: it is the same for every
    tensor subclass, wrapper and tracer.
    """
    if torch.compiler.is_exporting():
        # torch.export: programs of ATen ops only, which run without gradcv (AOTInductor,
        # ONNX) and which an exporter can decompose.
        return True
    if torch.compiler.is_compiling():
        return False
    if _forward_ad._current_level >= 0:
        return True
    if torch._C._functorch.peek_interpreter_stack() is None:
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    differentiating = (torch._C._functorch.TransformType.Grad, torch._C._functorch.TransformType.Jvp)
    return any(i.key() in differentiating for i in retrieve_all_functorch_interpreters())


def eager_cpu(*tensors: torch.Tensor) -> bool:
    """Whether a kernel may be called directly, without the dispatcher: every tensor is a
    plain CPU tensor with data (no subclass, fake or functional tensor) and nothing
    intercepts ops (no compile, export, ``torch.jit.trace``, functorch transform,
    forward-mode AD, torch function or dispatch mode). The dispatcher's path through a
    custom op costs tens of microseconds a call; callers take it still whenever autograd
    must record the op."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or _forward_ad._current_level >= 0:
        return False
    if torch._C._get_tracing_state() is not None:  # a TorchScript trace records ops through the dispatcher
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    return all(type(t) is torch.Tensor and t.is_cpu for t in tensors)


def batch_first_vmap(op: Callable[..., torch.Tensor]) -> Callable[..., tuple[torch.Tensor, int | None]]:
    """A ``torch.library.register_vmap`` rule for an op over the leading dimensions of its
    first argument (``(*, H, W)`` and the like): the vmapped dimension becomes one more
    leading dimension, and one call does the whole batch."""

    def rule(info, in_dims, x, *args):  # type: ignore[no-untyped-def]
        if in_dims[0] is None:
            return op(x, *args), None
        return op(x.movedim(in_dims[0], 0), *args), 0

    return rule


# The ops' CPU kernels are registered on the dispatcher directly, not through
# CustomOpDef.register_kernel, whose wrapper (device lookup, a dynamo guard, an aliasing
# check of the result) costs about 2 us per call: a tenth of a 256x256 Sobel magnitude.
_CPU_KERNELS = torch.library.Library("gradcv", "IMPL")


def cpu_kernel(name: str) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register the decorated function as the CPU kernel of the op ``gradcv::name``
    (defined already, with its PyTorch code as the implementation for every device)."""

    def register(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        _CPU_KERNELS.impl(name, fn, "CPU")
        return fn

    return register


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def kernel(name: str, x: torch.Tensor) -> Optional[Callable[..., int]]:
    """The native ``name`` for ``x``'s dtype, or ``None`` when ``x`` must take the PyTorch
    path: off the CPU, another dtype, or no library. Called from the ops' CPU
    implementations only, where ``x`` is a plain tensor with data."""
    if not x.is_cpu or x.dtype not in _SUFFIX:
        return None
    lib = library()
    if lib is None:
        return None
    return getattr(lib, f"{name}_{_SUFFIX[x.dtype]}")


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of at least ``workers`` threads.

    A pool is never shut down: another thread may hold the one this call replaces and
    still be submitting to it. A replaced pool ends by itself: ``ThreadPoolExecutor``'s
    threads keep only a weak reference to it and exit once it is idle and nobody holds
    it. A forked child inherits the bookkeeping but not the threads, and makes its own.
    """
    global _pool, _pool_size, _pool_pid
    with _lock:
        if _pool is None or _pool_size < workers or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradcv-native")
            _pool_size, _pool_pid = workers, os.getpid()
        return _pool


def run(fn: Callable[..., int], src: torch.Tensor, dst: torch.Tensor, planes: int, rows: int, *args: object) -> None:
    """``fn(src, dst, p0, p1, y0, y1, *args)`` over planes ``[0, planes)`` and rows
    ``[0, rows)``, split between up to ``torch.get_num_threads()`` threads when ``dst`` is
    large enough: by planes when there are enough of them, else by rows."""
    pointers = (src.data_ptr(), dst.data_ptr())
    values = dst.numel()
    threads = _threads(values)
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


def _threads(values: int) -> int:
    """How many threads share a call writing ``values`` outputs: up to
    ``torch.get_num_threads()``, one below ``2 * _PARALLEL_MIN_VALUES`` values."""
    if values < 2 * _PARALLEL_MIN_VALUES:
        return 1
    return max(1, min(torch.get_num_threads(), values // _PARALLEL_MIN_VALUES))


# Rows per piece of the sampler's work: about this many output values (all channels). On
# 8x3x256x256 at 2 threads, pieces of 10 rows took 1.02-1.04 ms, of 42 rows 0.98, of 64-256
# rows 0.96-0.97 (smaller ones cost more than the late worker they make up for).
_PIECE_VALUES = 1 << 16


def _run_shared(fn: Callable[..., int], before: tuple, after: tuple, threads: int) -> None:
    """``fn(*before, next, *after)`` on ``threads`` threads at once (this one included): the
    kernel cuts its work into pieces and every thread takes the next one from the shared
    counter ``next`` until none is left, all in C, so that a worker that wakes late (tens
    to hundreds of microseconds on an idle virtual core) does less instead of the call
    waiting for it."""
    counter = ctypes.c_int64(0)
    args = (*before, ctypes.addressof(counter), *after)
    if threads <= 1:
        codes = [fn(*args)]
    else:
        pool = _executor(threads - 1)
        futures = [pool.submit(fn, *args) for _ in range(threads - 1)]
        codes = [fn(*args)] + [f.result() for f in futures]
    if any(codes):
        raise MemoryError("core_ops native kernel: out of memory for its row buffers")


def _find_gomp_parallel() -> Optional[int]:
    """The address of ``GOMP_parallel`` as PyTorch's own CPU library resolves it, or ``None``
    (PyTorch without OpenMP, not Linux, no ``libtorch_cpu.so`` beside ``torch``). Looked up
    through ``libtorch_cpu``'s handle, which searches it and its dependencies: the OpenMP
    runtime PyTorch's parallel ops run on (its libgomp, or the GOMP entry points of the
    Intel or LLVM runtime it was built with), never another one loaded beside it, which
    would run a second team of spinning threads."""
    if not sys.platform.startswith("linux") or not torch.backends.openmp.is_available():
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).resolve().parent / "lib" / "libtorch_cpu.so"))
        return ctypes.cast(lib.GOMP_parallel, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None


def _gomp_parallel() -> Optional[int]:
    """:func:`_find_gomp_parallel`, found once per process; ``None`` in a child process (a
    forked child's OpenMP runtime still counts the parent's team, whose threads it does not
    have, and hangs in its first parallel region, as PyTorch's own parallel ops do there;
    its DataLoader workers run one thread for that reason). A child made by ``fork`` is
    marked by :func:`_after_fork_in_child` whether or not the parent had used the team;
    one made by ``multiprocessing``'s spawn or forkserver has a parent process."""
    with _lock:
        if _state.get("gomp_pid") != os.getpid():
            first = "gomp_pid" not in _state and multiprocessing.parent_process() is None
            _state["gomp"] = _find_gomp_parallel() if first else None
            _state["gomp_pid"] = os.getpid()
    return _state["gomp"]  # type: ignore[return-value]


def _after_fork_in_child() -> None:
    """In a forked child: never the OpenMP team (see :func:`_gomp_parallel`)."""
    _state["gomp"], _state["gomp_pid"] = None, os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}


def _run_sampler(fn: Callable[..., int], team: str, image: torch.Tensor, before: tuple, after: tuple, threads: int) -> None:
    """A sampler kernel ``fn(*before, next, *after)`` on ``threads`` threads: PyTorch's
    OpenMP team through the kernel's ``team`` entry point where there is one
    (:func:`_gomp_parallel`), else this module's pool (:func:`_run_shared`)."""
    gomp = _gomp_parallel() if threads > 1 else None
    if gomp is None:
        _run_shared(fn, before, after, threads)
    elif kernel(team, image)(gomp, threads, *before, *after):  # type: ignore[misc]
        raise MemoryError("core_ops native kernel: out of memory for its row buffers")


def warp_bilinear(
    image: torch.Tensor, out: torch.Tensor, grid: Optional[torch.Tensor], mats: Optional[torch.Tensor], padding_mode: str
) -> bool:
    """Bilinear samples of contiguous ``image (B, C, H, W)`` into contiguous ``out (B, C, h, w)``
    at pixel positions: ``grid (B, h, w, 2)`` contiguous, of the image's dtype, or the
    float64 ``mats (B, 3, 3)`` contiguous taking ``(x, y, 1)`` to homogeneous source
    positions. ``False`` (nothing written) when the PyTorch path must do it."""
    fn = kernel("warp_bilinear", image)
    if fn is None:
        return False
    b, c, h, w = image.shape
    ho, wo = out.shape[-2:]
    band = max(1, _PIECE_VALUES // max(1, c * wo))
    threads = min(_threads(out.numel()), b * -(-ho // band))
    pointers = (image.data_ptr(), out.data_ptr())
    after = (b, band, c, h, w, ho, wo, None if grid is None else grid.data_ptr(), None if mats is None else mats.data_ptr(), PADDINGS[padding_mode])
    _run_sampler(fn, "warp_bilinear_team", image, pointers, after, threads)
    return True


def sampling_matrices(mats: torch.Tensor, height: int, width: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The bilinear warps' sampling matrices ``(B, 3, 3)`` and their mask ``(B,)`` (bool)
    from the source-to-destination matrices ``mats`` (float64 CPU ``(B, 3, 3)``) of a
    ``height x width`` source (``sampling_matrices`` in ``kernels.c``), or ``None`` when
    the PyTorch path must compute them."""
    lib = library()
    if lib is None:
        return None
    m = mats.contiguous()
    a = torch.empty_like(m)
    ok = torch.empty(m.shape[0], dtype=torch.bool)
    lib.sampling_matrices(m.data_ptr(), m.shape[0], height, width, a.data_ptr(), ok.data_ptr())
    return a, ok


def warp_bilinear_backward(
    grad: torch.Tensor, image: torch.Tensor, grad_image: Optional[torch.Tensor], grad_grid: Optional[torch.Tensor],
    grad_mats: Optional[torch.Tensor], grid: Optional[torch.Tensor], mats: Optional[torch.Tensor], padding_mode: str,
) -> bool:
    """Backward of :func:`warp_bilinear`: writes ``grad_image`` (the kernel zeroes it, image
    by image, on the thread that fills it) and ``grad_grid``, adds into the zeroed
    ``grad_mats`` (float64 ``(B, 3, 3)``); each optional. All contiguous but ``grad``, which
    needs unit steps along its rows only (a broadcast gradient, as ``sum()``'s, is read
    in place).
    ``False`` (nothing written) when the PyTorch path must do it."""
    fn = kernel("warp_bilinear_backward", image)
    if fn is None or grad.stride(-1) != 1:
        return False
    b, c, h, w = image.shape
    ho, wo = grad.shape[-2:]
    # grad_image and grad_mats sum over rows: pieces are whole images (the kernel insists)
    band = ho if grad_image is not None or grad_mats is not None else max(1, _PIECE_VALUES // max(1, c * wo))
    threads = min(_threads(grad.numel()), b * -(-ho // band))
    ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    before = (grad.data_ptr(), image.data_ptr(), ptr(grad_image), ptr(grad_grid), ptr(grad_mats))
    after = (b, band, c, h, w, ho, wo, ptr(grid), ptr(mats), PADDINGS[padding_mode], grad.stride(0), grad.stride(1), grad.stride(2))
    _run_sampler(fn, "warp_bilinear_backward_team", image, before, after, threads)
    return True


BORDERS = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}


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
    if fn is None or not out.is_contiguous() or out.dtype != x.dtype:
        return False
    planes = x.reshape(-1, *x.shape[-2:]).contiguous()
    n, h, w = planes.shape
    k, ho, wo = out.shape[-3:]
    ky, kx = len(bank[0][0]), len(bank[0][1])
    taps_y = _taps(tuple(t for ty, _ in bank for t in ty))
    taps_x = _taps(tuple(t for _, tx in bank for t in tx))
    run(fn, planes, out, n, ho, h, w, k, taps_y, ky, taps_x, kx, top, left, stride, BORDERS[border_type], ho, wo)
    return True


def sobel_magnitude(x: torch.Tensor, border_type: str, scale: float, eps: float) -> Optional[torch.Tensor]:
    """``sqrt(eps + scale (dx^2 + dy^2))`` of raw 3x3 Sobel derivatives of ``x``
    ``(*, H, W)``, contiguous, or ``None`` when the PyTorch path must do it."""
    fn = kernel("sobel_magnitude", x)
    if fn is None or x.numel() == 0:
        return None
    planes = x.reshape(-1, *x.shape[-2:]).contiguous()
    n, h, w = planes.shape
    out = x.new_empty(x.shape)
    run(fn, planes, out, n, h, h, w, BORDERS[border_type], scale, eps)
    return out


def weighted_sum3(image: torch.Tensor, weights: tuple[float, float, float], reverse: bool = False) -> Optional[torch.Tensor]:
    """``(w0 c0 + w1 c1) + w2 c2`` over the channels ``c`` of ``(*, 3, H, W)``, as
    contiguous ``(*, 1, H, W)``; with ``reverse``, ``c`` are the channels in reverse order
    (BGR read as RGB). ``None`` when the PyTorch path must do it, including layouts whose
    channel planes are not contiguous."""
    fn = kernel("weighted_sum3", image)
    if fn is None or image.numel() == 0:
        return None
    h, w = image.shape[-2:]
    batch = image.reshape(-1, 3, h, w) if image.ndim != 4 else image
    if batch.stride(-1) != 1 or batch.stride(-2) != w:
        return None
    out = image.new_empty(*image.shape[:-3], 1, h, w)
    first, channel_stride = (batch.select(1, 2), -batch.stride(1)) if reverse else (batch, batch.stride(1))
    run(fn, first, out, batch.shape[0], h * w, h * w, batch.stride(0), channel_stride, *weights)
    return out


__all__ = ["BORDERS", "PADDINGS", "REGISTRATION_VERSION", "VERSION", "batch_first_vmap", "cpu_kernel", "disabled", "eager_cpu", "library", "needs_decomposition", "registration_library", "registration_status", "sampling_matrices", "status"]
