"""The paper's studies end to end on bundled data, at reduced size, in one run folder.

    python -m gradcv.experiments.demo                                  # all four stages (a few minutes)
    python -m gradcv.experiments.demo stages=[register,depth]          # some of them
    python -m gradcv.experiments.demo 'depth.extra=["preset=paper"]'   # any override of a stage's app
    python -m gradcv.experiments.demo --device cuda

The stages, in the paper's order, each run by its own Hydra app composed in this process
(``conf/<app>.yaml`` with the demo's reductions, ``<stage>.overrides``, then yours,
``<stage>.extra``: the same overrides as the app's command line):

- ``sobel``: Figure 2, grayscale + Sobel time per batch against OpenCV, Kornia and the
  others installed (:mod:`gradcv.experiments.bench_sobel`);
- ``register``: Figure 3, homography registration of the bundled pair
  (:mod:`gradcv.experiments.register`), beside OpenCV's ECC and Kornia's
  ``ImageRegistrator`` on the same pair when they are installed;
- ``depth``: Figure 4, depth of a rendered scene (:mod:`gradcv.experiments.depth`), beside a
  winner-take-all plane sweep given the true depth range;
- ``attack``: Figure 5, the targeted attack on two-view matching
  (:mod:`gradcv.experiments.attack`), skipped with a note where that app is missing.

Outputs (in the Hydra run folder): one folder per stage holding that app's outputs, its
composed ``config.yaml`` and ``log.txt`` (what it printed); ``summary.md`` and
``summary.html`` (self-contained: the figures inlined) with the headline metrics,
rewritten after each stage so that an interrupted run keeps what finished;
``summary.png`` (the figures and the headline table on one page); then ``metrics.json``.
A stage that fails is reported in the summary and the next stages still run; the exit
status is then 1, with one line on stderr naming the failed stages.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import html
import io
import json
import math
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from gradcv.experiments._cli import (
    CONF_DIR,
    ExperimentError,
    UsageError,
    atomic_write_bytes,
    atomic_write_text,
    config_to_object,
    describe_error,
    run_app,
    run_dir,
    save_figure,
    write_metrics,
)

APP = "demo"


# ----------------------------------------------------------------------------- config
@dataclass
class StageConfig:
    """One stage: the demo's overrides of its app (the reduced sizes) and the user's."""

    overrides: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


@dataclass
class DemoConfig:
    """Types of ``conf/demo.yaml`` (values and documentation live there)."""

    stages: list[str] = field(default_factory=lambda: list(STAGES))
    sobel: StageConfig = field(default_factory=StageConfig)
    register: StageConfig = field(default_factory=StageConfig)
    depth: StageConfig = field(default_factory=StageConfig)
    attack: StageConfig = field(default_factory=StageConfig)
    references: bool = True
    sweep_planes: int = 64
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True)
class Stage:
    """What the demo knows of a stage's app."""

    module: str  # under gradcv.experiments
    task: str  # the Hydra task function, taking the composed DictConfig
    figure_number: int
    figure: str  # the figure's file name in the app's run folder
    title: str


STAGES: dict[str, Stage] = {
    "sobel": Stage("bench_sobel", "bench_sobel", 2, "sobel_benchmark.png", "Grayscale + Sobel, time per batch"),
    "register": Stage("register", "register", 3, "figure3.png", "Homography registration, coarse to fine"),
    "depth": Stage("depth", "depth", 4, "figure4.png", "Multi-view depth by gradient descent"),
    "attack": Stage("attack", "attack", 5, "figure5.png", "Targeted attack on two-view matching"),
}

ConfigStore.instance().store(name="demo_schema", node=DemoConfig)


# ----------------------------------------------------------------------------- results
@dataclass
class StageResult:
    """How a stage went and what the summary says of it."""

    name: str
    status: str = "pending"  # pending, running, done, failed, skipped, interrupted, not run
    seconds: float = 0.0
    message: str = ""
    command: str = ""
    headline: dict[str, Any] = field(default_factory=dict)  # metric -> value (gradcv)
    references: dict[str, Any] = field(default_factory=dict)  # library -> {metric: value} or {"error": ...}
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (what, gradcv, references) for the tables

    @property
    def stage(self) -> Stage:
        return STAGES[self.name]


