"""The rescue of undetermined pairs (``RegistrationConfig.rescue_steps``): its starts, the
pruning of the candidates down the pyramid, the trust rules of the final pick, what
triggers it (a sliver too), and that a rescued pair ends the same in a batch, alone and
with all-ones masks."""

from __future__ import annotations

import math

import pytest
import torch

import gradcv.registration.solver as solver
from gradcv.core_ops.pyramid import build_centred_pyramid
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.data import corner_error, make_pairs
from gradcv.registration.motion import motion_matrix, motion_parameters
from gradcv.registration.sampling import frame_corners, frame_matrix, pixel_homography, project_corners
from gradcv.registration.solver import HomographyRegistration, register_homography, rescue_starts
from tests.registration._pairs import gray, on

SIZE = (128, 128)
TO_PX = 64.0  # frame units -> pixels for a 128 x 128 image
FLOOR = torch.tensor([solver.RESCUE_OVERLAP])  # in view at least: a quarter of the image (no masks)


@pytest.fixture(scope="module")
def detone32(photos):
    """The eight DeTone pairs of test_default (a single start loses some of them)."""
    return make_pairs([gray(p)[0] for p in photos], 8, protocol="detone", rho=32, seed=3)


def shifted(*pixels: tuple[float, float]) -> torch.Tensor:
    """``(n, 8)`` homography parameters of frame translations given in pixels."""
    G = torch.eye(3, dtype=torch.float64).repeat(len(pixels), 1, 1)
    for i, (x, y) in enumerate(pixels):
        G[i, 0, 2], G[i, 1, 2] = x / TO_PX, y / TO_PX
    return motion_parameters("homography", G, frame_corners(*SIZE, torch.float64, "cpu")).float()


def corners_px(theta: torch.Tensor) -> torch.Tensor:
    corners = frame_corners(*SIZE, torch.float32, "cpu")
    return project_corners(motion_matrix("homography", theta, corners), corners) * TO_PX


def test_starts_span_the_grid_and_the_turns():
    cfg = RegistrationConfig()
    theta0 = shifted((0.0, 0.0), (5.0, -3.0))
    starts = rescue_starts(cfg, theta0, frame_corners(*SIZE, torch.float32, "cpu"), TO_PX)
    K = (2 * cfg.rescue_steps + 1) ** 2 * len(solver.RESCUE_TURNS)
    assert starts.shape == (2 * K, 8)
    c = corners_px(starts).view(2, K, 4, 2)
    c0 = corners_px(theta0)
    # each pair's own start is among them (no turn, no shift), and the grid reaches
    # RESCUE_RANGE * search_range pixels (the untransformed turn's corners move rigidly)
    for r in range(2):
        assert (c[r] - c0[r]).abs().amax((1, 2)).min() < 1e-4
        shift = (c[r, :, 0] - c0[r, 0]).abs().amax(-1)
        assert abs(float(shift[: (2 * cfg.rescue_steps + 1) ** 2].max()) - solver.RESCUE_RANGE * cfg.search_range) < 1e-3


