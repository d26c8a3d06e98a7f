"""Homography registration benchmark: gradcv's presets against OpenCV's ECC and Kornia's
``ImageRegistrator`` on seeded pairs with known ground truth, per photograph (issues 5, 14).

    python -m gradcv.experiments.bench_registration                      # every protocol and photograph
    python -m gradcv.experiments.bench_registration protocol=photometric pairs=20 photos=[coffee]

Pairs come from :func:`registration.make_pairs` applied to each photograph of ``photos``
(matplotlib's bundled ``grace_hopper.jpg`` and, when scikit-image is installed, its
photographs ``motorcycle``, ``rocket``, ``coffee``, ``astronaut`` and ``camera``; gray,
BT.601 weights), ``pairs`` per photograph and protocol, so that no preset is tuned to one
image. Protocols (``protocol``: one, ``both`` = full and detone, or ``all``):

- ``full``: 256 x 256, corners moved up to ``rho`` px (default 32), both images exact
  resamples of the photograph;
- ``detone``: DeTone et al.'s 128 x 128 patch of a 320 x 240 image, rho 32;
- ``photometric``: the full-image geometry at rho 24 with ``dst`` a second exposure:
  gamma 0.7-1.4, gain 0.7-1.3, bias +-0.08, noise up to 0.015, blur on half the pairs,
  JPEG 50-90 on a third (see :func:`registration.make_pairs`).

Columns (each reference only when importable):

- ``gradcv <preset>``: :func:`registration.register_homography` with
  ``RegistrationConfig.<preset>()``, one pair per call (B = 1);
- ``OpenCV ECC <n>-level`` / ``OpenCV ECC single-scale``: ``cv2.findTransformECC`` with
  ``MOTION_HOMOGRAPHY``, coarse to fine over gradcv's 3-level centred pyramid
  (:func:`core_ops.pyramid.build_centred_pyramid`: Gaussian pre-blur, 2 x 2 box average;
  level pixel ``x`` sits at ``2 x + 1/2`` of the level below, so a homography moves one
  level finer as ``S H S^-1`` with
  ``S = [[2, 0, .5], [0, 2, .5], [0, 0, 1]]``), and at full resolution only. ECC is called
  with ``src`` as the template and ``dst`` as the input image, so its warp maps ``src``
  pixels to ``dst`` pixels: the ground truth's meaning. A ``cv2.error`` is a failure;
- ``Kornia ImageRegistrator``: default settings (homography, Adam lr 1e-3, 5 levels, 100
  iterations, L1), on the first ``kornia_pairs`` pairs of each photograph (it takes
  seconds a pair). It returns ``M`` mapping *destination* to *source* coordinates,
  normalised to [-1, 1] with ``align_corners=False`` (``x_n = (2 x + 1) / W - 1``; checked
  against its ``HomographyWarper``, see :func:`kornia_to_pixel`), so the pixel
  homography ``src -> dst`` is ``(N^-1 M N)^-1``.

MACE is the mean distance of the four corner-pixel centres under the estimated and the
true homography (:func:`registration.corner_error`; on DeTone pairs DeTone's own 4-point
error, dst's corners mapped into src: :func:`mace_px`). A failed pair (exception, or a
non-finite estimate) counts as the identity estimate in the MACE statistics and is never
a success. Times are wall-clock per call (one untimed warm-up call per column first), at
``threads``; ``timing_threads`` then times gradcv's B = 1 presets and single-scale ECC
again on ``timing_pairs`` pairs at each thread count (medians). gradcv's throughput:
``throughput_batch`` pairs drawn from every photograph solved in one call, per pair, against
its B = 1 calls and single-scale ECC's.

Outputs (in the Hydra run folder): ``registration_benchmark.csv`` (one row per protocol
and column, over every photograph), ``registration_per_photo.csv``,
``registration_timing.csv``, ``registration_throughput.csv`` and ``metrics.json`` (all of
them, every pair's MACE and the issue's targets), each written atomically, and a printed
table.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import UsageError, atomic_write_text, config_to_object, run_app, run_dir, write_metrics
from gradcv.experiments._distributed import VARYING_KEY, Distributed, worker_argv
from gradcv.experiments._images import sample_photo, to_gray
from gradcv.experiments._rows import target_line
from gradcv.experiments._timing import parse_device, set_threads, synchronize

APP = "bench_registration"
PROTOCOLS = ("full", "detone", "photometric")
PRESETS = ("default", "second_order", "first_order", "paper")
#: The photographs pairs can be cut from (see :func:`gradcv.experiments.bench_features.load_photo`).
PHOTOS = ("grace_hopper", "motorcycle", "rocket", "coffee", "astronaut", "camera")
THRESHOLDS = (1.0, 3.0, 10.0)
CSV_NAME = "registration_benchmark.csv"
PER_PHOTO_CSV = "registration_per_photo.csv"
TIMING_CSV = "registration_timing.csv"
THROUGHPUT_CSV = "registration_throughput.csv"
CSV_COLUMNS = [
    "protocol", "method", "pairs", "mean_mace_px", "median_mace_px",
    "success_1px", "success_3px", "success_10px", "failures", "mean_ms_per_pair",
]
PER_PHOTO_COLUMNS = ["protocol", "photo", "method", "pairs", "mean_mace_px", "median_mace_px", "success_1px", "failures"]
TIMING_COLUMNS = ["protocol", "method", "threads", "pairs", "median_ms_per_pair", "ratio_to_ecc_single_scale"]
ECC_SINGLE = "OpenCV ECC single-scale"


@dataclass
class BenchRegistrationConfig:
    """Types of ``conf/bench_registration.yaml`` (values and documentation live there)."""

    pairs: int = 40
    protocol: str = "all"
    rho: Optional[int] = None
    photos: list[str] = field(default_factory=lambda: list(PHOTOS))
    seed: int = 0
    presets: list[str] = field(default_factory=lambda: ["default"])
    iterations: Optional[int] = None
    opencv: bool = True
    ecc_iterations: int = 100
    ecc_eps: float = 1e-6
    ecc_gauss_size: int = 5
    kornia: bool = True
    kornia_iterations: Optional[int] = None
    kornia_pairs: Optional[int] = 2
    throughput_batch: int = 40
    throughput_presets: list[str] = field(default_factory=lambda: ["default"])
    threads: int = 1
    timing_threads: list[int] = field(default_factory=lambda: [1, 2])
    timing_pairs: int = 6
    device: str = "cpu"


ConfigStore.instance().store(name="bench_registration_schema", node=BenchRegistrationConfig)


@dataclass
class Estimate:
    """One column's homographies for a batch of pairs and what they cost."""

    homography: torch.Tensor  # (N, 3, 3) float64, pixels, src -> dst; identity where failed
    failed: torch.Tensor  # (N,) bool
    seconds: list[float]  # per pair


