"""Warp benchmark: ``warp_perspective`` of a batch of RGB images by one random homography
per image, forward and forward + backward, gradcv against OpenCV and Kornia.

    python -m gradcv.experiments.bench_warp                        # 8x3x256x256, threads 1 and 2
    python -m gradcv.experiments.bench_warp batch=32 repetitions=50
    python -m gradcv.experiments.bench_warp compile=false device=cuda

The registration solver differentiates the warp with respect to the homography, so the
backward rows matter as much as the forward ones: "backward (image)" differentiates with
respect to the image only, "backward (matrix)" with respect to the homographies only.
Each forward + backward call first sets the leaf's ``.grad`` to ``None``, for every library
alike, as a training step's ``optimizer.zero_grad()`` does (its default since PyTorch 2.0):
the gradient is then the one the backward produced, not added into the one of the previous
repetition (without it, every timed call but the first also paid for an addition of the
whole gradient into ``.grad``, which no optimisation step does).
OpenCV has no autograd: its row is forward only, looping over the images of the batch.

Each row also records the minor page faults per call: on glibc, large temporaries that
are handed back to the kernel after each call fault their pages in again on the next
one (PERFORMANCE.md), which can dominate these timings; run with
``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000`` to see the
times without that cost.

With ``compile: true`` each gradcv row has a "gradcv (torch.compile)" twin: the same call
with ``warp_perspective`` under ``torch.compile(fullgraph=True, dynamic=False)``, compiled
just before it is timed (the compile time is recorded, not timed), and its
"compiled/eager" ratio. ``device: cuda`` runs Kornia and gradcv on the GPU
(synchronised after every call); OpenCV stays on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import UsageError, config_to_object, run_app, run_dir
from gradcv.experiments._rows import FORWARD, Row, compiled_row, report, time_rows, write_results
from gradcv.experiments._timing import parse_device

APP = "bench_warp"


@dataclass
class BenchWarpConfig:
    """Types of ``conf/bench_warp.yaml`` (values and documentation live there)."""

    batch: int = 8
    channels: int = 3
    image_size: int = 256
    spread: float = 0.1
    repetitions: int = 100
    backward_repetitions: int = 20
    warmup: int = 3
    threads: list[int] = field(default_factory=lambda: [1, 2])
    device: str = "cpu"
    compile: bool = True
    seed: int = 0


ConfigStore.instance().store(name="bench_warp_schema", node=BenchWarpConfig)

TASK = "warp_perspective"
BACKWARD_IMAGE = "forward + backward (image)"
BACKWARD_MATRIX = "forward + backward (matrix)"


def random_homographies(conf: BenchWarpConfig, gen: torch.Generator) -> torch.Tensor:
    """One homography per image, moving each image corner by up to ``spread`` of the size."""
    from gradcv.core_ops.geometry.transform import get_perspective_transform

    n = conf.image_size - 1
    corners = torch.tensor([[0.0, 0.0], [n, 0.0], [n, n], [0.0, n]], dtype=torch.float64).expand(conf.batch, 4, 2)
    offsets = torch.rand(conf.batch, 4, 2, generator=gen, dtype=torch.float64) * 2 - 1
    moved = corners + offsets * conf.spread * conf.image_size
    return get_perspective_transform(corners, moved).float()


def _step(warp: Callable[..., torch.Tensor], image: torch.Tensor, matrix: torch.Tensor, dsize: tuple[int, ...], leaf: torch.Tensor) -> None:
    """One forward + backward as a training step makes it: ``leaf``'s gradient reset first."""
    leaf.grad = None
    warp(image, matrix, dsize).sum().backward()


