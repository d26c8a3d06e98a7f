"""Every operator ``nn.Module`` of ``gradcv.core_ops``, each with a small constructor and
small inputs, for the production tests (``torch.compile``, ``torch.export``, ONNX).

:func:`discover` lists the modules from the subpackages' ``__all__`` (and the public
classes of ``pyramid.py``, which has none), so a module added later is caught by
``test_every_module_is_covered`` until it gets a :data:`CASES` entry or a :data:`SKIPPED`
reason. Inputs are seeded and tiny: Dynamo traces every Python line once per shape.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

import torch
from torch import nn

from gradcv.core_ops import color, contrib, features, filters, geometry, losses, pyramid

SUBPACKAGES = ("color", "contrib", "features", "filters", "geometry", "losses", "pyramid")

Factory = Callable[[str], nn.Module]
Inputs = Callable[[str], tuple[torch.Tensor, ...]]

# The modules whose output shapes or control flow depend on the data: no fixed-size graph
# exists for them, so torch.compile(fullgraph=True) must break (test_skipped_still_break).
SKIPPED: dict[str, str] = {
    "RANSAC": (
        "iterates until the inlier ratio reaches the confidence (a host-side stopping "
        "test) and draws its samples from a torch.Generator made per call"
    ),
}


# Compiled forward equals eager, but the input gradient does not (yet): max |difference|
# 0.33 against a largest gradient of 111 on the blobs input, well above rounding. Found by
# these tests, not explained yet (the detector alone, SIFTFeature and LocalFeature match).
FORWARD_ONLY: dict[str, str] = {
    "HessianSIFT": "compiled input gradient differs from eager by 0.3 % of its largest value (open)",
}


def discover() -> dict[str, type]:
    """``name -> class`` of every public ``nn.Module`` subclass in the subpackages."""
    found: dict[str, type] = {}
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"gradcv.core_ops.{sub}")
        names = getattr(module, "__all__", None)
        if names is None:  # pyramid.py: its public classes
            names = [n for n, v in vars(module).items() if not n.startswith("_") and inspect.isclass(v) and v.__module__ == module.__name__]
        for name in names:
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, nn.Module):
                found[name] = value
    return found


def image(device: str, b: int = 1, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g).to(device)


def blobs(device: str, size: int, seed: int = 0) -> torch.Tensor:
    """``(2, 1, size, size)``: Gaussian blobs of a few sizes on a dim background (a
    detector's input with extrema at several scales)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    out = torch.full((2, 1, size, size), 0.1)
    for b in range(2):
        for cx, cy, s in torch.rand(6, 3, generator=g).tolist():
            out[b, 0] += torch.exp(-((x - 4 - cx * (size - 8)) ** 2 + (y - 4 - cy * (size - 8)) ** 2) / (2 * (1.0 + 2.5 * s) ** 2))
    return (out / out.amax()).to(device)


def labels(device: str, classes: int = 3, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, classes, (1, size, size), generator=g).to(device)


def lafs(device: str) -> torch.Tensor:
    """Three ``(1, 3, 2, 3)`` LAFs inside a 32 x 32 image."""
    centres = torch.tensor([[10.0, 12.0], [20.0, 16.0], [15.0, 22.0]])
    shape = torch.tensor([[4.0, 1.0], [-0.5, 3.0]]).expand(3, 2, 2)
    return torch.cat([shape, centres[:, :, None]], -1)[None].to(device)


def descriptors(device: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.rand(1, 6, 8, generator=g), dim=-1).to(device)


def camera(device: str, tx: float = 0.0) -> geometry.PinholeCamera:
    k = torch.tensor([[[20.0, 0.0, 8.0, 0.0], [0.0, 20.0, 8.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    e = torch.eye(4)[None].clone()
    e[0, 0, 3] = tx
    size = torch.tensor([16.0])
    return geometry.PinholeCamera(k.to(device), e.to(device), size.to(device), size.to(device))


def depth_warper(device: str) -> nn.Module:
    warper = geometry.DepthWarper(camera(device), 16, 16)
    warper.compute_projection_matrix(camera(device, tx=0.1))
    return warper


HOMOGRAPHY = [[1.0, 0.05, 0.02], [0.0, 0.98, -0.03], [0.01, 0.0, 1.0]]


def _t(values: object, device: str) -> torch.Tensor:
    return torch.tensor(values, device=device)


CASES: dict[str, tuple[Factory, Inputs]] = {
    # color
    "AdjustBrightness": (lambda d: color.AdjustBrightness(0.2), lambda d: (image(d),)),
    "AdjustContrast": (lambda d: color.AdjustContrast(0.7), lambda d: (image(d),)),
    "AdjustHue": (lambda d: color.AdjustHue(0.3), lambda d: (image(d),)),
    "AdjustSaturation": (lambda d: color.AdjustSaturation(1.5), lambda d: (image(d),)),
    "BgrToGrayscale": (lambda d: color.BgrToGrayscale(), lambda d: (image(d),)),
    "BgrToRgb": (lambda d: color.BgrToRgb(), lambda d: (image(d),)),
    "HsvToRgb": (lambda d: color.HsvToRgb(), lambda d: (image(d) * _t([6.28, 1.0, 1.0], d).view(1, 3, 1, 1),)),
    "RgbToBgr": (lambda d: color.RgbToBgr(), lambda d: (image(d),)),
    "RgbToGrayscale": (lambda d: color.RgbToGrayscale(), lambda d: (image(d),)),
    "RgbToHsv": (lambda d: color.RgbToHsv(), lambda d: (image(d),)),
    "RgbToYcbcr": (lambda d: color.RgbToYcbcr(), lambda d: (image(d),)),
    "YcbcrToRgb": (lambda d: color.YcbcrToRgb(), lambda d: (image(d),)),
    # contrib
    "CombineTensorPatches": (lambda d: contrib.CombineTensorPatches((8, 8), (4, 4)), lambda d: (image(d, 1, 12, 4, 4).view(1, 4, 3, 4, 4),)),
    "ConvSoftArgmax2d": (lambda d: contrib.ConvSoftArgmax2d(), lambda d: (image(d, 1, 2, 8, 8),)),
    "ConvSoftArgmax3d": (lambda d: contrib.ConvSoftArgmax3d(), lambda d: (image(d, 1, 3, 8, 8)[:, None],)),
    "ExtractTensorPatches": (lambda d: contrib.ExtractTensorPatches((4, 4), 2), lambda d: (image(d, 1, 2, 8, 10),)),
    "SpatialSoftArgmax2d": (lambda d: contrib.SpatialSoftArgmax2d(), lambda d: (image(d, 1, 2, 8, 8),)),
    # features: responses, NMS, orientation, shape, descriptors, matching
    "BlobDoG": (lambda d: features.BlobDoG(), lambda d: (image(d, 1, 4)[:, None], _t([[1.0, 1.3, 1.6, 2.0]], d))),
    "BlobDoGSingle": (lambda d: features.BlobDoGSingle(), lambda d: (image(d, 1, 1),)),
    "BlobHessian": (lambda d: features.BlobHessian(), lambda d: (image(d, 1, 1),)),
    "CornerGFTT": (lambda d: features.CornerGFTT(), lambda d: (image(d, 1, 1),)),
    "CornerHarris": (lambda d: features.CornerHarris(0.04), lambda d: (image(d, 1, 1),)),
    "DescriptorMatcher": (lambda d: features.DescriptorMatcher("snn", 0.9), lambda d: (descriptors(d, 1), descriptors(d, 2))),
    "LAFAffineShapeEstimator": (lambda d: features.LAFAffineShapeEstimator(patch_size=8), lambda d: (lafs(d), image(d, 1, 1, 32, 32))),
    "LAFDescriptor": (
        lambda d: features.LAFDescriptor(features.SIFTDescriptor(8), patch_size=8),
        lambda d: (image(d, 1, 1, 32, 32), lafs(d)),
    ),
    "LAFOrienter": (lambda d: features.LAFOrienter(patch_size=8, max_orientations=1), lambda d: (lafs(d), image(d, 1, 1, 32, 32))),
    "NonMaximaSuppression2d": (lambda d: features.NonMaximaSuppression2d((3, 3)), lambda d: (image(d, 1, 2, 8, 8),)),
    "NonMaximaSuppression3d": (lambda d: features.NonMaximaSuppression3d((3, 3, 3)), lambda d: (image(d, 1, 3, 8, 8)[:, None],)),
    "PassLAF": (lambda d: features.PassLAF(), lambda d: (lafs(d), image(d, 1, 1, 32, 32))),
    "PatchAffineShapeEstimator": (lambda d: features.PatchAffineShapeEstimator(8), lambda d: (image(d, 3, 1, 8, 8),)),
    "PatchDominantGradientOrientation": (lambda d: features.PatchDominantGradientOrientation(8), lambda d: (image(d, 3, 1, 8, 8),)),
    "SIFTDescriptor": (lambda d: features.SIFTDescriptor(8), lambda d: (image(d, 3, 1, 8, 8),)),
    # detectors and the integrated features: fixed-size outputs with a validity mask
    "ScaleSpaceDetector": (lambda d: features.ScaleSpaceDetector(8), lambda d: (blobs(d, 32),)),
    "LocalFeature": (
        lambda d: features.LocalFeature(features.ScaleSpaceDetector(8), features.LAFDescriptor(features.SIFTDescriptor(8), patch_size=8)),
        lambda d: (blobs(d, 32),),
    ),
    "SIFTFeature": (lambda d: features.SIFTFeature(8, double_image=False, max_orientations=1), lambda d: (blobs(d, 44),)),
    "HessianSIFT": (lambda d: features.HessianSIFT(8, double_image=False, max_orientations=1), lambda d: (blobs(d, 44),)),
    # filters
    "BoxBlur": (lambda d: filters.BoxBlur(3), lambda d: (image(d),)),
    "GaussianBlur2d": (lambda d: filters.GaussianBlur2d(5, 1.2), lambda d: (image(d),)),
    "Laplacian": (lambda d: filters.Laplacian(3), lambda d: (image(d),)),
    "MedianBlur": (lambda d: filters.MedianBlur(3), lambda d: (image(d),)),
    "Sobel": (lambda d: filters.Sobel(), lambda d: (image(d),)),
    "SpatialGradient": (lambda d: filters.SpatialGradient(), lambda d: (image(d),)),
    # geometry
    "Affine": (lambda d: geometry.Affine(angle=_t([20.0], d), translation=_t([[1.0, -2.0]], d)), lambda d: (image(d),)),
    "DepthWarper": (depth_warper, lambda d: (image(d, 1, 1) + 1.0, image(d, seed=1))),
    "HomographyWarper": (lambda d: geometry.HomographyWarper(16, 16), lambda d: (image(d), _t([HOMOGRAPHY], d))),
    "Resize": (lambda d: geometry.Resize((10, 12)), lambda d: (image(d),)),
    "Rotate": (lambda d: geometry.Rotate(_t([30.0], d)), lambda d: (image(d),)),
    "Scale": (lambda d: geometry.Scale(_t([[1.2, 0.9]], d)), lambda d: (image(d),)),
    "Shear": (lambda d: geometry.Shear(_t([[0.1, -0.2]], d)), lambda d: (image(d),)),
    "Translate": (lambda d: geometry.Translate(_t([[1.5, -2.0]], d)), lambda d: (image(d),)),
    # losses
    "CharbonnierLoss": (lambda d: losses.CharbonnierLoss(), lambda d: (image(d), image(d, seed=1))),
    "DiceLoss": (lambda d: losses.DiceLoss(), lambda d: (image(d, 1, 3, 8, 8), labels(d))),
    "FocalLoss": (lambda d: losses.FocalLoss(0.5), lambda d: (image(d, 1, 3, 8, 8), labels(d))),
    "HuberLoss": (lambda d: losses.HuberLoss(), lambda d: (image(d), image(d, seed=1))),
    "InverseDepthSmoothnessLoss": (lambda d: losses.InverseDepthSmoothnessLoss(), lambda d: (image(d, 1, 1), image(d, seed=1))),
    "L1Loss": (lambda d: losses.L1Loss(), lambda d: (image(d), image(d, seed=1))),
    "L2Loss": (lambda d: losses.L2Loss(), lambda d: (image(d), image(d, seed=1))),
    "NCCLoss": (lambda d: losses.NCCLoss(), lambda d: (image(d), image(d, seed=1))),
    "PSNRLoss": (lambda d: losses.PSNRLoss(1.0), lambda d: (image(d), image(d, seed=1))),
    "SSIM": (lambda d: losses.SSIM(5), lambda d: (image(d), image(d, seed=1))),
    "SSIMLoss": (lambda d: losses.SSIMLoss(5), lambda d: (image(d), image(d, seed=1))),
    "TotalVariation": (lambda d: losses.TotalVariation(), lambda d: (image(d),)),
    "TverskyLoss": (lambda d: losses.TverskyLoss(0.5, 0.5), lambda d: (image(d, 1, 3, 8, 8), labels(d))),
    # pyramid
    "PyrDown": (lambda d: pyramid.PyrDown(), lambda d: (image(d),)),
    "PyrUp": (lambda d: pyramid.PyrUp(), lambda d: (image(d, 1, 3, 8, 8),)),
    "ScalePyramid": (lambda d: pyramid.ScalePyramid(2, min_size=8), lambda d: (image(d, 1, 1, 32, 32),)),
}


def figure2() -> nn.Module:
    """The paper's Figure 2 listing: grayscale, then the Sobel gradient magnitude."""
    return nn.Sequential(color.RgbToGrayscale(), filters.Sobel())


def flatten(out: object) -> list[torch.Tensor]:
    """The tensors of a (nested) output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    assert isinstance(out, (tuple, list)), type(out)
    return [t for item in out for t in flatten(item)]
