"""The corners' uncertainty implied by the final residual (registration.uncertainty) and the
status it gives: a pair the data do not determine is not CONVERGED."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradcv.optim import SolverStatus
from gradcv.registration import RegistrationConfig, corner_error, make_pairs, register_homography
from gradcv.registration.sampling import LevelGrid, frame_corners
from gradcv.registration.uncertainty import corner_uncertainty
from tests.registration._pairs import gray, uncertainty_at as _uncertainty


@pytest.fixture(scope="module")
def rocket():
    skdata = pytest.importorskip("skimage.data")
    return gray(skdata.rocket().astype(np.float32) / 255.0)  # (1, 1, 427, 640): sky and smoke


@pytest.mark.parametrize("which", ["rocket", "coffee"])
def test_uncertainty_small_at_the_truth_large_off_it(which, rocket, photos, device):
    """DeTone pairs: at the true homography the corners are determined to a few hundredths
    of a pixel; 3 px off (a smooth residual, not noise) they are not, on a near-textureless
    photograph (rocket) as on a textured one (coffee)."""
    image = rocket if which == "rocket" else gray(photos[1])
    src, dst, H = make_pairs(image, 4, protocol="detone", seed=0)
    src, dst = src.to(device), dst.to(device)
    shift = torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    at_truth = _uncertainty(src, dst, H).cpu()
    off = _uncertainty(src, dst, shift @ H).cpu()
    assert at_truth.shape == (4,) and at_truth.dtype == torch.float32
    assert float(at_truth.max()) < 0.1, at_truth
    assert float(off.min()) > 1.0, off


def test_white_noise_gives_the_classical_covariance(photos):
    """Translation only, no photometric model, a residual of white noise: the cluster-robust
    covariance is the classical sigma^2 (sum g g^T)^-1 (computed here in numpy)."""
    src = gray(photos[1])[..., 100:228, 200:328].double()  # (1, 1, 128, 128) coffee
    noise = torch.from_numpy(np.random.default_rng(0).normal(0.0, 0.01, src.shape))
    dst = src + noise
    got = float(_uncertainty(src, dst, torch.eye(3, dtype=torch.float64)[None], "translation", "none")[0])

    def grad(x):  # central differences, replicated borders
        p = np.pad(x, 1, mode="edge")
        return (p[1:-1, 2:] - p[1:-1, :-2]) / 2.0, (p[2:, 1:-1] - p[:-2, 1:-1]) / 2.0

    s, d = src[0, 0].numpy(), dst[0, 0].numpy()
    (sx, sy), (dx, dy) = grad(s), grad(d)
    g = np.stack([(sx + dx).ravel() / 2.0, (sy + dy).ravel() / 2.0])
    sigma2 = float(((s - d) ** 2).mean())
    expected = math.sqrt(float(np.diag(sigma2 * np.linalg.inv(g @ g.T)).max()))
    assert 0.7 * expected < got < 1.4 * expected, (got, expected)
    # Linear in the residual (the noise also enters the mean gradient, hence the slack).
    twice = float(_uncertainty(src, src + 2 * noise, torch.eye(3, dtype=torch.float64)[None], "translation", "none")[0])
    assert twice == pytest.approx(2 * got, rel=0.15)


def test_far_off_pairs_do_not_claim_convergence(rocket, device):
    """Rocket's DeTone pairs (sky and smoke): no pair that ends over a pixel off is
    CONVERGED; the pairs registered to the truth are."""
    src, dst, H = make_pairs(rocket, 8, protocol="detone", seed=0)
    res = register_homography(src.to(device), dst.to(device))
    err = corner_error(res.homography.cpu(), H, (128, 128))
    status = res.status.cpu()
    assert not bool(((err > 1.0) & (status == int(SolverStatus.CONVERGED))).any()), (err, status)
    assert bool((status[err < 0.05] != int(SolverStatus.DEGENERATE_INPUT)).all()), (err, status)
    # The uncertainty the status used says the same.
    u = _uncertainty(src, dst, res.homography.cpu())
    assert bool((u[err > 5.0] > 0.5).all()) and bool((u[err < 0.05] < 0.5).all()), (err, u)


def test_max_uncertainty_sets_the_status(photos):
    """A noisy, well-registered pair: CONVERGED under the default bound and with the test
    off, DEGENERATE_INPUT under a bound below what its noise allows."""
    src, dst, _ = make_pairs(gray(photos[0]), 1, protocol="photometric", seed=3)
    cfg = RegistrationConfig(levels=3)
    assert int(register_homography(src, dst, config=cfg).status[0]) == int(SolverStatus.CONVERGED)
    assert int(register_homography(src, dst, config=cfg.replace(max_uncertainty=math.inf)).status[0]) == int(SolverStatus.CONVERGED)
    assert int(register_homography(src, dst, config=cfg.replace(max_uncertainty=1e-6)).status[0]) == int(SolverStatus.DEGENERATE_INPUT)


@pytest.mark.parametrize("value, error", [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError)])
def test_max_uncertainty_validated(value, error):
    with pytest.raises(error, match="max_uncertainty"):
        RegistrationConfig(max_uncertainty=value)


def test_empty_batch():
    src = torch.rand(0, 1, 32, 32)
    assert _uncertainty(src, src, torch.eye(3, dtype=torch.float64).expand(0, 3, 3)).shape == (0,)


@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_rescue_steps_validated(value, error):
    with pytest.raises(error, match="rescue_steps"):
        RegistrationConfig(rescue_steps=value)


def _dense_uncertainty(src, dst, G, weight, motion, photometric):
    """The module's formula written out densely (a (pixels, parameters) Jacobian, as the
    first version computed it): the reference for the moment-table version."""
    from gradcv.core_ops.filters import spatial_gradient
    from gradcv.registration import uncertainty as unc
    from gradcv.registration.motion import generators
    from gradcv.registration.objective import apply_photometric, photometric_columns, photometric_gram, photometric_solve

    B, C, h, w = src.shape
    grid = LevelGrid(0, (h, w), (h, w), src.dtype, src.device)
    warped, _ = grid.sample(src, G)
    phi = photometric_columns(photometric, warped)
    fitted = warped
    if phi is not None:
        fitted = apply_photometric(warped, phi, photometric_solve(*photometric_gram(phi, weight, dst - warped)))
    r = (fitted - dst).reshape(B, 1, -1)
    grad = 0.5 * sum(spatial_gradient(x, "diff", 1, True, border_type="replicate") for x in (fitted, dst))
    gens = generators(motion, src.dtype, src.device)
    x, y = grid.points[0, ..., 0], grid.points[0, ..., 1]
    Ep = torch.einsum("kij,jhw->kihw", gens, torch.stack([x, y, torch.ones_like(x)]))
    scale = max(h, w) / 2.0
    dx, dy = (Ep[:, 0] - x * Ep[:, 2]) * scale, (Ep[:, 1] - y * Ep[:, 2]) * scale
    J = (grad[:, None, :, 0] * dx[None, :, None] + grad[:, None, :, 1] * dy[None, :, None]).reshape(B, len(gens), -1)
    wf = weight.expand(B, C, h, w).reshape(B, 1, -1)
    if phi is not None:
        Phi = phi.reshape(B, phi.shape[1], -1)
        D = (Phi * wf) @ Phi.transpose(1, 2)
        D = D + (1e-9 * D.diagonal(dim1=-2, dim2=-1).sum(-1) + 1e-30)[:, None, None] * torch.eye(D.shape[-1], dtype=D.dtype)
        J = J - torch.linalg.solve(D, ((J * wf) @ Phi.transpose(1, 2)).transpose(1, 2)).transpose(1, 2) @ Phi
    A = (J * wf) @ J.transpose(1, 2)
    score = (J * wf * r).view(B * len(gens), C, h, w).sum(1, keepdim=True)
    pad = (0, (-w) % unc.BLOCK, 0, (-h) % unc.BLOCK)
    s = (torch.nn.functional.avg_pool2d(torch.nn.functional.pad(score, pad), unc.BLOCK) * unc.BLOCK**2).view(B, len(gens), -1)
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    cov = torch.linalg.solve(A, torch.linalg.solve(A, s @ s.transpose(1, 2)).transpose(1, 2)) + unc.NOISE_FLOOR**2 * torch.linalg.inv(A)
    Jc = unc._corner_jacobian(G, frame_corners(h, w, src.dtype, src.device), motion, grid)
    return (Jc @ cov @ Jc.transpose(1, 2)).diagonal(dim1=-2, dim2=-1).amax(-1).sqrt()


@pytest.mark.parametrize("channels, motion, photometric", [(1, "homography", "exposure"), (3, "affine", "gain_bias"), (1, "similarity", "none")])
def test_moment_tables_equal_the_dense_formula(photos, channels, motion, photometric):
    """Odd size, a soft weight map, an off-identity warp, float64: the moment-table version
    gives the dense Jacobian's numbers (it was rewritten from it for speed)."""
    img = torch.stack([gray(p)[0, 0, 60:105, 90:157] for p in photos[:3]])[:channels].double()  # (C, 45, 67)
    src = img[None]
    gen = torch.Generator().manual_seed(3)
    dst = (0.9 * src.roll(1, -1) + 0.05 + 0.01 * torch.randn(src.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    G = torch.tensor([[[1.02, 0.01, 0.015], [-0.015, 0.99, -0.01], [0.01, -0.02, 1.0]]], dtype=torch.float64)
    h, w = src.shape[-2:]
    grid = LevelGrid(0, (h, w), (h, w), torch.float64, torch.device("cpu"))
    _, inside = grid.sample(src, G)
    weight = inside * torch.rand(1, 1, h, w, generator=gen, dtype=torch.float64)
    got = corner_uncertainty(grid, src, dst, G, weight, frame_corners(h, w, torch.float64, "cpu"), motion, photometric)
    want = _dense_uncertainty(src, dst, G, weight, motion, photometric)
    # The module takes J̃ᵀWJ̃ as A - coef crossᵀ (the Schur form), exact only without the
    # 1e-9 ridge on the photometric gram, which its conditioning amplifies: measured 1e-10
    # (no photometric model), 2e-8 (gain and bias), up to 1.3e-4 (tone, on camera).
    rtol = {"none": 1e-8, "gain_bias": 1e-6, "exposure": 1e-3}[photometric]
    assert torch.allclose(got, want, rtol=rtol), (got, want)


def test_a_motion_the_model_absorbs_is_undetermined():
    """A ramp moved along its slope is the ramp made brighter: with the default model (a
    bias among its terms) the shift fits exactly, the residual is rounding noise, and only
    the noise floor keeps the corners' uncertainty from reading that noise as certainty
    (without it: CONVERGED, 3 px off in x and 16 in y)."""
    ramp = torch.linspace(0.2, 0.7, 64).expand(1, 1, 64, 64).contiguous()
    result = register_homography(ramp, ramp + 3 * 0.5 / 63, levels=2)
    assert result.status.tolist() != [int(SolverStatus.CONVERGED)]
