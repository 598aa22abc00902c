"""Stage 1, parse: text -> AST (plain frozen dataclasses, each with its source span).

The grammar is ``grammars/cnn.lark`` (LALR). A small postlexer makes newlines significant only where they end a
statement. Syntax errors come out as :class:`~cnndsl.diagnostics.LocatedError` in friendly words, never as
lark's terminal names.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from .diagnostics import Fix, LocatedError, Span

MAX_NESTING = 100
"""Brackets nested deeper than this are refused before parsing: no input may exhaust the Python stack.

Operators count too: ``1 + 1 + ...`` and ``- - 1`` nest the syntax tree one level per operator, so the depth
checked is open brackets plus the arithmetic operators of the expressions they contain."""

MAX_INT_LITERAL = 2**53
"""Integer literals past this are refused where they are written (elaboration refuses results past it too)."""


# --------------------------------------------------------------------------------------------------- AST ---


@dataclass(frozen=True)
class Number:
    value: int | float
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Wildcard:
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class Attr:
    base: str
    attr: str
    span: Span


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: Expr
    span: Span  # the parameter name's span


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Chain:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Branches:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Not:
    """``not operand``."""

    operand: Expr
    span: Span


@dataclass(frozen=True)
class Cond:
    """``then if test else orelse``: a value, or a layer when it stands in a chain."""

    then: Expr
    test: Expr
    orelse: Expr
    span: Span


@dataclass(frozen=True)
class Repeat:
    """``layer * count as index``: a repetition whose copies see their position as the value ``index``."""

    layer: Expr
    count: Expr
    index: str
    index_span: Span
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Group:
    expr: Expr
    span: Span


Expr = (
    Number
    | String
    | Wildcard
    | Name
    | Attr
    | Call
    | Chain
    | Branches
    | BinOp
    | Neg
    | Not
    | Cond
    | Repeat
    | ListExpr
    | Group
)
"""``BinOp.op`` is one of ``+ - * / // %`` (arithmetic), ``== != < <= > >=`` (comparison) or ``and``/``or``."""


@dataclass(frozen=True)
class ExprStmt:
    expr: Expr
    shape: Expr | None
    span: Span


@dataclass(frozen=True)
class Assign:
    name: str
    name_span: Span
    expr: Expr
    shape: Expr | None
    span: Span


@dataclass(frozen=True)
class MultiAssign:
    """``a, b = expr``: takes apart the several tensors a block returns. ``shapes`` are the asserted shapes
    (``a, b = Down(64) : [64, 32, 32], [64, 64, 64]``), one per name when written, else empty; ``shapes_span``
    covers all of them (None when there are none)."""

    names: tuple[str, ...]
    name_spans: tuple[Span, ...]
    expr: Expr
    span: Span
    shapes: tuple[Expr, ...] = ()
    shapes_span: Span | None = None


@dataclass(frozen=True)
class Let:
    """``let name = expr``: binds a value (not a tensor) for the rest of the body."""

    name: str
    name_span: Span
    expr: Expr
    span: Span


@dataclass(frozen=True)
class If:
    """``if test { body } else { orelse }``; ``orelse`` is empty without ``else`` (``else if`` nests an If)."""

    test: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    """``param name: shape = init``: a learnable tensor owned by the enclosing block."""

    name: str
    name_span: Span
    shape: Expr
    init: Expr
    span: Span


@dataclass(frozen=True)
class Return:
    exprs: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Defaults:
    calls: tuple[Call, ...]
    span: Span


Stmt = ExprStmt | Assign | MultiAssign | Return | Defaults | Let | If | ParamDecl


@dataclass(frozen=True)
class Import:
    path: str
    span: Span


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class FuncDef:
    """``def name(params) = expr``: a named value expression."""

    name: str
    params: tuple[Param, ...]
    expr: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class InputDecl:
    name: str
    shape: Expr
    span: Span


@dataclass(frozen=True)
class NetworkDef:
    name: str
    inputs: tuple[InputDecl, ...]
    body: tuple[Stmt, ...]
    span: Span
    name_span: Span


Item = Import | Defaults | BlockDef | NetworkDef | FuncDef


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    file: str
    items: tuple[Item, ...]


# ------------------------------------------------------------------------------------------- postlexer ---

_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB"}
_CLOSERS = {"RPAR", "RSQB"}
# Each of these nests the tree one level.
_ARITHMETIC = {
    "PLUS",
    "MINUS",
    "STAR",
    "SLASH",
    "FLOORDIV",
    "PERCENT",
    "COMPARE",
    "AND",
    "OR",
    "NOT",
    "IF",
    "ELSE",
}
_SIBLINGS = {"COMMA", "VBAR", "_ARROW", "EQUAL", "COLON"}  # what follows starts a new subtree at this level