def _rows(conf: BenchWarpConfig, x: torch.Tensor, M: torch.Tensor, notes: list[str]) -> list[Row]:
    """Every row; ``x`` and ``M`` are on the benchmark device (OpenCV gets CPU copies)."""
    fwd, bwd = conf.repetitions, conf.backward_repetitions
    from gradcv.core_ops.geometry.transform import warp_perspective

    dsize = tuple(x.shape[-2:])
    xg = x.clone().requires_grad_(True)
    Mg = M.clone().requires_grad_(True)
    rows: list[Row] = []
    try:
        import cv2
    except ImportError:
        notes.append("OpenCV not installed: no OpenCV row")
    else:
        nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())
        mats = M.double().cpu().numpy()
        size = (dsize[1], dsize[0])
        rows.append(Row(TASK, "OpenCV", FORWARD, lambda: [cv2.warpPerspective(i, m, size) for i, m in zip(nhwc, mats)], fwd))
    warps = [("gradcv", warp_perspective)]
    try:
        import kornia
    except ImportError:
        notes.append("Kornia not installed: no Kornia rows")
    else:
        warps.insert(0, ("Kornia", kornia.geometry.transform.warp_perspective))
    for library, warp in warps:
        rows += [
            Row(TASK, library, FORWARD, lambda warp=warp: warp(x, M, dsize), fwd),
            Row(TASK, library, BACKWARD_IMAGE, lambda warp=warp: _step(warp, xg, M, dsize, xg), bwd),
            Row(TASK, library, BACKWARD_MATRIX, lambda warp=warp: _step(warp, x, Mg, dsize, Mg), bwd),
        ]
    if conf.compile:

        def gradcv_warp(image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
            return warp_perspective(image, matrix, dsize)

        rows += [
            compiled_row(TASK, FORWARD, gradcv_warp, lambda f: f(x, M), fwd, x.device),
            compiled_row(TASK, BACKWARD_IMAGE, gradcv_warp, lambda f: _step(lambda i, m, _: f(i, m), xg, M, dsize, xg), bwd, x.device),
            compiled_row(TASK, BACKWARD_MATRIX, gradcv_warp, lambda f: _step(lambda i, m, _: f(i, m), x, Mg, dsize, Mg), bwd, x.device),
        ]
    return rows


def bench_warp(cfg: DictConfig) -> None:
    """The Hydra task: time every row at every thread count, write CSV and JSON, print a table."""
    conf = config_to_object(cfg, BenchWarpConfig)
    if conf.batch < 1 or conf.channels < 1 or conf.image_size < 8 or conf.repetitions < 1 or conf.backward_repetitions < 1:
        raise UsageError("batch, channels and repetitions must be positive and image_size at least 8")
    if not 0 <= conf.spread < 0.5:
        raise UsageError(f"spread must be in [0, 0.5), got {conf.spread}")
    if not conf.threads or any(t < 1 for t in conf.threads):
        raise UsageError(f"threads must be a non-empty list of positive ints, got {conf.threads}")
    device = parse_device(conf.device)
    gen = torch.Generator().manual_seed(conf.seed)
    x = torch.rand(conf.batch, conf.channels, conf.image_size, conf.image_size, generator=gen)
    M = random_homographies(conf, gen)
    x, M = x.to(device), M.to(device)
    notes: list[str] = [] if device.type == "cpu" else [f"Kornia and gradcv on {device}, OpenCV on the CPU"]
    notes.append("forward + backward rows set the leaf's .grad to None before each call (optimizer.zero_grad()'s default), "
                 "for every library; before commit af35c4b the gradient accumulated across repetitions")
    rows = _rows(conf, x, M, notes)
    results = time_rows(rows, conf.threads, conf.warmup, device=device, notes=notes)
    out = run_dir()
    metrics = {"input": list(x.shape), "device": str(device), "config": OmegaConf.to_container(cfg, resolve=True), "torch": torch.__version__, "notes": notes}
    write_results(out, "warp_benchmark.csv", results, metrics)
    report(out, "warp_benchmark.csv", results, notes, tuple(x.shape))


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_warp [overrides]``."""
    run_app(bench_warp, config_name=APP)


if __name__ == "__main__":
    main()
