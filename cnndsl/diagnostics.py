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


@dataclass(frozen=True)
class Diagnostic:
    """A located message about a spec.

    ``code`` names the kind of problem (``syntax``, ``unknown-name``, ...) and stays stable when the wording
    changes; ``fixes`` are suggested edits (a did-you-mean as data)."""

    span: Span
    message: str
    severity: str = "error"
    chain: tuple[Frame, ...] = ()
    notes: tuple[str, ...] = ()
    code: str = "check"
    fixes: tuple[Fix, ...] = ()

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
    """Internal: a single problem at a span, raised inside a stage and turned into a Diagnostic."""

    def __init__(
        self,
        span: Span,
        message: str,
        notes: Iterable[str] = (),
        *,
        code: str = "check",
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
