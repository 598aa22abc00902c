"""What the browser playground asks of cnndsl, as JSON-able data (``playground/`` runs this under Pyodide).

Two calls, both taking the editor's whole text, so the page holds no Python objects:

- :func:`analyse`: diagnostics (1-based line/column, end exclusive, as :class:`~cnndsl.diagnostics.Span`), or the
  summary rows and totals, the Graphviz dot text of the diagram and where each drawn box was written;
- :func:`explain_at`: the ``cnndsl explain`` text of the layer (or block call) under the cursor.

Only the static path is used (front end, analysis, render, explain): nothing here imports torch. The last checked
network is kept, keyed on the text, so moving the cursor does not check the spec again.
"""

from __future__ import annotations

from typing import Any

from . import render
from .analysis import AnalysisError, summarize
from .diagnostics import Span, SpecError
from .explain import explain
from .frontend import loads
from .network import Network, Node

MAX_EXPLAINED_LAYERS = 8
"""A block call explains its first layers only; the rest are named by count (a dense block has dozens)."""

_last: tuple[str, str, Network] | None = None


def _load(text: str, filename: str) -> Network:
    global _last
    if _last is not None and _last[0] == text and _last[1] == filename:
        return _last[2]
    network = loads(text, filename)
    _last = (text, filename, network)
    return network


def _span(span: Span) -> dict[str, Any]:
    return {
        "file": span.file,
        "line": span.line,
        "column": span.column,
        "end_line": span.end_line,
        "end_column": span.end_column,
    }


def parse_depth(depth: str | int | None) -> render.Depth:
    """The depth the page's control sends: ``"auto"``, ``"all"`` (or ``None``) or a number of levels >= 1."""
    if depth is None or depth == "all":
        return None
    if depth == "auto":
        return "auto"
    value = int(depth)
    if value < 1:
        raise ValueError(f"depth must be 1 or more, got {value}")
    return value


def _where(network: Network, node: Node, level: int, filename: str) -> Span:
    """Where the user can see this box in their own text: the node's span if it is in the edited file, else the
    innermost block call (up to ``level``) written there, else the network's name."""
    if level >= len(node.frames) and node.span.file == filename:
        return node.span
    for frame in reversed(node.frames[:level]):
        if frame.span.file == filename:
            return frame.span
    return network.span


def analyse(text: str, filename: str = "spec.cnn", depth: str | int | None = "auto") -> dict[str, Any]:
    """Check ``text``; return ``{"ok": False, "diagnostics": [...]}`` or the summary, dot text and box locations.

    Diagnostics are :meth:`Diagnostic.to_dict` records (message with its did-you-mean, notes, block chain).
    On success: ``network``, ``depth`` (the depth drawn: a number, or ``None`` for every node), ``max_depth``,
    ``summary`` (the ``cnndsl.summary/1`` JSON, rows at the drawn depth), ``dot`` and ``boxes`` (drawn box id ->
    path, kind and the span to select in the editor; a collapsed block's id starts with ``g``)."""
    try:
        network = _load(text, filename)
    except SpecError as error:
        return {"ok": False, "diagnostics": [d.to_dict(error.sources) for d in error.diagnostics]}
    drawn = render.resolve_depth(network, parse_depth(depth))
    max_depth = max((len(node.frames) for node in network.nodes), default=0)
    try:
        summary = summarize(network, depth=drawn)
    except AnalysisError as error:
        span = _span(network.span)
        return {
            "ok": False,
            "diagnostics": [{**span, "severity": "error", "message": str(error), "notes": [], "chain": []}],
        }
    dot = render.to_graphviz(network, drawn).source
    # Box ids are documented (docs/diagrams.md): n<node id> for a node, g<first node id> for a collapsed instance.
    boxes: dict[str, dict[str, Any]] = {}
    collapsed: set[str] = set()
    for node in network.nodes:
        if drawn is not None and len(node.frames) >= drawn:
            frame = node.frames[drawn - 1]
            if frame.path in collapsed:
                continue
            collapsed.add(frame.path)
            boxes[f"g{node.id}"] = {
                "path": frame.path,
                "kind": "block",
                "level": drawn,
                "span": _span(_where(network, node, drawn, filename)),
            }
        else:
            boxes[f"n{node.id}"] = {
                "path": node.path,
                "kind": "input" if node.op == "input" else "layer",
                "level": len(node.frames),
                "span": _span(_where(network, node, len(node.frames), filename)),
            }
    return {
        "ok": True,
        "diagnostics": [],
        "network": network.name,
        "depth": drawn,
        "max_depth": max_depth,
        "layers": len(network.layers),
        "summary": summary.to_json(),
        "dot": dot,
        "boxes": boxes,
    }


def _contains(span: Span, line: int, column: int) -> bool:
    if not span.line <= line <= span.end_line:
        return False
    if line == span.line and column < span.column:
        return False
    return not (line == span.end_line and column > span.end_column)


def explain_at(text: str, line: int, column: int, filename: str = "spec.cnn") -> dict[str, Any] | None:
    """The explanation of what is written at ``line:column`` (1-based): a layer, or a block call (its layers).

    A layer written once in a block that is called several times is explained for its first instance, and
    ``instances`` says how many there are. ``None`` when the text does not check or nothing is written there."""
    try:
        network = _load(text, filename)
    except SpecError:
        return None
    layers = [n for n in network.layers if n.span.file == filename and _contains(n.span, line, column)]
    if not layers:
        # Between layers (on an arrow, a comment, past the end of the line): the nearest layer on the line.
        on_line = [n for n in network.layers if n.span.file == filename and n.span.line == line]
        if on_line:
            nearest = min(abs(n.span.column - column) for n in on_line)
            layers = [n for n in on_line if abs(n.span.column - column) == nearest]
    if layers:
        # The innermost (narrowest) span wins: `conv(64, 3) -> bn` has one span per layer on one line.
        width = min((n.span.end_line - n.span.line, n.span.end_column - n.span.column) for n in layers)
        chosen = [
            n for n in layers if (n.span.end_line - n.span.line, n.span.end_column - n.span.column) == width
        ]
        node = chosen[0]
        # Every instance of this layer: the same span (a block called several times writes it once).
        instances = sum(1 for n in network.layers if n.span == node.span)
        item = explain(network, node.path)[0]
        return {
            "path": node.path,
            "title": item.title,
            "location": item.location,
            "instances": instances,
            "text": "\n".join(item.lines),
            "span": _span(node.span),
        }
    calls: dict[str, Span] = {}
    for node in network.layers:
        for frame in node.frames:
            if frame.span.file == filename and _contains(frame.span, line, column):
                calls.setdefault(frame.path, frame.span)
    if not calls:
        return None
    path, span = next(iter(calls.items()))
    items = explain(network, path)
    shown = items[:MAX_EXPLAINED_LAYERS]
    parts = [f"{item.title}\n  " + "\n  ".join(item.lines) for item in shown]
    if len(items) > len(shown):
        parts.append(f"… and {len(items) - len(shown)} more layers in {path}")
    return {
        "path": path,
        "title": f"{path}: {len(items)} layers",
        "location": str(span),
        "instances": len(calls),
        "text": "\n\n".join(parts),
        "span": _span(span),
    }
