"""Colour conversions (grayscale, RGB/BGR, HSV, YCbCr) and colour adjustments.

Names, argument order, defaults and meaning follow ``kornia.color`` and
``kornia.enhance``, so switching is a change of import. Images are floating
``(*, C, H, W)`` tensors with values in ``[0, 1]``.
"""

from gradcv.core_ops.color.adjust import (
    AdjustBrightness,
    AdjustContrast,
    AdjustHue,
    AdjustSaturation,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
)
from gradcv.core_ops.color.gray import BgrToGrayscale, RgbToGrayscale, bgr_to_grayscale, rgb_to_grayscale
from gradcv.core_ops.color.hsv import HsvToRgb, RgbToHsv, hsv_to_rgb, rgb_to_hsv
from gradcv.core_ops.color.rgb import BgrToRgb, RgbToBgr, bgr_to_rgb, rgb_to_bgr
from gradcv.core_ops.color.ycbcr import RgbToYcbcr, YcbcrToRgb, rgb_to_ycbcr, ycbcr_to_rgb

__all__ = [
    "AdjustBrightness",
    "AdjustContrast",
    "AdjustHue",
    "AdjustSaturation",
    "BgrToGrayscale",
    "BgrToRgb",
    "HsvToRgb",
    "RgbToBgr",
    "RgbToGrayscale",
    "RgbToHsv",
    "RgbToYcbcr",
    "YcbcrToRgb",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "bgr_to_grayscale",
    "bgr_to_rgb",
    "hsv_to_rgb",
    "rgb_to_bgr",
    "rgb_to_grayscale",
    "rgb_to_hsv",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]
