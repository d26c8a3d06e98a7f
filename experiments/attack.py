"""The targeted attack on two-view matching, with the paper's Figure 5 (section 4.4).

    python -m gradcv.experiments.attack                                  # the bundled unrelated pair
    python -m gradcv.experiments.attack preset=paper                     # the paper's settings
    python -m gradcv.experiments.attack attack.iterations=200 attack.budget=0.02 match.num_features=1500
    python -m gradcv.experiments.attack data.pair=[rocket,astronaut] target.seed=3
    python -m gradcv.experiments.attack data.image_a=a.png data.image_b=b.png target.homography=[1,0,10,0,1,0,0,0,1]

Two unrelated images A and B and a target homography T (A's pixels to B's) are modified by
:func:`gradcv.matching.attack_pair` until the matching pipeline finds T between them. The
app prints the success figures before and after, judged on the images rounded to 8 bits
(consistent RANSAC inliers, their share of all inliers, the corner error of the estimated
homography to T, PSNR and L-infinity of each perturbation); when OpenCV is installed it
runs OpenCV's SIFT (``SIFT_create``, ratio 0.8, ``findHomography`` RANSAC 3 px) on the
same 8-bit images and reports the same figures: does the attack transfer?

Config (``conf/attack.yaml``): ``preset`` (``default``, ``transfer`` or ``paper``:
:meth:`AttackConfig.default` / :meth:`AttackConfig.transfer` / :meth:`AttackConfig.paper`), ``attack.<field>`` for any
:class:`~gradcv.matching.AttackConfig` field but ``match`` and ``seed`` (the top-level
``seed``), ``match.<field>`` for any :class:`~gradcv.matching.MatchConfig` field of the
attacked pipeline; ``data`` (two bundled photographs by name, or two image files, and the
size the bundled ones are cut to); ``target`` (a seeded random homography: rotation,
scale, corner jitter; or nine numbers, row-major); ``device``, ``figure``, ``progress``,
``opencv``.

Outputs (in the Hydra run folder, each written atomically): ``adversarial_a.png`` and
``adversarial_b.png`` (8-bit, the images that were judged), ``figure5.png`` (originals;
optimised; optimised with the verified matches drawn), ``loss.png``, then
``metrics.json``, written last so that a folder holding it is complete.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import (
    ExperimentError,
    atomic_write_bytes,
    config_to_object,
    overrides_schema,
    run_app,
    run_dir,
    save_figure,
    set_fields,
    write_metrics,
)
from gradcv.matching.attack_config import PRESETS, AttackConfig
from gradcv.matching.config import MatchConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gradcv.matching import AttackMetrics, AttackResult

APP = "attack"
# Not ``attack.<field>``: the pipeline has its own node, the seed is the app's.
_NOT_ATTACK_FIELDS = frozenset({"match", "seed"})


#: Types of the ``attack`` and ``match`` nodes (every field ``None``: the preset's value).
AttackOverrides = overrides_schema(AttackConfig, "AttackOverrides", _NOT_ATTACK_FIELDS)
MatchOverrides = overrides_schema(MatchConfig, "MatchOverrides")


@dataclass
class AttackDataConfig:
    """Types of the ``data`` node."""

    pair: list[str] = field(default_factory=lambda: ["coffee", "chelsea"])
    image_a: Optional[str] = None
    image_b: Optional[str] = None
    height: int = 300
    width: int = 400


@dataclass
class TargetConfig:
    """Types of the ``target`` node."""

    homography: Optional[list[float]] = None
    seed: int = 0
    max_rotation: float = 20.0
    scale: list[float] = field(default_factory=lambda: [0.8, 1.25])
    jitter: float = 0.1


@dataclass
class AttackAppConfig:
    """Types of ``conf/attack.yaml`` (values and documentation live there)."""

    preset: str = "default"
    attack: AttackOverrides = field(default_factory=AttackOverrides)  # type: ignore[valid-type]
    match: MatchOverrides = field(default_factory=MatchOverrides)  # type: ignore[valid-type]
    data: AttackDataConfig = field(default_factory=AttackDataConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    seed: int = 0
    device: str = "cpu"
    figure: bool = True
    progress: bool = True
    opencv: bool = True


ConfigStore.instance().store(name="attack_schema", node=AttackAppConfig)


def attack_config(conf: AttackAppConfig) -> AttackConfig:
    """The preset with the ``attack.*`` and ``match.*`` overrides and the app's seed."""
    from gradcv.core_ops.errors import GradcvError

    if conf.preset not in PRESETS:
        raise ExperimentError(f"preset: expected one of {', '.join(PRESETS)}, got {conf.preset!r}")
    base = AttackConfig.preset(conf.preset)
    try:
        match = base.match.replace(**set_fields(conf.match))
        return base.replace(match=match, seed=conf.seed, **set_fields(conf.attack))
    except GradcvError as ex:
        raise ExperimentError(f"attack config: {ex}") from None


