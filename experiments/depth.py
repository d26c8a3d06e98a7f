"""Multi-view depth of a reference view by gradient descent, with the paper's Figure 4.

    python -m gradcv.experiments.depth                                   # a rendered scene (known truth)
    python -m gradcv.experiments.depth preset=paper                      # section 4.3's solver
    python -m gradcv.experiments.depth solver.lr=0.02 solver.scales=3    # any DepthConfig field
    python -m gradcv.experiments.depth data.noise_sigma=0.005 data.gain_jitter=0.15 data.seed=3
    python -m gradcv.experiments.depth data=colmap data.path=sparse/0 data.image_folder=images
    python -m gradcv.experiments.depth data=json data.path=views.json

Config (``conf/depth.yaml``): ``preset`` (``default`` or ``paper``: :meth:`DepthConfig.default`
/ :meth:`DepthConfig.paper`), ``solver.<field>=...`` to change any field of
:class:`gradcv.depth.DepthConfig` but ``seed`` (the top-level ``seed``), ``ref_index``,
``device``, ``figure``, ``progress``, ``colormap``; the ``data`` group (``conf/data/``):
``synthetic`` (:func:`gradcv.depth.render_scene`, every :class:`SceneConfig` field as
``data.<field>``, ``data.seed``), ``colmap`` (a COLMAP text model) or ``json`` (gradcv's
JSON calibration), see :mod:`gradcv.depth.io`; ``data.views`` picks some of their views. The depth range is derived from the cameras
by the solver. With ground truth (always for ``synthetic``; optional depth maps for the
others) the Eigen et al. metrics are reported on the reference pixels seen by at least one
source; without, the fraction of valid pixels and the mean photometric cost.

Outputs (in the Hydra run folder, each written atomically): ``depth.npy`` (float32 metres,
0 where invalid), ``depth.png`` (16-bit, millimetres, 0 where invalid or beyond 65.535 m),
``depth_color.png`` (inverse depth colour-mapped, invalid pixels black), ``points.ply``
(the valid pixels back-projected into world coordinates, coloured by the reference image),
``figure4.png``, then ``metrics.json``, written last so that a folder holding it is complete.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.depth.config import DepthConfig
from gradcv.depth.scene import SceneConfig
from gradcv.experiments._cli import (
    ExperimentError,
    atomic_write_bytes,
    config_to_object,
    optional_hint,
    overrides_schema,
    run_app,
    run_dir,
    save_figure,
    write_metrics,
)
from gradcv.experiments._progress import LevelProgress

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gradcv.depth import DepthResult

APP = "depth"
PRESETS = ("default", "paper")
SOURCES = ("synthetic", "colmap", "json")
#: The most sources Figure 4 shows (two rows each).
FIGURE_SOURCES = 4

# ``seed`` is the app's top-level ``seed``.
_NOT_SOLVER_FIELDS = frozenset({"seed"})


#: Types of the ``solver`` node: every field of :class:`DepthConfig` but ``seed``, each
#: ``None`` (the preset's value) unless overridden.
SolverConfig = overrides_schema(DepthConfig, "SolverConfig", _NOT_SOLVER_FIELDS)

#: The ``data`` fields that are :class:`SceneConfig`'s (``None``: its default).
SCENE_FIELDS = tuple(f.name for f in dataclasses.fields(SceneConfig))

#: Types of ``conf/data/{synthetic,colmap,json}.yaml``: the source, the files of the
#: real-data sources, the scene's seed and every :class:`SceneConfig` field.
DepthDataConfig = dataclasses.make_dataclass(
    "DepthDataConfig",
    [
        ("source", str, field(default="synthetic")),
        ("path", Optional[str], field(default=None)),
        ("image_folder", Optional[str], field(default=None)),
        ("depth_folder", Optional[str], field(default=None)),
        ("views", Optional[list[Any]], field(default=None)),
        ("seed", int, field(default=0)),
    ]
    + [(name, optional_hint(typing.get_type_hints(SceneConfig)[name]), field(default=None)) for name in SCENE_FIELDS],
)


@dataclass
class DepthAppConfig:
    """Types of ``conf/depth.yaml`` (values and documentation live there)."""

    preset: str = "default"
    solver: SolverConfig = field(default_factory=SolverConfig)  # type: ignore[valid-type]
    data: DepthDataConfig = field(default_factory=DepthDataConfig)  # type: ignore[valid-type]
    ref_index: int = 0
    seed: int = 0
    device: str = "cpu"
    figure: bool = True
    progress: bool = True
    colormap: str = "magma"


ConfigStore.instance().store(name="depth_schema", node=DepthAppConfig)


@dataclass
class Views:
    """The views to solve, and the truth where there is one."""

    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    intrinsics: torch.Tensor  # (N, 3, 3) float64
    extrinsics: torch.Tensor  # (N, 4, 4) float64, world-to-camera
    names: list[str]
    description: str
    truth: torch.Tensor | None = None  # (H, W) float64 reference depth, 0 = unknown
    scored: torch.Tensor | None = None  # (H, W) bool: the pixels the metrics score (None: truth > 0 and seen)
    info: dict[str, Any] = field(default_factory=dict)
    units: str = "m"  # of depth: COLMAP models have an arbitrary scale


# ----------------------------------------------------------------------------- config
def depth_config(conf: DepthAppConfig) -> DepthConfig:
    """The library's :class:`DepthConfig`: the preset, its fields changed by ``solver.*``."""
    if conf.preset not in PRESETS:
        raise ExperimentError(f"preset: expected one of {', '.join(PRESETS)}, got {conf.preset!r}")
    overrides = {k: v for k, v in dataclasses.asdict(conf.solver).items() if v is not None}
    if isinstance(overrides.get("iterations"), list):
        overrides["iterations"] = tuple(overrides["iterations"])
    try:
        return getattr(DepthConfig, conf.preset)(**overrides, seed=conf.seed)
    except (TypeError, ValueError) as ex:
        message = str(ex)
        if message.partition(":")[0] in {f.name for f in dataclasses.fields(SolverConfig)}:
            message = f"solver.{message}"
        raise ExperimentError(message) from None


