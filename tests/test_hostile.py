"""Hostile specs (issue 7): resource bombs stay within 2 s of CPU and 1 GiB, deep nesting gets a located error,
and nothing from a spec reaches generated Python unescaped.

Worst cases are measured in a forked child (CPU time, and peak resident memory from /proc), so a case that did
blow up would take down the child, not the test session. The generated-code tests execute the standalone file
and compare it with ``Network.to_torch()``.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cnndsl
from cnndsl import SpecError
from cnndsl.elaborate import DEFAULT_NODE_BUDGET, WORK_PER_NODE

ROOT = Path(__file__).resolve().parent.parent
H = "network N(x: [3, 32, 32]) {\n"

CPU_LIMIT_S = 2.0
MEMORY_LIMIT = 1 << 30

# ----------------------------------------------------------------------------------------- helpers ---


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measure(text: str, timeout_s: float = 60.0, **options: Any) -> dict[str, Any]:
    """Check ``text`` in a forked child: outcome, first diagnostic, CPU seconds and peak memory growth."""
    if not Path("/proc/self/status").exists() or not hasattr(os, "fork"):
        pytest.skip("needs Linux /proc and fork to measure memory")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        result: dict[str, Any]
        try:
            before = _peak_rss()
            start = time.process_time()
            try:
                network = cnndsl.loads(text, "hostile.cnn", **options)
                result = {"kind": "ok", "nodes": len(network.nodes)}
            except SpecError as error:
                first = error.diagnostics[0]
                result = {
                    "kind": "error",
                    "message": first.message,
                    "line": first.line,
                    "column": first.column,
                    "file": first.file,
                    "count": len(error.diagnostics),
                }
            result["cpu_s"] = time.process_time() - start
            result["memory"] = _peak_rss() - before
        except BaseException as failure:  # noqa: BLE001 - report anything to the parent
            result = {"kind": "crash", "message": f"{type(failure).__name__}: {failure}"}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"checking took more than {timeout_s:.0f} s (a hang)")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"kind": "crash", "message": "the child died"}')


def assert_bounded(result: dict[str, Any]) -> None:
    assert result["kind"] in ("ok", "error"), result
    assert result["cpu_s"] < CPU_LIMIT_S, result
    assert result["memory"] < MEMORY_LIMIT, result
    if result["kind"] == "error":
        assert result["line"] >= 1 and result["column"] >= 1, result
        assert not result["message"].startswith("internal error"), result


def blocks_chain(levels: int, leaf: str, fan: int = 1, name: str = "B") -> str:
    """Blocks B0..Bn where each calls the previous one ``fan`` times: n levels, fan**n leaves."""
    text = f"block {name}0() {{ {leaf} }}\n"
    for level in range(1, levels + 1):
        calls = "\n".join([f"    {name}{level - 1}"] * fan)
        text += f"block {name}{level}() {{\n{calls}\n}}\n"
    return text + H + f"    {name}{levels}\n}}\n"


# ---------------------------------------------------------------------------------- resource bombs ---

BIG_LIST = "[" + ",".join(["0"] * 30000) + "]"

BOMBS: dict[str, tuple[str, str | None]] = {
    # name: (spec, a fragment the first error message must contain, or None when the spec is valid)
    "explosive repetition": (
        H + "((((relu * 1000) * 1000) * 1000) * 1000) * 1000\n}",
        "over the node budget",
    ),
    "repetition by a huge count": (H + "relu * 9007199254740992\n}", "over the node budget"),
    "zero-node repetition (identity)": (H + "identity * 1000000000000\n}", "steps to check"),
    "zero-node repetition (empty block)": ("block E() { }\n" + H + "E * 1000000000000\n}", "steps to check"),
    "zero-node repetition (times zero)": (H + "(relu * 0) * 1000000000000\n}", "steps to check"),
    "billion laughs": (blocks_chain(9, "relu", fan=10), "more than"),
    "billion laughs, empty leaves": (blocks_chain(9, "", fan=10), "steps"),
    "binary laughs": (blocks_chain(40, "relu", fan=2), "more than"),
    "count that grows with the input": (
        "block G() { conv(in.c + 1, 1) -> relu * in.c }\n" + H + "G * 2000\n}",
        "over the node budget",
    ),
    "huge list argument per instance": (
        "block B(p) { relu }\n" + H + f"B({BIG_LIST}) * 300\n}}",
        "steps to check",
    ),
    "long block name, many nodes": (
        f"block {'A' * 45000}() {{ relu * 20000 }}\n" + H + "A" * 45000 + "\n}",
        "steps to check",
    ),
    "long names nested deep": (blocks_chain(60, "relu * 3000", name="B" * 700), "steps to check"),
    "huge upsampling": (H + "upsample(9007199254740992) * 3000\n}", "too large"),
    "many keyword arguments": (
        H + "conv(4, 3, " + ", ".join(f"k{i}=1" for i in range(11000)) + ")\n}",
        "unknown",
    ),
    "many block parameters": (
        "block B("
        + ", ".join(f"p{i}" for i in range(5000))
        + ") { relu }\n"
        + H
        + "B("
        + ", ".join(f"p{i}=1" for i in range(5000))
        + ") * 3\n}",
        None,
    ),
    "many branches": (H + "concat(" + " | ".join(["relu"] * 14000) + ")\n}", None),
    "many statements": (H + "relu\n" * 19000 + "}", None),
    "many errors": (H + "foo\n" * 19000 + "}", "unknown name"),
    "many blocks, did-you-mean": (
        "".join(f"block B{i}() {{ }}\n" for i in range(5000)) + H + "Bx1\n}",
        "unknown",
    ),
    "long line": (H + "relu" + " -> relu" * 12000 + "\n}", None),
    "deep unary minus": (H + "conv(" + "-" * 90000 + "4, 3)\n}", "nested more than"),
    "long operator chain": (H + "conv(1" + "+1" * 45000 + ", 3)\n}", "nested more than"),
    "deep brackets": (H + "conv(" + "(" * 90000 + "4)\n}", "nested more than"),
    "long number": (H + "conv(" + "9" * 99000 + ", 3)\n}", "number too large"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_resource_bomb_is_bounded(name: str) -> None:
    text, fragment = BOMBS[name]
    assert len(text.encode()) < 100_000
    result = measure(text)
    assert_bounded(result)
    if fragment is None:
        assert result["kind"] == "ok", result
    else:
        assert result["kind"] == "error" and fragment in result["message"], result


def test_spec_just_under_the_default_budget_checks_in_time() -> None:
    # The worst valid spec: as many nodes as the default budget allows, each with every argument spelled out.
    per_node = "conv(3, 3, stride=1, padding=same, dilation=1, groups=1, bias=false)"
    for count in (DEFAULT_NODE_BUDGET - 10, DEFAULT_NODE_BUDGET * WORK_PER_NODE // 16):
        result = measure(H + f"{per_node} * {count}\n}}")
        assert_bounded(result)
    # Plain chains of the full budget are valid.
    result = measure(H + f"relu * {DEFAULT_NODE_BUDGET - 10}\n}}")
    assert_bounded(result)
    assert result["kind"] == "ok" and result["nodes"] == DEFAULT_NODE_BUDGET - 9


def test_over_budget_repetition_fails_before_building() -> None:
    result = measure(H + f"conv(3, 1) * {DEFAULT_NODE_BUDGET * 10}\n}}")
    assert result["kind"] == "error" and "over the node budget" in result["message"]
    assert result["cpu_s"] < 0.2  # refused from the first copy, not after building 100,000 nodes


def test_node_budget_is_a_knob() -> None:
    text = H + "relu * 150000\n}"
    assert "over the node budget" in measure(text)["message"]
    assert measure(text, node_budget=200_000)["kind"] == "ok"


# ------------------------------------------------------------------------------------ deep nesting ---


def _error(text: str) -> Any:
    with pytest.raises(SpecError) as caught:
        cnndsl.loads(text, "deep.cnn")
    return caught.value.diagnostics[0]


@pytest.mark.parametrize(
    ("make", "limit"),
    [
        (lambda d: H + "conv(" + "(" * d + "4" + ")" * d + ", 3)\n}", 99),
        (lambda d: H + "conv(4, " + "[" * d + "3" + "]" * d + ")\n}", 99),
        (lambda d: H + "add(relu | " * d + "relu" + ")" * d + "\n}", 100),
        (lambda d: H + "conv(" + "-" * d + "4, 3)\n}", 99),
        (lambda d: H + "conv(1" + " + 1" * d + ", 3)\n}", 99),
        (lambda d: H + "conv(" + "(1 + " * (d // 2) + "1" + ")" * (d // 2) + ", 3)\n}", 98),
    ],
    ids=["parentheses", "lists", "branches", "unary minus", "operator chain", "brackets and operators"],
)
def test_nesting_at_the_limit_works_and_past_it_is_located(make: Callable[[int], str], limit: int) -> None:
    try:
        cnndsl.loads(make(limit), "deep.cnn")
    except SpecError as error:  # a shape or value error is fine: the point is that it parsed and checked
        assert "nested" not in error.diagnostics[0].message, error.render()
    past = _error(make(limit + 5))
    assert "nested more than" in past.message
    assert past.line == 2 and past.column > 1  # at the bracket or operator that went too deep


def test_blocks_nested_past_the_limit() -> None:
    diagnostic = _error(blocks_chain(200, "relu"))
    assert "nested more than 64 deep" in diagnostic.message
    assert diagnostic.line > 1


def test_every_limit_at_once_fits_the_stack() -> None:
    # 63 nested blocks (the limit is 64), the innermost with 99 nested merges (the limit is 100).
    text = blocks_chain(63, "add(relu -> " * 99 + "relu" + " | relu)" * 99)
    result = measure(text)
    assert_bounded(result)
    assert result["kind"] == "ok" and result["nodes"] == 1 + 3 * 99 + 1  # input, 3 per level, the last relu


def test_stack_exhausted_by_the_caller_is_still_a_located_error() -> None:
    # Called with most of the Python stack used already, the elaborator runs out inside the nested blocks:
    # the error points at the innermost statement it reached, with its instantiation chain.
    def at_depth(depth: int, call: Callable[[], Any]) -> Any:
        return call() if depth == 0 else at_depth(depth - 1, call)

    text = blocks_chain(63, "relu")
    with pytest.raises(SpecError) as caught:
        at_depth(sys.getrecursionlimit() - 150, lambda: cnndsl.loads(text, "deep.cnn"))
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.message == "blocks and brackets nested too deeply to check"
    assert diagnostic.line > 1 and diagnostic.chain


@pytest.mark.parametrize(
    "text",
    [
        "block A(n) { relu -> A(n - 1) }\n" + H + "A(3)\n}",
        "block A() { B }\nblock B() { relu -> A * 2 }\n" + H + "A\n}",
        "block A() { add(A | shortcut) }\n" + H + "A\n}",
    ],
    ids=["self", "mutual", "in a branch"],
)
def test_recursive_blocks_are_refused_where_they_recurse(text: str) -> None:
    diagnostic = _error(text)
    assert "instantiates itself" in diagnostic.message
    assert diagnostic.line in (1, 2)


# ------------------------------------------------------------------------------- odd text and bytes ---


@pytest.mark.parametrize(
    "text",
    ["", " ", "\n" * 5000, "# only a comment", "\ufeff", "\r\n\r\n", "\x00", "network", "}", '"unterminated'],
    ids=repr,
)
def test_degenerate_files_get_a_located_error(text: str) -> None:
    diagnostic = _error(text)
    assert diagnostic.line >= 1 and diagnostic.column >= 1
    assert not diagnostic.message.startswith("internal error")


def test_non_utf8_file_is_located_in_characters(tmp_path: Path) -> None:
    path = tmp_path / "latin.cnn"
    path.write_bytes("# é€é ".encode() + b"\xff\n" + H.encode() + b"relu\n}\n")
    with pytest.raises(SpecError) as caught:
        cnndsl.load(path)
    diagnostic = caught.value.diagnostics[0]
    assert (diagnostic.line, diagnostic.column) == (1, 7)  # characters, not bytes (which would say 11)
    assert "not valid UTF-8" in diagnostic.message


def test_terminal_escapes_in_a_spec_do_not_reach_the_terminal() -> None:
    with pytest.raises(SpecError) as caught:
        cnndsl.loads(H + 'conv("\x1b[2J\x1b]0;owned\x07", 3)  # \x1b[31m\n}', "esc.cnn")
    rendered = caught.value.render()
    assert "\x1b" not in rendered and "\x07" not in rendered
    assert "\\x1b[2J" in rendered  # shown, escaped, in the message


def test_an_import_string_with_escapes_is_reported_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        cnndsl.loads('import "\x1b[31mred.cnn"\n' + H + "relu\n}", "imp.cnn")
    assert "cannot import" in caught.value.diagnostics[0].message
    assert "\x1b" not in caught.value.render()


# ------------------------------------------------------------------------------ generated python ---

HOSTILE_NAMES_SPEC = """\
block forward(c) { conv(c, 3, padding=same) -> bn -> relu }
block training() { relu }
block self() { tanh }
block state_dict() { bn }
block nn() { conv(4, 1) -> bn }
block torch_name() { identity }
network class(torch: [3, 8, 8], global_avg_pool: [3, 8, 8], x: [4]) {
    None = torch -> forward(4) -> self
    yield = global_avg_pool -> conv(4, 1) -> training -> state_dict -> nn
    lambda = add(None | yield)
    True = lambda -> gap
    import_ = mul(True | x)
    __class__ = lambda -> torch_name -> conv(2, 1)
    return import_, __class__, lambda
}
"""

PAYLOAD = '__import__("builtins").PWNED = 1'
HOSTILE_SOURCES = [
    f"evil\n{PAYLOAD}\n",
    f"evil\r{PAYLOAD}\r",
    f"evil\r\n{PAYLOAD}",
    f'x"""\n{PAYLOAD}\n"""',
    f"evil\u2028{PAYLOAD}",
    f"evil\x0c\n{PAYLOAD}",
    f"evil\x00{PAYLOAD}",
    f"# coding: latin-1\n{PAYLOAD}",
]


@pytest.fixture(scope="module")
def codegen() -> Any:
    try:
        from cnndsl import codegen
    except ImportError:
        pytest.skip("cnndsl/codegen.py (the standalone export) does not exist yet")
    pytest.importorskip("torch")
    return codegen


def _execute(source: str) -> tuple[dict[str, Any], type]:
    """Execute generated source as a module that is not __main__; return its namespace and model class."""
    import torch

    namespace: dict[str, Any] = {"__name__": "generated_model"}
    exec(compile(source, "generated_model.py", "exec"), namespace)
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)]
    classes = [c for c in classes if c.__module__ == "generated_model"]
    assert len(classes) == 1, classes
    return namespace, classes[0]


def _top_level_is_only_definitions(source: str) -> None:
    """An injected statement would show up as one more top-level node: allow only what the generator writes."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.module in ("__future__", "torch"), ast.dump(node)
        elif isinstance(node, ast.Import):
            assert [a.name for a in node.names] == ["torch"], ast.dump(node)
        elif isinstance(node, ast.If):
            assert ast.unparse(node.test) == "__name__ == '__main__'"
        else:
            assert isinstance(node, ast.FunctionDef | ast.ClassDef), ast.dump(node)[:200]
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not calls & {"__import__", "exec", "eval", "compile", "open", "getattr", "setattr"}, calls


