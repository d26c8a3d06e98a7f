"""The fused CPU kernels (core_ops/_native) and the operators that deliver them.

Three groups:

- the C kernels give the PyTorch path's numbers on every border, stride, size and dtype,
  also on two threads and in a forked child (native only: skipped when the library is
  not loaded, as under ``GRADCV_NATIVE=0``, which the CI runs too);
- the custom ops (``gradcv::separable_correlate``, ``gradcv::separable_correlate_adjoint``,
  ``gradcv::sobel_magnitude``, ``gradcv::grayscale``) under PyTorch's machinery: fake
  tensors, ``make_fx``, ``torch.jit.trace``, ``torch.compile``, ``torch.export``, vmap,
  forward-mode AD and functorch. These run on either path;
- loading: the off switch, a missing, corrupt, foreign or stale library, and the pool.

The OpenCV parity tests in test_filters.py, test_pyramid.py and test_color.py run the
native path whenever it loads; here each native result is held against the PyTorch
path of the same call, so both paths meet those references.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.fx.experimental.proxy_tensor import make_fx
from torch._subclasses.fake_tensor import FakeTensorMode

from gradcv.core_ops import _native
from gradcv.core_ops.color import bgr_to_grayscale, rgb_to_grayscale
from gradcv.core_ops.filters import correlate_separable, gaussian_blur2d, sobel, spatial_gradient
from gradcv.core_ops.pyramid import pyrdown
from tests.helpers import ignore_compile_warnings

BORDERS = ["constant", "reflect", "replicate", "circular"]
ROOT = Path(__file__).resolve().parents[2]

needs_native = pytest.mark.skipif(_native.library() is None, reason=f"native kernels unavailable: {_native.status()}")


def _both(fn, *args, **kwargs):
    """``fn``'s result with the native kernels, and with the PyTorch code."""
    native = fn(*args, **kwargs)
    with _native.disabled():
        reference = fn(*args, **kwargs)
    return native, reference


def _assert_same(native: torch.Tensor, reference: torch.Tensor, msg: str = "") -> None:
    """Native equals the PyTorch path. Both make the same fused multiply-adds in the same
    order, and on this machine (AVX-512) they agree bit for bit; a few ulps of slack keep
    the test about the arithmetic (a wrong tap, border or stride is off by O(1)), not
    about whether ATen's kernels for another CPU fuse the same way."""
    eps = torch.finfo(reference.dtype).eps
    scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
    torch.testing.assert_close(native, reference, rtol=4 * eps, atol=8 * eps * scale, msg=msg or None)


def _random_bank(generator: torch.Generator, k: int, ky: int, kx: int) -> list[tuple[list[float], list[float]]]:
    bank = []
    for _ in range(k):
        ty = torch.randn(ky, generator=generator, dtype=torch.float64)
        tx = torch.randn(kx, generator=generator, dtype=torch.float64)
        ty[torch.rand(ky, generator=generator) < 0.25] = 0.0  # zero taps are skipped
        tx[torch.rand(kx, generator=generator) < 0.25] = 0.0
        bank.append((ty.tolist(), tx.tolist()))
    return bank


# ------------------------------------------------------------------ native = PyTorch
@needs_native
@pytest.mark.parametrize("border_type", BORDERS)
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_separable_correlation_is_the_pytorch_paths(border_type, stride, dtype):
    g = torch.Generator().manual_seed(stride * 7 + len(border_type))
    for h, w, ky, kx, k in [(19, 23, 3, 3, 2), (16, 16, 5, 5, 1), (7, 30, 7, 1, 3), (30, 7, 1, 9, 1), (1, 5, 3, 3, 1), (4, 3, 9, 11, 2)]:
        x = torch.rand(2, 3, h, w, generator=g, dtype=dtype)
        bank = _random_bank(g, k, ky, kx)
        native, reference = _both(correlate_separable, x, bank, border_type, stride=stride)
        assert native.shape == reference.shape
        _assert_same(native, reference, f"{(h, w, ky, kx, k)}")


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_valid_padding_and_public_filters_agree(dtype):
    x = torch.rand(2, 3, 41, 37, dtype=dtype)
    for call in (
        lambda t: correlate_separable(t, [([1.0, 2.0, 1.0], [0.5, 0.0, -0.5, 1.0, 2.0])], padding="valid"),
        lambda t: gaussian_blur2d(t, (5, 7), (1.2, 2.0)),
        lambda t: pyrdown(t),
        lambda t: pyrdown(t[..., :40, :36], "constant"),
    ):
        native, reference = _both(call, x)
        _assert_same(native, reference)


