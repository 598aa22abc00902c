"""The importers' common model: a graph of source layers ("units"), each a chain of registry ops applied to the
merge of its inputs, with its origin in the source file; shape inference through the op registry; and the
spec writer that turns the graph into a ``.cnn`` text a person would have written (blocks for repeated layer
patterns, ``defaults`` for shared arguments, named tensors only where the graph is not a chain, shape assertions
where the resolution changes, a comment naming the source layer on every line).

Plain data in, text out: no torch, no file I/O. Each format module (``darknet``, ``caffe``) builds a
:class:`Graph`; :func:`write_spec` renders it.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ops
from ..ops import OpError, Shape
from .blocks import BlockDef, Stmt, format_value, mine_blocks, statement_text

INPUT = -1
"""The unit id that stands for the network input in :attr:`Unit.inputs`."""

MAX_UNITS = 100_000
"""More source layers than any real CNN has: a file past this is refused before any work."""


@dataclass(frozen=True)
class Location:
    """Where a source layer was written: a file and line (text formats) or a node name (graph formats)."""

    file: str
    line: int | None = None
    name: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where} ({self.name})" if self.name else where


class ImportFailure(Exception):
    """The source cannot be imported: every problem found, each with its location, as structured data."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{p.location}: error: {p.message}" for p in self.problems]
        count = len(self.problems)
        lines.append(f"{count} problem{'s' if count != 1 else ''}; nothing was written")
        return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    """One located problem. ``code`` is stable: ``unsupported`` (a layer kind or option cnndsl cannot express),
    ``invalid`` (the file contradicts itself: bad reference, bad number) or ``limit`` (past a safety limit)."""

    location: Location
    message: str
    code: str = "invalid"


@dataclass(frozen=True)
class Step:
    """One op call: a registry op and the arguments to write (defaults left out)."""

    op: str
    args: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(op: str, **args: Any) -> Step:
        return Step(op, tuple(args.items()))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


@dataclass
class Unit:
    """One source layer: ``merge`` joins ``inputs`` (when there are several), then ``steps`` run in order.

    A unit without steps and with one input is an alias (a Darknet one-layer route, a Caffe Split): references to
    it are redirected to its input. ``gap`` marks a layer imported with ``--partial`` that cnndsl cannot express:
    it is written as a comment and passes its input through."""

    location: Location
    kind: str
    inputs: list[int]
    steps: list[Step] = field(default_factory=list)
    merge: str | None = None
    name: str | None = None
    """A name the source gives the layer's output (a Caffe top), used for the tensor name when one is needed."""
    scope: tuple[str, ...] = ()
    """The source's own grouping (a torch module path such as ``layer1.0``), which names the blocks found."""
    label: str = ""
    """What the line's comment calls the source layer(s): ``layer 12 [convolutional]``, ``conv1, bn_conv1``."""
    gap: str | None = None
    shape: Shape = ()


@dataclass
class Graph:
    """A whole imported network."""

    name: str
    source: str
    """What it was imported from, for the header comment (``Darknet cfg darknet/yolov3.cfg``)."""
    input_name: str
    input_shape: Shape
    units: list[Unit] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    """Unit ids of the network outputs; empty means the last unit."""
    scope_classes: dict[str, str] = field(default_factory=dict)
    """Class name of each scope path in :attr:`Unit.scope` (``layer1.0`` -> ``Bottleneck``)."""
    gaps: list[str] = field(default_factory=list)
    """With --partial: parts of imported layers that were left out, located (whole layers are units with a gap)."""
    notes: list[str] = field(default_factory=list)
    """Lines for the header comment: conventions the reader should know (crop folded away, head semantics)."""

    def add(self, unit: Unit) -> int:
        if len(self.units) >= MAX_UNITS:
            raise ImportFailure(
                [Problem(unit.location, f"more than {MAX_UNITS:,} layers; refusing to import", "limit")]
            )
        self.units.append(unit)
        return len(self.units) - 1

    def output_ids(self) -> list[int]:
        return self.outputs or [len(self.units) - 1]


FOLLOWER_FAMILIES = frozenset({"norm", "activation", "regularizer"})
"""Ops that continue the line of the layer before them (conv -> bn -> relu is one line), by registry family."""


