"""Render .cnn text as the VS Code extension's TextMate grammar colours it, as HTML (for docs/img screenshots).

    python3 editors/render_highlighting.py FILE... > /tmp/highlight.html
    chromium --headless --screenshot=docs/img/vscode_highlighting.png --window-size=1000,760 /tmp/highlight.html

The grammar runs in node as VS Code runs it (editors/vscode/test/tokenize.js; needs editors/vscode/node_modules);
scopes are coloured with VS Code's Dark+ palette (the first matching prefix wins). Each span's title lists its
scopes, so the page doubles as a scope inspector.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

EXTENSION = Path(__file__).resolve().parent / "vscode"

DARK_PLUS = [
    ("comment", "#6A9955"),
    ("string", "#CE9178"),
    ("constant.numeric", "#B5CEA8"),
    ("keyword.operator", "#D4D4D4"),
    ("keyword.declaration", "#569CD6"),
    ("keyword.control", "#C586C0"),
    ("constant.language", "#569CD6"),
    ("support.function", "#DCDCAA"),
    ("entity.name.type", "#4EC9B0"),
    ("entity.name.function", "#DCDCAA"),
    ("variable.language", "#569CD6"),
    ("variable", "#9CDCFE"),
    ("invalid", "#F44747"),
]
FOREGROUND, BACKGROUND = "#D4D4D4", "#1E1E1E"


def colour(scopes: list[str]) -> str:
    for prefix, value in DARK_PLUS:
        if any(scope.startswith(prefix) for scope in scopes[1:]):
            return value
    return FOREGROUND


def render(paths: list[str]) -> str:
    done = subprocess.run(
        ["node", str(EXTENSION / "test" / "tokenize.js"), *paths], capture_output=True, text=True, check=True
    )
    tokens = json.loads(done.stdout)
    blocks = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        out: list[list[str]] = [[] for _ in lines]
        for line, start, end, scopes in tokens[path]:
            text = html.escape(lines[line][start:end])
            title = html.escape(" ".join(scopes))
            out[line].append(f'<span style="color:{colour(scopes)}" title="{title}">{text}</span>')
        blocks.append("\n".join("".join(spans) for spans in out).rstrip("\n"))
    body = "\n\n".join(blocks)
    return (
        f'<!doctype html><html><body style="margin:0;background:{BACKGROUND}">'
        f'<pre style="font:14px monospace;padding:12px;color:{FOREGROUND}">{body}</pre></body></html>\n'
    )


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1:]))
