"""Language v2 (issue 10): expressions, conditions, repetition index, multi-tensor blocks, block-owned params,
``shortcut`` through the ordinary layer path. Python and torch/torchvision are the oracles."""

from __future__ import annotations

import random
import textwrap

import pytest
import torch
from torch import nn

import cnndsl
from cnndsl import SpecError


def net(text: str, **kwargs: object) -> cnndsl.Network:
    return cnndsl.loads(textwrap.dedent(text), "t.cnn", **kwargs)  # type: ignore[arg-type]


def errors(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        net(text, **kwargs)
    return [f"{d.line}:{d.column}: {d.message}" for d in info.value.diagnostics]


def value_of(expr: str, prelude: str = "") -> int:
    """The integer a value expression evaluates to, read back as the channel count of a 1x1 conv."""
    n = net(f"{prelude}\nnetwork N(x: [1, 1, 1]) {{\n    conv({expr}, 1)\n}}\n")
    return n.outputs[0].shape[0]


def truth_of(expr: str, prelude: str = "") -> bool:
    return value_of(f"1 if {expr} else 2", prelude) == 1


def copy_by_order(source: nn.Module, target: nn.Module) -> None:
    """Copy every tensor of ``source``'s state_dict into ``target``'s, matched by position, shapes strict."""
    src, dst = list(source.state_dict().values()), target.state_dict()
    assert [tuple(t.shape) for t in src] == [tuple(t.shape) for t in dst.values()]
    target.load_state_dict(dict(zip(dst, src, strict=True)))


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so that batch norm is seen to apply."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            mean, var = m.running_mean, m.running_var
            assert mean is not None and var is not None
            mean.copy_(torch.randn(m.num_features, generator=generator, dtype=mean.dtype))
            var.copy_(torch.rand(m.num_features, generator=generator, dtype=var.dtype) + 0.5)


# ---------------------------------------------------------------------------------------- expressions ---


PYTHON_AGREES = [
    "3 if 2 > 1 else 4",
    "3 if 2 < 1 else 4",
    "1 if 2 == 2.0 else 0",
    "1 if 3 != 3 else 7",
    "1 if 2 <= 2 and 3 >= 4 else 5",
    "1 if 2 <= 2 or 3 >= 4 else 5",
    "1 if not 2 > 3 else 9",
    "1 if not true or false else 6",
    "1 if true and not false and (false or true) else 2",
    "2 + 3 if 1 < 2 else 4 * 5",
    "min(4, 9, 2) + max(3, 8)",
    "round(2.5) + 10 * round(3.5) + 100 * round(0.5) + 1000",
    "round(2.4999) + round(2.5001) * 10 + 1",
    "floor(7.9) + ceil(7.1) * 10",
    "floor(-7.5) + 20",
    "ceil(-7.5) + 20",
    "int(7.99) + int(-7.99) + 10",
    "int(96 * 0.75 + 8 / 2) // 8 * 8",
    "max(8, int(30 + 4) // 8 * 8)",
    "7 if (3 * 2 > 5 if true else false) else 8",
    "1 if 2 > 1 else 3 if 1 > 2 else 5",
]


@pytest.mark.parametrize("expr", PYTHON_AGREES)
def test_values_agree_with_python(expr: str) -> None:
    python = expr.replace("true", "True").replace("false", "False")
    expected = eval(
        python, {"min": min, "max": max, "round": round, "floor": _floor, "ceil": _ceil, "int": int}
    )
    assert value_of(expr) == expected


def _floor(x: float) -> int:
    import math

    return math.floor(x)


def _ceil(x: float) -> int:
    import math

    return math.ceil(x)


def test_random_boolean_expressions_agree_with_python() -> None:
    """Precedence of not/and/or/comparisons and the conditional expression, against Python's, on 300 random
    expressions."""
    rng = random.Random(10)

    def boolean(depth: int) -> str:
        if depth == 0 or rng.random() < 0.3:
            if rng.random() < 0.5:
                return rng.choice(["true", "false"])
            op = rng.choice(["==", "!=", "<", "<=", ">", ">="])
            return f"{rng.randint(0, 3)} {op} {rng.randint(0, 3)}"
        form = rng.randrange(4)
        if form == 0:
            return f"not {boolean(depth - 1)}"
        if form == 1:
            return f"{boolean(depth - 1)} and {boolean(depth - 1)}"
        if form == 2:
            return f"{boolean(depth - 1)} or {boolean(depth - 1)}"
        return f"({boolean(depth - 1)})"

    lines, expected = [], []
    for k in range(300):
        expr = boolean(4)
        then, orelse = rng.randint(1, 5), rng.randint(1, 5)
        lines.append(f"let v{k} = {then} if {expr} else {orelse}")
        python = expr.replace("true", "True").replace("false", "False")
        expected.append(then if eval(python) else orelse)
    body = "\n    ".join(lines)
    # Each value becomes the channel count of its own branch, read back from the concat's input shapes.
    branches = " | ".join(f"conv(v{k}, 1)" for k in range(300))
    n = net(f"network N(x: [1, 1, 1]) {{\n    {body}\n    concat({branches})\n}}\n")
    concat = n.nodes[-1]
    assert [shape[0] for shape in concat.input_shapes] == expected


def test_make_divisible_matches_torchvision() -> None:
    """torchvision's _make_divisible written as two `def`s (as in docs/language.md), on 400 widths."""
    from torchvision.models._utils import _make_divisible

    prelude = """
    def make_divisible(v, divisor, min_value=divisor) = bump(max(min_value, int(v + divisor / 2) // divisor * divisor), v, divisor)
    def bump(new_v, v, divisor) = new_v + divisor if new_v < 0.9 * v else new_v
    """
    rng = random.Random(3)
    cases = [(rng.choice([8, 16, 32]), rng.uniform(1, 400)) for _ in range(200)] + [
        (8, c * w) for c in (16, 24, 40, 80, 112, 160, 960) for w in (0.5, 0.75, 1.0, 1.25, 1.3)
    ]
    lines = [f"conv(make_divisible({v!r}, {d}), 1)" for d, v in cases]
    n = net(
        textwrap.dedent(prelude) + "network N(x: [1, 1, 1]) {\n    concat(" + " | ".join(lines) + ")\n}\n"
    )
    assert [s[0] for s in n.nodes[-1].input_shapes] == [_make_divisible(v, d) for d, v in cases]


def test_round_is_half_to_even() -> None:
    assert [value_of(f"round({x}) + 3") - 3 for x in ("0.5", "1.5", "2.5", "-0.5", "-1.5")] == [
        0,
        2,
        2,
        0,
        -2,
    ]


def test_and_or_short_circuit() -> None:
    # The right side is never evaluated, so its division by zero is never reported.
    assert value_of("1 if false and 1 / 0 > 1 else 2") == 2
    assert value_of("1 if true or 1 / 0 > 1 else 2") == 1
    assert value_of("3 if true else 1 / 0") == 3


def test_def_defaults_use_earlier_parameters_and_see_only_their_parameters() -> None:
    prelude = "def f(a, b=a * 2) = a + b\n"
    assert value_of("f(3)", prelude) == 9
    assert value_of("f(3, b=1)", prelude) == 4
    assert errors(
        """
        def g(a) = a + c
        block B(c) { conv(g(1), 1) }
        network N(x: [1, 1, 1]) { B(2) }
        """
    )[0].startswith("2:16: unknown name 'c' in arithmetic")


def test_value_errors_are_located() -> None:
    assert errors("network N(x: [1, 1, 1]) {\n    conv(1 if 3 else 2, 1)\n}") == [
        "2:15: a condition must be true or false, got 3; compare it, e.g. n > 0"
    ]
    assert errors("network N(x: [1, 1, 1]) {\n    conv(1 if 2 > 1 and 4 else 2, 1)\n}") == [
        "2:25: 'and' needs true or false, got 4"
    ]
    assert errors("network N(x: [1, 1, 1]) {\n    conv(max(), 1)\n}") == [
        "2:10: max takes at least 1 argument, got 0"
    ]
    assert errors("network N(x: [1, 1, 1]) {\n    conv(round(1, 2), 1)\n}") == [
        "2:19: round takes 1 argument, got 2"
    ]
    assert errors("network N(x: [1, 1, 1]) {\n    conv(int(1e400), 1)\n}") == [
        "2:14: int(...) needs finite numbers, got inf"
    ]
    assert errors("network N(x: [1, 1, 1]) {\n    conv(round(1e300), 1)\n}") == [
        "2:10: number too large (round(1e+300))"
    ]
    assert errors("network N(x: [1, 1, 1]) {\n    conv(1 if 2 < true else 2, 1)\n}") == [
        "2:19: '<' needs numbers, got true"
    ]
    assert errors("network N(x: [1, 1, 1]) {\n    round(2)\n}") == [
        "2:5: round(...) computes a value, and a layer is expected here"
    ]


def test_def_recursion_and_name_clashes_are_refused() -> None:
    assert errors("def f(n) = g(n)\ndef g(n) = f(n)\nnetwork N(x: [1, 1, 1]) { conv(f(1), 1) }") == [
        "2:12: def f calls itself (f -> g -> f)"
    ]
    assert errors("def conv(n) = n\nnetwork N(x: [1, 1, 1]) { relu }") == [
        "1:5: def conv would shadow the op conv"
    ]
    assert errors("def max(n) = n\nnetwork N(x: [1, 1, 1]) { relu }") == [
        "1:5: def max would shadow the built-in max"
    ]


def test_error_inside_a_def_names_the_call() -> None:
    with pytest.raises(SpecError) as info:
        net("def f(n) = n // 0\nnetwork N(x: [1, 1, 1]) {\n    conv(f(4), 1)\n}")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.line, diagnostic.column, diagnostic.message) == (1, 17, "division by zero")
    assert diagnostic.notes == ("in f(n=4) called at t.cnn:3:10",)


