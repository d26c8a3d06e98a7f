"""The device check the depth functions share: a tensor argument on another device than the
one it is used with is a typed error naming it (rather than PyTorch's message from deep
inside a warp), raised before any work. Reading ``.device`` is free: no synchronisation."""

from __future__ import annotations

import torch

from gradcv.core_ops.errors import DeviceError


def check_same_device(x: torch.Tensor, name: str, like: torch.Tensor, like_name: str) -> None:
    """Raise :class:`DeviceError` naming ``name`` if ``x`` is not on ``like``'s device."""
    if x.device != like.device:
        raise DeviceError(name, like.device, x.device,
                          f"{name}: expected a tensor on {like.device} (the device of {like_name}), got {x.device}")
