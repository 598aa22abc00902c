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
    check_holder_count,
    fuse_followers,
    network_name,
    tensor_holders,
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
        self.views: dict[str, tuple[str, int]] = {}
        """Tensors that are a 5-d view of their source unit (bound to it) inside a channel shuffle, by stage."""
        self.gelu_origin: dict[str, str] = {}
        """For each tensor inside a GELU written out (Div, Erf, Add, Mul), the tensor x it is GELU of."""
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
        if node.op_type in FOLD and self.fold(node):
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
            if any(name in self.views for name in tensors) and node.op_type not in VIEW_RULES:
                raise _Unsupported(f"{node.op_type} of a 5-d view (only a channel shuffle is supported)")
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

    def fold(self, node: Any) -> bool:
        """Compute a node of shape arithmetic now, when its inputs are constants (or it is ``Shape`` of a tensor
        whose shape is known): exporters compute reshape targets and resize sizes from ``x.size()`` at run time,
        which for a file of fixed input shape is a constant."""
        attrs = _attributes(node)
        if node.op_type == "Shape":
            if node.input[0] not in self.values:
                return False
            full = np.array([1, *self.shape_of(node.input[0])], dtype=np.int64)  # the file's batch of one
            start, end = attrs.get("start", 0), attrs.get("end")
            self.constants[node.output[0]] = full[start:end]
            return True
        inputs = [name for name in node.input if name]
        if not inputs or any(name not in self.constants for name in inputs):
            return False
        args = [self.constants[name] for name in inputs]
        try:
            value = FOLD[node.op_type](args, attrs)
        except (ValueError, IndexError, TypeError, KeyError):
            return False  # not a shape computation this reader can follow: the rule reports the node
        self.constants[node.output[0]] = np.asarray(value)
        return True

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


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX's integer Div truncates
    return np.asarray(a / b)


def _slice(args: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    data, starts, ends = args[0], args[1], args[2]
    axes = args[3] if len(args) > 3 else np.arange(len(starts))
    steps = args[4] if len(args) > 4 else np.ones(len(starts), dtype=np.int64)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


def _axes(args: list[np.ndarray], attrs: dict[str, Any]) -> list[int]:
    return sorted(int(a) for a in (args[1] if len(args) > 1 else attrs["axes"]))


def _unsqueeze(args: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    value = args[0]
    for axis in _axes(args, attrs):
        value = np.expand_dims(value, axis)
    return value


def _cast(args: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    from onnx import helper

    return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))


FOLD: dict[str, Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]] = {
    "Shape": lambda args, attrs: args[0],  # handled by _Reader.fold (it reads a tensor's shape)
    "Gather": lambda args, attrs: np.take(args[0], args[1], axis=int(attrs.get("axis", 0))),
    "Unsqueeze": _unsqueeze,
    "Squeeze": lambda args, attrs: np.squeeze(args[0], axis=tuple(_axes(args, attrs))),
    "Concat": lambda args, attrs: np.concatenate([np.atleast_1d(a) for a in args], axis=int(attrs["axis"])),
    "Slice": _slice,
    "Cast": _cast,
    "Transpose": lambda args, attrs: np.transpose(args[0], attrs.get("perm")),
    "Add": lambda args, attrs: args[0] + args[1],
    "Sub": lambda args, attrs: args[0] - args[1],
    "Mul": lambda args, attrs: args[0] * args[1],
    "Div": lambda args, attrs: _divide(args[0], args[1]),
}
"""Shape arithmetic on constants, computed while reading (numpy, ONNX's semantics)."""


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


