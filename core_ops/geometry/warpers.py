"""Warpers: sample an image along a homography (``homography_warp``, ``HomographyWarper``)
or along the reprojection of a depth map into another calibrated view (``depth_warp``,
``DepthWarper``).

Convention (``DESIGN.md``):
    Pixel coordinates ``(x, y)`` have integer values at pixel centres; normalised
    coordinates span ``[-1, 1]`` from image *edge* to edge (``grid_sample``'s
    ``align_corners=False``): ``u = (2 x + 1) / W - 1``. Every sampling here is
    ``grid_sample(..., align_corners=False)`` on a grid in that frame; the
    ``align_corners`` arguments are kept for Kornia's signatures and change nothing (as
    in :func:`~core_ops.geometry.imgwarp.warp_perspective`).

Degenerate positions:
    A destination pixel whose source position is undefined (a homography sending it to
    the line at infinity, a 3-D point at or behind the source camera, non-finite input)
    is sampled as 0 whatever the padding mode, with zero gradient. A coordinate of a
    defined position more than ``1000`` normalised units (500 image sizes) outside the
    image is clamped to ``-1000`` or ``1000``, so that the padding still sees the right
    side of the image and neither the grid nor its gradient overflows. Nothing is
    checked on the host: no ``.item()``, no device synchronisation.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from gradcv.core_ops._checks import check_choice, check_floating, check_image, check_shape
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DeviceError, ShapeError
from gradcv.core_ops.geometry._sampler import sample_bilinear
from gradcv.core_ops.geometry.camera import PinholeCamera, _embed, _inverse3x3
from gradcv.core_ops.geometry.coordinates import normalize_homography
from gradcv.core_ops.geometry.imgwarp import power_of_two_exponent, warp_perspective
from gradcv.core_ops.geometry.linalg import compose_transformations, inverse_transformation

__all__ = ["DepthWarper", "HomographyWarper", "depth_warp", "homography_warp"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")
# Farthest a sampling position may lie outside the image, in normalised units.
_BIG = 1e3


# ------------------------------------------------------------------------- checks
def _check_options(mode: object, padding_mode: object, align_corners: object) -> None:
    check_choice(mode, MODES, "mode")
    check_choice(padding_mode, PADDING_MODES, "padding_mode")
    if not isinstance(align_corners, bool):
        raise ArgumentTypeError(
            "align_corners", bool, type(align_corners), f"align_corners: expected a bool, got {type(align_corners).__name__}"
        )


def _check_size(value: object, name: str, *, allow_zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(name, int, type(value), f"{name}: expected an int, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        what = f"a {'non-negative' if allow_zero else 'positive'} size"
        raise ArgumentValueError(name, what, value, f"{name}: expected {what}, got {value}")
    return value


def _check_dsize(dsize: object) -> tuple[int, int]:
    if not (isinstance(dsize, (tuple, list, torch.Size)) and len(dsize) == 2):
        what = "a (height, width) pair of ints"
        raise ArgumentTypeError("dsize", what, dsize, f"dsize: expected {what}, got {dsize!r}")
    return _check_size(dsize[0], "dsize[0]", allow_zero=True), _check_size(dsize[1], "dsize[1]", allow_zero=True)


def _check_matrix(x: object, size: int, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """A floating ``(B, size, size)`` matrix batch with ``B`` 1 or that of ``like``, on its device."""
    check_shape(x, ["B", size, size], name)
    assert isinstance(x, torch.Tensor)
    check_floating(x, name)
    if x.shape[0] not in (1, like.shape[0]):
        raise ShapeError(
            name, (f"1 or {like.shape[0]}", size, size), tuple(x.shape),
            f"{name}: expected batch size 1 or {like.shape[0]} (that of {like_name}), got {x.shape[0]}",
        )
    if x.device != like.device:
        raise DeviceError(
            name, like.device, x.device, f"{name}: expected a tensor on {like.device} (the device of {like_name}), got {x.device}"
        )
    return x


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Geometry runs in the widest floating dtype of the inputs, at least float32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


# --------------------------------------------------------------------- sampling
def _sample(
    image: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str, defined: torch.Tensor
) -> torch.Tensor:
    """``grid_sample`` (``align_corners=False``) of ``image`` at ``grid (B|1, h, w, 2)``,
    with 0 where ``defined (B|1, 1, h, w)`` is false whatever the padding."""
    out_dtype = image.dtype
    if image.device.type == "cpu" and image.dtype in (torch.float16, torch.bfloat16):
        # CPU grid_sample in half precision is wrong from ~128 px up; sample in float32.
        image = image.float()
    if grid.shape[0] != image.shape[0]:
        grid = grid.expand(image.shape[0], -1, -1, -1)
    if mode == "bilinear":
        # grid_sample's own unnormalisation, in the grid's dtype; then the pixel-coordinate sampler
        size = grid.new_tensor([image.shape[-1], image.shape[-2]])
        out = sample_bilinear(image, (((grid + 1) * size - 1) / 2).to(image.dtype), padding_mode)
    else:
        out = nn.functional.grid_sample(image, grid.to(image.dtype), mode=mode, padding_mode=padding_mode, align_corners=False)
    if padding_mode != "zeros":
        # Undefined positions sit far outside: zero padding gives them 0 already, the others must be blanked.
        out = out * defined.to(out.dtype)
    return out.to(out_dtype)


def _project(num: torch.Tensor, den: torch.Tensor, den_ok: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num / den`` with the rules of the module docstring: ``(positions, defined)``.

    ``num``: the two numerators, ``den``: the denominator (size 1 along ``dim``),
    ``den_ok``: where the denominator defines a position. A coordinate farther than
    ``_BIG`` goes to ``sign * _BIG`` (a constant: zero gradient), undefined positions to
    ``_BIG``. The division only sees ``|den| >= |num| / _BIG``, so its gradient is finite.
    """
    finite = torch.isfinite(num).all(dim, keepdim=True) & torch.isfinite(den)
    defined = finite & den_ok
    near = defined & (num.abs() <= _BIG * den.abs())
    safe = torch.where(near, den, torch.ones_like(den))
    far = torch.where(defined, torch.sign(num) * torch.sign(den) * _BIG, torch.full_like(num, _BIG))
    return torch.where(near, num / safe, far), defined


