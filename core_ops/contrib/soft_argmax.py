"""Differentiable arg-max: spatial soft-argmax over a whole map, and its windowed (conv) forms.

Every soft-argmax here is an expectation of coordinates under a softmax, and every softmax
is taken with ``torch.softmax``, which subtracts the maximum of what it normalises before
the exponential: no overflow for large inputs or small temperatures, and no ``eps``
(the denominator is at least 1).

Where these functions differ from Kornia's, by design:

- normalised coordinates span ``[-1, 1]`` edge to edge (``u = (2 x + 1) / W - 1``, PyTorch's
  ``align_corners=False``); Kornia maps pixel centres ``0`` and ``W - 1`` to ``-1`` and ``1``.
  Pixel coordinates (``normalized_coordinates=False``) are the same in both: pixel centres
  at integers.
- ``conv_soft_argmax3d`` keeps the ``strict_maxima_bonus`` that Kornia 0.9 deprecated and
  ignores (Kornia before 0.9 applied it the same way).
- a tensor ``temperature`` is not checked for positivity (reading it would synchronise
  with the device); a number is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gradcv.core_ops._checks import check_image, check_kernel_size, check_shape
from gradcv.core_ops.contrib._options import int_tuple
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError

def _check_temperature(temperature: object, name: str = "temperature") -> float | torch.Tensor:
    """``None`` (meaning 1), a positive number, or a floating tensor (values not inspected)."""
    if temperature is None:
        return 1.0
    if isinstance(temperature, torch.Tensor):
        if not temperature.is_floating_point():
            raise DTypeError(name, "floating", temperature.dtype, f"{name}: expected a floating tensor, got {temperature.dtype}")
        return temperature
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if not temperature > 0:  # also rejects NaN
            raise ArgumentValueError(name, "a positive value", temperature, f"{name}: expected a positive value, got {temperature!r}")
        return float(temperature)
    raise ArgumentTypeError(
        name, "a positive float or a tensor", temperature, f"{name}: expected a positive float or a tensor, got {temperature!r}"
    )


def _scaled(input: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    if isinstance(temperature, float) and temperature == 1.0:
        return input
    return input / temperature


def _coordinates(n: int, normalized: bool, like: torch.Tensor) -> torch.Tensor:
    """Coordinates of the ``n`` pixel centres along an axis: ``0 .. n-1``, or normalised edge to edge."""
    grid = torch.arange(n, device=like.device, dtype=like.dtype)
    return (2 * grid + 1) / n - 1 if normalized else grid


def _normalize(coordinate: torch.Tensor, n: int) -> torch.Tensor:
    return (2 * coordinate + 1) / n - 1


def spatial_softmax2d(input: torch.Tensor, temperature: float | torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over all the pixels of each channel (not over channels, as ``nn.Softmax2d``).

    Args:
        input: ``(B, N, H, W)`` scores.
        temperature: the input is divided by it before the softmax; smaller is sharper.
            A positive number, ``None`` (1), or a floating tensor that broadcasts against
            the input (its values are not checked).

    Returns:
        ``(B, N, H, W)``, each ``H x W`` map summing to 1.

    Example:
        >>> spatial_softmax2d(torch.tensor([[[[0.0, 0.0], [0.0, math.log(5.0)]]]]))
        tensor([[[[0.1250, 0.1250],
                  [0.1250, 0.6250]]]])
    """
    check_image(input)
    t = _check_temperature(temperature)
    logits = _scaled(input, t).flatten(-2)
    return torch.softmax(logits, dim=-1).view(logits.shape[:-1] + input.shape[-2:])


def spatial_expectation2d(input: torch.Tensor, normalized_coordinates: bool = True) -> torch.Tensor:
    """The expected ``(x, y)`` of each channel under its map of weights.

    Args:
        input: ``(B, N, H, W)`` weights, used as given: each map should sum to 1 (as the
            output of :func:`spatial_softmax2d` does); a map summing to ``s`` scales the
            result by ``s``, as Kornia.
        normalized_coordinates: return normalised coordinates instead of pixels.

    Returns:
        ``(B, N, 2)``, ``(x, y)`` per channel.

    Convention:
        Pixel ``(x, y)``: x to the right, y down, pixel centres at integers. Normalised:
        ``u = (2 x + 1) / W - 1``, ``v = (2 y + 1) / H - 1`` (``[-1, 1]`` edge to edge,
        ``align_corners=False``); Kornia puts the corner pixel centres at ``+-1`` instead.

    Example:
        >>> weights = torch.zeros(1, 1, 3, 4)
        >>> weights[0, 0, 2, 1] = 1.0
        >>> spatial_expectation2d(weights, normalized_coordinates=False)
        tensor([[[1., 2.]]])
        >>> spatial_expectation2d(weights)
        tensor([[[-0.2500,  0.6667]]])
    """
    check_image(input)
    h, w = input.shape[-2:]
    expected_x = input.sum(-2) @ _coordinates(w, normalized_coordinates, input)
    expected_y = input.sum(-1) @ _coordinates(h, normalized_coordinates, input)
    return torch.stack([expected_x, expected_y], dim=-1)


