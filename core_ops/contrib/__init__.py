"""Tensor patches (extract a grid of windows and put them back) and soft arg-max, over a
whole map or in sliding windows (2-D and 3-D).

Names, argument order and defaults are Kornia's (``kornia.contrib`` and
``kornia.geometry.subpix``); coordinates follow gradcv's convention (pixel centres at
integers, normalised coordinates ``[-1, 1]`` edge to edge), see each ``Convention``.
"""

from gradcv.core_ops.contrib.patches import (
    CombineTensorPatches,
    ExtractTensorPatches,
    combine_tensor_patches,
    compute_padding,
    extract_tensor_patches,
)
from gradcv.core_ops.contrib.soft_argmax import (
    ConvSoftArgmax2d,
    ConvSoftArgmax3d,
    SpatialSoftArgmax2d,
    conv_soft_argmax2d,
    conv_soft_argmax3d,
    spatial_expectation2d,
    spatial_soft_argmax2d,
    spatial_softmax2d,
)

__all__ = [
    "CombineTensorPatches",
    "ConvSoftArgmax2d",
    "ConvSoftArgmax3d",
    "ExtractTensorPatches",
    "SpatialSoftArgmax2d",
    "combine_tensor_patches",
    "compute_padding",
    "conv_soft_argmax2d",
    "conv_soft_argmax3d",
    "extract_tensor_patches",
    "spatial_expectation2d",
    "spatial_soft_argmax2d",
    "spatial_softmax2d",
]
