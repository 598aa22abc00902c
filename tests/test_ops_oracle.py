"""PyTorch as the oracle for the op registry: for every op, hundreds of seeded random argument sets and input
shapes (valid and invalid). Whenever the registry's shape rule accepts, the torch layer built from the registry's
own lowering must produce exactly that shape and hold exactly the parameters and buffers the cost rule counts.
Whenever torch refuses, the shape rule must have refused too (an OpError, never another exception).

Where the rule refuses what torch would run, that must be one of the language's deliberate restrictions, listed
in DELIBERATE below with the reason; anything else is reported as a registry disagreement.
"""

from __future__ import annotations

import random
import re
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torchvision
from torch.nn import functional as F  # noqa: N812 - torch's own spelling

from cnndsl import ops, runtime
from cnndsl.backend import build_module, build_parameter
from cnndsl.diagnostics import CODES
from cnndsl.ops import OpError, ParamSpec, Shape, TorchFunction, TorchModule

CASES = 500
BATCH = 2

# Rule-only refusals that are language design, not disagreements with torch: (op, message pattern, why).
DELIBERATE: list[tuple[str, str, str]] = [
    (
        "*",
        r"needs a \[C, H, W\] input",
        "spatial ops take [C, H, W]; torch would read (N, F) as unbatched (C, H, W)",
    ),
    ("linear", r"needs a flat input", "linear on a map must be spelled with flatten or gap first"),
    (
        "*",
        r"does not match or broadcast",
        "add and mul broadcast only a [C] or [C, 1, 1] branch over [C, H, W]; torch's general broadcasting "
        "would hide wiring mistakes",
    ),
    ("concat", r"branch \d+ (has shape|is)", "concat along channels only"),
    (
        "conv",
        r"padding=same needs an odd kernel",
        "same is symmetric padding; torch pads even kernels unevenly",
    ),
    (
        "*",
        r"kernel \d+x\d+ is larger than its input",
        "a window past the input is refused, though ceil=true lets torch run it",
    ),
    (
        "conv_transpose",
        r"output would be \d+x\d+",
        "an empty output is refused; torch returns one with no rows",
    ),
    ("chunk", r"chunks do not divide", "chunk makes equal parts; uneven parts are written with slice"),
    ("slice", r"is past the \d+ channels", "a slice past the last channel is refused; torch clamps it"),
    ("slice", r"is empty", "an empty slice is refused; torch returns a tensor with no channels"),
    ("resize", r"exactly one of", "resize takes one target; with like= the lowering ignores size"),
    ("resize", r"align_corners applies to mode=bilinear only", "the lowering drops it for nearest"),
    ("resize", r"like= needs a \[C, H, W\] tensor", "a flat like= tensor has no height and width to copy"),
    (
        "sample_add",
        r"must divide one another|is not a strided sample|takes two branches|needs two \[C, H, W\]",
        "Darknet's shortcut adds a strided sample of one [C, H, W] map to another (it asserts the ratio); "
        "the slicing would run on any sizes",
    ),
]


def _deliberate(op: str, message: str) -> str | None:
    for name, pattern, why in DELIBERATE:
        if name in ("*", op) and re.search(pattern, message):
            return why
    return None


# ------------------------------------------------------------------------------------ generators ---


def random_shape(rng: random.Random) -> Shape:
    if rng.random() < 0.8:
        return (rng.randint(1, 8), rng.randint(1, 12), rng.randint(1, 12))
    return (rng.randint(1, 16),)