def test_let_binds_values_for_the_rest_of_the_body() -> None:
    n = net(
        """
        block B(c) {
            let mid = c * 2
            let mid = mid + 1
            conv(mid, 1)
        }
        network N(x: [1, 4, 4]) { B(3) }
        """
    )
    assert n.outputs[0].shape == (7, 4, 4)
    assert errors("network N(x: [1, 4, 4]) {\n    let x = 3\n}") == [
        "2:9: 'x' is a tensor here; a let needs another name"
    ]


# ------------------------------------------------------------------------------------ conditions ---


def test_if_else_if_else_picks_one_branch_and_only_checks_it() -> None:
    spec = """
    block B(k) {
        if k == 1 {
            conv(8, 1)
        }
        else if k == 2 {
            conv(16, 1) -> relu
        } else {
            conv(32, 1)
            bogus_layer_never_checked
        }
        relu
    }
    network N(x: [3, 8, 8]) {
        B(K)
    }
    """
    ops_for = {}
    for k in (1, 2):
        n = net(spec.replace("K", str(k)))
        ops_for[k] = [node.op for node in n.layers]
    assert ops_for == {1: ["conv", "relu"], 2: ["conv", "relu", "relu"]}
    assert errors(spec.replace("K", "3")) == [
        "10:9: unknown name 'bogus_layer_never_checked'",
    ]


