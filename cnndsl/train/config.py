"""The resolved training configuration: one flat dataclass, saved as ``config.json`` in the run folder and inside
every checkpoint (as plain types, so checkpoints load with ``weights_only=True``).

The dataclass is the single source of the ``cnndsl train`` flags: each field's ``metadata`` holds its help text,
metavar, choices, argument type and group, and :mod:`cnndsl.cli.train` generates the parser from
:func:`cli_fields`. A field without ``help`` is not a flag (it is set from the positional spec or derived).

Nothing here imports torch: the CLI builds its parser from this module cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "onecycle")
AMP_MODES = ("auto", "bf16", "fp16", "off")
MONITORS = ("val_acc", "val_loss", "train_loss", "train_acc")
DEVICE_AUGMENTATIONS = ("flip", "crop", "cutout")
"""Batched on the device by :class:`cnndsl.train.augment.BatchPipeline`."""
SAMPLE_AUGMENTATIONS = ("rrc", "randaugment", "trivialaugment", "erasing")
"""Per image with ``torchvision.transforms.v2``: RandomResizedCrop, RandAugment, TrivialAugmentWide,
RandomErasing (``erasing:P`` sets its probability, default 0.25)."""
AUGMENTATIONS = DEVICE_AUGMENTATIONS + SAMPLE_AUGMENTATIONS

# Per-optimizer learning rate when --lr is not given: sgd wants a larger step than the adaptive methods.
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}


# ------------------------------------------------------------------------------------ argument types ---


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def name_list(text: str) -> list[str]:
    """``a,b,c`` -> [a, b, c]; ``none`` -> []."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    return [] if names == ["none"] else names


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``100000`` (bytes) -> bytes (binary units)."""
    found = _SIZE.match(text)
    if not found:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 4G, got {text!r}")
    power = " kmgt".index(found.group(2).lower() or " ")
    return int(float(found.group(1)) * 1024**power)


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"  # pragma: no cover - the loop always returns


def default_memory_budget() -> int:
    """A quarter of the machine's physical memory (8 GiB when it cannot be read): room for the model, the
    optimizer state and the other processes of the machine."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 32 * 1024**3
    return int(total // 4)


def _flag(
    help: str,
    *,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    type: Callable[[str], Any] | None = None,
    group: str = "optimization",
    resume: bool = False,
) -> dict[str, Any]:
    """Field metadata for a flag. ``resume``: the flag may change when resuming (else it is ignored then)."""
    return {
        "help": help,
        "metavar": metavar,
        "choices": choices,
        "type": type,
        "group": group,
        "resume": resume,
    }


@dataclass
class TrainConfig:
    """Everything that determines a training run. Field names match the ``cnndsl train`` flags."""

    spec: str = ""
    """Path of the spec file (informational; the run folder holds a copy)."""
    network: str | None = None
    recipe: str | None = field(
        default=None,
        metadata=_flag(
            "a preset of settings, which flags given with it override: cifar (He et al. 2016) or torchvision "
            "(torchvision's classification reference recipe); see docs/training.md",
            metavar="NAME",
            choices=("cifar", "torchvision"),
        ),
    )
    data: str = field(
        default="digits",
        metadata=_flag(
            "digits (scikit-learn's 8x8 digits, the default), an image folder (DIR/<class>/<images>, or DIR/train "
            "and DIR/val) or an .npz with x (NCHW, NHWC or NHW) and y",
            metavar="SOURCE",
            group="data",
            resume=True,
        ),
    )
    val_split: float = field(
        default=0.2,
        metadata=_flag(
            "fraction held out for validation when the data has no split of its own",
            metavar="F",
            type=number,
            group="data",
        ),
    )
    bad_files: str = field(
        default="skip",
        metadata=_flag(
            "unreadable images in a folder: skip them (listed in the log) or stop with an error",
            choices=("skip", "error"),
            group="data",
        ),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=_flag(
            "where decoded image folders are cached (default ~/.cache/cnndsl)",
            metavar="DIR",
            group="data",
            resume=True,
        ),
    )
    memory_budget: int | None = field(
        default=None,
        metadata=_flag(
            "decoded data larger than this is streamed from a uint8 cache file by DataLoader workers instead of "
            "held in memory, e.g. 512M, 4G (default: a quarter of the machine's RAM)",
            metavar="SIZE",
            type=parse_size,
            group="data",
            resume=True,
        ),
    )
    workers: int = field(
        default=2,
        metadata=_flag(
            "DataLoader worker processes when streaming (0: read in the training process)",
            metavar="N",
            type=non_negative_int,
            group="data",
            resume=True,
        ),
    )
    epochs: int = field(
        default=20, metadata=_flag("training epochs", metavar="N", type=positive_int, resume=True)
    )
    batch_size: int = field(
        default=32,
        metadata=_flag(
            "global batch size per forward pass, split over torchrun processes",
            metavar="B",
            type=positive_int,
        ),
    )
    """Global batch: under torchrun each of N processes takes batch_size / N samples of every batch."""
    accumulate: int = field(
        default=1,
        metadata=_flag(
            "gradient accumulation: one optimizer step per K batches (effective batch K x --batch-size)",
            metavar="K",
            type=positive_int,
        ),
    )
    eval_batch_size: int = field(
        default=0,
        metadata=_flag(
            "validation batch size (default 4 x --batch-size)", metavar="B", type=positive_int, resume=True
        ),
    )
    """0 means 4 x batch_size."""
    optimizer: str = field(default="adamw", metadata=_flag("optimizer", choices=OPTIMIZERS))
    lr: float | None = field(
        default=None,
        metadata=_flag("learning rate (default: sgd 0.05, adam/adamw 0.002)", metavar="LR", type=number),
    )
    """None means the optimizer's default (:data:`DEFAULT_LR`)."""
    momentum: float = field(default=0.9, metadata=_flag("sgd momentum", metavar="M", type=number))
    nesterov: bool = field(default=False, metadata=_flag("Nesterov momentum (sgd)"))
    weight_decay: float = field(
        default=5e-4,
        metadata=_flag("weight decay (weights only, not biases or norms)", metavar="WD", type=number),
    )
    schedule: str = field(
        default="cosine", metadata=_flag("learning-rate schedule, per step", choices=SCHEDULES)
    )
    warmup_epochs: float = field(
        default=0.0, metadata=_flag("linear warm-up (may be fractional)", metavar="E", type=number)
    )
    step_size: int = field(
        default=0,
        metadata=_flag("epochs between step decays (default a third of the run)", metavar="E", type=int),
    )
    """Epochs between decays of the ``step`` schedule; 0 means a third of the run."""
    gamma: float = field(default=0.1, metadata=_flag("step decay factor", metavar="G", type=number))
    label_smoothing: float = field(default=0.1, metadata=_flag("label smoothing", metavar="S", type=number))
    clip_grad: float | None = field(
        default=None, metadata=_flag("clip the global gradient norm", metavar="NORM", type=number)
    )
    augment: list[str] = field(
        default_factory=lambda: ["crop"],
        metadata=_flag(
            "augmentation, comma-separated: per image with torchvision.transforms.v2 first, rrc (RandomResizedCrop), "
            "randaugment, trivialaugment; then on the device flip, crop (shift by up to 1/16 of the size), "
            "crop:N (by up to N pixels), cutout; last erasing[:P] (v2.RandomErasing, per image); or none",
            metavar="LIST",
            type=name_list,
            group="recipe",
        ),
    )
    """Augmentations in order. An empty list (``--augment none``) trains on the images as they are."""
    mixup: float = field(
        default=0.0,
        metadata=_flag(
            "MixUp with Beta(A, A) mixing (torchvision.transforms.v2.MixUp); 0: off",
            metavar="A",
            type=number,
            group="recipe",
        ),
    )
    cutmix: float = field(
        default=0.0,
        metadata=_flag(
            "CutMix with Beta(A, A) areas (v2.CutMix; with --mixup, one of the two per batch); 0: off",
            metavar="A",
            type=number,
            group="recipe",
        ),
    )
    ema: float | None = field(
        default=None,
        metadata=_flag(
            "keep an exponential moving average of the weights with this decay (torch.optim.swa_utils), validate "
            "it and save it as best_ema.pt, e.g. 0.999",
            metavar="DECAY",
            type=number,
            group="recipe",
        ),
    )
    ema_steps: int = field(
        default=1,
        metadata=_flag(
            "update the average every N optimizer steps", metavar="N", type=positive_int, group="recipe"
        ),
    )
    monitor: str = field(
        default="val_acc",
        metadata=_flag(
            "the metric that picks best.pt and drives --early-stop", choices=MONITORS, group="recipe"
        ),
    )
    early_stop: int = field(
        default=0,
        metadata=_flag(
            "stop when --monitor has not improved for N epochs (0: never)",
            metavar="N",
            type=non_negative_int,
            group="recipe",
        ),
    )
    seed: int = field(
        default=0,
        metadata=_flag(
            "seed (default 0); given explicitly it also forces deterministic GPU kernels",
            metavar="N",
            type=int,
        ),
    )
    deterministic: bool = False
    """Force deterministic kernels (set by an explicit ``--seed``); CPU runs are deterministic anyway."""
    device: str = field(
        default="auto",
        metadata=_flag("auto, cpu, cuda or cuda:N", metavar="DEVICE", group="hardware", resume=True),
    )
    amp: str = field(
        default="auto",
        metadata=_flag("mixed precision (auto: bf16 on a GPU)", choices=AMP_MODES, group="hardware"),
    )
    channels_last: bool = field(
        default=False, metadata=_flag("NHWC memory format (faster convs on GPUs)", group="hardware")
    )
    compile: bool = field(
        default=False, metadata=_flag("torch.compile the model", group="hardware", resume=True)
    )
    threads: int | None = field(
        default=None,
        metadata=_flag(
            "CPU threads for torch (default: 1 for a small model, whose layers gain little from threads and lose "
            "much on a busy machine; else torch's default)",
            metavar="N",
            type=positive_int,
            group="hardware",
            resume=True,
        ),
    )
    """CPU threads for torch. None: one thread for small models (see ``loop.SMALL_STEP_MACS``), else torch's
    default."""
    init_from: str | None = field(
        default=None,
        metadata=_flag(
            "start from weights: a cnndsl checkpoint, a .safetensors file or a state_dict (torchvision)",
            metavar="FILE",
            group="transfer learning",
        ),
    )
    freeze: list[str] = field(
        default_factory=list,
        metadata=_flag(
            "freeze layers whose path matches the glob, e.g. 'Stage.0/*' or 'conv.*' (repeatable)",
            metavar="PATTERN",
            group="transfer learning",
        ),
    )
    out: str = field(
        default="", metadata=_flag("run folder (default runs/<spec name>)", metavar="DIR", group="run")
    )
    tensorboard: bool = field(
        default=False,
        metadata=_flag(
            "also log the metrics for TensorBoard, in RUN/tensorboard (needs tensorboard)", group="run"
        ),
    )
    progress: bool | None = field(
        default=None,
        metadata=_flag(
            "progress bar per epoch (default: when stderr is a terminal)", group="run", resume=True
        ),
    )
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
        if self.accumulate < 1:
            raise ValueError(f"--accumulate must be at least 1, got {self.accumulate}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"--ema must be a decay between 0 and 1 (such as 0.999), got {self.ema}")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must not be negative, got {getattr(self, name)}")
        if self.monitor not in MONITORS:
            raise ValueError(f"--monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ValueError(f"--memory-budget must be positive, got {self.memory_budget}")
        for item in self.augment:
            name, colon, value = item.partition(":")
            if name not in AUGMENTATIONS:
                raise ValueError(
                    f"--augment: unknown augmentation {item!r}; choose from {', '.join(AUGMENTATIONS)}, crop:N, "
                    "erasing:P, none"
                )
            if not colon:
                continue
            if name == "crop" and value.isdigit() and int(value) >= 1:
                continue
            if name == "erasing" and _probability(value):
                continue
            raise ValueError(
                f"--augment: bad augmentation {item!r}: only crop:N (N >= 1 pixels) and erasing:P (0 < P <= 1) "
                "take a value"
            )


def _probability(text: str) -> bool:
    try:
        return 0.0 < float(text) <= 1.0
    except ValueError:
        return False


@dataclass(frozen=True)
class Recipe:
    """A named preset of settings (``--recipe NAME``); flags given on the command line override it."""

    name: str
    values: dict[str, Any]
    source: str
    notes: str = ""


RECIPES = {
    "cifar": Recipe(
        "cifar",
        {
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "batch_size": 128,
            "epochs": 164,
            "schedule": "cosine",
            "augment": ["crop:4", "flip"],
            "label_smoothing": 0.0,
        },
        "He, Zhang, Ren, Sun, 'Deep Residual Learning for Image Recognition' (CVPR 2016), section 4.2: SGD 0.1, "
        "momentum 0.9, weight decay 1e-4, batch 128, 4-pixel pad-and-crop with flips, 64k iterations (164 epochs "
        "of 45k images)",
        "a cosine schedule replaces the paper's two divisions by 10 (at 32k and 48k iterations)",
    ),
    "torchvision": Recipe(
        "torchvision",
        {
            "optimizer": "sgd",
            "lr": 0.5,
            "momentum": 0.9,
            "weight_decay": 2e-5,
            "batch_size": 1024,
            "epochs": 600,
            "schedule": "cosine",
            "warmup_epochs": 5.0,
            "label_smoothing": 0.1,
            "augment": ["rrc", "flip", "trivialaugment", "erasing:0.1"],
            "mixup": 0.2,
            "cutmix": 1.0,
            "ema": 0.99998,
            "ema_steps": 32,
        },
        "torchvision's classification reference (github.com/pytorch/vision, references/classification, README, "
        "ResNet-50 IMAGENET1K_V2): --batch-size 128 on 8 GPUs, --lr 0.5, --lr-scheduler cosineannealinglr "
        "--lr-warmup-epochs 5 --lr-warmup-method linear, --auto-augment ta_wide, --epochs 600, --random-erase 0.1, "
        "--weight-decay 0.00002 --norm-weight-decay 0.0, --label-smoothing 0.1, --mixup-alpha 0.2 "
        "--cutmix-alpha 1.0, --train-crop-size 176, --model-ema (decay 0.99998 every 32 steps), "
        "--val-resize-size 232, --ra-sampler --ra-reps 4",
        "not reproduced: the 176-pixel training crop and 232-pixel validation resize (the spec fixes one input "
        "size), the repeated-augmentation sampler, and the EMA decay's adjustment by batch size and epochs",
    ),
}


def cli_fields() -> list[dataclasses.Field[Any]]:
    """The fields that are ``cnndsl train`` flags, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("help")]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply_recipe(config: TrainConfig, name: str, keep: set[str]) -> TrainConfig:
    """``config`` with recipe ``name``'s values, except for the fields in ``keep`` (given explicitly)."""
    recipe = RECIPES.get(name)
    if recipe is None:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    values = {k: (list(v) if isinstance(v, list) else v) for k, v in recipe.values.items() if k not in keep}
    return dataclasses.replace(config, recipe=name, **values)  # type: ignore[arg-type]
