"""Working-set compaction: drop the samples that have stopped from the tensors a loop
works on, so that a batch costs what its moving samples cost."""

from __future__ import annotations

import torch


class WorkingSet:
    """The indices (into the full batch) of the samples a loop still works on.

    A loop keeps its per-sample tensors for the working set only; every few steps
    :meth:`keep` drops the stopped samples from the index (one look at the host: the
    number left decides the new sizes) and returns the positions with which the loop
    restricts its own tensors; :meth:`scatter` writes working-set values back into
    full-batch tensors. Both are out-of-place, hence differentiable.

    Args:
        batch: the full batch size.
        device: the device of the index.

    Example:
        >>> ws = WorkingSet(4, torch.device("cpu"))
        >>> keep = ws.keep(torch.tensor([True, False, True, False]))
        >>> values = torch.arange(4.0)[keep]
        >>> ws.index.tolist(), values.tolist()
        ([0, 2], [0.0, 2.0])
        >>> ws.scatter(torch.zeros(4), values + 10).tolist()
        [10.0, 0.0, 12.0, 0.0]
    """

    def __init__(self, batch: int, device: torch.device) -> None:
        self.index = torch.arange(batch, device=device)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def keep(self, active: torch.Tensor) -> torch.Tensor:
        """Drop the inactive samples from the index and return the positions kept
        (to restrict other working-set tensors with)."""
        keep = active.nonzero().squeeze(1)
        self.index = self.index[keep]
        return keep

    def scatter(self, full: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``full`` (a full-batch tensor) with its working-set rows replaced by ``values``."""
        return full.index_copy(0, self.index, values.to(full.dtype))

    def gather(self, full: torch.Tensor) -> torch.Tensor:
        """The working-set rows of the full-batch tensor ``full``."""
        return full[self.index]
