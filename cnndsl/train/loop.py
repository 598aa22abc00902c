"""The training loop: set-up in small functions, one function per epoch phase, checkpoints and the run folder.

Shapes in comments: N images in the training set, B the global batch of one forward pass, b = B / processes the
batch of this process, A batches accumulated per optimizer step, K classes. A data set that fits the memory
budget is one tensor on the device and a batch is ``x[perm[i:i+b]]``, so the hot loop has no per-sample Python
and no host-device copies besides the per-epoch permutation; a larger one streams from DataLoader workers
(:mod:`cnndsl.train.source`). Both follow the same plan of batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..network import Network
from . import checkpoint as ckpt_io
from . import metrics
from .augment import (
    BatchPipeline,
    LabelMixer,
    SampleAugment,
    batch_seed,
    channel_stats,
    stats_chunk,
    stats_of_chunks,
)
from .config import TrainConfig
from .data import DataSet, StreamedSet, load_data
from .ddp import DistContext
from .errors import NonFiniteLoss, TrainError
from .evaluate import EvalResult, evaluate_batches
from .model import ModelInfo, build_model, classifier_node, frozen_norm_layers
from .optim import build_optimizer, build_scheduler
from .runfolder import classifier_spec_files
from .source import Plan, open_sources

# Files of a run folder that a fresh run replaces (a new run must never resume or report an old one's state).
RUN_FILES = (
    "last.pt",
    "best.pt",
    "best_ema.pt",
    "metrics.jsonl",
    "metrics.csv",
    "curves.png",
    "config.json",
    "summary.txt",
)
STREAM_STATS_CHUNK = 32
"""Images read at a time for the normalization statistics of a streamed data set: a few MiB of float64, which
glibc reuses; chunks of tens of MiB would each grow its heap (its mmap threshold adapts upwards), and peak memory
with the data set."""
HIGHER_IS_BETTER = {"val_acc": True, "train_acc": True, "val_loss": False, "train_loss": False}


def warnings_block(warnings: list[str]) -> str:
    """The run's warnings again, together, so they do not scroll away above a long log ("" without any)."""
    if not warnings:
        return ""
    lines = [f"warnings ({len(warnings)}):"] + [f"  - {w}".replace("\n", "\n    ") for w in warnings]
    return "\n".join(lines)


@dataclass
class RunResult:
    """The outcome of :func:`train`."""

    out: Path
    history: list[dict[str, Any]]
    best_val_acc: float | None
    best_epoch: int | None
    epochs_done: int
    resumed_from: int | None = None
    warnings: list[str] = field(default_factory=list)
    """Everything the run warned about, in order: repeated in one block at its end."""
    stopped_early: str | None = None
    """Why early stopping ended the run, if it did."""

    def warnings_block(self) -> str:
        return warnings_block(self.warnings)

    def final_line(self) -> str:
        where = f"run folder {self.out}"
        if self.best_val_acc is None:
            last = self.history[-1] if self.history else {}
            acc = last.get("train_acc")
            shown = "n/a" if acc is None else f"{100 * acc:.2f}%"
            return (
                f"done: {self.epochs_done} epochs, no validation set, final train accuracy {shown}; {where}"
            )
        return (
            f"done: best val accuracy {100 * self.best_val_acc:.2f}% (epoch {self.best_epoch} of "
            f"{self.epochs_done}); {where}"
        )


@dataclass
class Extras:
    """Run-folder content prepared by the caller (the CLI) from the static path."""

    spec_files: dict[str, str] = field(default_factory=dict)
    """Relative name in the run folder -> text (the spec and the files it imports)."""
    summary: str | None = None
    diagram_dot: str | None = None


def resolve_device(requested: str, ctx: DistContext) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun on CUDA, the GPU of this local rank."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"--device {requested}: CUDA is not available (torch {torch.__version__})")
        if ctx.distributed:
            return torch.device("cuda", ctx.local_rank)
        return torch.device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    raise TrainError(f"--device {requested}: expected auto, cpu, cuda or cuda:N")