def scene_config(data: Any) -> SceneConfig:
    """The :class:`SceneConfig` of ``data=synthetic`` (``None`` fields keep its defaults)."""
    fields = {name: getattr(data, name) for name in SCENE_FIELDS if getattr(data, name) is not None}
    try:
        return SceneConfig(**fields)
    except (TypeError, ValueError) as ex:
        raise ExperimentError(f"data.{ex}") from None


# ----------------------------------------------------------------------------- inputs
def _synthetic(data: Any, ref_index: int) -> Views:
    from gradcv.depth import render_scene

    config = scene_config(data)
    start = time.perf_counter()
    scene = render_scene(config, data.seed)
    render_time = time.perf_counter() - start
    n = scene.images.shape[0]
    if not 0 <= ref_index < n:
        raise ExperimentError(f"ref_index: expected 0 <= ref_index < {n} (data.num_views), got {ref_index}")
    truth = scene.depths[ref_index, 0].double()
    if ref_index == scene.reference:
        # The definition: reference pixels that at least one source sees.
        others = [i for i in range(n) if i != ref_index]
        scored = scene.visibility[others, 0].any(0) & scene.valid[ref_index, 0]
        scored_what = "reference pixels visible in at least one source"
    else:  # the renderer's visibility masks are those of view 0's pixels
        scored = scene.valid[ref_index, 0]
        scored_what = "pixels with a surface (visibility is known for view 0 only)"
    description = (
        f"rendered scene {config.kind}, seed {data.seed}, {n} views of {config.width}x{config.height}, "
        f"baseline {config.baseline:g} m, noise {config.noise_sigma:g}, gain +-{config.gain_jitter:g}, "
        f"bias +-{config.bias_jitter:g}"
    )
    return Views(
        images=scene.images.float(),
        intrinsics=scene.intrinsics.double(),
        extrinsics=scene.extrinsics.double(),
        names=[f"view{i}" for i in range(n)],
        description=description,
        truth=truth,
        scored=scored,
        info={"scene": dataclasses.asdict(config), "scene_seed": data.seed, "render_time_s": render_time,
              "scored_pixels": scored_what},
    )


