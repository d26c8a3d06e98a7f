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
