"""RANSAC homography benchmark: gradcv's LO-RANSAC against OpenCV's
``findHomography(.., cv2.RANSAC, 3.0)`` on seeded synthetic problems.

    python -m gradcv.experiments.bench_ransac                          # 10 problems, threads 1 and 2
    python -m gradcv.experiments.bench_ransac problems=4 repetitions=3 threads=[1]
    python -m gradcv.experiments.bench_ransac outlier_ratio=0.8
    python -m gradcv.experiments.bench_ransac device=cuda

Each problem follows the DeTone et al. protocol: a homography that moves the corners of a
640x480 image by up to ``rho`` times its height, ``points`` correspondences uniform in
the image, a fraction ``outlier_ratio`` of them replaced by points uniform in image 2,
Gaussian noise of ``noise`` px on the image-2 point of each inlier. Both estimators get
the same float32 points and the same threshold on the one-way reprojection distance
(OpenCV's ``ransacReprojThreshold`` is gradcv's ``inl_th``), each with its own default
confidence. Per library and thread count: median over problems of the median time per
call, mean inlier F1 against the true inlier set, and mean corner error (distance between
the image corners mapped by the estimate and by the truth). The row "gradcv (batched)"
solves all problems in one call and reports the time per problem.

``device: cuda`` runs gradcv on the GPU (points copied there once, outside the timed
calls; synchronised after every call); OpenCV stays on the CPU. There is no compiled
column: RANSAC's stopping test depends on the data (the number of iterations follows the
inlier ratio found), so no fixed graph exists for ``torch.compile(fullgraph=True)``
(``tests/production``'s SKIPPED list); RANSAC is timed eager only.

Writes ``ransac_benchmark.csv`` (one row per problem) and ``metrics.json`` into the Hydra
run folder.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import UsageError, atomic_write_text, config_to_object, run_app, run_dir, write_metrics
from gradcv.experiments._timing import parse_device, set_threads, time_calls_ms

APP = "bench_ransac"
BATCHED = "gradcv (batched)"


@dataclass
class BenchRansacConfig:
    """Types of ``conf/bench_ransac.yaml`` (values and documentation live there)."""

    problems: int = 10
    points: int = 2000
    outlier_ratio: float = 0.5
    noise: float = 1.0
    rho: float = 0.25
    image_size: list[int] = field(default_factory=lambda: [640, 480])
    threshold: float = 3.0
    confidence: float = 0.99
    max_lo_iters: int = 5
    batch_size: int = 2048
    max_iter: int = 10
    batched: bool = True
    repetitions: int = 10
    warmup: int = 3
    threads: list[int] = field(default_factory=lambda: [1, 2])
    device: str = "cpu"
    seed: int = 0


ConfigStore.instance().store(name="bench_ransac_schema", node=BenchRansacConfig)


@dataclass
class Problem:
    points1: np.ndarray  # (N, 2) float32
    points2: np.ndarray
    inliers: np.ndarray  # (N,) bool, the true inlier set
    homography: np.ndarray  # (3, 3) float64


def make_problem(conf: BenchRansacConfig, seed: int) -> Problem:
    """One synthetic problem (see the module docstring), reproducible from ``seed``."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = conf.image_size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    moved = corners + rng.uniform(-conf.rho * h, conf.rho * h, size=corners.shape)
    homography = cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))
    n = conf.points
    p1 = rng.uniform([0, 0], [w - 1, h - 1], size=(n, 2))
    projected = np.c_[p1, np.ones(n)] @ homography.T
    p2 = projected[:, :2] / projected[:, 2:] + rng.normal(0, conf.noise, (n, 2))
    inliers = np.zeros(n, dtype=bool)
    inliers[rng.permutation(n)[: round(n * (1 - conf.outlier_ratio))]] = True
    p2[~inliers] = rng.uniform([0, 0], [w - 1, h - 1], size=((~inliers).sum(), 2))
    return Problem(p1.astype(np.float32), p2.astype(np.float32), inliers, homography)


def f1_score(mask: np.ndarray, truth: np.ndarray) -> float:
    found = mask.sum() + truth.sum()
    return float(2 * (mask & truth).sum() / found) if found else 0.0