def _select(names: list[str], chosen: list[Any] | None) -> list[int]:
    """Indices of the views ``data.views`` names (names or indices; ``None``: all)."""
    if chosen is None:
        return list(range(len(names)))
    out = []
    for item in chosen:
        if isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item < len(names):
                raise ExperimentError(f"data.views: index {item} out of range: the calibration has {len(names)} views")
            out.append(item)
        elif isinstance(item, str) and item in names:
            out.append(names.index(item))
        else:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ExperimentError(f"data.views: no view named {item!r} (the views: {shown}; or give indices)")
    if len(set(out)) != len(out):
        raise ExperimentError(f"data.views: a view is named twice in {chosen}")
    return out


def _calibration_views(data: Any) -> Views:
    from gradcv.core_ops.errors import GradcvError
    from gradcv.depth import read_colmap_text, read_json
    from gradcv.experiments._images import read_image, to_gray

    if not data.path:
        raise ExperimentError(f"data={data.source}: give data.path=" + ("FOLDER" if data.source == "colmap" else "FILE_OR_FOLDER"))
    path = Path(data.path)
    if not path.exists():
        raise ExperimentError(f"data.path: no such {'folder' if data.source == 'colmap' else 'file or folder'}: {str(path)!r}")
    try:
        if data.source == "colmap":
            if not path.is_dir():
                raise ExperimentError(f"data.path: expected the folder of cameras.txt and images.txt, got the file {str(path)!r}")
            cal = read_colmap_text(path, image_folder=data.image_folder, depth_folder=data.depth_folder)
        else:
            if data.image_folder is not None or data.depth_folder is not None:
                raise ExperimentError("data=json: image and depth paths come from the JSON file, not data.image_folder / data.depth_folder")
            if path.is_dir():
                found = sorted(path.glob("*.json"))
                if (path / "views.json").is_file():
                    path = path / "views.json"
                elif len(found) == 1:
                    path = found[0]
                else:
                    raise ExperimentError(f"data.path: {str(data.path)!r} holds {len(found)} .json files and no views.json: name the file")
            cal = read_json(path)
    except GradcvError as ex:
        raise ExperimentError(f"data={data.source}: {ex}") from None
    chosen = _select(cal.names, data.views)
    # Only the chosen views' images are read (a model may hold hundreds), each checked
    # against its camera's size as the loaders' own reader check does.
    images = []
    for i in chosen:
        image_path = cal.image_paths[i]
        if not image_path.is_file():
            raise ExperimentError(f"data={data.source}: image: no such file: {str(image_path)!r}")
        image = read_image(image_path, "image")
        hw = (int(image.shape[-2]), int(image.shape[-1]))
        size = cal.sizes[i]
        if size is not None and hw != tuple(size):
            raise ExperimentError(f"data={data.source}: {str(image_path)!r}: image is {hw[1]} x {hw[0]} pixels, "
                                  f"its camera {size[1]} x {size[0]} (width x height)")
        images.append(image)
    sizes = {tuple(img.shape[-2:]) for img in images}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        raise ExperimentError(f"data={data.source}: the views must share one image size, got {shown} (resize or crop them, or choose data.views)")
    if len({img.shape[0] for img in images}) > 1:
        images = [to_gray(img) for img in images]
    h, w = images[0].shape[-2:]
    return Views(
        images=torch.stack(images).float(),
        intrinsics=cal.intrinsics[chosen].double(),
        extrinsics=cal.extrinsics[chosen].double(),
        names=[cal.names[i] for i in chosen],
        description=f"{data.source} calibration {str(path)!r}: {len(chosen)} of {len(cal)} views, {w}x{h}",
        truth=None,
        info={"depths": [cal.depths[i] if cal.depths else None for i in chosen]},
        units="model units" if data.source == "colmap" else "m",
    )