def test_if_without_else_passes_the_input_through_and_keeps_assignments() -> None:
    n = net(
        """
        network N(x: [3, 8, 8]) {
            if 2 > 1 {
                y = conv(4, 1)
            }
            if false { conv(99, 1) }
            concat(y | x)
        }
        """
    )
    assert n.outputs[0].shape == (7, 8, 8)


def test_conditional_layer_in_a_chain() -> None:
    spec = "block B(norm) {{ conv(4, 1) -> (bn if norm else identity) -> relu }}\nnetwork N(x: [3, 8, 8]) {{ B({}) }}"
    assert [x.op for x in net(spec.format("true")).layers] == ["conv", "bn", "relu"]
    assert [x.op for x in net(spec.format("false")).layers] == ["conv", "relu"]


def test_condition_errors() -> None:
    assert errors("network N(x: [3, 8, 8]) {\n    if 1 { relu }\n}") == [
        "2:8: a condition must be true or false, got 1; compare it, e.g. n > 0"
    ]
    assert errors("block B(use_se) {\n    if use_sd { relu }\n}\nnetwork N(x: [3, 8, 8]) { B(true) }") == [
        "2:8: unknown name 'use_sd' in a condition; did you mean 'use_se'?"
    ]
    assert errors("network N(x: [3, 8, 8]) {\n    if true {\n        return relu\n    }\n}")[0].startswith(
        "3:9: return ends a block or network body; it cannot stand inside if"
    )


# ----------------------------------------------------------------------------- repetition index ---


def test_repetition_index_counts_copies() -> None:
    n = net("network N(x: [3, 8, 8]) {\n    conv(4 + 2 * i, 1) * 3 as i\n}")
    assert [x.shape[0] for x in n.layers] == [4, 6, 8]
    assert n.layers[-1].path == "conv.2"


@pytest.mark.slow  # building convnext_tiny (28 M parameters) takes seconds
def test_stochastic_depth_rates_match_torchvision_convnext() -> None:
    """The global block index across stages (passed as each stage's offset) gives convnext_tiny's rates."""
    from torchvision.models import convnext_tiny
    from torchvision.ops import StochasticDepth

    reference = [m.p for m in convnext_tiny().modules() if isinstance(m, StochasticDepth)]
    n = net(
        """
        block Stage(n, first, total=18, rate=0.1) {
            stochastic_depth(rate * (first + i) / (total - 1)) * n as i
        }
        network Rates(x: [8, 4, 4]) {
            Stage(3, first=0)
            Stage(3, first=3)
            Stage(9, first=6)
            Stage(3, first=15)
        }
        """
    )
    assert [x.args["p"] for x in n.layers] == pytest.approx(reference, abs=0, rel=1e-15)


