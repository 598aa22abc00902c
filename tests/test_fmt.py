"""The formatter (``cnndsl fmt``, :func:`cnndsl.fmt.format_source`).

What must hold whatever the input: the result is idempotent, keeps every comment, and is the same network (the
same nodes, arguments and shapes: the elaborated networks are compared, not the text). Checked over every spec of
the zoo and over the fuzzers' generated programs; the layout rules themselves are pinned by hand-written cases.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import SpecError, fmt
from cnndsl.cli import main
from cnndsl.fmt import FormatError, format_source
from cnndsl.syntax import parse, tokens

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ZOO = sorted(SPECS.rglob("*.cnn"))


def _load_fuzzer() -> ModuleType:
    if "fuzz_long" in sys.modules:
        return sys.modules["fuzz_long"]
    spec = importlib.util.spec_from_file_location("fuzz_long", ROOT / "bench" / "fuzz_long.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_long"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


FUZZ = _load_fuzzer()

FAST = settings(
    deadline=None,
    derandomize=True,  # the same cases on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def facts(network: cnndsl.Network) -> Any:
    """Everything about a network that a layout change must not touch (spans aside)."""
    nodes = [(n.op, n.args, n.path, n.inputs, n.input_shapes, n.shape) for n in network.nodes]
    tensors = [(t.name, t.node, t.shape) for t in network.inputs + network.outputs]
    return network.name, nodes, tensors


def outcome(text: str, filename: str = "spec.cnn") -> Any:
    """The network's facts, or the error messages (without positions) when the spec does not check."""
    try:
        return facts(cnndsl.loads(text, filename))
    except SpecError as error:
        return sorted(d.message for d in error.diagnostics)


# -------------------------------------------------------------------------------------------- rules ---


def test_layout_rules() -> None:
    source = (
        "\n\n"
        'import   "lib/resnet.cnn"   # lib\n'
        "defaults conv( padding = same ,bias=false )\n"
        "block   A( c , s = 1 ) { conv( c,3 ,stride = s)->bn->relu }\n"
        "block B(c) {\n"
        "\tadd(\n"
        "\tconv(c,3)->bn\n"
        "\t->relu\n"
        "\t|shortcut # sc\n"
        "\t)*2\n"
        "\n\n\n"
        "    x=conv(c,1):[?, ?, ?]\n"
        "  # trailing comment\n"
        "\n"
        "}\n"
        "block Empty() {}\n"
        "network N( image:[3,32,32] ) { # header\n"
        "conv(8,3,padding=-(1-2)) -> bn -> relu :[8,32,32]\n"
        "   -> gap \\\n"
        "     -> linear(10 * 2 // 3 % 4 - -1)\n"
        "# end\n"
        "}\n"
        "# final"
    )
    expected = (
        'import "lib/resnet.cnn"  # lib\n'
        "defaults conv(padding=same, bias=false)\n"
        "\n"
        "block A(c, s=1) {\n"
        "    conv(c, 3, stride=s) -> bn -> relu\n"
        "}\n"
        "\n"
        "block B(c) {\n"
        "    add(\n"
        "        conv(c, 3) -> bn\n"
        "        -> relu\n"
        "      | shortcut  # sc\n"
        "    ) * 2\n"
        "\n"
        "    x = conv(c, 1)  : [?, ?, ?]\n"
        "    # trailing comment\n"
        "}\n"
        "\n"
        "block Empty() {}\n"
        "\n"
        "network N(image: [3, 32, 32]) {  # header\n"
        "    conv(8, 3, padding=-(1 - 2)) -> bn -> relu  : [8, 32, 32]\n"
        "        -> gap \\\n"
        "        -> linear(10 * 2 // 3 % 4 - -1)\n"
        "    # end\n"
        "}\n"
        "\n"
        "# final\n"
    )
    assert format_source(source) == expected
    assert format_source(expected) == expected


