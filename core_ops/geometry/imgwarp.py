"""Warping images by perspective and affine matrices (the matrices: :mod:`core_ops.geometry.matrices`).

Convention (``DESIGN.md``):
    Matrices act on pixel coordinates ``(x, y, 1)``: x to the right, y down, integer
    values at pixel centres, as in OpenCV. A warp matrix ``M`` maps *source* pixels to
    *destination* pixels, so ``warp_perspective(src, M, dsize)`` is
    ``cv2.warpPerspective(src, M, (w, h))`` (without ``WARP_INVERSE_MAP``) and
    ``warp_affine`` is ``cv2.warpAffine``; both are tested against OpenCV.

How a warp runs:
    The sampling grid is built directly in the normalised coordinates that
    ``grid_sample(align_corners=False)`` reads (``[-1, 1]`` edge to edge, see
    :mod:`core_ops.geometry.coordinates`): ``M^-1`` composed with the pixel-to-normalised
    matrix is formed in float64, split into a term in the destination ``x`` and one in
    ``y`` (two small vectors), and the grid is their broadcast sum (affine) or quotient
    (perspective): one to three passes over the output size, no meshgrid, no batched
    3x3 product per pixel, and for the perspective grid a hand-written backward. The
    constant of each row is put into the term that vanishes for the identity, and the
    ``-1`` of the normalisation is applied to the rounded ``(2x + 1) / W``, so the
    identity produces the correctly rounded normalised coordinate of every pixel centre.

    Precision: ``grid_sample`` turns a float32 normalised coordinate back into pixels
    as ``(u + 1) * W / 2 - 0.5`` in float32, which resolves a pixel position only to
    about ``W * 2**-25`` pixels (3e-5 px near ``x = 300`` in a 600-wide image, however
    the grid is computed). A float32 warp by the identity therefore returns its input
    exactly for power-of-two sizes and to ``~ W * 2**-24 * max|image step|`` otherwise
    (4e-5 on a 400 x 600 photograph; Kornia 0.9: 9e-5); float64 warps are exact to
    ``1e-12``. Nearest-neighbour warps are exact in every case.

Non-finite and singular matrices:
    Destination pixels whose source position is not finite (a singular or non-finite
    ``M``, or a pixel mapped to the line at infinity) are set to 0 (``fill_value`` with
    ``padding_mode='fill'``) whatever the padding mode, so that the output never holds
    NaN; gradients with respect to a singular ``M`` are 0. Nothing is checked on the
    host (no device synchronisation).
"""

from __future__ import annotations

from typing import Callable

import torch

from gradcv.core_ops import _native
from gradcv.core_ops._checks import check_choice, check_floating, check_image, check_same_device, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.core_ops.geometry._sampler import warp_bilinear_matrix
from gradcv.core_ops.geometry.matrices import to_homography, work_dtype

__all__ = ["warp_affine", "warp_perspective"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection", "fill")
# Where non-finite source positions are sent, in normalised units: 1.5 image sizes
# outside, beyond the reach of the bicubic taps.
_FAR = 4.0


# ------------------------------------------------------------------------- checks
def power_of_two_exponent(x: torch.Tensor) -> torch.Tensor:
    """``torch.frexp(x)[1]`` for ``x >= 0``: the ``e`` with ``x / 2**e`` in ``[0.5, 1)`` (0
    for 0). Under ``torch.export`` it is ``floor(log2(x)) + 1`` (ONNX has no frexp), which
    may land one higher just below a power of two: still a power of two, so scaling by it
    stays exact."""
    if torch.compiler.is_exporting():
        safe = torch.where(x > 0, x, torch.ones_like(x))
        return torch.where(x > 0, torch.floor(torch.log2(safe)) + 1, torch.zeros_like(x)).to(torch.int32)
    return torch.frexp(x)[1]


def check_output_size(dsize: object, name: str = "dsize") -> tuple[int, int]:
    """Check an output size ``(height, width)`` of non-negative ints; returns it."""
    if not (isinstance(dsize, (tuple, list, torch.Size)) and len(dsize) == 2) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in dsize
    ):
        what = "a (height, width) pair of ints"
        raise ArgumentTypeError(name, what, dsize, f"{name}: expected {what}, got {dsize!r}")
    if dsize[0] < 0 or dsize[1] < 0:
        raise ArgumentValueError(name, "non-negative sizes", tuple(dsize), f"{name}: expected non-negative sizes, got {tuple(dsize)}")
    return int(dsize[0]), int(dsize[1])


