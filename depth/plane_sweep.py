"""Winner-take-all plane sweep over inverse depth: the baseline the depth solver must beat.

For each of ``planes`` fronto-parallel planes of the reference camera, spaced uniformly in
inverse depth between ``1 / max`` and ``1 / min``, every source view is warped into the
reference with :func:`gradcv.core_ops.geometry.depth_warp` and compared with the reference
image; each pixel keeps the plane of least cost. Planes are processed in chunks so that
memory stays at a few ``chunk * B * C * H * W`` tensors whatever the number of planes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_floating, check_int, check_same_device, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.core_ops.filters import box_blur
from gradcv.core_ops.geometry import depth_warp
from gradcv.depth.sgm import semi_global_aggregation

__all__ = ["PlaneSweepResult", "plane_sweep"]


class PlaneSweepResult(NamedTuple):
    """What :func:`plane_sweep` returns.

    Attributes:
        depth: ``(B, 1, H, W)`` depth (camera ``z``) of the winning plane; ``0`` where invalid.
        cost: ``(B, 1, H, W)`` the cost of the chosen plane (window-averaged absolute
            difference, averaged over the sources that see the pixel, or their least with
            ``aggregation='min'``); ``inf`` where invalid.
        valid: ``(B, 1, H, W)`` bool, the pixel is seen by at least one source for at least
            one plane.
        plane_depths: ``(B, planes)`` the depths of the planes swept, far to near.
    """

    depth: torch.Tensor
    cost: torch.Tensor
    valid: torch.Tensor
    plane_depths: torch.Tensor



def _min_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Minimum over a ``window x window`` neighbourhood (separable; the border repeats),
    as running minima of shifted slices: cheaper than a pooling kernel with indices."""
    r = window // 2
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r, 0, 0), mode="replicate")
    out = p[..., :, 0:w]
    for k in range(1, window):
        out = torch.minimum(out, p[..., :, k : k + w])
    p = F.pad(out, (0, 0, r, r), mode="replicate")
    out = p[..., 0:h, :]
    for k in range(1, window):
        out = torch.minimum(out, p[..., k : k + h, :])
    return out


def _check_depth_range(rng: torch.Tensor) -> None:
    """``rng`` ``(B, 2)``: finite, ``0 < min < max`` in every row, or a typed error."""
    near, far = rng[:, 0], rng[:, 1]
    if not (torch.isfinite(rng).all() and (near > 0).all() and (near < far).all()):
        raise ArgumentValueError(
            "depth_range", "finite 0 < min < max", rng.tolist(),
            f"depth_range: expected finite 0 < min < max, got {rng.tolist()}",
        )


