"""Homography registration benchmark: gradcv's presets against OpenCV's ECC and Kornia's
``ImageRegistrator`` on seeded pairs with known ground truth (issue 5).

    python -m gradcv.experiments.bench_registration                       # 200 pairs, full protocol
    python -m gradcv.experiments.bench_registration pairs=16 protocol=both

Pairs come from :func:`registration.make_pairs` applied to matplotlib's bundled
``grace_hopper.jpg`` (grayscale, BT.601 weights): ``full`` is 256 x 256 with corners
moved up to ``rho`` px, ``detone`` is DeTone et al.'s 128 x 128 patch of a 320 x 240 image.

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
  iterations, L1). It returns ``M`` mapping *destination* to *source* coordinates,
  normalised to [-1, 1] with ``align_corners=False`` (``x_n = (2 x + 1) / W - 1``; checked
  against its ``HomographyWarper``, see :func:`kornia_to_pixel`), so the pixel
  homography ``src -> dst`` is ``(N^-1 M N)^-1``.

MACE is the mean distance of the four corner-pixel centres under the estimated and the
true homography (:func:`registration.corner_error`). A failed pair (exception, or a
non-finite estimate) counts as the identity estimate in the MACE statistics and is never
a success. Times are wall-clock per call (one untimed warm-up call per column first).
gradcv's throughput: pairs per second at B = 1 (the per-pair calls above) and with
``throughput_batch`` pairs solved in one call.

Outputs (in the Hydra run folder): ``registration_benchmark.csv`` (one row per protocol
and column), ``registration_throughput.csv`` and ``metrics.json`` (both, plus every
pair's MACE), each written atomically, and a printed table.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import UsageError, atomic_write_text, config_to_object, run_app, run_dir, write_metrics
from gradcv.experiments._images import sample_photo, to_gray
from gradcv.experiments._timing import set_threads

APP = "bench_registration"
PROTOCOLS = ("full", "detone")
PRESETS = ("default", "second_order", "first_order", "paper")
THRESHOLDS = (1.0, 3.0, 10.0)
CSV_NAME = "registration_benchmark.csv"
THROUGHPUT_CSV = "registration_throughput.csv"
CSV_COLUMNS = [
    "protocol", "method", "pairs", "mean_mace_px", "median_mace_px",
    "success_1px", "success_3px", "success_10px", "failures", "mean_ms_per_pair",
]


@dataclass
class BenchRegistrationConfig:
    """Types of ``conf/bench_registration.yaml`` (values and documentation live there)."""

    pairs: int = 200
    protocol: str = "full"
    rho: int = 32
    seed: int = 0
    presets: list[str] = field(default_factory=lambda: ["default", "first_order", "paper"])
    iterations: Optional[int] = None
    opencv: bool = True
    ecc_iterations: int = 100
    ecc_eps: float = 1e-6
    ecc_gauss_size: int = 5
    kornia: bool = True
    kornia_iterations: Optional[int] = None
    throughput_batch: int = 64
    throughput_presets: list[str] = field(default_factory=lambda: ["default"])
    threads: int = 1


ConfigStore.instance().store(name="bench_registration_schema", node=BenchRegistrationConfig)


@dataclass
class Estimate:
    """One column's homographies for a batch of pairs and what they cost."""

    homography: torch.Tensor  # (N, 3, 3) float64, pixels, src -> dst; identity where failed
    failed: torch.Tensor  # (N,) bool
    seconds: list[float]  # per pair


# ------------------------------------------------------------------------ inputs
def load_photograph() -> torch.Tensor:
    """matplotlib's ``grace_hopper.jpg`` as a ``(1, 1, H, W)`` float32 grayscale tensor in [0, 1]."""
    return to_gray(sample_photo())[None]


