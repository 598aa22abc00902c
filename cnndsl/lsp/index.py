"""What the language server knows about one version of one document, as plain data and pure functions.

:class:`DocumentIndex` is built once per document version from :func:`cnndsl.frontend.analyse_document` and
answers every editor question (hover, inlay hints, definitions, references, completion, ...) in terms of spans;
:mod:`cnndsl.lsp.server` only converts between spans and LSP positions. Nothing here imports pygls, so the
answers can be tested without a client.

Every node carries the span of the call that made it and the chain of block instantiations that led there, so a
place in the text maps to the nodes it made: an op call to one node per instance of the block it is written in,
a block call to the nodes of its instance.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import ops
from ..analysis import AnalysisError, LayerCost, analyse_layers, format_count, format_field
from ..diagnostics import Span
from ..explain import Explanation, explain
from ..frontend import DocumentAnalysis
from ..network import Network, Node
from ..ops import fmt_shape
from ..syntax import (
    Assign,
    Attr,
    BinOp,
    BlockDef,
    Branches,
    Call,
    Chain,
    Cond,
    Defaults,
    Expr,
    ExprStmt,
    FuncDef,
    Group,
    If,
    Import,
    Let,
    ListExpr,
    Module,
    MultiAssign,
    Name,
    Neg,
    NetworkDef,
    Not,
    ParamDecl,
    Repeat,
    Return,
    Stmt,
    expr_text,
    keywords,
)

KEYWORDS = tuple(sorted(keywords() | {"shortcut", "in", "true", "false"}))
"""Words completion offers and a rename refuses: the grammar's keywords and the names the elaborator reserves."""
DIMENSIONS = ("c", "h", "w")


# -------------------------------------------------------------------------------------------- data ---


@dataclass(frozen=True)
class Occurrence:
    """A name written in the source: a use or a definition of an op, block, tensor or parameter."""

    kind: str
    """``call`` (a name applied, with or without arguments), ``name`` (a bare name used as a value), ``attr``
    (the tensor of ``x.c``), ``kwarg`` (a parameter name in a call), ``block-def``, ``network-def``, ``tensor-def``,
    ``param-def`` (a parameter of a block or def), ``value-def`` (a ``let`` or a repetition index), ``def-def`` or
    ``import``."""
    name: str
    span: Span
    """The name's own span (what a rename replaces)."""
    scope: int
    """Index of the item (block or network) it is written in, -1 at file level."""
    site: Span | None = None
    """For a call: the span that the nodes it made carry (the whole call)."""
    callee: str = ""
    """For a kwarg: the op or block called."""


@dataclass
class Site:
    """A place in the text that made nodes."""

    nodes: list[tuple[str, Node]] = field(default_factory=list)
    """Nodes made right here (an op call), each with the path of the block instance it is in ("" for none)."""
    instances: dict[str, list[Node]] = field(default_factory=dict)
    """Block instances made here (a block call): instance path -> its nodes, in order."""
    owners: dict[str, str] = field(default_factory=dict)
    """Block instance path -> the path of the instance enclosing the call ("" for a network body)."""


@dataclass(frozen=True)
class Hint:
    """An inlay hint: text shown at the end of a statement."""

    line: int
    column: int
    label: str
    tooltip: str


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str
    """``op``, ``block``, ``tensor``, ``parameter``, ``keyword`` or ``value``."""
    detail: str = ""
    insert: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class Signature:
    label: str
    params: tuple[str, ...]
    active: int
    doc: str


def contains(span: Span, line: int, column: int) -> bool:
    """Whether the 1-based position lies in the span (its end included, so a cursor just after a name counts)."""
    if (line, column) < (span.line, span.column):
        return False
    return (line, column) <= (span.end_line, span.end_column)


def _within(inner: Span, outer: Span) -> bool:
    return (
        inner.file == outer.file
        and (inner.line, inner.column) >= (outer.line, outer.column)
        and (inner.end_line, inner.end_column) <= (outer.end_line, outer.end_column)
    )


def _size(span: Span) -> tuple[int, int]:
    return (span.end_line - span.line, span.end_column - span.column)


