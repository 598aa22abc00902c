"""``cnndsl draw FILE -o out.svg``: draw the network with Graphviz (svg, png, pdf, dot) or as a mermaid flowchart.

svg, png and pdf need Graphviz's ``dot`` program; ``.dot`` and ``--format mermaid`` are plain text and do not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..render import AUTO_NODE_LIMIT
from .common import (
    CliError,
    add_spec_arguments,
    depth,
    load_network,
    output_format,
    positive_int,
    write_output,
)

FORMATS = ("svg", "png", "pdf", "dot", "mermaid")
RENDERED = ("svg", "png", "pdf")
_SUFFIXES = {
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".md": "mermaid",
}
DEFAULT_DPI = 144
"""PNG resolution: twice Graphviz's 72, so text stays sharp on today's screens."""
MAX_DPI = 600


def _depth(text: str) -> int | str | None:
    if text.strip().lower() == "auto":
        return "auto"
    return depth(text)


def _dpi(text: str) -> int:
    value = positive_int(text)
    if value > MAX_DPI:
        raise argparse.ArgumentTypeError(f"at most {MAX_DPI}, got {value}: the image would be enormous")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "draw",
        help="draw the network (svg, png, pdf, dot or mermaid)",
        description=(
            "Draw the network: layers labelled with their key arguments and costs, edges with tensor shapes, "
            "block instances as clusters titled with their call. The format comes from the -o suffix "
            "(.svg .png .pdf .dot .mmd) or --format; without -o, dot or mermaid text goes to stdout. "
            "svg, png and pdf need Graphviz's dot program (Debian/Ubuntu: apt-get install graphviz)."
        ),
    )
    add_spec_arguments(parser)
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="output file: out.svg, .png, .pdf, .dot or .mmd/.md"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from the -o suffix; it must agree with the suffix when both are given)",
    )
    parser.add_argument(
        "--dpi",
        type=_dpi,
        metavar="N",
        help=f"resolution of a png (default {DEFAULT_DPI}; Graphviz's own default is 72)",
    )
    parser.add_argument(
        "--depth",
        type=_depth,
        default="auto",
        metavar="K",
        help=(
            "draw K levels, as summary --depth: a block instance at level K is one box with its totals "
            "(1: every block the network calls is one box); 'all' draws every node. Default: every node "
            f"if that is at most {AUTO_NODE_LIMIT} boxes, else the deepest K that fits"
        ),
    )
    parser.add_argument(
        "--rankdir", choices=("TB", "LR"), default="TB", help="top-to-bottom or left-to-right"
    )
    parser.add_argument("--no-shapes", action="store_true", help="leave tensor shapes off the edges")
    parser.add_argument(
        "--no-costs", action="store_true", help="leave parameter and MAC counts off the boxes"
    )
    parser.add_argument("--no-legend", action="store_true", help="leave the colour legend out")
    parser.set_defaults(handler=run)


def _format(args: argparse.Namespace) -> str:
    return output_format(args.format, args.output, _SUFFIXES, "dot")


def run(args: argparse.Namespace) -> int:
    from .. import render

    fmt = _format(args)
    if fmt in RENDERED and args.output is None:
        raise CliError(f"--format {fmt} writes a binary or large file: give it a name with -o")
    if args.dpi is not None and fmt != "png":
        raise CliError(f"--dpi sets the resolution of a png; {fmt} output has none")
    network = load_network(args)
    depth = render.resolve_depth(network, args.depth)
    if args.depth == "auto" and depth is not None:
        print(
            f"cnndsl draw: note: {len(network.layers)} layers are too many to read at once: "
            f"{render.collapse_note(depth)} ({render.box_count(network, depth)} boxes); --depth all draws every node",
            file=sys.stderr,
        )
    rankdir, shapes, costs, legend = args.rankdir, not args.no_shapes, not args.no_costs, not args.no_legend
    data: str | bytes
    if fmt == "mermaid":
        data = render.to_mermaid(network, depth, rankdir, shapes=shapes, costs=costs, legend=legend)
        if args.output and Path(args.output).suffix.lower() == ".md":
            data = f"```mermaid\n{data}```\n"  # a markdown file GitHub renders as the diagram
    else:
        graph = render.to_graphviz(network, depth, rankdir, shapes=shapes, costs=costs, legend=legend)
        if fmt == "png":
            graph.graph_attr["dpi"] = str(
                args.dpi or DEFAULT_DPI
            )  # set here: the .dot and .svg stay unscaled
        data = graph.source if fmt == "dot" else _render(graph, fmt)
    if args.output is None:
        sys.stdout.write(data if isinstance(data, str) else data.decode())
        return 0
    write_output(args.output, data)
    return 0


def _render(graph: Any, fmt: str) -> bytes:
    import graphviz

    try:
        return bytes(graph.pipe(format=fmt, quiet=True))
    except graphviz.ExecutableNotFound:
        raise CliError(
            f"drawing {fmt} needs Graphviz's 'dot' program, which is not on PATH: install the graphviz package "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz). "
            "Writing .dot or --format mermaid works without it."
        ) from None
    except graphviz.CalledProcessError as error:
        stderr = error.stderr.decode(errors="replace").strip() if isinstance(error.stderr, bytes) else ""
        raise CliError(f"Graphviz's dot failed: {stderr.splitlines()[-1] if stderr else error}") from None
