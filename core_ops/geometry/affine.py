"""Whole-image affine transforms (rotate, translate, scale, shear, affine) and resizing.

Convention (``DESIGN.md``):
    Pixel coordinates ``(x, y)``, x right, y down, integer values at pixel centres; an
    image ``W`` pixels wide spans ``[-0.5, W - 0.5]``, so its centre is
    ``((W - 1) / 2, (H - 1) / 2)``, the default centre of rotation and scaling here (as
    in Kornia and OpenCV). Every transform is applied as ``dst(p) = src(M^-1 p)`` with
    ``M`` the source-to-destination matrix, through :func:`warp_affine`; the results
    equal ``cv2.warpAffine`` with the same matrix.

``align_corners`` is accepted everywhere for Kornia's signatures and has no effect on the
warps (see :func:`~core_ops.geometry.imgwarp.warp_perspective`); in :func:`resize` it
keeps ``torch.nn.functional.interpolate``'s meaning.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcv.core_ops._checks import check_choice, check_floating, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.core_ops.filters.blur import gaussian_blur2d
from gradcv.core_ops.geometry.imgwarp import check_warp_options, warp_affine
from gradcv.core_ops.geometry.matrices import get_affine_matrix2d, get_rotation_matrix2d

__all__ = [
    "Affine",
    "Resize",
    "Rotate",
    "Scale",
    "Shear",
    "Translate",
    "affine",
    "resize",
    "rotate",
    "scale",
    "shear",
    "translate",
]

INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
SIDES = ("short", "long", "vert", "horz")


def _check_images(tensor: object, name: str = "tensor") -> torch.Tensor:
    """A floating ``(C, H, W)`` or ``(B, C, H, W)`` tensor."""
    check_tensor(tensor, name)
    assert isinstance(tensor, torch.Tensor)
    if tensor.ndim not in (3, 4):
        raise ShapeError(name, "(C, H, W) or (B, C, H, W)", tuple(tensor.shape))
    check_floating(tensor, name)
    return tensor


def _image_center(tensor: torch.Tensor) -> torch.Tensor:
    """``(1, 2)``: the centre ``((W - 1) / 2, (H - 1) / 2)``, filled on the device (no host copy)."""
    h, w = tensor.shape[-2:]
    cx = tensor.new_full((1, 1), (w - 1) / 2)
    cy = tensor.new_full((1, 1), (h - 1) / 2)
    return torch.cat((cx, cy), -1)


def _batch_size(tensor: torch.Tensor, param: torch.Tensor, name: str) -> int:
    """The batch of a transform of ``tensor`` by a parameter with ``param.shape[0]`` entries.

    One image is broadcast over the parameters and one parameter over the images.
    """
    images = tensor.shape[0] if tensor.ndim == 4 else 1
    params = param.shape[0] if param.ndim > 0 else 1
    if images != 1 and params not in (1, images):
        raise ShapeError(
            name, (f"1 or {images}", "*"), tuple(param.shape),
            f"{name}: expected batch size 1 or {images} (that of the images), got {params}",
        )
    return max(images, params)


def _batch_param(value: torch.Tensor, batch: int, trailing: tuple[int, ...], name: str) -> torch.Tensor:
    """``value`` of shape ``(B, *trailing)`` or ``(1, *trailing)`` (or ``trailing`` alone) as ``(batch, *trailing)``."""
    if value.shape == trailing:
        value = value[None]
    if value.ndim != len(trailing) + 1 or tuple(value.shape[1:]) != trailing or value.shape[0] not in (1, batch):
        expected = ", ".join(["B", *map(str, trailing)])
        raise ShapeError(
            name, ("B", *trailing), tuple(value.shape),
            f"{name}: expected shape ({expected}) with B = 1 or {batch}, got {tuple(value.shape)}",
        )
    return value.expand(batch, *trailing)


def affine(
    tensor: torch.Tensor,
    matrix: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Apply affine matrices to images, keeping their size: ``warp_affine`` with ``dsize = (H, W)``.

    Args:
        tensor: ``(C, H, W)`` or ``(B, C, H, W)``; one image is broadcast over a batch of matrices.
        matrix: ``(B, 2, 3)`` source-to-destination pixel matrices (``B = 1`` for all images).
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'``, ``'reflection'`` or ``'fill'`` (with zeros).
        align_corners: no effect (Kornia's signature).

    Returns:
        The warped images, with the shape of ``tensor`` (batched as ``matrix`` if larger).

    Convention:
        Pixel coordinates, pixel centres at integers, source to destination.

    Example:
        >>> affine(torch.rand(2, 3, 4, 5), torch.eye(2, 3)[None]).shape
        torch.Size([2, 3, 4, 5])
    """
    tensor = _check_images(tensor)
    check_shape(matrix, ["B", 2, 3], "matrix")
    check_floating(matrix, "matrix")
    unbatched = tensor.ndim == 3
    if unbatched:
        tensor = tensor[None]
    if tensor.shape[0] == 1 and matrix.shape[0] > 1:
        tensor = tensor.expand(matrix.shape[0], -1, -1, -1)
    out = warp_affine(tensor, matrix, tuple(tensor.shape[-2:]), mode, padding_mode, align_corners)
    return out[0] if unbatched and out.shape[0] == 1 else out


