"""Caffe ``.prototxt`` deploy nets (``layer`` and legacy ``layers``) to the importers' :class:`Graph`.

Protobuf's text format is read by a small parser here (no protobuf or Caffe install needed), with limits on size
and nesting. Meaning follows Caffe's layers, not PyTorch's defaults: pooling rounds up (``ceil``; the fork field
``ceil_mode: false`` rounds down) and its stride defaults to 1; ``BatchNorm`` holds only statistics and the
``Scale`` after it the affine part, so the pair is one ``bn``; in-place layers (``top == bottom``) and activations
continue the line of the layer they follow. Blobs nobody reads are the network's outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .graph import (
    INPUT,
    Graph,
    ImportFailure,
    Location,
    Problem,
    Step,
    Unit,
    infer_shapes,
    network_name,
    read_model_text,
)

MAX_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
"""Messages nest a few levels in a real prototxt; deeper is hostile input, refused before recursion gets deep."""
MAX_DIMENSION = 1 << 16

# Legacy V1 `layers { type: ENUM }` names -> current type names.
V1_TYPES = {
    "CONVOLUTION": "Convolution",
    "POOLING": "Pooling",
    "INNER_PRODUCT": "InnerProduct",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "TANH": "TanH",
    "LRN": "LRN",
    "CONCAT": "Concat",
    "ELTWISE": "Eltwise",
    "DROPOUT": "Dropout",
    "SOFTMAX": "Softmax",
    "FLATTEN": "Flatten",
    "SPLIT": "Split",
    "DATA": "Data",
    "IMAGE_DATA": "ImageData",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "ACCURACY": "Accuracy",
}
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData"}
SKIPPED_TYPES = {"SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss", "Silence"}
FOLLOWERS = {"BatchNorm", "Scale", "ReLU", "Sigmoid", "TanH", "Dropout"}
"""Layers written on the line of the layer they follow (when nothing else reads that layer's output)."""


# --------------------------------------------------------------------------------- text format ---


@dataclass
class Message:
    """A parsed protobuf text message: fields in order, repeated fields repeated."""

    line: int
    fields: list[tuple[str, Any, int]] = field(default_factory=list)

    def all(self, key: str) -> list[Any]:
        return [value for name, value, _ in self.fields if name == key]

    def get(self, key: str, default: Any = None) -> Any:
        values = self.all(key)
        return values[-1] if values else default

    def line_of(self, key: str) -> int:
        return next((line for name, _, line in self.fields if name == key), self.line)


_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\f\v]+)|(?P<newline>\n)|(?P<comment>\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)[fF]?)
    |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<punct>[{}\[\]:,;<>])""",
    re.VERBOSE,
)


def parse_text(text: str, file: str) -> Message:
    """Parse protobuf text format into nested :class:`Message` objects; errors are located problems."""
    tokens: list[tuple[str, str, int]] = []
    line = 1
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            snippet = text[position : position + 20].split("\n")[0]
            raise ImportFailure([Problem(Location(file, line), f"unexpected text {snippet!r}")])
        kind = match.lastgroup or ""
        if kind == "newline":
            line += 1
        elif kind not in ("space", "comment"):
            tokens.append((kind, match.group(), line))
        position = match.end()
    reader = _TokenReader(tokens, file)
    root = Message(1)
    reader.fields(root, depth=0, closing=None)
    return root


class _TokenReader:
    def __init__(self, tokens: list[tuple[str, str, int]], file: str) -> None:
        self.tokens = tokens
        self.position = 0
        self.file = file

    def fail(self, message: str) -> ImportFailure:
        line = self.tokens[min(self.position, len(self.tokens) - 1)][2] if self.tokens else 1
        return ImportFailure([Problem(Location(self.file, line), message)])

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.fail("the file ends inside a message (a '}' is missing)")
        self.position += 1
        return token

    def fields(self, message: Message, depth: int, closing: str | None) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(f"messages nested more than {MAX_DEPTH} deep")
        while True:
            token = self.peek()
            if token is None:
                if closing is not None:
                    raise self.fail(f"the file ends inside the message opened on line {message.line}")
                return
            kind, value, line = token
            if kind == "punct" and value == closing:
                self.position += 1
                return
            if kind == "punct" and value in ",;":
                self.position += 1
                continue
            if kind != "word":
                raise self.fail(f"expected a field name, got {value!r}")
            self.position += 1
            after = self.take()
            if after[1] == ":":
                after = self.take()
            if after[1] in ("{", "<"):
                child = Message(line)
                self.fields(child, depth + 1, "}" if after[1] == "{" else ">")
                message.fields.append((value, child, line))
            elif after[1] == "[":
                while True:
                    item = self.take()
                    if item[1] == "]":
                        break
                    if item[1] == ",":
                        continue
                    message.fields.append((value, self.scalar(item), line))
            else:
                message.fields.append((value, self.scalar(after), line))

    def scalar(self, token: tuple[str, str, int]) -> Any:
        kind, value, _ = token
        if kind == "string":
            return bytes(value[1:-1], "utf-8").decode("unicode_escape", "replace")
        if kind == "number":
            text = value.rstrip("fF")
            try:
                return int(text)
            except ValueError:
                return float(text)
        if kind == "word":
            return {"true": True, "false": False}.get(value, value)
        raise self.fail(f"expected a value, got {value!r}")


# ------------------------------------------------------------------------------------- layers ---


def import_caffe(
    path: str | Path,
    text: str | None = None,
    *,
    partial: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> Graph:
    """Read a Caffe prototxt into a :class:`Graph` (shapes not yet inferred). Raises :class:`ImportFailure`."""
    file = str(path)
    if text is None:
        text = read_model_text(path, MAX_BYTES, "prototxt")
    root = parse_text(text, file)
    layers = root.all("layer") or root.all("layers")
    if not layers:
        raise ImportFailure(
            [Problem(Location(file, 1), "no layer { ... } messages: this is not a Caffe net")]
        )
    name = root.get("name") if isinstance(root.get("name"), str) else Path(file).stem
    builder = _Builder(
        file, partial, Graph(network_name(name), f"the Caffe prototxt {Path(file).name}", "data", ())
    )
    builder.declare_inputs(root, layers, input_shape)
    for layer in layers:
        if isinstance(layer, Message):
            builder.layer(layer)
    if builder.problems:
        raise ImportFailure(builder.problems)
    builder.finish()
    return builder.graph


class _Builder:
    def __init__(self, file: str, partial: bool, graph: Graph) -> None:
        self.file = file
        self.partial = partial
        self.graph = graph
        self.problems: list[Problem] = []
        self.blobs: dict[str, int] = {}
        """Blob name -> the unit producing its current value."""
        self.read: set[int] = set()
        """Units whose output some layer reads."""

    def location(self, layer: Message, key: str | None = None) -> Location:
        name = layer.get("name")
        line = layer.line_of(key) if key else layer.line
        return Location(self.file, line, f"'{name}'" if isinstance(name, str) else None)

    def problem(self, layer: Message, message: str, code: str = "invalid", key: str | None = None) -> None:
        self.problems.append(Problem(self.location(layer, key), message, code))

    # -- inputs ------------------------------------------------------------------------------------

    def declare_inputs(self, root: Message, layers: list[Any], override: tuple[int, ...] | None) -> None:
        dims: list[int] = []
        name = root.get("input")
        if isinstance(name, str):
            dims = [d for d in root.all("input_dim") if isinstance(d, int)]
            shape_message = root.get("input_shape")
            if not dims and isinstance(shape_message, Message):
                dims = [d for d in shape_message.all("dim") if isinstance(d, int)]
        else:
            for layer in layers:
                if isinstance(layer, Message) and layer.get("type") == "Input":
                    name = (layer.all("top") or ["data"])[0]
                    param = layer.get("input_param")
                    shape = param.get("shape") if isinstance(param, Message) else None
                    if isinstance(shape, Message):
                        dims = [d for d in shape.all("dim") if isinstance(d, int)]
                    break
                if isinstance(layer, Message) and _type(layer) in DATA_TYPES:
                    name = (layer.all("top") or ["data"])[0]
                    break
        if not isinstance(name, str):
            self.problems.append(
                Problem(Location(self.file, 1), "no input declared (input:, input_shape or an Input layer)")
            )
            name = "data"
        shape = tuple(dims[1:]) if len(dims) == 4 else ()
        if override is not None:
            shape = override
        if len(shape) != 3 or not all(0 < d <= MAX_DIMENSION for d in shape):
            if override is None:
                self.problems.append(
                    Problem(
                        Location(self.file, 1),
                        f"the input {name!r} has no usable [N, C, H, W] shape; give --input",
                    )
                )
            shape = (1, 1, 1)
        self.graph.input_name = _tensor_name(name)
        self.graph.input_shape = shape
        self.blobs[name] = INPUT

    # -- one layer ---------------------------------------------------------------------------------

    def layer(self, layer: Message) -> None:
        kind = _type(layer)
        if kind in ("Input", *DATA_TYPES) or kind in SKIPPED_TYPES:
            return
        bottoms = [b for b in layer.all("bottom") if isinstance(b, str)]
        tops = [t for t in layer.all("top") if isinstance(t, str)]
        missing = [b for b in bottoms if b not in self.blobs]
        if missing:
            self.problem(layer, f"{kind} reads blob {missing[0]!r}, which no earlier layer produces")
            return
        inputs = [self.blobs[b] for b in bottoms]
        if not inputs:
            self.problem(layer, f"{kind} has no bottom")
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            message = f"{kind} layers are not supported"
            if self.partial:
                self.add(
                    layer, kind, inputs[:1], tops, Unit(self.location(layer), kind, inputs[:1], gap=message)
                )
            else:
                self.problem(layer, message, "unsupported")
            return
        handler(self, layer, kind, inputs, tops)

    def add(self, layer: Message, kind: str, inputs: list[int], tops: list[str], unit: Unit) -> None:
        follower = (
            kind in FOLLOWERS and len(inputs) == 1 and inputs[0] != INPUT and inputs[0] not in self.read
        )
        source = self.graph.units[inputs[0]] if follower else None
        if source is not None and source.gap is None and (source.steps or source.merge):
            source.steps.extend(unit.steps)
            source.label += f", {_label(layer, kind)}"
            source.shape = ()
            for top in tops:
                self.blobs[top] = inputs[0]
            if tops:
                source.name = tops[0]
            return
        self.read.update(inputs)
        unit.name = tops[0] if tops else None
        unit.label = _label(layer, kind)
        unit_id = self.graph.add(unit)
        for top in tops:
            self.blobs[top] = unit_id

    def shape(self, unit_id: int) -> tuple[int, ...]:
        if unit_id == INPUT:
            return self.graph.input_shape
        infer_shapes(self.graph)
        return self.graph.units[unit_id].shape

    def finish(self) -> None:
        produced = {unit_id for unit_id in self.blobs.values() if unit_id != INPUT}
        outputs = sorted(u for u in produced if u not in self.read)
        self.graph.outputs = outputs

    # -- handlers ----------------------------------------------------------------------------------

    def convolution(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        param = _param(layer, "convolution_param")
        channels = self.int_field(layer, param, "num_output", None)
        kernel = self.pair_field(layer, param, "kernel_size", "kernel_h", "kernel_w", None)
        stride = self.pair_field(layer, param, "stride", "stride_h", "stride_w", 1) or (1, 1)
        padding = self.pair_field(layer, param, "pad", "pad_h", "pad_w", 0) or (0, 0)
        dilation = self.pair_field(layer, param, "dilation", None, None, 1) or (1, 1)
        groups = self.int_field(layer, param, "group", 1)
        if kind in ("DepthwiseConvolution", "ConvolutionDepthwise"):
            groups = self.shape(inputs[0])[0] if self.shape(inputs[0]) else groups
        if channels is None or kernel is None:
            self.problem(layer, f"{kind} needs num_output and kernel_size")
            return
        args: dict[str, Any] = {"channels": channels, "kernel": _collapse(kernel)}
        if stride != (1, 1):
            args["stride"] = _collapse(stride)
        if padding != (0, 0):
            args["padding"] = _collapse(padding)
        if dilation != (1, 1):
            args["dilation"] = _collapse(dilation)
        if groups != 1:
            args["groups"] = groups
        args["bias"] = bool(param.get("bias_term", True))
        self.add(
            layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs, [Step.of("conv", **args)])
        )

    def pooling(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        param = _param(layer, "pooling_param")
        method = str(param.get("pool", "MAX")).upper()
        if method not in ("MAX", "AVE", "0", "1"):
            self.problem(layer, f"pool: {method} is not supported", "unsupported", "pooling_param")
            return
        is_max = method in ("MAX", "0")
        if param.get("global_pooling", False):
            step = Step.of("adaptive_avgpool", size=1) if not is_max else None
            if step is None:
                self.problem(layer, "global MAX pooling is not supported yet", "unsupported")
                return
            self.add(layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs, [step]))
            return
        kernel = self.pair_field(layer, param, "kernel_size", "kernel_h", "kernel_w", None)
        if kernel is None:
            self.problem(layer, "Pooling needs kernel_size (or global_pooling: true)")
            return
        stride = self.pair_field(layer, param, "stride", "stride_h", "stride_w", 1) or (1, 1)
        padding = self.pair_field(layer, param, "pad", "pad_h", "pad_w", 0) or (0, 0)
        ceil = bool(param.get("ceil_mode", True))
        if ceil and padding == (0, 0) and any(s > k for s, k in zip(stride, kernel, strict=True)):
            # Caffe drops a last window starting past the input only when padded; torch always does.
            self.problem(
                layer, "ceil pooling with a stride larger than the kernel and no padding", "unsupported"
            )
            return
        args: dict[str, Any] = {"kernel": _collapse(kernel), "stride": _collapse(stride)}
        if padding != (0, 0):
            args["padding"] = _collapse(padding)
        if ceil:
            args["ceil"] = True
        step = Step.of("maxpool" if is_max else "avgpool", **args)
        self.add(layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs, [step]))

    def inner_product(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        param = _param(layer, "inner_product_param")
        features = self.int_field(layer, param, "num_output", None)
        if features is None:
            self.problem(layer, "InnerProduct needs num_output")
            return
        steps = [] if len(self.shape(inputs[0])) == 1 else [Step.of("flatten")]
        steps.append(Step.of("linear", features=features, bias=bool(param.get("bias_term", True))))
        self.add(layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs, steps))

    def simple(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        steps: list[Step]
        if kind == "ReLU":
            slope = _param(layer, "relu_param").get("negative_slope", 0)
            steps = [Step.of("leaky_relu", slope=float(slope))] if slope else [Step.of("relu")]
        elif kind == "Dropout":
            ratio = _param(layer, "dropout_param").get("dropout_ratio", 0.5)
            steps = [Step.of("dropout", p=float(ratio))]
        elif kind == "LRN":
            param = _param(layer, "lrn_param")
            if str(param.get("norm_region", "ACROSS_CHANNELS")) not in ("ACROSS_CHANNELS", "0"):
                self.problem(layer, "LRN with norm_region WITHIN_CHANNEL is not supported", "unsupported")
                return
            steps = [
                Step.of(
                    "lrn",
                    size=int(param.get("local_size", 5)),
                    alpha=float(param.get("alpha", 1.0)),
                    beta=float(param.get("beta", 0.75)),
                    k=float(param.get("k", 1.0)),
                )
            ]
        else:
            steps = [Step.of(_SIMPLE_OPS[kind])]
        self.add(layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs, steps))

    def batch_norm(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        eps = float(_param(layer, "batch_norm_param").get("eps", 1e-5))
        step = Step.of("bn", eps=eps) if eps != 1e-5 else Step.of("bn")
        unit = Unit(self.location(layer), kind, inputs, [step])
        self.add(layer, kind, inputs, tops, unit)

    def scale(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        source = self.graph.units[inputs[0]] if inputs[0] != INPUT else None
        if source is None or not source.steps or source.steps[-1].op != "bn":
            self.problem(
                layer, "Scale is supported only right after a BatchNorm (together one bn)", "unsupported"
            )
            return
        if not bool(_param(layer, "scale_param").get("bias_term", False)):
            self.problem(
                layer,
                "Scale without bias_term after BatchNorm (torch's bn always has a shift)",
                "unsupported",
            )
            return
        # The affine part of the bn the BatchNorm started: nothing new to write, only names to record.
        self.add(layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs, []))

    def merge(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        if kind == "Concat":
            axis = int(_param(layer, "concat_param").get("axis", 1))
            if axis != 1:
                self.problem(
                    layer, f"Concat along axis {axis} is not supported (channels only)", "unsupported"
                )
                return
            merge = "concat"
        else:
            param = _param(layer, "eltwise_param")
            operation = str(param.get("operation", "SUM"))
            coefficients = param.all("coeff")
            if operation in ("SUM", "1") and all(c == 1 for c in coefficients):
                merge = "add"
            elif operation in ("PROD", "0"):
                merge = "mul"
            else:
                self.problem(
                    layer, f"Eltwise {operation} (with coeff {coefficients}) is not supported", "unsupported"
                )
                return
        if len(inputs) == 1:
            self.add(layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs))
            return
        self.add(layer, kind, inputs, tops, Unit(self.location(layer), kind, inputs, merge=merge))

    def split(self, layer: Message, kind: str, inputs: list[int], tops: list[str]) -> None:
        for top in tops:
            self.blobs[top] = inputs[0]

    # -- typed fields --------------------------------------------------------------------------------

    def int_field(self, layer: Message, param: Message, key: str, default: int | None) -> int | None:
        value = param.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DIMENSION:
            self.problem(layer, f"{key}: {value!r} is not an integer in 0..{MAX_DIMENSION}", key=None)
            return default
        return value

    def pair_field(
        self,
        layer: Message,
        param: Message,
        key: str,
        key_h: str | None,
        key_w: str | None,
        default: int | None,
    ) -> tuple[int, int] | None:
        values = param.all(key)
        if key_h and key_w and (param.get(key_h) is not None or param.get(key_w) is not None):
            height = self.int_field(layer, param, key_h, default)
            width = self.int_field(layer, param, key_w, default)
            return None if height is None or width is None else (height, width)
        if not values:
            return None if default is None else (default, default)
        if len(values) > 2:
            self.problem(layer, f"{key} has {len(values)} values; 2-D layers take one or two")
            return None if default is None else (default, default)
        numbers = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DIMENSION:
                self.problem(layer, f"{key}: {value!r} is not an integer in 0..{MAX_DIMENSION}")
                return None if default is None else (default, default)
            numbers.append(value)
        return (numbers[0], numbers[-1])


_SIMPLE_OPS = {"Sigmoid": "sigmoid", "TanH": "tanh", "Softmax": "softmax", "Flatten": "flatten"}
_HANDLERS = {
    "Convolution": _Builder.convolution,
    "DepthwiseConvolution": _Builder.convolution,
    "ConvolutionDepthwise": _Builder.convolution,
    "Pooling": _Builder.pooling,
    "InnerProduct": _Builder.inner_product,
    "ReLU": _Builder.simple,
    "Sigmoid": _Builder.simple,
    "TanH": _Builder.simple,
    "Softmax": _Builder.simple,
    "Flatten": _Builder.simple,
    "Dropout": _Builder.simple,
    "LRN": _Builder.simple,
    "BatchNorm": _Builder.batch_norm,
    "Scale": _Builder.scale,
    "Concat": _Builder.merge,
    "Eltwise": _Builder.merge,
    "Split": _Builder.split,
}


def _label(layer: Message, kind: str) -> str:
    name = layer.get("name")
    return str(name) if isinstance(name, str) else kind


def _type(layer: Message) -> str:
    kind = layer.get("type")
    text = str(kind) if kind is not None else "?"
    return V1_TYPES.get(text, text)


def _param(layer: Message, key: str) -> Message:
    value = layer.get(key)
    return value if isinstance(value, Message) else Message(layer.line)


def _collapse(pair: tuple[int, int]) -> int | list[int]:
    return pair[0] if pair[0] == pair[1] else [pair[0], pair[1]]


def _tensor_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "data"
    return name if not name[0].isdigit() else f"t{name}"
