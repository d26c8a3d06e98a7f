"""Differentiable, batched, device-agnostic image operators (the gradcv operator layer)."""

from gradcv.core_ops import color, contrib, errors, features, filters, geometry, losses, pyramid
from gradcv.core_ops.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    DeviceError,
    DTypeError,
    GradcvError,
    ShapeError,
)

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "DTypeError",
    "DeviceError",
    "GradcvError",
    "ShapeError",
    "color",
    "contrib",
    "errors",
    "features",
    "filters",
    "geometry",
    "losses",
    "pyramid",
]
