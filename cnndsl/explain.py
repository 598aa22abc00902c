"""``cnndsl explain``: each layer's formulas with the numbers filled in, for learners.

For a convolution: the output size ``floor((H + 2p − d(k−1) − 1)/s) + 1``, the params ``(k·k·Cin/g + 1)·Cout``,
the MACs, the receptive-field recurrence, and the dense layer the convolution replaces (local connectivity and weight
sharing, the comparison CNN courses teach). Other ops get the parts that apply to them.

Each op's formulas are its registry entry's explain rule (:class:`cnndsl.ops.Formula`); this module lays them out
around the parts common to every op (shapes, FLOPs, the receptive-field recurrence). Every figure shown as the result
comes from the op registry (the same numbers ``cnndsl summary`` prints). Each explanation also records :class:`Check` pairs (the value the
formula gives, the value of the registry or shape rule) so the tests can prove the two always agree.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

from .analysis import (
    AnalysisError,
    LayerCost,
    ReceptiveField,
    analyse_layers,
    conventions,
    format_count,
    source_fields,
)
from .diagnostics import did_you_mean
from .network import Network, Node
from .ops import REGISTRY, Costs, RFRule, fmt_shape

AXES = ("H", "W")
DOC_WIDTH = 110


@dataclass(frozen=True)
class Check:
    """A formula's value next to the registry's (or the shape rule's) value for the same quantity."""

    what: str
    formula: float
    registry: float


@dataclass(frozen=True)
class Explanation:
    """The explanation of one layer: a title, where it was written, and the lines of text."""

    path: str
    title: str
    location: str
    """``file:line:column`` where the layer was written, and the block call it sits in."""
    lines: tuple[str, ...]
    checks: tuple[Check, ...]


def explain(network: Network, path: str | None = None) -> list[Explanation]:
    """Explain the layer at ``path``, every layer inside the block instance ``path`` (``Stage.1/Basic.0``), or every
    layer when ``path`` is None. Raises ``KeyError`` (with close matches) for an unknown path."""
    layers = analyse_layers(network)
    if path is not None:
        path = path.strip("/")
        chosen = [layer for layer in layers if layer.path == path or layer.path.startswith(path + "/")]
        if not chosen:
            raise KeyError(f"no layer or block instance '{path}'{did_you_mean(path, _known_paths(layers))}")
    else:
        chosen = layers
    fields = {layer.id: layer.receptive_field for layer in layers if not layer.constant}
    fields.update(source_fields(network))
    return [_explain_layer(network.nodes[layer.id], layer, fields) for layer in chosen]


def _known_paths(layers: list[LayerCost]) -> list[str]:
    paths = {layer.path for layer in layers}
    for layer in layers:
        paths.update(layer.frames)
    return sorted(paths)


def render_explanations(network: Network, explanations: list[Explanation]) -> str:
    """The explanations as text, after a short header that states the conventions."""
    notes = conventions()
    inputs = ", ".join(f"{t.name} {fmt_shape(t.shape)}" for t in network.inputs)
    out = [
        f"network {network.name}: input {inputs}; {len(explanations)} layer(s) explained",
        f"MACs: {notes['macs']}.",
        f"{notes['flops']}.",
        "Shapes are [C, H, W] per sample; p = padding, s = stride, d = dilation, g = groups, k = kernel.",
    ]
    for item in explanations:
        # A call with many arguments (a whole-network block such as RegNet(w1=..., ...)) wraps at 120 columns.
        where = textwrap.wrap(f"at {item.location}", 120, initial_indent="  ", subsequent_indent="      ")
        out += ["", item.title, *where]
        for line in item.lines:
            # Long formulas (a big layer's MACs) wrap too, continued under their start.
            indent = " " * (len(line) - len(line.lstrip()) + 6)
            out += textwrap.wrap("  " + line, 120, subsequent_indent=indent, drop_whitespace=False) or [""]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ layers ---


def _explain_layer(node: Node, layer: LayerCost, fields: dict[int, ReceptiveField]) -> Explanation:
    op = REGISTRY.get(node.op)
    if op is None:
        raise AnalysisError(f"{node.path}: op '{node.op}' has no registry entry")
    lines: list[str] = []
    checks: list[Check] = []
    in_shapes = [fmt_shape(s) for s in node.input_shapes]
    lines.extend(textwrap.wrap(op.doc, DOC_WIDTH))  # some ops' docs run long; explain output stays 120 wide
    lines.append(f"input {' | '.join(in_shapes)} -> output {fmt_shape(node.shape)}")
    rule = op.rf(list(node.input_shapes), node.shape, node.args)
    costs = Costs(layer.params, layer.buffers, layer.macs, layer.flops)
    formulas = op.explain(list(node.input_shapes), node.shape, node.args, costs) if op.explain else []

    def emit(section: str) -> bool:
        chosen = [f for f in formulas if f.section == section]
        for formula in chosen:
            lines.append(formula.text)
            checks.extend(Check(what, value, expected) for what, value, expected in formula.checks)
        return bool(chosen)

    emit("shape")
    if not emit("costs"):
        lines.append(
            f"Params: {format_count(layer.params)}" + ("" if layer.params else " (nothing to learn)")
        )
        if layer.buffers:
            lines.append(f"Buffers (not trained): {format_count(layer.buffers)}")
        lines.append(
            f"MACs: {format_count(layer.macs)}" + ("" if layer.macs else " (only conv and linear count)")
        )
    lines.append(f"FLOPs: {format_count(layer.flops)}   rule: {op.flops_rule}")
    _receptive_field(node, rule, layer, fields, lines, checks)
    emit("notes")
    location = f"{node.span.file}:{node.span.line}:{node.span.column}"
    if node.frames:
        location += f", in {node.frames[-1].call}"
    return Explanation(node.path, f"{node.path} — {layer.label}", location, tuple(lines), tuple(checks))


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _receptive_field(
    node: Node,
    rule: RFRule | None,
    layer: LayerCost,
    fields: dict[int, ReceptiveField],
    lines: list[str],
    checks: list[Check],
) -> None:
    rf = layer.receptive_field
    sources = [fields[i] for i in node.inputs if i in fields]
    if not sources:
        lines.append("Receptive field: none (a learned constant: it depends on no input)")
        return
    if rule is None:
        lines.append("Receptive field: global (each output depends on the whole input)")
        return
    if all(s.is_global for s in sources):
        lines.append("Receptive field: global (its input already depends on the whole input)")
        return
    if len(sources) > 1:
        lines.append(
            "Receptive field: union of the branches (the widest interval holding every branch's region)"
        )
        for index, branch in enumerate(sources, start=1):
            after = branch.apply(rule)
            lines.append(
                f"  branch {index}: {_fmt_field(after)}"
                if not after.is_global
                else f"  branch {index}: global"
            )
        lines.append(f"  = {_fmt_field(rf)}" if not rf.is_global else "  = global (a branch is global)")
        return
    source = sources[0]
    if tuple(rule.kernel) == (1, 1) and tuple(rule.stride) == (1.0, 1.0) and tuple(rule.padding) == (0, 0):
        lines.append(f"Receptive field: unchanged (pointwise): {_fmt_field(rf)}")
        for axis, label in enumerate(AXES[: len(rf.size)]):
            checks.append(Check(f"rf size {label}", source.size[axis], rf.size[axis]))
        return
    lines.append("Receptive field in input pixels (r = size, j = jump, t = start; k includes dilation):")
    shown = AXES[: len(rf.size)]
    if len(shown) == 2 and _axis_terms(rule, source, 0) == _axis_terms(rule, source, 1):
        shown = ("H and W",)
    for axis, label in enumerate(shown):
        k, s, p = rule.kernel[axis], rule.stride[axis], rule.padding[axis]
        r, j, t = source.size[axis], source.jump[axis], source.start[axis]
        size, jump, start = r + (k - 1) * j, j * s, t + ((k - 1) / 2 - p) * j
        lines.append(f"  {label}: r = r_in + (k−1)·j_in = {_fmt(r)} + ({k}−1)·{_fmt(j)} = {_fmt(size)}")
        lines.append(f"  {' ' * len(label)}  j = j_in·s = {_fmt(j)}·{_fmt(s)} = {_fmt(jump)}")
        lines.append(
            f"  {' ' * len(label)}  t = t_in + ((k−1)/2 − p)·j_in = {_fmt(t)} + ({_fmt((k - 1) / 2)} − {p})·{_fmt(j)}"
            f" = {_fmt(start)}"
        )
        for index in range(len(rf.size)) if label == "H and W" else (axis,):
            checks.append(Check(f"rf size {AXES[index]}", size, rf.size[index]))
            checks.append(Check(f"rf jump {AXES[index]}", jump, rf.jump[index]))
            checks.append(Check(f"rf start {AXES[index]}", start, rf.start[index]))


def _axis_terms(rule: RFRule, source: ReceptiveField, axis: int) -> tuple[float, ...]:
    return (
        rule.kernel[axis],
        rule.stride[axis],
        rule.padding[axis],
        source.size[axis],
        source.jump[axis],
        source.start[axis],
    )


def _fmt_field(rf: ReceptiveField) -> str:
    sizes = "x".join(_fmt(v) for v in rf.size)
    jumps = "x".join(_fmt(v) for v in rf.jump)
    starts = ", ".join(_fmt(v) for v in rf.start)
    return f"size {sizes}, jump {jumps}, start ({starts})"


def dense_equivalent(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> tuple[int, int]:
    """(weights, biases) of the dense layer mapping every input value to every output value."""
    return math.prod(input_shape) * math.prod(output_shape), math.prod(output_shape)
