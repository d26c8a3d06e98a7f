"""Multi-view depth estimation by gradient descent from calibrated views (see DESIGN.md).

- ``estimate_depth``: the depth map of a reference view from N calibrated views, B problems
  per call: a full-resolution robust plane sweep (per-pixel minimum over sources,
  shiftable windows, semi-global plane choice, parabolic sub-plane fit) as the start, then
  gradient descent on the paper's photometric loss (SSIM + L1, gain/bias matched,
  softmin over sources, edge-aware second-order smoothness) with a pyramid
  parameterisation of the step; ``DepthConfig`` with ``default()`` and ``paper()`` presets.
- ``plane_sweep`` (the baseline and the start) and ``semi_global_aggregation`` (SGM).
- ``render_scene``: ray-cast textured rooms, boxes, planes and spheres with exact z-depth,
  visibility and edge masks; ``metrics`` (Eigen et al.).
- Calibration loaders and writers: COLMAP text models and a small JSON format, ground
  truth as ``.npy`` or 16-bit PNG in millimetres.
"""

from gradcv.depth.config import DepthConfig
from gradcv.depth.io import (
    Calibration,
    FileFormatError,
    MissingFileError,
    UnsupportedCameraError,
    read_colmap_text,
    read_depth,
    read_json,
    write_colmap_text,
    write_depth,
    write_json,
)
from gradcv.depth.metrics import METRIC_NAMES, metrics
from gradcv.depth.plane_sweep import PlaneSweepResult, plane_sweep
from gradcv.depth.png16 import read_png16, write_png16
from gradcv.depth.render import RenderedScene, render_scene, render_views
from gradcv.depth.scene import Scene, SceneConfig, make_cameras, make_scene
from gradcv.depth.sgm import semi_global_aggregation
from gradcv.depth.solver import DepthResult, derive_depth_range, estimate_depth, level_intrinsics, solved_levels

__all__ = [
    "METRIC_NAMES",
    "Calibration",
    "DepthConfig",
    "DepthResult",
    "FileFormatError",
    "MissingFileError",
    "PlaneSweepResult",
    "RenderedScene",
    "Scene",
    "SceneConfig",
    "UnsupportedCameraError",
    "derive_depth_range",
    "estimate_depth",
    "level_intrinsics",
    "make_cameras",
    "make_scene",
    "metrics",
    "plane_sweep",
    "read_colmap_text",
    "read_depth",
    "read_json",
    "read_png16",
    "render_scene",
    "render_views",
    "semi_global_aggregation",
    "solved_levels",
    "write_colmap_text",
    "write_depth",
    "write_json",
    "write_png16",
]