def test_layout_rules_of_language_v2() -> None:
    source = (
        "def half(c)=c//2\n"
        "block Down(c,deep=false){\n"
        "  param scale:[c,1,1]=1.0\n"
        "  let width=max(c,8)\n"
        "  x=conv(c,3) : [c, ?, ?]\n"
        "  if deep and not(c>64 or c==32){ relu }\n"
        "  else if c<8 { gelu } else {\n"
        "  y = conv(half(width), 3)*2 as i\n"
        "  }\n"
        "  z = conv(8) if deep\n"
        "else conv(4)\n"
        "  a, b = Split(c)\n"
        "  a,b=Split(c):[c,?,?],[c, 8,8]\n"
        "  return a,b\n"
        "}\n"
    )
    expected = (
        "def half(c) = c // 2\n"
        "\n"
        "block Down(c, deep=false) {\n"
        "    param scale: [c, 1, 1] = 1.0\n"  # a declaration's ':' is no shape assertion: tight, not aligned
        "    let width = max(c, 8)\n"
        "    x = conv(c, 3)  : [c, ?, ?]\n"
        "    if deep and not (c > 64 or c == 32) {\n"
        "        relu\n"
        "    }\n"
        "    else if c < 8 {\n"  # an if's else on its own line stays level with the if
        "        gelu\n"
        "    } else {\n"
        "        y = conv(half(width), 3) * 2 as i\n"
        "    }\n"
        "    z = conv(8) if deep\n"
        "        else conv(4)\n"  # a conditional expression continued
        "    a, b = Split(c)\n"
        "    a, b = Split(c)  : [c, ?, ?], [c, 8, 8]\n"  # one shape per name, aligned as one assertion
        "    return a, b\n"
        "}\n"
    )
    assert format_source(source) == expected
    assert format_source(expected) == expected


def test_shapes_and_comments_align_per_group() -> None:
    source = (
        "network N(x: [3, 8, 8]) {\n"
        "    conv(4, 3, padding=same) : [4, 8, 8] # first\n"
        "    relu # no shape, but in a group with shapes and comments\n"
        "    # a comment line does not break the group\n"
        "    maxpool(2) : [4, 4, 4]\n"
        "\n"
        "    flatten # after a blank line: a new group\n"
        "    linear(2)\n"
        "}\n"
    )
    expected = (
        "network N(x: [3, 8, 8]) {\n"
        "    conv(4, 3, padding=same)  : [4, 8, 8]  # first\n"
        "    relu                                   # no shape, but in a group with shapes and comments\n"
        "    # a comment line does not break the group\n"
        "    maxpool(2)                : [4, 4, 4]\n"
        "\n"
        "    flatten  # after a blank line: a new group\n"
        "    linear(2)\n"
        "}\n"
    )
    assert format_source(source) == expected


def test_comments_without_shapes_align_at_the_shape_column() -> None:
    # As alexnet.cnn writes it: a remark on a line without a shape sits in the shape column.
    source = "network N(x: [3, 8, 8]) {\n    conv(4, 3) : [4, 6, 6]\n    gap  # pool\n    linear(2)\n}\n"
    expected = (
        "network N(x: [3, 8, 8]) {\n    conv(4, 3)  : [4, 6, 6]\n    gap         # pool\n    linear(2)\n}\n"
    )
    assert format_source(source) == expected


def test_brackets_indent_by_opening_line() -> None:
    source = "block B() {\nconcat(conv(8, 1),\nrelu, add(\nidentity\n| bn\n))\n}\n"
    expected = (
        "block B() {\n"
        "    concat(conv(8, 1),\n"
        "        relu, add(\n"
        "            identity\n"
        "          | bn\n"
        "        ))\n"
        "}\n"
    )
    assert format_source(source) == expected


