"""Sharding a benchmark's problems over ``torchrun`` processes, and gathering the results.

A study that solves many independent problems (scenes, image pairs, attack settings) runs
unchanged on one process, on ``torchrun --nproc_per_node=N`` on one machine, or on several
machines with torchrun's rendezvous::

    torchrun --standalone --nproc_per_node=2 -m gradcv.experiments.bench_depth scenes=20
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        --rdzv-id=depth1 -m gradcv.experiments.bench_depth scenes=200

The whole API, in an app's task (``device`` is the configured device string)::

    with Distributed.from_env(conf.device) as dist:          # a no-op without torchrun
        mine = []
        for group in dist.batches(problems, conf.batch):      # this rank's batches
            mine += solve(group, dist.device)                 # one result per problem
        results = dist.gather(mine)                           # rank 0: all, in problem order
    if results is None:                                       # every other rank: done
        return

or, when one function solves a batch, ``results = dist.map_batches(solve, problems, conf.batch)``
inside the ``with`` block; and in its ``main``: ``run_app(task, config_name=APP,
argv=worker_argv())`` (see :func:`worker_argv`).

**How problems are shared.** The problems are cut into the batches a single process
would solve (``batch`` consecutive problems each, in order), and the *batches* are dealt
round-robin over the ranks: batch ``k`` goes to rank ``k % world_size``. Every problem is
therefore solved in exactly the batch, with exactly the batch-mates, that it has in a
single-process run; batched solvers whose seeded initialisation is drawn per call (the
depth solver's) or whose reductions depend on the batch see the same inputs. Results are
put back into the global problem order on rank 0, which alone writes the outputs.

**Seeds.** Per-problem data must come from the run's seed and the problem's global index
(``seed + index``), never from the rank or from how many problems a process has solved
before; the apps already render and draw that way.

**What "identical" means.** With the same config and seed, rank 0 writes a
``metrics.json`` equal, value for value and bit for bit in every float, to the one a
single process writes, except the values that measure time (seconds per call and what is
derived from them, such as a time target's verdict) and the ``launch`` record (world
size, backend). Those vary from run to run even on one process. A study lists their
places in ``metrics.json`` itself, under :data:`VARYING_KEY`, as ``/``-separated paths in
which ``*`` matches every key or index, and :func:`comparable` drops them: two runs agree
when ``comparable(a) == comparable(b)``. On CPU this holds because each batch runs the
same operations on the same inputs with the same number of intra-op threads; on CUDA it
holds up to the kernels PyTorch documents as non-deterministic (atomic adds), as between
two single-process runs.

**Failures.** When a rank raises, its process exits non-zero and torchrun stops the
others; there is no partial ``metrics.json``.

Without torchrun (no ``WORLD_SIZE`` in the environment, or a world of one) every call is
a no-op: one rank, every batch, ``gather`` returns its input.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

#: The key of ``metrics.json`` that lists the paths whose values vary between runs.
VARYING_KEY = "varies_between_runs"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def launched_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` without it."""
    world = _env_int("WORLD_SIZE", 1)
    if world < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be at least 1, got {world}")
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"environment variable RANK must be in [0, {world}), got {rank}")
    return rank, world, local


