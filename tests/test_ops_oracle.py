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

from cnndsl import ops, runtime
from cnndsl.backend import build_module
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
    ("add", r"branch \d+ has shape", "add needs equal shapes; torch broadcasting would hide wiring mistakes"),
    ("mul", r"does not match or broadcast", "mul broadcasts only a [C] branch over [C, H, W]"),
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
    if rng.random() < 0.08:
        return rng.choice([0, -1, 2.5, True, "bogus", [1, 2, 3], float("inf")])
    if spec.kind == "int":
        if spec.name == "groups":
            return rng.choice([1, 1, 2, 3, 4, shape[0]])
        if spec.name == "channels":
            return rng.choice([1, 2, 3, 4, 6, 8, 12])
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
        if spec.required or rng.random() < 0.6:
            values[spec.name] = random_value(spec, rng, shape)
    return values


def branch_shapes(rng: random.Random, first: Shape) -> list[Shape]:
    """2-5 branches for a merge: copies of the first shape, some perturbed (channels, size, rank, [C] vectors)."""
    shapes = [first]
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.55:
            shape = first
        elif kind < 0.7:
            shape = (rng.randint(1, 8), *first[1:])
        elif kind < 0.8 and len(first) == 3:
            shape = (first[0], rng.randint(1, 12), first[2])
        elif kind < 0.9:
            shape = (first[0],)
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


def _torch_layer(lowering: ops.Lowering) -> Any:
    if isinstance(lowering, TorchModule):
        return build_module(lowering).eval()
    assert isinstance(lowering, TorchFunction)
    function = getattr(runtime, lowering.name)
    return lambda *xs: function(*xs, **lowering.kwargs)


def run_case(op: ops.OpDef, shapes: list[Shape], values: dict[str, Any], tally: Tally) -> None:
    where = f"{op.name}({values}) on {shapes}"
    try:
        args = ops.resolve_args(op, values)
    except OpError:
        tally.schema_rejected += 1
        return
    try:
        out: Shape | None = op.shape(list(shapes), args)
        refusal = ""
    except OpError as error:
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
    tally.agreed_ok += 1
    tally.branches.add(len(shapes))


@pytest.mark.parametrize("name", sorted(ops.REGISTRY))
def test_registry_agrees_with_torch(name: str) -> None:
    op = ops.REGISTRY[name]
    rng = random.Random(zlib.crc32(name.encode()))
    tally = Tally()
    for _ in range(CASES):
        first = random_shape(rng)
        shapes = branch_shapes(rng, first) if op.variadic else [first]
        run_case(op, shapes, random_args(op, rng, first), tally)
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
        "softmax",
        "dropout",
        "identity",
        "flatten",
        "bn",
    ):
        assert tally.agreed_error + sum(tally.deliberate.values()) > 0, f"{name}: no refused shapes: {tally}"
    if op.variadic:
        assert max(tally.branches) >= 4, f"{name}: merges with several branches were not covered: {tally}"


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
    """The oracle can fail: a conv whose shape rule is off by one, or whose cost rule forgets the bias."""
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
