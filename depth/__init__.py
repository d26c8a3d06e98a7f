"""Multi-view depth estimation by gradient descent from calibrated views (see DESIGN.md).

Landed so far (issue 11, in progress): the scene renderer with exact ground truth
(``render_scene``: ray-cast textured rooms, boxes, planes and spheres, z-depth,
visibility and edge masks), ``metrics`` (Eigen et al.'s depth metrics per problem of a
batch) and the calibration loaders and writers (COLMAP text models, a small JSON format,
ground-truth depth as ``.npy`` or 16-bit PNG in millimetres) and the winner-take-all
``plane_sweep`` over inverse depth (the baseline and an initialisation). The
gradient-descent solver is to come.
"""

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

__all__ = [
    "METRIC_NAMES",
    "Calibration",
    "FileFormatError",
    "MissingFileError",
    "PlaneSweepResult",
    "RenderedScene",
    "Scene",
    "SceneConfig",
    "UnsupportedCameraError",
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
