"""The op registry: one entry per op holding its schema, shape rule, costs, receptive-field rule, torch lowering
and diagram label. A new op is one :func:`register` call in this file and nothing else.

Shapes are tuples without the batch dimension: ``(C, H, W)`` for feature maps, ``(F,)`` for flat vectors.
Nothing here imports torch: lowering is described as data (:class:`TorchModule`, :class:`TorchFunction`) that the
backend turns into modules, and the standalone exporter into source text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]
Args = Mapping[str, Any]

REQUIRED: Any = object()


class OpError(Exception):
    """A rule's complaint; ``param`` names the argument to point at, when one is to blame."""

    def __init__(self, message: str, param: str | None = None, branch: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.branch = branch


# ------------------------------------------------------------------------------------------ schema ---


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its kind decides which values are accepted and how they are normalised.

    Kinds: ``int``; ``float``; ``bool``; ``pair`` (an int or ``[a, b]``, normalised to a tuple);
    ``padding`` (``same``, ``valid``, an int or ``[ph, pw]``); ``choice`` (one of ``choices``).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    exclusive_max: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return repr(value)


def _check_range(spec: ParamSpec, value: float) -> None:
    if spec.minimum is not None and value < spec.minimum:
        bound = "positive" if spec.minimum == 1 and spec.kind != "float" else f"at least {spec.minimum:g}"
        if spec.minimum == 0:
            bound = "non-negative"
        raise OpError(f"{spec.name} must be {bound}, got {_describe(value)}", spec.name)
    if spec.maximum is not None:
        too_big = value >= spec.maximum if spec.exclusive_max else value > spec.maximum
        if too_big:
            word = "below" if spec.exclusive_max else "at most"
            raise OpError(f"{spec.name} must be {word} {spec.maximum:g}, got {_describe(value)}", spec.name)


def _as_int(spec: ParamSpec, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpError(f"{spec.name} must be an integer, got {_describe(value)}", spec.name)
    _check_range(spec, value)
    return value


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Validate one argument against its schema and return the normalised value, or raise :class:`OpError`."""
    if spec.kind == "int":
        return _as_int(spec, value)
    if spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OpError(f"{spec.name} must be a number, got {_describe(value)}", spec.name)
        if not math.isfinite(value):
            raise OpError(f"{spec.name} must be finite, got {_describe(value)}", spec.name)
        _check_range(spec, float(value))
        return float(value)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise OpError(f"{spec.name} must be true or false, got {_describe(value)}", spec.name)
        return value
    if spec.kind == "pair":
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise OpError(f"{spec.name} must be an integer or [h, w], got {_describe(value)}", spec.name)
            return (_as_int(spec, value[0]), _as_int(spec, value[1]))
        number = _as_int(spec, value)
        return (number, number)
    if spec.kind == "padding":
        if value in ("same", "valid"):
            return value
        if isinstance(value, str):
            raise OpError(
                f"padding must be same, valid, an integer or [h, w], got {_describe(value)}", spec.name
            )
        return coerce(ParamSpec(spec.name, "pair", minimum=0), value)
    if spec.kind == "choice":
        if not isinstance(value, str) or value not in spec.choices:
            options = ", ".join(spec.choices)
            raise OpError(f"{spec.name} must be one of {options}, got {_describe(value)}", spec.name)
        return value
    raise AssertionError(f"unknown parameter kind {spec.kind}")


# -------------------------------------------------------------------------------------- rule results ---


@dataclass(frozen=True)
class Costs:
    """Per-node costs. MACs: multiply-accumulates of conv and linear, bias excluded. FLOPs: 2*MACs plus each
    op's stated elementwise work. ``params`` are trainable, ``buffers`` are not (batchnorm statistics)."""

    params: int = 0
    buffers: int = 0
    macs: int = 0
    flops: int = 0


@dataclass(frozen=True)
class RFRule:
    """How one op maps positions: effective kernel, stride (a fraction for upsampling) and padding, per axis."""

    kernel: tuple[int, int] = (1, 1)
    stride: tuple[float, float] = (1.0, 1.0)
    padding: tuple[int, int] = (0, 0)


POINTWISE = RFRule()


@dataclass(frozen=True)
class TorchModule:
    """Lower to ``torch.nn.<cls>(**kwargs)``."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TorchFunction:
    """Lower to a call of ``cnndsl.runtime.<name>(*inputs, **kwargs)``: pure torch, copied into standalone files."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


Lowering = TorchModule | TorchFunction


@dataclass(frozen=True)
class OpDef:
    """Everything cnndsl knows about one op."""

    name: str
    family: str
    doc: str
    params: tuple[ParamSpec, ...]
    shape: Callable[[list[Shape], Args], Shape]
    costs: Callable[[list[Shape], Shape, Args], Costs]
    rf: Callable[[list[Shape], Shape, Args], RFRule | None]
    torch: Callable[[list[Shape], Shape, Args], Lowering]
    label: Callable[[Args], str]
    flops_rule: str
    variadic: bool = False
    makes_node: bool = True
    """False for ops whose output is their input (identity): the elaborator wires the edge straight through."""

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def get(name: str) -> OpDef | None:
    return REGISTRY.get(name)


# ---------------------------------------------------------------------------------------- helpers ---


def numel(shape: Shape) -> int:
    return math.prod(shape)


def fmt_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _spatial(shapes: list[Shape], op: str) -> Shape:
    shape = shapes[0]
    if len(shape) != 3:
        hint = " (a flat vector has no height or width)" if len(shape) == 1 else ""
        raise OpError(f"{op} needs a [C, H, W] input, got {fmt_shape(shape)}{hint}")
    return shape


def _padding(args: Args) -> tuple[int, int]:
    padding = args["padding"]
    kh, kw = args["kernel"]
    dh, dw = args.get("dilation", (1, 1))
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        eh, ew = dh * (kh - 1), dw * (kw - 1)
        if eh % 2 or ew % 2:
            raise OpError(f"padding=same needs an odd kernel, got {kh}x{kw}", "padding")
        return (eh // 2, ew // 2)
    return (int(padding[0]), int(padding[1]))


def _window_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:  # torch: the last window must start inside the input or left padding
            out -= 1
        return out
    return span // s + 1


def _windowed(shapes: list[Shape], args: Args, op: str, channels: int, ceil: bool = False) -> Shape:
    c, h, w = _spatial(shapes, op)
    kh, kw = args["kernel"]
    sh, sw = args["stride"]
    dh, dw = args.get("dilation", (1, 1))
    ph, pw = _padding(args)
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eh > h + 2 * ph or ew > w + 2 * pw:
        padded = f" (padded {h + 2 * ph}x{w + 2 * pw})" if ph or pw else ""
        raise OpError(f"{op} kernel {eh}x{ew} is larger than its input {h}x{w}{padded}", "kernel")
    oh = _window_out(h, kh, sh, ph, dh, ceil)
    ow = _window_out(w, kw, sw, pw, dw, ceil)
    if oh < 1 or ow < 1:
        raise OpError(f"{op} output would be {oh}x{ow}; the input {h}x{w} is too small", "kernel")
    return (channels, oh, ow)


def _pool_args(args: Args) -> None:
    kh, kw = args["kernel"]
    ph, pw = _padding(args)
    if ph > kh // 2 or pw > kw // 2:
        raise OpError(f"pool padding {ph}x{pw} must be at most half the kernel {kh}x{kw}", "padding")


def _window_rf(args: Args) -> RFRule:
    kh, kw = args["kernel"]
    dh, dw = args.get("dilation", (1, 1))
    sh, sw = args["stride"]
    return RFRule((dh * (kh - 1) + 1, dw * (kw - 1) + 1), (float(sh), float(sw)), _padding(args))


def _kxk(pair: tuple[int, ...]) -> str:
    return f"{pair[0]}x{pair[1]}"


def _stride_text(args: Args) -> str:
    sh, sw = args["stride"]
    if (sh, sw) == (1, 1):
        return ""
    return f" /{sh}" if sh == sw else f" /{sh}x{sw}"


def _same_shape(shapes: list[Shape], args: Args) -> Shape:
    return shapes[0]


def _free(shapes: list[Shape], out: Shape, args: Args) -> Costs:
    return Costs()


def _per_element(factor: int) -> Callable[[list[Shape], Shape, Args], Costs]:
    def costs(shapes: list[Shape], out: Shape, args: Args) -> Costs:
        return Costs(flops=factor * numel(out))

    return costs


def _pointwise_rf(shapes: list[Shape], out: Shape, args: Args) -> RFRule:
    return POINTWISE


def _global_rf(shapes: list[Shape], out: Shape, args: Args) -> None:
    return None


def _module(cls: str, **fixed: Any) -> Callable[[list[Shape], Shape, Args], Lowering]:
    def lower(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
        return TorchModule(cls, dict(fixed))

    return lower


def _name_label(name: str) -> Callable[[Args], str]:
    return lambda args: name


# ------------------------------------------------------------------------------------------- conv ---

_WINDOW_PARAMS = (
    ParamSpec("kernel", "pair", minimum=1, doc="kernel size: k or [kh, kw]"),
    ParamSpec("stride", "pair", 1, minimum=1, doc="stride: s or [sh, sw]"),
    ParamSpec("padding", "padding", 0, doc="same (keeps ceil(H/stride)), valid (0), p or [ph, pw]"),
    ParamSpec("dilation", "pair", 1, minimum=1, doc="dilation: d or [dh, dw]"),
)


def _conv_shape(shapes: list[Shape], args: Args) -> Shape:
    c = _spatial(shapes, "conv")[0]
    groups = args["groups"]
    if c % groups:
        raise OpError(f"groups={groups} does not divide the {c} input channels", "groups")
    if args["channels"] % groups:
        raise OpError(f"groups={groups} does not divide the {args['channels']} output channels", "groups")
    return _windowed(shapes, args, "conv", args["channels"])


def _conv_costs(shapes: list[Shape], out: Shape, args: Args) -> Costs:
    cin = shapes[0][0]
    kh, kw = args["kernel"]
    per_output = (cin // args["groups"]) * kh * kw
    macs = numel(out) * per_output
    bias = args["channels"] if args["bias"] else 0
    return Costs(
        params=args["channels"] * per_output + bias,
        macs=macs,
        flops=2 * macs + (numel(out) if args["bias"] else 0),
    )


def _conv_torch(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
    return TorchModule(
        "Conv2d",
        {
            "in_channels": shapes[0][0],
            "out_channels": args["channels"],
            "kernel_size": tuple(args["kernel"]),
            "stride": tuple(args["stride"]),
            "padding": _padding(args),
            "dilation": tuple(args["dilation"]),
            "groups": args["groups"],
            "bias": args["bias"],
        },
    )


def _conv_label(args: Args) -> str:
    text = f"conv {_kxk(args['kernel'])}{_stride_text(args)}"
    if args["dilation"] != (1, 1):
        text += f" d{args['dilation'][0]}"
    if args["groups"] != 1:
        text += f" g{args['groups']}"
    return text + f" → {args['channels']}"


register(
    OpDef(
        name="conv",
        family="conv",
        doc="2-d convolution (torch.nn.Conv2d); depthwise is groups=in.c",
        params=(
            ParamSpec("channels", "int", minimum=1, doc="output channels"),
            *_WINDOW_PARAMS,
            ParamSpec("groups", "int", 1, minimum=1, doc="groups; must divide both channel counts"),
            ParamSpec("bias", "bool", True, doc="learn an additive bias"),
        ),
        shape=_conv_shape,
        costs=_conv_costs,
        rf=lambda shapes, out, args: _window_rf(args),
        torch=_conv_torch,
        label=_conv_label,
        flops_rule="2·MACs, plus one add per output element when bias=true",
    )
)

# ---------------------------------------------------------------------------------------- pooling ---

_POOL_PARAMS = (
    ParamSpec("kernel", "pair", minimum=1, doc="window size: k or [kh, kw]"),
    ParamSpec("stride", "pair", None, minimum=1, doc="stride (default: the kernel size)"),
    ParamSpec("padding", "padding", 0, doc="valid (0), p or [ph, pw]; at most half the kernel"),
    ParamSpec("ceil", "bool", False, doc="round the output size up (Caffe-style pooling)"),
)


def _pool_shape(op: str) -> Callable[[list[Shape], Args], Shape]:
    def shape(shapes: list[Shape], args: Args) -> Shape:
        c = _spatial(shapes, op)[0]
        _pool_args(args)
        return _windowed(shapes, args, op, c, ceil=args["ceil"])

    return shape


def _window_flops(shapes: list[Shape], out: Shape, args: Args) -> Costs:
    kh, kw = args["kernel"]
    return Costs(flops=numel(out) * kh * kw)


def _pool_label(op: str) -> Callable[[Args], str]:
    return lambda args: f"{op} {_kxk(args['kernel'])}{_stride_text(args)}"


register(
    OpDef(
        name="maxpool",
        family="pool",
        doc="max pooling (torch.nn.MaxPool2d)",
        params=(
            *_POOL_PARAMS[:3],
            ParamSpec("dilation", "pair", 1, minimum=1, doc="dilation"),
            _POOL_PARAMS[3],
        ),
        shape=_pool_shape("maxpool"),
        costs=_window_flops,
        rf=lambda shapes, out, args: _window_rf(args),
        torch=lambda shapes, out, args: TorchModule(
            "MaxPool2d",
            {
                "kernel_size": tuple(args["kernel"]),
                "stride": tuple(args["stride"]),
                "padding": _padding(args),
                "dilation": tuple(args["dilation"]),
                "ceil_mode": args["ceil"],
            },
        ),
        label=_pool_label("maxpool"),
        flops_rule="one comparison per window element per output element (kh·kw·out)",
    )
)

register(
    OpDef(
        name="avgpool",
        family="pool",
        doc="average pooling (torch.nn.AvgPool2d)",
        params=(
            *_POOL_PARAMS,
            ParamSpec("count_pad", "bool", True, doc="count padded zeros in the average (torch's default)"),
        ),
        shape=_pool_shape("avgpool"),
        costs=_window_flops,
        rf=lambda shapes, out, args: _window_rf(args),
        torch=lambda shapes, out, args: TorchModule(
            "AvgPool2d",
            {
                "kernel_size": tuple(args["kernel"]),
                "stride": tuple(args["stride"]),
                "padding": _padding(args),
                "ceil_mode": args["ceil"],
                "count_include_pad": args["count_pad"],
            },
        ),
        label=_pool_label("avgpool"),
        flops_rule="kh·kw per output element (the adds and the divide)",
    )
)


def _gap_shape(shapes: list[Shape], args: Args) -> Shape:
    return (_spatial(shapes, "gap")[0],)


register(
    OpDef(
        name="gap",
        family="pool",
        doc="global average pool: [C, H, W] -> [C], so `gap -> linear(n)` needs no flatten",
        params=(),
        shape=_gap_shape,
        costs=lambda shapes, out, args: Costs(flops=numel(shapes[0])),
        rf=_global_rf,
        torch=lambda shapes, out, args: TorchFunction("global_avg_pool"),
        label=_name_label("gap"),
        flops_rule="one per input element",
    )
)


def _adaptive_shape(shapes: list[Shape], args: Args) -> Shape:
    c = _spatial(shapes, "adaptive_avgpool")[0]
    return (c, *args["size"])


def _adaptive_rf(shapes: list[Shape], out: Shape, args: Args) -> RFRule:
    _, h, w = shapes[0]
    oh, ow = args["size"]
    # Windows are ceil(H/n) wide at most and start every H/n positions.
    return RFRule((-(-h // oh), -(-w // ow)), (h / oh, w / ow), (0, 0))


register(
    OpDef(
        name="adaptive_avgpool",
        family="pool",
        doc="adaptive average pool to a fixed size: [C, H, W] -> [C, n, n] (torch.nn.AdaptiveAvgPool2d)",
        params=(ParamSpec("size", "pair", minimum=1, doc="output size: n or [h, w]"),),
        shape=_adaptive_shape,
        costs=lambda shapes, out, args: Costs(flops=numel(shapes[0])),
        rf=_adaptive_rf,
        torch=lambda shapes, out, args: TorchModule(
            "AdaptiveAvgPool2d", {"output_size": tuple(args["size"])}
        ),
        label=lambda args: f"adaptive_avgpool → {_kxk(args['size'])}",
        flops_rule="one per input element",
    )
)

# ---------------------------------------------------------------------------------- normalisation ---


def _bn_torch(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
    cls = "BatchNorm2d" if len(shapes[0]) == 3 else "BatchNorm1d"
    return TorchModule(cls, {"num_features": shapes[0][0], "eps": args["eps"], "momentum": args["momentum"]})


register(
    OpDef(
        name="bn",
        family="norm",
        doc="batch normalisation over channels ([C, H, W]) or features ([F])",
        params=(
            ParamSpec("eps", "float", 1e-5, minimum=0, doc="added to the variance"),
            ParamSpec("momentum", "float", 0.1, minimum=0, maximum=1, doc="running statistics update rate"),
        ),
        shape=_same_shape,
        costs=lambda shapes, out, args: Costs(
            params=2 * shapes[0][0], buffers=2 * shapes[0][0] + 1, flops=2 * numel(out)
        ),
        rf=_pointwise_rf,
        torch=_bn_torch,
        label=_name_label("bn"),
        flops_rule="2 per element at inference (scale and shift)",
    )
)


def _lrn_shape(shapes: list[Shape], args: Args) -> Shape:
    return _spatial(shapes, "lrn")


register(
    OpDef(
        name="lrn",
        family="norm",
        doc="local response normalisation across channels (torch.nn.LocalResponseNorm)",
        params=(
            ParamSpec("size", "int", 5, minimum=1, doc="channels in the window"),
            ParamSpec("alpha", "float", 1e-4, minimum=0, doc="scale"),
            ParamSpec("beta", "float", 0.75, minimum=0, doc="exponent"),
            ParamSpec("k", "float", 1.0, minimum=0, doc="additive constant"),
        ),
        shape=_lrn_shape,
        costs=lambda shapes, out, args: Costs(flops=(2 * args["size"] + 3) * numel(out)),
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchModule(
            "LocalResponseNorm",
            {"size": args["size"], "alpha": args["alpha"], "beta": args["beta"], "k": args["k"]},
        ),
        label=lambda args: f"lrn {args['size']}",
        flops_rule="(2·size + 3) per element: the window's squares and sums, then add, power and divide",
    )
)

# ------------------------------------------------------------------------------------ activations ---


def _activation(name: str, cls: str, doc: str, params: tuple[ParamSpec, ...] = (), **fixed: Any) -> None:
    def lower(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
        kwargs = dict(fixed)
        if name == "leaky_relu":
            kwargs["negative_slope"] = args["slope"]
        return TorchModule(cls, kwargs)

    register(
        OpDef(
            name=name,
            family="activation",
            doc=doc,
            params=params,
            shape=_same_shape,
            costs=_per_element(1),
            rf=_pointwise_rf,
            torch=lower,
            label=_name_label(name),
            flops_rule="1 per element",
        )
    )


_activation("relu", "ReLU", "max(x, 0)")
_activation("relu6", "ReLU6", "min(max(x, 0), 6) (MobileNet)")
_activation(
    "leaky_relu",
    "LeakyReLU",
    "x for x > 0, slope·x otherwise",
    (ParamSpec("slope", "float", 0.01, minimum=0, doc="negative slope"),),
)
_activation("tanh", "Tanh", "hyperbolic tangent")
_activation("sigmoid", "Sigmoid", "logistic sigmoid")
_activation("silu", "SiLU", "x·sigmoid(x) (swish)")
_activation("gelu", "GELU", "Gaussian error linear unit")

register(
    OpDef(
        name="softmax",
        family="activation",
        doc="softmax over channels or features; dropped by to_torch(logits=True) and by training",
        params=(),
        shape=_same_shape,
        costs=_per_element(3),
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchModule("Softmax", {"dim": 1}),
        label=_name_label("softmax"),
        flops_rule="3 per element (exp, sum, divide)",
    )
)

# ------------------------------------------------------------------------------------ regularisers ---

register(
    OpDef(
        name="dropout",
        family="regularizer",
        doc="zero elements with probability p while training (torch.nn.Dropout)",
        params=(
            ParamSpec("p", "float", 0.5, minimum=0, maximum=1, exclusive_max=True, doc="drop probability"),
        ),
        shape=_same_shape,
        costs=_free,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchModule("Dropout", {"p": args["p"]}),
        label=lambda args: f"dropout {args['p']:g}",
        flops_rule="0 (identity at inference)",
    )
)

# -------------------------------------------------------------------------------------- reshaping ---


def _flatten_shape(shapes: list[Shape], args: Args) -> Shape:
    return (numel(shapes[0]),)


register(
    OpDef(
        name="flatten",
        family="reshape",
        doc="[C, H, W] -> [C·H·W]; a flat input passes unchanged",
        params=(),
        shape=_flatten_shape,
        costs=_free,
        rf=_global_rf,
        torch=lambda shapes, out, args: TorchModule("Flatten", {}),
        label=_name_label("flatten"),
        flops_rule="0 (a view)",
    )
)

register(
    OpDef(
        name="identity",
        family="reshape",
        doc="passes its input unchanged (a branch of add/concat/mul)",
        params=(),
        shape=_same_shape,
        costs=_free,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchModule("Identity", {}),
        label=_name_label("identity"),
        flops_rule="0",
        makes_node=False,
    )
)


def _upsample_shape(shapes: list[Shape], args: Args) -> Shape:
    c, h, w = _spatial(shapes, "upsample")
    return (c, h * args["scale"], w * args["scale"])


register(
    OpDef(
        name="upsample",
        family="reshape",
        doc="upsample by an integer factor (torch.nn.Upsample)",
        params=(
            ParamSpec("scale", "int", 2, minimum=1, doc="integer scale factor"),
            ParamSpec("mode", "choice", "nearest", choices=("nearest", "bilinear"), doc="interpolation"),
        ),
        shape=_upsample_shape,
        costs=lambda shapes, out, args: Costs(flops=0 if args["mode"] == "nearest" else 9 * numel(out)),
        rf=lambda shapes, out, args: RFRule((1, 1), (1 / args["scale"], 1 / args["scale"]), (0, 0)),
        torch=lambda shapes, out, args: TorchModule(
            "Upsample",
            {"scale_factor": float(args["scale"]), "mode": args["mode"]}
            | ({"align_corners": False} if args["mode"] == "bilinear" else {}),
        ),
        label=lambda args: f"upsample x{args['scale']}" + (" bilinear" if args["mode"] == "bilinear" else ""),
        flops_rule="nearest: 0 (a copy); bilinear: 9 per output element (three 3-FLOP interpolations)",
    )
)

# ----------------------------------------------------------------------------------------- linear ---


def _linear_shape(shapes: list[Shape], args: Args) -> Shape:
    if len(shapes[0]) != 1:
        raise OpError(
            f"linear needs a flat input, got {fmt_shape(shapes[0])}; add flatten (or gap) before it"
        )
    return (args["features"],)


register(
    OpDef(
        name="linear",
        family="linear",
        doc="fully connected layer (torch.nn.Linear) on a flat input",
        params=(
            ParamSpec("features", "int", minimum=1, doc="output features"),
            ParamSpec("bias", "bool", True, doc="learn an additive bias"),
        ),
        shape=_linear_shape,
        costs=lambda shapes, out, args: Costs(
            params=shapes[0][0] * args["features"] + (args["features"] if args["bias"] else 0),
            macs=shapes[0][0] * args["features"],
            flops=2 * shapes[0][0] * args["features"] + (args["features"] if args["bias"] else 0),
        ),
        rf=_global_rf,
        torch=lambda shapes, out, args: TorchModule(
            "Linear", {"in_features": shapes[0][0], "out_features": args["features"], "bias": args["bias"]}
        ),
        label=lambda args: f"linear → {args['features']}",
        flops_rule="2·MACs, plus one add per output when bias=true",
    )
)

# ----------------------------------------------------------------------------------------- merges ---


def _add_shape(shapes: list[Shape], args: Args) -> Shape:
    for index, shape in enumerate(shapes[1:], start=1):
        if shape != shapes[0]:
            raise OpError(
                f"add: branch {index + 1} has shape {fmt_shape(shape)} but branch 1 has {fmt_shape(shapes[0])}",
                branch=index,
            )
    return shapes[0]


def _concat_shape(shapes: list[Shape], args: Args) -> Shape:
    first = shapes[0]
    for index, shape in enumerate(shapes[1:], start=1):
        if len(shape) != len(first):
            raise OpError(
                f"concat: branch {index + 1} has shape {fmt_shape(shape)} but branch 1 has {fmt_shape(first)}",
                branch=index,
            )
        if shape[1:] != first[1:]:
            raise OpError(
                f"concat: branch {index + 1} is {_kxk(shape[1:])} (shape {fmt_shape(shape)}) but branch 1 is "
                f"{_kxk(first[1:])} (shape {fmt_shape(first)}); concat joins channels of equal height and width",
                branch=index,
            )
    return (sum(s[0] for s in shapes), *first[1:])


def _broadcast(a: Shape, b: Shape) -> Shape | None:
    if a == b:
        return a
    if len(a) == 1 and len(b) == 3 and a[0] == b[0]:
        return b
    if len(b) == 1 and len(a) == 3 and a[0] == b[0]:
        return a
    return None


def _mul_shape(shapes: list[Shape], args: Args) -> Shape:
    result = shapes[0]
    for index, shape in enumerate(shapes[1:], start=1):
        merged = _broadcast(result, shape)
        if merged is None:
            raise OpError(
                f"mul: branch {index + 1} has shape {fmt_shape(shape)}, which does not match or broadcast over "
                f"{fmt_shape(result)} (a [C] branch scales the channels of a [C, H, W] branch)",
                branch=index,
            )
        result = merged
    return result


def _merge(name: str, doc: str, shape: Callable[[list[Shape], Args], Shape], flops: str, symbol: str) -> None:
    def costs(shapes: list[Shape], out: Shape, args: Args) -> Costs:
        return Costs(flops=0 if name == "concat" else (len(shapes) - 1) * numel(out))

    register(
        OpDef(
            name=name,
            family="merge",
            doc=doc,
            params=(),
            shape=shape,
            costs=costs,
            rf=_pointwise_rf,
            torch=lambda shapes, out, args: TorchFunction(
                {"add": "add", "concat": "concat", "mul": "broadcast_mul"}[name]
            ),
            label=_name_label(symbol),
            flops_rule=flops,
            variadic=True,
        )
    )


_merge(
    "add", "elementwise sum of branches: add(A | B | ...)", _add_shape, "(branches − 1) per element", "add"
)
_merge("concat", "join branches along channels: concat(A | B | ...)", _concat_shape, "0 (a copy)", "concat")
_merge(
    "mul",
    "elementwise product of branches; a [C] branch broadcasts over [C, H, W] (squeeze-and-excitation)",
    _mul_shape,
    "(branches − 1) per element",
    "mul",
)

# ------------------------------------------------------------------------------- imported formats ---
# Ops that other frameworks' model files need in order to be written exactly (see docs/import.md).


def _pad_shape(shapes: list[Shape], args: Args) -> Shape:
    c, h, w = _spatial(shapes, "pad")
    if args["mode"] == "reflect" and (
        max(args["left"], args["right"]) >= w or max(args["top"], args["bottom"]) >= h
    ):
        raise OpError(f"reflect padding must be smaller than the input size {h}x{w}", "mode")
    return (c, h + args["top"] + args["bottom"], w + args["left"] + args["right"])


_PAD_MODULES = {"constant": "ConstantPad2d", "replicate": "ReplicationPad2d", "reflect": "ReflectionPad2d"}


def _pad_torch(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
    padding = (args["left"], args["right"], args["top"], args["bottom"])
    if args["mode"] == "constant":
        return TorchModule("ConstantPad2d", {"padding": padding, "value": args["value"]})
    return TorchModule(_PAD_MODULES[args["mode"]], {"padding": padding})


register(
    OpDef(
        name="pad",
        family="reshape",
        doc="pad height and width, each side on its own (torch.nn.ConstantPad2d / ReplicationPad2d / "
        "ReflectionPad2d)",
        params=(
            ParamSpec("left", "int", 0, minimum=0, doc="columns added on the left"),
            ParamSpec("right", "int", 0, minimum=0, doc="columns added on the right"),
            ParamSpec("top", "int", 0, minimum=0, doc="rows added on top"),
            ParamSpec("bottom", "int", 0, minimum=0, doc="rows added at the bottom"),
            ParamSpec(
                "mode", "choice", "constant", choices=tuple(_PAD_MODULES), doc="what the new border holds"
            ),
            ParamSpec("value", "float", 0.0, doc="the border value for mode=constant"),
        ),
        shape=_pad_shape,
        costs=_free,
        rf=lambda shapes, out, args: RFRule((1, 1), (1.0, 1.0), (args["top"], args["left"])),
        torch=_pad_torch,
        label=lambda args: (
            f"pad {args['left']},{args['right']},{args['top']},{args['bottom']}"
            + ("" if args["mode"] == "constant" else f" {args['mode']}")
        ),
        flops_rule="0 (a copy)",
    )
)


def _sample_add_shape(shapes: list[Shape], args: Args) -> Shape:
    if len(shapes) != 2:
        raise OpError(f"sample_add takes two branches (the base, then the one added), got {len(shapes)}")
    base, added = shapes
    if len(base) != 3 or len(added) != 3:
        raise OpError("sample_add needs two [C, H, W] branches")
    for axis, (b, a) in enumerate(zip(base[1:], added[1:], strict=True)):
        big, small = max(a, b), min(a, b)
        if big % small:
            word = "height" if axis == 0 else "width"
            raise OpError(
                f"sample_add: the {word}s {a} and {b} must divide one another (Darknet samples with a stride)",
                branch=1,
            )
    if (added[1] >= base[1]) != (added[2] >= base[2]) or added[1] * base[2] != added[2] * base[1]:
        raise OpError(
            f"sample_add: branch 2 {fmt_shape(added)} is not a strided sample of branch 1 {fmt_shape(base)}",
            branch=1,
        )
    return base


def _sample_add_costs(shapes: list[Shape], out: Shape, args: Args) -> Costs:
    base, added = shapes
    return Costs(flops=min(base[0], added[0]) * min(base[1], added[1]) * min(base[2], added[2]))


register(
    OpDef(
        name="sample_add",
        family="merge",
        doc="Darknet's [shortcut]: add the overlapping channels of a strided sample of branch 2 to branch 1; "
        "the result has branch 1's shape",
        params=(),
        shape=_sample_add_shape,
        costs=_sample_add_costs,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchFunction("sample_add"),
        label=_name_label("sample_add"),
        flops_rule="one per overlapping element",
        variadic=True,
    )
)

MERGES = frozenset(name for name, op in REGISTRY.items() if op.variadic)


def resolve_args(op: OpDef, values: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults, normalise and validate; ``values`` maps parameter names to given values."""
    resolved: dict[str, Any] = {}
    for spec in op.params:
        if spec.name in values:
            resolved[spec.name] = coerce(spec, values[spec.name])
        elif spec.required:
            raise OpError(f"{op.name} needs '{spec.name}' ({spec.doc})", None)
        else:
            resolved[spec.name] = None if spec.default is None else coerce(spec, spec.default)
    if "stride" in resolved and resolved["stride"] is None:
        resolved["stride"] = resolved["kernel"]
    return resolved
