"""What a second exposure does to a photograph, in torch only: the photometric changes of
:func:`gradcv.registration.make_pairs`'s ``'photometric'`` protocol (gamma, gain, bias,
sensor noise, a little blur) and a baseline JPEG round trip.

The JPEG codec is the standard's baseline lossy path, per channel: 8-bit values shifted by
-128, edge-replicated to whole 8 x 8 blocks, the orthonormal 8-point DCT-II on rows and
columns (the standard's ``1/4 C(u) C(v)`` normalisation), division by the quantisation
table of Annex K (the luminance table, scaled by quality as the IJG library does:
``50 / q`` below quality 50, ``2 - q / 50`` from it, each entry rounded and kept in
[1, 255]), rounding to integers, and the way back (dequantise, inverse DCT, +128, round
and clamp to 8 bits). No chroma subsampling and no entropy coding (it is lossless). It
matches libjpeg (Pillow, OpenCV) up to its integer DCT's rounding: a level or two on a
few pixels.
"""

from __future__ import annotations

import math

import torch

from gradcv.core_ops.filters import gaussian_blur2d

#: ITU-T T.81 Annex K, Table K.1: the luminance quantisation table (row-major, u down, v across).
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)


def quantisation_table(quality: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """``(8, 8)`` the luminance table scaled for ``quality`` in [1, 100] (IJG's scaling)."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality: expected an int in [1, 100], got {quality!r}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table = torch.tensor(LUMA_TABLE, dtype=torch.float64)
    table = torch.floor((table * scale + 50) / 100).clamp(1, 255)
    return table.to(dtype=dtype, device=device)


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(8, 8)`` orthonormal DCT-II: ``D[k, n] = a(k) cos((2 n + 1) k pi / 16)``."""
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    D = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    D[0] = math.sqrt(1 / 8)
    return D.to(dtype=dtype, device=device)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """A baseline JPEG compression and decompression of ``images`` (see the module).

    Args:
        images: ``(B, C, H, W)`` floating, values in [0, 1] (clamped first); each channel is
            coded on its own with the luminance table.
        quality: IJG quality in [1, 100].

    Returns:
        ``(B, C, H, W)`` in ``images``' dtype, multiples of 1/255.

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> y = jpeg(x, 75)
        >>> y.shape, bool(((y * 255).round() == y * 255).all())
        (torch.Size([1, 1, 16, 16]), True)
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images: expected a floating (B, C, H, W) tensor, got {tuple(images.shape)} {images.dtype}")
    B, C, H, W = images.shape
    work = torch.float64
    Q = quantisation_table(quality, work, images.device)
    D = _dct_matrix(work, images.device)
    v = torch.round(images.to(work).clamp(0, 1) * 255) - 128
    ph, pw = -H % 8, -W % 8
    if ph or pw:
        v = torch.cat([v, v[..., -1:, :].expand(B, C, ph, W)], -2) if ph else v
        v = torch.cat([v, v[..., -1:].expand(B, C, H + ph, pw)], -1) if pw else v
    hb, wb = (H + ph) // 8, (W + pw) // 8
    blocks = v.reshape(B, C, hb, 8, wb, 8).transpose(3, 4)  # (B, C, hb, wb, 8, 8)
    coeffs = D @ blocks @ D.T
    coeffs = torch.round(coeffs / Q) * Q
    back = (D.T @ coeffs @ D).transpose(3, 4).reshape(B, C, hb * 8, wb * 8)[..., :H, :W]
    return (torch.round(back + 128).clamp(0, 255) / 255).to(images.dtype)


def expose(
    image: torch.Tensor,
    *,
    gamma: float,
    gain: float,
    bias: float,
    noise: float,
    blur: float,
    quality: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``image (C, H, W)`` in [0, 1] as a second exposure: ``gain * image ** gamma + bias``,
    a Gaussian blur of ``blur`` px (0: none), Gaussian noise of standard deviation
    ``noise`` drawn from ``generator``, clamped to [0, 1], and a JPEG round trip at
    ``quality`` (0: none; otherwise 8-bit quantised)."""
    out = gain * image.clamp_min(0) ** gamma + bias
    if blur > 0:
        out = gaussian_blur2d(out[None], None, blur, border_type="replicate")[0]
    if noise > 0:
        # Drawn on the generator's device (a CPU generator gives the same noise for the same
        # seed on every device), then moved to the image's.
        out = out + noise * torch.randn(out.shape, generator=generator, dtype=torch.float64, device=generator.device).to(out.device, out.dtype)
    out = out.clamp(0, 1)
    if quality > 0:
        out = jpeg(out[None], quality)[0]
    return out
