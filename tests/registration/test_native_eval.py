"""The second-order solver's fused C evaluation (registration/_native_eval.py) against its
PyTorch path in float64: the same loss and normal equations to float32 rounding on real
photographs, every loss and photometric model, and the same registrations."""

from __future__ import annotations

import pytest
import torch

from gradcv.core_ops import _native
from gradcv.optim import PyramidLevel
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.data import corner_error, make_pairs
from gradcv.registration.objective import LevelProblem
from gradcv.registration.sampling import LevelGrid, frame_corners
from gradcv.registration.second_order import _frame_to_level, _Linearisation, _Moments
from gradcv.registration.solver import register_homography
from tests.helpers import to_tensor

pytestmark = pytest.mark.skipif(
    _native.registration_library() is None, reason=f"native registration library: {_native.registration_status()}"
)


def _linearise(src: torch.Tensor, dst: torch.Tensor, G: torch.Tensor, config: RegistrationConfig, level: int = 0):
    """``(used the fused path, (loss, A, b))`` of the level ``level`` of a pyramid whose
    full resolution is ``2**level`` times ``src``'s size."""
    n, C, h, w = src.shape
    full = (h * 2**level, w * 2**level)
    grid = LevelGrid(level, full, (h, w), src.dtype, src.device)
    problem = LevelProblem(grid, src, dst, frame_corners(*full, src.dtype, src.device), None,
                           PyramidLevel(0, level, level + 1, (h, w)), "homography")
    with torch.no_grad():
        lin = _Linearisation(problem, config, _Moments.build(problem, _frame_to_level(problem, src.dtype), src.dtype))
        return lin.native, lin(G)


def _both(src, dst, G, config, level=0):
    """The fused evaluation of float32 images and the PyTorch path's of the same images in
    float64: the reference without float32 rounding of its own (the PyTorch path in float32
    sums in another order, and was measured 1.2e-4 of the largest entry off the float64 result
    on one case where the fused one was 1e-5 off)."""
    fused, got = _linearise(src, dst, G, config, level)
    with _native.disabled():
        plain, expected = _linearise(src.double(), dst.double(), G.double(), config, level)
    assert fused and not plain
    return got, expected


