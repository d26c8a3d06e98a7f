"""SSIM benchmark: gradcv's ``ssim`` against Kornia's (forward, and forward + backward) and
scikit-image's ``structural_similarity`` (forward, looping over the batch).

    python -m gradcv.experiments.bench_ssim                          # 8x3x256x256, window 11, threads 1 and 2
    python -m gradcv.experiments.bench_ssim batch=32 threads=[1] backward_repetitions=5
    python -m gradcv.experiments.bench_ssim compile=false device=cuda

The issue's target: gradcv forward + backward at most 0.3x Kornia's, in the same run.
The solvers run with autograd on, so the forward + backward row is the one that counts;
scikit-image has no autograd and computes the mean SSIM of each image (its own Gaussian
window, truncated at 3.5 sigma), so its column is forward only.

The libraries are timed in interleaved rounds (one call of each row per round), so that a
neighbour's burst of work on this shared machine slows all of them alike, and each
row's median is reported. Writes ``ssim_benchmark.csv`` and ``metrics.json`` (medians,
ratios, and how far the three disagree on the input) into the Hydra run folder.

With ``compile: true`` a "gradcv (torch.compile)" row joins each gradcv row: ``ssim`` under
``torch.compile(fullgraph=True, dynamic=False)``, compiled at each thread count before
the rounds (the compile time is recorded, not timed), with its "compiled/eager" ratio.
``device: cuda`` runs Kornia and gradcv on the GPU (synchronised after every call);
scikit-image stays on the CPU.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import UsageError, atomic_write_text, config_to_object, run_app, run_dir, write_metrics
from gradcv.experiments._compiled import COMPILED, RATIO, CompileFailed, compile_call
from gradcv.experiments._timing import parse_device, set_threads, synchronize, time_calls_ms

APP = "bench_ssim"
FORWARD, BACKWARD = "forward", "forward + backward"


@dataclass
class BenchSSIMConfig:
    """Types of ``conf/bench_ssim.yaml`` (values and documentation live there)."""

    batch: int = 8
    channels: int = 3
    image_size: int = 256
    window_size: int = 11
    sigma: float = 1.5
    noise: float = 0.1
    repetitions: int = 20
    backward_repetitions: int = 10
    warmup: int = 2
    threads: list[int] = field(default_factory=lambda: [1, 2])
    device: str = "cpu"
    compile: bool = True
    seed: int = 0


ConfigStore.instance().store(name="bench_ssim_schema", node=BenchSSIMConfig)


@dataclass
class Row:
    """One timed call; a compiled row has ``prepare`` instead of ``fn`` (compiled before the rounds)."""

    library: str
    mode: str
    fn: Callable[[], object] | None
    repetitions: int
    prepare: Callable[[], tuple[Callable[[], object], float]] | None = None


def _check(conf: BenchSSIMConfig) -> None:
    if conf.batch < 1 or conf.channels < 1 or conf.repetitions < 1 or conf.backward_repetitions < 1 or conf.warmup < 0:
        raise UsageError("batch, channels, repetitions and backward_repetitions must be positive, warmup non-negative")
    if conf.window_size < 1 or conf.window_size % 2 == 0 or conf.sigma <= 0:
        raise UsageError(f"window_size must be odd and positive and sigma positive, got {conf.window_size} and {conf.sigma}")
    if conf.image_size < conf.window_size:
        raise UsageError(f"image_size must be at least window_size, got {conf.image_size} < {conf.window_size}")
    if not conf.threads or any(t < 1 for t in conf.threads):
        raise UsageError(f"threads must be a non-empty list of positive ints, got {conf.threads}")


def _rows(conf: BenchSSIMConfig, x: torch.Tensor, y: torch.Tensor, notes: list[str]) -> list[Row]:
    """Every row; ``x`` and ``y`` are on the benchmark device (scikit-image gets CPU copies)."""
    from gradcv.core_ops.losses import ssim

    k, s = conf.window_size, conf.sigma
    xg = x.clone().requires_grad_(True)
    rows = [
        Row("gradcv", FORWARD, lambda: ssim(x, y, k, sigma=s), conf.repetitions),
        Row("gradcv", BACKWARD, lambda: ssim(xg, y, k, sigma=s).mean().backward(), conf.backward_repetitions),
    ]
    if conf.compile:

        def gradcv_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return ssim(a, b, k, sigma=s)

        def forward(f: Callable) -> object:
            return f(x, y)

        def backward(f: Callable) -> object:
            return f(xg, y).mean().backward()

        # Both rows are compiled before either is timed (the rows are timed in interleaved
        # rounds): only the first resets Dynamo, so the forward's graph survives the second.
        rows += [
            Row(COMPILED, FORWARD, None, conf.repetitions, prepare=lambda: compile_call(gradcv_ssim, forward, x.device)),
            Row(COMPILED, BACKWARD, None, conf.backward_repetitions,
                prepare=lambda: compile_call(gradcv_ssim, backward, x.device, reset=False)),
        ]
    try:
        import kornia
    except ImportError:
        notes.append("Kornia not installed: no Kornia rows")
    else:
        if s != 1.5:
            notes.append(f"Kornia's window has sigma 1.5 whatever the config; gradcv's has {s}")
        kssim = kornia.metrics.ssim
        rows += [
            Row("Kornia", FORWARD, lambda: kssim(x, y, k), conf.repetitions),
            Row("Kornia", BACKWARD, lambda: kssim(xg, y, k).mean().backward(), conf.backward_repetitions),
        ]
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        notes.append("scikit-image not installed: no scikit-image row")
    else:
        xs, ys = x.permute(0, 2, 3, 1).cpu().numpy(), y.permute(0, 2, 3, 1).cpu().numpy()

        def skimage_loop() -> list[float]:
            return [
                structural_similarity(
                    a, b, gaussian_weights=True, sigma=s, use_sample_covariance=False, data_range=1.0, channel_axis=2
                )
                for a, b in zip(xs, ys)
            ]

        rows.append(Row("scikit-image", FORWARD, skimage_loop, conf.repetitions))
    return rows


def _prepared(rows: list[Row], threads: int, compile_seconds: dict[tuple[int, str, str], float], notes: list[str],
              skipped: set[str]) -> list[Row]:
    """``rows`` with every compiled row compiled (now, at the current thread count); a row
    that fails to compile is left out, with its library from then on, and a note."""
    out = []
    for row in rows:
        if row.library in skipped:
            continue
        if row.prepare is None:
            out.append(row)
            continue
        try:
            fn, seconds = row.prepare()
        except CompileFailed as ex:
            skipped.add(row.library)
            notes.append(f"{row.library} rows skipped: {ex}")
            print(f"threads={threads}: {row.library} rows skipped: {ex}", flush=True)
            continue
        compile_seconds[(threads, row.library, row.mode)] = seconds
        out.append(Row(row.library, row.mode, fn, row.repetitions))
    return out


def _time_interleaved(rows: list[Row], warmup: int, device: torch.device | None = None) -> dict[tuple[str, str], list[float]]:
    """Each row's call times (ms), taken in rounds of one call per row (synchronised after each call on CUDA)."""
    for row in rows:
        for _ in range(warmup):
            row.fn()
        synchronize(device)
    times: dict[tuple[str, str], list[float]] = {(r.library, r.mode): [] for r in rows}
    for i in range(max(r.repetitions for r in rows)):
        for row in rows:
            if i < row.repetitions:
                times[(row.library, row.mode)] += time_calls_ms(row.fn, 1, warmup=0, device=device)
    return times