def target_homography(target: TargetConfig, height: int, width: int) -> torch.Tensor:
    """``(1, 3, 3)`` float64: the given nine numbers, or a seeded random target."""
    from gradcv.core_ops.errors import GradcvError
    from gradcv.matching.targets import random_homography

    if target.homography is not None:
        values = list(target.homography)
        if len(values) != 9:
            raise ExperimentError(f"target.homography: expected 9 numbers (row-major 3x3), got {len(values)}")
        return torch.tensor(values, dtype=torch.float64).reshape(1, 3, 3)
    if len(target.scale) != 2:
        raise ExperimentError(f"target.scale: expected [low, high], got {list(target.scale)}")
    try:
        return random_homography(1, height, width, max_rotation=target.max_rotation, scale=tuple(target.scale),
                                 jitter=target.jitter, generator=torch.Generator().manual_seed(target.seed))
    except GradcvError as ex:
        raise ExperimentError(f"target: {ex}") from None


def load_pair(data: AttackDataConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(A, B)`` as ``(C, H, W)`` float32 in [0, 1] and their names."""
    from gradcv.experiments._images import bundled_photograph, read_image

    if (data.image_a is None) != (data.image_b is None):
        raise ExperimentError("data.image_a, data.image_b: give both files, or neither (the bundled pair)")
    if data.image_a is not None and data.image_b is not None:
        a, b = read_image(data.image_a, "data.image_a"), read_image(data.image_b, "data.image_b")
        if a.shape[0] != b.shape[0]:  # one gray, one colour: both gray, as the pipeline sees them
            from gradcv.experiments._images import to_gray

            a, b = to_gray(a), to_gray(b)
        return a, b, [data.image_a, data.image_b]
    if len(data.pair) != 2:
        raise ExperimentError(f"data.pair: expected two photograph names, got {list(data.pair)}")
    if data.height < 41 or data.width < 41:
        raise ExperimentError(f"data.height, data.width: expected at least 41 px (a descriptor patch), got {data.height} x {data.width}")
    return (bundled_photograph(data.pair[0], data.height, data.width), bundled_photograph(data.pair[1], data.height, data.width),
            list(data.pair))


# --------------------------------------------------------------------------------------
# OpenCV's SIFT on the same 8-bit images (transfer)
# --------------------------------------------------------------------------------------


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] to an ``(H, W[, 3])`` uint8 array, rounded as the attack's check does."""
    arr = torch.round(image.detach().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))


def opencv_available() -> bool:
    try:
        import cv2

        return hasattr(cv2, "SIFT_create")
    except ImportError:
        return False