def corner_error(estimate: np.ndarray, truth: np.ndarray, image_size: list[int]) -> float:
    """Mean distance (px) between the image corners mapped by ``estimate`` and by ``truth``;
    ``inf`` for a failed (zero) or degenerate estimate."""
    w, h = image_size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], dtype=np.float64)

    def mapped(H: np.ndarray) -> np.ndarray:
        p = corners @ H.T
        return p[:, :2] / p[:, 2:]

    with np.errstate(all="ignore"):
        error = float(np.linalg.norm(mapped(estimate) - mapped(truth), axis=1).mean())
    return error if np.isfinite(error) else float("inf")


Estimator = Callable[[Problem, int], tuple[np.ndarray, np.ndarray]]


def _estimators(conf: BenchRansacConfig, notes: list[str], device: torch.device) -> dict[str, tuple[Estimator, torch.device | None]]:
    """Per library, a function ``(problem, seed) -> (H (3, 3) float64, inlier mask (N,))``
    and the device to synchronise around its calls (None: the CPU)."""
    from gradcv.core_ops.geometry.robust import ransac

    estimators: dict[str, tuple[Estimator, torch.device | None]] = {}
    try:
        import cv2
    except ImportError:
        notes.append("OpenCV not installed: no OpenCV rows")
    else:

        def opencv(problem: Problem, seed: int) -> tuple[np.ndarray, np.ndarray]:
            H, mask = cv2.findHomography(problem.points1, problem.points2, cv2.RANSAC, conf.threshold)
            if H is None:
                return np.zeros((3, 3)), np.zeros(len(problem.inliers), dtype=bool)
            return H, mask.ravel().astype(bool)

        estimators["OpenCV"] = opencv, None

    # The points on the device once per problem, outside the timed calls.
    on_device: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def points(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
        if id(problem) not in on_device:
            on_device[id(problem)] = (torch.from_numpy(problem.points1)[None].to(device),
                                      torch.from_numpy(problem.points2)[None].to(device))
        return on_device[id(problem)]

    def gradcv(problem: Problem, seed: int) -> tuple[np.ndarray, np.ndarray]:
        H, mask = ransac(
            *points(problem),
            inl_th=conf.threshold,
            confidence=conf.confidence,
            max_lo_iters=conf.max_lo_iters,
            batch_size=conf.batch_size,
            max_iter=conf.max_iter,
            seed=seed,
        )
        return H[0].double().cpu().numpy(), mask[0].cpu().numpy()

    estimators["gradcv"] = gradcv, device
    return estimators


def _check(conf: BenchRansacConfig) -> None:
    if conf.problems < 1 or conf.points < 8 or conf.repetitions < 1 or conf.warmup < 0:
        raise UsageError("problems and repetitions must be positive, points at least 8 and warmup non-negative")
    if not 0 <= conf.outlier_ratio < 1 or conf.noise < 0 or conf.rho < 0 or conf.threshold <= 0:
        raise UsageError("outlier_ratio must be in [0, 1), noise and rho non-negative, threshold positive")
    if len(conf.image_size) != 2 or min(conf.image_size) < 2:
        raise UsageError(f"image_size must be [width, height], got {conf.image_size}")
    if not conf.threads or any(t < 1 for t in conf.threads):
        raise UsageError(f"threads must be a non-empty list of positive ints, got {conf.threads}")


def bench_ransac(cfg: DictConfig) -> None:
    """The Hydra task: time and score every estimator per thread count, write CSV and JSON, print a table."""
    conf = config_to_object(cfg, BenchRansacConfig)
    _check(conf)
    device = parse_device(conf.device)
    problems = [make_problem(conf, conf.seed + i) for i in range(conf.problems)]
    # The true homography at the same threshold: about the best F1 an estimate can reach.
    oracle = [f1_score(_oracle_mask(p, conf.threshold), p.inliers) for p in problems]
    notes: list[str] = [] if device.type == "cpu" else [f"gradcv on {device}, OpenCV on the CPU"]
    notes.append("no torch.compile column: RANSAC's number of iterations depends on the data (eager only)")
    estimators = _estimators(conf, notes, device)
    rows: list[dict[str, object]] = []
    for threads in conf.threads:
        set_threads(threads)
        for library, (estimate, sync) in estimators.items():
            for i, problem in enumerate(problems):
                seed = conf.seed + i
                ms = statistics.median(time_calls_ms(lambda: estimate(problem, seed), conf.repetitions, conf.warmup, device=sync))
                H, mask = estimate(problem, seed)
                rows.append(_row(threads, library, i, ms, H, mask, problem, conf))
        if conf.batched:
            rows += _batched_rows(conf, problems, threads, device)
    summary = _summary(rows)
    out = run_dir()
    header = "threads,library,problem,median_ms,f1,corner_error_px,inliers_found,inliers_true\n"
    csv = header + "".join(
        f"{r['threads']},{r['library']},{r['problem']},{r['median_ms']:.6f},{r['f1']:.6f},{r['corner_error_px']:.6f},"
        f"{r['inliers_found']},{r['inliers_true']}\n"
        for r in rows
    )
    atomic_write_text(out / "ransac_benchmark.csv", csv)
    metrics = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "torch": torch.__version__,
        "device": str(device),
        "oracle_mean_f1": float(np.mean(oracle)),
        "summary": summary,
        "notes": notes,
    }
    write_metrics(metrics, out)  # last: a folder with metrics.json is complete; an inf corner error becomes null
    print(
        f"\n{conf.problems} problems, {conf.points} correspondences, {conf.outlier_ratio:.0%} outliers, "
        f"{conf.noise} px noise, threshold {conf.threshold} px (true-model F1 {np.mean(oracle):.4f})"
    )
    print(f"{'threads':>7s}  {'library':<17s} {'median ms':>10s} {'mean F1':>8s} {'corner err px':>14s}")
    for s in summary:
        print(
            f"{s['threads']:>7d}  {s['library']:<17s} {s['median_ms']:10.3f} {s['mean_f1']:8.4f} "
            f"{s['mean_corner_error_px']:14.3f}"
        )
    for threads in conf.threads:
        by = {s["library"]: s for s in summary if s["threads"] == threads}
        if "OpenCV" in by:
            ratio = by["gradcv"]["median_ms"] / by["OpenCV"]["median_ms"]
            print(f"threads={threads}: gradcv / OpenCV time = {ratio:.2f}x")
    for note in notes:
        print(f"note: {note}")
    print(f"outputs: ransac_benchmark.csv and metrics.json in {out}", flush=True)


