"""Diagrams of a checked network: a ``graphviz.Digraph`` or the text of a mermaid flowchart.

Both come from one :class:`Diagram`, a plain description of what is drawn: boxes (layers, merges, inputs,
outputs and collapsed block instances), the clusters that frame expanded block instances, and the links between
boxes with the shapes they carry. Nothing here writes files or runs Graphviz; the CLI does that.

Reading the drawing:

- A layer box shows the registry's label (``conv 3x3 /2 → 64``) and, with costs on, its parameters and MACs.
- Merges are small circles: ``⊕`` add, ``∥`` concat, ``⊗`` mul; their inputs arrive in branch order.
- A block instance drawn in full is a cluster titled with its call (``Bottleneck(c=128, stride=2)``) and its totals;
  one collapsed by ``depth`` is a single 3-d box carrying the call, its layer count and its totals.
- An edge is labelled with the tensor shape (batch excluded) wherever the shape changes; an unlabelled edge
  carries the same shape as the edge into its source. Edges out of a collapsed block are always labelled.
- Fill colours follow the op family (``ops.REGISTRY[op].family``); the legend lists the families drawn.

``depth`` means what it means for ``cnndsl summary`` (and torchinfo): draw at most K levels. A block instance at
level K (level 1 = called in the network body) is one box with its totals; the instances around it are clusters.
``1`` draws every block the network calls as one box, ``2`` draws those as clusters of one box per block they
call, and so on; ``None`` draws every node. ``"auto"`` (the default) draws everything when that is at most
:data:`AUTO_NODE_LIMIT` boxes, else the deepest depth that fits.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from . import ops
from .diagnostics import Frame
from .network import Network, Node

if TYPE_CHECKING:
    import graphviz

Depth = int | None | Literal["auto"]
"""Levels to draw (1 or more), ``None`` for every node, or ``"auto"``."""

AUTO_NODE_LIMIT = 100
"""``depth="auto"`` collapses blocks until the drawing has at most this many boxes. Past it, a diagram stops
being something one reads on a page. ResNet-18 (69 boxes) is drawn in full; GoogLeNet (143) collapses to its 26
boxes at depth 1, one per Inception; ResNet-152 (515) and DenseNet-121 (427) collapse to 57 and 79 boxes at
depth 2 (stages as clusters, one box per residual block or dense layer)."""

# Fill and border colours by family. Unknown families (a future op) fall back to grey, so nothing breaks.
FAMILY_COLOURS: dict[str, tuple[str, str]] = {
    "input": ("#d5ecc2", "#5a8a3a"),
    "conv": ("#cfe2f3", "#4a78a8"),
    "linear": ("#d9d2e9", "#6a5a9a"),
    "pool": ("#fce5cd", "#c0803a"),
    "norm": ("#fff2cc", "#b8a040"),
    "activation": ("#f4cccc", "#b85450"),
    "regularizer": ("#eeeeee", "#888888"),
    "reshape": ("#e0eef0", "#5a8a90"),
    "merge": ("#ffffff", "#333333"),
    "block": ("#ead1dc", "#9a4a70"),
}
_FALLBACK_COLOURS = ("#f3f3f3", "#777777")
_FAMILY_ORDER = tuple(FAMILY_COLOURS)

_FONT = "Helvetica,Arial,sans-serif"
_DETAIL_COLOUR = "#555555"
_EDGE_COLOUR = "#666666"
_CLUSTER_FILLS = ("#f6f6f6", "#ffffff")


# ------------------------------------------------------------------------------------------- model ---


@dataclass(frozen=True)
class Box:
    """One drawn node: a layer, merge, input, output or collapsed block instance."""

    id: str
    kind: Literal["input", "op", "merge", "block", "output"]
    family: str
    title: str
    details: tuple[str, ...]
    tooltip: str
    clusters: tuple[Frame, ...]
    """The expanded block instances around it, outermost first."""
    nodes: tuple[int, ...]
    """The network nodes it stands for (several for a collapsed block; none for an output marker)."""


@dataclass(frozen=True)
class Link:
    """An edge between two boxes; ``label`` is the tensor shape, or empty where the shape did not change."""

    tail: str
    head: str
    label: str


@dataclass
class Cluster:
    """An expanded block instance and what is drawn inside it, in source order."""

    id: str
    frame: Frame
    details: tuple[str, ...]
    items: list[Box | Cluster] = field(default_factory=list)
    rows: list[tuple[str, ...]] = field(default_factory=list)
    """Boxes to place side by side in this order (the branches one tensor feeds)."""


@dataclass
class Diagram:
    """Everything a drawing shows, independent of the output format."""

    name: str
    details: tuple[str, ...]
    depth: int | None
    items: list[Box | Cluster]
    """Top-level boxes and clusters in source order (clusters nest)."""
    links: list[Link]
    families: list[str]
    """Families drawn, in legend order."""
    merges: list[str]
    """Merge ops drawn, in legend order."""
    rows: list[tuple[str, ...]] = field(default_factory=list)
    """Top-level boxes to place side by side in this order."""

    def boxes(self) -> Iterator[Box]:
        """Every box, depth first in source order."""

        def walk(items: list[Box | Cluster]) -> Iterator[Box]:
            for item in items:
                if isinstance(item, Cluster):
                    yield from walk(item.items)
                else:
                    yield item

        return walk(self.items)

    def clusters(self) -> Iterator[Cluster]:
        """Every cluster, outer before inner."""

        def walk(items: list[Box | Cluster]) -> Iterator[Cluster]:
            for item in items:
                if isinstance(item, Cluster):
                    yield item
                    yield from walk(item.items)

        return walk(self.items)


# ------------------------------------------------------------------------------------------- helpers ---


def si(number: float) -> str:
    """A count with three significant digits and a K/M/G/T suffix: ``61706`` -> ``61.7K``."""
    value = float(number)
    for suffix in ("", "K", "M", "G", "T"):
        if abs(value) < 999.5 or suffix == "T":
            if suffix == "":
                return f"{int(value)}" if value == int(value) else f"{value:.3g}"
            return f"{value:.3g}{suffix}"
        value /= 1000
    raise AssertionError("unreachable")


def shape_text(shape: tuple[int, ...]) -> str:
    """``(64, 56, 56)`` -> ``64×56×56``: compact enough to sit on an edge."""
    return "×".join(str(d) for d in shape)


def _costs(node: Node) -> ops.Costs:
    op = ops.REGISTRY.get(node.op)
    if op is None:
        return ops.Costs()
    return op.costs(list(node.input_shapes), node.shape, node.args)


def _cost_text(params: int, macs: int) -> str:
    parts = []
    if params:
        parts.append(f"{si(params)} params")
    if macs:
        parts.append(f"{si(macs)} MACs")
    return " · ".join(parts)


def _where(node: Node) -> str:
    # The file's base name only: an absolute path would make golden files depend on the checkout.
    return f"{os.path.basename(node.span.file)}:{node.span.line}"


def box_count(network: Network, depth: int | None) -> int:
    """How many layer, merge, input and collapsed-block boxes a drawing at ``depth`` has."""
    if depth is None:
        return len(network.nodes)
    shown = sum(1 for node in network.nodes if len(node.frames) < depth)
    collapsed = {node.frames[depth - 1].path for node in network.nodes if len(node.frames) >= depth}
    return shown + len(collapsed)


def resolve_depth(network: Network, depth: Depth = "auto", limit: int = AUTO_NODE_LIMIT) -> int | None:
    """The depth ``"auto"`` stands for: ``None`` (everything) when that fits in ``limit`` boxes, else the deepest
    depth that does, else 1. Other values are returned as given."""
    if depth != "auto":
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be 1 or more, got {depth}")
        return depth
    if box_count(network, None) <= limit:
        return None
    deepest = max((len(node.frames) for node in network.nodes), default=0)
    for candidate in range(deepest, 0, -1):
        if box_count(network, candidate) <= limit:
            return candidate
    return 1


# --------------------------------------------------------------------------------------------- build ---


def build(network: Network, depth: Depth = "auto", costs: bool = True, shapes: bool = True) -> Diagram:
    """Describe the drawing of ``network``: which boxes, clusters and links, with which labels."""
    return _Builder(network, resolve_depth(network, depth), costs, shapes).build()


class _Builder:
    def __init__(self, network: Network, depth: int | None, costs: bool, shapes: bool) -> None:
        self.network = network
        self.depth = depth
        self.costs = costs
        self.shapes = shapes
        self.node_costs = {node.id: _costs(node) for node in network.nodes}
        self.root: list[Box | Cluster] = []
        self.clusters: dict[str, Cluster] = {}
        self.chain_of: dict[str, tuple[Frame, ...]] = {}
        self.families: set[str] = set()
        self.merges: set[str] = set()

        # Which box each node is drawn in: its own, or the block instance collapsed at `depth`.
        self.box_of: dict[int, str] = {}
        self.members: dict[str, list[Node]] = {}
        for node in network.nodes:
            if depth is not None and len(node.frames) >= depth:
                group = self.members.setdefault(node.frames[depth - 1].path, [])
                group.append(node)
                self.box_of[node.id] = f"g{group[0].id}"
            else:
                self.box_of[node.id] = f"n{node.id}"

        # Layer count, params and MACs per block instance, for cluster titles and collapsed boxes.
        self.totals: dict[str, tuple[int, int, int]] = {}
        for node in network.nodes:
            cost = self.node_costs[node.id]
            for frame in node.frames:
                layers, params, macs = self.totals.get(frame.path, (0, 0, 0))
                self.totals[frame.path] = (layers + 1, params + cost.params, macs + cost.macs)

    def build(self) -> Diagram:
        placed: set[str] = set()
        for node in self.network.nodes:
            box_id = self.box_of[node.id]
            if box_id not in placed:
                placed.add(box_id)
                box = self._box(node, box_id)
                self._container(box.clusters).append(box)
                self.chain_of[box.id] = box.clusters
                self.families.add(box.family)
        links, consumers = self._links()
        rows = self._rows(links, consumers)
        for index, tensor in enumerate(self.network.outputs):
            out = Box(
                f"out{index}",
                "output",
                "input",
                tensor.name,
                (shape_text(tensor.shape),),
                f"output: {tensor.name}",
                (),
                (),
            )
            self.root.append(out)
            links.append(Link(self.box_of[tensor.node], out.id, ""))

        summary = f"{len(self.network.layers)} layers"
        if self.costs:
            params = sum(c.params for c in self.node_costs.values())
            macs = sum(c.macs for c in self.node_costs.values())
            summary += f" · {_cost_text(params, macs)}"
        details = [summary]
        if self.members and self.depth is not None:
            details.append(collapse_note(self.depth))
        families = sorted(
            self.families, key=lambda f: (_FAMILY_ORDER.index(f) if f in _FAMILY_ORDER else 99, f)
        )
        return Diagram(
            self.network.name,
            tuple(details),
            self.depth,
            self.root,
            links,
            families,
            [m for m in ops.REGISTRY if m in self.merges],
            rows.get((), []),
        )

    def _container(self, chain: tuple[Frame, ...]) -> list[Box | Cluster]:
        """The item list of the innermost cluster of ``chain``, creating clusters on first use."""
        items = self.root
        for frame in chain:
            cluster = self.clusters.get(frame.path)
            if cluster is None:
                _, params, macs = self.totals[frame.path]
                detail = _cost_text(params, macs) if self.costs else ""
                cluster = Cluster(f"cluster_{len(self.clusters)}", frame, (detail,) if detail else ())
                self.clusters[frame.path] = cluster
                items.append(cluster)
            items = cluster.items
        return items

    def _box(self, node: Node, box_id: str) -> Box:
        if box_id.startswith("g"):
            assert self.depth is not None
            frame = node.frames[self.depth - 1]
            layers, params, macs = self.totals[frame.path]
            count = f"{layers} layer{'s' if layers != 1 else ''}"
            costs = _cost_text(params, macs) if self.costs else ""
            return Box(
                box_id,
                "block",
                "block",
                frame.call,
                (f"{count} · {costs}" if costs else count,),
                f"{frame.path}  ({os.path.basename(frame.span.file)}:{frame.span.line})",
                node.frames[: self.depth - 1],
                tuple(n.id for n in self.members[frame.path]),
            )
        if ops.has_trait(node.op, ops.NETWORK_INPUT):
            name = _input_name(self.network, node)
            return Box(
                box_id,
                "input",
                "input",
                name,
                (shape_text(node.shape),),
                f"input: {name}",
                node.frames,
                (node.id,),
            )
        op = ops.REGISTRY[node.op]
        tooltip = f"{node.path}  ({_where(node)})"
        if op.symbol is not None:
            self.merges.add(node.op)
            return Box(box_id, "merge", op.family, op.symbol, (), tooltip, node.frames, (node.id,))
        cost = self.node_costs[node.id]
        text = _cost_text(cost.params, cost.macs) if self.costs else ""
        details = (text,) if text else ()
        return Box(box_id, "op", op.family, op.label(node.args), details, tooltip, node.frames, (node.id,))

    def _links(self) -> tuple[list[Link], dict[int, list[str]]]:
        """The edges between boxes, and the boxes each tensor feeds in order."""
        links: list[Link] = []
        seen: set[tuple[int, str]] = set()
        labelled: set[int] = set()
        consumers: dict[int, list[str]] = {}
        by_id = {node.id: node for node in self.network.nodes}
        for node in self.network.nodes:
            head = self.box_of[node.id]
            for source_id in node.inputs:
                tail = self.box_of[source_id]
                # One edge per (tensor, box): a collapsed block fed one tensor on two paths gets one edge.
                if tail == head or (source_id, head) in seen:
                    continue
                seen.add((source_id, head))
                source = by_id[source_id]
                # A declared input has no input shape: its shape shows in its box.
                changed = tail.startswith("g") or (
                    bool(source.input_shapes) and source.shape != source.input_shapes[0]
                )
                # A tensor feeding several branches is labelled once, on its first edge: four copies of the
                # same shape around an Inception block's entry are noise.
                label = self.shapes and changed and source_id not in labelled
                if label:
                    labelled.add(source_id)
                links.append(Link(tail, head, shape_text(source.shape) if label else ""))
                consumers.setdefault(source_id, []).append(head)
        return links, consumers

    def _rows(
        self, links: list[Link], consumers: dict[int, list[str]]
    ) -> dict[tuple[Frame, ...], list[tuple[str, ...]]]:
        """Branches fed by one tensor start side by side in branch order; rows are stored on their cluster and
        the top-level ones returned under ``()``.

        dot's ``ordering=out`` would say this, but it is ignored inside clusters, and GoogLeNet's 1x1 branch
        ended up on the right. Only boxes with a single incoming edge qualify: a merge, or a block fed from
        elsewhere too, must stay free to sink lower."""
        incoming: dict[str, int] = {}
        for link in links:
            incoming[link.head] = incoming.get(link.head, 0) + 1
        rows: dict[tuple[Frame, ...], list[tuple[str, ...]]] = {}
        for heads in consumers.values():
            side: dict[tuple[Frame, ...], list[str]] = {}
            for head in heads:
                if incoming[head] == 1:
                    side.setdefault(self.chain_of[head], []).append(head)
            for chain, row in side.items():
                if len(row) > 1:
                    rows.setdefault(chain, []).append(tuple(row))
        for chain, chain_rows in rows.items():
            if chain:
                self.clusters[chain[-1].path].rows.extend(chain_rows)
        return rows


def collapse_note(depth: int) -> str:
    """What a drawing at ``depth`` leaves out, in words."""
    if depth == 1:
        return "each block instance drawn as one box"
    return f"drawn {depth} levels deep: block instances at level {depth} are single boxes"


def _input_name(network: Network, node: Node) -> str:
    for tensor in network.inputs:
        if tensor.node == node.id:
            return tensor.name
    return node.name


def _colours(family: str) -> tuple[str, str]:
    return FAMILY_COLOURS.get(family, _FALLBACK_COLOURS)


# ------------------------------------------------------------------------------------------ graphviz ---


def _html(title: str, details: tuple[str, ...], bold: bool = False, size: int = 8, align: str = "") -> str:
    # align="left" ends each line with <br align="left"/>, which left-aligns it (cluster titles sit at the left).
    brk = f'<br align="{align}"/>' if align else "<br/>"
    text = html.escape(title, quote=False)
    lines = [f"<b>{text}</b>" if bold else text]
    for detail in details:
        lines.append(
            f'<font point-size="{size}" color="{_DETAIL_COLOUR}">{html.escape(detail, quote=False)}</font>'
        )
    return "<" + brk.join(lines) + (brk if align else "") + ">"


def legend_entries(diagram: Diagram) -> list[tuple[str, str]]:
    """(family, text) per legend entry, in legend order; each merge drawn gets its own (``⊕ add``)."""
    entries = []
    for family in diagram.families:
        if family == "merge":
            entries += [("merge", f"{ops.REGISTRY[m].symbol} {m}") for m in diagram.merges]
        else:
            entries.append(
                (family, {"block": "collapsed block", "input": "input / output"}.get(family, family))
            )
    return entries


def _legend(diagram: Diagram, columns: int = 4) -> str:
    width, height, spacing = 64, 15, 2
    cells = []
    for family, name in legend_entries(diagram):
        fill, border = _colours(family)
        cells.append(
            f'<td width="{width}" height="{height}" fixedsize="true" bgcolor="{fill}" color="{border}">'
            f"{html.escape(name, quote=False)}</td>"
        )
    # A grid of equal cells in a table of fixed size: graphviz stretches a nested table to the width of the
    # title above it, which spread the cells apart.
    while len(cells) > columns and len(cells) % columns:
        cells.append('<td border="0"></td>')
    rows = [
        "<tr>" + "".join(cells[start : start + columns]) + "</tr>" for start in range(0, len(cells), columns)
    ]
    across = min(columns, len(cells))
    size = (
        f'width="{across * width + (across + 1) * spacing + 2}" '
        f'height="{len(rows) * height + (len(rows) + 1) * spacing + 2}"'
    )
    return (
        f'<table border="0" cellborder="1" cellspacing="{spacing}" cellpadding="1" fixedsize="true" {size}>'
        f"{''.join(rows)}</table>"
    )


def _title(diagram: Diagram, legend: bool) -> str:
    lines = [f'<font point-size="16"><b>{html.escape(diagram.name, quote=False)}</b></font>']
    lines += [
        f'<font point-size="10" color="{_DETAIL_COLOUR}">{html.escape(d, quote=False)}</font>'
        for d in diagram.details
    ]
    body = "<br/>".join(lines)
    if not legend or not diagram.families:
        return f"<{body}>"
    return (
        '<<table border="0" cellspacing="0" cellpadding="2">'
        f'<tr><td>{body}</td></tr><tr><td><font point-size="8">{_legend(diagram)}</font></td></tr></table>>'
    )


def to_graphviz(
    network: Network,
    depth: Depth = "auto",
    rankdir: Literal["TB", "LR"] = "TB",
    shapes: bool = True,
    costs: bool = True,
    legend: bool = True,
) -> graphviz.Digraph:
    """The network as a ``graphviz.Digraph``. ``.source`` is the dot text; ``.pipe(format="svg")`` renders it
    (that needs Graphviz's ``dot`` program). See the module docstring for what is drawn."""
    import graphviz

    diagram = build(network, depth=depth, costs=costs, shapes=shapes)
    graph = graphviz.Digraph(
        name=network.name,
        graph_attr={
            "rankdir": rankdir,
            # Children in edge order, so branches run left to right as written; dot ignores this inside
            # clusters, where the rank=same rows of Cluster.rows do the same job.
            "ordering": "out",
            "label": _title(diagram, legend),
            "labelloc": "t",
            "fontname": _FONT,
            "nodesep": "0.25",
            "ranksep": "0.3",
            "tooltip": network.name,
        },
        node_attr={
            "fontname": _FONT,
            "fontsize": "10",
            "shape": "box",
            "style": "rounded,filled",
            "height": "0.3",
            "margin": "0.08,0.03",
        },
        edge_attr={
            "fontname": _FONT,
            "fontsize": "8",
            "fontcolor": _DETAIL_COLOUR,
            "color": _EDGE_COLOUR,
            "arrowsize": "0.6",
        },
    )

    def add_box(target: graphviz.Digraph, box: Box) -> None:
        fill, border = _colours(box.family)
        attrs = {"fillcolor": fill, "color": border, "tooltip": box.tooltip}
        if box.kind == "merge":
            attrs.update(shape="circle", fixedsize="true", width="0.3", fontsize="14", style="filled")
            target.node(box.id, box.title, **attrs)
        elif box.kind in ("input", "output"):
            attrs.update(shape="oval", style="filled,bold")
            target.node(box.id, _html(box.title, box.details, bold=True, size=9), **attrs)
        elif box.kind == "block":
            attrs.update(shape="box3d", style="filled")
            target.node(box.id, _html(box.title, box.details, bold=True), **attrs)
        else:
            target.node(box.id, _html(box.title, box.details), **attrs)

    def add_items(target: graphviz.Digraph, items: list[Box | Cluster], level: int) -> None:
        for item in items:
            if isinstance(item, Box):
                add_box(target, item)
                continue
            with target.subgraph(name=item.id) as sub:
                sub.attr(
                    label=_html(item.frame.call, item.details, bold=True, align="left"),
                    labeljust="l",
                    # Alternate shades so a block nested in another stands out from its parent.
                    style="rounded,filled",
                    fillcolor=_CLUSTER_FILLS[level % len(_CLUSTER_FILLS)],
                    color="#aaaaaa",
                    fontsize="10",
                    tooltip=item.frame.path,
                )
                add_items(sub, item.items, level + 1)
                add_rows(sub, item.rows)

    def add_rows(target: graphviz.Digraph, rows: list[tuple[str, ...]]) -> None:
        for row in rows:
            with target.subgraph() as same:
                same.attr(rank="same")
                for left, right in zip(row, row[1:], strict=False):
                    same.edge(left, right, style="invis")

    add_items(graph, diagram.items, 0)
    add_rows(graph, diagram.rows)
    for link in diagram.links:
        if link.label:
            graph.edge(link.tail, link.head, label=f" {link.label}")  # a space keeps it off the line
        else:
            graph.edge(link.tail, link.head)
    return graph


def repr_svg(network: Network) -> str | None:
    """SVG text for Jupyter's ``_repr_svg_``, or ``None`` when Graphviz cannot run (Jupyter then shows the repr)."""
    import graphviz

    try:
        return to_graphviz(network).pipe(format="svg", encoding="utf-8", quiet=True)
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError):
        return None


