"""``cnndsl compile FILE -o model.py`` (standalone PyTorch source) and
``cnndsl export FILE --onnx model.onnx`` (a checked ONNX model).

torch is imported only when a command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import CliError, add_spec_arguments, load_network, write_output

RUN_HELP = "a .cnn spec, or a run folder of cnndsl train (its spec, with the classifier it was trained with)"


def register(subparsers: Any) -> None:
    compile_parser = subparsers.add_parser(
        "compile",
        help="write a standalone PyTorch module (.py) for a spec or a trained run",
        description=(
            "Write a standalone Python file (it imports only torch) defining the network as a torch.nn.Module "
            "with the same state_dict keys and outputs as Network.to_torch(). Given a run folder (or --weights), "
            "the file also carries the trained classes and normalization and a load(weights_path) helper, and "
            'the weights are written beside it as .safetensors: `import model; m = model.load("model.safetensors"); '
            "m(raw_pixels)`."
        ),
    )
    add_spec_arguments(compile_parser, file_help=RUN_HELP)
    compile_parser.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the .py (default: stdout)"
    )
    compile_parser.add_argument(
        "--logits", action="store_true", help="drop a trailing softmax, so the module returns logits"
    )
    compile_parser.add_argument(
        "--weights",
        metavar="FILE",
        help="trained weights to deploy: a cnndsl checkpoint, .safetensors or a state_dict (default with a run "
        "folder: its best.pt)",
    )
    compile_parser.add_argument(
        "--weights-out",
        metavar="FILE",
        help="where to write the weights as .safetensors (default with -o model.py: model.safetensors beside it)",
    )
    compile_parser.add_argument(
        "--match",
        choices=("name", "order"),
        default="name",
        help="pair --weights tensors by key (default) or by registration order (other frameworks' checkpoints)",
    )
    compile_parser.set_defaults(handler=run_compile)

    export_parser = subparsers.add_parser(
        "export",
        help="export a spec or a trained run to ONNX (needs the onnx extra) or .safetensors",
        description=(
            "Export the compiled network to ONNX with torch.onnx.export and validate it with the onnx checker. "
            "--input changes the input shape the model is exported for; the batch dimension stays dynamic. "
            "Given a run folder (or --weights), the trained weights are exported; --bake-normalization puts the "
            "training normalization into the model, so it takes raw pixels."
        ),
    )
    add_spec_arguments(
        export_parser, file_help=RUN_HELP.replace("(its spec, with", "(its spec and best.pt, with")
    )
    export_parser.add_argument("--onnx", metavar="FILE", help="where to write the .onnx model")
    export_parser.add_argument(
        "--safetensors",
        metavar="FILE",
        help="where to write the weights as .safetensors (with classes and normalization as metadata)",
    )
    export_parser.add_argument(
        "--bake-normalization",
        action="store_true",
        help="ONNX input: raw pixels (0..255, N x C x H x W float32), normalized inside the model as in training",
    )
    export_parser.add_argument(
        "--opset", type=int, metavar="N", help="ONNX opset version (default: the exporter's)"
    )
    export_parser.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="example batch size (default 1; a dynamic batch is traced at 2 or more, see docs/backend.md)",
    )
    export_parser.add_argument(
        "--static-batch", action="store_true", help="fix the batch dimension instead of leaving it dynamic"
    )
    export_parser.add_argument("--logits", action="store_true", help="drop a trailing softmax")
    export_parser.add_argument(
        "--weights",
        metavar="FILE",
        help="trained weights to export instead of fresh ones: a cnndsl checkpoint, .safetensors or a state_dict "
        "(default with a run folder: its best.pt)",
    )
    export_parser.add_argument(
        "--match",
        choices=("name", "order"),
        default="name",
        help="pair --weights tensors by key (default) or by registration order (other frameworks' checkpoints)",
    )
    export_parser.set_defaults(handler=run_export)


def run_compile(args: argparse.Namespace) -> int:
    from .train import resolve_run

    source_name = args.file
    run = resolve_run(args, weights=False)
    if run is not None and args.weights is None:
        args.weights = str(run.weights)
    if args.weights_out and not args.weights:
        raise CliError("--weights-out needs trained weights: give a run folder or --weights FILE")
    network = load_network(args)
    from ..codegen import generate

    if not args.weights:
        source = generate(network, logits=args.logits, source=args.file)
        if args.output is None:
            sys.stdout.write(source)
            return 0
        write_output(args.output, source)
        print(
            f"{args.output}: class {_class_line(source)} ({len(network.layers)} layers) written from {source_name}",
            file=sys.stderr,
        )
        return 0
    return _compile_trained(args, network, source_name)


def _compile_trained(args: argparse.Namespace, network: Any, source_name: str) -> int:
    """The module source with the trained model's classes, normalization and ``load``; the weights beside it."""
    import os

    from ..codegen import Deployment, generate
    from ..train.checkpoint import to_safetensors
    from .train import normalization_of

    if len(network.inputs) != 1:
        raise CliError(
            f"--weights: deploying needs a network with one input; {network.name} has {len(network.inputs)}"
        )
    module, state = _load_weights(network, args)
    # The file's class is built from the spec: the weights must fit it as they are (a run folder's spec does; a
    # spec whose classifier training replaced does not).
    expected = {k: tuple(v.shape) for k, v in network.to_torch(logits=args.logits).state_dict().items()}
    loaded = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if loaded != expected:
        keys = [*expected, *(k for k in loaded if k not in expected)]  # registration order, then extra keys
        differ = next(k for k in keys if loaded.get(k) != expected.get(k))
        raise CliError(
            f"--weights {args.weights}: tensor {differ} is {list(loaded.get(differ, ()))}, but the spec's module "
            f"has {list(expected.get(differ, ()))}; compile the run folder, whose spec matches its weights",
            exit_code=1,
        )
    mean, std, pixel_max = normalization_of(
        state, int(network.inputs[0].shape[0]), f"--weights {args.weights}"
    )
    classes = [str(c) for c in (state or {}).get("classes") or []]
    outputs = int(network.outputs[0].shape[0]) if len(network.outputs[0].shape) == 1 else 0
    if len(classes) < outputs:  # a bare state_dict names no classes: their indices
        classes += [str(i) for i in range(len(classes), outputs)]
    weights_out = args.weights_out
    if weights_out is None and args.output is not None:
        weights_out = os.path.splitext(args.output)[0] + ".safetensors"
    if (
        weights_out is not None
        and args.output is not None
        and os.path.abspath(weights_out) == os.path.abspath(args.output)
    ):
        raise CliError(
            f"--weights-out {weights_out}: the same file as -o; name the .py and the weights apart"
        )
    deploy = Deployment(
        classes=classes,
        mean=mean,
        std=std,
        pixel_max=pixel_max,
        weights=os.path.basename(weights_out) if weights_out else None,
    )
    source = generate(network, logits=args.logits, source=args.file, deploy=deploy)
    if weights_out is not None:
        saved = dict(state or {})
        saved["model"] = module.state_dict()
        saved.setdefault("network", network.name)
        saved.setdefault("input_shape", list(network.inputs[0].shape))
        saved.setdefault("classes", classes)
        saved.setdefault("normalize", {"mean": mean, "std": std})
        saved.setdefault("pixel_max", pixel_max)
        write_output(weights_out, to_safetensors(saved))
    if args.output is None:
        sys.stdout.write(source)
    else:
        write_output(args.output, source)
        print(
            f"{args.output}: class {_class_line(source)} ({len(network.layers)} layers) written from {source_name}, "
            f"with its {len(classes)} classes and normalization and load(weights_path)",
            file=sys.stderr,
        )
    if weights_out is not None:
        print(
            f"{weights_out}: the weights of {args.weights} ({len(module.state_dict()):,} tensors)",
            file=sys.stderr,
        )
    else:
        print(
            f"weights not copied (--weights-out FILE writes them as .safetensors); load() also reads {args.weights}",
            file=sys.stderr,
        )
    return 0


