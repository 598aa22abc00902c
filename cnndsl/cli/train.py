"""``cnndsl train SPEC`` (train on digits, an image folder or an .npz; also under torchrun), ``cnndsl eval SPEC
--weights FILE`` (accuracy and confusion matrix) and ``cnndsl predict SPEC --weights FILE IMAGE...`` (top-k).

Importing this module must not import torch: the handlers import :mod:`cnndsl.train` when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..train.config import number, positive_int
from .common import CliError, add_spec_arguments, load_network

if TYPE_CHECKING:
    from ..network import Network
    from ..train.config import TrainConfig


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data`` and friends for ``eval``: defaults come from the run being evaluated."""
    parser.add_argument(
        "--data",
        default=None,
        metavar="SOURCE",
        help="digits, an image folder or an .npz (default: the data the weights were trained on, else digits)",
    )
    parser.add_argument(
        "--val-split",
        type=number,
        default=None,
        metavar="F",
        help="fraction held out for validation when the data has no split of its own (default: the run's)",
    )
    parser.add_argument(
        "--bad-files",
        choices=("skip", "error"),
        default="skip",
        help="unreadable images in a folder: skip them (listed) or stop with an error",
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="where decoded image folders are cached (~/.cache/cnndsl)"
    )


def _default_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value) or "none"
    return str(value)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field that has help text, generated from the field: its type,
    choices, metavar, group and default. Defaults are left out of the namespace (``SUPPRESS``), so the handler
    knows exactly which flags were given (for ``--recipe`` and ``--resume``)."""
    from ..train.config import cli_fields, flag_name

    groups: dict[str, Any] = {}
    for item in cli_fields():
        meta = item.metadata
        group = groups.get(meta["group"])
        if group is None:
            group = groups[meta["group"]] = parser.add_argument_group(meta["group"])
        factory: Any = item.default_factory
        default = item.default if item.default is not dataclasses.MISSING else factory()
        help_text = meta["help"]
        if default not in (None, False, "", []) and "default" not in help_text:
            help_text += f" (default {_default_text(default)})"
        kwargs: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS, "help": help_text}
        if item.type == "bool":
            kwargs["action"] = "store_true"
        elif item.type == "bool | None":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif item.type == "list[str]" and meta["type"] is None:
            kwargs["action"] = "append"
            kwargs["metavar"] = meta["metavar"]
        else:
            for key in ("metavar", "choices", "type"):
                if meta[key] is not None:
                    kwargs[key] = meta[key]
        group.add_argument(flag_name(item.name), **kwargs)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the network (digits by default; image folders, .npz; torchrun for several GPUs)",
        description=(
            "Train the network on the built-in digits, an image folder or an .npz file. Writes a run folder with "
            "the config, the spec, the summary, the diagram, metrics.jsonl/.csv, last.pt and best.pt and a plot; "
            "eval, predict, export and compile take that folder in place of a spec. "
            "Under `torchrun --nproc_per_node N -m cnndsl train ...` it trains with DDP."
        ),
    )
    add_spec_arguments(parser)
    add_config_flags(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.set_defaults(handler=run_train)

    run_help = "a .cnn spec, or a run folder of cnndsl train (its spec, best.pt, data and normalization)"
    evaluate = subparsers.add_parser(
        "eval",
        help="accuracy and confusion matrix of trained weights",
        description="Evaluate weights (a run folder, a cnndsl checkpoint, a .safetensors file or a state_dict) on "
        "a data set's validation split.",
    )
    add_spec_arguments(evaluate, file_help=run_help)
    evaluate.add_argument(
        "--weights",
        metavar="FILE",
        help="best.pt / last.pt / .safetensors or a state_dict (default with a run folder: its best.pt)",
    )
    _add_data_arguments(evaluate)
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
    add_spec_arguments(predict, file_help=run_help)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    predict.add_argument(
        "--weights",
        metavar="FILE",
        help="best.pt / last.pt / .safetensors or a state_dict (default with a run folder: its best.pt)",
    )
    predict.add_argument("--top-k", "-k", type=positive_int, default=5, metavar="K", help="default 5")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    predict.set_defaults(handler=run_predict)


# -------------------------------------------------------------------------------------------------- train ---


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags given on the command line (the parser leaves the others out)."""
    from ..train.config import cli_fields

    return {f.name: getattr(args, f.name) for f in cli_fields() if hasattr(args, f.name)}


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the ``--recipe``, then the flags given."""
    from ..train.config import TrainConfig, apply_recipe

    given = _given(args)
    config = TrainConfig(spec=args.file, network=args.network)
    if given.get("recipe"):
        config = apply_recipe(config, given["recipe"], keep=set(given))
    config = dataclasses.replace(config, **given)
    config.deterministic = "seed" in given
    config.out = config.out or os.path.join("runs", Path(args.file).stem)
    return config


def _resume_config(
    args: argparse.Namespace, fresh: TrainConfig, state: dict[str, Any], warn: Any
) -> TrainConfig:
    """The saved run's config, with the flags that may change when resuming taken from the command line."""
    from ..train.config import TrainConfig, cli_fields, flag_name

    saved = TrainConfig.from_dict(dict(state["config"]))
    given = _given(args)
    ignored = []
    for item in cli_fields():
        if item.name not in given or item.name == "out":
            continue
        if item.metadata["resume"]:
            setattr(saved, item.name, getattr(fresh, item.name))
        elif getattr(fresh, item.name) != getattr(saved, item.name):
            ignored.append(flag_name(item.name))
    if ignored:
        warn(f"--resume continues with the run's saved settings; ignoring {', '.join(ignored)}")
    saved.out = fresh.out
    return saved


