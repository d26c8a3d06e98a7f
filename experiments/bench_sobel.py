"""The paper's Figure 2: grayscale + Sobel gradient magnitude, time per batch against batch size.

    python -m gradcv.experiments.bench_sobel                              # defaults: conf/bench_sobel.yaml
    python -m gradcv.experiments.bench_sobel batch_sizes=[1,8] repetitions=20
    python -m gradcv.experiments.bench_sobel threads=[1,2] compile=false
    python -m gradcv.experiments.bench_sobel --device cuda

Each cell (thread count, batch size, library) is the median of ``repetitions`` timed
calls on RGB float32 images made from matplotlib's bundled photograph (random crops,
resized). The reference libraries run per image in a Python loop, as a user of them
would; Kornia and gradcv take the whole batch as one tensor. The floor is the time to
move the bytes an ideal implementation must move (read 3 x 4, write 4 bytes per pixel)
at the copy bandwidth measured in the same run.

Writes ``sobel_benchmark.csv``, ``sobel_benchmark.png`` and ``metrics.json`` into the
Hydra run folder.
"""

from __future__ import annotations

import csv
import io
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from gradcv.experiments._cli import ExperimentError, UsageError, atomic_write_text, config_to_object, run_app, run_dir, save_figure, write_metrics
from gradcv.experiments._images import sample_photo
from gradcv.experiments._compiled import COMPILED, CompileFailed, compile_call, one_line
from gradcv.experiments._timing import measure_copy_bandwidth, native_dispatch_cost, native_status, parse_device, set_threads, time_calls_ms

APP = "bench_sobel"
FLOOR = "floor (memory bandwidth)"
#: Bytes an ideal grayscale + Sobel magnitude moves per pixel: read RGB float32, write float32.
BYTES_PER_PIXEL = 3 * 4 + 4


@dataclass
class BenchSobelConfig:
    """Types of ``conf/bench_sobel.yaml`` (the values and their documentation live there).

    Registered as Hydra's schema so that a bad override (``repetitions=abc``) is
    rejected when the config is composed, before anything runs.
    """

    batch_sizes: list[int] = MISSING
    repetitions: int = MISSING
    warmup: int = MISSING
    max_seconds_per_cell: Optional[float] = MISSING
    # An int or a list of ints; OmegaConf has no union of scalar and list, so checked in
    # _thread_counts.
    threads: Any = MISSING
    device: str = MISSING
    compile: bool = MISSING
    image_size: int = MISSING
    seed: int = MISSING


ConfigStore.instance().store(name="bench_sobel_schema", node=BenchSobelConfig)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass
class Images:
    """The same batch of images in each library's input format, made before any timing."""

    tensor: torch.Tensor  # (B, 3, S, S) float32 in [0, 1], on the benchmark device
    nhwc: np.ndarray  # (B, S, S, 3) float32 in [0, 1], C-contiguous
    pil: list[Any]  # B RGB PIL images (uint8), or [] when Pillow is missing
    source: str  # what the images were made from


def make_images(count: int, size: int, seed: int, device: torch.device) -> Images:
    """``count`` RGB images of ``size`` x ``size``: random square crops of matplotlib's
    sample photograph, resized with antialiasing; random noise if the photograph cannot
    be read (nothing is downloaded)."""
    rng = np.random.default_rng(seed)
    photo, source = _sample_photo()
    if photo is None:
        batch = torch.from_numpy(rng.random((count, 3, size, size), dtype=np.float32))
    else:
        h, w = photo.shape[1:]
        crops = []
        for _ in range(count):
            side = int(rng.integers(min(size, h, w), min(h, w) + 1))
            y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = photo[None, :, y0 : y0 + side, x0 : x0 + side]
            crops.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
        batch = torch.cat(crops).clamp_(0, 1)
    nhwc = np.ascontiguousarray(batch.permute(0, 2, 3, 1).numpy())
    try:
        from PIL import Image
    except ImportError:
        pil = []
    else:
        u8 = (nhwc * 255 + 0.5).astype(np.uint8)
        pil = [Image.fromarray(img) for img in u8]
    return Images(tensor=batch.to(device).contiguous(), nhwc=nhwc, pil=pil, source=source)


