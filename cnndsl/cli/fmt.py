"""``cnndsl fmt [--check] [--diff] FILE...``: rewrite specs in the canonical layout (:mod:`cnndsl.fmt`)."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..diagnostics import SpecError
from ..fmt import FormatError, format_source
from .common import CliError, write_output


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fmt",
        help="rewrite specs in the canonical layout",
        description=(
            "Rewrite .cnn files in the canonical layout (indentation, spacing, aligned shape assertions and "
            "comments); the network never changes. Directories are searched for *.cnn files; '-' reads standard "
            "input and writes standard output. Exit 0 when done (or, with --check, when nothing would change), "
            "1 when a file has a syntax error or --check finds a file to reformat, 2 on usage or I/O errors."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help=".cnn files or directories, or '-'")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; list the files that would change and exit 1 if any",
    )
    parser.add_argument(
        "--diff", action="store_true", help="write nothing; print a unified diff of the changes"
    )
    parser.set_defaults(handler=run)


def _spec_files(arguments: list[str]) -> Iterator[Path | None]:
    """The files to format in order; None stands for standard input. A directory yields its *.cnn files."""
    for argument in arguments:
        if argument == "-":
            yield None
            continue
        path = Path(argument)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*.cnn")
                if p.is_file() and not any(part.startswith(".") for part in p.parts)
            )
            if not found:
                raise CliError(f"no .cnn files under {argument}")
            yield from found
        elif path.exists() and not path.is_file():
            # A FIFO or a device would block the read or never end; only regular files are specs.
            raise CliError(f"cannot read {argument}: not a regular file or directory")
        else:
            yield path


def _read(path: Path | None) -> str:
    """The file's text; an unreadable file is a :class:`CliError`, a file that is not UTF-8 a one-line error."""
    try:
        data = sys.stdin.buffer.read() if path is None else path.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise CliError(f"{path or '<stdin>'}:{line}: file is not valid UTF-8", exit_code=1) from None


def run(args: argparse.Namespace) -> int:
    exit_code = 0
    changed: list[str] = []
    unchanged = 0
    for path in _spec_files(args.files):
        name = "<stdin>" if path is None else str(path)
        try:
            text = _read(path)
            formatted = format_source(text, name)
        except CliError as error:
            print(f"cnndsl fmt: error: {error}", file=sys.stderr)
            exit_code = max(exit_code, error.exit_code)
            continue
        except SpecError as error:
            print(error.render(), file=sys.stderr)
            count = len(error.diagnostics)
            print(f"{count} error{'s' if count != 1 else ''}; {name} left as it is", file=sys.stderr)
            exit_code = max(exit_code, 1)
            continue
        except FormatError as error:
            print(f"cnndsl fmt: internal error: {name}: {error}; the file is left as it is", file=sys.stderr)
            exit_code = max(exit_code, 2)
            continue
        if path is None and not (args.check or args.diff):
            sys.stdout.write(formatted)
            continue
        if formatted == text:
            unchanged += 1
            continue
        changed.append(name)
        if args.diff:
            for line in difflib.unified_diff(
                text.splitlines(keepends=True),
                formatted.splitlines(keepends=True),
                name,
                name + " (formatted)",
            ):
                # As diff(1) marks it, so that patch(1) can apply the output.
                sys.stdout.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        if args.check:
            print(f"would reformat {name}", file=sys.stderr)
        elif not args.diff and path is not None:
            write_output(path, formatted)
            print(f"reformatted {name}", file=sys.stderr)
    verb = "would be reformatted" if args.check or args.diff else "reformatted"
    if changed or unchanged:
        count = len(changed)
        print(f"{count} file{'s' if count != 1 else ''} {verb}, {unchanged} unchanged", file=sys.stderr)
    if args.check and changed:
        exit_code = max(exit_code, 1)
    return exit_code