def _class_line(source: str) -> str:
    for line in source.splitlines():
        if line.startswith("class "):
            return line[len("class ") :].split("(", 1)[0]
    return "?"  # pragma: no cover - generate() always writes a class


def run_export(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise CliError(f"--batch must be positive, got {args.batch}")
    if not args.onnx and not args.safetensors:
        raise CliError("--onnx FILE or --safetensors FILE: say what to write")
    from .train import resolve_run

    run = resolve_run(args, weights=False)
    if run is not None and args.weights is None:
        args.weights = str(run.weights)
    network = load_network(args)
    from ..export import ExportError, OnnxUnavailable, export_onnx_files

    module, state = _load_weights(network, args) if args.weights else (None, None)
    if (args.bake_normalization or args.safetensors) and module is None:
        flag = "--bake-normalization" if args.bake_normalization else "--safetensors"
        raise CliError(f"{flag} needs trained weights: give a run folder or --weights FILE")
    if args.safetensors:
        from ..train.checkpoint import to_safetensors

        saved = dict(state or {})
        saved["model"] = module.state_dict()  # type: ignore[union-attr]
        saved.setdefault("network", network.name)
        saved.setdefault("input_shape", list(network.inputs[0].shape))
        write_output(args.safetensors, to_safetensors(saved))
        print(f"{args.safetensors}: {len(saved['model']):,} tensors", file=sys.stderr)
    if not args.onnx:
        return 0
    if args.bake_normalization:
        from ..export import with_normalization
        from .train import normalization_of

        mean, std, pixel_max = normalization_of(
            state, int(network.inputs[0].shape[0]), f"--weights {args.weights}"
        )
        assert module is not None
        module = with_normalization(module, mean, std, pixel_max / 255.0)
    try:
        files = export_onnx_files(
            network,
            name=Path(args.onnx).name,
            batch=args.batch,
            logits=args.logits,
            opset=args.opset,
            dynamic_batch=not args.static_batch,
            module=module,
        )
    except ExportError as error:
        # A missing optional package is a setup problem (2); a failed export or check is the model's (1).
        raise CliError(str(error), exit_code=2 if isinstance(error, OnnxUnavailable) else 1) from None
    if files.data is not None:
        # Weights over 2 GiB cannot be inside the .onnx protobuf: the model reads them from this file beside it.
        assert files.data_name is not None
        data_path = Path(args.onnx).with_name(files.data_name)
        write_output(data_path, files.data)
        print(f"{data_path}: {len(files.data):,} bytes of weights", file=sys.stderr)
    write_output(args.onnx, files.model)
    print(f"{args.onnx}: {len(files.model):,} bytes, passes the onnx checker", file=sys.stderr)
    return 0


def _load_weights(network: Any, args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """The module with ``--weights`` loaded, and the cnndsl checkpoint it came from (None for a state_dict)."""
    from ..train.checkpoint import is_cnndsl_checkpoint, load_checkpoint, state_dict_of
    from ..train.errors import TrainError
    from ..train.model import load_into
    from ..weights import WeightsMismatch, load_weights

    path = args.weights
    try:
        obj = load_checkpoint(path)
    except TrainError as error:
        raise CliError(f"--weights {error}") from None
    if is_cnndsl_checkpoint(obj):
        # Our own file: matched by name, the classifier shaped like the checkpoint's, its normalization kept.
        module = network.to_torch(logits=args.logits)
        try:
            _, state = load_into(module, network, path)
        except TrainError as error:
            raise CliError(str(error), exit_code=1) from None
        return module, state
    try:
        state_dict = state_dict_of(obj, path)
    except TrainError as error:
        raise CliError(f"--weights {error}") from None
    module = network.to_torch(logits=args.logits)
    try:
        load_weights(module, state_dict, match=args.match)
    except WeightsMismatch as error:
        hint = "; --match order pairs tensors by position instead" if error.order_might_fit else ""
        raise CliError(f"--weights {path}: {error.reason}{hint}", exit_code=1) from None
    return module, None