def spatial_soft_argmax2d(
    input: torch.Tensor, temperature: float | torch.Tensor | None = 1.0, normalized_coordinates: bool = True
) -> torch.Tensor:
    """Soft arg-max of each channel: the expected ``(x, y)`` under the softmax of the whole map.

    ``spatial_expectation2d(spatial_softmax2d(input, temperature), normalized_coordinates)``.
    Two equal dominant peaks give their midpoint. For sub-pixel accuracy on a peak of height
    ``A`` and width ``sigma`` (pixels), the softmax weights near the peak are a Gaussian of
    width ``sigma * sqrt(temperature / A)``; keep that above about 0.6 px (finer sampling
    aliases) and ``exp(A / temperature)`` far above ``H * W`` (the rest of the map pulls the
    result toward the image centre).

    Args:
        input: ``(B, N, H, W)`` heatmaps.
        temperature: as :func:`spatial_softmax2d`; ``None`` means 1.
        normalized_coordinates: return normalised coordinates instead of pixels.

    Returns:
        ``(B, N, 2)``, ``(x, y)`` per channel.

    Convention:
        As :func:`spatial_expectation2d`: pixel centres at integers, normalised coordinates
        ``[-1, 1]`` edge to edge (Kornia: corner pixel centres at ``+-1``).

    Example:
        >>> heatmap = torch.zeros(1, 1, 5, 7)
        >>> heatmap[0, 0, 1, 5] = 30.0
        >>> spatial_soft_argmax2d(heatmap, normalized_coordinates=False)
        tensor([[[5.0000, 1.0000]]])
    """
    return spatial_expectation2d(spatial_softmax2d(input, temperature), normalized_coordinates)


