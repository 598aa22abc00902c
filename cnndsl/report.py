"""Formatters for a :class:`~cnndsl.analysis.Summary`: a torchinfo-style text tree (fits 120 columns), Markdown,
JSON, and one self-contained interactive HTML page (:mod:`cnndsl.report_html`: diagram, collapsible tree, sortable
columns, cost charts; no external assets).

Every formatter returns a string; only the CLI writes files or prints. Each total is printed beside its counting
convention (:func:`cnndsl.analysis.conventions`).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .analysis import Block, Row, Summary, conventions, format_bytes, format_count, format_field
from .ops import fmt_shape

WIDTH = 120
"""The text table never exceeds this many columns."""

FORMATS = ("text", "md", "json", "html")
"""``html`` is the interactive page of :mod:`cnndsl.report_html`."""

_MIN_PATH = 16
_MAX_LABEL = 24


def render(summary: Summary, fmt: str) -> str:
    """The summary in one of :data:`FORMATS`."""
    formatters: dict[str, Callable[[Summary], str]] = {
        "text": to_text,
        "md": to_markdown,
        "json": to_json,
        "html": to_html,
    }
    if fmt not in formatters:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return formatters[fmt](summary)


# ------------------------------------------------------------------------------------------ shared ---


def _header(summary: Summary) -> str:
    inputs = ", ".join(f"{t.name} {fmt_shape(t.shape)}" for t in summary.inputs)
    outputs = ", ".join(f"{t.name} {fmt_shape(t.shape)}" for t in summary.outputs)
    depth = "every layer" if summary.depth is None else f"rows down to depth {summary.depth}"
    return (
        f"network {summary.network}: input {inputs} -> output {outputs}; "
        f"batch {summary.batch}, {summary.dtype}; {len(summary.layers)} layers, {depth}"
    )


def _totals(summary: Summary) -> list[tuple[str, str, str]]:
    """(name, value, convention) for every total, in display order."""
    t = summary.totals
    notes = conventions(summary.batch, summary.dtype)
    rows = [
        ("Params", format_count(t.trainable_params), notes["params"]),
        ("Non-trainable", format_count(t.non_trainable_params), notes["non_trainable_params"]),
        ("Total params", format_count(t.total_params), "trainable + non-trainable"),
        ("MACs", format_count(t.macs), notes["macs"]),
        ("FLOPs", format_count(t.flops), notes["flops"]),
        ("Param memory", format_bytes(t.param_bytes), notes["param_bytes"]),
        ("Buffer memory", format_bytes(t.buffer_bytes), f"buffers × {summary.dtype_bytes} bytes"),
        ("Input memory", format_bytes(t.input_bytes), f"inputs × batch {summary.batch}"),
        ("Activations", format_bytes(t.activation_bytes), notes["activation_bytes"]),
        ("Inference peak", format_bytes(t.inference_peak_bytes), notes["inference_peak_bytes"]),
        ("Training memory", format_bytes(t.training_bytes), notes["training_bytes"]),
    ]
    if summary.feature_map is not None:
        path, rf = summary.feature_map
        value = f"{format_field(rf)} (jump {format_field(rf, 'jump')})"
        rows.append(("Receptive field", value, f"at {path}; {notes['receptive_field']}"))
    return rows


def _columns(row: Row) -> list[str]:
    rf = row.receptive_field
    return [
        row.label,
        fmt_shape(row.output_shape),
        format_count(row.params),
        format_count(row.macs),
        format_count(row.flops),
        format_field(rf),
        "" if rf.is_global else format_field(rf, "jump"),
    ]


def _clip(text: str, width: int) -> str:
    """Shorten to ``width`` keeping both ends, which carry the block and the layer name."""
    if len(text) <= width:
        return text
    keep = width - 1
    head = keep // 2
    return text[:head] + "…" + text[len(text) - (keep - head) :]


# -------------------------------------------------------------------------------------------- tree ---


@dataclass(frozen=True)
class TreeLine:
    """One line of the tree view: the header of an expanded block instance, or a summary row (a layer, or a block
    instance collapsed at the summary's depth), indented by how many expanded instances enclose it."""

    path: str
    name: str
    """The path relative to the enclosing instance (``conv.1``), whole (the text table may elide it to fit)."""
    level: int
    """How many expanded block instances enclose the line."""
    row: Row | None
    """The summary row; ``None`` for the header of an expanded instance."""
    block: Block | None
    """The instance this header opens (or that this collapsed row stands for)."""
    parent: str | None
    """The path of the enclosing expanded instance, ``None`` at the top level."""
    last: bool
    """No later sibling under the same parent (the ``└─`` glyph)."""
    guides: tuple[bool, ...]
    """Per enclosing level 1..level-1: whether a vertical guide continues there (that ancestor has later siblings)."""
    has_children: bool


def tree(summary: Summary) -> list[TreeLine]:
    """The summary's rows in source order with a header line before the first row of every expanded instance."""
    lines: list[dict[str, Any]] = []
    open_frames: list[str] = []
    for row in summary.rows:
        frames = list(row.frames)
        common = 0
        while common < min(len(frames), len(open_frames)) and frames[common] == open_frames[common]:
            common += 1
        open_frames = open_frames[:common]
        for path in frames[common:]:
            parent = open_frames[-1] if open_frames else None
            lines.append({"path": path, "level": len(open_frames), "row": None, "parent": parent})
            open_frames.append(path)
        parent = open_frames[-1] if open_frames else None
        lines.append({"path": row.path, "level": len(open_frames), "row": row, "parent": parent})
    # Scan backwards: a line is its parent's last child when no sibling follows before the parent's scope ends.
    later_at: dict[int, bool] = {}
    for item in reversed(lines):
        level = item["level"]
        item["last"] = not later_at.get(level, False)
        later_at[level] = True
        for deeper in [k for k in later_at if k > level]:
            del later_at[deeper]
    result: list[TreeLine] = []
    stack: list[bool] = []  # stack[l - 1]: the open ancestor at level l has later siblings
    for index, item in enumerate(lines):
        level = item["level"]
        del stack[max(level - 1, 0) :]
        if level >= 1:
            stack.append(not item["last"])
        parent = item["parent"]
        name = (
            item["path"][len(parent) + 1 :]
            if parent and item["path"].startswith(parent + "/")
            else item["path"]
        )
        following = lines[index + 1] if index + 1 < len(lines) else None
        result.append(
            TreeLine(
                path=item["path"],
                name=name,
                level=level,
                row=item["row"],
                block=summary.blocks.get(item["path"]),
                parent=parent,
                last=item["last"],
                guides=tuple(stack[:-1]) if level >= 1 else (),
                has_children=following is not None and following["level"] > level,
            )
        )
    return result


def _tree_prefix(line: TreeLine, continuation: bool = False) -> str:
    """``│  ├─ `` glyphs before a name; on a wrapped line's continuation, only the guides that run through it."""
    guides = "".join("│  " if more else "   " for more in line.guides)
    if continuation:
        own = ("│  " if not line.last else "   ") if line.level >= 1 else ""
        return guides + own + ("│" if line.has_children else "")
    if line.level == 0:
        return ""
    return guides + ("└─ " if line.last else "├─ ")


def _relative(source: str, path: str) -> str:
    """A row's source named relative to the innermost instance holding both (``Basic.0/relu.1`` seen from
    ``Stage.0/Basic.1/add.0``): short, and unambiguous beside the tree."""
    common = 0
    for a, b in zip(source.split("/")[:-1], path.split("/")[:-1], strict=False):
        if a != b:
            break
        common += 1
    return "/".join(source.split("/")[common:])


def connections(summary: Summary, lines: Sequence[TreeLine]) -> dict[str, str]:
    """ "Connected to" text per row path: the rows (or inputs) feeding it, left out when that is just the row
    above (or, for the first row, the only input). Empty when the rows form a chain: a network without branches,
    or one whose branches all sit inside rows collapsed by the depth."""
    if summary.is_chain:
        return {}
    out: dict[str, str] = {}
    previous: str | None = summary.inputs[0].name if len(summary.inputs) == 1 else None
    for line in lines:
        if line.row is None:
            continue
        sources = list(line.row.sources)
        if sources != ([previous] if previous is not None else []):
            out[line.path] = ", ".join(_relative(source, line.path) for source in sources)
        previous = line.path
    return out


# -------------------------------------------------------------------------------------------- text ---


_TEXT_HEADINGS = ["Layer", "Op", "Output", "Params", "MACs", "RF", "Jump", "Connected to"]
_RIGHT = {3, 4, 5, 6}
_FLEXIBLE = (1, 7)
_PATHS = 7
"""Columns that wrap onto more lines (at ", ") when the table would be wider than :data:`WIDTH`."""
_NOT_COUNTED = "--"
"""What an expanded instance's header shows for sums its lines below already show (torchinfo's habit)."""


def _pieces(text: str, paths: bool = False, words: bool = False) -> list[str]:
    """Where a cell may wrap: after each ", ", in a list of paths also after each "/", and with ``words`` at any
    space or after "("; so no name and no argument is ever split."""
    parts = text.split(", ")
    pieces = [part + ("," if index < len(parts) - 1 else "") for index, part in enumerate(parts)]
    if paths:
        pieces = [p for piece in pieces for p in re.split(r"(?<=/)", piece) if p]
    if words:
        # Last resort: at spaces, and after a call's "(" (``BottleneckStage(`` / ``c=128,``).
        pieces = [word for piece in pieces for word in re.split(r" |(?<=\()", piece) if word]
    return pieces


def _elide(name: str, width: int) -> str:
    """``name`` in at most ``width`` columns: whole when it fits; else a qualified name keeps its leaf
    (``Dil…/Bottleneck.22/relu.2`` -> ``Dila…/relu.2``) and a single name its two ends (``DilatedB…kStage.0``),
    with "…" where the middle was."""
    if len(name) <= width:
        return name
    parent, slash, leaf = name.rstrip("/").rpartition("/")
    leaf += name[len(name.rstrip("/")) :]  # a path piece of Connected to keeps its trailing "/"
    if parent and len(leaf) + 2 <= width:
        return name[: width - len(leaf) - 2] + "…" + slash + leaf
    return _clip(name, width)


def _wrap_cell(text: str, width: int, paths: bool = False) -> list[str]:
    """Greedy wrap at ", "; a piece wider than ``width`` alone is broken further (after "/" in a path, then at
    spaces or after "("), so a name is only ever broken when it cannot fit on a line of its own; one that still
    does not fit (the table is at :data:`WIDTH` already) is elided in the middle."""
    pieces: list[str] = []
    for piece in _pieces(text):
        if len(piece) <= width:
            pieces.append(piece)
            continue
        for part in _pieces(piece, paths=paths):
            if len(part) <= width:
                pieces.append(part)
                continue
            pieces.extend(_elide(word, width) for word in _pieces(part, words=True))
    lines: list[str] = []
    current = ""
    for piece in pieces:
        glue = "" if current.endswith("/") else " "
        candidate = f"{current}{glue}{piece}" if current else piece
        if len(candidate) > width and current:
            lines.append(current)
            current = piece
        else:
            current = candidate
    return [*lines, current]


def _text_cells(summary: Summary, line: TreeLine, connected: dict[str, str]) -> list[str]:
    name = _tree_prefix(line) + line.name
    if line.row is not None:
        row = line.row
        rf = row.receptive_field
        return [
            name,
            row.label,
            fmt_shape(row.output_shape),
            format_count(row.params),
            format_count(row.macs),
            format_field(rf),
            "" if rf.is_global else format_field(rf, "jump"),
            connected.get(line.path, ""),
        ]
    block = line.block
    assert block is not None
    rf = block.receptive_field
    return [
        name,
        block.call,
        fmt_shape(block.output_shape),
        _NOT_COUNTED,
        _NOT_COUNTED,
        format_field(rf),
        "" if rf.is_global else format_field(rf, "jump"),
        "",
    ]


def _layout(cells: Sequence[Sequence[str]], headings: Sequence[str], floors: tuple[int, int]) -> list[int]:
    """Column widths: fixed columns as wide as their widest cell; the flexible ones share what is left of
    :data:`WIDTH`, never narrower than their longest unbreakable piece while the table fits. When even those
    pieces cannot share :data:`WIDTH` (deep trees of long block names), :func:`_shrink` narrows the name columns
    and the names that no longer fit are elided in the middle; ``floors`` are Layer's and Op's narrowest."""
    natural = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headings)]
    least = list(natural)
    for i in _FLEXIBLE:
        if i < len(headings):
            least[i] = max(
                [len(headings[i])] + [len(p) for c in cells for p in _pieces(c[i], i == _PATHS, True)]
            )
    gaps = 2 * (len(headings) - 1)
    if sum(least) + gaps > WIDTH:
        least = _shrink(least, headings, floors, sum(least) + gaps - WIDTH)
    flexible = [i for i in _FLEXIBLE if i < len(headings)]
    room = WIDTH - gaps - sum(w for i, w in enumerate(least) if i not in flexible)
    widths = [least[i] if i not in flexible else natural[i] for i in range(len(headings))]
    if sum(natural[i] for i in flexible) <= room:
        return widths
    for i in flexible:
        widths[i] = least[i]
    spare = room - sum(least[i] for i in flexible)
    # Room for a layer's label first (24 columns hold `conv 3x3 /2 → 128`), then the connections (a list of
    # names reads badly wrapped), then the rest for the long calls of block headers.
    for i, cap in [(1, 24), *[(i, natural[i]) for i in flexible[1:]], (1, natural[1])]:
        if spare <= 0:
            break
        grow = max(0, min(spare, min(cap, natural[i]) - widths[i]))
        widths[i] += grow
        spare -= grow
    return widths


