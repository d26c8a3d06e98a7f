"""Tensor patches: extract a grid of sliding windows from an image, and put them back.

:func:`extract_tensor_patches` and :func:`combine_tensor_patches` are an adjoint pair up to
the overlap average: combining the patches extracted with the same window, stride and
padding returns the image (every pixel that some window covers), for any stride up to the
window size.
"""

from __future__ import annotations

import warnings
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from gradcv.core_ops._checks import check_border_type, check_floating, check_shape
from gradcv.core_ops.contrib._options import int_tuple
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.core_ops.filters import pad2d

IntPair = Union[int, tuple[int, int]]
# int, (vertical, horizontal) or (top, bottom, left, right), as Kornia.
Padding = Union[int, tuple[int, int], tuple[int, int, int, int]]


def _int_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (``(height, width)``), each at least ``minimum``."""
    pair = int_tuple(value, 2, name, minimum)
    return (pair[0], pair[1])


def _padding4(value: object, name: str) -> tuple[int, int, int, int]:
    """Kornia's padding forms to ``(top, bottom, left, right)``; negative values crop."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value, value, value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(value) == 2:
            return (int(value[0]), int(value[0]), int(value[1]), int(value[1]))
        if len(value) == 4:
            return (int(value[0]), int(value[1]), int(value[2]), int(value[3]))
    what = "an int, (vertical, horizontal) or (top, bottom, left, right)"
    raise ArgumentTypeError(name, what, value, f"{name}: expected {what}, got {value!r}")


