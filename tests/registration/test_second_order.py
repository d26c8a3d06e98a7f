"""Second-order mode (Gauss–Newton / Levenberg–Marquardt, ESM steps, robustly reweighted
residuals): the same problems as the first-order solver, in far fewer iterations."""

from __future__ import annotations

import pytest
import torch

from gradcv.optim import SolverStatus
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.data import corner_error, make_pairs
from gradcv.registration.solver import register_homography
from tests.registration._pairs import exact, gray, on, warped_pair
from tests.registration.test_solver import H_SMALL, MOTION_CASES, SIZE, _corner_homography

METHODS = ["levenberg_marquardt", "gauss_newton"]


@pytest.fixture(scope="module")
def canvas(photos):
    return gray(photos[0])[..., 150:310, 180:356].contiguous()


@pytest.fixture(scope="module")
def small_pair(canvas):
    return warped_pair(canvas, H_SMALL, 32, 32, SIZE)


def test_config_method_and_preset():
    assert RegistrationConfig().method == "levenberg_marquardt"
    cfg = RegistrationConfig.second_order()
    assert (cfg.method, cfg.iterations, cfg.search_steps) == ("levenberg_marquardt", 30, 0)
    assert RegistrationConfig.first_order().method == RegistrationConfig.paper().method == "first_order"
    with pytest.raises(ValueError, match="method"):
        register_homography(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64), method="newton", levels=2)


@pytest.mark.parametrize("loss", ["ssim", "ncc"])
def test_loss_that_is_not_least_squares_refused(loss):
    x = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError, match="loss"):
        register_homography(x, x, config=RegistrationConfig.second_order(loss=loss, levels=2))


@pytest.mark.parametrize("loss", ["l1", "l2", "charbonnier"])
def test_every_least_squares_loss(small_pair, loss, device):
    res = on(device, register_homography, *small_pair, config=RegistrationConfig.second_order(loss=loss))
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.05


@pytest.mark.parametrize("method", METHODS)
def test_identity_stays_identity(canvas, method, device):
    img = canvas[..., :96, :112]
    res = on(device, register_homography, img, img, config=RegistrationConfig.second_order(method=method))
    eye = torch.eye(3)[None]
    for H in res.homography_per_level:
        assert corner_error(H, eye, SIZE).item() < 1e-3
    assert bool(res.converged.all())


@pytest.mark.parametrize("method", METHODS)
def test_recovers_homography_in_few_iterations(small_pair, method, device):
    """A real-photo crop, corners moved up to 2.5 px: < 0.05 px in <= 30 iterations per level."""
    res = on(device, register_homography, *small_pair, config=RegistrationConfig.second_order(method=method))
    assert corner_error(res.homography, H_SMALL[None], SIZE).item() < 0.05
    assert bool((res.iterations_used <= 30).all())
    assert bool(res.converged.all())


def test_larger_homography(canvas, device):
    """Corners moved up to 8 px."""
    H_true = _corner_homography([[6.0, -4.5], [-3.0, 7.5], [4.5, 3.0], [-8.0, -1.5]], SIZE)
    src, dst = warped_pair(canvas, H_true, 32, 32, SIZE)
    res = on(device, register_homography, src, dst, config=RegistrationConfig.second_order())
    assert corner_error(res.homography, H_true[None], SIZE).item() < 0.05


def test_result_fields_as_first_order(small_pair, device):
    cfg = RegistrationConfig.second_order()
    res = on(device, register_homography, *small_pair, config=cfg)
    assert res.homography.shape == (1, 3, 3) and res.homography[0, 2, 2] == 1
    assert res.homography_normalized.shape == (1, 3, 3)
    assert len(res.homography_per_level) == cfg.levels
    assert len(res.loss_history) == cfg.levels
    assert all(h.shape == (1, cfg.iterations) for h in res.loss_history)
    used = res.iterations_used
    assert used.shape == (cfg.levels, 1) and bool((used >= 1).all())
    for h, n in zip(res.loss_history, used[:, 0].tolist()):
        # Recorded while the pair moved, NaN after it stopped (padded, not repeated);
        # LM only accepts decreases, so the recorded part never rises.
        assert torch.isfinite(h[0, :n]).all() and torch.isnan(h[0, n:]).all()
        assert bool((h[0, 1:n] <= h[0, : n - 1]).all())
    assert res.converged.dtype == torch.bool and res.wall_time > 0


def test_batch_equals_one_by_one(photos, device):
    src, dst, H = make_pairs([gray(p)[0] for p in photos[:3]], 3, protocol="detone", rho=4, seed=2)
    src, dst = src[..., :96, :96].contiguous(), dst[..., :96, :96].contiguous()
    cfg = RegistrationConfig.second_order(levels=2)
    batched = on(device, register_homography, src, dst, config=cfg)
    singles = torch.cat([on(device, register_homography, src[i : i + 1], dst[i : i + 1], config=cfg).homography for i in range(3)])
    assert corner_error(batched.homography, singles, (96, 96)).max() < 1e-3
    assert corner_error(batched.homography, H, (96, 96)).max() < 0.2


