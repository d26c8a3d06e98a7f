"""The fused CPU kernels (core_ops/_native): the same numbers as the PyTorch code they
replace, on every border, stride, size and dtype; threads, builds and fallbacks.

The OpenCV parity tests in test_filters.py, test_pyramid.py and test_color.py run the
native path whenever it loads (it is the default); here each native result is held
against the PyTorch path of the same call, so both paths meet those references.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gradcv.core_ops import _native
from gradcv.core_ops.color import bgr_to_grayscale, rgb_to_grayscale
from gradcv.core_ops.filters import correlate_separable, gaussian_blur2d, sobel
from gradcv.core_ops.pyramid import pyrdown

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
    _assert_same(rgb_to_grayscale(channels_last), rgb_to_grayscale(x))
    transposed = x.transpose(-1, -2)  # copied to contiguous planes, then fused
    native, reference = _both(sobel, transposed)
    torch.testing.assert_close(native, reference)
    assert _native.kernel("sobel_magnitude", x.half()) is None
    assert _native.kernel("sobel_magnitude", x.to(torch.bfloat16)) is None


@needs_native
def test_empty_batches():
    for fn in (sobel, lambda t: gaussian_blur2d(t, 3, 1.0), pyrdown):
        assert fn(torch.rand(0, 1, 8, 8)).shape[0] == 0
    assert rgb_to_grayscale(torch.rand(0, 3, 8, 8)).shape == (0, 1, 8, 8)


@needs_native
def test_gradients_still_flow_through_the_pytorch_path():
    x = torch.rand(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sobel(t), (x,))
    assert torch.autograd.gradcheck(lambda t: gaussian_blur2d(t, 3, 1.0), (x,))
    rgb = torch.rand(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rgb_to_grayscale, (rgb,))


@needs_native
def test_two_threads_give_the_one_thread_result():
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


@needs_native
def test_results_of_32_mib_and_more_are_right():
    x = torch.rand(128, 1, 256, 256)  # 32 MiB: advised onto huge pages
    native, reference = _both(sobel, x)
    torch.testing.assert_close(native, reference)


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
def test_a_forked_child_can_use_the_thread_pool():
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


# ------------------------------------------------------------------ builds and fallbacks
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
    inherited = {k: v for k, v in os.environ.items() if k not in ("GRADCV_NATIVE", "CC", "GRADCV_CACHE_DIR")}
    full = {**inherited, **env}
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_the_environment_switch_turns_the_kernels_off(tmp_path):
    status, same = _probe({"GRADCV_NATIVE": "0", "GRADCV_CACHE_DIR": str(tmp_path)})
    assert status == "disabled by GRADCV_NATIVE"
    assert same == "True"
    assert not list(tmp_path.iterdir())  # nothing was built


def test_a_failing_compiler_falls_back_to_pytorch(tmp_path):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    broken.chmod(0o755)
    status, same = _probe({"CC": str(broken), "GRADCV_CACHE_DIR": str(tmp_path / "cache")})
    assert status.startswith("build failed") and "cannot compile" in status
    assert same == "True"
    assert not list((tmp_path / "cache").glob("*.so"))  # no half-written library left


def test_no_compiler_falls_back_to_pytorch(tmp_path):
    status, same = _probe({"CC": "no-such-compiler", "PATH": str(tmp_path), "GRADCV_CACHE_DIR": str(tmp_path)})
    assert status.startswith("no C compiler")
    assert same == "True"


@needs_native
def test_an_unwritable_cache_builds_in_the_temporary_directory(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the cache cannot be made under a file, even by root
    (tmp_path / "tmp").mkdir()
    status, same = _probe({"GRADCV_CACHE_DIR": str(blocker / "gradcv"), "TMPDIR": str(tmp_path / "tmp")})
    assert status.startswith(f"loaded {tmp_path / 'tmp'}") and same == "True"


@needs_native
def test_a_build_is_cached_and_reused(tmp_path):
    env = {"GRADCV_CACHE_DIR": str(tmp_path)}
    status, same = _probe(env)
    assert status.startswith("loaded") and same == "True"
    (library,) = tmp_path.glob("kernels-*.so")
    built = library.stat().st_mtime_ns
    status, _ = _probe(env)
    assert status == f"loaded {library}"
    assert library.stat().st_mtime_ns == built


# ------------------------------------------------------------------ reused large results
_BIG = (128, 1, 256, 256)  # 32 MiB of float32: the smallest pooled result


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A filter whose result comes from the pool on either path (native or PyTorch)."""
    return gaussian_blur2d(x, 3, 1.0)


@pytest.fixture
def empty_pool():
    _native.empty_cache()
    yield
    _native.empty_cache()


def test_a_released_large_result_is_reused(empty_pool):
    from gradcv.core_ops._native import _memory

    x = torch.rand(_BIG)
    first = _blur(x)
    address = first.data_ptr()
    held = _blur(x)  # the first is still alive: another block
    assert held.data_ptr() != address
    expected = first.clone()
    del first
    assert _memory.idle_bytes() >= 32 << 20
    again = _blur(x)
    assert again.data_ptr() == address  # no fresh pages, no faults, no zeroing
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    # a view keeps the block: it is not handed out while the view lives
    view = again[3:5]
    del again, held
    fresh = _blur(x)  # takes the block `held` gave back
    assert fresh.data_ptr() != address
    assert view.data_ptr() == address + 3 * 256 * 256 * 4
    assert torch.equal(view, expected[3:5])


def test_the_pool_keeps_no_more_than_its_limit(empty_pool, monkeypatch):
    from gradcv.core_ops._native import _memory

    monkeypatch.setenv("GRADCV_CPU_CACHE_MB", "40")
    x = torch.rand(_BIG)
    a, b = _blur(x), _blur(x)
    del a, b
    assert 32 << 20 <= _memory.idle_bytes() <= 40 << 20
    assert _native.empty_cache() >= 32 << 20
    assert _memory.idle_bytes() == 0
    monkeypatch.setenv("GRADCV_CPU_CACHE_MB", "0")  # off: PyTorch's allocator
    out = _blur(x)
    assert out.untyped_storage().resizable()


def test_small_or_unpoolable_results_come_from_pytorch(empty_pool):
    for out in (_blur(torch.rand(2, 1, 64, 64)), torch.empty(0), _blur(torch.rand(_BIG, dtype=torch.float16))):
        assert out.untyped_storage().resizable()


def _child_writes_a_block(shape) -> None:
    from gradcv.core_ops._native import _memory

    torch.set_num_threads(1)  # PyTorch's OpenMP threads are not fork-safe
    block = _memory.empty(torch.empty(0), shape)
    block.fill_(7.0)
    os._exit(0)


@pytest.mark.skipif(sys.platform != "linux", reason="fork is a Linux start method here")
def test_a_forked_child_does_not_write_into_its_parents_blocks(empty_pool):
    from gradcv.core_ops._native import _memory

    shape = (8 << 20,)  # 32 MiB of float32
    parent = _memory.empty(torch.empty(0), shape)
    parent.fill_(1.0)
    del parent  # idle in the pool, and in the child's copy of the pool
    child = multiprocessing.get_context("fork").Process(target=_child_writes_a_block, args=(shape,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    again = _memory.empty(torch.empty(0), shape)  # the same block, untouched by the child
    assert float(again[0]) == 1.0 and float(again[-1]) == 1.0
