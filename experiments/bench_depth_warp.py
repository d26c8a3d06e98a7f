"""Depth-warp benchmark: the depth solver's inner loop, one source view warped into the
reference by a depth map that requires grad, forward and forward + backward, gradcv's
:func:`gradcv.core_ops.geometry.depth_warp` against Kornia's ``DepthWarper`` and
``warp_frame_depth`` on the same problem (issue 11), and where the time goes.

    python -m gradcv.experiments.bench_depth_warp                         # 320x240x3, B 1 and 8, threads 1 and 2
    python -m gradcv.experiments.bench_depth_warp batches=[8] repetitions=50
    python -m gradcv.experiments.bench_depth_warp compile=false device=cuda

The problem: the reference and first source camera of :func:`gradcv.depth.make_cameras`
(60° field of view, 0.15 m baseline) at ``width x height``, a ``channels``-channel random
source image and a random depth map, uniform in ``[depth_min, depth_max]`` per pixel.
"forward + backward" differentiates the sum of the warped image with respect to the
depth, what every step of the solver does. Kornia's ``DepthWarper`` gets its projection
matrix once, outside the timed calls (the cameras are fixed while the solver runs);
gradcv's call takes the camera matrices and the pose and composes them on every call.

Before timing, the warped images of every column are compared (the same convention:
pixel centres at integers, bilinear, zero padding; Kornia samples with
``align_corners=True`` over corner-aligned coordinates, gradcv with ``False`` over
edge-to-edge ones, the same pixels): a difference above ``tolerance`` stops the run.
The depth gradients are compared too and printed: they agree to float rounding except at
the few pixels whose sample lands within rounding of a pixel row or column of the
source, where bilinear interpolation's gradient jumps and either side is right.

"Where the time goes": ``profile_repetitions`` forward calls, then as many forward +
backward calls, per library under ``torch.profiler`` at the largest batch and the first
thread count; the forward + backward calls' self CPU time is split into ``grid_sample``
forward, ``grid_sample`` backward, the rest of the forward (projection maths, masks: what
the forward calls alone spent outside ``grid_sample``) and the rest of the backward
(what remains).

With ``compile: true`` each gradcv row has a "gradcv (torch.compile)" twin: the same call
with gradcv's warp under ``torch.compile(fullgraph=True, dynamic=False)``, compiled per
batch, mode and thread count just before it is timed (the compile time is recorded, not
timed), and its "compiled/eager" ratio. ``device: cuda`` runs every column on the GPU
(synchronised after every call); the profile, which reads CPU time, is then skipped.

Outputs (in the Hydra run folder): ``results.csv`` (one row per thread count, task,
library and mode), ``profile_<library>.txt`` (the profiler's tables), then ``metrics.json``
(last: a folder that has it is complete).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gradcv.experiments._cli import ExperimentError, UsageError, atomic_write_text, config_to_object, run_app, run_dir
from gradcv.experiments._rows import FORWARD, Key, Measurement, Row, compiled_ratios, compiled_row, time_rows, write_results
from gradcv.experiments._timing import parse_device, set_threads

APP = "bench_depth_warp"
CSV_NAME = "results.csv"
BACKWARD = "forward + backward (depth)"
GRADCV = "gradcv"
KORNIA = "Kornia"  # DepthWarper
KORNIA_FRAME = "Kornia warp_frame_depth"


@dataclass
class BenchDepthWarpConfig:
    """Types of ``conf/bench_depth_warp.yaml`` (values and documentation live there)."""

    height: int = 240
    width: int = 320
    channels: int = 3
    batches: list[int] = field(default_factory=lambda: [1, 8])
    threads: list[int] = field(default_factory=lambda: [1, 2])
    repetitions: int = 30
    backward_repetitions: int = 15
    warmup: int = 3
    depth_min: float = 2.0
    depth_max: float = 8.0
    tolerance: float = 1e-3
    kornia: bool = True
    profile: bool = True
    profile_repetitions: int = 5
    profile_rows: int = 8
    device: str = "cpu"
    compile: bool = True
    seed: int = 0


ConfigStore.instance().store(name="bench_depth_warp_schema", node=BenchDepthWarpConfig)


@dataclass
class Problem:
    """One batch of the warp: a source image, the reference depth, the cameras."""

    image: torch.Tensor  # (B, C, H, W) source view
    depth: torch.Tensor  # (B, 1, H, W) reference depth
    K: torch.Tensor  # (B, 3, 3), the same for both views
    E_ref: torch.Tensor  # (B, 4, 4) world-to-camera
    E_src: torch.Tensor  # (B, 4, 4)

    @property
    def src_T_ref(self) -> torch.Tensor:
        return self.E_src @ torch.linalg.inv(self.E_ref)

    def to(self, device: torch.device) -> "Problem":
        return Problem(*(t.to(device) for t in (self.image, self.depth, self.K, self.E_ref, self.E_src)))


def make_problem(conf: BenchDepthWarpConfig, batch: int, gen: torch.Generator) -> Problem:
    from gradcv.depth import SceneConfig, make_cameras

    K, E = make_cameras(SceneConfig(height=conf.height, width=conf.width, num_views=2))
    image = torch.rand(batch, conf.channels, conf.height, conf.width, generator=gen)
    depth = conf.depth_min + (conf.depth_max - conf.depth_min) * torch.rand(batch, 1, conf.height, conf.width, generator=gen)
    return Problem(image, depth, K[:1].expand(batch, 3, 3).contiguous(), E[:1].expand(batch, 4, 4).contiguous(),
                   E[1:2].expand(batch, 4, 4).contiguous())


# ------------------------------------------------------------------------ the warps
def warps(problem: Problem, kornia: bool) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each library's ``depth -> warped source`` on ``problem`` (set-up done here, once)."""
    from gradcv.core_ops.geometry import depth_warp

    image, K = problem.image, problem.K
    T = problem.src_T_ref
    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {GRADCV: lambda depth: depth_warp(image, depth, K, K, T)[0]}
    if kornia:
        from kornia.geometry.camera import PinholeCamera
        from kornia.geometry.depth import DepthWarper, warp_frame_depth

        b, _, h, w = image.shape
        K4 = torch.eye(4, dtype=K.dtype, device=K.device).repeat(b, 1, 1)
        K4[:, :3, :3] = K
        size = torch.full((b,), float(h), device=K.device), torch.full((b,), float(w), device=K.device)
        # Kornia's names: the depth lives in "src" (our reference), the image in "dst" (our source).
        warper = DepthWarper(PinholeCamera(K4, problem.E_src, *size), h, w, mode="bilinear", padding_mode="zeros")
        warper.compute_projection_matrix(PinholeCamera(K4, problem.E_ref, *size))
        out[KORNIA] = lambda depth: warper(depth, image)
        out[KORNIA_FRAME] = lambda depth: warp_frame_depth(image, depth, T, K)
    return out