def show_value(value: Any) -> str:
    """A resolved argument as the spec would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def op_signature(op: ops.OpDef) -> str:
    parts = []
    for param in op.params:
        parts.append(param.name if param.required else f"{param.name}={show_value(param.default)}")
    if op.variadic:
        parts = ["A | B | ..."]
    return f"{op.name}({', '.join(parts)})"


def block_signature(definition: BlockDef) -> str:
    parts = [p.name if p.default is None else f"{p.name}={expr_text(p.default)}" for p in definition.params]
    return f"block {definition.name}({', '.join(parts)})"


def def_signature(definition: FuncDef) -> str:
    parts = [p.name if p.default is None else f"{p.name}={expr_text(p.default)}" for p in definition.params]
    return f"def {definition.name}({', '.join(parts)}) = {expr_text(definition.expr)}"


def _walk(body: tuple[Stmt, ...]) -> Iterator[Stmt]:
    """Every statement of a body in source order, each if followed by the statements of both its branches."""
    stack = list(reversed(body))
    while stack:  # iterative: a long `else if` chain must not exhaust the Python stack
        stmt = stack.pop()
        yield stmt
        if isinstance(stmt, If):
            stack.extend(reversed((*stmt.body, *stmt.orelse)))


def _flatten(body: tuple[Stmt, ...]) -> Iterator[Stmt]:
    """The statements of a body that are not ifs, those of the ifs' branches included (both: either may run)."""
    return (stmt for stmt in _walk(body) if not isinstance(stmt, If))


# ------------------------------------------------------------------------------------------- index ---