def _depth_range(depth_range: object, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,)`` near and far depths from a ``(min, max)`` pair or a ``(B, 2)`` tensor."""
    if isinstance(depth_range, torch.Tensor):
        check_floating(depth_range, "depth_range")
        if depth_range.shape == (2,):
            depth_range = depth_range.expand(batch, 2)
        check_shape(depth_range, [batch, 2], "depth_range")
        rng = depth_range.detach().to(device=like.device, dtype=like.dtype)
        _check_depth_range(rng)
    elif isinstance(depth_range, (tuple, list)) and len(depth_range) == 2:
        for v in depth_range:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ArgumentTypeError(
                    "depth_range", "(float, float)", type(v),
                    f"depth_range: expected a (min, max) pair of numbers, got an item of type {type(v).__name__}",
                )
        # Checked on the CPU, in the working dtype (what the sweep will use): no device sync.
        pair = torch.tensor([float(depth_range[0]), float(depth_range[1])], dtype=like.dtype).expand(batch, 2)
        _check_depth_range(pair)
        rng = pair.to(like.device)
    else:
        raise ArgumentTypeError(
            "depth_range", "(min, max) or (B, 2) tensor", type(depth_range),
            f"depth_range: expected a (min, max) pair or a (B, 2) tensor, got {depth_range!r}",
        )
    return rng[:, 0], rng[:, 1]


def plane_sweep(
    images: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    ref_index: int = 0,
    *,
    depth_range: tuple[float, float] | torch.Tensor,
    planes: int = 128,
    window: int = 5,
    chunk: int = 8,
    aggregation: str = "mean",
    shiftable: bool = False,
    subpixel: bool = False,
    sgm: tuple[float, float] | None = None,
    masks: torch.Tensor | None = None,
) -> PlaneSweepResult:
    """Winner-take-all plane-sweep depth of the reference view of each problem of a batch.

    Args:
        images: ``(B, N, C, H, W)`` floating views, ``N >= 2``.
        intrinsics: ``(B, N, 3, 3)`` camera matrices.
        extrinsics: ``(B, N, 4, 4)`` world-to-camera transforms.
        ref_index: the reference view, ``0 <= ref_index < N``; the others are sources.
        depth_range: ``(min, max)`` positive depths, ``min < max``, or a ``(B, 2)`` tensor.
        planes: number of planes (``>= 2``), uniform in inverse depth from ``1 / max`` to ``1 / min``.
        window: odd side of the box window that aggregates the per-pixel cost (``1``: none).
        chunk: planes warped at a time (memory is a few ``chunk * B * C * H * W`` tensors).
        aggregation: ``'mean'`` over the sources that see a pixel, or ``'min'``: the least
            cost among them (a pixel occluded in one source is matched in another).
        shiftable: take, for each pixel, the least cost of all the windows that contain it
            rather than the one centred on it ("shiftable windows"), so that a window
            straddling a depth edge does not drag the background to the foreground's depth.
        subpixel: refine the winning plane by the vertex of the parabola through the costs
            of it and its two neighbours (in inverse depth; keeps a ``(B, planes, H, W)``
            cost volume).
        sgm: ``(p1, p2)``: choose each pixel's plane on the cost volume aggregated by
            :func:`gradcv.depth.sgm.semi_global_aggregation` (guided by the reference;
            ``cost`` stays the unaggregated cost of the chosen plane, and ``subpixel``
            fits the unaggregated costs around it). Removes the winner-take-all's blotches
            where texture is weak.
        masks: optional ``(B, N, 1, H, W)`` (per pixel) or ``(B, N, C, H, W)`` (per channel)
            weights, values below 0.5 unusable (saturated, outside a region of interest):
            the cost averages the channels usable in both the reference and the source
            sample, a sample with none counts as unseen, and a reference pixel with none
            costs ``0`` on every plane (no evidence either way, so
            ``sgm`` fills it from its neighbours; without ``sgm`` it takes the farthest plane).

    Returns:
        A :class:`PlaneSweepResult` ``(depth, cost, valid, plane_depths)``.

    Convention:
        Pixel centres at integers; camera frames x right, y down, z forward; depth is
        camera-frame ``z`` of the reference. Each source ``s`` is warped with
        ``src_T_ref = E_s @ E_ref^-1``. The per-pixel cost is the absolute difference
        averaged over channels, box-averaged over the window (source samples outside the
        image take the border's value), then averaged over the sources whose warp of the
        window's centre lands inside their image. Ties go to the farther plane.

    Example:
        >>> K = torch.tensor([[4.0, 0.0, 2.5], [0.0, 4.0, 1.5], [0.0, 0.0, 1.0]]).expand(1, 2, 3, 3)
        >>> E = torch.eye(4).repeat(1, 2, 1, 1)
        >>> E[0, 1, 0, 3] = -0.5
        >>> img = torch.rand(1, 1, 4, 6, generator=torch.Generator().manual_seed(0))
        >>> out = plane_sweep(torch.cat([img, img], 1)[:, :, None], K, E, depth_range=(1.0, 4.0), planes=4, window=1)
        >>> out.plane_depths
        tensor([[4.0000, 2.0000, 1.3333, 1.0000]])
    """
    check_shape(images, ["B", "N", "C", "H", "W"], "images")
    check_floating(images, "images")
    B, N, C, H, W = images.shape
    check_shape(intrinsics, ["B", "N", 3, 3], "intrinsics")
    check_floating(intrinsics, "intrinsics")
    check_shape(extrinsics, ["B", "N", 4, 4], "extrinsics")
    check_floating(extrinsics, "extrinsics")
    for name, cams in (("intrinsics", intrinsics), ("extrinsics", extrinsics)):
        if cams.shape[:2] != (B, N):
            raise ShapeError(
                name, (B, N) + tuple(cams.shape[2:]), tuple(cams.shape),
                f"{name}: expected batch and view sizes ({B}, {N}) (those of images), got {tuple(cams.shape[:2])}",
            )
        check_same_device(cams, name, images, "images")
    if N < 2:
        raise ShapeError("images", ("B", "N >= 2", "C", "H", "W"), tuple(images.shape),
                         f"images: expected at least 2 views (a reference and a source), got {N}")
    ref_index = check_int(ref_index, "ref_index", 0)
    if ref_index >= N:
        raise ArgumentValueError("ref_index", f"< {N}", ref_index,
                                 f"ref_index: expected 0 <= ref_index < {N} (the number of views), got {ref_index}")
    planes = check_int(planes, "planes", 2)
    window = check_int(window, "window", 1)
    if window % 2 == 0:
        raise ArgumentValueError("window", "odd", window, f"window: expected an odd int, got {window}")
    chunk = check_int(chunk, "chunk", 1)
    if masks is not None:
        check_tensor(masks, "masks")
        if masks.dim() != 5 or masks.shape[:2] != (B, N) or masks.shape[2] not in (1, C) or masks.shape[-2:] != (H, W):
            raise ShapeError("masks", (B, N, "1 or C", H, W), tuple(masks.shape),
                             f"masks: expected shape ({B}, {N}, 1 or {C}, {H}, {W}) (one per view), got {tuple(masks.shape)}")
        check_same_device(masks, "masks", images, "images")
        masks = masks.to(images.dtype)
    if aggregation not in ("mean", "min"):
        raise ArgumentValueError("aggregation", ("mean", "min"), aggregation,
                                 f"aggregation: expected 'mean' or 'min', got {aggregation!r}")
    if sgm is not None:
        if not (isinstance(sgm, (tuple, list)) and len(sgm) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sgm)):
            raise ArgumentTypeError("sgm", "(p1, p2)", type(sgm), f"sgm: expected a (p1, p2) pair of numbers or None, got {sgm!r}")
        if not (math.isfinite(sgm[0]) and math.isfinite(sgm[1]) and 0 <= sgm[0] <= sgm[1]):
            raise ArgumentValueError("sgm", "finite 0 <= p1 <= p2", tuple(sgm),
                                     f"sgm: expected finite penalties 0 <= p1 <= p2, got {tuple(sgm)!r}")
    for name, flag in (("shiftable", shiftable), ("subpixel", subpixel)):
        if not isinstance(flag, bool):
            raise ArgumentTypeError(name, bool, type(flag), f"{name}: expected a bool, got {type(flag).__name__}")

    work = torch.float64 if torch.float64 in (images.dtype, intrinsics.dtype, extrinsics.dtype) else torch.float32
    near, far = _depth_range(depth_range, B, images.to(work))
    steps = torch.linspace(0.0, 1.0, planes, dtype=work, device=images.device)
    inv = (1.0 / far)[:, None] + steps[None, :] * (1.0 / near - 1.0 / far)[:, None]
    plane_depths = 1.0 / inv  # (B, P), far to near

    ref = images[:, ref_index]
    K_ref, E_ref = intrinsics[:, ref_index], extrinsics[:, ref_index]
    sources = [s for s in range(N) if s != ref_index]
    E_ref_inv = torch.linalg.inv(E_ref.to(work))
    poses = [(extrinsics[:, s].to(work) @ E_ref_inv) for s in sources]

    best_cost = torch.full((B, 1, H, W), math.inf, dtype=images.dtype, device=images.device)
    best_index = torch.zeros((B, 1, H, W), dtype=torch.long, device=images.device)
    keep = subpixel or sgm is not None
    volume = torch.empty((B, planes, H, W), dtype=images.dtype, device=images.device) if keep else None
    for start in range(0, planes, chunk):
        k = min(chunk, planes - start)
        depth = plane_depths[:, start : start + k].reshape(B * k, 1, 1, 1).expand(B * k, 1, H, W).to(images.dtype)
        ref_k = ref.repeat_interleave(k, 0)
        if masks is not None:
            ref_usable_k = masks[:, ref_index].repeat_interleave(k, 0) > 0.5
        K_ref_k = K_ref.repeat_interleave(k, 0)
        # 'min': the least cost of the sources that see the pixel (inf: none); 'mean': their sum and count.
        least = torch.full((B * k, 1, H, W), math.inf, dtype=images.dtype, device=images.device)
        total = torch.zeros_like(least)
        count = torch.zeros_like(least)
        for s, pose in zip(sources, poses):
            source = images[:, s] if masks is None else torch.cat([images[:, s], masks[:, s]], 1)
            warped, seen = depth_warp(  # one warp for the image and its mask
                source.repeat_interleave(k, 0), depth, K_ref_k,
                intrinsics[:, s].repeat_interleave(k, 0), pose.repeat_interleave(k, 0), padding_mode="border",
            )
            if masks is None:
                cost = (warped - ref_k).abs().mean(1, keepdim=True)
            else:
                warped, usable = warped[:, :C], warped[:, C:]
                channels = ((usable > 0.5) & ref_usable_k).to(images.dtype).expand_as(warped)
                per_pixel = channels.sum(1, keepdim=True)
                cost = ((warped - ref_k).abs() * channels).sum(1, keepdim=True) / per_pixel.clamp_min(1.0)
                seen = seen & (per_pixel > 0)
                if window > 1:  # the window averages its usable samples only
                    weight = (per_pixel > 0).to(images.dtype)
                    cost = box_blur(cost * weight, window, border_type="replicate") / box_blur(
                        weight, window, border_type="replicate").clamp_min(1e-6)
            if window > 1 and masks is None:
                cost = box_blur(cost, window, border_type="replicate")
            if shiftable and window > 1:
                # The least cost of the windows containing the pixel: a min filter of the window costs.
                cost = _min_filter(cost, window)
            if aggregation == "min":
                least = torch.where(seen, torch.minimum(least, cost), least)
            else:
                seen = seen.to(images.dtype)
                total = total + cost * seen
                count = count + seen
        if aggregation == "min":
            mean = least
        else:
            mean = torch.where(count > 0, total / count.clamp_min(1.0), torch.full_like(total, math.inf))
        if masks is not None:
            mean = torch.where(ref_usable_k.any(1, keepdim=True), mean, torch.zeros_like(mean))
        if volume is not None:
            volume[:, start : start + k] = mean.view(B, k, H, W)
        chunk_cost, chunk_index = mean.view(B, k, H, W).min(1, keepdim=True)
        better = chunk_cost < best_cost
        best_cost = torch.where(better, chunk_cost, best_cost)
        best_index = torch.where(better, chunk_index + start, best_index)

    if sgm is not None and volume is not None:
        aggregated = semi_global_aggregation(volume, ref, float(sgm[0]), float(sgm[1]))
        chosen = aggregated.argmin(1, keepdim=True)
        chosen_cost = volume.gather(1, chosen)
        # A plane that no source sees there (its cost is inf) falls back to the winner-take-all's.
        seen = torch.isfinite(chosen_cost)
        best_index = torch.where(seen, chosen, best_index)
        best_cost = torch.where(seen, chosen_cost, best_cost)
    valid = torch.isfinite(best_cost)
    depth = plane_depths.to(images.dtype).gather(1, best_index.view(B, H * W)).view(B, 1, H, W)
    if subpixel and volume is not None and planes >= 3:
        inv_planes = inv.to(images.dtype)
        chosen = inv_planes.gather(1, best_index.view(B, H * W)).view(B, 1, H, W)
        # Parabola through (i - 1, i, i + 1); its vertex offset, in planes, within +-1/2.
        i = best_index.clamp(1, planes - 2)
        c0, cm, cp = (volume.gather(1, j) for j in (i, i - 1, i + 1))
        curvature = cm - 2 * c0 + cp
        fit = torch.isfinite(curvature) & (curvature > 0) & (i == best_index)
        offset = torch.where(fit, (cm - cp) / (2 * curvature.clamp_min(1e-12)), torch.zeros_like(c0))
        step = (inv_planes[:, 1] - inv_planes[:, 0]).view(B, 1, 1, 1)
        depth = 1.0 / (chosen + offset.clamp(-0.5, 0.5) * step)
    depth = torch.where(valid, depth, torch.zeros_like(depth))
    return PlaneSweepResult(depth, best_cost, valid, plane_depths.to(images.dtype))