@needs_native
@pytest.mark.parametrize("border_type", BORDERS)
@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sobel_magnitude_agrees_with_the_pytorch_path(border_type, normalized, dtype):
    for shape in [(2, 3, 19, 23), (1, 1, 1, 1), (1, 2, 1, 9), (1, 1, 8, 1), (3, 1, 64, 65)]:
        x = torch.rand(shape, dtype=dtype)
        native, reference = _both(sobel, x, normalized, border_type=border_type)
        assert native.shape == reference.shape == x.shape
        # the fused square root of a fused sum differs from ATen's addcmul chain by at
        # most an ulp of the magnitude
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(native, reference, rtol=2 * eps, atol=2 * eps)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grayscale_is_the_pytorch_paths(dtype):
    x = torch.rand(2, 3, 17, 29, dtype=dtype)
    for call in (rgb_to_grayscale, bgr_to_grayscale, lambda t: rgb_to_grayscale(t, (0.2, 0.3, 0.5))):
        native, reference = _both(call, x)
        _assert_same(native, reference)
    # unbatched, a batch of batches, channel planes spread apart (a slice of 5 channels)
    for image in (x[0], x.view(1, 2, 3, 17, 29), torch.rand(2, 5, 17, 29, dtype=dtype)[:, 1:4]):
        native, reference = _both(rgb_to_grayscale, image)
        _assert_same(native, reference)


@needs_native
def test_layouts_the_kernels_do_not_take_fall_back():
    x = torch.rand(2, 3, 16, 20)
    channels_last = x.to(memory_format=torch.channels_last)  # channel planes are not contiguous
    assert _native.weighted_sum3(channels_last, (0.299, 0.587, 0.114)) is None
    gray = rgb_to_grayscale(channels_last)
    assert gray.is_contiguous()  # what the op's fake implementation promises
    _assert_same(gray, rgb_to_grayscale(x))
    transposed = x.transpose(-1, -2)  # copied to contiguous planes, then fused
    native, reference = _both(sobel, transposed)
    torch.testing.assert_close(native, reference)
    assert _native.kernel("sobel_magnitude", x.half()) is None
    assert _native.kernel("sobel_magnitude", x.to(torch.bfloat16)) is None


def test_empty_batches():
    for fn in (sobel, lambda t: gaussian_blur2d(t, 3, 1.0), pyrdown):
        assert fn(torch.rand(0, 1, 8, 8)).shape[0] == 0
    assert rgb_to_grayscale(torch.rand(0, 3, 8, 8)).shape == (0, 1, 8, 8)