def _fits(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> bool:
    return all(n >= k and (n - k) % s == 0 for n, k, s in zip(size, window, stride))


def compute_padding(
    original_size: IntPair, window_size: IntPair, stride: IntPair | None = None
) -> tuple[int, int, int, int]:
    """The padding that makes a window and stride tile an image exactly.

    Args:
        original_size: image size ``(H, W)`` (or one int for both).
        window_size: window size ``(wh, ww)``.
        stride: stride ``(sh, sw)``; ``None`` means ``window_size`` (non-overlapping tiles).

    Returns:
        ``(top, bottom, left, right)``: the least padding after which ``(H_pad - wh)`` is a
        multiple of ``sh`` (and likewise along x) and the image holds at least one window,
        split evenly with the odd pixel at the bottom or right, as Kornia.

    Example:
        >>> compute_padding((4, 3), (3, 3))
        (1, 1, 0, 0)
    """
    size = _int_pair(original_size, "original_size", 1)
    window = _int_pair(window_size, "window_size", 1)
    step = window if stride is None else _int_pair(stride, "stride", 1)
    out: list[int] = []
    for n, k, s in zip(size, window, step):
        remainder = (n - k) % s
        total = max(s - remainder if remainder else 0, k - n)
        out += [total // 2, total - total // 2]
    return (out[0], out[1], out[2], out[3])


def _pad_or_crop(x: torch.Tensor, pad: tuple[int, int, int, int], border_type: str) -> torch.Tensor:
    top, bottom, left, right = pad
    if border_type == "constant":
        return F.pad(x, (left, right, top, bottom)) if any(pad) else x  # negative values crop
    h, w = x.shape[-2:]
    crop_t, crop_b, crop_l, crop_r = (max(-p, 0) for p in pad)
    x = x[..., crop_t : h - crop_b, crop_l : w - crop_r]
    return pad2d(x, (max(top, 0), max(bottom, 0), max(left, 0), max(right, 0)), border_type)


def extract_tensor_patches(
    input: torch.Tensor,
    window_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    allow_auto_padding: bool = False,
    *,
    border_type: str = "constant",
) -> torch.Tensor:
    """Every ``window_size`` window of an image, ``stride`` apart, stacked along a new dimension.

    Args:
        input: image ``(B, C, H, W)``, any dtype.
        window_size: window (patch) size, an int or ``(wh, ww)``.
        stride: step between windows, an int or ``(sh, sw)``.
        padding: added around the image before the windows are taken: an int,
            ``(vertical, horizontal)`` or ``(top, bottom, left, right)``; negative values crop.
        allow_auto_padding: with ``padding`` all zero and windows that do not tile the image,
            pad by :func:`compute_padding` instead of warning and dropping the last rows and
            columns (Kornia's behaviour).
        border_type: how padding is filled, ``'constant'`` (zeros, as Kornia), ``'reflect'``,
            ``'replicate'`` or ``'circular'``; keyword-only, an addition to Kornia.

    Returns:
        ``(B, N, C, wh, ww)`` with ``N = nh * nw`` windows in row-major order (left to right,
        then top to bottom), the order of ``torch.nn.functional.unfold``.

    Raises:
        TypeError: ``input`` is not a tensor, or an option has the wrong type.
        ValueError: ``input`` is not 4-D, a window or stride is not positive, or the padded
            image is smaller than one window.

    Convention:
        Patch ``n = i * nw + j`` holds the padded image's rows ``i * sh ... i * sh + wh - 1``
        and columns ``j * sw ... j * sw + ww - 1``, so its pixel ``(x, y)`` is pixel
        ``(x + j * sw - left, y + i * sh - top)`` of the input (pixel centres at integer
        coordinates, ``left`` and ``top`` the padding).

    Example:
        >>> image = torch.arange(12.0).view(1, 1, 3, 4)
        >>> patches = extract_tensor_patches(image, (2, 3), stride=(1, 1))
        >>> patches.shape
        torch.Size([1, 4, 1, 2, 3])
        >>> patches[0, 3, 0]
        tensor([[ 5.,  6.,  7.],
                [ 9., 10., 11.]])
    """
    check_shape(input, ["B", "C", "H", "W"], "input")
    window = _int_pair(window_size, "window_size", 1)
    step = _int_pair(stride, "stride", 1)
    pad = _padding4(padding, "padding")
    check_border_type(border_type)
    size = (input.shape[-2], input.shape[-1])
    if not any(pad) and not _fits(size, window, step):
        if allow_auto_padding:
            pad = compute_padding(size, window, step)
        elif size[0] >= window[0] and size[1] >= window[1]:
            warnings.warn(
                f"extract_tensor_patches: windows {window} with stride {step} do not tile an image of size {size}; "
                "the last rows or columns are dropped (pass allow_auto_padding=True to pad instead)",
                UserWarning,
                stacklevel=2,
            )
    padded_size = (size[0] + pad[0] + pad[1], size[1] + pad[2] + pad[3])
    if padded_size[0] < window[0] or padded_size[1] < window[1]:
        raise ShapeError(
            "input", ("B", "C", f"H >= {window[0]}", f"W >= {window[1]}"), tuple(input.shape),
            f"input: expected an image (after padding {pad}) at least window_size={window}, got {padded_size}",
        )
    x = _pad_or_crop(input, pad, border_type)
    # (B, C, nh, nw, wh, ww) as a strided view, then one copy into the patch layout.
    windows = x.unfold(2, window[0], step[0]).unfold(3, window[1], step[1])
    b, c, nh, nw = windows.shape[:4]
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(b, nh * nw, c, window[0], window[1])


def _coverage(n_windows: int, length: int, window: int, stride: int, device: torch.device) -> torch.Tensor:
    """How many of the windows along one axis cover each position of that axis."""
    starts = torch.arange(n_windows, device=device).unsqueeze(1) * stride
    position = torch.arange(length, device=device)
    return ((position >= starts) & (position < starts + window)).sum(0)


def combine_tensor_patches(
    patches: torch.Tensor,
    original_size: IntPair,
    window_size: IntPair,
    stride: IntPair,
    allow_auto_unpadding: bool = False,
    unpadding: Padding = 0,
) -> torch.Tensor:
    """Put patches from :func:`extract_tensor_patches` back into an image, averaging overlaps.

    Kornia's ``eps`` argument is not taken: it is deprecated and has no effect in Kornia
    0.9, where each pixel is divided by its exact overlap count, as here.

    Args:
        patches: ``(B, N, C, wh, ww)`` floating patches, in the order of
            :func:`extract_tensor_patches`.
        original_size: size ``(H, W)`` of the image the patches came from (and of the output).
        window_size: the window size used to extract them.
        stride: the stride used to extract them; at most ``window_size``, so that every pixel
            is covered.
        allow_auto_unpadding: as ``allow_auto_padding`` of :func:`extract_tensor_patches`;
            pass the value used there.
        unpadding: the ``padding`` used to extract the patches; it is removed again (negative
            values, a crop at extraction, come back as zeros).

    Returns:
        ``(B, C, H, W)``: each pixel is the mean of the patch pixels that cover it (so the
        pair round-trips for any stride up to the window), and 0 where no patch covers it.

    Raises:
        TypeError: ``patches`` is not a floating tensor, or an option has the wrong type.
        ValueError: ``patches`` is not 5-D, its patch size differs from ``window_size`` or its
            patch count from the windows that fit the padded ``original_size``; a window or
            stride is not positive; ``stride`` exceeds ``window_size``.

    Convention:
        The inverse of :func:`extract_tensor_patches`: patch ``n = i * nw + j`` is placed at
        rows ``i * sh - top ...`` and columns ``j * sw - left ...`` of the output.

    Example:
        >>> image = torch.arange(25.0).view(1, 1, 5, 5)
        >>> patches = extract_tensor_patches(image, 3, stride=2)  # 4 overlapping windows
        >>> torch.equal(combine_tensor_patches(patches, (5, 5), 3, 2), image)
        True
        >>> patches = extract_tensor_patches(image, 2, stride=2, allow_auto_padding=True)
        >>> patches.shape
        torch.Size([1, 9, 1, 2, 2])
        >>> torch.equal(combine_tensor_patches(patches, (5, 5), 2, 2, allow_auto_unpadding=True), image)
        True
    """
    check_shape(patches, ["B", "N", "C", "H", "W"], "patches")
    check_floating(patches, "patches")
    size = _int_pair(original_size, "original_size", 1)
    window = _int_pair(window_size, "window_size", 1)
    step = _int_pair(stride, "stride", 1)
    pad = _padding4(unpadding, "unpadding")
    if step[0] > window[0] or step[1] > window[1]:
        raise ArgumentValueError(
            "stride", f"at most window_size={window}", stride,
            f"stride: expected at most window_size={window} (every pixel covered), got {stride!r}",
        )
    if not any(pad) and not _fits(size, window, step):
        if allow_auto_unpadding:
            pad = compute_padding(size, window, step)
        else:
            warnings.warn(
                f"combine_tensor_patches: windows {window} with stride {step} do not tile an image of size {size}; "
                "pixels that no patch covers are 0 (pass allow_auto_unpadding=True if the patches were extracted "
                "with allow_auto_padding=True)",
                UserWarning,
                stacklevel=2,
            )
    hp, wp = size[0] + pad[0] + pad[1], size[1] + pad[2] + pad[3]
    nh, nw = (hp - window[0]) // step[0] + 1, (wp - window[1]) // step[1] + 1
    b, n, c = patches.shape[:3]
    if hp < window[0] or wp < window[1] or n != nh * nw or tuple(patches.shape[3:]) != window:
        raise ShapeError(
            "patches", ("B", max(nh, 0) * max(nw, 0), "C", window[0], window[1]), tuple(patches.shape),
            f"patches: expected (B, {max(nh, 0) * max(nw, 0)}, C, {window[0]}, {window[1]}) for original_size={size}, "
            f"window_size={window}, stride={step} and unpadding={pad}, got {tuple(patches.shape)}",
        )
    columns = patches.permute(0, 2, 3, 4, 1).reshape(b, c * window[0] * window[1], n)
    canvas = F.fold(columns, (hp, wp), window, stride=step)  # sums the overlaps
    count = _coverage(nh, hp, window[0], step[0], patches.device).unsqueeze(1) * _coverage(
        nw, wp, window[1], step[1], patches.device
    )
    # An uncovered pixel has count 0 and sum 0: dividing by 1 leaves it 0.
    mean = canvas / count.clamp_min(1).to(patches.dtype)
    return F.pad(mean, (-pad[2], -pad[3], -pad[0], -pad[1]))


class ExtractTensorPatches(nn.Module):
    """Module form of :func:`extract_tensor_patches`."""

    def __init__(
        self,
        window_size: IntPair,
        stride: IntPair = 1,
        padding: Padding = 0,
        allow_auto_padding: bool = False,
        *,
        border_type: str = "constant",
    ) -> None:
        super().__init__()
        _int_pair(window_size, "window_size", 1)
        _int_pair(stride, "stride", 1)
        _padding4(padding, "padding")
        check_border_type(border_type)
        self.window_size, self.stride, self.padding = window_size, stride, padding
        self.allow_auto_padding, self.border_type = allow_auto_padding, border_type

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return extract_tensor_patches(
            input, self.window_size, self.stride, self.padding, self.allow_auto_padding, border_type=self.border_type
        )


class CombineTensorPatches(nn.Module):
    """Module form of :func:`combine_tensor_patches`; ``stride`` defaults to ``window_size``, as Kornia."""

    def __init__(
        self,
        original_size: IntPair,
        window_size: IntPair,
        stride: IntPair | None = None,
        unpadding: Padding = 0,
        allow_auto_unpadding: bool = False,
    ) -> None:
        super().__init__()
        _int_pair(original_size, "original_size", 1)
        window = _int_pair(window_size, "window_size", 1)
        step = window if stride is None else _int_pair(stride, "stride", 1)
        if step[0] > window[0] or step[1] > window[1]:
            raise ArgumentValueError("stride", f"at most window_size={window}", stride)
        _padding4(unpadding, "unpadding")
        self.original_size, self.window_size = original_size, window_size
        self.stride = window_size if stride is None else stride
        self.unpadding, self.allow_auto_unpadding = unpadding, allow_auto_unpadding

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return combine_tensor_patches(
            patches, self.original_size, self.window_size, self.stride, self.allow_auto_unpadding, self.unpadding
        )


__all__ = [
    "CombineTensorPatches",
    "ExtractTensorPatches",
    "combine_tensor_patches",
    "compute_padding",
    "extract_tensor_patches",
]
