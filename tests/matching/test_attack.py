"""The targeted attack on two-view matching (gradcv.matching.attack): small crops of two
unrelated photographs, a few hundred features, tens of iterations."""

from __future__ import annotations

import math

import pytest
import torch

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from gradcv.matching.attack import _normalize_gradient, _project_l2, attack_loss, attack_pair, evaluate_attack, quantize_8bit
from gradcv.matching.attack_config import AttackConfig
from gradcv.matching.config import MatchConfig
from gradcv.optim import SolverStatus

skimage_data = pytest.importorskip("skimage.data")

MATCH = MatchConfig.paper(num_features=300)
# Maps the hopper crop's pixels into the coffee crop: a small rotation, shear and perspective.
TARGET = torch.tensor([[[0.95, 0.1, 5.0], [-0.08, 1.02, -3.0], [0.0002, 0.0, 1.0]]])


def _gray(array) -> torch.Tensor:
    t = torch.from_numpy(array).float() / 255
    return t.mean(-1) if t.dim() == 3 else t


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    a = _gray(skimage_data.astronaut())[100:196, 150:278][None, None].contiguous()
    b = _gray(skimage_data.coffee())[100:196, 200:328][None, None].contiguous()
    return a, b


@pytest.fixture(scope="module")
def attacked(pair):
    a, b = pair
    seen = []
    result = attack_pair(a, b, TARGET, AttackConfig.default(match=MATCH, iterations=40, check_every=0, max_pairs=32),
                         callback=lambda level, it, loss: seen.append((level, it, loss.shape)))
    return result, seen


def test_loss_decreases_and_history(attacked):
    result, seen = attacked
    history = result.loss_history[0]
    assert history.shape == (1, 40) and torch.isfinite(history).all()
    assert history[0, -5:].mean() < 0.85 * history[0, 0]
    assert result.iterations_used.tolist() == [[40]]
    assert seen[0] == (0, 0, torch.Size([1])) and len(seen) == 40
    assert result.wall_time > 0


def test_consistent_inliers_increase_on_unrelated_pair(attacked):
    result, _ = attacked
    before, after = result.before, result.after
    # The crops are unrelated: nothing consistent with the target, no success.
    assert before.consistent_inliers.tolist() == [0] and not before.success.any()
    # 40 steps on 96 x 128 crops: the default measured 6 at 37.4 dB; plain Adam at 8/255
    # (normalize=None, eps=None, psnr_budget=None) 14 at 32.3 dB. The normalised step starts
    # slower on a crop this small; on 400 x 300 pairs it succeeds sooner (README, bench_attack).
    assert after.consistent_inliers.item() >= before.consistent_inliers.item() + 5
    assert after.consistent_fraction.item() >= 0.5
    assert torch.isfinite(after.psnr_a).all() and after.psnr_a.item() > 25
    assert result.status.tolist() == [int(SolverStatus.ITERATION_LIMIT)] or result.success.all()


def test_8bit_grid_and_budget_exact(attacked, pair):
    result, _ = attacked
    a, b = pair
    budget_levels = math.floor(result.config.budget * 255 + 1e-6)
    for adv, orig in ((result.adversarial_a, a), (result.adversarial_b, b)):
        levels = adv * 255
        assert torch.equal(levels, torch.round(levels))
        assert adv.min() >= 0 and adv.max() <= 1
        change = (torch.round(levels) - torch.round(orig * 255)).abs().max().item()
        assert change <= budget_levels
        assert change == budget_levels  # the attack uses its budget somewhere
    assert result.after.linf_a.item() <= result.config.budget + 1 / 255  # against the unrounded originals
    # The default's L2 bound: PSNR at least 35.5 dB against the 8-bit originals (the crops
    # are not 8-bit: rounding them costs a little more against the unrounded ones).
    for m in (result.after.psnr_a, result.after.psnr_b):
        assert m.item() >= result.config.psnr_budget - 0.1


def test_float_budget_respected(pair):
    a, b = pair
    r = attack_pair(a, b, TARGET, AttackConfig.default(match=MATCH, iterations=3, quantize=False, budget=0.01,
                                                       lr=0.05, check_every=0))
    for adv, orig in ((r.adversarial_a, a), (r.adversarial_b, b)):
        assert (adv - orig).abs().max().item() <= 0.01 + 1e-7
        assert (adv - orig).abs().max().item() >= 0.009
        assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("quantize", [True, False])
