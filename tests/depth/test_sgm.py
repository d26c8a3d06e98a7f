"""depth.sgm.semi_global_aggregation against a plain-loop reference of Hirschmüller's recurrence.

The reference below is written from the textbook definition, one pixel and one label at a
time, with the module's documented conventions: the guide is averaged over channels, a
non-finite cost counts as the pixel's largest finite cost, the first pixel of each path
keeps its own cost, and the jump penalty is ``max(p2 / (1 + gamma |I_p - I_{p-r}|), 1.0001 p1)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, GradcvError, ShapeError
from gradcv.depth.sgm import semi_global_aggregation
from tests.depth._tiny import on


def _path(cost: np.ndarray, guide: np.ndarray, order: list[tuple[int, int]], p1: float, p2: float,
          gamma: float) -> np.ndarray:
    """``L_r`` of one problem (``cost (P, H, W)``, ``guide (H, W)``) along one scanline order.

    ``order`` lists the pixels of one scanline, first to last."""
    P = cost.shape[0]
    out = np.zeros_like(cost)  # zero off the scanline, so that the caller can sum lines
    prev = None
    prev_pixel = None
    for y, x in order:
        if prev is None:
            cur = cost[:, y, x].copy()
        else:
            least = min(prev)
            jump = max(p2 / (1.0 + gamma * abs(guide[y, x] - guide[prev_pixel])), p1 * 1.0001)
            cur = np.empty(P)
            for d in range(P):
                options = [prev[d], least + jump]
                if d > 0:
                    options.append(prev[d - 1] + p1)
                if d < P - 1:
                    options.append(prev[d + 1] + p1)
                cur[d] = cost[d, y, x] + min(options) - least
        out[:, y, x] = cur
        prev, prev_pixel = cur, (y, x)
    return out


def reference(cost: torch.Tensor, guide: torch.Tensor, p1: float, p2: float, gamma: float = 10.0) -> torch.Tensor:
    c_all = cost.detach().double().numpy()
    g_all = guide.detach().double().numpy().mean(1)
    out = np.zeros_like(c_all)
    B, P, H, W = c_all.shape
    for b in range(B):
        c = c_all[b].copy()
        for y in range(H):
            for x in range(W):
                column = c[:, y, x]
                finite = np.isfinite(column)
                # The largest finite cost of the pixel (0 where none is finite).
                top = float(column[finite].max()) if finite.any() else 0.0
                column[~finite] = top
        g = g_all[b]
        rows = [[(y, x) for x in range(W)] for y in range(H)]
        cols = [[(y, x) for y in range(H)] for x in range(W)]
        total = np.zeros_like(c)
        for lines in (rows, cols):
            for line in lines:
                for order in (line, line[::-1]):
                    total += _path(c, g, order, p1, p2, gamma)
        out[b] = total
    return torch.from_numpy(out)


def _volume(B: int, P: int, H: int, W: int, C: int = 3, seed: int = 0,
            dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(B, P, H, W, generator=g, dtype=dtype)
    guide = torch.rand(B, C, H, W, generator=g, dtype=dtype)
    return cost, guide


@pytest.mark.parametrize("gamma", [10.0, 0.0, 2.5])
@pytest.mark.parametrize("p1,p2", [(0.1, 0.5), (0.05, 0.05), (0.2, 3.0)])
def test_matches_reference(p1: float, p2: float, gamma: float, device) -> None:
    cost, guide = _volume(2, 5, 4, 6)
    out = on(device, semi_global_aggregation, cost, guide, p1, p2, gamma)
    assert out.shape == cost.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, reference(cost, guide, p1, p2, gamma), rtol=1e-12, atol=1e-12)


def test_default_gamma_is_ten(device) -> None:
    cost, guide = _volume(1, 4, 3, 5, seed=3)
    torch.testing.assert_close(on(device, semi_global_aggregation, cost, guide, 0.1, 0.6),
                               reference(cost, guide, 0.1, 0.6, 10.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 5, 1, 6), (1, 5, 4, 1), (1, 1, 4, 6), (2, 2, 4, 6), (1, 3, 1, 1), (1, 2, 7, 3)])
def test_odd_shapes(shape: tuple[int, int, int, int], device) -> None:
    cost, guide = _volume(*shape, C=1, seed=sum(shape))
    out = on(device, semi_global_aggregation, cost, guide, 0.1, 0.4)
    torch.testing.assert_close(out, reference(cost, guide, 0.1, 0.4), rtol=1e-12, atol=1e-12)


def test_one_label_is_four_times_the_cost(device) -> None:
    # With one label there is nothing to choose: every path cost is the pixel's own cost.
    cost, guide = _volume(2, 1, 4, 6)
    torch.testing.assert_close(on(device, semi_global_aggregation, cost, guide, 0.3, 0.9), 4 * cost, rtol=1e-12, atol=1e-12)


def test_zero_penalties_give_four_times_the_cost(device) -> None:
    cost, guide = _volume(2, 5, 4, 6, seed=1)
    torch.testing.assert_close(on(device, semi_global_aggregation, cost, guide, 0.0, 0.0), 4 * cost, rtol=1e-12, atol=1e-12)


def test_single_channel_guide_equals_channel_mean(device) -> None:
    cost, guide = _volume(2, 5, 4, 6, C=3, seed=2)
    a = on(device, semi_global_aggregation, cost, guide, 0.1, 0.5)
    b = on(device, semi_global_aggregation, cost, guide.mean(1, keepdim=True), 0.1, 0.5)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_batch_equals_one_by_one(device) -> None:
    cost, guide = _volume(3, 5, 4, 6, seed=4)
    batched = on(device, semi_global_aggregation, cost, guide, 0.1, 0.5)
    for b in range(3):
        single = on(device, semi_global_aggregation, cost[b : b + 1], guide[b : b + 1], 0.1, 0.5)
        torch.testing.assert_close(batched[b : b + 1], single, rtol=0, atol=0)


def test_non_contiguous_input(device) -> None:
    # The strided views are made on the device (moving a view there would copy it densely).
    cost, guide = (t.to(device) for t in _volume(2, 5, 6, 4, seed=5))
    # Transposed views of (B, P, W, H) and (B, C, W, H) tensors, and a strided slice.
    cost_t = cost.transpose(2, 3).contiguous().transpose(2, 3)
    guide_t = guide.transpose(2, 3).contiguous().transpose(2, 3)
    assert not cost_t.is_contiguous() and not guide_t.is_contiguous()
    expected = semi_global_aggregation(cost.contiguous(), guide.contiguous(), 0.1, 0.5)
    torch.testing.assert_close(semi_global_aggregation(cost_t, guide_t, 0.1, 0.5), expected, rtol=0, atol=0)
    big, big_guide = (t.to(device) for t in _volume(2, 10, 6, 8, seed=6))
    sliced, sliced_guide = big[:, ::2, :, ::2], big_guide[:, :, :, ::2]
    assert not sliced.is_contiguous()
    torch.testing.assert_close(semi_global_aggregation(sliced, sliced_guide, 0.1, 0.5).cpu(),
                               reference(sliced.cpu(), sliced_guide.cpu(), 0.1, 0.5), rtol=1e-12, atol=1e-12)


def test_float32_close_to_float64_reference(device) -> None:
    cost, guide = _volume(2, 5, 4, 6, seed=7)
    out = on(device, semi_global_aggregation, cost.float(), guide.float(), 0.1, 0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(cost.float(), guide.float(), 0.1, 0.5), rtol=1e-5, atol=1e-5)


def test_inputs_not_modified(device) -> None:
    cost, guide = (t.to(device) for t in _volume(2, 5, 4, 6, seed=8))
    cost[0, 2, 1, 1] = math.inf
    cost[1, 0, 3, 2] = math.nan
    c0, g0 = cost.clone(), guide.clone()
    semi_global_aggregation(cost, guide, 0.1, 0.5)
    assert torch.equal(guide, g0)
    assert torch.equal(torch.isnan(cost), torch.isnan(c0))
    assert torch.equal(torch.nan_to_num(cost, nan=-1.0), torch.nan_to_num(c0, nan=-1.0))


def test_non_finite_costs_count_as_the_pixels_largest(device) -> None:
    cost, guide = _volume(2, 5, 4, 6, seed=9)
    cost[0, 0, 0, 0] = math.inf
    cost[0, 4, 2, 3] = math.nan
    cost[1, 1:3, 3, 5] = math.inf
    cost[1, :, 1, 1] = math.inf  # a pixel no label is finite at counts as cost 0 everywhere
    out = on(device, semi_global_aggregation, cost, guide, 0.1, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference(cost, guide, 0.1, 0.5), rtol=1e-12, atol=1e-12)
    # Same as writing the largest finite cost of the pixel in its place.
    filled = cost.clone()
    filled[0, 0, 0, 0] = cost[0, 1:, 0, 0].max()
    filled[0, 4, 2, 3] = cost[0, :4, 2, 3].max()
    filled[1, 1:3, 3, 5] = torch.cat([cost[1, :1, 3, 5], cost[1, 3:, 3, 5]]).max()
    filled[1, :, 1, 1] = 0.0
    torch.testing.assert_close(out, on(device, semi_global_aggregation, filled, guide, 0.1, 0.5), rtol=0, atol=0)


def test_guide_edge_lowers_the_jump_penalty(device) -> None:
    # Two labels, one row: the left half prefers label 0, the right half label 1 weakly.
    # Without a guide edge the jump costs p2 and the weak side follows the strong one; with
    # an image edge at the same place the penalty drops and both halves keep their label.
    W = 8
    cost = torch.zeros(1, 3, 1, W, dtype=torch.float64)
    cost[0, 2, 0, : W // 2] = 1.0  # left: labels 0, 1 cheap, 2 dear
    cost[0, 1, 0, : W // 2] = 0.5
    cost[0, 0, 0, W // 2 :] = 0.1  # right: label 2 best by 0.1 per pixel (0.05 to 0.1 flip, p2 1 to 2)
    cost[0, 1, 0, W // 2 :] = 0.6
    flat = torch.zeros(1, 1, 1, W, dtype=torch.float64)
    edge = flat.clone()
    edge[..., W // 2 :] = 1.0
    smooth = on(device, semi_global_aggregation, cost, flat, 0.1, 2.0, gamma=10.0).argmin(1)[0, 0]
    split = on(device, semi_global_aggregation, cost, edge, 0.1, 2.0, gamma=10.0).argmin(1)[0, 0]
    assert smooth.tolist() == [0] * W
    assert split.tolist() == [0] * (W // 2) + [2] * (W // 2)
    torch.testing.assert_close(on(device, semi_global_aggregation, cost, edge, 0.1, 2.0, 10.0),
                               reference(cost, edge, 0.1, 2.0, 10.0), rtol=1e-12, atol=1e-12)


def test_sgm_cleans_a_noisy_staircase(device) -> None:
    """Piecewise-constant true labels; the cost is a quadratic around them plus noise, so
    the winner-take-all is a noisy staircase. SGM's argmin has far fewer wrong labels."""
    g = torch.Generator().manual_seed(0)
    B, P, H, W = 2, 8, 24, 32
    truth = torch.zeros(B, H, W, dtype=torch.long)
    truth[:, :, 8:] = 2
    truth[:, :, 16:] = 5
    truth[:, 12:, 24:] = 7
    truth[1] = truth[1].flip(-1)
    labels = torch.arange(P, dtype=torch.float64).view(1, P, 1, 1)
    cost = 0.02 * (labels - truth[:, None].double()) ** 2 + 0.08 * torch.rand(B, P, H, W, generator=g, dtype=torch.float64)
    guide = truth[:, None].double() / P  # image edges at the depth edges
    wta = cost.argmin(1)
    sgm = on(device, semi_global_aggregation, cost, guide, 0.1, 0.3).argmin(1)
    wta_wrong = (wta != truth).double().mean().item()
    sgm_wrong = (sgm != truth).double().mean().item()
    # Measured: WTA wrong on 0.373 of the pixels, SGM (p1 0.1, p2 0.3) on 0.035.
    assert wta_wrong > 0.3
    assert sgm_wrong < 0.06
    assert sgm_wrong < 0.2 * wta_wrong
    # Without the guide (gamma = 0) SGM still helps, less: measured 0.087.
    flat_wrong = (on(device, semi_global_aggregation, cost, guide, 0.1, 0.3, gamma=0.0).argmin(1) != truth).double().mean().item()
    assert flat_wrong < 0.35 * wta_wrong
    assert sgm_wrong < 0.7 * flat_wrong