def _sample_photo() -> tuple[torch.Tensor | None, str]:
    """Matplotlib's bundled grace_hopper.jpg as a (3, H, W) float32 tensor, or None."""
    try:
        photo = sample_photo()
    except Exception as ex:  # any failure (no file, no JPEG decoder) falls back to noise
        return None, f"uniform random noise (grace_hopper.jpg unavailable: {type(ex).__name__}: {ex})"
    return photo, "random crops of matplotlib's grace_hopper.jpg"


# --------------------------------------------------------------------------------------
# The columns: one way per library to compute the Sobel magnitude of a batch
# --------------------------------------------------------------------------------------


@dataclass
class Column:
    """One library's implementation. ``prepare(images, batch)`` returns the call to time
    (everything it needs is built outside that call)."""

    name: str
    prepare: Callable[[Images, int], Callable[[], object]]
    on_device: bool = False  # runs on the benchmark device (torch) rather than the CPU
    note: str = ""


def reference_columns(notes: list[str]) -> list[Column]:
    """The reference libraries that are importable; a note for each one that is not."""
    columns: list[Column] = []
    for name, build in (("OpenCV", _opencv), ("Pillow (8-bit)", _pillow), ("scikit-image", _skimage), ("SciPy", _scipy), ("Kornia", _kornia)):
        try:
            columns.append(build())
        except ImportError as ex:
            notes.append(f"{name} column skipped: {ex}")
    return columns


def _opencv() -> Column:
    import cv2

    def prepare(images: Images, b: int) -> Callable[[], object]:
        batch = images.nhwc[:b]

        def run() -> None:
            for img in batch:
                gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
                dx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
                dy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
                cv2.magnitude(dx, dy)

        return run

    return Column("OpenCV", prepare)


def _pillow() -> Column:
    from PIL import Image, ImageChops, ImageFilter

    # Pillow filters 8-bit images and clips to [0, 255], so each derivative is scaled by
    # 1/8 and offset by 128 to keep its sign range, and the magnitude is |dx| + |dy|
    # (Pillow has no square root on images short of ImageMath, which is far slower).
    sobel_x = ImageFilter.Kernel((3, 3), (-1, 0, 1, -2, 0, 2, -1, 0, 1), scale=8, offset=128)
    sobel_y = ImageFilter.Kernel((3, 3), (-1, -2, -1, 0, 0, 0, 1, 2, 1), scale=8, offset=128)

    def prepare(images: Images, b: int) -> Callable[[], object]:
        batch = images.pil[:b]
        mid = Image.new("L", batch[0].size, 128)

        def run() -> None:
            for img in batch:
                gray = img.convert("L")
                adx = ImageChops.difference(gray.filter(sobel_x), mid)
                ady = ImageChops.difference(gray.filter(sobel_y), mid)
                ImageChops.add(adx, ady)

        return run

    return Column("Pillow (8-bit)", prepare, note="Pillow works on uint8 images: 8-bit gray, |dx|+|dy| magnitude")


def _skimage() -> Column:
    from skimage.color import rgb2gray
    from skimage.filters import sobel

    def prepare(images: Images, b: int) -> Callable[[], object]:
        batch = images.nhwc[:b]

        def run() -> None:
            for img in batch:
                sobel(rgb2gray(img))

        return run

    return Column("scikit-image", prepare)


def _scipy() -> Column:
    from scipy import ndimage

    # Same weights as OpenCV and Kornia (ITU-R BT.601); float32 scalars keep the sum float32.
    wr, wg, wb = np.float32(0.299), np.float32(0.587), np.float32(0.114)

    def prepare(images: Images, b: int) -> Callable[[], object]:
        batch = images.nhwc[:b]

        def run() -> None:
            for img in batch:
                gray = img[..., 0] * wr + img[..., 1] * wg + img[..., 2] * wb
                np.hypot(ndimage.sobel(gray, axis=0), ndimage.sobel(gray, axis=1))

        return run

    return Column("SciPy", prepare)


