"""The default preset (``RegistrationConfig()``): Levenberg–Marquardt with ESM steps,
Charbonnier reweighting, 4 levels and a 9-start search at the coarsest. Outcomes on
large motions (DeTone's rho = 32, where one start falls into wrong minima), the search's
bookkeeping, per-pair compaction, and the input checks that the 4 levels bring."""

from __future__ import annotations

import pytest
import torch

from gradcv.optim import SolverStatus
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.data import corner_error, make_pairs
from gradcv.registration.solver import register_homography
from tests.registration._pairs import gray, on


@pytest.fixture(scope="module")
def detone32(photos):
    """Eight DeTone pairs (128 x 128, corners moved up to 32 px) from four photographs."""
    return make_pairs([gray(p)[0] for p in photos], 8, protocol="detone", rho=32, seed=3)


def test_default_is_second_order_with_search():
    cfg = RegistrationConfig()
    assert (cfg.method, cfg.levels, cfg.loss, cfg.search_steps) == ("levenberg_marquardt", 4, "charbonnier", 1)
    assert RegistrationConfig.default() == cfg


def test_identity_at_every_level(photos, device):
    img = gray(photos[1])[..., 100:228, 200:344].contiguous()  # 128 x 144: the smallest 4 levels allow
    res = on(device, register_homography, img, img)
    eye = torch.eye(3)[None]
    for H in res.homography_per_level:
        assert corner_error(H, eye, (128, 144)).item() < 1e-3
    assert bool(res.converged.all())


def test_large_motions_recovered_where_one_start_fails(detone32, device):
    """rho = 32 on a 128 patch: the search recovers every pair to 0.05 px; a single start
    (the same solver without the search or the rescue) loses at least one to a wrong
    minimum; the rescue alone (no search) recovers it, from the uncertainty of its result."""
    src, dst, H = detone32
    err = corner_error(on(device, register_homography, src, dst).homography, H, (128, 128))
    assert err.max() < 0.05, err
    single = corner_error(on(device, register_homography, src, dst, search_steps=0, rescue_steps=0).homography, H, (128, 128))
    assert single.max() > 1.0, single
    rescued = on(device, register_homography, src, dst, search_steps=0)
    assert corner_error(rescued.homography, H, (128, 128)).max() < 0.05
    assert bool(rescued.converged[single > 1.0].all())


def test_batch_equals_one_by_one(detone32, device):
    """Pairs dropped from the working set as they stop end where they would alone (on the
    CPU in as many steps; a GPU's batched kernels may round a batch of four differently
    from one pair, so a pair near its tolerance may take a step more or less there)."""
    src, dst, _ = detone32
    batched = on(device, register_homography, src[:4], dst[:4])
    for i in range(4):
        alone = on(device, register_homography, src[i : i + 1], dst[i : i + 1])
        assert corner_error(batched.homography[i : i + 1], alone.homography, (128, 128)).item() < 1e-3
        if device == "cpu":
            assert torch.equal(batched.iterations_used[:, i], alone.iterations_used[:, 0])


def test_history_and_callback_with_search(detone32, device):
    src, dst, _ = detone32
    seen: list[tuple[int, int, tuple[int, ...]]] = []
    padding_reported: list[tuple[int, int]] = []

    def callback(level: int, step: int, loss: torch.Tensor) -> None:
        seen.append((level, step, tuple(loss.shape)))
        if bool(torch.isnan(loss).all()):
            padding_reported.append((level, step))

    res = on(device, register_homography, src[:2], dst[:2], callback=callback)
    cfg = RegistrationConfig()
    assert [h.shape for h in res.loss_history] == [(2, cfg.iterations)] * cfg.levels
    # LM keeps only decreases; where the search hands its picked start on, the parameters
    # pass through the corner parametrisation once (float32 rounding, 1e-7 relative).
    # NaN marks the steps a pair did not take (it had stopped): compared as never rising.
    for h in res.loss_history:
        later, earlier = h[:, 1:], h[:, :-1]
        both = ~torch.isnan(later) & ~torch.isnan(earlier)
        assert bool((later[both] <= earlier[both] * (1 + 1e-6)).all())
    assert {shape for _, _, shape in seen} == {(2,)}
    assert sorted({level for level, _, _ in seen}) == list(range(cfg.levels))
    assert res.iterations_used.shape == (cfg.levels, 2)
    # the callback reports steps, never the NaN padding after every pair stopped
    assert padding_reported == []


