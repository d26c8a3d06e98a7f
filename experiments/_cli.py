"""Running a Hydra app as a well-behaved command-line tool, and writing its outputs atomically.

Every experiment's ``__main__`` calls :func:`run_app`. On top of ``hydra.main`` it adds:

- one line on stderr and a non-zero exit, never a traceback, for a bad override (unknown
  key, value of the wrong type, parse error), an unknown flag, a missing or unreadable
  file, or any error the task raises; the line starts with the app's name
  (``bench_sobel: error: ...``). Set ``HYDRA_FULL_ERROR=1`` to get Hydra's full stack
  traces instead, as with any Hydra app;
- exit status 2 for a command-line mistake, 1 for a failed task, 130 for Ctrl-C;
- ``--device cuda`` (and ``--device=cuda``) accepted as a spelling of ``device=cuda``.

The writers (:func:`atomic_write_text`, :func:`atomic_write_bytes`, :func:`save_figure`)
write to a temporary file in the destination's folder and ``os.replace`` it into place,
so an interrupted run leaves either the old file or the complete new one, never half a
file.

Run folders: a folder that holds ``metrics.json`` is complete. Every app writes its other
outputs first and calls :func:`write_metrics` last. When a task fails (any error, a bad
value it checks itself, Ctrl-C) before that call, :func:`run_app` deletes any
``metrics.json`` in the job's folder, keeps the outputs the task finished, and removes
the folder altogether, with the date and app folders above it that the run created and
left empty, when the task wrote nothing besides Hydra's own ``.hydra/`` and log file.
Sweeps (``-m``) are cleaned the same way, job by job, then the sweep folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Mapping, NoReturn, Sequence, TypeVar

from hydra.experimental.callback import Callback

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from omegaconf import DictConfig

T = TypeVar("T")

#: The repository's top-level ``conf/`` folder, found from this file so that apps work
#: from any working directory.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

#: Exit statuses: the shell's convention for usage errors, failures and SIGINT.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ExperimentError(Exception):
    """A failure the user can act on; its message is printed as is, without a type name."""


class UsageError(ExperimentError):
    """A mistake on the command line (bad flag or override)."""


class _JobFailed(Exception):
    """A sweep's job failed in a launcher plugin's worker process, which printed its error
    line; carries the exit status back (picklable: its only argument is the status)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# --------------------------------------------------------------------------------------
# Running an app
# --------------------------------------------------------------------------------------


