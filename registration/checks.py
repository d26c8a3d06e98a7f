"""Input checks of :func:`gradcv.registration.register_homography`: typed errors that
name the argument, the expected and the given value; one reduction per check, before the
loop (a NaN would silently poison every pair)."""

from __future__ import annotations

import torch

from gradcv.core_ops._checks import check_floating, check_same_device, check_shape
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError


def check_images(src: object, dst: object, levels: int, min_size: int) -> None:
    """``src`` and ``dst``: ``(B, C, H, W)`` floating, same shape, dtype and device, finite,
    and large enough for ``levels`` levels of at least ``min_size`` pixels."""
    check_shape(src, ["B", "C", "H", "W"], "src")
    check_shape(dst, ["B", "C", "H", "W"], "dst")
    assert isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor)
    if src.shape != dst.shape:
        raise ShapeError("dst", tuple(src.shape), tuple(dst.shape), f"dst: expected the shape of src {tuple(src.shape)}, got {tuple(dst.shape)}")
    check_floating(src, "src")
    check_floating(dst, "dst")
    check_same_device(dst, "dst", src, "src")
    if dst.dtype != src.dtype:
        raise DTypeError("dst", src.dtype, dst.dtype, f"dst: expected dtype {src.dtype} (the dtype of src), got {dst.dtype}")
    short = min(src.shape[-2:])
    coarsest = short // 2 ** (levels - 1)
    if coarsest < min_size:
        raise ShapeError(
            "src", ("B", "C", f"H >= {min_size * 2 ** (levels - 1)}", f"W >= {min_size * 2 ** (levels - 1)}"), tuple(src.shape),
            f"src: a short side of {short} px leaves {coarsest} px at the coarsest of {levels} levels; "
            f"at least {min_size} px needed (use fewer levels or larger images)"
        )
    for x, name in ((src, "src"), (dst, "dst")):
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ArgumentValueError(name, "finite values", "NaN or infinity", f"{name}: expected finite values, got NaN or infinity")


def check_initial(H0: object, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``initial_homography``: ``(3, 3)``, ``(1, 3, 3)`` or ``(B, 3, 3)``, finite, not
    singular; returned as ``(B, 3, 3)`` float64 on ``like``'s device (differentiable)."""
    if not isinstance(H0, torch.Tensor):
        raise ArgumentTypeError("initial_homography", "a torch.Tensor", type(H0).__name__, f"initial_homography: expected a torch.Tensor, got {type(H0).__name__}")
    if H0.shape not in ((3, 3), (1, 3, 3), (batch, 3, 3)):
        raise ShapeError("initial_homography", ((3, 3), (1, 3, 3), (batch, 3, 3)), tuple(H0.shape), f"initial_homography: expected shape (3, 3), (1, 3, 3) or ({batch}, 3, 3), got {tuple(H0.shape)}")
    H0 = H0.to(device=like.device, dtype=torch.float64).expand(batch, 3, 3)
    if not bool(torch.isfinite(H0).all()):
        raise ArgumentValueError("initial_homography", "finite values", "NaN or infinity", "initial_homography: expected finite values")
    with torch.no_grad():
        scale = H0.abs().amax((-2, -1)).clamp_min(torch.finfo(torch.float64).tiny)
        det = torch.linalg.det(H0 / scale[:, None, None])
    if bool((det.abs() < 1e-9).any()):
        raise ArgumentValueError("initial_homography", "a non-singular matrix", "a singular one", "initial_homography: singular (|det| of the max-normalised matrix < 1e-9)")
    return H0


def check_mask(mask: object, name: str, like: torch.Tensor) -> torch.Tensor:
    """A ``(B, 1, H, W)`` or ``(1, 1, H, W)`` weight map in [0, 1] like ``like``'s batch and
    size, expanded to ``(B, 1, H, W)`` in ``like``'s dtype."""
    B, _, H, W = like.shape
    if not isinstance(mask, torch.Tensor):
        raise ArgumentTypeError(name, "a torch.Tensor", type(mask).__name__, f"{name}: expected a torch.Tensor, got {type(mask).__name__}")
    if mask.shape not in ((B, 1, H, W), (1, 1, H, W)):
        raise ShapeError(name, ((B, 1, H, W), (1, 1, H, W)), tuple(mask.shape), f"{name}: expected shape ({B}, 1, {H}, {W}) or (1, 1, {H}, {W}), got {tuple(mask.shape)}")
    mask = mask.to(device=like.device, dtype=like.dtype)
    if mask.numel() and not bool(((mask >= 0) & (mask <= 1)).all()):
        raise ArgumentValueError(name, "weights in [0, 1]", "values outside or NaN", f"{name}: expected weights in [0, 1] (NaN excluded)")
    return mask.expand(B, 1, H, W)


def spread(images: torch.Tensor) -> torch.Tensor:
    """Per-image intensity standard deviation ``(B,)`` (population; empty batches allowed)."""
    flat = images.flatten(1)
    return (flat - flat.mean(1, keepdim=True)).square().mean(1).sqrt()