def load_views(conf: DepthAppConfig) -> Views:
    """The views the data group names, with the reference's ground truth where known."""
    data = conf.data
    if data.source not in SOURCES:
        raise ExperimentError(f"data.source: expected one of {', '.join(SOURCES)}, got {data.source!r}")
    if data.source == "synthetic":
        if any(getattr(data, k) is not None for k in ("path", "image_folder", "depth_folder", "views")):
            raise ExperimentError("data=synthetic renders its views: data.path, data.views and the folders need data=colmap or data=json")
        return _synthetic(data, conf.ref_index)
    given = [name for name in SCENE_FIELDS if getattr(data, name) is not None]
    if given:
        raise ExperimentError(f"data.{given[0]}: a field of data=synthetic, not of data={data.source}")
    views = _calibration_views(data)
    n = len(views.names)
    if not 0 <= conf.ref_index < n:
        raise ExperimentError(f"ref_index: expected 0 <= ref_index < {n} (the views chosen from {data.path!r}), got {conf.ref_index}")
    if n < 2:
        raise ExperimentError(f"data={data.source}: need at least 2 views (a reference and a source), got {n}")
    depth = views.info.pop("depths")[conf.ref_index]
    views.truth = depth.double() if depth is not None else None
    return views


# ----------------------------------------------------------------------------- solving