def random_value(spec: ParamSpec, rng: random.Random, shape: Shape) -> Any:
    """Mostly plausible values, sometimes invalid ones (wrong type, out of range)."""
    if spec.kind == "tensor":
        return "other"  # run_case gives the op a second input for it
    if rng.random() < 0.08:
        return rng.choice([0, -1, 2.5, True, "bogus", [1, 2, 3], float("inf")])
    if spec.kind == "int":
        if spec.name == "groups":
            return rng.choice([1, 1, 2, 3, 4, shape[0]])
        if spec.name == "channels":
            return rng.choice([1, 2, 3, 4, 6, 8, 12])
        if spec.name == "chunks":
            return rng.choice([1, 2, 2, 3, 4])
        if spec.name == "index":
            return rng.randint(0, 3)
        if spec.name in ("start", "stop"):
            return rng.randint(0, shape[0] + 1)
        return rng.randint(1, 6)
    if spec.kind == "float":
        low = spec.minimum if spec.minimum is not None else -2.0
        high = spec.maximum if spec.maximum is not None else 2.0
        return rng.choice([low, rng.uniform(low, high), high])
    if spec.kind == "bool":
        return rng.random() < 0.5
    if spec.kind == "pair":
        low = 1 if spec.minimum is None else int(spec.minimum)
        if spec.name in ("kernel", "size"):
            high = 5
        elif spec.name == "output_padding":
            high = 2
        elif spec.name == "dilation":
            high = 3
        else:
            high = 3
        if rng.random() < 0.3:
            return [rng.randint(low, high), rng.randint(low, high)]
        return rng.randint(low, high)
    if spec.kind == "padding":
        return rng.choice(["same", "valid", 0, 1, 2, 3, [0, 1], [2, 1]])
    if spec.kind == "choice":
        return rng.choice(spec.choices)
    raise AssertionError(f"no generator for parameter kind {spec.kind}")


def random_args(op: ops.OpDef, rng: random.Random, shape: Shape) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in op.params:
        if spec.required and rng.random() < 0.02:
            continue  # a missing required argument
        # Optional arguments that default to None (resize's size / scale / like) pick one target most often.
        chance = 0.35 if spec.default is None else 0.6
        if spec.required or rng.random() < chance:
            values[spec.name] = random_value(spec, rng, shape)
    return values


def tensor_shapes(op: ops.OpDef, values: dict[str, Any], rng: random.Random) -> list[Shape]:
    """The extra inputs of ``tensor`` parameters that were given, in parameter order."""
    return [random_shape(rng) for spec in op.params if spec.kind == "tensor" and spec.name in values]


def branch_shapes(rng: random.Random, first: Shape) -> list[Shape]:
    """2-5 branches for a merge: copies of the first shape, some perturbed (channels, size, rank, [C] vectors)."""
    shapes = [first]
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.55:
            shape = first
        elif kind < 0.7:
            shape = (rng.randint(1, 8), *first[1:])
        elif kind < 0.75 and len(first) == 3:
            shape = (first[0], rng.randint(1, 12), first[2])
        elif kind < 0.82:
            shape = (first[0],)
        elif kind < 0.9:
            shape = (first[0], 1, 1)
        else:
            shape = random_shape(rng)
        shapes.append(shape)
    return shapes


# -------------------------------------------------------------------------------------- the oracle ---


@dataclass
class Tally:
    schema_rejected: int = 0
    agreed_ok: int = 0
    agreed_error: int = 0
    deliberate: dict[str, int] = field(default_factory=dict)
    branches: set[int] = field(default_factory=set)
    compared: int = 0


def _torch_layer(lowering: ops.Lowering) -> Any:
    if isinstance(lowering, TorchModule):
        return build_module(lowering).eval()
    assert isinstance(lowering, TorchFunction)
    function = getattr(runtime, lowering.name)
    return lambda *xs: function(*xs, **lowering.kwargs)


# ------------------------------------------------------------------------------- direct torch calls ---

Reference = Any  # (layer built from the lowering, float64 inputs, resolved args) -> the tensor torch computes


def _per_channel(x: torch.Tensor) -> torch.Tensor:
    """A (N, C) operand as (N, C, 1, 1), the way a [C] branch meets a [C, H, W] one."""
    return x[:, :, None, None] if x.dim() == 2 else x


def _broadcast_reference(combine: Any) -> Reference:
    def reference(layer: Any, xs: list[torch.Tensor], args: Any) -> torch.Tensor:
        if any(x.dim() == 4 for x in xs):
            xs = [_per_channel(x) for x in xs]
        result = xs[0]
        for x in xs[1:]:
            result = combine(result, x)
        return result

    return reference