def check_warp_options(mode: object, padding_mode: object, align_corners: object) -> None:
    """Check the sampling options shared by every warp."""
    check_choice(mode, MODES, "mode")
    check_choice(padding_mode, PADDING_MODES, "padding_mode")
    if not isinstance(align_corners, bool):
        raise ArgumentTypeError(
            "align_corners", bool, type(align_corners), f"align_corners: expected a bool, got {type(align_corners).__name__}"
        )


def _check_matrix_batch(M: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if M.shape[0] not in (1, src.shape[0]):
        raise ShapeError(
            name, (f"1 or {src.shape[0]}", *M.shape[1:]), tuple(M.shape),
            f"{name}: expected batch size 1 or {src.shape[0]} (that of src), got {M.shape[0]}",
        )
    check_same_device(M, name, src, "src")


# --------------------------------------------------------------------- the engine
def _needs_grad(*tensors: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _inverse3x3(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``(B, 3, 3)`` matrices by cofactors, and a mask of those that have one.

    Row ``i`` of the cofactor matrix is ``r[i+1] x r[i+2]``. Singular or non-finite
    matrices are divided by 1 instead of their determinant, so that the inverse and its
    gradient stay finite where the caller masks them out.
    """
    cof = torch.linalg.cross(m.roll(-1, dims=-2), m.roll(-2, dims=-2), dim=-1)
    det = (m[:, 0] * cof[:, 0]).sum(-1)
    ok = (det != 0) & torch.isfinite(det)
    det = torch.where(ok, det, torch.ones_like(det))
    return cof.transpose(-1, -2) / det[:, None, None], ok


def _edge_matrix(minv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``S @ minv`` with ``S`` taking source pixels to ``t = u + 1 = (2 x + 1) / W`` (in ``[0, 2]``)."""
    r0, r1, r2 = minv[:, 0], minv[:, 1], minv[:, 2]
    return torch.stack((r0 * (2.0 / width) + r2 * (1.0 / width), r1 * (2.0 / height) + r2 * (1.0 / height), r2), 1)


def _far_matrix(like: torch.Tensor) -> torch.Tensor:
    """A matrix sending every pixel to ``u = v = -_FAR``, outside the image."""
    far = torch.zeros_like(like)
    far[:, :2, 2] = 1.0 - _FAR
    far[:, 2, 2] = 1.0
    return far


def _sampling_grid(
    A: torch.Tensor, dsize: tuple[int, int], dtype: torch.dtype, projective: bool
) -> torch.Tensor:
    """The ``grid_sample`` grid ``(B, h, w, 2)`` for ``A`` mapping destination pixels to ``(t_x, t_y, 1)``.

    Each row of ``A @ (x, y, 1)`` is split into a term in ``x`` (holding the constants
    of rows 0 and 2) and a term in ``y`` (holding that of row 1): for the identity the
    other term is exactly 0, so the rounded terms are the correctly rounded ``t``. The
    numerators of ``u = t - 1 = (n - d) / d`` subtract on the rounded small vectors,
    exactly for ``t`` in ``[0.5, 2]`` (Sterbenz); the division is a multiplication by
    ``1 / d``, exact for the affine ``d = 1``.
    """
    if projective:
        # A homography is defined up to scale: a power of two (exact) brings its largest
        # entry into [0.5, 1), which bounds every term below by the output size.
        # (torch.ldexp's gradient is 0 for an integer exponent in torch 2.13, hence exp2.)
        exponent = power_of_two_exponent(A.detach().abs().amax(dim=(1, 2), keepdim=True))
        A = A * torch.exp2(-exponent.to(A.dtype))
    h, w = dsize
    xs = torch.arange(w, device=A.device, dtype=A.dtype)
    ys = torch.arange(h, device=A.device, dtype=A.dtype)
    ax = torch.addcmul(A[:, :, 2:3], A[:, :, 0:1], xs)  # (B, 3, w)
    ay = A[:, :, 1:2] * ys  # (B, 3, h)
    # Row 1's constant belongs to the y term (c - c is exactly 0 in the x term).
    ax[:, 1] -= A[:, 1, 2:3]
    ay[:, 1] += A[:, 1, 2:3]
    ax, ay = ax.to(dtype), ay.to(dtype)
    if not projective:
        # A finite affine A can still overflow the grid's dtype; a quarter of its range keeps sums finite.
        big = torch.finfo(dtype).max / 4
        ax, ay = ax.clamp(-big, big), ay.clamp(-big, big)
    nx = ax[:, :2] - ax[:, 2:3]
    ny = ay[:, :2] - ay[:, 2:3]
    if not projective:
        grid = nx[:, :, None, :] + ny[:, :, :, None]  # (B, 2, h, w): planar; grid_sample takes the permuted view
    else:
        terms_x = torch.cat((nx, ax[:, 2:3]), 1)
        terms_y = torch.cat((ny, ay[:, 2:3]), 1)
        # |numerator| <= ~(w + h), so 1 / d is clamped where d = 0 (the line at infinity)
        # to a value that sends the point far outside without overflowing.
        limit = torch.finfo(dtype).max / (8.0 * (w + h + 2))
        if _needs_grad(A) and not torch.compiler.is_compiling():
            grid = _PerspectiveGrid.apply(terms_x, terms_y, limit)
        else:
            grid = _perspective_grid(terms_x, terms_y, limit)[0]
    return grid.permute(0, 2, 3, 1)


def _perspective_grid(terms_x: torch.Tensor, terms_y: torch.Tensor, limit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_x, n_y) / d`` from the ``(B, 3, h, w)`` broadcast sum of the x and y terms.

    Returns the grid ``(B, 2, h, w)`` and ``1 / d`` ``(B, 1, h, w)``, both views of one
    buffer (a multiplication by ``1 / d`` is cheaper than two divisions).
    """
    buf = terms_x[:, :, None, :] + terms_y[:, :, :, None]
    if torch.compiler.is_compiling():
        recip = buf[:, 2:3].reciprocal().clamp(-limit, limit)
        return buf[:, :2] * recip, recip
    recip = buf[:, 2:3].reciprocal_().clamp_(-limit, limit)
    return buf[:, :2].mul_(recip), recip


class _PerspectiveGrid(torch.autograd.Function):
    """:func:`_perspective_grid` with a backward that reuses ``1 / d`` and the grid.

    Autograd through the broadcast sum, reciprocal and product would keep and re-read
    several full-size temporaries; this keeps the one buffer of the forward.
    """

    @staticmethod
    def forward(ctx, terms_x, terms_y, limit):  # type: ignore[override]
        grid, recip = _perspective_grid(terms_x, terms_y, limit)
        ctx.recip = recip  # an intermediate: kept as an attribute, not saved
        ctx.save_for_backward(grid)
        return grid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        (grid,) = ctx.saved_tensors
        g = grad * ctx.recip  # d grid / d numerator = 1 / d
        gd = (g * grid).sum(1).neg_()  # d grid / d denominator = -n / d^2 = -grid / d
        grad_x = torch.cat((g.sum(2), gd.sum(1, keepdim=True)), 1)
        grad_y = torch.cat((g.sum(3), gd.sum(2)[:, None]), 1)
        return grad_x, grad_y, None


def _finite_positions(A: torch.Tensor, dsize: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """``(B, 1, h, w)`` mask of destination pixels whose perspective denominator is non-zero and finite."""
    h, w = dsize
    xs = torch.arange(w, device=A.device, dtype=A.dtype)
    ys = torch.arange(h, device=A.device, dtype=A.dtype)
    ax = (A[:, 2, 0:1] * xs + A[:, 2, 2:3]).to(dtype)
    ay = (A[:, 2, 1:2] * ys).to(dtype)
    den = ax[:, None, None, :] + ay[:, None, :, None]
    return (den != 0) & torch.isfinite(den)


def _warp_by_inverse(
    src: torch.Tensor,
    M: torch.Tensor,
    dsize: tuple[int, int],
    mode: str,
    padding_mode: str,
    fill_value: torch.Tensor | None,
    projective: bool,
) -> torch.Tensor:
    """Sample ``src`` at ``M^-1 (x, y, 1)`` for every destination pixel (checked inputs).

    ``M``: ``(B or 1, 3, 3)`` source-to-destination pixel matrix, affine (last row
    ``0, 0, 1``) when ``projective`` is false.
    """
    out_dtype = src.dtype
    if src.dtype in (torch.float16, torch.bfloat16):
        # A half-precision grid misplaces samples by up to W * 2**-11 pixels (0.3 px at
        # W = 600), and CPU grid_sample in half precision is wrong from ~128 px up.
        src = src.float()
    height, width = src.shape[-2:]
    M = M.to(work_dtype(src.device))
    if mode == "bilinear":
        A, ok = _bilinear_matrices(M, height, width)
        return _warp_bilinear(src, A, ok, dsize, padding_mode, fill_value, projective).to(out_dtype)
    minv, ok = _inverse3x3(M)
    A = _edge_matrix(minv, height, width)
    ok = ok & torch.isfinite(A).flatten(1).all(1)
    A = torch.where(ok[:, None, None], A, _far_matrix(A))
    grid = _sampling_grid(A, dsize, src.dtype, projective)
    if grid.shape[0] != src.shape[0]:
        grid = grid.expand(src.shape[0], -1, -1, -1)
    def sample(image: torch.Tensor, padding: str) -> torch.Tensor:
        return torch.nn.functional.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=False)

    return _padded(sample, src, A, ok, dsize, padding_mode, fill_value, projective).to(out_dtype)


def _padded(
    sample: Callable[[torch.Tensor, str], torch.Tensor], src: torch.Tensor, A: torch.Tensor, ok: torch.Tensor,
    dsize: tuple[int, int], padding_mode: str, fill_value: torch.Tensor | None, projective: bool,
) -> torch.Tensor:
    """``sample(src, padding)`` with gradcv's padding modes on top of the sampler's: ``'fill'``
    blends ``fill_value`` in by the coverage of a sampled image of ones; border and
    reflection blank the pixels of matrices that are not ``ok`` or positions at infinity
    (they would otherwise read a border value)."""
    height, width = src.shape[-2:]
    out = sample(src, "zeros" if padding_mode == "fill" else padding_mode)
    if padding_mode == "fill":
        if fill_value is not None:
            inside = sample(src.new_ones(1, 1, 1, 1).expand(src.shape[0], 1, height, width), "zeros")
            out = out + (1 - inside) * _fill_tensor(fill_value, out)
    elif padding_mode != "zeros":
        keep = ok[:, None, None, None]
        if projective:
            keep = keep & _finite_positions(A, dsize, src.dtype)
        out = out * keep.to(out.dtype)
    return out


def _bilinear_matrices(M: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear warps' sampling matrices ``M^-1`` (destination to source pixels) and the
    mask of the matrices that have a finite inverse; the others are replaced by a matrix
    sending every pixel far outside the ``height x width`` source.

    On the CPU one native call (:func:`core_ops._native.sampling_matrices`, the same
    cofactors) replaces the two dozen small ops of the PyTorch code below, which cost
    more than the sampling of a small image and, right after a large warp has flushed
    the caches, about a tenth of a 8x3x256x256 one; differentiable through
    :class:`_SamplingMatrices`.
    """
    if M.dtype == torch.float64 and _native.eager_cpu(M) and _native.library() is not None:
        if _needs_grad(M):
            return _SamplingMatrices.apply(M, height, width)
        return _native.sampling_matrices(M, height, width)  # type: ignore[return-value]
    minv, ok = _inverse3x3(M)
    ok = ok & torch.isfinite(minv).flatten(1).all(1)
    far = torch.zeros_like(minv)
    far[:, :2, 2] = -2.0 * (height + width) - 4.0
    far[:, 2, 2] = 1.0
    return torch.where(ok[:, None, None], minv, far), ok


class _SamplingMatrices(torch.autograd.Function):
    """The native :func:`_bilinear_matrices` with the inverse's derivative:
    ``d(M^-1) = -M^-1 dM M^-1``, so ``dL/dM = -A^T (dL/dA) A^T`` where ``ok`` (0 elsewhere:
    the far matrix is a constant)."""

    @staticmethod
    def forward(ctx, M, height, width):  # type: ignore[override]
        A, ok = _native.sampling_matrices(M.detach(), height, width)  # type: ignore[misc]
        ctx.save_for_backward(A, ok)
        ctx.mark_non_differentiable(ok)
        return A, ok

    @staticmethod
    def backward(ctx, grad_A, grad_ok):  # type: ignore[override]
        A, ok = ctx.saved_tensors
        At = A.transpose(-1, -2)
        return -(At @ grad_A @ At) * ok[:, None, None].to(A.dtype), None, None


def _warp_bilinear(
    src: torch.Tensor, A: torch.Tensor, ok: torch.Tensor, dsize: tuple[int, int], padding_mode: str,
    fill_value: torch.Tensor | None, projective: bool,
) -> torch.Tensor:
    """Bilinear warps by the pixel matrices ``A`` (destination to source; from
    :func:`_bilinear_matrices`), in pixel coordinates (:mod:`core_ops.geometry._sampler`:
    positions in float64, exact for the identity)."""
    if A.shape[0] != src.shape[0]:
        A = A.expand(src.shape[0], -1, -1)
    return _padded(lambda image, padding: warp_bilinear_matrix(image, A, dsize, padding), src, A, ok, dsize, padding_mode,
                   fill_value, projective)


def _fill_tensor(fill_value: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    fill = fill_value.to(device=out.device, dtype=out.dtype)
    if fill.ndim == 1:
        fill = fill[None, :, None, None]
    try:
        torch.broadcast_shapes(fill.shape, out.shape)
    except RuntimeError:
        raise ShapeError(
            "fill_value", f"(C,), (1,) or one that broadcasts to {tuple(out.shape)}", tuple(fill_value.shape),
            f"fill_value: expected shape (C,), (1,) or one that broadcasts to the output {tuple(out.shape)}, "
            f"got {tuple(fill_value.shape)}",
        ) from None
    return fill


# ------------------------------------------------------------------------- warps
def warp_perspective(
    src: torch.Tensor,
    M: torch.Tensor,
    dsize: tuple[int, int],
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
    fill_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Warp images by homographies: ``dst(p) = src(M^-1 p)``, as ``cv2.warpPerspective``.

    Args:
        src: images ``(B, C, H, W)``.
        M: homographies ``(B, 3, 3)`` (or ``(1, 3, 3)`` for the whole batch) taking
            source pixels to destination pixels; any floating dtype.
        dsize: output size ``(h, w)``.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'`` (Keys' cubic, ``a = -0.75``,
            as OpenCV's ``INTER_CUBIC``).
        padding_mode: value of samples outside the source: ``'zeros'`` (OpenCV's
            ``BORDER_CONSTANT`` 0), ``'border'`` (``BORDER_REPLICATE``), ``'reflection'``
            (``BORDER_REFLECT``, mirrored about the image edge) or ``'fill'``.
        align_corners: kept for Kornia's signature; it has no effect. In Kornia it only
            selects the normalisation used inside, and both choices give the same image
            up to rounding; here the pixel-centre convention below is the only one.
        fill_value: with ``padding_mode='fill'``, the value outside: ``(C,)``, ``(1,)``
            or any shape that broadcasts to ``(B, C, h, w)``; zeros if ``None``.

    Returns:
        ``(B, C, h, w)``, in the dtype of ``src`` (half-precision images are sampled in
        float32 and the result rounded back).

    Convention:
        ``M`` maps source pixel coordinates to destination pixel coordinates, pixel
        centres at integers (OpenCV's convention; also Kornia 0.9's). Non-finite source
        positions give 0 (see the module docstring); precision as in the module docstring.

    Example:
        >>> img = torch.arange(16.0).view(1, 1, 4, 4)
        >>> shift = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
        >>> warp_perspective(img, shift, (4, 4))[0, 0, 0]
        tensor([0., 0., 1., 2.])
    """
    check_image(src, "src")
    check_shape(M, ["B", 3, 3], "M")
    check_floating(M, "M")
    dsize = check_output_size(dsize)
    check_warp_options(mode, padding_mode, align_corners)
    _check_matrix_batch(M, src, "M")
    if fill_value is not None:
        check_tensor(fill_value, "fill_value")
    return _warp_by_inverse(src, M, dsize, mode, padding_mode, fill_value, projective=True)


def warp_affine(
    src: torch.Tensor,
    M: torch.Tensor,
    dsize: tuple[int, int],
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
    fill_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Warp images by affine maps: ``dst(p) = src(M^-1 p)``, as ``cv2.warpAffine``.

    Args:
        src: images ``(B, C, H, W)``.
        M: affine matrices ``(B, 2, 3)`` (or ``(1, 2, 3)``) taking source pixels to
            destination pixels.
        dsize: output size ``(h, w)``.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'``, ``'reflection'`` or ``'fill'``.
        align_corners: kept for Kornia's signature; no effect (see :func:`warp_perspective`).
        fill_value: with ``padding_mode='fill'``, the value outside the source.

    Returns:
        ``(B, C, h, w)``.

    Convention:
        As :func:`warp_perspective`: source to destination, pixel centres at integers.

    Example:
        >>> img = torch.arange(16.0).view(1, 1, 4, 4)
        >>> down = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
        >>> warp_affine(img, down, (4, 4))[0, 0, :, 0]
        tensor([0., 0., 4., 8.])
    """
    check_image(src, "src")
    check_shape(M, ["B", 2, 3], "M")
    check_floating(M, "M")
    dsize = check_output_size(dsize)
    check_warp_options(mode, padding_mode, align_corners)
    _check_matrix_batch(M, src, "M")
    if fill_value is not None:
        check_tensor(fill_value, "fill_value")
    return _warp_by_inverse(src, to_homography(M), dsize, mode, padding_mode, fill_value, projective=False)