def _oracle_mask(problem: Problem, threshold: float) -> np.ndarray:
    projected = np.c_[problem.points1.astype(np.float64), np.ones(len(problem.inliers))] @ problem.homography.T
    error2 = ((projected[:, :2] / projected[:, 2:] - problem.points2) ** 2).sum(1)
    return error2 <= threshold**2


def _row(
    threads: int,
    library: str,
    index: int,
    ms: float,
    H: np.ndarray,
    mask: np.ndarray,
    problem: Problem,
    conf: BenchRansacConfig,
) -> dict[str, object]:
    return {
        "threads": threads,
        "library": library,
        "problem": index,
        "median_ms": ms,
        "f1": f1_score(mask, problem.inliers),
        "corner_error_px": corner_error(H, problem.homography, conf.image_size),
        "inliers_found": int(mask.sum()),
        "inliers_true": int(problem.inliers.sum()),
    }


def _batched_rows(conf: BenchRansacConfig, problems: list[Problem], threads: int, device: torch.device) -> list[dict[str, object]]:
    """All problems in one call of the batched functional form; time per problem."""
    from gradcv.core_ops.geometry.robust import ransac

    p1 = torch.from_numpy(np.stack([p.points1 for p in problems])).to(device)
    p2 = torch.from_numpy(np.stack([p.points2 for p in problems])).to(device)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        return ransac(
            p1,
            p2,
            inl_th=conf.threshold,
            confidence=conf.confidence,
            max_lo_iters=conf.max_lo_iters,
            batch_size=conf.batch_size,
            max_iter=conf.max_iter,
            seed=conf.seed,
        )

    ms = statistics.median(time_calls_ms(call, conf.repetitions, conf.warmup, device=device)) / len(problems)
    H, masks = (t.cpu() for t in call())
    return [
        _row(threads, BATCHED, i, ms, H[i].double().numpy(), masks[i].numpy(), problem, conf)
        for i, problem in enumerate(problems)
    ]


def _summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    keys = list(dict.fromkeys((r["threads"], r["library"]) for r in rows))
    summary = []
    for threads, library in keys:
        mine = [r for r in rows if r["threads"] == threads and r["library"] == library]
        summary.append(
            {
                "threads": threads,
                "library": library,
                "median_ms": statistics.median(float(r["median_ms"]) for r in mine),
                "mean_f1": float(np.mean([r["f1"] for r in mine])),
                "mean_corner_error_px": float(np.mean([r["corner_error_px"] for r in mine])),
                "problems": len(mine),
            }
        )
    return summary


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_ransac [overrides]``."""
    run_app(bench_ransac, config_name=APP)


if __name__ == "__main__":
    main()