def test_psnr_budget_respected(pair, device, quantize):
    """Normalised SGD steps of 0.03 RMS would leave the images near 25 dB after 3 steps:
    the L2 (PSNR) budget holds each image at or above 40 dB, on the 8-bit images too."""
    a, b = (t.to(device) for t in pair)
    r = attack_pair(a, b, TARGET.to(device), AttackConfig.default(
        match=MATCH, iterations=3, quantize=quantize, budget=None, psnr_budget=40.0, optimizer="SGD", normalize="l2",
        lr=0.03, check_every=0))
    for adv, orig, psnr in ((r.adversarial_a, a, r.after.psnr_a), (r.adversarial_b, b, r.after.psnr_b)):
        assert adv.device == a.device
        # The bound is on the change from the originals as the attack starts from them
        # (rounded to 8 bits in 8-bit mode); the crops here are not 8-bit images.
        start = torch.round(orig * 255) / 255 if quantize else orig
        mse = (adv.double() - start.double()).square().mean().item()
        assert 40.0 - 1e-6 <= -10 * math.log10(mse) <= 41.0  # at the budget: the attack uses it
        assert psnr.item() >= 40.0 - 0.1  # against the unrounded crops
        assert adv.min() >= 0 and adv.max() <= 1
        if quantize:
            assert torch.equal(adv * 255, torch.round(adv * 255))


def test_normalized_sgd_moves_each_image_by_lr(pair, device):
    """One plain SGD step on the L2-normalised gradient changes each image by ``lr`` in
    root mean square, and (unlike Adam) by amounts that follow the gradient's."""
    # Intensities in [0.25, 0.75]: no pixel can move past 0 or 1 (one pixel moves at most
    # sqrt(pixels) * lr = 0.22), so nothing is clipped.
    a, b = (0.25 + 0.5 * t.to(device) for t in pair)
    cfg = AttackConfig.default(match=MATCH, iterations=1, quantize=False, budget=None, check_every=0, beta=0.0)
    sgd = attack_pair(a, b, TARGET.to(device), cfg.replace(optimizer="SGD", normalize="l2", lr=0.002))
    adam = attack_pair(a, b, TARGET.to(device), cfg.replace(normalize=None, eps=None, lr=0.002))
    for new, orig in ((sgd.adversarial_a, a), (sgd.adversarial_b, b)):
        rms = (new - orig).square().mean().sqrt().item()
        assert rms == pytest.approx(0.002, rel=1e-3)
    # Adam's first step moves every pixel with a gradient by lr: most of them.
    moved = lambda new, orig: ((new - orig).abs() > 1e-3).double().mean().item()  # noqa: E731
    assert moved(adam.adversarial_b, b) > 0.3
    assert moved(sgd.adversarial_b, b) < 0.5 * moved(adam.adversarial_b, b)


def test_normalize_and_project_helpers(device):
    g = torch.zeros(2, 2, 1, 4, 4, device=device)
    g[0, 0] = 3.0
    g[1, 1, 0, 0, 0] = -8.0
    _normalize_gradient(g)
    rms = g.square().mean(dim=(2, 3, 4)).sqrt()
    assert torch.allclose(rms, torch.tensor([[1.0, 0.0], [0.0, 1.0]], device=device))  # a zero gradient stays zero
    torch.manual_seed(0)
    base = torch.rand(2, 2, 1, 8, 8, dtype=torch.float64).to(device)
    delta = torch.randn(2, 2, 1, 8, 8, dtype=torch.float64).to(device) * torch.tensor([0.1, 0.001], dtype=torch.float64, device=device)[:, None, None, None, None]
    x = base + delta
    _project_l2(x, base, 1e-4, quantize=False)
    mse = (x - base).square().mean(dim=(2, 3, 4))
    assert torch.allclose(mse[0], torch.full_like(mse[0], 1e-4))  # shrunk onto the ball
    assert torch.allclose(x[1], base[1] + delta[1])  # inside: untouched
    for image in range(2):  # each image's change only shrinks, by its own factor
        ratio = (x - base)[0, image] / delta[0, image]
        assert torch.allclose(ratio, ratio.flatten()[0]) and 0 < ratio.flatten()[0] < 1


def test_batch_and_per_pair_stopping(pair):
    a, b = pair
    # Pair 0: one image against itself under the identity: it succeeds at the first check
    # and stops; pair 1 (unrelated) runs every step.
    imgs_a = torch.cat([a, a])
    imgs_b = torch.cat([a, b])
    target = torch.cat([torch.eye(3)[None], TARGET])
    r = attack_pair(imgs_a, imgs_b, target, match=MATCH, iterations=4, check_every=2)
    assert r.before.success.tolist() == [True, False]
    assert r.iterations_used.tolist() == [[2, 4]]
    history = r.loss_history[0]
    assert torch.isfinite(history[0, :2]).all() and torch.isnan(history[0, 2:]).all()
    assert torch.isfinite(history[1]).all()
    assert r.status[0].item() == int(SolverStatus.CONVERGED)
    assert r.adversarial_a.shape == imgs_a.shape