# ------------------------------------------------------------------------ inputs
def load_photograph(name: str = "grace_hopper") -> torch.Tensor:
    """The photograph ``name`` (default matplotlib's ``grace_hopper.jpg``) as a
    ``(1, 1, H, W)`` float32 grayscale tensor in [0, 1] (BT.601 weights)."""
    if name == "grace_hopper":
        return to_gray(sample_photo())[None]
    from gradcv.experiments.bench_features import load_photo

    return torch.from_numpy(load_photo(name))[None, None]


def _check(conf: BenchRegistrationConfig) -> list[str]:
    """The protocols to run; :class:`UsageError` for any value out of range."""
    choices = {"both": ["full", "detone"], "all": list(PROTOCOLS), **{p: [p] for p in PROTOCOLS}}
    if conf.protocol not in choices:
        raise UsageError(f"protocol must be one of {', '.join(choices)}, got {conf.protocol!r}")
    if conf.pairs < 1:
        raise UsageError(f"pairs must be at least 1, got {conf.pairs}")
    if conf.rho is not None and not 0 <= conf.rho < 56:
        raise UsageError(f"rho must be in [0, 56) (or null), got {conf.rho}")
    for name, allowed in (("presets", PRESETS), ("throughput_presets", PRESETS), ("photos", PHOTOS)):
        bad = [p for p in getattr(conf, name) if p not in allowed]
        if bad:
            raise UsageError(f"{name}: unknown value(s) {', '.join(map(repr, bad))}; expected {', '.join(allowed)}")
    if not conf.photos or len(set(conf.photos)) != len(conf.photos):
        raise UsageError(f"photos must name at least one photograph, each once, got {conf.photos}")
    for name in ("iterations", "kornia_iterations", "kornia_pairs"):
        value = getattr(conf, name)
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1 (or null), got {value}")
    if conf.ecc_iterations < 1 or conf.ecc_gauss_size < 1 or conf.ecc_gauss_size % 2 == 0:
        raise UsageError("ecc_iterations must be positive and ecc_gauss_size odd and positive")
    if conf.throughput_batch < 0 or conf.timing_pairs < 0:
        raise UsageError("throughput_batch and timing_pairs must be non-negative (0: skip)")
    if conf.threads < 1 or any(t < 1 for t in conf.timing_threads):
        raise UsageError(f"threads and timing_threads must be at least 1, got {conf.threads}, {conf.timing_threads}")
    return choices[conf.protocol]