def _channel_linear_reference(layer: Any, xs: list[torch.Tensor], args: Any) -> torch.Tensor:
    # torchvision's ConvNeXt block: Permute, nn.Linear, Permute, with the same weights.
    from torchvision.ops.misc import Permute

    linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None).double()
    linear.load_state_dict(layer.state_dict())
    return torch.nn.Sequential(Permute([0, 2, 3, 1]), linear, Permute([0, 3, 1, 2]))(xs[0])


def _layer_norm_reference(layer: Any, xs: list[torch.Tensor], args: Any) -> torch.Tensor:
    if xs[0].dim() == 2:
        return F.layer_norm(xs[0], (xs[0].shape[1],), layer.weight, layer.bias, args["eps"])
    from torchvision.models.convnext import LayerNorm2d

    norm = LayerNorm2d(xs[0].shape[1], eps=args["eps"], elementwise_affine=args["affine"]).double()
    norm.load_state_dict(layer.state_dict())
    return norm(xs[0])


def _resize_reference(layer: Any, xs: list[torch.Tensor], args: Any) -> torch.Tensor:
    size = tuple(xs[1].shape[-2:]) if args["like"] else args["size"]
    corners = args["align_corners"] if args["mode"] == "bilinear" else None
    return F.interpolate(
        xs[0], size=size, scale_factor=args["scale"], mode=args["mode"], align_corners=corners
    )


def _conv_transpose_reference(layer: Any, xs: list[torch.Tensor], args: Any) -> torch.Tensor:
    return F.conv_transpose2d(
        xs[0],
        layer.weight,
        layer.bias,
        args["stride"],
        args["padding"],
        args["output_padding"],
        args["groups"],
        args["dilation"],
    )


REFERENCES: dict[str, Reference] = {
    "hardswish": lambda layer, xs, args: F.hardswish(xs[0]),
    "hardsigmoid": lambda layer, xs, args: F.hardsigmoid(xs[0]),
    "gelu": lambda layer, xs, args: F.gelu(xs[0]),
    "silu": lambda layer, xs, args: F.silu(xs[0]),
    "layer_norm": _layer_norm_reference,
    "group_norm": lambda layer, xs, args: F.group_norm(
        xs[0], args["groups"], layer.weight, layer.bias, args["eps"]
    ),
    "stochastic_depth": lambda layer, xs, args: torchvision.ops.stochastic_depth(
        xs[0], args["p"], args["mode"], training=False
    ),
    "channel_shuffle": lambda layer, xs, args: torchvision.models.shufflenetv2.channel_shuffle(
        xs[0], args["groups"]
    ),
    "chunk": lambda layer, xs, args: xs[0].chunk(args["chunks"], dim=1)[args["index"]],
    "slice": lambda layer, xs, args: xs[0][:, args["start"] : args["stop"]],
    "conv_transpose": _conv_transpose_reference,
    "resize": _resize_reference,
    "channel_linear": _channel_linear_reference,
    "channel_scale": lambda layer, xs, args: layer.weight * xs[0],
    "gmp": lambda layer, xs, args: F.adaptive_max_pool2d(xs[0], 1).flatten(1),
    "gap": lambda layer, xs, args: F.adaptive_avg_pool2d(xs[0], 1).flatten(1),
    "adaptive_maxpool": lambda layer, xs, args: F.adaptive_max_pool2d(xs[0], args["size"]),
    "add": _broadcast_reference(torch.add),
    "mul": _broadcast_reference(torch.mul),
}


def _compare_outputs(
    op: ops.OpDef, lowering: ops.Lowering, shapes: list[Shape], args: Any, where: str
) -> None:
    """In float64, the registry's lowering and the direct torch call give identical values."""
    layer = _torch_layer(lowering)
    if isinstance(layer, torch.nn.Module):
        layer = layer.double()
        with torch.no_grad():
            for (
                parameter
            ) in layer.parameters():  # not the default init: a scale of 1 and a shift of 0 hide bugs
                parameter.copy_(torch.randn_like(parameter))
    inputs = [torch.randn(BATCH, *shape, dtype=torch.float64) for shape in shapes]
    with torch.no_grad():
        ours = layer(*inputs)
        theirs = REFERENCES[op.name](layer, inputs, args)
    # Bit for bit; NaN where both give NaN (eps=0 over a single value divides 0 by 0 in both).
    same = ours.shape == theirs.shape and bool(((ours == theirs) | (ours.isnan() & theirs.isnan())).all())
    assert same, f"{where}: the lowering's values differ from torch"


