"""Per-sample stopping by masks and working-set compaction."""

from __future__ import annotations

import math

import pytest
import torch

from gradcv.optim import PerSampleStopping, StoppingCriteria, WorkingSet, keep_stopped, relative_change

def test_patience_counts_consecutive_small_steps(device):
    stop = PerSampleStopping(StoppingCriteria(tolerance=1e-3, patience=3), 3, torch.device(device))
    # Sample 0: small every step; 1: small, large, small...; 2: never small.
    changes = [[1e-4, 1e-4, 1.0], [1e-4, 1.0, 1.0], [1e-4, 1e-4, 1.0], [1e-4, 1e-4, 1.0]]
    history = [stop.update(torch.tensor(c, device=device)).tolist() for c in changes]
    assert history[1] == [True, True, True]
    assert history[2] == [False, True, True]  # third small step in a row: stops
    assert history[3] == [False, True, True]  # sample 1's run restarted after its large step
    assert stop.steps.tolist() == [3, 4, 4]


def test_step_size_and_forced_stop(device):
    stop = PerSampleStopping(StoppingCriteria(tolerance=0.0, step_tolerance=0.5, patience=1), 3, torch.device(device))
    active = stop.update(torch.tensor([1.0, 1.0, 1.0], device=device), torch.tensor([0.1, 1.0, 1.0], device=device), torch.tensor([False, False, True], device=device))
    assert active.tolist() == [False, True, False]
    # NaN (a rejected step, or no previous loss) is never small.
    active = stop.update(torch.tensor([math.nan, math.nan, math.nan], device=device))
    assert active.tolist() == [False, True, False]


def test_no_host_sync_in_update():
    """update() is tensor work only: on the meta device (no data at all) any read of a
    value, as .item() or bool() would do, raises; several steps run."""
    meta = torch.device("meta")
    stop = PerSampleStopping(StoppingCriteria(tolerance=1e-3, step_tolerance=1e-2, patience=2), 4, meta)
    for _ in range(3):
        active = stop.update(torch.empty(4, device=meta), torch.empty(4, device=meta), torch.empty(4, dtype=torch.bool, device=meta))
    assert active.device == meta and active.dtype == torch.bool and active.shape == (4,)


def test_relative_change_and_keep_stopped(device):
    prev = torch.tensor([math.inf, 2.0, 0.0], device=device)
    cur = torch.tensor([1.0, 1.0, 0.0], device=device)
    change = relative_change(prev, cur)
    assert math.isnan(change[0]) and change[1] == 0.5 and change[2] == 0.0
    new, old = torch.ones(3, 2, requires_grad=True, device=device), torch.zeros(3, 2, device=device)
    kept = keep_stopped(new, old, torch.tensor([True, False, True], device=device))
    assert kept.tolist() == [[1, 1], [0, 0], [1, 1]]
    kept.sum().backward()
    assert new.grad.tolist() == [[1, 1], [0, 0], [1, 1]]


@pytest.mark.parametrize(
    "kwargs, error",
    [(dict(tolerance=-1.0), ValueError), (dict(tolerance=math.nan), ValueError), (dict(patience=0), ValueError),
     (dict(patience=2.5), TypeError), (dict(patience=True), TypeError), (dict(step_tolerance=math.inf), ValueError)],
)
def test_criteria_validated(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        StoppingCriteria(**kwargs)


def test_working_set_compaction_round_trip(device):
    """Drop stopped samples in two rounds; scatter puts every value back where it belongs."""
    ws = WorkingSet(6, torch.device(device))
    values = torch.arange(6.0, device=device) * 10
    keep = ws.keep(torch.tensor([True, False, True, True, False, True], device=device))
    values = values[keep]
    keep = ws.keep(torch.tensor([False, True, True, False], device=device))
    values = values[keep]
    assert ws.index.tolist() == [2, 3] and values.tolist() == [20.0, 30.0] and len(ws) == 2
    full = ws.scatter(torch.full((6,), -1.0, device=device), values + 1)
    assert full.tolist() == [-1, -1, 21, 31, -1, -1]
    assert ws.gather(torch.arange(6, device=device)).tolist() == [2, 3]


def test_working_set_scatter_is_differentiable(device):
    ws = WorkingSet(3, torch.device(device))
    ws.keep(torch.tensor([True, False, True], device=device))
    values = torch.tensor([1.0, 2.0], requires_grad=True, device=device)
    base = torch.zeros(3, requires_grad=True, device=device)
    out = ws.scatter(base, values)
    (out * torch.tensor([1.0, 2.0, 3.0], device=device)).sum().backward()
    assert values.grad.tolist() == [1.0, 3.0] and base.grad.tolist() == [0.0, 2.0, 0.0]
