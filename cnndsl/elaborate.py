"""Stage 2, elaborate and check: AST -> :class:`~cnndsl.network.Network`.

Blocks are instantiated, repetitions unrolled, defaults applied, names resolved, and every node's output shape
inferred through the op registry as the node is created. Shapes are needed while elaborating (``in.c``,
``shortcut``), so inference is not a separate pass over a finished graph; the checker's rules all live in the
registry. Errors are collected (up to a limit), each located at the span that caused it and carrying the chain
of block instantiations that led there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from . import ops
from .diagnostics import (
    Diagnostic,
    DiagnosticSink,
    Fix,
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
    Cond,
    Defaults,
    Expr,
    ExprStmt,
    FuncDef,
    Group,
    If,
    Kwarg,
    Let,
    ListExpr,
    MultiAssign,
    Name,
    Neg,
    NetworkDef,
    Not,
    Number,
    ParamDecl,
    Repeat,
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

INPUT_OP = "input"
"""The registry op of a declared network input (torch.fx's ``placeholder``)."""

PARAMETER_OP = "parameter"
"""The registry op of a ``param`` declaration: no input, one learnable tensor owned by the enclosing block."""


def _round_half_even(x: float) -> int:
    return round(x)


BUILTINS: dict[str, tuple[int, int | None, Callable[..., Any]]] = {
    "min": (1, None, min),
    "max": (1, None, max),
    "round": (1, 1, _round_half_even),
    "floor": (1, 1, math.floor),
    "ceil": (1, 1, math.ceil),
    "int": (1, 1, int),
}
"""Value functions every spec can call: name -> (fewest arguments, most (None: any), function). ``round`` is
Python's (halves to the even neighbour), ``int`` truncates toward zero; all take numbers only."""

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


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
        functions: dict[str, FuncDef] | None = None,
    ) -> None:
        self.blocks = blocks
        self.functions = functions or {}
        self.sources = sources
        self.options = options
        self.sink = sink
        self.nodes: list[Node] = []
        self.work = 0
        self.work_limit = WORK_PER_NODE * options.node_budget
        self.calling: list[str] = []  # the `def`s being evaluated, innermost last (recursion is refused)

    # -------------------------------------------------------------------------------- reporting ---

    def report(
        self, span: Span, message: str, scope: Scope | None, notes: Sequence[str] = (), *, code: str
    ) -> None:
        self.sink.add(
            Diagnostic(span, message, chain=scope.frames if scope else (), notes=tuple(notes), code=code)
        )
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
                    code="limit",
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
                self.report(decl.span, f"input '{decl.name}' declared twice", None, code="duplicate-name")
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
            node = self._add_node(INPUT_OP, {"shape": shape}, decl.name, decl.span, root, [], shape)
            root.tensors[decl.name] = Ref(node.id, shape)
            inputs.append(Tensor(decl.name, node.id, shape))
        for name in overrides:
            if name is not None:
                known = [d.name for d in definition.inputs]
                raise LocatedError(
                    definition.name_span,
                    f"--input names '{name}', which is not an input of {definition.name}{did_you_mean(name, known)}",
                    code="input-override",
                )
        if not definition.inputs:
            self.report(
                definition.name_span,
                f"network {definition.name} declares no input, e.g. (image: [3, 224, 224])",
                None,
                code="no-input",
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
            return self._shape_value(expr, scope, "input shape")
        except LocatedError as error:
            self.report_error(error, None)
            return None
        except _Poisoned:  # it uses an earlier input whose declaration was already reported
            return None

    def _shape_value(self, expr: Expr, scope: Scope, what: str) -> Shape:
        """A declared shape (an input's, a param's): [C, H, W] or [F] of positive integers."""
        value = self.value(expr, scope)
        if (
            not isinstance(value, list)
            or len(value) not in (1, 3)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
        ):
            article = "an" if what[0] in "aeiou" else "a"
            raise LocatedError(
                expr.span,
                f"{article} {what} is [C, H, W] or [F] of positive integers, got {expr_text(expr)}",
                code="bad-shape",
            )
        if math.prod(value) > MAX_NUMBER:
            raise LocatedError(
                expr.span, f"{what} {expr_text(expr)} is too large (more than 2**53 elements)", code="limit"
            )
        return tuple(value)

    # ------------------------------------------------------------------------------- statements ---

    def body(self, stmts: Sequence[Stmt], scope: Scope, start: Ref) -> list[tuple[str | None, Ref]]:
        """Elaborate a block's or network's statements from ``start``: its outputs, (name or None, tensor)."""
        current, results = self._statements(stmts, scope, start, top=True)
        return results if results is not None else [(None, current)]

    def _statements(
        self, stmts: Sequence[Stmt], scope: Scope, current: Ref, top: bool
    ) -> tuple[Ref, list[tuple[str | None, Ref]] | None]:
        """Run statements in order; the running tensor and, after a ``return``, the outputs. ``top`` is false
        inside an ``if``, where ``return`` is refused."""
        for index, stmt in enumerate(stmts):
            try:
                if isinstance(stmt, Return):
                    if not top:
                        raise LocatedError(
                            stmt.span,
                            "return ends a block or network body; it cannot stand inside if "
                            "(assign the tensors in the branches and return them after the if)",
                            code="return-in-if",
                        )
                    if index + 1 < len(stmts):
                        # Never elaborated, so never checked: say so rather than drop it silently.
                        self.report(
                            stmts[index + 1].span,
                            "statement after return is never reached",
                            scope,
                            code="unreachable",
                        )
                    results = []
                    for expr in stmt.exprs:
                        ref = self.apply(expr, scope, current, head=True)
                        # Only a tensor name names an output; `return relu` is an op applied, not a name.
                        named = expr.id if isinstance(expr, Name) and expr.id in scope.tensors else None
                        results.append((named, ref))
                    return current, results
                if isinstance(stmt, Defaults):
                    scope.defaults = self.defaults(stmt, scope, scope.defaults)
                elif isinstance(stmt, Assign):
                    self._check_new_name(stmt.name, stmt.name_span, scope)
                    # The right-hand side still sees the name's old tensor (`x = x -> relu`); if it fails, the
                    # name is poisoned, so later uses of it stay quiet.
                    try:
                        current = self.apply(stmt.expr, scope, current, head=True)
                    except BaseException:
                        scope.tensors[stmt.name] = POISON
                        raise
                    scope.tensors[stmt.name] = current
                    self._assert_shape(stmt.shape, current, scope)
                elif isinstance(stmt, ExprStmt):
                    current = self.apply(stmt.expr, scope, current, head=True)
                    self._assert_shape(stmt.shape, current, scope)
                elif isinstance(stmt, MultiAssign):
                    current = self._multi_assign(stmt, scope, current)
                elif isinstance(stmt, Let):
                    self._let(stmt, scope)
                elif isinstance(stmt, If):
                    chosen = stmt.body if self._condition(stmt.test, scope) else stmt.orelse
                    current, _ = self._statements(chosen, scope, current, top=False)
                elif isinstance(stmt, ParamDecl):
                    self._param(stmt, scope)
            except LocatedError as error:
                self.report_error(error, scope)
                current = POISON
            except _Poisoned:
                current = POISON
            except RecursionError:
                # Blocks and brackets nested within each other past what the Python stack holds: the
                # innermost statement that catches it is the one to point at.
                self.report(stmt.span, "blocks and brackets nested too deeply to check", scope, code="limit")
                current = POISON
        return current, None

    def _multi_assign(self, stmt: MultiAssign, scope: Scope, current: Ref) -> Ref:
        """``a, b = Block(...)``: bind each returned tensor; the body continues from the first."""
        seen: set[str] = set()
        for name, span in zip(stmt.names, stmt.name_spans, strict=True):
            if name in seen:
                raise LocatedError(
                    span, f"'{name}' is assigned twice in one statement", code="duplicate-name"
                )
            seen.add(name)
            self._check_new_name(name, span, scope)
        # As for `x = ...`: the right-hand side sees the names' old tensors (`x, s = x -> Down(64)`).
        try:
            if stmt.shapes and len(stmt.shapes) != len(stmt.names):
                # Known from the text alone: said before the right-hand side is checked.
                count = len(stmt.shapes)
                assert stmt.shapes_span is not None
                extra = stmt.shapes[len(stmt.names)] if count > len(stmt.names) else None
                span = _join(extra.span, stmt.shapes[-1].span) if extra is not None else stmt.shapes_span
                raise LocatedError(
                    span,
                    f"{count} shape{' is' if count == 1 else 's are'} asserted for {len(stmt.names)} names "
                    f"({', '.join(stmt.names)}); assert one shape per name",
                    code="shape-assertion-count",
                )
            refs = self.apply_many(stmt.expr, scope, current, head=True)
            if len(refs) != len(stmt.names):
                got = f"{len(refs)} tensor{'s' if len(refs) != 1 else ''}"
                raise LocatedError(
                    stmt.expr.span,
                    f"{_describe_source(stmt.expr)} gives {got}, but {len(stmt.names)} names are assigned "
                    f"({', '.join(stmt.names)})",
                    code="tensor-count",
                )
        except BaseException:
            for name in stmt.names:
                scope.tensors[name] = POISON
            raise
        for name, ref in zip(stmt.names, refs, strict=True):
            scope.tensors[name] = ref
        if any(r.shape is None for r in refs):
            raise _Poisoned()
        for name, ref, shape in zip(stmt.names, refs, stmt.shapes, strict=False):
            self._assert_shape(shape, ref, scope, name)
        return refs[0]

    def _let(self, stmt: Let, scope: Scope) -> None:
        name = stmt.name
        if name in scope.tensors:
            raise LocatedError(
                stmt.name_span, f"'{name}' is a tensor here; a let needs another name", code="shadowing"
            )
        if ops.get(name) is not None or name in self.blocks:
            kind = "op" if ops.get(name) is not None else "block"
            raise LocatedError(
                stmt.name_span,
                f"let {name} would shadow the {kind} {name}; choose another name",
                code="shadowing",
            )
        value = self.value(stmt.expr, scope)
        scope.values[name] = value

    def _param(self, stmt: ParamDecl, scope: Scope) -> None:
        """``param name: [shape] = init``: a node with no input owning a learnable tensor, bound as a tensor."""
        self._check_new_name(stmt.name, stmt.name_span, scope)
        if stmt.name in scope.tensors:
            raise LocatedError(
                stmt.name_span,
                f"'{stmt.name}' is already a tensor in this body; a param needs a new name",
                code="duplicate-name",
            )
        scope.tensors[stmt.name] = POISON
        if scope.counters:
            # torch's state_dict lists a module's own parameters before its submodules' tensors, so a param
            # written after a layer could not be registered where it is written: refuse it rather than move it.
            raise LocatedError(
                stmt.name_span,
                f"param {stmt.name} is written after the layers of its body; torch registers a block's own "
                "parameters before its layers, so write every param first in the body",
                self._first_layer_note(scope),
                code="param-after-layers",
            )
        shape = self._shape_value(stmt.shape, scope, "param shape")
        init = self.value(stmt.init, scope)
        if isinstance(init, bool) or not isinstance(init, int | float) or not math.isfinite(init):
            raise LocatedError(
                stmt.init.span,
                f"a param's initial value is a finite number, got {_show(init)}",
                code="value-type",
            )
        args = {"shape": shape, "init": float(init)}
        node = self._add_node(PARAMETER_OP, args, scope.prefix + stmt.name, stmt.span, scope, [], shape)
        scope.tensors[stmt.name] = Ref(node.id, shape)

    def _first_layer_note(self, scope: Scope) -> tuple[str, ...]:
        """Where the body's first layer is written, as a note. The body's nodes are the newest ones, those
        under its path prefix (an error path: the scan is bounded by the error limit)."""
        first: Node | None = None
        for node in reversed(self.nodes):
            if not node.path.startswith(scope.prefix):
                break
            if node.op not in (INPUT_OP, PARAMETER_OP):
                first = node
        if first is None:
            return ()
        depth = len(scope.frames)
        # A layer inside a block called from this body is shown at the call.
        span = first.frames[depth].span if len(first.frames) > depth else first.span
        return (f"the first layer of this body is written at {span}",)

    def _condition(self, expr: Expr, scope: Scope) -> bool:
        """Evaluate a condition, which must be exactly true or false."""
        value = self.value(expr, scope)
        if not isinstance(value, bool):
            if isinstance(value, Symbol):
                candidates = [*scope.values, "true", "false"]
                raise LocatedError(
                    expr.span,
                    f"unknown name '{value}' in a condition{did_you_mean(value, candidates)}",
                    code="unknown-name",
                )
            hint = "; compare it, e.g. n > 0" if isinstance(value, int | float) else ""
            raise LocatedError(
                expr.span, f"a condition must be true or false, got {_show(value)}{hint}", code="value-type"
            )
        return value

    def _check_new_name(self, name: str, span: Span, scope: Scope) -> None:
        if ops.get(name) is not None:
            raise LocatedError(
                span,
                f"tensor name '{name}' would shadow the op {name}; choose another name",
                code="shadowing",
            )
        if name in self.blocks:
            raise LocatedError(
                span,
                f"tensor name '{name}' would shadow the block {name}; choose another name",
                code="shadowing",
            )
        if name in scope.values:
            raise LocatedError(
                span, f"tensor name '{name}' would shadow the parameter {name}", code="shadowing"
            )

    def _assert_shape(self, expr: Expr | None, ref: Ref, scope: Scope, name: str | None = None) -> None:
        """Check ``ref``'s shape against the assertion ``expr`` (``name``: the tensor's, when several are
        asserted in one statement)."""
        if expr is None or ref.shape is None:
            return
        expected = self.value(expr, scope)
        if not isinstance(expected, list) or any(
            not (v is WILDCARD or (isinstance(v, int) and not isinstance(v, bool))) for v in expected
        ):
            raise LocatedError(
                expr.span,
                f"a shape assertion is a list like [C, H, W] (? matches any), got {expr_text(expr)}",
                code="bad-shape",
            )
        shown = _show(expected)  # a hostile assertion may list 100,000 sizes: the message stays short
        if len(expected) != len(ref.shape) or any(
            v is not WILDCARD and v != d for v, d in zip(expected, ref.shape, strict=False)
        ):
            raise LocatedError(
                expr.span,
                f"shape assertion failed{f' for {name}' if name else ''}: expected {shown}, "
                f"got {fmt_shape(ref.shape)}",
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
                    call.name_span,
                    f"{call.name} is a merge and takes no parameters, so no defaults",
                    code="defaults",
                )
            if op is None:
                candidates = [n for n, o in ops.REGISTRY.items() if not o.variadic]
                if call.name in self.blocks:
                    raise LocatedError(
                        call.name_span, f"defaults apply to ops, and {call.name} is a block", code="defaults"
                    )
                hint, fixes = suggestion(call.name, call.name_span, candidates)
                raise LocatedError(
                    call.name_span,
                    f"unknown op '{call.name}' in defaults{hint}",
                    code="unknown-op",
                    fixes=fixes,
                )
            if call.args:
                raise LocatedError(
                    call.args[0].span,
                    "defaults take keyword arguments only, e.g. defaults conv(bias=false)",
                    code="defaults",
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
                if spec.kind == "tensor":
                    raise LocatedError(
                        kwarg.span,
                        f"{kwarg.name} takes a tensor of the body it is used in, so it has no default",
                        code="defaults",
                    )
                value = self.value(kwarg.value, scope)
                try:
                    ops.coerce(spec, value)
                except OpError as error:
                    hint, fixes = _word_suggestion(spec, value) if error.code == "op-choice" else ("", ())
                    raise LocatedError(
                        kwarg.value.span, error.message + hint, code=error.code, fixes=fixes
                    ) from None
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
            return self._repeat(expr.left, expr.right, None, expr.span, scope, x)
        if isinstance(expr, Repeat):
            index = (expr.index, expr.index_span)
            return self._repeat(expr.layer, expr.count, index, expr.span, scope, x)
        if isinstance(expr, Cond):
            chosen = expr.then if self._condition(expr.test, scope) else expr.orelse
            return self.apply(chosen, scope, x, head)
        if isinstance(expr, Branches):
            raise LocatedError(
                expr.span,
                "'|' separates branches, and only inside add(...), concat(...) or mul(...)",
                code="expected-layer",
            )
        raise LocatedError(
            expr.span, f"expected a layer, found {_describe_expr(expr)}", code="expected-layer"
        )

    def apply_many(self, expr: Expr, scope: Scope, x: Ref, head: bool) -> list[Ref]:
        """Like :meth:`apply`, but a block call at the end may give several tensors (``a, b = Down(64)``)."""
        if isinstance(expr, Group):
            return self.apply_many(expr.expr, scope, x, head)
        if isinstance(expr, Chain):
            self._spend(3, expr.span, scope)
            x = self.apply(expr.items[0], scope, x, head)
            for item in expr.items[1:-1]:
                x = self.apply(item, scope, x, False)
            return self.apply_many(expr.items[-1], scope, x, False)
        if isinstance(expr, Cond):
            chosen = expr.then if self._condition(expr.test, scope) else expr.orelse
            return self.apply_many(chosen, scope, x, head)
        call = self._block_call(expr, scope)
        if call is not None:
            self._spend(3, expr.span, scope)
            return self._instantiate(self.blocks[call.name], call, scope, x)
        return [self.apply(expr, scope, x, head)]

    def _block_call(self, expr: Expr, scope: Scope) -> Call | None:
        """The block call ``expr`` is (``Down(64)`` or bare ``Down``), or None."""
        if isinstance(expr, Call) and expr.name in self.blocks and expr.name not in scope.tensors:
            return expr
        if isinstance(expr, Name) and expr.id in self.blocks and expr.id not in scope.tensors:
            return Call(expr.id, (), (), expr.span, expr.span)
        return None

    def _apply_name(self, expr: Name, scope: Scope, x: Ref, head: bool) -> Ref:
        name = expr.id
        if name in scope.tensors:
            if not head:
                raise LocatedError(
                    expr.span,
                    f"tensor '{name}' can only start a chain; inside one it would discard its input",
                    code="tensor-inside-chain",
                )
            ref = scope.tensors[name]
            if ref.shape is None:
                raise _Poisoned()
            return ref
        if name in self.blocks:
            call = Call(name, (), (), expr.span, expr.span)
            return self._one(self._instantiate(self.blocks[name], call, scope, x), call)
        if ops.get(name) is not None:
            return self._apply_call(Call(name, (), (), expr.span, expr.span), scope, x)
        if name == "shortcut":
            raise LocatedError(expr.span, "shortcut is only allowed as a branch of add(...)", code="shortcut")
        if name == "in":
            if not head:
                raise LocatedError(expr.span, "'in' can only start a chain", code="tensor-inside-chain")
            if scope.block_input.shape is None:
                raise _Poisoned()
            return scope.block_input
        if name in scope.values:
            raise LocatedError(
                expr.span,
                f"'{name}' is a parameter (value {_show(scope.values[name])}), not a layer",
                code="expected-layer",
            )
        hint, fixes = suggestion(name, expr.span, self._layer_names(scope))
        raise LocatedError(expr.span, f"unknown name '{name}'{hint}", code="unknown-name", fixes=fixes)

    def _layer_names(self, scope: Scope) -> list[str]:
        return [
            *scope.tensors,
            *self.blocks,
            *(n for n in ops.REGISTRY if ops.get(n) is not None),
            "shortcut",
        ]

    def _apply_call(self, call: Call, scope: Scope, x: Ref) -> Ref:
        if call.name in scope.tensors:
            raise LocatedError(
                call.name_span,
                f"'{call.name}' is a tensor, not a layer; it takes no arguments",
                code="expected-layer",
            )
        if call.name in self.blocks:
            return self._one(self._instantiate(self.blocks[call.name], call, scope, x), call)
        op = ops.get(call.name)
        if op is None:
            if call.name in BUILTINS or call.name in self.functions:
                raise LocatedError(
                    call.span,
                    f"{call.name}(...) computes a value, and a layer is expected here",
                    code="expected-layer",
                )
            names = [*self.blocks, *(n for n in ops.REGISTRY if ops.get(n) is not None)]
            hint, fixes = suggestion(call.name, call.name_span, names)
            raise LocatedError(
                call.name_span, f"unknown op or block '{call.name}'{hint}", code="unknown-op", fixes=fixes
            )
        if op.variadic:
            return self._merge(op, call, scope, x)
        return self._op(op, call, scope, x)

    def _one(self, refs: list[Ref], call: Call) -> Ref:
        """The single tensor of a block call where one is expected."""
        if len(refs) != 1:
            names = ", ".join("abcdefgh"[i] if i < 8 else f"t{i}" for i in range(len(refs)))
            raise LocatedError(
                call.span,
                f"block {call.name} returns {len(refs)} tensors where one is expected; take them apart "
                f"with {names} = {call.name}(...)",
                code="tensor-count",
            )
        return refs[0]

    def _repeat(
        self,
        layer: Expr,
        count_expr: Expr,
        index: tuple[str, Span] | None,
        span: Span,
        scope: Scope,
        x: Ref,
    ) -> Ref:
        """``layer * count`` (``as index``: each copy sees its position 0 .. count-1 as the value ``index``)."""
        count = self.value(count_expr, scope)
        if isinstance(count, bool) or not isinstance(count, int):
            raise LocatedError(
                count_expr.span, f"a repeat count must be an integer, got {_show(count)}", code="repeat-count"
            )
        if count < 0:
            raise LocatedError(
                count_expr.span, f"a repeat count cannot be negative, got {count}", code="repeat-count"
            )
        if isinstance(layer, Number | String | ListExpr | Neg | Not | Wildcard | Attr) or (
            isinstance(layer, Name) and layer.id in scope.values
        ):
            raise LocatedError(
                layer.span,
                f"'* {count}' repeats a layer, but {expr_text(layer)} is a value",
                code="expected-layer",
            )
        outer = scope.values
        if index is not None:
            name, name_span = index
            if name in scope.tensors or ops.get(name) is not None or name in self.blocks or name in outer:
                what = "tensor" if name in scope.tensors else "parameter" if name in outer else "layer"
                raise LocatedError(
                    name_span,
                    f"repetition index '{name}' would shadow the {what} {name}; choose another name",
                    code="shadowing",
                )
        if count == 0:
            return x

        def copy(k: int, x: Ref) -> Ref:
            if index is None:
                return self.apply(layer, scope, x, False)
            scope.values = {**outer, index[0]: k}
            try:
                return self.apply(layer, scope, x, False)
            finally:
                scope.values = outer

        before, work_before = len(self.nodes), self.work
        x = copy(0, x)
        per_copy = len(self.nodes) - before
        projected = len(self.nodes) + per_copy * (count - 1)
        if projected > self.options.node_budget:
            raise LocatedError(
                span,
                f"this repetition would make about {projected:,} nodes, over the node budget of "
                f"{self.options.node_budget:,} (--node-budget changes it)",
                code="limit",
            )
        # A copy that makes no node still costs work (identity, an empty block, `relu * 0`): project that too.
        projected_work = self.work + (self.work - work_before) * (count - 1)
        if projected_work > self.work_limit:
            raise LocatedError(
                span,
                f"this repetition would take about {projected_work:,} steps to check, over the limit of "
                f"{self.work_limit:,} ({WORK_PER_NODE} per node of the node budget; --node-budget changes it)",
                code="limit",
            )
        for k in range(1, count):
            x = copy(k, x)
        return x

    # --------------------------------------------------------------------------------------- ops ---

    def _tensor_arg(self, expr: Expr, scope: Scope) -> Ref | None:
        """The tensor an argument names (a tensor of this body, or ``in``), or None when it is a value."""
        if not isinstance(expr, Name):
            return None
        if expr.id in scope.tensors:
            return scope.tensors[expr.id]
        if expr.id == "in" and expr.id not in scope.values and scope.block_input is not NO_INPUT:
            return scope.block_input
        return None

    def _bind(
        self,
        call: Call,
        names: Sequence[str],
        what: str,
        scope: Scope,
        tensors: bool | tuple[str, ...] = (),
    ) -> tuple[dict[str, Any], dict[str, Span], dict[str, Ref]]:
        """Evaluate a call's arguments against parameter names: (values, spans of the argument expressions,
        tensors). ``tensors`` names the parameters that may take a tensor (True: any); such an argument that
        names a tensor is bound as that tensor (its name is also kept as the value, for labels)."""
        if len(call.args) > len(names):
            extra = call.args[len(names)]
            raise LocatedError(
                extra.span,
                f"{what} takes at most {len(names)} argument{'s' if len(names) != 1 else ''}, got {len(call.args)}",
                code="too-many-arguments",
            )
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        refs: dict[str, Ref] = {}
        every = tensors is True
        some = tensors if isinstance(tensors, tuple) else ()
        for name, expr in zip(names, call.args, strict=False):
            if every or (some and name in some):
                self._bind_one(name, expr, scope, values, refs)
            else:
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
                    kwarg.span,
                    f"parameter '{kwarg.name}' given twice (by position and by name)",
                    code="duplicate-argument",
                )
            if every or (some and kwarg.name in some):
                self._bind_one(kwarg.name, kwarg.value, scope, values, refs)
            else:
                values[kwarg.name] = self.value(kwarg.value, scope)
            spans[kwarg.name] = kwarg.value.span
        return values, spans, refs

    def _bind_one(
        self, name: str, expr: Expr, scope: Scope, values: dict[str, Any], refs: dict[str, Ref]
    ) -> None:
        """Bind an argument that may be a tensor: the tensor it names, or else its value."""
        ref = self._tensor_arg(expr, scope)
        if ref is not None:
            assert isinstance(expr, Name)
            refs[name] = ref
            values[name] = expr.id
        else:
            values[name] = self.value(expr, scope)

    def _op(self, op: OpDef, call: Call, scope: Scope, x: Ref) -> Ref:
        tensor_params = _tensor_params(op.name)
        values, spans, refs = self._bind(call, op.param_names, op.name, scope, tensor_params)
        for name in tensor_params:
            if name in values and name not in refs:
                hint = did_you_mean(str(values[name]), [*scope.tensors, "in"])
                raise LocatedError(
                    spans[name],
                    f"{name} takes a tensor name (of this body, or in), got {_show(values[name])}{hint}",
                    code="expected-tensor",
                )
        for name, value in scope.defaults.get(op.name, {}).items():
            values.setdefault(name, value)
        try:
            args = ops.resolve_args(op, values)
        except OpError as error:
            raise self._locate(error, op, call, spans, values, scope) from None
        if not op.makes_node:
            return x  # identity adds no node: the edge goes straight through
        if x.shape is None:
            raise _Poisoned()
        inputs = [x]
        shapes = [x.shape]
        for name in tensor_params:  # extra inputs after the chain input, in parameter order
            if name in refs:
                ref = refs[name]
                if ref.shape is None:
                    raise _Poisoned()
                inputs.append(ref)
                shapes.append(ref.shape)
        try:
            shape = op.shape(shapes, args)
        except OpError as error:
            raise self._locate(error, op, call, spans, values, scope) from None
        node = self._add_node(op.name, args, scope.fresh(op.name), call.span, scope, inputs, shape)
        return Ref(node.id, shape)

    def _locate(
        self,
        error: OpError,
        op: OpDef,
        call: Call,
        spans: dict[str, Span],
        values: dict[str, Any],
        scope: Scope,
    ) -> LocatedError:
        value = values.get(error.param) if error.param else None
        # A bare name where the schema wants a number, true/false or a shape: a layer, or a misspelt parameter.
        if isinstance(value, Symbol) and error.code == "op-argument-type":
            if value in self.blocks or ops.get(value) is not None:
                return LocatedError(
                    value.span, f"{error.message}; '{value}' is a layer, not a value", code="expected-value"
                )
            hint, fixes = suggestion(value, value.span, scope.values)
            return LocatedError(
                value.span,
                f"{error.message}; '{value}' is not a parameter here{hint}",
                code="unknown-name",
                fixes=fixes,
            )
        span = spans.get(error.param, call.span) if error.param else call.span
        spec = op.param(error.param) if error.param else None
        if spec is not None and error.code == "op-choice":
            hint, fixes = _word_suggestion(spec, value)
            return LocatedError(span, error.message + hint, code=error.code, fixes=fixes)
        return LocatedError(span, error.message, code=error.code)

    def _merge(self, op: OpDef, call: Call, scope: Scope, x: Ref) -> Ref:
        if call.kwargs:
            raise LocatedError(
                call.kwargs[0].span, f"{op.name} takes no parameters, only branches", code="merge-branches"
            )
        if len(call.args) != 1 or not isinstance(call.args[0], Branches):
            span = call.args[1].span if len(call.args) > 1 else call.span
            hint = "; separate branches with '|', not ','" if len(call.args) > 1 else ""
            raise LocatedError(
                span,
                f"{op.name} needs two or more branches, like {op.name}(A | B){hint}",
                code="merge-branches",
            )
        branches = call.args[0].items
        refs: list[Ref | None] = []
        written_at: dict[int, int] = {}  # shortcut branch -> how many nodes existed where it is written
        for index, branch in enumerate(branches):
            if isinstance(branch, Name) and branch.id == "shortcut" and branch.id not in scope.tensors:
                if op.name != "add":
                    raise LocatedError(
                        branch.span, "shortcut is only allowed as a branch of add(...)", code="shortcut"
                    )
                refs.append(None)
                written_at[index] = len(self.nodes)
                continue
            refs.append(self.apply(branch, scope, x, head=True))
        known = [r for r in refs if r is not None]
        if not known:
            raise LocatedError(
                call.span, "add needs a branch besides shortcut to take its shape from", code="shortcut"
            )
        if any(r.shape is None for r in known) or x.shape is None and None in refs:
            raise _Poisoned()
        target = known[0].shape
        assert target is not None
        moved = 0  # nodes of earlier shortcuts moved in front of the branches that follow them
        for index, position in written_at.items():
            end = len(self.nodes)
            projection = self._shortcut(x, target, branches[index], scope)
            refs[index] = projection
            if len(self.nodes) > end and position + moved < end:
                # Written before other branches (RegNet's `proj`): its nodes take its place in the order, which
                # is the order parameters are registered in.
                mapping = self._move_nodes(position + moved, end)
                refs = [Ref(mapping.get(r.node, r.node), r.shape) if r is not None else None for r in refs]
            moved += len(self.nodes) - end
        final = [r for r in refs if r is not None]
        shapes = [r.shape for r in final if r.shape is not None]
        try:
            shape = op.shape(shapes, {})
        except OpError as error:
            span = branches[error.branch].span if error.branch is not None else call.span
            message = error.message
            if error.branch is not None and any(r.node == x.node for r in final):
                message += "; an identity branch keeps the input's shape: use shortcut to project it"
            raise LocatedError(span, message, code=error.code) from None
        node = self._add_node(op.name, {}, scope.fresh(op.name), call.span, scope, final, shape)
        return Ref(node.id, shape)

    def _move_nodes(self, start: int, end: int) -> dict[int, int]:
        """Move the nodes made since ``end`` to ``start`` (before nodes start..end-1, which cannot depend on
        them); renumber ids and inputs. Returns old id -> new id for the nodes that moved."""
        tail = len(self.nodes) - end
        mapping = {old: old + tail for old in range(start, end)}
        mapping.update({old: start + (old - end) for old in range(end, len(self.nodes))})
        reordered = self.nodes[end:] + self.nodes[start:end]
        self.nodes[start:] = [
            replace(node, id=mapping[node.id], inputs=tuple(mapping.get(i, i) for i in node.inputs))
            for node in reordered
        ]
        return mapping

    def _shortcut(self, x: Ref, target: Shape, branch: Expr, scope: Scope) -> Ref:
        """The input, or a projection to ``target``: ``conv(C, 1, stride=s, padding=0, bias=false) -> bn``
        written as ordinary layers at the branch, so defaults, spans and budgets apply as to any layer."""
        assert x.shape is not None
        if x.shape == target:
            return x
        source = x.shape
        cannot = f"shortcut cannot project {fmt_shape(source)} to {fmt_shape(target)}"
        if len(source) != 3 or len(target) != 3:
            raise LocatedError(branch.span, cannot, code="shortcut")
        # A strided 1x1 conv maps n to ceil(n / s): the stride that rounds the input onto the branch's size.
        strides = []
        for size, wanted in zip(source[1:], target[1:], strict=True):
            stride = -(-size // wanted)
            if (size - 1) // stride + 1 != wanted:
                raise LocatedError(
                    branch.span, f"{cannot} (no 1x1 conv stride maps {size} to {wanted})", code="shortcut"
                )
            strides.append(stride)
        span = branch.span

        def number(value: int) -> Number:
            return Number(value, span)

        conv = Call(
            "conv",
            (number(target[0]), number(1)),
            (
                Kwarg("stride", ListExpr((number(strides[0]), number(strides[1])), span), span),
                Kwarg("padding", number(0), span),
                Kwarg("dilation", number(1), span),
                Kwarg("groups", number(1), span),
                Kwarg("bias", Name("false", span), span),
            ),
            span,
            span,
        )
        bn = Call("bn", (), (), span, span)
        inner = Scope(
            scope.fresh("shortcut") + "/",
            scope.frames,
            {},
            scope.tensors,
            scope.defaults,
            scope.block_input,
        )
        projected = self.apply(Chain((conv, bn), span), inner, x, False)
        if projected.shape != target:
            raise LocatedError(branch.span, cannot, code="shortcut")
        return projected

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
                span, f"{op} output {fmt_shape(shape)} is too large (more than 2**53 elements)", code="limit"
            )
        if len(self.nodes) >= self.options.node_budget:
            self.sink.add(
                Diagnostic(
                    span,
                    f"the spec elaborates to more than {self.options.node_budget:,} nodes "
                    "(--node-budget changes the limit)",
                    chain=scope.frames,
                    code="limit",
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

    def _instantiate(self, block: BlockInfo, call: Call, scope: Scope, x: Ref) -> list[Ref]:
        """Elaborate one block call on ``x``: the tensors it returns (one unless it returns several)."""
        definition = block.definition
        if definition.name in scope.active:
            cycle = " -> ".join([*scope.active[scope.active.index(definition.name) :], definition.name])
            raise LocatedError(
                call.name_span, f"block {definition.name} instantiates itself ({cycle})", code="recursion"
            )
        if len(scope.frames) >= MAX_BLOCK_DEPTH:
            raise LocatedError(
                call.name_span, f"blocks nested more than {MAX_BLOCK_DEPTH} deep", code="limit"
            )
        self._spend(6, call.span, scope)  # an instance costs about a node (its scope, frame and call text)
        names = [p.name for p in definition.params]
        # Any argument that names a tensor binds that tensor (U-Net's `Up(64, skip=s1)`).
        values, _, refs = self._bind(call, names, f"block {definition.name}", scope, True)
        if x.shape is None or any(r.shape is None for r in refs.values()):
            raise _Poisoned()
        path = scope.fresh(definition.name)
        inner = Scope(
            path + "/", scope.frames, {}, {}, dict(block.defaults), x, (*scope.active, definition.name)
        )
        for param in definition.params:
            if param.name in refs:
                inner.tensors[param.name] = refs[param.name]
            elif param.name in values:
                inner.values[param.name] = values[param.name]
            elif param.default is not None:
                # Defaults may use earlier parameters and in.c/in.h/in.w; they are evaluated in the block.
                ref = self._tensor_arg(param.default, inner)
                if ref is not None:
                    inner.tensors[param.name] = ref
                else:
                    inner.values[param.name] = self.value(param.default, inner)
            else:
                raise LocatedError(
                    call.span,
                    f"block {definition.name} needs '{param.name}' (its parameters: {', '.join(names)})",
                    code="missing-argument",
                )
        shown_args = [
            f"{p.name}={_show(inner.values[p.name] if p.name in inner.values else values.get(p.name, p.name))}"
            for p in definition.params
        ]
        shown = f"{definition.name}({', '.join(shown_args)})"
        if len(shown) > MAX_CALL_TEXT:
            # Every node of the instance keeps this text: a huge list argument must not be copied per instance.
            shown = shown[: MAX_CALL_TEXT - 4] + "...)"
        inner.frames = (*scope.frames, Frame(path, definition.name, shown, call.span))
        results = self.body(definition.body, inner, x)
        refs_out = [ref for _, ref in results]
        if any(ref.shape is None for ref in refs_out):
            raise _Poisoned()
        return refs_out

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
                    code="expected-value",
                )
            symbol = Symbol(expr.id)
            symbol.span = expr.span
            return symbol
        if isinstance(expr, Attr):
            return self._attr(expr, scope)
        if isinstance(expr, Neg):
            operand = self.value(expr.operand, scope)
            return -self._number(operand, expr.operand, scope)
        if isinstance(expr, BinOp):
            if expr.op in ("and", "or"):
                # Short-circuit, as Python: `n > 0 and c / n > 2` never divides by zero.
                left_bool = self._boolean(expr.op, self.value(expr.left, scope), expr.left, scope)
                if left_bool == (expr.op == "or"):
                    return left_bool
                return self._boolean(expr.op, self.value(expr.right, scope), expr.right, scope)
            if expr.op in COMPARISONS:
                return self._compare(expr, self.value(expr.left, scope), self.value(expr.right, scope), scope)
            left = self._number(self.value(expr.left, scope), expr.left, scope)
            right = self._number(self.value(expr.right, scope), expr.right, scope)
            return self._arith(expr, left, right)
        if isinstance(expr, Not):
            return not self._boolean("not", self.value(expr.operand, scope), expr.operand, scope)
        if isinstance(expr, Cond):
            return self.value(expr.then if self._condition(expr.test, scope) else expr.orelse, scope)
        if isinstance(expr, Call):
            if expr.name in BUILTINS:
                return self._builtin(expr, scope)
            if expr.name in self.functions:
                return self._call_function(self.functions[expr.name], expr, scope)
        raise LocatedError(
            expr.span, f"expected a value, found {_describe_expr(expr)}", code="expected-value"
        )

    def _number(self, value: Any, expr: Expr, scope: Scope, what: str = "arithmetic") -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            if isinstance(value, Symbol):
                hint = did_you_mean(value, scope.values)
                raise LocatedError(expr.span, f"unknown name '{value}' in {what}{hint}", code="unknown-name")
            raise LocatedError(expr.span, f"{what} needs numbers, got {_show(value)}", code="value-type")
        return value

    def _boolean(self, op: str, value: Any, expr: Expr, scope: Scope) -> bool:
        if not isinstance(value, bool):
            if isinstance(value, Symbol):
                hint = did_you_mean(value, [*scope.values, "true", "false"])
                raise LocatedError(expr.span, f"unknown name '{value}' in '{op}'{hint}", code="unknown-name")
            raise LocatedError(
                expr.span, f"'{op}' needs true or false, got {_show(value)}", code="value-type"
            )
        return value

    def _compare(self, expr: BinOp, left: Any, right: Any, scope: Scope) -> bool:
        if expr.op in ("==", "!="):
            for value, other, side in ((left, right, expr.left), (right, left, expr.right)):
                # `mode == bilinear` compares symbols; an unknown name beside a number is a typo.
                if (
                    isinstance(value, Symbol)
                    and isinstance(other, int | float)
                    and not isinstance(other, bool)
                ):
                    hint = did_you_mean(value, scope.values)
                    raise LocatedError(
                        side.span, f"unknown name '{value}' in a comparison{hint}", code="unknown-name"
                    )
            equal = _same_value(left, right)
            return equal if expr.op == "==" else not equal
        what = f"'{expr.op}'"
        a = self._number(left, expr.left, scope, what)
        b = self._number(right, expr.right, scope, what)
        if expr.op == "<":
            return a < b
        if expr.op == "<=":
            return a <= b
        if expr.op == ">":
            return a > b
        return a >= b

    def _builtin(self, call: Call, scope: Scope) -> int | float:
        fewest, most, function = BUILTINS[call.name]
        if call.kwargs:
            raise LocatedError(
                call.kwargs[0].span, f"{call.name} takes no keyword arguments", code="builtin-arguments"
            )
        count = len(call.args)
        if count < fewest or (most is not None and count > most):
            wanted = f"{fewest}" if most == fewest else f"at least {fewest}"
            span = call.args[most].span if most is not None and count > most else call.span
            raise LocatedError(
                span,
                f"{call.name} takes {wanted} argument{'s' if fewest != 1 else ''}, got {count}",
                code="builtin-arguments",
            )
        what = f"{call.name}(...)"
        args = [self._number(self.value(a, scope), a, scope, what) for a in call.args]
        for arg, value in zip(call.args, args, strict=True):
            if not math.isfinite(value):
                raise LocatedError(
                    arg.span, f"{what} needs finite numbers, got {_show(value)}", code="value-type"
                )
        result = function(*args)
        if abs(result) > MAX_NUMBER:
            raise LocatedError(call.span, f"number too large ({expr_text(call)})", code="limit")
        return result

    def _call_function(self, definition: FuncDef, call: Call, scope: Scope) -> Any:
        """Evaluate a ``def`` at a call: its parameters are the only names it sees."""
        if definition.name in self.calling:
            cycle = " -> ".join([*self.calling[self.calling.index(definition.name) :], definition.name])
            raise LocatedError(
                call.name_span, f"def {definition.name} calls itself ({cycle})", code="recursion"
            )
        if len(self.calling) >= MAX_BLOCK_DEPTH:
            raise LocatedError(
                call.name_span, f"def calls nested more than {MAX_BLOCK_DEPTH} deep", code="limit"
            )
        self._spend(3, call.span, scope)
        names = [p.name for p in definition.params]
        values, _, _ = self._bind(call, names, f"def {definition.name}", scope)
        for param in definition.params:
            if param.name not in values and param.default is None:
                raise LocatedError(
                    call.span,
                    f"def {definition.name} needs '{param.name}' (its parameters: {', '.join(names)})",
                    code="missing-argument",
                )
        inner = Scope("", scope.frames, {}, {}, {}, NO_INPUT)
        self.calling.append(definition.name)
        try:
            for param in definition.params:
                if param.name in values:
                    inner.values[param.name] = values[param.name]
                elif param.default is not None:
                    inner.values[param.name] = self.value(param.default, inner)
            return self.value(definition.expr, inner)
        except LocatedError as error:
            # The error is in the def's text; say which call, with which values, led there.
            shown = ", ".join(f"{k}={_show(v)}" for k, v in inner.values.items())
            note = f"in {definition.name}({shown}) called at {call.span}"
            raise LocatedError(
                error.span, error.message, (*error.notes, note), code=error.code, fixes=error.fixes
            ) from None
        finally:
            self.calling.pop()

    def _arith(self, expr: BinOp, left: int | float, right: int | float) -> int | float:
        op = expr.op
        if op in ("/", "//", "%") and right == 0:
            raise LocatedError(expr.right.span, "division by zero", code="division-by-zero")
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
            raise LocatedError(expr.span, f"number too large ({expr_text(expr)})", code="limit")
        return result

    def _attr(self, expr: Attr, scope: Scope) -> int:
        if expr.base == "in":
            ref = scope.block_input
            if ref is NO_INPUT:
                raise LocatedError(
                    expr.span,
                    f"{expr.base}.{expr.attr} has no value here: 'in' is the input of a block or network body",
                    code="no-block-input",
                )
        elif expr.base in scope.tensors:
            ref = scope.tensors[expr.base]
        else:
            raise LocatedError(
                expr.span,
                f"unknown tensor '{expr.base}'{did_you_mean(expr.base, [*scope.tensors, 'in'])}",
                code="unknown-name",
            )
        if ref.shape is None:
            raise _Poisoned()
        dims = {"c": 0, "h": 1, "w": 2}
        if expr.attr not in dims:
            raise LocatedError(
                expr.span, f"unknown dimension '.{expr.attr}'; use .c, .h or .w", code="unknown-attribute"
            )
        index = dims[expr.attr]
        if index >= len(ref.shape):
            raise LocatedError(
                expr.span,
                f"{expr.base} is flat {fmt_shape(ref.shape)}: it has .c (its features) but no .h or .w",
                code="unknown-attribute",
            )
        return ref.shape[index]


def _word_suggestion(spec: ops.ParamSpec, value: Any) -> tuple[str, tuple[Fix, ...]]:
    """A misspelt bare word (``mode=bilinar``): the did-you-mean text and the fix that replaces the word."""
    if isinstance(value, Symbol):
        return suggestion(value, value.span, spec.words)
    return "", ()


@cache
def _tensor_params(name: str) -> tuple[str, ...]:
    """The parameters of op ``name`` that take a tensor (extra inputs), computed once per op."""
    return tuple(p.name for p in ops.REGISTRY[name].params if p.kind == "tensor")


def _same_value(left: Any, right: Any) -> bool:
    """``==`` on spec values: numbers by value, booleans only with booleans, symbols and strings by text."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same_value(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, str) and isinstance(right, str):
        return str(left) == str(right)
    return False


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


def _join(first: Span, last: Span) -> Span:
    """The span from the start of ``first`` to the end of ``last``."""
    return Span(first.file, first.line, first.column, last.end_line, last.end_column)


def _describe_expr(expr: Expr) -> str:
    if isinstance(expr, Number):
        return f"the number {expr.value}"
    if isinstance(expr, String):
        return f'the string "{expr.value}"'
    if isinstance(expr, ListExpr):
        return "a list"
    if isinstance(expr, Wildcard):
        return "'?'"
    if isinstance(expr, Call | Chain | Branches | Repeat):
        return "a layer expression"
    return f"the expression {expr_text(expr)}"


def _describe_source(expr: Expr) -> str:
    """How a destructured right-hand side is named in messages: ``Down(64)``, or ``this``."""
    if isinstance(expr, Call | Name) and len(expr_text(expr)) <= 40:
        return expr_text(expr)
    return "this"
