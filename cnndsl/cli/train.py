"""``cnndsl train SPEC`` (train on digits, an image folder or an .npz; also under torchrun), ``cnndsl eval SPEC
--weights FILE`` (accuracy and confusion matrix) and ``cnndsl predict SPEC --weights FILE IMAGE...`` (top-k).

Importing this module must not import torch: the handlers import :mod:`cnndsl.train` when they run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import CliError, add_spec_arguments, load_network, positive_int

if TYPE_CHECKING:
    from ..network import Network
    from ..train.config import TrainConfig

# Flags whose value may change when resuming; any other explicit flag that differs from the saved run is ignored
# (with a warning), because the run continues exactly as it started.
RESUME_OVERRIDES = (
    "epochs",
    "device",
    "progress",
    "compile",
    "threads",
    "data",
    "cache_dir",
    "eval_batch_size",
)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    return [] if names == ["none"] else names


def _add_data_arguments(parser: argparse.ArgumentParser, val_default: float | None) -> None:
    parser.add_argument(
        "--data",
        default="digits",
        metavar="SOURCE",
        help="digits (scikit-learn's 8x8 digits, the default), an image folder (DIR/<class>/<images>, or DIR/train "
        "and DIR/val) or an .npz with x (NCHW, NHWC or NHW) and y",
    )
    parser.add_argument(
        "--val-split",
        type=_float,
        default=val_default,
        metavar="F",
        help="fraction held out for validation when the data has no split of its own"
        + (f" (default {val_default})" if val_default is not None else " (default: the training run's)"),
    )
    parser.add_argument(
        "--bad-files",
        choices=("skip", "error"),
        default="skip",
        help="unreadable images in a folder: skip them (listed in the log, the default) or stop with an error",
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="where decoded image folders are cached (~/.cache/cnndsl)"
    )


def register(subparsers: Any) -> None:
    from ..train.config import AMP_MODES, AUGMENTATIONS, OPTIMIZERS, SCHEDULES, TrainConfig

    d = TrainConfig()
    parser = subparsers.add_parser(
        "train",
        help="train the network (digits by default; image folders, .npz; torchrun for several GPUs)",
        description=(
            "Train the network on the built-in digits, an image folder or an .npz file. Writes a run folder with "
            "the config, the spec, the summary, the diagram, metrics.jsonl/.csv, last.pt and best.pt and a plot. "
            "Under `torchrun --nproc_per_node N -m cnndsl train ...` it trains with DDP."
        ),
    )
    add_spec_arguments(parser)
    _add_data_arguments(parser, d.val_split)
    group = parser.add_argument_group("optimization")
    group.add_argument(
        "--epochs", type=positive_int, default=d.epochs, metavar="N", help=f"default {d.epochs}"
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        metavar="B",
        help=f"global batch size, split over torchrun processes (default {d.batch_size})",
    )
    group.add_argument(
        "--eval-batch-size", type=positive_int, default=None, metavar="B", help="default 4 x --batch-size"
    )
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"default {d.optimizer}")
    group.add_argument(
        "--lr",
        type=_float,
        default=None,
        metavar="LR",
        help="learning rate (default: sgd 0.05, adam/adamw 0.002)",
    )
    group.add_argument(
        "--momentum", type=_float, default=d.momentum, help=f"sgd momentum (default {d.momentum})"
    )
    group.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    group.add_argument(
        "--weight-decay", type=_float, default=d.weight_decay, metavar="WD", help=f"default {d.weight_decay}"
    )
    group.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help=f"default {d.schedule}")
    group.add_argument(
        "--warmup-epochs",
        type=_float,
        default=d.warmup_epochs,
        metavar="E",
        help="linear warm-up (may be fractional)",
    )
    group.add_argument(
        "--step-size", type=int, default=d.step_size, metavar="E", help="epochs between step decays"
    )
    group.add_argument("--gamma", type=_float, default=d.gamma, help=f"step decay factor (default {d.gamma})")
    group.add_argument(
        "--label-smoothing",
        type=_float,
        default=d.label_smoothing,
        metavar="S",
        help=f"default {d.label_smoothing}",
    )
    group.add_argument(
        "--clip-grad", type=_float, default=None, metavar="NORM", help="clip the gradient norm"
    )
    group.add_argument(
        "--augment",
        type=_names,
        default=d.augment,
        metavar="LIST",
        help=f"on-device augmentation, comma-separated: {', '.join(AUGMENTATIONS)}; crop:N shifts by up to N "
        f"pixels (crop: 1/16 of the size); none (default {','.join(d.augment)})",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed (default 0); given explicitly it also forces deterministic GPU kernels",
    )
    group = parser.add_argument_group("hardware")
    group.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default auto)")
    group.add_argument(
        "--amp", choices=AMP_MODES, default=d.amp, help="mixed precision (auto: bf16 on a GPU)"
    )
    group.add_argument(
        "--channels-last", action="store_true", help="NHWC memory format (faster convs on GPUs)"
    )
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: 1 for a small model, whose layers gain little from threads and lose "
        "much on a busy machine; else torch's default)",
    )
    group = parser.add_argument_group("transfer learning")
    group.add_argument(
        "--init-from",
        metavar="FILE",
        help="start from weights: a cnndsl checkpoint or a state_dict (torchvision)",
    )
    group.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PATTERN",
        help="freeze layers whose path matches the glob, e.g. 'Stage.0/*' or 'conv.*' (repeatable)",
    )
    group = parser.add_argument_group("run")
    group.add_argument("--out", metavar="DIR", help="run folder (default runs/<spec name>)")
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar per epoch (default: when stderr is a terminal)",
    )
    parser.set_defaults(handler=run_train, parser_defaults=_defaults(parser))

    evaluate = subparsers.add_parser(
        "eval",
        help="accuracy and confusion matrix of trained weights",
        description="Evaluate weights (a cnndsl checkpoint or a state_dict) on a data set's validation split.",
    )
    add_spec_arguments(evaluate)
    evaluate.add_argument(
        "--weights", required=True, metavar="FILE", help="best.pt / last.pt or a state_dict"
    )
    _add_data_arguments(evaluate, None)
    evaluate.add_argument(
        "--split", choices=("val", "train", "all"), default="val", help="which images (default val)"
    )
    evaluate.add_argument("--batch-size", type=positive_int, default=256, metavar="B", help="default 256")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    evaluate.set_defaults(handler=run_eval)

    predict = subparsers.add_parser(
        "predict",
        help="top-k classes of image files",
        description="Classify image files with trained weights; prints the k most probable classes of each.",
    )
    add_spec_arguments(predict)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    predict.add_argument("--weights", required=True, metavar="FILE", help="best.pt / last.pt or a state_dict")
    predict.add_argument("--top-k", "-k", type=positive_int, default=5, metavar="K", help="default 5")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    predict.set_defaults(handler=run_predict)


def _defaults(parser: argparse.ArgumentParser) -> dict[str, Any]:
    return {action.dest: action.default for action in parser._actions if action.dest != "help"}


# -------------------------------------------------------------------------------------------------- train ---


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    from ..train.config import TrainConfig

    return TrainConfig(
        spec=args.file,
        network=args.network,
        data=args.data,
        val_split=args.val_split,
        bad_files=args.bad_files,
        cache_dir=args.cache_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size or 0,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        nesterov=args.nesterov,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        step_size=args.step_size,
        gamma=args.gamma,
        label_smoothing=args.label_smoothing,
        clip_grad=args.clip_grad,
        augment=list(args.augment),
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        threads=args.threads,
        seed=0 if args.seed is None else args.seed,
        deterministic=args.seed is not None,
        init_from=args.init_from,
        freeze=list(args.freeze),
        out=args.out or os.path.join("runs", Path(args.file).stem),
        progress=args.progress,
    )


def _resume_config(args: argparse.Namespace, fresh: TrainConfig, log: Any) -> TrainConfig:
    """The saved run's config, with the flags that may change taken from the command line."""
    from ..train.checkpoint import is_cnndsl_checkpoint, load_checkpoint
    from ..train.config import TrainConfig
    from ..train.errors import TrainError

    path = Path(fresh.out) / "last.pt"
    if not path.is_file():
        raise CliError(f"--resume: {path} does not exist (start without --resume, or pass the run's --out)")
    try:
        state = load_checkpoint(path)
    except TrainError as error:
        raise CliError(f"--resume: {error}") from None
    if not is_cnndsl_checkpoint(state):
        raise CliError(f"--resume: {path} is not a cnndsl checkpoint")
    saved = TrainConfig.from_dict(dict(state["config"]))
    defaults = args.parser_defaults
    explicit = {dest for dest, default in defaults.items() if getattr(args, dest, default) != default}
    for name in RESUME_OVERRIDES:
        flag = name if name in defaults else None
        if flag and flag in explicit:
            setattr(saved, name, getattr(fresh, name))
    ignored = []
    for dest in sorted(
        explicit - set(RESUME_OVERRIDES) - {"resume", "out", "file", "handler", "parser_defaults"}
    ):
        value = getattr(fresh, dest, None)
        if hasattr(saved, dest) and value != getattr(saved, dest):
            ignored.append(f"--{dest.replace('_', '-')}")
    if ignored:
        log(f"resuming with the run's saved settings; ignoring {', '.join(ignored)}")
    saved.out = fresh.out
    saved.progress = fresh.progress if "progress" in explicit else saved.progress
    return saved