# ------------------------------------------------------------------------------------------- mermaid ---


def _mermaid_text(title: str, details: tuple[str, ...]) -> str:
    text = "<br/>".join((title, *details))
    # Inside a quoted mermaid label only the quote needs an entity; < and > would be read as HTML.
    return (
        text.replace('"', "#quot;")
        .replace("<br/>", "\0")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("\0", "<br/>")
    )


def to_mermaid(
    network: Network,
    depth: Depth = "auto",
    rankdir: Literal["TB", "LR"] = "TB",
    shapes: bool = True,
    costs: bool = True,
    legend: bool = True,
) -> str:
    """The network as a mermaid flowchart (GitHub renders it in a ```` ```mermaid ```` block in markdown)."""
    diagram = build(network, depth=depth, costs=costs, shapes=shapes)
    title = " · ".join((diagram.name, *diagram.details))
    # JSON is valid YAML: the quotes keep a ": " in the title from being read as a mapping.
    lines = ["---", f"title: {json.dumps(title, ensure_ascii=False)}", "---", f"flowchart {rankdir}"]
    for family in diagram.families:
        fill, border = _colours(family)
        lines.append(f"    classDef {_class(family)} fill:{fill},stroke:{border},color:#000")

    def emit(items: list[Box | Cluster], indent: str) -> None:
        for item in items:
            if isinstance(item, Cluster):
                label = _mermaid_text(item.frame.call, item.details)
                lines.append(f'{indent}subgraph c{item.id.removeprefix("cluster_")} ["{label}"]')
                emit(item.items, indent + "    ")
                lines.append(f"{indent}end")
                continue
            label = _mermaid_text(item.title, item.details)
            open_, close = {
                "input": ("([", "])"),
                "output": ("([", "])"),
                "merge": ("((", "))"),
                "block": ("[[", "]]"),
                "op": ("[", "]"),
            }[item.kind]
            lines.append(f'{indent}{item.id}{open_}"{label}"{close}:::{_class(item.family)}')

    emit(diagram.items, "    ")
    for link in diagram.links:
        arrow = f'-->|"{link.label}"|' if link.label else "-->"
        lines.append(f"    {link.tail} {arrow} {link.head}")
    if legend and diagram.families:
        lines.append('    subgraph legend ["legend"]')
        lines.append("        direction LR")
        previous = ""
        for index, (family, name) in enumerate(legend_entries(diagram)):
            node = f"legend{index}"
            lines.append(f'        {node}["{_mermaid_text(name, ())}"]:::{_class(family)}')
            if previous:
                lines.append(f"        {previous} ~~~ {node}")
            previous = node
        lines.append("    end")
    return "\n".join(lines) + "\n"


def _class(family: str) -> str:
    # Mermaid class names: letters, digits, underscores; prefixed so a family cannot clash with a keyword.
    return "f_" + "".join(ch if ch.isalnum() else "_" for ch in family)
