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
    """A rule's complaint; ``param`` names the argument to point at, when one is to blame, ``branch`` the merge
    branch. ``code`` is the diagnostic code the checker reports it with (one of ``cnndsl.diagnostics.CODES``,
    ``op-*`` or ``merge``, documented in docs/language.md): it names the kind of problem so that editors and tools
    act on it without reading the message. Every rule here passes a specific one; ``op`` is the generic
    fallback."""

    def __init__(
        self, message: str, param: str | None = None, branch: int | None = None, *, code: str = "op"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.branch = branch
        self.code = code


# ------------------------------------------------------------------------------------------ schema ---


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its kind decides which values are accepted and how they are normalised.

    Kinds: ``int``; ``float``; ``bool``; ``pair`` (an int or ``[a, b]``, normalised to a tuple);
    ``padding`` (``same``, ``valid``, an int or ``[ph, pw]``); ``choice`` (one of ``choices``);
    ``tensor`` (another tensor of the network, by name: ``resize(like=skip)``); ``shape`` (``[C]`` or
    ``[C, H, W]``, positive integers).

    A ``tensor`` parameter is an extra input, not a value. The elaborator passes the tensor's name as the value
    (kept for labels) and adds the tensor to the node's inputs after the chain input, in parameter order, for those
    given; the shape, cost and lowering rules see its shape in ``shapes[1:]``, and the lowering receives it as an
    extra positional argument.
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

    @property
    def words(self) -> tuple[str, ...]:
        """The bare words the parameter takes (a choice's options; padding's same and valid): what a misspelt
        word is matched against for a did-you-mean."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "padding":
            return ("same", "valid")
        return ()


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
        raise OpError(
            f"{spec.name} must be {bound}, got {_describe(value)}", spec.name, code="op-argument-range"
        )
    if spec.maximum is not None:
        too_big = value >= spec.maximum if spec.exclusive_max else value > spec.maximum
        if too_big:
            word = "below" if spec.exclusive_max else "at most"
            raise OpError(
                f"{spec.name} must be {word} {spec.maximum:g}, got {_describe(value)}",
                spec.name,
                code="op-argument-range",
            )


def _as_int(spec: ParamSpec, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpError(
            f"{spec.name} must be an integer, got {_describe(value)}", spec.name, code="op-argument-type"
        )
    _check_range(spec, value)
    return value


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Validate one argument against its schema and return the normalised value, or raise :class:`OpError`."""
    if spec.kind == "int":
        return _as_int(spec, value)
    if spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OpError(
                f"{spec.name} must be a number, got {_describe(value)}", spec.name, code="op-argument-type"
            )
        if not math.isfinite(value):
            raise OpError(
                f"{spec.name} must be finite, got {_describe(value)}", spec.name, code="op-argument-range"
            )
        _check_range(spec, float(value))
        return float(value)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise OpError(
                f"{spec.name} must be true or false, got {_describe(value)}",
                spec.name,
                code="op-argument-type",
            )
        return value
    if spec.kind == "pair":
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise OpError(
                    f"{spec.name} must be an integer or [h, w], got {_describe(value)}",
                    spec.name,
                    code="op-argument-type",
                )
            return (_as_int(spec, value[0]), _as_int(spec, value[1]))
        number = _as_int(spec, value)
        return (number, number)
    if spec.kind == "padding":
        if value in ("same", "valid"):
            return value
        if isinstance(value, str):
            raise OpError(
                f"padding must be same, valid, an integer or [h, w], got {_describe(value)}",
                spec.name,
                code="op-choice",
            )
        return coerce(ParamSpec(spec.name, "pair", minimum=0), value)
    if spec.kind == "shape":
        if not isinstance(value, list | tuple) or len(value) not in (1, 3):
            raise OpError(
                f"{spec.name} must be a shape [C] or [C, H, W], got {_describe(value)}",
                spec.name,
                code="op-argument-type",
            )
        return tuple(_as_int(ParamSpec(spec.name, "int", minimum=1), v) for v in value)
    if spec.kind == "tensor":
        if not isinstance(value, str) or not value:
            raise OpError(
                f"{spec.name} must name a tensor, got {_describe(value)}", spec.name, code="op-argument-type"
            )
        return value
    if spec.kind == "choice":
        if not isinstance(value, str) or value not in spec.choices:
            options = ", ".join(spec.choices)
            raise OpError(
                f"{spec.name} must be one of {options}, got {_describe(value)}", spec.name, code="op-choice"
            )
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
    padding: tuple[float, float] = (0, 0)


POINTWISE = RFRule()


@dataclass(frozen=True)
class TorchModule:
    """Lower to ``torch.nn.<cls>(**kwargs)``, or with ``home="runtime"`` to ``cnndsl.runtime.<cls>(**kwargs)``: a
    module class written in pure torch (a layer torch.nn lacks, such as ConvNeXt's channel layer norm), whose source
    the standalone exporter copies into the generated file."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    home: str = "nn"


@dataclass(frozen=True)
class TorchFunction:
    """Lower to a call of ``cnndsl.runtime.<name>(*inputs, **kwargs)``: pure torch, copied into standalone files."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Placeholder:
    """A declared input: an argument of ``forward`` (torch.fx's ``placeholder``), no module or function."""


@dataclass(frozen=True)
class TorchParameter:
    """A ``torch.nn.Parameter`` of ``shape`` filled with ``init``, registered on the enclosing block's module (so it
    precedes the block's layers in ``state_dict``, as a torch module's own parameters do); read as a batch of one."""

    shape: tuple[int, ...]
    init: float


Lowering = TorchModule | TorchFunction | Placeholder | TorchParameter

# Traits: facts about an op that later stages act on, so that they never switch on op names.
PROBABILITIES = "probabilities"
"""Turns scores into probabilities (softmax): ``to_torch(logits=True)`` and training drop it at the output."""
KEEPS_SCORES = "keeps_scores"
"""At inference its output means what its input meant (dropout, identity, stochastic depth, softmax): a
classifier is found by looking through it."""
CLASSIFIER = "classifier"
"""A fully connected layer whose output count training may refit to the data's classes (``torch.nn.Linear``)."""
VIEW = "view"
"""Only rearranges or selects values (flatten, chunk, slice)."""
NETWORK_INPUT = "network_input"
"""A declared input of the network: not a layer; each of its positions sees itself (the receptive field's start)."""


@dataclass(frozen=True)
class Formula:
    """One line of ``cnndsl explain``: a formula with the numbers filled in, and the checks that pair the formula's
    value with the registry's figure for the same quantity (``(what, formula value, registry value)``).

    ``section`` places it: ``shape`` (the output size, after the shapes), ``costs`` (params, buffers, MACs; an
    op without cost formulas gets plain counts), ``notes`` (after the receptive field)."""

    text: str
    checks: tuple[tuple[str, float, float], ...] = ()
    section: str = "costs"


ExplainRule = Callable[[list[Shape], Shape, Args, Costs], list[Formula]]


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
    max_branches: int | None = None
    """For a merge (``variadic``) that takes at most this many branches (``sample_add``: 2)."""
    makes_node: bool = True
    """False for ops whose output is their input (identity): the elaborator wires the edge straight through."""
    symbol: str | None = None
    """Drawn as this symbol in a small circle instead of a labelled box (merges: ⊕ ∥ ⊗)."""
    traits: frozenset[str] = frozenset()
    """Facts later stages act on (:data:`PROBABILITIES`, :data:`KEEPS_SCORES`, :data:`CLASSIFIER`, :data:`VIEW`)."""
    explain: ExplainRule | None = None
    """The formulas ``cnndsl explain`` writes out for this op; None: the plain counts."""
    writable: bool = True
    """False for ops a spec cannot write as a layer (``input``, made by the network's declared inputs)."""
    source: bool = False
    """Takes no input tensor (``input``, ``parameter``)."""
    onnx: Callable[[list[Shape], Shape, Args], str | None] | None = None
    """Why a layer with these shapes and arguments has no ONNX form (None: it exports); checked by
    :func:`cnndsl.export.export_onnx` before tracing, so the user gets the reason and the layer's line."""

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
    """The op a spec may write under ``name`` (None for unknown names and for ops a spec cannot write)."""
    op = REGISTRY.get(name)
    return op if op is not None and op.writable else None


def has_trait(name: str, trait: str) -> bool:
    """Whether the registered op ``name`` has ``trait`` (False for unknown names)."""
    op = REGISTRY.get(name)
    return op is not None and trait in op.traits


# ---------------------------------------------------------------------------------------- helpers ---


def numel(shape: Shape) -> int:
    return math.prod(shape)


def fmt_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _spatial(shapes: list[Shape], op: str) -> Shape:
    shape = shapes[0]
    if len(shape) != 3:
        hint = " (a flat vector has no height or width)" if len(shape) == 1 else ""
        raise OpError(f"{op} needs a [C, H, W] input, got {fmt_shape(shape)}{hint}", code="op-input-rank")
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
            raise OpError(f"padding=same needs an odd kernel, got {kh}x{kw}", "padding", code="op-padding")
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
        raise OpError(
            f"{op} kernel {eh}x{ew} is larger than its input {h}x{w}{padded}", "kernel", code="op-output-size"
        )
    oh = _window_out(h, kh, sh, ph, dh, ceil)
    ow = _window_out(w, kw, sw, pw, dw, ceil)
    if oh < 1 or ow < 1:
        raise OpError(
            f"{op} output would be {oh}x{ow}; the input {h}x{w} is too small", "kernel", code="op-output-size"
        )
    return (channels, oh, ow)


def _pool_args(args: Args) -> None:
    kh, kw = args["kernel"]
    ph, pw = _padding(args)
    if ph > kh // 2 or pw > kw // 2:
        raise OpError(
            f"pool padding {ph}x{pw} must be at most half the kernel {kh}x{kw}", "padding", code="op-padding"
        )


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


# ----------------------------------------------------------------------------------- explain rules ---


def _count(value: float) -> str:
    """``1234567`` -> ``1,234,567`` (as ``cnndsl summary`` writes counts)."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


AXES = ("H", "W")


def _window_size_formula(shapes: list[Shape], out: Shape, args: Args) -> list[Formula]:
    """floor((H + 2p − d(k−1) − 1)/s) + 1 per axis, for convolutions and pools."""
    ceil = bool(args.get("ceil", False))
    dilation = args.get("dilation", (1, 1))
    padding = _padding(args)
    name = "ceil" if ceil else "floor"
    lines = [Formula(f"Output size per axis: {name}((H + 2p − d(k−1) − 1)/s) + 1", section="shape")]
    if ceil:
        lines.append(
            Formula(
                "  (ceil mode: a last window that would start in the right padding is dropped, as in torch)",
                section="shape",
            )
        )
    terms = [
        (shapes[0][axis + 1], args["kernel"][axis], args["stride"][axis], padding[axis], dilation[axis])
        for axis in range(2)
    ]
    shown = [("H and W", 0)] if terms[0] == terms[1] else [("H", 0), ("W", 1)]
    for label, axis in shown:
        size, k, s, p, d = terms[axis]
        span = size + 2 * p - d * (k - 1) - 1
        value = (-(-span // s) if ceil else span // s) + 1
        if ceil and (value - 1) * s >= size + p:
            value -= 1
        checks = tuple(
            (f"output {AXES[index]}", value, out[index + 1])
            for index in ((0, 1) if label == "H and W" else (axis,))
        )
        lines.append(
            Formula(
                f"  {label}: {name}(({size} + 2·{p} − {d}·({k}−1) − 1)/{s}) + 1 = {name}({span}/{s}) + 1 = {value}",
                checks,
                "shape",
            )
        )
    return lines


def _ratio(big: int, small: int) -> str:
    if small == 0:
        return "infinitely"
    value = big / small
    return f"{value:,.0f}x" if value >= 10 else f"{value:.3g}x"


def _conv_explain(shapes: list[Shape], out: Shape, args: Args, costs: Costs) -> list[Formula]:
    """Params and MACs, then the dense layer the convolution replaces (local connectivity, weight sharing)."""
    cin, cout, groups = shapes[0][0], out[0], args["groups"]
    kh, kw = args["kernel"]
    bias = 1 if args["bias"] else 0
    per_output = kh * kw * (cin // groups)
    note = "" if bias else "   (bias=false: + 0)"
    _, oh, ow = out
    lines = _window_size_formula(shapes, out, args)
    lines.append(
        Formula(
            f"Params: (kh·kw·Cin/g + bias)·Cout = ({kh}·{kw}·{cin}/{groups} + {bias})·{cout} "
            f"= {_count(costs.params)}{note}",
            (("params", (per_output + bias) * cout, costs.params),),
        )
    )
    lines.append(
        Formula(
            f"MACs: Hout·Wout·Cout · kh·kw·Cin/g = {oh}·{ow}·{cout} · {kh}·{kw}·{cin}/{groups} "
            f"= {_count(oh * ow * cout)} · {_count(per_output)} = {_count(costs.macs)}",
            (("macs", oh * ow * cout * per_output, costs.macs),),
        )
    )
    inputs, outputs = numel(shapes[0]), numel(out)
    dense_weights = inputs * outputs
    dense_params = dense_weights + outputs
    weights = per_output * cout
    notes = [
        f"Versus a dense layer from all {_count(inputs)} input values to all {_count(outputs)} outputs:",
        f"  dense: {_count(inputs)}·{_count(outputs)} = {_count(dense_weights)} weights + {_count(outputs)} biases",
        f"         = {_count(dense_params)} params, {_count(dense_weights)} MACs",
    ]
    lines += [Formula(text, section="notes") for text in notes]
    lines.append(
        Formula(
            f"  conv:  {kh}·{kw}·{cin // groups}·{cout} = {_count(weights)} weights, "
            f"{_count(costs.params)} params, {_count(costs.macs)} MACs",
            (("conv weights", weights, costs.params - (cout if bias else 0)),),
            "notes",
        )
    )
    notes = [
        f"  local connectivity: each output reads {_count(per_output)} of the {_count(inputs)} inputs "
        f"({_ratio(dense_weights, costs.macs)} fewer MACs)",
        f"  weight sharing: one filter bank serves all {_count(oh * ow)} positions "
        f"({_ratio(dense_params, costs.params)} fewer params)",
    ]
    return lines + [Formula(text, section="notes") for text in notes]


def _pool_explain(shapes: list[Shape], out: Shape, args: Args, costs: Costs) -> list[Formula]:
    return _window_size_formula(shapes, out, args)


def _linear_explain(shapes: list[Shape], out: Shape, args: Args, costs: Costs) -> list[Formula]:
    fin, fout = shapes[0][0], out[0]
    bias = 1 if args["bias"] else 0
    return [
        Formula(
            f"Params: (in + bias)·out = ({fin} + {bias})·{fout} = {_count(costs.params)}"
            + ("" if bias else "   (bias=false: + 0)"),
            (("params", (fin + bias) * fout, costs.params),),
        ),
        Formula(f"MACs: in·out = {fin}·{fout} = {_count(costs.macs)}", (("macs", fin * fout, costs.macs),)),
        Formula(
            "A linear layer is the dense layer itself: every input feature connects to every output, "
            "with no weight sharing.",
            section="notes",
        ),
    ]


def _bn_explain(shapes: list[Shape], out: Shape, args: Args, costs: Costs) -> list[Formula]:
    # A scale and a shift per channel, plus running statistics that are not trained.
    channels = shapes[0][0]
    return [
        Formula(
            f"Params: 2·C (scale γ and shift β per channel) = 2·{channels} = {_count(costs.params)}",
            (("params", 2 * channels, costs.params),),
        ),
        Formula(
            f"Buffers (not trained): 2·C + 1 (running mean, running variance, batch counter) = 2·{channels} + 1 "
            f"= {_count(costs.buffers)}",
            (("buffers", 2 * channels + 1, costs.buffers),),
        ),
        Formula("MACs: 0 (only conv and linear count)", (("macs", 0, costs.macs),)),
    ]


# ---------------------------------------------------------------------------------------- sources ---

register(
    OpDef(
        name="input",
        family="input",
        doc="a declared input of the network, [C, H, W] or [F] (written in the network's header, not as a layer)",
        params=(),
        shape=lambda shapes, args: tuple(args["shape"]),
        costs=_free,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: Placeholder(),
        label=_name_label("input"),
        flops_rule="0",
        writable=False,
        source=True,
        traits=frozenset({NETWORK_INPUT}),
    )
)


def _parameter_shape(shapes: list[Shape], args: Args) -> Shape:
    return tuple(args["shape"])


register(
    OpDef(
        name="parameter",
        family="linear",
        doc="a learned tensor that takes no input, e.g. ConvNeXt's [C, 1, 1] layer scale owned by its block; "
        "registered on the enclosing block before the block's layers, as torch registers a block's own parameters",
        params=(
            ParamSpec("shape", "shape", doc="[C], [C, 1, 1] or [C, H, W]"),
            ParamSpec("init", "float", 0.0, doc="initial value of every element"),
        ),
        shape=_parameter_shape,
        costs=lambda shapes, out, args: Costs(params=numel(out)),
        rf=_global_rf,
        torch=lambda shapes, out, args: TorchParameter(tuple(args["shape"]), args["init"]),
        label=lambda args: f"parameter {fmt_shape(args['shape'])}",
        flops_rule="0",
        writable=False,  # written as `param name: [shape] = init` in a block, not as a layer
        source=True,
    )
)


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
        raise OpError(f"groups={groups} does not divide the {c} input channels", "groups", code="op-channels")
    if args["channels"] % groups:
        raise OpError(
            f"groups={groups} does not divide the {args['channels']} output channels",
            "groups",
            code="op-channels",
        )
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
        explain=_conv_explain,
    )
)


# ----------------------------------------------------------------------------- transposed conv ---


def _conv_transpose_shape(shapes: list[Shape], args: Args) -> Shape:
    c, h, w = _spatial(shapes, "conv_transpose")
    groups = args["groups"]
    if c % groups:
        raise OpError(f"groups={groups} does not divide the {c} input channels", "groups", code="op-channels")
    if args["channels"] % groups:
        raise OpError(
            f"groups={groups} does not divide the {args['channels']} output channels",
            "groups",
            code="op-channels",
        )
    for axis in range(2):
        extra, stride, dilation = args["output_padding"][axis], args["stride"][axis], args["dilation"][axis]
        if extra >= stride and extra >= dilation:
            raise OpError(
                f"output_padding {_kxk(args['output_padding'])} must be smaller than the stride "
                f"{_kxk(args['stride'])} or the dilation {_kxk(args['dilation'])} (it picks one of the stride's "
                "possible output sizes)",
                "output_padding",
                code="op-transpose-padding",
            )
    sizes = []
    for axis, size in enumerate((h, w)):
        k, s, p = args["kernel"][axis], args["stride"][axis], args["padding"][axis]
        d, extra = args["dilation"][axis], args["output_padding"][axis]
        sizes.append((size - 1) * s - 2 * p + d * (k - 1) + extra + 1)
    if min(sizes) < 1:
        raise OpError(
            f"conv_transpose output would be {sizes[0]}x{sizes[1]}; the padding "
            f"{_kxk(args['padding'])} takes more than the kernel adds",
            "padding",
            code="op-output-size",
        )
    return (args["channels"], sizes[0], sizes[1])


def _conv_transpose_costs(shapes: list[Shape], out: Shape, args: Args) -> Costs:
    # Every input value is multiplied into a kh·kw window of each of Cout/g output channels.
    kh, kw = args["kernel"]
    per_input = (args["channels"] // args["groups"]) * kh * kw
    macs = numel(shapes[0]) * per_input
    bias = args["channels"] if args["bias"] else 0
    return Costs(
        params=shapes[0][0] * per_input + bias,
        macs=macs,
        flops=2 * macs + (numel(out) if args["bias"] else 0),
    )


def _conv_transpose_rf(shapes: list[Shape], out: Shape, args: Args) -> RFRule:
    # An output position o reads the inputs i with i·s = o + p − d·t for the kernel taps t: about ceil(span/s)
    # inputs around (o + p − d(k−1)/2)/s. As an RF rule over input coordinates: stride 1/s, that many taps, and
    # the padding that centres them there.
    kernel, stride, padding = [], [], []
    for axis in range(2):
        k, s, p, d = (args[name][axis] for name in ("kernel", "stride", "padding", "dilation"))
        taps = -(-(d * (k - 1) + 1) // s)
        kernel.append(taps)
        stride.append(1 / s)
        padding.append((taps - 1) / 2 - (p - d * (k - 1) / 2) / s)
    return RFRule((kernel[0], kernel[1]), (stride[0], stride[1]), (padding[0], padding[1]))


def _conv_transpose_explain(shapes: list[Shape], out: Shape, args: Args, costs: Costs) -> list[Formula]:
    cin, cout = shapes[0][0], out[0]
    kh, kw = args["kernel"]
    groups, bias = args["groups"], 1 if args["bias"] else 0
    lines = [Formula("Output size per axis: (H − 1)·s − 2p + d(k−1) + output_padding + 1", section="shape")]
    for axis, label in enumerate(AXES):
        size = shapes[0][axis + 1]
        k, s, p = args["kernel"][axis], args["stride"][axis], args["padding"][axis]
        d, extra = args["dilation"][axis], args["output_padding"][axis]
        value = (size - 1) * s - 2 * p + d * (k - 1) + extra + 1
        lines.append(
            Formula(
                f"  {label}: ({size} − 1)·{s} − 2·{p} + {d}·({k}−1) + {extra} + 1 = {value}",
                ((f"output {label}", value, out[axis + 1]),),
                "shape",
            )
        )
    per_input = kh * kw * (cout // groups)
    lines.append(
        Formula(
            f"Params: Cin·kh·kw·Cout/g + bias·Cout = {cin}·{kh}·{kw}·{cout}/{groups} + {bias}·{cout} "
            f"= {_count(costs.params)}",
            (("params", cin * per_input + bias * cout, costs.params),),
        )
    )
    _, h, w = shapes[0]
    lines.append(
        Formula(
            f"MACs: H·W·Cin · kh·kw·Cout/g (each input value is spread over a kh·kw window) = {h}·{w}·{cin} · "
            f"{kh}·{kw}·{cout}/{groups} = {_count(costs.macs)}",
            (("macs", h * w * cin * per_input, costs.macs),),
        )
    )
    return lines


def _conv_transpose_label(args: Args) -> str:
    text = f"conv_transpose {_kxk(args['kernel'])}"
    sh, sw = args["stride"]
    if (sh, sw) != (1, 1):
        text += f" ×{sh}" if sh == sw else f" ×{sh}x{sw}"
    if args["groups"] != 1:
        text += f" g{args['groups']}"
    return text + f" → {args['channels']}"


register(
    OpDef(
        name="conv_transpose",
        family="conv",
        doc="transposed 2-d convolution (torch.nn.ConvTranspose2d), the learned upsampling of U-Net and FCN",
        params=(
            ParamSpec("channels", "int", minimum=1, doc="output channels"),
            ParamSpec("kernel", "pair", minimum=1, doc="kernel size: k or [kh, kw]"),
            ParamSpec("stride", "pair", 1, minimum=1, doc="upsampling factor: s or [sh, sw]"),
            ParamSpec(
                "padding", "pair", 0, minimum=0, doc="removed from each side of the output: p or [ph, pw]"
            ),
            ParamSpec(
                "output_padding",
                "pair",
                0,
                minimum=0,
                doc="added to one side of the output; smaller than the stride or the dilation",
            ),
            ParamSpec("dilation", "pair", 1, minimum=1, doc="dilation: d or [dh, dw]"),
            ParamSpec("groups", "int", 1, minimum=1, doc="groups; must divide both channel counts"),
            ParamSpec("bias", "bool", True, doc="learn an additive bias"),
        ),
        shape=_conv_transpose_shape,
        costs=_conv_transpose_costs,
        rf=_conv_transpose_rf,
        torch=lambda shapes, out, args: TorchModule(
            "ConvTranspose2d",
            {
                "in_channels": shapes[0][0],
                "out_channels": args["channels"],
                "kernel_size": tuple(args["kernel"]),
                "stride": tuple(args["stride"]),
                "padding": tuple(args["padding"]),
                "output_padding": tuple(args["output_padding"]),
                "groups": args["groups"],
                "bias": args["bias"],
                "dilation": tuple(args["dilation"]),
            },
        ),
        label=_conv_transpose_label,
        flops_rule="2·MACs, plus one add per output element when bias=true",
        explain=_conv_transpose_explain,
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
        explain=_pool_explain,
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
        explain=_pool_explain,
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


def _adaptive_rf(shapes: list[Shape], out: Shape, args: Args) -> RFRule | None:
    _, h, w = shapes[0]
    oh, ow = args["size"]
    if (oh, ow) == (1, 1):
        return None  # one window over everything: global (squeeze-and-excitation's gate sees the whole input)
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


def _gmp_shape(shapes: list[Shape], args: Args) -> Shape:
    return (_spatial(shapes, "gmp")[0],)


register(
    OpDef(
        name="gmp",
        family="pool",
        doc="global max pool: [C, H, W] -> [C], the largest value of each channel",
        params=(),
        shape=_gmp_shape,
        costs=lambda shapes, out, args: Costs(flops=numel(shapes[0])),
        rf=_global_rf,
        torch=lambda shapes, out, args: TorchFunction("global_max_pool"),
        label=_name_label("gmp"),
        flops_rule="one comparison per input element",
    )
)


def _adaptive_max_shape(shapes: list[Shape], args: Args) -> Shape:
    c = _spatial(shapes, "adaptive_maxpool")[0]
    return (c, *args["size"])


def _adaptive_max_onnx(shapes: list[Shape], out: Shape, args: Args) -> str | None:
    # torch.onnx lowers an adaptive max pool to MaxPool, whose windows all have one size: only sides that divide.
    (_, h, w), (oh, ow) = shapes[0], args["size"]
    if h % oh == 0 and w % ow == 0:
        return None
    return (
        f"ONNX has no adaptive max pool with uneven windows ({h}x{w} -> {oh}x{ow}); "
        "each input side must be a multiple of the output side"
    )


register(
    OpDef(
        name="adaptive_maxpool",
        family="pool",
        doc="adaptive max pool to a fixed size: [C, H, W] -> [C, n, n] (torch.nn.AdaptiveMaxPool2d)",
        params=(ParamSpec("size", "pair", minimum=1, doc="output size: n or [h, w]"),),
        shape=_adaptive_max_shape,
        costs=lambda shapes, out, args: Costs(flops=numel(shapes[0])),
        rf=_adaptive_rf,
        torch=lambda shapes, out, args: TorchModule(
            "AdaptiveMaxPool2d", {"output_size": tuple(args["size"])}
        ),
        label=lambda args: f"adaptive_maxpool → {_kxk(args['size'])}",
        flops_rule="one comparison per input element",
        onnx=_adaptive_max_onnx,
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
        explain=_bn_explain,
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


def _affine_explain(what: str) -> ExplainRule:
    def rule(shapes: list[Shape], out: Shape, args: Args, costs: Costs) -> list[Formula]:
        channels = shapes[0][0]
        if not args["affine"]:
            return [Formula("Params: 0 (affine=false: no scale or shift)", (("params", 0, costs.params),))]
        return [
            Formula(
                f"Params: 2·C (scale γ and shift β per {what}) = 2·{channels} = {_count(costs.params)}",
                (("params", 2 * channels, costs.params),),
            ),
            Formula(
                "Buffers: 0 (statistics come from each sample, at inference too)",
                (("buffers", 0, costs.buffers),),
            ),
        ]

    return rule


def _layer_norm_torch(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
    kwargs = {"normalized_shape": shapes[0][0], "eps": args["eps"], "elementwise_affine": args["affine"]}
    if len(shapes[0]) == 3:
        return TorchModule("LayerNorm2d", kwargs, home="runtime")
    return TorchModule("LayerNorm", kwargs)


register(
    OpDef(
        name="layer_norm",
        family="norm",
        doc="layer normalisation over the channels at each position of [C, H, W] (torchvision's LayerNorm2d, "
        "ConvNeXt), or over the features of [F] (torch.nn.LayerNorm)",
        params=(
            ParamSpec("eps", "float", 1e-5, minimum=0, doc="added to the variance"),
            ParamSpec("affine", "bool", True, doc="learn a scale and a shift per channel"),
        ),
        shape=_same_shape,
        costs=lambda shapes, out, args: Costs(
            params=2 * shapes[0][0] if args["affine"] else 0, flops=(8 if args["affine"] else 6) * numel(out)
        ),
        # Each output reads the channels at its own position only: pointwise in H and W.
        rf=_pointwise_rf,
        torch=_layer_norm_torch,
        label=_name_label("layer_norm"),
        flops_rule="6 per element (mean 1, variance 3, normalise 2), plus 2 with affine=true (scale and shift)",
        explain=_affine_explain("channel"),
    )
)


def _group_norm_shape(shapes: list[Shape], args: Args) -> Shape:
    channels, groups = shapes[0][0], args["groups"]
    if channels % groups:
        raise OpError(
            f"groups={groups} does not divide the {channels} channels", "groups", code="op-channels"
        )
    return shapes[0]


register(
    OpDef(
        name="group_norm",
        family="norm",
        doc="group normalisation: channels in groups, each normalised over its channels and positions "
        "(torch.nn.GroupNorm)",
        params=(
            ParamSpec("groups", "int", minimum=1, doc="channel groups; must divide the channels"),
            ParamSpec("eps", "float", 1e-5, minimum=0, doc="added to the variance"),
            ParamSpec("affine", "bool", True, doc="learn a scale and a shift per channel"),
        ),
        shape=_group_norm_shape,
        costs=lambda shapes, out, args: Costs(
            params=2 * shapes[0][0] if args["affine"] else 0, flops=(8 if args["affine"] else 6) * numel(out)
        ),
        # The statistics of a group cover every position: each output depends on the whole input.
        rf=_global_rf,
        torch=lambda shapes, out, args: TorchModule(
            "GroupNorm",
            {
                "num_groups": args["groups"],
                "num_channels": shapes[0][0],
                "eps": args["eps"],
                "affine": args["affine"],
            },
        ),
        label=lambda args: f"group_norm {args['groups']}",
        flops_rule="6 per element (mean 1, variance 3, normalise 2), plus 2 with affine=true (scale and shift)",
        explain=_affine_explain("channel"),
    )
)

# ------------------------------------------------------------------------------------ activations ---


def _activation(
    name: str,
    cls: str,
    doc: str,
    params: tuple[ParamSpec, ...] = (),
    renamed: Mapping[str, str] | None = None,
) -> None:
    """An elementwise activation lowered to ``torch.nn.<cls>``; ``renamed`` maps a parameter to torch's name."""

    def lower(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
        return TorchModule(cls, {torch_name: args[name] for name, torch_name in (renamed or {}).items()})

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
    {"slope": "negative_slope"},
)
_activation("tanh", "Tanh", "hyperbolic tangent")
_activation("sigmoid", "Sigmoid", "logistic sigmoid")
_activation("silu", "SiLU", "x·sigmoid(x) (swish)")
_activation("gelu", "GELU", "Gaussian error linear unit, x·Φ(x) with the exact erf (torch's default)")
_activation("hardswish", "Hardswish", "x·relu6(x + 3)/6 (MobileNet v3)")
_activation("hardsigmoid", "Hardsigmoid", "relu6(x + 3)/6 (MobileNet v3's squeeze-and-excitation gate)")

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
        traits=frozenset({PROBABILITIES, KEEPS_SCORES}),
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
        traits=frozenset({KEEPS_SCORES}),
    )
)