# ----------------------------------------------------------------------------- progress
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: tqdm's bar of :class:`gradcv.experiments._progress.LevelProgress`: ``level 2/4: 43%|...| 13/30 [``.
_LEVEL_BAR = re.compile(r"level (\d+)/(\d+):.*\|\s*(\d+)/(\d+)\s*\[")
#: Its one line per level off a terminal: ``level 2/4: 13/30 steps``.
_LEVEL_LINE = re.compile(r"level (\d+)/(\d+): (\d+)/(\d+) steps")
#: A benchmark's cell counter at the start of a line: ``[ 3/12] threads=1 ...``.
_COUNTER = re.compile(r"^\s*\[\s*(\d+)/(\d+)\]")
#: Another app's tqdm bar: ``desc: 40%|...| 4/10 [``.
_ANY_BAR = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")


def progress_of(text: str, complete: bool) -> float | None:
    """The fraction of a stage done that a line of its output tells, if any."""
    m = _LEVEL_BAR.search(text)
    if m:
        level, levels, step, steps = map(int, m.groups())
        return (level - 1 + step / max(steps, 1)) / max(levels, 1)
    m = _LEVEL_LINE.search(text)
    if m:
        return int(m.group(1)) / max(int(m.group(2)), 1)
    m = _COUNTER.search(text)
    if m:
        i, n = int(m.group(1)), int(m.group(2))
        return (i - (0 if complete else 1)) / max(n, 1)
    m = _ANY_BAR.search(text)
    if m:
        return int(m.group(1)) / max(int(m.group(2)), 1)
    return None


def _last_segment(text: str) -> str:
    """What a terminal would show of ``text`` (a bar redrawn after carriage returns): its
    last non-blank carriage-return segment, escape sequences removed."""
    segments = [s for s in _ANSI.sub("", text).split("\r") if s.strip()]
    return segments[-1] if segments else ""


