"""Per-epoch metric records: ``metrics.jsonl``, ``metrics.csv`` and a PNG of the curves.

The checkpoint holds the full history, so these files are rewritten from it after every epoch (atomically): after
a crash and ``--resume`` they always agree with ``last.pt``."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from .checkpoint import atomic_write

FIELDS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "images_per_s",
    "time_s",
)
OPTIONAL_FIELDS = ("val_acc_ema",)
"""Columns present only in runs that have them (``--ema``)."""


def fields_of(history: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    extra = tuple(k for k in OPTIONAL_FIELDS if any(r.get(k) is not None for r in history))
    return FIELDS + extra


def to_jsonl(history: Sequence[dict[str, Any]]) -> str:
    fields = fields_of(history)
    return "".join(json.dumps({k: record.get(k) for k in fields}) + "\n" for record in history)


def to_csv(history: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    fields = fields_of(history)
    writer.writerow(fields)
    for record in history:
        writer.writerow(["" if record.get(k) is None else record[k] for k in fields])
    return buffer.getvalue()


def write_metrics(history: Sequence[dict[str, Any]], folder: str | os.PathLike[str]) -> None:
    atomic_write(os.path.join(folder, "metrics.jsonl"), to_jsonl(history))
    atomic_write(os.path.join(folder, "metrics.csv"), to_csv(history))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_curves(history: Sequence[dict[str, Any]], title: str = "", label_smoothing: float = 0.0) -> bytes:
    """Loss and accuracy per epoch (train and validation) as PNG bytes. With label smoothing the training loss
    includes it (the validation loss does not), which the legend says."""
    # A bare Figure renders with the Agg canvas and leaves pyplot's global backend alone (no display needed,
    # and a notebook that imported this keeps its own backend).
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]

    def series(key: str) -> list[float]:
        return [math.nan if r.get(key) is None else float(r[key]) for r in history]

    figure = Figure(figsize=(10, 4), dpi=100)
    left, right = figure.subplots(1, 2)
    smoothed = f" (label smoothing {label_smoothing:g})" if label_smoothing else ""
    left.plot(epochs, series("train_loss"), marker="o", label="train" + smoothed)
    left.plot(epochs, series("val_loss"), marker="o", label="val")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.set_title("loss")
    left.legend()
    right.plot(epochs, [100 * v for v in series("train_acc")], marker="o", label="train")
    right.plot(epochs, [100 * v for v in series("val_acc")], marker="o", label="val")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (%)")
    right.set_title("accuracy")
    right.legend()
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
