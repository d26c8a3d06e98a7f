"""Configuration of the two-view matching pipeline (:func:`gradcv.matching.match_pair`).

Two presets. :meth:`MatchConfig.default`: Hessian blobs on the doubled image, Lowe's
multiple orientations, RootSIFT, the ratio test at 0.8 and LO-RANSAC at 3 px (OpenCV's
``findHomography`` threshold). :meth:`MatchConfig.paper`: the paper's attack pipeline as
Kornia builds it (Hessian + SIFT, top 2500, one orientation per keypoint, soft-argmax
sub-pixel refinement so that keypoint positions are smooth functions of the pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from gradcv.core_ops._checks import check_bool, check_int, check_real, check_str_choice, replace_fields

__all__ = ["DETECTORS", "MATCHERS", "MatchConfig", "SUBPIX_MODES"]

#: Scale-space detectors: ``'hessian'`` (:class:`~gradcv.core_ops.features.integrated.HessianSIFT`)
#: or ``'dog'`` (:class:`~gradcv.core_ops.features.integrated.SIFTFeature`, OpenCV's SIFT).
DETECTORS = ("hessian", "dog")
#: Descriptor matchers: Lowe's ratio test (``'snn'``) or mutual nearest neighbours (``'mnn'``).
MATCHERS = ("snn", "mnn")
#: Sub-pixel refinement of the detections: Lowe's quadratic fit or a soft arg-max.
SUBPIX_MODES = ("quadratic", "soft")


@dataclass(frozen=True)
class MatchConfig:
    """Settings of :func:`~gradcv.matching.pipeline.match_pair`.

    Attributes:
        detector: ``'hessian'`` (determinant of the Hessian, the paper's) or ``'dog'``
            (difference of Gaussians, configured as OpenCV's SIFT).
        num_features: feature slots per image, at least 4 (a homography's minimal sample;
            the strongest responses; with orientations on, each orientation counts as one,
            as OpenCV's ``nfeatures``).
        orientation: estimate Lowe's dominant orientations (``False``: upright frames).
        max_orientations: orientation slots per location (1: one per keypoint, as Kornia).
        rootsift: RootSIFT descriptors rather than Lowe's SIFT.
        subpix: ``'quadratic'`` (Lowe's refinement) or ``'soft'`` (soft arg-max).
        contrast_threshold: minimum refined response; ``None``: the detector's default
            (0 for the Hessian, 0.01 for DoG: see SIFTFeature).
        double_image: detect on the image upsampled twice (as OpenCV and Kornia's Hessian).
        scale_smoothing: describe each keypoint on the image smoothed to its detection scale,
            as OpenCV's SIFT (see :class:`~gradcv.core_ops.features.integrated.SIFTFeature`:
            OpenCV's descriptors, slightly worse matching than the finer default).
        matcher: ``'snn'`` (ratio test) or ``'mnn'`` (mutual nearest neighbours).
        ratio: the ratio test's threshold (``'snn'`` only), in ``(0, 1]``.
        ransac_threshold: inlier threshold of RANSAC in pixels of image 2 (one-way
            transfer error, OpenCV's ``ransacReprojThreshold``).
        ransac_batch_size: most minimal samples per RANSAC round.
        ransac_iterations: rounds of ``ransac_batch_size`` samples at most.
        ransac_confidence: RANSAC's stopping confidence in ``(0, 1]``.
        min_inliers: a pair whose homography has fewer inliers on distinct keypoints
            (:func:`~gradcv.matching.pipeline.distinct_inliers`) is reported ``FEW_INLIERS``
            rather than ``FOUND`` (15, COLMAP's ``min_num_inliers``: unrelated 640 x 480
            photographs gave up to 7 with mutual nearest neighbours).
        seed: seed of RANSAC's private generator (reproducible, the global one untouched).
    """

    detector: str = "hessian"
    num_features: int = 2500
    orientation: bool = True
    max_orientations: int = 4
    rootsift: bool = True
    subpix: str = "quadratic"
    contrast_threshold: Optional[float] = None
    double_image: bool = True
    scale_smoothing: bool = False
    matcher: str = "snn"
    ratio: float = 0.8
    ransac_threshold: float = 3.0
    ransac_batch_size: int = 2048
    ransac_iterations: int = 10
    ransac_confidence: float = 0.999
    min_inliers: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def default(cls, **overrides: Any) -> "MatchConfig":
        """The default preset (see the module docstring).

        Example:
            >>> MatchConfig.default().detector, MatchConfig.default().matcher
            ('hessian', 'snn')
        """
        return cls(**overrides)

    @classmethod
    def paper(cls, **overrides: Any) -> "MatchConfig":
        """The paper's pipeline: Hessian + SIFT, top 2500, one orientation per keypoint,
        soft sub-pixel refinement.

        Example:
            >>> MatchConfig.paper().subpix
            'soft'
        """
        fields: dict[str, Any] = dict(detector="hessian", num_features=2500, orientation=True, max_orientations=1,
                                      subpix="soft")
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **overrides: Any) -> "MatchConfig":
        """A copy with some fields changed (validated); unknown names raise ``ArgumentValueError``.

        Example:
            >>> MatchConfig().replace(matcher="mnn").matcher
            'mnn'
        """
        return replace_fields(self, overrides)

    def validate(self) -> None:
        """Raise a typed error (``ArgumentTypeError`` / ``ArgumentValueError``) naming the bad field."""
        check_str_choice(self.detector, DETECTORS, "detector")
        check_int(self.num_features, "num_features", 4)
        check_bool(self.orientation, "orientation")
        check_int(self.max_orientations, "max_orientations", 1)
        check_bool(self.rootsift, "rootsift")
        check_str_choice(self.subpix, SUBPIX_MODES, "subpix")
        if self.contrast_threshold is not None:
            check_real(self.contrast_threshold, "contrast_threshold", low=0.0)
        check_bool(self.double_image, "double_image")
        check_bool(self.scale_smoothing, "scale_smoothing")
        check_str_choice(self.matcher, MATCHERS, "matcher")
        check_real(self.ratio, "ratio", low=0.0, low_open=True, high=1.0)
        check_real(self.ransac_threshold, "ransac_threshold", low=0.0, low_open=True)
        check_int(self.ransac_batch_size, "ransac_batch_size", 1)
        check_int(self.ransac_iterations, "ransac_iterations", 1)
        check_real(self.ransac_confidence, "ransac_confidence", low=0.0, low_open=True, high=1.0)
        check_int(self.min_inliers, "min_inliers", 4)
        check_int(self.seed, "seed", 0)
