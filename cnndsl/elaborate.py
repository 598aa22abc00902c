"""Stage 2, elaborate and check: AST -> :class:`~cnndsl.network.Network`.

Blocks are instantiated, repetitions unrolled, defaults applied, names resolved, and every node's output shape
inferred through the op registry as the node is created. Shapes are needed while elaborating (``in.c``,
``shortcut``), so inference is not a separate pass over a finished graph; the checker's rules all live in the
registry. Errors are collected (up to a limit), each located at the span that caused it and carrying the chain
of block instantiations that led there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import ops
from .diagnostics import (
    Diagnostic,
    DiagnosticSink,
    Frame,
    LocatedError,
    SourceMap,
    Span,
    did_you_mean,
    suggestion,
)
from .network import Network, Node, Tensor
from .ops import OpDef, OpError, Shape, fmt_shape
from .syntax import (
    Assign,
    Attr,
    BinOp,
    BlockDef,
    Branches,
    Call,
    Chain,
    Defaults,
    Expr,
    ExprStmt,
    Group,
    ListExpr,
    Name,
    Neg,
    NetworkDef,
    Number,
    Return,
    Stmt,
    String,
    Wildcard,
    expr_text,
)

MAX_BLOCK_DEPTH = 64
"""Block instantiations nested deeper than this are refused (recursion is caught earlier, by name)."""

MAX_NUMBER = 2**53
"""Arithmetic results past this are refused: no spec needs them and they only make huge allocations."""

DEFAULT_NODE_BUDGET = 100_000
"""Nodes a spec may elaborate to unless the caller says otherwise. The largest zoo spec has about 1,000; checking
costs about 8 us and 1 KiB per node, so the default keeps any spec under 100 kB within ~1 s and ~150 MiB."""

WORK_PER_NODE = 12
"""Elaboration steps allowed per node of the budget; a step costs about a microsecond. One value evaluated is 1
step, one layer applied 3, one block instance 6, one node 5 plus its path length / 64; a typical node takes about
10 with its arguments. Repetitions of things that make no node (``identity * 10**12``), nested instances, huge
list arguments and long paths are bounded by this, where the node count alone would not bound them."""

MAX_CALL_TEXT = 200
"""Longest block call kept for the instantiation chain (``in Basic(c=128) at ...``); longer ones are cut."""


class _Poisoned(Exception):
    """A value depends on an error already reported; abandon the statement quietly."""


class _Stop(Exception):
    """Stop elaborating (the node budget is exhausted or the error limit is reached)."""


class _WildcardValue:
    def __repr__(self) -> str:
        return "?"


WILDCARD = _WildcardValue()


class Symbol(str):
    """A bare name used as a value (``same``, ``nearest``); remembers where it was written."""

    span: Span


@dataclass
class Ref:
    """A tensor during elaboration; ``shape`` is None when an earlier error made it unknown."""

    node: int
    shape: Shape | None


POISON = Ref(-1, None)

NO_INPUT = Ref(-1, None)
"""The block input where there is none yet: file-level defaults and input declarations (`in.c` is an error)."""


@dataclass
class BlockInfo:
    definition: BlockDef
    defaults: dict[str, dict[str, Any]]


@dataclass
class Scope:
    prefix: str
    frames: tuple[Frame, ...]
    values: dict[str, Any]
    tensors: dict[str, Ref]
    defaults: dict[str, dict[str, Any]]
    block_input: Ref
    active: tuple[str, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)

    def fresh(self, base: str) -> str:
        index = self.counters.get(base, 0)
        self.counters[base] = index + 1
        return f"{self.prefix}{base}.{index}"


@dataclass
class ElaborationOptions:
    node_budget: int = DEFAULT_NODE_BUDGET
    max_errors: int = 20
    input_shapes: dict[str | None, Shape] | None = None


class Elaborator:
    """Turns one network definition (and the blocks it can see) into a checked :class:`Network`."""

    def __init__(
        self,
        blocks: dict[str, BlockInfo],
        sources: SourceMap,
        options: ElaborationOptions,
        sink: DiagnosticSink,
    ) -> None:
        self.blocks = blocks
        self.sources = sources
        self.options = options
        self.sink = sink
        self.nodes: list[Node] = []
        self.work = 0
        self.work_limit = WORK_PER_NODE * options.node_budget

    # -------------------------------------------------------------------------------- reporting ---

    def report(self, span: Span, message: str, scope: Scope | None, notes: Sequence[str] = ()) -> None:
        self.sink.add(Diagnostic(span, message, chain=scope.frames if scope else (), notes=tuple(notes)))
        if self.sink.full:
            raise _Stop()

    def report_error(self, error: LocatedError, scope: Scope | None) -> None:
        """Report a caught error with its code and fixes, in the chain of ``scope``."""
        self.sink.add(error.diagnostic(scope.frames if scope else ()))
        if self.sink.full:
            raise _Stop()

    def _spend(self, steps: int, span: Span, scope: Scope | None) -> None:
        """Count elaboration work; stop once it passes the limit derived from the node budget."""
        self.work += steps
        if self.work > self.work_limit:
            self.sink.add(
                Diagnostic(
                    span,
                    f"checking the spec takes more than {self.work_limit:,} steps ({WORK_PER_NODE} per node of "
                    f"the node budget of {self.options.node_budget:,}; --node-budget changes it)",
                    chain=scope.frames if scope else (),
                )
            )
            raise _Stop()

    # ---------------------------------------------------------------------------------- network ---

    def network(
        self, definition: NetworkDef, defaults: dict[str, dict[str, Any]], files: Sequence[str]
    ) -> Network:
        root = Scope("", (), {}, {}, dict(defaults), NO_INPUT)
        inputs: list[Tensor] = []
        overrides = dict(self.options.input_shapes or {})
        for position, decl in enumerate(definition.inputs):
            if decl.name in root.tensors:
                self.report(decl.span, f"input '{decl.name}' declared twice", None)
                continue
            self._check_new_name(decl.name, decl.span, root)
            shape = overrides.pop(decl.name, None)
            if shape is None and position == 0:
                shape = overrides.pop(None, None)
            if shape is None:
                shape = self._input_shape(decl.shape, root)
            if shape is None:
                root.tensors[decl.name] = POISON
                continue
            node = self._add_node("input", {"shape": shape}, decl.name, decl.span, root, [], shape)
            root.tensors[decl.name] = Ref(node.id, shape)
            inputs.append(Tensor(decl.name, node.id, shape))
        for name in overrides:
            if name is not None:
                known = [d.name for d in definition.inputs]
                raise LocatedError(
                    definition.name_span,
                    f"--input names '{name}', which is not an input of {definition.name}{did_you_mean(name, known)}",
                )
        if not definition.inputs:
            self.report(
                definition.name_span,
                f"network {definition.name} declares no input, e.g. (image: [3, 224, 224])",
                None,
            )
        first = root.tensors[definition.inputs[0].name] if definition.inputs else POISON
        root.block_input = first
        results = self.body(definition.body, root, first)
        outputs: list[Tensor] = []
        for index, (name, ref) in enumerate(results):
            if ref.shape is not None:
                label = name or ("output" if len(results) == 1 else f"output{index}")
                taken = {t.name for t in outputs}
                if label in taken:  # `return x, x`: outputs need distinct names (ONNX, dict results)
                    label = next(
                        f"{label}_{k}" for k in range(2, len(results) + 2) if f"{label}_{k}" not in taken
                    )
                outputs.append(Tensor(label, ref.node, ref.shape))
        return Network(
            definition.name, self.nodes, inputs, outputs, definition.span, self.sources, tuple(files)
        )

    def _input_shape(self, expr: Expr, scope: Scope) -> Shape | None:
        try:
            value = self.value(expr, scope)
        except LocatedError as error:
            self.report(error.span, error.message, None)
            return None
        except _Poisoned:  # it uses an earlier input whose declaration was already reported
            return None
        if (
            not isinstance(value, list)
            or len(value) not in (1, 3)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
        ):
            self.report(
                expr.span,
                f"an input shape is [C, H, W] or [F] of positive integers, got {expr_text(expr)}",
                None,
            )
            return None
        if math.prod(value) > MAX_NUMBER:
            self.report(
                expr.span, f"input shape {expr_text(expr)} is too large (more than 2**53 elements)", None
            )
            return None
        return tuple(value)

    # ------------------------------------------------------------------------------- statements ---

    def body(self, stmts: Sequence[Stmt], scope: Scope, start: Ref) -> list[tuple[str | None, Ref]]:
        current = start
        for index, stmt in enumerate(stmts):
            try:
                if isinstance(stmt, Return):
                    if index + 1 < len(stmts):
                        # Never elaborated, so never checked: say so rather than drop it silently.
                        self.report(stmts[index + 1].span, "statement after return is never reached", scope)
                    results = []
                    for expr in stmt.exprs:
                        ref = self.apply(expr, scope, current, head=True)
                        # Only a tensor name names an output; `return relu` is an op applied, not a name.
                        named = expr.id if isinstance(expr, Name) and expr.id in scope.tensors else None
                        results.append((named, ref))
                    return results
                if isinstance(stmt, Defaults):
                    scope.defaults = self.defaults(stmt, scope, scope.defaults)
                elif isinstance(stmt, Assign):
                    self._check_new_name(stmt.name, stmt.name_span, scope)
                    # Bind first, so later uses of a name whose definition fails stay quiet.
                    scope.tensors[stmt.name] = POISON
                    current = self.apply(stmt.expr, scope, current, head=True)
                    scope.tensors[stmt.name] = current
                    self._assert_shape(stmt.shape, current, scope)
                elif isinstance(stmt, ExprStmt):
                    current = self.apply(stmt.expr, scope, current, head=True)
                    self._assert_shape(stmt.shape, current, scope)
            except LocatedError as error:
                self.report_error(error, scope)
                current = POISON
            except _Poisoned:
                current = POISON
            except RecursionError:
                # Blocks and brackets nested within each other past what the Python stack holds: the
                # innermost statement that catches it is the one to point at.
                self.report(stmt.span, "blocks and brackets nested too deeply to check", scope)
                current = POISON
        return [(None, current)]

    def _check_new_name(self, name: str, span: Span, scope: Scope) -> None:
        if ops.get(name) is not None:
            raise LocatedError(span, f"tensor name '{name}' would shadow the op {name}; choose another name")
        if name in self.blocks:
            raise LocatedError(
                span, f"tensor name '{name}' would shadow the block {name}; choose another name"
            )
        if name in scope.values:
            raise LocatedError(span, f"tensor name '{name}' would shadow the parameter {name}")

    def _assert_shape(self, expr: Expr | None, ref: Ref, scope: Scope) -> None:
        if expr is None or ref.shape is None:
            return
        expected = self.value(expr, scope)
        if not isinstance(expected, list) or any(
            not (v is WILDCARD or (isinstance(v, int) and not isinstance(v, bool))) for v in expected
        ):
            raise LocatedError(
                expr.span,
                f"a shape assertion is a list like [C, H, W] (? matches any), got {expr_text(expr)}",
            )
        shown = "[" + ", ".join("?" if v is WILDCARD else str(v) for v in expected) + "]"
        if len(expected) != len(ref.shape) or any(
            v is not WILDCARD and v != d for v, d in zip(expected, ref.shape, strict=False)
        ):
            raise LocatedError(
                expr.span,
                f"shape assertion failed: expected {shown}, got {fmt_shape(ref.shape)}",
                code="shape-assertion",
            )

    def defaults(
        self, stmt: Defaults, scope: Scope, current: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        updated = {op: dict(values) for op, values in current.items()}
        for call in stmt.calls:
            op = ops.get(call.name)
            if op is not None and op.variadic:
                raise LocatedError(
                    call.name_span, f"{call.name} is a merge and takes no parameters, so no defaults"
                )
            if op is None:
                candidates = [n for n, o in ops.REGISTRY.items() if not o.variadic]
                if call.name in self.blocks:
                    raise LocatedError(call.name_span, f"defaults apply to ops, and {call.name} is a block")
                hint, fixes = suggestion(call.name, call.name_span, candidates)
                raise LocatedError(
                    call.name_span,
                    f"unknown op '{call.name}' in defaults{hint}",
                    code="unknown-op",
                    fixes=fixes,
                )
            if call.args:
                raise LocatedError(
                    call.args[0].span, "defaults take keyword arguments only, e.g. defaults conv(bias=false)"
                )
            for kwarg in call.kwargs:
                spec = op.param(kwarg.name)
                if spec is None:
                    hint, fixes = suggestion(kwarg.name, kwarg.span, op.param_names)
                    raise LocatedError(
                        kwarg.span,
                        f"unknown parameter '{kwarg.name}' for {op.name}{hint}",
                        code="unknown-parameter",
                        fixes=fixes,
                    )
                value = self.value(kwarg.value, scope)
                try:
                    ops.coerce(spec, value)
                except OpError as error:
                    raise LocatedError(kwarg.value.span, error.message) from None
                updated.setdefault(op.name, {})[kwarg.name] = value
        return updated

    # ----------------------------------------------------------------------------- layer exprs ---

    def apply(self, expr: Expr, scope: Scope, x: Ref, head: bool) -> Ref:
        """Apply a layer expression to ``x``; ``head`` is true where a tensor name may start a chain."""
        self._spend(3, expr.span, scope)
        if isinstance(expr, Chain):
            x = self.apply(expr.items[0], scope, x, head)
            for item in expr.items[1:]:
                x = self.apply(item, scope, x, False)
            return x
        if isinstance(expr, Group):
            return self.apply(expr.expr, scope, x, head)
        if isinstance(expr, Name):
            return self._apply_name(expr, scope, x, head)
        if isinstance(expr, Call):
            return self._apply_call(expr, scope, x)
        if isinstance(expr, BinOp) and expr.op == "*":
            return self._repeat(expr, scope, x)
        if isinstance(expr, Branches):
            raise LocatedError(
                expr.span, "'|' separates branches, and only inside add(...), concat(...) or mul(...)"
            )
        raise LocatedError(expr.span, f"expected a layer, found {_describe_expr(expr)}")

    def _apply_name(self, expr: Name, scope: Scope, x: Ref, head: bool) -> Ref:
        name = expr.id
        if name in scope.tensors:
            if not head:
                raise LocatedError(
                    expr.span,
                    f"tensor '{name}' can only start a chain; inside one it would discard its input",
                )
            ref = scope.tensors[name]
            if ref.shape is None:
                raise _Poisoned()
            return ref
        if name in self.blocks:
            return self._instantiate(self.blocks[name], Call(name, (), (), expr.span, expr.span), scope, x)
        if ops.get(name) is not None:
            return self._apply_call(Call(name, (), (), expr.span, expr.span), scope, x)
        if name == "shortcut":
            raise LocatedError(expr.span, "shortcut is only allowed as a branch of add(...)")
        if name == "in":
            if not head:
                raise LocatedError(expr.span, "'in' can only start a chain")
            if scope.block_input.shape is None:
                raise _Poisoned()
            return scope.block_input
        if name in scope.values:
            raise LocatedError(
                expr.span, f"'{name}' is a parameter (value {_show(scope.values[name])}), not a layer"
            )
        hint, fixes = suggestion(name, expr.span, self._layer_names(scope))
        raise LocatedError(expr.span, f"unknown name '{name}'{hint}", code="unknown-name", fixes=fixes)

    def _layer_names(self, scope: Scope) -> list[str]:
        return [*scope.tensors, *self.blocks, *ops.REGISTRY, "shortcut"]

    def _apply_call(self, call: Call, scope: Scope, x: Ref) -> Ref:
        if call.name in scope.tensors:
            raise LocatedError(
                call.name_span, f"'{call.name}' is a tensor, not a layer; it takes no arguments"
            )
        if call.name in self.blocks:
            return self._instantiate(self.blocks[call.name], call, scope, x)
        op = ops.get(call.name)
        if op is None:
            names = [*self.blocks, *ops.REGISTRY]
            hint, fixes = suggestion(call.name, call.name_span, names)
            raise LocatedError(
                call.name_span, f"unknown op or block '{call.name}'{hint}", code="unknown-op", fixes=fixes
            )
        if op.variadic:
            return self._merge(op, call, scope, x)
        return self._op(op, call, scope, x)

    def _repeat(self, expr: BinOp, scope: Scope, x: Ref) -> Ref:
        count = self.value(expr.right, scope)
        if isinstance(count, bool) or not isinstance(count, int):
            raise LocatedError(expr.right.span, f"a repeat count must be an integer, got {_show(count)}")
        if count < 0:
            raise LocatedError(expr.right.span, f"a repeat count cannot be negative, got {count}")
        if isinstance(expr.left, Number | String | ListExpr | Neg | Wildcard | Attr) or (
            isinstance(expr.left, Name) and expr.left.id in scope.values
        ):
            raise LocatedError(
                expr.left.span, f"'* {count}' repeats a layer, but {expr_text(expr.left)} is a value"
            )
        if count == 0:
            return x
        before, work_before = len(self.nodes), self.work
        x = self.apply(expr.left, scope, x, False)
        per_copy = len(self.nodes) - before
        projected = len(self.nodes) + per_copy * (count - 1)
        if projected > self.options.node_budget:
            raise LocatedError(
                expr.span,
                f"this repetition would make about {projected:,} nodes, over the node budget of "
                f"{self.options.node_budget:,} (--node-budget changes it)",
            )
        # A copy that makes no node still costs work (identity, an empty block, `relu * 0`): project that too.
        projected_work = self.work + (self.work - work_before) * (count - 1)
        if projected_work > self.work_limit:
            raise LocatedError(
                expr.span,
                f"this repetition would take about {projected_work:,} steps to check, over the limit of "
                f"{self.work_limit:,} ({WORK_PER_NODE} per node of the node budget; --node-budget changes it)",
            )
        for _ in range(count - 1):
            x = self.apply(expr.left, scope, x, False)
        return x

    # --------------------------------------------------------------------------------------- ops ---

    def _bind(
        self, call: Call, names: Sequence[str], what: str, scope: Scope
    ) -> tuple[dict[str, Any], dict[str, Span]]:
        """Evaluate a call's arguments against parameter names: (values, spans of the value expressions)."""
        if len(call.args) > len(names):
            extra = call.args[len(names)]
            raise LocatedError(
                extra.span,
                f"{what} takes at most {len(names)} argument{'s' if len(names) != 1 else ''}, got {len(call.args)}",
            )
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for name, expr in zip(names, call.args, strict=False):
            values[name] = self.value(expr, scope)
            spans[name] = expr.span
        known = names if len(names) <= 8 else set(names)  # blocks may have thousands of parameters
        for kwarg in call.kwargs:
            if kwarg.name not in known:
                hint, fixes = suggestion(kwarg.name, kwarg.span, names)
                raise LocatedError(
                    kwarg.span,
                    f"unknown parameter '{kwarg.name}' for {what}{hint}",
                    code="unknown-parameter",
                    fixes=fixes,
                )
            if kwarg.name in values:
                raise LocatedError(
                    kwarg.span, f"parameter '{kwarg.name}' given twice (by position and by name)"
                )
            values[kwarg.name] = self.value(kwarg.value, scope)
            spans[kwarg.name] = kwarg.value.span
        return values, spans

    def _op(self, op: OpDef, call: Call, scope: Scope, x: Ref) -> Ref:
        values, spans = self._bind(call, op.param_names, op.name, scope)
        for name, value in scope.defaults.get(op.name, {}).items():
            values.setdefault(name, value)
        try:
            args = ops.resolve_args(op, values)
        except OpError as error:
            raise self._locate(error, call, spans, values, scope) from None
        if not op.makes_node:
            return x  # identity adds no node: the edge goes straight through
        if x.shape is None:
            raise _Poisoned()
        try:
            shape = op.shape([x.shape], args)
        except OpError as error:
            raise self._locate(error, call, spans, values, scope) from None
        node = self._add_node(op.name, args, scope.fresh(op.name), call.span, scope, [x], shape)
        return Ref(node.id, shape)

    def _locate(
        self, error: OpError, call: Call, spans: dict[str, Span], values: dict[str, Any], scope: Scope
    ) -> LocatedError:
        value = values.get(error.param) if error.param else None
        wanted_number = any(
            w in error.message for w in ("must be an integer", "must be a number", "true or false")
        )
        if isinstance(value, Symbol) and wanted_number:
            if value in self.blocks or ops.get(value) is not None:
                return LocatedError(value.span, f"{error.message}; '{value}' is a layer, not a value")
            hint, fixes = suggestion(value, value.span, scope.values)
            return LocatedError(
                value.span,
                f"{error.message}; '{value}' is not a parameter here{hint}",
                code="unknown-name",
                fixes=fixes,
            )
        span = spans.get(error.param, call.span) if error.param else call.span
        return LocatedError(span, error.message, code="op")

    def _merge(self, op: OpDef, call: Call, scope: Scope, x: Ref) -> Ref:
        if call.kwargs:
            raise LocatedError(call.kwargs[0].span, f"{op.name} takes no parameters, only branches")
        if len(call.args) != 1 or not isinstance(call.args[0], Branches):
            span = call.args[1].span if len(call.args) > 1 else call.span
            hint = "; separate branches with '|', not ','" if len(call.args) > 1 else ""
            raise LocatedError(span, f"{op.name} needs two or more branches, like {op.name}(A | B){hint}")
        branches = call.args[0].items
        refs: list[Ref | None] = []
        for branch in branches:
            if isinstance(branch, Name) and branch.id == "shortcut" and branch.id not in scope.tensors:
                if op.name != "add":
                    raise LocatedError(branch.span, "shortcut is only allowed as a branch of add(...)")
                refs.append(None)
                continue
            refs.append(self.apply(branch, scope, x, head=True))
        known = [r for r in refs if r is not None]
        if not known:
            raise LocatedError(call.span, "add needs a branch besides shortcut to take its shape from")
        if any(r.shape is None for r in known) or x.shape is None and None in refs:
            raise _Poisoned()
        target = known[0].shape
        assert target is not None
        for index, ref in enumerate(refs):
            if ref is None:
                refs[index] = self._shortcut(x, target, branches[index], scope)
        final = [r for r in refs if r is not None]
        shapes = [r.shape for r in final if r.shape is not None]
        try:
            shape = op.shape(shapes, {})
        except OpError as error:
            span = branches[error.branch].span if error.branch is not None else call.span
            message = error.message
            if error.branch is not None and any(r.node == x.node for r in final):
                message += "; an identity branch keeps the input's shape: use shortcut to project it"
            raise LocatedError(span, message, code="merge") from None
        node = self._add_node(op.name, {}, scope.fresh(op.name), call.span, scope, final, shape)
        return Ref(node.id, shape)

    def _shortcut(self, x: Ref, target: Shape, branch: Expr, scope: Scope) -> Ref:
        assert x.shape is not None
        if x.shape == target:
            return x
        source = x.shape
        if (
            len(source) != 3
            or len(target) != 3
            or target[1] == 0
            or source[1] % target[1]
            or source[2] % target[2]
        ):
            raise LocatedError(
                branch.span, f"shortcut cannot project {fmt_shape(source)} to {fmt_shape(target)}"
            )
        stride = (source[1] // target[1], source[2] // target[2])
        prefix = scope.fresh("shortcut") + "/"
        inner = Scope(prefix, scope.frames, scope.values, scope.tensors, scope.defaults, scope.block_input)
        conv = ops.REGISTRY["conv"]
        args = ops.resolve_args(
            conv, {"channels": target[0], "kernel": 1, "stride": list(stride), "bias": False}
        )
        shape = conv.shape([source], args)
        if shape != target:
            raise LocatedError(
                branch.span, f"shortcut cannot project {fmt_shape(source)} to {fmt_shape(target)}"
            )
        conv_node = self._add_node("conv", args, inner.fresh("conv"), branch.span, inner, [x], shape)
        bn = ops.REGISTRY["bn"]
        bn_node = self._add_node(
            "bn",
            ops.resolve_args(bn, {}),
            inner.fresh("bn"),
            branch.span,
            inner,
            [Ref(conv_node.id, shape)],
            shape,
        )
        return Ref(bn_node.id, shape)

    def _add_node(
        self,
        op: str,
        args: dict[str, Any],
        path: str,
        span: Span,
        scope: Scope,
        inputs: Sequence[Ref],
        shape: Shape,
    ) -> Node:
        # A node's path is its largest part: long block names nested deep must count against the budget.
        self._spend(5 + len(path) // 64, span, scope)
        if math.prod(shape) > MAX_NUMBER:
            # Dimensions would otherwise grow without bound (`upsample(2**53) * 1000`), and with them memory.
            raise LocatedError(
                span, f"{op} output {fmt_shape(shape)} is too large (more than 2**53 elements)"
            )
        if len(self.nodes) >= self.options.node_budget:
            self.sink.add(
                Diagnostic(
                    span,
                    f"the spec elaborates to more than {self.options.node_budget:,} nodes "
                    "(--node-budget changes the limit)",
                    chain=scope.frames,
                )
            )
            raise _Stop()
        node = Node(
            id=len(self.nodes),
            op=op,
            args=args,
            path=path,
            span=span,
            frames=scope.frames,
            inputs=tuple(r.node for r in inputs),
            input_shapes=tuple(r.shape for r in inputs if r.shape is not None),
            shape=shape,
        )
        self.nodes.append(node)
        return node

    # ------------------------------------------------------------------------------------ blocks ---

    def _instantiate(self, block: BlockInfo, call: Call, scope: Scope, x: Ref) -> Ref:
        definition = block.definition
        if definition.name in scope.active:
            cycle = " -> ".join([*scope.active[scope.active.index(definition.name) :], definition.name])
            raise LocatedError(call.name_span, f"block {definition.name} instantiates itself ({cycle})")
        if len(scope.frames) >= MAX_BLOCK_DEPTH:
            raise LocatedError(call.name_span, f"blocks nested more than {MAX_BLOCK_DEPTH} deep")
        self._spend(6, call.span, scope)  # an instance costs about a node (its scope, frame and call text)
        names = [p.name for p in definition.params]
        values, _ = self._bind(call, names, f"block {definition.name}", scope)
        if x.shape is None:
            raise _Poisoned()
        path = scope.fresh(definition.name)
        inner = Scope(
            path + "/", scope.frames, {}, {}, dict(block.defaults), x, (*scope.active, definition.name)
        )
        for param in definition.params:
            if param.name in values:
                inner.values[param.name] = values[param.name]
            elif param.default is not None:
                # Defaults may use earlier parameters and in.c/in.h/in.w; they are evaluated in the block.
                inner.values[param.name] = self.value(param.default, inner)
            else:
                raise LocatedError(
                    call.span,
                    f"block {definition.name} needs '{param.name}' (its parameters: {', '.join(names)})",
                )
        shown = f"{definition.name}({', '.join(f'{k}={_show(v)}' for k, v in inner.values.items())})"
        if len(shown) > MAX_CALL_TEXT:
            # Every node of the instance keeps this text: a huge list argument must not be copied per instance.
            shown = shown[: MAX_CALL_TEXT - 4] + "...)"
        inner.frames = (*scope.frames, Frame(path, definition.name, shown, call.span))
        results = self.body(definition.body, inner, x)
        if len(results) != 1:
            raise LocatedError(
                call.span, f"block {definition.name} returns {len(results)} tensors; a block returns one"
            )
        ref = results[0][1]
        if ref.shape is None:
            raise _Poisoned()
        return ref

    # ------------------------------------------------------------------------------------ values ---

    def value(self, expr: Expr, scope: Scope) -> Any:
        """Evaluate an argument expression: a number, bool, symbol, list, or the ``?`` wildcard."""
        self._spend(1, expr.span, scope)
        if isinstance(expr, Number):
            return expr.value
        if isinstance(expr, String):
            return expr.value
        if isinstance(expr, Wildcard):
            return WILDCARD
        if isinstance(expr, Group):
            return self.value(expr.expr, scope)
        if isinstance(expr, ListExpr):
            return [self.value(item, scope) for item in expr.items]
        if isinstance(expr, Name):
            if expr.id in scope.values:
                return scope.values[expr.id]
            if expr.id in ("true", "false"):
                return expr.id == "true"
            if expr.id in scope.tensors:
                raise LocatedError(
                    expr.span,
                    f"tensor '{expr.id}' used as a value; use {expr.id}.c, {expr.id}.h or {expr.id}.w",
                )
            symbol = Symbol(expr.id)
            symbol.span = expr.span
            return symbol
        if isinstance(expr, Attr):
            return self._attr(expr, scope)
        if isinstance(expr, Neg):
            operand = self.value(expr.operand, scope)
            return -self._number(operand, expr.operand)
        if isinstance(expr, BinOp):
            left = self._number(self.value(expr.left, scope), expr.left)
            right = self._number(self.value(expr.right, scope), expr.right)
            return self._arith(expr, left, right)
        raise LocatedError(expr.span, f"expected a value, found {_describe_expr(expr)}")

    def _number(self, value: Any, expr: Expr) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            if isinstance(value, Symbol):
                raise LocatedError(expr.span, f"unknown name '{value}' in arithmetic")
            raise LocatedError(expr.span, f"arithmetic needs numbers, got {_show(value)}")
        return value

    def _arith(self, expr: BinOp, left: int | float, right: int | float) -> int | float:
        op = expr.op
        if op in ("/", "//", "%") and right == 0:
            raise LocatedError(expr.right.span, "division by zero")
        if op == "+":
            result = left + right
        elif op == "-":
            result = left - right
        elif op == "*":
            result = left * right
        elif op == "/":
            # Exact division stays an integer, so `in.c / 2` can be a channel count.
            if isinstance(left, int) and isinstance(right, int) and left % right == 0:
                result = left // right
            else:
                result = left / right
        elif op == "//":
            result = left // right
        else:
            result = left % right
        if abs(result) > MAX_NUMBER:
            raise LocatedError(expr.span, f"number too large ({expr_text(expr)})")
        return result

    def _attr(self, expr: Attr, scope: Scope) -> int:
        if expr.base == "in":
            ref = scope.block_input
            if ref is NO_INPUT:
                raise LocatedError(
                    expr.span,
                    f"{expr.base}.{expr.attr} has no value here: 'in' is the input of a block or network body",
                )
        elif expr.base in scope.tensors:
            ref = scope.tensors[expr.base]
        else:
            raise LocatedError(
                expr.span,
                f"unknown tensor '{expr.base}'{did_you_mean(expr.base, [*scope.tensors, 'in'])}",
            )
        if ref.shape is None:
            raise _Poisoned()
        dims = {"c": 0, "h": 1, "w": 2}
        if expr.attr not in dims:
            raise LocatedError(expr.span, f"unknown dimension '.{expr.attr}'; use .c, .h or .w")
        index = dims[expr.attr]
        if index >= len(ref.shape):
            raise LocatedError(
                expr.span,
                f"{expr.base} is flat {fmt_shape(ref.shape)}: it has .c (its features) but no .h or .w",
            )
        return ref.shape[index]


def _show(value: Any, limit: int = MAX_CALL_TEXT) -> str:
    """A value as the spec would write it, cut after about ``limit`` characters (lists may be huge)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        parts: list[str] = []
        size = 0
        for item in value:
            if size > limit:
                parts.append("...")
                break
            parts.append(_show(item, limit - size))
            size += len(parts[-1]) + 2
        return "[" + ", ".join(parts) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _describe_expr(expr: Expr) -> str:
    if isinstance(expr, Number):
        return f"the number {expr.value}"
    if isinstance(expr, String):
        return f'the string "{expr.value}"'
    if isinstance(expr, ListExpr):
        return "a list"
    if isinstance(expr, Wildcard):
        return "'?'"
    if isinstance(expr, Call | Chain | Branches):
        return "a layer expression"
    return f"the expression {expr_text(expr)}"