def _kornia() -> Column:
    import kornia

    def prepare(images: Images, b: int) -> Callable[[], object]:
        x = images.tensor[:b]
        return lambda: kornia.filters.sobel(kornia.color.rgb_to_grayscale(x))

    return Column("Kornia", prepare, on_device=True)


def gradcv_sobel() -> Callable[[torch.Tensor], torch.Tensor]:
    """gradcv's grayscale + Sobel magnitude; raises :class:`ExperimentError` if missing."""
    try:
        from gradcv.core_ops.color import rgb_to_grayscale
        from gradcv.core_ops.filters import sobel
    except ImportError as ex:
        raise ExperimentError(f"cannot import gradcv's operators (core_ops.color.rgb_to_grayscale, core_ops.filters.sobel): {ex}") from ex

    def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
        return sobel(rgb_to_grayscale(x))

    return sobel_magnitude


def gradcv_column(fn: Callable[[torch.Tensor], torch.Tensor]) -> Column:
    def prepare(images: Images, b: int) -> Callable[[], object]:
        x = images.tensor[:b]
        return lambda: fn(x)

    return Column("gradcv", prepare, on_device=True)


def gradcv_figure2() -> torch.nn.Module:
    """The paper's Figure 2 listing: ``nn.Sequential(RgbToGrayscale(), Sobel())``."""
    from gradcv.core_ops.color import RgbToGrayscale
    from gradcv.core_ops.filters import Sobel

    return torch.nn.Sequential(RgbToGrayscale(), Sobel())


def compiled_column(fn: Callable[[torch.Tensor], torch.Tensor]) -> Column:
    """``fn`` (the Figure 2 listing) under ``torch.compile(fullgraph=True, dynamic=False)``,
    compiled per shape. Under compile the grayscale and Sobel custom ops stay in the graph,
    so Inductor calls the same fused C kernels as eager (on the CPU): the column measures
    what compiling adds or saves around them (guards, the compiled wrapper).

    Compiled by :func:`gradcv.experiments._compiled.compile_call`: Dynamo's caches are
    reset before each shape (with ``dynamic=False`` every batch size is a recompilation,
    and past the recompile limit Dynamo would fall back to eager, timing the wrong
    thing); the first (compiling) call is made while preparing, outside the timed calls.
    """

    def prepare(images: Images, b: int) -> Callable[[], object]:
        x = images.tensor[:b]
        call, _ = compile_call(fn, lambda f: f(x), x.device)
        return call

    return Column(COMPILED, prepare, on_device=True)


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


@dataclass
class Results:
    """Per thread count, column and batch size: median ms, timed calls, preparation time."""

    median_ms: dict[int, dict[str, dict[int, float]]] = field(default_factory=dict)
    calls: dict[int, dict[str, dict[int, int]]] = field(default_factory=dict)
    prepare_seconds: dict[int, dict[str, dict[int, float]]] = field(default_factory=dict)
    bandwidth: dict[int, float] = field(default_factory=dict)  # bytes/s per thread count

    def record(self, threads: int, column: str, batch: int, ms: float, calls: int | None = None, prepare_s: float | None = None) -> None:
        self.median_ms.setdefault(threads, {}).setdefault(column, {})[batch] = ms
        if calls is not None:
            self.calls.setdefault(threads, {}).setdefault(column, {})[batch] = calls
        if prepare_s is not None:
            self.prepare_seconds.setdefault(threads, {}).setdefault(column, {})[batch] = prepare_s