def test_first_and_second_derivatives_of_the_ops():
    x = torch.rand(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    for fn, inp in (
        (sobel, x),
        (lambda t: sobel(t, False, border_type="reflect"), x),
        (lambda t: gaussian_blur2d(t, 3, 1.0), x),
        (lambda t: pyrdown(t), x),
        (lambda t: correlate_separable(t, [([1.0, -2.0, 0.5], [0.25, 1.0, 0.0])], "circular", stride=2), x),
        (rgb_to_grayscale, rgb),
        (bgr_to_grayscale, rgb),
    ):
        assert torch.autograd.gradcheck(fn, (inp,))
        assert torch.autograd.gradgradcheck(fn, (inp,))


@pytest.fixture
def split_small_work(monkeypatch):
    """Split work between threads from a few thousand values up, so that small inputs
    exercise the pool (by default only outputs of 2^20 values and more are split)."""
    monkeypatch.setattr(_native, "_PARALLEL_MIN_VALUES", 1 << 12)


@needs_native
def test_two_threads_give_the_one_thread_result(split_small_work):
    before = torch.get_num_threads()
    many = torch.rand(6, 1, 256, 256)  # split by planes
    one = torch.rand(1, 1, 640, 512)  # split by rows
    rgb = torch.rand(3, 3, 256, 256)
    calls = [
        (sobel, many),
        (sobel, one),
        (lambda t: gaussian_blur2d(t, 5, 1.0), many),
        (lambda t: gaussian_blur2d(t, 5, 1.0), one),
        (pyrdown, one),
        (rgb_to_grayscale, rgb),
    ]
    try:
        torch.set_num_threads(1)
        single = [fn(x) for fn, x in calls]
        torch.set_num_threads(2)
        double = [fn(x) for fn, x in calls]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(single, double):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_results_of_32_mib_and_more_are_ordinary_tensors():
    x = torch.rand(128, 1, 256, 256)  # 32 MiB of float32
    native, reference = _both(sobel, x)
    torch.testing.assert_close(native, reference)
    for make in (lambda: sobel(x), lambda: gaussian_blur2d(x, 3, 1.0), lambda: rgb_to_grayscale(x.expand(-1, 3, -1, -1))):
        out = make()
        assert out.untyped_storage().resizable()
        out.resize_(2 * out.numel())  # larger
        out.resize_(0)  # PyTorch's idiom for dropping the memory
        assert out.numel() == 0
    out, larger = sobel(x), torch.rand(129, 1, 256, 256)
    with pytest.warns(UserWarning, match="resized"):  # PyTorch deprecates it, but it must work
        torch.abs(larger, out=out)  # out= of another shape grows the storage
    assert torch.equal(out, larger)


def _fork_child(queue) -> None:
    # PyTorch's own OpenMP threads are not fork-safe (libgomp): everything but the fused
    # kernel runs on one thread, so a hang can only come from this module's pool.
    torch.set_num_threads(1)
    x = torch.ones(6, 1, 256, 256)
    torch.set_num_threads(2)
    out = sobel(x)
    torch.set_num_threads(1)
    queue.put(float(out.sum()))


@needs_native
@pytest.mark.skipif(sys.platform != "linux", reason="fork is a Linux start method here")
def test_a_forked_child_can_use_the_thread_pool(split_small_work):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        sobel(torch.rand(6, 1, 256, 256))  # the parent's pool now exists
    finally:
        torch.set_num_threads(before)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_fork_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the child hung or failed on the inherited thread pool"
    assert queue.get(timeout=5) == pytest.approx(6 * 256 * 256 * 1e-3, rel=1e-5)  # sqrt(eps) per pixel


@pytest.mark.skipif(sys.platform != "linux", reason="fork is a Linux start method here")
def test_a_forked_child_never_uses_the_openmp_team(monkeypatch):
    """A child made by a plain ``os.fork`` (a server's workers) runs the sampler on the pool,
    even when the parent never looked the team up (the child's OpenMP runtime would hang)."""
    monkeypatch.delitem(_native._state, "gomp_pid", raising=False)
    monkeypatch.delitem(_native._state, "gomp", raising=False)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, without pytest's teardown
        try:
            os.write(write, b"pool" if _native._gomp_parallel() is None else b"team")
        finally:
            os._exit(0)
    os.close(write)
    try:
        said = os.read(read, 8)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert said == b"pool"


@pytest.mark.skipif(sys.platform != "linux" or not torch.backends.openmp.is_available(), reason="PyTorch without OpenMP")
def test_the_openmp_team_is_the_one_pytorch_links():
    """``GOMP_parallel`` as ``libtorch_cpu`` resolves it: the runtime PyTorch's own parallel
    ops run on, never another one loaded beside it."""
    import ctypes

    found = _native._find_gomp_parallel()
    lib = ctypes.CDLL(str(Path(torch.__file__).resolve().parent / "lib" / "libtorch_cpu.so"))
    assert found is not None and found == ctypes.cast(lib.GOMP_parallel, ctypes.c_void_p).value


@needs_native
def test_growing_the_pool_never_stops_a_pool_in_use(monkeypatch, split_small_work):
    """Thread A takes the pool and, before it submits, thread B asks for a larger one:
    A's pool must still run A's work (it used to be shut down under A)."""
    taken, grown = threading.Event(), threading.Event()
    real_executor = _native._executor

    def executor_then_wait(workers):
        pool = real_executor(workers)
        if threading.current_thread().name == "A":
            taken.set()
            assert grown.wait(30)
        return pool

    monkeypatch.setattr(_native, "_executor", executor_then_wait)
    monkeypatch.setattr(_native, "_pool", None)
    x = torch.rand(4, 1, 256, 256)  # 4 planes: split between the threads
    with _native.disabled():
        expected = sobel(x)
    results: dict[str, object] = {}

    def a() -> None:
        torch.set_num_threads(2)
        try:
            results["A"] = sobel(x)
        except BaseException as ex:  # noqa: BLE001  (reported by the assertion below)
            results["A"] = ex

    before = torch.get_num_threads()
    thread = threading.Thread(target=a, name="A")
    try:
        torch.set_num_threads(2)
        thread.start()
        assert taken.wait(30), "thread A never reached the pool"
        first = _native._pool
        assert real_executor(8) is not first  # B: a larger pool replaces A's
        grown.set()
        thread.join(60)
    finally:
        grown.set()
        torch.set_num_threads(before)
    assert not thread.is_alive()
    assert isinstance(results["A"], torch.Tensor), results["A"]
    _assert_same(results["A"], expected)


# ------------------------------------------------------------------ PyTorch's machinery
def _ops_under_test():
    """(name, function, first input, second input): the public functions over each op."""
    g = torch.Generator().manual_seed(3)
    gray_in = (torch.rand(2, 3, 12, 13, generator=g), torch.rand(2, 3, 12, 13, generator=g))
    img_in = (torch.rand(2, 1, 12, 13, generator=g), torch.rand(2, 1, 12, 13, generator=g))
    return [
        ("sobel", lambda t: sobel(t), *img_in),
        ("grayscale+sobel", lambda t: sobel(rgb_to_grayscale(t)), *gray_in),
        ("bgr", bgr_to_grayscale, *gray_in),
        ("blur", lambda t: gaussian_blur2d(t, 5, 1.5), *img_in),
        ("pyrdown", lambda t: pyrdown(t), *img_in),
        ("gradient", lambda t: spatial_gradient(t), *img_in),
    ]


OPS = _ops_under_test()
IDS = [name for name, *_ in OPS]
# PyTorch registers its own forward-AD decompositions through torch.jit.script on the
# first make_dual, and deprecates torch.jit itself; the warnings are PyTorch's, not ours.
JIT_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning",
    "ignore:`torch.jit.trace` is deprecated:DeprecationWarning",
)