class DocumentIndex:
    """One analysed version of a document (see the module docstring)."""

    def __init__(self, analysis: DocumentAnalysis, text: str) -> None:
        self.analysis = analysis
        self.text = text
        self.file = analysis.file
        self.module: Module = analysis.modules.get(analysis.file, Module(analysis.file, ()))
        self.items = self.module.items
        self.occurrences: list[Occurrence] = []
        self.sites: dict[Span, Site] = {}
        self._costs: dict[int, dict[int, LayerCost]] = {}
        self._explanations: dict[int, dict[str, Explanation]] = {}
        self.warmed: Any = None
        """The server's handle on :meth:`warm` running for this index (a future), or None before it starts."""
        self._node_network: dict[int, int] = {}  # id(node) -> network index
        self.values: dict[Span, str] = {}
        """Where a ``let`` or a repetition index is named -> what it stands for (for hover)."""
        self._collect_occurrences(self.module, self.occurrences)
        self._collect_sites()

    # ----------------------------------------------------------------------------- building ---

    def _collect_occurrences(self, module: Module, out: list[Occurrence]) -> None:
        for scope, item in enumerate(module.items):
            if isinstance(item, Import):
                out.append(Occurrence("import", item.path, item.span, scope))
            elif isinstance(item, Defaults):
                for call in item.calls:
                    self._expr(call, scope, out)
            elif isinstance(item, BlockDef):
                out.append(Occurrence("block-def", item.name, item.name_span, scope))
                for param in item.params:
                    out.append(Occurrence("param-def", param.name, param.span, scope))
                    if param.default is not None:
                        self._expr(param.default, scope, out)
                self._body(item.body, scope, out)
            elif isinstance(item, NetworkDef):
                out.append(Occurrence("network-def", item.name, item.name_span, scope))
                for decl in item.inputs:
                    out.append(Occurrence("tensor-def", decl.name, decl.span, scope))
                    self._expr(decl.shape, scope, out)
                self._body(item.body, scope, out)
            elif isinstance(item, FuncDef):
                out.append(Occurrence("def-def", item.name, item.name_span, scope))
                for param in item.params:
                    out.append(Occurrence("param-def", param.name, param.span, scope))
                    if param.default is not None:
                        self._expr(param.default, scope, out)
                self._expr(item.expr, scope, out)

    def _body(self, body: tuple[Stmt, ...], scope: int, out: list[Occurrence]) -> None:
        for stmt in _walk(body):
            if isinstance(stmt, If):
                self._expr(stmt.test, scope, out)
            elif isinstance(stmt, Assign):
                out.append(Occurrence("tensor-def", stmt.name, stmt.name_span, scope))
                self._expr(stmt.expr, scope, out)
                if stmt.shape is not None:
                    self._expr(stmt.shape, scope, out)
            elif isinstance(stmt, ExprStmt):
                self._expr(stmt.expr, scope, out)
                if stmt.shape is not None:
                    self._expr(stmt.shape, scope, out)
            elif isinstance(stmt, Return):
                for expr in stmt.exprs:
                    self._expr(expr, scope, out)
            elif isinstance(stmt, Defaults):
                for call in stmt.calls:
                    self._expr(call, scope, out)
            elif isinstance(stmt, MultiAssign):
                for name, span in zip(stmt.names, stmt.name_spans, strict=True):
                    out.append(Occurrence("tensor-def", name, span, scope))
                self._expr(stmt.expr, scope, out)
                for shape in stmt.shapes:
                    self._expr(shape, scope, out)
            elif isinstance(stmt, ParamDecl):
                out.append(Occurrence("tensor-def", stmt.name, stmt.name_span, scope))
                self._expr(stmt.shape, scope, out)
                self._expr(stmt.init, scope, out)
            elif isinstance(stmt, Let):
                out.append(Occurrence("value-def", stmt.name, stmt.name_span, scope))
                self.values.setdefault(stmt.name_span, f"`let {stmt.name} = {expr_text(stmt.expr)}`")
                self._expr(stmt.expr, scope, out)

    def _expr(self, expr: Expr, scope: int, out: list[Occurrence]) -> None:
        stack: list[Expr] = [expr]
        while stack:  # iterative: a long chain must not exhaust the Python stack
            node = stack.pop()
            if isinstance(node, Call):
                out.append(Occurrence("call", node.name, node.name_span, scope, site=node.span))
                for kwarg in node.kwargs:
                    out.append(Occurrence("kwarg", kwarg.name, kwarg.span, scope, callee=node.name))
                    stack.append(kwarg.value)
                stack.extend(reversed(node.args))
            elif isinstance(node, Name):
                out.append(Occurrence("name", node.id, node.span, scope, site=node.span))
            elif isinstance(node, Attr):
                base = Span(
                    node.span.file,
                    node.span.line,
                    node.span.column,
                    node.span.line,
                    node.span.column + len(node.base),
                )
                out.append(Occurrence("attr", node.base, base, scope))
            elif isinstance(node, Chain | Branches | ListExpr):
                stack.extend(reversed(node.items))
            elif isinstance(node, Group):
                stack.append(node.expr)
            elif isinstance(node, BinOp):
                stack.extend((node.right, node.left))
            elif isinstance(node, Neg | Not):
                stack.append(node.operand)
            elif isinstance(node, Cond):
                stack.extend((node.orelse, node.test, node.then))
            elif isinstance(node, Repeat):
                out.append(Occurrence("value-def", node.index, node.index_span, scope))
                self.values.setdefault(
                    node.index_span,
                    f"repetition index of `{expr_text(node)}`: 0 to {expr_text(node.count)} - 1",
                )
                stack.extend((node.count, node.layer))

    def _collect_sites(self) -> None:
        for index, network in enumerate(self.analysis.networks):
            for node in network.nodes:
                self._node_network[id(node)] = index
                owner = ""
                for frame in node.frames:
                    site = self.sites.setdefault(frame.span, Site())
                    site.instances.setdefault(frame.path, []).append(node)
                    site.owners.setdefault(frame.path, owner)
                    owner = frame.path
                if node.op != "input":
                    self.sites.setdefault(node.span, Site()).nodes.append((owner, node))

    # ------------------------------------------------------------------------------- lookups ---

    def costs(self, node: Node) -> LayerCost | None:
        """The analysis record of a node (computed once per network of this version)."""
        index = self._node_network.get(id(node))
        if index is None:
            return None
        if index not in self._costs:
            try:
                layers = analyse_layers(self.analysis.networks[index])
            except (AnalysisError, KeyError, ValueError, IndexError):
                layers = []
            self._costs[index] = {layer.id: layer for layer in layers}
        return self._costs[index].get(node.id)

    def warm(self) -> None:
        """Compute every node's costs and explanation now, so each hover is a lookup (the server runs this on its
        worker thread once the document is idle, or on the first hover)."""
        for index, network in enumerate(self.analysis.networks):
            if network.layers:
                self.costs(network.layers[0])
            if index not in self._explanations:
                try:
                    self._explanations[index] = {e.path: e for e in explain(network)}
                except (KeyError, IndexError, AnalysisError, ValueError, ZeroDivisionError):
                    self._explanations[index] = {}

    def explanation(self, node: Node) -> Explanation | None:
        index = self._node_network.get(id(node))
        if index is None:
            return None
        cached = self._explanations.get(index)
        if cached is not None:
            return cached.get(node.path)
        try:
            return explain(self.analysis.networks[index], node.path)[0]
        except (KeyError, IndexError, AnalysisError, ValueError, ZeroDivisionError):
            return None

    def network_of(self, node: Node) -> Network | None:
        index = self._node_network.get(id(node))
        return None if index is None else self.analysis.networks[index]

    def occurrence_at(self, line: int, column: int) -> Occurrence | None:
        """The name at a 1-based position of the main file (the innermost one)."""
        found = [o for o in self.occurrences if contains(o.span, line, column)]
        return min(found, key=lambda o: _size(o.span)) if found else None

    def scope_at(self, line: int, column: int) -> int:
        for index, item in enumerate(self.items):
            if isinstance(item, BlockDef | NetworkDef) and contains(item.span, line, column):
                return index
        return -1

    def tensors(self, scope: int) -> dict[str, Span]:
        """Named tensors of a block or network body: name -> where it is defined (the first definition)."""
        names: dict[str, Span] = {}
        for occurrence in self.occurrences:
            if occurrence.scope == scope and occurrence.kind == "tensor-def":
                names.setdefault(occurrence.name, occurrence.span)
        return names

    def params(self, scope: int) -> dict[str, Span]:
        """Value names of a block, def or network: its parameters, ``let`` names and repetition indices -> where
        each is defined (the first definition)."""
        item = self.items[scope] if 0 <= scope < len(self.items) else None
        names: dict[str, Span] = {}
        if isinstance(item, BlockDef | FuncDef):
            names = {p.name: p.span for p in item.params}
        for occurrence in self.occurrences:
            if occurrence.scope == scope and occurrence.kind == "value-def":
                names.setdefault(occurrence.name, occurrence.span)
        return names

    @cached_property
    def functions(self) -> dict[str, FuncDef]:
        """Every ``def`` of the main file and its imports, by name (the first of a name)."""
        out: dict[str, FuncDef] = {}
        for module in (self.module, *self.analysis.modules.values()):
            for item in module.items:
                if isinstance(item, FuncDef):
                    out.setdefault(item.name, item)
        return out

    def block(self, name: str) -> BlockDef | None:
        info = self.analysis.blocks.get(name)
        if info is not None:
            return info.definition
        return next((i for i in self.items if isinstance(i, BlockDef) and i.name == name), None)

    def classify(self, occurrence: Occurrence) -> str:
        """What a name refers to: ``block``, ``tensor``, ``param``, ``op``, ``import``, ``network`` or ``unknown``."""
        kind = occurrence.kind
        if kind == "block-def":
            return "block"
        if kind == "network-def":
            return "network"
        if kind == "import":
            return "import"
        if kind in ("tensor-def", "attr"):
            return "tensor"
        if kind in ("param-def", "value-def"):
            return "param"
        if kind == "def-def":
            return "def"
        if kind == "kwarg":
            return "kwarg"
        name = occurrence.name
        if name in self.tensors(occurrence.scope):
            return "tensor"
        if name in self.params(occurrence.scope):
            return "param"
        if self.block(name) is not None:
            return "block"
        if ops.get(name) is not None:
            return "op"
        if name in self.functions:
            return "def"
        return "unknown"

    # ------------------------------------------------------------------------------ statements ---

    @cached_property
    def statements(self) -> list[tuple[Stmt, int]]:
        """Every statement of the main file that applies layers, with the index of its item."""
        out: list[tuple[Stmt, int]] = []
        for scope, item in enumerate(self.items):
            if isinstance(item, BlockDef | NetworkDef):
                # Both branches of an if (the untaken one made no nodes, so it gets no hint); `a, b = Block(...)`
                # is left out: the nodes of its statement do not say which tensor each name received.
                out.extend(
                    (s, scope)
                    for s in _flatten(item.body)
                    if isinstance(s, ExprStmt | Assign | Return | ParamDecl)
                )
        return out

    def statement_nodes(self, stmt: Stmt) -> dict[str, list[Node]]:
        """Nodes a statement made, by the block instance it ran in ("" for a network body), in order."""
        out: dict[str, list[Node]] = {}
        for span, site in self._sites_by_line(stmt.span):
            if not _within(span, stmt.span):
                continue
            for owner, node in site.nodes:
                out.setdefault(owner, []).append(node)
            for path, nodes in site.instances.items():
                out.setdefault(site.owners[path], []).extend(nodes)
        for nodes in out.values():
            nodes.sort(key=lambda n: n.id)
        return out

    @cached_property
    def _lines(self) -> dict[tuple[str, int], list[tuple[Span, Site]]]:
        lines: dict[tuple[str, int], list[tuple[Span, Site]]] = {}
        for span, site in self.sites.items():
            lines.setdefault((span.file, span.line), []).append((span, site))
        return lines

    def _sites_by_line(self, span: Span) -> Iterator[tuple[Span, Site]]:
        for line in range(span.line, span.end_line + 1):
            yield from self._lines.get((span.file, line), ())

    def statement_shapes(self, stmt: Stmt) -> list[tuple[Node, list[Node]]]:
        """For each block instance (or the network) the statement ran in: its output node and all its nodes."""
        return [(nodes[-1], nodes) for nodes in self.statement_nodes(stmt).values() if nodes]

    def inlay_hints(self, first_line: int, last_line: int, costs: bool = False) -> list[Hint]:
        """The output shape at the end of each statement between two 1-based lines (and its params and MACs)."""
        hints: list[Hint] = []
        for stmt, _ in self.statements:
            if stmt.span.end_line < first_line or stmt.span.line > last_line:
                continue
            results = self.statement_shapes(stmt)
            if not results:
                continue
            shapes: list[str] = []
            for output, _nodes in results:
                shown = fmt_shape(output.shape)
                if shown not in shapes:
                    shapes.append(shown)
            label = (
                shapes[0]
                if len(shapes) == 1
                else " | ".join(shapes[:3]) + (" | ..." if len(shapes) > 3 else "")
            )
            tooltip = f"output shape (batch excluded): {label}"
            if len(results) > 1:
                tooltip += f"; {len(results)} block instances run this statement"
            if costs:
                params = macs = 0
                for node in results[0][1]:
                    layer = self.costs(node)
                    if layer is not None:
                        params += layer.params
                        macs += layer.macs
                label += f"  {_short_count(params)} params, {_short_count(macs)} MACs"
            hints.append(Hint(stmt.span.end_line, stmt.span.end_column, label, tooltip))
        return hints

    # ----------------------------------------------------------------------------------- hover ---

    def hover(self, line: int, column: int) -> tuple[str, Span] | None:
        """Markdown for the name at a 1-based position, and the span it describes."""
        occurrence = self.occurrence_at(line, column)
        if occurrence is None:
            return None
        what = self.classify(occurrence)
        if what == "block":
            definition = self.block(occurrence.name)
            assert definition is not None
            text = self._block_text(definition)
            if occurrence.site is not None and occurrence.kind in ("call", "name"):
                text += "\n\n---\n\n" + self._instance_text(occurrence.site)
            return text, occurrence.span
        if what == "op" and occurrence.site is not None:
            return self._op_text(occurrence.name, occurrence.site), occurrence.span
        if what == "tensor":
            return self._tensor_text(occurrence), occurrence.span
        if what == "param":
            item = self.items[occurrence.scope] if 0 <= occurrence.scope < len(self.items) else None
            where = self.params(occurrence.scope).get(occurrence.name)
            if where is not None and where in self.values:
                return f"value `{occurrence.name}`: {self.values[where]}", occurrence.span
            if isinstance(item, BlockDef):
                return f"parameter `{occurrence.name}` of `{block_signature(item)}`", occurrence.span
            if isinstance(item, FuncDef):
                return f"parameter `{occurrence.name}` of `{def_signature(item)}`", occurrence.span
            return None
        if what == "def":
            function = self.functions.get(occurrence.name)
            if function is None:
                return None
            text = f"```\n{def_signature(function)}\n```"
            doc = self.doc_comment(function)
            if doc:
                text += "\n" + doc
            if function.name_span.file != self.file:
                text += f"\n\ndefined in {function.name_span.file}:{function.name_span.line}"
            return text, occurrence.span
        if what == "kwarg":
            op = ops.get(occurrence.callee)
            spec = op.param(occurrence.name) if op else None
            if spec is not None:
                default = "required" if spec.required else f"default {show_value(spec.default)}"
                return (
                    f"`{occurrence.callee}` parameter `{spec.name}` ({spec.kind}, {default}): {spec.doc}",
                    occurrence.span,
                )
            return None
        if what == "import":
            target = self.import_target(occurrence.span)
            shown = str(target) if target else occurrence.name
            exists = target is not None and target.is_file()
            return f"import `{shown}`" + ("" if exists else " (not found)"), occurrence.span
        if what == "network":
            return self._network_text(occurrence.name), occurrence.span
        if occurrence.name == "shortcut" and occurrence.site is not None:
            text = "`shortcut`: the input of the `add`, projected by a 1x1 conv + bn where its shape differs"
            site = self.sites.get(occurrence.site)
            if site is not None and site.nodes:
                node = site.nodes[0][1]
                text += f"\n\nfirst projection: **{node.path}** {self._io(node)}"
            else:
                text += "\n\nhere: identity (the shapes match)"
            return text, occurrence.span
        return None

    def _op_text(self, name: str, site_span: Span) -> str:
        op = ops.get(name)
        assert op is not None
        site = self.sites.get(site_span)
        head = f"```\n{op_signature(op)}\n```\n{op.doc}"
        if site is None or not site.nodes:
            return head + "\n\n(no shape: this call was not checked, or an error stopped it)"
        node = site.nodes[0][1]
        out = [head, "", f"**{node.path}**: {self._io(node)}"]
        out.append(
            "arguments: " + (", ".join(f"{k}={show_value(v)}" for k, v in node.args.items()) or "none")
        )
        layer = self.costs(node)
        if layer is not None:
            out.append(
                f"params {format_count(layer.params)} · MACs {format_count(layer.macs)} · "
                f"receptive field {format_field(layer.receptive_field)}"
            )
        if len(site.nodes) > 1:
            out.append(f"(the first of {len(site.nodes)} instances; the others may differ)")
        if layer is not None:
            explanation = self.explanation(node)
            if explanation is not None:
                out.append("```\n" + "\n".join(explanation.lines) + "\n```")
        return "\n\n".join(line for line in out if line)

    @staticmethod
    def _io(node: Node) -> str:
        inputs = " | ".join(fmt_shape(s) for s in node.input_shapes) or "?"
        return f"{inputs} -> {fmt_shape(node.shape)}"

    def _block_text(self, definition: BlockDef) -> str:
        doc = self.doc_comment(definition)
        where = definition.name_span
        text = f"```\n{block_signature(definition)}\n```"
        if doc:
            text += "\n" + doc
        if where.file != self.file:
            text += f"\n\ndefined in {where.file}:{where.line}"
        return text

    def _instance_text(self, site_span: Span) -> str:
        site = self.sites.get(site_span)
        if site is None or not site.instances:
            return "(no shape: this call was not checked, or an error stopped it)"
        path, nodes = next(iter(site.instances.items()))
        frame = next(f for f in nodes[0].frames if f.path == path)
        first, last = nodes[0], nodes[-1]
        params = macs = 0
        for node in nodes:
            layer = self.costs(node)
            if layer is not None:
                params += layer.params
                macs += layer.macs
        inputs = fmt_shape(first.input_shapes[0]) if first.input_shapes else "?"
        out = [f"**{path}** = `{frame.call}`", f"{inputs} -> {fmt_shape(last.shape)}"]
        out.append(f"{len(nodes)} layers · params {format_count(params)} · MACs {format_count(macs)}")
        layer = self.costs(last)
        if layer is not None:
            out.append(f"receptive field {format_field(layer.receptive_field)}")
        if len(site.instances) > 1:
            out.append(f"(the first of {len(site.instances)} instances)")
        return "\n\n".join(out)

    def _tensor_text(self, occurrence: Occurrence) -> str:
        definition = self.tensors(occurrence.scope).get(occurrence.name)
        shapes: list[str] = []
        for stmt, scope in self.statements:
            if (
                scope == occurrence.scope
                and isinstance(stmt, Assign | ParamDecl)
                and stmt.name_span == definition
            ):
                shapes = list(dict.fromkeys(fmt_shape(o.shape) for o, _ in self.statement_shapes(stmt)))
        item = self.items[occurrence.scope] if occurrence.scope >= 0 else None
        if isinstance(item, NetworkDef):
            for network in self.analysis.networks:
                for tensor in network.inputs:
                    if network.name == item.name and tensor.name == occurrence.name:
                        shapes = [fmt_shape(tensor.shape)]
        return f"tensor `{occurrence.name}`: " + (" | ".join(shapes) if shapes else "shape unknown")

    def _network_text(self, name: str) -> str:
        for network in self.analysis.networks:
            if network.name == name:
                inputs = ", ".join(f"{t.name} {fmt_shape(t.shape)}" for t in network.inputs)
                outputs = ", ".join(f"{t.name} {fmt_shape(t.shape)}" for t in network.outputs)
                params = macs = 0
                for node in network.layers:
                    layer = self.costs(node)
                    if layer is not None:
                        params += layer.params
                        macs += layer.macs
                return (
                    f"network **{name}**: {inputs} -> {outputs or '?'}\n\n"
                    f"{len(network.layers)} layers · params {format_count(params)} · MACs {format_count(macs)}"
                )
        return f"network **{name}**"

    def doc_comment(self, definition: BlockDef | FuncDef) -> str:
        """The ``#`` comment lines right above a block's or def's definition, without the ``#``."""
        lines: list[str] = []
        number = definition.span.line - 1
        while number >= 1:
            text = self.analysis.sources.line(definition.span.file, number)
            if text is None or not text.strip().startswith("#"):
                break
            lines.append(text.strip()[1:].strip())
            number -= 1
        return "\n".join(reversed(lines))

    # ------------------------------------------------------------------- definitions, references ---

    def import_target(self, span: Span) -> Path | None:
        return self.analysis.imports.get(span)

    def definition(self, line: int, column: int) -> Span | Path | None:
        occurrence = self.occurrence_at(line, column)
        if occurrence is None:
            return None
        what = self.classify(occurrence)
        if what == "block":
            definition = self.block(occurrence.name)
            return definition.name_span if definition else None
        if what == "tensor":
            return self.tensors(occurrence.scope).get(occurrence.name)
        if what == "param":
            return self.params(occurrence.scope).get(occurrence.name)
        if what == "def":
            function = self.functions.get(occurrence.name)
            return function.name_span if function else None
        if what == "import":
            return self.import_target(occurrence.span)
        return None

    def references(self, line: int, column: int, include_definition: bool = True) -> list[Span]:
        """Every place naming the same block, tensor or parameter (blocks: in the main file and the block's
        own file)."""
        occurrence = self.occurrence_at(line, column)
        if occurrence is None:
            return []
        what = self.classify(occurrence)
        out: list[Span] = []
        if what == "block":
            definition = self.block(occurrence.name)
            for other in self._all_occurrences():
                if other.name != occurrence.name:
                    continue
                use = other.kind in ("call", "name") and self._classify_in(other) == "block"
                if use or (other.kind == "block-def" and include_definition):
                    out.append(other.span)
            if definition is not None and include_definition and definition.name_span not in out:
                out.append(definition.name_span)
        elif what in ("tensor", "param"):
            kinds = ("tensor-def",) if what == "tensor" else ("param-def",)
            for other in self.occurrences:
                if other.scope != occurrence.scope or other.name != occurrence.name:
                    continue
                if other.kind in kinds:
                    if include_definition:
                        out.append(other.span)
                elif other.kind in ("call", "name", "attr") and self.classify(other) == what:
                    out.append(other.span)
        return sorted(set(out), key=lambda s: (s.file != self.file, s.file, s.line, s.column))

    def _classify_in(self, occurrence: Occurrence) -> str:
        if occurrence.span.file == self.file:
            return self.classify(occurrence)
        return "block" if self.block(occurrence.name) is not None else "other"

    def _all_occurrences(self) -> list[Occurrence]:
        out = list(self.occurrences)
        for file, module in self.analysis.modules.items():
            if file != self.file:
                self._collect_occurrences(module, out)
        return out

    def rename(self, line: int, column: int, new_name: str) -> list[Span] | str:
        """The spans to replace to rename the block or tensor at a position, or why it cannot be renamed."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", new_name) or new_name in KEYWORDS:
            return f"'{new_name}' is not a valid name"
        occurrence = self.occurrence_at(line, column)
        if occurrence is None:
            return "nothing to rename here"
        what = self.classify(occurrence)
        if what not in ("block", "tensor"):
            return "only blocks and named tensors can be renamed"
        if ops.get(new_name) is not None:
            return f"'{new_name}' is an op"
        if what == "block" and self.block(new_name) is not None:
            return f"a block named '{new_name}' already exists"
        if what == "tensor" and new_name in self.tensors(occurrence.scope):
            return f"a tensor named '{new_name}' already exists here"
        return self.references(line, column, include_definition=True)

    # ------------------------------------------------------------------------------- completion ---

    def completions(self, line: int, column: int) -> list[Completion]:
        """Candidates at a 1-based position, from the text before it (so they work while a line is broken)."""
        before = self._text_before(line, column)
        current = before.rsplit("\n", 1)[-1]
        scope = self.scope_at(line, column)
        attr = re.search(r"([A-Za-z_]\w*)\.\w*$", current)
        if attr:
            return [Completion(d, "value", f"{attr.group(1)}.{d}: a dimension") for d in DIMENSIONS]
        if re.match(r"\s*defaults\s+\w*$", current) or re.search(r"defaults\s.*,\s*\w*$", current):
            return [self._op_completion(op) for op in ops.REGISTRY.values() if not op.variadic]
        call = self._open_call(before)
        if call is not None:
            callee, _ = call
            out = self._param_completions(callee, before)
            if out is not None:
                return out + self._value_completions(scope)
        out = [self._op_completion(op) for op in ops.REGISTRY.values()]
        for name, info in self.analysis.blocks.items():
            doc = self.doc_comment(info.definition)
            out.append(Completion(name, "block", block_signature(info.definition), doc=doc))
        for name in self.tensors(scope):
            out.append(Completion(name, "tensor", "named tensor"))
        out += [Completion(k, "keyword") for k in KEYWORDS]
        return out

    def _op_completion(self, op: ops.OpDef) -> Completion:
        return Completion(op.name, "op", op_signature(op), doc=op.doc)

    def _param_completions(self, callee: str, before: str) -> list[Completion] | None:
        given = set(re.findall(r"(\w+)\s*=", before[before.rfind(callee) :]))
        op = ops.get(callee)
        if op is not None:
            return [
                Completion(
                    p.name,
                    "parameter",
                    "required" if p.required else f"default {show_value(p.default)}",
                    insert=f"{p.name}=",
                    doc=p.doc,
                )
                for p in op.params
                if p.name not in given
            ]
        block = self.block(callee)
        if block is not None:
            return [
                Completion(
                    p.name,
                    "parameter",
                    "required" if p.default is None else f"default {expr_text(p.default)}",
                    insert=f"{p.name}=",
                )
                for p in block.params
                if p.name not in given
            ]
        return None

    def _value_completions(self, scope: int) -> list[Completion]:
        out = [Completion(name, "parameter", "block parameter") for name in self.params(scope)]
        out += [
            Completion(f"{name}.{d}", "value", "a dimension of a named tensor")
            for name in self.tensors(scope)
            for d in DIMENSIONS
        ]
        out += [Completion(f"in.{d}", "value", "a dimension of the block's input") for d in DIMENSIONS]
        return out

    def _text_before(self, line: int, column: int) -> str:
        lines = self.text.split("\n")
        if not 1 <= line <= len(lines):
            return ""
        return "\n".join([*lines[: line - 1], lines[line - 1][: max(column - 1, 0)]])

    @staticmethod
    def _open_call(before: str) -> tuple[str, int] | None:
        """The callee of the innermost call still open at the end of ``before``, and the argument's index."""
        depth = 0
        commas = 0
        index = len(before) - 1
        limit = max(
            0, len(before) - 10_000
        )  # a call spans a few lines; never scan a huge file back to its start
        while index >= limit:
            char = before[index]
            if char in ")]":
                depth += 1
            elif char == "[":
                depth -= 1
            elif char == "(":
                if depth == 0:
                    match = re.search(r"([A-Za-z_]\w*)\s*$", before[:index])
                    return (match.group(1), commas) if match else None
                depth -= 1
            elif char == "," and depth == 0:
                commas += 1
            elif char in "{}":
                return None
            index -= 1
        return None

    def signature(self, line: int, column: int) -> Signature | None:
        before = self._text_before(line, column)
        call = self._open_call(before)
        if call is None:
            return None
        callee, commas = call
        names: tuple[str, ...]
        op = ops.get(callee)
        if op is not None:
            label, doc = op_signature(op), op.doc
            names = op.param_names
        else:
            block = self.block(callee)
            if block is None:
                return None
            label, doc = block_signature(block).removeprefix("block "), self.doc_comment(block)
            names = tuple(p.name for p in block.params)
        inner = label[label.index("(") + 1 : -1]
        params = tuple(p.strip() for p in inner.split(", ")) if inner else ()
        if op is not None and op.variadic:
            return Signature(label, params, 0, doc)
        current = before[before.rfind(callee) :].rsplit(",", 1)[-1]
        keyword = re.match(r"\s*\(?\s*(\w+)\s*=", current)
        active = names.index(keyword.group(1)) if keyword and keyword.group(1) in names else commas
        return Signature(label, params, min(active, max(len(params) - 1, 0)), doc)

    # ----------------------------------------------------------------------- symbols, folding ---

    def symbols(self) -> list[tuple[str, str, Span, Span, str, list[tuple[str, Span]]]]:
        """(kind, name, whole span, name span, detail, named tensors) for each network, block and def."""
        out: list[tuple[str, str, Span, Span, str, list[tuple[str, Span]]]] = []
        for scope, item in enumerate(self.items):
            if isinstance(item, NetworkDef):
                detail = ", ".join(f"{d.name}: {expr_text(d.shape)}" for d in item.inputs)
                tensors = [
                    (n, s) for n, s in self.tensors(scope).items() if n not in {d.name for d in item.inputs}
                ]
                out.append(("network", item.name, item.span, item.name_span, detail, tensors))
            elif isinstance(item, BlockDef):
                out.append(
                    (
                        "block",
                        item.name,
                        item.span,
                        item.name_span,
                        block_signature(item),
                        list(self.tensors(scope).items()),
                    )
                )
            elif isinstance(item, FuncDef):
                out.append(("def", item.name, item.span, item.name_span, def_signature(item), []))
        return out

    def folding(self) -> list[tuple[int, int, str]]:
        """(first line, last line, kind) of every multi-line item, multi-line statement and comment run."""
        out: list[tuple[int, int, str]] = []
        for item in self.items:
            if item.span.end_line > item.span.line:
                out.append((item.span.line, item.span.end_line, "region"))
        for stmt, _ in self.statements:
            if stmt.span.end_line > stmt.span.line:
                out.append((stmt.span.line, stmt.span.end_line, "region"))
        run: list[int] = []
        for number, text in enumerate(self.text.split("\n"), start=1):
            if text.strip().startswith("#"):
                run.append(number)
                continue
            if len(run) > 1:
                out.append((run[0], run[-1], "comment"))
            run = []
        if len(run) > 1:
            out.append((run[0], run[-1], "comment"))
        return out


def _short_count(value: int) -> str:
    for size, unit in ((10**9, "G"), (10**6, "M"), (10**3, "K")):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)