register(
    OpDef(
        name="stochastic_depth",
        family="regularizer",
        doc="drop a residual branch at random while training (torchvision.ops.StochasticDepth); row: per sample, "
        "batch: the whole batch at once; survivors are scaled by 1/(1 − p); identity at inference",
        params=(
            ParamSpec("p", "float", minimum=0, maximum=1, doc="drop probability"),
            ParamSpec("mode", "choice", "row", choices=("row", "batch"), doc="drop per sample or per batch"),
        ),
        shape=_same_shape,
        costs=_free,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchModule(
            "StochasticDepth", {"p": args["p"], "mode": args["mode"]}, home="runtime"
        ),
        label=lambda args: f"stochastic_depth {args['p']:g}" + (" batch" if args["mode"] == "batch" else ""),
        flops_rule="0 (identity at inference)",
        traits=frozenset({KEEPS_SCORES}),
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
        traits=frozenset({VIEW}),
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
        traits=frozenset({KEEPS_SCORES}),
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


def _channel_shuffle_shape(shapes: list[Shape], args: Args) -> Shape:
    channels, groups = _spatial(shapes, "channel_shuffle")[0], args["groups"]
    if channels % groups:
        raise OpError(
            f"groups={groups} does not divide the {channels} channels", "groups", code="op-channels"
        )
    return shapes[0]


register(
    OpDef(
        name="channel_shuffle",
        family="reshape",
        doc="interleave the channels of groups (ShuffleNet): [g·n] channels read as g×n, transposed to n×g",
        params=(ParamSpec("groups", "int", minimum=1, doc="groups; must divide the channels"),),
        shape=_channel_shuffle_shape,
        costs=_free,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchFunction("channel_shuffle", {"groups": args["groups"]}),
        label=lambda args: f"channel_shuffle {args['groups']}",
        flops_rule="0 (a copy)",
    )
)


def _chunk_shape(shapes: list[Shape], args: Args) -> Shape:
    channels, chunks, index = shapes[0][0], args["chunks"], args["index"]
    if channels % chunks:
        raise OpError(
            f"chunk: {chunks} chunks do not divide the {channels} channels; use slice(start, stop) for uneven parts",
            "chunks",
            code="op-channels",
        )
    if index >= chunks:
        raise OpError(
            f"chunk index {index} is past the last of {chunks} chunks (they count from 0)",
            "index",
            code="op-argument-range",
        )
    return (channels // chunks, *shapes[0][1:])


register(
    OpDef(
        name="chunk",
        family="reshape",
        doc="one of k equal parts of the channels (or features), counted from 0: "
        "`x.chunk(2, dim=1)` is chunk(2, 0) and chunk(2, 1)",
        params=(
            ParamSpec("chunks", "int", minimum=1, doc="equal parts; must divide the channels"),
            ParamSpec("index", "int", minimum=0, doc="which part, from 0"),
        ),
        shape=_chunk_shape,
        costs=_free,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchFunction(
            "channel_chunk", {"chunks": args["chunks"], "index": args["index"]}
        ),
        label=lambda args: f"chunk {args['index']}/{args['chunks']}",
        flops_rule="0 (a view)",
        traits=frozenset({VIEW}),
    )
)


def _slice_shape(shapes: list[Shape], args: Args) -> Shape:
    channels, start, stop = shapes[0][0], args["start"], args["stop"]
    if stop > channels:
        raise OpError(f"slice stop {stop} is past the {channels} channels", "stop", code="op-channels")
    if start >= stop:
        raise OpError(
            f"slice [{start}:{stop}] is empty; start must be below stop", "start", code="op-output-size"
        )
    return (stop - start, *shapes[0][1:])


register(
    OpDef(
        name="slice",
        family="reshape",
        doc="channels (or features) [start:stop] of the input, counted from 0, stop excluded",
        params=(
            ParamSpec("start", "int", minimum=0, doc="first channel taken"),
            ParamSpec("stop", "int", minimum=1, doc="one past the last channel taken"),
        ),
        shape=_slice_shape,
        costs=_free,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchFunction(
            "channel_slice", {"start": args["start"], "stop": args["stop"]}
        ),
        label=lambda args: f"slice {args['start']}:{args['stop']}",
        flops_rule="0 (a view)",
        traits=frozenset({VIEW}),
    )
)


def _resize_shape(shapes: list[Shape], args: Args) -> Shape:
    c, h, w = _spatial(shapes, "resize")
    given = [name for name in ("size", "scale", "like") if args[name] is not None]
    if len(given) != 1:
        raise OpError(
            "resize takes exactly one of size=[h, w], scale=s or like=tensor"
            + (f", got {' and '.join(given)}" if given else ""),
            code="op-argument-conflict",
        )
    if args["align_corners"] and args["mode"] == "nearest":
        raise OpError(
            "align_corners applies to mode=bilinear only", "align_corners", code="op-argument-conflict"
        )
    if args["like"] is not None:
        if len(shapes) < 2 or len(shapes[1]) != 3:
            shown = fmt_shape(shapes[1]) if len(shapes) > 1 else "nothing"
            raise OpError(f"resize like= needs a [C, H, W] tensor, got {shown}", "like", code="op-input-rank")
        return (c, shapes[1][1], shapes[1][2])
    if args["size"] is not None:
        return (c, *args["size"])
    # torch: floor(size · scale), computed in double precision.
    oh, ow = math.floor(h * args["scale"]), math.floor(w * args["scale"])
    if oh < 1 or ow < 1:
        raise OpError(
            f"resize output would be {oh}x{ow}; scale {args['scale']:g} is too small for {h}x{w}",
            "scale",
            code="op-output-size",
        )
    return (c, oh, ow)


def _resize_rf(shapes: list[Shape], out: Shape, args: Args) -> RFRule:
    _, h, w = shapes[0]
    _, oh, ow = out
    taps = 2 if args["mode"] == "bilinear" else 1
    return RFRule((taps, taps), (h / oh, w / ow), (0, 0))


def _resize_torch(shapes: list[Shape], out: Shape, args: Args) -> Lowering:
    kwargs: dict[str, Any] = {"mode": args["mode"]}
    if args["size"] is not None:
        kwargs["size"] = tuple(args["size"])
    elif args["scale"] is not None:
        kwargs["scale"] = args["scale"]
    if args["mode"] == "bilinear":
        kwargs["align_corners"] = args["align_corners"]
    return TorchFunction("resize", kwargs)


def _resize_label(args: Args) -> str:
    if args["like"] is not None:
        target = f"like {args['like']}"
    elif args["size"] is not None:
        target = f"→ {_kxk(args['size'])}"
    else:
        target = f"×{args['scale']:g}"
    return f"resize {target}" + (" bilinear" if args["mode"] == "bilinear" else "")


register(
    OpDef(
        name="resize",
        family="reshape",
        doc="resize H and W to a size, by a scale, or to another tensor's size (torch.nn.functional.interpolate): "
        "resize(size=[h, w]), resize(scale=2), resize(like=skip, mode=bilinear)",
        params=(
            ParamSpec("size", "pair", None, minimum=1, doc="output size: n or [h, w]"),
            ParamSpec("scale", "float", None, minimum=1e-6, doc="factor: the output is floor(H·scale)"),
            ParamSpec("like", "tensor", None, doc="a [C, H, W] tensor whose height and width to take"),
            ParamSpec("mode", "choice", "nearest", choices=("nearest", "bilinear"), doc="interpolation"),
            ParamSpec("align_corners", "bool", False, doc="bilinear only: corner pixels' centres align"),
        ),
        shape=_resize_shape,
        costs=lambda shapes, out, args: Costs(flops=0 if args["mode"] == "nearest" else 9 * numel(out)),
        rf=_resize_rf,
        torch=_resize_torch,
        label=_resize_label,
        flops_rule="nearest: 0 (a copy); bilinear: 9 per output element (three 3-FLOP interpolations)",
    )
)

# ----------------------------------------------------------------------------------------- linear ---


def _linear_shape(shapes: list[Shape], args: Args) -> Shape:
    if len(shapes[0]) != 1:
        raise OpError(
            f"linear needs a flat input, got {fmt_shape(shapes[0])}; add flatten (or gap) before it",
            code="op-input-rank",
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
        explain=_linear_explain,
        traits=frozenset({CLASSIFIER}),
    )
)


def _channel_linear_shape(shapes: list[Shape], args: Args) -> Shape:
    _, h, w = _spatial(shapes, "channel_linear")
    return (args["features"], h, w)


def _channel_linear_costs(shapes: list[Shape], out: Shape, args: Args) -> Costs:
    cin, h, w = shapes[0]
    features = args["features"]
    macs = h * w * cin * features
    bias = features if args["bias"] else 0
    return Costs(params=cin * features + bias, macs=macs, flops=2 * macs + h * w * bias)


def _channel_linear_explain(shapes: list[Shape], out: Shape, args: Args, costs: Costs) -> list[Formula]:
    cin, h, w = shapes[0]
    features, bias = args["features"], 1 if args["bias"] else 0
    return [
        Formula(
            f"Params: (C + bias)·F = ({cin} + {bias})·{features} = {_count(costs.params)} "
            "(a weight of shape [F, C], as torch.nn.Linear)",
            (("params", (cin + bias) * features, costs.params),),
        ),
        Formula(
            f"MACs: H·W · C·F = {h}·{w} · {cin}·{features} = {_count(costs.macs)}",
            (("macs", h * w * cin * features, costs.macs),),
        ),
        Formula(
            "The same linear map at every position: a 1x1 convolution, stored as nn.Linear.", section="notes"
        ),
    ]


register(
    OpDef(
        name="channel_linear",
        family="linear",
        doc="a linear map over the channels at each position of [C, H, W], with torch.nn.Linear's weight "
        "[F, C] (ConvNeXt's permute, Linear, permute back)",
        params=(
            ParamSpec("features", "int", minimum=1, doc="output channels"),
            ParamSpec("bias", "bool", True, doc="learn an additive bias"),
        ),
        shape=_channel_linear_shape,
        costs=_channel_linear_costs,
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchModule(
            "ChannelLinear",
            {"in_features": shapes[0][0], "out_features": args["features"], "bias": args["bias"]},
            home="runtime",
        ),
        label=lambda args: f"channel_linear → {args['features']}",
        flops_rule="2·MACs, plus one add per output element when bias=true",
        explain=_channel_linear_explain,
    )
)


def _channel_scale_shape(shapes: list[Shape], args: Args) -> Shape:
    return _spatial(shapes, "channel_scale")


register(
    OpDef(
        name="channel_scale",
        family="linear",
        doc="multiply each channel by a learned scale, a [C, 1, 1] weight set to init (layer scale; ConvNeXt owns it "
        "on the block instead: param)",
        params=(ParamSpec("init", "float", 1e-6, doc="initial value of every scale"),),
        shape=_channel_scale_shape,
        costs=lambda shapes, out, args: Costs(params=shapes[0][0], flops=numel(out)),
        rf=_pointwise_rf,
        torch=lambda shapes, out, args: TorchModule(
            "ChannelScale", {"channels": shapes[0][0], "init": args["init"]}, home="runtime"
        ),
        label=_name_label("channel_scale"),
        flops_rule="1 per element",
    )
)

# ----------------------------------------------------------------------------------------- merges ---


def _concat_shape(shapes: list[Shape], args: Args) -> Shape:
    first = shapes[0]
    for index, shape in enumerate(shapes[1:], start=1):
        if len(shape) != len(first):
            raise OpError(
                f"concat: branch {index + 1} has shape {fmt_shape(shape)} but branch 1 has {fmt_shape(first)}",
                branch=index,
                code="merge",
            )
        if shape[1:] != first[1:]:
            raise OpError(
                f"concat: branch {index + 1} is {_kxk(shape[1:])} (shape {fmt_shape(shape)}) but branch 1 is "
                f"{_kxk(first[1:])} (shape {fmt_shape(first)}); concat joins channels of equal height and width",
                branch=index,
                code="merge",
            )
    return (sum(s[0] for s in shapes), *first[1:])


def _broadcast(a: Shape, b: Shape) -> Shape | None:
    """The shape of ``a ∘ b``: equal shapes, or a [C] or [C, 1, 1] operand over a [C, H, W] one (one value per
    channel, as squeeze-and-excitation and layer scale use); None when they do not broadcast."""
    if a == b:
        return a
    for small, big in ((a, b), (b, a)):
        if len(big) == 3 and small[0] == big[0] and (len(small) == 1 or small[1:] == (1, 1)):
            return big
    return None


def _broadcast_shape(op: str) -> Callable[[list[Shape], Args], Shape]:
    def shape(shapes: list[Shape], args: Args) -> Shape:
        result = shapes[0]
        for index, branch in enumerate(shapes[1:], start=1):
            merged = _broadcast(result, branch)
            if merged is None:
                raise OpError(
                    f"{op}: branch {index + 1} has shape {fmt_shape(branch)}, which does not match or broadcast "
                    f"over {fmt_shape(result)} (a [C] or [C, 1, 1] branch applies per channel to a [C, H, W] one)",
                    branch=index,
                    code="merge",
                )
            result = merged
        return result

    return shape


def _merge(
    name: str, doc: str, shape: Callable[[list[Shape], Args], Shape], flops: str, symbol: str, function: str
) -> None:
    elementwise = name != "concat"

    def costs(shapes: list[Shape], out: Shape, args: Args) -> Costs:
        return Costs(flops=(len(shapes) - 1) * numel(out) if elementwise else 0)

    register(
        OpDef(
            name=name,
            family="merge",
            doc=doc,
            params=(),
            shape=shape,
            costs=costs,
            rf=_pointwise_rf,
            torch=lambda shapes, out, args: TorchFunction(function),
            label=_name_label(name),
            flops_rule=flops,
            variadic=True,
            symbol=symbol,
        )
    )


_merge(
    "add",
    "elementwise sum of branches: add(A | B | ...); a [C] or [C, 1, 1] branch broadcasts over [C, H, W]",
    _broadcast_shape("add"),
    "(branches − 1) per element",
    "⊕",
    "add",
)
_merge(
    "concat", "join branches along channels: concat(A | B | ...)", _concat_shape, "0 (a copy)", "∥", "concat"
)
_merge(
    "mul",
    "elementwise product of branches; a [C] or [C, 1, 1] branch broadcasts over [C, H, W] (squeeze-and-excitation)",
    _broadcast_shape("mul"),
    "(branches − 1) per element",
    "⊗",
    "broadcast_mul",
)

# ------------------------------------------------------------------------------- imported formats ---
# Ops that other frameworks' model files need in order to be written exactly (see docs/import.md).


def _pad_shape(shapes: list[Shape], args: Args) -> Shape:
    c, h, w = _spatial(shapes, "pad")
    if args["mode"] == "reflect" and (
        max(args["left"], args["right"]) >= w or max(args["top"], args["bottom"]) >= h
    ):
        raise OpError(
            f"reflect padding must be smaller than the input size {h}x{w}", "mode", code="op-padding"
        )
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
        raise OpError(
            f"sample_add takes two branches (the base, then the one added), got {len(shapes)}", code="merge"
        )
    base, added = shapes
    if len(base) != 3 or len(added) != 3:
        raise OpError("sample_add needs two [C, H, W] branches", code="merge")
    for axis, (b, a) in enumerate(zip(base[1:], added[1:], strict=True)):
        big, small = max(a, b), min(a, b)
        if big % small:
            word = "height" if axis == 0 else "width"
            raise OpError(
                f"sample_add: the {word}s {a} and {b} must divide one another (Darknet samples with a stride)",
                branch=1,
                code="merge",
            )
    if (added[1] >= base[1]) != (added[2] >= base[2]) or added[1] * base[2] != added[2] * base[1]:
        raise OpError(
            f"sample_add: branch 2 {fmt_shape(added)} is not a strided sample of branch 1 {fmt_shape(base)}",
            branch=1,
            code="merge",
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
        max_branches=2,
        symbol="⊕",
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
            raise OpError(f"{op.name} needs '{spec.name}' ({spec.doc})", code="missing-argument")
        else:
            resolved[spec.name] = None if spec.default is None else coerce(spec, spec.default)
    if "stride" in resolved and resolved["stride"] is None:
        resolved["stride"] = resolved["kernel"]
    return resolved
