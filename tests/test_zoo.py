"""The spec zoo (specs/*.cnn) against reference figures, with PyTorch as the oracle.

- every spec loads, and a couple pass ``python -m cnndsl check`` as a user would run it;
- every zoo spec hits the params and MACs recorded in tests/data/zoo_reference.json (torchvision's metadata and
  the papers), counted through the op registry;
- every spec's parameter count, MACs and per-node output shapes agree with torch modules built from the
  registry's lowering description (on the meta device: no memory, no arithmetic);
- the torchvision mirrors list their parameters in torchvision's registration order, so a torchvision
  state_dict loads by order;
- the worked examples from course notes on CNNs, as unit cases;
- the examples and the generated op table of docs/language.md.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, SPECS, spec_files

import cnndsl
from cnndsl import backend, ops
from cnndsl.network import Network

REFERENCE: dict[str, dict[str, Any]] = {
    name: row
    for name, row in json.loads((Path(__file__).parent / "data" / "zoo_reference.json").read_text()).items()
    if not name.startswith("_")
}
ZOO = sorted(REFERENCE)
ALL_SPECS = [path.stem for path in spec_files()]


def _costs(net: Network) -> tuple[int, int]:
    """(params, MACs) summed over the registry's cost rules."""
    params = macs = 0
    for node in net.layers:
        costs = ops.REGISTRY[node.op].costs(list(node.input_shapes), node.shape, node.args)
        params += costs.params
        macs += costs.macs
    return params, macs


def _load(name: str) -> Network:
    return cnndsl.load(SPECS / f"{name}.cnn")


def _lowered(net: Network) -> list[tuple[Any, torch.nn.Module | None, torch.Tensor]]:
    """Run every node through the torch lowering on meta tensors, in eval mode: (node, module or None, output).

    A block parameter (``param``) is returned as a module holding just that parameter, and its output is the
    parameter itself with a batch dimension of one, as the backend reads it."""
    results = []
    for node in net.layers:
        lowering = ops.REGISTRY[node.op].torch(list(node.input_shapes), node.shape, node.args)
        inputs = [torch.empty((1, *shape), device="meta") for shape in node.input_shapes]
        if isinstance(lowering, ops.TorchModule):
            with torch.device("meta"):
                module = backend.build_module(lowering).eval()
            results.append((node, module, module(*inputs)))
        elif isinstance(lowering, ops.TorchParameter):
            holder = torch.nn.Module()
            with torch.device("meta"):
                holder.weight = backend.build_parameter(lowering)
            results.append((node, holder, holder.weight.unsqueeze(0)))
        else:
            function: Any = backend.runtime_function(lowering)
            results.append((node, None, function(*inputs, **lowering.kwargs)))
    return results


# ----------------------------------------------------------------------------------------- loading ---


def test_every_zoo_row_has_a_spec() -> None:
    missing = [name for name in ZOO if not (SPECS / f"{name}.cnn").exists()]
    assert not missing, f"zoo rows without a spec: {missing}"


@pytest.mark.parametrize("name", ALL_SPECS)
def test_spec_loads(name: str) -> None:
    net = _load(name)
    assert net.outputs, f"{name} has no output"
    assert net.layers, f"{name} has no layers"


