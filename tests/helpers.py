"""Helpers shared by the tests: conversions between numpy images and tensors, and small
checks (batch consistency, non-contiguous input, no in-place change of the input). The
full standard check that every operator goes through is ``tests/_kernel_check.py``."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch


def to_tensor(img: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """HxW or HxWxC numpy image -> (1, C, H, W) tensor."""
    t = torch.from_numpy(np.ascontiguousarray(img))
    if t.ndim == 2:
        t = t[None]
    else:
        t = t.permute(2, 0, 1)
    return t[None].to(dtype).contiguous()


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) tensor -> HxW (C == 1) or HxWxC numpy array."""
    t = t.detach().cpu()
    if t.ndim == 4:
        t = t[0]
    if t.shape[0] == 1:
        return t[0].numpy()
    return t.permute(1, 2, 0).numpy()



def noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a non-contiguous layout (every other column of a wider tensor)."""
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    out = wide[..., ::2]
    assert not out.is_contiguous() or x.shape[-1] <= 1
    return out


def assert_standard(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, atol: float = 1e-6) -> None:
    """Batched equals per-sample, non-contiguous equals contiguous, empty batch works,
    and the input is left unchanged."""
    before = x.clone()
    out = fn(x)
    assert torch.equal(x, before), "the operator changed its input in place"
    per_sample = torch.cat([fn(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(out, per_sample, atol=atol, rtol=0)
    torch.testing.assert_close(fn(noncontiguous(x)), out, atol=atol, rtol=0)
    empty = fn(x[:0])
    assert empty.shape[0] == 0 and empty.shape[1:] == out.shape[1:]


def assert_max_abs_diff(ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    """Same shape and ``max |ours - ref| <= atol``, computed in float64."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol:.3g}"


def small_input(c: int = 2, h: int = 6, w: int = 7, b: int = 1) -> torch.Tensor:
    """A small float64 input that requires grad, for gradcheck."""
    return torch.rand(b, c, h, w, dtype=torch.float64, requires_grad=True)


# Warnings that torch.compile raises and that are not about this code:
# - PyTorch's Dynamo instantiates torch.autograd.Function() when it traces a custom Function
#   (torch/_dynamo/side_effects.py; pytorch/pytorch#128439, fixed upstream by #186421);
# - Inductor imports torch.utils.mkldnn, which uses the deprecated torch.jit.script_method.
COMPILE_WARNINGS = [
    r"ignore:<class 'torch\.autograd\.function\.Function'> should not be instantiated:DeprecationWarning",
    r"ignore:`torch\.jit\.script_method` is deprecated:DeprecationWarning",
]


def ignore_compile_warnings(test: Callable) -> Callable:
    """Mark a torch.compile test to ignore PyTorch's own warnings (see COMPILE_WARNINGS)."""
    for spec in COMPILE_WARNINGS:
        test = pytest.mark.filterwarnings(spec)(test)
    return test