def run_cells(columns: list[Column], images: Images, conf: BenchSobelConfig, thread_counts: list[int], batch_sizes: list[int], device: torch.device, notes: list[str]) -> Results:
    """Time every (thread count, batch size, column) cell, printing one line per cell."""
    results = Results()
    cells = len(thread_counts) * len(batch_sizes) * len(columns)
    done = 0
    skipped: set[str] = set()
    for threads in thread_counts:
        set_threads(threads)
        # Measured per thread count: two threads move more bytes per second than one.
        results.bandwidth[threads] = measure_copy_bandwidth(device=device)
        print(f"threads={threads}: copy bandwidth {results.bandwidth[threads] / 1e9:.1f} GB/s ({device.type})", flush=True)
        for b in batch_sizes:
            results.record(threads, FLOOR, b, b * conf.image_size**2 * BYTES_PER_PIXEL / results.bandwidth[threads] * 1e3)
            for column in columns:
                done += 1
                if column.name in skipped:
                    continue
                print(f"[{done:>{len(str(cells))}}/{cells}] threads={threads} batch={b:<4d} {column.name:<24s}", end="", flush=True)
                try:
                    ms, calls, prepare_s = _time_cell(column, images, b, conf, device)
                except CompileFailed as ex:  # that column is skipped, the others keep their numbers
                    skipped.add(column.name)
                    notes.append(f"{column.name} column skipped: {ex}")
                    print(f" skipped: {ex}", flush=True)
                    continue
                except BaseException:
                    print(flush=True)  # end the open progress line before the error line
                    raise
                results.record(threads, column.name, b, ms, calls, prepare_s)
                print(f" {ms:10.3f} ms  ({calls} calls)", flush=True)
    return results


def _time_cell(column: Column, images: Images, b: int, conf: BenchSobelConfig, device: torch.device) -> tuple[float, int, float]:
    """Median ms, number of timed calls and preparation seconds of one column at one batch size."""
    t0 = time.perf_counter()
    try:
        call = column.prepare(images, b)
    except CompileFailed:
        raise
    except Exception as ex:
        if column.name != COMPILED:
            raise
        raise CompileFailed(one_line(ex)) from ex
    prepare_s = time.perf_counter() - t0
    times = time_calls_ms(
        call,
        conf.repetitions,
        conf.warmup,
        device=device if column.on_device else None,
        max_seconds=conf.max_seconds_per_cell,
    )
    return statistics.median(times), len(times), prepare_s


def bench_sobel(cfg: DictConfig) -> None:
    """The Hydra task: validate the config, time every cell, write and print the results."""
    conf = config_to_object(cfg, BenchSobelConfig)
    thread_counts = _thread_counts(conf.threads)
    batch_sizes = _validate(conf)
    device = parse_device(conf.device)
    out = run_dir()

    notes: list[str] = []
    sobel_magnitude = gradcv_sobel()
    notes.append(f"gradcv's fused CPU kernels (core_ops._native): {native_status()}")
    if device.type == "cpu":
        notes.append(native_dispatch_cost())
    columns = [*reference_columns(notes), gradcv_column(sobel_magnitude)]
    if conf.compile:
        figure2 = gradcv_figure2().to(device)
        columns.append(compiled_column(figure2))
    notes.extend(c.note for c in columns if c.note)
    images = make_images(max(batch_sizes), conf.image_size, conf.seed, device)
    notes.append(f"images: {images.source}")
    for note in notes:
        print(f"note: {note}", flush=True)
    agreement = _check_agreement(sobel_magnitude, images, columns)
    device_name = describe_device(device)

    results = run_cells(columns, images, conf, thread_counts, batch_sizes, device, notes)

    title = f"Grayscale + Sobel magnitude, RGB float32 {conf.image_size}×{conf.image_size}"
    csv_path, png_path, json_path = out / "sobel_benchmark.csv", out / "sobel_benchmark.png", out / "metrics.json"
    atomic_write_text(csv_path, results_csv(results))
    plot_results(results, png_path, title=title, image_size=conf.image_size, device_name=device_name, device=device)
    metrics = {
        "task": title,
        "device": str(device),
        "device_name": device_name,
        "image_size": conf.image_size,
        "images": images.source,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": library_versions(),
        "copy_bandwidth_bytes_per_s": {str(t): bw for t, bw in results.bandwidth.items()},
        "floor_bytes_per_pixel": BYTES_PER_PIXEL,
        "median_ms": _str_keys(results.median_ms),
        "calls": _str_keys(results.calls),
        "ratios": _str_keys(ratios(results)),
        "compile_seconds": _str_keys({t: by[COMPILED] for t, by in results.prepare_seconds.items() if COMPILED in by}),
        "gradcv_vs_kornia_max_abs_diff": agreement,
        "notes": notes,
    }
    write_metrics(metrics)  # last: a folder with metrics.json is complete
    print()
    print(format_table(results, device_name, device))
    print(f"outputs: {csv_path.name}, {png_path.name} and {json_path.name} in {out}", flush=True)


