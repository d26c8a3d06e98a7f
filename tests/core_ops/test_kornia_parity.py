"""Signature parity with Kornia for every public name that gradcv.core_ops shares with it.

DESIGN.md: where Kornia has the same operator, gradcv uses Kornia's name, argument order,
defaults and meaning, so that a Kornia user switches by changing an import. For each
shared function (and each shared class's constructor) the positional parameters have
Kornia's names in Kornia's order, every parameter both have has Kornia's default, and
gradcv adds only keyword-only parameters. Every deliberate difference is listed in
``DIFFERENCES`` with its reason, and the docstring of the gradcv function says so (it
names Kornia and the parameters concerned); a listed difference that goes away fails the
test, so the list stays true.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

import gradcv.core_ops as core_ops

kornia = pytest.importorskip("kornia")

GRADCV_MODULES = ("color", "filters", "pyramid", "geometry", "losses", "contrib", "features")
# Where Kornia keeps the same names, searched in this order (kornia.enhance holds the
# colour adjustments, kornia.metrics the SSIM module, kornia.geometry re-exports most of
# its sub-packages).
KORNIA_MODULES = (
    "kornia.color",
    "kornia.enhance",
    "kornia.filters",
    "kornia.geometry",
    "kornia.geometry.transform",
    "kornia.geometry.conversions",
    "kornia.geometry.linalg",
    "kornia.geometry.camera",
    "kornia.geometry.homography",
    "kornia.geometry.ransac",
    "kornia.geometry.depth",
    "kornia.geometry.subpix",
    "kornia.losses",
    "kornia.metrics",
    "kornia.contrib",
    "kornia.feature",
    "kornia.utils",
)

# name -> (why gradcv differs, words its docstring must contain to say so)
DIFFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    # an extra trailing option with a default: every Kornia call works unchanged
    "AdjustBrightness": ("the module also takes the function's clip_output", ("Kornia", "clip_output")),
    "AdjustContrast": ("the module also takes the function's clip_output", ("Kornia", "clip_output")),
    "AdjustSaturation": ("the module also takes the function's eps", ("Kornia", "eps")),
    "adjust_saturation": ("eps, fixed at 1e-8 inside Kornia, is an argument", ("Kornia", "eps")),
    "ScalePyramid": ("input_sigma: the blur the input already has, Kornia's fixed 0.5", ("Kornia", "input_sigma")),
    "TotalVariation": ("the module also takes the function's reduction", ("Kornia", "reduction")),
    "SSIM": ("window_size has a default (11, as skimage and the paper); Kornia requires it", ("Kornia", "window_size")),
    "ssim": ("window_size has a default (11); Kornia requires it", ("Kornia", "window_size")),
    "SSIMLoss": ("window_size has a default (11); Kornia requires it", ("Kornia", "window_size")),
    "ssim_loss": ("window_size has a default (11); Kornia requires it", ("Kornia", "window_size")),
    # the same meaning under another default value
    "conv_soft_argmax3d": (
        "strict_maxima_bonus defaults to 0.0, no bonus: Kornia 0.9's None (deprecated, ignored)",
        ("Kornia", "strict_maxima_bonus"),
    ),
    "ConvSoftArgmax3d": ("as conv_soft_argmax3d", ("Kornia", "strict_maxima_bonus")),
    "spatial_soft_argmax2d": ("temperature defaults to 1.0, what Kornia's None means", ("Kornia", "temperature")),
    "SpatialSoftArgmax2d": ("as spatial_soft_argmax2d", ("Kornia", "temperature")),
    # another default on purpose
    "median_blur": ("border_type defaults to 'replicate', OpenCV's medianBlur border", ("Kornia", "border_type")),
    "MedianBlur": ("as median_blur", ("Kornia", "border_type")),
    "find_homography_dlt": (
        "solver defaults to 'svd' (the null space, no gauge that fails when h[8] = 0); Kornia's 'lu' is available",
        ("Kornia", "solver"),
    ),
    "DepthWarper": (
        "align_corners defaults to False, the one convention of gradcv; it has no effect",
        ("Kornia", "align_corners"),
    ),
    # Kornia parameters gradcv does not take
    "pyrdown": (
        "OpenCV's exact decimation: no align_corners (one convention) and no factor (always 2)",
        ("Kornia", "align_corners", "factor"),
    ),
    "pyrup": ("OpenCV's exact pyrUp: no align_corners (one convention)", ("Kornia", "align_corners")),
    "PyrDown": ("as pyrdown", ("Kornia", "align_corners", "factor")),
    "PyrUp": ("as pyrup", ("Kornia", "align_corners")),
    "build_pyramid": ("levels from pyrdown: no align_corners", ("Kornia", "align_corners")),
    "normalize_homography": ("one convention, align_corners=False: no align_corners", ("Kornia", "align_corners")),
    "normal_transform_pixel": ("one convention, align_corners=False: no align_corners", ("Kornia", "align_corners")),
    "denormalize_homography": (
        "one convention, no align_corners; the first argument is named for what it is "
        "(dst_norm_trans_src_norm; Kornia calls it dst_pix_trans_src_pix)",
        ("Kornia", "align_corners", "dst_pix_trans_src_pix"),
    ),
    "rotation_matrix_to_axis_angle": (
        "no check_rotation: checking values would synchronise with the device",
        ("Kornia", "check_rotation"),
    ),
    "rotation_matrix_to_quaternion": ("no check_rotation, as rotation_matrix_to_axis_angle", ("Kornia", "check_rotation")),
    "combine_tensor_patches": ("no eps: deprecated and without effect in Kornia 0.9", ("Kornia", "eps")),
    "RANSAC": (
        "the LO-RANSAC core only: no PROSAC, score types, DEGENSAC or compile options; "
        "batch_size is a number (2048), not 'auto'",
        ("Kornia", "batch_size"),
    ),
    "SIFTFeature": (
        "Kornia's later config, compile_model, score_threshold, descriptor_backend and "
        "descriptor_layout are not taken: one DoG scale-space pipeline configured like OpenCV's, "
        "in Kornia's descriptor layout",
        ("Kornia", "config", "compile_model", "score_threshold"),
    ),
    "depth_warp": (
        "another function under Kornia's name: an image, a depth map, intrinsics and a pose "
        "in, where Kornia takes two PinholeCameras and warps a patch",
        ("Kornia", "PinholeCamera"),
    ),
}


def _gradcv_names() -> dict[str, Any]:
    """Public functions and classes defined in the operator modules, by name."""
    names: dict[str, Any] = {}
    for module_name in GRADCV_MODULES:
        module = getattr(core_ops, module_name)
        public = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        for name in public:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(module.__name__):
                names.setdefault(name, obj)
    return names


def _kornia_object(name: str) -> Any:
    for module_name in KORNIA_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        obj = getattr(module, name, None)
        if obj is not None and (inspect.isfunction(obj) or inspect.isclass(obj)):
            return obj
    return None


SHARED = {name: (obj, _kornia_object(name)) for name, obj in sorted(_gradcv_names().items())}
SHARED = {name: pair for name, pair in SHARED.items() if pair[1] is not None}
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _parameters(obj: Any) -> list[inspect.Parameter]:
    params = list(inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters.values())
    return params[1:] if inspect.isclass(obj) else params


def _same_default(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        a = tuple(a)
    if isinstance(b, list):
        b = tuple(b)
    if a is b:
        return True
    try:
        # True == 1 in Python, but a bool default is not an int default
        return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)
    except Exception:  # a tensor default compares elementwise
        return False


def signature_differences(ours: Any, theirs: Any) -> list[str]:
    """What a Kornia user would trip over, in words (empty: the signatures agree)."""
    mine, kornias = _parameters(ours), _parameters(theirs)
    found = []
    my_positional = [p.name for p in mine if p.kind in POSITIONAL]
    their_positional = [p.name for p in kornias if p.kind in POSITIONAL]
    if my_positional != their_positional:
        found.append(f"positional parameters {my_positional}, Kornia's {their_positional}")
    by_name = {p.name: p for p in mine}
    for p in kornias:
        if p.kind in VARIADIC:
            continue
        q = by_name.get(p.name)
        if q is None:
            if p.kind == inspect.Parameter.KEYWORD_ONLY:
                found.append(f"no keyword {p.name}")
        elif not _same_default(q.default, p.default):
            found.append(f"{p.name} defaults to {q.default!r}, Kornia's to {p.default!r}")
    return found


def test_shared_names_are_many():
    # gradcv's operator layer mirrors Kornia's: a drop here means names were renamed away
    assert len(SHARED) >= 130, len(SHARED)
    assert set(DIFFERENCES) <= set(SHARED), set(DIFFERENCES) - set(SHARED)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_signature_matches_kornia(name):
    ours, theirs = SHARED[name]
    found = signature_differences(ours, theirs)
    if name not in DIFFERENCES:
        assert not found, f"{name} differs from Kornia's: {'; '.join(found)}"
        return
    reason, words = DIFFERENCES[name]
    assert found, f"{name} now matches Kornia's signature: remove it from DIFFERENCES ({reason})"
    doc = inspect.getdoc(ours) or ""
    missing = [w for w in words if w not in doc]
    assert not missing, f"{name}'s docstring does not say why it differs from Kornia (missing {missing}): {reason}"


def test_the_check_sees_differences():
    def kornia_like(image, factor, clip_output=True):  # noqa: ANN001, ANN202
        return image

    def reordered(factor, image, clip_output=True):  # noqa: ANN001, ANN202
        return image

    def other_default(image, factor, clip_output=False):  # noqa: ANN001, ANN202
        return image

    def keyword_extra(image, factor, clip_output=True, *, eps=0.0):  # noqa: ANN001, ANN202
        return image

    def positional_extra(image, factor, clip_output=True, eps=0.0):  # noqa: ANN001, ANN202
        return image

    assert signature_differences(kornia_like, kornia_like) == []
    assert signature_differences(keyword_extra, kornia_like) == []
    assert signature_differences(reordered, kornia_like)
    assert signature_differences(other_default, kornia_like)
    assert signature_differences(positional_extra, kornia_like)
    assert signature_differences(kornia_like, keyword_extra) == ["no keyword eps"]