# ------------------------------------------------------------------------ gradcv
def gradcv_config(preset: str, iterations: int | None):
    from gradcv.registration import RegistrationConfig

    cfg = getattr(RegistrationConfig, preset)()
    return cfg if iterations is None else cfg.replace(iterations=iterations)


def run_gradcv(src: torch.Tensor, dst: torch.Tensor, config, device: torch.device | str = "cpu") -> Estimate:
    """One :func:`register_homography` call per pair (B = 1), on ``device`` (the pairs are
    moved there before the clock starts; CUDA is synchronised before it stops)."""
    from gradcv.registration import register_homography

    src, dst = src.to(device), dst.to(device)
    register_homography(src[:1], dst[:1], config=config)  # warm-up
    hs, seconds = [], []
    for i in range(src.shape[0]):
        synchronize(device)
        t0 = time.perf_counter()
        result = register_homography(src[i : i + 1], dst[i : i + 1], config=config)
        synchronize(device)
        seconds.append(time.perf_counter() - t0)
        hs.append(result.homography[0].to("cpu", torch.float64))
    return _estimate(torch.stack(hs), torch.zeros(len(hs), dtype=torch.bool), seconds)


# ------------------------------------------------------------------------ OpenCV
#: One level finer: ``x_fine = 2 x_coarse + 1/2`` (box-average pyramid, pixel centres at integers).
_FINER = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])


def ecc_pair(src_levels: list[np.ndarray], dst_levels: list[np.ndarray], criteria, gauss_size: int) -> np.ndarray:
    """``findTransformECC`` coarse to fine over ``src_levels``/``dst_levels`` (fine to coarse
    lists of float32 images); returns the full-resolution ``src -> dst`` pixel homography.
    Raises ``cv2.error`` when ECC does."""
    import cv2

    H = np.eye(3)
    for level in range(len(src_levels) - 1, -1, -1):
        if level < len(src_levels) - 1:
            H = _FINER @ H @ np.linalg.inv(_FINER)
        warp = (H / H[2, 2]).astype(np.float32)
        _, warp = cv2.findTransformECC(
            src_levels[level], dst_levels[level], warp, cv2.MOTION_HOMOGRAPHY, criteria, None, gauss_size
        )
        H = warp.astype(np.float64)
    return H / H[2, 2]


def run_ecc(src: torch.Tensor, dst: torch.Tensor, levels: int, sigma: float, conf: BenchRegistrationConfig) -> Estimate:
    import cv2

    from gradcv.core_ops.pyramid import build_centred_pyramid

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, conf.ecc_iterations, conf.ecc_eps)
    n = src.shape[0]
    hs, failed, seconds = [], [], []

    def levels_of(image: torch.Tensor) -> list[np.ndarray]:
        return [np.ascontiguousarray(x[0, 0].numpy()) for x in build_centred_pyramid(image, levels, sigma)]

    for i in range(-1, n):  # i = -1: untimed warm-up on pair 0
        j = max(i, 0)
        t0 = time.perf_counter()
        try:
            H = ecc_pair(levels_of(src[j : j + 1]), levels_of(dst[j : j + 1]), criteria, conf.ecc_gauss_size)
            bad = False
        except cv2.error:
            H, bad = np.eye(3), True
        if i >= 0:
            seconds.append(time.perf_counter() - t0)
            hs.append(torch.from_numpy(H))
            failed.append(bad)
    return _estimate(torch.stack(hs), torch.tensor(failed), seconds)


# ------------------------------------------------------------------------ Kornia
def _kornia_frame(height: int, width: int) -> np.ndarray:
    """Pixels (centres at integers) to Kornia's ``align_corners=False`` normalised frame."""
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0.0, 0.0, 1.0]])


