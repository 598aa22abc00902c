"""The interactive HTML view of a :class:`~cnndsl.analysis.Summary`: one self-contained page (or, for Jupyter, one
``<div>``) with inline CSS and JavaScript and nothing fetched when it is viewed.

What it shows: the totals with their conventions; labelled bar charts naming the costliest rows (MACs, params) and
the share of each top-level part; the network diagram as inline SVG (rendered by Graphviz's ``dot`` when the report
is made; a note stands in for it when ``dot`` is missing); and the layer table as a collapsible tree of block
instances with sortable columns. Hovering a table row lights its boxes in the diagram, and hovering a box (or a
bar) lights its rows.

Rows, bars and diagram boxes are tied together by network node ids: a row and a bar carry ``data-ids`` (the nodes
they stand for), and the page receives a map from each diagram box's Graphviz name (``n12``, or ``g40`` for a
collapsed block; :mod:`cnndsl.render`) to its node ids. The SVG keeps those names as each node's ``<title>``.

Everything here returns strings; only the CLI writes files.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .analysis import Summary, format_count, format_field
from .network import Network
from .ops import fmt_shape
from .render import AUTO_NODE_LIMIT, si

TOP_ROWS = 12
"""How many of the costliest rows each chart names."""


@dataclass(frozen=True)
class DiagramView:
    """The diagram to embed: SVG text (or ``None`` with a ``note`` saying why) and, per Graphviz node name, the
    network node ids the box stands for."""

    svg: str | None
    boxes: dict[str, tuple[int, ...]]
    note: str = ""


def diagram_view(network: Network, depth: int | None) -> DiagramView:
    """Render ``network``'s diagram for the report: at the summary's depth, or for every layer when that is at most
    :data:`cnndsl.render.AUTO_NODE_LIMIT` boxes (else the deepest depth that fits, as ``cnndsl draw`` does).

    Runs Graphviz's ``dot``; without it the view has no SVG and a note saying how to get one."""
    import graphviz

    from . import render

    chosen: render.Depth = depth if depth is not None else "auto"
    diagram = render.build(network, depth=chosen)
    boxes = {box.id: box.nodes for box in diagram.boxes() if box.nodes}
    graph = render.to_graphviz(network, depth=chosen)
    note = ""
    if depth is None and diagram.depth is not None:
        note = (
            f"More than {AUTO_NODE_LIMIT} boxes: the diagram is drawn {diagram.depth} "
            f"level{'s' if diagram.depth != 1 else ''} deep; "
            "hover a collapsed block to find its rows."
        )
    try:
        svg = graph.pipe(format="svg", encoding="utf-8", quiet=True)
    except graphviz.ExecutableNotFound:
        return DiagramView(
            None,
            boxes,
            "No diagram: Graphviz's dot program was not found when this report was made "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz). The rest of the report is "
            "complete.",
        )
    except graphviz.CalledProcessError as error:
        return DiagramView(None, boxes, f"No diagram: Graphviz's dot failed ({error}).")
    # Inline SVG in HTML: drop the XML declaration, doctype and comments before <svg>.
    return DiagramView(svg[svg.index("<svg") :], boxes, note)


# ------------------------------------------------------------------------------------------- charts ---


@dataclass(frozen=True)
class Bar:
    """One bar: its label, the network nodes it stands for, its value and its tooltip."""

    name: str
    ids: Sequence[int]
    value: int
    tip: str = ""


