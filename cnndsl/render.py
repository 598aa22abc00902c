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

``depth`` counts nested block instances: ``0`` collapses every block instance the network calls, ``1`` draws those
as clusters but collapses the blocks they call, and so on; ``None`` draws every node. ``"auto"`` (the default)
draws everything when that is at most :data:`AUTO_NODE_LIMIT` boxes, else the deepest depth that fits.
"""

from __future__ import annotations

import html
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
"""An instance nesting depth, ``None`` for every node, or ``"auto"``."""

AUTO_NODE_LIMIT = 100
"""``depth="auto"`` collapses blocks until the drawing has at most this many boxes. Past it, a diagram stops
being something one reads on a page. ResNet-18 (69 boxes) is drawn in full; GoogLeNet (143) collapses to its 26
boxes at depth 0, one per Inception; ResNet-152 (515) and DenseNet-121 (427) collapse to 57 and 79 boxes at
depth 1 (stages as clusters, one box per residual block or dense layer)."""

MERGE_SYMBOLS = {"add": "⊕", "concat": "∥", "mul": "⊗"}

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
    shown = sum(1 for node in network.nodes if len(node.frames) <= depth)
    collapsed = {node.frames[depth].path for node in network.nodes if len(node.frames) > depth}
    return shown + len(collapsed)


def resolve_depth(network: Network, depth: Depth = "auto", limit: int = AUTO_NODE_LIMIT) -> int | None:
    """The depth ``"auto"`` stands for: ``None`` (everything) when that fits in ``limit`` boxes, else the deepest
    depth that does, else 0. Other values are returned as given."""
    if depth != "auto":
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be non-negative, got {depth}")
        return depth
    if box_count(network, None) <= limit:
        return None
    deepest = max((len(node.frames) for node in network.nodes), default=0)
    for candidate in range(deepest - 1, -1, -1):
        if box_count(network, candidate) <= limit:
            return candidate
    return 0


# --------------------------------------------------------------------------------------------- build ---


def build(network: Network, depth: Depth = "auto", costs: bool = True, shapes: bool = True) -> Diagram:
    """Describe the drawing of ``network``: which boxes, clusters and links, with which labels."""
    resolved = resolve_depth(network, depth)
    node_costs = {node.id: _costs(node) for node in network.nodes}

    # Which box each node is drawn in: itself, or the block instance collapsed at `resolved`.
    box_of: dict[int, str] = {}
    members: dict[str, list[Node]] = {}
    group_frame: dict[str, Frame] = {}
    for node in network.nodes:
        if resolved is not None and len(node.frames) > resolved:
            frame = node.frames[resolved]
            key = frame.path
            if key not in members:
                members[key] = []
                group_frame[key] = frame
            members[key].append(node)
            box_of[node.id] = f"g{members[key][0].id}"
        else:
            box_of[node.id] = f"n{node.id}"

    # Totals per block instance, for cluster titles and collapsed boxes.
    totals: dict[str, list[int]] = {}
    for node in network.nodes:
        for frame in node.frames:
            entry = totals.setdefault(frame.path, [0, 0, 0])
            entry[0] += 1
            entry[1] += node_costs[node.id].params
            entry[2] += node_costs[node.id].macs

    families: set[str] = set()
    merges: set[str] = set()
    root: list[Box | Cluster] = []
    clusters: dict[str, Cluster] = {}

    def container(chain: tuple[Frame, ...]) -> list[Box | Cluster]:
        items = root
        for frame in chain:
            cluster = clusters.get(frame.path)
            if cluster is None:
                layers, params, macs = totals[frame.path]
                detail = _cost_text(params, macs) if costs else ""
                cluster = Cluster(f"cluster_{len(clusters)}", frame, (detail,) if detail else ())
                clusters[frame.path] = cluster
                items.append(cluster)
            items = cluster.items
        return items

    placed: set[str] = set()
    for node in network.nodes:
        box_id = box_of[node.id]
        if box_id in placed:
            continue
        placed.add(box_id)
        if box_id.startswith("g"):
            frame = group_frame[node.frames[resolved].path]  # type: ignore[index]
            group = members[frame.path]
            layers, params, macs = totals[frame.path]
            count = f"{layers} layer{'s' if layers != 1 else ''}"
            details = (f"{count} · {_cost_text(params, macs)}",) if costs and (params or macs) else (count,)
            chain = node.frames[:resolved]
            box = Box(
                box_id,
                "block",
                "block",
                frame.call,
                details,
                f"{frame.path}  ({os.path.basename(frame.span.file)}:{frame.span.line})",
                chain,
                tuple(n.id for n in group),
            )
            families.add("block")
        elif node.op == "input":
            box = Box(
                box_id,
                "input",
                "input",
                _input_name(network, node),
                (shape_text(node.shape),),
                f"input {_input_name(network, node)}",
                node.frames,
                (node.id,),
            )
            families.add("input")
        else:
            op = ops.REGISTRY[node.op]
            if node.op in MERGE_SYMBOLS:
                kind: Literal["op", "merge"] = "merge"
                title = MERGE_SYMBOLS[node.op]
                details: tuple[str, ...] = ()
                merges.add(node.op)
            else:
                kind = "op"
                title = op.label(node.args)
                cost = node_costs[node.id]
                text = _cost_text(cost.params, cost.macs) if costs else ""
                details = (text,) if text else ()
            box = Box(
                box_id, kind, op.family, title, details, f"{node.path}  ({_where(node)})", node.frames, (node.id,)
            )
            families.add(op.family)
        container(box.clusters).append(box)

    links: list[Link] = []
    seen: set[tuple[int, str]] = set()
    labelled: set[int] = set()
    by_id = {node.id: node for node in network.nodes}
    for node in network.nodes:
        head = box_of[node.id]
        for source_id in node.inputs:
            tail = box_of[source_id]
            # One edge per (tensor, box): a collapsed block fed one tensor on two paths gets one edge.
            if tail == head or (source_id, head) in seen:
                continue
            seen.add((source_id, head))
            source = by_id[source_id]
            changed = tail.startswith("g") or (
                source.op != "input" and bool(source.input_shapes) and source.shape != source.input_shapes[0]
            )
            # A tensor feeding several branches is labelled once, on its first edge: four copies of the same
            # shape around an Inception block's entry are noise.
            label = shapes and changed and source_id not in labelled
            if label:
                labelled.add(source_id)
            links.append(Link(tail, head, shape_text(source.shape) if label else ""))

    for index, tensor in enumerate(network.outputs):
        out = Box(
            f"out{index}",
            "output",
            "input",
            tensor.name,
            (shape_text(tensor.shape),),
            f"output {tensor.name}",
            (),
            (),
        )
        root.append(out)
        links.append(Link(box_of[tensor.node], out.id, ""))

    params = sum(c.params for c in node_costs.values())
    macs = sum(c.macs for c in node_costs.values())
    summary = [f"{len(network.layers)} layers"]
    if costs:
        summary.append(_cost_text(params, macs))
    details = [" · ".join(part for part in summary if part)]
    if members:
        details.append(f"blocks nested deeper than {resolved} drawn collapsed")
    return Diagram(
        network.name,
        tuple(details),
        resolved,
        root,
        links,
        [f for f in _FAMILY_ORDER if f in families] + sorted(families - set(_FAMILY_ORDER)),
        [m for m in MERGE_SYMBOLS if m in merges],
    )


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


def _legend(diagram: Diagram) -> str:
    cells = []
    for family in diagram.families:
        fill, border = _colours(family)
        name = {"block": "collapsed block", "input": "input / output"}.get(family, family)
        if family == "merge":
            name = "  ".join(f"{MERGE_SYMBOLS[m]} {m}" for m in diagram.merges)
        cells.append(f'<td bgcolor="{fill}" color="{border}">{html.escape(name, quote=False)}</td>')
    # One small table per row, so a long name in one row does not widen the cells of the others.
    rows = [
        '<tr><td><table border="0" cellborder="1" cellspacing="2" cellpadding="2"><tr>'
        + "".join(cells[start : start + 5])
        + "</tr></table></td></tr>"
        for start in range(0, len(cells), 5)
    ]
    return f'<table border="0" cellspacing="0" cellpadding="0">{"".join(rows)}</table>'


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
        f'<tr><td>{body}</td></tr><tr><td><font point-size="9">{_legend(diagram)}</font></td></tr></table>>'
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
            # Children in edge order, so branches run left to right (or top to bottom) as written.
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

    def add_items(target: graphviz.Digraph, items: list[Box | Cluster]) -> None:
        for item in items:
            if isinstance(item, Box):
                add_box(target, item)
                continue
            with target.subgraph(name=item.id) as sub:
                sub.attr(
                    label=_html(item.frame.call, item.details, bold=True, align="left"),
                    labeljust="l",
                    style="rounded,dashed",
                    color="#999999",
                    fontsize="10",
                    tooltip=item.frame.path,
                )
                add_items(sub, item.items)

    add_items(graph, diagram.items)
    for link in diagram.links:
        if link.label:
            graph.edge(link.tail, link.head, label=link.label)
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
    return text.replace('"', "#quot;").replace("<br/>", "\0").replace("<", "#lt;").replace(">", "#gt;").replace(
        "\0", "<br/>"
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
    lines = ["---", f"title: {title}", "---", f"flowchart {rankdir}"]
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
        for family in diagram.families:
            name = {"block": "collapsed block", "input": "input / output"}.get(family, family)
            if family == "merge":
                name = " ".join(f"{MERGE_SYMBOLS[m]} {m}" for m in diagram.merges)
            node = f"legend_{_class(family)}"
            lines.append(f'        {node}["{_mermaid_text(name, ())}"]:::{_class(family)}')
            if previous:
                lines.append(f"        {previous} ~~~ {node}")
            previous = node
        lines.append("    end")
    return "\n".join(lines) + "\n"


def _class(family: str) -> str:
    # Mermaid class names: letters, digits, underscores; prefixed so a family cannot clash with a keyword.
    return "f_" + "".join(ch if ch.isalnum() else "_" for ch in family)
