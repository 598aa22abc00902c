"""``cnndsl import``: write a .cnn spec for a Darknet .cfg or Caffe .prototxt model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import CliError, parse_shape, write_output


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="write a .cnn spec for a PyTorch module, an ONNX file, a Darknet .cfg or a Caffe .prototxt",
        description="Read a model written for another tool and write it as a checked .cnn spec: recurring "
        "layer patterns become blocks, each line names its source layer. Sources: a Python factory "
        "(package.module:callable, traced with torch.fx), .onnx, Darknet .cfg, Caffe .prototxt (deploy nets). "
        "See docs/import.md.",
    )
    parser.add_argument(
        "source",
        help="the model: an .onnx file, a Darknet .cfg, a Caffe .prototxt, or a Python factory package.module:callable "
        "(e.g. torchvision.models:resnet50)",
    )
    parser.add_argument("-o", "--output", metavar="OUT.cnn", help="write the spec here (default: stdout)")
    parser.add_argument(
        "--input", metavar="SHAPE", help="the input shape, e.g. 3x416x416 (default: the file's own)"
    )
    parser.add_argument(
        "--weights",
        metavar="FILE.weights",
        help="Darknet sources: the cfg's .weights file, read and checked against the cfg (its size, layer by "
        "layer) and written with --weights-out",
    )
    parser.add_argument(
        "--weights-out",
        metavar="FILE",
        help="also write the source's weights under the spec's keys (.pt, or .safetensors); Python and ONNX "
        "sources, and Darknet cfgs given --weights",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="import what is supported and mark each unsupported layer in the spec (passing its input through)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..importers import FORMATS, ImportFailure, import_file, is_python_source

    python_source = is_python_source(args.source)
    suffix = "." + args.source.rsplit(".", 1)[-1].lower() if "." in args.source else ""
    if not python_source and suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise CliError(
            f"{args.source}: unknown model format {suffix or '(no extension)'}; expected {known} "
            "or a Python factory package.module:callable"
        )
    darknet = not python_source and suffix == ".cfg"
    if args.weights and not darknet:
        raise CliError(
            f"--weights {args.weights}: a weights file is read for Darknet .cfg sources only (PyTorch and ONNX "
            "sources hold their own weights; Caffe .caffemodel files are not read yet)"
        )
    if args.weights_out and darknet and not args.weights:
        raise CliError("--weights-out: a Darknet cfg holds no weights; give its .weights file with --weights")
    if args.weights_out and not (python_source or suffix == ".onnx" or darknet):
        raise CliError("--weights-out: Caffe weight files are not read yet (see docs/import.md)")
    shape = None
    if args.input:
        _, shape = parse_shape(args.input)
        if len(shape) != 3:
            raise CliError(f"--input {args.input!r}: expected C x H x W")
    try:
        if python_source:
            result, weights = _import_python(args.source, shape, args.partial, bool(args.weights_out))
        elif suffix == ".onnx":
            result, weights = _import_onnx(args.source, shape, args.partial, bool(args.weights_out))
        elif darknet and args.weights:
            result, weights = _import_darknet(args.source, args.weights, shape, args.partial)
        else:
            result, weights = import_file(args.source, input_shape=shape, partial=args.partial), None
    except ImportFailure as failure:
        print(failure.render(), file=sys.stderr)
        return 1
    except OSError as error:
        raise CliError(f"cannot read {error.filename or args.source}: {error.strerror or error}") from None
    for gap in result.gaps:
        print(f"warning: not imported: {gap}", file=sys.stderr)
    if args.output:
        write_output(args.output, result.spec)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(result.spec)
    if weights is not None and args.weights_out:
        _write_weights(args.weights_out, weights)
        print(f"wrote {args.weights_out} ({len(weights)} tensors)", file=sys.stderr)
    return 1 if result.gaps else 0


def _import_python(
    source: str, shape: tuple[int, ...] | None, partial: bool, weights: bool
) -> tuple[Any, Any]:
    from .. import loads
    from ..importers import import_graph
    from ..importers.torch_fx import import_torch, spec_state_dict

    imported = import_torch(source, input_shape=shape, partial=partial)
    result = import_graph(imported.graph)
    if not weights or result.gaps:
        return result, None
    return result, spec_state_dict(imported, loads(result.spec))


def _import_onnx(source: str, shape: tuple[int, ...] | None, partial: bool, weights: bool) -> tuple[Any, Any]:
    from .. import loads
    from ..importers import import_graph
    from ..importers.onnx_model import import_onnx, spec_state_dict

    imported = import_onnx(source, input_shape=shape, partial=partial)
    result = import_graph(imported.graph)
    if not weights or result.gaps:
        return result, None
    return result, spec_state_dict(imported, loads(result.spec))


def _import_darknet(
    source: str, weights_file: str, shape: tuple[int, ...] | None, partial: bool
) -> tuple[Any, Any]:
    """The cfg's spec and, read from its ``.weights`` file, its state_dict (None when the import has gaps)."""
    from .. import loads
    from ..importers import import_graph
    from ..importers.darknet import import_darknet_model
    from ..importers.darknet_weights import read_darknet_weights, spec_state_dict

    imported = import_darknet_model(source, partial=partial, input_shape=shape)
    result = import_graph(imported.graph)
    if result.gaps:
        print("warning: --weights not read: the import has gaps", file=sys.stderr)
        return result, None
    weights = read_darknet_weights(weights_file, imported)
    header = weights.header
    print(
        f"read {weights_file}: Darknet {header.version}, trained on {header.seen:,} images, "
        f"{weights.floats:,} floats for {len(imported.stored)} layers",
        file=sys.stderr,
    )
    for warning in weights.warnings:
        print(f"warning: {weights_file}: {warning}", file=sys.stderr)
    return result, spec_state_dict(imported, weights, loads(result.spec))


def _write_weights(path: str, state: dict[str, Any]) -> None:
    import io

    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in state.items()})
    else:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
    write_output(path, data)