def rotate(
    tensor: torch.Tensor,
    angle: torch.Tensor,
    center: torch.Tensor | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Rotate images about a centre, counter-clockwise as displayed for a positive angle.

    Args:
        tensor: ``(C, H, W)`` or ``(B, C, H, W)``.
        angle: ``(B,)`` (or ``(1,)``) angles in degrees.
        center: ``(B, 2)`` (or ``(1, 2)``) centres ``(x, y)`` in pixels; the image centre
            ``((W - 1) / 2, (H - 1) / 2)`` if ``None``.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'``, ``'reflection'`` or ``'fill'``.
        align_corners: no effect (Kornia's signature).

    Returns:
        The rotated images, the shape of ``tensor``.

    Convention:
        ``cv2.warpAffine(img, cv2.getRotationMatrix2D(center, angle, 1), (W, H))``:
        pixel centres at integers, y down.

    Example:
        >>> img = torch.zeros(1, 1, 3, 3); img[..., 0, 1] = 1.0  # the pixel above the centre
        >>> rotate(img, torch.tensor([90.0]))[0, 0].round(decimals=4)  # goes to the left
        tensor([[0., 0., 0.],
                [1., 0., 0.],
                [0., 0., 0.]])
    """
    tensor = _check_images(tensor)
    check_tensor(angle, "angle")
    check_floating(angle, "angle")
    angle = angle.reshape(-1) if angle.ndim == 0 else angle
    batch = _batch_size(tensor, angle, "angle")
    angle = _batch_param(angle, batch, (), "angle")
    center = _image_center(tensor) if center is None else center
    check_tensor(center, "center")
    center = _batch_param(center.to(angle.dtype), batch, (2,), "center")
    matrix = get_rotation_matrix2d(center, angle, torch.ones_like(center))
    return affine(tensor, matrix, mode, padding_mode, align_corners)


def translate(
    tensor: torch.Tensor,
    translation: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Translate images by ``(dx, dy)`` pixels.

    Args:
        tensor: ``(C, H, W)`` or ``(B, C, H, W)``.
        translation: ``(B, 2)`` (or ``(1, 2)``) offsets ``(dx, dy)``; positive moves the
            content right and down.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'``, ``'reflection'`` or ``'fill'``.
        align_corners: no effect (Kornia's signature).

    Returns:
        The translated images.

    Convention:
        ``cv2.warpAffine`` with ``[[1, 0, dx], [0, 1, dy]]``.

    Example:
        >>> translate(torch.arange(4.0).view(1, 1, 1, 4), torch.tensor([[1.0, 0.0]]))
        tensor([[[[0., 0., 1., 2.]]]])
    """
    tensor = _check_images(tensor)
    check_tensor(translation, "translation")
    check_floating(translation, "translation")
    batch = _batch_size(tensor, translation if translation.ndim == 2 else translation[None], "translation")
    translation = _batch_param(translation, batch, (2,), "translation")
    eye = torch.eye(2, device=translation.device, dtype=translation.dtype).expand(batch, 2, 2)
    return affine(tensor, torch.cat((eye, translation[:, :, None]), -1), mode, padding_mode, align_corners)


def scale(
    tensor: torch.Tensor,
    scale_factor: torch.Tensor,
    center: torch.Tensor | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Scale images about a centre, keeping their size.

    Args:
        tensor: ``(C, H, W)`` or ``(B, C, H, W)``.
        scale_factor: ``(B,)`` isotropic or ``(B, 2)`` ``(s_x, s_y)`` factors (``B = 1`` broadcasts).
        center: ``(B, 2)`` centres in pixels; the image centre if ``None``.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'``, ``'reflection'`` or ``'fill'``.
        align_corners: no effect (Kornia's signature).

    Returns:
        The scaled images.

    Convention:
        ``cv2.warpAffine(img, cv2.getRotationMatrix2D(center, 0, s), (W, H))``.

    Example:
        >>> scale(torch.ones(1, 1, 5, 5), torch.tensor([0.5]))[0, 0, 2]
        tensor([0., 1., 1., 1., 0.])
    """
    tensor = _check_images(tensor)
    check_tensor(scale_factor, "scale_factor")
    check_floating(scale_factor, "scale_factor")
    if scale_factor.ndim <= 1:
        scale_factor = scale_factor.reshape(-1, 1).expand(-1, 2)
    batch = _batch_size(tensor, scale_factor, "scale_factor")
    scale_factor = _batch_param(scale_factor, batch, (2,), "scale_factor")
    center = _image_center(tensor) if center is None else center
    check_tensor(center, "center")
    center = _batch_param(center.to(scale_factor.dtype), batch, (2,), "center")
    matrix = get_rotation_matrix2d(center, scale_factor.new_zeros(batch), scale_factor)
    return affine(tensor, matrix, mode, padding_mode, align_corners)


def shear(
    tensor: torch.Tensor,
    shear: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """Shear images by raw factors about pixel ``(0, 0)``: ``x' = x + sh_x y``, ``y' = y + sh_y x``.

    Args:
        tensor: ``(C, H, W)`` or ``(B, C, H, W)``.
        shear: ``(B, 2)`` (or ``(1, 2)``) factors ``(sh_x, sh_y)``.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'``, ``'reflection'`` or ``'fill'``.
        align_corners: no effect (Kornia's signature; Kornia's default here is ``False``).

    Returns:
        The sheared images.

    Convention:
        ``cv2.warpAffine`` with ``[[1, sh_x, 0], [sh_y, 1, 0]]``. As in Kornia, the
        :class:`Affine` module reads its ``shear`` differently (angles, about the centre).

    Example:
        >>> img = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4)
        >>> shear(img, torch.tensor([[1.0, 0.0]]))[0, 0]
        tensor([[0., 1., 2., 3.],
                [0., 0., 1., 2.]])
    """
    tensor = _check_images(tensor)
    check_tensor(shear, "shear")
    check_floating(shear, "shear")
    batch = _batch_size(tensor, shear if shear.ndim == 2 else shear[None], "shear")
    shear = _batch_param(shear, batch, (2,), "shear")
    one, zero = torch.ones_like(shear[:, 0]), torch.zeros_like(shear[:, 0])
    rows = torch.stack((one, shear[:, 0], zero, shear[:, 1], one, zero), -1)
    return affine(tensor, rows.view(batch, 2, 3), mode, padding_mode, align_corners)


# -------------------------------------------------------------------------- resize
def _side_to_image_size(side_size: int, aspect_ratio: float, side: str) -> tuple[int, int]:
    """Kornia's rule for an int ``size``: the named side gets ``side_size``, the other keeps the aspect."""
    if side == "vert":
        return side_size, int(side_size * aspect_ratio)
    if side == "horz":
        return int(side_size / aspect_ratio), side_size
    if (side == "short") ^ (aspect_ratio < 1.0):
        return side_size, int(side_size * aspect_ratio)
    return int(side_size / aspect_ratio), side_size


def _antialias_sigma(factor: float) -> float:
    """Gaussian sigma with the variance of an ``f``-pixel box, ``(f^2 - 1) / 12``: the
    averaging ``cv2.INTER_AREA`` does for an integer factor ``f``."""
    return math.sqrt((factor * factor - 1.0) / 12.0)


def _gaussian_prefilter(x: torch.Tensor, factors: tuple[float, float]) -> torch.Tensor:
    sizes, sigmas = [], []
    for f in factors:
        if f > 1.0:
            s = _antialias_sigma(f)
            sizes.append(2 * math.ceil(3 * s) + 1)
            sigmas.append(s)
        else:
            sizes.append(1)
            sigmas.append(1.0)
    return gaussian_blur2d(x, (sizes[0], sizes[1]), (sigmas[0], sigmas[1]), border_type="reflect")


def resize(
    input: torch.Tensor,
    size: int | tuple[int, int],
    interpolation: str = "bilinear",
    align_corners: bool | None = None,
    side: str = "short",
    antialias: bool = False,
) -> torch.Tensor:
    """Resize images, as ``cv2.resize`` (or PIL with ``antialias=True``).

    Args:
        input: ``(*, H, W)`` floating images, any leading dimensions.
        size: output ``(h, w)``, or one int: the length of the side named by ``side``,
            the other following the aspect ratio (Kornia's rule).
        interpolation: ``'bilinear'`` (``cv2.INTER_LINEAR``), ``'bicubic'``
            (``INTER_CUBIC``, a = -0.75), ``'nearest'`` (``INTER_NEAREST``, source index
            ``floor(x W / w)``), ``'nearest-exact'`` (``INTER_NEAREST_EXACT``, pixel
            centres) or ``'area'`` (block averages; ``INTER_AREA`` for integer factors).
        align_corners: ``torch.nn.functional.interpolate``'s flag, for ``'bilinear'`` and
            ``'bicubic'`` only; ``None`` (default) and ``False`` follow the convention below.
        side: ``'short'``, ``'long'``, ``'vert'`` or ``'horz'``, for an int ``size``.
        antialias: when downscaling, low-pass first. ``'bilinear'`` and ``'bicubic'``
            use torch's antialiased kernels, whose filter widens with the factor (PIL's
            ``resize``, matched to 1e-5); the nearest modes blur with a Gaussian of
            variance ``(f^2 - 1) / 12`` per axis, that of an ``f``-pixel box; ``'area'``
            already averages and ignores it. Kornia uses a Gaussian of sigma
            ``(f - 1) / 2`` for every mode.

    Returns:
        ``(*, h, w)``.

    Convention:
        Pixel centres at integers: output pixel ``x`` samples the input at
        ``(x + 0.5) W / w - 0.5``, so normalised coordinates (``[-1, 1]`` edge to edge) are
        unchanged by a resize. Two choices kept for OpenCV and Kornia break that:
        ``'nearest'`` (``INTER_NEAREST``) takes pixel ``floor(x W / w)``, up to half an
        input pixel off (``'nearest-exact'`` does not), and ``align_corners=True`` maps
        corner pixel centres onto each other.

    Example:
        >>> resize(torch.rand(2, 3, 4, 6), 2).shape  # short side to 2
        torch.Size([2, 3, 2, 3])
    """
    check_tensor(input, "input")
    if input.ndim < 2:
        raise ShapeError("input", ("*", "H", "W"), tuple(input.shape))
    check_floating(input, "input")
    check_choice(interpolation, INTERPOLATIONS, "interpolation")
    check_choice(side, SIDES, "side")
    if align_corners is not None:
        if not isinstance(align_corners, bool):
            raise ArgumentTypeError(
                "align_corners", "a bool or None", type(align_corners),
                f"align_corners: expected a bool or None, got {type(align_corners).__name__}",
            )
        if interpolation not in ("bilinear", "bicubic"):
            raise ArgumentValueError(
                "align_corners", "None unless interpolation is 'bilinear' or 'bicubic'", align_corners,
                f"align_corners: only for 'bilinear' and 'bicubic', got it with {interpolation!r}",
            )
    in_h, in_w = input.shape[-2:]
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise ArgumentValueError("size", "a non-negative size", size, f"size: expected a non-negative size, got {size}")
        if in_h == 0 or in_w == 0:
            raise ShapeError(
                "input", ("*", "H > 0", "W > 0"), tuple(input.shape),
                f"input: an int size needs a non-empty image, got {tuple(input.shape)}",
            )
        size = _side_to_image_size(size, in_w / in_h, side)
    elif not (isinstance(size, (tuple, list, torch.Size)) and len(size) == 2) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in size
    ):
        what = "an int or a (height, width) pair of ints"
        raise ArgumentTypeError("size", what, size, f"size: expected {what}, got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h < 0 or w < 0:
        raise ArgumentValueError("size", "non-negative sizes", (h, w), f"size: expected non-negative sizes, got {(h, w)}")
    lead = input.shape[:-2]
    if input.numel() == 0 or h == 0 or w == 0:
        if (in_h == 0 or in_w == 0) and h > 0 and w > 0 and math.prod(lead) > 0:
            raise ShapeError(
                "input", ("*", "H > 0", "W > 0"), tuple(input.shape), f"input: expected a non-empty image, got {tuple(input.shape)}"
            )
        # An empty result, kept connected to the input for autograd as in Kornia.
        return (input.reshape(-1)[:1].sum() * 0).expand(*lead, h, w)
    x = input.reshape(-1, 1, in_h, in_w) if input.ndim == 2 else input.reshape(-1, input.shape[-3], in_h, in_w)
    factors = (in_h / h, in_w / w)
    native = interpolation in ("bilinear", "bicubic")
    if antialias and not native and interpolation != "area" and max(factors) > 1.0:
        x = _gaussian_prefilter(x, factors)
    kwargs: dict[str, object] = {}
    if native:
        kwargs = {"align_corners": align_corners, "antialias": antialias and max(factors) > 1.0}
    out = torch.nn.functional.interpolate(x, size=(h, w), mode=interpolation, **kwargs)
    return out.reshape(*lead, h, w)


# ------------------------------------------------------------------------- modules
def _register(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    # A Parameter stays trainable; any other tensor is a non-persistent buffer, so that
    # .to() moves it and checkpoints do not grow.
    if isinstance(value, nn.Parameter):
        module.register_parameter(name, value)
    else:
        module.register_buffer(name, value, persistent=False)


class _Warp(nn.Module):
    def __init__(self, mode: str, padding_mode: str, align_corners: bool) -> None:
        super().__init__()
        check_warp_options(mode, padding_mode, align_corners)
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, align_corners


class Rotate(_Warp):
    """Module form of :func:`rotate`; ``angle`` and ``center`` are buffers (or parameters)."""

    def __init__(
        self,
        angle: torch.Tensor,
        center: torch.Tensor | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = True,
    ) -> None:
        super().__init__(mode, padding_mode, align_corners)
        check_tensor(angle, "angle")
        _register(self, "angle", angle)
        _register(self, "center", center)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return rotate(input, self.angle, self.center, self.mode, self.padding_mode, self.align_corners)


class Translate(_Warp):
    """Module form of :func:`translate`."""

    def __init__(
        self, translation: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = True
    ) -> None:
        super().__init__(mode, padding_mode, align_corners)
        check_tensor(translation, "translation")
        _register(self, "translation", translation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return translate(input, self.translation, self.mode, self.padding_mode, self.align_corners)


class Scale(_Warp):
    """Module form of :func:`scale`."""

    def __init__(
        self,
        scale_factor: torch.Tensor,
        center: torch.Tensor | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = True,
    ) -> None:
        super().__init__(mode, padding_mode, align_corners)
        check_tensor(scale_factor, "scale_factor")
        _register(self, "scale_factor", scale_factor)
        _register(self, "center", center)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return scale(input, self.scale_factor, self.center, self.mode, self.padding_mode, self.align_corners)


class Shear(_Warp):
    """Module form of :func:`shear` (default ``align_corners=True`` as Kornia's, no effect)."""

    def __init__(
        self, shear: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = True
    ) -> None:
        super().__init__(mode, padding_mode, align_corners)
        check_tensor(shear, "shear")
        _register(self, "shear", shear)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return shear(input, self.shear, self.mode, self.padding_mode, self.align_corners)


class Affine(_Warp):
    """Rotation, translation, scaling and shear in one warp, as Kornia's ``Affine``.

    The matrix is :func:`~core_ops.geometry.matrices.get_affine_matrix2d` of the
    parameters about ``center`` (the image centre if ``None``), with ``angle`` negated so
    that a positive angle turns counter-clockwise, as :func:`rotate`. As in Kornia,
    ``shear`` holds angles in radians (Kornia's negative-tangent shear about the centre),
    not :func:`shear`'s raw factors.

    Args:
        angle: ``(B,)`` degrees, counter-clockwise.
        translation: ``(B, 2)`` pixels.
        scale_factor: ``(B, 2)`` factors ``(s_x, s_y)``.
        shear: ``(B, 2)`` shear angles ``(sx, sy)`` in radians.
        center: ``(B, 2)`` centre in pixels.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'``, ``'reflection'`` or ``'fill'``.
        align_corners: no effect (Kornia's signature).

    Raises:
        ValueError: no parameter given, or parameters with different batch sizes.

    Convention:
        Pixel coordinates, pixel centres at integers, source to destination; the default
        centre is ``((W - 1) / 2, (H - 1) / 2)``.

    Example:
        >>> Affine(angle=torch.tensor([90.0]))(torch.rand(1, 3, 4, 4)).shape
        torch.Size([1, 3, 4, 4])
    """

    def __init__(
        self,
        angle: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
        scale_factor: torch.Tensor | None = None,
        shear: torch.Tensor | None = None,
        center: torch.Tensor | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = True,
    ) -> None:
        super().__init__(mode, padding_mode, align_corners)
        params = {"angle": angle, "translation": translation, "scale_factor": scale_factor, "shear": shear}
        given = {name: value for name, value in params.items() if value is not None}
        if not given:
            raise ArgumentValueError(
                "angle, translation, scale_factor, shear", "at least one tensor", None,
                "Affine: expected at least one of angle, translation, scale_factor or shear",
            )
        for name, value in given.items():
            check_tensor(value, name)
        batch_sizes = {name: value.shape[0] for name, value in given.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ShapeError(
                ", ".join(batch_sizes), "one batch size", batch_sizes, f"Affine: expected parameters with one batch size, got {batch_sizes}"
            )
        ref = next(iter(given.values()))
        b = ref.shape[0]
        _register(self, "angle", ref.new_zeros(b) if angle is None else angle)
        _register(self, "translation", ref.new_zeros(b, 2) if translation is None else translation)
        _register(self, "scale_factor", ref.new_ones(b, 2) if scale_factor is None else scale_factor)
        _register(self, "shear", shear)
        _register(self, "center", center)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        input = _check_images(input, "input")
        b = self.angle.shape[0]
        center = _image_center(input).to(self.angle.dtype).expand(b, 2) if self.center is None else self.center
        sx = sy = None
        if self.shear is not None:
            sx, sy = self.shear[..., 0], self.shear[..., 1]
        matrix = get_affine_matrix2d(self.translation, center, self.scale_factor, -self.angle, sx=sx, sy=sy)
        return affine(input, matrix[:, :2], self.mode, self.padding_mode, self.align_corners)


class Resize(nn.Module):
    """Module form of :func:`resize`."""

    def __init__(
        self,
        size: int | tuple[int, int],
        interpolation: str = "bilinear",
        align_corners: bool | None = None,
        side: str = "short",
        antialias: bool = False,
    ) -> None:
        super().__init__()
        check_choice(interpolation, INTERPOLATIONS, "interpolation")
        check_choice(side, SIDES, "side")
        self.size, self.interpolation, self.align_corners = size, interpolation, align_corners
        self.side, self.antialias = side, antialias

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return resize(input, self.size, self.interpolation, self.align_corners, self.side, self.antialias)
