"""The errors that gradcv's operators raise for bad input: one family a caller can catch.

Every input error is a :class:`GradcvError` and also the built-in exception its failure
has always been (a wrong shape is a ``ValueError``, a wrong dtype a ``TypeError``), so
``except ValueError`` keeps working while ``except GradcvError`` catches them all, in the
manner of Kornia's ``BaseError`` / ``ShapeError`` / ``TypeCheckError``. Each carries the
argument's ``name``, what was ``expected`` and what was given (``actual``), for a caller
that wants to react to the failure rather than print it; the message says the same in
words and starts with the argument's name.

Example:
    >>> import torch
    >>> from gradcv.core_ops.errors import GradcvError, ShapeError
    >>> from gradcv.core_ops.filters import sobel
    >>> try:
    ...     sobel(torch.zeros(4, 4))
    ... except GradcvError as e:
    ...     print(type(e).__name__, e.name, e.expected, e.actual)
    ShapeError input ('B', 'C', 'H', 'W') (4, 4)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "DTypeError",
    "DeviceError",
    "GradcvError",
    "ShapeError",
]


class GradcvError(Exception):
    """Base class of every input error raised by ``gradcv.core_ops``.

    Attributes:
        name: the argument that failed the check (as the caller spells it).
        expected: what the check wanted (a shape, a dtype, a device, a description).
        actual: what it was given.
    """

    kind = "value"

    def __init__(self, name: str, expected: Any, actual: Any, message: str | None = None) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        if message is None:
            message = f"{name}: expected {self.kind} {_words(expected)}, got {_words(actual)}"
        self.message = message
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # Exception pickles its args, which here are only the message; a worker process
        # (DataLoader, multiprocessing) must get the attributes back too.
        return (type(self), (self.name, self.expected, self.actual, self.message))

    def __str__(self) -> str:
        return self.message


class ShapeError(GradcvError, ValueError):
    """A tensor's rank or size is wrong.

    ``expected`` is the symbolic shape (a tuple of ints and symbols such as ``"B"``,
    with ``"*"`` for any leading dimensions) or a description; ``actual`` the given
    shape as a tuple of ints.
    """

    kind = "shape"


class DTypeError(GradcvError, TypeError):
    """A tensor's dtype is wrong.

    ``expected`` is a ``torch.dtype``, a tuple of them, or a description such as
    ``"floating"``; ``actual`` the given ``torch.dtype``.
    """

    kind = "dtype"


class DeviceError(GradcvError, ValueError):
    """A tensor lives on another device than the tensor it is used with."""

    kind = "device"


class ArgumentTypeError(GradcvError, TypeError):
    """An argument is not of an accepted Python type (not a tensor, not an int, ...).

    ``actual`` is the given value's type, or the value itself where that reads better.
    """

    kind = "type"


class ArgumentValueError(GradcvError, ValueError):
    """An argument has an accepted type but a value outside its range or choices."""

    kind = "value"


def _words(value: Any) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, (int, str)) for v in value):
        if all(isinstance(v, int) for v in value):
            return str(value)
        return "(" + ", ".join(str(v) for v in value) + ")"
    if isinstance(value, type):
        return value.__name__
    return str(value)
