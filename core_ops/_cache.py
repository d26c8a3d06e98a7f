"""A memo for pure functions of numbers (kernel taps) that torch.compile can trace.

Dynamo warns on every ``functools.lru_cache``-wrapped call it traces; under compile the
computation happens once at trace time anyway, so the cache is bypassed there.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., object])


def memo(fn: F) -> F:
    """``functools.lru_cache(maxsize=256)`` that steps aside while torch.compile traces."""
    cached = functools.lru_cache(maxsize=256)(fn)

    @functools.wraps(fn)
    def wrapper(*args: object) -> object:
        if torch.compiler.is_compiling():
            return fn(*args)
        return cached(*args)

    return wrapper  # type: ignore[return-value]