def test_search_range_zero_is_one_start(detone32, device):
    src, dst, _ = detone32
    a = on(device, register_homography, src[:2], dst[:2], search_range=0.0)
    b = on(device, register_homography, src[:2], dst[:2], search_steps=0, rescue_steps=0)
    assert torch.equal(a.homography, b.homography)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(search_steps=-1), ValueError, "search_steps"),
        (dict(search_steps=1.5), TypeError, "search_steps"),
        (dict(search_range=-2.0), ValueError, "search_range"),
    ],
)
def test_bad_search_settings(kwargs, error, name):
    x = torch.rand(1, 1, 128, 128)
    with pytest.raises(error, match=name):
        register_homography(x, x, **kwargs)


def test_image_too_small_for_four_levels_names_src():
    x = torch.rand(1, 1, 100, 100)
    with pytest.raises(ValueError, match=r"src: a short side of 100 px leaves 12 px"):
        register_homography(x, x)
    assert register_homography(x, x, levels=3).homography.shape == (1, 3, 3)


def test_textureless_pair_no_nan_not_converged(photos, device):
    img = gray(photos[0])[..., 200:328, 200:328].contiguous()
    flat = torch.full_like(img, 0.5)
    res = on(device, register_homography, torch.cat([img, flat]), torch.cat([img, flat]))
    assert torch.isfinite(res.homography).all()
    assert all(torch.isfinite(h[:, 0]).all() and not torch.isinf(h).any() for h in res.loss_history)
    assert res.converged.tolist() == [True, False]
    assert res.status.tolist() == [SolverStatus.CONVERGED, SolverStatus.DEGENERATE_INPUT]


def test_coarse_loss_is_validated_and_used(detone32, device):
    x = torch.rand(1, 1, 128, 128)
    with pytest.raises(ValueError, match="coarse_loss"):
        register_homography(x, x, coarse_loss="ssim")
    src, dst, H = detone32
    same = on(device, register_homography, src[:2], dst[:2], coarse_loss="charbonnier")
    default = on(device, register_homography, src[:2], dst[:2])
    assert not torch.equal(same.loss_history[1], default.loss_history[1])  # the coarse levels differ
    assert corner_error(same.homography, H[:2], (128, 128)).max() < 0.05


def _occluded(detone32, where: str):
    """Pairs 0-1 with a bright 40 x 40 occluder pasted into ``where`` ('src' or 'dst'), and
    the mask that zeroes it."""
    src, dst, H = (x[:2].clone() for x in detone32)
    mask = torch.ones(2, 1, 128, 128)
    mask[..., 30:70, 40:80] = 0
    target = src if where == "src" else dst
    target[..., 30:70, 40:80] = 1.0
    return src, dst, H, mask


@pytest.mark.parametrize("where", ["src", "dst"])
def test_masks_hide_an_occluder(detone32, where, device):
    """Least squares on the intensities (second order, L2 at every level, no photometric
    model) is pulled off by an occluder: every occluded pair ends pixels away (measured
    7-150 px; the default's photometric fit absorbs part of it, one pair of two); the mask
    on the image that holds it restores the sub-0.05 px result, with the default's
    photometric model too."""
    src, dst, H, mask = _occluded(detone32, where)
    cfg = RegistrationConfig(loss="l2")
    plain = corner_error(on(device, register_homography, src, dst, config=cfg, photometric="none").homography, H, (128, 128))
    masked = corner_error(on(device, register_homography, src, dst, config=cfg, **{f"{where}_mask": mask}).homography, H, (128, 128))
    assert plain.min() > 2.0, plain
    assert masked.max() < 0.05, masked


def test_masks_first_order(detone32, device):
    src, dst, H, mask = _occluded(detone32, "dst")
    cfg = RegistrationConfig.first_order(loss="l2", search_range=16.0, search_steps=1, levels=4)
    assert corner_error(on(device, register_homography, src, dst, dst_mask=mask, config=cfg).homography, H, (128, 128)).max() < 0.1


@pytest.mark.parametrize(
    "mask, error, message",
    [
        (torch.ones(1, 2, 128, 128), ValueError, r"dst_mask: expected shape \(1, 1, 128, 128\)"),
        (torch.full((1, 1, 128, 128), 2.0), ValueError, r"dst_mask: expected weights in \[0, 1\]"),
        (torch.full((1, 1, 128, 128), float("nan")), ValueError, "dst_mask"),
        ([[1.0]], TypeError, "dst_mask: expected a torch.Tensor"),
    ],
)
def test_bad_mask(mask, error, message):
    x = torch.rand(1, 1, 128, 128)
    with pytest.raises(error, match=message):
        register_homography(x, x, dst_mask=mask)