def chain_concats(graph: Graph) -> None:
    """Write a concatenation of a growing list as one more concat onto the previous one.

    DenseNet keeps a list of feature maps and concatenates all of them before every layer: ``cat([x0, x1, x2])``
    after ``cat([x0, x1])``. Read literally, each layer's concat names every tensor before it, and no two layers
    have the same wiring, so no block can be found. Concatenation is associative (it copies; the result is the
    same tensor, bit for bit), so ``cat([x0, x1, x2])`` becomes ``concat(cat([x0, x1]) | x2)``: every layer then
    reads the one tensor before it and adds its own, the same wiring each time. Call before
    :func:`fuse_followers`, while concatenations are still units of their own."""
    made: dict[tuple[int, ...], int] = {}
    """Inputs of each plain concat unit so far -> that unit (the longest prefix is looked up)."""
    for index, unit in enumerate(graph.units):
        if unit.merge != "concat" or unit.steps or unit.gap is not None:
            continue
        inputs = tuple(unit.inputs)
        for cut in range(len(inputs) - 1, 1, -1):
            earlier = made.get(inputs[:cut])
            if earlier is not None:
                unit.inputs = [earlier, *inputs[cut:]]
                break
        made.setdefault(inputs, index)


def fuse_followers(graph: Graph, payloads: list[list[Any]], outputs: list[int]) -> None:
    """Let a norm/activation/dropout unit that alone reads the unit before it continue that unit's line.

    ``payloads`` holds per unit one entry per step (the weights behind it) and moves with the steps. A fused unit
    is left without steps: an alias of its input."""
    readers: dict[int, int] = {}
    for unit in graph.units:
        for source in unit.inputs:
            readers[source] = readers.get(source, 0) + 1
    owner: dict[int, int] = {}
    for index, unit in enumerate(graph.units):
        if index == 0 or unit.merge is not None or len(unit.inputs) != 1 or unit.gap is not None:
            continue
        source = unit.inputs[0]
        if source != index - 1 or readers.get(source, 0) != 1 or source in outputs:
            continue
        target = owner.get(source, source)
        before = graph.units[target]
        follower = all(ops.REGISTRY[step.op].family in FOLLOWER_FAMILIES for step in unit.steps)
        siblings = len(before.scope) == len(unit.scope) and before.scope[:-1] == unit.scope[:-1]
        if before.gap is not None or not unit.steps or not follower or not siblings:
            continue
        first = before.inputs[0] if before.inputs else INPUT
        if before.merge == "concat" and first != INPUT and graph.units[first].merge == "concat":
            # The last of a chain of concats (see chain_concats) stays bare like the others in the chain, so
            # that every dense layer is written the same (a norm after it starts the next section's line).
            continue
        before.steps = before.steps + unit.steps
        before.label = f"{before.label}, {unit.label}"
        before.shape = ()
        payloads[target] = payloads[target] + payloads[index]
        unit.steps, unit.merge, payloads[index] = [], None, []
        owner[index] = target


def tensor_holders(keys: Iterable[str], *, skip_suffix: str | None = None) -> list[list[str]]:
    """A spec's state_dict keys grouped by the module holding them, in registration order.

    The spec registers its layers in the order the import wrote them, which is the source's order, so these groups
    pair one to one, in order, with the source's weight holders (modules, ONNX nodes, cfg layers)."""
    groups: list[list[str]] = []
    previous: str | None = None
    for key in keys:
        if skip_suffix is not None and key.endswith(skip_suffix):
            continue
        owner = key.rsplit(".", 1)[0]
        if owner != previous:
            groups.append([])
            previous = owner
        groups[-1].append(key)
    return groups


def check_holder_count(source: str, found: int, expected: int, what: str) -> None:
    """Raises the importer's internal error when the source fills a different number of layers than the spec has."""
    if found != expected:
        message = (
            f"internal error: {found} {what} hold weights, the spec has {expected} layers holding tensors"
        )
        raise ImportFailure([Problem(Location(source), message)])


def read_model_text(path: str | Path, max_bytes: int, what: str) -> str:
    """A text model file (cfg, prototxt), refused before reading past ``max_bytes``; undecodable bytes replaced."""
    data = Path(path).read_bytes()
    if len(data) > max_bytes:
        raise ImportFailure(
            [Problem(Location(str(path)), f"{len(data):,} bytes is too large for a {what}", "limit")]
        )
    return data.decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------- shapes ---


