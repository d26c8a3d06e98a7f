"""The feature operators on the meta device (tensors with shapes and no data): what runs
there makes no tensor on the CPU behind the input's back and reads no value on the host
(.item(), bool(), .tolist() raise on meta), so it also runs on a GPU without a transfer or
a synchronisation. A CPU-only machine checks this here; the detector's candidate
extraction (nonzero, a data-dependent size) is the documented exception."""

from __future__ import annotations

import pytest
import torch

from gradcv.core_ops.features.affine_shape import PatchAffineShapeEstimator
from gradcv.core_ops.features.laf import extract_patches_from_pyramid, laf_from_center_scale_ori
from gradcv.core_ops.features.matching import match_mnn, match_smnn, match_snn
from gradcv.core_ops.features.nms import nms2d, nms3d
from gradcv.core_ops.features.orientation import PatchDominantGradientOrientation
from gradcv.core_ops.features.responses import dog_response, gftt_response, harris_response, hessian_response
from gradcv.core_ops.features.siftdesc import SIFTDescriptor
from gradcv.core_ops.pyramid import ScalePyramid, build_centred_pyramid

META = torch.device("meta")


def _empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device=META)


CASES = {
    "harris": lambda: harris_response(_empty(2, 1, 64, 80), 0.04),
    "gftt": lambda: gftt_response(_empty(2, 1, 64, 80)),
    "hessian": lambda: hessian_response(_empty(2, 1, 64, 80)),
    "hessian_large": lambda: hessian_response(_empty(2, 3, 300, 300)),  # above the CPU's row-block size
    "dog": lambda: dog_response(_empty(2, 1, 5, 16, 16)),
    "nms2d": lambda: nms2d(_empty(2, 1, 64, 80), (3, 3)),
    "nms3d": lambda: nms3d(_empty(2, 1, 5, 16, 16), (3, 3, 3)),
    "scale_pyramid": lambda: ScalePyramid(3, 1.6, 15)(_empty(2, 1, 64, 80))[0][0],
    "centred_pyramid": lambda: build_centred_pyramid(_empty(2, 3, 64, 80), 3)[-1],
    "patches": lambda: extract_patches_from_pyramid(
        _empty(2, 1, 64, 80), laf_from_center_scale_ori(_empty(2, 7, 2), _empty(2, 7, 1, 1)), 9),
    "sift": lambda: SIFTDescriptor(41)(_empty(70, 1, 41, 41)),  # constant buffers made on the CPU, moved per call
    "orientation": lambda: PatchDominantGradientOrientation()(_empty(70, 1, 32, 32)),
    "affine_shape": lambda: PatchAffineShapeEstimator()(_empty(5, 1, 19, 19)),
    "snn_batched": lambda: match_snn(_empty(2, 30, 8), _empty(2, 20, 8), 0.8, mask1=_empty(2, 30, dtype=torch.bool))[0],
    "mnn_batched": lambda: match_mnn(_empty(2, 30, 8), _empty(2, 20, 8))[0],
    "smnn_batched": lambda: match_smnn(_empty(2, 30, 8), _empty(2, 20, 8), 0.9)[0],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_runs_on_the_meta_device(name):
    out = CASES[name]()
    assert out.device == META


def test_a_tensor_on_another_device_is_a_typed_error_naming_it():
    """The detector's mask and the matchers' second descriptors and distance matrix must be
    on the first input's device (the meta device stands for a GPU beside the CPU)."""
    from gradcv.core_ops.errors import DeviceError
    from gradcv.core_ops.features.affine_shape import LAFAffineShapeEstimator
    from gradcv.core_ops.features.orientation import LAFOrienter

    from gradcv.core_ops.features.scale_space_detector import ScaleSpaceDetector

    cases = [
        (lambda: ScaleSpaceDetector(10)(torch.rand(1, 1, 64, 64), torch.ones(1, 1, 64, 64, device=META)), "mask"),
        (lambda: match_snn(torch.rand(5, 8), _empty(6, 8)), "desc2"),
        (lambda: match_mnn(torch.rand(2, 5, 8), _empty(2, 6, 8)), "desc2"),
        (lambda: match_snn(torch.rand(5, 8), torch.rand(6, 8), 0.8, _empty(5, 6)), "dm"),
        (lambda: LAFOrienter()(laf_from_center_scale_ori(torch.rand(1, 3, 2) * 30 + 10), _empty(1, 1, 64, 64)), "laf"),
        (lambda: LAFAffineShapeEstimator()(laf_from_center_scale_ori(torch.rand(1, 3, 2) * 30 + 10), _empty(1, 1, 64, 64)), "laf"),
    ]
    for call, name in cases:
        with pytest.raises(DeviceError) as info:
            call()
        assert info.value.name == name and str(info.value).startswith(name), str(info.value)
