"""What every gradient-descent solver in gradcv shares (DESIGN.md): the optimiser factory
and learning-rate schedule, per-sample stopping by masks, working-set compaction, the
coarse-to-fine schedule over a centred pyramid with a carry between levels, the result
base with per-sample status, the progress-callback protocol, and unrolled
(differentiable) steps. Imports only torch, torch_optimizer and ``gradcv.core_ops``."""

from gradcv.optim.coarse_to_fine import (
    PyramidLevel,
    carry_unchanged,
    carry_upsampled,
    coarse_to_fine,
    schedule,
)
from gradcv.optim.optimizers import (
    SCHEDULES,
    UNROLLED,
    UnrolledOptimizer,
    make_optimizer,
    resolve_optimizer,
    scheduled_learning_rate,
    set_learning_rate,
)
from gradcv.optim.progress import ProgressCallback
from gradcv.optim.result import SolverResult, SolverStatus, pad_history, sample_status
from gradcv.optim.stopping import PerSampleStopping, StoppingCriteria, keep_stopped, relative_change
from gradcv.optim.working_set import WorkingSet

__all__ = [
    "SCHEDULES",
    "UNROLLED",
    "PerSampleStopping",
    "ProgressCallback",
    "PyramidLevel",
    "SolverResult",
    "SolverStatus",
    "StoppingCriteria",
    "UnrolledOptimizer",
    "WorkingSet",
    "carry_unchanged",
    "carry_upsampled",
    "coarse_to_fine",
    "keep_stopped",
    "make_optimizer",
    "pad_history",
    "relative_change",
    "resolve_optimizer",
    "sample_status",
    "schedule",
    "scheduled_learning_rate",
    "set_learning_rate",
]