class _PostLexer:
    """Newlines end statements except inside brackets, after '{' or '->', or before '}', '->' or 'else'.

    Also refuses nesting deeper than :data:`MAX_NESTING` (brackets with operators, and braces) and reports an
    unclosed bracket where it was opened.
    """

    always_accept = ("_NL",)

    def __init__(self, file: str) -> None:
        self.file = file
        self.open_brackets: list[Token] = []
        self.if_condition: Token | None = None
        """The `if` whose condition is being read (before its '{'), for the message when the '{' is missing."""

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        stack: list[Token] = []
        self.open_brackets = stack
        # Arithmetic operators in the current subtree, per bracket level (0: outside brackets), and their sum.
        operators = [0]
        nested_operators = 0
        pending_newline: Token | None = None
        previous: str | None = None
        braces = 0  # bodies nested in bodies (`if` inside a block); each level nests the tree
        chained = [0]  # `else if` in the current statement, per body: each nests the tree one level
        self.if_condition = None
        for token in stream:
            kind = token.type
            starts_statement = pending_newline is not None or previous in (None, "LBRACE", "RBRACE", "ELSE")
            if kind == "IF" and not stack and starts_statement:
                self.if_condition = token
                if previous == "ELSE":
                    chained[-1] += 1
                    if chained[-1] > MAX_NESTING:
                        raise LocatedError(
                            _token_span(self.file, token),
                            f"more than {MAX_NESTING} 'else if' in one chain",
                            code=LIMIT_CODE,
                        )
            elif kind in ("LBRACE", "_NL") and not stack:
                self.if_condition = None
            if kind == "_NL":
                if not stack and previous not in (None, "LBRACE", "_ARROW", "_NL"):
                    pending_newline = token
                if not stack:
                    nested_operators, operators[0] = 0, 0
                continue
            if kind in _OPENERS:
                stack.append(token)
                operators.append(0)
                if len(stack) > MAX_NESTING:
                    raise LocatedError(
                        _token_span(self.file, token),
                        f"brackets nested more than {MAX_NESTING} deep",
                        code="syntax",
                    )
            elif kind in _CLOSERS:
                if stack and _OPENERS[stack[-1].type] == kind:
                    stack.pop()
                    nested_operators -= operators.pop()
            elif kind in _ARITHMETIC:
                operators[-1] += 1
                nested_operators += 1
                if len(stack) + nested_operators > MAX_NESTING:
                    raise LocatedError(
                        _token_span(self.file, token),
                        f"expression nested more than {MAX_NESTING} deep (brackets and arithmetic operators "
                        "count); split it or use a block parameter",
                        code="syntax",
                    )
            elif kind in _SIBLINGS or (kind in ("LBRACE", "RBRACE") and not stack):
                nested_operators -= operators[-1]
                operators[-1] = 0
                if kind == "LBRACE":
                    braces += 1
                    chained.append(0)
                    if braces > MAX_NESTING:
                        raise LocatedError(
                            _token_span(self.file, token),
                            f"bodies ({{ ... }}) nested more than {MAX_NESTING} deep",
                            code=LIMIT_CODE,
                        )
                elif kind == "RBRACE":
                    braces -= 1
                    if len(chained) > 1:
                        chained.pop()
            elif kind in ("LBRACE", "RBRACE"):
                opener = stack[-1]
                raise LocatedError(
                    _token_span(self.file, opener),
                    f"unclosed '{opener.value}' before '{token.value}' at line {token.line}",
                    code="syntax",
                )
            if pending_newline is not None and kind not in ("RBRACE", "_ARROW", "ELSE"):
                chained[-1] = 0
                yield pending_newline
            pending_newline = None
            previous = kind
            yield token
        if stack:
            opener = stack[-1]
            raise LocatedError(
                _token_span(self.file, opener), f"unclosed '{opener.value}' at end of file", code="syntax"
            )


# -------------------------------------------------------------------------------------------- parser ---


def _grammar_text() -> str:
    try:
        return importlib.resources.files("cnndsl.grammars").joinpath("cnn.lark").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        # A source checkout that is not installed: the grammar sits beside the package.
        return (Path(__file__).resolve().parent.parent / "grammars" / "cnn.lark").read_text(encoding="utf-8")


@cache
def _parser() -> Lark:
    return Lark(
        _grammar_text(),
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=True,
        postlex=_PostLexer("<string>"),
        cache=True,
    )


@cache
def _layout_lexer() -> Lark:
    return Lark(_grammar_text(), parser="lalr", lexer="basic")


def tokens(text: str) -> Iterator[Token]:
    """Every token of ``text`` as the grammar lexes it, comments, blanks and every newline included (no
    postlexer), for tools that keep the layout: the formatter (:mod:`cnndsl.fmt`) and highlighters.

    Raises lark's ``UnexpectedCharacters`` on a character no token matches; :func:`parse` the text first for a
    located error.
    """
    return _layout_lexer().lex(text, dont_ignore=True)


def keywords() -> frozenset[str]:
    """The grammar's reserved words (``block``, ``network``, ``return``, ...): its terminals spelled as names, for
    highlighters and completion."""
    return frozenset(
        terminal.pattern.value
        for terminal in _layout_lexer().terminals
        if terminal.pattern.type == "str" and re.fullmatch(r"[A-Za-z_]\w*", terminal.pattern.value)
    )


_ARROW_NAMES: dict[str, str] = {}


@cache
def _terminal_words() -> dict[str, str]:
    """Terminal name -> words a user understands."""
    words = {
        "NAME": "a name",
        "NUMBER": "a number",
        "STRING": "a string",
        "COMPARE": "a comparison",
        "FLOORDIV": "'//'",
        "_NL": "end of line",
        "$END": "end of file",
    }
    for terminal in _parser().terminals:
        if terminal.name in words:
            continue
        if terminal.pattern.type == "str":
            words[terminal.name] = f"'{terminal.pattern.value}'"
        else:
            words[terminal.name] = terminal.name.lower()
    return words