class StageOutput(io.TextIOBase):
    """What a stage prints, on stdout and stderr: each line goes to its ``log.txt`` (a
    progress bar's last state only), and the progress it tells moves the stage's bar.

    It says it is a terminal so that the apps draw their tqdm bars here, where they are
    read rather than shown.
    """

    def __init__(self, log: IO[str], on_progress: Callable[[float | None, str], None]) -> None:
        super().__init__()
        self.log, self.on_progress = log, on_progress
        self.partial = ""
        self.lock = threading.Lock()

    def isatty(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        with self.lock:
            self.partial += text
            *lines, self.partial = self.partial.split("\n")
            for raw in lines:
                line = _last_segment(raw)
                self.log.write(line + "\n")
                self.on_progress(progress_of(line, True), line)
            current = _last_segment(self.partial)
            if current.strip():
                self.on_progress(progress_of(current, False), current)
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def close_log(self) -> None:
        if self.partial.strip():
            self.log.write(_last_segment(self.partial) + "\n")
        self.partial = ""
        self.log.flush()


_BAR_CLASS: Any = None


def _bar_class() -> Any:
    """tqdm with its own list of bars: tqdm places a new bar below the ones alive, and the
    apps' bars (drawn into :class:`StageOutput`) would otherwise be moved below the
    demo's, with newlines and cursor moves in their output."""
    global _BAR_CLASS
    if _BAR_CLASS is None:
        from weakref import WeakSet

        from tqdm import tqdm

        _BAR_CLASS = type("DemoBar", (tqdm,), {"_instances": WeakSet()})
    return _BAR_CLASS


class StageBar:
    """One tqdm bar per stage on the demo's stderr, moved by :class:`StageOutput`, with
    the stage's last line beside it; redrawn twice a second so that the clock runs
    during a long step. Disabled: nothing is drawn."""

    def __init__(self, description: str, stream: IO[str], enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        if enabled:
            self.bar = _bar_class()(total=100, desc=description, file=stream, leave=True, dynamic_ncols=True,
                                    bar_format="{desc:<16} {percentage:3.0f}%|{bar:24}| {elapsed}{postfix}")
            if getattr(stream, "isatty", lambda: False)():
                self.thread = threading.Thread(target=self._tick, daemon=True)
                self.thread.start()

    def _tick(self) -> None:
        while not self.stop.wait(0.5):
            self.bar.refresh()

    def update(self, fraction: float | None, line: str) -> None:
        if self.bar is None:
            return
        if fraction is not None:
            self.bar.n = max(self.bar.n, min(100, int(100 * fraction)))
        if line.strip():
            text = " ".join(line.split())
            self.bar.set_postfix_str(text[:60] + ("..." if len(text) > 60 else ""), refresh=False)

    def close(self, finished: bool, note: str) -> None:
        if self.bar is None:
            return
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if finished:
            self.bar.n = 100
        self.bar.set_postfix_str(note, refresh=False)
        self.bar.close()


# ----------------------------------------------------------------------------- stages
def compose_stage(app: str, overrides: list[str], out: Path) -> DictConfig:
    """``conf/<app>.yaml`` composed with ``overrides`` (with its ``hydra`` node, its run
    folder set to ``out``), as Hydra composes it for ``python -m ... <overrides>``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name=app, overrides=overrides, return_hydra_config=True)
    else:  # demo(cfg) called outside a Hydra app
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=APP):
            cfg = compose(config_name=app, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.name = app
    return cfg


@contextlib.contextmanager
def as_hydra_job(cfg: DictConfig) -> Iterator[DictConfig]:
    """Make ``cfg`` (with its ``hydra`` node) the running job's config for the block, so that
    the app's ``run_dir()`` and ``HydraConfig.get()`` see it; yields the task's config
    (without the ``hydra`` node). The demo's own job config comes back after the block."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    saved = instance.cfg
    task_cfg = copy.deepcopy(cfg)
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    instance.set_config(cfg)
    try:
        yield task_cfg
    finally:
        instance.cfg = saved


@contextlib.contextmanager
def _threads_kept() -> Iterator[None]:
    """The benchmarks set the thread counts of PyTorch and OpenCV: restore them after."""
    torch_threads = torch.get_num_threads()
    cv2 = sys.modules.get("cv2")
    cv2_threads = cv2.getNumThreads() if cv2 is not None else None
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2 = sys.modules.get("cv2")
        if cv2 is not None:
            cv2.setNumThreads(cv2_threads if cv2_threads is not None else -1)


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w.,=/:+@%-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def run_stage(name: str, index: int, total: int, conf: DemoConfig, root: Path, stderr: IO[str],
              result: StageResult | None = None) -> StageResult:
    """Run one stage into ``root/<name>``, recording into ``result`` (a new one if ``None``)
    how it went; never raises but ``KeyboardInterrupt`` (``result`` then says so)."""
    stage = STAGES[name]
    result = result if result is not None else StageResult(name)
    stage_conf: StageConfig = getattr(conf, name)
    overrides = [f"device={conf.device}", *stage_conf.overrides, *stage_conf.extra]
    result.command = "python -m gradcv.experiments." + " ".join([stage.module, *map(_shell_quote, overrides)])
    out = root / name
    start = time.perf_counter()
    bar = StageBar(f"[{index}/{total}] {name}", stderr, conf.progress)
    result.status = "running"
    try:
        module = _import_app(stage)
        if module is None:
            result.status = "skipped"
            result.message = f"gradcv.experiments.{stage.module} is not in this version of gradcv"
            return result
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "log.txt", "w", encoding="utf-8") as log:
            stream = StageOutput(log, bar.update)
            try:
                with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), _threads_kept():
                    _run_app_task(name, stage, module, overrides, out, result, conf)
            except KeyboardInterrupt:
                stream.close_log()
                result.status = result.message = "interrupted"
                log.write("interrupted\n")
                raise
            except Exception as ex:
                stream.close_log()
                result.status, result.message = "failed", describe_error(ex)
                log.write(traceback.format_exc())
                return result
            stream.close_log()
        result.status = "done"
        return result
    except KeyboardInterrupt:
        result.status = result.message = "interrupted"
        raise
    except Exception as ex:  # importing the app failed: that stage's failure, not the demo's
        result.status, result.message = "failed", describe_error(ex)
        return result
    finally:
        result.seconds = time.perf_counter() - start
        bar.close(result.status == "done", f"{result.status} in {result.seconds:.1f} s")


def _import_app(stage: Stage) -> Any:
    """The stage's app module, or ``None`` when this version of gradcv has none."""
    import importlib

    name = f"gradcv.experiments.{stage.module}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as ex:
        if ex.name == name:
            return None
        raise


