"""Linear and non-linear filters: correlation, blurs, derivatives, Laplacian.

Every fixed-kernel filter runs on the slice engine in ``_engine`` (no ``conv2d``: see
that module for why); filters with tensor kernels use plain autograd.
"""

from gradcv.core_ops.filters._engine import correlate_separable, pad2d
from gradcv.core_ops.filters.blur import BoxBlur, GaussianBlur2d, box_blur, gaussian_blur2d
from gradcv.core_ops.filters.filter import filter2d, filter2d_separable
from gradcv.core_ops.filters.kernels import (
    get_box_kernel2d,
    get_gaussian_kernel1d,
    get_gaussian_kernel2d,
    get_sobel_kernel2d,
)
from gradcv.core_ops.filters.laplace import Laplacian, laplacian
from gradcv.core_ops.filters.median import MedianBlur, median_blur
from gradcv.core_ops.filters.derivatives import Sobel, SpatialGradient, sobel, spatial_gradient

__all__ = [
    "BoxBlur",
    "GaussianBlur2d",
    "Laplacian",
    "MedianBlur",
    "Sobel",
    "SpatialGradient",
    "box_blur",
    "correlate_separable",
    "filter2d",
    "filter2d_separable",
    "gaussian_blur2d",
    "get_box_kernel2d",
    "get_gaussian_kernel1d",
    "get_gaussian_kernel2d",
    "get_sobel_kernel2d",
    "laplacian",
    "median_blur",
    "pad2d",
    "sobel",
    "spatial_gradient",
]
