"""Structural similarity: the SSIM map, the loss ``(1 - SSIM) / 2``, and their modules.

The five local moments (``E[x]``, ``E[y]``, ``E[x^2]``, ``E[y^2]``, ``E[xy]``) come from one
call of the slice engine on the five maps stacked along a new axis: one separable Gaussian
pass for all of them, no ``conv2d`` (see ``core_ops/filters/_engine.py`` for why). The
windows are always 'valid'; ``padding='same'`` reflects the images first (``pad2d``).

Without a mask, the map has a hand-written backward (``_SSIMValid``): the derivative of
SSIM with respect to the moments is a few elementwise products (Avanaki 2009, eqs. 7-8),
and the adjoint of the Gaussian is applied once, to the three or four maps that matter
(``E[x^2]`` and ``E[y^2]`` share a derivative; the maps of an input that does not require
grad are skipped). The forward and the backward run a few image planes at a time, so that
their twenty-odd elementwise passes stay in cache. On 8x3x256x256, one core, forward +
backward took 146 ms through autograd and takes about 85 ms so (Kornia: about 320 ms).
Second derivatives are exact: under ``create_graph`` the backward recomputes the moments
with autograd on. With a mask, the moments are mask-weighted and autograd does the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from gradcv.core_ops._checks import check_choice, check_image, check_kernel_size, check_sigma
from gradcv.core_ops.errors import ArgumentTypeError, ShapeError
from gradcv.core_ops.filters import pad2d
from gradcv.core_ops.filters import correlate_separable
from gradcv.core_ops.filters.kernels import gaussian_taps
from gradcv.core_ops.losses._common import check_mask, check_positive, check_reduction, check_same_shape, reduce_loss

PADDINGS = ("same", "valid")
Taps = tuple[float, ...]


# ----------------------------------------------------------------------------- checks
def _check_options(
    window_size: object, sigma: object, max_val: object, eps: object, padding: object, c1: object, c2: object
) -> tuple[Taps, float, float, float]:
    """Validate the hyper-parameters; return the Gaussian taps, C1, C2 and eps."""
    if isinstance(window_size, bool) or not isinstance(window_size, int):
        raise ArgumentTypeError(
            "window_size", "an odd positive int", window_size, f"window_size: expected an odd positive int, got {window_size!r}"
        )
    check_kernel_size(window_size, "window_size")
    if isinstance(sigma, torch.Tensor):
        raise ArgumentTypeError("sigma", "a positive float", torch.Tensor, "sigma: expected a positive float, got a tensor")
    sy, _ = check_sigma(sigma)  # type: ignore[misc]
    check_positive(max_val, "max_val")
    eps_f = check_positive(eps, "eps", allow_zero=True)
    check_choice(padding, PADDINGS, "padding")
    c1_f = (0.01 * float(max_val)) ** 2 if c1 is None else check_positive(c1, "C1", allow_zero=True)  # type: ignore[arg-type]
    c2_f = (0.03 * float(max_val)) ** 2 if c2 is None else check_positive(c2, "C2", allow_zero=True)  # type: ignore[arg-type]
    return gaussian_taps(window_size, sy), c1_f, c2_f, eps_f


def _check_images(img1: object, img2: object, window_size: int, padding: str) -> None:
    check_image(img1, "img1")
    check_image(img2, "img2")
    assert isinstance(img1, torch.Tensor) and isinstance(img2, torch.Tensor)
    check_same_shape(img1, img2, ("img1", "img2"))
    if padding == "valid" and min(img1.shape[-2:]) < window_size:
        raise ShapeError(
            "img1", ("B", "C", f"H >= {window_size}", f"W >= {window_size}"), tuple(img1.shape),
            f"img1: padding='valid' needs H and W of at least window_size={window_size}, got {tuple(img1.shape)}",
        )


def _mask_shapes(img: torch.Tensor) -> list[tuple[int, ...]]:
    b, c, h, w = img.shape
    return [(b, 1, h, w), (b, c, h, w)]


# ----------------------------------------------------------------------- the formula
def _moments(x: torch.Tensor, y: torch.Tensor, taps: Taps) -> torch.Tensor:
    """Gaussian-weighted ``E[x], E[y], E[x^2], E[y^2], E[xy]`` of ``(*, H, W)``, 'valid': ``(*, 5, Ho, Wo)``."""
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad) or torch.compiler.is_compiling():
        stack = torch.stack([x, y, x * x, y * y, x * y], dim=-3)
    else:  # the products written straight into the stack: no temporaries
        stack = x.new_empty(*x.shape[:-2], 5, *x.shape[-2:])
        stack.select(-3, 0).copy_(x)
        stack.select(-3, 1).copy_(y)
        torch.mul(x, x, out=stack.select(-3, 2))
        torch.mul(y, y, out=stack.select(-3, 3))
        torch.mul(x, y, out=stack.select(-3, 4))
    return correlate_separable(stack, ((taps, taps),), padding="valid").squeeze(-3)


def _terms(m: torch.Tensor, c1: float, c2: float, eps: float) -> tuple[torch.Tensor, ...]:
    """SSIM from the moments ``(*, 5, h, w)``: returns ``(S, mu_x, mu_y, A1, A2, B1, B2, D)``.

    ``S = A1 A2 / D`` with ``A1 = 2 mu_x mu_y + C1``, ``A2 = 2 sigma_xy + C2``,
    ``B1 = mu_x^2 + mu_y^2 + C1``, ``B2 = sigma_x^2 + sigma_y^2 + C2``, ``D = B1 B2 + eps``.
    Differentiable (autograd); :func:`_terms_inplace` is the same arithmetic without it.
    """
    mx, my, exx, eyy, exy = m.unbind(-3)
    mxy = mx * my
    a1 = mxy * 2.0 + c1
    a2 = (exy - mxy) * 2.0 + c2
    msq = mx * mx + my * my
    b1 = msq + c1
    b2 = (exx + eyy) - msq + c2
    d = b1 * b2 + eps
    return a1 * a2 / d, mx, my, a1, a2, b1, b2, d


def _terms_inplace(
    m: torch.Tensor, c1: float, c2: float, eps: float, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """:func:`_terms` reusing the storage of ``m`` (which it overwrites); for use without autograd.

    The same operations in the same order (one fused multiply-add), so the values agree
    to rounding. ``S`` is written into ``out`` when given.
    """
    mx, my, exx, eyy, exy = m.unbind(-3)
    mxy = mx * my
    a1 = torch.mul(mxy, 2.0).add_(c1)
    a2 = exy.sub_(mxy).mul_(2.0).add_(c2)
    msq = torch.mul(mx, mx).addcmul_(my, my)
    b2 = exx.add_(eyy).sub_(msq).add_(c2)
    b1 = msq.add_(c1)
    d = torch.mul(b1, b2).add_(eps)
    s = torch.mul(a1, a2, out=mxy if out is None else out).div_(d)
    return s, mx, my, a1, a2, b1, b2, d


def _grad_maps(
    g: torch.Tensor,
    saved: list[torch.Tensor],
    need_x: bool,
    need_y: bool,
    out: list[torch.Tensor] | None = None,
    work: tuple[torch.Tensor, ...] | None = None,
) -> list[torch.Tensor]:
    """Derivatives of ``sum(g * S)`` with respect to ``E[x^2]`` (= ``E[y^2]``), ``E[xy]``, ``mu_x``, ``mu_y``.

    Without ``out``, built out of place (differentiable). With ``out`` and three scratch
    maps ``work``, written into ``out`` without autograd and without allocating;
    ``saved`` is left unchanged.
    """
    s, mx, my, a1, a2, b1, b2, d = saved
    if out is None or work is None:
        gd = g / d
        da = a2 - a1
        db = s * (b2 - b1)
        maps = [-(s * b1 * gd), a1 * gd * 2.0]
        if need_x:
            maps.append((my * da - mx * db) * gd * 2.0)
        if need_y:
            maps.append((mx * da - my * db) * gd * 2.0)
        return maps
    gd, da, db = work
    torch.div(g, d, out=gd)
    torch.sub(a2, a1, out=da)
    torch.sub(b2, b1, out=db).mul_(s)
    torch.mul(s, b1, out=out[0]).mul_(gd).neg_()
    torch.mul(a1, gd, out=out[1]).mul_(2.0)
    gd.mul_(2.0)
    k = 2
    if need_x:
        torch.mul(my, da, out=out[k]).addcmul_(mx, db, value=-1.0).mul_(gd)
        k += 1
    if need_y:
        torch.mul(mx, da, out=out[k]).addcmul_(my, db, value=-1.0).mul_(gd)
    return out


# Cache blocking, as in the slice engine: the formula is some twenty elementwise passes
# over the five moment maps; done a few image planes at a time, the maps stay in cache
# between passes instead of streaming through main memory. Measured on 8x3x256x256, one
# core: forward 50 -> 40 ms, forward + backward 101 -> 83 ms (2-plane chunks; 1 MiB chunks
# did as well at two threads, 4 MiB hardly better than none). CPU only, and not under
# torch.compile, which fuses the passes itself.
_CPU_CHUNK_BYTES = 1 << 19


def _plane_chunks(x: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges over the planes of ``(*, H, W)``: 512 KiB of input each on CPU, else one range."""
    plane = x.shape[-2] * x.shape[-1]
    n = x.numel() // max(plane, 1)
    step = n
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        step = max(1, _CPU_CHUNK_BYTES // max(plane * x.element_size(), 1))
    return [(i, min(n, i + step)) for i in range(0, n, max(step, 1))]


def _ssim_valid_forward(
    x: torch.Tensor, y: torch.Tensor, taps: Taps, c1: float, c2: float, eps: float, keep: bool
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
    """SSIM with 'valid' windows, chunk by chunk; with ``keep``, each chunk's terms for the backward."""
    r = len(taps) // 2
    h, w = x.shape[-2:]
    ho, wo = h - 2 * r, w - 2 * r
    xs, ys = x.reshape(-1, h, w), y.reshape(-1, h, w)
    out = x.new_empty(xs.shape[0], ho, wo)
    kept = []
    for i, j in _plane_chunks(x):
        _, *parts = _terms_inplace(_moments(xs[i:j], ys[i:j], taps), c1, c2, eps, out=out[i:j])
        if keep:
            kept.append(tuple(parts))
    return out.view(*x.shape[:-2], ho, wo), kept


class _SSIMValid(torch.autograd.Function):
    """SSIM map with 'valid' windows, with the analytic gradient (Avanaki 2009, eqs. 7-8)."""

    @staticmethod
    def forward(ctx, x, y, taps, c1, c2, eps):  # type: ignore[override]
        s, kept = _ssim_valid_forward(x, y, taps, c1, c2, eps, keep=True)
        ctx.taps, ctx.consts, ctx.kept = taps, (c1, c2, eps), kept
        ctx.save_for_backward(x, y, s)
        return s

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, y, s = ctx.saved_tensors
        taps = ctx.taps
        r = len(taps) // 2
        bank = ((tuple(reversed(taps)),) * 2,)  # the adjoint of a correlation uses the flipped taps
        need_x, need_y = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            # create_graph: the kept terms carry no history, so recompute them with it, out
            # of place (also what torch.compile traces: no out= into views, and it fuses).
            saved = list(_terms(_moments(x, y, taps), *ctx.consts))
            maps = _grad_maps(g, saved, need_x, need_y)
            stack = torch.nn.functional.pad(torch.stack(maps, dim=-3), (r, r, r, r))
            back = correlate_separable(stack, bank, "constant", "same").squeeze(-3).unbind(-3)
            gx = torch.addcmul(back[2], x, back[0], value=2.0).addcmul_(y, back[1]) if need_x else None
            gy = torch.addcmul(back[-1], y, back[0], value=2.0).addcmul_(x, back[1]) if need_y else None
            return gx, gy, None, None, None, None
        h, w = x.shape[-2:]
        ho, wo = s.shape[-2:]
        k = 2 + int(need_x) + int(need_y)
        xs, ys = x.reshape(-1, h, w), y.reshape(-1, h, w)
        g3, s3 = g.reshape(-1, ho, wo), s.reshape(-1, ho, wo)
        gx = x.new_empty(xs.shape) if need_x else None
        gy = y.new_empty(ys.shape) if need_y else None
        chunks = _plane_chunks(x)
        n = max([j - i for i, j in chunks] + [0])
        # One zero-bordered stack for every chunk (fresh memory per chunk costs page faults):
        # its 'valid' correlation is the full correlation of the interior, the adjoint of
        # the forward's 'valid' correlation.
        stack = g.new_zeros(n, k, ho + 4 * r, wo + 4 * r)
        work = g.new_empty(3, n, ho, wo)
        for (i, j), parts in zip(chunks, ctx.kept):
            m = j - i
            interior = list(stack[:m, :, 2 * r : ho + 2 * r, 2 * r : wo + 2 * r].unbind(-3))
            _grad_maps(g3[i:j], [s3[i:j], *parts], need_x, need_y, interior, work[:, :m].unbind(0))
            back = correlate_separable(stack[:m], bank, padding="valid").squeeze(-3).unbind(-3)
            if gx is not None:
                torch.addcmul(back[2], xs[i:j], back[0], value=2.0, out=gx[i:j]).addcmul_(ys[i:j], back[1])
            if gy is not None:
                torch.addcmul(back[-1], ys[i:j], back[0], value=2.0, out=gy[i:j]).addcmul_(xs[i:j], back[1])
        return (
            None if gx is None else gx.view(x.shape),
            None if gy is None else gy.view(y.shape),
            None, None, None, None,
        )


def _ssim_map(x: torch.Tensor, y: torch.Tensor, taps: Taps, c1: float, c2: float, eps: float, padding: str) -> torch.Tensor:
    if padding == "same":
        r = len(taps) // 2
        x, y = pad2d(x, (r, r, r, r), "reflect"), pad2d(y, (r, r, r, r), "reflect")
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return _SSIMValid.apply(x, y, taps, c1, c2, eps)
    return _ssim_valid_forward(x, y, taps, c1, c2, eps, keep=False)[0]


def _ssim_map_masked(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, taps: Taps, c1: float, c2: float, eps: float, padding: str
) -> torch.Tensor:
    """SSIM with mask-weighted moments (normalised convolution), by autograd through the engine."""
    m = mask.expand_as(x)
    mx_, my_ = m * x, m * y
    stack = torch.stack([m, mx_, my_, mx_ * x, my_ * y, mx_ * y], dim=-3)
    blurred = correlate_separable(stack, ((taps, taps),), "reflect", padding).squeeze(-3)
    weight, moments = blurred[..., :1, :, :], blurred[..., 1:, :, :]
    # The taps are positive and the mask non-negative, so the weight is 0 exactly where no
    # masked-in pixel is in the window; SSIM is set to 1 there (nothing to compare).
    empty = weight <= 0
    moments = moments / torch.where(empty, torch.ones_like(weight), weight)
    s = _terms(moments, c1, c2, eps)[0]
    return torch.where(empty.squeeze(-3), torch.ones_like(s), s)


# ------------------------------------------------------------------------ public API
def ssim(
    img1: torch.Tensor,
    img2: torch.Tensor,
    window_size: int = 11,
    max_val: float = 1.0,
    eps: float = 1e-12,
    padding: str = "same",
    *,
    sigma: float = 1.5,
    C1: float | None = None,
    C2: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Structural similarity map (Wang et al. 2004) between two image batches.

    .. math::
        \text{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
                           {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2) + \epsilon}

    with Gaussian-weighted local means, variances and covariance (population, not
    sample, statistics), per channel. Kornia's name, argument order and defaults
    (``window_size`` gains the default 11), plus keyword-only ``sigma``, ``C1``, ``C2``
    and ``mask``.

    Args:
        img1: image ``(B, C, H, W)``.
        img2: image of the same shape, dtype and device.
        window_size: odd number of Gaussian taps per axis.
        max_val: the data range ``L`` (1 for images in ``[0, 1]``).
        eps: added to the denominator (Kornia's); 0 is allowed when ``C1, C2 > 0``.
        padding: ``'same'`` (reflect the border, as Kornia; output ``H x W``) or ``'valid'``
            (windows inside the image only; output ``(H - 2r) x (W - 2r)``, ``r = window_size // 2``).
        sigma: standard deviation of the Gaussian window, in pixels.
        C1: stability constant of the luminance term; default ``(0.01 L)^2``.
        C2: stability constant of the contrast-structure term; default ``(0.03 L)^2``.
        mask: optional weights in ``[0, 1]``, ``(B, 1, H, W)`` or ``(B, C, H, W)``, floating
            or bool. The local statistics become mask-weighted (normalised convolution:
            ``mu_x = G*(m x) / G*m`` and likewise for the second moments), so pixels with
            weight 0 do not influence any window. Where a window holds no pixel of
            positive weight the map is 1. An all-ones mask gives the unmasked map (to
            rounding). The mask is differentiable.

    Returns:
        The SSIM map, ``(B, C, H, W)`` or ``(B, C, H - 2r, W - 2r)``.

    Shape:
        - img1, img2: ``(B, C, H, W)``
        - mask: ``(B, 1, H, W)`` or ``(B, C, H, W)``
        - output: ``(B, C, H, W)`` (``'same'``) or ``(B, C, H - 2r, W - 2r)`` (``'valid'``)

    Convention:
        ``'valid'`` windows are those wholly inside the image, so the mean of the
        ``'valid'`` map is scikit-image's ``structural_similarity(gaussian_weights=True,
        use_sample_covariance=False)`` with ``win_size = window_size`` (scikit-image crops
        ``(win_size - 1) // 2`` pixels before averaging). ``'same'`` reflects the border
        without repeating the edge pixel (``BORDER_REFLECT_101``), as Kornia does.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> ssim(x, x).shape, bool((ssim(x, x) > 0.9999).all())
        (torch.Size([2, 3, 16, 16]), True)
        >>> ssim(x, x, 7, padding="valid").shape
        torch.Size([2, 3, 10, 10])
    """
    taps, c1, c2, eps_f = _check_options(window_size, sigma, max_val, eps, padding, C1, C2)
    _check_images(img1, img2, window_size, padding)
    if mask is None:
        return _ssim_map(img1, img2, taps, c1, c2, eps_f, padding)
    m = check_mask(mask, img1, _mask_shapes(img1))
    return _ssim_map_masked(img1, img2, m, taps, c1, c2, eps_f, padding)


def ssim_loss(
    img1: torch.Tensor,
    img2: torch.Tensor,
    window_size: int = 11,
    max_val: float = 1.0,
    eps: float = 1e-12,
    reduction: str = "mean",
    padding: str = "same",
    *,
    sigma: float = 1.5,
    C1: float | None = None,
    C2: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Structural dissimilarity ``(1 - SSIM) / 2`` per pixel, reduced.

    Kornia's ``ssim_loss`` without its clamp to ``[0, 1]``: the clamp zeroes the gradient
    wherever it acts, and the map lies in ``[-1, 1]`` up to rounding anyway, so the loss
    here is the formula itself and its gradient is the true one everywhere.

    Args:
        img1, img2, window_size, max_val, eps, padding, sigma, C1, C2: as :func:`ssim`.
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` (the per-pixel map).
        mask: as :func:`ssim` (mask-weighted windows), and also the weights of the
            reduction: ``'none'`` returns ``mask * loss``, ``'sum'`` its sum and
            ``'mean'`` ``sum(mask * loss) / sum(mask)`` over the output pixels (the mask
            cropped like the map under ``'valid'``); an all-zero mask gives 0.

    Returns:
        A scalar, or the ``(B, C, H', W')`` map for ``reduction='none'``.

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> float(ssim_loss(x, x)) < 1e-6
        True
    """
    check_reduction(reduction)
    s = ssim(img1, img2, window_size, max_val, eps, padding, sigma=sigma, C1=C1, C2=C2, mask=mask)
    loss = (1.0 - s) * 0.5
    weight = None
    if mask is not None:
        weight = mask.to(loss.dtype)
        if padding == "valid":
            r = window_size // 2
            weight = weight[..., r : weight.shape[-2] - r, r : weight.shape[-1] - r]
    return reduce_loss(loss, reduction, weight)


class SSIM(nn.Module):
    """Module form of :func:`ssim` (Kornia's ``kornia.metrics.SSIM``); the mask is passed per call.

    ``window_size`` defaults to 11 (the paper's and scikit-image's window), where Kornia
    requires it; a Kornia call, which passes it, works unchanged.

    Example:
        >>> SSIM(5)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(
        self,
        window_size: int = 11,
        max_val: float = 1.0,
        eps: float = 1e-12,
        padding: str = "same",
        *,
        sigma: float = 1.5,
        C1: float | None = None,
        C2: float | None = None,
    ) -> None:
        super().__init__()
        _check_options(window_size, sigma, max_val, eps, padding, C1, C2)
        self.window_size, self.max_val, self.eps, self.padding = window_size, max_val, eps, padding
        self.sigma, self.C1, self.C2 = sigma, C1, C2

    def forward(self, img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return ssim(
            img1, img2, self.window_size, self.max_val, self.eps, self.padding,
            sigma=self.sigma, C1=self.C1, C2=self.C2, mask=mask,
        )


class SSIMLoss(nn.Module):
    """Module form of :func:`ssim_loss`; the mask is passed per call.

    ``window_size`` defaults to 11, where Kornia's ``SSIMLoss`` requires it; a Kornia
    call, which passes it, works unchanged.

    Example:
        >>> x = torch.rand(1, 3, 8, 8, requires_grad=True)
        >>> SSIMLoss(5)(x, torch.rand(1, 3, 8, 8)).backward()
    """

    def __init__(
        self,
        window_size: int = 11,
        max_val: float = 1.0,
        eps: float = 1e-12,
        reduction: str = "mean",
        padding: str = "same",
        *,
        sigma: float = 1.5,
        C1: float | None = None,
        C2: float | None = None,
    ) -> None:
        super().__init__()
        _check_options(window_size, sigma, max_val, eps, padding, C1, C2)
        check_reduction(reduction)
        self.window_size, self.max_val, self.eps = window_size, max_val, eps
        self.reduction, self.padding = reduction, padding
        self.sigma, self.C1, self.C2 = sigma, C1, C2

    def forward(self, img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return ssim_loss(
            img1, img2, self.window_size, self.max_val, self.eps, self.reduction, self.padding,
            sigma=self.sigma, C1=self.C1, C2=self.C2, mask=mask,
        )
