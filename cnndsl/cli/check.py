"""``cnndsl check FILE``: parse and shape-check; print inputs and outputs, or located errors."""

from __future__ import annotations

import argparse
from typing import Any

from ..diagnostics import SpecError
from ..ops import fmt_shape
from .common import NoNetwork, add_spec_arguments, json_report, load_network, spec_failed


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="parse and shape-check a spec",
        description="Parse and shape-check a spec. Exit 0 if it is valid, 1 if it has errors, 2 on usage errors.",
    )
    add_spec_arguments(parser)
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format; json is always one object: ok, file, diagnostics (empty when ok) and what was found",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        network = load_network(args, json_errors=args.format == "json", quiet_no_network=True)
    except NoNetwork:
        # A file of blocks only (a library for imports): parse and check what can be checked without an input.
        from ..frontend import check_library

        try:
            blocks = check_library(args.file, allow_outside_imports=args.allow_outside_imports)
        except SpecError as error:
            raise spec_failed(args.file, error, json_errors=args.format == "json") from None
        if args.format == "json":
            print(json_report(args.file, True, [], library=True, blocks=blocks))
        else:
            print(f"{args.file}: ok: library of {len(blocks)} blocks ({', '.join(blocks)}), no network")
        return 0
    if args.format == "json":
        print(
            json_report(
                args.file,
                True,
                [],
                library=False,
                network=network.name,
                inputs={t.name: list(t.shape) for t in network.inputs},
                outputs={t.name: list(t.shape) for t in network.outputs},
                nodes=len(network.layers),
            )
        )
        return 0
    print(f"{args.file}: ok: network {network.name}, {len(network.layers)} layers")
    for tensor in network.inputs:
        print(f"  input  {tensor.name}: {fmt_shape(tensor.shape)}")
    for tensor in network.outputs:
        print(f"  output {tensor.name}: {fmt_shape(tensor.shape)}")
    return 0
