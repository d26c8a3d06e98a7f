"""Input validation shared by every operator.

Each check raises one typed error from ``core_ops.errors`` (a ``ShapeError``,
``DTypeError``, ... all ``GradcvError``) that carries the argument's name, what was
expected and what was given, and says so in its message. The checks only read metadata (shape, dtype), never tensor values,
so they cost nothing on the hot path and never synchronise with a device; messages are
formatted only when a check fails.
"""

from __future__ import annotations

import dataclasses
import math

from typing import Any, Sequence, TypeVar

import torch

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DeviceError, DTypeError, ShapeError

BORDER_TYPES = ("constant", "reflect", "replicate", "circular")


def check_tensor(x: object, name: str) -> None:
    """Raise ``ArgumentTypeError`` (a ``TypeError``) unless ``x`` is a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(name, torch.Tensor, type(x), f"{name}: expected a torch.Tensor, got {type(x).__name__}")


def check_floating(x: torch.Tensor, name: str) -> None:
    """Raise ``DTypeError`` (a ``TypeError``) unless ``x`` has a floating dtype."""
    if not x.is_floating_point():
        raise DTypeError(
            name, "floating", x.dtype,
            f"{name}: expected a floating tensor (float16/bfloat16/float32/float64), got {x.dtype}",
        )


def check_shape(x: object, dims: Sequence[str | int], name: str) -> None:
    """Check ``x`` against a symbolic shape, in the manner of Kornia's ``KORNIA_CHECK_SHAPE``.

    ``dims`` lists one entry per dimension: a string is a free symbol (``"B"``, ``"H"``),
    an int is a required size. A leading ``"*"`` admits any number of leading dimensions.

    Raises:
        ArgumentTypeError: ``x`` is not a tensor (a ``TypeError``).
        ShapeError: the rank or a fixed size differs (a ``ValueError``); its ``expected``
            is ``tuple(dims)``, its ``actual`` the given shape.
    """
    check_tensor(x, name)
    assert isinstance(x, torch.Tensor)
    dims = list(dims)
    shape = tuple(x.shape)
    if dims and dims[0] == "*":
        fixed = dims[1:]
        ok = len(shape) >= len(fixed)
        tail = shape[len(shape) - len(fixed):] if ok else shape
    else:
        fixed = dims
        ok = len(shape) == len(fixed)
        tail = shape
    if ok:
        for want, got in zip(fixed, tail):
            if isinstance(want, int) and want != got:
                ok = False
                break
    if not ok:
        expected = "(" + ", ".join(str(d) for d in dims) + ")"
        raise ShapeError(name, tuple(dims), shape, f"{name}: expected shape {expected}, got {shape}")


def check_same_device(x: torch.Tensor, name: str, like: torch.Tensor, like_name: str) -> None:
    """Raise :class:`DeviceError` naming ``name`` if ``x`` is not on ``like``'s device (before
    any work, rather than PyTorch's message from deep inside an op). Reading ``.device`` is free:
    no synchronisation."""
    if x.device != like.device:
        raise DeviceError(name, like.device, x.device,
                          f"{name}: expected a tensor on {like.device} (the device of {like_name}), got {x.device}")


def check_image(x: object, name: str = "input", channels: int | None = None) -> None:
    """Check a floating ``(B, C, H, W)`` image, optionally with a fixed channel count."""
    check_shape(x, ["B", "C" if channels is None else channels, "H", "W"], name)
    assert isinstance(x, torch.Tensor)
    check_floating(x, name)


def check_kernel_size(kernel_size: object, name: str = "kernel_size", *, odd: bool = True) -> tuple[int, int]:
    """Normalise an int or pair to ``(ky, kx)`` and check that both are positive (and odd).

    Kornia's order is kept: a pair is ``(height, width)``.
    """
    if isinstance(kernel_size, bool):
        raise ArgumentTypeError(name, "an int or a pair of ints", bool, f"{name}: expected an int or a pair of ints, got bool")
    if isinstance(kernel_size, int):
        pair = (kernel_size, kernel_size)
    elif isinstance(kernel_size, (tuple, list)) and len(kernel_size) == 2 and all(
        isinstance(k, int) and not isinstance(k, bool) for k in kernel_size
    ):
        pair = (int(kernel_size[0]), int(kernel_size[1]))
    else:
        raise ArgumentTypeError(
            name, "an int or a pair of ints", kernel_size, f"{name}: expected an int or a pair of ints, got {kernel_size!r}"
        )
    for k in pair:
        if k < 1 or (odd and k % 2 == 0):
            what = "positive odd" if odd else "positive"
            raise ArgumentValueError(name, f"{what} sizes", kernel_size, f"{name}: expected {what} sizes, got {kernel_size!r}")
    return pair


def check_sigma(sigma: object, name: str = "sigma") -> tuple[float, float] | torch.Tensor:
    """Normalise a positive float or pair of floats to ``(sigma_y, sigma_x)``.

    A tensor (per-sample sigma, shape ``(B, 2)`` or ``(B,)``) is passed through
    unchanged; its values are not inspected, to avoid a device sync.
    """
    if isinstance(sigma, torch.Tensor):
        if not sigma.is_floating_point():
            raise DTypeError(name, "floating", sigma.dtype, f"{name}: expected a floating tensor, got {sigma.dtype}")
        return sigma
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        pair = (float(sigma), float(sigma))
    elif isinstance(sigma, (tuple, list)) and len(sigma) == 2 and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) for s in sigma
    ):
        pair = (float(sigma[0]), float(sigma[1]))
    else:
        raise ArgumentTypeError(
            name, "a positive float or a pair of floats", sigma,
            f"{name}: expected a positive float or a pair of floats, got {sigma!r}",
        )
    if not all(s > 0 for s in pair):  # also rejects NaN
        raise ArgumentValueError(name, "positive values", sigma, f"{name}: expected positive values, got {sigma!r}")
    return pair


def check_border_type(border_type: object, name: str = "border_type") -> str:
    """Check a border type against ``BORDER_TYPES``; returns it."""
    if border_type not in BORDER_TYPES:
        raise ArgumentValueError(name, BORDER_TYPES, border_type, f"{name}: expected one of {BORDER_TYPES}, got {border_type!r}")
    return border_type  # type: ignore[return-value]


def check_choice(value: object, choices: Sequence[object], name: str) -> None:
    """Raise ``ArgumentValueError`` (a ``ValueError``) unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ArgumentValueError(name, tuple(choices), value, f"{name}: expected one of {tuple(choices)}, got {value!r}")


