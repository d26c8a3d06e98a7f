"""Corner and blob responses: Harris, Shi-Tomasi (GFTT), determinant of the Hessian, DoG.

Kornia's names, arguments, defaults and numbers (``kornia.feature.responses``), computed
on the slice engine of :mod:`gradcv.core_ops.filters`: the three products of the
structure tensor are windowed in one separable pass, without ``conv2d``.

Convention:
    Responses are per-pixel maps in the input's own pixels (pixel centres at integer
    coordinates); no operator here moves a point. Derivatives are those of
    :func:`~gradcv.core_ops.filters.spatial_gradient` (normalised: they return the
    derivative itself, with the true sign, replicated border as Kornia).
"""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_choice, check_image, check_real, check_shape, check_tensor
from gradcv.core_ops.errors import ShapeError
from gradcv.core_ops.filters import correlate_separable, pad2d, spatial_gradient
from gradcv.core_ops.filters.derivatives import derivative_bank
from gradcv.core_ops.filters.kernels import gaussian_taps

__all__ = [
    "BlobDoG",
    "BlobDoGSingle",
    "BlobHessian",
    "CornerGFTT",
    "CornerHarris",
    "dog_response",
    "dog_response_single",
    "gftt_response",
    "harris_response",
    "hessian_response",
]

# Kornia's structure-tensor window: a 7x7 Gaussian of sigma 1 (taps summing to one), reflected border.
_WINDOW = gaussian_taps(7, 1.0)

# Kornia 0.9's second-order 'sobel' derivatives: the normalised first-order Sobel applied
# twice, as one separable 5x5 kernel each (exact on quadratics; (d/dx, d/dy) Sobel =
# (central difference (-1, 0, 1)/2) x (smoothing (1, 2, 1)/4)).
_SMOOTH2 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
_DIFF2 = (1 / 4, 0.0, -2 / 4, 0.0, 1 / 4)
_DIFF_SMOOTH = (-1 / 8, -2 / 8, 0.0, 2 / 8, 1 / 8)
_SOBEL_TWICE = ((_SMOOTH2, _DIFF2), (_DIFF_SMOOTH, _DIFF_SMOOTH), (_DIFF2, _SMOOTH2))
# spatial_gradient(x, 'diff', 2)'s kernels (3 x 3), for the blocked path.
_DIFF_SECOND = derivative_bank("diff", 2, True)


def _check_sigmas(sigmas: object, batch: int) -> torch.Tensor | None:
    if sigmas is None:
        return None
    check_tensor(sigmas, "sigmas")
    assert isinstance(sigmas, torch.Tensor)
    if sigmas.dim() != 1 or sigmas.shape[0] != batch:
        raise ShapeError("sigmas", (batch,), tuple(sigmas.shape), f"sigmas: expected shape ({batch},) (one scale per image), got {tuple(sigmas.shape)}")
    return sigmas


def _scale_by_sigmas(scores: torch.Tensor, sigmas: torch.Tensor | None) -> torch.Tensor:
    if sigmas is None:
        return scores
    factor = sigmas.to(scores.dtype).pow(4).view(-1, 1, 1, 1)
    if sigmas.requires_grad:  # its gradient reads the unscaled scores
        return scores * factor
    # In place: 'scores' is a fresh intermediate whose value no other backward formula reads.
    return scores.mul_(factor)


