"""Shared fixtures: real photographs (shipped with matplotlib and scikit-image) as tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import to_numpy, to_tensor  # noqa: F401  (re-exported for tests)


def _load_grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = mpimg.imread(f, format="jpg")
    return np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0


def _load_skimage(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Real RGB photographs as float32 HxWx3 arrays in [0, 1], of different (odd) sizes."""
    hopper = _load_grace_hopper()  # 600 x 512
    coffee = _load_skimage("coffee")  # 400 x 600
    chelsea = _load_skimage("chelsea")[:, :-2]  # 300 x 449: odd width
    astronaut = _load_skimage("astronaut")[5:262, 100:333]  # 257 x 233: odd both
    return [hopper, coffee, chelsea, astronaut]


@pytest.fixture(scope="session")
def photo_gray(photos) -> list[np.ndarray]:
    """The photographs as float32 grayscale (ITU-R BT.601 weights, as OpenCV)."""
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return [np.ascontiguousarray(p @ w) for p in photos]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Every device this machine has: the CPU, and the GPU where there is one, so the same
    suite runs unchanged on a GPU machine."""
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _no_tf32():
    """Full float32 on the GPU: cuDNN convolutions default to TF32 (10-bit mantissa) on
    Ampere and later, which would fail every float32 tolerance that holds on the CPU. The
    legacy flag sets convolutions and RNNs alike (mixing it with the new per-op flags
    makes PyTorch raise)."""
    if not torch.cuda.is_available():
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(params=["gray", "rgb"])
def images(request, photos, photo_gray) -> list[np.ndarray]:
    """The four photographs, grayscale (HxW) or RGB (HxWx3), float32 in [0, 1]; two have
    odd sizes (300x449, 257x233)."""
    return photo_gray if request.param == "gray" else photos


@pytest.fixture(scope="module")
def batch(photos) -> torch.Tensor:
    """Three RGB crops of different photographs, odd sizes: (3, 3, 19, 23)."""
    return torch.cat([to_tensor(p[40:59, 60:83]) for p in photos[:3]])
