"""Registration pairs with known ground truth, made from photographs, and the corner error.

Convention:
    Pixel coordinates (centres at integers, x right, y down). ``H_true`` takes ``src``
    pixels to ``dst`` pixels, so ``warp_perspective(src, H_true, size) ≈ dst`` wherever
    the source point lies inside ``src`` (the meaning of ``register_homography``'s result).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from gradcv.core_ops._checks import check_floating, check_same_device, check_shape
from gradcv.core_ops.errors import ShapeError
from gradcv.core_ops.geometry import get_perspective_transform, warp_perspective
from gradcv.registration.imaging import expose

PROTOCOLS = ("full", "detone", "photometric")
#: The largest corner move of each protocol when ``rho`` is not given (pixels).
DEFAULT_RHO = {"full": 32, "detone": 32, "photometric": 24}
#: The ``'photometric'`` protocol's changes to ``dst``, drawn uniformly per pair: gamma,
#: gain, bias, the noise's standard deviation, the blur's sigma (px, on a pair with
#: probability ``BLUR_SHARE``) and the JPEG quality (on a pair with probability ``JPEG_SHARE``).
GAMMA, GAIN, BIAS, NOISE, BLUR = (0.7, 1.4), (0.7, 1.3), (-0.08, 0.08), (0.0, 0.015), (0.5, 1.5)
JPEG_QUALITY = (50, 90)
BLUR_SHARE, JPEG_SHARE = 0.5, 1.0 / 3.0


def _corners(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Centres of the four corner pixels, ``(4, 2)``, clockwise from the top left."""
    return torch.tensor(
        [[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]], dtype=dtype, device=device
    )