# ----------------------------------------------------------------- homographies
def _build_base_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(1, h, w, 2)`` normalised coordinates ``(u, v)`` of the pixel centres, correctly rounded.

    ``grid_sample`` turns ``u`` back into pixels as ``((u + 1) W - 1) / 2`` in the grid's
    dtype, which resolves positions only to ``W * 2**-24`` pixels in float32 however ``u``
    is rounded: a float32 identity warp is exact for power-of-two sizes and within
    ``W * 2**-25`` pixels otherwise (float64: ``1e-13``).
    """
    with torch.inference_mode(False):  # a cached tensor must be usable by autograd later
        work = torch.float32 if device.type == "mps" else torch.float64
        us = ((2 * torch.arange(width, device=device, dtype=work) + 1) / width - 1).to(dtype)
        vs = ((2 * torch.arange(height, device=device, dtype=work) + 1) / height - 1).to(dtype)
        return torch.stack(torch.meshgrid(us, vs, indexing="xy"), -1)[None]


_cached_base_grid = functools.lru_cache(maxsize=16)(_build_base_grid)


def _base_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`_build_base_grid`, built once per ``(size, device, dtype)`` and reused.

    While torch.compile traces, the cache steps aside (Dynamo warns on ``lru_cache``); the
    compiled graph holds the grid as a constant anyway.
    """
    if torch.compiler.is_compiling():
        return _build_base_grid(height, width, device, dtype)
    return _cached_base_grid(height, width, device, dtype)


