"""ONNX files to the importers' :class:`Graph`.

Nodes are read in the file's (topological) order; each maps to a registry op, its attributes read with ONNX's
defaults, its weights taken from the initializers (directly, through ``Identity`` or ``Constant`` nodes). A
``BatchNormalization`` becomes ``bn`` (ONNX's momentum is torch's ``1 - momentum``); exporters that fold batch
norm into the convolution (torch's dynamo exporter does) give convolutions with a bias, which is what the file
computes. Unsupported nodes are listed all at once with their node names.

Needs the ``onnx`` package (``pip install cnndsl[onnx]``) and numpy; imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .graph import (
    INPUT,
    Graph,
    ImportFailure,
    Location,
    Problem,
    Step,
    Unit,
    chain_concats,
    fuse_followers,
    network_name,
)

MAX_BYTES = 2 * 1024**3
"""protobuf's own limit for one message."""


@dataclass
class OnnxImport:
    """The graph, and per unit the arrays behind each step's weights in torch's order (None: no weights)."""

    graph: Graph
    weights: list[list[list[np.ndarray] | None]] = field(default_factory=list)


class _Unsupported(Exception):
    pass


def import_onnx(
    path: str | Path, *, input_shape: tuple[int, ...] | None = None, partial: bool = False
) -> OnnxImport:
    """Read an ONNX file into a :class:`Graph`. Raises :class:`ImportFailure`."""
    file = str(path)
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportFailure(
            [Problem(Location(file), "reading ONNX needs the onnx package: pip install 'cnndsl[onnx]'")]
        ) from None
    size = Path(path).stat().st_size
    if size > MAX_BYTES:
        raise ImportFailure(
            [Problem(Location(file), f"{size:,} bytes is past protobuf's 2 GiB limit", "limit")]
        )
    try:
        model = onnx.load(file)  # weights may live in FILE.data beside it (torch's dynamo exporter)
    except Exception as error:  # protobuf's DecodeError and friends: a truncated or foreign file
        raise ImportFailure([Problem(Location(file), f"not a readable ONNX model: {error}")]) from None
    graph_proto = model.graph
    constants: dict[str, np.ndarray] = {}
    for tensor in graph_proto.initializer:
        try:
            constants[tensor.name] = numpy_helper.to_array(tensor)
        except Exception as error:
            raise ImportFailure(
                [Problem(Location(file, None, tensor.name), f"unreadable initializer: {error}")]
            ) from None
    inputs = [i for i in graph_proto.input if i.name not in constants]
    if len(inputs) != 1:
        raise ImportFailure(
            [Problem(Location(file), f"{len(inputs)} graph inputs; one image input is supported")]
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    shape = tuple(input_shape) if input_shape is not None else tuple(d for d in dims[1:] if d is not None)
    if len(shape) != 3 or (input_shape is None and None in dims[1:]):
        raise ImportFailure(
            [
                Problem(
                    Location(file, None, inputs[0].name),
                    f"input shape {dims} is not [N, C, H, W]; give --input",
                )
            ]
        )
    graph = Graph(network_name(Path(file).stem), f"the ONNX file {Path(file).name}", "image", shape)
    reader = _Reader(file, graph, constants, partial)
    reader.values[inputs[0].name] = INPUT
    for name in [i for node in graph_proto.node for i in node.input] + [o.name for o in graph_proto.output]:
        reader.readers[name] = reader.readers.get(name, 0) + 1
    for node in graph_proto.node:
        reader.node(node)
    if reader.problems:
        raise ImportFailure(reader.problems)
    missing = [o.name for o in graph_proto.output if o.name not in reader.values]
    if missing:
        raise ImportFailure(
            [Problem(Location(file, None, missing[0]), "a graph output is not computed by any node")]
        )
    graph.outputs = [reader.values[o.name] for o in graph_proto.output]
    chain_concats(graph)
    fuse_followers(graph, reader.weights, graph.outputs)
    return OnnxImport(graph, reader.weights)


def _scope(name: str) -> tuple[str, ...]:
    """Exporters name nodes by module path (``/layer1/layer1.0/conv1/Conv``): the paths it runs inside."""
    parts = [p for p in name.split("/") if p][:-1]
    if len(parts) > 1 and not parts[-1].startswith(parts[-2] + "."):
        parts = parts[:-1]  # a leaf module's own name (conv1 in /layer1/layer1.0/conv1/Conv), not a scope
    return tuple("/".join(parts[: i + 1]) for i in range(len(parts)))


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Reader:
    def __init__(self, file: str, graph: Graph, constants: dict[str, np.ndarray], partial: bool) -> None:
        self.file = file
        self.graph = graph
        self.constants = constants
        self.partial = partial
        self.values: dict[str, int] = {}
        """Tensor name -> the unit computing it (INPUT for the graph input)."""
        self.weights: list[list[list[np.ndarray] | None]] = []
        self.problems: list[Problem] = []
        self.readers: dict[str, int] = {}
        """Tensor name -> how many node inputs and graph outputs read it (a pattern may fuse only single-use
        tensors)."""

    def location(self, node: Any) -> Location:
        return Location(self.file, None, f"node {node.name or node.output[0]} ({node.op_type})")

    def node(self, node: Any) -> None:
        if node.op_type == "Constant":
            attrs = _attributes(node)
            if "value" in attrs:
                from onnx import numpy_helper

                self.constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
            return
        if node.op_type == "Identity" and node.input[0] in self.constants:
            self.constants[node.output[0]] = self.constants[node.input[0]]
            return
        tensors = [name for name in node.input if name and name not in self.constants]
        missing = [name for name in tensors if name not in self.values]
        if missing:
            self.problems.append(
                Problem(self.location(node), f"reads {missing[0]!r}, which nothing computes")
            )
            return
        rule = RULES.get(node.op_type)
        try:
            if rule is None:
                raise _Unsupported(f"{node.op_type} has no cnndsl op")
            step, weights, merge = rule(self, node, _attributes(node))
        except _Unsupported as error:
            if not self.partial:
                self.problems.append(Problem(self.location(node), str(error), "unsupported"))
                return
            unit = Unit(self.location(node), node.op_type, [self.values[tensors[0]]] if tensors else [INPUT])
            unit.gap = str(error)
            unit.label = node.name or node.op_type
            self._add(node, unit, [None])
            return
        sources = [self.values[name] for name in tensors]
        if step is None and merge is None:
            self.values.setdefault(node.output[0], sources[0])  # unless the rule bound it (a fused pattern)
            return
        unit = Unit(self.location(node), node.op_type, sources, [step] if step else [], merge=merge)
        unit.label = node.name or node.op_type
        unit.scope = _scope(node.name)
        self._add(node, unit, [weights] if step else [])

    def _add(self, node: Any, unit: Unit, weights: list[list[np.ndarray] | None]) -> None:
        self.values[node.output[0]] = self.graph.add(unit)
        self.weights.append(weights)

    def const(self, node: Any, index: int, what: str) -> np.ndarray:
        if len(node.input) <= index or node.input[index] not in self.constants:
            raise _Unsupported(f"{node.op_type} whose {what} is computed, not a constant")
        return self.constants[node.input[index]]

    def shape_of(self, name: str) -> tuple[int, ...]:
        from .graph import infer_shapes

        unit = self.values[name]
        if unit == INPUT:
            return self.graph.input_shape
        infer_shapes(self.graph)
        return self.graph.units[unit].shape


Rule = Callable[[_Reader, Any, dict[str, Any]], tuple[Step | None, list[np.ndarray] | None, str | None]]


def _pads(attrs: dict[str, Any], node: Any) -> Any:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _Unsupported(f"{node.op_type} auto_pad={attrs['auto_pad']!r}")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Unsupported(f"{node.op_type} with uneven pads {pads}")
    return _pair(pads[:2])


def _f32(value: Any) -> float:
    """An attribute ONNX stores as float32, as the shortest decimal that is that float32 (0.001, not
    0.0010000000474974513): the value the exporter was given."""
    return float(str(np.float32(value)))


def _pair(values: Any) -> Any:
    values = list(values)
    return values[0] if values[0] == values[1] else values


def _conv(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, list[np.ndarray], None]:
    weight = reader.const(node, 1, "weight")
    if weight.ndim != 4:
        raise _Unsupported(f"Conv with a {weight.ndim}-d weight (2-d convolutions only)")
    bias = reader.const(node, 2, "bias") if len(node.input) > 2 and node.input[2] else None
    step = Step.of(
        "conv",
        channels=int(weight.shape[0]),
        kernel=_pair(attrs.get("kernel_shape", weight.shape[2:])),
        stride=_pair(attrs.get("strides", [1, 1])),
        padding=_pads(attrs, node),
        dilation=_pair(attrs.get("dilations", [1, 1])),
        groups=int(attrs.get("group", 1)),
        bias=bias is not None,
    )
    return step, [weight] + ([bias] if bias is not None else []), None


def _batch_norm(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, list[np.ndarray], None]:
    scale, shift = reader.const(node, 1, "scale"), reader.const(node, 2, "bias")
    mean, var = reader.const(node, 3, "mean"), reader.const(node, 4, "variance")
    eps = _f32(attrs.get("epsilon", 1e-5))
    momentum = round(1.0 - float(attrs.get("momentum", 0.9)), 6)
    step = Step.of("bn", eps=eps, momentum=momentum)
    return step, [scale, shift, mean, var], None


def _gemm(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, list[np.ndarray], None]:
    if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0:
        raise _Unsupported("Gemm other than x @ W^T + b")
    weight = reader.const(node, 1, "weight")
    bias = reader.const(node, 2, "bias") if len(node.input) > 2 and node.input[2] else None
    if bias is not None and attrs.get("beta", 1.0) != 1.0:
        raise _Unsupported("Gemm with beta != 1")
    step = Step.of("linear", features=int(weight.shape[0]), bias=bias is not None)
    return step, [weight] + ([bias] if bias is not None else []), None


def _pool(op: str) -> Rule:
    def rule(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
        args: dict[str, Any] = {
            "kernel": _pair(attrs["kernel_shape"]),
            "stride": _pair(attrs.get("strides", [1, 1])),
            "padding": _pads(attrs, node),
            "ceil": bool(attrs.get("ceil_mode", 0)),
        }
        if op == "maxpool":
            args["dilation"] = _pair(attrs.get("dilations", [1, 1]))
        else:
            args["count_pad"] = bool(attrs.get("count_include_pad", 0))
        return Step.of(op, **args), None, None

    return rule


def _fixed(op: str, **args: Any) -> Rule:
    return lambda reader, node, attrs: (Step.of(op, **args), None, None)


def _leaky(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    return Step.of("leaky_relu", slope=_f32(attrs.get("alpha", 0.01))), None, None


def _hard_sigmoid(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    if np.float32(alpha) != np.float32(1 / 6) or beta != 0.5:
        raise _Unsupported(f"HardSigmoid(alpha={_f32(alpha)}, beta={_f32(beta)}) (torch's is 1/6, 0.5)")
    return Step.of("hardsigmoid"), None, None


def _mul(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[None, None, str | None]:
    """``x * sigmoid(x)`` is SiLU, which ONNX before opset 22 has no node for (torch exports it so): one
    ``silu`` step, as the source wrote it (and computed: the same float64 result as torch's ``silu``)."""
    side = _sigmoid_side(reader, node)
    if side >= 0 and reader.readers.get(node.input[side], 0) == 1:
        unit_id = reader.values[node.input[side]]
        unit = reader.graph.units[unit_id]
        unit.steps = [Step.of("silu")]
        unit.kind, unit.label = "Sigmoid, Mul", f"{unit.label}, {node.name or node.op_type}"
        reader.values[node.output[0]] = unit_id  # bound here: the Mul adds no unit
        return None, None, None
    return _merge("mul")(reader, node, attrs)


def _sigmoid_side(reader: _Reader, node: Any) -> int:
    """Which input of a two-input Mul is a Sigmoid unit of the other input (-1: neither)."""
    for side in (0, 1):
        unit_id = reader.values.get(node.input[side])
        other = reader.values.get(node.input[1 - side])
        if unit_id is None or other is None or unit_id == INPUT:
            continue
        unit = reader.graph.units[unit_id]
        if [s.op for s in unit.steps] == ["sigmoid"] and unit.merge is None and unit.inputs == [other]:
            return side
    return -1


def _clip(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    low = attrs.get("min", reader.const(node, 1, "min") if len(node.input) > 1 and node.input[1] else None)
    high = attrs.get("max", reader.const(node, 2, "max") if len(node.input) > 2 and node.input[2] else None)
    bounds = (None if low is None else float(low), None if high is None else float(high))
    if bounds == (0.0, 6.0):
        return Step.of("relu6"), None, None
    if bounds == (0.0, None):
        return Step.of("relu"), None, None
    raise _Unsupported(f"Clip to {bounds}")


def _flatten(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step | None, None, None]:
    if int(attrs.get("axis", 1)) != 1:
        raise _Unsupported(f"Flatten axis={attrs.get('axis')}")
    if len(reader.shape_of(node.input[0])) == 1:
        return None, None, None
    return Step.of("flatten"), None, None


def _reshape(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step | None, None, None]:
    target = [int(v) for v in reader.const(node, 1, "shape").reshape(-1)]
    before = reader.shape_of(node.input[0])
    flat = int(np.prod(before))
    if len(target) == 2 and target[1] in (-1, flat) and target[0] in (-1, 0, 1):
        return (Step.of("flatten"), None, None) if len(before) != 1 else (None, None, None)
    raise _Unsupported(f"Reshape to {target} (only flattening is supported)")


def _reduce_mean(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1:
        axes = [int(a) for a in reader.const(node, 1, "axes").reshape(-1)]
    if sorted(axes or []) not in ([2, 3], [-2, -1]):
        raise _Unsupported(f"ReduceMean over {axes}")
    keep = bool(attrs.get("keepdims", 1))
    return (Step.of("adaptive_avgpool", size=1) if keep else Step.of("gap")), None, None


def _softmax(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    axis = int(attrs.get("axis", -1))
    rank = len(reader.shape_of(node.input[0])) + 1
    if axis not in (1, 1 - rank) and not (axis == -1 and rank == 2):
        raise _Unsupported(f"Softmax over axis {axis}")
    return Step.of("softmax"), None, None


def _merge(op: str) -> Rule:
    def rule(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[None, None, str | None]:
        if any(name in reader.constants for name in node.input):
            raise _Unsupported(f"{node.op_type} with a constant operand")
        if op == "concat" and len([n for n in node.input if n]) == 1:
            return None, None, None  # a concat of one tensor is that tensor
        if op == "concat" and int(attrs.get("axis", 0)) != 1:
            raise _Unsupported(f"Concat along axis {attrs.get('axis')}")
        return None, None, op

    return rule


def _dropout(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[None, None, None]:
    return None, None, None  # inference: the identity


def _lrn(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    step = Step.of(
        "lrn",
        size=int(attrs["size"]),
        alpha=_f32(attrs.get("alpha", 1e-4)),
        beta=_f32(attrs.get("beta", 0.75)),
        k=_f32(attrs.get("bias", 1.0)),
    )
    return step, None, None


RULES: dict[str, Rule] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "Gemm": _gemm,
    "MaxPool": _pool("maxpool"),
    "AveragePool": _pool("avgpool"),
    "GlobalAveragePool": _fixed("adaptive_avgpool", size=1),
    "GlobalMaxPool": _fixed("adaptive_maxpool", size=1),
    "Relu": _fixed("relu"),
    "Sigmoid": _fixed("sigmoid"),
    "Tanh": _fixed("tanh"),
    "HardSwish": _fixed("hardswish"),
    "LeakyRelu": _leaky,
    "HardSigmoid": _hard_sigmoid,
    "Clip": _clip,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "ReduceMean": _reduce_mean,
    "Softmax": _softmax,
    "Add": _merge("add"),
    "Sum": _merge("add"),
    "Mul": _mul,
    "Concat": _merge("concat"),
    "Dropout": _dropout,
    "Identity": _dropout,
    "LRN": _lrn,
}


def spec_state_dict(imported: OnnxImport, network: Any) -> dict[str, Any]:
    """The file's initializers under the spec's state_dict keys (torch tensors), in the spec's layer order."""
    import torch

    spec = network.to_torch().state_dict()
    groups: list[list[str]] = []
    owners: list[str] = []
    for key in spec:
        if key.endswith("num_batches_tracked"):
            continue
        owner = key.rsplit(".", 1)[0]
        if not owners or owners[-1] != owner:
            owners.append(owner)
            groups.append([])
        groups[-1].append(key)
    arrays = [w for unit in imported.weights for w in unit if w is not None]
    location = Location(imported.graph.source)
    if len(arrays) != len(groups):
        raise ImportFailure(
            [
                Problem(
                    location,
                    f"internal error: {len(arrays)} nodes hold weights, the spec {len(groups)} layers",
                )
            ]
        )
    state: dict[str, Any] = {
        k: torch.zeros_like(v) for k, v in spec.items() if k.endswith("num_batches_tracked")
    }
    for keys, tensors in zip(groups, arrays, strict=True):
        for key, array in zip(keys, tensors, strict=True):
            if tuple(array.shape) != tuple(spec[key].shape):
                raise ImportFailure(
                    [Problem(location, f"internal error: {key} is {list(array.shape)} in the file")]
                )
            state[key] = torch.from_numpy(np.array(array))
    return {key: state[key] for key in spec}