def _read_last(out: str) -> dict[str, Any]:
    """``last.pt`` of the run to resume, read once (the trainer restores from this same dict)."""
    from ..train.checkpoint import is_cnndsl_checkpoint, load_checkpoint
    from ..train.errors import TrainError

    path = Path(out) / "last.pt"
    if not path.is_file():
        raise CliError(f"--resume: {path} does not exist (start without --resume, or pass the run's --out)")
    try:
        state = load_checkpoint(path)
    except TrainError as error:
        raise CliError(f"--resume: {error}") from None
    if not is_cnndsl_checkpoint(state):
        raise CliError(f"--resume: {path} is not a cnndsl checkpoint")
    return dict(state)


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
    from ..train.loop import Extras, Trainer
    from ..train.runfolder import copy_spec_files

    network = load_network(args)
    try:
        ctx = ddp.init_distributed(getattr(args, "device", "auto"))
    except TrainError as error:
        raise CliError(str(error)) from None
    warned: list[str] = []

    def log(line: str) -> None:
        if ctx.is_main:
            print(line, flush=True)

    def warn(message: str) -> None:
        warned.append(message)
        log(f"warning: {message}")

    trainer: Trainer | None = None
    finished = False
    try:
        config = _config_from_args(args)
        state = _read_last(config.out) if args.resume else None
        if state is not None:
            config = _resume_config(args, config, state, warn)
        summary = _summary_text(network)
        if summary and ctx.is_main:
            print(summary, end="", flush=True)
        extras = Extras(spec_files=copy_spec_files(network), summary=summary, diagram_dot=_diagram(network))
        trainer = Trainer(
            config, network, ctx=ctx, resume=args.resume, resume_state=state, extras=extras, log=log
        )
        if trainer.model_info.frozen and extras.summary is not None:
            count = sum(p.numel() for p in trainer.model.parameters() if not p.requires_grad)
            extras.summary += "\n" + _frozen_text(trainer.model_info.frozen, count)
        result = trainer.run()
        finished = True
    except NonFiniteLoss as error:
        raise CliError(str(error), exit_code=1) from None
    except (TrainError, ValueError) as error:
        raise CliError(str(error)) from None
    except KeyboardInterrupt:
        out = config.out if "config" in locals() else "the run folder"
        raise CliError(f"interrupted; continue with --resume (last.pt in {out})", exit_code=130) from None
    finally:
        ddp.shutdown()
        # Warnings again, together, where they cannot scroll away: also when the run failed.
        every = warned + (trainer.warnings if trainer is not None else [])
        if every and ctx.is_main and not finished:
            print(_warnings_block(every), file=sys.stderr, flush=True)
    log(result.final_line())
    if warned or result.warnings:
        log(_warnings_block(warned + result.warnings))
    return 0


def _warnings_block(warnings: list[str]) -> str:
    from ..train.loop import warnings_block

    return warnings_block(warnings)


# ------------------------------------------------------------------------------------------ eval, predict ---


