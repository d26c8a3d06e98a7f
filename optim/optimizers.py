"""Optimisers by name, the per-level learning-rate schedule, and the unrolled (differentiable)
steps that let a solve stay on the autograd graph."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

SCHEDULES = ("constant", "cosine")
#: The optimisers whose step :class:`UnrolledOptimizer` writes out as differentiable tensor
#: operations (``torch.optim``'s update in place on a leaf cannot be differentiated).
UNROLLED = ("SGD", "Adam")


def resolve_optimizer(name: str) -> type[torch.optim.Optimizer]:
    """The optimiser class called ``name`` in ``torch.optim``, else in ``torch_optimizer``.

    Args:
        name: a class name, ``'Adam'``, ``'LBFGS'``, ``'RAdam'``, ``'Yogi'``...

    Returns:
        The class (a subclass of ``torch.optim.Optimizer``).

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: neither package has an optimiser of that name.

    Example:
        >>> resolve_optimizer("Adam").__name__
        'Adam'
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer: expected a class name (str), got {type(name).__name__}")
    cls = getattr(torch.optim, name, None)
    if cls is None:
        try:
            import torch_optimizer
        except ImportError:  # pragma: no cover - a dependency of the project
            torch_optimizer = None
        cls = getattr(torch_optimizer, name, None) if torch_optimizer is not None else None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
        raise ValueError(f"optimizer: expected a class of torch.optim or torch_optimizer, got {name!r}")
    return cls


def make_optimizer(
    params: Iterable[torch.Tensor], name: str, lr: float, kwargs: dict[str, Any] | None = None
) -> torch.optim.Optimizer:
    """``resolve_optimizer(name)(params, lr=lr, **kwargs)``.

    Args:
        params: the tensors to optimise (leaves with ``requires_grad``).
        name: see :func:`resolve_optimizer`.
        lr: learning rate (> 0).
        kwargs: the class's other keyword arguments; ``lr`` is refused there.

    Raises:
        ValueError: for ``lr`` inside ``kwargs`` or a learning rate that is not > 0.

    Example:
        >>> theta = torch.zeros(2, 3, requires_grad=True)
        >>> type(make_optimizer([theta], "SGD", 0.1, {"momentum": 0.9})).__name__
        'SGD'
    """
    kwargs = dict(kwargs or {})
    if "lr" in kwargs:
        raise ValueError("optimizer_kwargs: give the learning rate as lr, not inside the keyword arguments")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a finite float > 0, got {lr!r}")
    return resolve_optimizer(name)(params, lr=lr, **kwargs)


def scheduled_learning_rate(schedule: str, lr: float, step: int, iterations: int, final_ratio: float = 1e-2) -> float:
    """The learning rate of ``step`` (0-based) out of ``iterations`` on one level.

    Args:
        schedule: ``'constant'`` (``lr`` throughout) or ``'cosine'``: a half cosine from
            ``lr`` at the first step to ``lr * final_ratio`` at the last, restarted at every
            level, so that early steps travel far and the last ones settle.
        lr: the level's initial rate.
        step: the step, ``0 <= step < iterations``.
        iterations: steps on the level.
        final_ratio: the cosine's end, as a fraction of ``lr``.

    Returns:
        The rate (a Python float: the schedule costs no tensor work).

    Example:
        >>> [round(scheduled_learning_rate("cosine", 1.0, s, 3, 0.0), 3) for s in range(3)]
        [1.0, 0.5, 0.0]
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if schedule == "constant" or iterations <= 1:
        return lr
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * step / (iterations - 1))))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class UnrolledOptimizer:
    """SGD (momentum, Nesterov) or Adam written as out-of-place tensor operations, so that
    every step stays on the autograd graph: differentiate a solve's result with respect
    to its inputs by backpropagating through all its steps (an unrolled solve).

    Args:
        name: ``'SGD'`` or ``'Adam'`` (see :data:`UNROLLED`).
        kwargs: SGD's ``momentum``, ``dampening``, ``nesterov``; Adam's ``betas``, ``eps``.
            Others raise ``ValueError`` rather than being silently ignored.

    Example:
        >>> x = torch.tensor([1.0], requires_grad=True)
        >>> opt = UnrolledOptimizer("SGD")
        >>> y = opt.step(x, 2 * x, lr=0.25)   # one step on x², kept on the graph
        >>> torch.autograd.grad(y.sum(), x)[0]
        tensor([0.5000])
    """

    _ALLOWED = {"SGD": {"momentum", "dampening", "nesterov"}, "Adam": {"betas", "eps"}}

    def __init__(self, name: str, kwargs: dict[str, Any] | None = None) -> None:
        if name not in UNROLLED:
            raise ValueError(f"optimizer: an unrolled (differentiable) solve supports {UNROLLED}, got {name!r}")
        kwargs = dict(kwargs or {})
        unknown = sorted(set(kwargs) - self._ALLOWED[name])
        if unknown:
            raise ValueError(f"optimizer_kwargs: {name} unrolled takes {sorted(self._ALLOWED[name])}, got {unknown}")
        self.name = name
        self.momentum = float(kwargs.get("momentum", 0.0))
        self.dampening = float(kwargs.get("dampening", 0.0))
        self.nesterov = bool(kwargs.get("nesterov", False))
        self.betas = tuple(kwargs.get("betas", (0.9, 0.999)))
        self.eps = float(kwargs.get("eps", 1e-8))
        self._state: dict[str, torch.Tensor] = {}
        self._count = 0

    def step(self, params: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
        """The parameters after one step from ``params`` along ``grad`` (both on the graph;
        compute ``grad`` with ``create_graph=True`` to differentiate through it)."""
        self._count += 1
        if self.name == "SGD":
            if self.momentum == 0:
                return params - lr * grad
            buf = self._state.get("momentum")
            buf = grad if buf is None else self.momentum * buf + (1 - self.dampening) * grad
            self._state["momentum"] = buf
            direction = grad + self.momentum * buf if self.nesterov else buf
            return params - lr * direction
        beta1, beta2 = self.betas
        m = self._state.get("m", torch.zeros_like(grad))
        v = self._state.get("v", torch.zeros_like(grad))
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        self._state["m"], self._state["v"] = m, v
        m_hat = m / (1 - beta1**self._count)
        v_hat = v / (1 - beta2**self._count)
        # sqrt(v + tiny): the derivative of sqrt at 0 is infinite, and a frozen or
        # converged sample has v = 0 exactly.
        return params - lr * m_hat / (torch.sqrt(v_hat + torch.finfo(v_hat.dtype).tiny) + self.eps)