def infer_shapes(graph: Graph) -> None:
    """Fill ``Unit.shape`` through the registry's shape rules; every failure becomes a located problem.

    Units after a failed one that depend on it are skipped (their shape stays unknown), so one mistake is reported
    once, not once per layer below it."""
    problems: list[Problem] = []
    known: dict[int, Shape] = {INPUT: graph.input_shape}
    for index, unit in enumerate(graph.units):
        if (
            unit.shape
        ):  # inferred by an earlier call (importers ask while reading, where a rule depends on it)
            known[index] = unit.shape
            continue
        if any(i not in known for i in unit.inputs):
            continue
        shapes = [known[i] for i in unit.inputs]
        try:
            shape = _apply(unit, shapes)
        except OpError as error:
            problems.append(Problem(unit.location, f"{unit.kind}: {error.message}"))
            continue
        unit.shape = shape
        known[index] = shape
    if problems:
        raise ImportFailure(problems)


def _apply(unit: Unit, shapes: list[Shape]) -> Shape:
    if unit.merge is not None:
        merge = ops.REGISTRY[unit.merge]
        shape = merge.shape(shapes, ops.resolve_args(merge, {}))
    elif len(shapes) != 1:
        raise OpError(f"takes one input, got {len(shapes)}")
    else:
        shape = shapes[0]
    for step in unit.steps:
        op = ops.REGISTRY.get(step.op)
        if op is None:  # a mapping written for an op this version of cnndsl does not have
            raise OpError(f"needs the op {step.op}, which this cnndsl does not have")
        shape = op.shape([shape], ops.resolve_args(op, step.kwargs))
    return shape


# ------------------------------------------------------------------------------------------ writing ---

_OP_WORDS = {
    "conv": "Conv",
    "bn": "BN",
    "relu": "ReLU",
    "relu6": "ReLU6",
    "leaky_relu": "Leaky",
    "linear": "Linear",
    "dropout": "Dropout",
    "flatten": "Flatten",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "silu": "SiLU",
    "maxpool": "MaxPool",
    "avgpool": "AvgPool",
    "lrn": "LRN",
    "softmax": "Softmax",
}
_SHORT_PARAMS = {"channels": "c", "kernel": "k", "features": "f"}
_COMMENT_COLUMN = 56


def format_call(op_name: str, args: Iterable[tuple[str, Any]]) -> str:
    """``conv(64, 3, stride=2)``: required parameters positionally in schema order, the rest by keyword."""
    op = ops.REGISTRY[op_name]
    given = {
        k: v for k, v in args if not (isinstance(v, str | int | float | bool) and _is_default(op_name, k, v))
    }
    if "kernel" in given and given.get("stride") == given["kernel"] and op.param("stride") is not None:
        given.pop("stride")  # a pool's stride defaults to its kernel
    positional = [format_value(given.pop(p.name)) for p in op.params if p.required and p.name in given]
    keywords = [f"{p.name}={format_value(given.pop(p.name))}" for p in op.params if p.name in given]
    keywords += [f"{k}={format_value(v)}" for k, v in given.items()]  # block-parameter expressions
    inner = ", ".join(positional + keywords)
    return f"{op_name}({inner})" if inner else op_name


@dataclass
class _Template:
    """A block made from a chain of ops that several units share, with the arguments that vary as parameters."""

    name: str
    key: tuple[tuple[str, tuple[str, ...]], ...]
    params: list[tuple[str, int, str, Any]]
    """(block parameter, step index, op parameter, default or REQUIRED) in signature order."""
    body: list[list[tuple[str, str]]]
    """Per step, (op parameter, text): constants as values, varying ones as the block parameter's name."""

    def body_text(self) -> str:
        steps = []
        for (op_name, _), args in zip(self.key, self.body, strict=True):
            steps.append(format_call(op_name, args) if args else op_name)
        return " -> ".join(steps)

    def values(self, unit: Unit) -> tuple[Any, ...]:
        return tuple(_value(unit.steps[i], arg) for _, i, arg, _ in self.params)


