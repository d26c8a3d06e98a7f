"""Normalisation of the int-or-tuple options (sizes, strides, paddings) of core_ops.contrib."""

from __future__ import annotations


def int_tuple(value: object, n: int, name: str, minimum: int) -> tuple[int, ...]:
    """An int (repeated) or ``n`` ints, outermost axis first, each at least ``minimum``.

    Raises:
        TypeError: ``value`` is neither (bools are refused).
        ValueError: a value is below ``minimum``.
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
        raise TypeError(f"{name}: expected an int or {n} ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {value!r}")
    return out
