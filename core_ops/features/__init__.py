"""Local features: responses, scale-space detection, local affine frames, orientation,
affine shape, the SIFT descriptor, local-feature pipelines and descriptor matching.

Kornia's names, arguments, defaults and return conventions (``kornia.feature``), in
gradcv's one pixel convention: keypoint centres at integer pixel coordinates, as
OpenCV's ``KeyPoint.pt``.
"""

__all__: list[str] = []