def _nice_step(peak: float, ticks: int = 4) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` intervals up to ``peak``."""
    raw = peak / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _ids(ids: Sequence[int]) -> str:
    return " ".join(str(i) for i in ids)


def _bar_chart(items: Sequence[Bar], title: str, axis: str, total: int, colour: str) -> str:
    """Horizontal bars, largest first: each labelled with its name, value and share of ``total``, under a titled
    x axis with ticks. Bars carry ``data-ids`` so hovering one lights its rows and boxes."""
    esc = html.escape
    if not items or total == 0:
        return f'<figure class="chart"><figcaption>{esc(title)}</figcaption><p class="note">all zero</p></figure>'
    bar_h, gap, top, axis_h = 16, 4, 8, 38
    label_w = 12 + 6.6 * max(len(item.name) for item in items)
    plot_w, value_w = 360, 130
    width = label_w + plot_w + value_w
    height = top + len(items) * (bar_h + gap) + axis_h
    peak = max(item.value for item in items)
    step = _nice_step(peak)
    span = step * math.ceil(peak / step)
    out = [
        f'<figure class="chart"><figcaption>{esc(title)}</figcaption>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" role="img" aria-label="{esc(title)}">',
    ]
    base = top + len(items) * (bar_h + gap)
    tick = 0.0
    while tick <= span + step / 2:
        x = label_w + plot_w * tick / span
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{base}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{base + 14}" text-anchor="middle">{si(tick)}</text>')
        tick += step
    out.append(f'<line class="axis" x1="{label_w}" y1="{base}" x2="{label_w + plot_w}" y2="{base}"/>')
    out.append(
        f'<text class="axis-title" x="{label_w + plot_w / 2:.1f}" y="{base + 32}" text-anchor="middle">'
        f"{esc(axis)}</text>"
    )
    for index, item in enumerate(items):
        y = top + index * (bar_h + gap)
        value = item.value
        w = plot_w * value / span
        share = 100 * value / total
        tip = f"{item.tip or item.name}: {format_count(value)} ({share:.1f}% of {format_count(total)})"
        out.append(f'<g class="bar" data-ids="{_ids(item.ids)}"><title>{esc(tip)}</title>')
        out.append(
            f'<text class="label" x="{label_w - 6:.1f}" y="{y + bar_h - 4}" text-anchor="end">'
            f"{esc(item.name)}</text>"
        )
        out.append(
            f'<rect x="{label_w}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar_h}" fill="{colour}"/>'
        )
        out.append(
            f'<text class="value" x="{label_w + w + 4:.1f}" y="{y + bar_h - 4}">'
            f"{si(value)} · {share:.1f}%</text></g>"
        )
    out.append("</svg></figure>")
    return "\n".join(out)


def _top(summary: Summary, key: str) -> list[Bar]:
    rows = sorted(summary.rows, key=lambda row: -int(getattr(row, key)))
    return [
        Bar(row.path, row.layer_ids, int(getattr(row, key)), f"{row.path} ({row.label})")
        for row in rows[:TOP_ROWS]
        if getattr(row, key)
    ]


def _parts(summary: Summary, key: str) -> list[Bar]:
    """The network body's own layers and top-level block instances, largest first (the first TOP_ROWS)."""
    parts = [
        Bar(block.path, block.layer_ids, int(getattr(block, key)), f"{block.path}: {block.call}")
        for block in summary.blocks.values()
        if block.level == 1
    ]
    parts += [
        Bar(layer.path, (layer.id,), int(getattr(layer, key)), f"{layer.path} ({layer.label})")
        for layer in summary.layers
        if not layer.frames
    ]
    parts = [part for part in parts if part.value]
    return sorted(parts, key=lambda part: -part.value)[:TOP_ROWS]


def charts(summary: Summary) -> str:
    """The charts section: the costliest rows by MACs and by params, and (when the network calls blocks) the share
    of each top-level block instance."""
    t = summary.totals
    where = "rows" if summary.depth is None else f"rows at depth {summary.depth}"
    out = [
        _bar_chart(
            _top(summary, "macs"),
            f"Costliest {where} by MACs (top {TOP_ROWS})",
            "MACs per sample",
            t.macs,
            "#4c72b0",
        ),
        _bar_chart(
            _top(summary, "params"),
            f"Largest {where} by parameters (top {TOP_ROWS})",
            "trainable parameters",
            t.trainable_params,
            "#dd8452",
        ),
    ]
    if any(block.level == 1 for block in summary.blocks.values()):
        out.append(
            _bar_chart(
                _parts(summary, "macs"),
                "MACs by top-level block and layer",
                "MACs per sample",
                t.macs,
                "#55a868",
            )
        )
        out.append(
            _bar_chart(
                _parts(summary, "params"),
                "Parameters by top-level block and layer",
                "trainable parameters",
                t.trainable_params,
                "#c44e52",
            )
        )
    return "\n".join(out)


# -------------------------------------------------------------------------------------------- table ---

_COLUMNS = [
    ("Layer", "text"),
    ("Op", "text"),
    ("Output", "none"),
    ("Params", "num"),
    ("MACs", "num"),
    ("FLOPs", "num"),
    ("Activations", "num"),
    ("RF", "num"),
    ("Jump", "num"),
    ("Connected to", "text"),
]


def _table(summary: Summary) -> str:
    from .report import connections, tree

    esc = html.escape
    lines = tree(summary)
    connected = connections(summary, lines)
    columns = _COLUMNS if connected else _COLUMNS[:-1]
    head = "".join(
        f'<th data-sort="{kind}" data-col="{index}"'
        + (' class="n"' if kind == "num" else "")
        + f' title="{"sort by " + name if kind != "none" else ""}">{esc(name)}</th>'
        for index, (name, kind) in enumerate(columns)
    )
    out = [f'<table class="layers"><thead><tr>{head}</tr></thead><tbody>']
    group_index: dict[str, int] = {}
    parent_of = {line.path: line.parent for line in lines if line.row is None}
    for index, line in enumerate(lines):
        ancestors: list[str] = []
        parent = line.parent
        while parent is not None:
            ancestors.append(str(group_index[parent]))
            parent = parent_of[parent]
        figures = line.row if line.row is not None else line.block
        assert figures is not None
        rf = figures.receptive_field
        if line.row is None:
            group_index[line.path] = index
            kind, label = "group", line.block.call if line.block else ""
            toggle = '<button class="toggle" aria-expanded="true" title="collapse or expand">▾</button>'
        else:
            kind, label, toggle = "row", line.row.label, '<span class="toggle-space"></span>'
        rf_sort = -1 if rf.is_global else max(rf.size)
        jump_sort = -1 if rf.is_global else max(rf.jump)
        cells = [
            f'<td class="name" style="padding-left:{0.4 + 1.3 * line.level:.1f}em" data-v="{esc(line.path)}">'
            f'{toggle}<span class="short" title="{esc(line.path)}">{esc(line.name)}</span>'
            f'<span class="full">{esc(line.path)}</span></td>',
            f'<td class="op" data-v="{esc(label)}">{esc(label)}</td>',
            f"<td>{esc(fmt_shape(figures.output_shape))}</td>",
            *(
                f'<td class="n" data-v="{value}">{format_count(value)}</td>'
                for value in (figures.params, figures.macs, figures.flops, figures.activation_elements)
            ),
            f'<td class="n" data-v="{rf_sort}">{esc(format_field(rf))}</td>',
            f'<td class="n" data-v="{jump_sort}">{"" if rf.is_global else esc(format_field(rf, "jump"))}</td>',
        ]
        if connected:
            text = connected.get(line.path, "")
            cells.append(f'<td class="conn" data-v="{esc(text)}">{esc(text)}</td>')
        out.append(
            f'<tr class="{kind}" data-i="{index}" data-level="{line.level}" data-anc="{" ".join(ancestors)}" '
            f'data-ids="{_ids(figures.layer_ids)}" data-path="{esc(line.path)}">' + "".join(cells) + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- page ---

_STYLE = """
.cnndsl-report { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; }
.cnndsl-report h1 { font-size: 1.45em; margin: 0 0 .2em; }
.cnndsl-report h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
.cnndsl-report .note { color: #666; margin: .3em 0; }
.cnndsl-report table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
.cnndsl-report th, .cnndsl-report td { padding: 2px 8px; border-bottom: 1px solid #e3e3e3; text-align: left;
  white-space: nowrap; }
.cnndsl-report .n { text-align: right; }
.cnndsl-report table.totals td:first-child { font-weight: 600; }
.cnndsl-report .charts { display: flex; flex-wrap: wrap; gap: 12px 28px; }
.cnndsl-report figure.chart { margin: 0; }
.cnndsl-report figcaption { font-weight: 600; margin-bottom: 4px; }
.cnndsl-report .chart text { font: 11px system-ui, sans-serif; fill: #333; }
.cnndsl-report .chart text.axis-title { font-size: 12px; fill: #555; }
.cnndsl-report .chart text.tick { fill: #777; }
.cnndsl-report .chart line.grid { stroke: #eee; }
.cnndsl-report .chart line.axis { stroke: #888; }
.cnndsl-report .chart g.bar { cursor: pointer; }
.cnndsl-report .chart g.bar.hl rect { stroke: #e4572e; stroke-width: 2; }
.cnndsl-report .chart g.bar.hl text.label { font-weight: bold; fill: #c2410c; }
.cnndsl-report .main { display: flex; gap: 16px; align-items: flex-start; }
.cnndsl-report .pane { max-height: 88vh; overflow: auto; border: 1px solid #ddd; border-radius: 6px; }
.cnndsl-report .diagram { flex: 0 1 30%; min-width: 260px; background: #fff; padding: 4px; }
.cnndsl-report .diagram svg { max-width: 100%; height: auto; display: block; }
.cnndsl-report .diagram g.node { cursor: pointer; }
.cnndsl-report .diagram g.node.hl polygon, .cnndsl-report .diagram g.node.hl ellipse,
.cnndsl-report .diagram g.node.hl path { stroke: #e4572e; stroke-width: 4; }
.cnndsl-report .tablepane { flex: 1 1 70%; min-width: 0; }
.cnndsl-report .tools { position: sticky; top: 0; background: #fafafa; padding: 4px 6px; z-index: 2;
  border-bottom: 1px solid #ddd; display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.cnndsl-report .tools button { font: inherit; font-size: 12px; padding: 1px 8px; }
.cnndsl-report table.layers thead th { position: sticky; top: 0; background: #f0f0f0; cursor: pointer;
  z-index: 1; user-select: none; }
.cnndsl-report table.layers thead th[data-sort="none"] { cursor: default; }
.cnndsl-report th[aria-sort="descending"]::after { content: " ▼"; }
.cnndsl-report th[aria-sort="ascending"]::after { content: " ▲"; }
.cnndsl-report tr.group td { background: #f4f6fb; color: #334; }
.cnndsl-report tr.group td.name { font-weight: 600; }
.cnndsl-report tr.group td.n { color: #667; font-style: italic; }
.cnndsl-report tr.hl td { background: #ffe9a8 !important; }
.cnndsl-report tr[hidden] { display: none; }
.cnndsl-report button.toggle { border: 0; background: none; cursor: pointer; width: 1.3em; padding: 0;
  font-size: 12px; color: #556; }
.cnndsl-report .toggle-space { display: inline-block; width: 1.3em; }
.cnndsl-report td.conn { color: #555; white-space: normal; min-width: 8em; }
.cnndsl-report tr.group td.op { white-space: normal; min-width: 9em; max-width: 19em; }
.cnndsl-report .sorted-note { color: #9a3412; }
.cnndsl-report table.layers { font-size: 13px; }
.cnndsl-report table.layers td, .cnndsl-report table.layers th { padding: 2px 6px; }
.cnndsl-report span.full { display: none; }
.cnndsl-report table.flat span.full { display: inline; }
.cnndsl-report table.flat span.short, .cnndsl-report table.flat .toggle-space { display: none; }
.cnndsl-report table.flat td.name { padding-left: 0.4em !important; }
"""

# Plain ES2017 with no library: the page must work from a file:// URL with the network off.
_SCRIPT = r"""
(function (root) {
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  var table = root.querySelector("table.layers");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var boxes = JSON.parse(root.querySelector("script.boxes").textContent);
  var svgNodes = {};
  root.querySelectorAll(".diagram g.node").forEach(function (g) {
    var t = g.querySelector("title");
    if (t) { svgNodes[t.textContent] = g; g.setAttribute("data-box", t.textContent); }
  });
  var boxOf = {};
  Object.keys(boxes).forEach(function (box) { boxes[box].forEach(function (id) { boxOf[id] = box; }); });
  var rowsOf = {};
  rows.forEach(function (r) { ids(r).forEach(function (id) { (rowsOf[id] = rowsOf[id] || []).push(r); }); });
  var bars = Array.prototype.slice.call(root.querySelectorAll(".chart g.bar"));
  function ids(el) { return el.dataset.ids ? el.dataset.ids.split(" ") : []; }
  var collapsed = {};
  var sorted = null;  // {col, dir} while the table is sorted flat
  var lit = [];

  function clear() { lit.forEach(function (e) { e.classList.remove("hl"); }); lit = []; }
  function light(e) { if (e && lit.indexOf(e) < 0) { e.classList.add("hl"); lit.push(e); } }
  function reveal(pane, el) {
    // Scroll only the pane, never the page, so hovering does not move what is under the pointer.
    if (!pane || !el) return;
    var p = pane.getBoundingClientRect(), r = el.getBoundingClientRect();
    if (r.top < p.top + 40 || r.bottom > p.bottom) pane.scrollTop += r.top - p.top - p.height / 3;
    if (r.left < p.left || r.right > p.right) pane.scrollLeft += r.left - p.left - p.width / 3;
  }
  function lightBoxes(idList) {
    var first = null;
    idList.forEach(function (id) {
      var g = svgNodes[boxOf[id]];
      if (g) { light(g); first = first || g; }
    });
    return first;
  }
  function lightRows(idList) {
    // The most detailed visible rows holding these nodes; a collapsed group stands in for its hidden rows.
    var want = {};
    idList.forEach(function (id) { want[id] = true; });
    var hits = [];
    Object.keys(want).forEach(function (id) {
      var visible = (rowsOf[id] || []).filter(function (r) { return !r.hidden; });
      var leaf = visible.filter(function (r) { return r.classList.contains("row"); });
      var pick = leaf.length ? leaf : visible.slice(-1);
      pick.forEach(function (r) { if (hits.indexOf(r) < 0) hits.push(r); });
    });
    hits.forEach(light);
    return hits[0] || null;
  }
  function lightBars(idList) {
    var want = {};
    idList.forEach(function (id) { want[id] = true; });
    bars.forEach(function (b) { if (ids(b).some(function (id) { return want[id]; })) light(b); });
  }
  rows.forEach(function (r) {
    r.addEventListener("mouseenter", function () {
      clear(); light(r);
      var list = ids(r);
      reveal(root.querySelector(".diagram"), lightBoxes(list));
      lightBars(list);
    });
    r.addEventListener("mouseleave", clear);
  });
  Object.keys(svgNodes).forEach(function (box) {
    var g = svgNodes[box];
    g.addEventListener("mouseenter", function () {
      clear(); light(g);
      var list = (boxes[box] || []).map(String);
      reveal(root.querySelector(".tablepane"), lightRows(list));
      lightBars(list);
    });
    g.addEventListener("mouseleave", clear);
  });
  bars.forEach(function (b) {
    b.addEventListener("mouseenter", function () {
      clear();
      var list = ids(b);
      lightBars(list);  // the same rows in the other charts too
      light(b);
      lightBoxes(list);
      reveal(root.querySelector(".tablepane"), lightRows(list));
    });
    b.addEventListener("mouseleave", clear);
  });

  function refresh() {
    rows.forEach(function (r) {
      if (sorted) { r.hidden = r.classList.contains("group"); return; }
      var anc = r.dataset.anc ? r.dataset.anc.split(" ") : [];
      r.hidden = anc.some(function (a) { return collapsed[a]; });
      var b = r.querySelector("button.toggle");
      if (b) {
        var c = !!collapsed[r.dataset.i];
        b.textContent = c ? "▸" : "▾";
        b.setAttribute("aria-expanded", c ? "false" : "true");
      }
    });
    root.querySelector(".sorted-note").hidden = !sorted;
    root.querySelector(".tree-note").hidden = !!sorted;
    table.classList.toggle("flat", !!sorted);
  }
  function stickHeadings() {
    // Headings stick just under the tool bar, whose height depends on how its text wraps.
    var below = root.querySelector(".tools").offsetHeight + "px";
    table.querySelectorAll("thead th").forEach(function (th) { th.style.top = below; });
  }
  window.addEventListener("resize", stickHeadings);
  rows.forEach(function (r) {
    var b = r.querySelector("button.toggle");
    if (b) b.addEventListener("click", function (ev) {
      ev.stopPropagation();
      collapsed[r.dataset.i] = !collapsed[r.dataset.i];
      refresh();
    });
  });
  function place(order) {
    var fragment = document.createDocumentFragment();
    order.forEach(function (r) { fragment.appendChild(r); });
    body.appendChild(fragment);
  }
  function treeOrder() {
    sorted = null;
    table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    place(rows.slice().sort(function (a, b) { return a.dataset.i - b.dataset.i; }));
    refresh();
  }
  table.querySelectorAll("th").forEach(function (th) {
    var kind = th.dataset.sort;
    if (kind === "none") return;
    th.addEventListener("click", function () {
      var col = +th.dataset.col;
      // numbers: largest first, then smallest first; text: A-Z, then Z-A; a third click restores the tree.
      var first = kind === "num" ? "descending" : "ascending";
      var second = first === "descending" ? "ascending" : "descending";
      var dir = !sorted || sorted.col !== col ? first : sorted.dir === first ? second : null;
      if (!dir) { treeOrder(); return; }
      sorted = { col: col, dir: dir };
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir);
      var sign = dir === "ascending" ? 1 : -1;
      var keyed = rows.map(function (r) { return [r.cells[col].dataset.v, +r.dataset.i, r]; });
      keyed.sort(function (a, b) {
        var d = kind === "num" ? a[0] - b[0] : a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
        return sign * d || a[1] - b[1];
      });
      place(keyed.map(function (k) { return k[2]; }));
      refresh();
    });
  });
  root.querySelector("button.expand-all").addEventListener("click", function () { collapsed = {}; refresh(); });
  root.querySelector("button.collapse-all").addEventListener("click", function () {
    collapsed = {};
    rows.forEach(function (r) { if (r.classList.contains("group")) collapsed[r.dataset.i] = true; });
    refresh();
  });
  root.querySelector("button.tree-order").addEventListener("click", treeOrder);
  refresh();
  stickHeadings();
})(document.getElementById("__ROOT_ID__"));
"""


def _json_for_script(data: object) -> str:
    # Inside <script>, "</" would end the element; \u003c keeps the JSON equal and the markup closed.
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def to_html_fragment(
    summary: Summary, diagram: DiagramView | None = None, element_id: str = "cnndsl-report"
) -> str:
    """The report as one ``<div>`` with its own style and script (what Jupyter shows); ``element_id`` must be
    unique in the page that holds it."""
    from .report import _header, _totals

    esc = html.escape
    if not re.fullmatch(r"[A-Za-z][\w-]*", element_id):
        raise ValueError(f"element_id must be a plain HTML id, got {element_id!r}")
    out = [
        f'<div class="cnndsl-report" id="{element_id}">',
        f"<style>{_STYLE}</style>",
        f"<h1>{esc(summary.network)}</h1>",
        f'<p class="note">{esc(_header(summary))}</p>',
        "<h2>Totals</h2>",
        '<table class="totals"><tbody>',
    ]
    for name, value, note in _totals(summary):
        out.append(
            f'<tr><td>{esc(name)}</td><td class="n">{esc(value)}</td><td class="note">{esc(note)}</td></tr>'
        )
    out.append("</tbody></table>")
    out.append("<h2>Where the cost is</h2>")
    out.append(
        '<p class="note">Hover a bar to find its rows in the table and its boxes in the diagram. '
        "MACs and FLOPs are per sample.</p>"
    )
    out.append(f'<div class="charts">{charts(summary)}</div>')
    out.append("<h2>Layers</h2>")
    out.append('<div class="main">')
    out.append('<div class="pane diagram">')
    if diagram is None:
        out.append('<p class="note">No diagram in this view (made without the network).</p>')
    else:
        if diagram.note:
            out.append(f'<p class="note">{esc(diagram.note)}</p>')
        if diagram.svg is not None:
            out.append(diagram.svg)
    out.append("</div>")
    boxes = {} if diagram is None else {name: list(ids) for name, ids in diagram.boxes.items()}
    out.append(f'<script type="application/json" class="boxes">{_json_for_script(boxes)}</script>')
    out.append('<div class="pane tablepane">')
    out.append(
        '<div class="tools"><button type="button" class="expand-all">expand all</button>'
        '<button type="button" class="collapse-all">collapse all</button>'
        '<button type="button" class="tree-order">tree order</button>'
        '<span class="note tree-note">Click a heading to sort; block rows show the sums of the rows inside '
        "them.</span>"
        '<span class="sorted-note" hidden>Sorted: block rows hidden, each layer row with its full path; '
        "click the heading again, or tree order.</span></div>"
    )
    out.append(_table(summary))
    out.append("</div></div>")
    out.append(
        '<p class="note">Activations: output elements per sample. RF: receptive field size in input pixels; '
        "Jump: its effective stride. Generated by cnndsl summary (docs/summary.md).</p>"
    )
    out.append(f"<script>{_SCRIPT.replace('__ROOT_ID__', element_id)}</script>")
    out.append("</div>")
    return "\n".join(out)


def to_html(summary: Summary, diagram: DiagramView | None = None) -> str:
    """One self-contained page: :func:`to_html_fragment` in a document."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(summary.network)} — cnndsl summary</title>"
        "<style>body { margin: 1.5em 2em; background: #fff; }</style></head><body>\n"
        f"{to_html_fragment(summary, diagram)}\n</body></html>\n"
    )
