"""A Pygments lexer for .cnn specs, so documentation, notebooks and ``pygmentize`` highlight them.

Registered as the Pygments plugin ``cnn`` (entry point ``pygments.lexers`` in pyproject.toml): once cnndsl is
installed, Sphinx and MkDocs code blocks marked ``cnn`` and ``pygmentize -l cnn`` use it. The words come from
:mod:`cnndsl.lexicon` (the grammar's keywords, the registry's ops), so new ones are highlighted without an edit
here. Like every highlighter it must cope with half-written text: nothing here raises, and a character no rule
knows is one ``Error`` token.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
    _TokenType,
)

from . import lexicon

_ROLE_TOKENS: dict[str, _TokenType] = {
    "declaration": Keyword.Declaration,
    "import": Keyword.Namespace,
    "control": Keyword,
    "logical": Operator.Word,
    "constant": Keyword.Constant,
    "other": Keyword,
}


def _keyword_rules() -> list[Any]:
    by_role: dict[str, list[str]] = {}
    for word, role in lexicon.keyword_roles().items():
        by_role.setdefault(role, []).append(word)
    return [
        (words(sorted(ws), prefix=r"\b", suffix=r"\b"), _ROLE_TOKENS[role]) for role, ws in by_role.items()
    ]


class CnnLexer(RegexLexer):
    """Lexer for cnndsl's ``.cnn`` network specs."""

    name = "cnn"
    aliases: ClassVar[list[str]] = ["cnn", "cnndsl"]
    filenames: ClassVar[list[str]] = ["*.cnn"]
    mimetypes: ClassVar[list[str]] = ["text/x-cnn"]

    tokens: ClassVar[dict[str, list[Any]]] = {
        "root": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"\\[ \t\f]*\r?\n", Whitespace),  # a line continuation
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\n]*"', String.Double),
            # Unterminated while being typed: still a string, not a cascade of errors.
            (r'"[^"\n]*', String.Double),
            (r"(block|network)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"(def)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (r"\b(in)(\s*)(\.)", bygroups(Name.Builtin.Pseudo, Whitespace, Punctuation)),
            *_keyword_rules(),
            (words(lexicon.op_names(), prefix=r"\b", suffix=r"\b"), Name.Builtin),
            (words(lexicon.BUILTINS, prefix=r"\b", suffix=r"\b"), Name.Builtin),
            (words(lexicon.constants(), prefix=r"\b", suffix=r"\b"), Name.Constant),
            (r"[A-Za-z_]\w*(?=\s*\()", Name.Function),  # a block called with arguments
            (r"[A-Za-z_]\w*", Name),
            (r"(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+[eE][+-]?\d+", Number.Float),
            (r"\d+", Number.Integer),
            (r"->", Operator),
            (r"//|==|!=|<=|>=|[-+*/%<>|=]", Operator),
            (r"\?", Keyword.Constant),  # a wildcard dimension in a shape
            (r"\(", Punctuation, "arguments"),
            (r"[:,.\[\]{})]", Punctuation),
        ],
        "arguments": [
            (r"\)", Punctuation, "#pop"),
            # `stride=2` inside a call: the parameter's name (not `==`).
            (r"([A-Za-z_]\w*)(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            include("root"),
        ],
    }
