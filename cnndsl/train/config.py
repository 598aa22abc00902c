"""The resolved training configuration: one flat dataclass, saved as ``config.json`` in the run folder and inside
every checkpoint (as plain types, so checkpoints load with ``weights_only=True``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "onecycle")
AMP_MODES = ("auto", "bf16", "fp16", "off")
AUGMENTATIONS = ("flip", "crop", "cutout")

# Per-optimizer learning rate when --lr is not given: sgd wants a larger step than the adaptive methods.
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}


@dataclass
class TrainConfig:
    """Everything that determines a training run. Field names match the ``cnndsl train`` flags."""

    spec: str = ""
    """Path of the spec file (informational; the run folder holds a copy)."""
    network: str | None = None
    data: str = "digits"
    """``digits``, an image folder (one subfolder per class) or an ``.npz`` file with ``x`` and ``y``."""
    val_split: float = 0.2
    bad_files: str = "skip"
    """What to do with unreadable images in a folder: ``skip`` (reported) or ``error``."""
    cache_dir: str | None = None
    epochs: int = 20
    batch_size: int = 32
    """Global batch: under torchrun each of N processes takes batch_size / N samples of every batch."""
    eval_batch_size: int = 0
    """0 means 4 x batch_size."""
    optimizer: str = "adamw"
    lr: float | None = None
    """None means the optimizer's default (:data:`DEFAULT_LR`)."""
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 0
    """Epochs between decays of the ``step`` schedule; 0 means a third of the run."""
    gamma: float = 0.1
    label_smoothing: float = 0.1
    clip_grad: float | None = None
    augment: list[str] = field(default_factory=lambda: ["crop"])
    """On-device augmentations in order: ``flip``, ``crop`` (shift by up to 1/16 of the size), ``crop:N`` (by up
    to N pixels), ``cutout``. An empty list (``--augment none``) trains on the images as they are."""
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    """CPU threads for torch. None: one thread for small models (see ``loop.SMALL_STEP_MACS``), else torch's
    default."""
    seed: int = 0
    deterministic: bool = False
    """Force deterministic kernels (set by an explicit ``--seed``); CPU runs are deterministic anyway."""
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    out: str = ""
    progress: bool | None = None
    """None: a progress bar when stderr is a terminal, one line per epoch otherwise."""

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data (lists, strings, numbers, None)."""
        data = dataclasses.asdict(self)
        data["lr"] = self.resolved_lr
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys (from a newer version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items() if k in names
        }
        return cls(**values)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.eval_batch_size < 0:
            raise ValueError(f"--eval-batch-size must be positive, got {self.eval_batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if not 0.0 <= self.val_split < 1.0:
            raise ValueError(f"--val-split must be in [0, 1), got {self.val_split}")
        if self.bad_files not in ("skip", "error"):
            raise ValueError(f"--bad-files must be skip or error, got {self.bad_files!r}")
        if self.resolved_lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.resolved_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay must not be negative, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"--clip-grad must be positive, got {self.clip_grad}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"--warmup-epochs must be between 0 and --epochs, got {self.warmup_epochs}")
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError("--nesterov applies to --optimizer sgd only")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        for item in self.augment:
            name, colon, value = item.partition(":")
            if name not in AUGMENTATIONS:
                raise ValueError(
                    f"unknown augmentation {item!r}; choose from {', '.join(AUGMENTATIONS)}, crop:N, none"
                )
            if colon and (name != "crop" or not value.isdigit() or int(value) < 1):
                raise ValueError(
                    f"bad augmentation {item!r}: only crop takes a size, as crop:N with N >= 1 pixels"
                )