@dataclass
class Distributed:
    """This process's place in a torchrun launch: its rank, the world size and its device.

    Use :meth:`from_env` and the object as a context manager: entering initialises the
    process group (gloo for a CPU device, nccl for CUDA) when the world has more than one
    process and no group exists yet; leaving destroys the group it made.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _indices: list[int] = field(default_factory=list, repr=False)
    _owns_group: bool = field(default=False, repr=False)

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu") -> "Distributed":
        """The launch described by torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.

        ``device``: the configured device; a CUDA device without an index becomes this
        process's ``cuda:LOCAL_RANK`` (one GPU per process, as torchrun lays them out).
        """
        rank, world, local = launched_world()
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None and world > 1:
            dev = torch.device("cuda", local)
        return cls(rank=rank, world_size=world, local_rank=local, device=dev)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the outputs and prints the report."""
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        """The collective backend (``None`` for a single process)."""
        if self.world_size == 1:
            return None
        return "nccl" if self.device.type == "cuda" else "gloo"

    def launch_record(self) -> dict[str, Any]:
        """What to store as ``launch`` in ``metrics.json`` (one of the varying paths)."""
        return {"world_size": self.world_size, "backend": self.backend}

    # ------------------------------------------------------------------ process group
    def __enter__(self) -> "Distributed":
        if self.world_size > 1:
            import torch.distributed as dist

            if not dist.is_available():
                raise RuntimeError("torchrun launched several processes, but this PyTorch has no torch.distributed")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group(backend=self.backend, init_method="env://", rank=self.rank, world_size=self.world_size)
                self._owns_group = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_group = False

    # ------------------------------------------------------------------ sharding
    def batches(self, problems: Sequence[T], batch: int) -> list[list[T]]:
        """This rank's batches of ``problems``: batch ``k`` (problems ``k*batch`` to
        ``(k+1)*batch - 1``, as one process would group them) goes to rank ``k % world_size``.

        Remembers which problems it handed out, for :meth:`gather`; a rank may get none.
        """
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        starts = range(0, len(problems), batch)
        mine = [s for k, s in enumerate(starts) if k % self.world_size == self.rank]
        self._indices = [i for s in mine for i in range(s, min(s + batch, len(problems)))]
        return [list(problems[s : s + batch]) for s in mine]

    def map_batches(self, solve: Callable[[list[T]], Sequence[R]], problems: Sequence[T], batch: int) -> list[R] | None:
        """``solve`` on each of this rank's :meth:`batches` (one result per problem), then
        :meth:`gather`: on rank 0 every problem's result in problem order, ``None`` elsewhere."""
        mine: list[R] = []
        for group in self.batches(problems, batch):
            out = list(solve(group))
            if len(out) != len(group):
                raise ValueError(f"map_batches: solve returned {len(out)} results for a batch of {len(group)} problems")
            mine += out
        return self.gather(mine)

    def gather(self, results: Sequence[R]) -> list[R] | None:
        """Every rank's results on rank 0, in the global problem order; ``None`` elsewhere.

        ``results``: one per problem :meth:`batches` handed to this rank, in the order it
        handed them out. Picklable objects (rows of plain numbers are best: tensors would
        travel with their storage). A collective: every rank must call it.
        """
        if len(results) != len(self._indices):
            raise ValueError(f"gather: expected one result per problem of this rank's batches ({len(self._indices)}), "
                             f"got {len(results)}")
        pairs = list(zip(self._indices, results))
        if self.world_size == 1:
            return [r for _, r in sorted(pairs, key=lambda p: p[0])]
        import torch.distributed as dist

        everyone: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(pairs, everyone, dst=0)
        if not self.is_main:
            return None
        assert everyone is not None
        merged = sorted((p for part in everyone for p in part), key=lambda p: p[0])
        return [r for _, r in merged]


# ---------------------------------------------------------------------- the Hydra side
#: What a non-zero rank adds to its command line: it writes nothing (rank 0 writes the
#: outputs), so Hydra makes no run folder of its own, no ``.hydra/`` and no log file.
QUIET_OVERRIDES = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled",
                   "hydra/hydra_logging=disabled")


def worker_argv(argv: Sequence[str] | None = None) -> list[str]:
    """The app's arguments (default ``sys.argv[1:]``), with :data:`QUIET_OVERRIDES`
    after the user's overrides on every rank but 0; unchanged on rank 0 and without torchrun.

    Pass it to :func:`gradcv.experiments._cli.run_app` as ``argv``.
    """
    from gradcv.experiments._cli import check_hydra_flags

    args = list(sys.argv[1:] if argv is None else argv)
    rank, world, _ = launched_world()
    if world == 1 or rank == 0:
        return args
    try:
        overrides = check_hydra_flags(args)
    except Exception:  # noqa: BLE001  (a bad command line: run_app reports it, on every rank)
        return args
    if overrides is None:
        return args
    # The overrides are one run of positional arguments; ours go right after them (so that
    # they win), or first when there are none (a flag with an optional value, --info,
    # would take an override after it as its value).
    at = 0
    if overrides:
        at = next(i for i in range(len(args)) if args[i : i + len(overrides)] == overrides) + len(overrides)
    return [*args[:at], *QUIET_OVERRIDES, *args[at:]]


# ---------------------------------------------------------------------- comparing runs
def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` (a loaded ``metrics.json``) without the values listed under
    :data:`VARYING_KEY` (timings, the launch record): what must agree between two runs
    with the same config and seed, on any number of processes."""
    out = copy.deepcopy(metrics)
    for path in metrics.get(VARYING_KEY, []):
        _drop(out, path.split("/"))
    return out


def _drop(node: Any, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        keys = list(range(len(node))) if head == "*" else [int(head)] if head.isdigit() and int(head) < len(node) else []
    else:
        return
    if not rest:
        for k in sorted(keys, reverse=True):
            del node[k]
        return
    for k in keys:
        _drop(node[k], rest)