def corner_error(H_est: torch.Tensor, H_true: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mean average corner error (MACE): the mean distance, in pixels, between the four
    corner-pixel centres of an image of ``size = (h, w)`` mapped by ``H_est`` and by ``H_true``.

    Args:
        H_est: ``(B, 3, 3)`` or ``(3, 3)`` pixel homographies.
        H_true: the same shape.
        size: ``(h, w)`` of the image the homographies act on.

    Returns:
        ``(B,)`` (or a scalar for ``(3, 3)`` inputs), in float64.

    Example:
        >>> shift = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> float(corner_error(shift, torch.eye(3), (8, 8)))
        0.5
    """
    check_shape(H_est, ["*", 3, 3], "H_est")
    check_shape(H_true, ["*", 3, 3], "H_true")
    if H_est.shape != H_true.shape:
        raise ShapeError("H_true", tuple(H_est.shape), tuple(H_true.shape),
                         f"H_true: expected the shape of H_est {tuple(H_est.shape)}, got {tuple(H_true.shape)}")
    check_same_device(H_true, "H_true", H_est, "H_est")
    c = _corners(size[0], size[1], torch.float64, H_est.device)
    ch = torch.cat([c, torch.ones(4, 1, dtype=torch.float64, device=H_est.device)], -1)

    def project(H: torch.Tensor) -> torch.Tensor:
        p = ch @ H.to(torch.float64).transpose(-1, -2)
        return p[..., :2] / p[..., 2:]

    return (project(H_est) - project(H_true)).norm(dim=-1).mean(-1)


def _as_batch(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        check_shape(images, ["N", "C", "H", "W"], "images")
        batch = list(images.unbind(0))
    else:
        batch = list(images)
        for i, img in enumerate(batch):
            check_shape(img, ["C", "H", "W"], f"images[{i}]")
    if not batch:
        raise ValueError("images: expected at least one image")
    for i, img in enumerate(batch):
        check_floating(img, f"images[{i}]")
        if img.shape[0] != batch[0].shape[0]:
            raise ValueError(f"images[{i}]: expected {batch[0].shape[0]} channels, got {img.shape[0]}")
    return batch


def _canvas(image: torch.Tensor, protocol: str, rho: int, patch: int) -> torch.Tensor:
    """The image the patches are cut from: 240 x 320 for DeTone's protocol; for ``'full'``
    the photograph scaled (aspect kept) so that its short side is ``patch + 2 rho + 2``."""
    h, w = image.shape[-2:]
    if protocol == "detone":
        size = (240, 320)
    else:
        short = patch + 2 * rho + 2
        f = short / min(h, w)
        size = (max(short, round(h * f)), max(short, round(w * f)))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _cut_pair(
    canvas: torch.Tensor, patch: int, rho: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pair of ``patch``-sized crops of ``canvas`` and its ``H_true`` (see :func:`make_pairs`)."""
    ch, cw = canvas.shape[-2:]
    x0 = int(torch.randint(rho, cw - patch - rho + 1, (1,), generator=generator))
    y0 = int(torch.randint(rho, ch - patch - rho + 1, (1,), generator=generator))
    moves = (torch.rand(4, 2, generator=generator, dtype=torch.float64) * 2 - 1) * rho
    # In patch coordinates: K maps src patch corners to the moved ones. With H_AB in
    # image coordinates, dst(q) = canvas(H_AB (q + o)) = src(K q), so src -> dst is K^-1.
    c = _corners(patch, patch, torch.float64, torch.device("cpu"))
    K = get_perspective_transform(c[None], (c + moves)[None])[0]
    H_true = torch.linalg.inv(K)
    H_true = H_true / H_true[2, 2]
    offset = torch.tensor([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    H_ab = offset @ K @ torch.linalg.inv(offset)
    warped = warp_perspective(canvas[None], torch.linalg.inv(H_ab)[None].to(canvas.dtype), (ch, cw))[0]
    window = (slice(None), slice(y0, y0 + patch), slice(x0, x0 + patch))
    return canvas[window], warped[window], H_true


def _second_exposure(dst: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``dst`` changed as the ``'photometric'`` protocol says, every draw from ``generator``
    (all of them drawn for every pair, so a pair's changes do not depend on the others')."""
    u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()

    def between(x: float, bounds: tuple[float, float]) -> float:
        return bounds[0] + x * (bounds[1] - bounds[0])

    quality = JPEG_QUALITY[0] + min(int(u[5] * 3 * (JPEG_QUALITY[1] - JPEG_QUALITY[0] + 1)), JPEG_QUALITY[1] - JPEG_QUALITY[0])
    return expose(
        dst, gamma=between(u[0], GAMMA), gain=between(u[1], GAIN), bias=between(u[2], BIAS),
        noise=between(u[3], NOISE), blur=between(2 * u[4], BLUR) if u[4] < BLUR_SHARE else 0.0,
        quality=quality if u[5] < JPEG_SHARE else 0, generator=generator,
    )


def make_pairs(
    images: torch.Tensor | Sequence[torch.Tensor],
    n: int,
    *,
    protocol: str = "full",
    rho: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` registration pairs with known homographies, cut from photographs.

    DeTone et al.'s protocol (``'detone'``): the photograph is resized to 320 x 240, a
    128 x 128 patch is placed at random (at least ``rho`` from the border), each of its
    four corners is moved uniformly in ``[-rho, rho]`` in x and y, ``H_AB`` is the
    homography from the patch corners to the moved ones (image coordinates), and ``dst``
    is the same patch location cut from the photograph warped by ``H_AB^-1``. The
    full-image variant (``'full'``) does the same with a 256 x 256 patch of the photograph
    scaled so that its short side is ``256 + 2 rho + 2``, so both images are real content
    (no black border) and the corners move up to ``rho`` pixels.

    The ``'photometric'`` protocol is the full-image one (the same ``src``, ``H_true`` and
    geometry for the same ``seed`` and ``rho``) with ``dst`` made a second exposure
    (:func:`gradcv.registration.imaging.expose`), drawn per pair from a second generator
    seeded by ``seed``: ``gain * dst ** gamma + bias`` with gamma in [0.7, 1.4], gain in
    [0.7, 1.3], bias in [-0.08, 0.08], a Gaussian blur of sigma 0.5-1.5 px on half the
    pairs, Gaussian noise of standard deviation up to 0.015, clamped to [0, 1], and a JPEG
    round trip (quality 50-90, :func:`gradcv.registration.imaging.jpeg`) on a third.
    Meant for photographs in [0, 1].

    Args:
        images: ``(N, C, H, W)`` floating photographs, or a sequence of ``(C, H, W)`` ones
            of different sizes; pair ``i`` uses a photograph drawn at random.
        n: number of pairs.
        protocol: ``'full'``, ``'detone'`` or ``'photometric'``.
        rho: maximum corner displacement in pixels (default: 32, 24 for ``'photometric'``).
        seed: seed of the generator (the pairs depend on nothing else).

    Returns:
        ``(src, dst, H_true)``: ``(n, C, S, S)`` twice (``S`` = 256 or 128) and
        ``(n, 3, 3)`` float64 pixel homographies from ``src`` to ``dst``.

    Example:
        >>> src, dst, H = make_pairs(torch.rand(1, 1, 300, 400), 2, protocol="detone", seed=1)
        >>> src.shape, H.shape
        (torch.Size([2, 1, 128, 128]), torch.Size([2, 3, 3]))
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    rho = DEFAULT_RHO[protocol] if rho is None else rho
    if isinstance(rho, bool) or not isinstance(rho, int) or not 0 <= rho < 56:
        raise ValueError(f"rho: expected an int in [0, 56), got {rho!r}")
    batch = _as_batch(images)
    patch = 128 if protocol == "detone" else 256
    generator = torch.Generator().manual_seed(seed)
    photometric = torch.Generator().manual_seed((seed * 2654435761 + 97) % 2**63)
    canvases = [_canvas(img, protocol, rho, patch) for img in batch]
    srcs, dsts, hs = [], [], []
    for _ in range(n):
        canvas = canvases[int(torch.randint(len(canvases), (1,), generator=generator))]
        src, dst, H_true = _cut_pair(canvas, patch, rho, generator)
        srcs.append(src)
        dsts.append(_second_exposure(dst, photometric) if protocol == "photometric" else dst)
        hs.append(H_true)
    if n == 0:
        C = batch[0].shape[0]
        empty = batch[0].new_zeros(0, C, patch, patch)
        return empty, empty.clone(), torch.zeros(0, 3, 3, dtype=torch.float64)
    return torch.stack(srcs).contiguous(), torch.stack(dsts).contiguous(), torch.stack(hs)