def kornia_to_pixel(M: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``ImageRegistrator``'s result ``M`` (normalised, ``align_corners=False``, mapping
    destination to source) as the ``(3, 3)`` float64 pixel homography from src to dst."""
    N = torch.from_numpy(_kornia_frame(*size))
    dst_to_src = torch.linalg.inv(N) @ M.reshape(3, 3).detach().to(torch.float64) @ N
    H = torch.linalg.inv(dst_to_src)
    return H / H[2, 2]


def run_kornia(src: torch.Tensor, dst: torch.Tensor, iterations: int | None) -> Estimate:
    from kornia.geometry import ImageRegistrator

    def make() -> ImageRegistrator:
        return ImageRegistrator("homography") if iterations is None else ImageRegistrator("homography", num_iterations=iterations)

    size = tuple(src.shape[-2:])
    make().register(src[:1], dst[:1])  # warm-up
    hs, failed, seconds = [], [], []
    for i in range(src.shape[0]):
        t0 = time.perf_counter()
        try:
            H = kornia_to_pixel(make().register(src[i : i + 1], dst[i : i + 1]), size)
            bad = False
        except (RuntimeError, ValueError):  # e.g. a singular model matrix
            H, bad = torch.eye(3, dtype=torch.float64), True
        seconds.append(time.perf_counter() - t0)
        hs.append(H)
        failed.append(bad)
    return _estimate(torch.stack(hs), torch.tensor(failed), seconds)


# ------------------------------------------------------------------------ scoring
def _estimate(hs: torch.Tensor, failed: torch.Tensor, seconds: list[float]) -> Estimate:
    finite = torch.isfinite(hs).flatten(1).all(1)
    hs = torch.where(finite[:, None, None], hs, torch.eye(3, dtype=hs.dtype))
    return Estimate(hs, failed | ~finite, seconds)


def mace_px(protocol: str, H_est: torch.Tensor, H_true: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each pair's mean corner error in pixels: src's corners under the estimate and the truth
    (:func:`registration.corner_error`), except on DeTone pairs, where it is DeTone's 4-point
    error, dst's corners mapped back into src (``corner_error`` of the inverses; the two agree
    unless the moved corners make a thin quadrilateral, which sends src's corners far away).
    A singular estimate counts as the identity."""
    from gradcv.registration import corner_error

    if protocol != "detone":
        return corner_error(H_est, H_true, size)
    inv, info = torch.linalg.inv_ex(H_est)
    eye = torch.eye(3, dtype=H_est.dtype, device=H_est.device)
    return corner_error(torch.where((info == 0)[:, None, None], inv, eye), torch.linalg.inv(H_true), size)


def score(protocol: str, method: str, est: Estimate, H_true: torch.Tensor, size: tuple[int, int]) -> dict:
    mace = mace_px(protocol, est.homography, H_true, size)
    ok = ~est.failed
    row: dict = {
        "protocol": protocol,
        "method": method,
        "pairs": int(mace.numel()),
        "mean_mace_px": float(mace.mean()),
        "median_mace_px": float(mace.quantile(0.5)),
    }
    for t in THRESHOLDS:
        row[f"success_{t:g}px"] = float(((mace < t) & ok).double().mean())
    row["failures"] = int(est.failed.sum())
    row["mean_ms_per_pair"] = 1e3 * sum(est.seconds) / len(est.seconds)
    row["mace_px"] = [float(m) for m in mace]
    return row


def _concat(estimates: list[Estimate]) -> Estimate:
    return Estimate(
        torch.cat([e.homography for e in estimates]), torch.cat([e.failed for e in estimates]),
        [t for e in estimates for t in e.seconds],
    )


def throughput(protocol: str, preset: str, config, src: torch.Tensor, dst: torch.Tensor, H_true: torch.Tensor,
               b1_seconds: list[float], ecc_seconds: list[float] | None, device: torch.device | str = "cpu") -> dict:
    """Pairs per second at B = 1 (from the per-pair calls) and with all of ``src`` in one
    call on ``device``, and the batch's time per pair over single-scale ECC's (``nan``
    without it)."""
    from gradcv.registration import register_homography

    src, dst = src.to(device), dst.to(device)
    register_homography(src[:2], dst[:2], config=config)  # warm-up of the batched path
    synchronize(device)
    t0 = time.perf_counter()
    result = register_homography(src, dst, config=config)
    synchronize(device)
    seconds = time.perf_counter() - t0
    mace = mace_px(protocol, result.homography.to("cpu", torch.float64), H_true, tuple(src.shape[-2:]))
    per_pair = sum(b1_seconds) / len(b1_seconds)
    batched = src.shape[0] / seconds
    ecc = sum(ecc_seconds) / len(ecc_seconds) if ecc_seconds else math.nan
    return {
        "protocol": protocol,
        "method": f"gradcv {preset}",
        "batch": int(src.shape[0]),
        "batch_seconds": seconds,
        "pairs_per_s_batch": batched,
        "pairs_per_s_b1": 1.0 / per_pair,
        "speedup": batched * per_pair,
        "batch_ms_per_pair_over_ecc": (1.0 / batched) / ecc,
        "batch_median_mace_px": float(mace.quantile(0.5)),
        "batch_success_1px": float((mace < 1.0).double().mean()),
    }