def _structure_tensor(input: torch.Tensor, grads_mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The windowed ``(Ix^2, Iy^2, Ix Iy)``, each ``(B, C, H, W)``."""
    grad = spatial_gradient(input, grads_mode)  # (B, C, 2, H, W)
    dx, dy = grad[:, :, 0], grad[:, :, 1]
    products = torch.stack((dx * dx, dy * dy, dx * dy), dim=2)
    m = correlate_separable(products, [(_WINDOW, _WINDOW)], "reflect").squeeze(-3)
    return m[:, :, 0], m[:, :, 1], m[:, :, 2]


def harris_response(
    input: torch.Tensor,
    k: torch.Tensor | float = 0.04,
    grads_mode: str = "sobel",
    sigmas: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Harris cornerness ``det(M) - k trace(M)^2``, as Kornia's ``harris_response``.

    ``M`` is the structure tensor of the gradients windowed by a 7x7 Gaussian of sigma 1
    (weights summing to one, reflected border), as Kornia.

    Args:
        input: image ``(B, C, H, W)``.
        k: the Harris constant (a float or a tensor broadcastable to the response).
        grads_mode: ``'sobel'`` or ``'diff'`` (central differences, for a blurred pyramid level).
        sigmas: optional ``(B,)`` per-image scales; the response is multiplied by ``sigmas ** 4``.

    Returns:
        ``(B, C, H, W)``: positive at corners, negative along edges. Scales as ``c ** 4``
        with the image intensity.

    Convention:
        Per-pixel map in the input's pixels (see the module).

    Example:
        >>> x = torch.zeros(1, 1, 7, 7); x[..., 1:6, 1:6] = 1
        >>> harris_response(x)[0, 0, 1, 1] > 0
        tensor(True)
    """
    check_image(input)
    check_choice(grads_mode, ("sobel", "diff"), "grads_mode")
    if not isinstance(k, torch.Tensor):
        k = check_real(k, "k")
    sigmas = _check_sigmas(sigmas, input.shape[0])
    dx2, dy2, dxy = _structure_tensor(input, grads_mode)
    trace = dx2 + dy2
    scores = dx2 * dy2 - dxy * dxy - k * trace * trace
    return _scale_by_sigmas(scores, sigmas)


def gftt_response(input: torch.Tensor, grads_mode: str = "sobel", sigmas: torch.Tensor | None = None) -> torch.Tensor:
    r"""Shi-Tomasi cornerness: the smaller eigenvalue of the structure tensor of :func:`harris_response`.

    ``(trace - sqrt((a - c)^2 + 4 b^2)) / 2`` with a square root whose gradient is zero,
    not NaN, where the discriminant vanishes (every flat patch).

    Args:
        input: image ``(B, C, H, W)``.
        grads_mode: ``'sobel'`` or ``'diff'``.
        sigmas: optional ``(B,)`` per-image scales; the response is multiplied by ``sigmas ** 4``.

    Returns:
        ``(B, C, H, W)``, not negative up to rounding.

    Convention:
        Per-pixel map in the input's pixels (see the module).

    Example:
        >>> gftt_response(torch.zeros(1, 1, 5, 5)).abs().max()
        tensor(0.)
    """
    check_image(input)
    check_choice(grads_mode, ("sobel", "diff"), "grads_mode")
    sigmas = _check_sigmas(sigmas, input.shape[0])
    dx2, dy2, dxy = _structure_tensor(input, grads_mode)
    disc = (dx2 - dy2) ** 2 + 4.0 * dxy * dxy
    positive = disc > 0
    root = torch.where(positive, torch.where(positive, disc, torch.ones_like(disc)).sqrt(), torch.zeros_like(disc))
    return _scale_by_sigmas(0.5 * (dx2 + dy2 - root), sigmas)


def hessian_response(input: torch.Tensor, grads_mode: str = "sobel", sigmas: torch.Tensor | None = None) -> torch.Tensor:
    r"""Determinant of the Hessian ``Ixx Iyy - Ixy^2``, pointwise, as Kornia's ``hessian_response``.

    The true determinant: every second derivative is normalised to return the derivative
    itself (exact on quadratics), so the response is invariant to rotations of the image
    by multiples of 90 degrees exactly and to other rotations up to the kernels'
    anisotropy. ``'sobel'`` is Kornia 0.9's kernel (the first-order Sobel applied twice,
    5x5, replicated border), not OpenCV's 3x3 second-order Sobel that
    ``spatial_gradient(..., order=2)`` gives.

    Args:
        input: image ``(B, C, H, W)``.
        grads_mode: ``'sobel'`` or ``'diff'``.
        sigmas: optional ``(B,)`` per-image scales; multiplied in as ``sigmas ** 4`` (the
            scale normalisation of a scale-space Hessian detector).

    Returns:
        ``(B, C, H, W)``: positive at bright and dark blobs, negative at saddles.

    Convention:
        Per-pixel map in the input's pixels (see the module).

    Example:
        >>> y, x = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
        >>> blob = torch.exp(-((x - 4) ** 2 + (y - 4) ** 2) / 8)[None, None]
        >>> r = hessian_response(blob)
        >>> int(r.flatten().argmax()) == 4 * 9 + 4
        True
    """
    check_image(input)
    check_choice(grads_mode, ("sobel", "diff"), "grads_mode")
    sigmas = _check_sigmas(sigmas, input.shape[0])
    recorded = torch.is_grad_enabled() and (input.requires_grad or (sigmas is not None and sigmas.requires_grad))
    # The row blocks are a CPU matter (glibc's large frees, see _CHUNK_BYTES); on a GPU they
    # would be b * c * blocks small kernel launches: one pass there.
    if recorded or input.device.type != "cpu" or 3 * input.numel() * input.element_size() <= _CHUNK_BYTES:
        return _scale_by_sigmas(_hessian_determinant(input, grads_mode), sigmas)
    return _hessian_response_into(input, grads_mode, sigmas, input.new_empty(input.shape))


# Derivative temporaries above this many bytes are computed in blocks of rows: glibc hands
# large blocks back to the kernel on free, so whole-batch temporaries (74 MB for a
# 5-level 1280 x 960 octave) were page-fault bound (51 ms against 25 ms in blocks).
_CHUNK_BYTES = 1 << 20


def _hessian_response_into(
    input: torch.Tensor, grads_mode: str, sigmas: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """:func:`hessian_response` without autograd, written into ``out`` (``input``'s shape;
    it may be ``input`` itself: each image is read before it is overwritten), the
    derivatives made a block of rows at a time (same values as one pass)."""
    b, c, h, w = input.shape
    x = input.reshape(b * c, 1, h, w)
    o = out.view(b * c, 1, h, w)
    factor = None if sigmas is None else sigmas.to(input.dtype).pow(4).repeat_interleave(c)
    half = 2 if grads_mode == "sobel" else 1
    rows = max(8, _CHUNK_BYTES // (3 * (w + 2 * half) * input.element_size()))
    for i in range(b * c):
        padded = pad2d(x[i : i + 1], (half, half, half, half), "replicate")
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            block = o[i : i + 1, :, y0:y1]
            _hessian_determinant(padded[..., y0 : y1 + 2 * half, :], grads_mode, block, valid=True)
            if factor is not None:
                block.mul_(factor[i])
    return out


def _hessian_determinant(
    input: torch.Tensor, grads_mode: str, out: torch.Tensor | None = None, valid: bool = False
) -> torch.Tensor:
    """``Ixx Iyy - Ixy^2`` of ``(B, C, H, W)``, written into ``out`` if given (no autograd
    then); ``valid``: ``input`` is already padded (2 pixels for 'sobel', 1 for 'diff')."""
    if grads_mode == "sobel":
        d2 = correlate_separable(input, _SOBEL_TWICE, "replicate", padding="valid" if valid else "same")
    elif valid:
        d2 = correlate_separable(input, _DIFF_SECOND, "replicate", padding="valid")
    else:
        d2 = spatial_gradient(input, grads_mode, 2)
    # unbind, not three selects: its backward stacks the three gradients into one new tensor,
    # where each select's would zero-fill a whole (B, C, 3, H, W) copy (3 x 57 MB a step for
    # a doubled 400 x 300 octave pair under the attack).
    dxx, dxy, dyy = d2.unbind(2)
    if out is None:
        return torch.mul(dxx, dyy).addcmul_(dxy, dxy, value=-1.0)
    return torch.mul(dxx, dyy, out=out).addcmul_(dxy, dxy, value=-1.0)


def dog_response(input: torch.Tensor) -> torch.Tensor:
    r"""Differences of consecutive levels of a scale stack, as Kornia's ``dog_response``.

    Args:
        input: ``(B, C, L, H, W)`` levels blurred from fine to coarse (a
            :class:`~gradcv.core_ops.pyramid.ScalePyramid` octave).

    Returns:
        ``(B, C, L - 1, H, W)``, level ``i`` being ``input[:, :, i + 1] - input[:, :, i]``:
        negative at a bright blob, positive at a dark one.

    Convention:
        Per-pixel maps in the octave's pixels.

    Example:
        >>> dog_response(torch.rand(1, 1, 4, 8, 8)).shape
        torch.Size([1, 1, 3, 8, 8])
    """
    check_shape(input, ["B", "C", "L", "H", "W"], "input")
    return input[:, :, 1:] - input[:, :, :-1]


def _kornia_kernel_size(sigma: float) -> int:
    k = int(2.0 * 4.0 * sigma + 1.0)
    return k + 1 if k % 2 == 0 else k


def dog_response_single(input: torch.Tensor, sigma1: float = 1.0, sigma2: float = 1.6) -> torch.Tensor:
    r"""Blur with ``sigma2`` minus blur with ``sigma1``, as Kornia's ``dog_response_single``.

    Kernel sizes are Kornia's, ``int(8 sigma + 1)`` made odd; reflected border.

    Args:
        input: image ``(B, C, H, W)``.
        sigma1: the smaller blur.
        sigma2: the larger blur.

    Returns:
        ``(B, C, H, W)``.

    Convention:
        Per-pixel map in the input's pixels.

    Example:
        >>> dog_response_single(torch.ones(1, 1, 9, 9)).abs().max() < 1e-6
        tensor(True)
    """
    check_image(input)
    s1 = check_real(sigma1, "sigma1", low=0.0, low_open=True)
    s2 = check_real(sigma2, "sigma2", low=0.0, low_open=True)
    k = max(_kornia_kernel_size(s1), _kornia_kernel_size(s2))
    # One pass with both kernels (the smaller zero-padded to the larger size: the same numbers).
    bank = []
    for s in (s1, s2):
        ks = _kornia_kernel_size(s)
        taps = (0.0,) * ((k - ks) // 2) + gaussian_taps(ks, s) + (0.0,) * ((k - ks) // 2)
        bank.append((taps, taps))
    blurred = correlate_separable(input, bank, "reflect")
    return blurred[:, :, 1] - blurred[:, :, 0]


class CornerHarris(nn.Module):
    """Module of :func:`harris_response`; ``k`` has no default, as Kornia's.

    Example:
        >>> CornerHarris(0.04)(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    k: torch.Tensor

    def __init__(self, k: float | torch.Tensor, grads_mode: str = "sobel") -> None:
        super().__init__()
        check_choice(grads_mode, ("sobel", "diff"), "grads_mode")
        self.register_buffer("k", k if isinstance(k, torch.Tensor) else torch.tensor(check_real(k, "k")))
        self.grads_mode = grads_mode

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k}, grads_mode={self.grads_mode})"

    def forward(self, input: torch.Tensor, sigmas: torch.Tensor | None = None) -> torch.Tensor:
        return harris_response(input, self.k, self.grads_mode, sigmas)


class _GradsModeResponse(nn.Module):
    """A response module whose only option is Kornia's ``grads_mode``."""

    def __init__(self, grads_mode: str = "sobel") -> None:
        super().__init__()
        check_choice(grads_mode, ("sobel", "diff"), "grads_mode")
        self.grads_mode = grads_mode

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(grads_mode={self.grads_mode})"


class CornerGFTT(_GradsModeResponse):
    """Module of :func:`gftt_response`.

    Example:
        >>> CornerGFTT()(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    def forward(self, input: torch.Tensor, sigmas: torch.Tensor | None = None) -> torch.Tensor:
        return gftt_response(input, self.grads_mode, sigmas)


class BlobHessian(_GradsModeResponse):
    """Module of :func:`hessian_response`.

    Example:
        >>> BlobHessian()(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    def forward(self, input: torch.Tensor, sigmas: torch.Tensor | None = None) -> torch.Tensor:
        return hessian_response(input, self.grads_mode, sigmas)


class BlobDoG(nn.Module):
    """Module of :func:`dog_response` (``sigmas`` is accepted and ignored, as Kornia).

    Example:
        >>> BlobDoG()(torch.rand(1, 1, 4, 8, 8)).shape
        torch.Size([1, 1, 3, 8, 8])
    """

    def __repr__(self) -> str:
        return self.__class__.__name__

    def forward(self, input: torch.Tensor, sigmas: torch.Tensor | None = None) -> torch.Tensor:
        return dog_response(input)


class BlobDoGSingle(nn.Module):
    """Module of :func:`dog_response_single` (``sigmas`` is accepted and ignored, as Kornia).

    Example:
        >>> BlobDoGSingle()(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(self, sigma1: float = 1.0, sigma2: float = 1.6) -> None:
        super().__init__()
        self.sigma1 = check_real(sigma1, "sigma1", low=0.0, low_open=True)
        self.sigma2 = check_real(sigma2, "sigma2", low=0.0, low_open=True)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(sigma1={self.sigma1}, sigma2={self.sigma2})"

    def forward(self, input: torch.Tensor, sigmas: torch.Tensor | None = None) -> torch.Tensor:
        return dog_response_single(input, self.sigma1, self.sigma2)
