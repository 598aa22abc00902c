"""Source spans, located diagnostics and the one exception the public API raises.

Every stage reports problems as :class:`Diagnostic` values that point at a :class:`Span` of the user's
text; :class:`SpecError` carries them out of the API. Formatting (text with a caret, or JSON) lives here so
that the CLI, the API and the tests all render a diagnostic the same way.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Span:
    """A region of one source file: 1-based lines and columns, end column exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


UNKNOWN_SPAN = Span("<unknown>", 1, 1, 1, 2)


@dataclass(frozen=True)
class Frame:
    """One block instantiation: the instance's path, the call as written and where it was written."""

    path: str
    block: str
    call: str
    span: Span


@dataclass(frozen=True)
class Fix:
    """A suggested edit for a diagnostic: replace the text at ``span`` with ``replacement``.

    Editors offer it as a one-click fix (the language server's code action); it is data, so no consumer has to
    parse a message's "did you mean" text."""

    span: Span
    replacement: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "replacement": self.replacement,
        }


CODES: dict[str, str] = {
    # Reading and parsing.
    "not-utf8": "the file is not valid UTF-8",
    "syntax": "the text does not parse: an unexpected token or character, an unclosed bracket, a chained comparison",
    "syntax-limit": "bodies or else-if chains nested past the parser's limit (parsing stops there)",
    "syntax-semicolon": "a ';' between statements: statements end at the end of a line",
    "syntax-dangling-arrow": "a '->' with no layer after it",
    "syntax-unquoted-import": "an import path without its quotes",
    "syntax-shape": "a shape written 3x32x32 or (3, 32, 32) instead of [3, 32, 32]",
    "syntax-missing-arrow": "two layers on one line without '->' between them",
    # The program: imports, definitions, networks.
    "import-missing": "an imported file cannot be read",
    "import-outside": "an import outside the spec's directory tree (--allow-outside-imports allows it)",
    "import-cycle": "files that import each other",
    "duplicate-definition": "a block, def or network defined twice",
    "shadowing": "a name that would hide an op, block, def, built-in, parameter or tensor",
    "duplicate-name": "a parameter, input or tensor name declared twice in one place",
    "no-network": "the file defines no network (a library of blocks)",
    "unknown-network": "--network names no network of the file",
    "several-networks": "the file defines several networks and --network does not choose one",
    "no-input": "a network declares no input",
    "no-output": "a network body produces no tensor",
    "input-override": "--input names an input the network does not declare",
    # Names.
    "unknown-name": "a name that is no tensor, parameter, op or block here",
    "unknown-op": "a call of something that is neither an op nor a block",
    "unknown-parameter": "a keyword argument that the op or block does not take",
    "unknown-attribute": "a tensor dimension other than .c, .h, .w (or .h, .w of a flat tensor)",
    "no-block-input": "'in' used where there is no body input (file-level defaults, input declarations)",
    # Layers, values and tensors where another is expected.
    "expected-layer": "a value, a tensor with arguments, a value function or branches where a layer is expected",
    "expected-value": "a layer or a tensor where a value is expected",
    "expected-tensor": "an op's tensor argument that names no tensor",
    "tensor-inside-chain": "a tensor name or 'in' inside a chain, where it would discard its input",
    "value-type": "a value of the wrong kind: arithmetic on non-numbers, a condition that is not true or false",
    "division-by-zero": "a division or remainder by zero",
    "bad-shape": "an input shape, param shape or shape assertion that is not a list like [C, H, W] or [F]",
    # Calls.
    "missing-argument": "an op, block or def called without a parameter that has no default",
    "too-many-arguments": "more positional arguments than the op, block or def takes",
    "duplicate-argument": "a parameter given twice (by position and by name, or by name twice)",
    "builtin-arguments": "min, max, round, floor, ceil or int called with the wrong arguments",
    "recursion": "a block that instantiates itself, or a def that calls itself",
    # An op's own rules (its registry entry) refusing its arguments or its input.
    "op-argument-type": "an op argument of the wrong kind: not an integer, number, true/false, [h, w] or shape",
    "op-argument-range": "an op argument out of range: zero channels or stride, p past 1, a chunk index past the chunks",
    "op-choice": "an op argument that is none of its choices: mode=cubic, padding other than same, valid or sizes",
    "op-argument-conflict": "op arguments that exclude each other: resize's size/scale/like, align_corners with nearest",
    "op-input-rank": "a flat [F] tensor where the op needs [C, H, W], or the reverse (linear before flatten)",
    "op-channels": "groups or chunks that do not divide the channels, or a slice past them",
    "op-padding": "unusable padding: same with an even kernel, pool padding over half the kernel, reflect past the input",
    "op-transpose-padding": "a transposed conv's output_padding not smaller than its stride or its dilation",
    "op-output-size": "an empty output: a kernel larger than the padded input, too small a resize scale, an empty slice",
    "op": "an op's rule refused its arguments or input in a way no op-* code names",
    # Statements and constructs.
    "defaults": "a defaults entry that cannot apply (a merge, a block, a positional or tensor argument)",
    "return-in-if": "a return inside an if",
    "unreachable": "a statement after return",
    "tensor-count": "a block returning several tensors where one is expected, or destructured into a wrong count",
    "param-after-layers": "a param written after a layer of its body (torch registers it before them)",
    "repeat-count": "a repeat count that is not a non-negative integer",
    "merge-branches": "a merge without two or more branches, or with parameters",
    "merge": "merge branches whose shapes cannot be added, concatenated or multiplied",
    "shortcut": "a shortcut outside add, without another branch, or that no 1x1 strided conv can make",
    "shape-assertion": "a shape assertion that does not match the tensor's shape",
    "shape-assertion-count": "a destructuring assignment that asserts a different number of shapes than names",
    # Limits and failures.
    "limit": "a budget or limit: nodes, checking steps, nesting, numbers or tensors past 2**53, memory",
    "too-large": "a document too large for the language server to check",
    "internal": "a bug in cnndsl; please report it",
}
"""Every diagnostic code, with what it means. A code names the kind of problem and stays stable when a message's
wording changes (editors show it; the language server sends it; tools may match on it). docs/language.md lists
them (a test keeps the list current)."""


