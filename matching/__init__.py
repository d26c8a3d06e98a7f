"""Two-view matching with the differentiable feature stack (see DESIGN.md).

- ``match_pair``: detector (Hessian or DoG) -> orientation -> SIFT descriptor -> ratio test
  or mutual nearest neighbours -> RANSAC homography, batched over image pairs, returning a
  ``MatchResult`` (fixed-size keypoints, matches and inliers with validity masks, the
  homography, a per-pair ``MatchStatus``); ``MatchConfig`` with ``default()`` and
  ``paper()`` presets.
"""

from gradcv.matching.config import DETECTORS, MATCHERS, SUBPIX_MODES, MatchConfig
from gradcv.matching.pipeline import (
    PATCH_SIZE,
    MatchResult,
    MatchStatus,
    distinct_inliers,
    make_local_feature,
    match_descriptors,
    match_pair,
)

__all__ = [
    "DETECTORS",
    "MATCHERS",
    "PATCH_SIZE",
    "SUBPIX_MODES",
    "MatchConfig",
    "MatchResult",
    "MatchStatus",
    "distinct_inliers",
    "make_local_feature",
    "match_descriptors",
    "match_pair",
]

# The targeted attack on two-view matching (paper section 4.4).
from gradcv.matching.attack import (  # noqa: E402
    AttackMetrics,
    AttackResult,
    attack_loss,
    attack_pair,
    evaluate_attack,
    quantize_8bit,
)
from gradcv.matching.attack_config import AttackConfig  # noqa: E402

__all__ += [
    "AttackConfig",
    "AttackMetrics",
    "AttackResult",
    "attack_loss",
    "attack_pair",
    "evaluate_attack",
    "quantize_8bit",
]