def run_app(
    task: Callable[[DictConfig], object],
    *,
    config_name: str,
    app_name: str | None = None,
    flag_keys: Sequence[str] = ("device",),
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """Run ``task`` as the Hydra app configured by ``conf/<config_name>.yaml``, then exit.

    Args:
        task: the job; receives the composed config. Raise :class:`ExperimentError` for
            failures whose message is meant for the user.
        config_name: name of the primary config in :data:`CONF_DIR`.
        app_name: prefix of the error lines; defaults to ``config_name``.
        flag_keys: config keys that may also be given as ``--key value`` or ``--key=value``.
        argv: the arguments (without the program name); defaults to ``sys.argv[1:]``.

    Exits with 0 on success, 1 when the task failed, 2 for a command-line mistake and
    130 on ``KeyboardInterrupt``. Before exiting, tidies the run folders of the jobs that
    failed (see the module's docstring); sweeps are tidied on Hydra's basic launcher,
    which runs the jobs in this process.
    """
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    app = app_name or config_name
    full_errors = bool(os.environ.get("HYDRA_FULL_ERROR"))
    status = 0
    main_pid = os.getpid()

    # functools.wraps: Hydra unwraps the job to find the task's file or module, which
    # names the job (and its log file) as with a plain @hydra.main app.
    @functools.wraps(task)
    def job(cfg: DictConfig) -> None:
        # Errors are reported here, inside the job, rather than left to Hydra: Hydra would
        # print "Error executing job with overrides: ..." and a stripped traceback.
        nonlocal status
        folder = _RUNS.start_job()
        try:
            task(cfg)
        except Exception as ex:
            if full_errors:
                raise
            status = max(status, EXIT_USAGE if isinstance(ex, UsageError) else EXIT_FAILURE)
            _print_error(app, describe_error(ex))
            if os.getpid() != main_pid:
                # A launcher plugin (joblib, submitit) ran this job in another process: tidy
                # its folder here (Hydra made it for this job), and hand the failure back to
                # the sweep in this process, which re-raises a failed job's return value.
                _RUNS.created.add(folder)
                _RUNS.clean_up()
                raise _JobFailed(status) from None
        else:
            _RUNS.jobs[folder] = _JobState.DONE

    main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(job)
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    _RUNS.reset()
    try:
        args = rewrite_flags(list(sys.argv[1:] if argv is None else argv), flag_keys)
        overrides = check_hydra_flags(args)
        sys.argv = [sys.argv[0] if sys.argv else app, *_with_run_folder_callback(args, overrides)]
        # Hydra prints composition errors as several lines and exits; with HYDRA_FULL_ERROR
        # set (its documented switch) it raises them instead, and we print one line.
        os.environ["HYDRA_FULL_ERROR"] = "1"
        main()
    except KeyboardInterrupt:
        _print_error(app, "interrupted", kind=None)
        sys.exit(EXIT_INTERRUPTED)
    except _JobFailed as ex:  # its error line was printed by the job's own process
        sys.exit(max(status, ex.status))
    except Exception as ex:
        if full_errors:
            raise
        _print_error(app, describe_error(ex))
        usage = isinstance(ex, (UsageError, HydraException, OmegaConfBaseException))
        sys.exit(EXIT_USAGE if usage else EXIT_FAILURE)
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
        _RUNS.clean_up()
    sys.exit(status)


def rewrite_flags(args: list[str], flag_keys: Sequence[str]) -> list[str]:
    """Turn ``--key value`` and ``--key=value`` into the override ``key=value``.

    Only keys in ``flag_keys`` are rewritten; every other argument is left for Hydra.

    >>> rewrite_flags(["--device", "cuda", "repetitions=3", "--device=cpu"], ["device"])
    ['device=cuda', 'repetitions=3', 'device=cpu']
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        key = name[2:] if name.startswith("--") else None
        if key in flag_keys:
            if not eq:
                if i + 1 >= len(args) or args[i + 1].startswith("-"):
                    raise UsageError(f"option --{key} needs a value")
                value = args[i + 1]
                i += 1
            out.append(f"{key}={value}")
        else:
            out.append(arg)
        i += 1
    return out


def check_hydra_flags(args: list[str]) -> list[str] | None:
    """Raise :class:`UsageError` for a flag Hydra's own parser would reject.

    Hydra's argparse parser prints a usage block and exits on an unknown flag; parsing
    the arguments first with the same parser, told to raise, keeps the report to one line.

    Returns:
        The overrides among ``args`` (``None`` for ``--version``, which is left to Hydra).
    """
    from hydra._internal.utils import get_args_parser

    if "--version" in args:  # argparse prints the version and exits: let Hydra do it.
        return None
    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise UsageError(message)

    parser.error = error  # type: ignore[method-assign]
    return list(parser.parse_args(args).overrides)


def _with_run_folder_callback(args: list[str], overrides: list[str] | None) -> list[str]:
    """``args`` with the override that installs :class:`RunFolderCallback`.

    argparse takes Hydra's overrides as one run of positional arguments, so the extra
    override goes right before the user's first one, or first when there are none (a
    flag with an optional value, ``--info``, would take it as its value if it came last).
    """
    if overrides is None:
        return args
    extra = f"++hydra.callbacks.gradcv_run_folders._target_={RunFolderCallback.__module__}.{RunFolderCallback.__qualname__}"
    at = next((i for i in range(len(args)) if overrides and args[i : i + len(overrides)] == overrides), 0)
    return [*args[:at], extra, *args[at:]]


def describe_error(ex: BaseException) -> str:
    """One line describing ``ex`` for the user.

    Messages written for users (ours, Hydra's and OmegaConf's) are printed without the
    exception type; OS errors as ``<reason>: '<file>'``; anything else as
    ``<Type>: <message>`` because there the type is the useful part (``KeyError: 'x'``).
    """
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(ex, OSError) and ex.strerror:
        message = ex.strerror
        names = [n for n in (ex.filename, ex.filename2) if n is not None]
        if names:
            message += ": " + " -> ".join(repr(os.fsdecode(n)) if not isinstance(n, int) else str(n) for n in names)
        return message
    message = _condense(str(ex))
    if isinstance(ex, OverrideParseException):
        # Hydra's parser message ("no viable alternative at input '[1,'") does not say
        # which argument it was.
        message = f"cannot parse override {ex.override!r}: {message}"
    if isinstance(ex, (ExperimentError, HydraException, OmegaConfBaseException)):
        # Hydra wraps the OmegaConf error that says what is wrong with a value
        # ("Error merging override repetitions=abc" <- "Value 'abc' ... Integer").
        cause = ex.__cause__
        if isinstance(cause, (HydraException, OmegaConfBaseException)):
            detail = _condense(str(cause))
            if detail and detail not in message:
                message = f"{message.rstrip('.')}: {detail}" if message else detail
        return message or type(ex).__name__
    return f"{type(ex).__name__}: {message}" if message else type(ex).__name__


def _condense(message: str) -> str:
    # OmegaConf appends indented "full_key: ...", "object_type=..." lines; they repeat
    # what the first line says, so they are dropped rather than joined.
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not line.startswith(("full_key:", "object_type=", "reference_type="))]
    return " ".join(kept)


def _print_error(app: str, message: str, kind: str | None = "error") -> None:
    prefix = f"{app}: {kind}: " if kind else f"{app}: "
    print(prefix + message, file=sys.stderr, flush=True)


def optional_hint(hint: Any) -> Any:
    """``Optional[hint]`` for the types OmegaConf checks; ``Any`` for the others (a union,
    a nested dataclass): the type of a config field that may be left ``None``."""
    from typing import Optional

    return Optional[hint] if hint in (int, float, str, bool) else Any


#: What an override writes to set a field that may be ``None`` to ``None`` (``null`` on the
#: command line keeps the preset's value, as for every field).
OFF = "none"


def _may_be_none(hint: Any) -> bool:
    """Whether a field typed ``hint`` may hold ``None`` (``Optional[X]``, ``X | None``)."""
    import types
    import typing

    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def overrides_schema(cls: type, name: str, exclude: frozenset[str] = frozenset()) -> type:
    """A dataclass with every field of the dataclass ``cls`` but ``exclude``, each ``None``
    (= keep the preset's value) unless overridden: the schema of an app's ``solver.*``-like
    node, made from the library's dataclass so that it cannot drift from it. A field the
    library lets be ``None`` takes any value here, so that :data:`OFF` (``none``) can
    switch it off (see :func:`set_fields`); the library's validation checks the rest."""
    import typing

    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in exclude]
    optional = frozenset(f.name for f in fields if _may_be_none(hints[f.name]))
    return dataclasses.make_dataclass(
        name, [(f.name, Any if f.name in optional else optional_hint(hints[f.name]), dataclasses.field(default=None)) for f in fields],
        namespace={"_may_be_none": optional},
    )


