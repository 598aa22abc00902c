"""Editor packages: the VS Code extension's TextMate grammar and the Pygments lexer, checked against the zoo.

The TextMate grammar runs in node exactly as VS Code runs it (vscode-textmate + vscode-oniguruma from
editors/vscode/node_modules; ``make unit`` installs them, and these tests skip without them). Both highlighters are
held against the real lexer (:func:`cnndsl.syntax.tokens`): every keyword, op, number, string and comment it finds
in the zoo must be coloured as one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tomllib
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, String, _TokenType

from cnndsl import ops
from cnndsl.cli import COMMAND_MODULES
from cnndsl.pygments_lexer import CnnLexer
from cnndsl.syntax import keywords, parse, tokens

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "editors" / "vscode"
ZOO = sorted((ROOT / "specs").rglob("*.cnn"))
NODE_MODULES = EXTENSION / "node_modules"

# Language v2's constructs, every keyword among them: highlighters must know each word.
V2_SAMPLE = """\
def half(c) = c // 2

block Down(c, deep=false) {
    param scale: [c, 1, 1] = 1.0
    let width = max(c, 8)
    if deep and not (c > 64 or c == 32) {
        relu
    } else {
        gelu
    }
    x = conv(half(width), 3) * 2 as i
    return min(c, 3) if true else round(c / 2)
}
"""


def test_v2_sample_parses() -> None:
    module = parse(V2_SAMPLE)
    assert [type(item).__name__ for item in module.items] == ["FuncDef", "BlockDef"]
    assert {"def", "let", "param", "if", "else", "as", "and", "or", "not"} <= keywords()


def _gen_textmate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_textmate", ROOT / "editors" / "gen_textmate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_tokens(text: str) -> Iterator[tuple[int, int, int, str, str]]:
    """(line, start, end, category, text) for each token of the real lexer that a highlighter must colour: 0-based
    line, columns as Python counts them. Categories: keyword, op, number, string, comment, definition, argument."""
    stream = [t for t in tokens(text) if t.value.strip() or t.type == "_NL"]
    reserved = keywords()
    depth = 0
    for index, token in enumerate(stream):
        previous = stream[index - 1].value if index else ""
        following = stream[index + 1].value if index + 1 < len(stream) else ""
        depth += {"(": 1, ")": -1}.get(token.value, 0)
        if token.type == "COMMENT":
            category = "comment"
        elif token.type == "STRING":
            category = "string"
        elif token.type == "NUMBER":
            category = "number"
        elif token.value in reserved:
            category = "keyword"
        elif token.type == "NAME" and previous in ("block", "network"):
            category = "definition"
        elif token.type == "NAME" and depth > 0 and following == "=":
            category = "argument"
        elif token.type == "NAME" and token.value in ops.REGISTRY:
            category = "op"
        elif token.value == "->":
            category = "arrow"
        else:
            continue
        line, column = (token.line or 1) - 1, (token.column or 1) - 1
        yield line, column, column + len(token.value), category, token.value


# --------------------------------------------------------------------------------------- TextMate ---

TEXTMATE_SCOPES = {
    "comment": "comment.line.number-sign.cnn",
    "string": "string.quoted.double.cnn",
    "number": "constant.numeric.",
    "keyword": "keyword.",
    "definition": "entity.name.",
    "argument": "variable.parameter.cnn",
    "op": "support.function.op.cnn",
    "arrow": "keyword.operator.arrow.cnn",
}


def test_textmate_grammar_is_generated_from_the_registry() -> None:
    committed = (EXTENSION / "syntaxes" / "cnn.tmLanguage.json").read_text(encoding="utf-8")
    assert committed == _gen_textmate().render(), "stale: run python3 editors/gen_textmate.py --write"
    grammar = json.loads(committed)
    for name in ops.REGISTRY:  # the op rule names every op of the registry
        assert f"|{name}|" in grammar["repository"]["op"]["match"].replace("(?:", "|").replace(")\\b", "|")


def tokenize(paths: list[Path]) -> dict[str, list[Any]]:
    if shutil.which("node") is None or not (NODE_MODULES / "vscode-textmate").is_dir():
        pytest.skip("node or editors/vscode/node_modules missing (make unit installs them: npm ci)")
    done = subprocess.run(
        ["node", str(EXTENSION / "test" / "tokenize.js"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_textmate_scopes_every_token_of_the_zoo() -> None:
    found = tokenize(ZOO)
    seen: Counter[str] = Counter()
    for path in ZOO:
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        scopes_at: dict[tuple[int, int], tuple[int, list[str]]] = {}
        for line, start, end, scopes in found[str(path)]:
            assert scopes[0] == "source.cnn"
            chunk = lines[line][start:end]
            where = f"{path.name}:{line + 1}:{start + 1} {chunk!r}"
            if chunk.strip():
                assert len(scopes) > 1, f"no scope for {where}"
                assert not any(s.startswith("invalid") for s in scopes), f"{where}: {scopes}"
            scopes_at[(line, start)] = (end, scopes)
        for line, start, end, category, value in expected_tokens(text):
            assert (line, start) in scopes_at, (
                f"{path.name}:{line + 1}:{start + 1}: {value!r} split differently"
            )
            token_end, scopes = scopes_at[(line, start)]
            where = f"{path.name}:{line + 1}:{start + 1} {value!r} ({category})"
            assert token_end == end, f"{where}: token ends at {token_end}, not {end}"
            assert any(s.startswith(TEXTMATE_SCOPES[category]) for s in scopes), f"{where}: {scopes}"
            seen[category] += 1
    assert set(seen) == set(TEXTMATE_SCOPES), seen  # every category was met in the zoo
    assert seen["op"] > 200 and seen["comment"] > 100, seen


def test_textmate_knows_the_v2_words(tmp_path: Path) -> None:
    path = tmp_path / "v2.cnn"
    path.write_text(V2_SAMPLE, encoding="utf-8")
    lines = V2_SAMPLE.split("\n")
    scoped = {lines[line][start:end]: scopes[-1] for line, start, end, scopes in tokenize([path])[str(path)]}
    for word in ("if", "else", "return", "param", "block", "def", "let", "as"):
        assert scoped[word].startswith("keyword."), (word, scoped[word])
    for word in ("and", "not", "or"):
        assert scoped[word] == "keyword.operator.logical.cnn"
    assert (
        scoped["true"] == "constant.language.boolean.cnn"
        and scoped["false"] == "constant.language.boolean.cnn"
    )
    assert scoped["min"] == scoped["round"] == "support.function.builtin.cnn"
    assert scoped["=="] == scoped[">"] == "keyword.operator.comparison.cnn"
    assert scoped["Down"] == "entity.name.function.block.cnn"
    first: dict[str, str] = {}
    for line, start, end, scopes in tokenize([path])[str(path)]:
        first.setdefault(lines[line][start:end], scopes[-1])
    assert first["half"] == "entity.name.function.def.cnn"  # the definition, not a call
    assert not any(s.startswith("invalid") for s in scoped.values())


def test_textmate_survives_half_written_text(tmp_path: Path) -> None:
    # What an editor shows while typing: an unclosed call, an unterminated string, stray characters.
    text = 'network N(x: [3, 8, 8]) {\n    conv(8, 3, padding="sa\n    relu -> (\n    gap ; @\n}\n'
    path = tmp_path / "partial.cnn"
    path.write_text(text, encoding="utf-8")
    found = tokenize([path])[str(path)]
    lines = text.split("\n")
    chunks = {lines[line][start:end]: scopes[-1] for line, start, end, scopes in found}
    assert chunks['"sa'] == "string.quoted.double.unterminated.cnn"
    assert chunks["gap"] == "support.function.op.cnn"  # still coloured after the unclosed '('
    assert chunks["@"].startswith("invalid.illegal")


# --------------------------------------------------------------------------------------- Pygments ---

PYGMENTS_TYPES: dict[str, _TokenType] = {
    "comment": Comment,
    "string": String,
    "number": Number,
    "keyword": Keyword,
    "definition": Name.Class,
    "argument": Name.Attribute,
    "op": Name.Builtin,
    "arrow": Operator,
}


def pygments_tokens(text: str) -> dict[tuple[int, int], tuple[int, _TokenType]]:
    """(line, column) -> (end column, token type), both 0-based, for tokens on one line."""
    out: dict[tuple[int, int], tuple[int, _TokenType]] = {}
    line, column = 0, 0
    for kind, value in CnnLexer(ensurenl=False, stripnl=False).get_tokens(text):
        if value and "\n" not in value:
            out[(line, column)] = (column + len(value), kind)
        if "\n" in value:
            line, column = line + value.count("\n"), len(value.rsplit("\n", 1)[-1])
        else:
            column += len(value)
    return out


def test_pygments_lexes_the_zoo_like_the_parser() -> None:
    seen: Counter[str] = Counter()
    for path in ZOO:
        text = path.read_text(encoding="utf-8")
        errors = [value for kind, value in CnnLexer().get_tokens(text) if kind in Error]
        assert errors == [], f"{path.name}: {errors}"
        found = pygments_tokens(text)
        for line, start, end, category, value in expected_tokens(text):
            where = f"{path.name}:{line + 1}:{start + 1} {value!r} ({category})"
            assert (line, start) in found, f"{where}: split differently"
            token_end, kind = found[(line, start)]
            wanted = PYGMENTS_TYPES[category]
            if category == "keyword" and value in ("and", "or", "not"):
                wanted = Operator.Word  # the logical keywords, as Pygments colours Python's
            assert token_end == end and kind in wanted, f"{where}: {kind} to {token_end}"
            seen[category] += 1
    assert set(seen) == set(PYGMENTS_TYPES), seen


def test_pygments_knows_the_v2_words() -> None:
    kinds: dict[str, _TokenType] = {}
    for kind, value in CnnLexer().get_tokens(V2_SAMPLE):
        kinds.setdefault(value, kind)  # the first time each word is met
    for word in ("if", "else", "return", "param", "block", "def", "let", "as"):
        assert kinds[word] in Keyword, word
    assert kinds["and"] in Operator.Word and kinds["not"] in Operator.Word
    assert kinds["true"] in Keyword.Constant and kinds["min"] in Name.Builtin
    assert kinds["Down"] in Name.Class and kinds["deep"] in Name.Attribute
    assert kinds["half"] in Name.Function and kinds["max"] in Name.Builtin
    assert not any(kind in Error for kind in kinds.values())


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(text=st.text(max_size=200))
def test_pygments_never_fails_and_keeps_every_character(text: str) -> None:
    values = [value for _, value in CnnLexer(ensurenl=False, stripnl=False).get_tokens(text)]
    assert "".join(values) == text.replace("\r\n", "\n").replace("\r", "\n")


def test_pygments_entry_point_resolves() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    target = project["project"]["entry-points"]["pygments.lexers"]["cnn"]
    module, _, attribute = target.partition(":")
    assert getattr(importlib.import_module(module), attribute) is CnnLexer
    assert "*.cnn" in CnnLexer.filenames and "cnn" in CnnLexer.aliases


# ------------------------------------------------------------------------------------- extension ---


def test_extension_manifest() -> None:
    manifest = json.loads((EXTENSION / "package.json").read_text(encoding="utf-8"))
    contributes = manifest["contributes"]
    assert contributes["languages"][0]["extensions"] == [".cnn"]
    assert (EXTENSION / contributes["grammars"][0]["path"]).is_file()
    assert (EXTENSION / contributes["languages"][0]["configuration"]).is_file()
    server = contributes["configuration"]["properties"]
    assert server["cnndsl.server.command"]["default"] == "cnndsl"
    assert server["cnndsl.server.args"]["default"] == ["lsp"]
    assert "lsp" in COMMAND_MODULES  # the command the extension starts exists
    configuration = json.loads((EXTENSION / "language-configuration.json").read_text(encoding="utf-8"))
    assert configuration["comments"]["lineComment"] == "#"
    assert ["(", ")"] in configuration["brackets"] and ["{", "}"] in configuration["brackets"]
    lock = json.loads((EXTENSION / "package-lock.json").read_text(encoding="utf-8"))
    assert lock["packages"][""]["devDependencies"] == manifest["devDependencies"]  # npm ci will not refuse it


def activate(settings: dict[str, Any]) -> list[Any]:
    """What the extension's activate() does with these settings (node, with stand-ins for the vscode modules)."""
    if shutil.which("node") is None:
        pytest.skip("node missing")
    done = subprocess.run(
        ["node", str(EXTENSION / "test" / "activate.js"), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_extension_starts_the_configured_server() -> None:
    events = activate({"command": "/opt/venv/bin/cnndsl"})
    kinds = [event[0] for event in events]
    # Started, restarted when a `cnndsl.server` setting changed (the stand-in then sets args to lsp --verbose),
    # stopped on deactivate.
    assert kinds == ["client", "start", "activated", "stop", "client", "start", "stop"], kinds
    first, second = events[0][1], events[4][1]
    assert first["server"] == {"command": "/opt/venv/bin/cnndsl", "args": ["lsp"], "transport": 0}
    assert second["server"]["args"] == ["lsp", "--verbose"]
    assert {"scheme": "file", "language": "cnn"} in first["documentSelector"]
    assert events[2][1] == ["cnndsl.restartServer"]


def test_extension_explains_a_missing_server() -> None:
    events = activate({"failStart": True})
    errors = [event[1] for event in events if event[0] == "error"]
    assert errors[0].startswith(
        "cnndsl: could not start the language server with 'cnndsl lsp' (spawn cnndsl ENOENT)"
    )
    assert "cnndsl.server.command" in errors[0]
    assert activate({"enabled": False}) == [["activated", ["cnndsl.restartServer"]]]  # highlighting only


@pytest.mark.slow
def test_vsix_builds(tmp_path: Path) -> None:
    # `make vscode`'s build, in a copy of the extension folder: a .vsix with the bundle, grammar and configuration.
    if shutil.which("npm") is None or not (NODE_MODULES / ".bin" / "vsce").exists():
        pytest.skip("npm or editors/vscode/node_modules missing (make vscode installs them)")
    work = tmp_path / "vscode"
    shutil.copytree(EXTENSION, work, ignore=shutil.ignore_patterns("node_modules", "dist", "*.vsix"))
    os.symlink(NODE_MODULES, work / "node_modules")
    done = subprocess.run(
        ["npm", "run", "package"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(work / "cnndsl.vsix") as vsix:
        names = set(vsix.namelist())
        bundle = vsix.read("extension/dist/extension.js").decode("utf-8")
    assert {
        "extension/package.json",
        "extension/syntaxes/cnn.tmLanguage.json",
        "extension/language-configuration.json",
        "extension/dist/extension.js",
        "extension/LICENSE.txt",
    } <= names, names
    assert not any("node_modules" in n or n.startswith("extension/src/") for n in names)
    assert "cnndsl.server" in bundle and "LanguageClient" in bundle  # the client is bundled, not required
    assert 'require("vscode-languageclient' not in bundle
