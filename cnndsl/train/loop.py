"""The training loop: set-up, one function per epoch phase, checkpoints and the run folder.

Shapes in comments: N images in the training set, B the global batch, b = B / processes the batch of this
process, K classes. The data set is one tensor on the device; a batch is ``x[perm[i:i+b]]``, so the hot loop has
no per-sample Python and no host-device copies besides the per-epoch permutation.
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

import torch

from .. import __version__
from ..network import Network
from . import checkpoint as ckpt_io
from . import metrics
from .augment import BatchPipeline, channel_stats
from .config import TrainConfig
from .data import DataSet, load_data
from .ddp import DistContext
from .errors import NonFiniteLoss, TrainError
from .evaluate import EvalResult, evaluate_tensors
from .model import ModelInfo, build_model, frozen_norm_layers
from .optim import build_optimizer, build_scheduler

# Files of a run folder that a fresh run replaces (a new run must never resume or report an old one's state).
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "curves.png", "config.json", "summary.txt")


@dataclass
class RunResult:
    """The outcome of :func:`train`."""

    out: Path
    history: list[dict[str, Any]]
    best_val_acc: float | None
    best_epoch: int | None
    epochs_done: int
    resumed_from: int | None = None

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
    """One training run. :meth:`run` trains; everything else is set-up and bookkeeping."""

    def __init__(
        self,
        config: TrainConfig,
        network: Network,
        *,
        ctx: DistContext | None = None,
        resume: bool = False,
        extras: Extras | None = None,
        log: Callable[[str], None] = print,
        data: DataSet | None = None,
        module: torch.nn.Module | None = None,
    ) -> None:
        """Set up everything; :meth:`run` trains. ``data`` replaces loading ``config.data`` (tests, benchmarks);
        ``module`` trains a ready module instead of the spec's (the benchmark runs a hand-written ResNet-50 through
        this same loop)."""
        try:
            config.validate()
        except ValueError as error:
            raise TrainError(str(error)) from None
        self.config = config
        self.network = network
        self.ctx = ctx or DistContext()
        self.extras = extras or Extras()
        self.log = log if self.ctx.is_main else (lambda _line: None)
        self.out = Path(config.out or os.path.join("runs", network.name.lower()))
        self.device = resolve_device(config.device, self.ctx)
        threads_note = choose_threads(config, network, self.device, self.ctx)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        seed_everything(config.seed, config.deterministic, self.device)

        self.resume_state: dict[str, Any] | None = None
        if resume:
            self.resume_state = self._read_resume()

        # Data: the main process first, so that it alone decodes an image folder and fills the cache.
        if data is None:
            failure: TrainError | None = None
            if self.ctx.is_main:
                try:
                    data = self._load_data()
                except TrainError as error:
                    failure = error  # raised after the barrier, which the other processes wait at
            self.ctx.barrier()
            if failure is not None:
                raise failure
            if not self.ctx.is_main:
                data = self._load_data()
        assert data is not None
        self.data = data
        self.log(data.describe())
        if threads_note:
            self.log(threads_note)
        for note in data.notes:
            self.log(note)
        if self.resume_state is not None and list(self.resume_state.get("classes", [])) != list(data.classes):
            raise TrainError(f"--resume: the data's classes differ from those of {self.out / 'last.pt'}")

        # Model: seeded so every process (and every resumed run) starts from the same weights.
        torch.manual_seed(config.seed)
        if module is not None:
            self.model, info = module, ModelInfo(num_classes=data.num_classes)
        else:
            self.model, info = build_model(
                network,
                data.num_classes,
                init_from=None if self.resume_state is not None else config.init_from,
                freeze_patterns=config.freeze,
            )
        self.model_info = info
        for note in info.notes:
            self.log(note)
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.frozen_norms = frozen_norm_layers(self.model, network, info.frozen)

        # Data on the device, once.
        self.x_train = torch.from_numpy(data.x_train).to(self.device)  # (N, C, H, W) uint8 or float32
        self.y_train = torch.from_numpy(data.y_train).to(self.device)  # (N,) int64
        self.x_val = torch.from_numpy(data.x_val).to(self.device)
        self.y_val = torch.from_numpy(data.y_val).to(self.device)
        if self.resume_state is not None:
            norm = self.resume_state["normalize"]
            self.mean, self.std = list(norm["mean"]), list(norm["std"])
        else:
            self.mean, self.std = channel_stats(torch.from_numpy(data.x_train))

        # Batching: B global, b per process; the last partial batch of an epoch is dropped (it would make one
        # noisy, differently sized step and break the equality of 1 and N processes).
        n = len(data.y_train)
        if n == 0:
            raise TrainError(f"{data.name}: the training set is empty")
        world = self.ctx.world_size
        batch = config.batch_size
        if batch > n:
            batch = max(world, n - n % world)
            self.log(f"--batch-size {config.batch_size} is more than the {n} training images; using {batch}")
        if batch % world:
            raise TrainError(f"--batch-size {batch} must be divisible by the {world} processes")
        self.global_batch = batch
        self.local_batch = batch // world
        self.steps_per_epoch = n // batch
        self.eval_batch = config.eval_batch_size or 4 * batch

        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainError("every layer is frozen: nothing to train (check --freeze)")
        self.params = params
        self.optimizer = build_optimizer(params, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        # Randomness besides torch's global generator (dropout): the permutation (on the CPU, identical in every
        # process) and augmentation (on the device, one stream per process).
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

        self.train_model: torch.nn.Module = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # A conv with one input channel gets gradients whose strides torch reads as channels-last (size-1
            # dimension): DDP warns once and copies that small tensor. Harmless; keep the log clean.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            # Gradients as views into the all-reduce buckets: no copy, less memory.
            self.train_model = DistributedDataParallel(
                self.model, device_ids=device_ids, gradient_as_bucket_view=True
            )
        if config.compile:
            self.train_model = torch.compile(self.train_model)  # type: ignore[assignment]

        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0
        self.best: dict[str, Any] = {"val_acc": None, "epoch": None}
        self.resumed_from: int | None = None
        if self.resume_state is not None:
            self._restore(self.resume_state)
        self.log(self._describe_setup())

    # ------------------------------------------------------------------------------------------ set-up ---

    def _load_data(self) -> DataSet:
        shape = self.network.inputs[0].shape
        return load_data(
            self.config.data,
            shape,
            val_split=self.config.val_split,
            bad_files=self.config.bad_files,
            cache_dir=self.config.cache_dir,
        )

    def _read_resume(self) -> dict[str, Any]:
        path = self.out / "last.pt"
        if not path.is_file():
            raise TrainError(f"--resume: {path} does not exist (start without --resume)")
        state = ckpt_io.load_checkpoint(path)
        if not ckpt_io.is_cnndsl_checkpoint(state):
            raise TrainError(f"--resume: {path} is not a cnndsl checkpoint")
        if state.get("network") != self.network.name:
            raise TrainError(
                f"--resume: {path} is a run of network {state.get('network')}, not {self.network.name}"
            )
        return dict(state)

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0]
            raise TrainError(
                f"--resume: {self.out / 'last.pt'} does not fit this spec and setup: {first}"
            ) from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        states = state.get("rng") or []
        if len(states) != self.ctx.world_size:
            self.log(
                f"resuming with {self.ctx.world_size} processes, saved with {len(states)}: random streams of the "
                "extra processes restart from the main one's"
            )
        if states:
            self._set_rng(states[self.ctx.rank] if self.ctx.rank < len(states) else states[0])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
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
            self.log(
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
        return (
            f"training {self.network.name}: {trainable:,} trainable parameters{frozen}; device {where}; amp {amp}"
            f"{'; ' + ', '.join(extra) if extra else ''}\n"
            f"{self.config.optimizer} lr {self.config.resolved_lr:g}, {self.config.schedule} schedule, "
            f"batch {self.global_batch} ({self.steps_per_epoch} steps/epoch), {self.config.epochs} epochs, "
            f"augment {aug}, seed {self.config.seed}"
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
            "steps_per_epoch": self.steps_per_epoch,
            "eval_batch_size": self.eval_batch,
            "network": self.network.name,
            "input_shape": list(self.network.inputs[0].shape),
            "classes": list(self.data.classes),
            "train_images": len(self.data.y_train),
            "val_images": len(self.data.y_val),
            "normalize": {"mean": self.mean, "std": self.std},
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

    def _checkpoint_state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "network": self.network.name,
            "input_shape": list(self.network.inputs[0].shape),
            "classes": list(self.data.classes),
            "normalize": {"mean": list(self.mean), "std": list(self.std)},
            "pixel_max": float(self.data.pixel_max),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "epoch": self.epoch,
            "step": self.step,
            "best": dict(self.best),
            "history": list(self.history),
            "config": self.config.to_dict() | {"lr": self.config.lr},
            "spec_text": next(iter(self.extras.spec_files.values()), ""),
        }

    def _save(self, improved: bool) -> None:
        rng = self.ctx.gather(self._rng_state())  # a collective: every process takes part
        if not self.ctx.is_main:
            return
        state = self._checkpoint_state(rng)
        paths = [self.out / "best.pt"] if improved else []
        ckpt_io.save_checkpoint(state, [*paths, self.out / "last.pt"])
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

    def train_epoch(self, epoch: int) -> tuple[float, float, float, float]:
        """One pass over the training set; returns (mean loss, accuracy, lr of the last step, seconds)."""
        model, device = self.train_model, self.device
        model.train()
        for layer in self.frozen_norms:
            layer.eval()
        n, big, small = len(self.y_train), self.global_batch, self.local_batch
        lo = self.ctx.rank * small  # this process's slice of each global batch
        perm = torch.randperm(n, generator=self.data_generator).to(device)  # (N,), same in every process
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        bad = torch.zeros((), dtype=torch.float32, device=device)  # > 0 once a loss was not finite
        # Checking the loss reads a device value: on a GPU that waits for the queue, so do it every few steps.
        every = 1 if device.type == "cpu" and not self.ctx.distributed else 16
        bar = self._progress(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        for step in range(self.steps_per_epoch):
            index = perm[step * big + lo : step * big + lo + small]  # (b,)
            xb = self.pipeline(self.x_train[index], True)  # (b, C, H, W) float32, normalized, augmented
            yb = self.y_train[index]  # (b,)
            with self._autocast():
                logits = model(xb)  # (b, K)
            loss = self.criterion(logits.float(), yb)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                if self.config.clip_grad:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                if self.config.clip_grad:
                    torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_grad)
                self.optimizer.step()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.step += 1
            detached = loss.detach()
            loss_sum += detached.double() * small
            correct += (logits.detach().argmax(dim=1) == yb).sum()
            bad += (~torch.isfinite(detached)).float()
            if (step + 1) % every == 0 or step + 1 == self.steps_per_epoch:
                self._check_finite(bad, detached, epoch, step)
                if not bar.disable:
                    seen = (step + 1) * small
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(
                        loss=f"{loss_sum.item() / seen:.4f}",
                        acc=f"{100 * correct.item() / seen:.1f}%",
                        img_s=f"{(step + 1) * big / elapsed:,.0f}",
                        refresh=step + 1 == self.steps_per_epoch,  # else tqdm redraws at its own pace
                    )
            bar.update(1)
        totals = torch.stack([loss_sum, correct.double()])
        self.ctx.all_reduce_sum(totals)
        loss_total, correct_total = totals.tolist()  # waits for the device: time the epoch after it
        seconds = time.perf_counter() - start
        bar.close()
        seen = self.steps_per_epoch * big
        return loss_total / seen, correct_total / seen, float(lr), seconds

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

    def validate(self) -> EvalResult | None:
        if len(self.y_val) == 0:
            return None
        return evaluate_tensors(
            self.model,
            self.x_val,
            self.y_val,
            self.pipeline,
            batch_size=self.eval_batch,
            autocast=self._autocast,
            ctx=self.ctx,
        )

    def _epoch_line(self, record: dict[str, Any]) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        val = ""
        if record["val_loss"] is not None:
            val = f"  val loss {record['val_loss']:.4f} acc {pct(record['val_acc'])}"
        return (
            f"epoch {record['epoch']:>{len(str(self.config.epochs))}}/{self.config.epochs}  "
            f"train loss {record['train_loss']:.4f} acc {pct(record['train_acc'])}{val}  "
            f"lr {record['lr']:.3g}  {record['images_per_s']:,.0f} img/s  {record['time_s']:.2f}s"
        )

    def run(self) -> RunResult:
        """Train the remaining epochs, writing the run folder as it goes."""
        self._prepare_folder()
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
                record = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "val_loss": None if result is None else result.loss,
                    "val_acc": None if result is None else result.accuracy,
                    "lr": lr,
                    "images_per_s": round(self.steps_per_epoch * self.global_batch / max(seconds, 1e-9), 1),
                    "time_s": round(time.perf_counter() - started, 3),
                }
                self.history.append(record)
                self.epoch = epoch
                improved = (
                    result is None or self.best["val_acc"] is None or result.accuracy > self.best["val_acc"]
                )
                if improved:
                    self.best = {"val_acc": None if result is None else result.accuracy, "epoch": epoch}
                self._save(improved)
                self.log(self._epoch_line(record))
        finally:
            # Also after a non-finite loss or Ctrl-C: the curves of the epochs that completed.
            self._write_curves()
        return RunResult(
            out=self.out,
            history=self.history,
            best_val_acc=self.best["val_acc"],
            best_epoch=self.best["epoch"],
            epochs_done=self.epoch,
            resumed_from=self.resumed_from,
        )


def copy_spec_files(network: Network) -> dict[str, str]:
    """The spec and its imports as {name in the run folder: text}: the main file under its own name, imports
    by their path relative to it (or their bare name when they live elsewhere)."""
    files: dict[str, str] = {}
    if not network.files:
        return files
    main = Path(network.files[0])
    for index, name in enumerate(network.files):
        path = Path(name)
        if index == 0:
            relative = path.name
        else:
            try:
                relative = str(path.resolve().relative_to(main.resolve().parent))
            except ValueError:
                relative = path.name
        try:
            files[relative] = path.read_text(encoding="utf-8")
        except OSError:
            continue  # an in-memory spec (loads) has no file to copy
    return files


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
