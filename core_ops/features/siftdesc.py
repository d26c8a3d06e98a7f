"""The SIFT descriptor of patches (Lowe 2004) and the descriptor of local affine frames.

``SIFTDescriptor`` keeps Kornia's name, arguments, defaults and output layout
(``kornia.feature.SIFTDescriptor``) but computes Lowe's descriptor as OpenCV's
``cv2.SIFT`` does: a Gaussian window of half the descriptor's width, trilinear
(spatial x spatial x angle) soft binning with a tent one cell wide, normalise, clip,
renormalise; then RootSIFT by default. The binning is one ``scatter_add`` of every
gradient into its two angle bins and two small matrix products (the separable spatial
tents), so 2500 patches of 41 x 41 take tens of milliseconds on one CPU thread.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from gradcv.core_ops._checks import check_bool, check_choice, check_floating, check_int, check_real, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError

__all__ = [
    "LAFDescriptor",
    "SIFTDescriptor",
    "convert_sift_descriptor_layout",
    "get_laf_descriptors",
    "get_sift_bin_ksize_stride_pad",
    "get_sift_pooling_kernel",
    "sift_describe",
]


def get_sift_pooling_kernel(ksize: int = 25) -> torch.Tensor:
    """The ``(ksize, ksize)`` triangular pooling kernel of Kornia's ``SIFTDescriptor``.

    Kept for Kornia's API (``kornia.feature.get_sift_pooling_kernel``, same numbers: the
    outer product of a tent that peaks at 1 in the middle, divided by ``(ksize/2)**2``).
    gradcv's :class:`SIFTDescriptor` does not pool with it: its tents are exactly one cell
    wide (Lowe's trilinear interpolation), see :func:`sift_describe`.

    Example:
        >>> get_sift_pooling_kernel(4).shape
        torch.Size([4, 4])
    """
    check_int(ksize, "ksize", 1)
    half = ksize / 2.0
    tent = half - (torch.arange(ksize, dtype=torch.float32) + 0.5 - half).abs()
    return torch.outer(tent, tent) / half**2


def get_sift_bin_ksize_stride_pad(patch_size: int, num_spatial_bins: int) -> tuple[int, int, int]:
    """Kornia's pooling parameters ``(ksize, stride, pad)`` for a patch size and cell count.

    Kept for Kornia's API (``kornia.feature.get_sift_bin_ksize_stride_pad``, same numbers):
    cells ``patch_size // num_spatial_bins`` apart, centred on the patch centre. gradcv's
    :class:`SIFTDescriptor` places its cells differently (``patch_size / (num_spatial_bins
    + 1)`` apart, so that the tents of the outer cells end at the patch border).

    Raises:
        ArgumentValueError: the patch is too small for that many cells.

    Example:
        >>> get_sift_bin_ksize_stride_pad(41, 4)
        (17, 10, 3)
    """
    check_int(patch_size, "patch_size", 1)
    check_int(num_spatial_bins, "num_spatial_bins", 1)
    stride = patch_size // num_spatial_bins
    ksize = 2 * int(patch_size / (num_spatial_bins + 1))
    if (ksize - patch_size + (num_spatial_bins - 1) * stride) % 2 != 0:
        ksize += 1
    pad = (ksize - patch_size + (num_spatial_bins - 1) * stride) // 2
    out_size = (patch_size + 2 * pad - ksize) // stride + 1 if stride > 0 else 0
    if pad < 0 or out_size != num_spatial_bins:
        raise ArgumentValueError(
            "patch_size", f"a size that fits {num_spatial_bins} spatial bins", patch_size,
            f"patch_size: {patch_size} is too small for num_spatial_bins={num_spatial_bins}",
        )
    return ksize, stride, pad


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with a zero (not infinite) derivative where ``x == 0``.

    The forward is exact; the ``where`` inside keeps ``sqrt``'s ``1 / (2 sqrt(0))`` out of
    the backward (PyTorch3D's pattern), so empty histogram bins pass no NaN or inf back.
    """
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows of unit L2 norm; an all-zero row stays zero (gradient-safe norm)."""
    norm = _safe_sqrt(x.square().sum(-1, keepdim=True))
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def _cell_tents(patch_size: int, num_spatial_bins: int, dtype: torch.dtype) -> torch.Tensor:
    """``(num_spatial_bins, patch_size)``: each pixel's weight in each cell along one axis.

    Cells are ``w = patch_size / (num_spatial_bins + 1)`` pixels apart, centred on the patch
    centre ``(patch_size - 1) / 2``; the weight is a tent ``max(0, 1 - |x - c_k| / w)``, so
    every pixel between two cell centres splits between them linearly (Lowe's trilinear
    interpolation, spatial part).
    """
    w = patch_size / (num_spatial_bins + 1)
    x = torch.arange(patch_size, dtype=torch.float64)
    centres = (patch_size - 1) / 2 + (torch.arange(num_spatial_bins, dtype=torch.float64) - (num_spatial_bins - 1) / 2) * w
    return (1 - (x[None] - centres[:, None]).abs() / w).clamp_min(0).to(dtype)


def _lowe_window(patch_size: int, num_spatial_bins: int, dtype: torch.dtype) -> torch.Tensor:
    """``(patch_size, patch_size)`` Gaussian weights of sigma = half the cells' span (Lowe,
    ``cv2.SIFT``: ``exp(-r^2 / (d^2 / 2))`` in cell units)."""
    w = patch_size / (num_spatial_bins + 1)
    sigma = 0.5 * num_spatial_bins * w
    x = torch.arange(patch_size, dtype=torch.float64) - (patch_size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return torch.outer(g, g).to(dtype)


def _central_gradients(patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Twice the central-difference gradients ``(gx, gy)`` with a replicated border
    (Kornia's ``spatial_gradient(..., "diff")``; the factor 2 is left in, as every user
    normalises)."""
    p = F.pad(patch, (1, 1, 1, 1), mode="replicate")
    return p[..., 1:-1, 2:] - p[..., 1:-1, :-2], p[..., 2:, 1:-1] - p[..., :-2, 1:-1]


