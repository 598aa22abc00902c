"""Optimizers and learning-rate schedules.

Schedules are per step (a ``LambdaLR`` over a pure function of the step number), so resuming restores them from
the step count alone and a warm-up can span a fraction of an epoch."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig

ONECYCLE_START = 1 / 25
"""One-cycle starts at lr/25 and ends at lr/25/1e4, as ``torch.optim.lr_scheduler.OneCycleLR`` by default."""
ONECYCLE_END = ONECYCLE_START / 1e4
ONECYCLE_RISE = 0.3


def build_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """sgd (momentum, nesterov), adam or adamw over ``params``.

    Weight decay applies to weights (tensors of two or more dimensions) only: biases and normalization scales
    are left alone, as in most modern recipes."""
    decay = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups = [g for g in ({"params": decay}, {"params": plain, "weight_decay": 0.0}) if g["params"]]
    lr = config.resolved_lr
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)


def _anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """The multiple of the base learning rate used at optimizer step ``step`` (0-based)."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "onecycle":
        # torch.optim.lr_scheduler.OneCycleLR's two cosine phases (warm-up length: --warmup-epochs or 30%).
        rise = (warmup if warmup > 0 else ONECYCLE_RISE * total) - 1
        if step <= rise:
            return _anneal(ONECYCLE_START, 1.0, step / rise if rise > 0 else 1.0)
        return _anneal(1.0, ONECYCLE_END, min(1.0, (step - rise) / max(1e-9, total - 1 - rise)))
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if config.schedule == "cosine":
        return (1 + math.cos(math.pi * t)) / 2
    if config.schedule == "step":
        every = config.step_size or max(1, config.epochs // 3)
        return float(config.gamma ** ((step // steps_per_epoch) // every))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, steps_per_epoch))