def test_the_ops_are_registered_completely():
    """torch.library's own checks: schema, fake implementation, autograd registration,
    and the ops under AOTAutograd with dynamic shapes."""
    x = torch.rand(2, 2, 9, 10, dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    ty, tx = [1.0, 2.0, 1.0, -1.0, 0.0, 1.0], [-1.0, 0.0, 1.0, 1.0, 2.0, 1.0]
    g = torch.rand(2, 2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    for op, args in (
        (torch.ops.gradcv.separable_correlate.default, (x, ty, tx, 2, [1, 1, 1, 1], 2, "reflect")),
        (torch.ops.gradcv.separable_correlate_adjoint.default, (g, ty, tx, 2, [1, 1, 1, 1], 2, "reflect", 9, 10)),
        (torch.ops.gradcv.sobel_magnitude.default, (x, "replicate", 1.0 / 64, 1e-6)),
        (torch.ops.gradcv.grayscale.default, (rgb, [0.299, 0.587, 0.114], True)),
    ):
        torch.library.opcheck(op, args)


def test_the_ops_check_their_arguments():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="taps_y, taps_x"):
        torch.ops.gradcv.separable_correlate(x, [1.0, 2.0], [1.0], 2, [0, 0, 0, 0], 1, "reflect")
    with pytest.raises(ValueError, match="border_type"):
        torch.ops.gradcv.separable_correlate(x, [1.0], [1.0], 1, [0, 0, 0, 0], 1, "wrap")
    with pytest.raises(ValueError, match="pad"):
        torch.ops.gradcv.separable_correlate(x, [1.0], [1.0], 1, [0, -1, 0, 0], 1, "reflect")
    with pytest.raises(ValueError, match="g: expected"):
        torch.ops.gradcv.separable_correlate_adjoint(x, [1.0], [1.0], 1, [0, 0, 0, 0], 1, "reflect", 9, 8)
    with pytest.raises(ValueError, match="border_type"):
        torch.ops.gradcv.sobel_magnitude(x, "wrap", 1.0, 0.0)
    with pytest.raises(ValueError, match="image"):
        torch.ops.gradcv.grayscale(x, [1.0, 0.0, 0.0], False)


@pytest.mark.parametrize("name, fn, first, second", OPS, ids=IDS)
def test_fake_tensors_give_shapes_without_touching_data(name, fn, first, second):
    expected = fn(first)
    with FakeTensorMode() as mode:
        out = fn(mode.from_tensor(first))
    assert out.shape == expected.shape and out.dtype == expected.dtype


@pytest.mark.parametrize("tracing_mode", ["real", "fake"])
@pytest.mark.parametrize("name, fn, first, second", OPS, ids=IDS)
def test_make_fx_records_the_op_not_its_result(name, fn, first, second, tracing_mode):
    graph = make_fx(fn, tracing_mode=tracing_mode)(first)
    assert "gradcv" in graph.code
    torch.testing.assert_close(graph(second), fn(second))


@JIT_DEPRECATED
# The input checks compare shapes, which the tracer records as constants and warns about;
# they hold for any input of the traced shape, which is all a trace is for.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name, fn, first, second", OPS, ids=IDS)
def test_jit_trace_runs_the_op_on_another_input(name, fn, first, second):
    traced = torch.jit.trace(fn, (first,), check_trace=False)
    assert "gradcv::" in str(traced.graph)
    torch.testing.assert_close(traced(second), fn(second))


@pytest.mark.slow
@ignore_compile_warnings
@pytest.mark.parametrize("name, fn, first, second", OPS, ids=IDS)
def test_compile_and_export_run_the_op(name, fn, first, second):
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(second), fn(second))

    class Module(torch.nn.Module):
        def forward(self, t):
            return fn(t)

    # torch.export records the PyTorch code instead (ATen ops only: the program runs
    # without gradcv and converts to ONNX; tests/production/test_export.py)
    exported = torch.export.export(Module(), (first,))
    assert "gradcv" not in str(exported.graph)
    torch.testing.assert_close(exported.module()(second), fn(second))