def _summary_text(network: Network, frozen: list[str] | None = None) -> str | None:
    try:
        from ..analysis import summarize
        from ..report import to_text
    except ImportError:
        return None
    try:
        text = to_text(summarize(network))
    except Exception as error:  # noqa: BLE001 - the summary is a courtesy; training must not fail on it
        return f"(summary unavailable: {error})\n"
    return text if text.endswith("\n") else text + "\n"


def _frozen_text(frozen: list[str], parameters: int) -> str:
    if not frozen:
        return ""
    lines = [f"Frozen layers ({len(frozen)}, {parameters:,} parameters): not trained, not in the optimizer"]
    lines += [f"  {path}  [frozen]" for path in frozen]
    return "\n".join(lines) + "\n"


def _diagram(network: Network) -> str | None:
    try:
        from ..render import to_graphviz
    except ImportError:
        return None
    try:
        return str(to_graphviz(network).source)
    except Exception:  # noqa: BLE001 - the diagram is a courtesy; training must not fail on it
        return None


def run_train(args: argparse.Namespace) -> int:
    from ..train import ddp
    from ..train.errors import NonFiniteLoss, TrainError
    from ..train.loop import Extras, Trainer, copy_spec_files

    network = load_network(args)
    try:
        ctx = ddp.init_distributed(args.device)
    except TrainError as error:
        raise CliError(str(error)) from None

    def log(line: str) -> None:
        if ctx.is_main:
            print(line, flush=True)

    try:
        config = _config_from_args(args)
        if args.resume:
            config = _resume_config(args, config, log)
        summary = _summary_text(network)
        if summary and ctx.is_main:
            print(summary, end="", flush=True)
        extras = Extras(spec_files=copy_spec_files(network), summary=summary, diagram_dot=_diagram(network))
        trainer = Trainer(config, network, ctx=ctx, resume=args.resume, extras=extras, log=log)
        if trainer.model_info.frozen and extras.summary is not None:
            count = sum(p.numel() for p in trainer.model.parameters() if not p.requires_grad)
            extras.summary += "\n" + _frozen_text(trainer.model_info.frozen, count)
        result = trainer.run()
    except NonFiniteLoss as error:
        raise CliError(str(error), exit_code=1) from None
    except TrainError as error:
        raise CliError(str(error)) from None
    except KeyboardInterrupt:
        out = config.out if "config" in locals() else "the run folder"
        raise CliError(f"interrupted; continue with --resume (last.pt in {out})", exit_code=130) from None
    finally:
        ddp.shutdown()
    log(result.final_line())
    return 0