def timing(protocol: str, columns: dict[str, Callable[[int], float]], thread_counts: list[int], n: int) -> list[dict]:
    """Median seconds per B = 1 call of each column (``columns[name](i)`` times pair ``i``)
    at each thread count, and the ratio to single-scale ECC's at the same count."""
    rows = []
    for threads in thread_counts:
        set_threads(threads)
        medians = {}
        for name, run in columns.items():
            run(0)  # warm-up at this thread count
            medians[name] = statistics.median(run(i) for i in range(n))
        ecc = medians.get(ECC_SINGLE)
        for name, m in medians.items():
            rows.append({
                "protocol": protocol, "method": name, "threads": threads, "pairs": n, "median_ms_per_pair": 1e3 * m,
                "ratio_to_ecc_single_scale": m / ecc if ecc else math.nan,
            })
            print(f"  timing threads={threads} {name:<26s} {1e3 * m:8.1f} ms/pair", flush=True)
    return rows


def targets(rows: list[dict], per_photo: list[dict], timings: list[dict], tput: list[dict]) -> list[dict]:
    """Issue 14's targets for ``gradcv default`` (``passed`` None where a column is missing)."""
    def row(protocol: str, method: str) -> dict | None:
        return next((r for r in rows if r["protocol"] == protocol and r["method"] == method), None)

    out = []
    gd, ecc = row("photometric", "gradcv default"), row("photometric", ECC_SINGLE)
    if gd:
        ok = gd["success_1px"] >= 0.95 and gd["median_mace_px"] <= 0.05 and (ecc is None or gd["success_1px"] >= ecc["success_1px"])
        detail = f"success {100 * gd['success_1px']:.1f} % (ECC {100 * ecc['success_1px']:.1f} %)" if ecc else f"success {100 * gd['success_1px']:.1f} %"
        out.append({"target": "photometric: success >= 95 % and >= single-scale ECC's, median <= 0.05 px", "passed": ok,
                    "detail": f"{detail}, median {gd['median_mace_px']:.4f} px"})
    photos = [r for r in per_photo if r["protocol"] == "detone" and r["method"] == "gradcv default"]
    if photos:
        worst = min(photos, key=lambda r: r["success_1px"])
        worst_mean = max(photos, key=lambda r: r["mean_mace_px"])
        out.append({"target": "detone, every photograph: success >= 98 %, mean MACE <= 0.1 px",
                    "passed": worst["success_1px"] >= 0.98 and worst_mean["mean_mace_px"] <= 0.1,
                    "detail": f"worst success {100 * worst['success_1px']:.1f} % ({worst['photo']}), worst mean "
                              f"{worst_mean['mean_mace_px']:.3f} px ({worst_mean['photo']})"})
    full = row("full", "gradcv default")
    if full:
        out.append({"target": "full: success 100 %, median <= 0.001 px", "passed": full["success_1px"] == 1.0 and full["median_mace_px"] <= 1e-3,
                    "detail": f"success {100 * full['success_1px']:.1f} %, median {full['median_mace_px']:.5f} px"})
    for t in timings:
        if t["method"] == "gradcv default" and t["protocol"] != "detone":
            r = t["ratio_to_ecc_single_scale"]
            out.append({"target": f"{t['protocol']}, B = 1, {t['threads']} thread(s): time <= 2x single-scale ECC",
                         "passed": None if math.isnan(r) else r <= 2.0, "detail": f"{t['median_ms_per_pair']:.1f} ms, {r:.2f}x"})
    for t in tput:
        if t["protocol"] == "detone" and t["method"] == "gradcv default":
            r = t["batch_ms_per_pair_over_ecc"]
            out.append({"target": f"detone, {t['batch']} pairs in one call: time per pair <= single-scale ECC's",
                         "passed": None if math.isnan(r) else r <= 1.0, "detail": f"{1e3 / t['pairs_per_s_batch']:.1f} ms/pair, {r:.2f}x"})
    return out


# ------------------------------------------------------------------------ reporting
def _csv(rows: list[dict], columns: list[str]) -> str:
    def cell(v: object) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    return ",".join(columns) + "\n" + "".join(",".join(cell(r[c]) for c in columns) + "\n" for r in rows)


