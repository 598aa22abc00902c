"""The tolerant front end the language server stands on: parse_recovering and analyse_document."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.diagnostics import LocatedError
from cnndsl.frontend import analyse_document
from cnndsl.syntax import BlockDef, ExprStmt, If, NetworkDef, parse, parse_recovering

ROOT = Path(__file__).resolve().parent.parent
ALL_SPECS = sorted((ROOT / "specs").rglob("*.cnn"))


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_a_valid_file_parses_as_before(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    module, errors = parse_recovering(text, str(path))
    assert errors == []
    assert module == parse(text, str(path))


def _messages(text: str) -> list[tuple[int, int, str, str]]:
    _, errors = parse_recovering(text, "t.cnn")
    return [(e.span.line, e.span.column, e.code, e.message) for e in errors]


def test_every_broken_statement_is_reported_and_the_rest_is_kept() -> None:
    text = (
        "block B(c) {\n"
        "    conv(c, 3) relu\n"  # missing ->
        "    bn\n"
        "}\n"
        "network N(image: [3, 32, 32]) {\n"
        "    conv(8, 3);\n"  # semicolon
        "    conv(8 3)\n"  # missing comma
        "    B(8)\n"
        "    x = conv(8, 3) ->\n"  # dangling arrow before the brace
        "}\n"
    )
    module, errors = parse_recovering(text, "t.cnn")
    assert [(e.span.line, e.span.column, e.code) for e in errors] == [
        (2, 16, "syntax-missing-arrow"),
        (6, 15, "syntax-semicolon"),
        (7, 12, "syntax"),
        (9, 20, "syntax-dangling-arrow"),
    ]
    block, network = module.items
    assert isinstance(block, BlockDef) and isinstance(network, NetworkDef)
    assert [type(s).__name__ for s in block.body] == ["ExprStmt"]  # bn kept, the broken line left out
    kept = [s for s in network.body if isinstance(s, ExprStmt)]
    assert [s.span.line for s in kept] == [6, 8]  # `conv(8, 3)` before the ';' and `B(8)`


def test_language_v2_statements_recover() -> None:
    text = (
        "def half(c) = c //\n"  # broken def
        "block B(c) {\n"
        "    let w = = 3\n"  # broken let
        "    if c >> 2 {\n"  # broken if header: its body and its else branches go with it
        "        relu\n"
        "    } else if c > 1 {\n"
        "        gelu\n"
        "    } else {\n"
        "        bn\n"
        "    }\n"
        "    if c > 2 {\n"
        "        conv(c, 3) relu\n"  # broken statement inside a branch: the if is kept
        "    } else {\n"
        "        bn\n"
        "    }\n"
        "    a, b = Pair(c)\n"
        "    x = conv(c, 3) * 2 as i\n"
        "}\n"
        "block C(c) {\n"
        "    if c > 2 relu\n"  # no brace: said so, not taken for a missing '->'
        "}\n"
    )
    module, errors = parse_recovering(text, "t.cnn")
    assert [(e.span.line, e.span.column, e.code) for e in errors] == [
        (1, 19, "syntax"),
        (3, 13, "syntax"),
        (4, 11, "syntax"),
        (12, 20, "syntax-missing-arrow"),
        (20, 14, "syntax"),
    ]
    assert "comparisons do not chain" in errors[2].message
    assert "the body of an if is written in braces" in errors[4].message
    block, other = module.items
    assert isinstance(block, BlockDef) and block.name == "B" and isinstance(other, BlockDef)
    assert [type(s).__name__ for s in block.body] == ["If", "MultiAssign", "Assign"]
    kept = block.body[0]
    assert isinstance(kept, If) and kept.span.line == 11
    assert [type(s).__name__ for s in kept.body] == [] and [type(s).__name__ for s in kept.orelse] == [
        "ExprStmt"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "network N(image: 3x32x32) {\n    relu\n}\n",
            (1, 18, "syntax-shape", "a shape is a list: write [3, 32, 32], not 3x32x32"),
        ),
        (
            "network N(image: (3, 32, 32)) {\n    relu\n}\n",
            (1, 18, "syntax-shape", "a shape is a list in square brackets: [3, 32, 32], not (3, 32, 32)"),
        ),
        (
            "network N(image: [3, 32, 32]) {\n    conv(8, 3) : (8, 30, 30)\n}\n",
            (2, 18, "syntax-shape", "a shape is a list in square brackets: [8, 30, 30], not (8, 30, 30)"),
        ),
        (
            "import lib/blocks.cnn  # shared\n",
            (1, 8, "syntax-unquoted-import", 'an import path is a string in quotes: import "lib/blocks.cnn"'),
        ),
        (
            "network N(image: [3, 32, 32]) {\n    conv(8, 3) ->\n\n}\n",
            (2, 16, "syntax-dangling-arrow", "'->' with nothing after it; add a layer after it or remove it"),
        ),
        (
            "network N(image: [3, 32, 32]) {\n    relu -> gap ->",
            (2, 17, "syntax-dangling-arrow", "'->' with nothing after it; add a layer after it or remove it"),
        ),
    ],
    ids=[
        "shape-x",
        "shape-parens",
        "assertion-parens",
        "unquoted-import",
        "dangling-arrow",
        "dangling-at-eof",
    ],
)
def test_suggestions(text: str, expected: tuple[int, int, str, str]) -> None:
    assert _messages(text)[0] == expected


def test_a_shape_written_wrongly_is_read_as_meant() -> None:
    module, errors = parse_recovering("network N(image: 3x32x32) {\n    conv(8, 3)\n}\n", "t.cnn")
    assert [e.code for e in errors] == ["syntax-shape"]
    (network,) = module.items
    assert isinstance(network, NetworkDef) and len(network.body) == 1  # the body is kept
    fixed = errors[0].fixes[0]
    assert fixed.replacement == "[3, 32, 32]"
    assert (fixed.span.column, fixed.span.end_column) == (18, 25)


def test_a_missing_closing_brace_keeps_the_body() -> None:
    module, errors = parse_recovering("network N(image: [3, 32, 32]) {\n    conv(8, 3)\n    relu\n", "t.cnn")
    assert [e.message for e in errors] == ["unexpected end of file; expected '}'"]
    (network,) = module.items
    assert isinstance(network, NetworkDef) and len(network.body) == 2


def test_the_error_limit() -> None:
    text = "network N(image: [3, 32, 32]) {\n" + "    conv(8 3)\n" * 50 + "}\n"
    _, errors = parse_recovering(text, "t.cnn", limit=20)
    assert len(errors) == 20
    assert [e.span.line for e in errors] == list(range(2, 22))


def test_cli_check_reports_several_syntax_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from cnndsl.cli import main

    assert main(["check", str(ROOT / "tests" / "errors" / "syntax_several_errors.cnn")]) == 1
    err = capsys.readouterr().err
    assert err.count(": error: ") == 5 and err.rstrip().endswith("5 errors")


def test_the_api_raises_with_every_syntax_error() -> None:
    with pytest.raises(cnndsl.SpecError) as caught:
        cnndsl.loads("network N(image: [3, 32, 32]) {\n    conv(8 3)\n    relu;\n}\n")
    assert [d.code for d in caught.value.diagnostics] == ["syntax", "syntax-semicolon"]


# ---------------------------------------------------------------------------- analyse_document ---


def test_analysis_keeps_what_checked_around_a_shape_error() -> None:
    text = (
        "network N(image: [3, 32, 32]) {\n"
        "    a = conv(8, 3, stride=0)\n"
        "    b = image -> conv(8, 3) -> maxpool(2)\n"
        "    c = b -> linear(4)\n"
        "    return a, b\n"
        "}\n"
    )
    analysis = analyse_document(text, "t.cnn", ROOT)
    assert [(d.span.line, d.code) for d in analysis.diagnostics] == [
        (2, "op-argument-range"),
        (4, "op-input-rank"),
    ]
    (network,) = analysis.networks
    assert [n.op for n in network.nodes] == ["input", "conv", "maxpool"]
    assert network.nodes[-1].shape == (8, 15, 15)


def test_analysis_reports_only_syntax_errors_when_there_are_some_but_still_elaborates() -> None:
    # `x` is defined on the broken line: with it left out, `x -> relu` would be a false "unknown name".
    text = "network N(image: [3, 32, 32]) {\n    x = conv(8 3)\n    conv(4, 3)\n    x -> relu\n}\n"
    analysis = analyse_document(text, "t.cnn", ROOT)
    assert [d.code for d in analysis.diagnostics] == ["syntax"]
    assert [n.op for n in analysis.networks[0].nodes] == ["input", "conv"]


def test_analysis_of_a_library_and_of_several_networks() -> None:
    text = (
        "block B(c) {\n    conv(c, 1)\n}\n"
        "network One(image: [3, 8, 8]) {\n    B(4)\n}\n"
        "network Two(image: [3, 16, 16]) {\n    B(2)\n}\n"
    )
    analysis = analyse_document(text, "t.cnn", ROOT)
    assert analysis.diagnostics == []
    assert [(n.name, n.outputs[0].shape) for n in analysis.networks] == [
        ("One", (4, 8, 8)),
        ("Two", (2, 16, 16)),
    ]
    library = analyse_document("block B(c) {\n    conv(c, 1)\n}\n", "lib.cnn", ROOT)
    assert library.diagnostics == [] and list(library.blocks) == ["B"]


def test_did_you_mean_is_structured() -> None:
    analysis = analyse_document("network N(image: [3, 8, 8]) {\n    cnov(4, 3)\n}\n", "t.cnn", ROOT)
    (diagnostic,) = analysis.diagnostics
    assert diagnostic.code == "unknown-op"
    (fix,) = diagnostic.fixes
    assert fix.replacement == "conv"
    assert (fix.span.line, fix.span.column, fix.span.end_column) == (2, 5, 9)


# ---------------------------------------------------------------------------------------- fuzz ---

SOURCES = [p.read_text(encoding="utf-8") for p in ALL_SPECS]
NOISE = st.sampled_from(list('(){}[],:;=->|*#"\n x3') + ["->", "conv", "block", "network", "import", "\\\n"])


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(NOISE) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
    return text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_recovery_never_fails_and_agrees_with_parse(text: str) -> None:
    module, errors = parse_recovering(text, "f.cnn")
    try:
        expected = parse(text, "f.cnn")
    except LocatedError:
        assert errors, "parse() found an error that recovery did not"
    else:
        assert errors == [] and module == expected
    lines = text.split("\n")
    for error in errors:
        assert 1 <= error.span.line <= len(lines) + 1
        assert error.code.startswith("syntax")
    analysis = analyse_document(text, "f.cnn", ROOT / "specs")
    assert len(analysis.diagnostics) >= len(errors) > 0 or not errors