def test_spacing_of_operators() -> None:
    cases = {
        "a=-1": "a = -1",
        "a = b-1": "a = b - 1",
        "a = (b)-(1)": "a = (b) - (1)",
        "a = -(b*2)": "a = -(b * 2)",
        "a = in . c//2": "a = in.c // 2",
        "a = [ 1 ,2, ]": "a = [1, 2,]",
        "conv ( 8 , 3 ) * ( n - 1 )": "conv(8, 3) * (n - 1)",
        "return a ,b": "return a, b",
        'conv(8, 3, padding = "x") : [ ? , 2 ]': 'conv(8, 3, padding="x")  : [?, 2]',
    }
    for statement, expected in cases.items():
        text = f"block B(n, b) {{\n    {statement}\n}}\n"
        assert format_source(text) == f"block B(n, b) {{\n    {expected}\n}}\n", statement


def test_empty_and_comment_only_files() -> None:
    assert format_source("") == ""
    assert format_source("\n\n  \n") == ""
    assert format_source("# only a comment   \n\n\n# and another") == "# only a comment\n\n# and another\n"


def test_byte_order_mark_and_crlf_are_normalised() -> None:
    assert format_source("\ufeffblock B() {\r\n    relu\r\n}\r\n") == "block B() {\n    relu\n}\n"


def test_comments_are_kept_verbatim() -> None:
    text = "#!odd\n#no space  \nblock B() {  #\u00e9\u2028x\n    relu    ##  two\n}\n"
    formatted = format_source(text)
    assert [t.value for t in tokens(formatted) if t.type == "COMMENT"] == [
        "#!odd",
        "#no space",
        "#\u00e9\u2028x",
        "##  two",
    ]


def test_syntax_errors_are_located_spec_errors() -> None:
    with pytest.raises(SpecError) as caught:
        format_source("network N(x: [3]) {\n    conv(3 3)\n    relu relu\n}\n", "bad.cnn")
    diagnostics = caught.value.diagnostics
    assert [(d.line, d.column) for d in diagnostics] == [(2, 12), (3, 10)]
    assert all(d.code.startswith("syntax") for d in diagnostics)
    assert caught.value.render().startswith("bad.cnn:2:12: error: ")


def test_safety_net_refuses_a_changed_program(monkeypatch: pytest.MonkeyPatch) -> None:
    # Break the formatter on purpose (it loses a line): the check must notice and refuse.
    monkeypatch.setattr(fmt, "_lines", lambda text: _drop_last_line(fmt_lines(text)))
    with pytest.raises(FormatError, match="different program"):
        format_source("network N(x: [3, 8, 8]) {\n    relu\n    gap\n}\n")


fmt_lines = fmt._lines


def _drop_last_line(lines: list[Any]) -> list[Any]:
    return [line for line in lines if [t.value for t in line.tokens] != ["gap"]]


# ------------------------------------------------------------------------------------- invariants ---


@pytest.mark.parametrize("path", ZOO, ids=lambda p: str(p.relative_to(SPECS)))
def test_zoo_specs_are_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert format_source(text, str(path)) == text, f"run: cnndsl fmt {path.relative_to(ROOT)}"


def test_fmt_check_passes_on_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fmt", "--check", str(SPECS)]) == 0
    assert f"0 files would be reformatted, {len(ZOO)} unchanged" in capsys.readouterr().err


def test_formatting_the_zoo_keeps_every_network(tmp_path: Path) -> None:
    # The zoo scrambled (indentation, spaces, blank lines), formatted by the command line, must be the zoo again and
    # load to the same networks.
    rng = random.Random(11)
    copy = tmp_path / "specs"
    shutil.copytree(SPECS, copy)
    for path in copy.rglob("*.cnn"):
        path.write_text(scramble(rng, path.read_text(encoding="utf-8")), encoding="utf-8")
    assert main(["fmt", str(copy)]) == 0
    for original in ZOO:
        formatted = copy / original.relative_to(SPECS)
        assert formatted.read_text(encoding="utf-8") == original.read_text(encoding="utf-8")
    for original in sorted(SPECS.glob("*.cnn")):
        assert facts(cnndsl.load(copy / original.name)) == facts(cnndsl.load(original))