def test_stop_inliers_keeps_a_succeeding_pair_running(pair):
    """A pair that succeeds stops at a check only with ``stop_inliers`` consistent inliers:
    the identity pair (hundreds) stops at 2 steps with a bound it meets, runs on with one it
    cannot meet, and is judged a success either way."""
    a, _ = pair
    eye = torch.eye(3)[None]
    met = attack_pair(a, a, eye, match=MATCH, iterations=4, check_every=2, stop_inliers=30)
    unmet = attack_pair(a, a, eye, match=MATCH, iterations=4, check_every=2, stop_inliers=100_000)
    assert met.iterations_used.tolist() == [[2]] and unmet.iterations_used.tolist() == [[4]]
    assert bool(met.success[0]) and bool(unmet.success[0])


def test_min_response_reaches_the_step_loss(pair):
    """``min_response`` in the config adds the hinge to the loss the steps minimise (the
    responses of the attacked pipeline reach it): a threshold above every response raises
    the first step's loss by up to ``2 * response_weight``."""
    a, b = pair
    plain = attack_pair(a, b, TARGET, match=MATCH, iterations=1, check_every=0)
    lifted = attack_pair(a, b, TARGET, match=MATCH, iterations=1, check_every=0, min_response=1e6, response_weight=7.0)
    extra = float(lifted.loss_history[0][0, 0] - plain.loss_history[0][0, 0])
    assert 7.0 < extra <= 14.0, extra


def test_chunks_side_by_side_on_threads_equal_one_thread(pair, monkeypatch):
    # With two intra-op threads the CPU runs the pairs' chunks side by side, one thread
    # each: every chunk computes what it computes alone on one thread, and the noise is
    # drawn in chunk order, so the result is a 1-thread run's, bit for bit (2 pairs in
    # chunks of one, side by side).
    import gradcv.core_ops.features.integrated as integrated

    a, b = (x[..., 16:80, 16:112] for x in pair)  # 64 x 96: small, a few seconds
    monkeypatch.setattr(integrated, "CPU_CHUNK_PIXELS", 2 * a.shape[-2] * a.shape[-1])  # one pair a chunk
    imgs_a, imgs_b = torch.cat([a, b.flip(-1)]), torch.cat([b, a])
    target = torch.cat([TARGET, TARGET])
    config = AttackConfig.default(match=MatchConfig.paper(num_features=100), iterations=2, check_every=0, noise=0.01, max_pairs=32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = attack_pair(imgs_a, imgs_b, target, config)
        torch.set_num_threads(2)
        side = attack_pair(imgs_a, imgs_b, target, config)
        assert torch.get_num_threads() == 2  # the caller's count is restored
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.loss_history[0], side.loss_history[0]) and torch.isfinite(one.loss_history[0]).all()
    assert torch.equal(one.adversarial_a, side.adversarial_a) and torch.equal(one.adversarial_b, side.adversarial_b)
    assert not torch.equal(one.adversarial_a, imgs_a)  # the attack moved something


def test_textureless_pair_reports_status_not_nan(pair):
    a, _ = pair
    flat = torch.full_like(a, 0.5)
    r = attack_pair(torch.cat([flat, a]), torch.cat([flat, a]), torch.eye(3).expand(2, 3, 3).clone(), match=MATCH,
                    iterations=2, check_every=0)
    assert r.status[0].item() == int(SolverStatus.DEGENERATE_INPUT)
    for m in (r.before, r.after):
        assert m.inliers[0].item() == 0 and m.consistent_inliers[0].item() == 0
        assert not torch.isnan(m.corner_error).any() and not torch.isnan(m.consistent_fraction).any()
    assert torch.equal(r.adversarial_a[0], torch.round(flat[0] * 255) / 255)  # not attacked (only rounded)
    assert r.iterations_used[0, 0].item() == 0 and torch.isnan(r.loss_history[0][0]).all()
    assert torch.isfinite(r.loss_history[0][1]).all()


def test_evaluate_identity_pair_succeeds(pair):
    a, _ = pair
    m = evaluate_attack(a, a, torch.eye(3)[None], AttackConfig(match=MATCH))
    assert m.success.item() and m.consistent_inliers.item() >= 30 and m.corner_error.item() < 1
    assert m.psnr_a.item() > 50  # rounding only