def _mul(
    reader: _Reader, node: Any, attrs: dict[str, Any]
) -> tuple[Step | None, list[np.ndarray] | None, str | None]:
    """``x * sigmoid(x)`` is SiLU, which ONNX's opset 17 has no node for (torch exports it so): one
    ``silu`` step, as the source wrote it (and computed: the same float64 result as torch's ``silu``)."""
    if _gelu_stage(reader, node, None, "gelu4", "gelu3"):
        return None, None, None
    if _gelu_stage(reader, node, 0.5, "gelu5", "gelu4"):
        # The last step: a unit ``gelu`` reading x (the Mul's input is bound to x's unit), channels-last if x is.
        origin = reader.gelu_origin[node.output[0]]
        del reader.views[node.output[0]], reader.values[node.output[0]]
        if reader.views.get(origin, ("", 0))[0] == "nhwc":
            _channels_last(reader, node)
        return Step.of("gelu"), None, None
    scale = [reader.constants[name] for name in node.input if name in reader.constants]
    tensors = [name for name in node.input if name not in reader.constants]
    if len(scale) == 1 and len(tensors) == 1 and tensors[0] not in reader.views:
        weight = scale[0]
        if (
            weight.ndim == 3
            and weight.shape[1:] == (1, 1)
            and weight.shape[0] == reader.shape_of(tensors[0])[0]
        ):
            init = _f32(weight.reshape(-1)[0])
            return Step.of("channel_scale", init=init), [weight], None
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
    view = reader.views.get(node.input[0])
    if len(target) == 2 and target[1] in (-1, flat) and target[0] in (-1, 0, 1) and view is None:
        return (Step.of("flatten"), None, None) if len(before) != 1 else (None, None, None)
    if len(before) == 3 and len(target) == 5 and view is None:
        c, h, w = before
        if target[1] > 0 and target[1] * target[2] == c and target[3:] == [h, w]:
            reader.views[node.output[0]] = ("grouped", target[1])  # the first step of a channel shuffle
            return None, None, None
    if view is not None and view[0] == "shuffled" and len(target) == 4 and target[1:] == list(before):
        return Step.of("channel_shuffle", groups=view[1]), None, None
    raise _Unsupported(f"Reshape to {target} (only flattening and channel shuffles are supported)")