# ------------------------------------------------------------------------------------------ eval, predict ---


def _load_weights(args: argparse.Namespace, network: Network) -> tuple[Any, dict[str, Any] | None, list[str]]:
    """The module with ``--weights`` loaded, our checkpoint dict (or None for a bare state_dict), and notes."""
    from ..train.errors import TrainError
    from ..train.model import check_classifier_network, load_into

    try:
        check_classifier_network(network)
        module = network.to_torch(logits=True)
        notes, state = load_into(module, network, args.weights)
    except TrainError as error:
        raise CliError(str(error)) from None
    return module, state, notes


def _device(requested: str) -> Any:
    from ..train.ddp import DistContext
    from ..train.errors import TrainError
    from ..train.loop import resolve_device

    try:
        return resolve_device(requested, DistContext())
    except TrainError as error:
        raise CliError(str(error)) from None


def run_eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..train.augment import BatchPipeline, channel_stats
    from ..train.data import load_data
    from ..train.errors import TrainError
    from ..train.evaluate import evaluate_tensors, format_confusion
    from ..train.model import classifier_outputs

    network = load_network(args)
    module, state, notes = _load_weights(args, network)
    saved = dict(state.get("config") or {}) if state else {}
    val_split = args.val_split if args.val_split is not None else float(saved.get("val_split", 0.2))
    try:
        data = load_data(
            args.data,
            network.inputs[0].shape,
            val_split=val_split,
            bad_files=args.bad_files,
            cache_dir=args.cache_dir,
        )
    except TrainError as error:
        raise CliError(str(error)) from None
    outputs = classifier_outputs(module, network)
    if data.num_classes > outputs:
        raise CliError(f"{args.data} has {data.num_classes} classes but the weights give {outputs} scores")
    classes = list(state["classes"]) if state else data.classes
    if state and list(data.classes) != classes[: data.num_classes]:
        raise CliError(f"the weights were trained on classes {classes}, but {args.data} has {data.classes}")
    if state:
        mean, std = state["normalize"]["mean"], state["normalize"]["std"]
    else:
        mean, std = channel_stats(torch.from_numpy(data.x_train))
        notes.append("normalized with the data's statistics (the weights carry none)")
    x = {"val": data.x_val, "train": data.x_train, "all": np.concatenate([data.x_train, data.x_val])}[
        args.split
    ]
    y = {"val": data.y_val, "train": data.y_train, "all": np.concatenate([data.y_train, data.y_val])}[
        args.split
    ]
    if len(y) == 0:
        raise CliError(f"the {args.split} split of {args.data} is empty (see --val-split)")
    device = _device(args.device)
    module.to(device)
    result = evaluate_tensors(
        module,
        torch.from_numpy(x).to(device),
        torch.from_numpy(y).to(device),
        BatchPipeline(mean, std, device=device),
        batch_size=args.batch_size,
        num_classes=outputs,
    )
    assert result.confusion is not None
    names = classes + [str(i) for i in range(len(classes), outputs)]
    if args.format == "json":
        print(
            json.dumps(
                {
                    "weights": args.weights,
                    "data": args.data,
                    "split": args.split,
                    "images": result.count,
                    "accuracy": result.accuracy,
                    "loss": result.loss,
                    "classes": names,
                    "confusion": result.confusion,
                    "per_class_accuracy": result.per_class_accuracy(),
                },
                indent=2,
            )
        )
        return 0
    for note in data.notes + notes:
        print(note, file=sys.stderr)
    print(f"{network.name} on {data.name} ({args.split}, {result.count:,} images)")
    print(f"accuracy {100 * result.accuracy:.2f}%  loss {result.loss:.4f}")
    print()
    print(format_confusion(result.confusion, names))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from ..train.augment import BatchPipeline
    from ..train.data import load_image_files
    from ..train.errors import TrainError
    from ..train.evaluate import top_k
    from ..train.model import classifier_outputs

    network = load_network(args)
    module, state, _notes = _load_weights(args, network)
    shape = network.inputs[0].shape
    if state:
        mean, std = state["normalize"]["mean"], state["normalize"]["std"]
        classes = list(state["classes"])
        pixel_max = float(state.get("pixel_max", 255.0))
    elif shape[0] == 3:
        # A bare state_dict carries no statistics: assume torchvision's ImageNet normalization.
        mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
        classes = [str(i) for i in range(classifier_outputs(module, network))]
        pixel_max = 255.0
    else:
        raise CliError("these weights carry no normalization statistics; predict needs a cnndsl checkpoint")
    try:
        images = load_image_files(args.images, shape, pixel_max)
    except TrainError as error:
        raise CliError(str(error)) from None
    device = _device(args.device)
    module.to(device)
    prepare = BatchPipeline(mean, std, device=device)
    with torch.no_grad():
        ranked = top_k(module, prepare(torch.from_numpy(images).to(device), False), args.top_k, classes)
    if args.format == "json":
        print(
            json.dumps(
                [
                    {"image": path, "top": [{"class": c, "probability": p} for c, p in best]}
                    for path, best in zip(args.images, ranked, strict=True)
                ],
                indent=2,
            )
        )
        return 0
    for path, best in zip(args.images, ranked, strict=True):
        shown = "  ".join(f"{name} {100 * p:.1f}%" for name, p in best)
        print(f"{path}: {shown}")
    return 0
