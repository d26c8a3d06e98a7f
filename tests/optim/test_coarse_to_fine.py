"""The coarse-to-fine schedule and both ready-made carries (a homography carries unchanged,
a depth map is upsampled), the result base and the progress protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcv.core_ops.pyramid import build_centred_pyramid
from gradcv.optim import (
    ProgressCallback,
    SolverResult,
    SolverStatus,
    carry_unchanged,
    carry_upsampled,
    coarse_to_fine,
    pad_history,
    sample_status,
    schedule,
)


def test_schedule_is_coarse_to_fine():
    levels = schedule([(64, 48), (32, 24), (16, 12)])
    assert [(p.index, p.level, p.size) for p in levels] == [(0, 2, (16, 12)), (1, 1, (32, 24)), (2, 0, (64, 48))]
    assert levels[0].is_coarsest and levels[-1].is_finest and not levels[1].is_finest
    assert all(p.count == 3 for p in levels)
    with pytest.raises(ValueError, match="sizes"):
        schedule([])


def test_homography_carries_unchanged(device):
    """A normalised homography means the same at every level of the centred pyramid: the
    carry hands it on as is, and each level's solve sees its own level."""
    H = torch.eye(3, device=device)[None].clone()
    H[0, 0, 2] = 0.1
    seen = []

    def solve(state: torch.Tensor, level) -> torch.Tensor:
        seen.append((level.index, level.size))
        return state

    out = coarse_to_fine(H, [(32, 32), (16, 16), (8, 8)], solve, carry_unchanged)
    assert seen == [(0, (8, 8)), (1, (16, 16)), (2, (32, 32))]
    assert all(torch.equal(h, H) for h in out)


def test_homography_carried_between_levels_samples_the_same_points(device):
    """What 'unchanged' relies on: sampling two levels of the centred pyramid through the
    same normalised homography reads the same (smooth) image values."""
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    img = (0.01 * xs + 0.02 * ys)[None, None].to(device, torch.float64)
    fine, coarse = build_centred_pyramid(img, 2, sigma=0.0)
    theta = torch.tensor([[[0.7, 0.05, 0.05], [-0.05, 0.75, -0.02]]], dtype=torch.float64, device=device)  # inside the border
    a = F.grid_sample(fine, F.affine_grid(theta, (1, 1, 8, 8), align_corners=False), align_corners=False)
    b = F.grid_sample(coarse, F.affine_grid(theta, (1, 1, 8, 8), align_corners=False), align_corners=False)
    assert torch.allclose(a, b, atol=1e-12)


def test_depth_map_is_upsampled(device):
    """A per-pixel state doubles its size at every level; a smooth (linear) depth map in
    normalised coordinates stays the same function (the centred pyramid's map)."""
    def depth_at(size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        u = (2 * torch.arange(w, dtype=torch.float64, device=device) + 1) / w - 1
        v = (2 * torch.arange(h, dtype=torch.float64, device=device) + 1) / h - 1
        return (2.0 + 0.3 * u[None, :] - 0.2 * v[:, None])[None, None]

    out = coarse_to_fine(depth_at((8, 12)), [(32, 48), (16, 24), (8, 12)], lambda d, level: d, carry_upsampled)
    assert [tuple(d.shape[-2:]) for d in out] == [(8, 12), (16, 24), (32, 48)]
    inner = (..., slice(4, -4), slice(4, -4))  # bilinear upsampling clamps at the border, twice
    assert torch.allclose(out[-1][inner], depth_at((32, 48))[inner], atol=1e-12)


def test_solve_sees_the_carried_state(device):
    calls = []
    out = coarse_to_fine(torch.zeros(1, 1, 2, 2, device=device), [(8, 8), (4, 4), (2, 2)],
                         lambda d, level: calls.append(tuple(d.shape[-2:])) or d + 1, carry_upsampled)
    assert calls == [(2, 2), (4, 4), (8, 8)]
    assert float(out[-1].mean()) == 3.0


def test_pad_history_pads_with_nan_not_repeats(device):
    losses = [torch.tensor([4.0, 3.0], device=device), torch.tensor([2.0, 3.0], device=device), torch.tensor([1.0, 3.0], device=device)]
    h = pad_history(losses, torch.tensor([3, 1], device=device), 5)
    assert h.shape == (2, 5)
    assert h[0, :3].tolist() == [4.0, 2.0, 1.0] and torch.isnan(h[0, 3:]).all()
    assert h[1, 0] == 3.0 and torch.isnan(h[1, 1:]).all()


def test_status_codes_and_result_base(device):
    status = sample_status(
        torch.tensor([True, False, True, True], device=device),
        degenerate=torch.tensor([False, False, True, False], device=device),
        finite=torch.tensor([True, True, True, False], device=device),
    )
    assert status.device.type == torch.device(device).type
    assert status.tolist() == [SolverStatus.CONVERGED, SolverStatus.ITERATION_LIMIT, SolverStatus.DEGENERATE_INPUT, SolverStatus.DIVERGED]
    history = pad_history([torch.tensor([3.0, 5.0], device=device), torch.tensor([2.0, 4.0], device=device)], torch.tensor([2, 1], device=device), 3)
    result = SolverResult([history], torch.tensor([[2, 1]], device=device), 0.5, status[:2])

    assert result.converged.tolist() == [True, False]
    assert result.final_loss().tolist() == [2.0, 5.0]


def test_progress_protocol():
    class Bar:
        def __call__(self, level: int, iteration: int, loss: torch.Tensor) -> None:
            self.last = (level, iteration, loss)

    assert isinstance(Bar(), ProgressCallback)
    assert not isinstance(object(), ProgressCallback)


def test_history_and_status_need_no_host_sync():
    """pad_history and sample_status are tensor work only: on the meta device (no data),
    any read of a value (.item(), bool(), .tolist()) would raise."""
    meta = torch.device("meta")
    h = pad_history([torch.empty(3, device=meta)] * 2, torch.empty(3, dtype=torch.long, device=meta), 4)
    assert h.device == meta and h.shape == (3, 4)
    flags = [torch.empty(3, dtype=torch.bool, device=meta) for _ in range(3)]
    status = sample_status(flags[0], degenerate=flags[1], finite=flags[2])
    assert status.device == meta and status.dtype == torch.int8 and status.shape == (3,)
