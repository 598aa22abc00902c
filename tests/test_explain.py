"""``cnndsl explain``: formulas with numbers filled in.

- the worked examples of course notes on CNNs (reference/zoo.md) as unit cases;
- on every spec, every formula evaluates to the registry's figure (params, MACs, buffers), the shape rule's output
  size and the analysis' receptive field;
- the output-size formula agrees with torch's real output size, ceil mode included;
- the CLI selects one layer or a block instance and rejects unknown paths with a suggestion; a golden file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import torch
from conftest import ROOT, SPECS, spec_files

import cnndsl
from cnndsl.analysis import summarize
from cnndsl.cli import main
from cnndsl.explain import Explanation, dense_equivalent, explain, render_explanations

SPEC_NAMES = [path.stem for path in spec_files()]


def _one(text: str) -> tuple[Explanation, int]:
    """Explain the single conv of a network; also return its static MACs."""
    net = cnndsl.loads(text)
    [item] = explain(net, "conv.0")
    return item, summarize(net).layers[0].macs


def _check(item: Explanation, what: str) -> float:
    [check] = [c for c in item.checks if c.what == what]
    assert check.formula == check.registry
    return check.registry


# Course-notes worked examples (the numbers are the notes', not ours).
@pytest.mark.parametrize(
    ("spec", "multiplications"),
    [
        # 3x3 over 6x6, stride 1, valid: (4·4)·(3·3)
        ("network E(x: [1, 6, 6]) { conv(1, 3, bias=false) }", 144),
        ("network E(x: [1, 6, 6]) { conv(1, 3, stride=2, bias=false) }", 36),  # stride 2: (2·2)·(3·3)
        ("network E(x: [3, 6, 6]) { conv(1, 3, bias=false) }", 432),  # 3 channels: (4·4)·(3·3·3)
        ("network E(x: [3, 6, 6]) { conv(2, 3, bias=false) }", 864),  # 2 filters: (4·4·2)·(3·3·3)
        # Inception's naive 5x5 conv, 28x28x192 -> 32 channels: (28·28·32)·(5·5·192) ≈ 120 million
        ("network E(x: [192, 28, 28]) { conv(32, 5, padding=same) }", 120_422_400),
    ],
)
def test_worked_multiplication_counts(spec: str, multiplications: int) -> None:
    item, macs = _one(spec)
    assert macs == multiplications
    assert _check(item, "macs") == multiplications
    assert any(line.startswith("MACs:") and line.endswith(f"{multiplications:,}") for line in item.lines)


def test_worked_dense_versus_conv() -> None:
    # A dense layer from a 224x224x3 image to the same size: 150528² weights + 150528 biases; an 11x11 conv from 3 to
    # 3 channels: 11·11·3·3 = 1089 weights.
    item, _ = _one("network E(x: [3, 224, 224]) { conv(3, 11, padding=same) }")
    assert dense_equivalent((3, 224, 224), (3, 224, 224)) == (150528**2, 150528)
    assert _check(item, "conv weights") == 1089
    text = "\n".join(item.lines)
    assert f"150,528·150,528 = {150528**2:,} weights + 150,528 biases" in text
    assert "11·11·3·3 = 1,089 weights" in text
    assert _check(item, "params") == 1089 + 3


def test_output_size_formula_matches_torch() -> None:
    cases = [
        "network E(x: [3, 17, 23]) { conv(4, [3, 5], stride=[2, 3], padding=[1, 2], dilation=[2, 1]) }",
        "network E(x: [3, 17, 23]) { maxpool(3, stride=2, ceil=true) }",
        "network E(x: [3, 14, 14]) { maxpool(3, stride=2, padding=1, ceil=true) }",
        "network E(x: [3, 17, 23]) { avgpool([2, 4], stride=[3, 2], padding=[1, 2], ceil=true) }",
    ]
    for text in cases:
        net = cnndsl.loads(text)
        [item] = explain(net)
        module = net.to_torch()
        out = module(torch.zeros((1, *net.inputs[0].shape)))
        for axis, label in enumerate("HW"):
            check = next(c for c in item.checks if c.what == f"output {label}")
            assert check.formula == out.shape[axis + 2] == check.registry, (text, label)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_formula_agrees_with_the_registry(name: str) -> None:
    net = cnndsl.load(SPECS / f"{name}.cnn")
    items = explain(net)
    assert len(items) == len(net.layers)
    kinds = set()
    for item in items:
        for check in item.checks:
            assert check.formula == pytest.approx(check.registry), (item.path, check)
            kinds.add(check.what.split()[0])
    assert "params" in kinds and "macs" in kinds
    assert max(len(line) for line in render_explanations(net, items).splitlines()) <= 120


def test_merge_explains_the_union() -> None:
    net = cnndsl.load(SPECS / "inception_module.cnn")
    merge = next(layer for layer in net.layers if layer.op == "concat")
    [item] = explain(net, merge.path)
    text = "\n".join(item.lines)
    assert "union of the branches" in text
    assert len(re.findall(r"^  branch \d+:", text, re.M)) == len(merge.inputs)


def test_select_block_instance_and_unknown_path() -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    block = next(frame.path for node in net.nodes for frame in node.frames if frame.block == "Basic")
    items = explain(net, block)
    assert items and all(item.path.startswith(block + "/") for item in items)
    with pytest.raises(KeyError, match="did you mean"):
        explain(net, block + "/conv.9")


def test_cli_explain(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(SPECS / "lenet5.cnn")
    assert main(["explain", spec, "conv.1"]) == 0
    out = capsys.readouterr().out
    assert "conv.1 — conv 5x5 → 16" in out and "conv.0 —" not in out
    assert "Params: (kh·kw·Cin/g + bias)·Cout = (5·5·6/1 + 1)·16 = 2,416" in out
    assert main(["explain", spec, "conv.7"]) == 2
    err = capsys.readouterr().err
    assert "no layer or block instance 'conv.7'" in err and "Traceback" not in err


def test_explain_golden(golden: Callable[[str, str], None]) -> None:
    net = cnndsl.load(SPECS / "lenet5.cnn")
    text = render_explanations(net, explain(net))
    assert max(len(line) for line in text.splitlines()) <= 120
    golden("summary/lenet5_explain.txt", text.replace(str(ROOT) + "/", ""))


@pytest.mark.parametrize(
    ("name", "path"),
    [("convnext_tiny", "ConvNeXt.0/CNStage.0/CNBlock.0"), ("mobilenet_v3_large", None), ("unet", None)],
)
def test_language_v2_explain_golden(name: str, path: str | None, golden: Callable[[str, str], None]) -> None:
    net = cnndsl.load(SPECS / f"{name}.cnn")
    explanations = explain(net, path) if path else explain(net)[:12]
    text = render_explanations(net, explanations)
    assert max(len(line) for line in text.splitlines()) <= 120
    golden(f"summary/{name}_explain.txt", text.replace(str(ROOT) + "/", ""))


def test_every_op_is_explained_and_its_formulas_agree() -> None:
    """Each op's example network (tests/test_analysis.py) through explain and the CLI summary: every node gets an
    explanation whose formulas equal the registry's figures, and the ops with formulas of their own state them."""
    from test_analysis import OP_EXAMPLES

    stated: set[str] = set()
    for name, body in sorted(OP_EXAMPLES.items()):
        net = cnndsl.loads(f"network Op_{name}(x: [3, 17, 19]) {{\n    {body}\n}}\n")
        items = explain(net)
        assert [item.path for item in items] == [node.path for node in net.layers], name
        for item, node in zip(items, net.layers, strict=True):
            for check in item.checks:
                assert check.formula == pytest.approx(check.registry), (name, item.path, check)
            if any(c.what in ("params", "macs") for c in item.checks):
                stated.add(node.op)
        text = render_explanations(net, items)
        assert max(len(line) for line in text.splitlines()) <= 120, name
    assert {"conv_transpose", "channel_linear", "layer_norm", "group_norm"} <= stated


