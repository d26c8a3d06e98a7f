"""Filter and pyramid benchmark: Gaussian blur (forward, forward with autograd, forward +
backward) and pyrDown on a batch of RGB images, gradcv against OpenCV and Kornia.

    python -m gradcv.experiments.bench_filters                     # 8x3x256x256, threads 1 and 2
    python -m gradcv.experiments.bench_filters batch=32 repetitions=50
    python -m gradcv.experiments.bench_filters compile=false device=cuda

The solvers run with autograd on, where Kornia's blur falls off a second cliff
(PERFORMANCE.md), so the backward columns matter as much as the forward ones. OpenCV has
no autograd: its columns are forward only, looping over the images of the batch.

With ``compile: true`` every gradcv row has a "gradcv (torch.compile)" twin: the same call
with the operator under ``torch.compile(fullgraph=True, dynamic=False)``, compiled just
before it is timed (the compile time is recorded, not timed), and its "compiled/eager"
ratio. ``device: cuda`` runs Kornia and gradcv on the GPU (synchronised after every
call); OpenCV stays on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import UsageError, config_to_object, run_app, run_dir
from gradcv.experiments._rows import Row, compiled_row, report, time_rows, write_results
from gradcv.experiments._timing import native_status, parse_device

APP = "bench_filters"


@dataclass
class BenchFiltersConfig:
    """Types of ``conf/bench_filters.yaml`` (values and documentation live there)."""

    batch: int = 8
    channels: int = 3
    image_size: int = 256
    kernel_size: int = 5
    sigma: float = 1.0
    repetitions: int = 100
    backward_repetitions: int = 20
    warmup: int = 3
    threads: list[int] = field(default_factory=lambda: [1, 2])
    device: str = "cpu"
    compile: bool = True
    seed: int = 0


ConfigStore.instance().store(name="bench_filters_schema", node=BenchFiltersConfig)


def _rows(conf: BenchFiltersConfig, x: torch.Tensor, notes: list[str]) -> list[Row]:
    """Every row; ``x`` is on the benchmark device (OpenCV gets a CPU copy)."""
    fwd, bwd = conf.repetitions, conf.backward_repetitions
    from gradcv.core_ops.filters import gaussian_blur2d
    from gradcv.core_ops.pyramid import pyrdown

    k, s = conf.kernel_size, conf.sigma
    xg = x.clone().requires_grad_(True)
    gauss = f"gaussian_blur2d {k}x{k} sigma {s}"
    rows: list[Row] = []
    try:
        import cv2
    except ImportError:
        notes.append("OpenCV not installed: no OpenCV rows")
    else:
        nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())
        rows.append(Row(gauss, "OpenCV", "forward", lambda: [cv2.GaussianBlur(i, (k, k), s) for i in nhwc], fwd))
        rows.append(Row("pyrdown", "OpenCV", "forward", lambda: [cv2.pyrDown(i) for i in nhwc], fwd))
    try:
        import kornia
    except ImportError:
        notes.append("Kornia not installed: no Kornia rows")
    else:
        kb = kornia.filters.gaussian_blur2d
        rows += [
            Row(gauss, "Kornia", "forward", lambda: kb(x, (k, k), (s, s)), fwd),
            Row(gauss, "Kornia", "forward, input requires grad", lambda: kb(xg, (k, k), (s, s)), bwd),
            Row(gauss, "Kornia", "forward + backward", lambda: kb(xg, (k, k), (s, s)).sum().backward(), bwd),
            Row("pyrdown", "Kornia", "forward", lambda: kornia.geometry.transform.pyrdown(x), fwd),
            Row("pyrdown", "Kornia", "forward + backward", lambda: kornia.geometry.transform.pyrdown(xg).sum().backward(), bwd),
        ]
    rows += [
        Row(gauss, "gradcv", "forward", lambda: gaussian_blur2d(x, (k, k), (s, s)), fwd),
        Row(gauss, "gradcv", "forward, input requires grad", lambda: gaussian_blur2d(xg, (k, k), (s, s)), bwd),
        Row(gauss, "gradcv", "forward + backward", lambda: gaussian_blur2d(xg, (k, k), (s, s)).sum().backward(), bwd),
        Row("pyrdown", "gradcv", "forward", lambda: pyrdown(x), fwd),
        Row("pyrdown", "gradcv", "forward + backward", lambda: pyrdown(xg).sum().backward(), bwd),
    ]
    if conf.compile:

        def blur(t: torch.Tensor) -> torch.Tensor:
            return gaussian_blur2d(t, (k, k), (s, s))

        rows += [
            compiled_row(gauss, "forward", blur, lambda f: f(x), fwd, x.device),
            compiled_row(gauss, "forward, input requires grad", blur, lambda f: f(xg), bwd, x.device),
            compiled_row(gauss, "forward + backward", blur, lambda f: f(xg).sum().backward(), bwd, x.device),
            compiled_row("pyrdown", "forward", pyrdown, lambda f: f(x), fwd, x.device),
            compiled_row("pyrdown", "forward + backward", pyrdown, lambda f: f(xg).sum().backward(), bwd, x.device),
        ]
    return rows


def bench_filters(cfg: DictConfig) -> None:
    """The Hydra task: time every row at every thread count, write CSV and JSON, print a table."""
    conf = config_to_object(cfg, BenchFiltersConfig)
    if min(conf.batch, conf.channels, conf.repetitions, conf.backward_repetitions) < 1 or conf.image_size < 8:
        raise UsageError("batch, channels and repetitions must be positive and image_size at least 8")
    if conf.kernel_size < 1 or conf.kernel_size % 2 == 0 or conf.sigma <= 0:
        raise UsageError(f"kernel_size must be odd and sigma positive, got {conf.kernel_size} and {conf.sigma}")
    if not conf.threads or any(t < 1 for t in conf.threads):
        raise UsageError(f"threads must be a non-empty list of positive ints, got {conf.threads}")
    device = parse_device(conf.device)
    gen = torch.Generator().manual_seed(conf.seed)
    x = torch.rand(conf.batch, conf.channels, conf.image_size, conf.image_size, generator=gen).to(device)
    notes: list[str] = [f"gradcv's fused CPU kernels (core_ops._native): {native_status()}"]
    if device.type != "cpu":
        notes.append(f"Kornia and gradcv on {device}, OpenCV on the CPU")
    rows = _rows(conf, x, notes)
    results = time_rows(rows, conf.threads, conf.warmup, device=device, notes=notes)
    out = run_dir()
    metrics = {"input": list(x.shape), "device": str(device), "config": OmegaConf.to_container(cfg, resolve=True),
               "torch": torch.__version__, "notes": notes}
    write_results(out, "filters_benchmark.csv", results, metrics)
    report(out, "filters_benchmark.csv", results, notes, tuple(x.shape))


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_filters [overrides]``."""
    run_app(bench_filters, config_name=APP)


if __name__ == "__main__":
    main()
