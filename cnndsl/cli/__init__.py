"""The ``cnndsl`` command line. Each subcommand lives in its own module with a ``register(subparsers)``
function; only this package writes files or prints, the stages it calls return data.

Exit codes: 0 ok, 1 errors in the spec, 2 usage or I/O errors.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .common import CliError, SpecFailed

# Subcommand modules, in the order `cnndsl --help` lists them. Importing one must not import torch.
COMMAND_MODULES = ("check", "summary", "draw", "compile", "train", "import_", "fmt", "lsp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnndsl",
        description="Describe, check, analyse, draw, compile and train CNNs from a .cnn spec.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"cnndsl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __name__)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except SpecFailed as error:
        return error.exit_code
    except CliError as error:
        print(f"cnndsl {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"cnndsl {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