def test_quantize_straight_through():
    x = torch.tensor([0.1, 0.5, 1.2], requires_grad=True)
    y = quantize_8bit(x)
    assert torch.equal(y * 255, torch.round(y * 255)) and y.max() <= 1
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_attack_loss_gradient_and_empty():
    torch.manual_seed(0)
    kp_a = (torch.rand(1, 6, 2, dtype=torch.float64) * 40).requires_grad_(True)
    kp_b = kp_a.detach() + 0.5
    desc_a = torch.nn.functional.normalize(torch.rand(1, 6, 8, dtype=torch.float64), dim=-1).requires_grad_(True)
    desc_b = torch.nn.functional.normalize(torch.rand(1, 6, 8, dtype=torch.float64), dim=-1)
    valid = torch.ones(1, 6, dtype=torch.bool)
    loss, loc, desc = attack_loss(kp_a, kp_b, desc_a, desc_b, valid, valid, torch.eye(3, dtype=torch.float64)[None],
                                  (50, 50), alpha=1.0, margin=1.0)
    assert loc.item() == pytest.approx(0.5, abs=1e-9)  # each point 0.5 px off in x and y
    loss.sum().backward()
    assert torch.isfinite(kp_a.grad).all() and kp_a.grad.abs().sum() > 0 and desc_a.grad.abs().sum() > 0
    none = torch.zeros_like(valid)
    loss, loc, desc = attack_loss(kp_a, kp_b, desc_a, desc_b, none, none, torch.eye(3, dtype=torch.float64)[None],
                                  (50, 50))
    assert loss.tolist() == [0.0]


def test_attack_loss_one_to_one_keeps_the_mutual_pair():
    """Two keypoints of A near the same keypoint of B: every pair counts without
    ``one_to_one``; with it only the nearer (mutual) one is kept."""
    kp_a = torch.tensor([[[10.0, 10.0], [11.5, 10.0], [30.0, 30.0]]], dtype=torch.float64)
    kp_b = torch.tensor([[[10.5, 10.0], [30.0, 31.0], [45.0, 5.0]]], dtype=torch.float64)
    desc = torch.nn.functional.normalize(torch.rand(1, 3, 8, dtype=torch.float64), dim=-1)
    valid = torch.ones(1, 3, dtype=torch.bool)
    eye = torch.eye(3, dtype=torch.float64)[None]
    _, loc_all, _ = attack_loss(kp_a, kp_b, desc, desc, valid, valid, eye, (50, 50), loc_radius=3.0)
    _, loc_one, _ = attack_loss(kp_a, kp_b, desc, desc, valid, valid, eye, (50, 50), loc_radius=3.0, one_to_one=True)
    assert loc_all.item() == pytest.approx((0.25 + 1.0 + 1.0) / 3)  # 0.5 px, 1 px and 1 px off
    assert loc_one.item() == pytest.approx((0.25 + 1.0) / 2)  # A's second keypoint loses B's first to A's first


def test_attack_loss_response_hinge():
    """``min_response`` adds ``weight * (relu(1 - r_a / t) + relu(1 - r_b / t))`` averaged over the
    kept pairs, ``r_b`` the response of each keypoint of A's partner; it reaches the responses'
    gradient, and asks for the responses."""
    kp_a = torch.tensor([[[10.0, 10.0], [30.0, 30.0]]], dtype=torch.float64)
    kp_b = torch.tensor([[[30.5, 30.0], [10.5, 10.0]]], dtype=torch.float64)  # partners swapped in order
    desc = torch.nn.functional.normalize(torch.rand(1, 2, 8, dtype=torch.float64), dim=-1)
    valid = torch.ones(1, 2, dtype=torch.bool)
    eye = torch.eye(3, dtype=torch.float64)[None]
    r_a = torch.tensor([[0.01, 0.03]], dtype=torch.float64, requires_grad=True)
    r_b = torch.tensor([[0.02, 0.005]], dtype=torch.float64)
    base, _, _ = attack_loss(kp_a, kp_b, desc, desc, valid, valid, eye, (50, 50))
    loss, _, _ = attack_loss(kp_a, kp_b, desc, desc, valid, valid, eye, (50, 50), responses_a=r_a, responses_b=r_b,
                             min_response=0.02, response_weight=10.0)
    # pair 0: r_a 0.01 (hinge 0.5), partner b1 0.005 (0.75); pair 1: r_a 0.03 (0), partner b0 0.02 (0)
    assert (loss - base).item() == pytest.approx(10.0 * (0.5 + 0.75) / 2)
    loss.sum().backward()
    assert r_a.grad[0, 0].item() == pytest.approx(-10.0 / 0.02 / 2) and r_a.grad[0, 1].item() == 0.0
    with pytest.raises(ArgumentValueError, match="min_response"):
        attack_loss(kp_a, kp_b, desc, desc, valid, valid, eye, (50, 50), min_response=0.02)


