"""``cnndsl explain``: each layer's formulas with the numbers filled in, for learners.

For a convolution: the output size ``floor((H + 2p − d(k−1) − 1)/s) + 1``, the params ``(k·k·Cin/g + 1)·Cout``,
the MACs, the receptive-field recurrence, and the dense layer the convolution replaces (local connectivity and weight
sharing, the comparison CNN courses teach). Other ops get the parts that apply to them.

The formulas are written out here to teach them, but every figure shown as the result comes from the op registry
(the same numbers ``cnndsl summary`` prints). Each explanation also records :class:`Check` pairs (the value the
formula gives, the value of the registry or shape rule) so the tests can prove the two always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .analysis import AnalysisError, LayerCost, ReceptiveField, analyse_layers, conventions, format_count
from .diagnostics import did_you_mean
from .network import Network, Node
from .ops import REGISTRY, RFRule, fmt_shape, numel

AXES = ("H", "W")


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
    fields: dict[int, ReceptiveField] = {layer.id: layer.receptive_field for layer in layers}
    for node in network.nodes:
        if node.op == "input":
            extent = tuple(node.shape[1:]) if len(node.shape) == 3 else tuple(node.shape)
            fields[node.id] = ReceptiveField.identity(extent)
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
        out += ["", item.title, f"  at {item.location}", *("  " + line for line in item.lines)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ layers ---


def _explain_layer(node: Node, layer: LayerCost, fields: dict[int, ReceptiveField]) -> Explanation:
    op = REGISTRY.get(node.op)
    if op is None:
        raise AnalysisError(f"{node.path}: op '{node.op}' has no registry entry")
    lines: list[str] = []
    checks: list[Check] = []
    in_shapes = [fmt_shape(s) for s in node.input_shapes]
    lines.append(f"{op.doc}")
    lines.append(f"input {' | '.join(in_shapes)} -> output {fmt_shape(node.shape)}")
    rule = op.rf(list(node.input_shapes), node.shape, node.args)
    if "kernel" in node.args and rule is not None and len(node.input_shapes[0]) == 3:
        _output_size(node, rule, lines, checks)
    if op.family == "conv":
        _conv_costs(node, layer, lines, checks)
    elif op.family == "linear":
        _linear_costs(node, layer, lines, checks)
    elif op.family == "norm" and layer.params:
        # Batchnorm: a scale and a shift per channel, plus running statistics that are not trained.
        channels = node.input_shapes[0][0]
        lines.append(
            f"Params: 2·C (scale γ and shift β per channel) = 2·{channels} = {format_count(layer.params)}"
        )
        checks.append(Check("params", 2 * channels, layer.params))
        lines.append(
            f"Buffers (not trained): 2·C + 1 (running mean, running variance, batch counter) = 2·{channels} + 1 "
            f"= {format_count(layer.buffers)}"
        )
        checks.append(Check("buffers", 2 * channels + 1, layer.buffers))
        lines.append("MACs: 0 (only conv and linear count)")
        checks.append(Check("macs", 0, layer.macs))
    else:
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
    if op.family == "conv":
        _dense_comparison(node, layer, lines, checks)
    elif op.family == "linear":
        lines.append(
            "A linear layer is the dense layer itself: every input feature connects to every output, "
            "with no weight sharing."
        )
    location = f"{node.span.file}:{node.span.line}:{node.span.column}"
    if node.frames:
        location += f", in {node.frames[-1].call}"
    return Explanation(node.path, f"{node.path} — {layer.label}", location, tuple(lines), tuple(checks))


def _output_size(node: Node, rule: RFRule, lines: list[str], checks: list[Check]) -> None:
    args = node.args
    ceil = bool(args.get("ceil", False))
    dilation = args.get("dilation", (1, 1))
    name = "ceil" if ceil else "floor"
    lines.append(f"Output size per axis: {name}((H + 2p − d(k−1) − 1)/s) + 1")
    if ceil:
        lines.append(
            "  (ceil mode: a last window that would start in the right padding is dropped, as in torch)"
        )
    terms = [
        (
            node.input_shapes[0][axis + 1],
            args["kernel"][axis],
            args["stride"][axis],
            rule.padding[axis],
            dilation[axis],
        )
        for axis in range(2)
    ]
    shown = [("H and W", 0)] if terms[0] == terms[1] else [("H", 0), ("W", 1)]
    for label, axis in shown:
        size, k, s, p, d = terms[axis]
        span = size + 2 * p - d * (k - 1) - 1
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= size + p:
            out -= 1
        lines.append(
            f"  {label}: {name}(({size} + 2·{p} − {d}·({k}−1) − 1)/{s}) + 1 = {name}({span}/{s}) + 1 = {out}"
        )
        for index in (0, 1) if label == "H and W" else (axis,):
            checks.append(Check(f"output {AXES[index]}", out, node.shape[index + 1]))


def _conv_costs(node: Node, layer: LayerCost, lines: list[str], checks: list[Check]) -> None:
    args = node.args
    cin, cout, groups = node.input_shapes[0][0], node.shape[0], args["groups"]
    kh, kw = args["kernel"]
    bias = 1 if args["bias"] else 0
    per_output = kh * kw * (cin // groups)
    params = (per_output + bias) * cout
    note = "" if bias else "   (bias=false: + 0)"
    lines.append(
        f"Params: (kh·kw·Cin/g + bias)·Cout = ({kh}·{kw}·{cin}/{groups} + {bias})·{cout} "
        f"= {format_count(layer.params)}{note}"
    )
    checks.append(Check("params", params, layer.params))
    _, oh, ow = node.shape
    macs = oh * ow * cout * per_output
    lines.append(
        f"MACs: Hout·Wout·Cout · kh·kw·Cin/g = {oh}·{ow}·{cout} · {kh}·{kw}·{cin}/{groups} "
        f"= {format_count(oh * ow * cout)} · {format_count(per_output)} = {format_count(layer.macs)}"
    )
    checks.append(Check("macs", macs, layer.macs))


def _linear_costs(node: Node, layer: LayerCost, lines: list[str], checks: list[Check]) -> None:
    fin, fout = node.input_shapes[0][0], node.shape[0]
    bias = 1 if node.args["bias"] else 0
    lines.append(
        f"Params: (in + bias)·out = ({fin} + {bias})·{fout} = {format_count(layer.params)}"
        + ("" if bias else "   (bias=false: + 0)")
    )
    checks.append(Check("params", (fin + bias) * fout, layer.params))
    lines.append(f"MACs: in·out = {fin}·{fout} = {format_count(layer.macs)}")
    checks.append(Check("macs", fin * fout, layer.macs))


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
    sources = [fields[i] for i in node.inputs]
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


def _dense_comparison(node: Node, layer: LayerCost, lines: list[str], checks: list[Check]) -> None:
    inputs, outputs = numel(node.input_shapes[0]), numel(node.shape)
    dense_weights = inputs * outputs
    dense_params = dense_weights + outputs
    cin, cout, groups = node.input_shapes[0][0], node.shape[0], node.args["groups"]
    kh, kw = node.args["kernel"]
    weights = kh * kw * (cin // groups) * cout
    lines.append(
        f"Versus a dense layer from all {format_count(inputs)} input values to all {format_count(outputs)} outputs:"
    )
    lines.append(
        f"  dense: {format_count(inputs)}·{format_count(outputs)} = {format_count(dense_weights)} weights "
        f"+ {format_count(outputs)} biases"
    )
    lines.append(f"         = {format_count(dense_params)} params, {format_count(dense_weights)} MACs")
    lines.append(
        f"  conv:  {kh}·{kw}·{cin // groups}·{cout} = {format_count(weights)} weights, "
        f"{format_count(layer.params)} params, {format_count(layer.macs)} MACs"
    )
    checks.append(Check("conv weights", weights, layer.params - (cout if node.args["bias"] else 0)))
    per_output = kh * kw * (cin // groups)
    lines.append(
        f"  local connectivity: each output reads {format_count(per_output)} of the {format_count(inputs)} inputs "
        f"({_ratio(dense_weights, layer.macs)} fewer MACs)"
    )
    lines.append(
        f"  weight sharing: one filter bank serves all {format_count(node.shape[1] * node.shape[2])} positions "
        f"({_ratio(dense_params, layer.params)} fewer params)"
    )


def _ratio(big: int, small: int) -> str:
    if small == 0:
        return "infinitely"
    value = big / small
    return f"{value:,.0f}x" if value >= 10 else f"{value:.3g}x"


def dense_equivalent(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> tuple[int, int]:
    """(weights, biases) of the dense layer mapping every input value to every output value."""
    return math.prod(input_shape) * math.prod(output_shape), math.prod(output_shape)