def set_fields(node: Any) -> dict[str, Any]:
    """The fields an override set on a node of an :func:`overrides_schema` type, as keyword
    arguments of the library's ``replace``: unset (``None``) fields left out, :data:`OFF`
    turned into ``None`` where the library lets the field be ``None`` (elsewhere it stays
    the string, for the library's validation to name)."""
    optional = getattr(node, "_may_be_none", frozenset())
    values = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
    return {k: (None if k in optional and isinstance(v, str) and v.lower() == OFF else v) for k, v in values.items() if v is not None}


def config_to_object(cfg: DictConfig, schema: type[T]) -> T:
    """``cfg`` as an instance of the dataclass ``schema``, refusing keys it does not have.

    ``OmegaConf.to_object`` silently drops keys that an override added with ``+key=...``
    to a structured config; a misspelt ``+repititions=3`` would then be ignored without
    a word, so such keys are reported as a :class:`UsageError` instead.
    """
    from omegaconf import DictConfig as _DictConfig
    from omegaconf import OmegaConf

    def unknown(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, _DictConfig):
            return []
        node_type = OmegaConf.get_type(node)
        allowed = {f.name for f in dataclasses.fields(node_type)} if dataclasses.is_dataclass(node_type) else None
        found = []
        for key, value in node.items_ex(resolve=False):
            name = f"{prefix}{key}"
            if allowed is not None and key not in allowed:
                found.append(name)
            else:
                found += unknown(value, f"{name}.")
        return found

    extra = unknown(cfg, "")
    if extra:
        raise UsageError(f"unknown config key{'s' if len(extra) > 1 else ''}: {', '.join(extra)}")
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, schema):
        raise TypeError(f"config is a {type(obj).__name__}, expected {schema.__name__} (is the schema in the config's defaults?)")
    return obj