def _run_app_task(name: str, stage: Stage, module: Any, overrides: list[str], out: Path, result: StageResult,
                  conf: DemoConfig) -> None:
    """Compose the app's config, run its task into ``out``, read its metrics.json into
    ``result``'s headline, then run the references (their failure is only noted)."""
    cfg = compose_stage(stage.module, overrides, out)
    with as_hydra_job(cfg) as task_cfg:
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(task_cfg))
        getattr(module, stage.task)(task_cfg)
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        raise ExperimentError(f"{stage.module} returned without writing {metrics_path}")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    try:
        HEADLINES[name](result, metrics)
    except Exception as ex:
        raise ExperimentError(f"reading {metrics_path}: {describe_error(ex)}") from ex
    if conf.references:
        try:
            REFERENCES[name](result, metrics, task_cfg, conf)
        except Exception as ex:  # the references are beside the stage: noted, not its failure
            result.references["error"] = describe_error(ex)
            print(f"demo: references failed: {describe_error(ex)}\n{traceback.format_exc()}")
            _set_reference(result, f"failed: {describe_error(ex)}")
    elif name in ("register", "depth"):
        _set_reference(result, "not run (references=false)")


# ----------------------------------------------------------------------------- headlines
NOT_INSTALLED = "OpenCV and Kornia are not installed (pip install 'gradcv[bench]')"


