"""Homography registration of one pair, coarse to fine, with the paper's Figure 3.

    python -m gradcv.experiments.register                          # the bundled pair (known truth)
    python -m gradcv.experiments.register solver.preset=first_order optimizer=radam solver.levels=4
    python -m gradcv.experiments.register solver.preset=paper optimizer=paper
    python -m gradcv.experiments.register src=a.png dst=b.png      # your own images
    python -m gradcv.experiments.register src=a.png dst=b.png dst_mask=m.png   # white: use, black: ignore

With no ``src``/``dst`` it registers a pair cut from matplotlib's ``grace_hopper.jpg`` by
:func:`registration.make_pairs` (seeded, known homography) and prints the corner error
(MACE). With ``src=PATH dst=PATH`` there is no ground truth: it reports the photometric
error. Outputs (in the Hydra run folder): ``metrics.json``, ``homography.json`` (pixel
coordinates, ``src`` to ``dst``, the meaning of ``cv2.warpPerspective``) and
``figure3.png``; every file is written atomically.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import ExperimentError, atomic_write_text, config_to_object, run_app, run_dir, save_figure
from gradcv.experiments._images import read_image, sample_photo, to_gray

APP = "register"
DEFAULT_OPTIMIZER = "adam"  # conf/register.yaml's choice in the optimizer group
PRESETS = ("default", "second_order", "first_order", "paper")


@dataclass
class OptimizerConfig:
    """Types of ``conf/optimizer/*.yaml``: a ``torch.optim`` or ``torch_optimizer`` class."""

    name: str = "Adam"
    lr: float = 1e-2
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SolverConfig:
    """Solver settings; ``None`` keeps the preset's value."""

    preset: str = "default"
    method: Optional[str] = None
    levels: Optional[int] = None
    iterations: Optional[int] = None
    schedule: Optional[str] = None
    loss: Optional[str] = None
    motion: Optional[str] = None
    symmetric: Optional[bool] = None
    tolerance: Optional[float] = None
    step_tolerance: Optional[float] = None
    patience: Optional[int] = None
    search_range: Optional[float] = None
    search_steps: Optional[int] = None


@dataclass
class DataConfig:
    """The bundled pair: :func:`registration.make_pairs` on ``grace_hopper.jpg``."""

    protocol: str = "full"
    rho: int = 32
    seed: int = 0
    gray: bool = False


@dataclass
class RegisterConfig:
    """Types of ``conf/register.yaml`` (values and documentation live there)."""

    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    data: DataConfig = field(default_factory=DataConfig)
    src: Optional[str] = None
    dst: Optional[str] = None
    src_mask: Optional[str] = None
    dst_mask: Optional[str] = None
    device: str = "cpu"
    figure: bool = True
    progress: bool = True


ConfigStore.instance().store(name="register_schema", node=RegisterConfig)


# ----------------------------------------------------------------------------- inputs
SOLVER_FIELDS = (
    "method", "levels", "iterations", "schedule", "loss", "motion", "symmetric", "tolerance", "step_tolerance",
    "patience", "search_range", "search_steps",
)


def registration_config(conf: RegisterConfig, optimizer_choice: str | None = None):
    """The library's :class:`RegistrationConfig`: the preset, then the solver fields set,
    then the optimizer group. ``optimizer_choice`` is the group's option as Hydra chose it:
    choosing one for a second-order preset is an error (it would be silently ignored)."""
    from gradcv.registration import RegistrationConfig

    solver = conf.solver
    if solver.preset not in PRESETS:
        raise ExperimentError(f"solver.preset: expected one of {', '.join(PRESETS)}, got {solver.preset!r}")
    fields = {k: getattr(solver, k) for k in SOLVER_FIELDS}
    fields = {k: v for k, v in fields.items() if v is not None}
    fields.update(optimizer=conf.optimizer.name, lr=conf.optimizer.lr, optimizer_kwargs=dict(conf.optimizer.kwargs))
    try:
        config = getattr(RegistrationConfig, solver.preset)(**fields)
        if config.method != "first_order" and optimizer_choice not in (None, DEFAULT_OPTIMIZER):
            raise ValueError(
                f"optimizer={optimizer_choice}: preset {solver.preset} uses the {config.method} method, which takes no "
                f"optimizer; add solver.preset=first_order (or paper)"
            )
        config.validate()
    except (TypeError, ValueError) as ex:
        raise ExperimentError(str(ex)) from None
    return config


def bundled_pair(data: DataConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """``(src, dst, H_true, description)`` from ``grace_hopper.jpg``."""
    from gradcv.registration import make_pairs

    photo = sample_photo()
    if data.gray:
        photo = to_gray(photo)
    try:
        src, dst, H = make_pairs(photo[None], 1, protocol=data.protocol, rho=data.rho, seed=data.seed)
    except ValueError as ex:
        raise ExperimentError(f"data: {ex}") from None
    size = src.shape[-1]
    return src, dst, H, f"grace_hopper.jpg, {data.protocol} protocol ({size}x{size}, rho {data.rho}, seed {data.seed})"


# ---------------------------------------------------------------------------- progress
class Progress:
    """One line per pyramid level on stderr: redrawn with ``\\r`` on a terminal, printed
    once when the level ends otherwise. A level ends when the next one starts (pairs may
    stop before ``iterations``) or at :meth:`close`."""

    def __init__(self, levels: int, iterations: int, enabled: bool, stream=None) -> None:
        self.levels, self.iterations, self.enabled = levels, iterations, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = max(1, iterations // 40)
        self.current: tuple[int, int, torch.Tensor] | None = None

    def _line(self, level: int, done: int, loss: float) -> str:
        width = 30
        filled = round(width * done / self.iterations)
        return f"level {level + 1}/{self.levels} [{'#' * filled}{'.' * (width - filled)}] {done:>4}/{self.iterations} loss {loss:.5f}"

    def __call__(self, level: int, step: int, loss: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self.current is not None and self.current[0] != level:
            self.close()
        self.current = (level, step, loss)
        if self.tty and step % self.every == 0:
            self.stream.write("\r" + self._line(level, step + 1, float(loss.mean())))  # one sync per redraw
            self.stream.flush()

    def close(self) -> None:
        """End the current level's line."""
        if not self.enabled or self.current is None:
            return
        level, step, loss = self.current
        self.stream.write(("\r" if self.tty else "") + self._line(level, step + 1, float(loss.mean())) + "\n")
        self.stream.flush()
        self.current = None


# ----------------------------------------------------------------------------- figure
def figure3(src, dst, result, reference, levels: int, title: str):
    """The paper's Figure 3: one column per pyramid level (coarse to fine); rows: source,
    destination, source warped by that level's estimate, and its absolute photometric
    error against ``reference`` (the ground-truth warp, else ``dst``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    from gradcv.core_ops.geometry import warp_perspective

    h, w = src.shape[-2:]
    rows = ["source", "destination", "source warped\nby the estimate", "|error| vs " + ("ground-truth\nwarp" if reference is not dst else "destination")]
    fig, axes = plt.subplots(4, levels, figsize=(2.8 * levels + 1.2, 10.5), squeeze=False)
    gray = src.shape[1] == 1

    def show(ax, img, **kw):
        arr = img[0].permute(1, 2, 0).clamp(0, 1).numpy()
        return ax.imshow(arr[..., 0] if gray else arr, cmap="gray" if gray else None, **kw)

    errors = []
    for col in range(levels):
        level = levels - 1 - col  # columns coarse to fine
        k = 2**level
        down = (lambda x: F.avg_pool2d(x, k)) if k > 1 else (lambda x: x)
        H = result.homography_per_level[col][:1].to(src.dtype)
        warped = warp_perspective(src[:1], H, (h, w))
        err = (warped - reference[:1]).abs().mean(1, keepdim=True)
        errors.append(down(err)[0, 0].numpy())
        show(axes[0, col], down(src[:1]))
        show(axes[1, col], down(dst[:1]))
        show(axes[2, col], down(warped))
        lh, lw = down(src[:1]).shape[-2:]
        axes[0, col].set_title(f"level {level} ({lh}x{lw})")
    vmax = max(float(e.max()) for e in errors) or 1.0
    for col, err in enumerate(errors):
        im = axes[3, col].imshow(err, cmap="magma", vmin=0.0, vmax=vmax)
        axes[3, col].set_xlabel(f"mean {err.mean():.4f}")
    fig.colorbar(im, ax=list(axes[3]), fraction=0.046, pad=0.02, label="|intensity error|")
    for r, label in enumerate(rows):
        axes[r, 0].set_ylabel(label)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------- task
def _photometric_error(src: torch.Tensor, dst: torch.Tensor, H: torch.Tensor) -> float:
    """Mean absolute intensity difference between ``src`` warped by ``H`` and ``dst`` over
    the pixels whose source lies inside ``src``."""
    from gradcv.core_ops.geometry import warp_perspective

    h, w = src.shape[-2:]
    warped = warp_perspective(src, H.to(src.dtype), (h, w))
    inside = warp_perspective(torch.ones_like(src[:, :1]), H.to(src.dtype), (h, w)) > 0.999
    diff = (warped - dst).abs().mean(1, keepdim=True)
    n = inside.sum()
    return float((diff * inside).sum() / n) if int(n) else math.nan


def _finite_or_null(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def register(cfg: DictConfig) -> None:
    """The Hydra task: register one pair, print the error, write metrics, homography, figure."""
    conf = config_to_object(cfg, RegisterConfig)
    from hydra.core.hydra_config import HydraConfig

    config = registration_config(conf, HydraConfig.get().runtime.choices.get("optimizer"))
    try:
        device = torch.device(conf.device)
    except RuntimeError as ex:
        raise ExperimentError(f"device: {ex}") from None

    if (conf.src is None) != (conf.dst is None):
        raise ExperimentError("give both src=PATH and dst=PATH, or neither for the bundled pair")
    if conf.src is None:
        src, dst, H_true, description = bundled_pair(conf.data)
    else:
        s, d = read_image(conf.src, "src"), read_image(conf.dst, "dst")
        if s.shape[0] != d.shape[0]:
            s, d = to_gray(s), to_gray(d)
        if s.shape != d.shape:
            raise ExperimentError(f"dst: expected the size of src {tuple(s.shape[1:])}, got {tuple(d.shape[1:])}")
        src, dst, H_true = s[None], d[None], None
        description = f"{conf.src} -> {conf.dst} ({s.shape[1]}x{s.shape[2]})"
    masks = {}
    for name in ("src_mask", "dst_mask"):
        path = getattr(conf, name)
        if path is not None:
            m = to_gray(read_image(path, name))
            if m.shape[-2:] != src.shape[-2:]:
                raise ExperimentError(f"{name}: expected the size of src {tuple(src.shape[-2:])}, got {tuple(m.shape[-2:])}")
            masks[name] = m[None].to(device)
    src, dst = src.to(device), dst.to(device)

    from gradcv.registration import HomographyRegistration, corner_error

    kw = ", ".join(f"{k}={v}" for k, v in config.optimizer_kwargs.items())
    method = f"{config.optimizer}(lr={config.lr:g}{', ' + kw if kw else ''})" if config.method == "first_order" else config.method
    print(f"{APP}: {description}")
    print(
        f"{APP}: {method}, preset {conf.solver.preset}, "
        f"{config.levels} levels x {config.iterations} iterations, loss {config.loss}, motion {config.motion}"
        f"{', symmetric' if config.symmetric else ''}",
        flush=True,
    )
    progress = Progress(config.levels, config.iterations, conf.progress)
    try:
        result = HomographyRegistration(config).register(src, dst, callback=progress, **masks)
        progress.close()
    except (TypeError, ValueError) as ex:
        raise ExperimentError(str(ex)) from None

    src, dst = src.cpu(), dst.cpu()
    H = result.homography.cpu()
    h, w = src.shape[-2:]
    eye = torch.eye(3, dtype=torch.float64)[None]
    final_losses = [float(result.final_loss(level).mean()) for level in range(len(result.loss_history))]
    metrics: dict[str, Any] = {
        "input": description,
        "size": [h, w],
        "channels": src.shape[1],
        "final_loss_per_level": final_losses,
        "final_loss": final_losses[-1],
        "iterations_used_per_level": result.iterations_used[:, 0].tolist(),
        "converged": bool(result.converged[0]),
        "wall_time_s": result.wall_time,
        "photometric_error_identity": _photometric_error(src, dst, eye),
        "photometric_error": _photometric_error(src, dst, H),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "torch": torch.__version__,
    }
    if H_true is not None:
        metrics["mace_px"] = float(corner_error(H.to(torch.float64), H_true, (h, w))[0])
        metrics["mace_identity_px"] = float(corner_error(eye, H_true, (h, w))[0])
        metrics["mace_per_level_px"] = [float(corner_error(Hl.cpu().to(torch.float64), H_true, (h, w))[0]) for Hl in result.homography_per_level]

    out = run_dir()
    homography = {
        "convention": "pixel coordinates (centres at integers), src -> dst: warp_perspective(src, H, (h, w)) ~ dst, as cv2.warpPerspective",
        "size": [h, w],
        "homography": H[0].to(torch.float64).tolist(),
        "homography_per_level": [Hl[0].cpu().to(torch.float64).tolist() for Hl in result.homography_per_level],
    }
    if H_true is not None:
        homography["homography_true"] = H_true[0].tolist()
    atomic_write_text(out / "homography.json", json.dumps(_finite_or_null(homography), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "metrics.json", json.dumps(_finite_or_null(metrics), indent=2, allow_nan=False) + "\n")
    if conf.figure:
        import matplotlib.pyplot as plt

        from gradcv.core_ops.geometry import warp_perspective

        reference = warp_perspective(src, H_true.to(src.dtype), (h, w)) if H_true is not None else dst
        what = f"MACE {metrics['mace_px']:.3f} px" if H_true is not None else f"photometric error {metrics['photometric_error']:.4f}"
        fig = figure3(src, dst, result, reference, config.levels, f"{method}, {config.levels} levels: {what}")
        save_figure(fig, out / "figure3.png", dpi=100)
        plt.close(fig)

    if H_true is not None:
        print(f"{APP}: corner error (MACE) {metrics['mace_px']:.4f} px (identity {metrics['mace_identity_px']:.2f} px)")
    print(
        f"{APP}: photometric error {metrics['photometric_error']:.5f} (identity {metrics['photometric_error_identity']:.5f}), "
        f"converged {'yes' if metrics['converged'] else 'no'}, {result.wall_time:.2f} s"
    )
    print(f"{APP}: wrote {out}")


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.register [overrides]``."""
    run_app(register, config_name=APP)


if __name__ == "__main__":
    main()