def opencv_transfer(a: np.ndarray, b: np.ndarray, target: np.ndarray, config: AttackConfig, ratio: float = 0.8) -> dict[str, Any]:
    """OpenCV's SIFT + ratio test + ``findHomography`` (RANSAC, ``config.match.ransac_threshold``)
    on two uint8 images, judged as :func:`gradcv.matching.evaluate_attack` judges ours: RANSAC
    inliers and those consistent with ``target`` (``3x3`` A to B), each counted once per
    keypoint, the consistent fraction, the mean corner error and success."""
    import cv2

    cv2.setRNGSeed(config.seed)
    sift = cv2.SIFT_create()
    gray = [x if x.ndim == 2 else cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b)]
    (ka, da), (kb, db) = (sift.detectAndCompute(g, None) for g in gray)
    out: dict[str, Any] = {"keypoints": [len(ka), len(kb)], "matches": 0, "inliers": 0, "consistent_inliers": 0,
                           "consistent_fraction": 0.0, "corner_error": math.inf, "success": False}
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return out
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    out["matches"] = len(good)
    if len(good) < 4:
        return out
    pa = np.float64([ka[g.queryIdx].pt for g in good])
    pb = np.float64([kb[g.trainIdx].pt for g in good])
    H, mask = cv2.findHomography(pa, pb, cv2.RANSAC, config.match.ransac_threshold)
    if H is None or mask is None:
        return out
    inlier = mask.ravel().astype(bool)
    mapped = cv2.perspectiveTransform(pa[None], target)[0]
    consistent = inlier & (np.linalg.norm(mapped - pb, axis=1) <= config.consistency_threshold)

    def distinct(sel: np.ndarray) -> int:  # once per keypoint, as gradcv.matching.distinct_inliers
        rows = np.nonzero(sel)[0]
        locate = [(tuple(np.round(pa[i], 2)), tuple(np.round(pb[i], 2))) for i in rows]  # OpenCV repeats a point per orientation
        return min(len({p for p, _ in locate}), len({q for _, q in locate}))

    h, w = gray[0].shape
    corners = np.float64([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])[None]
    err = float(np.linalg.norm(cv2.perspectiveTransform(corners, H)[0] - cv2.perspectiveTransform(corners, target)[0], axis=1).mean())
    n_in, n_c = distinct(inlier), distinct(consistent)
    fraction = n_c / n_in if n_in else 0.0
    out.update(inliers=n_in, consistent_inliers=n_c, consistent_fraction=fraction, corner_error=err if math.isfinite(err) else math.inf,
               success=bool(n_c >= config.min_inliers and fraction >= config.min_fraction and err <= config.max_corner_error))
    return out


# --------------------------------------------------------------------------------------
# Figures and metrics
# --------------------------------------------------------------------------------------


def verified_matches(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, config: AttackConfig) -> tuple[np.ndarray, np.ndarray]:
    """The matched keypoints ``(K, 2)`` of A and B among the RANSAC inliers that agree with
    the target, on the 8-bit images (what Figure 5's bottom row draws)."""
    from gradcv.core_ops.geometry.linalg import transform_points
    from gradcv.matching import match_pair, quantize_8bit

    result = match_pair(quantize_8bit(a[None]), quantize_8bit(b[None]), config.match)
    p1, p2 = result.matched_keypoints()
    agree = (transform_points(target.double(), p1.double()) - p2.double()).norm(dim=-1) <= config.consistency_threshold
    keep = (result.inliers & agree)[0]
    return p1[0][keep].cpu().numpy(), p2[0][keep].cpu().numpy()


def _rgb(image: torch.Tensor) -> np.ndarray:
    arr = image.detach().clamp(0, 1).cpu().float().numpy()
    return np.repeat(arr[0][..., None], 3, -1) if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def figure5(orig: tuple[torch.Tensor, torch.Tensor], adv: tuple[torch.Tensor, torch.Tensor], matches: tuple[np.ndarray, np.ndarray],
            title: str) -> Figure:
    """The paper's Figure 5: the originals; the optimised images; the optimised images side
    by side with the verified matches (consistent RANSAC inliers) drawn."""
    import matplotlib.pyplot as plt

    h, w = orig[0].shape[-2:]
    fig = plt.figure(figsize=(8, 9.6), layout="constrained")
    grid = fig.add_gridspec(3, 2)
    for row, (images, label) in enumerate(((orig, "original"), (adv, "optimised"))):
        for col in range(2):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(_rgb(images[col]), interpolation="nearest")
            ax.set_title(f"{'AB'[col]}, {label}", fontsize=9)
            ax.axis("off")
    ax = fig.add_subplot(grid[2, :])
    gap = 8
    canvas = np.ones((h, 2 * w + gap, 3), dtype=np.float32)
    canvas[:, :w], canvas[:, w + gap:] = _rgb(adv[0]), _rgb(adv[1])
    ax.imshow(canvas, interpolation="nearest")
    pa, pb = matches
    if len(pa):
        colours = plt.get_cmap("hsv")(np.linspace(0, 1, len(pa), endpoint=False))
        for (xa, ya), (xb, yb), c in zip(pa, pb, colours):
            ax.plot([xa, xb + w + gap], [ya, yb], "-", color=c, lw=0.8)
        ax.plot(pa[:, 0], pa[:, 1], "o", ms=2.5, mfc="none", mec="yellow", mew=0.6)
        ax.plot(pb[:, 0] + w + gap, pb[:, 1], "o", ms=2.5, mfc="none", mec="yellow", mew=0.6)
    ax.set_title(f"optimised, {len(pa)} verified matches (RANSAC inliers consistent with the target)", fontsize=9)
    ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def metrics_of(m: AttackMetrics, i: int = 0) -> dict[str, Any]:
    """One pair's :class:`AttackMetrics` as plain JSON values."""
    from gradcv.matching import MatchStatus

    return {
        "success": bool(m.success[i]),
        "inliers": int(m.inliers[i]),
        "consistent_inliers": int(m.consistent_inliers[i]),
        "consistent_fraction": float(m.consistent_fraction[i]),
        "corner_error": float(m.corner_error[i]),
        "match_status": MatchStatus(int(m.match_status[i])).name.lower(),
        "psnr": [float(m.psnr_a[i]), float(m.psnr_b[i])],
        "linf": [float(m.linf_a[i]), float(m.linf_b[i])],
        "linf_levels": [round(float(m.linf_a[i]) * 255), round(float(m.linf_b[i]) * 255)],
    }