def forward_backward(warp: Callable[[torch.Tensor], torch.Tensor], depth: torch.Tensor) -> torch.Tensor:
    """One solver step's warp: the sum of the warped image, differentiated with respect to ``depth``."""
    depth.grad = None
    warp(depth).sum().backward()
    return depth.grad


def agreement(problem: Problem, fns: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, dict[str, float]]:
    """Each reference's largest difference from gradcv: warped image (absolute) and depth gradient (relative to its largest)."""
    ours = fns[GRADCV](problem.depth)
    grad = forward_backward(fns[GRADCV], problem.depth.clone().requires_grad_(True))
    out = {}
    for library, fn in fns.items():
        if library == GRADCV:
            continue
        theirs = fn(problem.depth)
        their_grad = forward_backward(fn, problem.depth.clone().requires_grad_(True))
        out[library] = {
            "image_max_abs_diff": float((ours - theirs).abs().max()),
            "depth_grad_max_rel_diff": float((grad - their_grad).abs().max() / grad.abs().max().clamp_min(1e-30)),
            "depth_grad_median_rel_diff": float(((grad - their_grad).abs() / grad.abs().max().clamp_min(1e-30)).median()),
            "depth_grad_share_off_by_1e-3": float(((grad - their_grad).abs() > 1e-3 * grad.abs().max()).float().mean()),
        }
    return out