def check_str_choice(value: object, choices: Sequence[str], name: str) -> str:
    """A ``str`` among ``choices`` (``ArgumentTypeError`` for another type, else
    :func:`check_choice`); returns it. The shared check of configs' string options."""
    if not isinstance(value, str):
        raise ArgumentTypeError(name, "a str", value, f"{name}: expected one of {tuple(choices)}, got {type(value).__name__} {value!r}")
    check_choice(value, choices, name)
    return value


def check_real(value: object, name: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """A finite ``int`` or ``float`` (not a ``bool``) within ``[low, high]`` (an end is
    excluded when ``low_open`` / ``high_open``); returns it as a float. The shared check of
    every config's real numbers (learning rates, weights, penalties ...).

    Raises:
        ArgumentTypeError: not a number (a ``TypeError``).
        ArgumentValueError: not finite or out of range (a ``ValueError``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(name, "a float", value, f"{name}: expected a number, got {type(value).__name__} {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        lo = "" if low is None else f"{low:g} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high:g}"
        raise ArgumentValueError(name, f"finite {lo}{name}{hi}", value, f"{name}: expected finite {lo}{name}{hi}, got {value!r}")
    return v


def check_bool(value: object, name: str) -> bool:
    """A ``bool`` (``ArgumentTypeError`` otherwise); returns it."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(name, "a bool", value, f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return value


def check_int(value: object, name: str, minimum: int | None = None) -> int:
    """Check that ``value`` is an ``int`` (not a ``bool``), at least ``minimum`` when given;
    returns it. The shared check of every config's counts (levels, iterations, planes ...).

    Raises:
        ArgumentTypeError: not an int (a ``TypeError``).
        ArgumentValueError: below ``minimum`` (a ``ValueError``).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(name, "an int", value, f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ArgumentValueError(name, f"an int >= {minimum}", value, f"{name}: expected an int >= {minimum}, got {value}")
    return value


_Config = TypeVar("_Config")


def replace_fields(config: _Config, overrides: dict[str, Any]) -> _Config:
    """A copy of the dataclass ``config`` with ``overrides`` applied (validated by its
    ``__post_init__``); an unknown name raises ``ArgumentValueError`` naming them all."""
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - names)
    if unknown:
        kind = type(config).__name__
        raise ArgumentValueError("overrides", sorted(names), unknown, f"overrides: unknown {kind} fields {unknown}")
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]