SMALL_STEP_MACS = 1e9
"""Below this many multiply-accumulates per training step (forward and backward, whole batch), ``--threads`` defaults
to 1: on such small layers extra CPU threads save little on an idle machine and cost several times the run time on
a busy one, where every op waits for a descheduled helper thread."""


def step_macs(network: Network, batch: int) -> int:
    """Multiply-accumulates of one training step: forward MACs x batch x 3 (backward costs about twice forward)."""
    from .. import ops

    per_sample = sum(
        ops.REGISTRY[n.op].costs(list(n.input_shapes), n.shape, n.args).macs for n in network.layers
    )
    return 3 * batch * per_sample


def choose_threads(
    config: TrainConfig, network: Network, device: torch.device, ctx: DistContext
) -> str | None:
    """Apply ``--threads``; without it, use one thread for a small model on the CPU. Returns a log note."""
    if config.threads:
        torch.set_num_threads(config.threads)
        return None
    if device.type != "cpu" or ctx.distributed:  # torchrun gives each process one thread already
        return None
    macs = step_macs(network, config.batch_size)
    if macs < SMALL_STEP_MACS and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
        return (
            f"using 1 CPU thread: a training step is small ({macs / 1e6:,.0f} M MACs); --threads N to change"
        )
    return None


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision. ``auto`` is bf16 on a GPU that supports it, else off."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if mode == "bf16":
        return torch.bfloat16
    return torch.float16


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this set before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for the layers autocast leaves in fp32