def _num(value: Any, digits: int = 4, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return text + (f" {unit}" if unit else "")


def _headline_sobel(result: StageResult, metrics: dict[str, Any]) -> None:
    by_threads = metrics.get("median_ms") or {}
    threads = sorted(by_threads, key=int)[0]
    columns = by_threads[threads]
    batch = max((b for b in columns.get("gradcv", {})), key=int)
    size = metrics.get("config", {}).get("image_size") or metrics.get("image_size")
    result.headline = {"threads": int(threads), "batch": int(batch), "image_size": size,
                       "gradcv_ms": columns.get("gradcv", {}).get(batch)}
    compiled = next((c for c in columns if c.startswith("gradcv (") and "compile" in c), None)
    if compiled is not None and batch in columns[compiled]:
        result.headline["gradcv_compiled_ms"] = columns[compiled][batch]
    for library in ("OpenCV", "Kornia"):
        if library in columns and batch in columns[library]:
            result.references[library] = {"ms": columns[library][batch], "ratio": columns["gradcv"][batch] / columns[library][batch]}
    refs = "; ".join(f"{lib} {_num(r['ms'], 3, 'ms')} (gradcv/{lib} {r['ratio']:.2f}x)" for lib, r in result.references.items())
    what = f"ms per batch of {batch} RGB images{f' of {size}x{size}' if size else ''}, {threads} thread{'s' if int(threads) > 1 else ''}"
    mine = _num(result.headline["gradcv_ms"], 3, "ms")
    if "gradcv_compiled_ms" in result.headline:
        mine += f" (torch.compile {_num(result.headline['gradcv_compiled_ms'], 3, 'ms')})"
    result.rows.append((what, mine, refs or NOT_INSTALLED))


def _headline_register(result: StageResult, metrics: dict[str, Any]) -> None:
    result.headline = {"mace_px": metrics.get("mace_px"), "mace_identity_px": metrics.get("mace_identity_px"),
                       "photometric_error": metrics.get("photometric_error"), "wall_time_s": metrics.get("wall_time_s"),
                       "status": metrics.get("status"), "input": metrics.get("input")}
    if metrics.get("mace_px") is not None:
        result.rows.append(("corner error (MACE) on the bundled pair",
                            f"{_num(metrics['mace_px'], 3, 'px')} in {_num(metrics.get('wall_time_s'), 2, 's')} "
                            f"(identity {_num(metrics.get('mace_identity_px'), 3, 'px')})", ""))
    else:
        result.rows.append(("photometric error (no ground truth)", _num(metrics.get("photometric_error")), ""))


def _headline_depth(result: StageResult, metrics: dict[str, Any]) -> None:
    scores = metrics.get("metrics") or {}
    result.headline = {"abs_rel": scores.get("abs_rel"), "delta1": scores.get("delta1"), "rmse": scores.get("rmse"),
                       "valid_fraction": metrics.get("valid_fraction"), "wall_time_s": metrics.get("wall_time_s"),
                       "input": metrics.get("input")}
    if scores:
        result.rows.append(("AbsRel / δ<1.25 on the rendered scene",
                            f"AbsRel {_num(scores.get('abs_rel'))}, δ<1.25 {_num(scores.get('delta1'))} "
                            f"in {_num(metrics.get('wall_time_s'), 2, 's')}", ""))
    else:
        result.rows.append(("valid pixels (no ground truth)", _num(metrics.get("valid_fraction")), ""))


def _success_text(m: dict[str, Any]) -> str:
    """``SUCCESS: 31 consistent of 31 inliers`` from one of the attack's success records."""
    word = "SUCCESS" if m.get("success") else "no success"
    return f"{word}: {m.get('consistent_inliers', 0)} consistent of {m.get('inliers', 0)} inliers"


def _headline_attack(result: StageResult, metrics: dict[str, Any]) -> None:
    """Success, inliers, PSNR and L-inf after the attack (judged on the 8-bit images), and
    OpenCV's SIFT on the same images (the transfer), from the attack's metrics.json."""
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    psnr, levels = after.get("psnr") or [math.nan, math.nan], after.get("linf_levels") or [None, None]
    result.headline = {
        "success": after.get("success"), "consistent_inliers": after.get("consistent_inliers"),
        "inliers": after.get("inliers"), "corner_error_px": after.get("corner_error"), "psnr_db": psnr,
        "linf_levels": levels, "iterations": metrics.get("iterations"), "wall_time_s": metrics.get("wall_time_s"),
        "before_consistent_inliers": before.get("consistent_inliers"), "images": metrics.get("images"),
    }
    mine = (f"{_success_text(after)} after {metrics.get('iterations')} steps in {_num(metrics.get('wall_time_s'), 2, 's')} "
            f"(before: {before.get('consistent_inliers', 0)}); PSNR {_num(psnr[0], 3)} / {_num(psnr[1], 3)} dB, "
            f"L-inf {levels[0]} / {levels[1]} levels")
    transfer = metrics.get("opencv_transfer")
    if transfer:
        t_after = transfer.get("after") or {}
        result.references["OpenCV"] = {"method": "SIFT + findHomography on the same 8-bit images",
                                       "before": transfer.get("before"), "after": t_after}
        theirs = (f"OpenCV SIFT on the same 8-bit images: {_success_text(t_after)} "
                  f"(before: {(transfer.get('before') or {}).get('consistent_inliers', 0)})")
    else:
        theirs = "OpenCV is not installed: no transfer check"
    images = metrics.get("images") or []
    what = "targeted attack: the matcher finds the chosen homography" + (f" ({' and '.join(map(str, images))})" if images else "")
    result.rows.append((what, mine, theirs))


HEADLINES: dict[str, Callable[[StageResult, dict[str, Any]], None]] = {
    "sobel": _headline_sobel,
    "register": _headline_register,
    "depth": _headline_depth,
    "attack": _headline_attack,
}


# ----------------------------------------------------------------------------- references
def _set_reference(result: StageResult, text: str) -> None:
    """``text`` into the references column of the stage's first row."""
    if result.rows:
        what, mine, _ = result.rows[0]
        result.rows[0] = (what, mine, text)


def _no_references(result: StageResult, metrics: dict[str, Any], task_cfg: DictConfig, conf: DemoConfig) -> None:
    return None


def _reference_register(result: StageResult, metrics: dict[str, Any], task_cfg: DictConfig, conf: DemoConfig) -> None:
    """OpenCV's ECC (the same pyramid as gradcv's solve) and Kornia's ImageRegistrator on the
    same pair, grayscale, scored by the same corner error."""
    from gradcv.experiments import register as app
    from gradcv.experiments._images import to_gray
    from gradcv.registration import corner_error

    pair = app.load_pair(config_to_object(task_cfg, app.RegisterConfig))
    if pair.truth is None:
        _set_reference(result, "no ground truth: not compared")
        return
    h, w = pair.src.shape[-2:]
    src, dst = to_gray(pair.src[0])[None], to_gray(pair.dst[0])[None]
    solver = metrics.get("solver", {})
    from gradcv.experiments import bench_registration as bench

    runs: list[tuple[str, str, str, Callable[[], Any]]] = [
        ("OpenCV", "cv2", "ECC", lambda: bench.run_ecc(src, dst, int(solver.get("levels", 3)), float(solver.get("blur_sigma", 1.0)),
                                                       bench.BenchRegistrationConfig())),
        ("Kornia", "kornia", "ImageRegistrator", lambda: bench.run_kornia(src, dst, None)),
    ]
    texts = []
    for library, module, method, call in runs:
        try:
            __import__(module)
        except ImportError:
            continue
        try:
            est = call()
        except Exception as ex:  # a reference failing is noted, not the stage's failure
            result.references[library] = {"error": describe_error(ex)}
            texts.append(f"{library}: error ({describe_error(ex)})")
            continue
        mace = float(corner_error(est.homography.to(torch.float64), pair.truth, (h, w))[0])
        result.references[library] = {"method": method, "mace_px": mace, "failed": bool(est.failed[0]),
                                      "seconds": float(est.seconds[0])}
        texts.append(f"{library} {method} {_num(mace, 3, 'px')} in {_num(est.seconds[0], 2, 's')}"
                     + (" (failed)" if bool(est.failed[0]) else ""))
    _set_reference(result, "; ".join(texts) or NOT_INSTALLED)


def _reference_depth(result: StageResult, metrics: dict[str, Any], task_cfg: DictConfig, conf: DemoConfig) -> None:
    """gradcv's winner-take-all plane sweep on the same views, given the true depth range
    (min and max of the reference's true depth), scored on the same pixels."""
    from gradcv.depth import metrics as depth_metrics
    from gradcv.depth import plane_sweep
    from gradcv.experiments import depth as app

    views = app.load_views(config_to_object(task_cfg, app.DepthAppConfig))
    truth, scored = views.truth, views.scored
    if metrics.get("metrics") is None or truth is None or scored is None or not bool((truth > 0).any()):
        _set_reference(result, "no ground truth: not compared")
        return
    known = truth[truth > 0]
    t0 = time.perf_counter()
    sweep = plane_sweep(views.images[None], views.intrinsics[None], views.extrinsics[None],
                        int(metrics.get("ref_index", 0)), depth_range=(float(known.min()), float(known.max())),
                        planes=conf.sweep_planes)
    seconds = time.perf_counter() - t0
    m = depth_metrics(sweep.depth.double(), truth[None, None], scored[None, None])
    result.references[f"plane sweep ({conf.sweep_planes} planes)"] = {
        "abs_rel": float(m["abs_rel"][0]), "delta1": float(m["delta1"][0]), "seconds": seconds,
        "note": "gradcv.depth.plane_sweep given the true depth range"}
    _set_reference(result, f"plane sweep, {conf.sweep_planes} planes, true range: AbsRel {_num(float(m['abs_rel'][0]))}, "
                           f"δ<1.25 {_num(float(m['delta1'][0]))} in {_num(seconds, 2, 's')}")


REFERENCES: dict[str, Callable[[StageResult, dict[str, Any], DictConfig, DemoConfig], None]] = {
    "sobel": _no_references,  # the benchmark times its references itself
    "register": _reference_register,
    "depth": _reference_depth,
    "attack": _no_references,  # the attack reports its OpenCV transfer itself
}


# ----------------------------------------------------------------------------- summary
def _status_text(r: StageResult) -> str:
    if r.status in ("done", "failed", "interrupted"):
        return f"{r.status} in {r.seconds:.1f} s" + (f": {r.message}" if r.status == "failed" else "")
    return r.status + (f": {r.message}" if r.message else "")


def summary_markdown(results: list[StageResult], root: Path, total_s: float, finished: bool) -> str:
    lines = ["# gradcv demo", "",
             f"Run folder: `{root}`. {'Finished' if finished else 'Incomplete (interrupted or running)'}"
             f" after {total_s:.0f} s on {_machine()}.", "",
             "| stage | figure | status | headline | gradcv | references |", "|---|---|---|---|---|---|"]
    for r in results:
        first = r.rows[0] if r.rows else ("", "", "")
        lines.append(f"| {r.name} | {r.stage.figure_number} | {_md(_status_text(r))} | {_md(first[0])} | {_md(first[1])} | {_md(first[2])} |")
    for r in results:
        lines += ["", f"## Figure {r.stage.figure_number}: {r.stage.title} (`{r.name}`)", "",
                  f"Status: {_status_text(r)}.", ""]
        if r.command and r.status != "skipped":
            lines += [f"Reproduce: `{r.command} hydra.run.dir=...`", ""]
        if r.rows:
            lines += ["| metric | gradcv | references |", "|---|---|---|"]
            lines += [f"| {_md(a)} | {_md(b)} | {_md(c)} |" for a, b, c in r.rows]
            lines.append("")
        figure = root / r.name / r.stage.figure
        if figure.is_file():
            lines += [f"![Figure {r.stage.figure_number}]({r.name}/{r.stage.figure})", ""]
        if (root / r.name / "log.txt").is_file():
            lines += [f"Outputs in [`{r.name}/`]({r.name}/), what it printed in [`{r.name}/log.txt`]({r.name}/log.txt).", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_html(results: list[StageResult], root: Path, total_s: float, finished: bool) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>gradcv demo</title>',
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}"
             "img{max-width:100%;border:1px solid #ddd}.failed{color:#b00}.skipped{color:#777}"
             "code{background:#f3f3f3;padding:0 .2em}</style></head><body>",
             "<h1>gradcv demo</h1>",
             f"<p>Run folder: <code>{e(str(root))}</code>. {'Finished' if finished else 'Incomplete (interrupted or running)'}"
             f" after {total_s:.0f} s on {e(_machine())}.</p>",
             "<table><tr><th>stage</th><th>figure</th><th>status</th><th>headline</th><th>gradcv</th><th>references</th></tr>"]
    for r in results:
        first = r.rows[0] if r.rows else ("", "", "")
        parts.append(f'<tr><td>{e(r.name)}</td><td>{r.stage.figure_number}</td><td class="{e(r.status)}">{e(_status_text(r))}</td>'
                     f"<td>{e(first[0])}</td><td>{e(first[1])}</td><td>{e(first[2])}</td></tr>")
    parts.append("</table>")
    for r in results:
        parts.append(f"<h2>Figure {r.stage.figure_number}: {e(r.stage.title)} (<code>{e(r.name)}</code>)</h2>")
        parts.append(f'<p class="{e(r.status)}">Status: {e(_status_text(r))}.</p>')
        if r.command and r.status != "skipped":
            parts.append(f"<p>Reproduce: <code>{e(r.command)} hydra.run.dir=...</code></p>")
        if r.rows:
            parts.append("<table><tr><th>metric</th><th>gradcv</th><th>references</th></tr>")
            parts += [f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td></tr>" for a, b, c in r.rows]
            parts.append("</table>")
        figure = root / r.name / r.stage.figure
        if figure.is_file():
            data = base64.b64encode(figure.read_bytes()).decode("ascii")
            parts.append(f'<p><img alt="Figure {r.stage.figure_number}" src="data:image/png;base64,{data}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def summary_figure(results: list[StageResult], root: Path, total_s: float) -> Any:
    """One page: the headline table, then the stages' figures, two a row."""
    import matplotlib.image as mpimg
    from matplotlib.figure import Figure

    shown = [r for r in results if (root / r.name / r.stage.figure).is_file()]
    rows = max(1, math.ceil(len(shown) / 2))
    fig = Figure(figsize=(16, 2.2 + 5.0 * rows), layout="constrained")
    grid = fig.add_gridspec(rows + 1, 2, height_ratios=[2.2] + [5.0] * rows)
    ax = fig.add_subplot(grid[0, :])
    ax.axis("off")
    cells = [[f"Fig. {r.stage.figure_number}: {r.name}", _clip(_status_text(r), 30)]
             + [_clip(r.rows[0][k] if r.rows else "", n) for k, n in ((0, 40), (1, 60), (2, 70))] for r in results]
    if cells:
        table = ax.table(cellText=cells, colLabels=["stage", "status", "headline", "gradcv", "references"],
                         loc="center", cellLoc="left", colWidths=[0.08, 0.12, 0.2, 0.27, 0.33])
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.4)
    ax.set_title(f"gradcv demo: the paper's studies at reduced size, {total_s:.0f} s on {_machine()}", fontsize=13)
    for i, r in enumerate(shown):
        sub = fig.add_subplot(grid[1 + i // 2, i % 2])
        sub.imshow(mpimg.imread(root / r.name / r.stage.figure))
        sub.set_title(f"Figure {r.stage.figure_number}: {r.stage.title}", fontsize=11)
        sub.axis("off")
    return fig


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _machine() -> str:
    from gradcv.experiments.bench_sobel import describe_device

    try:
        return describe_device(torch.device("cpu")) + f", torch {torch.__version__}"
    except Exception:  # only a description
        return f"torch {torch.__version__}"


def write_summary(results: list[StageResult], root: Path, total_s: float, finished: bool, picture: bool) -> None:
    """summary.md and summary.html, and with ``picture`` summary.png, each atomically."""
    atomic_write_text(root / "summary.md", summary_markdown(results, root, total_s, finished))
    atomic_write_text(root / "summary.html", summary_html(results, root, total_s, finished))
    if picture:
        fig = summary_figure(results, root, total_s)
        save_figure(fig, root / "summary.png", dpi=80)


# ----------------------------------------------------------------------------- task
def _check(conf: DemoConfig) -> list[str]:
    unknown = [s for s in conf.stages if s not in STAGES]
    if unknown or not conf.stages:
        raise UsageError(f"stages: expected some of {', '.join(STAGES)}, got {conf.stages}")
    if len(set(conf.stages)) != len(conf.stages):
        raise UsageError(f"stages: a stage is named twice in {conf.stages}")
    if conf.sweep_planes < 2:
        raise UsageError(f"sweep_planes: expected at least 2, got {conf.sweep_planes}")
    try:
        device = torch.device(conf.device)
    except RuntimeError as ex:
        raise UsageError(f"device: {ex}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExperimentError("device: cuda is not available here (use device=cpu)")
    return list(conf.stages)


def demo(cfg: DictConfig) -> None:
    """The Hydra task: run the stages one after the other into the run folder, the summary
    rewritten after each; raise :class:`ExperimentError` if any failed."""
    conf = config_to_object(cfg, DemoConfig)
    names = _check(conf)
    root = run_dir()
    root.mkdir(parents=True, exist_ok=True)
    stderr = sys.stderr
    results = [StageResult(name) for name in names]
    start = time.perf_counter()
    print(f"{APP}: {len(names)} stages ({', '.join(names)}) into {root}", flush=True)
    try:
        for i, name in enumerate(names):
            result = run_stage(name, i + 1, len(names), conf, root, stderr, results[i])
            line = " | ".join(x for x in result.rows[0][1:] if x) if result.status == "done" and result.rows else ""
            print(f"{APP}: {name}: {_status_text(result)}{': ' + line if line else ''}", flush=True)
            write_summary(results, root, time.perf_counter() - start, False, False)
    except KeyboardInterrupt:
        for r in results:
            if r.status == "pending":
                r.status = "not run"
            elif r.status == "running":
                r.status = "interrupted"
        write_summary(results, root, time.perf_counter() - start, False, True)
        print(f"{APP}: interrupted; what finished is in {root / 'summary.html'}", flush=True)
        raise
    total = time.perf_counter() - start
    write_summary(results, root, total, True, True)
    failed = [r for r in results if r.status == "failed"]
    write_metrics({
        "stages": {r.name: {"status": r.status, "seconds": r.seconds, "message": r.message, "command": r.command,
                            "headline": r.headline, "references": r.references,
                            "folder": str(root / r.name) if (root / r.name).is_dir() else None} for r in results},
        "failed": [r.name for r in failed],
        "total_seconds": total,
        "machine": _machine(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    })
    print(f"{APP}: done in {total:.0f} s; summary: {root / 'summary.html'} (also summary.md, summary.png)", flush=True)
    if failed:
        raise ExperimentError(
            f"{len(failed)} of {len(results)} stages failed: "
            + "; ".join(f"{r.name}: {r.message}" for r in failed)
            + f" (summary: {root / 'summary.md'})"
        )


def main() -> None:
    """Entry point: ``python -m gradcv.experiments.demo [overrides]``."""
    run_app(demo, config_name=APP)


if __name__ == "__main__":
    main()