def _template_key(unit: Unit) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((s.op, ()) for s in unit.steps)


def _make_templates(units: list[Unit]) -> dict[tuple[tuple[str, tuple[str, ...]], ...], _Template]:
    groups: dict[tuple[tuple[str, tuple[str, ...]], ...], list[Unit]] = {}
    for unit in units:
        if len(unit.steps) >= 2 and unit.gap is None:
            groups.setdefault(_template_key(unit), []).append(unit)
    templates = {}
    taken: set[str] = set()
    for key, members in groups.items():
        if len(members) < 2:
            continue
        base = "".join(_OP_WORDS.get(op, op.title().replace("_", "")) for op, _ in key)
        name = base
        suffix = 2
        while name in taken:
            name = f"{base}{suffix}"
            suffix += 1
        taken.add(name)
        templates[key] = _build_template(name, key, members)
    return templates


def _build_template(
    name: str, key: tuple[tuple[str, tuple[str, ...]], ...], members: list[Unit]
) -> _Template:
    params: list[tuple[str, int, str, Any]] = []
    body: list[list[tuple[str, str]]] = []
    used: set[str] = set()
    for index, (op_name, _) in enumerate(key):
        step_args: list[tuple[str, str]] = []
        op = ops.REGISTRY[op_name]
        given = {k for m in members for k in m.steps[index].kwargs}
        for arg in [p.name for p in op.params if p.name in given]:
            values = [_value(m.steps[index], arg) for m in members]
            if all(v == values[0] for v in values):
                if not _is_default(op_name, arg, values[0]):
                    step_args.append((arg, format_value(values[0])))
                continue
            if arg == "padding" and _padding_is_half_kernel(members, index):
                kernel_param = next((p for p in params if p[1] == index and p[2] == "kernel"), None)
                if kernel_param is not None:
                    step_args.append((arg, f"{kernel_param[0]} // 2"))
                    continue
            param = _SHORT_PARAMS.get(arg, arg)
            if param in used:
                param = f"{param}{index + 1}"
            used.add(param)
            common, count = Counter(map(_hashable, values)).most_common(1)[0]
            required = arg in _SHORT_PARAMS or count * 2 <= len(values)
            default = ops.REQUIRED if required else _unhashable(common)
            params.append((param, index, arg, default))
            step_args.append((arg, param))
        body.append(step_args)
    # Required parameters first (they are positional), then the keyword ones, each in discovery order.
    params.sort(key=lambda p: p[3] is not ops.REQUIRED)
    return _Template(name, key, params, body)


def _padding_is_half_kernel(members: list[Unit], index: int) -> bool:
    for member in members:
        kernel = _value(member.steps[index], "kernel")
        if not isinstance(kernel, int) or _value(member.steps[index], "padding") != kernel // 2:
            return False
    return True


def _value(step: Step, arg: str) -> Any:
    """An argument as given, or the op's default when the step leaves it out."""
    args = step.kwargs
    if arg in args:
        return args[arg]
    spec = ops.REGISTRY[step.op].param(arg)
    return None if spec is None or spec.required else spec.default


def _is_default(op_name: str, arg: str, value: Any) -> bool:
    """Whether writing ``arg=value`` changes nothing (``stride`` of a pool equal to its kernel included)."""
    op = ops.REGISTRY[op_name]
    spec = op.param(arg)
    if spec is None or spec.required:
        return False
    if spec.default is None:
        return value is None
    try:
        return bool(ops.coerce(spec, value) == ops.coerce(spec, spec.default))
    except OpError:
        return False


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _unhashable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_NAME = re.compile(r"[^A-Za-z0-9_]+")


def _identifier(text: str, taken: set[str], fallback: str) -> str:
    name = _NAME.sub("_", text).strip("_") or fallback
    if name[0].isdigit():
        name = f"t{name}"
    reserved = set(ops.REGISTRY) | {"in", "return", "defaults", "block", "network", "import", "shortcut"}
    if name in reserved or keyword.iskeyword(name):
        name = f"{name}_t"
    base, suffix = name, 2
    while name in taken:
        name = f"{base}_{suffix}"
        suffix += 1
    taken.add(name)
    return name


