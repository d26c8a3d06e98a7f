"""Images for the experiments: the user's files, and the photograph matplotlib ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradcv.experiments._cli import ExperimentError


def read_image(path: str | Path, name: str) -> torch.Tensor:
    """``(C, H, W)`` float32 in [0, 1] (RGB or gray, alpha dropped) read by matplotlib.

    Raises :class:`ExperimentError` naming ``name`` for a missing or unreadable file.
    """
    import matplotlib.image as mpimg

    p = Path(path)
    if not p.is_file():
        raise ExperimentError(f"{name}: no such image file: {str(path)!r}")
    try:
        img = np.asarray(mpimg.imread(p))
    except Exception as ex:  # PIL, OSError, ValueError...: all mean "cannot read it"
        raise ExperimentError(f"{name}: cannot read image {str(path)!r}: {type(ex).__name__}: {ex}") from None
    if img.ndim not in (2, 3) or img.size == 0 or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ExperimentError(f"{name}: {str(path)!r} is not a gray, RGB or RGBA image (shape {img.shape})")
    if img.dtype.kind in "ui":
        img = img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    img = img[..., :3]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()


def sample_photo() -> torch.Tensor:
    """matplotlib's bundled ``grace_hopper.jpg`` as ``(3, H, W)`` float32 RGB in [0, 1]."""
    import matplotlib.cbook as cbook

    return read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "bundled photograph")


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W)`` to one channel with the BT.601 weights (``C == 1`` passes through)."""
    from gradcv.core_ops.color import rgb_to_grayscale

    if image.shape[-3] == 1:
        return image
    return rgb_to_grayscale(image)


#: The folder of the photographs gradcv ships (400 x 300 crops; sources and licences in its README.md).
PHOTO_DIR = Path(__file__).resolve().parent / "photos"


def fit_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(C, H, W)`` scaled (antialiased) so that it covers ``height x width``, then cut at the centre."""
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    s = max(height / h, width / w)
    size = (max(height, round(h * s)), max(width, round(w * s)))
    if size != (h, w):
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
    y0, x0 = (image.shape[-2] - height) // 2, (image.shape[-1] - width) // 2
    return image[:, y0:y0 + height, x0:x0 + width].contiguous()


def photograph_names() -> list[str]:
    """The names :func:`bundled_photograph` takes: the shipped photographs and ``hopper``."""
    return sorted(p.stem for p in PHOTO_DIR.glob("*.jpg")) + ["hopper"]


def bundled_photograph(name: str, height: int = 300, width: int = 400) -> torch.Tensor:
    """One of the bundled photographs as ``(3, height, width)`` float32 RGB in [0, 1]
    (``hopper`` is matplotlib's ``grace_hopper.jpg``; the others are in :data:`PHOTO_DIR`).

    Raises :class:`ExperimentError` for an unknown name.
    """
    if name == "hopper":
        image = sample_photo()
    elif name in photograph_names():
        image = read_image(PHOTO_DIR / f"{name}.jpg", f"photograph {name!r}")
    else:
        raise ExperimentError(f"unknown bundled photograph {name!r}: expected one of {', '.join(photograph_names())}")
    return fit_image(image, height, width)