_MIN_CONNECTED = len("Connected to")
_MIN_OP = 10
_MIN_NAME = 8
"""Narrowest the name columns get when a table must shrink to :data:`WIDTH` (see :func:`_shrink`)."""


def _shrink(widths: Sequence[int], headings: Sequence[str], floors: tuple[int, int], over: int) -> list[int]:
    """Take ``over`` columns from the name columns, in this order: from Connected to (a list of paths, the
    auxiliary column) down to its heading's width; from the widest of Layer and Op, one column at a time, down
    to ``floors`` (Layer: 8 columns of name after the deepest glyphs; Op: the longest word of a layer's label,
    so only block calls of header lines lose their middle); then from Op down to 10 columns. The fixed columns
    (numbers, shapes) are never narrowed; a table whose floors alone exceed :data:`WIDTH` stays wider."""
    out = list(widths)
    if len(headings) > _PATHS:
        take = min(over, max(out[_PATHS] - _MIN_CONNECTED, 0))
        out[_PATHS] -= take
        over -= take
    while over > 0:
        shrinkable = [i for i in (0, 1) if out[i] > floors[i]]
        if not shrinkable:
            break
        widest = max(
            shrinkable, key=lambda i: (out[i], i)
        )  # on a tie, Op gives first: the tree keeps its names
        out[widest] -= 1
        over -= 1
    take = min(over, max(out[1] - max(_MIN_OP, len(headings[1])), 0))
    out[1] -= take
    return out


