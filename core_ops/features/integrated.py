"""Local-feature pipelines: a detector and a descriptor in one module (Kornia's ``LocalFeature``),
and the two SIFT pipelines of issue 12, ``SIFTFeature`` (DoG, as OpenCV's SIFT) and
``HessianSIFT`` (the paper's attack pipeline: Hessian, orientation, SIFT).

Every pipeline returns a fixed number of slots per image, ``num_features``; where fewer
features are found the remaining slots are padding: zero LAF, zero response and zero
descriptor. :meth:`LocalFeature.detect_and_describe` also returns the ``(B, N)`` validity
mask, so that no caller has to guess it from the values.

Convention:
    LAF centres in input pixels with pixel centres at integer coordinates (OpenCV's
    ``KeyPoint.pt``), as every module of ``gradcv.core_ops.features``. The LAFs returned are
    the frames the descriptor described: a LAF's patch spans ``2 * scale`` pixels
    (:func:`~gradcv.core_ops.features.laf.extract_patches_from_pyramid`).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import nn

from gradcv.core_ops._checks import check_bool, check_image, check_int, check_real
from gradcv.core_ops.errors import ArgumentTypeError, ShapeError
from gradcv.core_ops.features.laf import laf_from_center_scale_ori, laf_is_filled, scale_laf
from gradcv.core_ops.features.orientation import LAFOrienter
from gradcv.core_ops.features.responses import BlobHessian
from gradcv.core_ops.features.scale_space_detector import ScaleSpaceDetector
from gradcv.core_ops.features.siftdesc import LAFDescriptor, SIFTDescriptor
from gradcv.core_ops.filters.blur import GaussianBlur2d
from gradcv.core_ops.pyramid import ScalePyramid

__all__ = ["HessianSIFT", "LocalFeature", "SIFTFeature"]

#: LAF scale over detection sigma of the SIFT pipelines' descriptor frame: OpenCV's SIFT
#: describes ``4 + 1`` cells of ``3 sigma`` (the outer tents included), 15 sigma across,
#: which is ``2 * scale`` for :class:`SIFTDescriptor`'s patch (cells ``PS / 5`` apart).
SIFT_DESCRIPTOR_SCALE = 7.5
#: LAF scale over sigma of OpenCV's orientation window (radius ``3 * 1.5 sigma``), the frame
#: :class:`PatchDominantGradientOrientation` expects.
SIFT_ORIENTATION_SCALE = 4.5
#: Side of the orientation patches: OpenCV's window has 15 to 29 level pixels across; 20
#: samples gave the same matching accuracy as 32 in ~60 ms less for 2500 keypoints.
ORIENTATION_PATCH_SIZE = 20
#: The smallest image side the pipelines take: a descriptor window of the finest scale
#: (OpenCV's 41-pixel SIFT patch).
MIN_IMAGE_SIZE = 41
#: The Gaussian sigma, in patch pixels per pixel of patch side, with which the SIFT pipelines
#: smooth a descriptor patch when ``scale_smoothing`` is on: OpenCV's SIFT describes the
#: Gaussian level of its keypoint, the image blurred by the detection's sigma, which is
#: ``PS / 15`` patch pixels (the patch spans 15 sigma); the patch's own sampling from the
#: pyramid smooths a little already. Measured on OpenCV's keypoints of two 400 x 300
#: photographs, 32-pixel patches, distance of our unit descriptor to OpenCV's: 0.40-0.46
#: (median) unsmoothed, 0.137-0.144 at ``PS / 18``, 0.112-0.120 at ``PS / 16``, 0.115-0.121
#: at ``PS / 15``, 0.128-0.137 at ``PS / 14``.
SCALE_SMOOTHING = 1.0 / 16.0


#: On the CPU, :meth:`LocalFeature.detect_and_describe` works through a batch in chunks of at
#: most this many input pixels (at least one image each): one 400 x 300 image. Two made the
#: Hessian of the doubled first octave 55 MiB temporaries, above glibc's 32 MiB mmap ceiling,
#: mapped and faulted in on every call: an attack step on a 400 x 300 pair took 1.36 s with
#: two images a chunk and 1.27 s with one (60k against 4k minor faults per pair-step).
CPU_CHUNK_PIXELS = 1 << 17


def cpu_chunks(count: int, pixels: int) -> list[slice]:
    """The slices of ``count`` items of ``pixels`` input pixels each that the CPU works
    through one at a time: as many items as :data:`CPU_CHUNK_PIXELS` holds, at least one
    (the feature batch here, the matching pipeline's and the attack's pairs)."""
    step = max(1, CPU_CHUNK_PIXELS // max(pixels, 1))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def _check_module(module: object, name: str) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise ArgumentTypeError(name, nn.Module, type(module), f"{name}: expected a torch.nn.Module, got {type(module).__name__}")
    return module


class LocalFeature(nn.Module):
    """A detector and a descriptor as one module (Kornia's ``LocalFeature``).

    Args:
        detector: ``detector(img, mask) -> (lafs (B, N, 2, 3), responses (B, N))``, e.g.
            :class:`~gradcv.core_ops.features.scale_space_detector.ScaleSpaceDetector`
            (whose own validity mask is then used).
        descriptor: ``descriptor(img, lafs) -> (B, N, D)``, e.g.
            :class:`~gradcv.core_ops.features.siftdesc.LAFDescriptor`.
        scaling_coef: the detector's LAFs are multiplied by it (``scale_laf``) before the
            description; positive.

    Shape:
        ``img (B, C, H, W)`` (what the detector takes), optional ``mask (B, 1, H, W)`` ->
        ``lafs (B, N, 2, 3)``, ``responses (B, N)``, ``descriptors (B, N, D)``.

    Convention:
        See the module. Unlike Kornia, whose padding slots share the descriptor of a patch
        sampled at the origin, a padding slot here has a zero descriptor, and
        :meth:`detect_and_describe` gives the validity mask. A detector other than gradcv's
        ``ScaleSpaceDetector`` is taken to pad with all-zero LAFs (Kornia's contract:
        ``laf_is_filled``).

    Example:
        >>> from gradcv.core_ops.features.scale_space_detector import ScaleSpaceDetector
        >>> from gradcv.core_ops.features.siftdesc import LAFDescriptor, SIFTDescriptor
        >>> lf = LocalFeature(ScaleSpaceDetector(16), LAFDescriptor(SIFTDescriptor(41), 41))
        >>> lafs, responses, descs = lf(torch.rand(1, 1, 64, 64))
        >>> lafs.shape, responses.shape, descs.shape
        (torch.Size([1, 16, 2, 3]), torch.Size([1, 16]), torch.Size([1, 16, 128]))
    """

    def __init__(self, detector: nn.Module, descriptor: nn.Module, scaling_coef: float = 1.0) -> None:
        super().__init__()
        self.detector = _check_module(detector, "detector")
        self.descriptor = _check_module(descriptor, "descriptor")
        self.scaling_coef = check_real(scaling_coef, "scaling_coef", low=0.0, low_open=True)

    def _check_input(self, img: object, mask: object) -> None:
        check_image(img, "img")

    def _detect(self, img: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lafs (B, N, 2, 3)``, ``responses (B, N)`` and the validity mask ``(B, N)``."""
        if isinstance(self.detector, ScaleSpaceDetector):
            return self.detector(img, mask, return_mask=True)
        lafs, responses = self.detector(img, mask)
        return lafs, responses, laf_is_filled(lafs)

    def detect_and_describe(
        self, img: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detect and describe; returns ``(lafs, responses, descriptors, valid)``.

        ``valid (B, N)`` is True for the slots that hold a feature; the others are zero in
        the three other outputs.
        """
        self._check_input(img, mask)
        assert isinstance(img, torch.Tensor)
        b, _, h, w = img.shape
        slices = cpu_chunks(b, h * w)
        if img.device.type == "cpu" and len(slices) > 1 and not torch.compiler.is_compiling():
            # On the CPU, a big batch in one pass makes every scale-space and patch temporary
            # a fresh block of hundreds of MB (page faults, cache misses): 8 images of 400 x 300
            # took 1.6x the time per image of 2, 2 images 1.07x that of 1. Images are
            # independent: chunks of CPU_CHUNK_PIXELS.
            def part(c: slice) -> Optional[torch.Tensor]:
                return None if mask is None else (mask if mask.shape[0] == 1 else mask[c])

            chunks = [self._detect_and_describe(img[c], part(c)) for c in slices]
            return tuple(torch.cat(t, 0) for t in zip(*chunks))  # type: ignore[return-value]
        return self._detect_and_describe(img, mask)

    def _detect_and_describe(
        self, img: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        lafs, responses, valid = self._detect(img, mask)
        lafs = scale_laf(lafs, self.scaling_coef)
        descriptors = _describe_valid(self.descriptor, img, lafs, valid)
        zero = torch.zeros((), dtype=lafs.dtype, device=lafs.device)
        lafs = torch.where(valid[..., None, None], lafs, zero)
        responses = torch.where(valid, responses, torch.zeros((), dtype=responses.dtype, device=responses.device))
        return lafs, responses, descriptors, valid

    def forward(self, img: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lafs, responses, descriptors)``, Kornia's return; see :meth:`detect_and_describe`."""
        lafs, responses, descriptors, _ = self.detect_and_describe(img, mask)
        return lafs, responses, descriptors


def _describe_valid(descriptor: nn.Module, img: torch.Tensor, lafs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``descriptor(img, lafs)`` with padding slots zeroed. A padding slot is described at a
    harmless frame (the image centre, unit-free scale 8 px) instead of its zero LAF, whose
    degenerate patch could give non-finite values or derivatives that a mask would not stop."""
    h, w = img.shape[-2:]
    centre = lafs.new_tensor([(w - 1) / 2, (h - 1) / 2])
    dummy = laf_from_center_scale_ori(centre.expand(*lafs.shape[:2], 2), lafs.new_full((*lafs.shape[:2], 1, 1), 8.0))
    safe = torch.where(valid[..., None, None], lafs, dummy.detach())
    descriptors = descriptor(img, safe)
    return torch.where(valid[..., None], descriptors, torch.zeros((), dtype=descriptors.dtype, device=descriptors.device))


class _OrientedSIFT(LocalFeature):
    """Scale-space detection, Lowe's (multiple) orientations, SIFT description."""

    def __init__(self, detector: ScaleSpaceDetector, num_features: int, upright: bool, rootsift: bool,
                 orientation_patch_size: int, max_orientations: int, device, descriptor_patch_size: int = 41,
                 scale_smoothing: bool = False) -> None:
        patch_descriptor: nn.Module = SIFTDescriptor(descriptor_patch_size, rootsift=rootsift)
        if scale_smoothing:
            sigma = SCALE_SMOOTHING * descriptor_patch_size
            smooth = GaussianBlur2d(2 * math.ceil(3 * sigma) + 1, (sigma, sigma), border_type="replicate")
            patch_descriptor = nn.Sequential(smooth, patch_descriptor)
        descriptor = LAFDescriptor(patch_descriptor, patch_size=descriptor_patch_size)
        super().__init__(detector, descriptor, 1.0)
        self.num_features = num_features
        self.upright = upright
        self.rootsift = rootsift
        self.scale_smoothing = scale_smoothing
        self.max_orientations = max_orientations
        self.orienter = None if upright else LAFOrienter(orientation_patch_size, max_orientations=max_orientations)
        if device is not None:
            self.to(device)

    def _check_input(self, img: object, mask: object) -> None:
        check_image(img, "img", channels=1)
        assert isinstance(img, torch.Tensor)
        if min(img.shape[-2:]) < MIN_IMAGE_SIZE:
            ps = MIN_IMAGE_SIZE
            raise ShapeError("img", f"H, W >= {ps}", tuple(img.shape),
                             f"img: expected height and width of at least a patch ({ps} pixels), got {tuple(img.shape)}")

    def _detect(self, img: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        responses, lafs, valid = self.detector.detect(img, self.num_features, mask, return_mask=True)
        if self.orienter is None:
            return lafs, responses, valid
        b, n = responses.shape
        k = self.max_orientations
        # The orientation window is OpenCV's (4.5 sigma); the frames come back at the
        # descriptor's scale (a rotation commutes with the scaling).
        ratio = SIFT_ORIENTATION_SCALE / self.detector.mr_size
        oriented, ovalid = self.orienter.multi_orient(scale_laf(lafs, ratio), img, valid)
        oriented = scale_laf(oriented, 1.0 / ratio)
        # Every orientation is a feature of its own, as in OpenCV: the strongest
        # num_features slots are kept, a location's orientations in order.
        expanded = responses.repeat_interleave(k, 1)
        rank = torch.where(ovalid, expanded.detach(), torch.full((), -math.inf, dtype=responses.dtype, device=responses.device))
        order = rank.sort(dim=1, descending=True, stable=True).indices[:, :n]
        lafs = oriented.gather(1, order[..., None, None].expand(-1, -1, 2, 3))
        return lafs, expanded.gather(1, order), ovalid.gather(1, order)


class SIFTFeature(_OrientedSIFT):
    """DoG detection, Lowe's orientations and (Root)SIFT description, configured like OpenCV's SIFT
    (but for a contrast threshold that fills the feature budget: see ``contrast_threshold``).

    Kornia's name and first arguments (``kornia.feature.SIFTFeature``); the detector is
    :meth:`ScaleSpaceDetector.sift_dog` (3-D DoG extrema of a 3-level-per-octave pyramid on
    the doubled image, OpenCV's contrast and edge thresholds; soft sub-pixel refinement by
    default, Lowe's quadratic one as an option), every histogram peak above
    0.8 of the maximum is an orientation (an extra slot, as OpenCV), and
    :class:`~gradcv.core_ops.features.siftdesc.SIFTDescriptor` describes OpenCV's descriptor
    window sampled on 32 x 32 pixels (``descriptor_patch_size``).

    Args:
        num_features: slots per image (at least 1); the strongest features by ``|DoG|``,
            each orientation counting as one, as OpenCV's ``nfeatures``.
        upright: skip the orientation (every frame upright, one per location).
        rootsift: RootSIFT descriptors (Kornia's default) rather than Lowe's.
        device: where the module's buffers live (``None``: CPU).
        contrast_threshold: OpenCV's ``contrastThreshold`` for images in [0, 1]. The
            default, 0.01, is a quarter of OpenCV's 0.04: with OpenCV's value a photograph
            fills about half of a 2500-feature budget (1266 on the 12 bench pairs), hence
            fewer correct matches than OpenCV returning the full budget (744 against 1076);
            0.01 fills it with stable extrema (MMA@3 0.915, 1181 correct), 0 with every
            extremum (0.891, 1202). ``0.04`` gives OpenCV's exactly.
        edge_threshold: OpenCV's ``edgeThreshold`` (10).
        double_image: start from the image upsampled twice, as OpenCV (without it a
            640 x 480 photograph has a few hundred DoG extrema at most, against thousands).
        subpix_module: ``'soft'`` (a soft arg-max over the 3 x 3 x 3 window: positions and
            scales are smooth functions of the image) or ``'quadratic'`` (Lowe's iterative
            refinement, OpenCV's). The soft one is the default: on 4 bench pairs (2500
            features, contrast 0) repeatability 0.62 -> 0.70, MMA@3 0.907 -> 0.933 and
            correct matches 1255 -> 1434 over the quadratic one, in less time.
        max_orientations: orientation slots per location.
        descriptor_patch_size: pixels across the descriptor's patch (the window is the same,
            ``7.5 sigma``, whatever the size). 32 by default: on the 12 bench pairs it
            describes 2500 features about 55 ms faster than 41 (the SIFT descriptor's time
            grows with the patch's area) for MMA@3 0.911 against 0.915 and the same correct
            matches (1181); ``HessianSIFT`` keeps 41, where 32 cost it its margin over
            Kornia's Hessian + SIFT.
        scale_smoothing: describe each keypoint on the image smoothed to its detection
            scale, as OpenCV's SIFT describes the Gaussian level of its keypoint: the patch
            is blurred by :data:`SCALE_SMOOTHING` times its side before the histogram. It
            makes the descriptors OpenCV's (median unit distance to OpenCV's descriptor at
            OpenCV's own keypoints 0.11-0.12 against 0.38-0.46 without), and an attack on
            the pipeline then transfers to OpenCV (unsmoothed descriptors see finer detail,
            which an attack exploits and OpenCV's smoothing erases). Off by default: the
            finer detail matches better (``bench_features pairs=12``, one run: MMA@3 0.911
            against 0.886 smoothed and OpenCV's 0.891; correct matches 1181 against 1173)
            and costs less (143 against 157 ms an image).

    Differences from Kornia's ``SIFTFeature``: Kornia's runs a multi-resolution detector
    without scale selection, refinement, contrast or edge rejection and keeps one
    orientation; its other arguments (``config``, ``compile_model``, ``score_threshold``,
    ``descriptor_backend``, ``descriptor_layout``) are not taken: this is the scale-space
    pipeline, in Kornia's descriptor layout.

    Shape:
        ``img (B, 1, H, W)`` floating, values in [0, 1] for the thresholds to mean OpenCV's;
        ``mask (B, 1, H, W)`` optional -> ``lafs (B, N, 2, 3)``, ``responses (B, N)``,
        ``descriptors (B, N, 128)``, ``N = num_features``.

    Convention:
        Centres in input pixels, pixel centres at integers (OpenCV's ``KeyPoint.pt``). The
        LAF scale is ``7.5 sigma`` of the detection (``3.75 KeyPoint.size``): the frame
        whose patch spans OpenCV's descriptor window; orientations are measured on
        OpenCV's ``4.5 sigma`` window. ``get_laf_orientation`` is ``-KeyPoint.angle``
        (mod 360).

    Example:
        >>> sift = SIFTFeature(num_features=32)
        >>> lafs, responses, descs, valid = sift.detect_and_describe(torch.rand(1, 1, 64, 64))
        >>> descs.shape, valid.dtype
        (torch.Size([1, 32, 128]), torch.bool)
    """

    def __init__(
        self,
        num_features: int = 8000,
        upright: bool = False,
        rootsift: bool = True,
        device: Union[str, torch.device, None] = None,
        *,
        contrast_threshold: float = 0.01,
        edge_threshold: float = 10.0,
        double_image: bool = True,
        subpix_module: str = "soft",
        max_orientations: int = 4,
        descriptor_patch_size: int = 32,
        scale_smoothing: bool = False,
    ) -> None:
        check_int(num_features, "num_features", 1)
        check_bool(upright, "upright")
        check_bool(rootsift, "rootsift")
        check_int(max_orientations, "max_orientations", 1)
        check_int(descriptor_patch_size, "descriptor_patch_size", 8)
        check_bool(scale_smoothing, "scale_smoothing")
        detector = ScaleSpaceDetector.sift_dog(
            num_features, SIFT_DESCRIPTOR_SCALE, double_image=check_bool(double_image, "double_image"),
            contrast_threshold=contrast_threshold, edge_threshold=edge_threshold, subpix_module=subpix_module,
        )
        super().__init__(detector, num_features, upright, rootsift, ORIENTATION_PATCH_SIZE, max_orientations, device,
                         descriptor_patch_size, scale_smoothing)


class HessianSIFT(_OrientedSIFT):
    """Hessian blobs, Lowe's orientations and (Root)SIFT: the paper's attack pipeline.

    The detector of :meth:`ScaleSpaceDetector.hessian` (determinant of the Hessian times
    ``sigma^4`` on every level of a 3-level-per-octave pyramid, 3-D maxima, refinement) on the
    doubled image, then the orientations
    and descriptor of :class:`SIFTFeature`. Kornia has no such class; its pipeline is a
    ``LocalFeature`` of ``ScaleSpaceDetector(resp_module=BlobHessian(), ori_module=LAFOrienter(19))``
    and ``LAFDescriptor(SIFTDescriptor(41))``.

    Args:
        num_features: slots per image (at least 1), strongest responses first.
        upright: skip the orientation.
        rootsift: RootSIFT descriptors.
        device: where the module's buffers live (``None``: CPU).
        subpix_module: ``'soft'`` (the paper's soft refinement, smooth in the image; on 4
            bench pairs repeatability 0.75 -> 0.80, MMA@3 0.94 -> 0.956, correct matches
            1507 -> 1604 over ``'quadratic'``) or ``'quadratic'``.
        contrast_threshold: minimum refined response (0: every maximum).
        double_image: start from the image upsampled twice, as Kornia's Hessian pipeline
            (measured on 4 bench pairs: repeatability 0.53 -> 0.75, MMA@3 0.88 -> 0.94).
        max_orientations: orientation slots per location (1: one orientation, as Kornia).
        scale_smoothing: smooth each descriptor patch to the detection's scale, as
            :class:`SIFTFeature`'s option (off, as Kornia's pipeline).

    Shape:
        As :class:`SIFTFeature`.

    Convention:
        As :class:`SIFTFeature`: LAF scale ``7.5 sigma`` of the detection. The orientation
        patches are the orienter's default 32 pixels (SIFTFeature's 20 save time; here the
        32 measured MMA@3 0.936 against 0.935 on 12 bench pairs, Kornia's pipeline 0.9355).

    Example:
        >>> lafs, responses, descs = HessianSIFT(num_features=16)(torch.rand(2, 1, 64, 64))
        >>> lafs.shape, descs.shape
        (torch.Size([2, 16, 2, 3]), torch.Size([2, 16, 128]))
    """

    def __init__(
        self,
        num_features: int = 8000,
        upright: bool = False,
        rootsift: bool = True,
        device: Union[str, torch.device, None] = None,
        *,
        subpix_module: str = "soft",
        contrast_threshold: float = 0.0,
        double_image: bool = True,
        max_orientations: int = 4,
        scale_smoothing: bool = False,
    ) -> None:
        check_int(num_features, "num_features", 1)
        check_bool(upright, "upright")
        check_bool(rootsift, "rootsift")
        check_int(max_orientations, "max_orientations", 1)
        check_bool(scale_smoothing, "scale_smoothing")
        pyramid = ScalePyramid(3, 1.6, 15, double_image=check_bool(double_image, "double_image"), extra_levels=2)
        detector = ScaleSpaceDetector(
            num_features, SIFT_DESCRIPTOR_SCALE, pyramid, BlobHessian(), subpix_module, contrast_threshold=contrast_threshold
        )
        super().__init__(detector, num_features, upright, rootsift, 32, max_orientations, device, scale_smoothing=scale_smoothing)