def test_repetition_index_is_local_and_checked() -> None:
    assert errors("network N(x: [3, 8, 8]) {\n    conv(4, 1) * 2 as i\n    conv(i, 1)\n}") == [
        "3:10: channels must be an integer, got 'i'; 'i' is not a parameter here"
    ]
    assert errors("block B(i) {\n    relu * 2 as i\n}\nnetwork N(x: [3, 8, 8]) { B(1) }") == [
        "2:17: repetition index 'i' would shadow the parameter i; choose another name"
    ]
    assert errors("network N(x: [3, 8, 8]) {\n    conv(4 + idx, 1) * 2 as index\n}") == [
        "2:14: unknown name 'idx' in arithmetic; did you mean 'index'?"
    ]


# ---------------------------------------------------------------------------- multi-tensor blocks ---

UNET = """
defaults conv(padding=same)
block Down(c) {
    skip = conv(c, 3) -> bn -> relu -> conv(c, 3) -> bn -> relu
    return skip -> maxpool(2), skip
}
block Up(c, skip) {
    conv_transpose(c, 2, stride=2)
    concat(skip | identity)
    conv(c, 3) -> bn -> relu -> conv(c, 3) -> bn -> relu
}
network MiniUNet(image: [3, 32, 32]) {
    x, s1 = Down(8)
    x, s2 = Down(16)
    conv(32, 3) -> bn -> relu
    Up(16, skip=s2)
    Up(8, s1)
    conv(2, 1)
}
"""