# The codes a refusal may carry: a specific op-* one (or merge, missing-argument), never the generic "op".
SPECIFIC = {code for code in CODES if code.startswith("op-")} | {"merge", "missing-argument"}


def run_case(op: ops.OpDef, shapes: list[Shape], values: dict[str, Any], tally: Tally) -> None:
    where = f"{op.name}({values}) on {shapes}"
    try:
        args = ops.resolve_args(op, values)
    except OpError as error:
        assert error.code in SPECIFIC, f"{where}: refused with the code {error.code!r}: {error.message}"
        tally.schema_rejected += 1
        return
    try:
        out: Shape | None = op.shape(list(shapes), args)
        refusal = ""
    except OpError as error:
        assert error.code in SPECIFIC, f"{where}: refused with the code {error.code!r}: {error.message}"
        out, refusal = None, error.message
    # Build the layer from the registry's lowering. It may refuse arguments the rule refused; never others.
    try:
        lowering = op.torch(list(shapes), out if out is not None else shapes[0], args)
    except OpError as error:
        assert out is None, f"{where}: the rule accepted but the lowering raised {error.message}"
        tally.agreed_error += 1
        return
    torch_error: Exception | None = None
    params = buffers = 0
    try:
        layer = _torch_layer(lowering)
        if isinstance(layer, torch.nn.Module):
            params = sum(p.numel() for p in layer.parameters())
            buffers = sum(b.numel() for b in layer.buffers())
        with torch.no_grad():
            result = layer(*(torch.randn(BATCH, *shape) for shape in shapes))
    except Exception as error:  # noqa: BLE001 - any torch refusal counts
        torch_error = error
    if torch_error is not None:
        assert out is None, f"{where}: the rule gives {out} but torch raises {torch_error}"
        tally.agreed_error += 1
        return
    if out is None:
        why = _deliberate(op.name, refusal)
        assert why, f"{where}: torch gives {tuple(result.shape)} but the rule refuses: {refusal}"
        tally.deliberate[why] = tally.deliberate.get(why, 0) + 1
        return
    assert tuple(result.shape) == (BATCH, *out), (
        f"{where}: rule says {out}, torch gives {tuple(result.shape)}"
    )
    costs = op.costs(list(shapes), out, args)
    assert (costs.params, costs.buffers) == (params, buffers), (
        f"{where}: costs say {costs.params} params / {costs.buffers} buffers, torch has {params} / {buffers}"
    )
    assert min(costs.params, costs.buffers, costs.macs, costs.flops) >= 0, where
    op.rf(list(shapes), out, args)  # must not raise on an accepted case
    assert isinstance(op.label(args), str) and op.label(args)
    if op.name in REFERENCES:
        _compare_outputs(op, lowering, shapes, args, where)
        tally.compared += 1
    tally.agreed_ok += 1
    tally.branches.add(len(shapes))


WRITABLE = sorted(name for name, op in ops.REGISTRY.items() if op.writable)


@pytest.mark.parametrize("name", WRITABLE)
def test_registry_agrees_with_torch(name: str) -> None:
    op = ops.REGISTRY[name]
    rng = random.Random(zlib.crc32(name.encode()))
    tally = Tally()
    for _ in range(CASES):
        first = random_shape(rng)
        values = random_args(op, rng, first)
        shapes = branch_shapes(rng, first) if op.variadic else [first, *tensor_shapes(op, values, rng)]
        run_case(op, shapes, values, tally)
    # The generator must exercise both sides, or the test proves nothing for this op.
    assert tally.agreed_ok >= CASES // 10, f"{name}: only {tally.agreed_ok} accepted cases: {tally}"
    if op.params:
        assert tally.schema_rejected > 0, f"{name}: no invalid arguments were generated"
    if name not in (
        "relu",
        "relu6",
        "leaky_relu",
        "tanh",
        "sigmoid",
        "silu",
        "gelu",
        "hardswish",
        "hardsigmoid",
        "layer_norm",
        "stochastic_depth",
        "softmax",
        "dropout",
        "identity",
        "flatten",
        "bn",
    ):
        assert tally.agreed_error + sum(tally.deliberate.values()) > 0, f"{name}: no refused shapes: {tally}"
    if op.variadic:
        assert max(tally.branches) >= min(4, op.max_branches or 4), (
            f"{name}: merges with several branches were not covered: {tally}"
        )
    if name in REFERENCES:
        assert tally.compared >= CASES // 10, f"{name}: too few output comparisons: {tally}"