def _agreement(conf: BenchSSIMConfig, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How far gradcv is from the references on this input (float32)."""
    from gradcv.core_ops.losses import ssim

    out: dict[str, float] = {}
    try:
        import kornia
    except ImportError:
        pass
    else:
        if conf.sigma == 1.5:
            ours, ref = ssim(x, y, conf.window_size), kornia.metrics.ssim(x, y, conf.window_size)
            out["gradcv_vs_kornia_map_max_abs_diff"] = float((ours - ref).abs().max())
            out["gradcv_vs_kornia_mean_abs_diff"] = float((ours.double().mean() - ref.double().mean()).abs())
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        pass
    else:
        radius = int(3.5 * conf.sigma + 0.5)  # scikit-image's window for gaussian_weights=True
        if 2 * radius + 1 == conf.window_size:
            a, b = x[0].permute(1, 2, 0).cpu().numpy(), y[0].permute(1, 2, 0).cpu().numpy()
            ref = structural_similarity(
                a, b, gaussian_weights=True, sigma=conf.sigma, use_sample_covariance=False, data_range=1.0, channel_axis=2
            )
            ours = ssim(x[:1], y[:1], conf.window_size, sigma=conf.sigma, padding="valid").double().mean()
            out["gradcv_vs_skimage_mean_abs_diff"] = abs(float(ours) - float(ref))
    return out


def _ratios(medians: dict[tuple[int, str, str], float]) -> dict[str, dict[str, float]]:
    """``{threads: {"gradcv/<reference> <mode>": ratio}}`` for every reference row present."""
    ratios: dict[str, dict[str, float]] = {}
    for threads in dict.fromkeys(t for t, _, _ in medians):
        for ref, mode in (("Kornia", FORWARD), ("Kornia", BACKWARD), ("scikit-image", FORWARD)):
            ours, ref_ms = medians.get((threads, "gradcv", mode)), medians.get((threads, ref, mode))
            if ours and ref_ms:
                ratios.setdefault(str(threads), {})[f"gradcv/{ref} {mode}"] = ours / ref_ms
    return ratios


def _compiled_ratios(medians: dict[tuple[int, str, str], float]) -> dict[str, dict[str, float]]:
    """``{threads: {mode: compiled / eager gradcv}}`` for every compiled row timed."""
    out: dict[str, dict[str, float]] = {}
    for (threads, library, mode), ms in medians.items():
        eager = medians.get((threads, "gradcv", mode))
        if library == COMPILED and eager:
            out.setdefault(str(threads), {})[mode] = ms / eager
    return out


def bench_ssim(cfg: DictConfig) -> None:
    """The Hydra task: time every row at every thread count, write CSV and JSON, print a table."""
    conf = config_to_object(cfg, BenchSSIMConfig)
    _check(conf)
    device = parse_device(conf.device)
    gen = torch.Generator().manual_seed(conf.seed)
    shape = (conf.batch, conf.channels, conf.image_size, conf.image_size)
    x = torch.rand(shape, generator=gen)
    y = (x + conf.noise * torch.randn(shape, generator=gen)).clamp_(0.0, 1.0)
    x, y = x.to(device), y.to(device)
    notes: list[str] = [] if device.type == "cpu" else [f"Kornia and gradcv on {device}, scikit-image on the CPU"]
    rows = _rows(conf, x, y, notes)
    medians: dict[tuple[int, str, str], float] = {}
    calls: dict[tuple[int, str, str], int] = {}
    compile_seconds: dict[tuple[int, str, str], float] = {}
    skipped: set[str] = set()
    for threads in conf.threads:
        set_threads(threads)
        active = _prepared(rows, threads, compile_seconds, notes, skipped)
        for (library, mode), times in _time_interleaved(active, conf.warmup, device).items():
            medians[(threads, library, mode)] = statistics.median(times)
            calls[(threads, library, mode)] = len(times)
    ratios = _ratios(medians)
    compiled = _compiled_ratios(medians)
    agreement = _agreement(conf, x, y)

    out = run_dir()
    csv = "threads,library,mode,median_ms,calls\n" + "".join(
        f'{t},{lib},"{mode}",{ms:.6f},{calls[(t, lib, mode)]}\n' for (t, lib, mode), ms in medians.items()
    )
    atomic_write_text(out / "ssim_benchmark.csv", csv)
    metrics = {
        "input": list(shape),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "torch": torch.__version__,
        "median_ms": [
            {"threads": t, "library": lib, "mode": mode, "median_ms": ms, "calls": calls[(t, lib, mode)]}
            for (t, lib, mode), ms in medians.items()
        ],
        "ratios": ratios,
        **({RATIO: compiled, "compile_seconds": {str(t): {m: sec for (tt, _, m), sec in compile_seconds.items() if tt == t}
                                                  for t in dict.fromkeys(t for t, _, _ in compile_seconds)}} if compiled else {}),
        "device": str(device),
        "agreement": agreement,
        "notes": notes,
    }
    write_metrics(metrics, out)  # last: a folder with metrics.json is complete

    print(f"ssim, window {conf.window_size}, sigma {conf.sigma}, input {shape} float32 (median ms, interleaved rounds)")
    width = max(13, *(len(lib) for _, lib, _ in medians))
    print(f"{'threads':>7}  {'library':<{width}} {'mode':<20} {'median ms':>10} {'calls':>6}")
    for (t, lib, mode), ms in medians.items():
        print(f"{t:>7}  {lib:<{width}} {mode:<20} {ms:>10.2f} {calls[(t, lib, mode)]:>6}")
    print("ratios (same run):")
    for threads, values in ratios.items():
        print(f"  threads={threads}: " + ", ".join(f"{k} = {v:.2f}x" for k, v in values.items()))
    for threads, values in compiled.items():
        print(f"  threads={threads}: " + ", ".join(f"{RATIO} {m} = {v:.2f}x (compiled in {compile_seconds[(int(threads), COMPILED, m)]:.1f} s)"
                                              for m, v in values.items()))
    for key, value in agreement.items():
        print(f"  {key}: {value:.2e}")
    for note in notes:
        print(f"note: {note}")
    print(f"outputs: ssim_benchmark.csv and metrics.json in {out}", flush=True)


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_ssim [overrides]``."""
    run_app(bench_ssim, config_name=APP)


if __name__ == "__main__":
    main()
