"""Normalisation of the int-or-tuple options (sizes, strides, paddings) of core_ops.contrib."""

from __future__ import annotations

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError


def int_tuple(value: object, n: int, name: str, minimum: int) -> tuple[int, ...]:
    """An int (repeated) or ``n`` ints, outermost axis first, each at least ``minimum``.

    Raises:
        ArgumentTypeError: ``value`` is neither (bools are refused); a ``TypeError``.
        ArgumentValueError: a value is below ``minimum``; a ``ValueError``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value,) * n
    elif (
        isinstance(value, (tuple, list))
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        out = tuple(int(v) for v in value)
    else:
        raise ArgumentTypeError(name, f"an int or {n} ints", value, f"{name}: expected an int or {n} ints, got {value!r}")
    if min(out) < minimum:
        raise ArgumentValueError(name, f"values >= {minimum}", value, f"{name}: expected values >= {minimum}, got {value!r}")
    return out