def scramble(rng: random.Random, text: str) -> str:
    """``text`` with its horizontal layout shuffled: other spaces and tabs between tokens, other indentation,
    blank lines multiplied. Line breaks and the token sequence stay, so the canonical layout must not change."""
    out: list[str] = []
    stream = list(tokens(text))
    for index, token in enumerate(stream):
        following = stream[index + 1] if index + 1 < len(stream) else None
        if token.type == "_NL":
            newlines = token.value.count("\n")
            out.append("\n" * (newlines if newlines == 1 else newlines + rng.randint(0, 2)))
            out.append(rng.choice(["", " ", "  ", "\t", "       "]))
        elif not token.value.strip():
            out.append(rng.choice([" ", "  ", "\t", " \t "]))
        else:
            out.append(token.value)
            if following is not None and following.value.strip() and not _joins(token, following):
                out.append(rng.choice(["", "", " ", "  "]))
    return "".join(out)


def _joins(left: Any, right: Any) -> bool:
    """Would two tokens written without a space lex as something else?"""
    word = {"NAME", "NUMBER"} | {t for t in (left.type, right.type) if t.isupper() and t.isalpha()}
    return (left.type in word or left.value[-1:].isalnum()) and (
        right.type in word or right.value[:1].isalnum()
    )


@pytest.mark.slow
@settings(FAST, max_examples=40)
@given(rng=st.randoms(use_true_random=False))
def test_fuzzed_programs_keep_their_network(rng: random.Random) -> None:
    # The long run's program generator: mostly valid syntax, about a quarter of them checking cleanly.
    text = FUZZ.structured(rng)
    try:
        parse(text)
    except Exception:  # a few are refused by the parser itself (a number too large, a parameter given twice)
        with pytest.raises(SpecError):
            format_source(text)
        return
    formatted = format_source(text)
    assert format_source(formatted) == formatted
    assert outcome(formatted) == outcome(text)
    scrambled = scramble(rng, text)
    assume(_same_tree(scrambled, text))
    assert format_source(scrambled) == formatted


def _same_tree(a: str, b: str) -> bool:
    try:
        return fmt._strip_spans(parse(a)) == fmt._strip_spans(parse(b))
    except Exception:
        return False


@settings(FAST, max_examples=150)
@given(name=st.sampled_from(sorted(FUZZ.load_seeds())), rng=st.randoms(use_true_random=False))
def test_mutated_zoo_specs_format_or_fail_cleanly(name: str, rng: random.Random) -> None:
    text = FUZZ.mutate(rng, FUZZ.load_seeds()[name])
    try:
        formatted = format_source(text)
    except SpecError as error:
        assert error.diagnostics and all(d.line >= 1 and d.column >= 1 for d in error.diagnostics)
        return
    assert format_source(formatted) == formatted


@settings(FAST, max_examples=200)
@given(text=st.text(max_size=200))
def test_arbitrary_text_formats_or_fails_cleanly(text: str) -> None:
    try:
        formatted = format_source(text)
    except SpecError:
        return
    assert format_source(formatted) == formatted


# -------------------------------------------------------------------------------------------- CLI ---


def test_cli_check_lists_files_that_would_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.cnn"
    good.write_text("block B() {\n    relu\n}\n")
    bad = tmp_path / "sub" / "bad.cnn"
    bad.parent.mkdir()
    bad.write_text("block B() { relu }\n")
    (tmp_path / "notes.txt").write_text("not a spec {")
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"would reformat {bad}" in err and str(good) not in err
    assert "1 file would be reformatted, 1 unchanged" in err
    assert bad.read_text() == "block B() { relu }\n"
    assert main(["fmt", "--check", str(good)]) == 0


