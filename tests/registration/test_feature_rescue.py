"""The rescue's feature start (``RegistrationConfig.feature_start``): it recovers a
near-textureless DeTone pair of rocket's sky that no start of the grid reaches, runs only for
the rows that need it, changes nothing for the pairs that end determined, falls back to the
grid without NaN where there are no features, and its switch is validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradcv.registration.solver as solver
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError
from gradcv.optim import SolverStatus
from gradcv.registration import RegistrationConfig, corner_error, make_pairs, register_homography
from gradcv.core_ops.geometry import get_perspective_transform
from gradcv.registration.features import _preserves_orientation, feature_homography
from tests.registration._pairs import exact, gray, on

SIZE = (128, 128)
CONVERGED = int(SolverStatus.CONVERGED)
#: Rows of ``make_pairs(rocket, 12, protocol="detone", seed=9)``: pair 1 ends 674 px off
#: with the grid rescue alone (its coarse basins are all wrong), pair 3 12 px; pair 0 ends
#: determined at once.
HARD, HARD2, EASY = 1, 3, 0


@pytest.fixture(scope="module")
def rocket():
    data = pytest.importorskip("skimage.data")
    photo = np.ascontiguousarray(data.rocket(), dtype=np.float32) / 255.0
    return make_pairs(gray(photo), 12, protocol="detone", rho=32, seed=9)


def test_features_recover_a_pair_the_grid_loses(rocket):
    src, dst, H = (x[HARD : HARD + 1] for x in rocket)
    found_h, found = feature_homography(src, dst, 256)
    # a strong perspective (dst is src shrunk to 0.4): the start is within a pixel on dst's
    # corners taken back into src, the direction the solver works in
    back = corner_error(torch.linalg.inv(found_h), torch.linalg.inv(H), SIZE).item()
    assert bool(found[0]) and back < 1.5
    grid_only = register_homography(src, dst, feature_start=0)
    assert corner_error(grid_only.homography, H, SIZE).item() > 5.0
    assert int(grid_only.status[0]) != CONVERGED  # honest without the features
    result = register_homography(src, dst)
    assert corner_error(result.homography, H, SIZE).item() < 0.1
    assert int(result.status[0]) == CONVERGED


def test_rows_with_mixed_needs(rocket, device, monkeypatch):
    """Features only for the rows left undetermined; the determined row is bit for bit what
    the same batch gives without any rescue (the same batch: the PyTorch evaluation's
    batched products may round differently for another batch size); each rescued row ends
    where it ends alone."""
    calls = []
    real = solver.feature_homography

    def counted(src, *args, **kwargs):
        calls.append(src.shape[0])
        return real(src, *args, **kwargs)

    monkeypatch.setattr(solver, "feature_homography", counted)
    pick = [HARD, EASY, HARD2]
    src, dst, H = (x[pick] for x in rocket)
    batched = on(device, register_homography, src, dst)
    assert calls == [2]
    assert corner_error(batched.homography, H, SIZE).max() < 0.5
    assert batched.status.tolist() == [CONVERGED] * 3
    unrescued = on(device, register_homography, src, dst, rescue_steps=0)
    assert exact(batched.homography[1:2], unrescued.homography[1:2], device)
    alone = on(device, register_homography, src[2:], dst[2:])
    assert corner_error(batched.homography[2:], alone.homography, SIZE).item() < 0.05


def test_determined_pairs_never_call_the_features(rocket, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("features computed")

    monkeypatch.setattr(solver, "feature_homography", refuse)
    src, dst, _ = (x[EASY : EASY + 1] for x in rocket)
    with_features = register_homography(src, dst)
    without = register_homography(src, dst, feature_start=0)
    assert torch.equal(with_features.homography, without.homography)
    assert torch.equal(with_features.status, without.status)
    src, dst, _ = (x[HARD : HARD + 1] for x in rocket)
    register_homography(src, dst, feature_start=0)  # off: the grid alone, no feature call


def test_no_features_fall_back_to_the_grid_without_nan():
    """A constant image has no features; a smooth ramp (textured, but determined along one
    direction only) has none worth a homography: the grid takes the pair, nothing is NaN."""
    flat = torch.full((2, 1, *SIZE), 0.5)
    found_h, found = feature_homography(flat, flat, 64)
    assert not found.any() and torch.equal(found_h, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    _, found = feature_homography(flat[:, :, :32, :32], flat[:, :, :32, :32], 64)  # smaller than a patch
    assert not found.any()
    ramp = torch.linspace(0.2, 0.7, SIZE[1]).expand(1, 1, *SIZE).contiguous()
    result = register_homography(ramp, ramp.roll(3, -1), levels=3, iterations=5)
    assert torch.isfinite(result.homography).all()
    assert int(result.status[0]) in {int(s) for s in SolverStatus}


def test_images_smaller_than_a_patch_skip_the_features(monkeypatch):
    """A 32² pair left undetermined goes straight to the grid: no descriptor patch fits."""
    calls = []
    monkeypatch.setattr(solver, "feature_homography", lambda *args, **kwargs: calls.append(1))
    monkeypatch.setattr(solver.HomographyRegistration, "_grid_rescue", lambda self, *args: calls.append(2) or (args[5], args[6], args[7]))
    ramp = torch.linspace(0.2, 0.7, 32).expand(1, 1, 32, 32).contiguous()
    # No photometric model: with a bias term every shift along a ramp fits exactly, the
    # residual is rounding noise, and the corners' uncertainty (scaled by the residual)
    # says "determined" or not by that noise (0.23 px on the fused evaluation, 2.3 on the
    # PyTorch one; 0.19 with least squares). Without it the pair is undetermined (8.8 px).
    result = register_homography(ramp, ramp.roll(3, -1), levels=1, iterations=5, photometric="none")
    assert calls == [2] and torch.isfinite(result.homography).all()


def test_orientation_is_judged_where_the_solver_works():
    """A DeTone truth whose moved corners make a thin quadrilateral (a rocket pair's, corners
    moved up to 32 px) has ``det(H) < 0`` with ``H[2, 2] = 1`` and is still a valid start;
    its mirror image and a singular matrix are not."""
    c = torch.tensor([[0.0, 0.0], [127.0, 0.0], [127.0, 127.0], [0.0, 127.0]], dtype=torch.float64)
    moves = torch.tensor([[29.75, 22.82], [-21.99, -26.49], [11.62, -11.59], [-1.06, -31.64]], dtype=torch.float64)
    K = get_perspective_transform(c[None], (c + moves)[None])
    H = torch.linalg.inv(K)
    H = H / H[:, 2:, 2:]
    assert float(torch.linalg.det(H)[0]) < 0
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))[None] @ H
    singular = torch.zeros(1, 3, 3, dtype=torch.float64)
    singular[0, 0, 0] = singular[0, 2, 2] = 1.0
    ok = _preserves_orientation(torch.cat([H, mirror, singular, torch.eye(3, dtype=torch.float64)[None]]), SIZE)
    assert ok.tolist() == [True, False, False, True]


@pytest.mark.parametrize(
    "value, error",
    [(8, ArgumentValueError), (-1, ArgumentValueError), (2.5, ArgumentTypeError), (True, ArgumentTypeError)],
)
def test_the_switch_is_validated(value, error):
    with pytest.raises(error, match="feature_start"):
        RegistrationConfig(feature_start=value)
    assert RegistrationConfig(feature_start=0).feature_start == 0
    assert RegistrationConfig(feature_start=16).feature_start == 16


def test_only_rows_whose_features_found_a_homography_are_refined(rocket, monkeypatch):
    """The two undetermined rows get features; where they find nothing the row is not solved
    again from the identity (it could not be taken), and the grid takes it up."""
    real_features, real_solve = solver.feature_homography, solver.HomographyRegistration._solve
    refined = []

    def half(src, *args, **kwargs):
        H, found = real_features(src, *args, **kwargs)
        return H, found & (torch.arange(found.shape[0]) == 0)  # only the first finds one

    def counted(*args, levels=None, **kwargs):
        if levels is not None:  # the feature start's refinement (the main solve has no levels)
            refined.append(args[1].shape[0])
        return real_solve(*args, levels=levels, **kwargs)

    monkeypatch.setattr(solver, "feature_homography", half)
    monkeypatch.setattr(solver.HomographyRegistration, "_solve", staticmethod(counted))
    src, dst, _ = (x[[HARD, HARD2]] for x in rocket)
    result = register_homography(src, dst)
    assert refined[0] == 1 and torch.isfinite(result.homography).all()
