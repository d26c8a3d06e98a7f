"""differentiable=True: the solve stays on the autograd graph, unrolled through its
iterations. Directional finite differences pin d(homography)/d(src) on a tiny problem
(Levenberg–Marquardt, Gauss–Newton and unrolled Adam/SGD); a tiny network upstream of
the registration receives a gradient."""

from __future__ import annotations

import pytest
import torch

from gradcv.registration import RegistrationConfig, corner_error, make_pairs, register_homography
from tests.registration._pairs import gray

CASES = {
    "levenberg_marquardt": RegistrationConfig.second_order(levels=1, iterations=6, loss="l2"),
    "gauss_newton": RegistrationConfig.second_order(method="gauss_newton", levels=1, iterations=6, loss="charbonnier"),
    "adam": RegistrationConfig.first_order(levels=1, iterations=5, loss="l2", optimizer="Adam", lr=0.01),
    "sgd": RegistrationConfig.first_order(levels=1, iterations=5, loss="l2", optimizer="SGD", lr=0.5,
                                          optimizer_kwargs={"momentum": 0.5}),
}


@pytest.fixture(scope="module")
def tiny_pair(photos):
    """A 48 x 48 float64 pair, corners moved a few pixels."""
    src, dst, _ = make_pairs([gray(photos[0])[0]], 1, protocol="detone", rho=4, seed=1)
    return src[..., :48, :48].double().contiguous(), dst[..., :48, :48].double().contiguous()


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_finite_differences(tiny_pair, name, device):
    """<grad, v> by autograd equals (f(src + e v) - f(src - e v)) / 2e for a random
    direction v and f a random weighting of the homography's entries. Stopping is off
    (tolerances 0), so both perturbed solves take the same accept/reject path."""
    src, dst = (x.to(device) for x in tiny_pair)
    cfg = CASES[name].replace(differentiable=True, tolerance=0.0, step_tolerance=0.0)
    generator = torch.Generator().manual_seed(0)  # on the CPU: the same direction on every device
    w = torch.randn(3, 3, dtype=torch.float64, generator=generator).to(device)
    v = torch.randn(src.shape, dtype=torch.float64, generator=generator).to(device)

    def f(image: torch.Tensor) -> torch.Tensor:
        return (register_homography(image, dst, config=cfg).homography[0] * w).sum()

    leaf = src.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(leaf), leaf)
    eps = 1e-6
    with torch.no_grad():
        numeric = (f(src + eps * v) - f(src - eps * v)) / (2 * eps)
    analytic = (grad * v).sum()
    assert torch.isfinite(analytic) and analytic.abs() > 1e-6
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-9), (float(analytic), float(numeric))


def test_gradient_reaches_the_initial_homography_and_masks(tiny_pair, device):
    src, dst = (x.to(device) for x in tiny_pair)
    cfg = CASES["levenberg_marquardt"].replace(differentiable=True, iterations=3)
    H0 = torch.eye(3, dtype=torch.float64, device=device).requires_grad_(True)
    mask = torch.ones(1, 1, 48, 48, dtype=torch.float64, device=device, requires_grad=True)
    res = register_homography(src, dst, initial_homography=H0, dst_mask=mask, config=cfg)
    res.homography.sum().backward()
    assert H0.grad is not None and torch.isfinite(H0.grad).all() and H0.grad.abs().sum() > 0
    assert mask.grad is not None and torch.isfinite(mask.grad).all()


def test_not_differentiable_by_default(tiny_pair, device):
    src, dst = (x.to(device) for x in tiny_pair)
    res = register_homography(src.clone().requires_grad_(True), dst, config=CASES["levenberg_marquardt"])
    assert not res.homography.requires_grad


def test_tiny_network_upstream_is_trained_through_the_solve(photos, device):
    """A 3 x 3 convolution in front of the default solver (second order, 2 levels, search)
    gets a finite, non-zero gradient from the corner error of the registration."""
    torch.manual_seed(0)
    src, dst, H = make_pairs([gray(p)[0] for p in photos[:2]], 2, protocol="detone", rho=8, seed=4)
    src, dst = src[..., :64, :64].contiguous().to(device), dst[..., :64, :64].contiguous().to(device)
    net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate").to(device)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 0, 1, 1] = 1.0
        net.bias.zero_()
    cfg = RegistrationConfig(levels=2, iterations=8, differentiable=True)
    result = register_homography(net(src), net(dst), config=cfg)
    loss = corner_error(result.homography, H.to(device), (64, 64)).mean()
    loss.backward()
    assert net.weight.grad is not None and net.bias.grad is not None
    assert torch.isfinite(net.weight.grad).all() and net.weight.grad.abs().sum() > 0