_CLOSERS_WORDS = ("COMMA", "RPAR", "RSQB", "RBRACE", "_NL", "$END")
_OPERATORS = {
    "PLUS",
    "MINUS",
    "STAR",
    "SLASH",
    "PERCENT",
    "_ARROW",
    "VBAR",
    "COLON",
    "DOT",
    "LPAR",
    "EQUAL",
    "LBRACE",
    "FLOORDIV",
    "COMPARE",
    "AND",
    "OR",
    "IF",
    "ELSE",
    "AS",
}


def _describe_expected(expected: set[str], inside: str | None = None) -> str:
    """Friendly words for what could come next; ``inside`` is the innermost open bracket's terminal name."""
    words = _terminal_words()
    context = {"LPAR": ("COMMA", "RPAR"), "LSQB": ("COMMA", "RSQB")}.get(
        inside or "", ("_NL", "RBRACE", "$END")
    )
    expected = {e for e in expected if e not in _CLOSERS_WORDS or e in context} or expected
    if {"NAME", "NUMBER"} <= expected:
        # An expression could start here; listing every operator would bury the point.
        rest = sorted(words.get(e, e) for e in expected if e in _CLOSERS_WORDS)
        return "an expression" + (" or " + " or ".join(rest) if rest else "")
    closers = [e for e in _CLOSERS_WORDS if e in expected]
    if closers and all(
        e in _OPERATORS
        or e in _CLOSERS_WORDS
        or words.get(e, "").strip("'") in ("+", "-", "*", "/", "//", "%", "->", "|", ":", ".", "(", "=")
        for e in expected
    ):
        # Only operators could continue the expression; what the user most likely missed is a separator.
        names = [words.get(e, e) for e in closers]
        return " or ".join(names)
    names = sorted(words.get(e, e) for e in expected)
    if len(names) > 6:
        names = names[:6] + ["..."]
    return " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)


def _token_span(file: str, token: Token) -> Span:
    line = token.line or 1
    column = token.column or 1
    end_line = token.end_line or line
    end_column = token.end_column or column + max(len(str(token)), 1)
    return Span(file, line, column, end_line, end_column)


def _end_span(file: str, text: str) -> Span:
    """Just past the last character of the last non-blank line (where a missing '}' belongs)."""
    lines = text.rstrip().split("\n")
    line = len(lines)
    column = len(lines[-1]) + 1
    return Span(file, line, column, line, column + 1)


def _syntax_error(
    file: str,
    text: str,
    error: UnexpectedInput,
    open_brackets: list[Token],
    if_condition: Token | None = None,
) -> LocatedError:
    if open_brackets and isinstance(error, UnexpectedToken) and error.token.type != "$END":
        opener = open_brackets[-1]
        if (error.token.line or 0) > (opener.line or 0):
            # The parser only noticed later lines; the missing bracket is the likelier mistake.
            return LocatedError(
                _token_span(file, opener),
                f"'{opener.value}' is never closed",
                notes=(f"the parser was still inside it at line {error.token.line}: '{error.token.value}'",),
                code="syntax",
            )
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            span = _end_span(file, text)
            found = "end of file"
        else:
            span = _token_span(file, token)
            if token.type == "_NL":
                found = "end of line"
                span = Span(file, span.line, span.column, span.line, span.column + 1)
            else:
                found = f"'{token.value}'"
        expected = {e for e in error.expected if not e.startswith("__")} or set(error.expected)
        if token.type == "$END":
            expected.discard("_NL")
        if token.type == "COMPARE":
            # A comparison is only refused right after another one.
            return LocatedError(
                span,
                f"unexpected {found}: comparisons do not chain; write a < b and b < c, not a < b < c",
                code="syntax",
            )
        if token.type == "ELSE":
            return LocatedError(
                span, "unexpected 'else': it goes right after the '}' of an if", code="syntax"
            )
        if if_condition is not None and not open_brackets and "LBRACE" in expected:
            return LocatedError(
                span,
                f"unexpected {found}; expected '{{' (the body of an if is written in braces)",
                code="syntax",
            )
        inside = open_brackets[-1].type if open_brackets else None
        return LocatedError(
            span, f"unexpected {found}; expected {_describe_expected(expected, inside)}", code="syntax"
        )
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        char = text[position] if position < len(text) else "?"
        span = Span(file, error.line, error.column, error.line, error.column + 1)
        if char == '"':
            return LocatedError(span, "unterminated string (strings end on the same line)", code="syntax")
        shown = repr(char)[1:-1] if not char.isprintable() else char
        return LocatedError(span, f"unexpected character '{shown}'", code="syntax")
    if isinstance(error, UnexpectedEOF):
        return LocatedError(_end_span(file, text), "unexpected end of file", code="syntax")
    return LocatedError(Span(file, 1, 1, 1, 2), str(error), code="syntax")