def _transpose(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[None, None, None]:
    """The middle step of a channel shuffle (ShuffleNet): ``[N, g, C/g, H, W]`` with its two group axes swapped;
    or NCHW <-> NHWC around channel-wise layers (ConvNeXt), where the NHWC tensor stays bound to its unit."""
    view = reader.views.get(node.input[0])
    perm = list(attrs.get("perm", []))
    if view is not None and view[0] == "grouped" and perm == [0, 2, 1, 3, 4]:
        reader.views[node.output[0]] = ("shuffled", view[1])
        return None, None, None
    if view is None and perm == [0, 2, 3, 1] and len(reader.shape_of(node.input[0])) == 3:
        reader.views[node.output[0]] = ("nhwc", 0)
        return None, None, None
    if view is not None and view[0] == "nhwc" and perm == [0, 3, 1, 2]:
        return None, None, None
    raise _Unsupported(f"Transpose perm={perm} (only within a channel shuffle, or to channels-last and back)")


def _channels_last(reader: _Reader, node: Any) -> None:
    """The output of a channel-wise layer on a channels-last tensor is channels-last too."""
    reader.views[node.output[0]] = ("nhwc", 0)


def _layer_norm(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, list[np.ndarray], None]:
    """``LayerNormalization`` over the last axis of a channels-last tensor: ``layer_norm`` over channels."""
    view = reader.views.get(node.input[0])
    if view is None or view[0] != "nhwc" or int(attrs.get("axis", -1)) not in (-1, 3):
        raise _Unsupported("LayerNormalization other than over the channels of a channels-last tensor")
    scale = reader.const(node, 1, "scale")
    bias = reader.const(node, 2, "bias") if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
    _channels_last(reader, node)
    return Step.of("layer_norm", eps=_f32(attrs.get("epsilon", 1e-5))), [scale, bias], None


def _matmul(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, list[np.ndarray], None]:
    """``x @ W`` on a channels-last tensor, W a constant ``[C, F]``: ``channel_linear(F)`` (torch's weight is
    ``W^T``); an ``Add`` of a constant ``[F]`` right after it becomes its bias."""
    view = reader.views.get(node.input[0])
    weight = reader.const(node, 1, "weight")
    if view is None or view[0] != "nhwc" or weight.ndim != 2:
        raise _Unsupported("MatMul other than a linear map over the channels of a channels-last tensor")
    _channels_last(reader, node)
    return Step.of("channel_linear", features=int(weight.shape[1]), bias=False), [weight.T.copy()], None


def _gelu_stage(reader: _Reader, node: Any, value: float | None, stage: str, before: str | None) -> bool:
    """One step of GELU as torch writes it, ``x * 0.5 * (1 + erf(x / sqrt(2)))``: Div, Erf, Add, Mul, Mul.

    Each intermediate tensor is bound to ``x``'s unit and marked with its stage; the last step writes ``gelu``.
    Returns whether ``node`` is the step ``stage`` (after ``before``) with the constant ``value``."""
    tensors = [name for name in node.input if name not in reader.constants]
    constants = [reader.constants[name] for name in node.input if name in reader.constants]
    if before is None:
        source = tensors[0] if len(tensors) == 1 else None
        if source is None or reader.views.get(source, ("nhwc", 0))[0] != "nhwc":
            return False
        origin = source
    else:
        views = [reader.views.get(name) for name in tensors]
        staged = [v for v in views if v is not None and v[0] == before]
        if len(staged) != 1:
            return False
        origin = reader.gelu_origin[tensors[views.index(staged[0])]]
        others = [t for t, v in zip(tensors, views, strict=True) if v is None or v[0] != before]
        if stage == "gelu4" and others != [origin]:
            return False
        if stage != "gelu4" and others:
            return False
    if value is not None and (len(constants) != 1 or constants[0].size != 1):
        return False
    if value is not None and abs(float(constants[0].reshape(-1)[0]) - value) > 1e-6 * abs(value):
        return False
    reader.views[node.output[0]] = (stage, 0)
    reader.gelu_origin[node.output[0]] = origin
    reader.values[node.output[0]] = reader.values[origin]
    return True


def _gelu(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    """ONNX's own ``Gelu`` node (opset 20; torch's dynamo exporter writes it), channels-last where its input is."""
    if _text(attrs.get("approximate", "none")) != "none":
        raise _Unsupported(f"Gelu approximate={_text(attrs['approximate'])}")
    if reader.views.get(node.input[0], ("", 0))[0] == "nhwc":
        _channels_last(reader, node)
    return Step.of("gelu"), None, None


def _div(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[None, None, None]:
    if _gelu_stage(reader, node, float(np.sqrt(2.0)), "gelu1", None):
        return None, None, None
    raise _Unsupported("Div other than GELU's x / sqrt(2)")


def _erf(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[None, None, None]:
    if _gelu_stage(reader, node, None, "gelu2", "gelu1"):
        return None, None, None
    raise _Unsupported("Erf other than in GELU")


def _add(
    reader: _Reader, node: Any, attrs: dict[str, Any]
) -> tuple[Step | None, list[np.ndarray] | None, str | None]:
    """A merge of tensors; or GELU's ``erf(...) + 1``; or a constant bias right after a channels-last MatMul."""
    if _gelu_stage(reader, node, 1.0, "gelu3", "gelu2"):
        return None, None, None
    tensors = [name for name in node.input if name not in reader.constants]
    constants = [reader.constants[name] for name in node.input if name in reader.constants]
    if len(tensors) == 1 and len(constants) == 1 and reader.views.get(tensors[0], ("", 0))[0] == "nhwc":
        unit_id = reader.values[tensors[0]]
        unit = reader.graph.units[unit_id]
        last = unit.steps[-1] if unit_id != INPUT and unit.steps else None
        bias = constants[0].reshape(-1)
        if (
            last is not None
            and last.op == "channel_linear"
            and not last.kwargs["bias"]
            and reader.readers.get(tensors[0], 0) == 1
            and bias.shape == (last.kwargs["features"],)
        ):
            unit.steps[-1] = Step.of("channel_linear", features=last.kwargs["features"], bias=True)
            weights = reader.weights[unit_id][-1]
            assert weights is not None
            weights.append(bias)
            reader.values[node.output[0]] = unit_id
            _channels_last(reader, node)
            return None, None, None
    return _merge("add")(reader, node, attrs)


def _split(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[None, None, None]:
    """``Split`` of the channels into equal parts (``x.chunk(n, dim=1)``, torch's dynamo exporter): one
    ``chunk(n, i)`` unit per output."""
    c = reader.shape_of(node.input[0])[0]
    outputs = list(node.output)
    if len(node.input) > 1 and node.input[1]:
        sizes = [int(v) for v in reader.const(node, 1, "split").reshape(-1)]
    elif "split" in attrs:
        sizes = [int(v) for v in attrs["split"]]
    else:
        sizes = [-(-c // len(outputs))] * len(outputs)
    if int(attrs.get("axis", 0)) != 1 or len(set(sizes)) != 1 or sum(sizes) != c:
        raise _Unsupported(
            f"Split into {sizes} along axis {attrs.get('axis', 0)} (only equal parts of channels)"
        )
    source = reader.values[node.input[0]]
    for index, name in enumerate(outputs):
        if not name:
            continue
        unit = Unit(
            reader.location(node), node.op_type, [source], [Step.of("chunk", chunks=len(sizes), index=index)]
        )
        unit.label = f"{node.name or node.op_type}[{index}]"
        unit.scope = _scope(node.name)
        reader.values[name] = reader.graph.add(unit)
        reader.weights.append([None])
    return None, None, None


def _slice_tensor(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    """One part of a tensor split evenly along channels (``x.chunk(n, dim=1)[k]``): ``chunk(n, k)``."""
    c = reader.shape_of(node.input[0])[0]
    starts, ends = reader.const(node, 1, "starts").reshape(-1), reader.const(node, 2, "ends").reshape(-1)
    axes = reader.const(node, 3, "axes").reshape(-1) if len(node.input) > 3 and node.input[3] else [0]
    steps = reader.const(node, 4, "steps").reshape(-1) if len(node.input) > 4 and node.input[4] else [1]
    if len(starts) == 1 and int(axes[0]) == 1 and int(steps[0]) == 1:
        start, end = max(0, int(starts[0])), min(c, int(ends[0]))
        size = end - start
        if size > 0 and c % size == 0 and start % size == 0:
            return Step.of("chunk", chunks=c // size, index=start // size), None, None
    raise _Unsupported(
        f"Slice {list(starts)}:{list(ends)} along axes {list(axes)} (only an even part of the channels)"
    )


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
        return None, None, op

    return rule


def _concat(
    reader: _Reader, node: Any, attrs: dict[str, Any]
) -> tuple[Step | None, list[np.ndarray] | None, str | None]:
    merged = _merge("concat")(reader, node, attrs)  # refuses constant operands first
    if len([n for n in node.input if n]) == 1:
        return None, None, None  # a concat of one tensor is that tensor
    if int(attrs.get("axis", 0)) != 1:
        raise _Unsupported(f"Concat along axis {attrs.get('axis')}")
    return merged


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _resize(reader: _Reader, node: Any, attrs: dict[str, Any]) -> tuple[Step, None, None]:
    """``Resize`` as torch writes ``F.interpolate``: bilinear (``pytorch_half_pixel`` or ``half_pixel``, or
    ``align_corners``) or nearest (``asymmetric``, ``floor``), to a constant size or scale."""
    c, h, w = reader.shape_of(node.input[0])
    mode = _text(attrs.get("mode", "nearest"))
    transform = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    if len(node.input) > 3 and node.input[3]:
        size = [int(v) for v in reader.const(node, 3, "sizes").reshape(-1)[2:]]
    else:
        scales = [float(v) for v in reader.const(node, 2, "scales").reshape(-1)[2:]]
        size = [int(np.floor(h * scales[0])), int(np.floor(w * scales[1]))]
    if len(size) != 2:
        raise _Unsupported(f"Resize to {size} (a height and a width)")
    if mode == "linear" and transform in ("pytorch_half_pixel", "half_pixel", "align_corners"):
        step = Step.of(
            "resize", size=_pair(size), mode="bilinear", align_corners=transform == "align_corners"
        )
    elif mode == "nearest" and transform == "asymmetric" and _text(attrs.get("nearest_mode", "")) == "floor":
        step = Step.of("resize", size=_pair(size), mode="nearest")
    else:
        raise _Unsupported(f"Resize mode={mode} coordinate_transformation_mode={transform}")
    return step, None, None


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
    "Add": _add,
    "Sum": _merge("add"),
    "Mul": _mul,
    "Concat": _concat,
    "Dropout": _dropout,
    "Identity": _dropout,
    "LRN": _lrn,
    "Resize": _resize,
    "Transpose": _transpose,
    "LayerNormalization": _layer_norm,
    "MatMul": _matmul,
    "Div": _div,
    "Erf": _erf,
    "Gelu": _gelu,
    "Slice": _slice_tensor,
    "Split": _split,
}


VIEW_RULES = frozenset(
    {"Reshape", "Transpose", "LayerNormalization", "MatMul", "Add", "Mul", "Div", "Erf", "Gelu"}
)
"""Rules that follow a tensor that is a view of its unit (channel shuffle, channels-last, inside GELU)."""


def spec_state_dict(imported: OnnxImport, network: Any) -> dict[str, Any]:
    """The file's initializers under the spec's state_dict keys (torch tensors), in the spec's layer order."""
    import torch

    spec = network.to_torch().state_dict()
    groups = tensor_holders(spec, skip_suffix="num_batches_tracked")
    arrays = [w for unit in imported.weights for w in unit if w is not None]
    check_holder_count(imported.graph.source, len(arrays), len(groups), "nodes")
    state: dict[str, Any] = {
        k: torch.zeros_like(v) for k, v in spec.items() if k.endswith("num_batches_tracked")
    }
    for keys, tensors in zip(groups, arrays, strict=True):
        for key, array in zip(keys, tensors, strict=True):
            if tuple(array.shape) != tuple(spec[key].shape):
                raise ImportFailure(
                    [
                        Problem(
                            Location(imported.graph.source),
                            f"internal error: {key} is {list(array.shape)} in the file",
                        )
                    ]
                )
            state[key] = torch.from_numpy(np.array(array))
    return {key: state[key] for key in spec}