def describe(m: dict[str, Any]) -> str:
    """One line of success figures."""
    err = "none" if not math.isfinite(m["corner_error"]) else f"{m['corner_error']:.2f} px"
    return (f"{'SUCCESS' if m['success'] else 'no success'}: {m['consistent_inliers']} consistent of {m['inliers']} inliers "
            f"({100 * m['consistent_fraction']:.0f} %), corner error {err}")


def _describe_config(config: AttackConfig, preset: str) -> str:
    budget = "no budget" if config.budget is None else f"L-inf budget {round(config.budget * 255)}/255"
    if config.psnr_budget is not None:
        budget += f", PSNR >= {config.psnr_budget:g} dB"
    step = config.optimizer
    if config.normalize not in (None, "none"):
        step += f" on the {config.normalize}-normalised gradient"
    if config.eps is not None:
        step += f", eps {config.eps:g}"
    if config.momentum > 0:
        step += f", momentum {config.momentum:g}"
    eot = [f"noise {config.noise:g}"] * (config.noise > 0) + [f"blur <= {config.blur:g} px"] * (config.blur > 0)
    m = config.match
    extra = f", responses lifted to {config.min_response:.4g}" if config.min_response is not None else ""
    if config.stop_inliers is not None:
        extra += f", a pair stops at {config.stop_inliers} consistent inliers"
    return (f"preset {preset}: {m.detector} + {'RootSIFT' if m.rootsift else 'SIFT'}, top {m.num_features}, "
            f"{step} (lr {config.lr:g}) for at most {config.iterations} steps, alpha {config.alpha:g}, "
            f"beta {config.beta:g}, {budget}{', 8-bit steps' if config.quantize else ''}"
            f"{(', EOT ' + ' and '.join(eot)) if eot else ''}{extra}")