class _Double(nn.Sequential):
    def __init__(self, cin: int, c: int) -> None:
        super().__init__(
            nn.Conv2d(cin, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
        )


class _TorchMiniUNet(nn.Module):
    """The same network written by hand in torch, modules in the spec's order."""

    def __init__(self) -> None:
        super().__init__()
        self.d1, self.d2 = _Double(3, 8), _Double(8, 16)
        self.mid = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.up2, self.c2 = nn.ConvTranspose2d(32, 16, 2, stride=2), _Double(32, 16)
        self.up1, self.c1 = nn.ConvTranspose2d(16, 8, 2, stride=2), _Double(16, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.d1(x)
        s2 = self.d2(nn.functional.max_pool2d(s1, 2))
        x = self.mid(nn.functional.max_pool2d(s2, 2))
        x = self.c2(torch.cat([s2, self.up2(x)], 1))
        x = self.c1(torch.cat([s1, self.up1(x)], 1))
        return self.head(x)


def test_unet_with_skips_matches_torch() -> None:
    n = net(UNET)
    assert n.outputs[0].shape == (2, 32, 32)
    model = n.to_torch().double().eval()
    reference = _TorchMiniUNet().double().eval()
    randomize_bn(reference)
    copy_by_order(reference, model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-12)


def test_wrong_number_of_returned_tensors_is_located() -> None:
    head = UNET.split("network")[0]
    assert errors(head + "network N(image: [3, 32, 32]) {\n    a, b, c = Down(8)\n}") == [
        "13:15: Down(8) gives 2 tensors, but 3 names are assigned (a, b, c)"
    ]
    assert errors(head + "network N(image: [3, 32, 32]) {\n    Down(8) -> relu\n}") == [
        "13:5: block Down returns 2 tensors where one is expected; take them apart with a, b = Down(...)"
    ]
    assert errors(head + "network N(image: [3, 32, 32]) {\n    a, b = relu\n}") == [
        "13:12: relu gives 1 tensor, but 2 names are assigned (a, b)"
    ]


def test_tensor_argument_shapes_flow_into_the_block() -> None:
    n = net(
        """
        block Fuse(other, c=other.c * 2) {
            concat(identity | other) -> conv(c, 1)
        }
        network N(x: [3, 8, 8], y: [5, 8, 8]) {
            Fuse(y)
        }
        """
    )
    assert n.outputs[0].shape == (10, 8, 8)
    assert n.nodes[-2].inputs == (0, 1)


# ---------------------------------------------------------------------------------- block params ---


def test_param_is_registered_before_the_layers_like_torchvision_convnext() -> None:
    """torchvision's CNBlock registers layer_scale on the block before its layers; the compiled spec, with
    torchvision's tensors copied in by order, computes what CNBlock computes."""
    from torchvision.models.convnext import CNBlock

    n = net(
        """
        block CNBlock(c) {
            param gamma: [c, 1, 1] = 1e-6       # torchvision's layer_scale (that name is an op here)
            add(
                conv(c, 7, padding=3, groups=c) -> layer_norm(eps=1e-6) -> channel_linear(4 * c) -> gelu
                -> channel_linear(c) -> mul(identity | gamma) -> stochastic_depth(0.0)
              | identity
            )
        }
        network Block(x: [16, 9, 9]) { CNBlock(16) }
        """
    )
    assert n.nodes[1].op == "parameter" and n.nodes[1].path == "CNBlock.0/gamma"
    reference = CNBlock(16, layer_scale=1e-6, stochastic_depth_prob=0.0).double().eval()
    model = n.to_torch().double().eval()
    fresh = CNBlock(16, layer_scale=1e-6, stochastic_depth_prob=0.0).layer_scale.double()
    assert torch.equal(list(model.state_dict().values())[0], fresh)  # initialised as torchvision does
    with torch.no_grad():
        reference.layer_scale.normal_()  # non-trivial, so the scale is seen to apply
    copy_by_order(reference, model)
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-12)


def test_param_errors() -> None:
    assert errors("network N(x: [3, 8, 8]) {\n    param g: [3, 0] = 1\n}") == [
        "2:14: a param shape is [C, H, W] or [F] of positive integers, got [3, 0]"
    ]
    assert errors("network N(x: [3, 8, 8]) {\n    param g: [3] = true\n}") == [
        "2:20: a param's initial value is a finite number, got true"
    ]
    assert errors("network N(x: [3, 8, 8]) {\n    param x: [3] = 1\n}") == [
        "2:11: 'x' is already a tensor in this body; a param needs a new name"
    ]


# -------------------------------------------------------------------------------------- shortcut ---


def test_shortcut_projection_takes_the_defaults_like_any_bn() -> None:
    """Regression: `defaults bn(...)` used to be ignored by the projection (1e-5, 0.1 instead)."""
    n = net(
        """
        defaults bn(eps=0.001, momentum=0.01), conv(bias=false, padding=same)
        block Basic(c, stride=1) {
            add(conv(c, 3, stride=stride) -> bn -> relu -> conv(c, 3) -> bn | shortcut)
            relu
        }
        network N(x: [8, 16, 16]) { Basic(16, stride=2) }
        """
    )
    model = n.to_torch()
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert sorted(norms) == ["Basic_0.bn_0", "Basic_0.bn_1", "Basic_0.shortcut_0.bn_0"]
    assert {(m.eps, m.momentum) for m in norms.values()} == {(0.001, 0.01)}
    # The same block in torch: after one training step the running statistics agree only with momentum 0.01.
    reference = nn.ModuleDict(
        {
            "c1": nn.Conv2d(8, 16, 3, 2, 1, bias=False),
            "b1": nn.BatchNorm2d(16, eps=0.001, momentum=0.01),
            "c2": nn.Conv2d(16, 16, 3, 1, 1, bias=False),
            "b2": nn.BatchNorm2d(16, eps=0.001, momentum=0.01),
            "pc": nn.Conv2d(8, 16, 1, 2, bias=False),
            "pb": nn.BatchNorm2d(16, eps=0.001, momentum=0.01),
        }
    )
    copy_by_order(reference, model)
    x = torch.randn(4, 8, 16, 16)
    model.train()(x)
    r = reference
    r["pb"](r["pc"](x))
    torch.testing.assert_close(
        model.get_submodule("Basic_0.shortcut_0.bn_0").running_mean, r["pb"].running_mean
    )


def test_shortcut_written_first_is_registered_first_like_regnet() -> None:
    from torchvision.models.regnet import ResBottleneckBlock

    n = net(
        """
        defaults conv(bias=false, padding=same)
        block ResBottleneck(c, stride, group_width) {
            add(
                shortcut
              | conv(c, 1) -> bn -> relu -> conv(c, 3, stride=stride, groups=c / group_width) -> bn -> relu
                -> conv(c, 1) -> bn
            )
            relu
        }
        network N(x: [32, 15, 15]) { ResBottleneck(64, 2, 16) }
        """
    )
    assert [x.path for x in n.layers][:2] == [
        "ResBottleneck.0/shortcut.0/conv.0",
        "ResBottleneck.0/shortcut.0/bn.0",
    ]
    assert [x.id for x in n.nodes] == list(range(len(n.nodes)))
    assert all(source < node.id for node in n.nodes for source in node.inputs)
    reference = ResBottleneckBlock(32, 64, 2, nn.BatchNorm2d, nn.ReLU, 16, 1.0, None).double().eval()
    randomize_bn(reference)
    model = n.to_torch().double().eval()
    copy_by_order(reference, model)
    x = torch.randn(2, 32, 15, 15, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-12)


RESNET18 = """
defaults conv(padding=same, bias=false)
block Basic(c, stride=1) {
    add(conv(c, 3, stride=stride) -> bn -> relu -> conv(c, 3) -> bn | shortcut)
    relu
}
network ResNet18(image: [3, 224, 224]) {
    conv(64, 7, stride=2) -> bn -> relu
    maxpool(3, stride=2, padding=1)
    Basic(64) * 2
    Basic(128, stride=2) -> Basic(128)
    Basic(256, stride=2) -> Basic(256)
    Basic(512, stride=2) -> Basic(512)
    gap -> linear(1000)
}
"""


@pytest.mark.parametrize("size", [100, pytest.param(500, marks=pytest.mark.slow)])
def test_shortcut_rounds_up_odd_sizes_like_torchvision_resnet(size: int) -> None:
    """At 3x500x500 the stride-2 stages see 125 -> 63 (and at 100, 25 -> 13 -> 7), which the projection's
    stride-2 1x1 conv handles; shapes and outputs match torchvision's resnet18."""
    from torchvision.models import resnet18

    n = net(RESNET18, input_shapes={None: (3, size, size)})
    model = n.to_torch().eval()
    reference = resnet18().eval()
    randomize_bn(reference)
    copy_by_order(reference, model)
    x = torch.randn(1, 3, size, size)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        for name, m in reference.named_modules()
        if name.endswith("downsample")
    ]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
    for hook in hooks:
        hook.remove()
    projections = [x.shape for x in n.layers if x.path.endswith("shortcut.0/bn.0")]
    assert projections == [shapes[f"layer{k}.0.downsample"] for k in (2, 3, 4)]


