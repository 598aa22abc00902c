"""``cnndsl lsp``: run the language server on stdin/stdout (editors start it; see docs/editors.md)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CliError


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
    try:
        from ..lsp.server import serve  # pygls is only imported when the server runs
    except ImportError as error:
        raise CliError(f"the language server needs pygls 2 ({error}); pip install 'pygls>=2'") from None

    serve(max(args.debounce_ms, 0) / 1000)
    return 0
