"""Scale-space blob detection (DoG as OpenCV's SIFT, or the Hessian as Kornia), Kornia's
``ScaleSpaceDetector`` interface.

Per octave of a :class:`~gradcv.core_ops.pyramid.ScalePyramid`: a response per level (or
over the levels, for DoG), extrema over (level, row, column) in 3x3x3 windows with one
winner per plateau (:mod:`~gradcv.core_ops.features.nms`), a preliminary threshold, then
for the strongest candidates of each image: Lowe's iterative quadratic refinement (up to
``max_iterations`` Newton steps on the 3-D quadratic, moving to the neighbouring voxel
while an offset exceeds 0.5; a candidate that does not settle is dropped, as OpenCV) or a
soft arg-max over the 3x3x3 window, contrast rejection on the refined response and
Lowe's edge rejection ``tr^2 / det < (r + 1)^2 / r`` on the response's spatial Hessian.
The ``num_features`` strongest survivors of each image fill the output; the other slots
are padding: zero response, zero LAF, ``False`` in the validity mask.

The outputs have fixed sizes, but finding the candidates is data-dependent in eager mode:
their extraction (``nonzero``, per block of rows on the CPU, per octave elsewhere) and the
refinement's stopping test read values on the host. Under ``torch.compile`` and
``torch.export`` the candidates are instead the top ``8 num_features`` extrema of each
image by a dense ``topk`` over the octave (no ``nonzero``, a fixed grid of slots with a
mask), and the refinement runs all its ``max_iterations`` steps (the settled candidates
stay put), so the detector traces into one graph with the same results. Gradients reach the image through the refined offsets and
responses (both refinements are differentiable; ``'soft'`` is smooth, ``'quadratic'``
piecewise smooth), never through which voxels were selected.

Convention:
    Pixel ``(x, y)`` of octave ``o`` is input pixel ``d_o (x, y)`` exactly
    (``d_o`` = the pyramid's ``pixel_dists[o]``: ``2**o``, or ``2**(o - 1)`` with
    ``double_image``), so a refined octave position ``(x + dx, y + dy)`` is reported at
    ``d_o (x + dx, y + dy)``: a LAF centre in input pixels, centres at integer coordinates
    (OpenCV's ``KeyPoint.pt``). The scale of a detection at level ``l + ds`` is
    ``sigma = init_sigma 2**((l + ds) / n_levels) d_o`` input pixels (for DoG, level ``l``
    is ``L_{l+1} - L_l`` and takes ``L_l``'s sigma, as Lowe and OpenCV, whose
    ``KeyPoint.size`` is ``2 sigma``); the LAF is ``mr_size * sigma`` times the identity
    (before ``aff_module`` / ``ori_module``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcv.core_ops._checks import check_bool, check_floating, check_int, check_real, check_same_device, check_shape, check_str_choice
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.core_ops.features.laf import laf_from_center_scale_ori
from gradcv.core_ops.features.nms import _interior_maxima_333
from gradcv.core_ops.features.responses import BlobDoG, BlobHessian, _hessian_response_into
from gradcv.core_ops.pyramid import ScalePyramid

__all__ = ["ScaleSpaceDetector"]

# Pixels of an octave searched per block (32 rows of 1280): the block's comparisons stay
# in cache (about 35 % faster than whole-octave passes on a 1280 x 960 octave).
_BLOCK_PIXELS = 32 * 1280
# Candidates refined per image and octave, at most, as a multiple of num_features:
# refinement and the edge test drop many of the strongest raw extrema (edges respond
# strongly), and a slot lost there is not refilled (Kornia's #5741 with a cap of 1x).
# Refining costs little per candidate (gathers), so the cap is generous.
_PRESELECT = 8

# Offsets (ds, dy, dx) of the voxels the quadratic fit reads: centre, 6 faces, 12 edges.
_STENCIL = [(0, 0, 0)]
_STENCIL += [(0, 0, 1), (0, 0, -1), (0, 1, 0), (0, -1, 0), (1, 0, 0), (-1, 0, 0)]
_STENCIL += [(0, s, t) for s in (1, -1) for t in (1, -1)]
_STENCIL += [(s, 0, t) for s in (1, -1) for t in (1, -1)]
_STENCIL += [(s, t, 0) for s in (1, -1) for t in (1, -1)]
_CUBE = [(s, y, x) for s in (-1, 0, 1) for y in (-1, 0, 1) for x in (-1, 0, 1)]


class ScaleSpaceDetector(nn.Module):
    """Blob detector over a Gaussian scale space, Kornia's interface (``kornia.feature``).

    Args:
        num_features: slots per image (at least 1).
        mr_size: LAF scale over detection sigma.
        scale_pyr_module: the scale space; ``None`` for ``ScalePyramid(3, 1.6, 15,
            extra_levels=3)`` with ``scale_space_response`` (DoG needs a level above the
            last searched difference), ``extra_levels=2`` without. Its ``n_levels`` and
            ``init_sigma`` attributes are read.
        resp_module: response; ``None`` for :class:`~gradcv.core_ops.features.responses.BlobHessian`.
            Called as ``resp_module(levels (B L, 1, H, W), sigmas (B L,))`` per octave, or
            with ``scale_space_response`` as ``resp_module(octave (B, 1, L, H, W), sigmas)``.
        subpix_module: ``None`` or ``'quadratic'`` (Lowe's iterative refinement),
            ``'soft'`` (soft arg-max over the 3x3x3 window: smooth in the image) or
            ``'none'``. Kornia takes a module here; this takes its name.
        ori_module, aff_module: called as ``module(lafs, img)`` on the detections
            (``None``: nothing, Kornia's ``PassLAF``).
        minima_are_also_good: detect the extrema of ``|response|``, so minima too (DoG's
            bright blobs); a minimum's response is reported as ``|value|``, as Kornia
            (negated) and OpenCV. Kornia compares minima and maxima in two passes; here a
            minimum next to a larger positive value, or a maximum next to a more negative
            one, gives way to it.
        scale_space_response: the response takes the whole octave (DoG).
        compile_modules: Kornia's; only ``False`` is accepted.
        contrast_threshold: drop detections whose refined ``|response|`` is below it;
            voxels below half of it are not candidates (OpenCV's SIFT's pre-threshold).
            ``0`` (Kornia's behaviour) keeps every positive extremum.
        edge_threshold: Lowe's ``r``: drop detections whose response's spatial Hessian has
            ``tr^2 / det >= (r + 1)^2 / r`` or ``det <= 0``; ``None`` for no test.
        border: octave pixels along each side where no detection is made (OpenCV's 5).
        max_iterations: Newton steps of the quadratic refinement (OpenCV's 5).
        temperature: of the soft arg-max, relative to the centre's ``|response|``: the
            weights are ``softmax(r / (temperature |r_centre|))`` over the window.

    Convention:
        See the module: LAF centres in input pixels, centres at integer coordinates.

    Example:
        >>> y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        >>> img = torch.exp(-((x - 30.3) ** 2 + (y - 33.6) ** 2) / (2 * 4.0**2))[None, None]
        >>> lafs, resp = ScaleSpaceDetector(1)(img)
        >>> lafs[0, 0, :, 2].round(decimals=1)
        tensor([30.3000, 33.6000])
    """

    def __init__(
        self,
        num_features: int = 500,
        mr_size: float = 6.0,
        scale_pyr_module: nn.Module | None = None,
        resp_module: nn.Module | None = None,
        subpix_module: str | None = None,
        ori_module: nn.Module | None = None,
        aff_module: nn.Module | None = None,
        minima_are_also_good: bool = False,
        scale_space_response: bool = False,
        compile_modules: bool = False,
        *,
        contrast_threshold: float = 0.0,
        edge_threshold: float | None = None,
        border: int = 5,
        max_iterations: int = 5,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_features = check_int(num_features, "num_features", 1)
        self.mr_size = check_real(mr_size, "mr_size", low=0.0, low_open=True)
        self.minima_are_also_good = check_bool(minima_are_also_good, "minima_are_also_good")
        self.scale_space_response = check_bool(scale_space_response, "scale_space_response")
        if compile_modules is not False:
            raise ArgumentValueError("compile_modules", False, compile_modules, f"compile_modules: only False is supported, got {compile_modules!r}")
        self.subpix = check_str_choice("quadratic" if subpix_module is None else subpix_module, ("quadratic", "soft", "none"), "subpix_module")
        self.contrast_threshold = check_real(contrast_threshold, "contrast_threshold", low=0.0)
        self.edge_threshold = None if edge_threshold is None else check_real(edge_threshold, "edge_threshold", low=0.0, low_open=True)
        self.border = check_int(border, "border", 1)
        self.max_iterations = check_int(max_iterations, "max_iterations", 1)
        self.temperature = check_real(temperature, "temperature", low=0.0, low_open=True)
        if scale_pyr_module is None:
            scale_pyr_module = ScalePyramid(3, 1.6, 15, extra_levels=3 if scale_space_response else 2)
        self.scale_pyr = scale_pyr_module
        self.resp = BlobHessian() if resp_module is None else resp_module
        self.ori = ori_module
        self.aff = aff_module
        self.n_levels = int(getattr(scale_pyr_module, "n_levels", 3))
        self.init_sigma = float(getattr(scale_pyr_module, "init_sigma", 1.6))

    # ------------------------------------------------------------------ presets
    @classmethod
    def sift_dog(
        cls,
        num_features: int = 2500,
        mr_size: float = 6.0,
        *,
        double_image: bool = False,
        contrast_threshold: float = 0.04,
        edge_threshold: float = 10.0,
        n_levels: int = 3,
        init_sigma: float = 1.6,
        subpix_module: str | None = None,
    ) -> "ScaleSpaceDetector":
        """OpenCV's SIFT detector: DoG of a 3-level-per-octave pyramid (sigma 1.6, input blur
        0.5), extrema of both signs, OpenCV's thresholds.

        ``contrast_threshold`` is OpenCV's ``contrastThreshold`` for images in [0, 1]:
        the refined ``|DoG|`` must reach ``contrast_threshold / n_levels`` (candidates start
        at half of that), as ``cv2.SIFT_create``. ``edge_threshold`` is its ``edgeThreshold``.
        ``double_image`` starts from the image upsampled twice, as OpenCV (about 4x the
        cost of the first octave).
        """
        pyr = ScalePyramid(n_levels, init_sigma, 15, double_image=double_image, extra_levels=3)
        return cls(
            num_features, mr_size, pyr, BlobDoG(), subpix_module, minima_are_also_good=True, scale_space_response=True,
            contrast_threshold=check_real(contrast_threshold, "contrast_threshold", low=0.0) / n_levels,
            edge_threshold=edge_threshold,
        )

    @classmethod
    def hessian(
        cls, num_features: int = 2500, mr_size: float = 6.0, *, n_levels: int = 3, init_sigma: float = 1.6,
        subpix_module: str | None = None, contrast_threshold: float = 0.0,
    ) -> "ScaleSpaceDetector":
        """The paper's attack detector (Kornia's default): determinant of the Hessian times
        ``sigma^4`` on every level of a ``ScalePyramid(n_levels, init_sigma, 15,
        extra_levels=2)``, maxima only, no edge test (the determinant already rejects edges)."""
        pyr = ScalePyramid(n_levels, init_sigma, 15, extra_levels=2)
        return cls(num_features, mr_size, pyr, BlobHessian(), subpix_module, contrast_threshold=contrast_threshold)

    # ------------------------------------------------------------------ public
    def forward(
        self, img: torch.Tensor, mask: torch.Tensor | None = None, *, return_mask: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detect, then run ``aff_module`` and ``ori_module`` on the frames.

        Args:
            img: ``(B, 1, H, W)`` floating image, values in [0, 1] for the thresholds to mean
                OpenCV's.
            mask: optional ``(1 or B, 1, H, W)``; a detection is kept only where the mask
                is non-zero at its (rounded) centre. Kornia weights float masks; this does not.
            return_mask: also return the ``(B, N)`` validity mask.

        Returns:
            ``lafs (B, N, 2, 3)``, ``responses (B, N)`` by decreasing response (padding
            last: zero LAF, zero response), and with ``return_mask`` the ``(B, N)`` bool mask.
        """
        responses, lafs, valid = self._detect(img, self.num_features, mask)
        if self.aff is not None:
            lafs = self.aff(lafs, img)
        if self.ori is not None:
            lafs = self.ori(lafs, img)
        lafs = torch.where(valid[..., None, None], lafs, torch.zeros((), dtype=lafs.dtype, device=lafs.device))
        return (lafs, responses, valid) if return_mask else (lafs, responses)

    def detect(
        self, img: torch.Tensor, num_feats: int | None = None, mask: torch.Tensor | None = None, *, return_mask: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kornia's ``detect``: ``(responses (B, N), lafs (B, N, 2, 3))`` before the
        orientation and shape modules, ``N = num_feats`` (``None``: ``num_features``);
        with ``return_mask`` also the ``(B, N)`` validity mask."""
        n = self.num_features if num_feats is None else check_int(num_feats, "num_feats", 1)
        responses, lafs, valid = self._detect(img, n, mask)
        return (responses, lafs, valid) if return_mask else (responses, lafs)

    # ------------------------------------------------------------------ internals
    def _check(self, img: object, mask: object) -> None:
        check_shape(img, ["B", 1, "H", "W"], "img")
        assert isinstance(img, torch.Tensor)
        check_floating(img, "img")
        need = max(2 * self.border + 3, int(getattr(self.scale_pyr, "min_size", 1)))
        if min(img.shape[-2:]) < need:
            raise ShapeError(
                "img", f"H, W >= {need}", tuple(img.shape), f"img: expected height and width >= {need} (the detection border and the pyramid's min_size), got {tuple(img.shape)}"
            )
        if mask is not None:
            check_shape(mask, ["B", 1, img.shape[-2], img.shape[-1]], "mask")
            assert isinstance(mask, torch.Tensor)
            if mask.shape[0] not in (1, img.shape[0]):
                raise ShapeError("mask", (img.shape[0], 1, img.shape[-2], img.shape[-1]), tuple(mask.shape), f"mask: expected a batch of 1 or {img.shape[0]}, got {tuple(mask.shape)}")
            check_same_device(mask, "mask", img, "img")

    def _responses(self, octave: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """``(B, Lr, H, W)`` responses of one octave ``(B, 1, L, H, W)``."""
        b, c, levels, h, w = octave.shape
        if self.scale_space_response:
            r = self.resp(octave, sigmas)
        else:
            flat = octave.permute(0, 2, 1, 3, 4).reshape(b * levels, c, h, w)
            if (type(self.resp) is BlobHessian and type(self.scale_pyr) is ScalePyramid
                    and not (torch.is_grad_enabled() and (octave.requires_grad or sigmas.requires_grad))):
                # The octave is this detector's own fresh pyramid, read once: its levels are
                # overwritten by their responses (no new 24 MB buffer to fault in per call:
                # 41 -> 27 ms on a doubled 640 x 480).
                r = _hessian_response_into(flat, self.resp.grads_mode, sigmas.reshape(-1), flat)
            else:
                r = self.resp(flat, sigmas.reshape(-1))
            r = r.reshape(b, levels, -1, h, w).transpose(1, 2)
        if r.dim() != 5 or r.shape[1] != 1 or r.shape[-2:] != (h, w):
            raise ShapeError("resp_module", ("B", 1, "L", h, w), tuple(r.shape), f"resp_module: expected one response map per level of the octave's size, got {tuple(r.shape)}")
        return r[:, 0]

    def _dog_fast(self) -> bool:
        # DoG is read straight off the Gaussian levels (block by block for the extrema, by
        # pairs of gathers for the refinement): the (B, L - 1, H, W) difference volume,
        # its absolute value and a copy are never made (about 35 ms on a doubled 640 x 480).
        return self.scale_space_response and type(self.resp) is BlobDoG

    def _candidates(self, src: torch.Tensor, threshold: float, dog: bool) -> tuple[torch.Tensor, ...]:
        """Extrema of the response (``|response|`` if minima count) in levels ``1..n_levels``
        and away from the border, above ``threshold``: ``(b, level, y, x)`` long tensors and
        the response there. ``src`` is the response ``(B, Lr, H, W)``, or with ``dog`` the
        Gaussian levels it is the difference of."""
        top = min(self.n_levels + 2, src.shape[1] - (1 if dog else 0))
        h, w = src.shape[-2:]
        bd = self.border
        rows = max(8, _BLOCK_PIXELS // w) if src.device.type == "cpu" else h
        found = []
        for y0 in range(bd, h - bd, rows):
            y1 = min(y0 + rows, h - bd)
            block = src[:, : top + 1 if dog else top, y0 - 1 : y1 + 1, bd - 1 : w - bd + 1]
            if dog:
                score = torch.sub(block[:, 1:], block[:, :-1])
                if self.minima_are_also_good:
                    score.abs_()
            else:
                score = block.abs() if self.minima_are_also_good else block
            idx = _interior_maxima_333(score, threshold).nonzero()
            idx += idx.new_tensor([0, 1, y0, bd])
            found.append(idx)
        idx = torch.cat(found) if found else torch.zeros((0, 4), dtype=torch.long, device=src.device)
        bi, li, yi, xi = idx.unbind(1)
        flat = src.reshape(src.shape[0], -1)
        at = (li * h + yi) * w + xi
        val = flat[bi, at]
        if dog:
            val = flat[bi, at + h * w] - val
        return bi, li, yi, xi, val

    def _candidates_fixed(
        self, src: torch.Tensor, threshold: float, dog: bool, slots: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`_candidates` then :func:`_preselect` with fixed shapes (``torch.compile``,
        ``torch.export``): the ``slots`` strongest extrema of each image by a ``topk`` over
        the whole octave, as ``(B, S)`` mask and level, row, column (``S = min(slots,
        voxels)``); ties may come in another order than the eager path's."""
        top = min(self.n_levels + 2, src.shape[1] - (1 if dog else 0))
        h, w = src.shape[-2:]
        bd = self.border
        block = src[:, : top + 1 if dog else top, bd - 1 : h - bd + 1, bd - 1 : w - bd + 1]
        score = block[:, 1:] - block[:, :-1] if dog else block
        if self.minima_are_also_good:
            score = score.abs()
        keep = _interior_maxima_333(score, threshold)  # (B, top - 2, h - 2 bd, w - 2 bd)
        centre = score[:, 1:-1, 1:-1, 1:-1]
        rank = torch.where(keep, centre, torch.full((), -math.inf, dtype=centre.dtype, device=centre.device)).flatten(1)
        value, index = rank.topk(min(slots, rank.shape[1]), dim=1)
        hh, ww = keep.shape[-2:]
        li = index // (hh * ww) + 1
        yi = index // ww % hh + bd
        xi = index % ww + bd
        valid = value > -math.inf
        # Empty slots read a harmless voxel (their results are masked), as in _detect.
        li = torch.where(valid, li, torch.ones_like(li))
        yi = torch.where(valid, yi, torch.full_like(yi, bd))
        xi = torch.where(valid, xi, torch.full_like(xi, bd))
        return valid, (li, yi, xi)

    def _detect(self, img: torch.Tensor, num: int, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check(img, mask)
        b = img.shape[0]
        wide = torch.promote_types(img.dtype, torch.float32)
        if b == 0:
            return img.new_zeros(0, num), img.new_zeros((0, num, 2, 3), dtype=wide), torch.zeros(0, num, dtype=torch.bool, device=img.device)
        pyramid, sigmas, dists = self.scale_pyr(img)
        prelim = 0.5 * self.contrast_threshold
        dog = self._dog_fast()
        results = []
        for octave, sig, dist in zip(pyramid, sigmas, dists):
            h, w = octave.shape[-2:]
            if min(h, w) < 2 * self.border + 3:
                break
            src = octave[:, 0] if dog else self._responses(octave, sig)
            levels = src.shape[1] - (1 if dog else 0)
            if levels < 3:
                raise ShapeError("scale_pyr_module", "at least 3 response levels per octave", levels, f"scale_pyr_module: expected at least 3 response levels per octave, got {levels}")
            if torch.compiler.is_compiling():
                with torch.no_grad():
                    valid, (li, yi, xi) = self._candidates_fixed(src.detach(), prelim, dog, _PRESELECT * num)
                geom = _Geometry(src.reshape(b, -1), h, w, min(self.n_levels, levels - 2), self.border, dog)
                results.append(self._refine(geom, valid, li, yi, xi, dist[:, :1].to(wide), sig[:, :1].to(wide), wide))
                continue
            with torch.no_grad():
                bi, li, yi, xi, val = self._candidates(src.detach(), prelim, dog)
                score = val.abs() if self.minima_are_also_good else val
                # A grid as wide as the image with the most candidates, at most a multiple of num.
                counts = torch.bincount(bi, minlength=b)
                slots = min(_PRESELECT * num, int(counts.max()))
            if slots == 0:
                continue
            valid, (li, yi, xi) = _preselect(bi, (li, yi, xi), score, b, slots)
            # Empty slots read a harmless voxel (their results are masked).
            li = torch.where(valid, li, torch.ones_like(li))
            yi = torch.where(valid, yi, torch.full_like(yi, self.border))
            xi = torch.where(valid, xi, torch.full_like(xi, self.border))
            geom = _Geometry(src.reshape(b, -1), h, w, min(self.n_levels, levels - 2), self.border, dog)
            results.append(self._refine(geom, valid, li, yi, xi, dist[:, :1].to(wide), sig[:, :1].to(wide), wide))
        if results:
            xy, sigma, response, valid = (torch.cat(t, 1) for t in zip(*results))
        else:
            xy = img.new_zeros((b, 0, 2), dtype=wide)
            sigma = img.new_zeros((b, 0), dtype=wide)
            response = img.new_zeros((b, 0))
            valid = torch.zeros(b, 0, dtype=torch.bool, device=img.device)
        if mask is not None:
            m = mask.expand(b, -1, -1, -1)
            hh, ww = img.shape[-2:]
            px = xy[..., 0].detach().round().long().clamp(0, ww - 1)
            py = xy[..., 1].detach().round().long().clamp(0, hh - 1)
            valid = valid & (m.reshape(b, -1).gather(1, py * ww + px) != 0)
        # The strongest valid detections first; padding after them.
        rank = torch.where(valid, response.detach().to(wide), torch.full((), -math.inf, dtype=wide, device=img.device))
        k = min(num, rank.shape[1])
        order = rank.topk(k, dim=1).indices
        valid = valid.gather(1, order)
        response = response.gather(1, order)
        xy = xy.gather(1, order[..., None].expand(-1, -1, 2))
        sigma = sigma.gather(1, order)
        zero = torch.zeros((), dtype=wide, device=img.device)
        lafs = laf_from_center_scale_ori(
            torch.where(valid[..., None], xy, zero), torch.where(valid, self.mr_size * sigma, zero)[..., None, None]
        )
        response = torch.where(valid, response, torch.zeros((), dtype=response.dtype, device=img.device))
        if k < num:
            pad = num - k
            lafs = torch.cat([lafs, lafs.new_zeros(b, pad, 2, 3)], 1)
            response = torch.cat([response, response.new_zeros(b, pad)], 1)
            valid = torch.cat([valid, valid.new_zeros(b, pad)], 1)
        return response, lafs, valid

    def _refine(
        self, geom: "_Geometry", valid: torch.Tensor, li: torch.Tensor, yi: torch.Tensor, xi: torch.Tensor,
        dist: torch.Tensor, sig0: torch.Tensor, wide: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refine, reject and place one octave's candidates: ``xy (B, S, 2)`` and ``sigma
        (B, S)`` in input pixels, ``response (B, S)``, ``valid (B, S)``."""
        if self.subpix == "quadratic":
            pos, offs, value, d2, ok = _refine_quadratic(geom, li, yi, xi, self.max_iterations)
        else:
            pos = (li, yi, xi)
            ok = torch.ones_like(valid)
            if self.subpix == "soft":
                with torch.no_grad():  # the Hessian only feeds the edge test
                    d2 = _derivatives(geom, li, yi, xi)[2]
                offs, value = _soft_offsets(geom, li, yi, xi, self.temperature)
            else:
                value, _, d2 = _derivatives(geom, li, yi, xi)
                offs = value.new_zeros(li.shape + (3,))
        valid = valid & ok
        response = value.abs() if self.minima_are_also_good else value
        if self.contrast_threshold > 0:
            valid = valid & (response >= self.contrast_threshold)
        if self.edge_threshold is not None:
            dxx, dyy, dxy = d2[..., 0, 0], d2[..., 1, 1], d2[..., 0, 1]
            tr, det = dxx + dyy, dxx * dyy - dxy * dxy
            r = self.edge_threshold
            valid = valid & (det > 0) & (tr * tr * r < (r + 1) ** 2 * det)
        l, y, x = pos
        offs = offs.to(wide)
        xy = torch.stack([x.to(wide) + offs[..., 2], y.to(wide) + offs[..., 1]], -1) * dist[..., None]
        sigma = sig0 * torch.exp2((l.to(wide) + offs[..., 0]) / self.n_levels) * dist
        return xy, sigma, response, valid


def _preselect(
    bi: torch.Tensor, fields: tuple[torch.Tensor, ...], val: torch.Tensor, batch: int, slots: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The ``slots`` strongest candidates of each image as ``(B, slots)`` tensors, with a mask."""
    device = bi.device
    order = val.argsort(descending=True, stable=True)
    order = order[bi[order].argsort(stable=True)]
    bs = bi[order]
    counts = torch.bincount(bs, minlength=batch)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(bs.numel(), device=device) - starts[bs]
    take = rank < slots
    sel, row, col = order[take], bs[take], rank[take]
    valid = torch.zeros(batch, slots, dtype=torch.bool, device=device)
    valid[row, col] = True
    out = []
    for f in fields:
        g = torch.zeros(batch, slots, dtype=f.dtype, device=device)
        g[row, col] = f[sel]
        out.append(g)
    return valid, tuple(out)


class _Geometry:
    """Gathers of an octave's response at (level, y, x): from the response ``(B, Lr H W)``,
    or with ``dog`` as differences of consecutive Gaussian levels ``(B, L H W)``."""

    def __init__(self, flat: torch.Tensor, h: int, w: int, top: int, border: int, dog: bool) -> None:
        self.flat, self.h, self.w, self.top, self.border, self.dog = flat, h, w, top, border, dog

    def gather(self, l: torch.Tensor, y: torch.Tensor, x: torch.Tensor, stencil: list[tuple[int, int, int]]) -> torch.Tensor:
        """``(B, S, len(stencil))`` response values around each candidate."""
        plane = self.h * self.w
        st = torch.tensor([ds * plane + dy * self.w + dx for ds, dy, dx in stencil], device=l.device)
        b, s = l.shape
        idx = ((l * plane + y * self.w + x)[..., None] + st).reshape(b, -1)
        v = self.flat.gather(1, idx)
        if self.dog:
            v = self.flat.gather(1, idx + plane) - v
        return v.reshape(b, s, len(stencil))

    def inside(self, l: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bd = self.border
        return (l >= 1) & (l <= self.top) & (y >= bd) & (y < self.h - bd) & (x >= bd) & (x < self.w - bd)


def _derivative_matrix() -> list[list[float]]:
    """``(19, 10)``: the stencil's values to (value, dx, dy, ds, dxx, dxy, dxs, dyy, dys, dss)."""
    rows = [[0.0] * 10 for _ in _STENCIL]
    at = {o: i for i, o in enumerate(_STENCIL)}

    def put(col: int, terms: list[tuple[tuple[int, int, int], float]]) -> None:
        for o, coef in terms:
            rows[at[o]][col] += coef

    put(0, [((0, 0, 0), 1.0)])
    put(1, [((0, 0, 1), 0.5), ((0, 0, -1), -0.5)])
    put(2, [((0, 1, 0), 0.5), ((0, -1, 0), -0.5)])
    put(3, [((1, 0, 0), 0.5), ((-1, 0, 0), -0.5)])
    put(4, [((0, 0, 1), 1.0), ((0, 0, -1), 1.0), ((0, 0, 0), -2.0)])
    put(5, [((0, 1, 1), 0.25), ((0, 1, -1), -0.25), ((0, -1, 1), -0.25), ((0, -1, -1), 0.25)])
    put(6, [((1, 0, 1), 0.25), ((1, 0, -1), -0.25), ((-1, 0, 1), -0.25), ((-1, 0, -1), 0.25)])
    put(7, [((0, 1, 0), 1.0), ((0, -1, 0), 1.0), ((0, 0, 0), -2.0)])
    put(8, [((1, 1, 0), 0.25), ((1, -1, 0), -0.25), ((-1, 1, 0), -0.25), ((-1, -1, 0), 0.25)])
    put(9, [((1, 0, 0), 1.0), ((-1, 0, 0), 1.0), ((0, 0, 0), -2.0)])
    return rows


_DERIVATIVES = _derivative_matrix()
# Columns of the derivative vector that fill the symmetric 3x3 Hessian in (x, y, s).
_HESSIAN_INDEX = [4, 5, 6, 5, 7, 8, 6, 8, 9]


def _derivatives(geom: _Geometry, l: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value ``(B, S)``, gradient ``(B, S, 3)`` and Hessian ``(B, S, 3, 3)`` in (x, y, s) by
    central differences, as OpenCV's ``adjustLocalExtrema`` (one product with a constant
    matrix: the refinement is many small steps, where each operator call counts)."""
    v = geom.gather(l, y, x, _STENCIL)
    d = v @ torch.tensor(_DERIVATIVES, dtype=v.dtype, device=v.device)
    hess = d[..., _HESSIAN_INDEX].unflatten(-1, (3, 3))
    return d[..., 0], d[..., 1:4], hess


def _solve3(hess: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``-H^{-1} g`` by the adjugate, and where ``H`` is invertible (elsewhere the offset is
    zero). ``H`` and ``g`` are to be scaled to order one (the offset does not depend on the
    scale): a Hessian response's derivatives are ~1e-6, whose 3x3 determinant would
    overflow the float32 gradient of the inverse."""
    a, b_, c = hess[..., 0, 0], hess[..., 0, 1], hess[..., 0, 2]
    d, e, f = hess[..., 1, 1], hess[..., 1, 2], hess[..., 2, 2]
    c00, c01, c02 = d * f - e * e, c * e - b_ * f, b_ * e - c * d
    c11, c12, c22 = a * f - c * c, b_ * c - a * e, a * d - b_ * b_
    det = a * c00 + b_ * c01 + c * c02
    ok = det.abs() > torch.finfo(det.dtype).eps ** 2
    inv_det = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
    gx, gy, gs = g[..., 0], g[..., 1], g[..., 2]
    ox = -(c00 * gx + c01 * gy + c02 * gs) * inv_det
    oy = -(c01 * gx + c11 * gy + c12 * gs) * inv_det
    os_ = -(c02 * gx + c12 * gy + c22 * gs) * inv_det
    return torch.stack([ox, oy, os_], -1), ok


def _newton_step(geom: _Geometry, l: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Value, gradient, Hessian, offset ``-H^{-1} g`` (x, y, s) and invertibility at each voxel."""
    c, g, hess = _derivatives(geom, l, y, x)
    # The offset is homogeneous of degree 0 in the values: scaling by a detached |c| is exact, gradients included.
    norm = torch.where(c.detach() != 0, c.detach().abs(), torch.ones_like(c)).reciprocal()[..., None]
    off, invertible = _solve3(hess * norm[..., None], g * norm)
    return c, g, hess, off, invertible


def _refine_quadratic(
    geom: _Geometry, l: torch.Tensor, y: torch.Tensor, x: torch.Tensor, iterations: int
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lowe's iterative refinement, all candidates at once (masked steps).

    Returns the final voxel ``(l, y, x)``, the offset ``(B, S, 3)`` in (s, y, x) order,
    the interpolated value ``D + g.offset / 2``, the spatial Hessian ``(B, S, 2, 2)`` and
    the mask of candidates that settled (offset below 0.5 on every axis) inside the
    searched levels and the border. The search runs without autograd; the fit at the
    final voxel is then made once more with it, so a backward pass scatters into the
    response once (not once per step).
    """
    with torch.no_grad():
        done = torch.zeros_like(l, dtype=torch.bool)
        ok = torch.ones_like(done)
        for step_index in range(iterations):
            # Most candidates settle in one or two steps; stop when none is left moving (a
            # host sync, like the candidate extraction's).
            # (Under torch.compile / torch.export every step runs: no host sync in a graph.)
            if step_index > 0 and not torch.compiler.is_compiling() and not bool((ok & ~done).any()):
                break
            off, invertible = _newton_step(geom, l, y, x)[3:]
            ok &= invertible | done
            done |= (off.abs() < 0.5).all(-1)
            # Move the others by the rounded offset (OpenCV); drop those that leave the search volume.
            step = torch.where(done[..., None], torch.zeros_like(off), off).clamp(-4, 4).round().long()
            nx, ny, nl = x + step[..., 0], y + step[..., 1], l + step[..., 2]
            inside = geom.inside(nl, ny, nx)
            ok &= inside | done
            x = torch.where(inside, nx, x)
            y = torch.where(inside, ny, y)
            l = torch.where(inside, nl, l)
        ok &= done
    c, g, hess, off, invertible = _newton_step(geom, l, y, x)
    value = c + 0.5 * (g * off).sum(-1)
    return (l, y, x), off[..., [2, 1, 0]], value, hess[..., :2, :2], ok & invertible


def _soft_offsets(
    geom: _Geometry, l: torch.Tensor, y: torch.Tensor, x: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft arg-max over the 3x3x3 window (sign-aware: a minimum is a soft arg-min):
    offsets ``(B, S, 3)`` in (s, y, x) and the soft-max-weighted value."""
    v = geom.gather(l, y, x, _CUBE)
    centre = v[..., _CUBE.index((0, 0, 0))]
    sign = torch.where(centre.detach() < 0, -1.0, 1.0).to(v.dtype)
    scale = (temperature * centre.abs()).clamp_min(torch.finfo(v.dtype).tiny)
    weights = torch.softmax(v * (sign / scale)[..., None], dim=-1)
    cube = torch.tensor(_CUBE, dtype=v.dtype, device=v.device)
    return weights @ cube, (weights * v).sum(-1)