def resolve_run(args: argparse.Namespace, weights: bool = True) -> Any:
    """When ``args.file`` is a run folder, point ``args.file`` at its spec, ``args.network`` at its network and
    (when not given) ``args.weights`` at its best.pt; returns the :class:`RunFolder`, or None for a spec."""
    from ..train.errors import TrainError
    from ..train.runfolder import open_run

    if not os.path.isdir(args.file):
        if weights and getattr(args, "weights", "") is None:
            raise CliError(
                f"--weights FILE is needed with a spec ({args.file}); or give a run folder instead"
            )
        return None
    try:
        run = open_run(args.file)
    except TrainError as error:
        raise CliError(str(error)) from None
    args.file = str(run.spec)
    if args.network is None:
        args.network = run.network_name
    if weights and getattr(args, "weights", "") is None:
        args.weights = str(run.weights)
    return run


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
    from ..train.data import DataSet, load_data
    from ..train.errors import TrainError
    from ..train.evaluate import evaluate_batches, format_confusion
    from ..train.model import classifier_outputs
    from ..train.source import open_sources

    resolve_run(args)
    network = load_network(args)
    module, state, notes = _load_weights(args, network)
    saved = dict(state.get("config") or {}) if state else {}
    val_split = args.val_split if args.val_split is not None else float(saved.get("val_split", 0.2))
    source = args.data or saved.get("data") or "digits"
    if args.data is None:
        notes.append(
            f"--data {source}: the data the weights were trained on"
            if saved.get("data")
            else "--data digits: the default (the weights record no data)"
        )
    try:
        data = load_data(
            source,
            network.inputs[0].shape,
            val_split=val_split,
            bad_files=args.bad_files,
            cache_dir=args.cache_dir or saved.get("cache_dir"),
        )
    except TrainError as error:
        raise CliError(str(error)) from None
    outputs = classifier_outputs(module, network)
    if data.num_classes > outputs:
        raise CliError(
            f"--data {source} has {data.num_classes} classes but the weights give {outputs} scores"
        )
    classes = list(state["classes"]) if state else data.classes
    if state and list(data.classes) != classes[: data.num_classes]:
        raise CliError(
            f"--data {source} has classes {data.classes}, but the weights were trained on {classes}"
        )
    if state:
        mean, std = state["normalize"]["mean"], state["normalize"]["std"]
    elif isinstance(data, DataSet):
        mean, std = channel_stats(torch.from_numpy(data.x_train))
        notes.append("normalized with the data's statistics (the weights carry none)")
    else:
        raise CliError(
            f"--weights {args.weights}: carries no normalization statistics to evaluate streamed data"
        )
    device = _device(args.device)
    train_source, val_source = open_sources(data, device, workers=0)
    chosen = {"val": [val_source], "train": [train_source], "all": [train_source, val_source]}[args.split]
    if sum(len(s) for s in chosen) == 0:
        raise CliError(f"--split {args.split}: that part of --data {source} is empty (see --val-split)")
    module.to(device)

    def batches() -> Any:
        for part in chosen:
            plan = [
                (np.arange(i, min(i + args.batch_size, len(part))), 0)
                for i in range(0, len(part), args.batch_size)
            ]
            yield from part.batches(plan)

    result = evaluate_batches(
        module, batches(), BatchPipeline(mean, std, device=device), device=device, num_classes=outputs
    )
    assert result.confusion is not None
    names = classes + [str(i) for i in range(len(classes), outputs)]
    if args.format == "json":
        print(
            json.dumps(
                {
                    "weights": args.weights,
                    "data": source,
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
    for note in data.notes + data.warnings + notes:
        print(note, file=sys.stderr)
    print(f"{network.name} on {data.name} ({args.split}, {result.count:,} images)")
    print(f"accuracy {100 * result.accuracy:.2f}%  loss {result.loss:.4f}")
    print()
    print(format_confusion(result.confusion, names))
    return 0


IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


def normalization_of(
    state: dict[str, Any] | None, channels: int, what: str
) -> tuple[list[float], list[float], float]:
    """(mean, std, pixel_max) of trained weights: the checkpoint's, or torchvision's ImageNet statistics for a bare
    state_dict of a 3-channel network."""
    if state:
        return (
            list(state["normalize"]["mean"]),
            list(state["normalize"]["std"]),
            float(state.get("pixel_max", 255.0)),
        )
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD, 255.0
    raise CliError(
        f"{what}: these weights carry no normalization statistics; give a run folder or its best.pt"
    )


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from ..train.augment import BatchPipeline
    from ..train.data import load_image_files
    from ..train.errors import TrainError
    from ..train.evaluate import top_k
    from ..train.model import classifier_outputs

    resolve_run(args)
    network = load_network(args)
    module, state, _notes = _load_weights(args, network)
    shape = network.inputs[0].shape
    mean, std, pixel_max = normalization_of(state, int(shape[0]), f"--weights {args.weights}")
    classes = (
        list(state["classes"]) if state else [str(i) for i in range(classifier_outputs(module, network))]
    )
    try:
        images = load_image_files(args.images, shape, pixel_max)
    except TrainError as error:
        raise CliError(f"IMAGE {error}") from None
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