class _StepBar:
    """A tqdm bar over the attack's steps (one line at the end when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=f"{APP}: steps", unit="step", disable=not enabled, leave=False, dynamic_ncols=True)

    def __call__(self, level: int, iteration: int, loss: torch.Tensor) -> None:
        self.bar.update(1)
        if loss.numel():
            self.bar.set_postfix(loss=f"{float(loss.mean()):.4g}", refresh=False)

    def __enter__(self) -> "_StepBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def attack(cfg: DictConfig) -> None:
    """The Hydra task: load the pair, make the target, attack, print and write everything."""
    start = time.perf_counter()
    conf = config_to_object(cfg, AttackAppConfig)
    config = attack_config(conf)
    try:
        device = torch.device(conf.device)
    except RuntimeError as ex:
        raise ExperimentError(f"device: {ex}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExperimentError("device: cuda is not available here (use device=cpu)")
    a, b, names = load_pair(conf.data)
    h, w = a.shape[-2:]
    target = target_homography(conf.target, h, w)
    print(f"{APP}: A = {names[0]}, B = {names[1]} ({w} x {h}); target homography (A to B) "
          f"{np.array2string(target[0].numpy(), precision=4, suppress_small=True, separator=', ').replace(chr(10), '')}")
    print(f"{APP}: {_describe_config(config, conf.preset)}", flush=True)

    from gradcv.core_ops.errors import GradcvError
    from gradcv.matching import attack_pair
    from gradcv.optim import SolverStatus

    with _StepBar(config.iterations, conf.progress) as bar:
        try:
            result = attack_pair(a[None].to(device), b[None].to(device), target.to(device), config, callback=bar)
        except GradcvError as ex:
            raise ExperimentError(str(ex)) from None
    before, after = metrics_of(result.before), metrics_of(result.after)
    print(f"{APP}: before: {describe(before)}")
    print(f"{APP}: after {int(result.iterations_used[0, 0])} steps ({result.wall_time:.1f} s): {describe(after)}; "
          f"PSNR {after['psnr'][0]:.1f} / {after['psnr'][1]:.1f} dB, L-inf {after['linf_levels'][0]} / {after['linf_levels'][1]} levels")
    transfer: dict[str, Any] | None = None
    adv_a, adv_b = result.adversarial_a[0].cpu(), result.adversarial_b[0].cpu()
    if conf.opencv and opencv_available():
        t = target[0].numpy()
        transfer = {"before": opencv_transfer(to_uint8(a), to_uint8(b), t, config),
                    "after": opencv_transfer(to_uint8(adv_a), to_uint8(adv_b), t, config)}
        print(f"{APP}: OpenCV SIFT on the same 8-bit images (transfer): before: {describe(transfer['before'])}; "
              f"after: {describe(transfer['after'])}")
    elif conf.opencv:
        print(f"{APP}: OpenCV is not installed: no transfer check (pip install opencv-python-headless)")

    outputs = _write_outputs(conf, config, (a, b), (adv_a, adv_b), target, result, names)
    history = result.loss_history[0][0].cpu()
    metrics = {
        "app": APP,
        "preset": conf.preset,
        "images": names,
        "size": [h, w],
        "target_homography": target[0].tolist(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "attack_config": _plain(dataclasses.asdict(config)),
        "status": SolverStatus(int(result.status[0])).name.lower(),
        "iterations": int(result.iterations_used[0, 0]),
        "before": before,
        "after": after,
        "opencv_transfer": transfer,
        "loss_history": [float(v) for v in history[torch.isfinite(history)]],
        "wall_time_s": result.wall_time,
        "total_time_s": time.perf_counter() - start,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "outputs": outputs,
    }
    write_metrics(metrics)  # last: a folder with metrics.json is complete
    print(f"{APP}: wrote {run_dir()}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _write_png(path: Any, image: torch.Tensor) -> None:
    """An 8-bit PNG of ``(C, H, W)`` in [0, 1], exactly the rounded pixels the attack judged."""
    import matplotlib.image as mpimg

    arr = to_uint8(image)
    buf = io.BytesIO()
    if arr.ndim == 2:
        mpimg.imsave(buf, arr, format="png", cmap="gray", vmin=0, vmax=255)
    else:
        mpimg.imsave(buf, arr, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _write_outputs(conf: AttackAppConfig, config: AttackConfig, orig: tuple[torch.Tensor, torch.Tensor],
                   adv: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor, result: AttackResult, names: list[str]) -> list[str]:
    out = run_dir()
    _write_png(out / "adversarial_a.png", adv[0])
    _write_png(out / "adversarial_b.png", adv[1])
    written = ["adversarial_a.png", "adversarial_b.png"]
    if conf.figure:
        import matplotlib.pyplot as plt

        matches = verified_matches(adv[0].to(result.adversarial_a.device), adv[1].to(result.adversarial_a.device),
                                   target.to(result.adversarial_a.device), config)
        after = result.after
        title = (f"{names[0]} / {names[1]}, preset {conf.preset}: {'success' if bool(after.success[0]) else 'no success'} after "
                 f"{int(result.iterations_used[0, 0])} steps, PSNR {float(after.psnr_a[0]):.1f} / {float(after.psnr_b[0]):.1f} dB")
        fig = figure5(orig, adv, matches, title)
        save_figure(fig, out / "figure5.png", dpi=90)
        plt.close(fig)
        history = result.loss_history[0][0].cpu().numpy()
        fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
        ax.plot(np.arange(1, len(history) + 1), history)
        ax.set_xlabel("step")
        ax.set_ylabel("L_loc + alpha L_desc + beta L_reg")
        ax.set_yscale("log" if np.nanmin(history, initial=np.inf) > 0 else "linear")
        save_figure(fig, out / "loss.png", dpi=90)
        plt.close(fig)
        written += ["figure5.png", "loss.png"]
    return written


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.attack [overrides]``."""
    run_app(attack, config_name=APP)


if __name__ == "__main__":
    main()