# ------------------------------------------------------------------------------ errors


def test_errors_name_the_argument() -> None:
    cost, guide = _volume(1, 3, 4, 5)
    cases = [
        (ShapeError, "cost", lambda: semi_global_aggregation(cost[0], guide, 0.1, 0.5)),
        (ShapeError, "cost", lambda: semi_global_aggregation(cost[None], guide, 0.1, 0.5)),
        (ShapeError, "guide", lambda: semi_global_aggregation(cost, guide[0], 0.1, 0.5)),
        (ShapeError, "guide", lambda: semi_global_aggregation(cost, guide[:, :, :3], 0.1, 0.5)),
        (ShapeError, "guide", lambda: semi_global_aggregation(cost, guide[:, :, :, :4], 0.1, 0.5)),
        (ShapeError, "guide", lambda: semi_global_aggregation(cost, guide.expand(2, -1, -1, -1), 0.1, 0.5)),
        (ArgumentTypeError, "cost", lambda: semi_global_aggregation(cost.numpy(), guide, 0.1, 0.5)),
        (ArgumentTypeError, "guide", lambda: semi_global_aggregation(cost, guide.numpy(), 0.1, 0.5)),
        (ArgumentValueError, "p2", lambda: semi_global_aggregation(cost, guide, 0.5, 0.1)),
        (ArgumentValueError, "p1", lambda: semi_global_aggregation(cost, guide, -0.1, 0.5)),
        (ArgumentValueError, "p2", lambda: semi_global_aggregation(cost, guide, 0.1, math.inf)),
        (ArgumentValueError, "p1", lambda: semi_global_aggregation(cost, guide, math.nan, 0.5)),
        (ArgumentValueError, "gamma", lambda: semi_global_aggregation(cost, guide, 0.1, 0.5, -1.0)),
        (ArgumentValueError, "gamma", lambda: semi_global_aggregation(cost, guide, 0.1, 0.5, math.inf)),
        (ArgumentValueError, "p1", lambda: semi_global_aggregation(cost, guide, True, 0.5)),
        (ArgumentValueError, "p2", lambda: semi_global_aggregation(cost, guide, 0.1, "0.5")),
    ]
    for kind, name, call in cases:
        with pytest.raises(kind) as info:
            call()
        assert isinstance(info.value, GradcvError)
        assert info.value.name == name, (name, str(info.value))
        assert str(info.value).startswith(name), str(info.value)


def test_integer_cost_is_a_dtype_error() -> None:
    _, guide = _volume(1, 3, 4, 5)
    with pytest.raises(GradcvError) as info:
        semi_global_aggregation(torch.zeros(1, 3, 4, 5, dtype=torch.long), guide, 0.1, 0.5)
    assert info.value.name == "cost" and isinstance(info.value, TypeError)


def test_empty_batch(device) -> None:
    cost, guide = _volume(0, 3, 4, 5)
    assert on(device, semi_global_aggregation, cost, guide, 0.1, 0.5).shape == (0, 3, 4, 5)