def test_prune_keeps_the_lowest_loss_of_each_cluster():
    """Five candidates of one pair: two within a pixel of each other (one cluster of two
    starts), two others in view and a sliver with the lowest loss, which never counts."""
    pyr = build_centred_pyramid(torch.rand(5, 1, *SIZE, generator=torch.Generator().manual_seed(0)), 2, 0.8)
    theta = shifted((0.0, 0.0), (0.5, 0.0), (20.0, 0.0), (0.0, 40.0), (120.0, 120.0))
    loss = torch.tensor([3.0, 1.0, 2.0, 0.5, 0.0])
    members = torch.eye(5, dtype=torch.bool)[None]  # one start behind each
    corners = frame_corners(*SIZE, torch.float32, "cpu")
    kept, behind = solver._prune(RegistrationConfig(), theta, loss, members, FLOOR, 1, pyr, None, corners, 3)
    assert kept.shape == (3, 8)
    assert torch.allclose(kept, theta[[3, 1, 2]])
    assert behind.sum(-1).tolist() == [[1, 2, 1]]
    assert behind[0, 1].tolist() == [True, True, False, False, False]
    # fewer distinct candidates than asked for: the missing ones count no starts
    _, behind = solver._prune(RegistrationConfig(), theta[:2], loss[:2], members[:, :2], FLOOR, 1, [p[:2] for p in pyr], None, corners, 2)
    assert behind.sum(-1).tolist() == [[2, 0]]
    # one start entered at two levels and ending in one place is still one start
    _, behind = solver._prune(RegistrationConfig(), theta[:2], loss[:2], members[:, [0, 0]], FLOOR, 1, [p[:2] for p in pyr], None, corners, 2)
    assert behind.sum(-1).tolist() == [[1, 0]]


def _members(count: list[int]) -> torch.Tensor:
    """``(1, M, S)``: distinct starts, ``count[m]`` of them behind candidate ``m``."""
    ids = torch.arange(sum(count))
    return torch.stack([(ids >= sum(count[:m])) & (ids < sum(count[: m + 1])) for m in range(len(count))])[None]


@pytest.mark.parametrize(
    "count, uncertainty, own, sliver, expected",
    [
        ([1, 1], [0.2, 0.3], 1.0, False, None),  # one start at 0.2 px: not trusted; 0.3 > half the bound
        ([2, 1], [0.2, 0.05], 1.0, False, 1),  # both trusted, the more certain wins
        ([2, 1], [0.2, 0.3], 1.0, False, 0),
        ([2, 1], [0.2, 0.3], 0.1, False, None),  # the pair's own result is more certain
        ([2, 1], [0.2, 0.3], 0.0, True, 0),  # ... unless it was a sliver
        ([0, 2], [0.01, 0.2], 1.0, False, 1),  # a slot no start reached is never taken
    ],
)
def test_choose_trusts_consensus_or_a_far_better_bound(count, uncertainty, own, sliver, expected):
    cfg = RegistrationConfig()
    theta = shifted((0.0, 0.0), (10.0, 0.0))
    best, better = solver._choose(
        cfg, theta, torch.full((2,), 0.9), torch.tensor(uncertainty), _members(count), FLOOR,
        frame_corners(*SIZE, torch.float32, "cpu"), TO_PX, torch.tensor([own]), torch.tensor([sliver]),
    )
    assert bool(better[0]) == (expected is not None)
    if expected is not None:
        assert int(best[0]) == expected


def test_choose_counts_a_start_once():
    """Two candidates in one place: behind them two starts, or one start twice (entered at
    two levels). Only the first is consensus; the second must meet the single start's bound."""
    cfg = RegistrationConfig()
    theta = shifted((0.0, 0.0), (0.2, 0.0))
    args = (frame_corners(*SIZE, torch.float32, "cpu"), TO_PX, torch.tensor([1.0]), torch.tensor([False]))
    two = torch.tensor([[[True, False], [False, True]]])
    once = torch.tensor([[[True, False], [True, False]]])
    _, better = solver._choose(cfg, theta, torch.full((2,), 0.9), torch.tensor([0.2, 0.2]), two, FLOOR, *args)
    assert bool(better[0])
    _, better = solver._choose(cfg, theta, torch.full((2,), 0.9), torch.tensor([0.2, 0.2]), once, FLOOR, *args)
    assert not bool(better[0])


