"""``cnndsl lsp``: run the language server on stdin/stdout (editors start it; see docs/editors.md)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lsp",
        help="run the language server (LSP on stdio) for editors",
        description="Run the cnndsl language server, speaking the Language Server Protocol on stdin/stdout. "
        "Editors start it; see docs/editors.md.",
    )
    parser.add_argument(
        "--debounce-ms",
        type=int,
        default=30,
        metavar="MS",
        help="quiet time after a change before it is checked (default: 30)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..lsp.server import serve  # pygls is only imported when the server runs

    serve(max(args.debounce_ms, 0) / 1000)
    return 0