def _close(got: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Equal to ``rtol`` of the largest entry of each pair (float32 rounding of sums over
    thousands of pixels)."""
    scale = expected.flatten(1).abs().amax(1).clamp_min(1e-30).view(-1, *[1] * (expected.ndim - 1))
    assert torch.isfinite(got).all()
    assert ((got - expected).abs() / scale).max() <= rtol


@pytest.fixture(scope="module")
def crops(photos):
    """Two odd-sized RGB crops of a photograph, the destination brighter, with more contrast."""
    image = to_tensor(photos[3])  # 257 x 233
    src = image[..., 40:77, 60:113].contiguous()
    dst = (image[..., 43:80, 58:111] * 1.15 - 0.05).contiguous()
    return src, dst


def _warps(n: int) -> torch.Tensor:
    """Identity, a small shift, a perspective warp that leaves the image, and a degenerate
    one (the plane at infinity crosses the image: den <= 1e-6 on part of it)."""
    gen = torch.Generator().manual_seed(0)
    G = torch.eye(3).repeat(4, 1, 1)
    G[1, 0, 2], G[1, 1, 0] = 0.031, 0.017
    G[2] = torch.tensor([[1.1, 0.05, 0.2], [-0.03, 0.95, -0.1], [0.1, -0.05, 1.0]]) + 1e-3 * torch.randn(3, 3, generator=gen)
    G[3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.7, 0.3, 0.1]])
    return G[:n]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("loss", ["l2", "l1", "charbonnier"])
@pytest.mark.parametrize("photometric", ["none", "gain_bias", "tone", "exposure"])
def test_fused_equals_torch(crops, channels, loss, photometric):
    src, dst = (x[:, :channels].expand(4, -1, -1, -1).contiguous() for x in crops)
    G = _warps(4)
    (loss1, A1, b1), (loss2, A2, b2) = _both(src, dst, G, RegistrationConfig(loss=loss, photometric=photometric))
    _close(loss1[:, None], loss2[:, None], 1e-5)
    _close(A1, A2, 1e-4)
    _close(b1, b2, 1e-4)


def test_coarse_level_and_inside_mask(crops):
    """A coarse level (its own frame scale) with warps that leave the image on every side
    (a shift right, a shift up, a magnification in x and one in y): the inside mask's pixel
    count (the loss's denominator) is the PyTorch path's."""
    src, dst = (x[:, :1].expand(4, -1, -1, -1).contiguous() for x in crops)
    G = torch.eye(3).repeat(4, 1, 1)
    G[0, 0, 2], G[1, 1, 2], G[2, 0, 0], G[3, 1, 1] = 0.4, -0.35, 1.3, 1.3
    (loss1, A1, b1), (loss2, A2, b2) = _both(src, dst, G, RegistrationConfig(loss="l2", photometric="gain_bias"), level=2)
    _close(loss1[:, None], loss2[:, None], 1e-5)
    _close(A1, A2, 1e-4)
    _close(b1, b2, 1e-4)


@pytest.mark.parametrize("size", [(1, 5), (3, 1), (2, 3), (5, 4)])
@pytest.mark.parametrize("photometric", ["none", "gain_bias"])
def test_tiny_planes_two_channels_non_contiguous(crops, size, photometric):
    """Planes of 1-5 pixels a side (the replicated borders of the Laplacian and the ESM
    gradient at their narrowest), two channels, a non-contiguous source: the PyTorch path's
    numbers."""
    h, w = size
    src = crops[0][:, :2, 10 : 10 + w, 20 : 20 + h].expand(2, -1, -1, -1).transpose(-1, -2)  # (2, 2, h, w), strided
    dst = crops[1][:, :2, 11 : 11 + h, 19 : 19 + w].expand(2, -1, -1, -1).contiguous()
    assert not src.is_contiguous()
    G = torch.eye(3).repeat(2, 1, 1)
    G[1, 0, 2], G[1, 1, 0] = 0.013, 0.021
    (loss1, A1, b1), (loss2, A2, b2) = _both(src, dst, G, RegistrationConfig(loss="l2", photometric=photometric))
    _close(loss1[:, None], loss2[:, None], 1e-4)
    _close(A1, A2, 1e-4)
    _close(b1, b2, 1e-4)


def test_which_path_runs(crops):
    """The fused path only where it gives the PyTorch path's numbers: float32, no masks,
    no autograd (not differentiable, grad mode off); float64 images, masks, a
    differentiable solve or grad mode on take the PyTorch code."""
    src, dst = (x[:, :1].contiguous() for x in crops)
    n, C, h, w = src.shape

    def native(images=(src, dst), masks=None, grad=False, **config):
        grid = LevelGrid(0, (h, w), (h, w), images[0].dtype, images[0].device)
        problem = LevelProblem(grid, *images, frame_corners(h, w, images[0].dtype, images[0].device), masks,
                               PyramidLevel(0, 0, 1, (h, w)), "homography")
        with torch.set_grad_enabled(grad):
            moments = _Moments.build(problem, _frame_to_level(problem, images[0].dtype), images[0].dtype)
            return _Linearisation(problem, RegistrationConfig(**config), moments).native

    assert native()
    assert not native(images=(src.double(), dst.double()))
    assert not native(masks=(torch.ones_like(src), torch.ones_like(dst)))
    assert not native(differentiable=True)
    assert not native(grad=True)


def test_the_op_is_registered_completely(crops):
    """``torch.library.opcheck``: schema, fake tensors, and the same results through the
    dispatcher's paths."""
    src, dst = (x[:, :1].expand(2, -1, -1, -1).contiguous() for x in crops)
    n, C, h, w = src.shape
    grad = torch.randn(n, C, 2, h, w)
    D = torch.zeros(n, 9, dtype=torch.float64)
    D[1, 2] = 0.02
    xs, ys = torch.linspace(-1, 1, w, dtype=torch.float64), torch.linspace(-0.7, 0.7, h, dtype=torch.float64)
    X, Y = xs.float() ** torch.arange(1, 5)[:, None], ys.float()[:, None] ** torch.arange(5)
    torch.library.opcheck(torch.ops.gradcv.linearise_homography, (src, dst, grad, D, xs, ys, w / 2.0, h / 2.0, 4, 2, 1e-3, X, Y),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_the_op_checks_its_arguments(crops):
    """What the kernel would read wrongly or past its end is refused with a typed error
    naming the argument."""
    from gradcv.core_ops.errors import ArgumentValueError, DTypeError, ShapeError

    src, dst = (x[:, :1].contiguous() for x in crops)
    n, C, h, w = src.shape
    ok = dict(src=src, dst=dst, grad=torch.zeros(n, C, 2, h, w), D=torch.zeros(n, 9, dtype=torch.float64),
              xs=torch.zeros(w, dtype=torch.float64), ys=torch.zeros(h, dtype=torch.float64), scale_x=1.0, scale_y=1.0,
              terms=2, loss=0, eps=1e-3, X=torch.zeros(4, w), Y=torch.zeros(h, 5))
    op = torch.ops.gradcv.linearise_homography
    op(**ok)
    for change, error, name in [
        (dict(dst=dst[..., :-1]), ShapeError, "dst"),
        (dict(grad=torch.zeros(n, C, h, w)), ShapeError, "grad"),
        (dict(xs=torch.zeros(w - 1, dtype=torch.float64)), ShapeError, "xs"),
        (dict(X=torch.zeros(4, w, dtype=torch.float64)), DTypeError, "X"),
        (dict(D=torch.zeros(n, 9)), DTypeError, "D"),
        (dict(terms=1), ArgumentValueError, "terms"),
        (dict(terms=5), ArgumentValueError, "terms"),
        (dict(loss=3), ArgumentValueError, "loss"),
        (dict(src=src[:, :0], dst=dst[:, :0], grad=torch.zeros(n, 0, 2, h, w)), ShapeError, "src"),
    ]:
        with pytest.raises(error, match=name):
            op(**{**ok, **change})


@pytest.mark.parametrize("loss", ["l2", "charbonnier"])
def test_identity_gives_zero_residual(crops, loss):
    """src against itself at the identity: zero loss and zero right-hand side, exactly."""
    src = crops[0].expand(2, -1, -1, -1).contiguous()
    fused, (value, A, b) = _linearise(src, src.clone(), torch.eye(3).repeat(2, 1, 1), RegistrationConfig(loss=loss))
    assert fused
    assert torch.equal(value, torch.zeros(2)) and torch.equal(b, torch.zeros_like(b))
    assert (A.diagonal(dim1=1, dim2=2) > 0).all()


def test_register_homography_agrees(photos):
    """Whole registrations of DeTone pairs with and without the library: the same corners
    to a small fraction of a pixel."""
    src, dst, H = make_pairs([to_tensor(p)[0] for p in photos[:2]], 2, protocol="detone", seed=7)
    fused = register_homography(src, dst)
    with _native.disabled():
        plain = register_homography(src, dst)
    e_fused, e_plain = corner_error(fused.homography, H, src.shape[-2:]), corner_error(plain.homography, H, src.shape[-2:])
    assert (e_fused - e_plain).abs().max() < 1e-3
    assert (e_fused < 1.0).all()


def test_library_checks_and_switches(monkeypatch):
    """The second library is loaded under the filters' checks: a build of another version
    is refused, GRADCV_NATIVE=0 and ``disabled()`` turn it off."""
    from pathlib import Path

    here = Path(_native.__file__).parent
    lib, why = _native._load(here, "_registration", "gradcv_registration_version", _native.REGISTRATION_VERSION + 1)
    assert lib is None and "rebuild" in why
    lib, why = _native._load(here, "_registration", "gradcv_registration_version", _native.REGISTRATION_VERSION)
    assert lib is not None and lib.gradcv_registration_version() == _native.REGISTRATION_VERSION
    monkeypatch.setenv("GRADCV_NATIVE", "0")
    assert _native._load(here, "_registration", "gradcv_registration_version", _native.REGISTRATION_VERSION)[0] is None
    with _native.disabled():
        assert _native.registration_library() is None and "disabled" in _native.registration_status()


def test_the_second_library_is_refused_where_others_can_replace_it(tmp_path, monkeypatch):
    """The filters' trust rules hold for the registration's library too (a directory others
    may write is where they could plant one), and a build of the right version that lacks an
    entry point is refused when loaded, not a crash at its first call."""
    import shutil
    from importlib.machinery import EXTENSION_SUFFIXES
    from pathlib import Path

    monkeypatch.delenv("GRADCV_NATIVE", raising=False)
    here = Path(_native.__file__).parent
    built = next(here / f"_registration{x}" for x in EXTENSION_SUFFIXES if (here / f"_registration{x}").is_file())
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    shutil.copy(built, shared / built.name)
    lib, why = _native._load(shared, "_registration", "gradcv_registration_version", _native.REGISTRATION_VERSION)
    assert lib is None and "writable by other users" in why
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o755)
    kernels = next(here / f"_kernels{x}" for x in EXTENSION_SUFFIXES if (here / f"_kernels{x}").is_file())
    shutil.copy(kernels, private / built.name)  # the filters' library under the registration's name
    lib, why = _native._load(private, "_registration", "gradcv_native_version", _native.VERSION)
    assert lib is None and "linearise" in why


@pytest.fixture(scope="module")
def large(photos):
    """One grayscale pair of 261 x 263 pixels: planes of several row blocks (registration.c's
    block_rows: 63 rows, the last block 9), the destination brighter, shifted."""
    image = to_tensor(photos[0])[:, :1]  # 600 x 512
    src = image[..., 100:361, 90:353].contiguous()
    dst = (image[..., 103:364, 88:351] * 1.1 - 0.03).contiguous()
    return src, dst


@pytest.mark.parametrize("photometric", ["none", "exposure"])
def test_a_pair_of_several_blocks_equals_torch(large, photometric):
    """A pair whose sums are made block by block and the blocks' added (at 2 threads, the
    blocks shared by the threads): the PyTorch path's numbers."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        (loss1, A1, b1), (loss2, A2, b2) = _both(*large, _warps(3)[2:3], RegistrationConfig(photometric=photometric))
    finally:
        torch.set_num_threads(before)
    _close(loss1[:, None], loss2[:, None], 1e-5)
    _close(A1, A2, 1e-4)
    _close(b1, b2, 1e-4)


def _at_threads(threads: int, *args) -> tuple:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return _linearise(*args)[1]
    finally:
        torch.set_num_threads(before)


def _same(one: tuple, two: tuple) -> None:
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_threads_give_the_same_bits(crops, large):
    """Two threads give one thread's numbers exactly (the OpenMP team's path where PyTorch
    has one): small pairs are shared whole; a single pair of several row blocks has its
    blocks shared (the sums are per block, added in block order at any thread count), and
    gives the numbers it has in a batch of two, whose pairs are shared whole."""
    src, dst = (x.expand(8, -1, -1, -1).contiguous() for x in crops)
    G = _warps(4).repeat(2, 1, 1)
    config = RegistrationConfig()
    _same(_at_threads(1, src, dst, G, config), _at_threads(2, src, dst, G, config))
    src, dst = large
    # the pair really is cut in blocks (else this would compare two one-thread runs)
    assert _native.registration_library().linearise_workspace_bytes(1, 1, *src.shape[-2:], 4) > 0
    G = _warps(3)[1:]
    config = RegistrationConfig(photometric="exposure")
    two = _at_threads(2, src, dst, G[:1], config)  # first: its planes not the same call's leftovers
    one = _at_threads(1, src, dst, G[:1], config)
    _same(one, two)
    both = _at_threads(2, src.expand(2, -1, -1, -1).contiguous(), dst.expand(2, -1, -1, -1).contiguous(), G, config)
    _same(one, (x[:1] for x in both))


def test_threads_of_the_pool_give_the_same_bits(crops, large, monkeypatch):
    """Without PyTorch's OpenMP team (a forked child, a build without OpenMP) the pairs are
    shared whole by the module's pool (a single pair runs on one thread there, its blocks in
    turn): the same bits again, and the team's for the pair of several blocks."""
    src, dst = (x.expand(8, -1, -1, -1).contiguous() for x in crops)
    G = _warps(4).repeat(2, 1, 1)
    config = RegistrationConfig(loss="l1", photometric="tone")
    large_config = RegistrationConfig(loss="l2", photometric="exposure")
    with monkeypatch.context() as patch:
        patch.setattr(_native, "_gomp_parallel", lambda: None)
        two = _at_threads(2, src, dst, G, config)
        large_two = _at_threads(2, *large, _warps(3)[2:3], large_config)
    _same(_at_threads(1, src, dst, G, config), two)
    _same(_at_threads(1, *large, _warps(3)[2:3], large_config), large_two)
    _same(_at_threads(2, *large, _warps(3)[2:3], large_config), large_two)  # the team, its blocks shared