def test_a_sliver_is_rescued(detone32):
    """A result whose warp keeps a sliver in view reads as determined (almost nothing to
    be uncertain about): the rescue retries it from the initial homography's grid."""
    src, dst, H = (x[:1] for x in detone32)
    reg = HomographyRegistration()
    cfg = reg.config
    corners = frame_corners(*SIZE, torch.float32, "cpu")
    pyramids = tuple(build_centred_pyramid(x, cfg.levels, cfg.blur_sigma) for x in (src, dst)) + (None,)
    sliver = shifted((110.0, 110.0))
    judged = (torch.tensor([True]), torch.tensor([0.02]), torch.tensor([0.0]))
    theta, _, (_, overlap, uncertainty) = reg._rescue(
        (src, dst), pyramids, shifted((0.0, 0.0)), sliver, torch.tensor([True]), judged, corners
    )
    A = frame_matrix(*SIZE, torch.float64, "cpu")
    found = pixel_homography(motion_matrix(cfg.motion, theta, corners), A, torch.float64)
    assert corner_error(found, H, SIZE).item() < 0.05
    assert float(overlap[0]) > 0.25 and float(uncertainty[0]) < 0.25 * cfg.max_uncertainty


def test_rescued_pairs_end_the_same_in_a_batch_alone_and_masked(detone32, device):
    """The rescue's pair-major bookkeeping: two pairs a single start loses, rescued beside
    a pair it registers, end where each ends alone, and all-ones masks change nothing."""
    src, dst, H = detone32
    single = corner_error(register_homography(src, dst, search_steps=0, rescue_steps=0).homography, H, SIZE)
    lost = (single > 1.0).nonzero()[:, 0].tolist()
    assert len(lost) >= 1, single
    pick = (lost * 2)[:2] + [int(single.argmin())]
    s, d, h = src[pick], dst[pick], H[pick]
    batched = on(device, register_homography, s, d, search_steps=0)
    assert corner_error(batched.homography, h, SIZE).max() < 0.05
    assert bool(batched.converged.all())
    alone = on(device, register_homography, s[:1], d[:1], search_steps=0)
    assert corner_error(batched.homography[:1], alone.homography, SIZE).item() < 1e-3
    ones = torch.ones_like(s[:, :1])
    masked = on(device, register_homography, s, d, src_mask=ones, dst_mask=ones, search_steps=0)
    assert corner_error(masked.homography, batched.homography, SIZE).max() < 1e-3
    assert not math.isnan(float(masked.homography.sum()))


def test_no_rescue_without_the_uncertainty_test_and_masks_make_no_sliver(detone32, monkeypatch):
    """With ``max_uncertainty=inf`` nothing is judged, so nothing is rescued; a result that
    keeps most of what small masks leave in view is no sliver, however small the masks."""
    def no_rescue(*args, **kwargs):
        raise AssertionError("the rescue ran")

    monkeypatch.setattr(solver, "rescue_starts", no_rescue)
    src, dst, _ = (x[:1] for x in detone32)
    register_homography(src, dst, max_uncertainty=math.inf, levels=2, iterations=2)
    reg = HomographyRegistration(feature_start=0)  # the grid itself (the feature start would take the sliver first)
    cfg = reg.config
    mask = torch.zeros(1, 1, *SIZE)
    mask[..., 40:90, 40:90] = 1.0  # 15 % of the image
    pyramids = tuple(build_centred_pyramid(x, cfg.levels, cfg.blur_sigma) for x in (src, dst))
    masks = reg._mask_pyramid(mask, mask, src)
    judged = (torch.tensor([True]), torch.tensor([0.12]), torch.tensor([0.0]))  # most of the masks' 15 %
    theta = shifted((0.0, 0.0))
    out, _, _ = reg._rescue((src, dst), pyramids + (masks,), theta, theta, torch.tensor([True]), judged,
                            frame_corners(*SIZE, torch.float32, "cpu"))
    assert torch.equal(out, theta)
    with pytest.raises(AssertionError, match="the rescue ran"):  # without the masks it is a sliver
        reg._rescue((src, dst), pyramids + (None,), theta, theta, torch.tensor([True]), judged,
                    frame_corners(*SIZE, torch.float32, "cpu"))
