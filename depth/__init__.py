"""Multi-view depth estimation by gradient descent from calibrated views (see DESIGN.md).

Landed so far (issue 11, in progress): the scene renderer with exact ground truth
(``render_scene``: ray-cast textured rooms, boxes, planes and spheres, z-depth,
visibility and edge masks), ``metrics`` (Eigen et al.'s depth metrics per problem of a
batch) and the calibration loaders and writers (COLMAP text models, a small JSON format,
ground-truth depth as ``.npy`` or 16-bit PNG in millimetres) and the winner-take-all
``plane_sweep`` over inverse depth (the baseline and an initialisation), and a first cut
of the gradient-descent solver ``estimate_depth`` (coarse to fine on ``gradcv.optim``;
not yet at the issue's accuracy targets). The app and benchmark are to come.
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
from gradcv.depth.solver import DepthResult, estimate_depth

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
    "estimate_depth",
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
    "write_colmap_text",
    "write_depth",
    "write_json",
    "write_png16",
]