def _polar(gx: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude and angle ``atan2(gy, gx)`` (y down, in ``(-pi, pi]``) of a gradient field.

    Gradient-safe at a zero gradient when autograd records: the magnitude is
    ``sqrt(max(sq, tiny)) - sqrt(tiny)``, exactly 0 there with a zero derivative
    (``clamp_min`` passes none) and off by at most ``sqrt(tiny)`` (1e-19 in float32)
    elsewhere; the angle is ``atan2(gy, gx + 1)`` = 0 there, so ``atan2``'s ``0 / 0``
    derivative at the origin never occurs. Without autograd the plain expressions run
    (same values), except under ``torch.export``: ONNX has no ``hypot``.
    """
    if not (torch.is_grad_enabled() and (gx.requires_grad or gy.requires_grad)) and not torch.compiler.is_exporting():
        return torch.hypot(gx, gy), torch.atan2(gy, gx)
    sq = gx * gx + gy * gy
    tiny = torch.finfo(sq.dtype).tiny
    mag = torch.sqrt(sq.clamp_min(tiny)) - math.sqrt(tiny)
    ang = torch.atan2(gy, gx + (sq == 0).to(sq.dtype))
    return mag, ang


def _gradients(patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_central_gradients`; without autograd written straight into two tensors (the
    same numbers, without the padded copy of the patches). Not under ``torch.compile`` or
    ``torch.export``: Dynamo refuses ``out=`` views that are not contiguous."""
    if (
        (torch.is_grad_enabled() and patch.requires_grad)
        or torch.compiler.is_compiling()
        or patch.shape[-1] < 2
        or patch.shape[-2] < 2
    ):
        return _central_gradients(patch)
    gx, gy = torch.empty_like(patch, memory_format=torch.contiguous_format), torch.empty_like(patch, memory_format=torch.contiguous_format)
    torch.sub(patch[..., 2:], patch[..., :-2], out=gx[..., 1:-1])
    torch.sub(patch[..., 1:2], patch[..., :1], out=gx[..., :1])
    torch.sub(patch[..., -1:], patch[..., -2:-1], out=gx[..., -1:])
    torch.sub(patch[..., 2:, :], patch[..., :-2, :], out=gy[..., 1:-1, :])
    torch.sub(patch[..., 1:2, :], patch[..., :1, :], out=gy[..., :1, :])
    torch.sub(patch[..., -1:, :], patch[..., -2:-1, :], out=gy[..., -1:, :])
    return gx, gy


def _gradient_polar(patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_polar` of :func:`_central_gradients`."""
    return _polar(*_central_gradients(patch))


def _check_patches(input: object, patch_size: int) -> torch.Tensor:
    check_shape(input, ["B", 1, patch_size, patch_size], "input")
    assert isinstance(input, torch.Tensor)
    check_floating(input, "input")
    return input


# Cache blocking on CPU (as the filter engine's): a block of patches whose temporaries
# stay in the L2 cache. Whole-batch temporaries (17 MB per plane at 2500 patches of 41x41)
# were page-fault bound: 370 ms for 2500 patches against ~30 ms in blocks.
_CPU_BLOCK_BYTES = 1 << 21


def _vote_layout(patch_size: int, num_spatial_bins: int, num_ang_bins: int, tents: torch.Tensor,
                 window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each pixel votes, and with what fixed weights, in the x-pooled histogram.

    The x-pooled histogram of a patch is ``(PS rows, S + 2 x-slots, A + 2 angle slots)``
    flattened. X-slot ``k + 1`` is cell ``k`` (slots 0 and S + 1 catch the zero-weight side
    of the outer tents). A gradient at angle ``phi`` sits at ``t = phi A / (2 pi) + o`` with
    ``o = (A + 1) // 2``, in ``(0, A + 1)``, and votes into angle slots ``floor(t)`` and
    ``floor(t) + 1``; slot ``j`` is angle bin ``(j - o) mod A``, folded after pooling, so no
    index needs a ``where`` or a modulo.

    Returns the flat index of each pixel's lower x-slot at angle slot 0 ``(PS*PS,)``, its
    window x tent weights for its lower and upper x-slots ``(PS*PS,)`` each, and the
    ``(A + 2, A)`` 0/1 matrix that folds angle slots into bins.
    """
    ps, s, a = patch_size, num_spatial_bins, num_ang_bins
    w = ps / (s + 1)
    c0 = (ps - 1) / 2 - (s - 1) / 2 * w
    u = (torch.arange(ps, dtype=torch.float64) - c0) / w  # in (-1, S)
    lower = torch.floor(u).long()  # -1 .. S - 1
    rows = torch.arange(ps)
    base = ((rows[:, None] * (s + 2) + (lower[None, :] + 1)) * (a + 2)).reshape(-1)
    tx = tents.to(torch.float64)
    pad = torch.cat((tx.new_zeros(1, ps), tx, tx.new_zeros(1, ps)))  # slot-indexed tents
    cols = torch.arange(ps)
    w_low = pad[lower + 1, cols]
    w_high = pad[lower + 2, cols]
    win = window.to(torch.float64)
    o = (a + 1) // 2
    fold = torch.zeros(a + 2, a, dtype=torch.float64)
    fold[torch.arange(a + 2), (torch.arange(a + 2) - o) % a] = 1.0
    return base, (win * w_low[None]).reshape(-1), (win * w_high[None]).reshape(-1), fold


def _describe(
    input: torch.Tensor,
    layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tents: torch.Tensor,
    num_ang_bins: int,
    rootsift: bool,
    clipval: float,
) -> torch.Tensor:
    b, _, ps, _ = input.shape
    s, a = tents.shape[0], num_ang_bins
    base, w_low, w_high, fold = layout
    row_slots = (s + 2) * (a + 2)
    slots = ps * row_slots
    per_patch = ps * ps * input.element_size() * 12
    step = b if input.device.type != "cpu" else max(1, min(b, _CPU_BLOCK_BYTES // per_patch))
    # Float index arithmetic below is exact while a block has fewer than 2**24 slots.
    step = max(1, min(step, (1 << 24) // slots))
    index_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    # A block's histogram is row-major over the patches, (PS rows, n patches, S + 2, A + 2),
    # so that the y-pooling is one matrix product (S, PS) @ (PS, n (S+2) (A+2)) rather than n
    # tiny ones. ``base`` is the pixel's slot within its row: split it into the row and the rest.
    row, within = torch.div(base, row_slots, rounding_mode="floor"), base % row_slots
    bases: dict[int, torch.Tensor] = {}
    blocks = []
    # split, not slicing: its backward assembles the input's gradient once, where a slice
    # per block would each build (and add) a zero gradient of the whole batch.
    for x in input.split(step) if b > 0 else (input,):
        n = x.shape[0]
        if n not in bases:
            # Flat index of each pixel's first vote for a block of n patches, in floating
            # point: the float add and one conversion cost less than an int64 add (exact:
            # a block has far fewer than 2**24 slots).
            patch = torch.arange(n, device=input.device)[:, None]
            bases[n] = (row[None] * (n * row_slots) + patch * row_slots + within[None]).to(index_dtype)
        mag, ang = _polar(*_gradients(x))
        mag = mag.reshape(n, ps * ps)
        t = torch.addcmul(ang.new_full((), float((a + 1) // 2)), ang.reshape(n, ps * ps), ang.new_full((), a / (2 * math.pi)))
        # A non-finite pixel gives a NaN angle: its votes (NaN) go to slot 0, not to an
        # index out of range.
        lower = torch.floor(t).nan_to_num_(0.0, 0.0, 0.0)
        frac = t - lower
        index = (lower + bases[n]).long().reshape(-1)
        m_low = mag * w_low
        m_high = mag * w_high
        v_low_up = m_low * frac
        v_high_up = m_high * frac
        # The four votes of a pixel go to index + (0, 1, A + 2, A + 3). Without autograd
        # they are scattered through shifted views of the histogram (no other index
        # tensors); with it, in one out-of-place scatter_add, whose backward is one gather
        # (in-place scatters into views made the backward 4x slower).
        hist = x.new_zeros(n * slots)
        votes = (m_low - v_low_up, v_low_up, m_high - v_high_up, v_high_up)
        if torch.is_grad_enabled() and x.requires_grad:
            index4 = torch.cat((index, index + 1, index + (a + 2), index + (a + 3)))
            hist = hist.scatter_add(0, index4, torch.cat([v.reshape(-1) for v in votes]))
        else:
            for shift, v in zip((0, 1, a + 2, a + 3), votes):
                hist[shift:].scatter_add_(0, index, v.reshape(-1))
        # y-pooling (S, PS) @ (PS, n (S+2) (A+2)), then the angle slots folded into bins.
        pooled = (tents @ hist.view(ps, n * row_slots)).view(s, n, s + 2, a + 2)[:, :, 1 : s + 1]
        blocks.append(pooled.permute(1, 0, 2, 3))  # (n, S, S, A + 2)
    # The angle slots folded into bins once for all blocks (one product, not one per block).
    slotted = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    cells = (slotted.reshape(-1, a + 2) @ fold).view(slotted.shape[0], s, s, a).permute(0, 3, 1, 2).reshape(-1, a * s * s)
    desc = _l2_normalize(cells)
    desc = _l2_normalize(desc.clamp(max=clipval))
    if rootsift:
        desc = _safe_sqrt(desc / desc.sum(-1, keepdim=True).clamp_min(torch.finfo(desc.dtype).tiny))
    return desc


def sift_describe(
    input: torch.Tensor,
    patch_size: int = 41,
    num_ang_bins: int = 8,
    num_spatial_bins: int = 4,
    rootsift: bool = True,
    clipval: float = 0.2,
) -> torch.Tensor:
    """SIFT descriptors of square grayscale patches (function form of :class:`SIFTDescriptor`).

    Args:
        input: patches ``(B, 1, patch_size, patch_size)``, floating.
        patch_size: side of the patches in pixels (at least ``num_spatial_bins + 1``).
        num_ang_bins: angle bins per cell.
        num_spatial_bins: cells per side.
        rootsift: return RootSIFT (Arandjelovic & Zisserman 2012): the clipped SIFT vector
            L1-normalised and square-rooted, so it still has unit L2 norm.
        clipval: clip of the L2-normalised vector before renormalising (Lowe's 0.2).

    Returns:
        ``(B, num_ang_bins * num_spatial_bins ** 2)``, unit L2 norm per row; an all-zero
        row for a flat patch (Kornia returns ``1e-5`` entries there with RootSIFT).

    Shape:
        ``(B, 1, PS, PS) -> (B, A * S * S)``.

    Convention:
        Patch pixel ``(i, j)`` is at ``x = j``, ``y = i`` (x right, y down); the patch centre
        is ``((PS - 1) / 2, (PS - 1) / 2)``. Cells are ``w = PS / (S + 1)`` pixels apart,
        centred on the patch centre, and every pixel's gradient is split between its two
        nearest cells along each axis by a tent of half-width ``w`` (so the outer tents end
        at the patch border); angle bin ``a`` is centred on ``2 pi a / A`` measured from +x
        towards +y, split linearly between the two nearest bins. The Gaussian window has
        sigma ``S w / 2``, half the span of the cells, as Lowe's and OpenCV's. The layout is
        Kornia's, angle-major: entry ``a * S * S + cy * S + cx``. OpenCV's ``cv2.SIFT``
        computes the same histogram from a keypoint with ``w = 3 sigma`` (``sigma =
        KeyPoint.size / 2``) and stores it spatial-major with angles measured towards -y.

        Differences from Kornia's ``SIFTDescriptor`` (same patches, close but not equal
        descriptors): Kornia pools with 17-pixel tents 10 pixels apart at ``patch_size=41``
        (:func:`get_sift_bin_ksize_stride_pad`) and weights with a Gaussian of sigma
        ``patch_size / sqrt(2)`` (almost flat); gradcv uses Lowe's cell-wide tents and
        window. RootSIFT here is exact (no ``+ 1e-10`` inside the root) with a zero
        derivative at empty bins.

    Example:
        >>> sift_describe(torch.rand(3, 1, 41, 41)).shape
        torch.Size([3, 128])
    """
    return SIFTDescriptor(patch_size, num_ang_bins, num_spatial_bins, rootsift, clipval)(input)


class SIFTDescriptor(nn.Module):
    """SIFT descriptors of square grayscale patches; see :func:`sift_describe`.

    Args:
        patch_size: side of the patches in pixels (Kornia's default 41).
        num_ang_bins: angle bins per cell.
        num_spatial_bins: cells per side.
        rootsift: RootSIFT (the default, as Kornia).
        clipval: Lowe's clip of the normalised vector.

    Shape:
        ``(B, 1, PS, PS) -> (B, A * S * S)``.

    Convention:
        As :func:`sift_describe`. A LAF ``A`` whose patch spans ``2 * scale`` pixels edge to
        edge gives cells ``2 * scale / (S + 1)`` image pixels apart: OpenCV's descriptor of a
        keypoint with ``sigma = KeyPoint.size / 2`` (cells ``3 sigma`` apart) is the one of
        the LAF of scale ``1.5 * (S + 1) * sigma`` (``7.5 sigma`` at ``S = 4``).

    Example:
        >>> SIFTDescriptor(32)(torch.rand(5, 1, 32, 32)).shape
        torch.Size([5, 128])
    """

    tents: torch.Tensor
    vote_index: torch.Tensor
    vote_low: torch.Tensor
    vote_high: torch.Tensor
    vote_fold: torch.Tensor

    def __init__(
        self,
        patch_size: int = 41,
        num_ang_bins: int = 8,
        num_spatial_bins: int = 4,
        rootsift: bool = True,
        clipval: float = 0.2,
    ) -> None:
        super().__init__()
        check_int(num_spatial_bins, "num_spatial_bins", 1)
        check_int(patch_size, "patch_size", num_spatial_bins + 1)
        check_int(num_ang_bins, "num_ang_bins", 1)
        check_bool(rootsift, "rootsift")
        self.patch_size = patch_size
        self.num_ang_bins = num_ang_bins
        self.num_spatial_bins = num_spatial_bins
        self.rootsift = rootsift
        self.clipval = check_real(clipval, "clipval", low=0.0, low_open=True)
        # Constants of the patch geometry: non-persistent buffers (they follow .to(), stay
        # out of state_dict), cast to the input's dtype in forward.
        tents = _cell_tents(patch_size, num_spatial_bins, torch.float64)
        index, low, high, fold = _vote_layout(
            patch_size, num_spatial_bins, num_ang_bins, tents, _lowe_window(patch_size, num_spatial_bins, torch.float64)
        )
        self.register_buffer("tents", tents, persistent=False)
        self.register_buffer("vote_index", index, persistent=False)
        self.register_buffer("vote_low", low, persistent=False)
        self.register_buffer("vote_high", high, persistent=False)
        self.register_buffer("vote_fold", fold, persistent=False)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_ang_bins={self.num_ang_bins}, num_spatial_bins={self.num_spatial_bins}, "
            f"patch_size={self.patch_size}, rootsift={self.rootsift}, clipval={self.clipval})"
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``(B, 1, PS, PS)`` patches -> ``(B, A * S * S)`` descriptors."""
        _check_patches(input, self.patch_size)
        # float64 buffers (exact constants for a float64 input), cast to the input's dtype.
        dev, dt = input.device, input.dtype
        layout = (self.vote_index.to(dev), self.vote_low.to(dev, dt), self.vote_high.to(dev, dt),
                  self.vote_fold.to(dev, dt))
        return _describe(input, layout, self.tents.to(dev, dt), self.num_ang_bins, self.rootsift, self.clipval)


_SIFT_LAYOUTS = ("kornia", "opencv")


def convert_sift_descriptor_layout(
    descriptors: torch.Tensor,
    source: str,
    target: str,
    num_ang_bins: int = 8,
    num_spatial_bins: int = 4,
) -> torch.Tensor:
    """Reorder SIFT descriptors between Kornia's (and gradcv's) layout and OpenCV's.

    Args:
        descriptors: ``(*, A * S * S)``.
        source: ``"kornia"`` or ``"opencv"``.
        target: ``"kornia"`` or ``"opencv"``.
        num_ang_bins: ``A``.
        num_spatial_bins: ``S``.

    Returns:
        The same values in the ``target`` layout (a permutation; converting back restores
        the input exactly).

    Convention:
        ``"kornia"``: angle-major, entry ``a S^2 + cy S + cx``, angle bin ``a`` centred on
        ``2 pi a / A`` from +x towards +y (y down), the layout of :class:`SIFTDescriptor`.
        ``"opencv"``: ``cv2.SIFT``'s spatial-major ``(cy S + cx) A + a'`` with angles
        measured towards -y, so ``a' = -a mod A`` (Kornia's ``convert_sift_descriptor_layout``).

    Example:
        >>> d = SIFTDescriptor(32)(torch.rand(2, 1, 32, 32))
        >>> back = convert_sift_descriptor_layout(convert_sift_descriptor_layout(d, "kornia", "opencv"), "opencv", "kornia")
        >>> torch.equal(back, d)
        True
    """
    check_tensor(descriptors, "descriptors")
    check_choice(source, _SIFT_LAYOUTS, "source")
    check_choice(target, _SIFT_LAYOUTS, "target")
    check_int(num_ang_bins, "num_ang_bins", 1)
    check_int(num_spatial_bins, "num_spatial_bins", 1)
    a, cells = num_ang_bins, num_spatial_bins * num_spatial_bins
    check_shape(descriptors, ["*", a * cells], "descriptors")
    # For each OpenCV position, the Kornia position holding the same value.
    to_opencv = torch.tensor([((-ang) % a) * cells + cell for cell in range(cells) for ang in range(a)])
    if source == target:
        order = torch.arange(a * cells)
    elif target == "opencv":
        order = to_opencv
    else:
        order = torch.empty_like(to_opencv)
        order[to_opencv] = torch.arange(a * cells)
    return descriptors.index_select(-1, order.to(descriptors.device))


def get_laf_descriptors(
    img: torch.Tensor,
    lafs: torch.Tensor,
    patch_descriptor: nn.Module,
    patch_size: int = 32,
    grayscale_descriptor: bool = True,
) -> torch.Tensor:
    """Descriptors of the patches of local affine frames (Kornia's ``get_laf_descriptors``).

    Args:
        img: image ``(B, C, H, W)``, floating.
        lafs: ``(B, N, 2, 3)`` LAFs in pixels.
        patch_descriptor: module taking ``(B * N, C', patch_size, patch_size)`` patches.
        patch_size: side of the sampled patches; must be one the descriptor accepts.
        grayscale_descriptor: convert a 3-channel ``img`` to grayscale first.

    Returns:
        ``(B, N, D)``. An empty set of LAFs gives ``(B, 0, D)`` (no warning, unlike Kornia).

    Convention:
        Patches are those of :func:`gradcv.core_ops.features.laf.extract_patches_from_pyramid`
        (LAF centres at integer pixel coordinates, as OpenCV's ``KeyPoint.pt``).
    """
    from gradcv.core_ops.features.laf import extract_patches_from_pyramid  # sibling module, see laf.py

    check_shape(img, ["B", "C", "H", "W"], "img")
    check_floating(img, "img")
    check_shape(lafs, ["B", "N", 2, 3], "lafs")
    check_floating(lafs, "lafs")
    if lafs.shape[0] != img.shape[0]:
        raise ShapeError("lafs", (img.shape[0], "N", 2, 3), tuple(lafs.shape),
                         f"lafs: expected the batch size of img ({img.shape[0]}), got shape {tuple(lafs.shape)}")
    check_int(patch_size, "patch_size", 1)
    check_bool(grayscale_descriptor, "grayscale_descriptor")
    timg = img
    if grayscale_descriptor and img.shape[1] == 3:
        from gradcv.core_ops.color import rgb_to_grayscale

        timg = rgb_to_grayscale(img)
    b, n = lafs.shape[:2]
    if n == 0 or b == 0:
        with torch.no_grad():
            probe = patch_descriptor(timg.new_zeros(1, timg.shape[1], patch_size, patch_size))
        return timg.new_zeros(b, n, probe.numel())
    patches = extract_patches_from_pyramid(timg, lafs, patch_size)
    out = patch_descriptor(patches.reshape(b * n, timg.shape[1], patch_size, patch_size))
    return out.reshape(b, n, out.numel() // (b * n))


class LAFDescriptor(nn.Module):
    """Descriptors of local affine frames: patches sampled at the LAFs, then a patch descriptor.

    Args:
        patch_descriptor_module: the patch descriptor; ``None`` gives
            ``SIFTDescriptor(patch_size)`` (Kornia's default is a pretrained HardNet, which
            gradcv does not ship).
        patch_size: side of the sampled patches in pixels.
        grayscale_descriptor: convert a 3-channel image to grayscale first.

    Shape:
        ``img (B, C, H, W), lafs (B, N, 2, 3) -> (B, N, D)``.

    Convention:
        As :func:`get_laf_descriptors`.
    """

    def __init__(
        self,
        patch_descriptor_module: Optional[nn.Module] = None,
        patch_size: int = 32,
        grayscale_descriptor: bool = True,
    ) -> None:
        super().__init__()
        check_int(patch_size, "patch_size", 1)
        check_bool(grayscale_descriptor, "grayscale_descriptor")
        if patch_descriptor_module is None:
            patch_descriptor_module = SIFTDescriptor(patch_size)
        elif not isinstance(patch_descriptor_module, nn.Module):
            raise ArgumentTypeError(
                "patch_descriptor_module", nn.Module, type(patch_descriptor_module),
                f"patch_descriptor_module: expected a torch.nn.Module, got {type(patch_descriptor_module).__name__}",
            )
        self.descriptor = patch_descriptor_module
        self.patch_size = patch_size
        self.grayscale_descriptor = grayscale_descriptor

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(descriptor={self.descriptor!r}, patch_size={self.patch_size}, "
            f"grayscale_descriptor={self.grayscale_descriptor})"
        )

    def forward(self, img: torch.Tensor, lafs: torch.Tensor) -> torch.Tensor:
        """``img (B, C, H, W)``, ``lafs (B, N, 2, 3)`` -> ``(B, N, D)``."""
        return get_laf_descriptors(img, lafs, self.descriptor, self.patch_size, self.grayscale_descriptor)
