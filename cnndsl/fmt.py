"""The canonical layout of a .cnn file: ``cnndsl fmt`` and the language server's formatting request.

The formatter reads the token stream (:func:`cnndsl.syntax.tokens`, comments and newlines included) and keeps
the author's line breaks; it decides indentation, the spaces between tokens, blank lines and the alignment of
shape assertions and trailing comments. Its rules are about kinds of tokens (brackets, operators, words), not
about particular statements, so a construct the grammar gains later is laid out without a new rule here.

The rules:

- 4 spaces per ``{ }`` body. A body's ``{`` ends its line and its ``}`` starts one; an empty body stays ``{}``.
- Inside brackets a line is indented 4 past the line that opened the innermost open bracket, and a closing
  bracket that starts a line lines up with that line. A line that starts with ``|`` is pulled back 2, so the
  branch's expression lines up with the other lines of the branch.
- A statement continued outside brackets (before or after ``->``, before a conditional expression's ``else``, or
  after a backslash) is indented 4 past its first line. An if's ``else`` on the line after its ``}`` stays level
  with the ``if``.
- One space around binary operators, ``->`` and ``|``, after commas and around words; none inside brackets,
  before commas, around ``.``, after a unary ``-`` or between a name and its ``(``. ``=`` and ``:`` are spaced
  at statement level (``x = conv(8) : [8, 4, 4]``) and tight inside brackets (``conv(8, stride=2)``,
  ``image: [3, 32, 32]``).
- Shape assertions (a statement's ``: shape``; not the ``:`` of a declaration that starts with a keyword, such as
  ``param w: [c, 1, 1] = 1.0``) line up in a column 2 past the longest code before one in their
  group; trailing comments line up 2 past the longest text before one, and never left of the shape column. A
  group is a run of lines of one body with no blank line between them (comment lines do not break it).
- At most one blank line in a row; none at the start of the file or of a body, or before a closing bracket; one
  around every top-level body (its comment
  stays attached). Comments are kept as written (trailing blanks dropped); the file ends in one
  newline.

Safety: the result is parsed again and must give the same syntax tree (spans aside) and the same comments as the
input, or :class:`FormatError` is raised and nothing is written.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lark import Token

from .diagnostics import LocatedError, SourceMap, SpecError
from .syntax import parse, parse_recovering, tokens

INDENT = 4
"""Spaces per body level and per open bracket line."""

GAP = 2
"""Least spaces between code and an aligned shape assertion or trailing comment."""

_OPENERS = {"(", "["}
_CLOSERS = {")", "]"}
_CONTINUES = {"->"}
"""Outside brackets a newline may stand before or after these without ending the statement (syntax's postlexer)."""
_CONTINUES_BEFORE = {"else"}
"""A newline may stand before these (not after) without ending the statement: an if's ``else`` on the line after its
``}``, or the ``else`` of a conditional expression continued on the next line."""

_OUTDENT = {"|": 2}
"""A line inside brackets that starts with one of these is pulled back so the rest lines up with the line above."""

_TIGHT_AFTER = {"(", "[", "."}
_TIGHT_BEFORE = {")", "]", ",", "."}
_UNARY = {"-", "+"}


class FormatError(Exception):
    """The formatter's own failure: the text it produced would not mean what the input meant (a bug).

    Raised instead of returning a changed program; the caller leaves the file as it is."""


@dataclass
class _Line:
    """One output line before indentation: its significant tokens, trailing comment and what came before it."""

    tokens: list[Token]
    comment: str | None = None
    blanks_before: int = 0
    backslash: bool = False  # ends with a line continuation


@dataclass
class _Laid:
    """A line with its indentation decided and its text split into the columns that alignment moves."""

    indent: int
    code: str = ""
    shape: str | None = None  # the statement-level shape assertion, without its ':'
    comment: str | None = None
    backslash: bool = False
    blanks_before: int = 0
    first: str = ""  # the first and last significant tokens ("" on a comment line)
    last: str = ""
    top_level_end: bool = False  # closes a top-level body: a blank line follows
    top_level_start: bool = False  # the first line of a top-level item with a body: a blank line comes before

    @property
    def comment_only(self) -> bool:
        return not self.first

    @property
    def delimits(self) -> bool:
        """Holds a body's ``{`` or ``}``: alignment groups stop at such a line."""
        return "{" in (self.first, self.last) or "}" in (self.first, self.last)

    def before_shape(self) -> int:
        return self.indent + len(self.code)

    def before_comment(self, shape_column: int) -> int:
        if self.shape is None:
            return self.indent + len(self.code)
        return max(shape_column, self.before_shape() + GAP) + 2 + len(self.shape)

    def render(self, shape_column: int, comment_column: int) -> str:
        text = " " * self.indent + self.code
        if self.shape is not None:
            text = text.ljust(max(shape_column, len(text) + GAP)) + ": " + self.shape
        if self.comment is not None:
            text = text.ljust(max(comment_column, len(text) + GAP)) if self.code or self.shape else text
            text += self.comment
        if self.backslash:
            text += " \\"
        return text


def format_source(text: str, file: str = "<string>") -> str:
    """``text`` in the canonical layout.

    Raises :class:`~cnndsl.diagnostics.SpecError` (located, as ``cnndsl check`` reports it) when the text does not
    parse, and :class:`FormatError` if the result would not be the same program (a bug in the formatter)."""
    # The cyclic garbage collector's passes over lark's many small objects made large files superlinear (as in the
    # front end); nothing here makes cycles that need it.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _format(text, file)
    finally:
        if was_enabled:
            gc.enable()


def _format(text: str, file: str) -> str:
    text = text.removeprefix("\ufeff")
    try:
        before = parse(text, file)
    except LocatedError as error:
        # Report every syntax error, with its code and suggested fix, as `cnndsl check` and the editor do.
        _, errors = parse_recovering(text, file)
        sources = SourceMap()
        sources.add(file, text)
        raise SpecError([e.diagnostic() for e in errors or [error]], sources) from None
    lines = _split_bodies(_lines(text))
    comments = [line.comment for line in lines if line.comment is not None]
    result = _render(_lay_out(lines))
    try:
        after = parse(result, file)
    except LocatedError as error:
        raise FormatError(f"the formatted text does not parse ({error.span}: {error.message})") from None
    if _strip_spans(before) != _strip_spans(after):
        raise FormatError("the formatted text parses to a different program")
    if comments != _comments(result):
        raise FormatError("the formatted text lost or changed a comment")
    return result


# ------------------------------------------------------------------------------------------- lines ---


def _lines(text: str) -> list[_Line]:
    """The source's lines as tokens, with comments, blank-line counts and continuations noted."""
    lines: list[_Line] = []
    current = _Line([])
    for token in tokens(text):
        if token.type == "_NL":
            lines.append(current)
            current = _Line([], blanks_before=token.value.count("\n") - 1)
        elif token.type == "COMMENT":
            current.comment = token.value.rstrip()
        elif token.value.startswith("\\"):
            current.backslash = True
            lines.append(current)
            current = _Line([])
        elif token.value.strip():
            current.tokens.append(token)
    lines.append(current)
    # Lines with neither tokens nor a comment are the blank lines already counted (and the file's last newline).
    kept: list[_Line] = []
    pending_blanks = 0
    for line in lines:
        if not line.tokens and line.comment is None:
            if line.backslash:
                continue  # a continuation onto an empty line is plain whitespace
            pending_blanks += 1 if kept else 0
            continue
        line.blanks_before += pending_blanks
        pending_blanks = 0
        kept.append(line)
    return kept


def _split_bodies(lines: Iterable[_Line]) -> list[_Line]:
    """Break lines after a body's ``{`` and before its ``}``, so every statement sits on lines of its own."""
    out: list[_Line] = []
    for line in lines:
        pieces: list[list[Token]] = [[]]
        for index, token in enumerate(line.tokens):
            previous = line.tokens[index - 1].value if index else None
            if token.value == "}" and pieces[-1] and previous != "{":
                pieces.append([])
            pieces[-1].append(token)
            following = line.tokens[index + 1].value if index + 1 < len(line.tokens) else None
            if token.value == "{" and following not in (None, "}"):
                pieces.append([])
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            out.append(
                _Line(
                    piece,
                    comment=line.comment if last else None,
                    blanks_before=line.blanks_before if number == 0 else 0,
                    backslash=line.backslash and last,
                )
            )
    return out


# ------------------------------------------------------------------------------------------ layout ---


def _is_operand_end(token: Token | None) -> bool:
    if token is None:
        return False
    if token.type in ("NAME", "NUMBER", "STRING"):
        return True
    return token.value in (")", "]", "?")


def _is_keyword(token: Token) -> bool:
    """A word the grammar reserves (``param``, ``if``, ``let``, ...): lexed as its own terminal, not a NAME."""
    return token.type != "NAME" and token.value[:1].isalpha()


def _space(previous: Token, token: Token, depth: int, unary: bool, declaration: bool = False) -> str:
    """The space between two tokens on one line; ``depth`` is the bracket depth at ``token``; ``declaration``: in a
    statement that starts with a keyword, whose ``:`` is tight like an input declaration's (``param w: [8]``)."""
    before, value = previous.value, token.value
    if before in _TIGHT_AFTER or value in _TIGHT_BEFORE or unary:
        return ""
    if value == "(" and previous.type == "NAME":
        return ""  # a call (built-ins such as min are names); after a keyword (`not (a or b)`) the bracket groups
    if before == "{" and value == "}":
        return ""
    if value == ":" and declaration:
        return ""
    if value in ("=", ":") and depth > 0:
        return ""  # keyword arguments, parameter defaults and input declarations: stride=2, image: [3, 8, 8]
    if before == "=" and depth > 0:
        return ""
    return " "


def _lay_out(lines: list[_Line]) -> list[_Laid]:
    """Indent each line and split it into code, shape assertion and comment."""
    laid: list[_Laid] = []
    braces = 0
    brackets: list[int] = []  # for each open bracket, the indentation of the line that opened it
    statement_indent = 0
    continued = False  # the previous line asked for the statement to go on (a trailing '->' or backslash)
    # The last two significant tokens, across lines: a '-' after an operator (or at the start) is unary.
    previous: Token | None = None
    before_previous: Token | None = None
    statement_first = 0  # index in `laid` of the current statement's first line
    # A statement that starts with a keyword declares (`param w: [c, 1, 1] = 1.0`): its ':' is no shape assertion.
    declaration = False
    for line in lines:
        opens_top_level = False
        if not line.tokens:
            laid.append(_Laid(0, comment=line.comment, blanks_before=line.blanks_before))
            continue
        first = line.tokens[0].value
        if brackets:
            indent = brackets[-1] if first in _CLOSERS else brackets[-1] + INDENT - _OUTDENT.get(first, 0)
        elif first == "}":
            indent = (braces - 1) * INDENT
        elif first in _CONTINUES_BEFORE and previous is not None and previous.value == "}":
            indent = braces * INDENT  # an if's `else` on the line after its `}`: level with the `if`
        elif continued or first in _CONTINUES or first in _CONTINUES_BEFORE:
            indent = statement_indent + INDENT
        else:
            indent = statement_indent = braces * INDENT
            statement_first = len(laid)
            declaration = _is_keyword(line.tokens[0])
        parts: list[str] = []
        colon: int | None = None
        for index, token in enumerate(line.tokens):
            depth = len(brackets)
            unary = previous is not None and previous.value in _UNARY and not _is_operand_end(before_previous)
            space = _space(line.tokens[index - 1], token, depth, unary, declaration) if index else ""
            parts.append(space + token.value)
            if token.value == ":" and depth == 0 and colon is None and not declaration:
                colon = index
            if token.value in _OPENERS:
                brackets.append(indent)
            elif token.value in _CLOSERS and brackets:
                brackets.pop()
            elif token.value == "{":
                braces += 1
                opens_top_level = opens_top_level or braces == 1
            elif token.value == "}":
                braces -= 1
            before_previous, previous = previous, token
        continued = line.backslash or (not brackets and line.tokens[-1].value in _CONTINUES)
        last = line.tokens[-1].value
        laid.append(
            _Laid(
                indent,
                "".join(parts[:colon]),
                shape="".join(parts[colon + 1 :]).lstrip() if colon is not None else None,
                comment=line.comment,
                backslash=line.backslash,
                blanks_before=line.blanks_before,
                first=first,
                last=last,
                top_level_end=last == "}" and braces == 0,
            )
        )
        if opens_top_level:
            laid[statement_first].top_level_start = True
    _indent_comment_lines(laid)
    _fix_blank_lines(laid)
    return laid


def _indent_comment_lines(laid: list[_Laid]) -> None:
    """A comment on a line of its own takes the indentation of the code that follows it."""
    following: _Laid | None = None
    for line in reversed(laid):
        if not line.comment_only:
            following = line
            continue
        if following is None:
            line.indent = 0
        elif following.first in _CLOSERS or following.first == "}":
            line.indent = following.indent + INDENT
        else:
            line.indent = following.indent + _OUTDENT.get(following.first, 0)


def _fix_blank_lines(laid: list[_Laid]) -> None:
    for index, line in enumerate(laid):
        above = laid[index - 1] if index else None
        if (
            above is None
            or above.last in _OPENERS
            or above.last == "{"
            or line.first in _CLOSERS
            or line.first == "}"
        ):
            line.blanks_before = 0
        elif above.top_level_end or (line.top_level_start and not above.comment_only):
            line.blanks_before = (
                1  # a top-level body stands apart from the code around it (not from its comment)
            )
        else:
            line.blanks_before = min(line.blanks_before, 1)


def _render(laid: list[_Laid]) -> str:
    """The lines as text, shape assertions and trailing comments aligned within each group."""
    out: list[str] = []
    for group in _groups(laid):
        members = [line for line in group if not line.comment_only and not line.delimits]
        shapes = [line.before_shape() + GAP for line in members if line.shape is not None]
        shape_column = max(shapes, default=0)
        comments = [line.before_comment(shape_column) + GAP for line in members if line.comment is not None]
        comment_column = max([*comments, shape_column], default=0) if comments else 0
        for line in group:
            out.extend([""] * line.blanks_before)
            out.append(line.render(shape_column, comment_column))
    return "\n".join(out) + "\n" if out else ""


def _groups(laid: list[_Laid]) -> list[list[_Laid]]:
    """Runs of lines whose shapes and comments align: a blank line or a body's brace ends a run."""
    groups: list[list[_Laid]] = []
    current: list[_Laid] = []
    for line in laid:
        if current and (line.blanks_before or line.delimits):
            groups.append(current)
            current = []
        current.append(line)
        if line.delimits:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


# ------------------------------------------------------------------------------------------ safety ---


def _strip_spans(value: Any) -> Any:
    """A syntax tree as nested tuples without its source positions, to compare two parses of one program."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,) + tuple(
            _strip_spans(getattr(value, f.name)) for f in dataclasses.fields(value) if "span" not in f.name
        )
    if isinstance(value, tuple | list):
        return tuple(_strip_spans(item) for item in value)
    return value


def _comments(text: str) -> list[str]:
    return [token.value.rstrip() for token in tokens(text) if token.type == "COMMENT"]