def parse(text: str, file: str = "<string>") -> Module:
    """Parse one file's text into a :class:`Module`, or raise :class:`LocatedError`."""
    parser = _parser()
    postlexer = parser.options.postlex
    assert isinstance(postlexer, _PostLexer)
    postlexer.file = file
    try:
        tree = parser.parse(text)
    except LocatedError:
        raise
    except UnexpectedInput as error:
        raise _syntax_error(file, text, error, postlexer.open_brackets, postlexer.if_condition) from None
    except RecursionError:
        raise LocatedError(Span(file, 1, 1, 1, 2), "spec nested too deeply to parse", code="syntax") from None
    try:
        items = _ToAst(file).transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, LocatedError):
            raise error.orig_exc from None
        if isinstance(error.orig_exc, RecursionError):
            raise LocatedError(
                Span(file, 1, 1, 1, 2), "spec nested too deeply to parse", code="syntax"
            ) from None
        raise
    except RecursionError:
        raise LocatedError(Span(file, 1, 1, 1, 2), "spec nested too deeply to parse", code="syntax") from None
    return Module(file, tuple(items))


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    # Checked on the digits first: int() refuses more than 4300 digits with a ValueError.
    if len(text.lstrip("0")) > len(str(MAX_INT_LITERAL)) or int(text) > MAX_INT_LITERAL:
        raise ValueError("number too large")
    return int(text)


@v_args(meta=True, inline=True)
class _ToAst(Transformer[Token, Any]):
    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1, 1, 2)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, token: Token) -> Span:
        return _token_span(self.file, token)

    @v_args(meta=True, inline=False)
    def start(self, meta: Any, items: list[Any]) -> list[Any]:
        return [i for i in items if i is not None]

    def import_stmt(self, meta: Any, path: Token) -> Import:
        return Import(path.value[1:-1], self._span(meta))

    @v_args(meta=True, inline=False)
    def defaults_stmt(self, meta: Any, calls: list[Call]) -> Defaults:
        return Defaults(tuple(calls), self._span(meta))

    @v_args(meta=True, inline=False)
    def block_def(self, meta: Any, children: list[Any]) -> BlockDef:
        name, *params, body = children
        return BlockDef(
            name.value, tuple(p for p in params if p is not None), body, self._span(meta), self._tok(name)
        )

    def param(self, meta: Any, name: Token, default: Expr | None) -> Param:
        return Param(name.value, default, self._tok(name))

    @v_args(meta=True, inline=False)
    def network_def(self, meta: Any, children: list[Any]) -> NetworkDef:
        name, *inputs, body = children
        return NetworkDef(
            name.value, tuple(i for i in inputs if i is not None), body, self._span(meta), self._tok(name)
        )

    def input_decl(self, meta: Any, name: Token, shape: Expr) -> InputDecl:
        return InputDecl(name.value, shape, self._tok(name))

    @v_args(meta=True, inline=False)
    def body(self, meta: Any, stmts: list[Any]) -> tuple[Stmt, ...]:
        return tuple(s for s in stmts if s is not None)

    def expr_stmt(self, meta: Any, expr: Expr, shape: Expr | None) -> ExprStmt:
        return ExprStmt(expr, shape, self._span(meta))

    def assign(self, meta: Any, name: Token, expr: Expr, shape: Expr | None) -> Assign:
        return Assign(name.value, self._tok(name), expr, shape, self._span(meta))

    @v_args(meta=True, inline=False)
    def multi_assign(self, meta: Any, children: list[Any]) -> MultiAssign:
        *names, expr, shapes = children
        asserted: tuple[Expr, ...] = shapes.items if isinstance(shapes, ListExpr) else ()
        return MultiAssign(
            tuple(n.value for n in names),
            tuple(self._tok(n) for n in names),
            expr,
            self._span(meta),
            asserted,
            shapes.span if isinstance(shapes, ListExpr) else None,
        )

    @v_args(meta=True, inline=False)
    def shapes(self, meta: Any, items: list[Expr]) -> ListExpr:
        # Carried to multi_assign as a list expression that spans every asserted shape (for located errors).
        return ListExpr(tuple(items), self._span(meta))

    def let_stmt(self, meta: Any, name: Token, expr: Expr) -> Let:
        return Let(name.value, self._tok(name), expr, self._span(meta))

    def param_stmt(self, meta: Any, name: Token, shape: Expr, init: Expr) -> ParamDecl:
        return ParamDecl(name.value, self._tok(name), shape, init, self._span(meta))

    def if_stmt(self, meta: Any, test: Expr, body: tuple[Stmt, ...], orelse: Any) -> If:
        if isinstance(orelse, If):
            orelse = (orelse,)
        return If(test, body, orelse or (), self._span(meta))

    @v_args(meta=True, inline=False)
    def def_stmt(self, meta: Any, children: list[Any]) -> FuncDef:
        name, *params, expr = children
        return FuncDef(
            name.value, tuple(p for p in params if p is not None), expr, self._span(meta), self._tok(name)
        )

    def cond(self, meta: Any, then: Expr, test: Expr, orelse: Expr) -> Cond:
        return Cond(then, test, orelse, self._span(meta))

    def not_op(self, meta: Any, keyword: Token, operand: Expr) -> Not:
        return Not(operand, self._span(meta))

    def neg(self, meta: Any, minus: Token, operand: Expr) -> Neg:
        return Neg(operand, self._span(meta))

    @v_args(meta=True, inline=False)
    def flat(self, meta: Any, children: list[Any]) -> Expr:
        return _Precedence(self.file, children).build()

    @v_args(meta=True, inline=False)
    def return_stmt(self, meta: Any, exprs: list[Expr]) -> Return:
        return Return(tuple(exprs), self._span(meta))

    @v_args(meta=True, inline=False)
    def branches(self, meta: Any, items: list[Expr]) -> Branches:
        return Branches(tuple(items), self._span(meta))

    @v_args(meta=True, inline=False)
    def chain(self, meta: Any, items: list[Expr]) -> Chain:
        return Chain(tuple(items), self._span(meta))

    def number(self, meta: Any, token: Token) -> Number:
        try:
            return Number(_number(token.value), self._tok(token))
        except ValueError:
            shown = token.value if len(token.value) <= 20 else token.value[:20] + "..."
            raise LocatedError(
                self._tok(token), f"number too large ({shown}); integers go up to 2**53", code="syntax"
            ) from None

    def string(self, meta: Any, token: Token) -> String:
        return String(token.value[1:-1], self._tok(token))

    def wildcard(self, meta: Any) -> Wildcard:
        return Wildcard(self._span(meta))

    def name(self, meta: Any, token: Token) -> Name:
        return Name(token.value, self._tok(token))

    def attr(self, meta: Any, base: Token, attr: Token) -> Attr:
        return Attr(base.value, attr.value, self._span(meta))

    def group(self, meta: Any, expr: Expr) -> Group:
        return Group(expr, self._span(meta))

    @v_args(meta=True, inline=False)
    def list_expr(self, meta: Any, items: list[Expr | None]) -> ListExpr:
        return ListExpr(tuple(i for i in items if i is not None), self._span(meta))

    @v_args(meta=True, inline=False)
    def call(self, meta: Any, children: list[Any]) -> Call:
        name, *arguments = children
        args: list[Expr] = []
        kwargs: list[Kwarg] = []
        seen: set[str] = set()  # a set: thousands of keyword arguments must not make this quadratic
        for argument in arguments:
            if argument is None:
                continue
            if isinstance(argument, Kwarg):
                if argument.name in seen:
                    raise LocatedError(
                        argument.span, f"parameter '{argument.name}' given twice", code="duplicate-argument"
                    )
                seen.add(argument.name)
                kwargs.append(argument)
            elif kwargs:
                raise LocatedError(
                    _expr_span(argument), "positional argument after a keyword argument", code="syntax"
                )
            else:
                args.append(argument)
        return Call(name.value, tuple(args), tuple(kwargs), self._span(meta), self._tok(name))

    def kwarg(self, meta: Any, name: Token, value: Expr) -> Kwarg:
        return Kwarg(name.value, value, self._tok(name))

    def __default__(self, data: Any, children: Any, meta: Any) -> Any:  # pragma: no cover - grammar guard
        return Tree(data, children, meta)


