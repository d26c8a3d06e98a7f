"""Tests for core_ops.losses, part 2: the robust per-pixel penalties (against
``torch.nn.functional``, Kornia and hand formulas; masks; gradients at zero residual) and
the segmentation losses (against ``kornia.losses`` on random logits)."""

from __future__ import annotations

import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from gradcv.core_ops.errors import GradcvError
from gradcv.core_ops.losses import (
    CharbonnierLoss,
    DiceLoss,
    FocalLoss,
    HuberLoss,
    L1Loss,
    L2Loss,
    NCCLoss,
    TverskyLoss,
    charbonnier_loss,
    dice_loss,
    focal_loss,
    huber_loss,
    l1_loss,
    l2_loss,
    ncc_loss,
    tversky_loss,
)
from tests._kernel_check import check_kernel

REDUCTIONS = ("none", "mean", "sum")


def _pair(shape=(2, 3, 6, 7), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


# ====================================================================== robust penalties
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_l2_huber_match_torch(reduction, dtype):
    x, y = _pair(dtype=dtype)
    torch.testing.assert_close(l1_loss(x, y, reduction), F.l1_loss(x, y, reduction=reduction))
    torch.testing.assert_close(l2_loss(x, y, reduction), F.mse_loss(x, y, reduction=reduction))
    for delta in (1.0, 0.3, 2.5):
        torch.testing.assert_close(huber_loss(x, y, reduction, delta), F.huber_loss(x, y, reduction=reduction, delta=delta))
    assert l1_loss(x, y, reduction).dtype == dtype


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_charbonnier_matches_kornia_and_formula(reduction):
    x, y = _pair()
    torch.testing.assert_close(charbonnier_loss(x, y, reduction), kornia.losses.charbonnier_loss(x, y, reduction))
    for eps in (1e-3, 0.5):
        ref = torch.sqrt((x - y) ** 2 + eps**2) - eps
        ref = {"none": ref, "mean": ref.mean(), "sum": ref.sum()}[reduction]
        torch.testing.assert_close(charbonnier_loss(x, y, reduction, eps=eps), ref, atol=1e-12, rtol=1e-10)


def test_charbonnier_small_residuals_do_not_cancel():
    d = torch.tensor([1e-6, 1e-4], dtype=torch.float32)
    got = charbonnier_loss(d, torch.zeros(2), eps=1.0)
    torch.testing.assert_close(got, d.double().square().float() / 2, rtol=1e-5, atol=0)  # sqrt(d^2 + 1) - 1 ~ d^2 / 2


def test_penalties_gradcheck_including_zero_residual():
    x, y = _pair((2, 2, 4, 5))
    y[0, 0, 0, :3] = x[0, 0, 0, :3]  # zero residuals: Charbonnier and Huber are smooth there
    x.requires_grad_(True)
    mask = torch.rand(2, 1, 4, 5, dtype=torch.float64)
    for fn in (
        lambda a, b: charbonnier_loss(a, b, "mean", eps=0.1, mask=mask),
        lambda a, b: huber_loss(a, b, "sum", 0.7, mask=mask),
        lambda a, b: l2_loss(a, b, mask=mask),
        lambda a, b: ncc_loss(a, b, mask=mask),
        lambda a, b: ncc_loss(a, b, "sum"),
    ):
        assert gradcheck(fn, (x, y.clone().requires_grad_(True)), fast_mode=False)
    (g,) = torch.autograd.grad(charbonnier_loss(x, x.detach(), "sum", eps=1e-3), x)
    assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("fn", [l1_loss, l2_loss, huber_loss, charbonnier_loss])
def test_penalty_masks_weight_the_reduction(fn):
    x, y = _pair()
    per_pixel = fn(x, y, "none")
    mask = torch.rand(2, 1, 6, 7, dtype=torch.float64)
    w = mask.expand_as(per_pixel)
    torch.testing.assert_close(fn(x, y, "none", mask=mask), per_pixel * w)
    torch.testing.assert_close(fn(x, y, "sum", mask=mask), (per_pixel * w).sum())
    torch.testing.assert_close(fn(x, y, "mean", mask=mask), (per_pixel * w).sum() / w.sum())
    binary = mask > 0.5
    torch.testing.assert_close(fn(x, y, "mean", mask=binary), per_pixel[binary.expand_as(per_pixel)].mean())
    empty = fn(x, y, "mean", mask=torch.zeros(1, 6, 7, dtype=torch.float64))
    assert empty.item() == 0.0


def _zncc_by_hand(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - mean over channels of the Pearson correlation per channel, per sample."""
    out = []
    for xs, ys in zip(x, y):
        out.append(1 - np.mean([np.corrcoef(xc.ravel(), yc.ravel())[0, 1] for xc, yc in zip(xs, ys)]))
    return np.array(out)


def test_ncc_matches_pearson_and_is_gain_offset_invariant():
    x, y = _pair()
    np.testing.assert_allclose(
        ncc_loss(x, y, "none", eps=0.0).numpy(), _zncc_by_hand(x.numpy(), y.numpy()), atol=1e-12, rtol=0
    )
    gain = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64).view(1, 3, 1, 1)
    assert ncc_loss(x, gain * x + 3.0, "none").abs().max() < 1e-6  # eps is 1e-8 against variances ~1
    torch.testing.assert_close(ncc_loss(x, -x, "none", eps=0.0), torch.full((2,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(NCCLoss("sum")(x, y), ncc_loss(x, y, "none").sum())


def test_ncc_constant_image_and_mask():
    x, _ = _pair((1, 1, 6, 7))
    flat = torch.full_like(x, 0.3).requires_grad_(True)
    loss = ncc_loss(x, flat)
    (g,) = torch.autograd.grad(loss, flat)
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(g).all()
    # masked-out pixels do not enter the statistics
    mask = torch.ones(1, 1, 6, 7, dtype=torch.float64)
    mask[..., :2, :] = 0
    y = 2 * x + 1
    y_garbage = y.clone()
    y_garbage[..., :2, :] = -50.0
    assert ncc_loss(x, y_garbage, mask=mask).abs() < 1e-6 < ncc_loss(x, y_garbage).abs()


def test_robust_modules_equal_functions():
    x, y = _pair()
    m = torch.rand(2, 1, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(L1Loss("sum")(x, y, m), l1_loss(x, y, "sum", mask=m))
    torch.testing.assert_close(L2Loss()(x, y), l2_loss(x, y))
    torch.testing.assert_close(CharbonnierLoss("mean", eps=0.01)(x, y, m), charbonnier_loss(x, y, "mean", eps=0.01, mask=m))
    torch.testing.assert_close(HuberLoss("none", 0.5)(x, y), huber_loss(x, y, "none", 0.5))
    torch.testing.assert_close(NCCLoss(eps=0.0)(x, y, m), ncc_loss(x, y, eps=0.0, mask=m))


_X = torch.rand(2, 3, 5, 5)


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda: l1_loss(_X, _X[:1]), ValueError, "target"),
        (lambda: l2_loss(_X, _X.double()), TypeError, "target"),
        (lambda: huber_loss(_X.long(), _X.long()), TypeError, "input"),
        (lambda: huber_loss(_X, _X, delta=0.0), ValueError, "delta"),
        (lambda: charbonnier_loss(_X, _X, eps=0.0), ValueError, "eps"),
        (lambda: charbonnier_loss(_X, _X.numpy()), TypeError, "img2"),
        (lambda: l1_loss(_X, _X, "avg"), ValueError, "reduction"),
        (lambda: l1_loss(_X, _X, mask=torch.ones(2, 2, 5, 5)), ValueError, "mask"),
        (lambda: l1_loss(_X, _X, mask=torch.ones(1, 2, 3, 5, 5)), ValueError, "mask"),
        (lambda: l1_loss(_X, _X, mask=torch.ones(5, 5, dtype=torch.int32)), TypeError, "mask"),
        (lambda: ncc_loss(_X[0], _X[0]), ValueError, "input"),
        (lambda: ncc_loss(_X, _X, eps=-1.0), ValueError, "eps"),
        (lambda: ncc_loss(_X, _X, mask=torch.ones(2, 2, 5, 5)), ValueError, "mask"),
        (lambda: CharbonnierLoss(eps=-1.0), ValueError, "eps"),
        (lambda: HuberLoss("max"), ValueError, "reduction"),
    ],
)
def test_robust_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch


# ====================================================================== segmentation
def _logits(b=3, c=4, h=6, w=7, dtype=torch.float64, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    pred = 3 * torch.randn(b, c, h, w, generator=g, dtype=dtype)
    target = torch.randint(c, (b, h, w), generator=g)
    if ignore:
        target[0, :2] = -100
        target[1] = -100  # a sample with nothing to count
    return pred, target


@pytest.mark.parametrize("average", ["micro", "macro"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
def test_dice_matches_kornia(average, weighted, ignore):
    pred, target = _logits(ignore=ignore)
    weight = torch.tensor([0.5, 1.0, 2.0, 0.0], dtype=torch.float64) if weighted else None
    ours = dice_loss(pred, target, average, weight=weight)
    torch.testing.assert_close(ours, kornia.losses.dice_loss(pred, target, average, weight=weight), atol=1e-12, rtol=0)
    torch.testing.assert_close(DiceLoss(average, weight=weight)(pred, target), ours)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha, gamma", [(None, 2.0), (0.25, 0.0), (0.25, 0.5), (0.8, 2.0)])
def test_focal_matches_kornia(reduction, alpha, gamma):
    pred, target = _logits()
    weight = torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=torch.float64)
    for w in (None, weight):
        ours = focal_loss(pred, target, alpha, gamma, reduction, w)
        ref = kornia.losses.focal_loss(pred, target, alpha, gamma, reduction, w)
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(FocalLoss(alpha, gamma, reduction)(pred, target), focal_loss(pred, target, alpha, gamma, reduction))
    # (B, C) logits without spatial axes work as in Kornia
    torch.testing.assert_close(
        focal_loss(pred[:, :, 0, 0], target[:, 0, 0].clamp(min=0), alpha, gamma, reduction),
        kornia.losses.focal_loss(pred[:, :, 0, 0], target[:, 0, 0].clamp(min=0), alpha, gamma, reduction),
    )


@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.3, 0.7), (1.0, 1.0)])
def test_tversky_matches_kornia(alpha, beta):
    for ignore in (False, True):
        pred, target = _logits(ignore=ignore)
        ours = tversky_loss(pred, target, alpha, beta)
        torch.testing.assert_close(ours, kornia.losses.tversky_loss(pred, target, alpha, beta), atol=1e-12, rtol=0)
        torch.testing.assert_close(TverskyLoss(alpha, beta)(pred, target), ours)
    # alpha = beta = 0.5 is the macro Dice (with twice the eps)
    torch.testing.assert_close(tversky_loss(pred, target, 0.5, 0.5, eps=2e-8), dice_loss(pred, target, "macro", eps=1e-8))


def test_segmentation_gradcheck_and_float32():
    pred, target = _logits(2, 3, 4, 5)
    pred.requires_grad_(True)
    assert gradcheck(lambda p: dice_loss(p, target, "macro"), (pred,), fast_mode=False)
    assert gradcheck(lambda p: dice_loss(p, target), (pred,), fast_mode=False)
    assert gradcheck(lambda p: focal_loss(p, target, 0.25, 2.0, "mean"), (pred,), fast_mode=False)
    assert gradcheck(lambda p: tversky_loss(p, target, 0.3, 0.7), (pred,), fast_mode=False)
    p32 = pred.detach().float().requires_grad_(True)
    for loss in (dice_loss(p32, target), focal_loss(p32, target, None, reduction="sum"), tversky_loss(p32, target, 0.5, 0.5)):
        assert loss.dtype == torch.float32
        (g,) = torch.autograd.grad(loss, p32)
        assert torch.isfinite(g).all()


def test_focal_saturated_prediction_has_finite_gradient():
    pred = torch.tensor([[[[60.0]], [[-60.0]]]], dtype=torch.float64, requires_grad=True)  # p_t rounds to 1
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    (g,) = torch.autograd.grad(focal_loss(pred, target, None, gamma=0.5, reduction="sum"), pred)
    assert torch.isfinite(g).all()


_P, _T = torch.rand(2, 3, 4, 5), torch.randint(3, (2, 4, 5))


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda: dice_loss(_P[0], _T), ValueError, "pred"),
        (lambda: dice_loss(_P.long(), _T), TypeError, "pred"),
        (lambda: dice_loss(_P, _T.int()), TypeError, "target"),
        (lambda: dice_loss(_P, _T[:, :3]), ValueError, "target"),
        (lambda: dice_loss(_P, _T, "weighted"), ValueError, "average"),
        (lambda: dice_loss(_P, _T, weight=torch.ones(4)), ValueError, "weight"),
        (lambda: focal_loss(_P, _T, 0.25, reduction="avg"), ValueError, "reduction"),
        (lambda: focal_loss(_P, _T, 0.25, gamma=-1.0), ValueError, "gamma"),
        (lambda: focal_loss(_P, _T[0], 0.25), ValueError, "target"),
        (lambda: tversky_loss(_P, _T.float(), 0.5, 0.5), TypeError, "target"),
        (lambda: DiceLoss("weighted"), ValueError, "average"),
        (lambda: FocalLoss(0.25, reduction="avg"), ValueError, "reduction"),
    ],
)
def test_segmentation_bad_input_raises(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:") as info:
        call()
    assert isinstance(info.value, GradcvError), type(info.value)  # one family a caller can catch


def test_out_of_range_label_raises():
    with pytest.raises(RuntimeError):
        dice_loss(_P, torch.full((2, 4, 5), 3, dtype=torch.long))


# ------------------------------------------------------------------- kernel check
_GEN = torch.Generator().manual_seed(12)  # fixed inputs, whatever ran before
_A, _B = torch.rand(3, 2, 6, 7, generator=_GEN), torch.rand(3, 2, 6, 7, generator=_GEN)
_W, _LOGITS = torch.rand(3, 1, 6, 7, generator=_GEN), torch.randn(3, 4, 6, 7, generator=_GEN)
_LABELS = torch.randint(0, 4, (3, 6, 7), generator=_GEN)
# name -> (operator, inputs, batched output); reduction="none" where the loss has one, so
# that each sample's loss can be compared with the batch's.
KERNEL_CASES = {
    "l1_loss": (lambda a, b: l1_loss(a, b, "none"), (_A, _B), True),
    "l1_loss_mask": (lambda a, b, w: l1_loss(a, b, "none", mask=w), (_A, _B, _W), True),
    "l2_loss": (lambda a, b: l2_loss(a, b, "none"), (_A, _B), True),
    "huber_loss": (lambda a, b: huber_loss(a, b, "none", 0.3), (_A, _B), True),
    "charbonnier_loss": (lambda a, b: charbonnier_loss(a, b, "none", eps=0.1), (_A, _B), True),
    "charbonnier_loss_mask": (lambda a, b, w: charbonnier_loss(a, b, "none", mask=w), (_A, _B, _W), True),
    "ncc_loss": (lambda a, b: ncc_loss(a, b, "none"), (_A, _B), True),
    "ncc_loss_mask": (lambda a, b, w: ncc_loss(a, b, "none", mask=w), (_A, _B, _W), True),
    "focal_loss": (lambda p, t: focal_loss(p, t, 0.25, 2.0, "none"), (_LOGITS, _LABELS), True),
    # Kornia's dice and Tversky losses average over the batch: one number, no per-sample result
    "dice_loss": (lambda p, t: dice_loss(p, t), (_LOGITS, _LABELS), False),
    "dice_loss_macro": (lambda p, t: dice_loss(p, t, "macro"), (_LOGITS, _LABELS), False),
    "tversky_loss": (lambda p, t: tversky_loss(p, t, 0.3, 0.7), (_LOGITS, _LABELS), False),
}


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel(name, device):
    fn, inputs, batched_output = KERNEL_CASES[name]
    images = [x.ndim >= 3 for x in inputs]  # the labels (B, H, W) are cropped with the logits
    check_kernel(fn, *inputs, device=device, low_precision=True, batched_output=batched_output, images=images)
