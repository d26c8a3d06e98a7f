"""register_homography with the first-order method (``RegistrationConfig.first_order()``,
any torch.optim / torch_optimizer optimiser): outcomes on small real-photograph problems
(corner error in pixels), the result's convention, batching, per-pair stopping and bad
input. The default (second-order) preset has its own tests in test_default.py."""

from __future__ import annotations

import pytest
import torch

from gradcv.core_ops.geometry import get_perspective_transform, warp_perspective
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.data import corner_error, make_pairs
from gradcv.registration.solver import HomographyRegistration
from gradcv.registration.solver import register_homography as _register_default
from tests.registration._pairs import DEVICES, exact, gray, on, similarity, warped_pair


def register_homography(src, dst, config=None, **kwargs):
    """The solver with the first-order preset unless a config is given."""
    return _register_default(src, dst, config=RegistrationConfig.first_order() if config is None else config, **kwargs)


SIZE = (96, 112)  # non-square on purpose: the frame must stay isotropic


@pytest.fixture(scope="module")
def canvas(photos):
    """A grey 160 x 176 region of Grace Hopper's portrait (face and uniform)."""
    return gray(photos[0])[..., 150:310, 180:356].contiguous()


def _corner_homography(moves: list[list[float]], size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    c = torch.tensor([[[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]]], dtype=torch.float64)
    return get_perspective_transform(c, c + torch.tensor([moves], dtype=torch.float64))[0]


H_SMALL = _corner_homography([[2.0, -1.5], [-1.0, 2.5], [1.5, 1.0], [-2.0, -0.5]], SIZE)


@pytest.fixture(scope="module")
def small_pair(canvas):
    return warped_pair(canvas, H_SMALL, 32, 32, SIZE)


@pytest.fixture(scope="module", params=DEVICES)
def small_result(small_pair, request):
    """The default solve of ``small_pair`` on each device (results on the CPU)."""
    return on(request.param, register_homography, *small_pair)


def test_identity_at_every_level(canvas, device):
    """src == dst: every level returns the identity (pins the pyramid and normalisation:
    a half-pixel shift between levels would show here as a corner error of 0.5 px)."""
    img = canvas[..., :96, :112]
    res = on(device, register_homography, img, img, levels=3, iterations=30)
    eye = torch.eye(3)[None]
    for H in res.homography_per_level:
        assert corner_error(H, eye, SIZE).item() < 1e-3
    assert torch.allclose(res.homography_normalized, eye, atol=1e-6)
    assert bool(res.converged.all())


def test_recovers_small_homography(small_pair, small_result):
    """Default config, corners moved up to 2.5 px on a 96 x 112 crop: < 0.1 px MACE."""
    err = corner_error(small_result.homography, H_SMALL[None], SIZE)
    assert err.item() < 0.1
    assert bool(small_result.converged.all())
    assert small_result.wall_time < 10


def test_result_convention_warp_perspective(small_pair, small_result):
    """warp_perspective(src, result.homography) ≈ dst (cv2's meaning), not its inverse."""
    src, dst = small_pair
    H = small_result.homography
    inside = warp_perspective(torch.ones_like(src), H, SIZE) > 0.999
    good = (warp_perspective(src, H, SIZE) - dst).abs()[inside].mean()
    bad = (warp_perspective(src, torch.linalg.inv(H), SIZE) - dst).abs()[inside].mean()
    assert good < 2e-3
    assert bad > 5 * good
    assert small_result.homography.shape == (1, 3, 3) and small_result.homography[0, 2, 2] == 1


def test_result_bookkeeping(small_result):
    cfg = RegistrationConfig.first_order()
    assert len(small_result.loss_history) == cfg.levels
    assert all(h.shape == (1, cfg.iterations) for h in small_result.loss_history)
    used = small_result.iterations_used
    assert used.shape == (cfg.levels, 1) and bool((used >= 1).all()) and bool((used <= cfg.iterations).all())
    assert small_result.converged.dtype == torch.bool


def test_batch_equals_one_by_one(photos, device):
    """Three independent pairs in one call give what three calls give."""
    src, dst, H = make_pairs([gray(p)[0] for p in photos[:3]], 3, protocol="detone", rho=4, seed=2)
    src, dst = src[..., :96, :96].contiguous(), dst[..., :96, :96].contiguous()
    cfg = RegistrationConfig.first_order(levels=2, iterations=60)
    batched = on(device, register_homography, src, dst, cfg)
    singles = torch.cat([on(device, register_homography, src[i : i + 1], dst[i : i + 1], cfg).homography for i in range(3)])
    assert corner_error(batched.homography, singles, (96, 96)).max() < 1e-2
    assert corner_error(batched.homography, H, (96, 96)).max() < 0.2


MOTION_CASES = {
    "translation": torch.tensor([[1.0, 0.0, 2.5], [0.0, 1.0, -1.75], [0.0, 0.0, 1.0]], dtype=torch.float64),
    "euclidean": similarity(2.0, 1.0, 1.5, -1.0, (40.0, 60.0)),
    "similarity": similarity(-1.5, 1.03, -1.0, 2.0, (55.0, 47.5)),
    "affine": torch.tensor([[1.02, 0.03, -1.5], [-0.02, 0.98, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64),
}


@pytest.mark.parametrize("motion", list(MOTION_CASES))
def test_motion_models_recover_their_own_kind(canvas, motion, device):
    H_true = MOTION_CASES[motion]
    src, dst = warped_pair(canvas, H_true, 32, 32, SIZE)
    res = on(device, register_homography, src, dst, motion=motion, levels=2, iterations=100)
    H = res.homography[0].double()
    assert corner_error(H[None], H_true[None], SIZE).item() < 0.1
    assert H[2, :2].abs().max() < 1e-6  # every model but the homography is affine
    A = H[:2, :2]
    if motion in ("translation", "euclidean", "similarity"):
        assert abs(A[0, 0] - A[1, 1]) < 1e-5 and abs(A[0, 1] + A[1, 0]) < 1e-5
    if motion in ("translation", "euclidean"):
        assert abs(torch.linalg.det(A) - 1) < 1e-5
    if motion == "translation":
        assert torch.allclose(A, torch.eye(2, dtype=A.dtype), atol=1e-6)


@pytest.mark.parametrize("loss", ["l2", "charbonnier", "ssim", "ncc"])
def test_other_losses(small_pair, loss, device):
    res = on(device, register_homography, *small_pair, loss=loss, levels=2, iterations=80)
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.1


def test_symmetric_loss(small_pair, device):
    res = on(device, register_homography, *small_pair, symmetric=True, levels=2, iterations=80)
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.1


def test_paper_preset_and_torch_optimizer(small_pair, device):
    paper = RegistrationConfig.paper()
    assert (paper.optimizer, paper.lr, paper.iterations, paper.loss, paper.schedule) == ("Adam", 1e-3, 200, "l1", "constant")
    res = on(device, register_homography, *small_pair, paper, iterations=60)
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.5
    res = on(device, register_homography, *small_pair, optimizer="Yogi", levels=2, iterations=60)  # torch_optimizer's
    assert torch.isfinite(res.homography).all()


def test_closure_optimizers(small_pair, device):
    """LBFGS needs the closure; SGD with momentum needs a smaller rate than Adam."""
    lbfgs = dict(max_iter=10, line_search_fn="strong_wolfe")
    res = on(device, register_homography, *small_pair, optimizer="LBFGS", optimizer_kwargs=lbfgs, lr=1.0, schedule="constant",
                              levels=2, iterations=6)
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.05
    res = on(device, register_homography, *small_pair, optimizer="SGD", optimizer_kwargs=dict(momentum=0.9), lr=0.01, levels=2)
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.1


def test_initial_homography(small_pair, device):
    """Starting at the answer stays there; the start is in pixel coordinates."""
    near = H_SMALL.clone()
    near[:2, 2] += torch.tensor([0.6, -0.4], dtype=torch.float64)
    res = on(device, register_homography, *small_pair, initial_homography=near.float(), levels=1, iterations=100)
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.1
    res = on(device, register_homography, *small_pair, initial_homography=H_SMALL.float(), levels=1, iterations=1, lr=1e-9)
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 1e-3


@pytest.mark.parametrize("loss", ["l1", "ncc", "ssim"])
def test_textureless_pair_no_nan_not_converged(canvas, loss, device):
    """A flat pair beside a textured one: finite, flagged not converged; its neighbour is unaffected."""
    img = canvas[..., :64, :64]
    flat = torch.full_like(img, 0.5)
    src, dst = torch.cat([img, flat]), torch.cat([img, flat])
    res = on(device, register_homography, src, dst, loss=loss, levels=2, iterations=60)
    assert torch.isfinite(res.homography).all()
    assert all(torch.isfinite(h[:, 0]).all() and not torch.isinf(h).any() for h in res.loss_history)
    assert res.converged.tolist() == [True, False]


def test_callback_called_with_per_pair_losses(canvas, device):
    img = canvas[..., :64, :64]
    calls = []
    on(device, register_homography, torch.cat([img, img]), torch.cat([img, img]), levels=2, iterations=7,
                        callback=lambda level, it, loss: calls.append((level, it, loss.shape)))
    assert len(calls) == 14
    assert calls[0] == (0, 0, (2,)) and calls[-1] == (1, 6, (2,))


def test_solver_object_and_overrides(device):
    reg = HomographyRegistration(levels=2, iterations=5)
    assert reg.config.levels == 2
    x = torch.rand(1, 1, 64, 64).to(device)
    assert reg.register(x, x).homography.shape == (1, 3, 3)


def test_no_change_to_inputs(small_pair, device):
    src, dst = (x.to(device) for x in small_pair)
    s, d = src.clone(), dst.clone()
    register_homography(src, dst, levels=1, iterations=3)
    assert torch.equal(src, s) and torch.equal(dst, d)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(dst=torch.rand(1, 1, 64, 60)), ValueError, "dst"),
        (dict(src=torch.zeros(1, 1, 64, 64, dtype=torch.uint8)), TypeError, "src"),
        (dict(src=torch.rand(1, 64, 64)), ValueError, "src"),
        (dict(src=torch.full((1, 1, 64, 64), float("nan"))), ValueError, "src"),
        (dict(dst=torch.full((1, 1, 64, 64), float("inf"))), ValueError, "dst"),
        (dict(levels=0), ValueError, "levels"),
        (dict(levels=4), ValueError, "src"),  # 64 px leaves 8 px at the coarsest level
        (dict(initial_homography=torch.zeros(3, 3)), ValueError, "initial_homography"),
        (dict(initial_homography=torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]])), ValueError, "initial_homography"),
        (dict(initial_homography=torch.eye(2)), ValueError, "initial_homography"),
        (dict(optimizer="NoSuchOptimizer"), ValueError, "optimizer"),
        (dict(loss="l3"), ValueError, "loss"),
        (dict(motion="projective"), ValueError, "motion"),
        (dict(iterations=0), ValueError, "iterations"),
        (dict(optimizer_kwargs=dict(lr=0.1)), ValueError, "optimizer_kwargs"),
        (dict(no_such_field=1), TypeError, "no_such_field"),
    ],
)
def test_bad_input(kwargs, error, name):
    args = dict(src=torch.rand(1, 1, 64, 64), dst=torch.rand(1, 1, 64, 64), levels=2, iterations=2)
    args.update(kwargs)
    with pytest.raises(error, match=name):
        register_homography(args.pop("src"), args.pop("dst"), **args)