class ScaleProgress(LevelProgress):
    """:class:`LevelProgress` with a bar per scale whose total is that scale's iterations
    (``DepthConfig.iterations`` may give one count per scale)."""

    def __init__(self, per_level: list[int], enabled: bool = True) -> None:
        super().__init__(len(per_level), max(per_level), enabled)
        self.per_level = per_level

    def _start_level(self, level: int) -> None:
        self.iterations = self.per_level[min(level, len(self.per_level) - 1)]
        self.every = max(1, self.iterations // 40)
        super()._start_level(level)


def _poses(extrinsics: torch.Tensor, ref_index: int) -> torch.Tensor:
    """``(N, 4, 4)`` ``src_T_ref = E_src @ E_ref^-1`` in float64."""
    E = extrinsics.double()
    return E @ torch.linalg.inv(E[ref_index])


def back_project(depth: np.ndarray, valid: np.ndarray, K: torch.Tensor, E: torch.Tensor) -> np.ndarray:
    """The world points ``(M, 3)`` of the ``valid`` pixels of a ``(H, W)`` depth map
    (row-major order), with camera matrix ``K`` and world-to-camera ``E``.

    Convention:
        Pixel centres at integers: pixel ``(x, y)`` with depth ``z`` is
        ``E^-1 [z K^-1 (x, y, 1), 1]``.
    """
    ys, xs = np.nonzero(valid)
    pix = np.stack([xs, ys, np.ones_like(xs)], 0).astype(np.float64)
    cam = np.linalg.inv(K.double().numpy()) @ pix * depth[ys, xs].astype(np.float64)
    world = np.linalg.inv(E.double().numpy()) @ np.concatenate([cam, np.ones((1, cam.shape[1]))], 0)
    return world[:3].T


def colour_inverse_depth(depth: np.ndarray, valid: np.ndarray, colormap: str) -> np.ndarray:
    """``(H, W, 3)`` uint8: inverse depth through ``colormap`` between its 1st and 99th
    percentiles over the valid pixels (near is the top of the map), invalid pixels black."""
    import matplotlib

    cmap = matplotlib.colormaps[colormap]
    rgb = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return rgb
    inv = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    lo, hi = np.percentile(inv[valid], [1.0, 99.0])
    t = np.clip((inv - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    colours = np.rint(cmap(t)[..., :3] * 255.0).astype(np.uint8)
    rgb[valid] = colours[valid]
    return rgb


def figure4(views: Views, result: DepthResult, ref_index: int, config: DepthConfig, colormap: str,
            scored: torch.Tensor | None, title: str) -> Figure:
    """The paper's Figure 4: the start, then one column per pyramid scale solved, coarse to fine; rows: the
    reference and the sources at that scale (the first :data:`FIGURE_SOURCES`), each source
    warped into the reference with that scale's depth, the depth, and (with ground truth)
    its relative error ``|d - d*| / d*``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    from gradcv.core_ops.geometry import depth_warp
    from gradcv.core_ops.pyramid import build_centred_pyramid
    from gradcv.depth.solver import level_intrinsics
    from gradcv.experiments._figures import show_image

    levels = len(result.level_depths)
    # Columns: the start (the sweep, for the default preset), then each level solved.
    columns = [(f"scale {col + 1}/{levels}", result.level_depths[col], levels - 1 - col) for col in range(levels)]
    if result.initial_depth is not None:
        columns.insert(0, ("start", result.initial_depth, levels - 1))
    n = views.images.shape[0]
    sources = [s for s in range(n) if s != ref_index][:FIGURE_SOURCES]
    if n - 1 > len(sources):
        title += f" ({len(sources)} of {n - 1} sources shown)"
    pyramid = build_centred_pyramid(views.images.float(), levels, config.blur_sigma)
    K = views.intrinsics.float()
    poses = _poses(views.extrinsics, ref_index).float()
    final = result.depth[0, 0].detach().cpu().double()
    ok = result.valid[0, 0].cpu() & torch.isfinite(final) & (final > 0)
    shown = final[ok] if ok.any() else final[torch.isfinite(final)]
    d_lo, d_hi = (np.percentile(shown.numpy(), [1.0, 99.0]) if shown.numel() else (0.0, 1.0))
    truth = views.truth
    rows = 2 * len(sources) + 2 + (truth is not None)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.6 * len(columns) + 1.6, 2.2 * rows), squeeze=False)
    depth_im = error_im = None
    err_cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.5")
    for col, (label, level_depth, level) in enumerate(columns):
        depth = level_depth[:1].detach().cpu().float()
        h, w = depth.shape[-2:]
        K_l = level_intrinsics(K, level)
        axes[0, col].set_title(f"{label} ({w}x{h})")
        show_image(axes[0, col], pyramid[level][ref_index])
        for r, s in enumerate(sources, start=1):
            show_image(axes[r, col], pyramid[level][s])
            warped, _ = depth_warp(pyramid[level][s : s + 1], depth, K_l[ref_index : ref_index + 1], K_l[s : s + 1], poses[s : s + 1])
            show_image(axes[len(sources) + r, col], warped)
        r = 2 * len(sources) + 1
        depth_im = axes[r, col].imshow(depth[0, 0].numpy(), cmap=matplotlib.colormaps[colormap].reversed(), vmin=d_lo, vmax=d_hi)
        if truth is not None:
            k = 2**level
            mask = (truth > 0) if scored is None else (scored & (truth > 0))
            gt = F.avg_pool2d(truth[None, None], k)[0, 0] if k > 1 else truth
            full = F.avg_pool2d(mask.double()[None, None], k)[0, 0] == 1.0 if k > 1 else mask
            gt, full = gt[:h, :w], full[:h, :w]
            err = ((depth[0, 0].double() - gt).abs() / gt.clamp_min(1e-12)).where(full, torch.tensor(math.nan, dtype=torch.float64))
            err_np = err.numpy()
            error_im = axes[r + 1, col].imshow(err_np, cmap=err_cmap, vmin=0.0, vmax=0.1)
            mean = float(np.nanmean(err_np)) if np.isfinite(err_np).any() else math.nan
            axes[r + 1, col].set_xlabel(f"AbsRel {mean:.4f}")
    axes[0, 0].set_ylabel(f"reference {views.names[ref_index]}")
    for r, s in enumerate(sources, start=1):
        axes[r, 0].set_ylabel(f"source {views.names[s]}")
        axes[len(sources) + r, 0].set_ylabel(f"{views.names[s]} warped\nto the reference")
    axes[2 * len(sources) + 1, 0].set_ylabel("estimated depth")
    if depth_im is not None:
        fig.colorbar(depth_im, ax=list(axes[2 * len(sources) + 1]), fraction=0.046, pad=0.02, label=f"depth ({views.units})")
    if error_im is not None:
        axes[-1, 0].set_ylabel("|d - d*| / d*")
        fig.colorbar(error_im, ax=list(axes[-1]), fraction=0.046, pad=0.02, label="relative error (clipped at 0.1)", extend="max")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------- task
def _scored_mask(views: Views, result: DepthResult) -> torch.Tensor | None:
    """The pixels the metrics score: the data's (synthetic), else those with a truth and
    seen by a source under the estimate."""
    if views.truth is None:
        return None
    if views.scored is not None:
        return views.scored
    return (views.truth > 0) & torch.isfinite(result.cost[0, 0].cpu())


def _metrics(views: Views, result: DepthResult, config: DepthConfig, conf: DepthAppConfig, cfg: DictConfig,
             scored: torch.Tensor | None, total_time: float, extra: dict[str, Any]) -> dict[str, Any]:
    from gradcv.depth import metrics as depth_metrics
    from gradcv.optim import SolverStatus

    depth = result.depth.detach().cpu().double()
    valid = result.valid.cpu()
    cost = result.cost.detach().cpu().double()
    seen = torch.isfinite(cost)
    h, w = depth.shape[-2:]
    rng = result.depth_range[0].detach().cpu().double().tolist()
    out: dict[str, Any] = {
        "input": views.description,
        "views": views.names,
        "ref_index": conf.ref_index,
        "size": [h, w],
        "preset": conf.preset,
        "valid_fraction": float(valid.double().mean()),
        "seen_fraction": float(seen.double().mean()),
        "mean_photometric_cost": float(cost[seen].mean()) if bool(seen.any()) else math.nan,
        "depth_range": rng,
        "depth_units": views.units,
        "depth_range_source": "derived from the cameras",
        "levels": len(result.level_depths),
        "iterations_used_per_level": result.iterations_used[:, 0].tolist(),
        "final_loss_per_level": [float(result.final_loss(level)[0]) for level in range(len(result.loss_history))],
        "status": SolverStatus(int(result.status[0])).name.lower(),
        "wall_time_s": result.wall_time,
        "total_time_s": total_time,
    }
    out.update({k: v for k, v in views.info.items()})
    if views.truth is not None and scored is not None:
        gt = views.truth[None, None]
        mask = scored[None, None]
        out["metrics"] = {k: float(v[0]) for k, v in depth_metrics(depth, gt, mask).items()}
        out["metrics_valid_only"] = {k: float(v[0]) for k, v in depth_metrics(depth, gt, mask & valid).items()}
        out["scored_pixel_count"] = int((mask & (gt > 0)).sum())
    out.update(extra)
    out["solver"] = dataclasses.asdict(config)
    out["config"] = OmegaConf.to_container(cfg, resolve=True)
    out["device"] = conf.device
    out["torch"] = torch.__version__
    return out


def _describe(config: DepthConfig, preset: str, height: int, width: int) -> str:
    from gradcv.depth.solver import solved_levels

    levels = solved_levels(config, height, width)
    its = config.iterations if isinstance(config.iterations, int) else "/".join(map(str, config.iterations))
    start = f"a {config.planes}-plane sweep" if config.initialisation == "plane_sweep" else config.initialisation
    return (
        f"preset {preset}: {config.optimizer}(lr={config.lr:g}) on {config.parameterisation}, {levels} "
        f"{'scale' if levels == 1 else 'scales'} x {its} iterations from {start}, "
        f"smoothness {config.smoothness:g} (order {config.smoothness_order})"
    )


def depth(cfg: DictConfig) -> None:
    """The Hydra task: load or render the views, solve the reference depth, print the
    metrics, write the depth maps, the point cloud, Figure 4 and metrics.json."""
    start = time.perf_counter()
    conf = config_to_object(cfg, DepthAppConfig)
    config = depth_config(conf)
    try:
        device = torch.device(conf.device)
    except RuntimeError as ex:
        raise ExperimentError(f"device: {ex}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExperimentError("device: cuda is not available here (use device=cpu)")
    import matplotlib

    if conf.colormap not in matplotlib.colormaps:
        raise ExperimentError(f"colormap: not a matplotlib colormap: {conf.colormap!r}")
    views = load_views(conf)
    n, _, h, w = views.images.shape
    print(f"{APP}: {views.description}")
    print(f"{APP}: {_describe(config, conf.preset, h, w)}", flush=True)

    from gradcv.core_ops.errors import GradcvError
    from gradcv.depth.solver import estimate_depth, solved_levels

    levels = solved_levels(config, h, w)
    per_level = [config.iterations_at(i, levels) for i in range(levels)]
    with ScaleProgress(per_level, conf.progress) as progress:
        try:
            result = estimate_depth(
                views.images[None].to(device),
                views.intrinsics[None].to(device),
                views.extrinsics[None].to(device),
                conf.ref_index,
                config=config,
                callback=progress,
            )
        except GradcvError as ex:
            raise ExperimentError(str(ex)) from None
    scored = _scored_mask(views, result)
    extra = _write_outputs(views, result, config, conf)
    metrics = _metrics(views, result, config, conf, cfg, scored, time.perf_counter() - start, extra)
    write_metrics(metrics)  # last: a folder with metrics.json is complete

    if "metrics" in metrics:
        m = metrics["metrics"]
        print(
            f"{APP}: AbsRel {m['abs_rel']:.4f}, SqRel {m['sq_rel']:.4f}, RMSE {m['rmse']:.4f} m, RMSE log {m['rmse_log']:.4f}, "
            f"delta<1.25 {m['delta1']:.4f}, <1.25^2 {m['delta2']:.4f}, <1.25^3 {m['delta3']:.4f} "
            f"({metrics['scored_pixel_count']} pixels seen by a source)"
        )
    near, far = metrics["depth_range"]
    print(
        f"{APP}: valid {100 * metrics['valid_fraction']:.1f} % of the pixels, mean photometric cost "
        f"{metrics['mean_photometric_cost']:.4f}, depth range {near:.3g}-{far:.3g} {views.units}, {metrics['status'].replace('_', ' ')}, "
        f"{result.wall_time:.2f} s"
    )
    if metrics["depth_png_beyond_range_pixels"]:
        print(f"{APP}: depth.png: {metrics['depth_png_beyond_range_pixels']} valid pixels beyond 65.535 written as 0 (depth.npy has them)")
    print(f"{APP}: wrote {run_dir()}")


def _write_outputs(views: Views, result: DepthResult, config: DepthConfig, conf: DepthAppConfig) -> dict[str, Any]:
    """depth.npy, depth.png, depth_color.png, points.ply and figure4.png; returns what
    metrics.json says about them."""
    from gradcv.depth import write_depth
    from gradcv.experiments._ply import write_ply

    out = run_dir()
    ref = conf.ref_index
    depth = result.depth[0, 0].detach().cpu().double().numpy()
    valid = result.valid[0, 0].cpu().numpy() & np.isfinite(depth) & (depth > 0)
    kept = np.where(valid, depth, 0.0)
    in_png = valid & (np.rint(kept * 1000.0) <= 65535)
    for name, values in (("depth.npy", kept.astype(np.float32)), ("depth.png", np.where(in_png, kept, 0.0))):
        write_depth(out / name, values)

    import matplotlib.image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, colour_inverse_depth(depth, valid, conf.colormap), format="png")
    atomic_write_bytes(out / "depth_color.png", buf.getvalue())

    image = views.images[ref].detach().cpu().float()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    colours = image[:3].permute(1, 2, 0).numpy()[valid]
    points = back_project(depth, valid, views.intrinsics[ref], views.extrinsics[ref])
    write_ply(out / "points.ply", points, colours, comment=f"gradcv depth app: reference view {views.names[ref]}, world coordinates")
    if conf.figure:
        import matplotlib.pyplot as plt

        what = ""
        scored = _scored_mask(views, result)
        if views.truth is not None and scored is not None:
            from gradcv.depth import metrics as depth_metrics

            m = depth_metrics(result.depth.detach().cpu().double(), views.truth[None, None], scored[None, None])
            what = f": AbsRel {float(m['abs_rel'][0]):.4f}"
        fig = figure4(views, result, ref, config, conf.colormap, scored, f"preset {conf.preset}, start and {len(result.level_depths)} "
                      f"{'scale' if len(result.level_depths) == 1 else 'scales'}{what}")
        save_figure(fig, out / "figure4.png", dpi=90)
        plt.close(fig)
    return {
        "point_count": int(valid.sum()),
        "depth_png_beyond_range_pixels": int((valid & ~in_png).sum()),
        "outputs": ["depth.npy", "depth.png", "depth_color.png", "points.ply"] + (["figure4.png"] if conf.figure else []),
    }


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.depth [overrides]``."""
    run_app(depth, config_name=APP)


if __name__ == "__main__":
    main()