@pytest.mark.parametrize("name", ["resnet152", "fpn_two_outputs"])
def test_cli_check_accepts_spec(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnndsl", "check", f"specs/{name}.cnn"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"specs/{name}.cnn: ok: network" in result.stdout


def test_fpn_example_has_two_named_outputs() -> None:
    net = _load("fpn_two_outputs")
    assert [(t.name, t.shape) for t in net.outputs] == [("p3", (32, 32, 32)), ("p5", (32, 8, 8))]


# ------------------------------------------------------------------------------- reference figures ---


@pytest.mark.parametrize("name", ZOO)
def test_zoo_params_and_macs(name: str) -> None:
    reference = REFERENCE[name]
    net = _load(name)
    assert [list(t.shape) for t in net.inputs] == [reference["input"]]
    assert _costs(net) == (reference["params"], reference["macs"])


@pytest.mark.parametrize("name", ALL_SPECS)
def test_counts_and_shapes_agree_with_torch(name: str) -> None:
    """Params = sum(p.numel()) of the lowered torch modules; MACs recounted from the torch layers themselves;
    every node's output shape = what the torch module or runtime function returns."""
    net = _load(name)
    torch_params = torch_macs = 0
    for node, module, output in _lowered(net):
        assert tuple(output.shape) == (1, *node.shape), f"{name}: {node.path}"
        if module is None:
            assert ops.REGISTRY[node.op].costs(list(node.input_shapes), node.shape, node.args).params == 0
            continue
        torch_params += sum(p.numel() for p in module.parameters())
        if isinstance(module, torch.nn.ConvTranspose2d):  # each input element meets one weight patch
            torch_macs += math.prod(node.input_shapes[0]) * module.weight[0].numel()
        elif isinstance(module, torch.nn.Conv2d):
            torch_macs += output.numel() * module.weight[0].numel()
        elif isinstance(module, torch.nn.Linear):  # channel_linear: one matrix product per position
            torch_macs += output.numel() * module.in_features
    assert (torch_params, torch_macs) == _costs(net)
    if name in REFERENCE:
        assert (torch_params, torch_macs) == (REFERENCE[name]["params"], REFERENCE[name]["macs"])


# -------------------------------------------------------------------- torchvision registration order ---
# Parameter shapes in the order torchvision's constructors register them (torchvision/models/resnet.py,
# densenet.py, mobilenetv2.py): conv weights are (out, in / groups, kh, kw); a batchnorm adds weight and bias.


def _bn(c: int) -> list[tuple[int, ...]]:
    return [(c,), (c,)]


def _torchvision_resnet(
    layers: list[int], bottleneck: bool, groups: int = 1, width_per_group: int = 64
) -> list[tuple[int, ...]]:
    shapes = [(64, 3, 7, 7), *_bn(64)]
    inplanes, expansion = 64, 4 if bottleneck else 1
    for stage, (planes, blocks) in enumerate(zip([64, 128, 256, 512], layers, strict=True)):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            if bottleneck:
                width = planes * width_per_group // 64 * groups
                shapes += [(width, inplanes, 1, 1), *_bn(width), (width, width // groups, 3, 3), *_bn(width)]
                shapes += [(planes * 4, width, 1, 1), *_bn(planes * 4)]
            else:
                shapes += [(planes, inplanes, 3, 3), *_bn(planes), (planes, planes, 3, 3), *_bn(planes)]
            if index == 0 and (stride != 1 or inplanes != planes * expansion):
                shapes += [(planes * expansion, inplanes, 1, 1), *_bn(planes * expansion)]  # downsample
            inplanes = planes * expansion
    return [*shapes, (1000, 512 * expansion), (1000,)]


def _torchvision_densenet121() -> list[tuple[int, ...]]:
    shapes = [(64, 3, 7, 7), *_bn(64)]
    channels = 64
    for stage, layers in enumerate([6, 12, 24, 16]):
        for _ in range(layers):  # norm1, conv1, norm2, conv2
            shapes += [*_bn(channels), (128, channels, 1, 1), *_bn(128), (32, 128, 3, 3)]
            channels += 32
        if stage < 3:  # transition: norm, conv
            shapes += [*_bn(channels), (channels // 2, channels, 1, 1)]
            channels //= 2
    return [*shapes, *_bn(channels), (1000, channels), (1000,)]


# MobileNet v2's inverted residual settings (t, c, n, s), as torchvision lists them.
MOBILENET_V2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _torchvision_mobilenet_v2() -> list[tuple[int, ...]]:
    shapes = [(32, 3, 3, 3), *_bn(32)]
    channels = 32
    for t, c, n, _ in MOBILENET_V2_SETTINGS:
        for _ in range(n):
            hidden = channels * t
            if t != 1:
                shapes += [(hidden, channels, 1, 1), *_bn(hidden)]
            shapes += [(hidden, 1, 3, 3), *_bn(hidden), (c, hidden, 1, 1), *_bn(c)]
            channels = c
    return [*shapes, (1280, 320, 1, 1), *_bn(1280), (1000, 1280), (1000,)]


TORCHVISION_ORDER = {
    "resnet18": lambda: _torchvision_resnet([2, 2, 2, 2], bottleneck=False),
    "resnet34": lambda: _torchvision_resnet([3, 4, 6, 3], bottleneck=False),
    "resnet50": lambda: _torchvision_resnet([3, 4, 6, 3], bottleneck=True),
    "resnet101": lambda: _torchvision_resnet([3, 4, 23, 3], bottleneck=True),
    "resnet152": lambda: _torchvision_resnet([3, 8, 36, 3], bottleneck=True),
    "resnext50_32x4d": lambda: _torchvision_resnet(
        [3, 4, 6, 3], bottleneck=True, groups=32, width_per_group=4
    ),
    "wide_resnet50_2": lambda: _torchvision_resnet([3, 4, 6, 3], bottleneck=True, width_per_group=128),
    "densenet121": _torchvision_densenet121,
    "mobilenet_v2": _torchvision_mobilenet_v2,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_ORDER))
def test_parameters_in_torchvision_order(name: str) -> None:
    ours = [
        tuple(p.shape)
        for _, module, _ in _lowered(_load(name))
        if module is not None
        for p in module.parameters()
    ]
    assert ours == TORCHVISION_ORDER[name]()


# --------------------------------------------------------------------------------- worked examples ---
# From course notes on CNNs (see the reference table of the zoo): counts a student can check by hand.


def _single(text: str) -> ops.Costs:
    """Costs of the one layer of a spec."""
    (node,) = cnndsl.loads(text).layers
    return ops.REGISTRY[node.op].costs(list(node.input_shapes), node.shape, node.args)


def test_dense_layer_from_image_to_same_size() -> None:
    net = cnndsl.loads("network Dense(image: [3, 224, 224]) { flatten -> linear(3 * 224 * 224) }")
    linear = net.layers[-1]
    assert linear.shape == (150528,)
    costs = ops.REGISTRY["linear"].costs(list(linear.input_shapes), linear.shape, linear.args)
    assert costs.params == 150528**2 + 150528


def test_11x11_conv_from_3_to_3_channels_has_1089_weights() -> None:
    costs = _single("network C(image: [3, 224, 224]) { conv(3, 11, bias=false) }")
    assert costs.params == 11 * 11 * 3 * 3 == 1089


@pytest.mark.parametrize(
    ("spec", "multiplications"),
    [
        ("network C(x: [1, 6, 6]) { conv(1, 3) }", 144),  # (4·4)·(3·3)
        ("network C(x: [1, 6, 6]) { conv(1, 3, stride=2) }", 36),  # (2·2)·(3·3)
        ("network C(x: [3, 6, 6]) { conv(1, 3) }", 432),  # (4·4)·(3·3·3)
        ("network C(x: [3, 6, 6]) { conv(2, 3) }", 864),  # (4·4·2)·(3·3·3)
    ],
)
def test_3x3_filter_over_6x6_input(spec: str, multiplications: int) -> None:
    assert _single(spec).macs == multiplications


def test_inception_naive_5x5_costs_about_120_million() -> None:
    macs = _single("network N(x: [192, 28, 28]) { conv(32, 5, padding=same) }").macs
    assert macs == (28 * 28 * 32) * (5 * 5 * 192)
    assert round(macs / 1e6) == 120


# ------------------------------------------------------------------------------ language reference ---

LANGUAGE_DOC = ROOT / "docs" / "language.md"


def _doc_examples() -> list[str]:
    text = LANGUAGE_DOC.read_text(encoding="utf-8")
    return [block for block in re.findall(r"```cnn\n(.*?)```", text, re.S) if "network " in block]


@pytest.mark.parametrize("example", _doc_examples(), ids=lambda text: re.findall(r"network (\w+)", text)[0])
def test_language_reference_examples(example: str) -> None:
    """Every complete example in docs/language.md checks; those headed `# error: MESSAGE` fail with it."""
    first = example.splitlines()[0]
    if first.startswith("# error:"):
        expected = first.removeprefix("# error:").strip()
        with pytest.raises(cnndsl.SpecError) as info:
            cnndsl.loads(example, "t.cnn")
        assert any(expected in d.message for d in info.value.diagnostics), info.value.render()
    else:
        assert cnndsl.loads(example, "t.cnn").outputs


def test_language_reference_op_table_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_op_table", ROOT / "docs" / "gen_op_table.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    text = LANGUAGE_DOC.read_text(encoding="utf-8")
    assert generator.render(text) == text, (
        "docs/language.md is stale: run python3 docs/gen_op_table.py --write"
    )
    for name in ops.REGISTRY:
        assert f'<a id="op-{name}"></a>' in text


def test_zoo_table_is_current() -> None:
    """docs/zoo.md's table is generated from zoo_reference.json (python3 docs/gen_zoo_table.py --write)."""
    spec = importlib.util.spec_from_file_location("gen_zoo_table", ROOT / "docs" / "gen_zoo_table.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    doc = (ROOT / "docs" / "zoo.md").read_text(encoding="utf-8")
    reference = json.loads((Path(__file__).parent / "data" / "zoo_reference.json").read_text())
    assert generator.render(doc, reference) == doc, (
        "docs/zoo.md is stale: run python3 docs/gen_zoo_table.py --write"
    )
    for name in reference:
        assert name.startswith("_") or f"specs/{name}.cnn" in doc


def test_outputs_are_named_by_tensor_names_only() -> None:
    """As documented: `return x, relu` names the first output x; an op applied is not a name."""
    net = cnndsl.loads("network N(image: [3, 8, 8]) {\n  x = conv(4, 1)\n  return x, relu, image\n}")
    assert [(t.name, t.shape) for t in net.outputs] == [
        ("x", (4, 8, 8)),
        ("output1", (4, 8, 8)),
        ("image", (3, 8, 8)),
    ]


def test_statement_after_return_is_an_error() -> None:
    with pytest.raises(cnndsl.SpecError) as info:
        cnndsl.loads("network N(image: [3, 8, 8]) {\n  x = relu\n  return x\n  conv(3)\n}", "t.cnn")
    assert [(d.line, d.column, d.message) for d in info.value.diagnostics] == [
        (4, 3, "statement after return is never reached")
    ]