def test_detone_pairs_recovered(photos, device):
    """DeTone-protocol pairs (128 x 128, corners moved up to 16 px) from three photographs,
    batched: the default config brings every one under 0.1 px."""
    src, dst, H = make_pairs([gray(p)[0] for p in photos[:3]], 4, protocol="detone", rho=16, seed=5)
    res = on(device, register_homography, src, dst)
    err = corner_error(res.homography, H, (128, 128))
    assert err.max() < 0.1, err
    assert bool(res.converged.all())


def test_stopped_pair_is_frozen(canvas, device):
    """A pair that met the tolerance keeps its parameters while its neighbour still moves:
    the identity pair stops (zero loss) and stays exactly the identity."""
    img = canvas[..., :64, :64]
    moved, _ = warped_pair(canvas, MOTION_CASES["translation"], 40, 40, (64, 64))
    res = on(device, register_homography, torch.cat([img, moved]), torch.cat([img, img]), levels=1, iterations=60)
    # The first step has no previous loss to compare with, then `patience` steps below tolerance.
    assert res.iterations_used[0, 0] == RegistrationConfig.first_order().patience + 1
    assert res.iterations_used[0, 1] > res.iterations_used[0, 0]
    assert exact(res.homography[0], torch.eye(3), device)


def test_float64_and_empty_batch(canvas, device):
    img = canvas[..., :64, :64].double()
    res = on(device, register_homography, img, img, levels=2, iterations=12)
    assert res.homography.dtype == torch.float64 and exact(res.homography[0], torch.eye(3, dtype=torch.float64), device)
    empty = torch.zeros(0, 1, 64, 64)
    res = on(device, register_homography, empty, empty, levels=2, iterations=3)
    assert res.homography.shape == (0, 3, 3) and res.converged.shape == (0,)
