"""Helpers shared by the subcommands: loading a spec with the standard flags and exit codes, writing output."""

from __future__ import annotations

import argparse
import os
import sys

from ..diagnostics import SpecError
from ..elaborate import DEFAULT_NODE_BUDGET
from ..fileio import atomic_write
from ..network import Network


class CliError(Exception):
    """A usage or I/O problem: printed as one line, exit code 2 unless given."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SpecFailed(CliError):
    """The spec had errors; they were already printed."""

    def __init__(self) -> None:
        super().__init__("spec has errors", exit_code=1)


class NoNetwork(CliError):
    """The file parsed but defines no network (a library of blocks)."""

    def __init__(self) -> None:
        super().__init__("the file defines no network", exit_code=1)


def positive_int(text: str) -> int:
    """argparse type: a positive integer, with a one-line error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def depth(text: str) -> int | None:
    """argparse type for ``--depth``, the same in every command: a number of levels (1 or more), or ``all``
    (also ``full``) for every layer, which is ``None``."""
    if text.strip().lower() in ("all", "full"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of levels (1 or more) or 'all', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of levels (1 or more) or 'all', got {text!r}")
    return value


def add_spec_arguments(parser: argparse.ArgumentParser, file_help: str = "the .cnn spec") -> None:
    """The spec file and the flags every spec-reading command shares."""
    parser.add_argument("file", help=file_help)
    parser.add_argument("--network", metavar="NAME", help="which network, when the file defines several")
    parser.add_argument(
        "--input",
        metavar="SHAPE",
        action="append",
        help="override an input's shape, e.g. 3x299x299 or image=3x299x299 (repeatable)",
    )
    parser.add_argument(
        "--node-budget",
        type=positive_int,
        default=DEFAULT_NODE_BUDGET,
        metavar="N",
        help=f"refuse specs that elaborate to more than N nodes (default {DEFAULT_NODE_BUDGET:,})",
    )
    parser.add_argument(
        "--allow-outside-imports",
        action="store_true",
        help="allow imports outside the spec's directory tree",
    )
    parser.add_argument(
        "--max-errors", type=int, default=20, metavar="N", help="stop after N errors (default 20)"
    )


def parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """``3x224x224`` or ``image=3x224x224`` -> (name or None, shape)."""
    name, _, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
    except ValueError:
        raise CliError(f"--input {text!r}: expected dimensions like 3x224x224") from None
    if not shape or any(d < 1 for d in shape) or len(shape) not in (1, 3):
        raise CliError(f"--input {text!r}: expected C x H x W or F, all positive")
    return (name or None), shape


def load_network(
    args: argparse.Namespace, json_errors: bool = False, quiet_no_network: bool = False
) -> Network:
    """Load ``args.file``; on spec errors print them (text or JSON) and raise :class:`SpecFailed`."""
    from .. import load

    overrides: dict[str | None, tuple[int, ...]] = {}
    for text in getattr(args, "input", None) or []:
        name, shape = parse_shape(text)
        overrides[name] = shape
    try:
        return load(
            args.file,
            network=args.network,
            input_shapes=overrides or None,
            node_budget=args.node_budget,
            allow_outside_imports=args.allow_outside_imports,
            max_errors=args.max_errors,
        )
    except SpecError as error:
        only = error.diagnostics[0].code if len(error.diagnostics) == 1 else ""
        if quiet_no_network and only == "no-network":
            raise NoNetwork() from None
        raise spec_failed(args.file, error, json_errors) from None
    except OSError as error:
        raise CliError(f"cannot read {args.file}: {error.strerror or error}") from None


def json_report(file: str, ok: bool, diagnostics: list[dict[str, object]], **fields: object) -> str:
    """The one JSON shape of ``check --format json``, valid spec or not: an object with ``ok``, ``file`` and the
    ``diagnostics`` list (empty when ok), then what the command found (docs/language.md)."""
    import json

    return json.dumps(
        {"ok": ok, "file": file, "diagnostics": diagnostics, **fields}, indent=2, ensure_ascii=False
    )


def spec_failed(file: str, error: SpecError, json_errors: bool = False) -> SpecFailed:
    """Print a spec's errors (located text on stderr, or the JSON object on stdout); the caller raises the
    returned :class:`SpecFailed`."""
    if json_errors:
        print(json_report(file, False, [d.to_dict(error.sources) for d in error.diagnostics]))
    else:
        print(error.render(), file=sys.stderr)
        count = len(error.diagnostics)
        print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)
    return SpecFailed()


def output_format(
    given: str | None,
    output: str | None,
    suffixes: dict[str, str],
    default: str,
    unknown_suffix_is_default: bool = False,
) -> str:
    """The output format: ``--format`` if given, else the one the ``-o`` suffix names, else ``default``.

    A format that disagrees with the suffix is a usage error rather than, say, SVG text in a ``.png`` file; an
    unknown suffix is fine when ``--format`` names the format, and otherwise an error unless
    ``unknown_suffix_is_default``."""
    flag = "--format"
    suffix = os.path.splitext(output)[1].lower() if output else ""
    implied = suffixes.get(suffix)
    if given:
        if implied is not None and implied != given:
            raise CliError(
                f"{flag} {given} does not match the suffix of {output!r}, which means {implied}: "
                f"change one of them (or leave {flag} out)"
            )
        return given
    if output is None:
        return default
    if implied is None:
        if unknown_suffix_is_default:
            return default
        known = ", ".join(sorted(suffixes))
        raise CliError(f"cannot tell the format of {output!r} (known suffixes: {known}); use {flag}")
    return implied


def write_output(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write a file atomically; an I/O problem becomes a one-line :class:`CliError`."""
    try:
        atomic_write(path, data)
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from None
