"""Every broken spec in tests/errors/ gives exactly its golden diagnostics, exit code 1 and no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cnndsl.cli import main
from cnndsl.diagnostics import CODES, Diagnostic, Span

ROOT = Path(__file__).resolve().parent.parent
ERRORS = sorted(p for p in (ROOT / "tests" / "errors").glob("*.cnn") if not p.name.startswith("_"))
LOCATED = re.compile(r"^tests/errors/[\w.]+\.cnn:\d+:\d+: error: .+")


def test_there_are_at_least_forty_broken_specs() -> None:
    assert len(ERRORS) >= 40


@pytest.mark.parametrize("spec", ERRORS, ids=lambda p: p.stem)
def test_broken_spec_matches_golden(
    spec: Path,
    golden: Callable[[str, str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["check", f"tests/errors/{spec.name}"])
    out = capsys.readouterr()
    assert code == 1
    assert out.out == ""
    assert "Traceback" not in out.err
    first = out.err.splitlines()[0]
    assert LOCATED.match(first), first
    golden(f"errors/{spec.stem}.txt", out.err)


@pytest.mark.parametrize("name", ["unknown_parameter", "syntax_missing_comma", "error_in_nested_block"])
def test_cli_subprocess_exit_code_and_no_traceback(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnndsl", "check", f"tests/errors/{name}.cnn"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"tests/errors/{name}.cnn:")


def test_json_diagnostics(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["check", "tests/errors/error_in_nested_block.cnn", "--format", "json"])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["file"] == "tests/errors/error_in_nested_block.cnn"
    [diagnostic] = report["diagnostics"]
    assert diagnostic["line"] == 3
    assert diagnostic["column"] == 34
    assert diagnostic["message"] == "groups=3 does not divide the 16 input channels"
    assert [frame["call"] for frame in diagnostic["chain"]] == ["Unit(c=16, stride=2)", "Stage(c=16, n=2)"]
    assert diagnostic["source_line"].strip().startswith("conv(c, 3, padding=1, groups=3)")


def test_check_json_is_one_object_shape(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Valid spec, spec with errors, library of blocks: always an object with ok, file and diagnostics."""
    monkeypatch.chdir(ROOT)
    library = tmp_path / "blocks.cnn"
    library.write_text("block B(c) { conv(c, 3) -> relu }\n")
    broken_library = tmp_path / "broken.cnn"
    broken_library.write_text('import "nowhere.cnn"\nblock B(c) { conv(c, 3) }\n')
    cases = [
        ("specs/lenet5.cnn", 0, True),
        ("tests/errors/multiple_errors.cnn", 1, False),
        (str(library), 0, True),
        (str(broken_library), 1, False),
    ]
    for path, code, ok in cases:
        assert main(["check", path, "--format", "json"]) == code
        report = json.loads(capsys.readouterr().out)
        assert isinstance(report, dict) and report["ok"] is ok and report["file"] == path
        assert isinstance(report["diagnostics"], list) and (report["diagnostics"] == []) is ok
    assert main(["check", "specs/lenet5.cnn", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["network"] == "LeNet5" and report["inputs"] == {"image": [1, 32, 32]}
    assert report["outputs"] == {"output": [10]} and report["library"] is False
    assert main(["check", str(library), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["blocks"] == ["B"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(tmp_path / "missing.cnn")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["check"])
    assert exit_info.value.code == 2


def test_every_broken_spec_has_a_specific_documented_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each diagnostic of every broken spec carries one of the documented codes, never a generic one."""
    monkeypatch.chdir(ROOT)
    seen: set[str] = set()
    for spec in ERRORS:
        assert main(["check", f"tests/errors/{spec.name}", "--format", "json"]) == 1
        diagnostics = json.loads(capsys.readouterr().out)["diagnostics"]
        assert diagnostics
        for diagnostic in diagnostics:
            assert diagnostic["code"] in CODES and diagnostic["code"] not in ("check", "op"), (
                spec.name,
                diagnostic,
            )
            seen.add(diagnostic["code"])
    # The broken specs exercise most kinds of problem, not one code for everything.
    assert len(seen) >= 40, sorted(seen)


# The broken specs that an op's own rule refuses (its registry entry: schema or shape rule), with the code each
# gets. Written by hand from what each spec does wrong, so a rule that loses or changes its code fails here.
OP_FAILURES = {
    "bad_choice": ["op-choice"],
    "bad_dropout_probability": ["op-argument-range"],
    "bool_for_integer": ["op-argument-type"],
    "chunk_does_not_divide": ["op-channels"],
    "error_in_nested_block": ["op-channels"],
    "fractional_channels": ["op-argument-type"],
    "gap_on_flat_input": ["op-input-rank"],
    "groups_do_not_divide": ["op-channels"],
    "kernel_larger_than_input": ["op-output-size"],
    "linear_without_flatten": ["op-input-rank"],
    "missing_required_argument": ["missing-argument"],
    "multiple_errors": ["op-argument-range", "op-input-rank", "op-argument-range"],
    "negative_stride": ["op-argument-range"],
    "pool_padding_too_large": ["op-padding"],
    "resize_size_and_scale": ["op-argument-conflict"],
    "same_padding_even_kernel": ["op-padding"],
    "transpose_output_padding": ["op-transpose-padding"],
    "wildcard_outside_assertion": ["op-argument-type"],
    "zero_channels": ["op-argument-range"],
    "zero_kernel": ["op-argument-range"],
}


def test_every_op_refusal_has_a_specific_op_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each broken spec that fails in an op's rule gets the code for what is wrong, never the generic ``op``;
    and every broken spec with an op-* code is listed above (a new one must say which code it expects)."""
    monkeypatch.chdir(ROOT)
    got: dict[str, list[str]] = {}
    for spec in ERRORS:
        assert main(["check", f"tests/errors/{spec.name}", "--format", "json"]) == 1
        codes = [d["code"] for d in json.loads(capsys.readouterr().out)["diagnostics"]]
        if spec.stem in OP_FAILURES or any(code.startswith("op") for code in codes):
            got[spec.stem] = codes
    assert got == OP_FAILURES
    # Between them the broken specs exercise every specific op code.
    op_codes = {code for code in CODES if code.startswith("op-")}
    assert op_codes <= {code for codes in OP_FAILURES.values() for code in codes}


@pytest.mark.parametrize(
    ("line", "code", "message"),
    [
        (
            "conv_transpose(4, 3, stride=2, output_padding=3)",
            "op-transpose-padding",
            "output_padding 3x3 must be smaller than the stride 2x2 or the dilation 1x1",
        ),
        ("chunk(3, 1)", "op-channels", "chunk: 3 chunks do not divide the 8 channels"),
        ("slice(0, 9)", "op-channels", "slice stop 9 is past the 8 channels"),
        ("conv(8, 3, groups=3)", "op-channels", "groups=3 does not divide the 8 input channels"),
        ("conv(8, 3, stride=0)", "op-argument-range", "stride must be positive, got 0"),
        ("conv(8, 3, bias=1)", "op-argument-type", "bias must be true or false, got 1"),
        ("conv(8, [3, 3, 3])", "op-argument-type", "kernel must be an integer or [h, w], got [3, 3, 3]"),
        ("conv(8, 3, padding=full)", "op-choice", "padding must be same, valid, an integer or [h, w]"),
        ("conv(kernel=3)", "missing-argument", "conv needs 'channels' (output channels)"),
        ("flatten -> conv(8, 3)", "op-input-rank", "conv needs a [C, H, W] input, got [800]"),
        ("maxpool(11)", "op-output-size", "maxpool kernel 11x11 is larger than its input 10x10"),
        ("pad(left=10, mode=reflect)", "op-padding", "reflect padding must be smaller than the input size"),
    ],
)
def test_an_op_refusal_has_the_code_of_its_kind(line: str, code: str, message: str) -> None:
    """Directly, through the public API: each kind of op refusal reaches the diagnostic with its code."""
    import cnndsl

    with pytest.raises(cnndsl.SpecError) as info:
        cnndsl.loads(f"network Bad(x: [8, 10, 10]) {{\n    {line}\n}}\n", "bad.cnn")
    [diagnostic] = info.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line) == (code, 2)
    assert message in diagnostic.message


def test_a_misspelt_choice_suggests_the_word_as_a_fix() -> None:
    """mode=bilinar and padding=sme (in a layer or in defaults): a did-you-mean with the word's fix; a word far
    from every choice gets neither."""
    import cnndsl

    for body, word, meant in [
        ("upsample(2, mode=bilinar)", "bilinar", "bilinear"),
        ("conv(8, 3, padding=sme)", "sme", "same"),
        ("stochastic_depth(0.1, mode=rows)", "rows", "row"),
    ]:
        spec = f"network Bad(x: [8, 10, 10]) {{\n    {body}\n}}\n"
        with pytest.raises(cnndsl.SpecError) as info:
            cnndsl.loads(spec, "bad.cnn")
        [diagnostic] = info.value.diagnostics
        assert diagnostic.code == "op-choice"
        assert diagnostic.message.endswith(f"; did you mean '{meant}'?")
        [fix] = diagnostic.fixes
        column = 5 + body.index(word)
        assert (fix.span.line, fix.span.column, fix.span.end_column) == (2, column, column + len(word))
        assert fix.replacement == meant
    # The same misspelling twice: each fix replaces its own word.
    twice = "network Bad(x: [8, 10, 10]) {\n    a = upsample(2, mode=bilinar)\n    b = x -> upsample(2, mode=bilinar)\n}\n"
    with pytest.raises(cnndsl.SpecError) as info:
        cnndsl.loads(twice, "bad.cnn")
    assert [(f.span.line, f.span.column) for d in info.value.diagnostics for f in d.fixes] == [
        (2, 26),
        (3, 31),
    ]
    defaults = "defaults conv(padding=vaild)\nnetwork Bad(x: [8, 10, 10]) {\n    conv(8, 3)\n}\n"
    with pytest.raises(cnndsl.SpecError) as info:
        cnndsl.loads(defaults, "bad.cnn")
    [diagnostic] = info.value.diagnostics
    assert diagnostic.code == "op-choice" and diagnostic.message.endswith("; did you mean 'valid'?")
    assert [(f.span.column, f.replacement) for f in diagnostic.fixes] == [(23, "valid")]
    with pytest.raises(cnndsl.SpecError) as info:
        cnndsl.loads("network Bad(x: [8, 10, 10]) {\n    upsample(2, mode=cubic)\n}\n", "bad.cnn")
    [diagnostic] = info.value.diagnostics
    assert (
        diagnostic.code == "op-choice" and diagnostic.fixes == () and "did you mean" not in diagnostic.message
    )


def test_the_code_list_in_the_docs_is_the_code_list() -> None:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    table = text.split("### Diagnostic codes", 1)[1].split("| code | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (.+) \|$", table, re.M))
    assert rows == CODES
    assert all(meaning and len(meaning) <= 110 for meaning in CODES.values())  # one line each


def test_a_diagnostic_needs_a_known_code() -> None:
    span = Span("t.cnn", 1, 1, 1, 2)
    assert Diagnostic(span, "m", code="op").code == "op"
    with pytest.raises(ValueError, match="unknown diagnostic code 'check'"):
        Diagnostic(span, "m", code="check")
    with pytest.raises(TypeError):
        Diagnostic(span, "m")  # type: ignore[call-arg]