def to_text(summary: Summary) -> str:
    """A torchinfo-style tree: one line per row, a header line for every expanded block instance, names indented
    by nesting, whole unless the table cannot otherwise fit :data:`WIDTH` (then elided in the middle, see
    :func:`_shrink`); long labels wrap at ", ". A "Connected to" column appears when the network is
    not a chain. Then the totals with their conventions."""
    lines = tree(summary)
    connected = connections(summary, lines)
    headings = _TEXT_HEADINGS if connected else _TEXT_HEADINGS[:-1]
    cells = [_text_cells(summary, line, connected)[: len(headings)] for line in lines]
    prefixes = [len(_tree_prefix(line)) for line in lines]
    label_words = [
        len(word)
        for c, line in zip(cells, lines, strict=True)
        if line.row
        for word in _pieces(c[1], words=True)
    ]
    floors = (max([len(headings[0]), *(p + _MIN_NAME for p in prefixes)]), max([_MIN_OP, *label_words]))
    widths = _layout(cells, headings, floors)
    for values, prefix, line in zip(cells, prefixes, lines, strict=True):
        if len(values[0]) > widths[0]:  # only when the table had to shrink: the name loses its middle
            values[0] = values[0][:prefix] + _elide(line.name, widths[0] - prefix)

    def line_text(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if index in _RIGHT else value.ljust(width)
            for index, (value, width) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * min(WIDTH, sum(widths) + 2 * (len(widths) - 1))
    out = [_wrap(_header(summary)), rule, line_text(headings), rule]
    for line, values in zip(lines, cells, strict=True):
        wrapped = {i: _wrap_cell(values[i], widths[i], i == _PATHS) for i in _FLEXIBLE if i < len(values)}
        height = max(len(parts) for parts in wrapped.values())
        for k in range(height):
            current = list(values) if k == 0 else [""] * len(values)
            if k:
                current[0] = _tree_prefix(line, continuation=True)
            for i, parts in wrapped.items():
                current[i] = parts[k] if k < len(parts) else ""
            out.append(line_text(current))
    out.append(rule)
    totals = _totals(summary)
    name_width = max(len(name) for name, _, _ in totals)
    value_width = max(len(value) for _, value, _ in totals)
    for name, value, note in totals:
        lead = f"{name.ljust(name_width)}  {value.rjust(value_width)}  "
        # A long convention note wraps under itself rather than losing its middle.
        notes = textwrap.wrap(note, WIDTH - len(lead)) or [""]
        out.append(lead + notes[0])
        out.extend(" " * len(lead) + rest for rest in notes[1:])
    legend = "RF = receptive field size in input pixels, Jump = its effective stride (docs/summary.md)."
    if any(line.row is None for line in lines):
        legend += f" {_NOT_COUNTED}: counted in the lines below."
    if connected:
        legend += " Connected to: what feeds a row, where that is not the row above."
    out.extend(textwrap.wrap(legend, WIDTH))
    return "\n".join(out) + "\n"


def _wrap(text: str) -> str:
    """Break a long header line at '; ' so it fits :data:`WIDTH`."""
    if len(text) <= WIDTH:
        return text
    lines: list[str] = []
    current = ""
    for part in text.split("; "):
        candidate = f"{current}; {part}" if current else part
        if len(candidate) > WIDTH and current:
            lines.append(current + ";")
            current = "  " + part
        else:
            current = candidate
    lines.append(current)
    return "\n".join(_clip(item, WIDTH) for item in lines)


# ---------------------------------------------------------------------------------------- markdown ---


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(summary: Summary) -> str:
    """A Markdown document: heading, the layer table (every figure) and the totals table."""
    out = [f"# {summary.network}", "", _md(_header(summary)), ""]
    out.append("| Layer | Op | Output | Params | Buffers | MACs | FLOPs | Activations | RF | Jump | Start |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in summary.rows:
        rf = row.receptive_field
        start = "" if rf.is_global else format_field(rf, "start")
        jump = "" if rf.is_global else format_field(rf, "jump")
        out.append(
            f"| `{row.path}` | {_md(row.label)} | {fmt_shape(row.output_shape)} | {format_count(row.params)} "
            f"| {format_count(row.buffers)} | {format_count(row.macs)} | {format_count(row.flops)} "
            f"| {format_count(row.activation_elements)} | {format_field(rf)} | {jump} | {start} |"
        )
    out += ["", "| Total | Value | Convention |", "|---|---:|---|"]
    for name, value, note in _totals(summary):
        out.append(f"| {name} | {value} | {_md(note)} |")
    out += [
        "",
        "Activations are output elements per sample. RF, Jump and Start: receptive field size, effective stride "
        "and centre of the first output position, in input pixels (docs/summary.md).",
    ]
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------- json ---


_NUMBER_LIST = re.compile(r"\[\s+(-?[0-9.e+]+(?:,\s+-?[0-9.e+]+)*)\s+\]")


def to_json(summary: Summary) -> str:
    """The JSON document described in docs/summary.md (lists of numbers kept on one line)."""
    text = json.dumps(summary.to_json(), indent=2, ensure_ascii=False)
    return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


# -------------------------------------------------------------------------------------------- html ---


def to_html(summary: Summary, diagram: bool = True) -> str:
    """The interactive page of :mod:`cnndsl.report_html`; with ``diagram`` (and the network the summary was made
    from) it embeds the network's diagram, rendered now by Graphviz's ``dot`` if that is installed."""
    from .report_html import diagram_view
    from .report_html import to_html as page

    view = diagram_view(summary.source, summary.depth) if diagram and summary.source is not None else None
    return page(summary, view)