def _thread_counts(value: object) -> list[int]:
    """``threads`` as a list of positive ints (it may be given as one int or a list)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in items):
        raise UsageError(f"threads must be a positive integer or a list of them, got {value!r}")
    return list(dict.fromkeys(items))


def _validate(conf: BenchSobelConfig) -> list[int]:
    """Check the values the schema's types cannot; return the sorted, distinct batch sizes."""
    if not conf.batch_sizes or any(b < 1 for b in conf.batch_sizes):
        raise UsageError(f"batch_sizes must be a non-empty list of positive integers, got {conf.batch_sizes}")
    if conf.repetitions < 1:
        raise UsageError(f"repetitions must be at least 1, got {conf.repetitions}")
    if conf.warmup < 0:
        raise UsageError(f"warmup must be at least 0, got {conf.warmup}")
    if conf.max_seconds_per_cell is not None and conf.max_seconds_per_cell <= 0:
        raise UsageError(f"max_seconds_per_cell must be positive or null, got {conf.max_seconds_per_cell}")
    if conf.image_size < 3:
        raise UsageError(f"image_size must be at least 3 (the Sobel kernel's size), got {conf.image_size}")
    return sorted(set(conf.batch_sizes))


def _check_agreement(fn: Callable[[torch.Tensor], torch.Tensor], images: Images, columns: list[Column]) -> float | None:
    """Max |gradcv - Kornia| on a few images, so that the timings compare the same output."""
    if not any(c.name == "Kornia" for c in columns):
        return None
    import kornia

    x = images.tensor[:2]
    diff = float((fn(x) - kornia.filters.sobel(kornia.color.rgb_to_grayscale(x))).abs().max())
    print(f"check: gradcv vs Kornia, max |difference| = {diff:.2e}", flush=True)
    return diff


def describe_device(device: torch.device) -> str:
    """``GPU (<name>)`` or ``CPU (<model name>)``, for titles and the table."""
    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"CPU ({model or platform.processor() or platform.machine()})"


