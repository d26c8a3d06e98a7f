"""Configuration of the homography registration solver (a plain dataclass; Hydra fills it
at the experiment boundary, the library never imports Hydra)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

LOSSES = ("l1", "l2", "charbonnier", "ssim", "ncc")
MOTIONS = ("homography", "affine", "similarity", "euclidean", "translation")
SCHEDULES = ("constant", "cosine")
METHODS = ("first_order", "gauss_newton", "levenberg_marquardt")


@dataclass
class RegistrationConfig:
    """What :func:`registration.register_homography` does, level by level.

    Attributes:
        method: ``'levenberg_marquardt'`` (the default) or ``'gauss_newton'``:
            second-order steps (ESM, compositional, robustly reweighted for ``'l1'`` and
            ``'charbonnier'``; ``registration.second_order``) that need 5-30 iterations per
            level; ``optimizer``, ``lr``, ``schedule`` and ``symmetric`` are then ignored.
            ``'first_order'``: a ``torch.optim``/``torch_optimizer`` optimiser on ``loss``
            (see :meth:`first_order` and :meth:`paper` for its presets).
        levels: pyramid levels (1 = full resolution only). Each coarser level halves the
            size; the coarsest must keep at least ``min_size`` pixels on its short side.
        iterations: steps per level (at most; pairs stop early by ``tolerance``). The
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
            level decays from ``lr`` to ``lr * final_lr_ratio`` along a half cosine, so
            that the early steps travel far and the last ones settle to a few hundredths
            of a pixel.
        final_lr_ratio: end of the cosine schedule, as a fraction of ``lr``.
        loss: photometric loss, one of ``'l1'``, ``'l2'``, ``'charbonnier'``, ``'ssim'``,
            ``'ncc'``.
        charbonnier_eps: ``eps`` of the Charbonnier penalty (intensity units).
        coarse_loss: the second-order methods' loss on every level but the finest
            (``'l2'``, ``'l1'`` or ``'charbonnier'``). Least squares converges there in a
            third fewer iterations than the reweighted penalties and, with the search,
            recovered more DeTone pairs (97.5 % against 96 % of 200 at rho = 32).
        symmetric: also warp ``dst`` back onto ``src`` and average the two losses.
        motion: ``'homography'`` (8 parameters), ``'affine'`` (6), ``'similarity'`` (4),
            ``'euclidean'`` (3) or ``'translation'`` (2).
        tolerance: a pair stops (its parameters freeze) once its relative loss change
            stays below this for ``patience`` consecutive steps; 0 never stops early.
        step_tolerance: a pair also stops once its image corners move less than this
            many pixels per step (full-resolution pixels for first order; pixels of the
            level being solved for the second-order methods, whose coarse levels then
            settle to a hundredth of their own pixel) for ``patience`` consecutive steps: at a
            zero-residual optimum the relative loss change stays large (the loss itself
            tends to 0) while the parameters have settled.
        patience: consecutive steps below ``tolerance`` (or ``step_tolerance``) needed to stop.
        blur_sigma: Gaussian pre-blur (pixels of each level) before the 2x2 box
            downsampling that builds the next level.
        min_size: smallest short side allowed at the coarsest level.
        min_texture: a pair whose ``src`` or ``dst`` intensity standard deviation is below
            this is textureless: it is registered without NaN but flagged not converged.
        search_range: half-width, in full-resolution pixels, of the grid of translations
            from which the coarsest level is started (see ``search_steps``).
        search_steps: ``0`` starts the coarsest level once, from ``initial_homography``
            (or the identity). ``n > 0`` starts it ``(2n + 1)²`` times, shifted by each
            translation of a grid of ``2n + 1`` steps a side spanning ``±search_range``,
            and keeps per pair the start that ends with the lowest loss (among those that
            keep a quarter of the pixels inside): a global search where the problem is
            cheapest, which lets pairs whose corners move by a quarter of the image
            escape the local minima that a single start falls into.
        src_mask, dst_mask: optional ``(B, 1, H, W)`` (or ``(1, 1, H, W)``) weights in
            [0, 1] of the pixels to register (0: ignore, for instance a moving object or a
            logo); ``src_mask`` travels with ``src`` through the warp. The pyramid carries
            them down as box averages.
        initial_homography: optional ``(3, 3)`` or ``(B, 3, 3)`` start, in pixel
            coordinates, mapping ``src`` pixels to ``dst`` pixels.
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
    motion: str = "homography"
    tolerance: float = 1e-6
    step_tolerance: float = 1e-2
    patience: int = 10
    blur_sigma: float = 0.8
    min_size: int = 16
    min_texture: float = 1e-3
    initial_homography: torch.Tensor | None = None
    src_mask: torch.Tensor | None = None
    dst_mask: torch.Tensor | None = None
    search_range: float = 16.0
    search_steps: int = 1

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
        (from ``initial_homography``, or for motions of a few pixels)."""
        base = dict(method="levenberg_marquardt", iterations=30, loss="charbonnier", levels=3, search_steps=0)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def first_order(cls, **overrides: Any) -> "RegistrationConfig":
        """Gradient descent: Adam, lr 1e-2 with a cosine decay per level, 150 iterations
        per level, L1, 3 levels, one start (the default before the second-order solver;
        also the base of any ``torch.optim``/``torch_optimizer`` experiment)."""
        base = dict(method="first_order", levels=3, iterations=150, loss="l1", search_steps=0)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def paper(cls, **overrides: Any) -> "RegistrationConfig":
        """Section 4.2 of the paper: Adam, lr 1e-3 (constant), 200 iterations per level, L1."""
        base = dict(
            method="first_order", optimizer="Adam", lr=1e-3, schedule="constant", iterations=200, loss="l1",
            levels=3, search_steps=0,
        )
        base.update(overrides)
        return cls(**base)

    def replace(self, **overrides: Any) -> "RegistrationConfig":
        """A copy with some fields changed; unknown names raise ``TypeError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"config: unknown field(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def validate(self) -> None:
        """Raise a typed error naming the first field that is out of range."""
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int):
            raise TypeError(f"levels: expected an int, got {type(self.levels).__name__}")
        if self.levels < 1:
            raise ValueError(f"levels: expected >= 1, got {self.levels}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise TypeError(f"iterations: expected an int, got {type(self.iterations).__name__}")
        if self.iterations < 1:
            raise ValueError(f"iterations: expected >= 1, got {self.iterations}")
        if "lr" in self.optimizer_kwargs:
            raise ValueError("optimizer_kwargs: give the learning rate as lr, not inside optimizer_kwargs")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.motion not in MOTIONS:
            raise ValueError(f"motion: expected one of {MOTIONS}, got {self.motion!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance: expected >= 0, got {self.tolerance}")
        if not self.step_tolerance >= 0:
            raise ValueError(f"step_tolerance: expected >= 0, got {self.step_tolerance}")
        if self.patience < 1:
            raise ValueError(f"patience: expected >= 1, got {self.patience}")
        if not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio: expected in (0, 1], got {self.final_lr_ratio}")
        if isinstance(self.search_steps, bool) or not isinstance(self.search_steps, int) or self.search_steps < 0:
            raise ValueError(f"search_steps: expected an int >= 0, got {self.search_steps!r}")
        if not self.search_range >= 0:
            raise ValueError(f"search_range: expected >= 0 (pixels), got {self.search_range}")
        if self.coarse_loss not in ("l1", "l2", "charbonnier"):
            raise ValueError(f"coarse_loss: expected one of l1, l2, charbonnier, got {self.coarse_loss!r}")
        if self.method != "first_order" and self.loss in ("ssim", "ncc"):
            raise ValueError(
                f"loss: the {self.method} method needs a sum of (reweighted) squares: "
                f"expected one of l1, l2, charbonnier, got {self.loss!r}"
            )
        if self.min_size < 2:
            raise ValueError(f"min_size: expected >= 2, got {self.min_size}")
