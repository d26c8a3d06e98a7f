"""The optimiser factory, the learning-rate schedule and the unrolled steps."""

from __future__ import annotations

import math

import pytest
import torch

from gradcv.optim import (
    UnrolledOptimizer,
    make_optimizer,
    resolve_optimizer,
    scheduled_learning_rate,
    set_learning_rate,
)


@pytest.mark.parametrize("name, module", [("Adam", "torch.optim"), ("LBFGS", "torch.optim"), ("Yogi", "torch_optimizer"), ("RAdam", "torch.optim")])
def test_resolve_from_either_package(name, module):
    cls = resolve_optimizer(name)
    assert cls.__name__ == name and issubclass(cls, torch.optim.Optimizer)
    assert cls.__module__.startswith(module)


@pytest.mark.parametrize("name, error", [("NoSuch", ValueError), ("Optimizer", ValueError), (3, TypeError), ("lr_scheduler", ValueError)])
def test_resolve_refuses(name, error):
    with pytest.raises(error, match="optimizer"):
        resolve_optimizer(name)


def test_make_optimizer_passes_kwargs_and_lr():
    theta = torch.zeros(3, requires_grad=True)
    opt = make_optimizer([theta], "SGD", 0.5, {"momentum": 0.9, "nesterov": True})
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["nesterov"]
    set_learning_rate(opt, 0.1)
    assert opt.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="learning rate"):
        make_optimizer([theta], "SGD", 0.5, {"lr": 1.0})
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="lr"):
            make_optimizer([theta], "SGD", bad)


def test_schedules():
    assert [scheduled_learning_rate("constant", 0.3, s, 5) for s in range(5)] == [0.3] * 5
    cosine = [scheduled_learning_rate("cosine", 1.0, s, 11, 0.01) for s in range(11)]
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.01)
    assert cosine[5] == pytest.approx(0.01 + 0.99 * 0.5)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    assert scheduled_learning_rate("cosine", 0.2, 0, 1) == 0.2  # one step: the rate itself
    with pytest.raises(ValueError, match="schedule"):
        scheduled_learning_rate("linear", 1.0, 0, 3)


@pytest.mark.parametrize(
    "name, kwargs",
    [("SGD", {}), ("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}), ("Adam", {}), ("Adam", {"betas": (0.8, 0.99)})],
)
def test_unrolled_step_equals_torch_optim(name, kwargs, device):
    """The out-of-place steps are torch.optim's updates (same trajectory on a quadratic)."""
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, device=device)
    leaf = torch.zeros(3, dtype=torch.float64, device=device, requires_grad=True)
    reference = getattr(torch.optim, name)([leaf], lr=0.1, **kwargs)
    unrolled = UnrolledOptimizer(name, kwargs)
    x = torch.zeros(3, dtype=torch.float64, device=device)
    for _ in range(6):
        reference.zero_grad()
        ((leaf - target) ** 2).sum().backward()
        reference.step()
        x = unrolled.step(x, 2 * (x - target), 0.1)
    assert torch.allclose(x, leaf.detach(), atol=1e-12, rtol=0)


def test_unrolled_is_differentiable(device):
    """d(x_K)/d(target) by autograd equals finite differences through K Adam steps."""
    def run(target: torch.Tensor) -> torch.Tensor:
        opt = UnrolledOptimizer("Adam")
        x = torch.zeros(2, dtype=torch.float64, device=device)
        for _ in range(5):
            x = opt.step(x, 2 * (x - target) + 0.1 * x**3, 0.2)
        return x

    target = torch.tensor([0.7, -0.3], dtype=torch.float64, device=device, requires_grad=True)

    assert torch.autograd.gradcheck(run, (target,), fast_mode=False)


def test_unrolled_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="optimizer"):
        UnrolledOptimizer("LBFGS")
    with pytest.raises(ValueError, match="optimizer_kwargs"):
        UnrolledOptimizer("Adam", {"amsgrad": True})