def _expr_span(expr: Expr) -> Span:
    return expr.span


def _join(first: Span, last: Span) -> Span:
    return Span(first.file, first.line, first.column, last.end_line, last.end_column)


_BINDING = {"or": 1, "and": 2, "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6}
_NOT_BINDING = 3  # `not a == b` is not (a == b); `not a and b` is (not a) and b
_COMPARE_BINDING = 4  # == != < <= > >=


class _Precedence:
    """Builds the tree of a flat operator sequence (the grammar's ``flat`` rule) by precedence climbing, with
    Python's precedence: or, and, not, comparisons (which do not chain), + -, * / // %; all left-associative."""

    def __init__(self, file: str, children: list[Any]) -> None:
        self.file = file
        # ("value", Expr) | ("not", Span) | ("op", text, Span, (index name, its Span) or None)
        self.items: list[tuple[Any, ...]] = []
        index = 0
        while index < len(children):
            child = children[index]
            if isinstance(child, Token):
                index_name = None
                if index + 3 < len(children) and _is_token(children[index + 2], "AS"):
                    # `* n as i`: the index belongs to this multiplication, which is then a repetition.
                    name = children[index + 3]
                    index_name = (name.value, _token_span(file, name))
                self.items.append(("op", child.value, _token_span(file, child), index_name))
                self._value(children[index + 1])
                index += 4 if index_name else 2
            else:
                self._value(child)
                index += 1
        self.position = 0

    def _value(self, expr: Expr) -> None:
        # A `not` written before an operand (not in brackets) is a prefix of everything that binds tighter.
        while isinstance(expr, Not):
            self.items.append(("not", expr.span))
            expr = expr.operand
        self.items.append(("value", expr))

    def build(self) -> Expr:
        return self._expression(0)

    def _expression(self, minimum: int) -> Expr:
        item = self.items[self.position]
        self.position += 1
        left: Expr
        if item[0] == "not":
            start: Span = item[1]
            if minimum > _NOT_BINDING:
                raise LocatedError(
                    Span(self.file, start.line, start.column, start.line, start.column + 3),
                    "'not' cannot follow this operator; put it in brackets: (not x)",
                    code="syntax",
                )
            operand = self._expression(_NOT_BINDING)
            left = Not(operand, _join(start, operand.span))
        else:
            left = item[1]
        while self.position < len(self.items):
            op = self.items[self.position]
            binding = _BINDING.get(op[1], _COMPARE_BINDING)
            if binding < minimum:
                break
            self.position += 1
            right = self._expression(binding + 1)
            if op[3] is not None:
                name, name_span = op[3]
                left = Repeat(left, right, name, name_span, _join(left.span, name_span))
            else:
                left = BinOp(op[1], left, right, _join(left.span, right.span))
            if binding == _COMPARE_BINDING and self.position < len(self.items):
                following = self.items[self.position]
                if _BINDING.get(following[1], _COMPARE_BINDING) == _COMPARE_BINDING:
                    raise LocatedError(
                        following[2],
                        f"unexpected '{following[1]}': comparisons do not chain; write a < b and b < c, "
                        "not a < b < c",
                        code="syntax",
                    )
        return left


def _is_token(value: Any, kind: str) -> bool:
    return isinstance(value, Token) and value.type == kind


def expr_text(expr: Expr) -> str:
    """Source-like text of an expression, for labels such as ``Bottleneck(128, stride=2)``."""
    match expr:
        case Number(value=v):
            return repr(v)
        case String(value=v):
            return f'"{v}"'
        case Wildcard():
            return "?"
        case Name(id=i):
            return i
        case Attr(base=b, attr=a):
            return f"{b}.{a}"
        case Call(name=n, args=args, kwargs=kwargs):
            parts = [expr_text(a) for a in args] + [f"{k.name}={expr_text(k.value)}" for k in kwargs]
            return f"{n}({', '.join(parts)})"
        case Chain(items=items):
            return " -> ".join(expr_text(i) for i in items)
        case Branches(items=items):
            return " | ".join(expr_text(i) for i in items)
        case BinOp(op=op, left=left, right=right):
            return f"{expr_text(left)} {op} {expr_text(right)}"
        case Neg(operand=o):
            return f"-{expr_text(o)}"
        case Not(operand=o):
            return f"not {expr_text(o)}"
        case Cond(then=then, test=test, orelse=orelse):
            return f"{expr_text(then)} if {expr_text(test)} else {expr_text(orelse)}"
        case Repeat(layer=layer, count=count, index=index):
            return f"{expr_text(layer)} * {expr_text(count)} as {index}"
        case ListExpr(items=items):
            return "[" + ", ".join(expr_text(i) for i in items) + "]"
        case Group(expr=e):
            return f"({expr_text(e)})"
    return "?"


# --------------------------------------------------------------------------------------- recovery ---
#
# An editor needs every syntax error of a file at once and a tree for the rest of it. After an error the
# statement holding it is blanked out (replaced by spaces, so every other position stays where it was) and the
# text is parsed again, up to a limit. These functions stand beside `parse` and do not change it.

MAX_SYNTAX_ERRORS = 20
"""Syntax errors reported per file before recovery gives up on the rest."""

LIMIT_CODE = "syntax-limit"
"""The code of a parse limit that spans statements (bodies nested too deep, too long an ``else if`` chain): recovery
stops at it, since blanking one statement of such a structure only makes more errors, each a parse of a large text."""

_CLOSING = {"RBRACE", "$END", "RPAR", "RSQB", "COMMA", "VBAR", "_NL", "COLON"}
"""Tokens that can only end something: right after '->' they mean it dangles."""

_SHAPE_WORD = re.compile(r"x\d+(?:x\d+)*")


def parse_recovering(
    text: str, file: str = "<string>", limit: int = MAX_SYNTAX_ERRORS
) -> tuple[Module, list[LocatedError]]:
    """Parse like :func:`parse`, but recover at the next statement after a syntax error.

    Returns the module of everything that parsed (a statement or item holding an error is left out) and the
    errors, in source order, each with its code (``syntax``, a ``syntax-...`` one where the mistake is recognised,
    ``duplicate-argument``, ...) and, where the fix is likely, a suggestion and a
    :class:`~cnndsl.diagnostics.Fix`. With no error the module equals ``parse(text, file)``."""
    errors: list[LocatedError] = []
    current = text
    closed = False
    while True:
        outcome = _attempt(current, file)
        if isinstance(outcome, Module):
            return outcome, sorted(errors, key=lambda e: (e.span.line, e.span.column))
        error, region = outcome
        if all(e.span != error.span or e.message != error.message for e in errors):
            errors.append(error)
        if len(errors) >= limit or error.code == LIMIT_CODE:
            break
        if region is None:
            # At the end of the file with bodies still open: close them, once, and parse what there is.
            depth = _open_braces(current)
            if closed or depth <= 0:
                break
            current += "\n}" * depth
            closed = True
            continue
        if error.code == "syntax-shape" and error.fixes:
            # The intended shape is clear, so read it as intended: the item keeps its body. Columns after it
            # on that one line shift, which only matters for a second error on the same line.
            fix = error.fixes[0]
            begin = _offset(current, fix.span)
            finish = _offset(current, Span(file, fix.span.end_line, fix.span.end_column, 0, 0))
            current = current[:begin] + fix.replacement + current[finish:]
            continue
        start, end = region
        blanked = (
            current[:start] + "".join(c if c == "\n" else " " for c in current[start:end]) + current[end:]
        )
        if blanked == current:
            break
        current = blanked
    return Module(file, ()), sorted(errors, key=lambda e: (e.span.line, e.span.column))


def _attempt(text: str, file: str) -> Module | tuple[LocatedError, tuple[int, int] | None]:
    """One parse: the module, or the first error and the region of text to blank before trying again."""
    parser = _parser()
    postlexer = parser.options.postlex
    assert isinstance(postlexer, _PostLexer)
    postlexer.file = file
    try:
        tree = parser.parse(text)
    except LocatedError as error:  # from the postlexer: an unclosed or too deeply nested bracket
        if error.code == LIMIT_CODE:
            return error, None  # recovery stops here: no region to blank
        return error, _region(text, _offset(text, error.span))
    except UnexpectedInput as error:
        brackets = list(postlexer.open_brackets)
        located = _suggest(file, text, error, brackets, postlexer.if_condition) or _syntax_error(
            file, text, error, brackets, postlexer.if_condition
        )
        return located, _error_region(text, error, located)
    except RecursionError:
        return LocatedError(Span(file, 1, 1, 1, 2), "spec nested too deeply to parse", code="syntax"), None
    try:
        return Module(file, tuple(_ToAst(file).transform(tree)))
    except VisitError as error:
        if isinstance(error.orig_exc, LocatedError):
            return error.orig_exc, _region(text, _offset(text, error.orig_exc.span))
        if isinstance(error.orig_exc, RecursionError):
            return LocatedError(
                Span(file, 1, 1, 1, 2), "spec nested too deeply to parse", code="syntax"
            ), None
        raise
    except RecursionError:
        return LocatedError(Span(file, 1, 1, 1, 2), "spec nested too deeply to parse", code="syntax"), None


def _offset(text: str, span: Span) -> int:
    """The character offset of a span's start in ``text`` (lines split at "\\n" only, as the lexer does)."""
    offset = 0
    for _ in range(span.line - 1):
        found = text.find("\n", offset)
        if found < 0:
            return len(text)
        offset = found + 1
    return min(offset + span.column - 1, len(text))


def _position(text: str, offset: int, file: str, length: int = 1) -> Span:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Span(file, line, column, line, column + length)


def _significant(text: str) -> list[tuple[int, str]]:
    """Offsets and kinds of the characters that matter for statement boundaries.

    Kinds: ``(`` and ``)`` for any bracket, ``{``, ``}``, ``\\n`` (a line end), ``>`` (the end of ``->``) and
    ``.`` (anything else). Comments, strings and line continuations are skipped as the lexer skips them."""
    out: list[tuple[int, str]] = []
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if char == "#":
            end = text.find("\n", index)
            index = size if end < 0 else end
            continue
        if char == '"':
            end = text.find('"', index + 1)
            newline = text.find("\n", index + 1)
            if end < 0 or (0 <= newline < end):
                end = size - 1 if newline < 0 else newline - 1
            out.append((index, "."))
            index = end + 1
            continue
        if char == "\\" and text[index + 1 : index + 2] in ("\n", "\r"):
            index = text.find("\n", index) + 1 or size
            continue
        if char in "([":
            out.append((index, "("))
        elif char in ")]":
            out.append((index, ")"))
        elif char in "{}\n":
            out.append((index, char))
        elif char == "-" and text[index + 1 : index + 2] == ">":
            out.append((index, "-"))
            out.append((index + 1, ">"))
            index += 2
            continue
        elif not char.isspace():
            out.append((index, "."))
        index += 1
    return out


def _segments(text: str) -> list[tuple[int, int, bool]]:
    """Statement-sized pieces of the text: (start, end, is_header); a header is followed by its body's '{'.

    A piece ends at a newline outside brackets (unless '->' continues the chain across it), and braces are
    pieces of their own, as the postlexer decides where statements end."""
    marks = _significant(text)
    pieces: list[tuple[int, int, bool]] = []
    start: int | None = None
    depth = 0
    for index, (offset, kind) in enumerate(marks):
        if kind in "{}":
            if start is not None:
                pieces.append((start, offset, kind == "{"))
            pieces.append((offset, offset + 1, False))
            start, depth = None, 0
            continue
        if kind == "\n":
            if start is None or depth > 0:
                continue
            before = marks[index - 1][1]
            after = next((k for _, k in marks[index + 1 :] if k != "\n"), "")
            if before == ">" or after in ("-", "}"):
                continue
            pieces.append((start, offset, False))
            start = None
            continue
        if start is None:
            start = offset
        if kind == "(":
            depth += 1
        elif kind == ")":
            depth = max(depth - 1, 0)
    if start is not None:
        pieces.append((start, len(text), False))
    return pieces


def _region(text: str, offset: int) -> tuple[int, int] | None:
    """The statement holding ``offset`` (or the one just before it), as the span of text to blank.

    A broken item header (``network N(x: 3x32x32) {``) takes its whole body with it: the body's statements
    would otherwise be read as items. A broken ``if`` header takes its ``else`` branches too: left alone, the
    ``else`` would be a second error."""
    pieces = _segments(text)
    chosen = None
    for piece in pieces:
        if piece[0] <= offset:
            chosen = piece
        else:
            break
    if chosen is None:
        return None
    start, end, header = chosen
    if header:
        depth = 0
        for position, kind in _significant(text[end:]):  # one pass, however long the else-if chain
            if kind == "{":
                depth += 1
            elif kind == "}":
                depth -= 1
                if depth == 0:
                    close = end + position + 1
                    if _ELSE.match(text, close) is None:
                        return start, close
                    # An else branch follows: go on through its header and body.
        return start, len(text)
    return start, end


_ELSE = re.compile(r"(?:\s|#[^\n]*)*else\b")


def _previous(text: str, offset: int) -> int | None:
    """The offset of the last significant character before ``offset`` (comments and blanks skipped)."""
    last = None
    for position, kind in _significant(text[:offset]):
        if kind != "\n":
            last = position
    return last


def _open_braces(text: str) -> int:
    depth = 0
    for _, kind in _significant(text):
        if kind == "{":
            depth += 1
        elif kind == "}":
            depth -= 1
    return depth


def _error_region(text: str, error: UnexpectedInput, located: LocatedError) -> tuple[int, int] | None:
    if isinstance(error, UnexpectedToken) and error.token.type in ("$END", "RBRACE"):
        # Nothing to blank at a '}' or the end: the incomplete statement is the one before it.
        before = _previous(
            text, error.token.start_pos or len(text) if error.token.type == "RBRACE" else len(text)
        )
        if error.token.type == "$END" and _open_braces(text) > 0:
            return None
        return None if before is None else _region(text, before)
    position = error.pos_in_stream or 0
    if isinstance(error, UnexpectedCharacters) and text[position : position + 1] == ";":
        region = _region(text, position)
        return (position, region[1]) if region else None
    return _region(text, _offset(text, located.span))


def _suggest(
    file: str,
    text: str,
    error: UnexpectedInput,
    brackets: list[Token],
    if_condition: Token | None = None,
) -> LocatedError | None:
    """A specific message and fix for the mistakes people make most, or None for the generic message.

    ``if_condition``: the ``if`` whose condition was being read, so its missing ``{`` is not taken for a
    missing ``->``."""
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        if text[position : position + 1] == ";":
            span = _position(text, position, file)
            rest = text[position + 1 :].split("\n", 1)[0].split("#", 1)[0]
            fixes = (Fix(span, ""),) if not rest.strip() else ()
            return LocatedError(
                span,
                "';' is not needed: a statement ends at the end of its line",
                code="syntax-semicolon",
                fixes=fixes,
            )
        return None
    if not isinstance(error, UnexpectedToken):
        return None
    token = error.token
    start = token.start_pos if token.type != "$END" else len(text)
    start = len(text) if start is None else start
    before = _previous(text, start)
    # A dangling '->': nothing follows it before a closer; point at the arrow, not at the closer.
    if before is not None and text[before - 1 : before + 1] == "->" and token.type in _CLOSING:
        span = _position(text, before - 1, file, 2)
        return LocatedError(
            span,
            "'->' with nothing after it; add a layer after it or remove it",
            code="syntax-dangling-arrow",
            fixes=(Fix(span, ""),),
        )
    # An unquoted import path.
    if "STRING" in error.expected and before is not None and text[: before + 1].rstrip().endswith("import"):
        line_end = text.find("\n", start)
        written = text[start : len(text) if line_end < 0 else line_end].split("#", 1)[0].rstrip()
        if written:
            span = _position(text, start, file, len(written))
            return LocatedError(
                span,
                f'an import path is a string in quotes: import "{written}"',
                code="syntax-unquoted-import",
                fixes=(Fix(span, f'"{written}"'),),
            )
    # A shape written 3x32x32.
    if (
        token.type == "NAME"
        and _SHAPE_WORD.fullmatch(str(token.value))
        and start > 0
        and text[start - 1].isdigit()
    ):
        first = start
        while first > 0 and text[first - 1].isdigit():
            first -= 1
        written = text[first : token.end_pos]
        dims = written.split("x")
        span = _position(text, first, file, len(written))
        shape = "[" + ", ".join(dims) + "]"
        return LocatedError(
            span,
            f"a shape is a list: write {shape}, not {written}",
            code="syntax-shape",
            fixes=(Fix(span, shape),),
        )
    # A shape written (3, 32, 32) after ':' (an input declaration or a shape assertion).
    if token.type == "COMMA" and brackets and brackets[-1].type == "LPAR":
        opener = brackets[-1].start_pos or 0
        if text[:opener].rstrip().endswith(":"):
            close = _matching(text, opener)
            if close is not None:
                written = text[opener : close + 1]
                span = _position(text, opener, file, len(written))
                shape = "[" + written[1:-1] + "]"
                return LocatedError(
                    span,
                    f"a shape is a list in square brackets: {shape}, not {written}",
                    code="syntax-shape",
                    fixes=(Fix(span, shape),),
                )
    # A missing '->' between two layers on one line.
    if (
        "_ARROW" in error.expected
        and if_condition is None
        and token.type == "NAME"
        and before is not None
        and text.count("\n", before, start) == 0
    ):
        span = _token_span(file, token)
        insert = Span(file, span.line, span.column, span.line, span.column)
        return LocatedError(
            span,
            f"unexpected '{token.value}'; is a '->' missing before it?",
            code="syntax-missing-arrow",
            fixes=(Fix(insert, "-> "),),
        )
    return None


def _matching(text: str, opener: int) -> int | None:
    """The offset of the bracket closing the one at ``opener``, if it closes on the same line."""
    depth = 0
    for position, kind in _significant(text[opener:]):
        if kind == "(":
            depth += 1
        elif kind == ")":
            depth -= 1
            if depth == 0:
                return opener + position
        elif kind in "\n{}":
            return None
    return None