def _check(conf: BenchRegistrationConfig) -> list[str]:
    """The protocols to run; :class:`UsageError` for any value out of range."""
    if conf.protocol not in (*PROTOCOLS, "both"):
        raise UsageError(f"protocol must be one of full, detone, both, got {conf.protocol!r}")
    if conf.pairs < 1:
        raise UsageError(f"pairs must be at least 1, got {conf.pairs}")
    if not 0 <= conf.rho < 56:
        raise UsageError(f"rho must be in [0, 56), got {conf.rho}")
    for name in ("presets", "throughput_presets"):
        bad = [p for p in getattr(conf, name) if p not in PRESETS]
        if bad:
            raise UsageError(f"{name}: unknown preset(s) {', '.join(map(repr, bad))}; expected {', '.join(PRESETS)}")
    for name in ("iterations", "kornia_iterations"):
        value = getattr(conf, name)
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1 (or null), got {value}")
    if conf.ecc_iterations < 1 or conf.ecc_gauss_size < 1 or conf.ecc_gauss_size % 2 == 0:
        raise UsageError("ecc_iterations must be positive and ecc_gauss_size odd and positive")
    if conf.throughput_batch < 0:
        raise UsageError(f"throughput_batch must be non-negative (0: no batched run), got {conf.throughput_batch}")
    if conf.threads < 1:
        raise UsageError(f"threads must be at least 1, got {conf.threads}")
    return list(PROTOCOLS) if conf.protocol == "both" else [conf.protocol]


# ------------------------------------------------------------------------ gradcv
def gradcv_config(preset: str, iterations: int | None):
    from gradcv.registration import RegistrationConfig

    cfg = getattr(RegistrationConfig, preset)()
    return cfg if iterations is None else cfg.replace(iterations=iterations)


def run_gradcv(src: torch.Tensor, dst: torch.Tensor, config) -> Estimate:
    """One :func:`register_homography` call per pair (B = 1)."""
    from gradcv.registration import register_homography

    register_homography(src[:1], dst[:1], config=config)  # warm-up
    hs, seconds = [], []
    for i in range(src.shape[0]):
        t0 = time.perf_counter()
        result = register_homography(src[i : i + 1], dst[i : i + 1], config=config)
        seconds.append(time.perf_counter() - t0)
        hs.append(result.homography[0].to(torch.float64))
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


def score(protocol: str, method: str, est: Estimate, H_true: torch.Tensor, size: tuple[int, int]) -> dict:
    from gradcv.registration import corner_error

    mace = corner_error(est.homography, H_true, size)
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


def throughput(protocol: str, preset: str, config, src: torch.Tensor, dst: torch.Tensor, H_true: torch.Tensor,
               b1_seconds: list[float]) -> dict:
    """Pairs per second at B = 1 (from the per-pair calls) and with all of ``src`` in one call."""
    from gradcv.registration import corner_error, register_homography

    register_homography(src[:2], dst[:2], config=config)  # warm-up of the batched path
    t0 = time.perf_counter()
    result = register_homography(src, dst, config=config)
    seconds = time.perf_counter() - t0
    mace = corner_error(result.homography.to(torch.float64), H_true, tuple(src.shape[-2:]))
    per_pair = sum(b1_seconds) / len(b1_seconds)
    batched = src.shape[0] / seconds
    return {
        "protocol": protocol,
        "method": f"gradcv {preset}",
        "batch": int(src.shape[0]),
        "batch_seconds": seconds,
        "pairs_per_s_batch": batched,
        "pairs_per_s_b1": 1.0 / per_pair,
        "speedup": batched * per_pair,
        "batch_median_mace_px": float(mace.quantile(0.5)),
    }


# ------------------------------------------------------------------------ reporting
def _csv(rows: list[dict], columns: list[str]) -> str:
    def cell(v: object) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    return ",".join(columns) + "\n" + "".join(",".join(cell(r[c]) for c in columns) + "\n" for r in rows)


def table(rows: list[dict], tput: list[dict]) -> str:
    head = f"{'protocol':<8s} {'method':<26s} {'pairs':>5s} {'mean MACE':>10s} {'median':>9s} {'<1px':>6s} {'<3px':>6s} {'<10px':>6s} {'fail':>4s} {'ms/pair':>8s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['protocol']:<8s} {r['method']:<26s} {r['pairs']:>5d} {r['mean_mace_px']:>10.3f} {r['median_mace_px']:>9.4f}"
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