@pytest.mark.parametrize("motion", list(MOTION_CASES))
def test_motion_models(canvas, motion, device):
    H_true = MOTION_CASES[motion]
    src, dst = warped_pair(canvas, H_true, 32, 32, SIZE)
    res = on(device, register_homography, src, dst, config=RegistrationConfig.second_order(motion=motion, levels=2))
    H = res.homography[0].double()
    assert corner_error(H[None], H_true[None], SIZE).item() < 0.05
    assert H[2, :2].abs().max() < 1e-6
    A = H[:2, :2]
    if motion in ("translation", "euclidean", "similarity"):
        assert abs(A[0, 0] - A[1, 1]) < 1e-5 and abs(A[0, 1] + A[1, 0]) < 1e-5
    if motion in ("translation", "euclidean"):
        assert abs(torch.linalg.det(A) - 1) < 1e-5
    if motion == "translation":
        assert torch.allclose(A, torch.eye(2, dtype=A.dtype), atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_textureless_no_nan_not_converged(canvas, method, device):
    img = canvas[..., :64, :64]
    flat = torch.full_like(img, 0.5)
    src, dst = torch.cat([img, flat]), torch.cat([img, flat])
    res = on(device, register_homography, src, dst, config=RegistrationConfig.second_order(method=method, levels=2))
    assert torch.isfinite(res.homography).all()
    assert all(torch.isfinite(h[:, 0]).all() and not torch.isinf(h).any() for h in res.loss_history)
    assert res.converged.tolist() == [True, False]
    assert res.status.tolist() == [SolverStatus.CONVERGED, SolverStatus.DEGENERATE_INPUT]


def test_detone_pairs(photos, device):
    """DeTone pairs (128 x 128, rho = 16), batched: every one under 0.05 px."""
    src, dst, H = make_pairs([gray(p)[0] for p in photos[:3]], 4, protocol="detone", rho=16, seed=5)
    res = on(device, register_homography, src, dst, config=RegistrationConfig.second_order())
    err = corner_error(res.homography, H, (128, 128))
    assert err.max() < 0.05, err
    assert bool(res.converged.all())


def test_float64_and_empty_batch(canvas, device):
    img = canvas[..., :64, :64].double()
    cfg = RegistrationConfig.second_order(levels=2)
    res = on(device, register_homography, img, img, config=cfg)
    assert res.homography.dtype == torch.float64 and exact(res.homography[0], torch.eye(3, dtype=torch.float64), device)
    empty = torch.zeros(0, 1, 64, 64)
    res = on(device, register_homography, empty, empty, config=cfg)
    assert res.homography.shape == (0, 3, 3) and res.converged.shape == (0,)


def test_reweighted_step_lengthened_by_the_curvature_ratio():
    """The Charbonnier step is lengthened by 1 / (scale * ratio), ratio = eps² / (r² + eps²)
    averaged with the Jacobian's weights: not at all at a zero residual (reweighting is
    Newton there), up to the cap for residuals far above eps."""
    from gradcv.registration.second_order import _RELAX_MAX, _RELAX_SCALE, _relaxation

    cfg = RegistrationConfig()
    eps = cfg.charbonnier_eps
    r = torch.stack([torch.zeros(1, 8, 8), torch.full((1, 8, 8), 1.5 * eps), torch.full((1, 8, 8), 30 * eps)])
    robust = torch.rsqrt(r.square() + eps * eps)
    wg2 = robust * (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.1)
    got = _relaxation(cfg, robust, wg2, wg2.sum((1, 2, 3)))
    expected = torch.tensor([1.0, min(_RELAX_MAX, 3.25 / _RELAX_SCALE), _RELAX_MAX], dtype=torch.float64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0.0)


def test_only_charbonnier_steps_are_lengthened(monkeypatch, small_pair):
    """L1's curvature is zero almost everywhere: the ratio would always give the cap, a
    factor nothing measured, so its steps stay plain; Charbonnier's are lengthened."""
    import gradcv.registration.second_order as second_order

    def called(*args):
        raise AssertionError("lengthened")

    monkeypatch.setattr(second_order, "_relaxation", called)
    src, dst = small_pair
    register_homography(src, dst, levels=1, iterations=2, loss="l1", rescue_steps=0)
    with pytest.raises(AssertionError, match="lengthened"):
        register_homography(src, dst, levels=1, iterations=2, loss="charbonnier", rescue_steps=0)


@pytest.mark.parametrize("loss", ["l1", "l2", "charbonnier"])
def test_residual_loss_is_pair_loss_and_robust_weight(loss, device):
    """The solver's shared-pass loss and IRLS weights are pair_loss's and robust_weight's bit for bit."""
    from gradcv.registration.objective import pair_loss, residual_loss, robust_weight

    g = torch.Generator().manual_seed(0)
    warped, target = (torch.rand(3, 2, 9, 11, generator=g).to(device) for _ in range(2))
    weight = (torch.rand(3, 1, 9, 11, generator=g) > 0.3).float().to(device)
    got, robust = residual_loss(loss, warped - target, weight, 1e-3)
    assert torch.equal(got, pair_loss(loss, warped, target, weight, 1e-3))
    expected = robust_weight(loss, warped - target, 1e-3)
    assert (robust is None) == (expected is None) and (robust is None or torch.equal(robust, expected))
