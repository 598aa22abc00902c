"""Formatters for a :class:`~cnndsl.analysis.Summary`: plain text (fits 120 columns), Markdown, JSON and one
self-contained HTML page (table, totals and an inline SVG per-layer cost chart; no external assets).

Every formatter returns a string; only the CLI writes files or prints. Each total is printed beside its counting
convention (:func:`cnndsl.analysis.conventions`).
"""

from __future__ import annotations

import html
import json
import re
import textwrap
from collections.abc import Callable, Sequence

from .analysis import Row, Summary, conventions, format_bytes, format_count, format_field
from .ops import fmt_shape

WIDTH = 120
"""The text table never exceeds this many columns."""

FORMATS = ("text", "md", "json", "html")

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


# -------------------------------------------------------------------------------------------- text ---


_TEXT_HEADINGS = ["Layer", "Op", "Output", "Params", "MACs", "FLOPs", "RF", "Jump"]
_RIGHT = {3, 4, 5, 6, 7}


def to_text(summary: Summary) -> str:
    """A table that fits :data:`WIDTH` columns, then the totals with their conventions."""
    cells = [_columns(row) for row in summary.rows]
    widths = [max([len(h)] + [len(cell[i]) for cell in cells]) for i, h in enumerate(_TEXT_HEADINGS[1:])]
    # Path and label share what the figures leave; the label keeps at least _MAX_LABEL, the path _MIN_PATH.
    room = WIDTH - sum(widths[1:]) - 2 * len(widths)
    longest_path = max([len(_TEXT_HEADINGS[0])] + [len(row.path) for row in summary.rows])
    label_width = min(widths[0], max(_MAX_LABEL, room - longest_path))
    path_width = max(_MIN_PATH, min(longest_path, room - label_width))
    label_width = max(8, min(label_width, room - path_width))
    widths[0] = label_width
    for values in cells:
        values[0] = _clip(values[0], label_width)
    all_widths = [path_width, *widths]

    def line(cells_of_row: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if index in _RIGHT else value.ljust(width)
            for index, (value, width) in enumerate(zip(cells_of_row, all_widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * min(WIDTH, sum(all_widths) + 2 * (len(all_widths) - 1))
    out = [_wrap(_header(summary)), rule, line(_TEXT_HEADINGS), rule]
    for row, values in zip(summary.rows, cells, strict=True):
        out.append(line([_clip(row.path, path_width), *values]))
    out.append(rule)
    totals = _totals(summary)
    name_width = max(len(name) for name, _, _ in totals)
    value_width = max(len(value) for _, value, _ in totals)
    for name, value, note in totals:
        lead = f"{name.ljust(name_width)}  {value.rjust(value_width)}  "
        # A long convention note wraps under itself rather than losing its middle.
        lines = textwrap.wrap(note, WIDTH - len(lead)) or [""]
        out.append(lead + lines[0])
        out.extend(" " * len(lead) + rest for rest in lines[1:])
    out.append("RF = receptive field size in input pixels, Jump = its effective stride (docs/summary.md).")
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

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
td.n, th.n { text-align: right; }
tr.block td { background: #f4f6fb; }
code { font-size: 0.95em; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
.note { color: #666; }
"""


def _bar_chart(rows: Sequence[Row], value: Callable[[Row], int], title: str, color: str) -> str:
    """A vertical bar chart, one bar per row, as inline SVG; each bar's tooltip names the row and its value."""
    width, height, left, bottom = 960, 180, 60, 20
    count = max(1, len(rows))
    step = (width - left) / count
    peak = max((value(row) for row in rows), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + bottom + 20}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="12">{html.escape(title)} (max {format_count(peak)})</text>',
        f'<line x1="{left}" y1="{height + 20}" x2="{width}" y2="{height + 20}" stroke="#999"/>',
    ]
    for index, row in enumerate(rows):
        amount = value(row)
        bar = height * amount / peak
        x = left + index * step
        tip = html.escape(f"{row.path} ({row.label}): {format_count(amount)}")
        parts.append(
            f'<rect x="{x:.2f}" y="{height + 20 - bar:.2f}" width="{max(step * 0.8, 0.5):.2f}" '
            f'height="{bar:.2f}" fill="{color}"><title>{tip}</title></rect>'
        )
    parts.append(f'<text x="{left}" y="{height + bottom + 16}">layers in source order →</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def to_html(summary: Summary) -> str:
    """One self-contained page: totals with conventions, per-layer MACs and params charts, the layer table."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(summary.network)} — cnndsl summary</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(summary.network)}</h1>",
        f'<p class="note">{esc(_header(summary))}</p>',
        "<h2>Totals</h2>",
        '<table><tr><th>Total</th><th class="n">Value</th><th>Convention</th></tr>',
    ]
    for name, value, note in _totals(summary):
        out.append(f'<tr><td>{esc(name)}</td><td class="n">{esc(value)}</td><td>{esc(note)}</td></tr>')
    out.append("</table>")
    out.append("<h2>Cost per layer</h2>")
    out.append(_bar_chart(summary.rows, lambda row: row.macs, "MACs per row", "#4c72b0"))
    out.append(_bar_chart(summary.rows, lambda row: row.params, "Params per row", "#dd8452"))
    out.append("<h2>Layers</h2>")
    headings = ["Layer", "Op", "Output", "Params", "Buffers", "MACs", "FLOPs", "Activations", "RF", "Jump"]
    numeric = {"Params", "Buffers", "MACs", "FLOPs", "Activations", "RF", "Jump"}
    out.append(
        "<table><tr>"
        + "".join(f'<th class="n">{h}</th>' if h in numeric else f"<th>{h}</th>" for h in headings)
        + "</tr>"
    )
    for row in summary.rows:
        rf = row.receptive_field
        cells = [
            f"<td><code>{esc(row.path)}</code></td>",
            f"<td>{esc(row.label)}</td>",
            f"<td>{esc(fmt_shape(row.output_shape))}</td>",
            *(
                f'<td class="n">{format_count(v)}</td>'
                for v in (row.params, row.buffers, row.macs, row.flops, row.activation_elements)
            ),
            f'<td class="n">{esc(format_field(rf))}</td>',
            f'<td class="n">{"" if rf.is_global else esc(format_field(rf, "jump"))}</td>',
        ]
        css = ' class="block"' if row.kind == "block" else ""
        out.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    out.append(
        '<p class="note">Activations: output elements per sample. RF: receptive field size in input pixels; '
        "Jump: its effective stride. Generated by cnndsl summary.</p>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