# ------------------------------------------------------------------------ task
def bench_registration(cfg: DictConfig) -> None:
    """The Hydra task: make the pairs, run every column, write CSVs and JSON, print a table."""
    conf = config_to_object(cfg, BenchRegistrationConfig)
    protocols = _check(conf)
    set_threads(conf.threads)
    torch.manual_seed(conf.seed)
    from gradcv.registration import RegistrationConfig, make_pairs

    notes: list[str] = []
    try:
        import cv2  # noqa: F401
    except ImportError:
        cv2_ok = False
        notes.append("OpenCV not importable: no ECC columns")
    else:
        cv2_ok = conf.opencv
    try:
        from kornia.geometry import ImageRegistrator  # noqa: F401
    except ImportError:
        kornia_ok = False
        notes.append("Kornia not importable: no ImageRegistrator column")
    else:
        kornia_ok = conf.kornia

    photo = load_photograph()
    pyramid = RegistrationConfig.first_order()  # 3 levels: ECC's pyramid
    rows: list[dict] = []
    tput: list[dict] = []
    for protocol in protocols:
        n_make = max(conf.pairs, conf.throughput_batch)
        src_all, dst_all, H_all = make_pairs(photo, n_make, protocol=protocol, rho=conf.rho, seed=conf.seed)
        src, dst, H_true = src_all[: conf.pairs], dst_all[: conf.pairs], H_all[: conf.pairs]
        size = tuple(src.shape[-2:])
        print(f"{protocol}: {conf.pairs} pairs of {size[0]}x{size[1]}, rho {conf.rho}, seed {conf.seed}", flush=True)
        b1_times: dict[str, list[float]] = {}

        def add(method: str, run: Callable[[], Estimate]) -> None:
            est = run()
            row = score(protocol, method, est, H_true, size)
            rows.append(row)
            print(f"  {method:<26s} median MACE {row['median_mace_px']:.4f} px, success@3px "
                  f"{100 * row['success_3px']:.0f}%, {row['mean_ms_per_pair']:.1f} ms/pair", flush=True)
            if method.startswith("gradcv "):
                b1_times[method.split(" ", 1)[1]] = est.seconds

        for preset in conf.presets:
            config = gradcv_config(preset, conf.iterations)
            add(f"gradcv {preset}", lambda: run_gradcv(src, dst, config))
        if cv2_ok:
            for levels in (pyramid.levels, 1):
                name = f"OpenCV ECC {levels}-level" if levels > 1 else "OpenCV ECC single-scale"
                add(name, lambda: run_ecc(src, dst, levels, pyramid.blur_sigma, conf))
        if kornia_ok:
            add("Kornia ImageRegistrator", lambda: run_kornia(src, dst, conf.kornia_iterations))
        if conf.throughput_batch > 0:
            for preset in conf.throughput_presets:
                config = gradcv_config(preset, conf.iterations)
                if preset not in b1_times:
                    b1_times[preset] = run_gradcv(src, dst, config).seconds
                b = conf.throughput_batch
                tput.append(throughput(protocol, preset, config, src_all[:b], dst_all[:b], H_all[:b], b1_times[preset]))

    for r in rows:
        bad = [k for k in CSV_COLUMNS[2:] if not math.isfinite(float(r[k]))]
        if bad:
            notes.append(f"{r['protocol']} {r['method']}: non-finite {', '.join(bad)}")
    notes.append("failed pairs (exceptions, non-finite estimates) count as the identity in MACE statistics and never succeed")
    notes.append("Kornia's result is normalised with align_corners=False and maps dst to src; converted to pixels, src to dst")
    out = run_dir()
    tput_columns = ["protocol", "method", "batch", "batch_seconds", "pairs_per_s_batch", "pairs_per_s_b1", "speedup", "batch_median_mace_px"]
    atomic_write_text(out / CSV_NAME, _csv(rows, CSV_COLUMNS))
    atomic_write_text(out / THROUGHPUT_CSV, _csv(tput, tput_columns))
    metrics = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "image": "matplotlib grace_hopper.jpg (grayscale)",
        "torch": torch.__version__,
        "threads": conf.threads,
        "results": rows,
        "throughput": tput,
        "notes": notes,
    }
    write_metrics(metrics, out)  # last: a folder with metrics.json is complete
    print()
    print(table(rows, tput))
    for note in notes:
        print(f"note: {note}")
    print(f"outputs: {CSV_NAME}, {THROUGHPUT_CSV} and metrics.json in {out}", flush=True)


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_registration [overrides]``."""
    run_app(bench_registration, config_name=APP)


if __name__ == "__main__":
    main()