def test_shortcut_that_no_stride_can_make_is_located() -> None:
    assert errors("network N(x: [4, 9, 9]) {\n    add(conv(8, 3) | shortcut)\n}") == [
        "2:22: shortcut cannot project [4, 9, 9] to [8, 7, 7] (no 1x1 conv stride maps 9 to 7)"
    ]


# ------------------------------------------------------------------------------------ hostile input ---

H = "network N(x: [3, 8, 8]) {\n"

HOSTILE = {
    "not chain": (H + "conv(1 if " + "not " * 5000 + "true else 2, 1)\n}", "expression nested more than 100"),
    "and chain": (
        H + "conv(1 if " + " and ".join(["true"] * 5000) + " else 2, 1)\n}",
        "nested more than 100",
    ),
    "conditional chain": (H + "conv(" + "1 if false else " * 5000 + "2, 1)\n}", "nested more than 100"),
    "nested if bodies": (H + "if true {\n" * 300 + "relu\n" + "}\n" * 300 + "}", "nested more than 100 deep"),
    "else if chain": (
        H + "if false { relu }" + " else if false { relu }" * 5000 + "\n}",
        "'else if' in one chain",
    ),
    "def chain": (
        "".join(f"def f{k}(x) = f{k + 1}(x)\n" for k in range(500))
        + "def f500(x) = x\n"
        + H
        + "conv(f0(1), 1)\n}",
        "def calls nested more than 64 deep",
    ),
    "def doubling": (
        "".join(f"def f{k}(x) = f{k + 1}(x) + f{k + 1}(x)\n" for k in range(60))
        + "def f60(x) = x\n"
        + H
        + "conv(f0(1), 1)\n}",
        "checking the spec takes more than",
    ),
    "indexed repetition": (H + "relu * 1000000000000 as i\n}", "this repetition would make about"),
    "nested indexed repetitions": (
        H + "((relu * 1000 as i) * 1000 as j) * 1000 as k\n}",
        "this repetition would make about",
    ),
    "huge param": (H + "param g: [100000000, 100000000, 100000000] = 1\n}", "too large"),
    "round of infinity": (H + "conv(round(1e309), 1)\n}", "needs finite numbers"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_new_constructs_respect_the_budgets(name: str) -> None:
    """Each is refused quickly with a located error, never an internal error or a stack overflow."""
    import time

    text, fragment = HOSTILE[name]
    start = time.process_time()
    with pytest.raises(SpecError) as info:
        cnndsl.loads(text, "t.cnn")
    assert time.process_time() - start < 2.0
    (diagnostic,) = info.value.diagnostics
    assert fragment in diagnostic.message
    assert "internal error" not in diagnostic.message and diagnostic.line >= 1


# ---------------------------------------------------------------------------------- smaller rules ---


def test_destructuring_a_chain_that_ends_in_a_block_and_tensor_defaults() -> None:
    n = net(
        """
        block Split(other=in) {
            return conv(4, 1), other -> conv(2, 1)
        }
        network N(x: [3, 8, 8]) {
            a, b = relu -> Split
            concat(a | b)
        }
        """
    )
    assert n.outputs[0].shape == (6, 8, 8)
    relu, conv_a, conv_b = (n.node(p) for p in ("relu.0", "Split.0/conv.0", "Split.0/conv.1"))
    assert conv_a.inputs == (relu.id,) and conv_b.inputs == (relu.id,)  # `in` of Split is relu's output


def test_tensor_parameters_of_ops_become_extra_inputs() -> None:
    n = net(
        """
        network N(x: [3, 32, 32]) {
            skip = conv(8, 1)
            conv(8, 3, stride=4, padding=1) -> resize(like=skip)
        }
        """
    )
    resize = n.layers[-1]
    assert resize.inputs == (n.node("conv.1").id, n.node("conv.0").id)
    assert resize.shape == (8, 32, 32) and resize.args["like"] == "skip"
    assert errors("defaults resize(like=x)\nnetwork N(x: [3, 8, 8]) { relu }") == [
        "1:17: like takes a tensor of the body it is used in, so it has no default"
    ]


def test_declared_ops_cannot_be_written_as_layers() -> None:
    assert errors("network N(x: [3, 8, 8]) {\n    input\n}")[0].startswith("2:5: unknown name 'input'")
    assert errors("network N(x: [3, 8, 8]) {\n    parameter(shape=[3])\n}")[0].startswith(
        "2:5: unknown op or block 'parameter'"
    )
    n = net(
        "network N(input: [3, 8, 8]) {\n    param parameter: [3, 1, 1] = 0\n    mul(input | parameter)\n}"
    )
    assert [x.op for x in n.nodes] == ["input", "parameter", "mul"]


def test_new_nodes_keep_the_spans_they_come_from() -> None:
    text = "network N(x: [4, 9, 9]) {\n    param g: [8, 1, 1] = 1\n    add(conv(8, 3, stride=2, padding=1) | shortcut)\n}"
    n = net(text)
    g = n.node("g")
    assert (g.span.line, g.span.column, g.span.end_column) == (2, 5, 27)
    for path in ("shortcut.0/conv.0", "shortcut.0/bn.0"):
        span = n.node(path).span
        assert (span.line, span.column, span.end_column) == (3, 43, 51)  # the word `shortcut`
    assert n.node("shortcut.0/conv.0").args["stride"] == (2, 2) and n.node("shortcut.0/bn.0").shape == (
        8,
        5,
        5,
    )


# ------------------------------------------------------------------------------------- rebinding ---


def test_rebinding_a_name_to_a_chain_that_starts_from_itself() -> None:
    """``x = x -> relu`` reads the old x and binds the new one; statements after it continue as usual, in a
    network and in a block. torch, written by hand, is the oracle."""
    n = net(
        """
        block B(c) {
            x = conv(c, 3, padding=1)
            x = x -> relu                           # the old x, then the new one
            x = x -> conv(c, 1)                     : [c, 6, 6]
            add(x | in -> conv(c, 1))
        }
        network N(image: [3, 6, 6]) {
            y = conv(4, 1)
            y = y -> B(4) -> tanh
            conv(2, 1)
            add(identity | y -> conv(2, 1))
        }
        """
    )
    assert n.outputs[0].shape == (2, 6, 6)
    model = n.to_torch().double().eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 4, (1, 1)),
        (4, 4, (3, 3)),
        (4, 4, (1, 1)),
        (4, 4, (1, 1)),
        (4, 2, (1, 1)),
        (4, 2, (1, 1)),
    ]
    image = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    f = nn.functional

    def block(y: torch.Tensor) -> torch.Tensor:
        x = convs[1](y)
        x = f.relu(x)
        x = convs[2](x)
        return x + convs[3](y)

    y = torch.tanh(block(convs[0](image)))
    expected = convs[4](y) + convs[5](y)
    with torch.no_grad():
        torch.testing.assert_close(model(image), expected, rtol=0, atol=1e-12)


