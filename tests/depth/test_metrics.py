"""depth.metrics against a plain numpy reimplementation of Eigen et al. (2014) and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradcv.core_ops.errors import DTypeError, GradcvError, ShapeError
from gradcv.depth.metrics import METRIC_NAMES, metrics
from tests.depth._tiny import on


def _reference(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    ok = np.isfinite(pred) & np.isfinite(gt) & (pred > 0) & (gt > 0)
    if mask is not None:
        ok &= mask
    if not ok.any():
        return {k: math.nan for k in METRIC_NAMES}
    d, g = pred[ok], gt[ok]
    thresh = np.maximum(d / g, g / d)
    return {
        "abs_rel": np.mean(np.abs(d - g) / g),
        "sq_rel": np.mean((d - g) ** 2 / g),
        "rmse": np.sqrt(np.mean((d - g) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(d) - np.log(g)) ** 2)),
        "delta1": np.mean(thresh < 1.25),
        "delta2": np.mean(thresh < 1.25**2),
        "delta3": np.mean(thresh < 1.25**3),
    }


def test_matches_numpy_reference_on_random_batches(device) -> None:
    rng = np.random.default_rng(0)
    b, h, w = 4, 12, 16
    gt = rng.uniform(0.5, 10.0, (b, 1, h, w))
    pred = gt * rng.uniform(0.5, 1.8, gt.shape)
    gt[rng.random(gt.shape) < 0.1] = 0.0  # missing measurements
    pred[rng.random(gt.shape) < 0.05] = np.nan
    pred[rng.random(gt.shape) < 0.05] = -1.0
    mask = rng.random(gt.shape) < 0.8
    mask[3] = False  # an empty problem gives NaN, not a crash
    out = on(device, metrics, torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(mask))
    assert set(out) == set(METRIC_NAMES)
    for i in range(b):
        ref = _reference(pred[i], gt[i], mask[i])
        for k in METRIC_NAMES:
            assert out[k].shape == (b,) and out[k].dtype == torch.float64
            if math.isnan(ref[k]):
                assert math.isnan(float(out[k][i])), k
            else:
                assert float(out[k][i]) == pytest.approx(ref[k], rel=1e-12, abs=1e-12), k
    assert all(torch.isnan(out[k][3]) for k in METRIC_NAMES)
    ref0 = _reference(pred[0], gt[0], None)
    out0 = on(device, metrics, torch.from_numpy(pred[:1]), torch.from_numpy(gt[:1]))
    for k in METRIC_NAMES:
        assert float(out0[k][0]) == pytest.approx(ref0[k], rel=1e-12), k


def test_hand_computed_cases(device) -> None:
    gt = torch.tensor([1.0, 2.0, 4.0, 8.0]).reshape(1, 1, 2, 2)
    out = on(device, metrics, 1.1 * gt, gt)
    assert float(out["abs_rel"][0]) == pytest.approx(0.1)
    # sq_rel = mean(0.01 * g) = 0.01 * 15 / 4
    assert float(out["sq_rel"][0]) == pytest.approx(0.01 * 15 / 4)
    assert float(out["rmse"][0]) == pytest.approx(0.1 * math.sqrt((1 + 4 + 16 + 64) / 4))
    assert float(out["rmse_log"][0]) == pytest.approx(math.log(1.1))
    assert [float(out[k][0]) for k in ("delta1", "delta2", "delta3")] == [1.0, 1.0, 1.0]
    # ratios max(d/g, g/d): 1, 1.5, 2, 2
    pred = torch.tensor([1.0, 3.0, 8.0, 4.0]).reshape(1, 1, 2, 2)
    out = on(device, metrics, pred, gt)
    # ratios 1, 1.5, 2, 2: below 1.25 -> 1/4; below 1.5625 -> 2/4; below 1.953125 -> 2/4
    assert [float(out[k][0]) for k in ("delta1", "delta2", "delta3")] == [0.25, 0.5, 0.5]
    assert float(out["abs_rel"][0]) == pytest.approx((0 + 0.5 + 1 + 0.5) / 4)
    assert float(out["rmse"][0]) == pytest.approx(math.sqrt((0 + 1 + 16 + 16) / 4))


def test_float32_and_empty_problem(device) -> None:
    gt = torch.zeros(2, 1, 3, 3)
    gt[0] = 2.0
    out = on(device, metrics, torch.full((2, 1, 3, 3), 2.0), gt)
    assert out["rmse"].dtype == torch.float32
    assert float(out["rmse"][0]) == 0.0 and float(out["delta1"][0]) == 1.0
    assert all(bool(torch.isnan(v[1])) for v in out.values())


def test_typed_errors() -> None:
    x = torch.ones(1, 1, 4, 4)
    with pytest.raises(ShapeError, match="gt"):
        metrics(x, torch.ones(1, 1, 4, 5))
    with pytest.raises(ShapeError, match="pred"):
        metrics(torch.ones(4, 4), torch.ones(4, 4))
    with pytest.raises(DTypeError, match="pred"):
        metrics(x.long(), x)
    with pytest.raises(DTypeError, match="gt"):
        metrics(x, x.int())
    with pytest.raises(DTypeError, match="mask"):
        metrics(x, x, torch.ones(1, 1, 4, 4))
    with pytest.raises(GradcvError, match="mask"):
        metrics(x, x, torch.ones(1, 1, 2, 2, dtype=torch.bool))