def library_versions() -> dict[str, str]:
    """Versions of every library the benchmark may time, those installed."""
    from importlib import metadata

    versions = {"torch": torch.__version__, "numpy": np.__version__}
    for dist in ("kornia", "opencv-python-headless", "opencv-python", "pillow", "scikit-image", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def ratios(results: Results) -> dict[int, dict[str, dict[int, float]]]:
    """gradcv's time divided by Kornia's and by OpenCV's (below 1: gradcv is faster), and
    the compiled Figure 2 pipeline's divided by eager gradcv's ("compiled/eager")."""
    out: dict[int, dict[str, dict[int, float]]] = {}
    for threads, by_column in results.median_ms.items():
        mine = by_column.get("gradcv", {})
        for other in ("Kornia", "OpenCV"):
            theirs = by_column.get(other, {})
            pairs = {b: mine[b] / theirs[b] for b in mine if b in theirs and theirs[b] > 0}
            if pairs:
                out.setdefault(threads, {})[f"gradcv/{other}"] = pairs
        compiled = by_column.get(COMPILED, {})
        pairs = {b: compiled[b] / mine[b] for b in compiled if b in mine and mine[b] > 0}
        if pairs:
            out.setdefault(threads, {})["compiled/eager"] = pairs
    return out


def _str_keys(obj: Any) -> Any:
    """The same nested dict with string keys, as JSON requires."""
    if isinstance(obj, dict):
        return {str(k): _str_keys(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def results_csv(results: Results) -> str:
    """Long-format CSV: threads, batch_size, column, median_ms, calls (empty for the floor)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["threads", "batch_size", "column", "median_ms", "calls"])
    for threads, by_column in results.median_ms.items():
        batches = sorted({b for by_batch in by_column.values() for b in by_batch})
        for b in batches:
            for column, by_batch in by_column.items():
                if b in by_batch:
                    calls = results.calls.get(threads, {}).get(column, {}).get(b)
                    writer.writerow([threads, b, column, f"{by_batch[b]:.6g}", "" if calls is None else calls])
    return buffer.getvalue()


def format_table(results: Results, device_name: str, device: torch.device) -> str:
    """One table per thread count: batch sizes down, libraries across, in ms, then ratios."""
    blocks = []
    all_ratios = ratios(results)
    for threads, by_column in results.median_ms.items():
        names = [c for c in by_column if c != FLOOR] + [FLOOR]
        ratio_names = list(all_ratios.get(threads, {}))
        headers = ["batch", *names, *ratio_names]
        rows = []
        for b in sorted({b for by_batch in by_column.values() for b in by_batch}):
            row = [str(b)]
            row += [f"{by_column[c][b]:.3f}" if b in by_column[c] else "-" for c in names]
            row += [f"{all_ratios[threads][r][b]:.2f}x" if b in all_ratios[threads][r] else "-" for r in ratio_names]
            rows.append(row)
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        where = f"Kornia and gradcv on {device_name}, the others on the CPU" if device.type != "cpu" else device_name
        lines = [f"median ms per batch, {threads} thread{'s' if threads > 1 else ''}, {where}"]
        lines.append("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
        blocks.append("\n".join(lines))
    footer = "gradcv/X: gradcv's time divided by X's (below 1: gradcv is faster). Pillow works in 8 bits."
    if any("compiled/eager" in r for r in all_ratios.values()):
        footer += "\ncompiled/eager: torch.compile'd Figure 2 pipeline's time divided by eager gradcv's (below 1: compiling pays)."
    return "\n\n".join(blocks) + "\n" + footer


def plot_results(results: Results, path: Path, *, title: str, image_size: int, device_name: str, device: torch.device) -> None:
    """Figure 2: time per batch against batch size, log-log, one panel per thread count."""
    # Figure without pyplot: no GUI backend, no global figure registry to leak into.
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    thread_counts = list(results.median_ms)
    fig = Figure(figsize=(6.4 * len(thread_counts), 4.8), layout="constrained")
    axes = fig.subplots(1, len(thread_counts), squeeze=False, sharey=True)[0]
    where = "GPU" if device.type == "cuda" else "CPU"
    for ax, threads in zip(axes, thread_counts):
        by_column = results.median_ms[threads]
        # The floor last, so that the libraries keep the same colours with or without it.
        for column in sorted(by_column, key=lambda c: c == FLOOR):
            by_batch = by_column[column]
            batches = sorted(by_batch)
            style = {"linestyle": "--", "color": "black", "marker": None} if column == FLOOR else {"marker": "o", "markersize": 4}
            ax.plot(batches, [by_batch[b] for b in batches], label=column, **style)
        batches = sorted({b for by_batch in by_column.values() for b in by_batch})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"batch size (RGB images of {image_size}×{image_size})")
        ax.set_ylabel("median time per batch (ms)")
        ax.set_title(f"{threads} thread{'s' if threads > 1 else ''}, {where}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{title}\nKornia and gradcv on {device_name}", fontsize="medium")
    save_figure(fig, path, dpi=120)


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_sobel [overrides]``."""
    run_app(bench_sobel, config_name=APP)


if __name__ == "__main__":
    main()