def network_name(text: str) -> str:
    """A network name from a file stem: ``yolov3-tiny`` -> ``Yolov3Tiny``."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", text) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Imported"
    return name if not name[0].isdigit() else f"Net{name}"


def resolve_aliases(graph: Graph) -> None:
    """Redirect references to pass-through units (no steps, one input) to what they pass through."""
    target: dict[int, int] = {INPUT: INPUT}
    for index, unit in enumerate(graph.units):
        unit.inputs = [target[i] for i in unit.inputs]
        is_alias = not unit.steps and unit.merge is None and unit.gap is None and len(unit.inputs) == 1
        target[index] = unit.inputs[0] if is_alias else index
    graph.outputs = [target[i] for i in graph.output_ids()]


def write_spec(graph: Graph, *, find_blocks: bool = True) -> str:
    """Render the graph as a ``.cnn`` spec. Call :func:`resolve_aliases` and :func:`infer_shapes` first.

    ``find_blocks`` also turns recurring runs of layers into parametric blocks (see :mod:`.blocks`)."""
    aliases = {
        i for i, u in enumerate(graph.units) if not u.steps and u.merge is None and u.gap is None and u.inputs
    }
    live = [i for i in range(len(graph.units)) if i not in aliases]
    units = [graph.units[i] for i in live]
    templates = _make_templates(units)
    defaults = _shared_defaults(units, templates)
    defs = {
        key: BlockDef(t.name, [(n, d) for n, _, _, d in t.params], [t.body_text()])
        for key, t in templates.items()
    }
    op_calls: dict[tuple[str, tuple[str, ...]], BlockDef] = {}
    position = {unit_id: k for k, unit_id in enumerate(live)}
    position[INPUT] = -1
    stmts: list[Stmt] = []
    for unit in units:
        template = templates.get(_template_key(unit))
        if unit.gap is not None:
            block, chain, values = None, "identity", ()
        elif template is not None:
            block, chain, values = defs[_template_key(unit)], "", template.values(unit)
        elif len(unit.steps) == 1:
            # One op: a call whose arguments can become block parameters when runs of layers are mined.
            step = unit.steps[0]
            given = [(k, v) for k, v in step.args if defaults.get(step.op, {}).get(k, _MISSING) != v]
            block, chain = _op_call(step.op, tuple(k for k, _ in given), op_calls), ""
            values = tuple(dict(given)[name] for name, _ in block.params)
        else:
            block, values = None, ()
            chain = " -> ".join(
                format_call(s.op, [(k, v) for k, v in s.args if defaults.get(s.op, {}).get(k, _MISSING) != v])
                for s in unit.steps
            )
        line = unit.location.line
        stmts.append(
            Stmt(
                block,
                chain,
                values,
                unit.merge,
                tuple(position[i] for i in unit.inputs),
                unit.shape,
                _comment(unit),
                (line, line),
                unit.name,
                scopes={path: max(1, len(unit.steps)) for path in unit.scope},
                size=max(1, len(unit.steps)),
            )
        )
    outputs = [position[o] for o in (graph.outputs or [live[-1]])]
    taken: set[str] = {graph.input_name, *(t.name for t in templates.values())}
    mined: list[BlockDef] = []
    if find_blocks:
        totals: dict[str, int] = {}
        for stmt in stmts:
            for path, count in stmt.scopes.items():
                totals[path] = totals.get(path, 0) + count
        stmts, outputs, mined = mine_blocks(stmts, outputs, taken, _scope_namer(graph), totals)
    return _render(graph, stmts, outputs, defaults, [*defs.values(), *mined])


_CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict"})


def _op_call(
    op_name: str, given: tuple[str, ...], cache: dict[tuple[str, tuple[str, ...]], BlockDef]
) -> BlockDef:
    """An op called with these arguments, as a call the miner can parametrise (it has no definition to write)."""
    key = (op_name, given)
    if key not in cache:
        op = ops.REGISTRY[op_name]
        params = [(p.name, ops.REQUIRED if p.required else p.default) for p in op.params if p.name in given]
        params += [(name, ops.REQUIRED) for name in given if op.param(name) is None]
        cache[key] = BlockDef(op_name, params, is_op=True)
    return cache[key]


def _scope_namer(graph: Graph) -> Callable[[list[str]], str | None]:
    """Name a block after the source module class every occurrence is one instance of (``Bottleneck``)."""

    def name(paths: list[str]) -> str | None:
        found: set[str] = set()
        for path in paths:
            cls = graph.scope_classes.get(path, "")
            if not cls:
                return None
            if cls in _CONTAINERS:  # Sequential: the attribute's name says more ("layer1" -> "Layer")
                cls = re.sub(r"[^A-Za-z]", "", path.replace("/", ".").rsplit(".", 1)[-1]).title()
            found.add(cls)
        return found.pop() if len(found) == 1 and found != {""} else None

    return name


def _render(
    graph: Graph,
    stmts: list[Stmt],
    outputs: list[int],
    defaults: dict[str, dict[str, Any]],
    blocks: list[BlockDef],
) -> str:
    users: dict[int, list[int]] = {}
    for index, stmt in enumerate(stmts):
        for source in stmt.inputs:
            users.setdefault(source, []).append(index)
    last = len(stmts) - 1
    taken: set[str] = {graph.input_name, *(b.name for b in blocks)}
    names: dict[int, str] = {-1: graph.input_name}
    for index, stmt in enumerate(stmts):
        follow = users.get(index, [])
        needs_name = any(
            c != index + 1 or stmts[c].merge is not None or len(stmts[c].inputs) > 1 for c in follow
        )
        needs_name = needs_name or (index in outputs and (len(outputs) > 1 or index != last))
        if needs_name:
            names[index] = _identifier(stmt.name_hint or f"l{index}", taken, f"l{index}")
    body = []
    for index, stmt in enumerate(stmts):
        code = statement_text(stmt, index, names)
        source = stmt.inputs[0] if stmt.inputs else -1
        before = stmts[source].shape if source != -1 else graph.input_shape
        if stmt.shape and len(stmt.shape) == 3 and (len(before) != 3 or before[1:] != stmt.shape[1:]):
            code += " : [" + ", ".join(str(d) for d in stmt.shape) + "]"
        comment = stmt.label
        first, final = stmt.lines
        if first is not None:
            comment += f" (line {first})" if first == final else f" (lines {first}-{final})"
        body.append(_align(code, comment))
    if outputs != [last]:
        body.append("return " + ", ".join(names[o] for o in outputs))
    header = [f"# Imported by `cnndsl import` from {graph.source}.", *[f"# {note}" for note in graph.notes]]
    parts = ["\n".join(header)]
    if defaults:
        parts.append(
            "defaults " + ", ".join(format_call(op, sorted(args.items())) for op, args in defaults.items())
        )
    parts += [b.definition() for b in blocks if not b.is_op]
    shape = ", ".join(str(d) for d in graph.input_shape)
    parts.append(
        f"network {graph.name}({graph.input_name}: [{shape}]) {{\n"
        + "\n".join("    " + b for b in body)
        + "\n}"
    )
    return "\n\n".join(parts) + "\n"


def _shared_defaults(
    units: list[Unit], templates: dict[tuple[tuple[str, tuple[str, ...]], ...], _Template]
) -> dict[str, dict[str, Any]]:
    """Arguments that every written (non-block) call of an op gives with one value, on two or more calls."""
    written: dict[str, list[dict[str, Any]]] = {}
    for unit in units:
        if _template_key(unit) in templates:
            continue
        for step in unit.steps:
            written.setdefault(step.op, []).append(step.kwargs)
    shared: dict[str, dict[str, Any]] = {}
    for op_name, calls in written.items():
        if len(calls) < 2:
            continue
        required = {p.name for p in ops.REGISTRY[op_name].params if p.required}
        common = {
            k: v
            for k, v in calls[0].items()
            if k not in required
            and not _is_default(op_name, k, v)
            and all(k in c and c[k] == v for c in calls[1:])
        }
        if common:
            shared[op_name] = common
    return shared


_MISSING = object()


def _comment(unit: Unit) -> str:
    text = unit.label or unit.kind
    if unit.gap is not None:
        text += f" -- NOT IMPORTED: {unit.gap}"
    return text


def _align(code: str, comment: str) -> str:
    return f"{code.ljust(_COMMENT_COLUMN)}  # {comment}" if comment else code