# ------------------------------------------------------------------------ profile
FORWARD_GRID = "forward: grid_sample"
FORWARD_REST = "forward: projection maths, masks"
BACKWARD_GRID = "backward: grid_sample"
BACKWARD_REST = "backward: projection maths, autograd"


def _is_grid_sample(name: str) -> bool:
    return "grid_sampler" in name or "GridSampler" in name


@contextlib.contextmanager
def _without_profiler_log() -> Iterator[None]:
    """Drop the ``USDT: ... profiler_start/stop`` lines that PyTorch's Kineto profiler
    writes to file descriptor 2 (no setting turns them off); anything else written to
    stderr meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True) if not line.startswith("USDT:")]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _self_times(call: Callable[[], object], repetitions: int) -> tuple[list[tuple[str, float, int]], str]:
    """``[(operator, self CPU ms per call, calls per call)]`` over ``repetitions`` calls, and the profiler's table."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    call()  # warm
    with _without_profiler_log(), torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repetitions):
            call()
    averages = prof.key_averages()
    events = [(e.key, e.self_cpu_time_total / 1e3 / repetitions, e.count // repetitions) for e in averages if e.self_cpu_time_total > 0]
    return sorted(events, key=lambda e: -e[1]), averages.table(sort_by="self_cpu_time_total", row_limit=25)


def profile(fn: Callable[[torch.Tensor], torch.Tensor], depth: torch.Tensor, repetitions: int, rows: int) -> tuple[dict, str]:
    """Where one forward + backward's time goes, from the self CPU time of each operator
    (forward alone profiled too, so that the backward's share is the difference):
    ``({"total_ms", "categories", "top"}, the profiler's tables)``, times per call."""
    d = depth.clone().requires_grad_(True)
    forward, forward_table = _self_times(lambda: fn(d), repetitions)
    both, table = _self_times(lambda: forward_backward(fn, d), repetitions)
    total = sum(ms for _, ms, _ in both)
    f_grid = sum(ms for name, ms, _ in both if _is_grid_sample(name) and "backward" not in name.lower())
    b_grid = sum(ms for name, ms, _ in both if _is_grid_sample(name) and "backward" in name.lower())
    rest = total - f_grid - b_grid
    # The forward's share of the rest is what the forward alone spent outside grid_sample.
    f_rest = min(sum(ms for name, ms, _ in forward if not _is_grid_sample(name)), rest)
    categories = {FORWARD_GRID: f_grid, FORWARD_REST: f_rest, BACKWARD_GRID: b_grid, BACKWARD_REST: rest - f_rest}
    top = [{"op": name, "self_ms": ms, "calls": calls, "share": ms / total} for name, ms, calls in both[:rows]]
    text = f"forward + backward:\n{table}\n\nforward alone:\n{forward_table}\n"
    return {"total_ms": total, "categories": categories, "top": top}, text


# ------------------------------------------------------------------------ task
def _check(conf: BenchDepthWarpConfig) -> None:
    if conf.height < 2 or conf.width < 2 or conf.channels < 1:
        raise UsageError(f"height and width must be at least 2 and channels at least 1, got {conf.height}, {conf.width}, {conf.channels}")
    if not conf.batches or any(b < 1 for b in conf.batches):
        raise UsageError(f"batches must be a non-empty list of positive ints, got {conf.batches}")
    if not conf.threads or any(t < 1 for t in conf.threads):
        raise UsageError(f"threads must be a non-empty list of positive ints, got {conf.threads}")
    if conf.repetitions < 1 or conf.backward_repetitions < 1 or conf.warmup < 0 or conf.profile_repetitions < 1 or conf.profile_rows < 1:
        raise UsageError("repetitions, backward_repetitions, profile_repetitions and profile_rows must be positive, warmup non-negative")
    if not 0 < conf.depth_min < conf.depth_max or not math.isfinite(conf.depth_max):
        raise UsageError(f"depth range must be finite with 0 < depth_min < depth_max, got {conf.depth_min}, {conf.depth_max}")
    if not conf.tolerance > 0:
        raise UsageError(f"tolerance must be positive, got {conf.tolerance}")


def task_name(conf: BenchDepthWarpConfig, batch: int) -> str:
    return f"depth_warp {conf.width}x{conf.height}x{conf.channels} B={batch}"


def side_by_side(results: dict[Key, Measurement], conf: BenchDepthWarpConfig, libraries: list[str]) -> tuple[str, list[dict]]:
    """One line per task and mode: each library's median ms per thread count, and gradcv / Kornia."""
    head = f"{'batch':>5s} {'mode':<27s} {'threads':>7s} " + " ".join(f"{lib:>23s}" for lib in libraries)
    if KORNIA in libraries:
        head += f" {'gradcv/Kornia':>13s}"
    lines = [head, "-" * len(head)]
    ratios = []
    for batch in conf.batches:
        task = task_name(conf, batch)
        for mode in (FORWARD, BACKWARD):
            for threads in conf.threads:
                ms = {lib: results[(threads, task, lib, mode)].median_ms for lib in libraries}
                line = f"{batch:>5d} {mode:<27s} {threads:>7d} " + " ".join(f"{ms[lib]:>20.2f} ms" for lib in libraries)
                if KORNIA in ms:
                    r = ms[GRADCV] / ms[KORNIA]
                    line += f" {r:>12.2f}x"
                    ratios.append({"batch": batch, "mode": mode, "threads": threads, "gradcv_ms": ms[GRADCV],
                                   "kornia_ms": ms[KORNIA], "gradcv_over_kornia": r,
                                   **({"kornia_warp_frame_depth_ms": ms[KORNIA_FRAME]} if KORNIA_FRAME in ms else {})})
                lines.append(line)
    return "\n".join(lines), ratios


def bench_depth_warp(cfg: DictConfig) -> None:
    """The Hydra task: check agreement, time every row at every thread count, profile, write and print."""
    conf = config_to_object(cfg, BenchDepthWarpConfig)
    _check(conf)
    notes: list[str] = []
    kornia = conf.kornia
    if kornia:
        try:
            import kornia.geometry.depth  # noqa: F401
        except ImportError:
            kornia = False
            notes.append("Kornia not importable: gradcv rows only")
    device = parse_device(conf.device)
    gen = torch.Generator().manual_seed(conf.seed)
    problems = {b: make_problem(conf, b, gen).to(device) for b in conf.batches}
    set_threads(conf.threads[0])

    agree: dict[str, dict] = {}
    rows: list[Row] = []
    libraries: list[str] = []
    for batch, problem in problems.items():
        fns = warps(problem, kornia)
        libraries = list(fns)
        if kornia:
            agree[str(batch)] = agreement(problem, fns)
            for library, diff in agree[str(batch)].items():
                print(f"B={batch} {library} vs gradcv: warped image max |diff| {diff['image_max_abs_diff']:.2e}, "
                      f"depth gradient max |diff| {diff['depth_grad_max_rel_diff']:.2e} of its largest "
                      f"(median {diff['depth_grad_median_rel_diff']:.1e}; {100 * diff['depth_grad_share_off_by_1e-3']:.3f}% of "
                      f"pixels off by more than 1e-3)", flush=True)
                if not diff["image_max_abs_diff"] <= conf.tolerance:
                    raise ExperimentError(f"B={batch}: {library}'s warped image differs from gradcv's by "
                                          f"{diff['image_max_abs_diff']:.3g} > tolerance {conf.tolerance:g}: not the same problem")
        task = task_name(conf, batch)
        for library, fn in fns.items():
            depth_g = problem.depth.clone().requires_grad_(True)
            rows.append(Row(task, library, FORWARD, lambda fn=fn, d=problem.depth: fn(d), conf.repetitions))
            rows.append(Row(task, library, BACKWARD, lambda fn=fn, d=depth_g: forward_backward(fn, d), conf.backward_repetitions))
        if conf.compile:
            fn, depth_g = fns[GRADCV], problem.depth.clone().requires_grad_(True)
            rows.append(compiled_row(task, FORWARD, fn, lambda f, d=problem.depth: f(d), conf.repetitions, device))
            rows.append(compiled_row(task, BACKWARD, fn, lambda f, d=depth_g: forward_backward(f, d), conf.backward_repetitions, device))

    results = time_rows(rows, conf.threads, conf.warmup, device=device, notes=notes)

    out = run_dir()
    profiles: dict[str, dict] = {}
    if conf.profile and device.type != "cpu":
        notes.append(f"profile skipped on {device}: it splits CPU time, and the kernels run on the GPU")
    elif conf.profile:
        batch = max(conf.batches)
        set_threads(conf.threads[0])
        fns = warps(problems[batch], kornia)
        for library in (GRADCV, KORNIA) if kornia else (GRADCV,):
            summary, table = profile(fns[library], problems[batch].depth, conf.profile_repetitions, conf.profile_rows)
            profiles[library] = {"batch": batch, "threads": conf.threads[0], **summary}
            name = f"profile_{library.lower()}.txt"
            atomic_write_text(out / name, f"{library}, forward + backward (depth), B={batch}, {conf.threads[0]} thread(s), "
                                          f"{conf.profile_repetitions} calls\n{table}\n")

    table, ratios = side_by_side(results, conf, libraries)
    metrics = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "torch": torch.__version__,
        "device": str(device),
        "agreement": agree,
        "ratios": ratios,
        "profile": profiles,
        "notes": notes,
    }
    write_results(out, CSV_NAME, results, metrics)  # the CSV, then metrics.json last

    print(f"\nmedian ms per call, {conf.width}x{conf.height}, {conf.channels} channels (same run):")
    print(table)
    for r in compiled_ratios(results):
        print(f"  B={r['task'].rsplit('=', 1)[-1]} {r['mode']}, {r['threads']} thread(s): compiled/eager = {r['compiled/eager']:.2f}x"
              f" ({r['compiled_ms']:.2f} ms against {r['eager_ms']:.2f} ms; compiled in {r['compile_seconds']:.1f} s)")
    for library, p in profiles.items():
        print(f"\nwhere the time goes: {library}, forward + backward, B={p['batch']}, {p['threads']} thread(s), "
              f"{p['total_ms']:.2f} ms self CPU per call under the profiler:")
        for category, ms in p["categories"].items():
            print(f"  {category:<44s} {ms:8.2f} ms  {100 * ms / p['total_ms']:5.1f}%")
        print("  top operators (self CPU):")
        for t in p["top"]:
            print(f"    {t['op']:<44s} {t['self_ms']:8.2f} ms  {100 * t['share']:5.1f}%  x{t['calls']}")
    for note in notes:
        print(f"note: {note}")
    files = ", ".join([CSV_NAME, *(f"profile_{lib.lower()}.txt" for lib in profiles), "metrics.json"])
    print(f"outputs: {files} in {out}", flush=True)


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.bench_depth_warp [overrides]``."""
    run_app(bench_depth_warp, config_name=APP)


if __name__ == "__main__":
    main()