@pytest.mark.slow
@ignore_compile_warnings
def test_compile_differentiates_through_the_ops():
    x = torch.rand(2, 3, 12, 13, requires_grad=True)
    loss = lambda t: (sobel(rgb_to_grayscale(t)) + gaussian_blur2d(t, 3, 1.0).mean(1, keepdim=True)).square().sum()  # noqa: E731
    (eager,) = torch.autograd.grad(loss(x), x)
    (compiled,) = torch.autograd.grad(torch.compile(loss, fullgraph=True)(x), x)
    torch.testing.assert_close(compiled, eager)


@pytest.mark.parametrize("name, fn, first, second", OPS, ids=IDS)
def test_vmap_over_any_dimension_is_the_loop(name, fn, first, second):
    stacked = torch.stack([first, second], dim=1)  # vmapped over dimension 1
    out = torch.func.vmap(fn, in_dims=1)(stacked)
    torch.testing.assert_close(out, torch.stack([fn(first), fn(second)]))
    # the op's batching rule ran (one call for the batch), not the PyTorch code
    assert "gradcv" in make_fx(torch.func.vmap(fn, in_dims=1))(stacked).code


def _reference_jvp(fn, x, t):
    """J(x) t through reverse mode (the double-vjp trick), independent of forward AD."""
    return torch.autograd.functional.jvp(fn, (x,), (t,))[1]


@JIT_DEPRECATED
@pytest.mark.parametrize("name, fn, first, second", OPS, ids=IDS)
def test_forward_mode_ad_carries_the_tangent(name, fn, first, second):
    x, t = first.double(), second.double()
    expected = _reference_jvp(fn, x, t)
    assert expected.abs().max() > 0
    with fwAD.dual_level():
        out = fn(fwAD.make_dual(x, t))
        primal, tangent = fwAD.unpack_dual(out)
    assert tangent is not None, "the tangent was dropped"
    torch.testing.assert_close(primal, fn(x))
    torch.testing.assert_close(tangent, expected)
    value, tangent = torch.func.jvp(fn, (x,), (t,))
    torch.testing.assert_close(value, fn(x))
    torch.testing.assert_close(tangent, expected)