def run_dir() -> Path:
    """The current Hydra run's output folder (valid inside a running job)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


# --------------------------------------------------------------------------------------
# Run folders: metrics.json last, nothing left behind by a failed task
# --------------------------------------------------------------------------------------

#: The file whose presence says that a run folder is complete.
METRICS_NAME = "metrics.json"
#: What Hydra's basic launcher writes into a sweep folder besides the jobs' folders.
_SWEEP_FILES = frozenset({"multirun.yaml"})


class _JobState:
    """How far a job got: its task is running, has written ``metrics.json`` (so every
    output is complete, whatever happens next), or has returned."""

    RUNNING, METRICS_WRITTEN, DONE = "running", "metrics written", "done"


class _RunFolders:
    """What this process's Hydra runs created, so that :func:`run_app` can tidy up.

    Hydra makes a run's folder, and writes its ``.hydra/`` and log file there, before the
    task starts; whether a folder is new can only be known before that, which is why
    :class:`RunFolderCallback` records it from ``on_run_start`` / ``on_multirun_start``.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.created: set[Path] = set()  # folders that did not exist before this run made them
        self.sweep_entries: dict[Path, set[str]] = {}  # sweep folder -> its entries before any job
        self.jobs: dict[Path, str] = {}  # job folder -> _JobState
        self.hydra_names: dict[Path, set[str]] = {}  # job folder -> the names Hydra writes there

    def note_new(self, folder: Path) -> None:
        """Record ``folder`` and its ancestors that do not exist yet (Hydra is about to make them)."""
        while not folder.exists() and folder.parent != folder:
            self.created.add(folder)
            folder = folder.parent

    def start_job(self) -> Path:
        """Register the running Hydra job; return its folder."""
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        folder = Path(hydra_cfg.runtime.output_dir)
        for sweep, before in self.sweep_entries.items():
            if folder.is_relative_to(sweep) and folder != sweep:
                first = sweep / folder.relative_to(sweep).parts[0]
                if first.name not in before:
                    self.created |= {first, folder, *(p for p in folder.parents if p.is_relative_to(first))}
        names = {f"{hydra_cfg.job.name}.log"}
        if hydra_cfg.output_subdir is not None:
            names.add(Path(hydra_cfg.output_subdir).parts[0])
        self.hydra_names[folder] = names
        self.jobs[folder] = _JobState.RUNNING
        return folder

    def clean_up(self) -> None:
        """Tidy the folders of the jobs that did not finish, then the empty folders this run made.

        Best effort: a folder that cannot be removed is left, and the run's own error
        (already printed) stays the one reported.
        """
        for folder, state in self.jobs.items():
            if state == _JobState.DONE:
                continue
            with contextlib.suppress(OSError):
                if state != _JobState.METRICS_WRITTEN and (folder / METRICS_NAME).is_file():
                    (folder / METRICS_NAME).unlink()
                if folder in self.created and set(os.listdir(folder)) <= self.hydra_names[folder]:
                    for name in self.hydra_names[folder]:
                        path = folder / name
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path)
                        else:
                            path.unlink(missing_ok=True)
                    folder.rmdir()
        # Deepest first, so that a date folder is looked at after the time folders in it.
        for folder in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                if folder in self.sweep_entries and set(os.listdir(folder)) <= _SWEEP_FILES:
                    for name in _SWEEP_FILES:
                        (folder / name).unlink(missing_ok=True)
                folder.rmdir()  # only succeeds on an empty folder


