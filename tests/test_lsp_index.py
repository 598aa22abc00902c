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