# ---------------------------------------------------------------- windowed soft-argmax
def _window_options(
    kernel_size: object, stride: object, padding: object, n: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    if n == 2:
        kernel = check_kernel_size(kernel_size, "kernel_size", odd=False)
    else:
        kernel = int_tuple(kernel_size, n, "kernel_size", 1)
    step = int_tuple(stride, n, "stride", 1)
    pad = int_tuple(padding, n, "padding", 0)
    if any(2 * p > k for p, k in zip(pad, kernel)):
        # A wider padding would make windows that hold no pixel of the input.
        raise ArgumentValueError(
            "padding", f"at most half of kernel_size={kernel}", padding,
            f"padding: expected at most half of kernel_size={kernel}, got {padding!r}",
        )
    return kernel, step, pad


def _windows(x: torch.Tensor, kernel: tuple[int, ...], step: tuple[int, ...]) -> torch.Tensor:
    """``(..., *out, *kernel)``: every window of the last ``len(kernel)`` dims, as a strided view."""
    first = x.ndim - len(kernel)  # unfold appends the window dim, so the others keep their place
    for i, (k, s) in enumerate(zip(kernel, step)):
        x = x.unfold(first + i, k, s)
    return x


def _conv_soft_argmax(
    input: torch.Tensor,
    kernel: tuple[int, ...],
    step: tuple[int, ...],
    pad: tuple[int, ...],
    temperature: float | torch.Tensor,
    normalized: bool,
    output_value: bool,
    strict_maxima_bonus: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax in every window of the last ``n = len(kernel)`` dims.

    Returns coordinates ``(..., n, *out)`` in the order of the dims (outermost first) and,
    with ``output_value``, the soft-max-pooled values ``(..., *out)``.
    """
    n = len(kernel)
    sizes = input.shape[-n:]
    f_pad = [p for q in reversed(pad) for p in (q, q)]  # F.pad order: last dim first
    # Padding is -inf in the logits: zero weight, so a window that overhangs the border is
    # the softmax of its in-image pixels only, as Kornia.
    logits = F.pad(_scaled(input, temperature), f_pad, value=-math.inf)
    windows = _windows(logits, kernel, step)
    lead = windows.shape[: windows.ndim - n]
    weights = torch.softmax(windows.reshape(*lead, math.prod(kernel)), dim=-1).view(windows.shape)
    out_shape = lead[-n:]
    coordinates = []
    for axis in range(n):
        others = tuple(windows.ndim - n + a for a in range(n) if a != axis)
        marginal = weights.sum(others) if others else weights  # (..., *out, k_axis)
        offset = marginal @ torch.arange(kernel[axis], device=input.device, dtype=input.dtype)
        start = torch.arange(out_shape[axis], device=input.device, dtype=input.dtype) * step[axis] - pad[axis]
        coordinate = offset + start.view((-1,) + (1,) * (n - 1 - axis))
        coordinates.append(_normalize(coordinate, sizes[axis]) if normalized else coordinate)
    coords = torch.stack(coordinates, dim=-n - 1)
    if not output_value:
        return coords
    values = _windows(F.pad(input, f_pad), kernel, step)  # padded pixels: value 0, weight 0
    pooled = (weights * values).sum(tuple(range(-n, 0)))
    if strict_maxima_bonus > 0:
        pooled = pooled * (1 + strict_maxima_bonus * _strict_maxima(input.detach(), kernel, step, f_pad))
    return coords, pooled


def _strict_maxima(
    input: torch.Tensor, kernel: tuple[int, ...], step: tuple[int, ...], f_pad: list[int]
) -> torch.Tensor:
    """1 where a window's centre is larger than every other input value in the window, else 0."""
    windows = _windows(F.pad(input, f_pad, value=-math.inf), kernel, step)
    flat = windows.reshape(*windows.shape[: windows.ndim - len(kernel)], math.prod(kernel))
    centre = flat.shape[-1] // 2  # odd kernel: the middle of the row-major window
    others = flat.index_fill(-1, torch.tensor([centre], device=input.device), -math.inf).amax(-1)
    return (flat[..., centre] > others).to(input.dtype)


def conv_soft_argmax2d(
    input: torch.Tensor,
    kernel_size: int | tuple[int, int] = (3, 3),
    stride: int | tuple[int, int] = (1, 1),
    padding: int | tuple[int, int] = (1, 1),
    temperature: float | torch.Tensor = 1.0,
    normalized_coordinates: bool = True,
    eps: float = 1e-8,
    output_value: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Soft arg-max in every ``kernel_size`` window: a differentiable, sub-pixel local arg-max.

    In each window ``X``, ``xy(X) = sum_p (x_p, y_p) softmax(v / T)_p`` and, with
    ``output_value``, ``val(X) = sum_p v_p softmax(v / T)_p``, the softmax taken over that
    window alone (so a window does not depend on the rest of the map).

    Args:
        input: ``(B, C, H, W)`` heatmaps.
        kernel_size: window ``(ky, kx)`` (an int for both); even sizes work (the window
            centre then lies between pixels).
        stride: step between windows.
        padding: added on each side, at most half of ``kernel_size``; padded positions carry
            no weight (a border window averages its in-image pixels only).
        temperature: the input is divided by it; smaller is sharper. A positive number or a
            floating tensor broadcasting against the input (values not checked).
        normalized_coordinates: return normalised coordinates instead of pixels.
        eps: accepted for Kornia compatibility and unused: the per-window softmax needs none.
        output_value: also return the soft-max-pooled values.

    Returns:
        Coordinates ``(B, C, 2, H_out, W_out)`` holding ``(x, y)``, with
        ``H_out = (H + 2 padding_y - ky) // stride_y + 1`` (likewise ``W_out``); with
        ``output_value``, also the values ``(B, C, H_out, W_out)``.

    Convention:
        Pixel ``(x, y)``, pixel centres at integers: window ``(i, j)`` covers rows
        ``i * stride_y - padding_y ... + ky - 1`` and columns ``j * stride_x - padding_x ...``
        of the input, so with stride 1 and padding ``k // 2`` (odd ``k``) output ``(i, j)`` is
        centred on pixel ``(j, i)``. Normalised: ``u = (2 x + 1) / W - 1`` (``[-1, 1]`` edge to
        edge); Kornia's normalised output puts the corner pixel centres at ``+-1``, its pixel
        output is the same as this one. A symmetric peak is found without bias only if the
        window holds nearly all of its softmax weight: the window truncates the peak and
        pulls the result toward the window centre (see ``tests/core_ops/test_contrib.py``).

    Example:
        >>> heatmap = torch.zeros(1, 1, 4, 5)
        >>> heatmap[0, 0, 1, 3] = 20.0
        >>> coords = conv_soft_argmax2d(heatmap, normalized_coordinates=False)
        >>> coords.shape
        torch.Size([1, 1, 2, 4, 5])
        >>> coords[0, 0, :, 1, 2]  # the window centred on (2, 1) finds the peak at (3, 1)
        tensor([3.0000, 1.0000])
    """
    check_image(input)
    kernel, step, pad = _window_options(kernel_size, stride, padding, 2)
    t = _check_temperature(temperature)
    result = _conv_soft_argmax(input, kernel, step, pad, t, normalized_coordinates, output_value)
    if output_value:
        coords, values = result
        return coords.flip(-3), values
    return result.flip(-3)  # (y, x) -> (x, y)


def conv_soft_argmax3d(
    input: torch.Tensor,
    kernel_size: int | tuple[int, int, int] = (3, 3, 3),
    stride: int | tuple[int, int, int] = (1, 1, 1),
    padding: int | tuple[int, int, int] = (1, 1, 1),
    temperature: float | torch.Tensor = 1.0,
    normalized_coordinates: bool = False,
    eps: float = 1e-8,
    output_value: bool = True,
    strict_maxima_bonus: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Soft arg-max in every ``kernel_size`` window of a volume (a scale space ``(D, H, W)``).

    The 3-D form of :func:`conv_soft_argmax2d`; note its different defaults (pixel
    coordinates, values returned), as Kornia.

    Args:
        input: ``(B, C, D, H, W)`` responses.
        kernel_size: window ``(kd, ky, kx)`` (an int for all three).
        stride: step between windows.
        padding: added on each side, at most half of ``kernel_size``; padded positions carry
            no weight.
        temperature: as :func:`conv_soft_argmax2d`.
        normalized_coordinates: return normalised coordinates instead of voxels.
        eps: accepted for Kornia compatibility and unused.
        output_value: also return the soft-max-pooled values.
        strict_maxima_bonus: non-negative; the value of a window whose centre voxel is a
            strict maximum of the window (larger than every other in-volume voxel of it) is
            multiplied by ``1 + strict_maxima_bonus``, which favours isolated peaks over
            plateaus and ridges in a later selection. Needs an odd ``kernel_size``. Kornia
            before 0.9 did this; Kornia 0.9 deprecates and ignores the argument.

    Returns:
        Coordinates ``(B, C, 3, D_out, H_out, W_out)`` holding ``(d, x, y)`` (Kornia's
        order), sizes as in :func:`conv_soft_argmax2d`; with ``output_value``, also the
        values ``(B, C, D_out, H_out, W_out)``.

    Convention:
        Voxel coordinates: ``d`` along depth, ``x`` along columns, ``y`` along rows, voxel
        centres at integers; window ``(l, i, j)`` starts at ``(l s_d - p_d, i s_y - p_y,
        j s_x - p_x)``. Normalised: ``(2 c + 1) / n - 1`` on each axis of size ``n``
        (``[-1, 1]`` edge to edge, depth included); Kornia's normalised output puts the
        corner voxel centres at ``+-1``, its voxel output is the same as this one.

    Example:
        >>> volume = torch.zeros(1, 1, 3, 4, 5)
        >>> volume[0, 0, 1, 2, 3] = 20.0
        >>> coords, values = conv_soft_argmax3d(volume, strict_maxima_bonus=1.0)
        >>> coords[0, 0, :, 1, 2, 3]
        tensor([1.0000, 3.0000, 2.0000])
        >>> values[0, 0, 1, 2, 3], values[0, 0, 1, 2, 2]  # strict maximum: doubled
        (tensor(40.0000), tensor(20.0000))
    """
    check_shape(input, ["B", "C", "D", "H", "W"], "input")
    if not input.is_floating_point():
        raise DTypeError("input", "floating", input.dtype, f"input: expected a floating tensor, got {input.dtype}")
    kernel, step, pad = _window_options(kernel_size, stride, padding, 3)
    t = _check_temperature(temperature)
    bonus = _check_bonus(strict_maxima_bonus, kernel)
    result = _conv_soft_argmax(input, kernel, step, pad, t, normalized_coordinates, output_value, bonus)
    coords = result[0] if output_value else result
    coords = coords[:, :, [0, 2, 1]]  # (d, y, x) -> (d, x, y)
    return (coords, result[1]) if output_value else coords


def _check_bonus(strict_maxima_bonus: object, kernel: tuple[int, ...]) -> float:
    if isinstance(strict_maxima_bonus, bool) or not isinstance(strict_maxima_bonus, (int, float)):
        raise ArgumentTypeError(
            "strict_maxima_bonus", "a non-negative float", strict_maxima_bonus,
            f"strict_maxima_bonus: expected a non-negative float, got {strict_maxima_bonus!r}",
        )
    if not strict_maxima_bonus >= 0:
        raise ArgumentValueError(
            "strict_maxima_bonus", "a non-negative value", strict_maxima_bonus,
            f"strict_maxima_bonus: expected a non-negative value, got {strict_maxima_bonus!r}",
        )
    if strict_maxima_bonus > 0 and any(k % 2 == 0 for k in kernel):
        raise ArgumentValueError(
            "kernel_size", "odd sizes", kernel, f"kernel_size: a strict maximum needs a centre voxel, so odd sizes, got {kernel}"
        )
    return float(strict_maxima_bonus)


# ------------------------------------------------------------------------- modules
class _TemperatureModule(nn.Module):
    def _set_temperature(self, temperature: float | torch.Tensor | None) -> None:
        t = _check_temperature(temperature)
        if isinstance(t, torch.Tensor):
            self.register_buffer("temperature", t)  # follows .to(device)
        else:
            self.temperature = t


class SpatialSoftArgmax2d(_TemperatureModule):
    """Module form of :func:`spatial_soft_argmax2d`.

    ``temperature`` defaults to ``1.0``, which is what Kornia's default ``None`` means.
    """

    def __init__(self, temperature: float | torch.Tensor | None = 1.0, normalized_coordinates: bool = True) -> None:
        super().__init__()
        self._set_temperature(temperature)
        self.normalized_coordinates = normalized_coordinates

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return spatial_soft_argmax2d(input, self.temperature, self.normalized_coordinates)


class ConvSoftArgmax2d(_TemperatureModule):
    """Module form of :func:`conv_soft_argmax2d`."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int] = (3, 3),
        stride: int | tuple[int, int] = (1, 1),
        padding: int | tuple[int, int] = (1, 1),
        temperature: float | torch.Tensor = 1.0,
        normalized_coordinates: bool = True,
        eps: float = 1e-8,
        output_value: bool = False,
    ) -> None:
        super().__init__()
        _window_options(kernel_size, stride, padding, 2)
        self._set_temperature(temperature)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.normalized_coordinates, self.eps, self.output_value = normalized_coordinates, eps, output_value

    def forward(self, input: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return conv_soft_argmax2d(
            input, self.kernel_size, self.stride, self.padding, self.temperature,
            self.normalized_coordinates, self.eps, self.output_value,
        )  # fmt: skip


class ConvSoftArgmax3d(_TemperatureModule):
    """Module form of :func:`conv_soft_argmax3d`.

    ``strict_maxima_bonus`` defaults to ``0.0`` (no bonus), where Kornia 0.9 has ``None``
    (deprecated there and ignored): the same meaning, as a number.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int, int] = (3, 3, 3),
        stride: int | tuple[int, int, int] = (1, 1, 1),
        padding: int | tuple[int, int, int] = (1, 1, 1),
        temperature: float | torch.Tensor = 1.0,
        normalized_coordinates: bool = False,
        eps: float = 1e-8,
        output_value: bool = True,
        strict_maxima_bonus: float = 0.0,
    ) -> None:
        super().__init__()
        kernel, _, _ = _window_options(kernel_size, stride, padding, 3)
        _check_bonus(strict_maxima_bonus, kernel)
        self._set_temperature(temperature)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.normalized_coordinates, self.eps, self.output_value = normalized_coordinates, eps, output_value
        self.strict_maxima_bonus = strict_maxima_bonus

    def forward(self, input: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return conv_soft_argmax3d(
            input, self.kernel_size, self.stride, self.padding, self.temperature,
            self.normalized_coordinates, self.eps, self.output_value, self.strict_maxima_bonus,
        )  # fmt: skip


__all__ = [
    "ConvSoftArgmax2d",
    "ConvSoftArgmax3d",
    "SpatialSoftArgmax2d",
    "conv_soft_argmax2d",
    "conv_soft_argmax3d",
    "spatial_expectation2d",
    "spatial_soft_argmax2d",
    "spatial_softmax2d",
]
