"""Configuration of the gradient-descent depth solver (:func:`gradcv.depth.solver.estimate_depth`).

Two presets. :meth:`DepthConfig.default`: a full-resolution 96-plane robust sweep (range
narrowed by a quick coarse sweep, per-pixel minimum over sources, shiftable windows, SGM,
parabolic sub-plane fit), then 100 Adam steps on inverse depth at full resolution with a
pyramid parameterisation of the step, softmin over sources and second-order edge-aware
smoothness: fast and accurate. :meth:`DepthConfig.paper`: the paper's SGD with momentum,
7 scales of 500 iterations from a uniform random depth, loss at full size after
upsampling: slow and inaccurate, kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradcv.core_ops._checks import check_bool, check_int, check_real, check_str_choice, replace_fields
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError
from gradcv.optim import SCHEDULES, resolve_optimizer

__all__ = ["DepthConfig", "PARAMETERISATIONS", "INITIALISATIONS"]

#: What the optimiser moves per pixel.
PARAMETERISATIONS = ("inverse_depth", "depth", "log_depth")
#: Where the coarsest level starts.
INITIALISATIONS = ("plane_sweep", "constant", "uniform_random")


@dataclass(frozen=True)
class DepthConfig:
    """Settings of :func:`~gradcv.depth.solver.estimate_depth`.

    Attributes:
        scales: levels of the centred pyramid solved coarse to fine (``>= 1``; fewer are
            used when the image would drop below ``min_size``).
        iterations: steps per level (an int, or a tuple of one per level, coarse to fine).
        optimizer: a ``torch.optim`` / ``torch_optimizer`` class name.
        lr: learning rate, in units of the normalised parameter (inverse depth divided by
            the largest inverse depth of the range).
        momentum: SGD's momentum (ignored by other optimisers).
        lr_schedule: ``'constant'`` or ``'cosine'`` per level.
        alpha: weight of ``(1 - SSIM) / 2`` against L1 in the photometric term.
        ssim_window: odd Gaussian window of SSIM.
        smoothness: ``lambda``, weight of the edge-aware smoothness.
        smoothness_order: 1 (the paper's equation 4) or 2 (second order, zero on planes).
        edge_gamma: ``exp(-edge_gamma * |grad I|)`` edge weight of the smoothness.
        correction_levels: the step of each level is a sum of per-pixel corrections at
            that level's size and this many coarser ones (halving), bilinearly upsampled,
            so that low-frequency errors are fixed as fast as pixel ones (``0``: per pixel).
        correction_gate: the coarser corrections are switched off within 2 pixels of the
            level's starting depth edges (a relative inverse-depth step above this between
            neighbours of its 5x5 median); upsampled across an edge, they would move both
            sides together and widen the foreground into a halo (``0``: off).
        full_resolution_loss: evaluate every level's loss at full resolution, on its depth
            upsampled bilinearly (the paper's scheme; costs a full-size loss per step).
        parameterisation: ``'inverse_depth'``, ``'depth'`` or ``'log_depth'``.
        initialisation: ``'plane_sweep'``, ``'constant'`` or ``'uniform_random'``.
        planes: planes of the initial sweep.
        sweep_level: pyramid level the initial sweep runs at; gradient descent then runs
            from that level to the finest (coarser levels would only blur its edges).
        sweep_window: window of the sweep's cost (shiftable windows, per-pixel minimum
            over sources, parabolic sub-plane refinement).
        range_planes: planes of a quick sweep two levels coarser that narrows the depth
            range to the scene's before the sweep (``0``: sweep the whole range).
        sgm_p1, sgm_p2: semi-global matching penalties of the sweep's plane choice
            (:func:`gradcv.depth.sgm.semi_global_aggregation`; ``sgm_p2 = 0``: winner-take-all).
        disparity_fraction: without a ``depth_range``, the nearest depth is where the
            disparity to the nearest source reaches this fraction of the image width.
        normalise_gain: match each warped source's mean and std to the reference over
            their overlap (robust to a per-view gain and bias); the sweep's views are
            matched over the correspondences of the quick sweep of ``range_planes``
            (clipped values left out), or over whole images when that is off.
        aggregation: ``'mean'`` over the sources that see a pixel, or ``'min'`` (the
            per-pixel minimum over them: robust to occlusion with two or more sources).
        residual_threshold: pixels whose final photometric cost exceeds this are invalid.
        min_texture: pixels whose local reference std is below this are invalid.
        tolerance, patience: per-sample stopping on the relative loss change (0: never).
        min_size: smallest side of a pyramid level.
        blur_sigma: pre-blur of the pyramid.
        saturation: a channel value ``>= 1 - saturation`` or ``<= saturation`` is clipped:
            when more than 0.1 % of the values are, clipped channels are left out of the
            photometric terms (a pixel with no channel left gets its depth from its
            neighbours and is flagged invalid). ``0``: off.
        image_sigma: Gaussian pre-filter of every view before anything else (against
            sensor noise; ``0``: none).
        seed: seed of the uniform random initialisation.
    """

    scales: int = 4
    iterations: int | tuple[int, ...] = 100
    optimizer: str = "Adam"
    lr: float = 0.0007
    momentum: float = 0.9
    lr_schedule: str = "cosine"
    alpha: float = 0.85
    ssim_window: int = 5
    smoothness: float = 0.3
    smoothness_order: int = 2
    edge_gamma: float = 10.0
    correction_levels: int = 4
    correction_gate: float = 0.2
    full_resolution_loss: bool = False
    parameterisation: str = "inverse_depth"
    initialisation: str = "plane_sweep"
    planes: int = 96
    sweep_level: int = 0
    sweep_window: int = 5
    range_planes: int = 48
    sgm_p1: float = 0.002
    sgm_p2: float = 0.03
    disparity_fraction: float = 0.25
    normalise_gain: bool = True
    aggregation: str = "softmin"
    softmin_temperature: float = 0.02
    residual_threshold: float = 0.3
    min_texture: float = 2e-3
    tolerance: float = 0.0
    patience: int = 5
    min_size: int = 8
    blur_sigma: float = 0.8
    image_sigma: float = 0.6
    saturation: float = 0.002
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def default(cls, **overrides: Any) -> "DepthConfig":
        """The default preset (see the module docstring).

        Example:
            >>> DepthConfig.default().optimizer
            'Adam'
        """
        return cls(**overrides)

    @classmethod
    def paper(cls, **overrides: Any) -> "DepthConfig":
        """The paper's preset: SGD with momentum 0.9, 7 scales, 500 iterations per scale,
        first-order smoothness, uniform random initial depth.

        Example:
            >>> DepthConfig.paper().scales
            7
        """
        # lr: the loss is a mean over pixels, so each pixel's gradient is ~1/pixels of its
        # own; plain SGD needs a step this large to move at all (0.05 left AbsRel at 0.55).
        fields = dict(scales=7, iterations=500, optimizer="SGD", momentum=0.9, lr=10.0, lr_schedule="constant",
                      smoothness=0.05, smoothness_order=1, ssim_window=7, aggregation="mean", full_resolution_loss=True,
                      initialisation="uniform_random", min_size=4, correction_levels=0)
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **overrides: Any) -> "DepthConfig":
        """A copy with some fields changed (validated); unknown names raise ``ArgumentValueError``."""
        return replace_fields(self, overrides)

    def iterations_at(self, index: int, count: int) -> int:
        """Steps at schedule position ``index`` (0 coarsest) of ``count`` levels."""
        if isinstance(self.iterations, int):
            return self.iterations
        return self.iterations[len(self.iterations) - count + index]

    def validate(self) -> None:
        """Raise a typed error (``ArgumentTypeError`` / ``ArgumentValueError``) naming the bad field."""
        check_int(self.scales, "scales", 1)
        if isinstance(self.iterations, tuple):
            if not self.iterations:
                raise ArgumentValueError("iterations", "non-empty", self.iterations, "iterations: expected a non-empty tuple")
            for it in self.iterations:
                check_int(it, "iterations", 1)
            if len(self.iterations) < self.scales:
                raise ArgumentValueError("iterations", f"{self.scales} values", len(self.iterations),
                                         f"iterations: expected one value per scale ({self.scales}), got {len(self.iterations)}")
        else:
            check_int(self.iterations, "iterations", 1)
        if not isinstance(self.optimizer, str):
            raise ArgumentTypeError("optimizer", str, type(self.optimizer), "optimizer: expected a class name")
        try:
            resolve_optimizer(self.optimizer)
        except ValueError as exc:
            raise ArgumentValueError("optimizer", "an optimiser class name", self.optimizer, str(exc)) from None
        check_real(self.lr, "lr", low=0.0, low_open=True)
        check_real(self.momentum, "momentum", low=0.0, high=1.0, high_open=True)
        check_str_choice(self.lr_schedule, SCHEDULES, "lr_schedule")
        check_real(self.alpha, "alpha", low=0.0, high=1.0)
        check_int(self.ssim_window, "ssim_window", 1)
        if self.ssim_window % 2 == 0:
            raise ArgumentValueError("ssim_window", "odd", self.ssim_window, f"ssim_window: expected odd, got {self.ssim_window}")
        check_real(self.smoothness, "smoothness", low=0.0)
        check_int(self.smoothness_order, "smoothness_order", 1)
        if self.smoothness_order not in (1, 2):
            raise ArgumentValueError("smoothness_order", (1, 2), self.smoothness_order,
                                     f"smoothness_order: expected 1 or 2, got {self.smoothness_order}")
        check_real(self.edge_gamma, "edge_gamma", low=0.0)
        check_int(self.correction_levels, "correction_levels", 0)
        check_real(self.correction_gate, "correction_gate", low=0.0)
        check_bool(self.full_resolution_loss, "full_resolution_loss")
        check_str_choice(self.parameterisation, PARAMETERISATIONS, "parameterisation")
        check_str_choice(self.initialisation, INITIALISATIONS, "initialisation")
        check_int(self.planes, "planes", 2)
        check_int(self.sweep_level, "sweep_level", 0)
        check_int(self.sweep_window, "sweep_window", 1)
        if self.sweep_window % 2 == 0:
            raise ArgumentValueError("sweep_window", "odd", self.sweep_window, f"sweep_window: expected odd, got {self.sweep_window}")
        check_int(self.range_planes, "range_planes", 0)
        if self.range_planes == 1:
            raise ArgumentValueError("range_planes", "0 or >= 2", 1, "range_planes: expected 0 (off) or >= 2, got 1")
        check_real(self.sgm_p1, "sgm_p1", low=0.0)
        check_real(self.sgm_p2, "sgm_p2", low=0.0)
        if self.sgm_p2 > 0 and self.sgm_p2 < self.sgm_p1:
            raise ArgumentValueError("sgm_p2", f">= sgm_p1 ({self.sgm_p1})", self.sgm_p2,
                                     f"sgm_p2: expected >= sgm_p1 ({self.sgm_p1}) or 0, got {self.sgm_p2}")
        check_real(self.disparity_fraction, "disparity_fraction", low=0.0, low_open=True, high=1.0)
        check_bool(self.normalise_gain, "normalise_gain")
        check_str_choice(self.aggregation, ("mean", "min", "softmin"), "aggregation")
        check_real(self.softmin_temperature, "softmin_temperature", low=0.0, low_open=True)
        check_real(self.residual_threshold, "residual_threshold", low=0.0, low_open=True)
        check_real(self.min_texture, "min_texture", low=0.0)
        check_real(self.tolerance, "tolerance", low=0.0)
        check_int(self.patience, "patience", 1)
        check_int(self.min_size, "min_size", 2)
        check_real(self.blur_sigma, "blur_sigma", low=0.0)
        check_real(self.image_sigma, "image_sigma", low=0.0)
        check_real(self.saturation, "saturation", low=0.0, high=0.5, high_open=True)
        check_int(self.seed, "seed", 0)