def test_cli_diff_prints_a_patch_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.cnn"
    path.write_text("block B() { relu }")
    assert main(["fmt", "--diff", str(path)]) == 0
    out = capsys.readouterr().out
    assert path.read_text() == "block B() { relu }"
    assert out.startswith(f"--- {path}\n+++ {path} (formatted)\n")
    assert "-block B() { relu }\n\\ No newline at end of file\n+block B() {\n+    relu\n+}\n" in out
    if shutil.which("patch"):
        patched = subprocess.run(["patch", "-o", "-", str(path)], input=out, capture_output=True, text=True)
        assert patched.stdout.endswith("block B() {\n    relu\n}\n")
    assert main(["fmt", "--check", "--diff", str(path)]) == 1


def test_cli_rewrites_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.cnn"
    path.write_text("block B() { relu }\n")
    formatted = tmp_path / "b.cnn"
    formatted.write_text("block B() {\n    relu\n}\n")
    stamp = formatted.stat().st_mtime_ns
    assert main(["fmt", str(path), str(formatted)]) == 0
    assert path.read_text() == "block B() {\n    relu\n}\n"
    assert formatted.stat().st_mtime_ns == stamp  # an unchanged file is not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.cnn", "b.cnn"]  # no temporary file left
    assert "1 file reformatted, 1 unchanged" in capsys.readouterr().err


def test_cli_syntax_error_leaves_the_file_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.cnn"
    bad.write_text("network N(x: [3]) {\n  conv(3 3)\n}\n")
    other = tmp_path / "other.cnn"
    other.write_text("block B() { relu }\n")
    assert main(["fmt", str(bad), str(other)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:10: error: unexpected '3'" in err and "    conv(3 3)" in err
    assert bad.read_text() == "network N(x: [3]) {\n  conv(3 3)\n}\n"
    assert other.read_text() == "block B() {\n    relu\n}\n"  # the others are still formatted


def test_cli_stdin_to_stdout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"block B() { relu }")))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == "block B() {\n    relu\n}\n"


def test_cli_hostile_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fmt", str(tmp_path / "missing.cnn")]) == 2
    assert "cannot read" in capsys.readouterr().err
    binary = tmp_path / "binary.cnn"
    binary.write_bytes(b"block B() {\n \xff\xfe }\n")
    assert main(["fmt", str(binary)]) == 1
    assert f"{binary}:2: file is not valid UTF-8" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fmt", str(empty)]) == 2
    assert "no .cnn files" in capsys.readouterr().err
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.cnn")
        assert main(["fmt", str(tmp_path / "pipe.cnn")]) == 2  # refused, not read (a FIFO would block)
        assert "not a regular file" in capsys.readouterr().err
    deep = tmp_path / "deep.cnn"
    deep.write_text("network N(x: [3]) {\n    relu(" + "(" * 500 + "1" + ")" * 500 + ")\n}\n")
    assert main(["fmt", str(deep)]) == 1
    assert "nested more than 100 deep" in capsys.readouterr().err
    control = tmp_path / "control.cnn"
    control.write_text("block B() {\n    relu \x1b[31m\n}\n")
    assert main(["fmt", str(control)]) == 1
    assert "\x1b" not in capsys.readouterr().err


def test_cli_internal_error_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.cnn"
    path.write_text("network N(x: [3, 8, 8]) {\n    relu\n    gap\n}")
    monkeypatch.setattr(fmt, "_lines", lambda text: _drop_last_line(fmt_lines(text)))
    assert main(["fmt", str(path)]) == 2
    assert "internal error" in capsys.readouterr().err
    assert path.read_text() == "network N(x: [3, 8, 8]) {\n    relu\n    gap\n}"


def test_cli_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "a.cnn"
    path.write_text("block B() { relu }\n")
    done = subprocess.run(
        [sys.executable, "-m", "cnndsl", "fmt", "--check", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1 and f"would reformat {path}" in done.stderr


def test_examples_in_the_editors_doc_are_formatted() -> None:
    # docs/editors.md shows the layout with examples; they must be what the formatter writes (list-item indent aside).
    text = (ROOT / "docs" / "editors.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```cnn\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        example = "\n".join(line.removeprefix("  ") for line in block.split("\n"))
        assert format_source(example) == example