def _same_as_fx(network: cnndsl.Network, model_class: type) -> None:
    import torch

    reference = network.to_torch().eval()
    model = model_class().eval()
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict(reference.state_dict())
    torch.manual_seed(0)
    inputs = [torch.randn(2, *t.shape) for t in network.inputs]
    with torch.no_grad():
        expected, actual = reference(*inputs), model(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)


def test_hostile_names_give_legal_code_that_matches_to_torch(codegen: Any) -> None:
    network = cnndsl.loads(HOSTILE_NAMES_SPEC, "names.cnn")
    source = codegen.generate(network)
    _top_level_is_only_definitions(source)
    namespace, model_class = _execute(source)
    assert model_class.__name__ == "class_"  # a keyword as network name is made legal
    _same_as_fx(network, model_class)


@pytest.mark.parametrize("source_name", HOSTILE_SOURCES, ids=repr)
def test_file_name_cannot_inject_code(codegen: Any, source_name: str) -> None:
    network = cnndsl.loads(INLINE_RESIDUAL, "x.cnn")
    source = codegen.generate(network, source=source_name)
    _top_level_is_only_definitions(source)
    assert "\x00" not in source and "\r" not in source and "\u2028" not in source and "\x0c" not in source
    assert not source.splitlines()[0].startswith("# coding") and not source.splitlines()[1].startswith(
        "# coding"
    )
    try:
        _execute(source)
        assert not hasattr(builtins, "PWNED")
    finally:
        if hasattr(builtins, "PWNED"):
            delattr(builtins, "PWNED")


