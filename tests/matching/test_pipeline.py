"""gradcv.matching.match_pair: the two-view pipeline on a real photograph under known
homographies (160 x 120 crops, a few hundred features: the whole file runs in seconds)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from gradcv.core_ops.color import rgb_to_grayscale
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from gradcv.matching import MatchConfig, MatchResult, MatchStatus, distinct_inliers, match_pair
from tests.depth._tiny import _move, on

H_, W_ = 120, 160
FEATURES = 300


def _about_centre(M: np.ndarray) -> np.ndarray:
    c = np.array([[1.0, 0.0, (W_ - 1) / 2], [0.0, 1.0, (H_ - 1) / 2], [0.0, 0.0, 1.0]])
    return c @ M @ np.linalg.inv(c)


def _homography(angle_deg: float, scale: float, px: float = 0.0, py: float = 0.0) -> np.ndarray:
    a = math.radians(angle_deg)
    M = np.array([[scale * math.cos(a), -scale * math.sin(a), 0.0], [scale * math.sin(a), scale * math.cos(a), 0.0], [px, py, 1.0]])
    H = _about_centre(M)
    return H / H[2, 2]


def _warp(image: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``image`` seen through ``H`` (image-1 pixels -> image-2 pixels), pixel centres at integers."""
    return cv2.warpPerspective(image, H, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _corner_error(H: np.ndarray, H_true: np.ndarray) -> float:
    corners = np.array([[0.0, 0.0, 1.0], [W_ - 1.0, 0.0, 1.0], [W_ - 1.0, H_ - 1.0, 1.0], [0.0, H_ - 1.0, 1.0]]).T
    p, q = H @ corners, H_true @ corners
    return float(np.linalg.norm(p[:2] / p[2] - q[:2] / q[2], axis=0).mean())


def _t(image: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def crop(photo_gray) -> np.ndarray:
    """A 160 x 120 crop of grace_hopper's face and uniform, gray."""
    return photo_gray[0][150 : 150 + H_, 180 : 180 + W_].copy()


@pytest.fixture(scope="module")
def crop_rgb(photos) -> np.ndarray:
    return photos[0][150 : 150 + H_, 180 : 180 + W_].copy()


HOMOGRAPHIES = {
    "rotation": _homography(25.0, 1.0),
    "scale": _homography(0.0, 1.3),
    "perspective": _homography(-10.0, 0.9, 4e-4, -3e-4),
}


@pytest.mark.parametrize("name", sorted(HOMOGRAPHIES))
def test_recovers_a_known_homography(crop, name, device):
    H_true = HOMOGRAPHIES[name]
    r = on(device, match_pair, _t(crop), _t(_warp(crop, H_true)), num_features=FEATURES)
    assert isinstance(r, MatchResult)
    assert r.status.tolist() == [int(MatchStatus.FOUND)]
    assert int(r.num_inliers[0]) >= 30 and int(r.num_distinct_inliers[0]) >= 0.9 * int(r.num_inliers[0])
    assert _corner_error(r.homography[0].numpy(), H_true) <= 3.0
    # The inliers are correct matches under the true homography (within the RANSAC threshold, plus slack).
    p1, p2 = r.matched_keypoints()
    sel = r.inliers[0]
    proj = torch.cat([p1[0][sel].double(), torch.ones(int(sel.sum()), 1, dtype=torch.float64)], 1) @ torch.from_numpy(H_true).T
    err = (proj[:, :2] / proj[:, 2:] - p2[0][sel].double()).norm(dim=1)
    assert float((err <= 4.0).double().mean()) >= 0.95


@pytest.mark.parametrize("overrides", [dict(detector="dog", contrast_threshold=0.0), dict(matcher="mnn"), dict(orientation=False)],
                         ids=["dog", "mnn", "upright"])
def test_options_recover_a_rotation(crop, overrides, device):
    H_true = _homography(8.0, 1.1)  # a small rotation: the upright variant still matches
    r = on(device, match_pair, _t(crop), _t(_warp(crop, H_true)), num_features=FEATURES, **overrides)
    assert r.status.tolist() == [int(MatchStatus.FOUND)]
    assert _corner_error(r.homography[0].numpy(), H_true) <= 3.0


@pytest.mark.parametrize("matcher", ["snn", "mnn"])
def test_unrelated_images_give_few_inliers(crop, photo_gray, matcher, device):
    other = photo_gray[1][200 : 200 + H_, 300 : 300 + W_]  # coffee: textured, unrelated
    r = on(device, match_pair, _t(crop), _t(other), num_features=FEATURES, matcher=matcher)
    assert int(r.num_distinct_inliers[0]) < r.config.min_inliers
    assert r.status.tolist() == [int(MatchStatus.FEW_INLIERS)]
    if matcher == "mnn":
        assert int(r.num_matches[0]) >= 20  # RANSAC really rejected something


def test_distinct_inliers_count_each_keypoint_once(device):
    # img1 keypoints 0, 1, 2 all matched to img2's 5 (the ratio test allows it), 3 to 6;
    # slot 4 is an outlier, slot 5 padding.
    matches = torch.tensor([[[0, 5], [1, 5], [2, 5], [3, 6], [4, 7], [0, 0]]])
    inliers = torch.tensor([[True, True, True, True, False, False]])
    assert on(device, distinct_inliers, matches, inliers, 6, 8).tolist() == [2]
    assert on(device, distinct_inliers, matches[:, [3, 4]], torch.tensor([[True, True]]), 6, 8).tolist() == [2]
    assert on(device, distinct_inliers, matches[:0], inliers[:0], 6, 8).shape == (0,)


def test_batch_equals_single_calls(crop, photo_gray, device):
    H_true = HOMOGRAPHIES["perspective"]
    a1, a2 = _t(crop), _t(_warp(crop, H_true))
    b1 = _t(photo_gray[0][300 : 300 + H_, 100 : 100 + W_])
    b2 = _t(_warp(photo_gray[0][300 : 300 + H_, 100 : 100 + W_], HOMOGRAPHIES["rotation"]))
    both = on(device, match_pair, torch.cat([a1, b1]), torch.cat([a2, b2]), num_features=FEATURES)
    for i, (x1, x2, H) in enumerate(((a1, a2, H_true), (b1, b2, HOMOGRAPHIES["rotation"]))):
        one = on(device, match_pair, x1, x2, num_features=FEATURES)
        torch.testing.assert_close(both.keypoints1[i], one.keypoints1[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(both.keypoints2[i], one.keypoints2[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(both.descriptors1[i], one.descriptors1[0], atol=1e-4, rtol=0)
        assert torch.equal(both.valid1[i], one.valid1[0]) and torch.equal(both.valid2[i], one.valid2[0])
        assert torch.equal(both.matches[i], one.matches[0]) and torch.equal(both.match_mask[i], one.match_mask[0])
        # RANSAC's draws depend on the batch position: equally good, not bit-identical.
        assert both.status[i] == one.status[0] == int(MatchStatus.FOUND)
        assert abs(int(both.num_inliers[i]) - int(one.num_inliers[0])) <= 0.05 * int(one.num_inliers[0]) + 2
        assert _corner_error(both.homography[i].numpy(), one.homography[0].numpy()) <= 0.5
        assert _corner_error(both.homography[i].numpy(), H) <= 3.0


def test_ransac_over_the_filled_slots_equals_ransac_over_all(crop, photo_gray, device):
    # match_pair hands RANSAC only the match slots some pair fills (the valid ones come
    # first); padding weighs nothing, so RANSAC over every slot gives the same model.
    from gradcv.core_ops.geometry.robust import ransac

    other = _t(photo_gray[1][200 : 200 + H_, 300 : 300 + W_])  # unrelated: a few matches beside many
    x1, x2 = torch.cat([_t(crop), _t(crop)]), torch.cat([_t(_warp(crop, HOMOGRAPHIES["rotation"])), other])
    r = on(device, match_pair, x1, x2, num_features=FEATURES)
    c = r.config
    assert 4 <= int(r.num_matches.max()) < r.matches.shape[1]  # really fewer filled slots than slots
    p1, p2 = r.matched_keypoints()
    h, inliers = ransac(p1.detach().double().cpu(), p2.detach().double().cpu(), r.match_mask.double().cpu(), inl_th=c.ransac_threshold,
                        batch_size=c.ransac_batch_size, max_iter=c.ransac_iterations, confidence=c.ransac_confidence, seed=c.seed)
    assert r.inliers.shape == r.match_mask.shape
    assert torch.equal(r.inliers.cpu(), inliers & r.match_mask.cpu())
    torch.testing.assert_close(r.homography.cpu(), h, atol=1e-6, rtol=1e-6)


def test_chunks_side_by_side_on_threads_equal_one_thread(crop, photo_gray, monkeypatch):
    # With two intra-op threads the CPU describes the image chunks side by side, one thread
    # each: every chunk's features are those of a 1-thread run, bit for bit.
    import gradcv.core_ops.features.integrated as integrated

    monkeypatch.setattr(integrated, "CPU_CHUNK_PIXELS", H_ * W_)  # one image a chunk: 4 chunks, 2 rounds
    other = _t(photo_gray[1][200 : 200 + H_, 300 : 300 + W_])
    x1, x2 = torch.cat([_t(crop), other]), torch.cat([_t(_warp(crop, HOMOGRAPHIES["rotation"])), _t(crop)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = match_pair(x1, x2, num_features=FEATURES)
        torch.set_num_threads(2)
        side = match_pair(x1, x2, num_features=FEATURES)
        assert torch.get_num_threads() == 2  # the caller's count is restored
    finally:
        torch.set_num_threads(threads)
    for name in ("keypoints1", "keypoints2", "descriptors1", "descriptors2", "responses1", "valid2", "matches", "match_mask", "inliers"):
        assert torch.equal(getattr(one, name), getattr(side, name)), name
    assert int(one.num_inliers[0]) >= 30


def test_rgb_equals_grayscale(crop_rgb, device):
    H_true = HOMOGRAPHIES["rotation"]
    x1 = _t(crop_rgb).to(device)
    x2 = _t(_warp(crop_rgb, H_true)).to(device)
    rgb = _move(match_pair(x1, x2, num_features=FEATURES), "cpu")
    gray = _move(match_pair(rgb_to_grayscale(x1), rgb_to_grayscale(x2), num_features=FEATURES), "cpu")
    assert torch.equal(rgb.keypoints1, gray.keypoints1) and torch.equal(rgb.descriptors2, gray.descriptors2)
    assert torch.equal(rgb.matches, gray.matches) and torch.equal(rgb.inliers, gray.inliers)
    assert torch.equal(rgb.homography, gray.homography)
    assert _corner_error(rgb.homography[0].numpy(), H_true) <= 3.0


def test_result_shapes_and_padding(crop, device):
    x1, x2 = _t(crop).double(), _t(_warp(crop, HOMOGRAPHIES["scale"])).double()
    r = on(device, match_pair, x1, x2, num_features=FEATURES)
    n = FEATURES
    assert r.keypoints1.shape == (1, n, 2) and r.keypoints2.shape == (1, n, 2)
    assert r.lafs1.shape == (1, n, 2, 3) and r.descriptors1.shape == (1, n, 128)
    assert r.matches.shape == (1, n, 2) and r.matches.dtype == torch.int64
    assert r.match_mask.shape == r.inliers.shape == r.match_distances.shape == (1, n)
    assert r.homography.shape == (1, 3, 3) and r.homography.dtype == torch.float64
    assert r.keypoints1.dtype == torch.float64 and r.status.dtype == torch.int8 and r.wall_time > 0
    k = int(r.num_matches[0])
    assert bool(r.match_mask[0, :k].all()) and not bool(r.match_mask[0, k:].any())  # valid matches first
    assert bool((r.matches[0, :k, 0].diff() > 0).all())  # in ascending img1 index
    assert bool(r.valid1[0][r.matches[0, :k, 0]].all()) and bool(r.valid2[0][r.matches[0, :k, 1]].all())
    assert not bool(r.inliers[~r.match_mask].any())
    assert bool((r.match_distances[0, :k] <= 0.8).all()) and bool((r.match_distances[0, k:] == 0).all())
    assert bool((r.keypoints1[~r.valid1] == 0).all()) and bool((r.descriptors2[~r.valid2] == 0).all())


def test_empty_batch_noncontiguous_input_left_unchanged(crop, device):
    x1, x2 = _t(crop).to(device), _t(_warp(crop, HOMOGRAPHIES["rotation"])).to(device)
    before = x1.clone()
    r = match_pair(x1, x2, num_features=FEATURES)
    assert torch.equal(x1, before)
    wide1, wide2 = torch.zeros(1, 1, H_, 2 * W_, device=device), torch.zeros(1, 1, H_, 2 * W_, device=device)

    wide1[..., ::2], wide2[..., ::2] = x1, x2
    nc = match_pair(wide1[..., ::2], wide2[..., ::2], num_features=FEATURES)
    torch.testing.assert_close(nc.keypoints1, r.keypoints1, atol=1e-4, rtol=0)
    assert torch.equal(nc.matches, r.matches) and torch.equal(nc.homography, r.homography)
    empty = match_pair(x1[:0], x2[:0], num_features=FEATURES)
    assert empty.keypoints1.shape == (0, FEATURES, 2) and empty.matches.shape == (0, FEATURES, 2)
    assert empty.homography.shape == (0, 3, 3) and empty.status.shape == (0,)


def test_textureless_pair_reports_zero_inliers_and_a_status(crop, device):
    flat = torch.full((2, 1, H_, W_), 0.5)
    flat[1] = _t(crop)  # the second pair: a photograph against a flat image
    r = on(device, match_pair, flat, torch.full((2, 1, H_, W_), 0.5), num_features=FEATURES)
    assert r.num_inliers.tolist() == [0, 0] and r.num_matches.tolist() == [0, 0]
    assert r.status.tolist() == [int(MatchStatus.DEGENERATE_INPUT)] * 2
    for t in (r.keypoints1, r.keypoints2, r.descriptors1, r.descriptors2, r.match_distances, r.homography):
        assert bool(torch.isfinite(t).all())
    assert not bool(r.valid1[0].any()) and not bool(r.valid2.any())


def test_gradient_reaches_both_images(crop, device):
    x1 = _t(crop).double().requires_grad_()
    x2 = _t(_warp(crop, HOMOGRAPHIES["rotation"])).double().requires_grad_()
    r = on(device, match_pair, x1, x2, num_features=64, subpix="soft")
    p1, p2 = r.matched_keypoints()
    loss = r.match_distances.sum() + (p1 - p2).square().sum() * 1e-3 + r.descriptors1.sum()
    loss.backward()
    for x in (x1, x2):
        assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    assert r.homography.grad_fn is None


def test_config_presets_and_replace():
    assert MatchConfig.default() == MatchConfig()
    p = MatchConfig.paper()
    assert (p.detector, p.num_features, p.max_orientations, p.subpix) == ("hessian", 2500, 1, "soft")
    assert MatchConfig.paper(num_features=100).num_features == 100
    c = MatchConfig().replace(matcher="mnn", ransac_threshold=2.0)
    assert (c.matcher, c.ransac_threshold) == ("mnn", 2.0)
    with pytest.raises(ArgumentValueError) as e:
        MatchConfig().replace(threshold=2.0)
    assert e.value.name == "overrides"
    # scale_smoothing reaches either detector's pipeline (off by default).
    from gradcv.matching.pipeline import make_local_feature

    for detector in ("dog", "hessian"):
        assert not make_local_feature(MatchConfig(detector=detector, num_features=8)).scale_smoothing
        assert make_local_feature(MatchConfig(detector=detector, num_features=8, scale_smoothing=True)).scale_smoothing


@pytest.mark.parametrize("field, value, error", [
    ("detector", "harris", ArgumentValueError), ("num_features", 3, ArgumentValueError),
    ("num_features", 2.5, ArgumentTypeError), ("orientation", 1, ArgumentTypeError),
    ("matcher", "nn", ArgumentValueError), ("ratio", 1.5, ArgumentValueError), ("ratio", 0.0, ArgumentValueError),
    ("ransac_threshold", -1.0, ArgumentValueError), ("ransac_threshold", math.nan, ArgumentValueError),
    ("ransac_confidence", 0.0, ArgumentValueError), ("ransac_iterations", 0, ArgumentValueError),
    ("subpix", "cubic", ArgumentValueError), ("contrast_threshold", -0.1, ArgumentValueError),
    ("min_inliers", 3, ArgumentValueError), ("seed", -1, ArgumentValueError), ("scale_smoothing", 1, ArgumentTypeError),
])
def test_bad_config_values_raise_typed_errors(field, value, error):
    with pytest.raises(error) as e:
        MatchConfig(**{field: value})
    assert e.value.name == field
    img = torch.rand(1, 1, 48, 48)
    with pytest.raises(error) as e:
        match_pair(img, img, **{field: value})
    assert e.value.name == field


def test_bad_input_raises_typed_errors():
    img = torch.rand(1, 1, 64, 64)
    cases = [
        ((torch.rand(1, 3, 64, 64), img), ShapeError, "img2"),  # different channel counts
        ((img, torch.rand(1, 1, 64, 72)), ShapeError, "img2"),  # different sizes
        ((img, torch.rand(2, 1, 64, 64)), ShapeError, "img2"),  # different batch
        ((torch.rand(1, 2, 64, 64),) * 2, ShapeError, "img1"),  # neither gray nor RGB
        ((torch.rand(1, 1, 40, 64),) * 2, ShapeError, "img1"),  # smaller than a patch
        ((torch.rand(64, 64), img), ShapeError, "img1"),
        ((torch.zeros(1, 1, 64, 64, dtype=torch.uint8), img), DTypeError, "img1"),
        ((img, img.double()), DTypeError, "img2"),
        ((img, "image"), ArgumentTypeError, "img2"),
        ((img, torch.full((1, 1, 64, 64), math.nan)), ArgumentValueError, "img2"),
    ]
    for args, error, name in cases:
        with pytest.raises(error) as e:
            match_pair(*args)
        assert e.value.name == name, (args[0].shape, e.value)
    with pytest.raises(ArgumentTypeError) as e:
        match_pair(img, img, config={"matcher": "mnn"})
    assert e.value.name == "config"
    with pytest.raises(ArgumentValueError) as e:
        match_pair(img, img, num_feature=10)
    assert e.value.name == "overrides"


def test_side_by_side_pieces_all_run_on_one_thread_workers():
    """Every piece goes to a worker of one intra-op thread, an odd one out too (3 pieces on 2
    threads): a piece left to the caller would run with both threads and round a reduction
    differently. Results come back in order."""
    import threading

    from gradcv.matching._threads import run_pieces

    def piece(k: int) -> tuple[str, int, int]:
        return threading.current_thread().name, torch.get_num_threads(), k

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = run_pieces(piece, [(0,), (1,), (2,)], torch.device("cpu"))
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        alone = run_pieces(piece, [(0,), (1,)], torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert [k for _, _, k in out] == [0, 1, 2]
    assert all(name.startswith("gradcv-matching") and n == 1 for name, n, _ in out), out
    assert all(name == threading.current_thread().name for name, _, _ in alone)  # one thread: in place


def test_a_tensor_on_another_device_is_a_device_error_naming_it():
    from gradcv.core_ops.errors import DeviceError
    from gradcv.matching import attack_pair

    img = torch.rand(1, 1, 64, 64)
    with pytest.raises(DeviceError, match="img2: expected a tensor on cpu"):
        match_pair(img, img.to("meta"))
    with pytest.raises(DeviceError, match="target_homography: expected a tensor on cpu"):
        attack_pair(img, img, torch.eye(3)[None].to("meta"))