@JIT_DEPRECATED
@pytest.mark.parametrize("name, fn, first, second", OPS, ids=IDS)
def test_functorch_grad_and_jacobians(name, fn, first, second):
    x = first[:1, ..., :5, :6].double()
    (expected,) = torch.autograd.grad(fn(x.requires_grad_()).square().sum(), x)
    x = x.detach()
    torch.testing.assert_close(torch.func.grad(lambda t: fn(t).square().sum())(x), expected)
    torch.testing.assert_close(torch.func.jacfwd(fn)(x), torch.func.jacrev(fn)(x))
    torch.testing.assert_close(torch.func.jacrev(fn)(x), torch.autograd.functional.jacobian(fn, x))


# ------------------------------------------------------------------ loading
_PROBE = textwrap.dedent(
    """
    import torch
    from gradcv.core_ops import _native
    from gradcv.core_ops.filters import sobel
    x = torch.rand(1, 1, 9, 11)
    with _native.disabled():
        reference = sobel(x)
    print(_native.status())
    print(bool(torch.equal(sobel(x), reference) or torch.allclose(sobel(x), reference, rtol=1e-6, atol=1e-7)))
    """
)


def _probe(env: dict[str, str]) -> list[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "GRADCV_NATIVE"}
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env={**inherited, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_the_environment_switch_turns_the_kernels_off():
    status, same = _probe({"GRADCV_NATIVE": "0"})
    assert status == "disabled by GRADCV_NATIVE"
    assert same == "True"


def test_disabled_forces_the_pytorch_path():
    with _native.disabled():
        assert _native.library() is None
        assert _native.status() == "disabled by core_ops._native.disabled()"
        assert rgb_to_grayscale(torch.rand(1, 3, 4, 4)).shape == (1, 1, 4, 4)


def _built_library() -> Path:
    here = Path(_native.__file__).parent
    return next(here / f"_kernels{s}" for s in EXTENSION_SUFFIXES if (here / f"_kernels{s}").is_file())


def _library_dir(tmp_path: Path, mode: int = 0o755) -> Path:
    directory = tmp_path / "pkg"
    directory.mkdir()
    directory.chmod(mode)
    return directory


@pytest.fixture
def native_on(monkeypatch):
    monkeypatch.delenv("GRADCV_NATIVE", raising=False)


def test_an_install_without_the_library_says_not_built(tmp_path, native_on):
    lib, why = _native._load(_library_dir(tmp_path))
    assert lib is None and why.startswith("not built")


def test_a_corrupt_library_is_refused_not_fatal(tmp_path, native_on):
    directory = _library_dir(tmp_path)
    (directory / f"_kernels{EXTENSION_SUFFIXES[0]}").write_bytes(b"\x7fELF but not really")
    lib, why = _native._load(directory)
    assert lib is None and why.startswith("not loaded")


@needs_native
def test_the_built_library_loads_from_a_private_directory(tmp_path, native_on):
    directory = _library_dir(tmp_path)
    shutil.copy(_built_library(), directory / _built_library().name)
    lib, why = _native._load(directory)
    assert lib is not None and why.startswith("loaded")


@needs_native
def test_a_library_others_can_replace_is_not_loaded(tmp_path, native_on):
    directory = _library_dir(tmp_path, 0o777)  # a shared temporary directory, say
    target = directory / _built_library().name
    shutil.copy(_built_library(), target)
    lib, why = _native._load(directory)
    assert lib is None and "writable by other users" in why
    directory.chmod(0o755)
    target.chmod(0o775)
    lib, why = _native._load(directory)
    assert lib is None and "writable by other users" in why


@needs_native
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_a_library_another_user_owns_is_not_loaded(tmp_path, native_on):
    directory = _library_dir(tmp_path)
    target = directory / _built_library().name
    shutil.copy(_built_library(), target)
    os.chown(target, 65534, 65534)
    lib, why = _native._load(directory)
    assert lib is None and "belongs to uid 65534" in why


@needs_native
def test_a_library_of_another_version_is_not_called(tmp_path, native_on, monkeypatch):
    monkeypatch.setattr(_native, "VERSION", _native.VERSION + 1)
    lib, why = _native._load(Path(_native.__file__).parent)
    assert lib is None and "rebuild" in why
