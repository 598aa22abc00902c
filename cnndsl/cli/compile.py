"""``cnndsl compile FILE -o model.py`` (standalone PyTorch source) and
``cnndsl export FILE --onnx model.onnx`` (a checked ONNX model).

torch is imported only when a command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import CliError, add_spec_arguments, load_network, write_output


def register(subparsers: Any) -> None:
    compile_parser = subparsers.add_parser(
        "compile",
        help="write a standalone PyTorch module (.py) for a spec",
        description=(
            "Write a standalone Python file (it imports only torch) defining the network as a torch.nn.Module "
            "with the same state_dict keys and outputs as Network.to_torch()."
        ),
    )
    add_spec_arguments(compile_parser)
    compile_parser.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the .py (default: stdout)"
    )
    compile_parser.add_argument(
        "--logits", action="store_true", help="drop a trailing softmax, so the module returns logits"
    )
    compile_parser.set_defaults(handler=run_compile)

    export_parser = subparsers.add_parser(
        "export",
        help="export a spec to ONNX (needs the onnx extra)",
        description=(
            "Export the compiled network to ONNX with torch.onnx.export and validate it with the onnx checker. "
            "--input changes the input shape the model is exported for; the batch dimension stays dynamic."
        ),
    )
    add_spec_arguments(export_parser)
    export_parser.add_argument("--onnx", metavar="FILE", required=True, help="where to write the .onnx model")
    export_parser.add_argument(
        "--opset", type=int, metavar="N", help="ONNX opset version (default: the exporter's)"
    )
    export_parser.add_argument(
        "--batch", type=int, default=1, metavar="N", help="example batch size (default 1)"
    )
    export_parser.add_argument(
        "--static-batch", action="store_true", help="fix the batch dimension instead of leaving it dynamic"
    )
    export_parser.add_argument("--logits", action="store_true", help="drop a trailing softmax")
    export_parser.add_argument(
        "--weights", metavar="FILE", help="a saved state_dict (torch.save) to export instead of fresh weights"
    )
    export_parser.add_argument(
        "--match",
        choices=("name", "order"),
        default="name",
        help="pair --weights tensors by key (default) or by registration order (other frameworks' checkpoints)",
    )
    export_parser.set_defaults(handler=run_export)


def run_compile(args: argparse.Namespace) -> int:
    network = load_network(args)
    from ..codegen import generate

    source = generate(network, logits=args.logits, source=args.file)
    if args.output is None:
        sys.stdout.write(source)
        return 0
    write_output(args.output, source)
    layers = len(network.layers)
    print(
        f"{args.output}: class {_class_line(source)} ({layers} layers) written from {args.file}",
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
    network = load_network(args)
    from ..export import ExportError, OnnxUnavailable, export_onnx

    module = _load_weights(network, args.weights, args.match, args.logits) if args.weights else None
    try:
        data = export_onnx(
            network,
            batch=args.batch,
            logits=args.logits,
            opset=args.opset,
            dynamic_batch=not args.static_batch,
            module=module,
        )
    except ExportError as error:
        # A missing optional package is a setup problem (2); a failed export or check is the model's (1).
        raise CliError(str(error), exit_code=2 if isinstance(error, OnnxUnavailable) else 1) from None
    write_output(args.onnx, data)
    print(f"{args.onnx}: {len(data):,} bytes, passes the onnx checker", file=sys.stderr)
    return 0


def _load_weights(network: Any, path: str, match: str, logits: bool) -> Any:
    import torch

    from ..weights import WeightsMismatch, load_weights

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CliError(f"cannot read {path}: no such file") from None
    except Exception as error:  # noqa: BLE001 - unpickling raises many kinds; the user gets one line
        raise CliError(f"cannot load weights from {path}: {str(error).strip().splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps the state_dict
    module = network.to_torch(logits=logits)
    try:
        load_weights(module, state, match=match)
    except WeightsMismatch as error:
        raise CliError(f"{path}: {error}", exit_code=1) from None
    return module