@dataclass(frozen=True)
class Diagnostic:
    """A located message about a spec.

    ``code`` names the kind of problem (one of :data:`CODES`) and stays stable when the wording changes;
    ``fixes`` are suggested edits (a did-you-mean as data)."""

    span: Span
    message: str
    severity: str = "error"
    chain: tuple[Frame, ...] = ()
    notes: tuple[str, ...] = ()
    code: str = field(kw_only=True)
    fixes: tuple[Fix, ...] = ()

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown diagnostic code {self.code!r}; add it to cnndsl.diagnostics.CODES")

    @property
    def file(self) -> str:
        return self.span.file

    @property
    def line(self) -> int:
        return self.span.line

    @property
    def column(self) -> int:
        return self.span.column

    def to_dict(self, sources: SourceMap | None = None) -> dict[str, Any]:
        return {
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "source_line": sources.line(self.span.file, self.span.line) if sources else None,
            "chain": [
                {"call": f.call, "file": f.span.file, "line": f.span.line, "column": f.span.column}
                for f in reversed(self.chain)
            ],
            "notes": list(self.notes),
            "fixes": [f.to_dict() for f in self.fixes],
        }

    def render(self, sources: SourceMap | None = None) -> str:
        """``file:line:col: error: message``, then the source line with a caret, then the instantiation chain."""
        out = [_escaped(f"{self.span}: {self.severity}: {self.message}")]
        text = sources.line(self.span.file, self.span.line) if sources else None
        if text is not None:
            # One character per column, so the caret stays aligned; control characters cannot reach the terminal.
            expanded = "".join(c if c.isprintable() else "\ufffd" for c in text.expandtabs(1))
            out.append("    " + expanded)
            start = max(self.span.column - 1, 0)
            if self.span.end_line == self.span.line:
                width = max(self.span.end_column - self.span.column, 1)
            else:
                width = max(len(expanded) - start, 1)
            width = min(width, max(len(expanded) - start, 1))
            out.append("    " + " " * start + "^" + "~" * (width - 1))
        for note in self.notes:
            out.append(_escaped(f"  note: {note}"))
        for frame in reversed(self.chain):
            out.append(_escaped(f"  in {frame.call} at {frame.span}"))
        return "\n".join(out)


def _escaped(text: str) -> str:
    """Control characters as escapes: names and strings from a hostile spec must not drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SourceMap:
    """File name -> text, so diagnostics can quote the offending line."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}

    def add(self, file: str, text: str) -> None:
        # Only "\n" ends a line, as in the lexer: str.splitlines() would also split at \r, \f, \u2028 and
        # other separators a comment may hold, and quote the wrong line.
        self._lines[file] = [line.removesuffix("\r") for line in text.split("\n")]

    def line(self, file: str, line: int) -> str | None:
        lines = self._lines.get(file)
        if lines is None or not 1 <= line <= len(lines):
            return None
        return lines[line - 1]


class SpecError(Exception):
    """Raised by :func:`cnndsl.load` and :func:`cnndsl.loads` when a spec has errors.

    ``diagnostics`` holds every error found (up to the error limit), each with file, line, column and message.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: SourceMap | None = None) -> None:
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.sources = sources or SourceMap()
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)

    def to_json(self) -> str:
        return json.dumps([d.to_dict(self.sources) for d in self.diagnostics], indent=2)


class LocatedError(Exception):
    """Internal: a single problem at a span, raised inside a stage and turned into a Diagnostic. Every raise
    names its ``code`` (one of :data:`CODES`): there is no generic one."""

    def __init__(
        self,
        span: Span,
        message: str,
        notes: Iterable[str] = (),
        *,
        code: str,
        fixes: Iterable[Fix] = (),
    ) -> None:
        super().__init__(message)
        self.span = span
        self.message = message
        self.notes = tuple(notes)
        self.code = code
        self.fixes = tuple(fixes)

    def diagnostic(self, chain: tuple[Frame, ...] = ()) -> Diagnostic:
        """This error as a :class:`Diagnostic`, code and fixes kept."""
        return Diagnostic(
            self.span, self.message, chain=chain, notes=self.notes, code=self.code, fixes=self.fixes
        )


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (a misspelling or a different case), or None when none is close."""
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in pool}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    match = closest(word, candidates)
    return f"; did you mean '{match}'?" if match else ""


def suggestion(word: str, span: Span, candidates: Iterable[str]) -> tuple[str, tuple[Fix, ...]]:
    """:func:`did_you_mean`'s text and the same suggestion as a :class:`Fix` that replaces ``span``."""
    match = closest(word, candidates)
    if match is None:
        return "", ()
    return f"; did you mean '{match}'?", (Fix(span, match),)


@dataclass
class DiagnosticSink:
    """Collects diagnostics up to a limit; ``full`` tells a stage to stop early."""

    limit: int = 20
    items: list[Diagnostic] = field(default_factory=list)

    def add(self, diagnostic: Diagnostic) -> None:
        if len(self.items) < self.limit and diagnostic not in self.items:
            self.items.append(diagnostic)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit
