"""Image pyramids: OpenCV's ``pyrDown``/``pyrUp``, ``build_pyramid`` and a Gaussian scale space.

Convention:
    Level ``l + 1`` of a pyramid built by :func:`pyrdown` is an exact decimation of the
    blurred level ``l``: its pixel ``(x', y')`` *is* pixel ``(2 x', 2 y')`` of level ``l``
    (pixel centres at integer coordinates), so a point at pixel ``p`` of level ``l``
    lies at ``p / 2**l`` in level ``l``'s own pixels. A level of an image ``W`` pixels
    wide is ``ceil(W / 2)`` wide, as ``cv2.pyrDown``. In the normalised coordinates of
    ``DESIGN.md`` (``[-1, 1]`` edge to edge) the decimated grid sits half a level-``l``
    pixel left of where a half-pixel-centred resize would put it: level-``(l+1)``
    normalised coordinate ``u'`` is level-``l`` normalised ``u' - 1/W`` for even ``W``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcv.core_ops._checks import check_border_type, check_image
from gradcv.core_ops.errors import ArgumentValueError, ShapeError
from gradcv.core_ops.filters import correlate_separable, pad2d
from gradcv.core_ops.filters.kernels import default_kernel_size, gaussian_taps

_BINOMIAL5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
# pyrUp: the 5-tap binomial on the zero-stuffed image, times 2 per axis for the zeros.
_BINOMIAL5_UP = tuple(2 * t for t in _BINOMIAL5)


def pyrdown(input: torch.Tensor, border_type: str = "reflect") -> torch.Tensor:
    """Blur with the 5x5 binomial kernel and keep every other pixel, as ``cv2.pyrDown``.

    Only the kept pixels are computed. Kornia's ``align_corners`` and ``factor`` are not
    offered: the result is OpenCV's exact decimation (see the module's Convention).

    Args:
        input: image ``(B, C, H, W)``.
        border_type: ``'reflect'`` (REFLECT_101, OpenCV's default), ``'constant'``,
            ``'replicate'`` or ``'circular'``.

    Returns:
        ``(B, C, ceil(H / 2), ceil(W / 2))``.

    Convention:
        Output pixel ``(x', y')`` is the blurred input at pixel ``(2 x', 2 y')``.

    Example:
        >>> pyrdown(torch.rand(1, 3, 5, 8)).shape
        torch.Size([1, 3, 3, 4])
    """
    check_image(input)
    check_border_type(border_type)
    return correlate_separable(input, [(_BINOMIAL5, _BINOMIAL5)], border_type, stride=2).squeeze(-3)


def pyrup(input: torch.Tensor, border_type: str = "reflect", *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Upsample by two and blur, as ``cv2.pyrUp``.

    Kornia's ``align_corners`` is not taken: the output is OpenCV's, whose pixel map is
    stated under Convention.

    Args:
        input: image ``(B, C, H, W)``.
        border_type: border of the upsampled image (OpenCV: REFLECT_101, ``'reflect'``).
        size: output ``(H', W')`` with ``H'`` either ``2H`` or ``2H - 1`` (and the same for
            W), as ``cv2.pyrUp``'s ``dstsize`` (which also admits ``2H + 1``; not offered
            here); ``None`` for ``(2H, 2W)``. Use it to undo
            :func:`pyrdown` on odd sizes: ``pyrup(pyrdown(x), size=x.shape[-2:])``.

    Returns:
        ``(B, C, H', W')``.

    Convention:
        Input pixel ``(x, y)`` lands on output pixel ``(2 x, 2 y)``: the inverse of
        :func:`pyrdown`'s mapping.

    Example:
        >>> pyrup(torch.ones(1, 1, 3, 3))[0, 0, 0]
        tensor([1., 1., 1., 1., 1., 1.])
    """
    check_image(input)
    check_border_type(border_type)
    h, w = input.shape[-2:]
    if size is None:
        size = (2 * h, 2 * w)
    ho, wo = int(size[0]), int(size[1])
    if ho not in (2 * h, 2 * h - 1) or wo not in (2 * w, 2 * w - 1):
        raise ArgumentValueError(
            "size", ((2 * h - 1, 2 * h), (2 * w - 1, 2 * w)), tuple(size),
            f"size: expected (2H or 2H-1, 2W or 2W-1) = ({2 * h}, {2 * w}) or one less, got {tuple(size)}",
        )
    # OpenCV makes an odd size by cropping the even one, border pixels included.
    if border_type == "replicate":
        # Replicating the zero-stuffed image would copy a row of samples where a row of
        # zeros belongs (a constant image would brighten at the border): replicate the
        # input by one pixel instead, then stuff and keep the 'valid' part.
        stuffed = _stuff(pad2d(input, (1, 1, 1, 1), "replicate"))
        up = correlate_separable(stuffed, [(_BINOMIAL5_UP, _BINOMIAL5_UP)], padding="valid").squeeze(-3)
    else:
        up = correlate_separable(_stuff(input), [(_BINOMIAL5_UP, _BINOMIAL5_UP)], border_type).squeeze(-3)
    return up[..., :ho, :wo]


def _stuff(input: torch.Tensor) -> torch.Tensor:
    """Zero image ``(*, 2H, 2W)`` with ``input`` at the even rows and columns (differentiable)."""
    # Interleave with zeros by stacking and reshaping: autograd-friendly, two copies.
    rows = torch.stack([input, torch.zeros_like(input)], dim=-1).flatten(-2)
    return torch.stack([rows, torch.zeros_like(rows)], dim=-2).flatten(-3, -2)


def build_pyramid(input: torch.Tensor, max_level: int, border_type: str = "reflect") -> list[torch.Tensor]:
    """The Gaussian pyramid ``[input, pyrdown(input), ...]`` with ``max_level`` images.

    Args:
        input: image ``(B, C, H, W)``.
        max_level: number of levels returned, the input included (Kornia's meaning); >= 1.
            There is no ``align_corners``, unlike Kornia's: the levels are :func:`pyrdown`'s.
        border_type: passed to :func:`pyrdown`.

    Returns:
        ``max_level`` tensors, level ``l`` of size ``ceil(H / 2**l) x ceil(W / 2**l)``.

    Example:
        >>> [tuple(p.shape[-2:]) for p in build_pyramid(torch.rand(1, 1, 9, 16), 3)]
        [(9, 16), (5, 8), (3, 4)]
    """
    check_image(input)
    check_border_type(border_type)
    if not isinstance(max_level, int) or isinstance(max_level, bool) or max_level < 1:
        raise ArgumentValueError("max_level", "a positive int", max_level, f"max_level: expected a positive int, got {max_level!r}")
    levels = [input]
    for _ in range(max_level - 1):
        levels.append(pyrdown(levels[-1], border_type))
    return levels


class PyrDown(nn.Module):
    """Module form of :func:`pyrdown` (no ``align_corners`` or ``factor``, unlike Kornia's)."""

    def __init__(self, border_type: str = "reflect") -> None:
        super().__init__()
        self.border_type = check_border_type(border_type)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return pyrdown(input, self.border_type)


class PyrUp(nn.Module):
    """Module form of :func:`pyrup` (no ``align_corners``, unlike Kornia's)."""

    def __init__(self, border_type: str = "reflect") -> None:
        super().__init__()
        self.border_type = check_border_type(border_type)

    def forward(self, input: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return pyrup(input, self.border_type, size=size)


class ScalePyramid(nn.Module):
    """Gaussian scale space for blob detectors: octaves of ``n_levels + extra_levels`` levels.

    Level ``i`` of every octave has blur ``init_sigma * 2**(i / n_levels)`` in that
    octave's pixels; a DoG detector needs ``extra_levels = 3`` (two for the differences
    above and below, one for the extra difference). The first level of octave ``o + 1``
    is level ``n_levels`` of octave ``o`` decimated (blur ``2 init_sigma`` there, so
    exactly ``init_sigma`` after), as in Lowe's SIFT.

    Args:
        n_levels: levels per octave that detections come from.
        init_sigma: blur of the first level, in its octave's pixels.
        min_size: no octave smaller than this (in either dimension) is made.
        double_image: start from the image upsampled twice (OpenCV's SIFT does).
        extra_levels: levels beyond ``n_levels`` in each octave.
        input_sigma: blur assumed present in the input (0.5 for a camera image).

    Returns:
        From ``forward``: ``(pyramid, sigmas, pixel_dists)``, one entry per octave:
        ``pyramid[o]`` is ``(B, C, L, H_o, W_o)`` with ``L = n_levels + extra_levels``,
        ``sigmas[o]`` and ``pixel_dists[o]`` are ``(B, L)`` (Kornia's format): the blur
        in octave pixels, and the octave's pixel spacing in input pixels.

    Convention:
        Pixel ``(x', y')`` of octave ``o`` is input pixel ``d_o (x', y')`` exactly, with
        ``d_o = pixel_dists[o] = 2**o`` (``2**(o-1)`` with ``double_image``): octaves are
        exact decimations, and the doubled image puts input pixel ``(x, y)`` at ``(2x, 2y)``.

    Example:
        >>> pyr, sigmas, dists = ScalePyramid(3, 1.6, 15)(torch.rand(2, 1, 64, 64))
        >>> [tuple(p.shape) for p in pyr]
        [(2, 1, 6, 64, 64), (2, 1, 6, 32, 32), (2, 1, 6, 16, 16)]
    """

    def __init__(
        self,
        n_levels: int = 3,
        init_sigma: float = 1.6,
        min_size: int = 15,
        double_image: bool = False,
        extra_levels: int = 3,
        input_sigma: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(n_levels, int) or n_levels < 1:
            raise ArgumentValueError("n_levels", "a positive int", n_levels, f"n_levels: expected a positive int, got {n_levels!r}")
        if not init_sigma > 0:
            raise ArgumentValueError(
                "init_sigma", "a positive float", init_sigma, f"init_sigma: expected a positive float, got {init_sigma!r}"
            )
        if not isinstance(extra_levels, int) or extra_levels < 0:
            raise ArgumentValueError(
                "extra_levels", "a non-negative int", extra_levels, f"extra_levels: expected a non-negative int, got {extra_levels!r}"
            )
        if not isinstance(min_size, int) or min_size < 1:
            raise ArgumentValueError("min_size", "a positive int", min_size, f"min_size: expected a positive int, got {min_size!r}")
        self.n_levels, self.init_sigma, self.min_size = n_levels, float(init_sigma), min_size
        self.double_image, self.extra_levels, self.input_sigma = double_image, extra_levels, float(input_sigma)
        n = n_levels + extra_levels
        self.sigmas = [self.init_sigma * 2.0 ** (i / n_levels) for i in range(n)]
        # The blur that takes level i - 1 to level i (Gaussian blurs add in variance).
        self._steps = [self._taps(math.sqrt(self.sigmas[i] ** 2 - self.sigmas[i - 1] ** 2)) for i in range(1, n)]

    @staticmethod
    def _taps(sigma: float) -> tuple[float, ...]:
        return gaussian_taps(default_kernel_size(sigma), sigma)

    def _blur(self, x: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
        return correlate_separable(x, [(taps, taps)], "reflect").squeeze(-3)

    def forward(self, input: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        check_image(input)
        b = input.shape[0]
        x, dist, sigma = input, 1.0, self.input_sigma
        if self.double_image:
            x, dist, sigma = _double(input), 0.5, 2 * self.input_sigma
        if self.init_sigma > sigma:
            x = self._blur(x, self._taps(math.sqrt(self.init_sigma**2 - sigma**2)))
        pyramid, sigmas, dists = [], [], []
        recorded = torch.is_grad_enabled() and input.requires_grad
        while True:
            if recorded:
                levels = [x]
                for taps in self._steps:
                    levels.append(self._blur(levels[-1], taps))
                octave = torch.stack(levels, dim=2)
            else:
                # Each level blurred straight into the octave: one level-sized temporary
                # alive at a time, not the levels and their stacked copy.
                octave = x.new_empty(x.shape[:2] + (len(self.sigmas),) + x.shape[2:])
                octave[:, :, 0] = x
                for i, taps in enumerate(self._steps, 1):
                    octave[:, :, i] = self._blur(octave[:, :, i - 1], taps)
            pyramid.append(octave)
            sigmas.append(input.new_tensor(self.sigmas).expand(b, -1))
            dists.append(input.new_full((b, octave.shape[2]), dist))
            nxt = octave[:, :, self.n_levels, ::2, ::2]
            if min(nxt.shape[-2:]) < self.min_size:
                break
            x, dist = nxt, dist * 2
        return pyramid, sigmas, dists


def _double(x: torch.Tensor) -> torch.Tensor:
    """Upsample twice by linear interpolation with input pixel ``(x, y)`` at ``(2x, 2y)``.

    The odd pixels average their two neighbours; the last row and column repeat the edge.
    """
    right = pad2d(x, (0, 0, 0, 1), "replicate")[..., 1:]
    cols = torch.stack([x, 0.5 * (x + right)], dim=-1).flatten(-2)
    down = pad2d(cols, (0, 1, 0, 0), "replicate")[..., 1:, :]
    return torch.stack([cols, 0.5 * (cols + down)], dim=-2).flatten(-3, -2)


def pyrdown_centred(input: torch.Tensor, sigma: float = 0.8, border_type: str = "reflect") -> torch.Tensor:
    """One level down the centred pyramid: a Gaussian pre-blur, then a 2 x 2 box average.

    The pyramid the solvers use (registration, depth): unlike :func:`pyrdown`, whose
    decimation keeps the even pixels, each output pixel averages a 2 x 2 block, so the
    level is centred on the one below and a point keeps its normalised coordinates.

    Args:
        input: image ``(B, C, H, W)``, or weights (a mask) to carry down with ``sigma=0``.
        sigma: standard deviation of the pre-blur in the input's pixels (OpenCV's kernel
            size for it, ``round(8 sigma + 1) | 1``); ``0`` skips the blur, so that the
            output is the plain box average (the fraction of a mask's weight under it).
        border_type: border of the blur, as :func:`core_ops.filters.gaussian_blur2d`.

    Returns:
        ``(B, C, H // 2, W // 2)``: an odd last row or column is dropped.

    Convention:
        Output pixel ``x_l`` (centres at integers) sits at ``2 x_l + 1/2`` of the input's
        pixels, in x and in y. For even sizes a normalised point (``[-1, 1]`` edge to edge,
        ``align_corners=False``) is the same point at both levels, so a homography or a
        pose in normalised coordinates carries from one level to the next unchanged; an
        odd size drops the last input row or column, and the input's normalised
        coordinate ``u`` is then ``u' (W - 1) / W - 1 / W`` of the output's ``u'``.

    Example:
        >>> pyrdown_centred(torch.arange(16.0).view(1, 1, 4, 4), sigma=0.0)
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """
    from gradcv.core_ops.filters import gaussian_blur2d

    check_image(input)
    check_border_type(border_type)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0 or not math.isfinite(sigma):
        raise ArgumentValueError("sigma", "a finite float >= 0", sigma, f"sigma: expected a finite float >= 0, got {sigma!r}")
    if min(input.shape[-2:]) < 2:
        raise ShapeError("input", ("B", "C", "H >= 2", "W >= 2"), tuple(input.shape), f"input: expected at least 2 x 2 pixels to halve, got {tuple(input.shape[-2:])}")
    blurred = gaussian_blur2d(input, None, float(sigma), border_type) if sigma > 0 else input
    return torch.nn.functional.avg_pool2d(blurred, 2)


def build_centred_pyramid(
    input: torch.Tensor, levels: int, sigma: float = 0.8, border_type: str = "reflect"
) -> list[torch.Tensor]:
    """The centred pyramid ``[input, pyrdown_centred(input), ...]``, fine to coarse.

    Args:
        input: image ``(B, C, H, W)``.
        levels: number of levels returned, the input included; >= 1.
        sigma: pre-blur of each level before halving (:func:`pyrdown_centred`); ``0`` for
            box averages only (masks and weights).
        border_type: border of the blur.

    Returns:
        ``levels`` tensors; level ``l`` is ``(B, C, H_l, W_l)`` with ``H_l = H_{l-1} // 2``.

    Convention:
        Pixel ``x_l`` of level ``l`` sits at ``2 x_l + 1/2`` of level ``l - 1``, hence at
        ``2^l (x_l + 1/2) - 1/2`` of the input; normalised coordinates are unchanged from
        level to level where the sizes are even (see :func:`pyrdown_centred`).

    Example:
        >>> [tuple(p.shape[-2:]) for p in build_centred_pyramid(torch.rand(1, 1, 64, 48), 3)]
        [(64, 48), (32, 24), (16, 12)]
    """
    check_image(input)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ArgumentValueError("levels", "an int >= 1", levels, f"levels: expected an int >= 1, got {levels!r}")
    out = [input]
    for _ in range(levels - 1):
        out.append(pyrdown_centred(out[-1], sigma, border_type))
    return out