_RUNS = _RunFolders()


class RunFolderCallback(Callback):
    """Hydra callback installed by :func:`run_app`: notes which folders a run creates.

    Hydra calls ``on_run_start`` / ``on_multirun_start`` before it makes the run or sweep
    folder, with the same resolved ``${now:...}`` values that it will use.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _RUNS.note_new(Path(os.path.abspath(str(config.hydra.run.dir))))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(os.path.abspath(str(config.hydra.sweep.dir)))
        _RUNS.note_new(sweep)
        _RUNS.sweep_entries[sweep] = set(os.listdir(sweep)) if sweep.is_dir() else set()


def write_metrics(metrics: Mapping[str, Any], folder: str | os.PathLike[str] | None = None) -> Path:
    """Write ``metrics.json``, the run's last output, atomically; return its path.

    A folder with ``metrics.json`` is complete: call this once, after every other output
    of the run is written. If the task fails before this call, :func:`run_app` deletes any
    ``metrics.json`` in the folder; after it, the file stays (every output is complete).

    The JSON is strict: NaN and infinite floats become ``null``; numpy scalars and arrays
    and torch tensors become numbers and lists, tuples lists, paths strings.

    Args:
        metrics: the figures of the run; keys are strings.
        folder: where to write; defaults to the running Hydra job's folder (:func:`run_dir`).

    Raises:
        ValueError: ``metrics.json`` was already written in ``folder`` by this run.
        TypeError: a value that has no JSON form.
    """
    target = Path(folder if folder is not None else run_dir()) / METRICS_NAME
    job = Path(os.path.abspath(target.parent))
    if _RUNS.jobs.get(job) == _JobState.METRICS_WRITTEN:
        raise ValueError(f"{target} was already written by this run: write_metrics must be the run's last write")
    atomic_write_text(target, json.dumps(_plain_json(metrics), indent=2, allow_nan=False) + "\n")
    if job in _RUNS.jobs:
        _RUNS.jobs[job] = _JobState.METRICS_WRITTEN
    return target


def _plain_json(value: Any) -> Any:
    """``value`` with only JSON's types (see :func:`write_metrics`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return value
    if isinstance(value, Mapping):
        return {k if isinstance(k, (str, int)) else _bad_key(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy and torch, without importing them
        return _plain_json(value.tolist())
    raise TypeError(f"metrics: a {type(value).__name__} has no JSON form: {value!r}")


def _bad_key(key: object) -> NoReturn:
    raise TypeError(f"metrics: keys must be strings, got {type(key).__name__} {key!r}")


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Context manager giving a file that appears at ``path`` only once fully written.

    The data goes to a hidden temporary file in the same folder (so that the final
    ``os.replace`` is a rename within one file system, which is atomic), is flushed to
    disk, then renamed over ``path``. If the block raises, or the process is
    interrupted, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the destination; its folder must exist.
        mode: ``"w"`` for text, ``"wb"`` for bytes.
        encoding: text encoding (text mode only).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file readable by its owner only; give it the permissions a
        # plain open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({"encoding": encoding} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def save_figure(fig: Figure, path: str | os.PathLike[str], **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (see :func:`atomic_write`).

    The format comes from ``path``'s suffix unless ``format=`` is given, because the
    temporary file's name does not carry it.
    """
    fmt = savefig_kwargs.pop("format", None) or Path(path).suffix.lstrip(".") or None
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=fmt, **savefig_kwargs)


def _umask() -> int:
    # The umask can only be read by setting it; do it once, on first use.
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None
