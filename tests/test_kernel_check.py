"""The shared kernel check can fail: each broken operator below breaks one property."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests._kernel_check import check_kernel

X = torch.rand(3, 2, 6, 7, generator=torch.Generator().manual_seed(14))

BROKEN = {
    "in place": lambda x: x.mul_(1.0),
    "values changed in place": lambda x: x.detach().mul_(2.0).div_(2.0).add_(0.5) * 0,
    "mixes the batch": lambda x: x - x.mean(),
    "drops float64": lambda x: x.float(),
    "another device": lambda x: x.to("meta"),
    "depends on layout": lambda x: x if x.is_contiguous() else 2 * x,
    "empty batch": lambda x: x if x.shape[0] else x.new_zeros(1, *x.shape[1:]),
    "no 1 x 1 image": lambda x: F.pad(x, (2, 2, 2, 2), mode="reflect"),
    "float32 computed in float16": lambda x: x if x.dtype == torch.float64 else x.to(torch.float16).to(x.dtype),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_operator_fails(name):
    with pytest.raises((AssertionError, RuntimeError, NotImplementedError)):
        check_kernel(BROKEN[name], X)


def test_good_operators_pass(device):
    check_kernel(lambda x: 2 * x + 1, X, device=device, low_precision=True)
    check_kernel(lambda x, k: (x * k).sum(1, keepdim=True), X, torch.rand(2, 1, 1), batched=[True, False], device=device)
    check_kernel(lambda x: (x, x > 0.5), X, device=device)