class Trainer:
    """One training run. :meth:`run` trains; the constructor reads top to bottom as the set-up steps."""

    def __init__(
        self,
        config: TrainConfig,
        network: Network,
        *,
        ctx: DistContext | None = None,
        resume: bool = False,
        resume_state: dict[str, Any] | None = None,
        extras: Extras | None = None,
        log: Callable[[str], None] = print,
        data: DataSet | StreamedSet | None = None,
        module: torch.nn.Module | None = None,
    ) -> None:
        """Set up everything; :meth:`run` trains. ``resume_state`` is ``last.pt`` already read by the caller (read
        here when ``resume`` is set without it). ``data`` replaces loading ``config.data`` (tests, benchmarks);
        ``module`` trains a ready module instead of the spec's (a benchmark runs a hand-written model through this
        same loop)."""
        try:
            config.validate()
        except ValueError as error:
            raise TrainError(str(error)) from None
        self.config, self.network = config, network
        self.ctx = ctx or DistContext()
        self.extras = extras or Extras()
        self.log = log if self.ctx.is_main else (lambda _line: None)
        self.warnings: list[str] = []
        self.out = Path(config.out or os.path.join("runs", network.name.lower()))
        self.device = resolve_device(config.device, self.ctx)
        threads_note = choose_threads(config, network, self.device, self.ctx)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        seed_everything(config.seed, config.deterministic, self.device)
        self.resume_state = (
            resume_state if resume_state is not None else (self._read_resume() if resume else None)
        )

        self.data = data if data is not None else self._load_data_main_first()
        self._report_data(threads_note)
        self.model, self.model_info = self._build_model(module)
        self._match_spec_to_classifier()
        self.train_source, self.val_source = open_sources(self.data, self.device, config.workers)
        self.mean, self.std = self._normalization()
        self._plan_batches()
        self.params = self._trainable_parameters()
        self.optimizer = build_optimizer(self.params, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self._build_pipeline()
        self.ema = self._build_ema()
        self.train_model = self._wrap_model()

        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0
        self.best: dict[str, Any] = {"val_acc": None, "epoch": None, "value": None}
        self.best_ema: dict[str, Any] = {"val_acc": None, "epoch": None}
        self.stale_epochs = 0  # epochs since --monitor last improved (early stopping)
        self.resumed_from: int | None = None
        if self.resume_state is not None:
            self._restore(self.resume_state)
        self.log(self._describe_setup())

    # ------------------------------------------------------------------------------------------ set-up ---

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(f"warning: {message}")

    def _load_data(self) -> DataSet | StreamedSet:
        shape = self.network.inputs[0].shape
        return load_data(
            self.config.data,
            shape,
            val_split=self.config.val_split,
            bad_files=self.config.bad_files,
            cache_dir=self.config.cache_dir,
            memory_budget=self.config.memory_budget,
        )

    def _load_data_main_first(self) -> DataSet | StreamedSet:
        """The main process loads first, so that it alone decodes an image folder and fills the cache."""
        data: DataSet | StreamedSet | None = None
        failure: TrainError | None = None
        if self.ctx.is_main:
            try:
                data = self._load_data()
            except TrainError as error:
                failure = error  # raised after the barrier, which the other processes wait at
        self.ctx.barrier()
        if failure is not None:
            raise failure
        return data if data is not None else self._load_data()

    def _report_data(self, threads_note: str | None) -> None:
        self.log(self.data.describe())
        if threads_note:
            self.log(threads_note)
        for note in self.data.notes:
            self.log(note)
        for warning in self.data.warnings:
            self._warn(warning)
        if self.resume_state is not None and list(self.resume_state.get("classes", [])) != list(
            self.data.classes
        ):
            raise TrainError(
                f"--resume with --data {self.config.data}: its classes differ from those of the run"
            )

    def _build_model(self, module: torch.nn.Module | None) -> tuple[torch.nn.Module, ModelInfo]:
        """The spec's module (or ``module``), seeded so every process (and every resumed run) starts from the
        same weights, on the device."""
        torch.manual_seed(self.config.seed)
        if module is not None:
            model, info = module, ModelInfo(num_classes=self.data.num_classes)
        else:
            model, info = build_model(
                self.network,
                self.data.num_classes,
                init_from=None if self.resume_state is not None else self.config.init_from,
                freeze_patterns=self.config.freeze,
            )
        for note in info.notes:
            self.log(note)
        model.to(self.device)
        if self.config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.frozen_norms = frozen_norm_layers(model, self.network, info.frozen) if module is None else []
        return model, info

    def _match_spec_to_classifier(self) -> None:
        """A replaced classifier is written into the run folder's copy of the spec: the run's spec and weights
        must agree, or nothing downstream could load them."""
        node = classifier_node(self.network)
        count = self.data.num_classes
        if node is None or node.args.get("features") == count or not self.extras.spec_files:
            return
        try:
            files, note = classifier_spec_files(self.network, self.extras.spec_files, node, count)
        except TrainError as error:
            self._warn(f"{error}; the run folder's spec still says {node.args.get('features')} classes")
            return
        self.extras.spec_files.clear()
        self.extras.spec_files.update(files)
        self.log(note)

    def _normalization(self) -> tuple[list[float], list[float]]:
        """Per-channel statistics of the training images (the saved ones when resuming)."""
        if self.resume_state is not None:
            norm = self.resume_state["normalize"]
            return list(norm["mean"]), list(norm["std"])
        if isinstance(self.data, StreamedSet):
            # Small chunks keep memory flat; the sums of uint8 pixels and their squares are exact in float64, so
            # they equal the in-memory path's whatever the chunking.
            rows = self.data.train
            chunk = min(STREAM_STATS_CHUNK, stats_chunk(int(math.prod(rows.shape))))
            return stats_of_chunks((torch.from_numpy(c) for c in rows.chunks(chunk)), rows.shape[0])
        return channel_stats(torch.from_numpy(self.data.x_train))

    def _plan_batches(self) -> None:
        """B global, b per process, A per step. The last partial batch of an epoch is dropped (it would make one
        noisy, differently sized step and break the equality of 1 and N processes)."""
        n = len(self.data.y_train)
        if n == 0:
            raise TrainError(f"--data {self.data.name}: the training set is empty")
        world, batch, accumulate = self.ctx.world_size, self.config.batch_size, self.config.accumulate
        if batch * accumulate > n:
            batch = max(world, n // accumulate - (n // accumulate) % world)
            times = f" x --accumulate {accumulate}" if accumulate > 1 else ""
            self._warn(
                f"--batch-size {self.config.batch_size}{times} is more than the {n} training images; using {batch}"
            )
        if batch % world:
            raise TrainError(f"--batch-size {batch} must be divisible by the {world} processes")
        self.global_batch = batch
        self.local_batch = batch // world
        self.steps_per_epoch = n // (batch * accumulate)
        self.eval_batch = self.config.eval_batch_size or 4 * batch

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainError("--freeze: every layer is frozen, nothing to train")
        return params

    def _build_pipeline(self) -> None:
        """Randomness besides torch's global generator (dropout): the permutation (on the CPU, identical in every
        process), on-device augmentation (one stream per process) and per-batch seeds for the v2 augmentations."""
        config = self.config
        self.data_generator = torch.Generator().manual_seed(config.seed)
        self.augment_generator = torch.Generator(self.device).manual_seed(config.seed + 1 + self.ctx.rank)
        torch.manual_seed(config.seed + 7919 * self.ctx.rank)
        self.pipeline = BatchPipeline(
            self.mean,
            self.std,
            config.augment,
            device=self.device,
            channels_last=config.channels_last,
            generator=self.augment_generator,
        )
        _, h, w = self.network.inputs[0].shape
        self.sample_augment = SampleAugment(config.augment, (int(h), int(w)), float(self.data.pixel_max))
        self.mixer = LabelMixer(config.mixup, config.cutmix, self.data.num_classes)

    def _build_ema(self) -> torch.optim.swa_utils.AveragedModel | None:
        if self.config.ema is None:
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # use_buffers: batch-norm statistics are averaged too, so the average is a usable model by itself.
        return AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.config.ema), use_buffers=True)

    def _wrap_model(self) -> torch.nn.Module:
        model: torch.nn.Module = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # A conv with one input channel gets gradients whose strides torch reads as channels-last (size-1
            # dimension): DDP warns once and copies that small tensor. Harmless; keep the log clean.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            # Gradients as views into the all-reduce buckets: no copy, less memory.
            model = DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)
        if self.config.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        return model

    def _read_resume(self) -> dict[str, Any]:
        path = self.out / "last.pt"
        if not path.is_file():
            raise TrainError(f"--resume: {path} does not exist (start without --resume)")
        state = ckpt_io.load_checkpoint(path)
        if not ckpt_io.is_cnndsl_checkpoint(state):
            raise TrainError(f"--resume: {path} is not a cnndsl checkpoint")
        return dict(state)

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("network") != self.network.name:
            raise TrainError(
                f"--resume: {self.out / 'last.pt'} is a run of network {state.get('network')}, not "
                f"{self.network.name}"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None and state.get("ema"):
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0]
            raise TrainError(
                f"--resume: {self.out / 'last.pt'} does not fit this spec and setup: {first}"
            ) from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        states = state.get("rng") or []
        if len(states) != self.ctx.world_size:
            self._warn(
                f"resuming with {self.ctx.world_size} processes, saved with {len(states)}: random streams of the "
                "extra processes restart from the main one's"
            )
        if states:
            self._set_rng(states[self.ctx.rank] if self.ctx.rank < len(states) else states[0])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.best = {"value": None, **dict(state["best"])}
        self.best_ema = dict(state.get("best_ema") or self.best_ema)
        self.stale_epochs = int(state.get("stale_epochs", 0))
        self.resumed_from = self.epoch

    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "data": self.data_generator.get_state(),
            "augment": self.augment_generator.get_state(),
            "device": self.device.type,
        }

    def _set_rng(self, saved: dict[str, Any]) -> None:
        torch.set_rng_state(saved["torch"])
        self.data_generator.set_state(saved["data"])
        if saved.get("device") == self.device.type:
            self.augment_generator.set_state(saved["augment"])
            if saved.get("cuda") is not None:
                torch.cuda.set_rng_state(saved["cuda"], self.device)
        else:
            self._warn(
                f"resuming on {self.device.type} a run saved on {saved.get('device')}: augmentation reseeded"
            )

    def _describe_setup(self) -> str:
        trainable = sum(p.numel() for p in self.params)
        total = sum(p.numel() for p in self.model.parameters())
        amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        extra = []
        if self.config.channels_last:
            extra.append("channels_last")
        if self.config.compile:
            extra.append("compiled")
        if self.ctx.distributed:
            extra.append(f"DDP x{self.ctx.world_size} ({'nccl' if self.device.type == 'cuda' else 'gloo'})")
        threads = torch.get_num_threads()
        where = str(self.device)
        if self.device.type == "cpu":
            where += f", {threads} thread{'s' if threads > 1 else ''}"
        frozen = f" ({total - trainable:,} frozen)" if total != trainable else ""
        aug = ",".join(self.config.augment) or "none"
        recipe = []
        if self.config.accumulate > 1:
            recipe.append(f"accumulating {self.config.accumulate} batches per step")
        if self.config.mixup or self.config.cutmix:
            recipe.append(f"mixup {self.config.mixup:g} / cutmix {self.config.cutmix:g}")
        if self.ema is not None:
            recipe.append(f"EMA decay {self.config.ema:g} every {self.config.ema_steps} steps")
        if self.config.early_stop:
            recipe.append(
                f"early stop after {self.config.early_stop} epochs without better {self.config.monitor}"
            )
        if self.config.recipe:
            recipe.append(f"recipe {self.config.recipe}")
        return (
            f"training {self.network.name}: {trainable:,} trainable parameters{frozen}; device {where}; amp {amp}"
            f"{'; ' + ', '.join(extra) if extra else ''}\n"
            f"{self.config.optimizer} lr {self.config.resolved_lr:g}, {self.config.schedule} schedule, "
            f"batch {self.global_batch} ({self.steps_per_epoch} steps/epoch), {self.config.epochs} epochs, "
            f"augment {aug}, seed {self.config.seed}" + (f"\n{'; '.join(recipe)}" if recipe else "")
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------------------------- run folder ---

    def resolved_config(self) -> dict[str, Any]:
        data = self.config.to_dict()
        data["out"] = str(self.out)
        data["resolved"] = {
            "device": str(self.device),
            "amp": {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype],
            "world_size": self.ctx.world_size,
            "global_batch": self.global_batch,
            "batch_per_process": self.local_batch,
            "accumulate": self.config.accumulate,
            "steps_per_epoch": self.steps_per_epoch,
            "eval_batch_size": self.eval_batch,
            "data_path": "streamed" if self.data.streamed else "in memory",
            "network": self.network.name,
            "input_shape": list(self.network.inputs[0].shape),
            "classes": list(self.data.classes),
            "train_images": len(self.data.y_train),
            "val_images": len(self.data.y_val),
            "normalize": {"mean": self.mean, "std": self.std},
            "pixel_max": float(self.data.pixel_max),
            "frozen_layers": list(self.model_info.frozen),
            "cnndsl": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        return data

    def _prepare_folder(self) -> None:
        if not self.ctx.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # temporary files of writes a killed process never finished
            for temp in self.out.glob(f".{name}.*.tmp"):
                temp.unlink(missing_ok=True)
        if self.resume_state is None:
            stale = [name for name in RUN_FILES if (self.out / name).exists()]
            if stale:
                self.log(f"starting a new run in {self.out}, replacing the previous run's files there")
                for name in stale:
                    (self.out / name).unlink()
        ckpt_io.atomic_write(self.out / "config.json", json.dumps(self.resolved_config(), indent=2) + "\n")
        for name, text in self.extras.spec_files.items():
            ckpt_io.atomic_write(self.out / name, text)
        if self.extras.summary is not None:
            ckpt_io.atomic_write(self.out / "summary.txt", self.extras.summary)
        if self.extras.diagram_dot is not None:
            ckpt_io.atomic_write(self.out / "model.dot", self.extras.diagram_dot)

    def _checkpoint_state(
        self, rng: list[dict[str, Any]], model: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "network": self.network.name,
            "input_shape": list(self.network.inputs[0].shape),
            "classes": list(self.data.classes),
            "normalize": {"mean": list(self.mean), "std": list(self.std)},
            "pixel_max": float(self.data.pixel_max),
            "model": model if model is not None else self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "epoch": self.epoch,
            "step": self.step,
            "best": dict(self.best),
            "best_ema": dict(self.best_ema),
            "stale_epochs": self.stale_epochs,
            "history": list(self.history),
            "config": self.config.to_dict() | {"lr": self.config.lr},
            "spec_text": next(iter(self.extras.spec_files.values()), ""),
        }

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the model's own keys (``AveragedModel`` prefixes them with ``module.``)."""
        assert self.ema is not None
        return dict(self.ema.module.state_dict())

    def _save(self, improved: bool, ema_improved: bool = False) -> None:
        rng = self.ctx.gather(self._rng_state())  # a collective: every process takes part
        if not self.ctx.is_main:
            return
        state = self._checkpoint_state(rng)
        paths = [self.out / "best.pt"] if improved else []
        ckpt_io.save_checkpoint(state, [*paths, self.out / "last.pt"])
        if ema_improved:
            # A deployable checkpoint of the averaged weights: eval/predict/export RUN --weights best_ema.pt.
            ema_state = self._checkpoint_state(rng, model=self.ema_state_dict())
            ckpt_io.save_checkpoint(ema_state, [self.out / "best_ema.pt"])
        metrics.write_metrics(self.history, self.out)

    def _write_curves(self) -> None:
        if self.ctx.is_main and self.history:
            title = f"{self.network.name} on {self.data.name}"
            png = metrics.plot_curves(self.history, title, self.config.label_smoothing)
            ckpt_io.atomic_write(self.out / "curves.png", png)

    # ------------------------------------------------------------------------------------------ epochs ---

    def _progress(self, epoch: int) -> Any:
        from tqdm import tqdm

        show = self.config.progress if self.config.progress is not None else sys.stderr.isatty()
        return tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}/{self.config.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not (show and self.ctx.is_main),
            file=sys.stderr,
        )

    def epoch_plan(self, epoch: int) -> Plan:
        """This process's batches of one epoch: positions into the training set and a per-batch seed. Draws the
        epoch's permutation from the data generator (the same in every process)."""
        n, big, small = len(self.data.y_train), self.global_batch, self.local_batch
        lo = self.ctx.rank * small  # this process's slice of each global batch
        perm = torch.randperm(n, generator=self.data_generator).numpy()  # (N,), same in every process
        batches = self.steps_per_epoch * self.config.accumulate
        return [
            (perm[i * big + lo : i * big + lo + small], batch_seed(self.config.seed, epoch, i, self.ctx.rank))
            for i in range(batches)
        ]

    def train_epoch(self, epoch: int) -> tuple[float, float, float, float]:
        """One pass over the training set; returns (mean loss, accuracy, lr of the last step, seconds)."""
        model, device, accumulate = self.train_model, self.device, self.config.accumulate
        model.train()
        for layer in self.frozen_norms:
            layer.eval()
        small, big = self.local_batch, self.global_batch
        plan = self.epoch_plan(epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        bad = torch.zeros((), dtype=torch.float32, device=device)  # > 0 once a loss was not finite
        # Checking the loss reads a device value: on a GPU that waits for the queue, so do it every few steps.
        every = 1 if device.type == "cpu" and not self.ctx.distributed else 16
        bar = self._progress(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        batches = self.train_source.batches(plan, self.sample_augment)
        self.optimizer.zero_grad(set_to_none=True)
        for index, (raw, yb) in enumerate(batches):
            seed = plan[index][1]
            xb = self.pipeline(raw, True, seed)  # (b, C, H, W) float32, normalized, augmented
            xb, target = self.mixer(xb, yb, seed) if self.mixer else (xb, yb)  # target: (b,) or (b, K) soft
            last_micro = (index + 1) % accumulate == 0
            # Under DDP, all-reduce the gradients only on the step's last micro-batch.
            sync = contextlib.nullcontext() if last_micro or not self.ctx.distributed else model.no_sync()  # type: ignore[operator]
            with sync:
                with self._autocast():
                    logits = model(xb)  # (b, K)
                loss = self.criterion(logits.float(), target)
                scaled = loss / accumulate if accumulate > 1 else loss  # the mean over the A x b images
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            detached = loss.detach()
            loss_sum += detached.double() * small
            correct += (logits.detach().argmax(dim=1) == yb).sum()
            bad += (~torch.isfinite(detached)).float()
            if not last_micro:
                continue
            step = index // accumulate
            self._optimizer_step()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.step += 1
            if self.ema is not None and self.step % self.config.ema_steps == 0:
                self.ema.update_parameters(self.model)
            if (step + 1) % every == 0 or step + 1 == self.steps_per_epoch:
                self._check_finite(bad, detached, epoch, step)
                if not bar.disable:
                    seen = (index + 1) * small
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(
                        loss=f"{loss_sum.item() / seen:.4f}",
                        acc=f"{100 * correct.item() / seen:.1f}%",
                        img_s=f"{(index + 1) * big / elapsed:,.0f}",
                        refresh=step + 1 == self.steps_per_epoch,  # else tqdm redraws at its own pace
                    )
            bar.update(1)
        totals = torch.stack([loss_sum, correct.double()])
        self.ctx.all_reduce_sum(totals)
        loss_total, correct_total = totals.tolist()  # waits for the device: time the epoch after it
        seconds = time.perf_counter() - start
        bar.close()
        seen = self.steps_per_epoch * accumulate * big
        return loss_total / seen, correct_total / seen, float(lr), seconds

    def _optimizer_step(self) -> None:
        clip = self.config.clip_grad
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _check_finite(self, bad: torch.Tensor, loss: torch.Tensor, epoch: int, step: int) -> None:
        flag = bad.clone()
        self.ctx.all_reduce_sum(flag)
        if flag.item() == 0:
            return
        value = loss.item()
        shown = "NaN" if math.isnan(value) else ("infinite" if math.isinf(value) else "not finite")
        if self.epoch > 0:
            kept = f"the last good checkpoint is {self.out / 'last.pt'} (epoch {self.epoch})"
        else:
            kept = "no checkpoint was written (it happened in the first epoch)"
        raise NonFiniteLoss(
            f"the loss became {shown} in epoch {epoch} (by step {step + 1}); training stopped and {kept}. "
            "Try a lower --lr, --clip-grad 1.0 or --amp off."
        )

    def validate(self, model: torch.nn.Module | None = None) -> EvalResult | None:
        """Loss and accuracy of ``model`` (default: the trained one) on the validation set, None without one."""
        n = len(self.data.y_val)
        if n == 0:
            return None
        lo, hi = self.ctx.shard(0, n)
        plan = [(np.arange(i, min(i + self.eval_batch, hi)), 0) for i in range(lo, hi, self.eval_batch)]
        return evaluate_batches(
            model if model is not None else self.model,
            self.val_source.batches(plan),
            self.pipeline,
            device=self.device,
            autocast=self._autocast,
            ctx=self.ctx,
        )

    def _epoch_line(self, record: dict[str, Any]) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        val = ""
        if record["val_loss"] is not None:
            val = f"  val loss {record['val_loss']:.4f} acc {pct(record['val_acc'])}"
        if record.get("val_acc_ema") is not None:
            val += f" (EMA {pct(record['val_acc_ema'])})"
        return (
            f"epoch {record['epoch']:>{len(str(self.config.epochs))}}/{self.config.epochs}  "
            f"train loss {record['train_loss']:.4f} acc {pct(record['train_acc'])}{val}  "
            f"lr {record['lr']:.3g}  {record['images_per_s']:,.0f} img/s  {record['time_s']:.2f}s"
        )

    def _improved(self, record: dict[str, Any]) -> bool:
        """Whether this epoch is the best so far by ``--monitor`` (by training loss/accuracy without a validation
        set)."""
        name = self.config.monitor
        if record.get(name) is None:
            name = name.replace("val_", "train_")
        value = record[name]
        best = self.best.get("value")
        if best is None:
            return True
        return value > best if HIGHER_IS_BETTER[name] else value < best

    def _tensorboard(self) -> Any:
        if not (self.config.tensorboard and self.ctx.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrainError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(log_dir=str(self.out / "tensorboard"), purge_step=self.epoch + 1)

    def run(self) -> RunResult:
        """Train the remaining epochs, writing the run folder as it goes."""
        self._prepare_folder()
        writer = self._tensorboard()
        stopped: str | None = None
        if self.resumed_from is not None:
            self.log(
                f"resuming {self.out / 'last.pt'} after epoch {self.resumed_from} of {self.config.epochs}"
            )
        try:
            while self.epoch < self.config.epochs:
                epoch = self.epoch + 1
                started = time.perf_counter()
                train_loss, train_acc, lr, seconds = self.train_epoch(epoch)
                result = self.validate()
                ema_result = self.validate(self.ema.module) if self.ema is not None else None
                record = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "val_loss": None if result is None else result.loss,
                    "val_acc": None if result is None else result.accuracy,
                    "lr": lr,
                    "images_per_s": round(
                        self.steps_per_epoch
                        * self.config.accumulate
                        * self.global_batch
                        / max(seconds, 1e-9),
                        1,
                    ),
                    "time_s": round(time.perf_counter() - started, 3),
                }
                if ema_result is not None:
                    record["val_acc_ema"] = ema_result.accuracy
                self.history.append(record)
                self.epoch = epoch
                improved = self._improved(record)
                if improved:
                    name = self.config.monitor if record.get(self.config.monitor) is not None else None
                    value = record[name] if name else record[self.config.monitor.replace("val_", "train_")]
                    self.best = {"val_acc": record["val_acc"], "epoch": epoch, "value": value}
                    self.stale_epochs = 0
                else:
                    self.stale_epochs += 1
                ema_improved = ema_result is not None and (
                    self.best_ema["val_acc"] is None or ema_result.accuracy > self.best_ema["val_acc"]
                )
                if ema_improved:
                    self.best_ema = {"val_acc": ema_result.accuracy if ema_result else None, "epoch": epoch}
                self._save(improved, ema_improved)
                self.log(self._epoch_line(record))
                if writer is not None:
                    for key, value in record.items():
                        if key != "epoch" and value is not None:
                            writer.add_scalar(key, value, epoch)
                    writer.flush()
                if self.config.early_stop and self.stale_epochs >= self.config.early_stop:
                    stopped = (
                        f"stopped early after epoch {epoch}: {self.config.monitor} has not improved for "
                        f"{self.stale_epochs} epochs (--early-stop {self.config.early_stop}); best at epoch "
                        f"{self.best['epoch']}"
                    )
                    self.log(stopped)
                    break
        finally:
            # Also after a non-finite loss or Ctrl-C: the curves of the epochs that completed.
            self._write_curves()
            if writer is not None:
                writer.close()
        return RunResult(
            out=self.out,
            history=self.history,
            best_val_acc=self.best["val_acc"],
            best_epoch=self.best["epoch"],
            epochs_done=self.epoch,
            resumed_from=self.resumed_from,
            warnings=list(self.warnings),
            stopped_early=stopped,
        )


def train(
    config: TrainConfig,
    network: Network,
    *,
    ctx: DistContext | None = None,
    resume: bool = False,
    extras: Extras | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train ``network`` as ``config`` says; returns the history and the best validation accuracy."""
    return Trainer(config, network, ctx=ctx, resume=resume, extras=extras, log=log).run()