def test_conv_transpose_output_size_formula_matches_torch() -> None:
    cases = [
        "network E(x: [4, 7, 9]) { conv_transpose(6, [3, 4], stride=[2, 3], padding=[1, 0], output_padding=[1, 2]) }",
        "network E(x: [4, 7, 9]) { conv_transpose(2, 3, stride=2, dilation=3, output_padding=2, groups=2) }",
    ]
    for text in cases:
        net = cnndsl.loads(text)
        [item] = explain(net)
        out = net.to_torch()(torch.zeros((1, *net.inputs[0].shape)))
        for axis, label in enumerate("HW"):
            check = next(c for c in item.checks if c.what == f"output {label}")
            assert check.formula == out.shape[axis + 2] == check.registry, (text, label)
        params = next(c for c in item.checks if c.what == "params")
        assert params.formula == sum(p.numel() for p in net.to_torch().parameters())


def test_cli_summary_and_explain_handle_the_new_ops(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "tests" / "data" / "new_ops.cnn"
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "channel_linear → 16" in out and "gmp" in out  # the text tree (long labels wrap there)
    assert main(["summary", str(path), "--format", "json"]) == 0
    labels = [layer["label"] for layer in json.loads(capsys.readouterr().out)["layers"]]
    for label in ("conv_transpose 3x3 ×2 → 6", "resize like image bilinear", "channel_linear → 16", "gmp"):
        assert label in labels
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Output size per axis: (H − 1)·s − 2p + d(k−1) + output_padding + 1" in out
    assert "Receptive field: none (a learned constant: it depends on no input)" in out
