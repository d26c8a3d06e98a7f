"""The solver on the ``meta`` device: tensors with a shape, a dtype and a device but no
data. Any read of a value on the host (``.item()``, ``bool()``, ``float()`` of a tensor,
``.tolist()``, ``nonzero``) raises there, and so does a CPU tensor mixed into the
computation, as on a GPU. These tests catch, on a CPU-only machine, a host sync or a
tensor created without ``device=`` on the solver's path.

What reads the host on purpose, and is kept out of the meta runs (documented in the code):
the input checks (one finiteness reduction per input per call, before the loop, in
``registration.checks``: patched out here; ``check_initial`` and ``check_mask`` likewise,
so initial homographies and masks are not run here), the rescue (one ``nonzero`` of the
undetermined pairs per call: ``rescue_steps=0``), the second-order working set's
compaction (one look every 4 iterations: levels of 3 iterations here) and the search's
callback replay (one read once the level is over: no callback)."""

from __future__ import annotations

import pytest
import torch

import gradcv.registration.solver as solver
from gradcv.core_ops.errors import DeviceError, DTypeError
from gradcv.registration import RegistrationConfig, corner_error, register_homography

META = torch.device("meta")
CASES = {
    # two levels, the 9-start search, LM with ESM steps, the exposure model, the uncertainty judge
    "default": RegistrationConfig(levels=2, iterations=3, rescue_steps=0),
    # Gauss-Newton, IRLS weights, gain and bias, the affine generators, autograd through the loop
    "gauss_newton_affine_l1_differentiable": RegistrationConfig(
        levels=1, iterations=3, method="gauss_newton", motion="affine", loss="l1", photometric="gain_bias", differentiable=True
    ),
    # torch.optim's Adam, both warp directions, a similarity
    "first_order_symmetric": RegistrationConfig.first_order(levels=1, iterations=3, rescue_steps=0, symmetric=True, motion="similarity"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_register_homography_makes_no_host_read(monkeypatch, name):
    monkeypatch.setattr(solver, "check_images", lambda *args: None)
    x = torch.empty(2, 1, 64, 80, device=META)
    result = register_homography(x, torch.empty_like(x), config=CASES[name])
    assert result.homography.device == META and result.homography.shape == (2, 3, 3)
    assert result.status.device == META and result.status.shape == (2,)
    assert all(h.device == META for h in result.loss_history + result.homography_per_level)


def test_the_input_check_is_what_reads_the_host():
    """Without the patch the check's finiteness reduction is the read (so the test above
    exercises the rest, and would see a new read anywhere in it)."""
    x = torch.empty(1, 1, 64, 80, device=META)
    with pytest.raises((RuntimeError, NotImplementedError)):
        register_homography(x, x, config=CASES["default"])


def test_corner_error_names_a_homography_on_another_device():
    """A typed error naming ``H_true``, not PyTorch's cross-device message; on one device
    it runs (on meta too: no host read)."""
    with pytest.raises(DeviceError, match=r"H_true: expected a tensor on cpu \(the device of H_est\), got meta"):
        corner_error(torch.eye(3)[None], torch.empty(1, 3, 3, device=META), (8, 8))
    assert corner_error(torch.empty(2, 3, 3, device=META), torch.empty(2, 3, 3, device=META), (8, 8)).shape == (2,)


def test_dst_on_another_device_or_dtype_is_named():
    """``dst`` on another device than ``src`` is a :class:`DeviceError` naming both devices
    (checked from ``.device`` alone, before any value is read); another dtype a
    :class:`DTypeError` naming both dtypes."""
    src = torch.rand(1, 1, 64, 64)
    with pytest.raises(DeviceError, match=r"dst: expected a tensor on cpu \(the device of src\), got meta"):
        register_homography(src, torch.empty_like(src, device=META), levels=1, iterations=1)
    with pytest.raises(DTypeError, match=r"dst: expected dtype torch.float32 \(the dtype of src\), got torch.float64"):
        register_homography(src, src.double(), levels=1, iterations=1)