def test_rebinding_by_destructuring_reads_the_old_tensor() -> None:
    n = net(
        """
        block Two(c) {
            return conv(c, 1), in
        }
        network N(image: [3, 6, 6]) {
            x = conv(4, 1)
            x, s = x -> Two(8)
            add(x | s -> conv(8, 1))
        }
        """
    )
    assert n.outputs[0].shape == (8, 6, 6)
    add = n.nodes[-1]
    assert [n.nodes[i].path for i in add.inputs] == ["Two.0/conv.0", "conv.1"]
    assert n.nodes[n.nodes[-2].inputs[0]].path == "conv.0"  # s is the block's input, the first x


def test_a_failed_rebinding_still_silences_later_uses() -> None:
    assert errors(
        """
        network N(image: [3, 6, 6]) {
            x = conv(4, 1)
            x = x -> conv(4, 9)
            x -> relu
            conv(2, 1)
        }
        """
    ) == ["4:22: conv kernel 9x9 is larger than its input 6x6"]


def test_param_after_a_layer_of_its_body_is_refused() -> None:
    """torch lists a module's own parameters before its submodules' tensors, so a param can only be registered
    where it is written if it is written before the body's layers: anywhere else is an error."""
    assert errors(
        """
        block B(c) {
            conv(c, 1)
            if c > 2 {
                param g: [c, 1, 1] = 2
            }
            mul(identity | g)
        }
        network N(image: [3, 6, 6]) {
            B(4)
            param h: [4] = 1
        }
        """
    ) == [
        "5:15: param g is written after the layers of its body; torch registers a block's own parameters "
        "before its layers, so write every param first in the body",
        "11:11: param h is written after the layers of its body; torch registers a block's own parameters "
        "before its layers, so write every param first in the body",
    ]
    # Before the layers (after lets, defaults, other params and layer-free statements) it is accepted, and the
    # state_dict lists the tensors in the written order.
    n = net(
        """
        block B(c) {
            let k = 1
            param g: [c, 1, 1] = 2
            defaults conv(bias=false)
            identity
            param s: [c] = 3
            conv(c, k) -> mul(identity | g) -> mul(identity | s)
        }
        network N(image: [3, 6, 6]) {
            param t: [3, 1, 1] = 1
            mul(identity | t) -> B(4)
        }
        """
    )
    model = n.to_torch()
    assert list(model.state_dict()) == ["t", "B_0.g", "B_0.s", "B_0.conv_0.weight"]
    assert [x.path for x in n.nodes if x.op in ("parameter", "conv")] == ["t", "B.0/g", "B.0/s", "B.0/conv.0"]