def table(rows: list[dict], tput: list[dict]) -> str:
    head = f"{'protocol':<11s} {'method':<26s} {'pairs':>5s} {'mean MACE':>10s} {'median':>9s} {'<1px':>6s} {'<3px':>6s} {'<10px':>6s} {'fail':>4s} {'ms/pair':>8s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['protocol']:<11s} {r['method']:<26s} {r['pairs']:>5d} {r['mean_mace_px']:>10.3f} {r['median_mace_px']:>9.4f}"
            f" {100 * r['success_1px']:>5.0f}% {100 * r['success_3px']:>5.0f}% {100 * r['success_10px']:>5.0f}%"
            f" {r['failures']:>4d} {r['mean_ms_per_pair']:>8.1f}"
        )
    for t in tput:
        lines.append(
            f"throughput {t['protocol']}, {t['method']}: {t['pairs_per_s_b1']:.2f} pairs/s at B=1, "
            f"{t['pairs_per_s_batch']:.2f} pairs/s at B={t['batch']} ({t['speedup']:.1f}x; "
            f"batched median MACE {t['batch_median_mace_px']:.4f} px)"
        )
    return "\n".join(lines)


def per_photo_table(per_photo: list[dict]) -> str:
    """Success under 1 px and mean MACE, photographs across, methods down, per protocol."""
    photos = list(dict.fromkeys(r["photo"] for r in per_photo))
    lines = [f"{'protocol':<11s} {'method':<26s} " + " ".join(f"{p[:13]:>13s}" for p in photos) + "   (<1px % / mean px)"]
    for key in dict.fromkeys((r["protocol"], r["method"]) for r in per_photo):
        cells = {r["photo"]: r for r in per_photo if (r["protocol"], r["method"]) == key}
        lines.append(f"{key[0]:<11s} {key[1]:<26s} " + " ".join(
            f"{100 * cells[p]['success_1px']:>5.0f}/{cells[p]['mean_mace_px']:<7.3f}" if p in cells else f"{'-':>13s}" for p in photos))
    return "\n".join(lines)


# ------------------------------------------------------------------------ task
def _b1_timer(run_one: Callable[[torch.Tensor, torch.Tensor], object], src: torch.Tensor, dst: torch.Tensor,
              device: torch.device | str = "cpu") -> Callable[[int], float]:
    src, dst = src.to(device), dst.to(device)

    def timed(i: int) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        run_one(src[i : i + 1], dst[i : i + 1])
        synchronize(device)
        return time.perf_counter() - t0

    return timed


def _ecc_one(conf: BenchRegistrationConfig):
    import cv2

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, conf.ecc_iterations, conf.ecc_eps)

    def run(src: torch.Tensor, dst: torch.Tensor) -> None:
        try:
            ecc_pair([np.ascontiguousarray(src[0, 0].numpy())], [np.ascontiguousarray(dst[0, 0].numpy())], criteria, conf.ecc_gauss_size)
        except cv2.error:
            pass

    return run


def _references() -> tuple[bool, bool, list[str]]:
    notes = []
    try:
        import cv2  # noqa: F401
    except ImportError:
        cv2_ok = False
        notes.append("OpenCV not importable: no ECC columns")
    else:
        cv2_ok = True
    try:
        from kornia.geometry import ImageRegistrator  # noqa: F401
    except ImportError:
        kornia_ok = False
        notes.append("Kornia not importable: no ImageRegistrator column")
    else:
        kornia_ok = True
    return cv2_ok, kornia_ok, notes


def _columns(conf: BenchRegistrationConfig, cv2_ok: bool, kornia_ok: bool) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Estimate]]:
    """Every column: a function of ``(src, dst)`` CPU batches returning its :class:`Estimate`
    (gradcv's run on ``conf.device``; OpenCV and Kornia on the CPU)."""
    from gradcv.registration import RegistrationConfig

    pyramid = RegistrationConfig.first_order()  # 3 levels: ECC's pyramid
    kornia_n = conf.pairs if conf.kornia_pairs is None else min(conf.pairs, conf.kornia_pairs)
    columns: dict[str, Callable[[torch.Tensor, torch.Tensor], Estimate]] = {}
    for preset in conf.presets:
        columns[f"gradcv {preset}"] = lambda s, d, c=gradcv_config(preset, conf.iterations): run_gradcv(s, d, c, conf.device)
    if cv2_ok:
        columns[f"OpenCV ECC {pyramid.levels}-level"] = lambda s, d: run_ecc(s, d, pyramid.levels, pyramid.blur_sigma, conf)
        columns[ECC_SINGLE] = lambda s, d: run_ecc(s, d, 1, pyramid.blur_sigma, conf)
    if kornia_ok:
        columns["Kornia ImageRegistrator"] = lambda s, d: run_kornia(s[:kornia_n], d[:kornia_n], conf.kornia_iterations)
    return columns