INLINE_RESIDUAL = """\
defaults conv(padding=same, bias=false)
block Basic(c, stride=1) {
    add(conv(c, 3, stride=stride) -> bn -> relu -> conv(c, 3) -> bn | shortcut)
    relu
}
network Res(image: [3, 16, 16]) {
    conv(8, 3) -> bn -> relu
    Basic(8)
    Basic(16, stride=2)
    gap -> linear(10) -> softmax
}
"""


def test_cli_compile_with_a_hostile_file_name(codegen: Any, tmp_path: Path) -> None:
    from cnndsl.cli import main

    spec = tmp_path / f"evil\n{PAYLOAD}\n#.cnn"
    spec.write_text(INLINE_RESIDUAL, encoding="utf-8")
    output = tmp_path / "model.py"
    assert main(["compile", str(spec), "-o", str(output)]) == 0
    source = output.read_text(encoding="utf-8")
    _top_level_is_only_definitions(source)
    try:
        _execute(source)
        assert not hasattr(builtins, "PWNED")
    finally:
        if hasattr(builtins, "PWNED"):
            delattr(builtins, "PWNED")


def test_private_looking_block_names_keep_state_dict_keys(codegen: Any) -> None:
    network = cnndsl.loads("block __x() { bn }\nnetwork Net(image: [3, 8, 8]) { __x -> conv(2, 1) }", "p.cnn")
    _, model_class = _execute(codegen.generate(network))
    _same_as_fx(network, model_class)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (H + 'upsample(mode="nearest\\")\n}', "mode must be one of"),
        (H + "upsample(mode=\"bilinear'); import os; ('\")\n}", "mode must be one of"),
        (H + 'conv(4, 3, padding="same\\n")\n}', "padding must be"),
        (H + 'dropout("0.5")\n}', "must be a number"),
    ],
    ids=["backslash", "quote and code", "escaped newline", "number as string"],
)
def test_strings_never_pass_as_values(text: str, fragment: str) -> None:
    # Strings are only accepted where a fixed choice is, so no free text can reach a generated literal.
    diagnostic = _error(text)
    assert fragment in diagnostic.message
    assert diagnostic.line == 2


def test_generated_code_is_stable_under_python_checks(codegen: Any) -> None:
    # The file compiles without warnings (invalid escapes in literals would warn) and is pure ASCII or UTF-8.
    network = cnndsl.loads(HOSTILE_NAMES_SPEC, "names.cnn")
    source = codegen.generate(network, source="naïve → name.cnn")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(source, "generated_model.py", "exec")
    source.encode("utf-8")
    assert sys.getrecursionlimit() >= 1000