def _homography_grid(src_homo_dst: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grid ``(B, h, w, 2)`` and defined mask ``(B, 1, h, w)`` for normalised
    ``src_homo_dst (B, 3, 3)`` over the base grid ``(1, h, w, 2)`` (same dtype)."""
    # A homography is defined up to scale: an exact power of two brings its largest entry
    # into [0.5, 1), so that the threshold on the denominator below is scale-free.
    exponent = power_of_two_exponent(src_homo_dst.detach().abs().amax(dim=(-2, -1), keepdim=True))
    H = src_homo_dst * torch.exp2(-exponent.to(src_homo_dst.dtype))
    # (1, h, w, 2) @ (B, 1, 2, 3) -> (B, h, w, 3): H (u, v, 1) per pixel.
    n = base @ H[:, None, :, :2].transpose(-1, -2) + H[:, None, None, :, 2]
    den = n[..., 2:]
    grid, defined = _project(n[..., :2], den, den.abs() > torch.finfo(den.dtype).tiny ** 0.5, dim=-1)
    return grid, defined.permute(0, 3, 1, 2)


def _to_normalised(src_homo_dst: torch.Tensor, dsize: tuple[int, int], src_size: tuple[int, int]) -> torch.Tensor:
    """A pixel homography from the ``dsize`` output to the source, in normalised coordinates."""
    return normalize_homography(src_homo_dst, dsize, src_size)


def homography_warp(
    patch_src: torch.Tensor,
    src_homo_dst: torch.Tensor,
    dsize: tuple[int, int],
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    normalized_coordinates: bool = True,
    normalized_homography: bool = True,
) -> torch.Tensor:
    """Warp images by homographies taking destination points to source points.

    ``out(p) = patch_src(src_homo_dst p)`` for every pixel ``p`` of the ``dsize`` output.
    The normalised pixel-centre grid of each output size is built once and reused.

    Args:
        patch_src: images ``(B, C, H, W)``.
        src_homo_dst: ``(B, 3, 3)`` (or ``(1, 3, 3)`` for the whole batch) homographies
            from destination to source, any floating dtype.
        dsize: output size ``(h, w)``.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'`` (``grid_sample``'s,
            about the image edge).
        align_corners: kept for Kornia's signature; no effect (see the module docstring).
        normalized_coordinates: ``src_homo_dst`` acts on normalised coordinates (default)
            or, if false, on pixel coordinates (output pixel to source pixel).
        normalized_homography: if false, ``src_homo_dst`` is instead a *source to
            destination* pixel homography and the call is
            :func:`~core_ops.geometry.imgwarp.warp_perspective` (as Kornia 0.9).

    Returns:
        ``(B, C, h, w)`` in the dtype of ``patch_src``.

    Convention:
        Normalised coordinates span ``[-1, 1]`` edge to edge on both images (the output's
        for the destination side, the patch's for the source side), so a normalised
        homography means the same warp at every pyramid level; this is Kornia 0.9's
        meaning with ``align_corners=False``. Pixel homographies have pixel centres at
        integers. Degenerate positions as in the module docstring.

    Example:
        >>> img = torch.arange(12.0).view(1, 1, 3, 4)
        >>> shift = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # +1 px in x
        >>> homography_warp(img, shift, (3, 4))[0, 0, 0]
        tensor([1., 2., 3., 0.])
    """
    check_image(patch_src, "patch_src")
    H = _check_matrix(src_homo_dst, 3, "src_homo_dst", patch_src, "patch_src")
    dsize = _check_dsize(dsize)
    _check_options(mode, padding_mode, align_corners)
    if not normalized_homography:
        return warp_perspective(patch_src, H, dsize, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    work = _work_dtype(patch_src, H)
    H = H.to(work)
    if not normalized_coordinates:
        H = _to_normalised(H, dsize, (patch_src.shape[-2], patch_src.shape[-1]))
    grid, defined = _homography_grid(H, _base_grid(dsize[0], dsize[1], patch_src.device, work))
    return _sample(patch_src, grid, mode, padding_mode, defined)


class HomographyWarper(nn.Module):
    """Warp images by homographies onto a fixed ``height x width`` grid (Kornia's layer).

    Args:
        height: output height.
        width: output width.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'``.
        normalized_coordinates: homographies act on normalised (default) or pixel
            coordinates, as in :func:`homography_warp`.
        align_corners: kept for Kornia's signature; no effect.

    The normalised coordinates of the output pixel centres, ``(1, height, width, 2)``, are
    built once per device and dtype and shared with :func:`homography_warp` (a cache, not a
    buffer: a buffer converted by ``.double()`` would keep float32 rounding);
    :meth:`precompute_warp_grid` stores the sampling grid of a homography for repeated warps.

    Convention:
        As :func:`homography_warp`: ``src_homo_dst`` maps destination to source, ``[-1, 1]``
        edge to edge. Kornia's ``grid`` holds pixel coordinates when
        ``normalized_coordinates=False``; here :attr:`grid` is always normalised.

    Example:
        >>> warper = HomographyWarper(3, 4)
        >>> img = torch.rand(2, 3, 3, 4)
        >>> torch.equal(warper(img, torch.eye(3)[None]), img)
        True
    """

    def __init__(
        self,
        height: int,
        width: int,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        normalized_coordinates: bool = True,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.height = _check_size(height, "height", allow_zero=False)
        self.width = _check_size(width, "width", allow_zero=False)
        _check_options(mode, padding_mode, align_corners)
        if not isinstance(normalized_coordinates, bool):
            raise ArgumentTypeError(
                "normalized_coordinates", bool, type(normalized_coordinates),
                f"normalized_coordinates: expected a bool, got {type(normalized_coordinates).__name__}",
            )
        self.mode = mode
        self.padding_mode = padding_mode
        self.normalized_coordinates = normalized_coordinates
        self.align_corners = align_corners
        self._warped_grid: torch.Tensor | None = None
        self._warped_defined: torch.Tensor | None = None
        self._pixel_homography: torch.Tensor | None = None

    @property
    def grid(self) -> torch.Tensor:
        """``(1, height, width, 2)`` normalised output pixel centres (CPU, default dtype), as Kornia's attribute."""
        return _base_grid(self.height, self.width, torch.device("cpu"), torch.get_default_dtype())

    def _grid_and_mask(self, H: torch.Tensor, src_size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        work = _work_dtype(H)
        H = H.to(work)
        if src_size is not None:
            H = _to_normalised(H, (self.height, self.width), src_size)
        return _homography_grid(H, _base_grid(self.height, self.width, H.device, work))

    def precompute_warp_grid(self, src_homo_dst: torch.Tensor) -> None:
        """Store the sampling grid of ``src_homo_dst`` (``(B, 3, 3)``) for :meth:`forward` without one.

        With ``normalized_coordinates=False`` the source size, which the normalised grid
        needs, is known only in :meth:`forward`: the homography is stored and the grid
        finished there.
        """
        check_shape(src_homo_dst, ["B", 3, 3], "src_homo_dst")
        assert isinstance(src_homo_dst, torch.Tensor)
        check_floating(src_homo_dst, "src_homo_dst")
        if self.normalized_coordinates:
            self._warped_grid, self._warped_defined = self._grid_and_mask(src_homo_dst, None)
            self._pixel_homography = None
        else:
            self._warped_grid = self._warped_defined = None
            self._pixel_homography = src_homo_dst

    def forward(self, patch_src: torch.Tensor, src_homo_dst: torch.Tensor | None = None) -> torch.Tensor:
        """Warp ``patch_src (B, C, H, W)`` by ``src_homo_dst`` or by the precomputed grid.

        Returns:
            ``(B, C, height, width)``.

        Raises:
            RuntimeError: no homography given and none precomputed (as Kornia).
        """
        check_image(patch_src, "patch_src")
        src_size = None if self.normalized_coordinates else (patch_src.shape[-2], patch_src.shape[-1])
        if src_homo_dst is not None:
            H = _check_matrix(src_homo_dst, 3, "src_homo_dst", patch_src, "patch_src")
            grid, defined = self._grid_and_mask(H, src_size)
        elif self._pixel_homography is not None:
            H = _check_matrix(self._pixel_homography, 3, "precomputed homography", patch_src, "patch_src")
            grid, defined = self._grid_and_mask(H, src_size)
        elif self._warped_grid is not None and self._warped_defined is not None:
            grid, defined = self._warped_grid, self._warped_defined
            if grid.shape[0] not in (1, patch_src.shape[0]):
                raise ShapeError(
                    "patch_src", (grid.shape[0], "C", "H", "W"), tuple(patch_src.shape),
                    f"patch_src: expected batch size {grid.shape[0]} (that of the precomputed homographies), "
                    f"got {patch_src.shape[0]}",
                )
            if grid.device != patch_src.device:
                raise DeviceError(
                    "patch_src", grid.device, patch_src.device,
                    f"patch_src: expected a tensor on {grid.device} (the device of the precomputed grid), "
                    f"got {patch_src.device}",
                )
        else:
            raise RuntimeError(
                "Unknown warping. If homographies are not provided they must be preset using the method: "
                "precompute_warp_grid()."
            )
        return _sample(patch_src, grid, self.mode, self.padding_mode, defined)


# ------------------------------------------------------------------------ depth
def _depth_grid(
    depth: torch.Tensor, M: torch.Tensor, b: torch.Tensor, src_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each reference pixel lands in the source image.

    ``depth (B, 1, H, W)``; ``M = K_src R K_ref^-1 (B|1, 3, 3)`` and ``b = K_src t
    (B|1, 3)`` take a reference pixel ``p`` at depth ``z`` to ``z M p + b``, homogeneous
    source pixels whose third entry is the source-camera depth. Returns the grid
    ``(B, H, W, 2)`` normalised to the source image, ``defined`` (in front of the source
    camera) and ``valid`` (also inside the source image), both ``(B, 1, H, W)``.
    """
    hs, ws = src_size
    # Rows of N_src @ [M | b], N_src taking source pixels to [-1, 1] edge to edge.
    Mb = torch.cat((M, b[..., None]), -1)
    r0, r1, r2 = Mb[:, 0], Mb[:, 1], Mb[:, 2]
    A = torch.stack((r0 * (2.0 / ws) + r2 * (1.0 / ws - 1.0), r1 * (2.0 / hs) + r2 * (1.0 / hs - 1.0), r2), 1)
    h, w = depth.shape[-2:]
    xs = torch.arange(w, device=depth.device, dtype=A.dtype)
    ys = torch.arange(h, device=depth.device, dtype=A.dtype)
    # M p = M[:, 0] x + (M[:, 1] y + M[:, 2]): two small vectors, summed by broadcasting.
    ray_x = A[:, :, 0:1] * xs  # (B, 3, w)
    ray_y = torch.addcmul(A[:, :, 2:3], A[:, :, 1:2], ys)  # (B, 3, h)
    n = depth * (ray_x[:, :, None, :] + ray_y[:, :, :, None]) + A[:, :, 3, None, None]  # (B, 3, H, W)
    z = n[:, 2:3]
    grid, defined = _project(n[:, :2], z, z > torch.finfo(z.dtype).tiny ** 0.5, dim=1)
    valid = defined & (grid.abs() <= 1).all(1, keepdim=True)
    return grid.permute(0, 2, 3, 1), defined, valid


def depth_warp(
    image_src: torch.Tensor,
    depth_ref: torch.Tensor,
    K_ref: torch.Tensor,
    K_src: torch.Tensor,
    src_T_ref: torch.Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp a source view into the reference view, given the reference depth.

    Each reference pixel ``p`` is lifted to ``X = depth_ref(p) K_ref^-1 (x, y, 1)`` in the
    reference camera frame, moved to the source camera frame ``X' = R X + t``
    (``src_T_ref = [[R, t], [0, 1]]``) and projected with ``K_src``; the output samples
    ``image_src`` there. Vectorised over the batch and the pixels, differentiable with
    respect to the image, the depth, both camera matrices and the pose.

    Kornia's ``depth_warp`` has this name but other arguments (two ``PinholeCamera``
    objects, the depth, a patch and the output size): :class:`DepthWarper` keeps that
    two-step API. This function takes plain tensors, the form a batched depth solver
    optimises and differentiates through.

    Args:
        image_src: ``(B, C, Hs, Ws)`` source images.
        depth_ref: ``(B, 1, H, W)`` depth (camera-frame ``z``) of each reference pixel.
        K_ref: ``(B, 3, 3)`` or ``(1, 3, 3)`` reference camera matrices.
        K_src: ``(B, 3, 3)`` or ``(1, 3, 3)`` source camera matrices (last row ``0, 0, 1``).
        src_T_ref: ``(B, 4, 4)`` or ``(1, 4, 4)`` rigid transforms from the reference
            camera frame to the source camera frame (``E_src @ E_ref^-1`` for
            world-to-camera extrinsics).
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'``.
        align_corners: kept for Kornia's signature; no effect.

    Returns:
        ``(warped, valid)``: ``(B, C, H, W)`` in the dtype of ``image_src``, and a
        ``(B, 1, H, W)`` bool mask of the reference pixels whose point lies in front of
        the source camera (``z' > 0``) and projects inside the source image
        (``[-0.5, Ws - 0.5] x [-0.5, Hs - 0.5]``, edge to edge). Pixels behind the source
        camera are 0 in ``warped`` whatever the padding. With zero padding the half-pixel
        rim of the image blends with the padding: erode ``valid`` or use ``'border'`` if
        that matters.

    Convention:
        Pixel centres at integers in both images; camera frames x right, y down, z
        forward. Geometry runs in float64 for float64 inputs and float32 otherwise.
        Degenerate positions as in the module docstring. Kornia's
        ``depth_warp(pinhole_dst, pinhole_src, depth_src, patch_dst, height, width)`` is
        :class:`DepthWarper` in one call; this one takes plain tensors (what a solver
        optimises) and also returns the validity mask.

    Example:
        >>> K = torch.tensor([[[4.0, 0.0, 2.5], [0.0, 4.0, 1.5], [0.0, 0.0, 1.0]]])
        >>> T = torch.eye(4)[None]
        >>> T[0, 0, 3] = 0.5  # the source camera sits 0.5 to the left: points move right
        >>> img = torch.arange(24.0).view(1, 1, 4, 6)
        >>> warped, valid = depth_warp(img, torch.full((1, 1, 4, 6), 2.0), K, K, T)
        >>> warped[0, 0, 0], valid[0, 0, 0]  # x + 4 * 0.5 / 2 = x + 1
        (tensor([1., 2., 3., 4., 5., 0.]), tensor([ True,  True,  True,  True,  True, False]))
    """
    check_image(image_src, "image_src")
    check_image(depth_ref, "depth_ref", channels=1)
    if depth_ref.shape[0] != image_src.shape[0]:
        raise ShapeError(
            "depth_ref", (image_src.shape[0], 1, "H", "W"), tuple(depth_ref.shape),
            f"depth_ref: expected batch size {image_src.shape[0]} (that of image_src), got {depth_ref.shape[0]}",
        )
    if depth_ref.device != image_src.device:
        raise DeviceError(
            "depth_ref", image_src.device, depth_ref.device,
            f"depth_ref: expected a tensor on {image_src.device}, got {depth_ref.device}",
        )
    K_ref = _check_matrix(K_ref, 3, "K_ref", image_src, "image_src")
    K_src = _check_matrix(K_src, 3, "K_src", image_src, "image_src")
    src_T_ref = _check_matrix(src_T_ref, 4, "src_T_ref", image_src, "image_src")
    _check_options(mode, padding_mode, align_corners)
    work = _work_dtype(depth_ref, K_ref, K_src, src_T_ref)
    K_src = K_src.to(work)
    M = K_src @ src_T_ref[:, :3, :3].to(work) @ _inverse3x3(K_ref.to(work))
    b = (K_src @ src_T_ref[:, :3, 3:].to(work))[..., 0]
    grid, defined, valid = _depth_grid(depth_ref.to(work), M, b, (image_src.shape[-2], image_src.shape[-1]))
    return _sample(image_src, grid, mode, padding_mode, defined), valid


class DepthWarper(nn.Module):
    """Warp a view into another by depth, with Kornia's two-step API.

    Kornia's names: the *depth* lives in the ``src`` camera (the reference view of
    :func:`depth_warp`), the *image* in the ``dst`` camera (the source view of
    :func:`depth_warp`). :meth:`compute_projection_matrix` takes the depth's camera and
    stores ``K_dst E_dst E_src^-1``; :meth:`forward` samples ``patch_dst`` where the
    depth's points project.

    Args:
        pinhole_dst: :class:`~core_ops.geometry.camera.PinholeCamera` of the image to warp.
        height: height of the image to warp (``patch_dst``).
        width: width of the image to warp.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'``.
        align_corners: kept for Kornia's signature; no effect (Kornia's default is ``True``;
            both give the same image here, as in Kornia for any padding but reflection).

    Convention:
        As :func:`depth_warp`: pixel centres at integers, world-to-camera extrinsics,
        :meth:`warp_grid` in ``[-1, 1]`` edge-to-edge coordinates of the ``height x width``
        image to warp (Kornia's are corner-aligned, to match its ``align_corners=True``;
        the sampled image is the same). The depth map may have another size than the image.

    Example:
        >>> K = torch.tensor([[[4.0, 0.0, 2.5, 0.0], [0.0, 4.0, 1.5, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
        >>> E_src = torch.eye(4)[None]
        >>> E_dst = torch.eye(4)[None]
        >>> E_dst[0, 0, 3] = 0.5
        >>> size = torch.tensor([4.0]), torch.tensor([6.0])
        >>> warper = DepthWarper(PinholeCamera(K, E_dst, *size), 4, 6)
        >>> _ = warper.compute_projection_matrix(PinholeCamera(K, E_src, *size))
        >>> warper(torch.full((1, 1, 4, 6), 2.0), torch.arange(24.0).view(1, 1, 4, 6))[0, 0, 0]
        tensor([1., 2., 3., 4., 5., 0.])
    """

    def __init__(
        self,
        pinhole_dst: PinholeCamera,
        height: int,
        width: int,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(pinhole_dst, PinholeCamera):
            raise ArgumentTypeError(
                "pinhole_dst", PinholeCamera, type(pinhole_dst), f"pinhole_dst: expected a PinholeCamera, got {type(pinhole_dst).__name__}"
            )
        self.height = _check_size(height, "height", allow_zero=False)
        self.width = _check_size(width, "width", allow_zero=False)
        _check_options(mode, padding_mode, align_corners)
        self.mode = mode
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self._pinhole_dst = pinhole_dst
        self._pinhole_src: PinholeCamera | None = None
        self._dst_proj_src: torch.Tensor | None = None

    def compute_projection_matrix(self, pinhole_src: PinholeCamera) -> DepthWarper:
        """Store ``dst_proj_src = [[K_dst, 0], [0, 1]] @ E_dst @ E_src^-1`` ``(B, 4, 4)``; returns ``self``."""
        if not isinstance(pinhole_src, PinholeCamera):
            raise ArgumentTypeError(
                "pinhole_src", PinholeCamera, type(pinhole_src), f"pinhole_src: expected a PinholeCamera, got {type(pinhole_src).__name__}"
            )
        src_extrinsics_inv = inverse_transformation(pinhole_src.extrinsics)
        dst_trans_src = compose_transformations(self._pinhole_dst.extrinsics, src_extrinsics_inv)
        self._dst_proj_src = _embed(self._pinhole_dst.camera_matrix) @ dst_trans_src
        self._pinhole_src = pinhole_src
        return self

    def _projection(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``M = K_dst R K_src^-1`` and ``b = K_dst t`` (pixel frames) in the working dtype."""
        if self._dst_proj_src is None or self._pinhole_src is None:
            raise ValueError("Please, call compute_projection_matrix.")
        work = _work_dtype(like, self._dst_proj_src)
        P = self._dst_proj_src.to(device=like.device, dtype=work)
        M = P[:, :3, :3] @ _inverse3x3(self._pinhole_src.camera_matrix.to(device=like.device, dtype=work))
        return M, P[:, :3, 3]

    def _grid(self, depth_src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_image(depth_src, "depth_src", channels=1)
        M, b = self._projection(depth_src)
        if M.shape[0] not in (1, depth_src.shape[0]):
            raise ShapeError(
                "depth_src", (M.shape[0], 1, "H", "W"), tuple(depth_src.shape),
                f"depth_src: expected batch size {M.shape[0]} (that of the cameras), got {depth_src.shape[0]}",
            )
        return _depth_grid(depth_src.to(M.dtype), M, b, (self.height, self.width))

    def warp_grid(self, depth_src: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 2)`` sampling positions of the depth's pixels, normalised to the image to warp.

        Convention:
            ``[-1, 1]`` edge to edge of the ``height x width`` image (``align_corners=False``).
        """
        return self._grid(depth_src)[0]

    def warp_with_mask(self, depth_src: torch.Tensor, patch_dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` and the validity mask of :func:`depth_warp`: ``(warped, valid)``."""
        check_image(patch_dst, "patch_dst")
        if patch_dst.shape[-2:] != (self.height, self.width):
            raise ShapeError(
                "patch_dst", ("B", "C", self.height, self.width), tuple(patch_dst.shape),
                f"patch_dst: expected size ({self.height}, {self.width}) (the warper's), "
                f"got {tuple(patch_dst.shape[-2:])}",
            )
        grid, defined, valid = self._grid(depth_src)
        if patch_dst.shape[0] != grid.shape[0]:
            raise ShapeError(
                "patch_dst", (grid.shape[0], "C", self.height, self.width), tuple(patch_dst.shape),
                f"patch_dst: expected batch size {grid.shape[0]} (that of depth_src), got {patch_dst.shape[0]}",
            )
        return _sample(patch_dst, grid, self.mode, self.padding_mode, defined), valid

    def forward(self, depth_src: torch.Tensor, patch_dst: torch.Tensor) -> torch.Tensor:
        """Warp ``patch_dst (B, C, height, width)`` into the frame of ``depth_src (B, 1, H, W)``: ``(B, C, H, W)``."""
        return self.warp_with_mask(depth_src, patch_dst)[0]

    def compute_subpixel_step(self) -> torch.Tensor:
        """The inverse-depth step that moves the image centre by half a pixel, smallest over the batch.

        The centre pixel of the depth's camera is projected at inverse depths
        ``1 -/+ 0.01``; the step is ``0.5 / |d pixel / d inverse depth|`` (Szeliski and
        Scharstein, "Symmetric sub-pixel stereo matching", ECCV 2002). Kornia 0.9 projects
        the 3-D point ``(x, y, 1/depth)`` without ``K_src^-1``, right only for ``K = I``.

        Returns:
            A 0-d tensor (``inf`` for a zero baseline).
        """
        if self._dst_proj_src is None:
            raise RuntimeError("Expected torch.Tensor, but got None Type from the projection matrix")
        M, b = self._projection(self._dst_proj_src)
        delta = 0.01
        centre = torch.tensor([(self.width - 1) / 2.0, (self.height - 1) / 2.0, 1.0], device=M.device, dtype=M.dtype)
        ray = M @ centre  # (B, 3)
        inv_depth = torch.tensor([1.0 - delta, 1.0 + delta], device=M.device, dtype=M.dtype)
        # z M p + b with z = 1 / rho, scaled by rho: M p + rho b (same pixel).
        n = ray[:, None, :] + inv_depth[None, :, None] * b[:, None, :]  # (B, 2, 3)
        pix = n[..., :2] / n[..., 2:]
        dxy = torch.linalg.vector_norm(pix[:, 1] - pix[:, 0], dim=-1) / 2.0
        return torch.min(0.5 / (dxy / delta))