# ------------------------------------------------------------------------- destructuring assertions ---

DOWN = """
defaults conv(padding=same)
block Down(c) {
    skip = conv(c, 3) -> relu
    return skip -> maxpool(2), skip
}
"""


def test_destructuring_asserts_one_shape_per_name() -> None:
    """``a, b = Down(64) : [..], [..]``: as ``x = conv(...) : [..]``, one shape per name, ``?`` matches any."""
    n = net(
        DOWN
        + """
        network N(image: [3, 32, 32]) {
            x, s1 = Down(8)                 : [8, 16, 16], [8, 32, 32]
            x, s2 = x -> Down(16)           : [16, ?, ?], [?, 16, 16]
            concat(x -> upsample(2) | s2)   : [32, 16, 16]
        }
        """
    )
    assert n.outputs[0].shape == (32, 16, 16)


def test_destructuring_assertion_errors_are_located() -> None:
    head = textwrap.dedent(DOWN)  # 6 lines: the network starts at line 7
    assert errors(
        head + "network N(image: [3, 32, 32]) {\n    x, s = Down(8) : [8, 16, 16], [8, 16, 16]\n}"
    ) == ["8:35: shape assertion failed for s: expected [8, 16, 16], got [8, 32, 32]"]
    assert errors(head + "network N(image: [3, 32, 32]) {\n    x, s = Down(8) : [8, 16, 16]\n}") == [
        "8:22: 1 shape is asserted for 2 names (x, s); assert one shape per name"
    ]
    assert errors(
        head + "network N(image: [3, 32, 32]) {\n    x, s = Down(8) : [8, 16, 16], [8, 32, 32], [1]\n}"
    ) == ["8:48: 3 shapes are asserted for 2 names (x, s); assert one shape per name"]
    assert errors(head + "network N(image: [3, 32, 32]) {\n    x, s = Down(8) : [8, 16, 16], 3\n}") == [
        "8:35: a shape assertion is a list like [C, H, W] (? matches any), got 3"
    ]
    # A wrong count poisons the names: the lines after it stay quiet.
    assert errors(
        head + "network N(image: [3, 32, 32]) {\n    x, s = Down(8) : [8, 16, 16]\n    s -> relu\n}"
    ) == ["8:22: 1 shape is asserted for 2 names (x, s); assert one shape per name"]
    # One name takes one shape: several after a single assignment stay a syntax error.
    with pytest.raises(SpecError) as info:
        net(head + "network N(image: [3, 32, 32]) {\n    x = conv(3, 1) : [3, 32, 32], [3, 32, 32]\n}")
    assert info.value.diagnostics[0].code.startswith("syntax")


def test_destructuring_assertions_under_hostile_input() -> None:
    head = textwrap.dedent(DOWN)
    many = ", ".join(["[8, 16, 16]"] * 5000)
    assert errors(head + f"network N(image: [3, 32, 32]) {{\n    x, s = Down(8) : {many}\n}}") == [
        "8:48: 5000 shapes are asserted for 2 names (x, s); assert one shape per name"  # at the first extra
    ]
    huge = "[8, 16, 16], [" + ", ".join(["8"] * 100_000) + "]"
    [message] = errors(head + f"network N(image: [3, 32, 32]) {{\n    x, s = Down(8) : {huge}\n}}")
    assert message.startswith("8:35: shape assertion failed for s: expected [8, 8, 8, ")
    assert message.endswith(", ...], got [8, 32, 32]") and len(message) < 300
    deep = "[" * 150 + "]" * 150
    with pytest.raises(SpecError) as info:
        net(head + f"network N(image: [3, 32, 32]) {{\n    x, s = Down(8) : [8, 16, 16], {deep}\n}}")
    assert [d.code for d in info.value.diagnostics] == ["syntax"]
    assert "nested more than 100 deep" in info.value.diagnostics[0].message
