"""The plane sweep, SGM and the metrics on the meta device (shapes, no data): no tensor made
on the CPU behind the inputs' backs and no value read on the host (.item(), bool(),
.tolist() raise on meta), so a GPU runs them without a transfer or a synchronisation. The
solver is not here: it reads a few values on purpose (the clipped fraction, the range
quantiles, one per call)."""

from __future__ import annotations

import pytest
import torch

from gradcv.depth.metrics import metrics
from gradcv.depth.plane_sweep import plane_sweep
from gradcv.depth.sgm import semi_global_aggregation
from tests.depth._tiny import _move, tiny_scene

META = torch.device("meta")


@pytest.mark.parametrize("options", [{}, dict(aggregation="min", shiftable=True, subpixel=True, sgm=(0.02, 0.2))],
                         ids=["plain", "all_options"])
def test_plane_sweep_runs_on_the_meta_device(options):
    s = _move(tiny_scene(), META)
    masks = torch.empty(1, 3, 1, 48, 64, device=META)
    result = plane_sweep(s.images[None], s.intrinsics[None], s.extrinsics[None], depth_range=(2.0, 8.0), planes=8,
                         masks=masks, **options)
    assert all(t.device == META for t in result) and result.depth.shape == (1, 1, 48, 64)


def test_sgm_and_metrics_run_on_the_meta_device():
    cost = torch.empty(2, 5, 8, 9, device=META)
    assert semi_global_aggregation(cost, torch.empty(2, 3, 8, 9, device=META), 0.1, 0.5).device == META
    out = metrics(torch.empty(2, 1, 8, 8, device=META), torch.empty(2, 1, 8, 8, device=META),
                  torch.empty(2, 1, 8, 8, dtype=torch.bool, device=META))
    assert all(v.device == META and v.shape == (2,) for v in out.values())


def test_a_tensor_on_another_device_is_a_typed_error_naming_it():
    """Checked before any work, by reading .device only (no synchronisation): here the
    meta device stands for a GPU beside the CPU."""
    from gradcv.core_ops.errors import DeviceError
    from gradcv.depth.solver import estimate_depth

    s = tiny_scene()
    images, K, E = s.images[None], s.intrinsics[None], s.extrinsics[None]
    on_meta = images.to(META)
    cases = [
        (lambda: plane_sweep(on_meta, K, E, depth_range=(2.0, 8.0), planes=4), "intrinsics"),
        (lambda: plane_sweep(on_meta, K.to(META), E, depth_range=(2.0, 8.0), planes=4), "extrinsics"),
        (lambda: plane_sweep(images, K, E, depth_range=(2.0, 8.0), planes=4, masks=torch.ones(1, 3, 1, 48, 64, device=META)), "masks"),
        (lambda: estimate_depth(on_meta, K, E), "intrinsics"),
        (lambda: estimate_depth(images, K, E.to(META)), "extrinsics"),
        (lambda: estimate_depth(images, K, E, masks=torch.ones(1, 3, 1, 48, 64, device=META)), "masks"),
        (lambda: estimate_depth(images, K, E, initial_depth=torch.ones(1, 1, 48, 64, device=META)), "initial_depth"),
        (lambda: semi_global_aggregation(torch.rand(1, 3, 4, 5), torch.empty(1, 1, 4, 5, device=META), 0.1, 0.5), "guide"),
        (lambda: metrics(torch.ones(1, 1, 4, 4), torch.empty(1, 1, 4, 4, device=META)), "gt"),
        (lambda: metrics(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4),
                         torch.empty(1, 1, 4, 4, dtype=torch.bool, device=META)), "mask"),
    ]
    for call, name in cases:
        with pytest.raises(DeviceError) as info:
            call()
        assert info.value.name == name and str(info.value).startswith(name), str(info.value)
