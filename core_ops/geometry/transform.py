"""2-D transforms of images: perspective and affine warps, the matrices that drive them,
rotate / translate / scale / shear / affine, and resize (Kornia's
``kornia.geometry.transform``).

The code lives in three topics: :mod:`core_ops.geometry.imgwarp` (the warp engine),
:mod:`core_ops.geometry.matrices` (the matrices) and :mod:`core_ops.geometry.affine`
(whole-image transforms, resize and the Modules); this module gathers them under one
name. The pixel-coordinate convention and
the precision of the warps are described in :mod:`core_ops.geometry.imgwarp`.

Example:
    >>> img = torch.rand(1, 3, 32, 32)
    >>> M = get_rotation_matrix2d(torch.tensor([[15.5, 15.5]]), torch.tensor([30.0]), torch.ones(1, 2))
    >>> torch.allclose(warp_affine(img, M, (32, 32)), rotate(img, torch.tensor([30.0])))
    True
"""

from __future__ import annotations

import torch  # noqa: F401  (for the doctest)

from gradcv.core_ops.geometry.affine import (
    Affine,
    Resize,
    Rotate,
    Scale,
    Shear,
    Translate,
    affine,
    resize,
    rotate,
    scale,
    shear,
    translate,
)
from gradcv.core_ops.geometry.imgwarp import warp_affine, warp_perspective
from gradcv.core_ops.geometry.matrices import (
    get_affine_matrix2d,
    get_perspective_transform,
    get_rotation_matrix2d,
    get_shear_matrix2d,
    get_translation_matrix2d,
    invert_affine_transform,
)

__all__ = [
    "Affine",
    "Resize",
    "Rotate",
    "Scale",
    "Shear",
    "Translate",
    "affine",
    "get_affine_matrix2d",
    "get_perspective_transform",
    "get_rotation_matrix2d",
    "get_shear_matrix2d",
    "get_translation_matrix2d",
    "invert_affine_transform",
    "resize",
    "rotate",
    "scale",
    "shear",
    "translate",
    "warp_affine",
    "warp_perspective",
]
