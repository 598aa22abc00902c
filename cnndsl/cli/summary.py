"""``cnndsl summary FILE`` (params, MACs, FLOPs, memory and receptive field per layer and in total) and
``cnndsl explain FILE [LAYER_PATH]`` (the formulas with the numbers filled in). Both are static: no torch."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    CliError,
    add_spec_arguments,
    depth,
    load_network,
    output_format,
    positive_int,
    write_output,
)

SUFFIXES = {".txt": "text", ".md": "md", ".json": "json", ".html": "html", ".htm": "html"}


def register(subparsers: Any) -> None:
    from ..analysis import DTYPE_BYTES
    from ..report import FORMATS

    parser = subparsers.add_parser(
        "summary",
        help="params, MACs, FLOPs, memory and receptive field per layer and in total",
        description=(
            "Static analysis of a spec: per-layer output shape, params, MACs, FLOPs, activation size and receptive "
            "field, and totals with their counting conventions. No forward pass, no torch."
        ),
    )
    add_spec_arguments(parser)
    parser.add_argument(
        "--batch", type=positive_int, default=1, metavar="N", help="batch size for memory (default 1)"
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPE_BYTES),
        default="float32",
        help="element type for memory (default float32)",
    )
    parser.add_argument(
        "--depth",
        type=depth,
        metavar="K",
        help="show rows at most K path levels deep: a block instance at level K becomes one row with its sums "
        "(1 = the network body's layers and blocks); 'all' (the default) shows every layer",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from the -o suffix .txt .md .json .html, else text); html is an "
        "interactive page with the diagram, a collapsible tree, sortable columns and cost charts",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    parser.set_defaults(handler=run_summary)

    explain = subparsers.add_parser(
        "explain",
        help="the formulas behind each layer's shape, params, MACs and receptive field, numbers filled in",
        description=(
            "Explain layers for learners: output size, params, MACs, FLOPs and receptive field as formulas with the "
            "numbers filled in, and the dense layer a convolution replaces. LAYER_PATH picks one layer or every "
            "layer of one block instance (e.g. Stage.1/Basic.0); without it every layer is explained."
        ),
    )
    add_spec_arguments(explain)
    explain.add_argument("layer", nargs="?", metavar="LAYER_PATH", help="a layer or block instance path")
    explain.add_argument(
        "--depth",
        type=depth,
        metavar="K",
        help="explain only layers at most K path levels deep, as summary --depth (1 = written in the network "
        "body); 'all' (the default) explains every layer",
    )
    explain.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    explain.set_defaults(handler=run_explain)


def _emit(text: str, output: str | None) -> None:
    if output:
        write_output(output, text)
    else:
        print(text, end="")


def run_summary(args: argparse.Namespace) -> int:
    from ..analysis import AnalysisError, summarize
    from ..report import render

    fmt = output_format(args.format, args.output, SUFFIXES, "text", unknown_suffix_is_default=True)
    network = load_network(args)
    try:
        summary = summarize(network, batch=args.batch, dtype=args.dtype, depth=args.depth)
    except AnalysisError as error:
        raise CliError(str(error), exit_code=1) from None
    _emit(render(summary, fmt), args.output)
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..analysis import AnalysisError
    from ..explain import explain, render_explanations

    network = load_network(args)
    try:
        explanations = explain(network, args.layer)
    except (AnalysisError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        raise CliError(str(message)) from None
    if args.depth is not None:
        explanations = [e for e in explanations if len(network.node(e.path).frames) < args.depth]
        if not explanations:
            raise CliError(f"no layer at most {args.depth} levels deep there; try a larger --depth or 'all'")
    _emit(render_explanations(network, explanations), args.output)
    return 0
