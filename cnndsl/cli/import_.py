"""``cnndsl import``: write a .cnn spec for a Darknet .cfg or Caffe .prototxt model."""

from __future__ import annotations

import argparse
import sys

from .common import CliError, parse_shape, write_output


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="write a .cnn spec for a Darknet .cfg or Caffe .prototxt model",
        description="Read a model written for another tool and write it as a checked .cnn spec: recurring "
        "layer patterns become blocks, each line names its source layer. Formats: Darknet .cfg, Caffe "
        ".prototxt (deploy nets). See docs/import.md.",
    )
    parser.add_argument("source", help="the model file (.cfg or .prototxt)")
    parser.add_argument("-o", "--output", metavar="OUT.cnn", help="write the spec here (default: stdout)")
    parser.add_argument(
        "--input", metavar="SHAPE", help="the input shape, e.g. 3x416x416 (default: the file's own)"
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="import what is supported and mark each unsupported layer in the spec (passing its input through)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..importers import FORMATS, ImportFailure, import_file

    suffix = "." + args.source.rsplit(".", 1)[-1].lower() if "." in args.source else ""
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise CliError(f"{args.source}: unknown model format {suffix or '(no extension)'}; expected {known}")
    shape = None
    if args.input:
        _, shape = parse_shape(args.input)
        if len(shape) != 3:
            raise CliError(f"--input {args.input!r}: expected C x H x W")
    try:
        result = import_file(args.source, input_shape=shape, partial=args.partial)
    except ImportFailure as failure:
        print(failure.render(), file=sys.stderr)
        return 1
    except OSError as error:
        raise CliError(f"cannot read {args.source}: {error.strerror or error}") from None
    for gap in result.gaps:
        print(f"warning: not imported: {gap}", file=sys.stderr)
    if args.output:
        write_output(args.output, result.spec)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(result.spec)
    return 1 if result.gaps else 0