def _size(protocol: str) -> tuple[int, int]:
    return (128, 128) if protocol == "detone" else (256, 256)


class _Jobs:
    """The accuracy runs as jobs ``(protocol, photograph, column)``, each one call on
    ``conf.pairs`` pairs of one photograph: the unit :mod:`._distributed` deals over
    torchrun's processes. Each job is seeded by its index (not by what ran before it in
    the process), so a job's result does not depend on how the jobs are shared."""

    def __init__(self, conf: BenchRegistrationConfig, protocols: list[str], photos: dict[str, torch.Tensor],
                 columns: dict[str, Callable[[torch.Tensor, torch.Tensor], Estimate]]) -> None:
        self.conf, self.photos, self.columns = conf, photos, columns
        self.jobs = [(protocol, photo, name) for protocol in protocols for photo in photos for name in columns]
        self._pairs: tuple[tuple[str, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def pairs(self, protocol: str, photo: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from gradcv.registration import make_pairs

        if self._pairs is None or self._pairs[0] != (protocol, photo):
            c = self.conf
            self._pairs = ((protocol, photo), make_pairs(self.photos[photo], c.pairs, protocol=protocol, rho=c.rho, seed=c.seed))
        return self._pairs[1]

    def run(self, group: list[tuple[int, tuple[str, str, str]]]) -> list[tuple[Estimate, torch.Tensor, dict]]:
        out = []
        for index, (protocol, photo, name) in group:
            src, dst, H_true = self.pairs(protocol, photo)
            torch.manual_seed(self.conf.seed + index)
            est = self.columns[name](src, dst)
            truth = H_true[: est.homography.shape[0]]
            row = {"photo": photo, **score(protocol, name, est, truth, _size(protocol))}
            print(f"  {protocol}, {photo} ({self.conf.pairs} pairs, seed {self.conf.seed}): {name:<26s} success@1px "
                  f"{100 * row['success_1px']:5.1f}%, mean MACE {row['mean_mace_px']:.4f} px, median {row['median_mace_px']:.4f} px, "
                  f"{row['mean_ms_per_pair']:.1f} ms/pair", flush=True)
            out.append((est, truth, row))
        return out


def _assemble(protocol: str, jobs: _Jobs, results: list[tuple[Estimate, torch.Tensor, dict]], rows: list[dict],
              per_photo: list[dict]) -> dict[str, list[Estimate]]:
    """One protocol's per-photograph rows and its row per column over every photograph (in
    the jobs' order); returns each column's estimates."""
    found: dict[str, list[Estimate]] = {name: [] for name in jobs.columns}
    truths: dict[str, list[torch.Tensor]] = {name: [] for name in jobs.columns}
    for (p, _, name), (est, truth, row) in zip(jobs.jobs, results):
        if p == protocol:
            found[name].append(est)
            truths[name].append(truth)
            per_photo.append(row)
    for name in jobs.columns:
        rows.append(score(protocol, name, _concat(found[name]), torch.cat(truths[name]), _size(protocol)))
    return found


def bench_registration(cfg: DictConfig) -> None:
    """The Hydra task: make the pairs, run every column, write CSVs and JSON, print tables."""
    conf = config_to_object(cfg, BenchRegistrationConfig)
    protocols = _check(conf)
    device = parse_device(conf.device)
    set_threads(conf.threads)
    torch.manual_seed(conf.seed)
    from gradcv.registration import make_pairs, register_homography

    cv2_ok, kornia_ok, notes = _references()
    cv2_ok, kornia_ok = cv2_ok and conf.opencv, kornia_ok and conf.kornia
    photos = {name: load_photograph(name) for name in conf.photos}
    rows: list[dict] = []
    per_photo: list[dict] = []
    timings: list[dict] = []
    tput: list[dict] = []
    jobs = _Jobs(conf, protocols, photos, _columns(conf, cv2_ok, kornia_ok))
    with Distributed.from_env("cpu") as dist:
        # The accuracy jobs are dealt over torchrun's processes (one process: all of them);
        # the timings and the batched throughput run on the first process alone.
        results = dist.map_batches(jobs.run, list(enumerate(jobs.jobs)), 1)
        launch = dist.launch_record()
    if results is None:
        return
    for protocol in protocols:
        found = _assemble(protocol, jobs, results, rows, per_photo)
        # Pairs from every photograph at random (the batch, and the timing's first pairs).
        n_mixed = max(conf.throughput_batch, conf.timing_pairs + 1, 2)
        src, dst, H_true = make_pairs([p[0] for p in photos.values()], n_mixed, protocol=protocol, rho=conf.rho, seed=conf.seed + 1)
        if conf.timing_pairs > 0 and conf.timing_threads:
            timed = {f"gradcv {p}": _b1_timer(lambda s, d, c=gradcv_config(p, conf.iterations): register_homography(s, d, config=c), src, dst, device)
                     for p in conf.presets}
            if cv2_ok:
                timed[ECC_SINGLE] = _b1_timer(_ecc_one(conf), src, dst)
            timings += timing(protocol, timed, conf.timing_threads, conf.timing_pairs)
            set_threads(conf.threads)
        if conf.throughput_batch > 0:
            b = conf.throughput_batch
            ecc = _concat(found[ECC_SINGLE]).seconds if ECC_SINGLE in found else None
            for preset in conf.throughput_presets:
                config = gradcv_config(preset, conf.iterations)
                key = f"gradcv {preset}"
                b1 = _concat(found[key]).seconds if key in found else run_gradcv(src[:b], dst[:b], config, device).seconds
                tput.append(throughput(protocol, preset, config, src[:b], dst[:b], H_true[:b], b1, ecc, device))

    for r in rows:
        bad = [k for k in CSV_COLUMNS[2:] if not math.isfinite(float(r[k]))]
        if bad:
            notes.append(f"{r['protocol']} {r['method']}: non-finite {', '.join(bad)}")
    notes.append("failed pairs (exceptions, non-finite estimates) count as the identity in MACE statistics and never succeed")
    notes.append("Kornia's result is normalised with align_corners=False and maps dst to src; converted to pixels, src to dst")
    if kornia_ok and conf.kornia_pairs is not None and conf.kornia_pairs < conf.pairs:
        notes.append(f"Kornia ran on the first {conf.kornia_pairs} pairs of each photograph only (its pairs column)")
    goals = targets(rows, per_photo, timings, tput)
    out = run_dir()
    tput_columns = ["protocol", "method", "batch", "batch_seconds", "pairs_per_s_batch", "pairs_per_s_b1", "speedup",
                    "batch_ms_per_pair_over_ecc", "batch_median_mace_px", "batch_success_1px"]
    atomic_write_text(out / CSV_NAME, _csv(rows, CSV_COLUMNS))
    atomic_write_text(out / PER_PHOTO_CSV, _csv(per_photo, PER_PHOTO_COLUMNS))
    atomic_write_text(out / TIMING_CSV, _csv(timings, TIMING_COLUMNS))
    atomic_write_text(out / THROUGHPUT_CSV, _csv(tput, tput_columns))
    metrics = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "images": {name: "matplotlib grace_hopper.jpg" if name == "grace_hopper" else f"scikit-image {name}" for name in conf.photos},
        "torch": torch.__version__,
        "threads": conf.threads,
        "device": str(device),
        "results": rows,
        "per_photo": per_photo,
        "timing": timings,
        "throughput": tput,
        "targets": goals,
        "notes": notes,
        "launch": launch,
        # What measures time (and the verdicts derived from it) varies from run to run.
        VARYING_KEY: ["launch", "results/*/mean_ms_per_pair", "per_photo/*/mean_ms_per_pair", "timing", "throughput",
                      "targets"],
    }
    write_metrics(metrics, out)  # last: a folder with metrics.json is complete
    print()
    print(table(rows, tput))
    print()
    print(per_photo_table(per_photo))
    if goals:
        print("\nissue 14's targets (gradcv default):")
        print("\n".join(target_line(g) for g in goals))
    for note in notes:
        print(f"note: {note}")
    print(f"outputs: {CSV_NAME}, {PER_PHOTO_CSV}, {TIMING_CSV}, {THROUGHPUT_CSV} and metrics.json in {out}", flush=True)


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_registration [overrides]``."""
    run_app(bench_registration, config_name=APP, argv=worker_argv())


if __name__ == "__main__":
    main()
