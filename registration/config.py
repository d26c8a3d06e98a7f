"""Configuration of the homography registration solver: a plain, comparable, serialisable
dataclass (``==``, ``dataclasses.asdict`` to JSON and back), validated completely when it is
made. Data (images, masks, the initial homography) are call arguments, never fields. Hydra
fills it at the experiment boundary; the library never imports Hydra."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gradcv.core_ops._checks import check_bool, check_int, check_real, check_str_choice
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError
from gradcv.optim import SCHEDULES, UNROLLED, resolve_optimizer
from gradcv.registration.motion import MOTIONS

#: ``photometric``'s choices (:func:`gradcv.registration.objective.fit_photometric`).
PHOTOMETRIC = ("none", "gain_bias", "tone", "exposure")

LOSSES = ("l1", "l2", "charbonnier", "ssim", "ncc")
METHODS = ("first_order", "gauss_newton", "levenberg_marquardt")
LEAST_SQUARES = ("l1", "l2", "charbonnier")
#: The fewest features per image ``feature_start`` takes when on (a homography needs a
#: dozen inliers among them).
MIN_FEATURES = 16


@dataclass
class RegistrationConfig:
    """What :func:`gradcv.registration.register_homography` does, level by level.

    Attributes:
        method: ``'levenberg_marquardt'`` (the default) or ``'gauss_newton'``:
            second-order steps (ESM, compositional, robustly reweighted for ``'l1'`` and
            ``'charbonnier'``; :mod:`gradcv.registration.second_order`) that need 5-30
            iterations per level; ``optimizer``, ``lr``, ``schedule`` and ``symmetric`` are
            then ignored. ``'first_order'``: a ``torch.optim``/``torch_optimizer`` optimiser
            on ``loss`` (see :meth:`first_order` and :meth:`paper` for its presets).
        levels: pyramid levels (1 = full resolution only). Each coarser level halves the
            size; the coarsest must keep at least ``min_size`` pixels on its short side.
        iterations: steps per level (at most; pairs stop early by the tolerances). The
            default's 30 suit the second-order methods; first order wants 100-200.
        optimizer: name of a ``torch.optim`` or ``torch_optimizer`` class.
        optimizer_kwargs: extra keyword arguments of that class (``lr`` excluded). The
            optimiser is stepped with a closure, so ``LBFGS`` works (its line search then
            sees the sum over the batch, which couples the pairs' step lengths).
        lr: learning rate. The parameters are corner displacements (or motion parameters)
            in the isotropic normalised frame of the full image, where one unit is half the
            long side, so with Adam a step of ``lr`` moves a corner by about
            ``lr * max(H, W) / 2`` pixels.
        schedule: ``'constant'`` (the paper's) or ``'cosine'``: the learning rate of every
            level decays from ``lr`` to ``lr * final_lr_ratio`` along a half cosine.
        final_lr_ratio: end of the cosine schedule, as a fraction of ``lr``, in (0, 1].
        loss: photometric loss, one of ``'l1'``, ``'l2'``, ``'charbonnier'``, ``'ssim'``,
            ``'ncc'`` (the second-order methods take the first three).
        charbonnier_eps: ``eps`` of the Charbonnier penalty (intensity units), > 0.
        coarse_loss: the second-order methods' loss on every level but the finest
            (``'l2'``, ``'l1'`` or ``'charbonnier'``). Least squares converges there in a
            third fewer iterations than the reweighted penalties and, with the search,
            recovered more DeTone pairs (97.5 % against 96 % of 200 at rho = 32).
        symmetric: also warp ``dst`` back onto ``src`` and average the two losses.
        photometric: the photometric model fitted with the motion, which makes the
            objective invariant to an exposure change between the images:
            ``'exposure'`` (the default): gain, bias, a tone curve and a relative blur
            (:data:`gradcv.registration.objective.PHOTOMETRIC_TERMS`); ``'tone'``: the
            first three; ``'gain_bias'``: ``gain * src(G p) + bias - dst(p)``. The
            coefficients (one set per pair, shared by the channels) are fitted by weighted
            least squares over the compared pixels at every evaluation (masks included);
            the coarse levels fit gain and bias at most. The second-order methods solve
            for them jointly with the motion (their Schur complement in the normal
            equations); first order differentiates through the closed-form fit. An
            identical pair stays exact. ``'none'``: compare the intensities as they are
            (the paper's objective).
        motion: ``'homography'`` (8 parameters), ``'affine'`` (6), ``'similarity'`` (4),
            ``'euclidean'`` (3) or ``'translation'`` (2).
        tolerance: a pair stops (its parameters freeze) once its relative loss change
            stays below this for ``patience`` consecutive steps; 0 never stops early.
        step_tolerance: a pair also stops once its image corners move less than this
            many pixels per step (full-resolution pixels for first order; pixels of the
            level being solved for the second-order methods) for ``patience`` consecutive
            steps: at a zero-residual optimum the relative loss change stays large while
            the parameters have settled.
        patience: consecutive small steps needed to stop (first order; the second-order
            methods stop at the first step that is small, kept or not).
        blur_sigma: Gaussian pre-blur (pixels of each level) before the 2x2 box
            downsampling that builds the next level (``core_ops.pyramid.pyrdown_centred``).
        min_size: smallest short side allowed at the coarsest level.
        min_texture: a pair whose ``src`` or ``dst`` intensity standard deviation is below
            this is textureless: it is registered without NaN but flagged
            ``DEGENERATE_INPUT``.
        max_uncertainty: a pair whose result the data determine no better than this
            (the largest standard deviation, in pixels, of its image corners implied by
            the final residual, :func:`gradcv.registration.uncertainty.corner_uncertainty`)
            is flagged ``DEGENERATE_INPUT`` instead of ``CONVERGED``: a near-textureless
            pair that ends at a wrong optimum leaves a smooth residual the model cannot
            explain. ``inf`` turns the test off.
        rescue_steps: a pair left undetermined (its corner uncertainty above
            ``max_uncertainty``; or above half of it where the pair did not stop; or a
            warp that keeps less than a quarter of what the masks leave in view),
            textured and finite, is solved again from each of the ``(2 n + 1)²``
            translations of a grid spanning ``±1.5 search_range`` (``n = rescue_steps``),
            each also turned by ±0.3 rad and scaled by 0.85 and 1.2: every start through
            the two coarsest levels (and once more from the second), the 8 best distinct
            results by loss per overlap through the next, 2 through the finest. The pair
            takes the determined candidate (uncertainty within half the bound, a quarter
            of what the masks leave in view) of lowest uncertainty among those at least
            two distinct starts reached (or, reached by one, within a fifth of the bound),
            if any is more certain than its own result
            (:meth:`gradcv.registration.solver.HomographyRegistration._rescue`). Costs
            nothing on the pairs that end determined (one look at the host per call);
            ``0`` turns it off, and so do ``search_range = 0`` and ``max_uncertainty =
            inf`` (which judges nothing). Not with ``differentiable``.
        feature_start: features per image of the rescue's first try (``0`` turns it off):
            each pair the rescue takes up, and each pair that did not stop, is first
            started from the homography of its matched local features (Hessian blobs
            on the doubled image, upright SIFT, mutual nearest neighbours, RANSAC at 3 px
            with at least 12 inliers:
            :func:`gradcv.registration.features.feature_homography`) and refined on the
            finest level. The pair takes it if it is determined (uncertainty within
            half the bound, a quarter of what the masks leave in view), more certain than
            its own result, and the refinement stayed within 8 px of the features'
            homography (two independent estimates agree); the other pairs go on to the
            grid of ``rescue_steps``. It recovers near-textureless DeTone pairs (rocket's
            sky) whose only coarse basins are wrong, where no grid start reaches the truth,
            and spares the grid the pairs it recovers. At least 16 when on; never runs on
            a pair that stopped determined (such a pair costs it nothing; a determined pair that
            did not stop pays for one feature match and a finest-level solve). Off, as
            the grid, with ``rescue_steps = 0``, ``search_range = 0``, ``max_uncertainty
            = inf`` or ``differentiable``.
        search_range: half-width, in full-resolution pixels, of the grid of translations
            from which the coarsest level is started (see ``search_steps``).
        search_steps: ``0`` starts the coarsest level once, from the initial homography
            (or the identity). ``n > 0`` starts it ``(2n + 1)²`` times, shifted by each
            translation of a grid of ``2n + 1`` steps a side spanning ``±search_range``,
            and keeps per pair the start that ends with the lowest loss (among those that
            keep a quarter of the pixels inside): a global search where the problem is
            cheapest.
        differentiable: keep the solve on the autograd graph, unrolled through every
            iteration, so that gradients flow from the result to the images, masks and
            initial homography (train a network through the registration). First order
            then steps with :class:`gradcv.optim.UnrolledOptimizer` (``SGD`` or ``Adam``);
            the second-order methods keep their steps undetached and their working set
            whole. Slower and heavier in memory; off by default.
    """

    method: str = "levenberg_marquardt"
    levels: int = 4
    iterations: int = 30
    optimizer: str = "Adam"
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-2
    schedule: str = "cosine"
    final_lr_ratio: float = 1e-2
    loss: str = "charbonnier"
    charbonnier_eps: float = 1e-3
    coarse_loss: str = "l2"
    symmetric: bool = False
    photometric: str = "exposure"
    motion: str = "homography"
    tolerance: float = 1e-6
    step_tolerance: float = 1e-2
    patience: int = 10
    blur_sigma: float = 0.8
    min_size: int = 16
    min_texture: float = 1e-3
    max_uncertainty: float = 0.5
    rescue_steps: int = 2
    feature_start: int = 256
    search_range: float = 16.0
    search_steps: int = 1
    differentiable: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def default(cls, **overrides: Any) -> "RegistrationConfig":
        """The default (``RegistrationConfig()``): Levenberg–Marquardt with ESM steps,
        least squares on the coarse levels and Charbonnier-reweighted residuals on the
        finest, 4 levels of at most 30 iterations, the coarsest started from 9
        translations within ±16 px. Best of the presets on both protocols of
        ``experiments.bench_registration`` in accuracy, success and time (README)."""
        return cls(**overrides)

    @classmethod
    def second_order(cls, **overrides: Any) -> "RegistrationConfig":
        """Levenberg–Marquardt without the coarse search, 3 levels: a local refinement
        (from an initial homography, or for motions of a few pixels)."""
        base: dict[str, Any] = dict(method="levenberg_marquardt", iterations=30, loss="charbonnier", levels=3, search_steps=0)
        return cls(**{**base, **overrides})

    @classmethod
    def first_order(cls, **overrides: Any) -> "RegistrationConfig":
        """Gradient descent: Adam, lr 1e-2 with a cosine decay per level, 150 iterations
        per level, L1, 3 levels, one start (the base of any ``torch.optim``/
        ``torch_optimizer`` experiment)."""
        base: dict[str, Any] = dict(method="first_order", levels=3, iterations=150, loss="l1", search_steps=0)
        return cls(**{**base, **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> "RegistrationConfig":
        """Section 4.2 of the paper: Adam, lr 1e-3 (constant), 200 iterations per level, L1
        on the intensities as they are (``photometric='none'``)."""
        base: dict[str, Any] = dict(
            method="first_order", optimizer="Adam", lr=1e-3, schedule="constant", iterations=200, loss="l1",
            levels=3, search_steps=0, photometric="none",
        )
        return cls(**{**base, **overrides})

    def replace(self, **overrides: Any) -> "RegistrationConfig":
        """A validated copy with some fields changed; unknown names raise ``TypeError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"config: unknown field(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def validate(self) -> None:
        """Raise a typed error naming the first field out of range: ``TypeError`` for a
        value of the wrong type (a float or a bool where an int belongs, a string where a
        number belongs), ``ValueError`` for a value out of range or not finite."""
        check_str_choice(self.method, METHODS, "method")
        check_int(self.levels, "levels", 1)
        check_int(self.iterations, "iterations", 1)
        if not isinstance(self.optimizer, str):
            raise TypeError(f"optimizer: expected a class name (str), got {type(self.optimizer).__name__}")
        _keyword_arguments(self.optimizer_kwargs)
        check_real(self.lr, "lr", low=0.0, low_open=True)
        check_str_choice(self.schedule, SCHEDULES, "schedule")
        check_real(self.final_lr_ratio, "final_lr_ratio", low=0.0, low_open=True, high=1.0)
        check_str_choice(self.loss, LOSSES, "loss")
        check_real(self.charbonnier_eps, "charbonnier_eps", low=0.0, low_open=True)
        check_str_choice(self.coarse_loss, LEAST_SQUARES, "coarse_loss")
        check_bool(self.symmetric, "symmetric")
        check_str_choice(self.photometric, PHOTOMETRIC, "photometric")
        check_str_choice(self.motion, MOTIONS, "motion")
        check_real(self.tolerance, "tolerance", low=0.0)
        check_real(self.step_tolerance, "step_tolerance", low=0.0)
        check_int(self.patience, "patience", 1)
        check_real(self.blur_sigma, "blur_sigma", low=0.0)
        check_int(self.min_size, "min_size", 2)
        check_real(self.min_texture, "min_texture", low=0.0)
        if self.max_uncertainty != math.inf or isinstance(self.max_uncertainty, bool):  # inf: the test is off
            check_real(self.max_uncertainty, "max_uncertainty", low=0.0, low_open=True)
        check_real(self.search_range, "search_range", low=0.0)
        check_int(self.rescue_steps, "rescue_steps", 0)
        check_int(self.feature_start, "feature_start", 0)
        if 0 < self.feature_start < MIN_FEATURES:
            raise ArgumentValueError(
                "feature_start", f"0 (off) or an int >= {MIN_FEATURES}", self.feature_start,
                f"feature_start: expected 0 (off) or an int >= {MIN_FEATURES}, got {self.feature_start}",
            )
        check_int(self.search_steps, "search_steps", 0)
        check_bool(self.differentiable, "differentiable")
        if self.method != "first_order" and self.loss not in LEAST_SQUARES:
            raise ValueError(
                f"loss: the {self.method} method needs a sum of (reweighted) squares: "
                f"expected one of {LEAST_SQUARES}, got {self.loss!r}"
            )
        resolve_optimizer(self.optimizer)
        if self.method == "first_order":
            if self.differentiable and self.optimizer not in UNROLLED:
                raise ValueError(f"optimizer: a differentiable first-order solve supports {UNROLLED}, got {self.optimizer!r}")


def _keyword_arguments(value: object) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ArgumentTypeError("optimizer_kwargs", "a dict with str keys", value, f"optimizer_kwargs: expected a dict with str keys, got {value!r}")
    if "lr" in value:
        raise ArgumentValueError("optimizer_kwargs", "no lr key", value, "optimizer_kwargs: give the learning rate as lr, not inside optimizer_kwargs")
    for key, item in value.items():
        if isinstance(item, float) and not math.isfinite(item):
            raise ArgumentValueError("optimizer_kwargs", "finite values", {key: item}, f"optimizer_kwargs: expected finite values, got {key}={item!r}")