def test_deliberate_restrictions_are_real() -> None:
    """Each listed restriction is one torch would indeed run (so it is a language choice, stated on purpose)."""
    cases = [
        ("linear", [(3, 4, 4)], {"features": 4}),
        ("add", [(4, 5, 5), (1, 5, 5)], {}),
        ("mul", [(4, 5, 5), (1, 5, 5)], {}),
        ("conv", [(2, 6, 6)], {"channels": 2, "kernel": 2, "padding": "same"}),
        ("avgpool", [(4, 10, 2)], {"kernel": 4, "ceil": True}),
    ]
    for name, shapes, values in cases:
        op = ops.REGISTRY[name]
        args = ops.resolve_args(op, values)
        with pytest.raises(OpError) as refused:
            op.shape(shapes, args)
        assert _deliberate(name, refused.value.message), refused.value.message
    # ...and torch runs them: linear over the last axis, broadcasting add/mul, asymmetric same padding, a
    # ceil-mode window hanging past the input.
    assert torch.nn.Linear(4, 4)(torch.randn(2, 3, 4, 4)).shape == (2, 3, 4, 4)
    assert (torch.randn(2, 4, 5, 5) + torch.randn(2, 1, 5, 5)).shape == (2, 4, 5, 5)
    assert (torch.randn(2, 4, 5, 5) * torch.randn(2, 1, 5, 5)).shape == (2, 4, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes that even-kernel same padding copies the input
        assert torch.nn.Conv2d(2, 2, 2, padding="same")(torch.randn(1, 2, 6, 6)).shape == (1, 2, 6, 6)
    assert torch.nn.AvgPool2d(4, ceil_mode=True)(torch.randn(1, 4, 10, 2)).shape == (1, 4, 3, 1)


def test_oracle_catches_a_wrong_rule() -> None:
    """The oracle can fail: a conv whose shape rule is off by one, whose cost rule forgets the bias, or whose
    refusal carries no specific code."""
    import dataclasses

    conv = ops.REGISTRY["conv"]
    values = {"channels": 4, "kernel": 3, "bias": True}

    def off_by_one(shapes: list[Shape], args: Any) -> Shape:
        c, h, w = conv.shape(shapes, args)
        return (c, h + 1, w)

    def no_bias(shapes: list[Shape], out: Shape, args: Any) -> ops.Costs:
        return dataclasses.replace(conv.costs(shapes, out, args), params=args["channels"] * shapes[0][0] * 9)

    run_case(conv, [(3, 8, 8)], values, Tally())  # the real rule passes
    with pytest.raises(AssertionError, match="rule says"):
        run_case(dataclasses.replace(conv, shape=off_by_one), [(3, 8, 8)], values, Tally())
    with pytest.raises(AssertionError, match="costs say 108 params"):
        run_case(dataclasses.replace(conv, costs=no_bias), [(3, 8, 8)], values, Tally())

    def generic_refusal(shapes: list[Shape], args: Any) -> Shape:
        raise OpError("refused")  # no code: the generic "op", which names no kind of problem

    # The real rule refuses a 3x3 kernel on 2x2 with its own code.
    run_case(conv, [(3, 2, 2)], values, Tally())
    with pytest.raises(AssertionError, match="refused with the code 'op'"):
        run_case(dataclasses.replace(conv, shape=generic_refusal), [(3, 2, 2)], values, Tally())


def test_oracle_catches_a_wrong_lowering() -> None:
    """The output comparison can fail: a channel shuffle lowered with the groups transposed, a layer norm over the
    width instead of the channels."""
    import dataclasses

    shuffle = ops.REGISTRY["channel_shuffle"]
    run_case(shuffle, [(6, 4, 4)], {"groups": 2}, Tally())  # the real lowering passes

    def transposed(shapes: list[Shape], out: Shape, args: Any) -> ops.Lowering:
        return TorchFunction("channel_shuffle", {"groups": shapes[0][0] // args["groups"]})

    with pytest.raises(AssertionError, match="values differ"):
        run_case(dataclasses.replace(shuffle, torch=transposed), [(6, 4, 4)], {"groups": 2}, Tally())

    norm = ops.REGISTRY["layer_norm"]

    def over_width(shapes: list[Shape], out: Shape, args: Any) -> ops.Lowering:
        return TorchModule("LayerNorm", {"normalized_shape": shapes[0][2], "eps": args["eps"]})

    with pytest.raises(
        AssertionError
    ):  # a [4] weight where torch's has [C]: values (or parameter counts) differ
        run_case(dataclasses.replace(norm, torch=over_width), [(4, 4, 4)], {}, Tally())


def test_new_deliberate_restrictions_are_real() -> None:
    """The refusals listed for the newer ops are ones torch would run."""
    cases = [
        ("chunk", [(5, 4, 4)], {"chunks": 2, "index": 0}),
        ("slice", [(4, 4, 4)], {"start": 2, "stop": 6}),
        ("slice", [(4, 4, 4)], {"start": 3, "stop": 3}),
        ("resize", [(4, 4, 4), (4, 8, 8)], {"like": "other", "size": 3}),
        ("resize", [(4, 4, 4)], {"size": 8, "align_corners": True}),
        ("conv_transpose", [(2, 2, 6)], {"channels": 3, "kernel": [1, 3], "padding": 1}),
    ]
    for name, shapes, values in cases:
        op = ops.REGISTRY[name]
        with pytest.raises(OpError) as refused:
            op.shape(shapes, ops.resolve_args(op, values))
        assert _deliberate(name, refused.value.message), refused.value.message
    x = torch.randn(2, 5, 4, 4)
    assert x.chunk(2, dim=1)[0].shape == (2, 3, 4, 4)  # uneven parts
    assert x[:, 2:7].shape == (2, 3, 4, 4) and x[:, 3:3].shape == (2, 0, 4, 4)
    assert runtime.resize(x, torch.randn(2, 5, 8, 8), size=(3, 3)).shape == (2, 5, 8, 8)
    # (torch refuses this for a batch of one, but runs it for two)
    assert torch.nn.ConvTranspose2d(2, 3, (1, 3), padding=1)(torch.randn(2, 2, 2, 6)).shape == (2, 3, 0, 6)


def test_stochastic_depth_trains_as_torchvision() -> None:
    """While training, the runtime layer drops exactly what torchvision.ops.stochastic_depth drops, given the same
    random state, over many random probabilities, modes and shapes; at inference both are the identity."""
    rng = random.Random(7)
    op = ops.REGISTRY["stochastic_depth"]
    dropped = kept = 0
    for seed in range(300):
        shape = random_shape(rng)
        args = ops.resolve_args(
            op, {"p": rng.choice([0.0, 1.0, rng.random()]), "mode": rng.choice(["row", "batch"])}
        )
        lowering = op.torch([shape], shape, args)
        assert isinstance(lowering, TorchModule)
        layer = build_module(lowering).train()
        x = torch.randn(4, *shape, dtype=torch.float64)
        torch.manual_seed(seed)
        ours = layer(x)
        torch.manual_seed(seed)
        theirs = torchvision.ops.stochastic_depth(x, args["p"], args["mode"], training=True)
        assert torch.equal(ours, theirs), (args, shape)
        assert torch.equal(layer.eval()(x), x)
        zero = (ours.flatten(1) == 0).all(dim=1)
        dropped += int(zero.sum())
        kept += int((~zero).sum())
    assert dropped > 100 and kept > 100  # both outcomes happened


def test_parameter_lowering_matches_its_costs() -> None:
    """A block's own parameter: the registry's shape and count against the nn.Parameter it lowers to."""
    op = ops.REGISTRY["parameter"]
    for shape, init in [((6,), 0.0), ((6, 1, 1), 1e-6), ((3, 4, 5), -2.5)]:
        args = ops.resolve_args(op, {"shape": list(shape), "init": init})
        out = op.shape([], args)
        lowering = op.torch([], out, args)
        assert isinstance(lowering, ops.TorchParameter)
        parameter = build_parameter(lowering)
        assert tuple(parameter.shape) == out == shape
        assert op.costs([], out, args).params == parameter.numel()
        assert bool((parameter == init).all()) and parameter.requires_grad
    for bad in ([0, 1, 1], [2, 3], "x", [1.5]):
        with pytest.raises(OpError):
            ops.resolve_args(op, {"shape": bad})


# A spec line, the text the error must point at (its first occurrence on the line), words of the message, the code.
LOCATED = [
    (
        "conv_transpose(4, 3, stride=2, output_padding=2)",
        "2)",
        "output_padding 2x2 must be smaller than the stride",
        "op-transpose-padding",
    ),
    (
        "conv_transpose(4, 3, stride=[2, 1], output_padding=[1, 1])",
        "[1, 1]",
        "smaller than the stride 2x1",
        "op-transpose-padding",
    ),
    ("conv_transpose(4, 3, padding=9)", "9", "takes more than the kernel adds", "op-output-size"),
    ("chunk(3, 0)", "3", "3 chunks do not divide the 8 channels", "op-channels"),
    ("chunk(2, 2)", "2)", "chunk index 2 is past the last of 2 chunks", "op-argument-range"),
    ("slice(2, 20)", "20", "slice stop 20 is past the 8 channels", "op-channels"),
    ("slice(5, 5)", "5, 5", "slice [5:5] is empty", "op-output-size"),
    ("group_norm(3)", "3", "groups=3 does not divide the 8 channels", "op-channels"),
    ("channel_shuffle(5)", "5", "groups=5 does not divide the 8 channels", "op-channels"),
    (
        "resize(size=4, scale=2)",
        "resize",
        "exactly one of size=[h, w], scale=s or like=tensor, got size and scale",
        "op-argument-conflict",
    ),
    ("resize()", "resize", "exactly one of", "op-argument-conflict"),
    (
        "resize(size=4, align_corners=true)",
        "true",
        "align_corners applies to mode=bilinear only",
        "op-argument-conflict",
    ),
    ("resize(scale=0.01)", "0.01", "resize output would be 0x0", "op-output-size"),
    ("stochastic_depth(1.5)", "1.5", "p must be at most 1", "op-argument-range"),
    ("stochastic_depth(0.1, mode=rows)", "rows", "mode must be one of row, batch", "op-choice"),
    (
        "gap -> channel_linear(4)",
        "channel_linear",
        "channel_linear needs a [C, H, W] input, got [8]",
        "op-input-rank",
    ),
    (
        "mul(identity | conv(4, 1) -> adaptive_avgpool(1))",
        "conv(4, 1) -> adaptive_avgpool(1)",
        "broadcast",
        "merge",
    ),
    (
        "add(identity | adaptive_avgpool([1, 2]))",
        "adaptive_avgpool([1, 2])",
        "does not match or broadcast",
        "merge",
    ),
]


@pytest.mark.parametrize(("line", "at", "words", "code"), LOCATED, ids=[case[0] for case in LOCATED])
def test_new_op_errors_are_located(line: str, at: str, words: str, code: str) -> None:
    """A bad use of a newer op is a located error on the argument (or branch) to blame, with the code that names
    what is wrong, never a traceback."""
    import cnndsl

    text = f"network Bad(x: [8, 10, 10]) {{\n    {line}\n}}\n"
    with pytest.raises(cnndsl.SpecError) as info:
        cnndsl.loads(text, "bad.cnn")
    [diagnostic] = info.value.diagnostics
    assert words in diagnostic.message
    assert diagnostic.code == code, diagnostic.message
    assert (diagnostic.span.line, diagnostic.span.column) == (2, 5 + line.index(at)), diagnostic.message
