"""Distributed data parallel under torchrun: process-group set-up, the shard of each batch, reductions.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them everything here is a no-op for a single
process. The backend is NCCL when training on CUDA and gloo on the CPU. Every process holds the whole (in-memory)
data set and draws the same permutation each epoch; process ``r`` of ``N`` trains on the ``r``-th slice of every
global batch, and DDP averages the gradients, so the update equals a one-process step on the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import TrainError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process prints and writes the run folder."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all processes, in place; returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (on every process)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def shard(self, start: int, stop: int) -> tuple[int, int]:
        """This process's contiguous part of ``range(start, stop)`` (sizes differ by at most one)."""
        count = stop - start
        base, extra = divmod(count, self.world_size)
        lo = start + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)


def env_context() -> DistContext:
    """The job layout torchrun put in the environment (without initializing anything)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise TrainError(f"bad torchrun environment: {error}") from None
    return DistContext(world, rank, local)


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by torchrun with more than one process.

    ``device`` is the requested ``--device`` (``auto``, ``cpu``, ``cuda``...): NCCL for CUDA, gloo otherwise."""
    ctx = env_context()
    if not ctx.distributed or dist.is_initialized():
        return ctx
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise TrainError("--device cuda was requested but CUDA is not available")
        torch.cuda.set_device(ctx.local_rank)
    backend = "nccl" if use_cuda else "gloo"
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as error:
        raise TrainError(f"cannot join the torchrun process group ({backend}): {error}") from None
    return ctx


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
