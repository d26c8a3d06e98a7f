"""Homography registration of one pair, coarse to fine, with the paper's Figure 3.

    python -m gradcv.experiments.register                              # the bundled pair (known truth)
    python -m gradcv.experiments.register solver=first_order optimizer=radam solver.levels=4
    python -m gradcv.experiments.register solver=paper                 # section 4.2 (and its optimizer)
    python -m gradcv.experiments.register data=files data.src=a.png data.dst=b.png
    python -m gradcv.experiments.register src=a.png dst=b.png dst_mask=m.png   # shortcuts for data=files

Config groups (``conf/``): ``solver`` (``default``, ``second_order``, ``first_order``,
``paper``: the presets of :class:`registration.RegistrationConfig`, each field
overridable as ``solver.<field>=...``), ``optimizer`` (the first-order solvers' class and
learning rate) and ``data`` (``bundled``: a pair cut from matplotlib's
``grace_hopper.jpg`` by :func:`registration.make_pairs` with a known homography, whose
corner error (MACE) is reported; ``files``: your images, with the photometric error).
Outputs (in the Hydra run folder): ``homography.json`` (pixel coordinates, ``src`` to
``dst``, the meaning of ``cv2.warpPerspective``), ``figure3.png``, then ``metrics.json``,
written last so that a folder holding it is complete; every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import (
    ExperimentError,
    atomic_write_text,
    config_to_object,
    run_app,
    run_dir,
    save_figure,
    write_metrics,
)
from gradcv.experiments._images import read_image, sample_photo, to_gray
from gradcv.experiments._progress import LevelProgress

from gradcv.registration.config import RegistrationConfig

if TYPE_CHECKING:
    from gradcv.registration import RegistrationResult

APP = "register"
DEFAULT_OPTIMIZER = "adam"  # conf/register.yaml's choice in the optimizer group


@dataclass
class OptimizerConfig:
    """Types of ``conf/optimizer/*.yaml``: a ``torch.optim`` or ``torch_optimizer`` class."""

    name: str = "Adam"
    lr: float = 1e-2
    kwargs: dict[str, Any] = field(default_factory=dict)


# The fields the optimizer group sets (and ``differentiable``: nothing here trains through
# the solve) are not the solver group's.
_NOT_SOLVER_FIELDS = frozenset({"optimizer", "optimizer_kwargs", "lr", "differentiable"})

#: Types of ``conf/solver/*.yaml``: the fields of :class:`registration.RegistrationConfig`
#: but the optimiser's and ``differentiable``, with ``RegistrationConfig()``'s defaults
#: (made from it, so the schema cannot drift from the library).
SolverConfig = dataclasses.make_dataclass(
    "SolverConfig",
    [
        (f.name, typing.get_type_hints(RegistrationConfig)[f.name], field(default=f.default))
        for f in dataclasses.fields(RegistrationConfig)
        if f.name not in _NOT_SOLVER_FIELDS
    ],
)


@dataclass
class DataConfig:
    """Types of ``conf/data/*.yaml``: ``source: bundled`` (protocol, rho, seed, gray) or
    ``source: files`` (src, dst and optional masks: paths)."""

    source: str = "bundled"
    protocol: str = "full"
    rho: int = 32
    seed: int = 0
    gray: bool = False
    src: Optional[str] = None
    dst: Optional[str] = None
    src_mask: Optional[str] = None
    dst_mask: Optional[str] = None


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


@dataclass
class Pair:
    """The images to register, their masks and, for the bundled pair, the truth."""

    src: torch.Tensor  # (1, C, H, W)
    dst: torch.Tensor
    masks: dict[str, torch.Tensor]  # "src_mask" / "dst_mask": (1, 1, H, W)
    truth: torch.Tensor | None  # (1, 3, 3) float64, src -> dst pixels
    description: str


# ----------------------------------------------------------------------------- inputs
def registration_config(
    conf: RegisterConfig, optimizer_choice: str | None = None, solver_choice: str | None = None
) -> RegistrationConfig:
    """The library's :class:`RegistrationConfig` from the solver and optimizer groups.
    ``optimizer_choice`` is the optimizer group's option as Hydra chose it: one chosen
    for a second-order solver is an error (it would be silently ignored)."""

    fields = dataclasses.asdict(conf.solver)
    opt = conf.optimizer
    try:
        config = RegistrationConfig(**fields, optimizer=opt.name, lr=opt.lr, optimizer_kwargs=dict(opt.kwargs))
    except (TypeError, ValueError) as ex:
        raise ExperimentError(_config_key(str(ex))) from None
    if config.method != "first_order" and optimizer_choice not in (None, DEFAULT_OPTIMIZER):
        raise ExperimentError(
            f"optimizer={optimizer_choice}: solver={solver_choice or '...'} uses the {config.method} method, which takes "
            f"no optimizer; add solver=first_order (or solver=paper)"
        )
    return config


def _config_key(message: str) -> str:
    """The library's message, its field renamed to the override that sets it."""
    field_name, _, rest = message.partition(":")
    names = {"optimizer": "optimizer.name", "lr": "optimizer.lr", "optimizer_kwargs": "optimizer.kwargs"}
    if field_name in names:
        return f"{names[field_name]}:{rest}"
    if field_name in {f.name for f in dataclasses.fields(SolverConfig)}:
        return f"solver.{message}"
    return message


def _bundled_pair(data: DataConfig) -> Pair:
    from gradcv.registration import make_pairs

    photo = sample_photo()
    if data.gray:
        photo = to_gray(photo)
    try:
        src, dst, H = make_pairs(photo[None], 1, protocol=data.protocol, rho=data.rho, seed=data.seed)
    except ValueError as ex:
        raise ExperimentError(f"data: {ex}") from None
    size = src.shape[-1]
    description = f"grace_hopper.jpg, {data.protocol} protocol ({size}x{size}, rho {data.rho}, seed {data.seed})"
    return Pair(src, dst, {}, H, description)


def _file_pair(paths: dict[str, str | None]) -> Pair:
    if paths["src"] is None or paths["dst"] is None:
        raise ExperimentError("give both src=PATH and dst=PATH (or data=files data.src=PATH data.dst=PATH)")
    s, d = read_image(paths["src"], "src"), read_image(paths["dst"], "dst")
    if s.shape[0] != d.shape[0]:
        s, d = to_gray(s), to_gray(d)
    if s.shape != d.shape:
        raise ExperimentError(f"dst: expected the size of src {tuple(s.shape[1:])}, got {tuple(d.shape[1:])}")
    masks = {}
    for name in ("src_mask", "dst_mask"):
        path = paths[name]
        if path is not None:
            m = to_gray(read_image(path, name))
            if m.shape[-2:] != s.shape[-2:]:
                raise ExperimentError(f"{name}: expected the size of src {tuple(s.shape[-2:])}, got {tuple(m.shape[-2:])}")
            masks[name] = m[None]
    return Pair(s[None], d[None], masks, None, f"{paths['src']} -> {paths['dst']} ({s.shape[1]}x{s.shape[2]})")


def load_pair(conf: RegisterConfig) -> Pair:
    """The pair the data group (or the ``src=``/``dst=`` shortcuts) names."""
    keys = ("src", "dst", "src_mask", "dst_mask")
    shortcuts = {k: getattr(conf, k) for k in keys}
    if any(v is not None for v in shortcuts.values()):
        # The shortcuts mean data=files; paths given there win over the group's.
        return _file_pair({k: shortcuts[k] if shortcuts[k] is not None else getattr(conf.data, k) for k in keys})
    if conf.data.source == "files":
        return _file_pair({k: getattr(conf.data, k) for k in keys})
    if conf.data.source != "bundled":
        raise ExperimentError(f"data.source: expected bundled or files, got {conf.data.source!r}")
    return _bundled_pair(conf.data)


# ----------------------------------------------------------------------------- figure
def figure3(src: torch.Tensor, dst: torch.Tensor, result: RegistrationResult, reference: torch.Tensor, title: str) -> Any:
    """The paper's Figure 3: one column per pyramid level (coarse to fine); rows: source,
    destination, source warped by that level's estimate, and its absolute photometric
    error against ``reference`` (the ground-truth warp, else ``dst``)."""
    import torch.nn.functional as F

    from gradcv.core_ops.geometry import warp_perspective
    from gradcv.experiments._figures import levels_figure

    h, w = src.shape[-2:]
    levels = len(result.homography_per_level)
    columns, sources, destinations, warps, errors = [], [], [], [], []
    for col in range(levels):
        k = 2 ** (levels - 1 - col)  # columns coarse to fine
        down = (lambda x: F.avg_pool2d(x, k)) if k > 1 else (lambda x: x)
        warped = warp_perspective(src[:1], result.homography_per_level[col][:1].to(src.dtype), (h, w))
        errors.append(down((warped - reference[:1]).abs().mean(1, keepdim=True))[0, 0].numpy())
        sources.append(down(src[:1]))
        destinations.append(down(dst[:1]))
        warps.append(down(warped))
        columns.append(f"level {levels - 1 - col} ({sources[-1].shape[-2]}x{sources[-1].shape[-1]})")
    truth = reference is not dst
    return levels_figure(
        columns,
        [("source", sources), ("destination", destinations), ("source warped\nby the estimate", warps)],
        ("|error| vs " + ("ground-truth\nwarp" if truth else "destination"), errors),
        title=title,
        error_label="|intensity error|",
    )


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


def _describe(config: RegistrationConfig, solver_choice: str | None) -> str:
    kw = ", ".join(f"{k}={v}" for k, v in config.optimizer_kwargs.items())
    method = f"{config.optimizer}(lr={config.lr:g}{', ' + kw if kw else ''})" if config.method == "first_order" else config.method
    return (
        f"{method}, solver={solver_choice}, {config.levels} levels x {config.iterations} iterations, "
        f"loss {config.loss}, motion {config.motion}{', symmetric' if config.symmetric else ''}"
    )


def _metrics(pair: Pair, result: RegistrationResult, cfg: DictConfig, config: RegistrationConfig) -> dict[str, Any]:
    from gradcv.optim import SolverStatus
    from gradcv.registration import corner_error

    src, dst, H = pair.src, pair.dst, result.homography.detach().cpu()
    h, w = src.shape[-2:]
    eye = torch.eye(3, dtype=torch.float64)[None]
    final_losses = [float(result.final_loss(level)[0]) for level in range(len(result.loss_history))]
    metrics: dict[str, Any] = {
        "input": pair.description,
        "size": [h, w],
        "channels": src.shape[1],
        "final_loss_per_level": final_losses,
        "final_loss": final_losses[-1],
        "iterations_used_per_level": result.iterations_used[:, 0].tolist(),
        "converged": bool(result.converged[0]),
        "status": SolverStatus(int(result.status[0])).name.lower(),
        "wall_time_s": result.wall_time,
        "photometric_error_identity": _photometric_error(src, dst, eye),
        "photometric_error": _photometric_error(src, dst, H),
        "solver": dataclasses.asdict(config),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "torch": torch.__version__,
    }
    if pair.truth is not None:
        truth = pair.truth
        metrics["mace_px"] = float(corner_error(H.to(torch.float64), truth, (h, w))[0])
        metrics["mace_identity_px"] = float(corner_error(eye, truth, (h, w))[0])
        metrics["mace_per_level_px"] = [
            float(corner_error(Hl.cpu().to(torch.float64), truth, (h, w))[0]) for Hl in result.homography_per_level
        ]
    return metrics


def register(cfg: DictConfig) -> None:
    """The Hydra task: register one pair, print the error, write homography, figure, metrics."""
    conf = config_to_object(cfg, RegisterConfig)
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices
    config = registration_config(conf, choices.get("optimizer"), choices.get("solver"))
    try:
        device = torch.device(conf.device)
    except RuntimeError as ex:
        raise ExperimentError(f"device: {ex}") from None
    pair = load_pair(conf)

    from gradcv.registration import HomographyRegistration

    print(f"{APP}: {pair.description}")
    print(f"{APP}: {_describe(config, choices.get('solver'))}", flush=True)
    masks = {k: v.to(device) for k, v in pair.masks.items()}
    with LevelProgress(config.levels, config.iterations, conf.progress) as progress:
        try:
            result = HomographyRegistration(config).register(
                pair.src.to(device), pair.dst.to(device), callback=progress, **masks
            )
        except (TypeError, ValueError) as ex:
            raise ExperimentError(str(ex)) from None
    metrics = _metrics(pair, result, cfg, config)
    _write_outputs(pair, result, metrics, conf.figure, _describe(config, choices.get("solver")).split(",")[0], config.levels)

    if pair.truth is not None:
        print(f"{APP}: corner error (MACE) {metrics['mace_px']:.4f} px (identity {metrics['mace_identity_px']:.2f} px)")
    print(
        f"{APP}: photometric error {metrics['photometric_error']:.5f} (identity {metrics['photometric_error_identity']:.5f}), "
        f"{metrics['status'].replace('_', ' ')}, {result.wall_time:.2f} s"
    )
    print(f"{APP}: wrote {run_dir()}")


def _write_outputs(
    pair: Pair, result: RegistrationResult, metrics: dict[str, Any], figure: bool, method: str, levels: int
) -> None:
    """homography.json, figure3.png, then metrics.json (last: its presence means complete)."""
    out = run_dir()
    H = result.homography.detach().cpu()
    h, w = pair.src.shape[-2:]
    homography = {
        "convention": "pixel coordinates (centres at integers), src -> dst: warp_perspective(src, H, (h, w)) ~ dst, as cv2.warpPerspective",
        "size": [h, w],
        "homography": H[0].to(torch.float64).tolist(),
        "homography_per_level": [Hl[0].detach().cpu().to(torch.float64).tolist() for Hl in result.homography_per_level],
    }
    if pair.truth is not None:
        homography["homography_true"] = pair.truth[0].tolist()
    atomic_write_text(out / "homography.json", json.dumps(_finite_or_null(homography), indent=2, allow_nan=False) + "\n")
    if figure:
        import matplotlib.pyplot as plt

        from gradcv.core_ops.geometry import warp_perspective

        src, dst = pair.src, pair.dst
        reference = warp_perspective(src, pair.truth.to(src.dtype), (h, w)) if pair.truth is not None else dst
        what = f"MACE {metrics['mace_px']:.3f} px" if pair.truth is not None else f"photometric error {metrics['photometric_error']:.4f}"
        fig = figure3(src, dst, result, reference, f"{method}, {levels} levels: {what}")
        save_figure(fig, out / "figure3.png", dpi=100)
        plt.close(fig)
    write_metrics(metrics, out)  # last: a folder with metrics.json is complete


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.register [overrides]``."""
    run_app(register, config_name=APP)


if __name__ == "__main__":
    main()
