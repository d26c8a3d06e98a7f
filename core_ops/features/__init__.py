"""Local features: responses, scale-space detection, local affine frames, orientation,
affine shape, the SIFT descriptor, local-feature pipelines and descriptor matching.

Kornia's names, arguments, defaults and return conventions (``kornia.feature``), in
gradcv's one pixel convention: keypoint centres at integer pixel coordinates, as
OpenCV's ``KeyPoint.pt``.
"""

from gradcv.core_ops.features.responses import (
    BlobDoG,
    BlobDoGSingle,
    BlobHessian,
    CornerGFTT,
    CornerHarris,
    dog_response,
    dog_response_single,
    gftt_response,
    harris_response,
    hessian_response,
)
from gradcv.core_ops.features.nms import (
    NonMaximaSuppression2d,
    NonMaximaSuppression3d,
    nms2d,
    nms3d,
)
from gradcv.core_ops.features.scale_space_detector import (
    ScaleSpaceDetector,
)
from gradcv.core_ops.features.laf import (
    denormalize_laf,
    ellipse_to_laf,
    extract_patches_from_pyramid,
    extract_patches_simple,
    get_laf_center,
    get_laf_orientation,
    get_laf_scale,
    laf_from_center_scale_ori,
    laf_from_three_points,
    laf_is_filled,
    laf_is_inside_image,
    laf_is_valid,
    laf_to_boundary_points,
    laf_to_three_points,
    make_upright,
    normalize_laf,
    perspective_transform_lafs,
    rotate_laf,
    scale_laf,
    set_laf_orientation,
)
from gradcv.core_ops.features.orientation import (
    LAFOrienter,
    PassLAF,
    PatchDominantGradientOrientation,
)
from gradcv.core_ops.features.affine_shape import (
    LAFAffineShapeEstimator,
    PatchAffineShapeEstimator,
)
from gradcv.core_ops.features.siftdesc import (
    LAFDescriptor,
    SIFTDescriptor,
    convert_sift_descriptor_layout,
    get_laf_descriptors,
    get_sift_bin_ksize_stride_pad,
    get_sift_pooling_kernel,
    sift_describe,
)
from gradcv.core_ops.features.matching import (
    DescriptorMatcher,
    match_fginn,
    match_mnn,
    match_nn,
    match_smnn,
    match_snn,
)

__all__ = [
    "BlobDoG",
    "BlobDoGSingle",
    "BlobHessian",
    "CornerGFTT",
    "CornerHarris",
    "DescriptorMatcher",
    "LAFAffineShapeEstimator",
    "LAFDescriptor",
    "LAFOrienter",
    "NonMaximaSuppression2d",
    "NonMaximaSuppression3d",
    "PassLAF",
    "PatchAffineShapeEstimator",
    "PatchDominantGradientOrientation",
    "SIFTDescriptor",
    "ScaleSpaceDetector",
    "convert_sift_descriptor_layout",
    "denormalize_laf",
    "dog_response",
    "dog_response_single",
    "ellipse_to_laf",
    "extract_patches_from_pyramid",
    "extract_patches_simple",
    "get_laf_center",
    "get_laf_descriptors",
    "get_laf_orientation",
    "get_laf_scale",
    "get_sift_bin_ksize_stride_pad",
    "get_sift_pooling_kernel",
    "gftt_response",
    "harris_response",
    "hessian_response",
    "laf_from_center_scale_ori",
    "laf_from_three_points",
    "laf_is_filled",
    "laf_is_inside_image",
    "laf_is_valid",
    "laf_to_boundary_points",
    "laf_to_three_points",
    "make_upright",
    "match_fginn",
    "match_mnn",
    "match_nn",
    "match_smnn",
    "match_snn",
    "nms2d",
    "nms3d",
    "normalize_laf",
    "perspective_transform_lafs",
    "rotate_laf",
    "scale_laf",
    "set_laf_orientation",
    "sift_describe",
]
