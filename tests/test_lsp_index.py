"""DocumentIndex without a client: answers computed straight from an analysis."""

from __future__ import annotations

from pathlib import Path

from cnndsl.frontend import analyse_document
from cnndsl.lsp.index import DocumentIndex

ROOT = Path(__file__).resolve().parent.parent


def test_hover_on_shortcut_names_the_projection() -> None:
    text = (
        "block Basic(c, stride=1) {\n    add(\n        conv(c, 3, stride=stride, padding=1) -> bn\n      | shortcut\n"
        "    )\n}\nnetwork N(image: [3, 32, 32]) {\n    Basic(3) -> Basic(8, stride=2)\n}\n"
    )
    index = DocumentIndex(analyse_document(text, "t.cnn", ROOT), text)
    answer = index.hover(4, 10)
    assert answer is not None
    assert "first projection: **Basic.1/shortcut.0/conv.0** [3, 32, 32] -> [8, 16, 16]" in answer[0]


V2_DOCUMENT = """\
import "lib/convnext.cnn"

# Half of c, rounded down.
def half(c) = c // 2

block Scaled(c) {
    param gain: [c, 1, 1] = 1.0
    mul(identity | gain)
}

block Pair(c) {
    a = conv(c, 1)
    b = conv(half(c), 1)
    return a, b
}

network Tiny(image: [3, 64, 64]) {
    let width = 32
    conv(width, 4, stride=4) -> layer_norm  : [32, 16, 16]
    CNStage(2, 0, 4, 0.1)                   : [32, 16, 16]
    if width > 16 and not false {
        CNDown(2 * width)  : [64, 8, 8]
    } else {
        CNDown(half(width))
    }
    conv(64, 3, padding=1) * 2 as i  : [64, 8, 8]
    Scaled(64)                       : [64, 8, 8]
    x, y = Pair(8)
    gap -> linear(10 if width > 8 else 5)  : [10]
}
"""


def _at(text: str, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """The 1-based (line, column) of the ``occurrence``-th ``needle``."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(needle, start + 1)
    return text.count("\n", 0, start) + 1, start - (text.rfind("\n", 0, start) + 1) + 1


def test_language_v2_hints_hovers_and_navigation() -> None:
    text = V2_DOCUMENT
    analysis = analyse_document(text, "v2.cnn", ROOT / "specs")
    assert analysis.diagnostics == []  # so the checker holds every `: [...]` assertion below true
    index = DocumentIndex(analysis, text)
    hints = {hint.line: hint.label for hint in index.inlay_hints(1, 100)}
    lines = text.split("\n")
    asserted = {n + 1: line.split(": ", 1)[1] for n, line in enumerate(lines) if "  : [" in line}
    assert len(asserted) == 6
    for number, shape in asserted.items():
        assert hints[number] == shape, lines[number - 1]
    assert _at(text, "CNDown(half")[0] not in hints  # the branch not taken made no nodes
    assert _at(text, "x, y")[0] not in hints  # which returned tensor is which is not in the nodes
    # A param declaration's hint is the parameter's shape, as the checker made it.
    (gain,) = [n for n in analysis.networks[0].nodes if n.op == "parameter" and n.span.file == "v2.cnn"]
    assert hints[_at(text, "param gain")[0]] == "[" + ", ".join(map(str, gain.shape)) + "]" == "[64, 1, 1]"

    def hover(needle: str, occurrence: int = 0) -> str:
        answer = index.hover(*_at(text, needle, occurrence))
        assert answer is not None, needle
        return answer[0]

    assert hover("width", 1) == "value `width`: `let width = 32`"
    assert hover("i  :") == "value `i`: repetition index of `conv(64, 3, padding=1) * 2 as i`: 0 to 2 - 1"
    assert hover("half(c)", 1).startswith("```\ndef half(c) = c // 2\n```\nHalf of c, rounded down.")
    assert hover("c // 2") == "parameter `c` of `def half(c) = c // 2`"
    assert hover("gain", 1) == "tensor `gain`: [64, 1, 1]"
    assert "? -> [64, 8, 8]" in hover("Scaled(64")
    assert index.definition(*_at(text, "half(width)")) == index.functions["half"].name_span
    assert (
        index.definition(*_at(text, "width", 2))
        == index.params(index.scope_at(*_at(text, "width", 2)))["width"]
    )
    kinds = {name: kind for kind, name, *_ in index.symbols()}
    assert kinds == {"half": "def", "Scaled": "block", "Pair": "block", "Tiny": "network"}
    assert {"def", "let", "if", "else", "as", "param"} <= {c.label for c in index.completions(19, 5)}
