"""The worker of ``test_parallel.py``'s two-process runs (a module of its own, so that the
spawned processes import only this)."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
from torch import nn

from gradcv.core_ops.color import RgbToGrayscale
from gradcv.core_ops.filters import Sobel


def batch() -> torch.Tensor:
    """The whole batch, identical in every process: 4 RGB 17 x 23 images."""
    return torch.rand(4, 3, 17, 23, generator=torch.Generator().manual_seed(0))


def trainable() -> nn.Module:
    """The Figure 2 listing in front of a layer with weights (DDP needs parameters)."""
    torch.manual_seed(0)
    return nn.Sequential(RgbToGrayscale(), Sobel(), nn.Conv2d(1, 2, 3))


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        shard = batch().chunk(world_size)[rank]
        # the listing as written, each process on its shard, gathered on every rank
        figure2 = nn.Sequential(RgbToGrayscale(), Sobel())
        parts = [torch.empty(0) for _ in range(world_size)]
        dist.all_gather_object(parts, figure2(shard))
        # and in front of a layer under DistributedDataParallel: one training step's gradient
        model = nn.parallel.DistributedDataParallel(trainable())
        out = model(shard)
        out.square().mean().backward()
        grads = [p.grad for p in model.module.parameters()]
        if rank == 0:
            torch.save({"figure2": torch.cat(parts), "out": out.detach(), "grads": grads}, f"{out_dir}/rank0.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
