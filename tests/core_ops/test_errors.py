"""The input errors of core_ops: one family a caller can catch, with readable attributes,
still the built-in ValueError/TypeError they always were, and messages that name the argument."""

from __future__ import annotations

import pickle
from typing import Callable

import pytest
import torch

import gradcv.core_ops as core_ops
from gradcv.core_ops import color, contrib, filters, geometry, losses, pyramid
from gradcv.core_ops.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    DeviceError,
    DTypeError,
    GradcvError,
    ShapeError,
)

IMG = torch.rand(2, 3, 8, 9)

# (call, error class, argument name, expected, actual); expected/actual None: not checked.
CASES: list[tuple[Callable[[], object], type, str, object, object]] = [
    (lambda: filters.sobel(torch.rand(8, 9)), ShapeError, "input", ("B", "C", "H", "W"), (8, 9)),
    (lambda: filters.gaussian_blur2d(IMG.long(), 3, 1.0), DTypeError, "input", "floating", torch.int64),
    (lambda: filters.gaussian_blur2d([1.0], 3, 1.0), ArgumentTypeError, "input", torch.Tensor, list),
    (lambda: filters.gaussian_blur2d(IMG, 4, 1.0), ArgumentValueError, "kernel_size", "positive odd sizes", 4),
    (lambda: filters.box_blur(IMG, 3, "wrap"), ArgumentValueError, "border_type", None, "wrap"),
    (lambda: color.rgb_to_hsv(torch.rand(2, 4, 8, 9)), ShapeError, "image", ("*", 3, "H", "W"), (2, 4, 8, 9)),
    (lambda: color.rgb_to_grayscale(IMG, rgb_weights=torch.ones(4)), ShapeError, "rgb_weights", (3,), (4,)),
    (lambda: pyramid.pyrdown(IMG[0]), ShapeError, "input", ("B", "C", "H", "W"), (3, 8, 9)),
    (lambda: pyramid.build_pyramid(IMG, 0), ArgumentValueError, "max_level", None, 0),
    (lambda: losses.ssim(IMG, IMG[:1], 3), ShapeError, "img2", (2, 3, 8, 9), (1, 3, 8, 9)),
    (lambda: losses.ssim(IMG, IMG.double(), 3), DTypeError, "img2", torch.float32, torch.float64),
    (lambda: losses.psnr(IMG, IMG, -1.0), ArgumentValueError, "max_val", None, -1.0),
    (
        lambda: losses.focal_loss(torch.rand(2, 3), torch.zeros(2, dtype=torch.int32), 0.5),
        DTypeError, "target", torch.int64, torch.int32,
    ),
    (lambda: contrib.extract_tensor_patches(IMG, 3, stride=0), ArgumentValueError, "stride", None, 0),
    (lambda: contrib.spatial_soft_argmax2d(IMG.long()), DTypeError, "input", "floating", torch.int64),
    (
        lambda: geometry.warp_perspective(IMG, torch.eye(3).expand(3, 3, 3), (8, 9)),
        ShapeError, "M", None, (3, 3, 3),
    ),
    (lambda: geometry.warp_perspective(IMG, torch.eye(3)[None], (8, -1)), ArgumentValueError, "dsize", None, (8, -1)),
    (
        lambda: geometry.find_homography_dlt(torch.rand(1, 5, 2), torch.rand(1, 4, 2)),
        ShapeError, "points2", (1, 5, 2), (1, 4, 2),
    ),
    (
        lambda: geometry.transform_points(torch.eye(3)[None], torch.rand(1, 4, 2, dtype=torch.float64)),
        DTypeError, "points_1", torch.float32, torch.float64,
    ),
]
IDS = [f"{i}-{c[1].__name__}-{c[2]}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize("call, cls, name, expected, actual", CASES, ids=IDS)
def test_error_is_typed_and_readable(call, cls, name, expected, actual):
    with pytest.raises(GradcvError) as info:
        call()
    err = info.value
    assert type(err) is cls
    assert err.name == name
    # the message starts with the argument (or the pair of arguments that disagree)
    assert name in str(err).split(": ")[0].split(", "), str(err)
    if expected is not None:
        assert err.expected == expected
    if actual is not None:
        assert err.actual == actual


@pytest.mark.parametrize("call, cls, name, expected, actual", CASES, ids=IDS)
def test_error_is_still_the_builtin_error(call, cls, name, expected, actual):
    builtin = TypeError if issubclass(cls, TypeError) else ValueError
    with pytest.raises(builtin, match=rf"^([a-z_0-9]+, )?{name}: "):
        call()


def test_family():
    for cls in (ShapeError, DeviceError, ArgumentValueError):
        assert issubclass(cls, GradcvError) and issubclass(cls, ValueError) and not issubclass(cls, TypeError)
    for cls in (DTypeError, ArgumentTypeError):
        assert issubclass(cls, GradcvError) and issubclass(cls, TypeError) and not issubclass(cls, ValueError)
    # re-exported where a user looks first
    assert core_ops.ShapeError is ShapeError and core_ops.GradcvError is GradcvError


def test_default_message_and_pickle():
    err = ShapeError("points", ("B", "N", 2), (4, 3))
    assert str(err) == "points: expected shape (B, N, 2), got (4, 3)"
    assert str(DTypeError("x", torch.float32, torch.int64)) == "x: expected dtype torch.float32, got torch.int64"
    assert str(DeviceError("mask", torch.device("cpu"), torch.device("meta"))) == "mask: expected device cpu, got meta"
    # a worker process (DataLoader, multiprocessing) gets the attributes back
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ShapeError and (back.name, back.expected, back.actual) == (err.name, err.expected, err.actual)
    assert str(back) == str(err)


def test_device_mismatch_is_a_device_error():
    target = torch.rand(2, 3, 8, 9, device="meta")
    with pytest.raises(DeviceError) as info:
        losses.ssim(IMG, target, 3)
    assert info.value.name == "img2" and info.value.expected == IMG.device and info.value.actual == target.device


def test_checks_are_cheap_when_they_pass(monkeypatch):
    # No message formatting (no error object) on the success path.
    def boom(*args, **kwargs):
        raise AssertionError("an error was built for a valid input")

    monkeypatch.setattr(GradcvError, "__init__", boom)
    filters.sobel(IMG)
    losses.ssim(IMG, IMG, 3)
    geometry.warp_perspective(IMG, torch.eye(3)[None], (8, 9))
