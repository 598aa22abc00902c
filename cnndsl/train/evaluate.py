"""Evaluation (loss, accuracy, confusion matrix) and top-k prediction, shared by the training loop and the
``eval`` / ``predict`` commands."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .ddp import DistContext


@dataclass
class EvalResult:
    """Totals over a data set (all processes together under torchrun)."""

    loss: float
    accuracy: float
    count: int
    confusion: list[list[int]] | None = None
    """``confusion[true][predicted]`` counts, when asked for."""

    def per_class_accuracy(self) -> list[float | None]:
        if self.confusion is None:
            return []
        out: list[float | None] = []
        for i, row in enumerate(self.confusion):
            total = sum(row)
            out.append(row[i] / total if total else None)
        return out


@torch.no_grad()
def evaluate_tensors(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    prepare: Callable[[torch.Tensor, bool], torch.Tensor],
    *,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ctx: DistContext | None = None,
    num_classes: int | None = None,
) -> EvalResult:
    """Mean cross-entropy (no label smoothing) and accuracy of ``model`` on device tensors ``x``, ``y``.

    Under torchrun each process evaluates its contiguous shard and the sums are reduced. With ``num_classes``
    the confusion matrix is computed too (on the device, one ``bincount`` per batch)."""
    ctx = ctx or DistContext()
    lo, hi = ctx.shard(0, len(y))
    batches = (
        (x[start : min(start + batch_size, hi)], y[start : min(start + batch_size, hi)])
        for start in range(lo, hi, batch_size)
    )
    return evaluate_batches(
        model, batches, prepare, device=y.device, autocast=autocast, ctx=ctx, num_classes=num_classes
    )


@torch.no_grad()
def evaluate_batches(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[torch.Tensor, bool], torch.Tensor],
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ctx: DistContext | None = None,
    num_classes: int | None = None,
) -> EvalResult:
    """:func:`evaluate_tensors` over (stored images, labels) batches on ``device`` (this process's shard), from
    any source: a tensor in memory or a streaming loader."""
    ctx = ctx or DistContext()
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    confusion = (
        torch.zeros(num_classes * num_classes, dtype=torch.long, device=device) if num_classes else None
    )
    for xb_raw, yb in batches:
        xb = prepare(xb_raw, False)
        with autocast():
            logits = model(xb)
        logits = logits.float()
        totals[0] += F.cross_entropy(logits, yb, reduction="sum").double()
        predicted = logits.argmax(dim=1)
        totals[1] += (predicted == yb).sum()
        totals[2] += len(yb)
        if confusion is not None and num_classes:
            confusion += torch.bincount(yb * num_classes + predicted, minlength=num_classes * num_classes)
    ctx.all_reduce_sum(totals)
    if confusion is not None:
        ctx.all_reduce_sum(confusion)
    model.train(was_training)
    loss_sum, correct, count = totals.tolist()
    matrix = None
    if confusion is not None and num_classes:
        matrix = confusion.view(num_classes, num_classes).tolist()
    return EvalResult(
        loss=loss_sum / count if count else float("nan"),
        accuracy=correct / count if count else float("nan"),
        count=int(count),
        confusion=matrix,
    )


def format_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """A text confusion matrix: rows are true classes, columns predicted ones, with per-class accuracy."""
    names = [str(c) for c in classes]
    width = max([len(str(v)) for row in confusion for v in row] + [len(n) for n in names] + [3])
    label_width = max([len(n) for n in names] + [len("true\\pred")])
    lines = ["true\\pred".ljust(label_width) + "  " + " ".join(n.rjust(width) for n in names) + "   acc"]
    for i, row in enumerate(confusion):
        total = sum(row)
        acc = f"{100 * row[i] / total:5.1f}%" if total else "    -"
        cells = " ".join(str(v).rjust(width) for v in row)
        lines.append(names[i].ljust(label_width) + "  " + cells + "  " + acc)
    return "\n".join(lines)


@torch.no_grad()
def top_k(
    model: torch.nn.Module, batch: torch.Tensor, k: int, classes: Sequence[str]
) -> list[list[tuple[str, float]]]:
    """For each image, its ``k`` most probable classes with softmax probabilities, most probable first."""
    model.eval()
    probabilities = torch.softmax(model(batch).float(), dim=1)
    k = min(k, probabilities.shape[1])
    values, indices = probabilities.topk(k, dim=1)
    return [
        [
            (classes[int(i)] if int(i) < len(classes) else str(int(i)), float(v))
            for v, i in zip(vs, ids, strict=True)
        ]
        for vs, ids in zip(values.tolist(), indices.tolist(), strict=True)
    ]
