"""Where training batches come from: one tensor on the device, or DataLoader workers reading a rows cache.

Both sources take the same plan, a list of index arrays (one per batch, positions into the training or
validation set, already sliced for this process) with a per-batch augmentation seed, and yield the batch's stored
pixels on the device with its labels. So the permutation, the batch boundaries and the per-image augmentation are
the same whichever path the data takes, and a streamed run and an in-memory run with the same seed see the same
batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .augment import SampleAugment
from .data import DataSet, RowsFile, StreamedSet
from .errors import TrainError

LOADER_TIMEOUT_S = 600
"""A worker that produces nothing for this long ends the run with an error instead of hanging it."""

Plan = Sequence[tuple[np.ndarray, int]]
"""(positions, augmentation seed) per batch."""


class InMemory:
    """A data split held as one tensor on the device; a batch is ``x[index]``."""

    streamed = False

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device) -> None:
        self.x = torch.from_numpy(x).to(device)  # (N, C, H, W) uint8 or float32
        self.y = torch.from_numpy(y).to(device)  # (N,) int64
        self.device = device

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self, plan: Plan, augment: SampleAugment | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not plan:
            return
        # Every index of the epoch goes to the device in one copy; a batch is then a slice of it.
        flat = torch.from_numpy(np.concatenate([positions for positions, _ in plan])).to(self.device)
        start = 0
        for positions, seed in plan:
            index = flat[start : start + len(positions)]
            start += len(positions)
            xb = self.x[index]
            if augment:
                xb = augment(xb, seed)
            yield xb, self.y[index]


class _RowsBatches(torch.utils.data.Dataset[Any]):
    """A map-style data set whose items are whole batches: ``(positions, seed)`` -> (uint8 images, labels).
    Reading and per-image augmentation run in the worker processes."""

    def __init__(self, rows: RowsFile, augment: SampleAugment | None) -> None:
        self.rows = rows
        self.augment = augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[np.ndarray, int]) -> tuple[torch.Tensor, torch.Tensor]:
        positions, seed = item
        images = torch.from_numpy(self.rows.read(positions))
        if self.augment:
            images = self.augment(images, seed)
        return images, torch.from_numpy(self.rows.labels[positions])


class Streamed:
    """A data split read from its rows cache by ``workers`` DataLoader processes, with pinned memory (on CUDA)
    and a few batches prefetched per worker. Memory holds only the batches in flight."""

    streamed = True

    def __init__(self, rows: RowsFile, device: torch.device, workers: int) -> None:
        self.rows = rows
        self.device = device
        self.workers = workers

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def y(self) -> torch.Tensor:
        return torch.from_numpy(self.rows.labels)

    def batches(
        self, plan: Plan, augment: SampleAugment | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            _RowsBatches(self.rows, augment),
            batch_size=None,  # every item is already a batch
            sampler=list(plan),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None,
            timeout=LOADER_TIMEOUT_S if self.workers else 0,
            # Its own generator: the loader draws a base seed per epoch, which must not come from torch's global
            # generator (dropout's), or a streamed run would drop other units than an in-memory one.
            generator=torch.Generator().manual_seed(0),
        )
        iterator = iter(loader)
        while True:
            try:
                xb, yb = next(iterator)
            except StopIteration:
                return
            except RuntimeError as error:
                # A worker killed (out of memory, a signal) or stuck: end the run with a clear error, never hang.
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise TrainError(
                    f"--workers {self.workers}: a data-loading worker process failed while streaming --data "
                    f"({first}); last.pt keeps the last completed epoch, continue with --resume"
                ) from None
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)


def open_sources(
    data: DataSet | StreamedSet, device: torch.device, workers: int
) -> tuple[InMemory | Streamed, InMemory | Streamed]:
    """The (train, val) batch sources of ``data``."""
    if isinstance(data, StreamedSet):
        return Streamed(data.train, device, workers), Streamed(data.val, device, workers)
    return InMemory(data.x_train, data.y_train, device), InMemory(data.x_val, data.y_val, device)