def test_presets_and_replace():
    paper = AttackConfig.paper()
    assert paper.match.num_features == 2500 and paper.match.detector == "hessian" and paper.lr == 0.003
    assert paper.optimizer == "Adam" and paper.budget is None and not paper.quantize
    default = AttackConfig.default()
    assert default.iterations == 500 and default.quantize and default.budget is not None
    assert default.psnr_budget == 35.5 and paper.psnr_budget is None
    assert default.normalize == "l2" and default.eps == 1.0 and paper.normalize is None and paper.eps is None
    assert default.replace(iterations=7).iterations == 7
    assert default.replace(normalize="none").normalize == "none"  # Hydra's spelling of None
    with pytest.raises(ArgumentValueError, match="overrides"):
        default.replace(itterations=7)
    transfer = AttackConfig.transfer()
    assert transfer.match.detector == "dog" and not transfer.match.rootsift and transfer.match.scale_smoothing
    assert transfer.match.contrast_threshold == 0.02 and transfer.stop_inliers == 60 and transfer.noise > 0
    assert transfer.min_response == pytest.approx(0.05 / 3) and default.min_response is None
    assert transfer.psnr_budget == default.psnr_budget and default.stop_inliers is None
    assert AttackConfig.preset("transfer", iterations=9) == transfer.replace(iterations=9)
    assert AttackConfig.preset("paper") == paper and AttackConfig.preset("default") == default
    with pytest.raises(ArgumentValueError, match="name"):
        AttackConfig.preset("fast")


@pytest.mark.parametrize("field,value,error", [
    ("iterations", 0, ArgumentValueError), ("iterations", 1.5, ArgumentTypeError), ("lr", 0.0, ArgumentValueError),
    ("alpha", -1.0, ArgumentValueError), ("budget", 0.0, ArgumentValueError), ("budget", 2.0, ArgumentValueError),
    ("quantize", 1, ArgumentTypeError), ("noise", -0.1, ArgumentValueError), ("check_every", -1, ArgumentValueError),
    ("optimizer", "Nope", ArgumentValueError), ("match", "paper", ArgumentTypeError),
    ("loc_radius", 0.0, ArgumentValueError), ("min_fraction", 1.5, ArgumentValueError), ("seed", -1, ArgumentValueError),
    ("psnr_budget", 0.0, ArgumentValueError), ("normalize", "l1", ArgumentValueError), ("normalize", 2, ArgumentTypeError),
    ("momentum", 1.0, ArgumentValueError), ("momentum", 0.5, ArgumentValueError),  # Adam takes no momentum
    ("eps", 0.0, ArgumentValueError), ("stop_inliers", 0, ArgumentValueError), ("stop_inliers", 2.5, ArgumentTypeError),
    ("min_response", 0.0, ArgumentValueError), ("response_weight", -1.0, ArgumentValueError),
])
def test_bad_config(field, value, error):
    with pytest.raises(error, match=field):
        AttackConfig(**{field: value})


def test_bad_inputs(pair):
    a, b = pair
    eye = torch.eye(3)[None]
    cases = [
        ((a, b.expand(1, 3, -1, -1), eye), ShapeError, "img2"),  # channel counts
        ((a, b[..., :-1], eye), ShapeError, "img2"),  # sizes
        ((a[..., :40, :40], b[..., :40, :40], eye), ShapeError, "img1"),  # smaller than a patch
        ((a, b, torch.zeros(1, 3, 3)), ArgumentValueError, "target_homography"),  # singular
        ((a, b, torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 0, math.nan]]])), ArgumentValueError, "target_homography"),
        ((a, b, torch.eye(3)), ShapeError, "target_homography"),
        ((a, b, torch.eye(3).expand(2, 3, 3)), ShapeError, "target_homography"),
        ((a, b, torch.eye(3, dtype=torch.int64)[None]), DTypeError, "target_homography"),
        ((a.double(), b, eye), DTypeError, "img2"),
    ]
    for args, error, name in cases:
        with pytest.raises(error, match=name):
            attack_pair(*args, match=MATCH, iterations=1)
    with pytest.raises(ArgumentTypeError, match="config"):
        attack_pair(a, b, eye, config=MATCH)
    with pytest.raises(ArgumentValueError, match="overrides"):
        attack_pair(a, b, eye, bogus=1)
