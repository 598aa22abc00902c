"""The front end as a user meets it: the language's constructs, the API, paths, spans, limits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cnndsl
from cnndsl import SpecError

ROOT = Path(__file__).resolve().parent.parent


def net(text: str, **kwargs: object) -> cnndsl.Network:
    return cnndsl.loads(textwrap.dedent(text), "t.cnn", **kwargs)  # type: ignore[arg-type]


def errors(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        net(text, **kwargs)
    return [f"{d.line}:{d.column}: {d.message}" for d in info.value.diagnostics]


def test_implicit_sequence_arrow_and_assertions() -> None:
    n = net(
        """
        network LeNet5(image: [1, 32, 32]) {
            conv(6, 5) -> tanh -> avgpool(2)      : [6, 14, 14]
            conv(16, 5) -> tanh -> avgpool(2)     : [16, ?, ?]
            flatten
            linear(120) -> tanh
            linear(84) -> tanh
            linear(10) -> softmax
        }
        """
    )
    assert n.name == "LeNet5"
    assert [t.shape for t in n.inputs] == [(1, 32, 32)]
    assert n.outputs[0].shape == (10,)
    assert [x.op for x in n.layers][:3] == ["conv", "tanh", "avgpool"]
    assert n.layers[0].path == "conv.0" and n.layers[3].path == "conv.1"


def test_newlines_inside_brackets_and_after_arrow() -> None:
    n = net(
        """
        network N(x: [3, 8, 8]) {
            conv(
                4,
                3,
            ) ->
            relu
            -> gap
        }
        """
    )
    assert [x.op for x in n.layers] == ["conv", "relu", "gap"]


def test_blocks_defaults_arithmetic_in_and_repetition() -> None:
    n = net(
        """
        defaults conv(padding=same, bias=false)

        block Unit(c, stride=1, expand=c * 2) {
            conv(expand, 1) -> bn -> relu
            conv(in.c, 3, stride=stride, groups=in.c) -> bn
        }

        network N(x: [8, 16, 16]) {
            Unit(8, stride=2) : [8, 8, 8]
            Unit(8) * 3
            Unit(8) * 0
        }
        """
    )
    convs = [x for x in n.layers if x.op == "conv"]
    assert len(convs) == 8
    assert all(c.args["bias"] is False for c in convs)
    assert convs[0].args["channels"] == 16
    assert convs[1].args["groups"] == 8 and convs[1].args["padding"] == "same"  # in.c is the block input
    assert [c.path for c in convs[:3]] == ["Unit.0/conv.0", "Unit.0/conv.1", "Unit.1/conv.0"]
    assert n.layers[0].frames[0].call == "Unit(c=8, stride=2, expand=16)"
    assert n.outputs[0].shape == (8, 8, 8)


def test_defaults_inside_a_body_are_lexically_scoped() -> None:
    n = net(
        """
        block B() {
            conv(4, 3)
        }
        network N(x: [3, 8, 8]) {
            defaults conv(padding=1)
            conv(4, 3)
            B
        }
        """
    )
    first, second = (x for x in n.layers if x.op == "conv")
    assert first.shape == (4, 8, 8)  # the body's defaults apply
    assert second.shape == (4, 6, 6)  # the block was written outside their scope


def test_merges_shortcut_identity_and_named_tensors() -> None:
    n = net(
        """
        network N(image: [16, 32, 32]) {
            a = add(conv(32, 3, stride=2, padding=1) -> bn | shortcut)
            b = add(conv(32, 3, padding=1) | identity)
            c = concat(a | b -> conv(8, 1) | maxpool(3, stride=1, padding=1))
            s = mul(c | gap -> linear(72) -> sigmoid)
            return s, a
        }
        """
    )
    assert [t.name for t in n.outputs] == ["s", "a"]
    assert n.outputs[0].shape == (72, 16, 16)
    paths = [x.path for x in n.layers]
    assert "shortcut.0/conv.0" in paths and "shortcut.0/bn.0" in paths
    shortcut_conv = n.node("shortcut.0/conv.0")
    assert shortcut_conv.args["stride"] == (2, 2) and shortcut_conv.args["bias"] is False
    add1 = n.node("add.1")
    assert len(add1.inputs) == 2 and n.nodes[add1.inputs[1]].path == "add.0"  # identity made no node
    concat = n.node("concat.0")
    assert concat.shape == (72, 16, 16)
    assert [len(s) for s in n.node("mul.0").input_shapes] == [3, 1]


def test_order_is_source_order_and_topological() -> None:
    n = net(
        """
        network N(x: [3, 8, 8]) {
            y = conv(4, 1)
            z = x -> conv(4, 3, padding=1)
            add(y | z)
        }
        """
    )
    for node in n.nodes:
        assert all(i < node.id for i in node.inputs)
    assert [x.path for x in n.layers] == ["conv.0", "conv.1", "add.0"]
    graph = n.graph
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 4


def test_spans_point_at_the_source() -> None:
    n = net("network N(x: [3, 8, 8]) {\n    conv(4, 3)\n    relu\n}\n")
    conv, relu = n.layers
    assert (conv.span.line, conv.span.column) == (2, 5)
    assert (relu.span.line, relu.span.column) == (3, 5)


def test_collects_several_errors() -> None:
    found = errors(
        """
        network N(x: [3, 8, 8]) {
            a = conv(4, 3, strid=1)
            b = x -> conx(4)
            return a, b
        }
        """
    )
    assert len(found) == 2
    assert "did you mean 'stride'" in found[0] and "did you mean 'conv'" in found[1]


def test_error_limit() -> None:
    body = "\n".join(f"    t{i} = x -> conv(0, 1)" for i in range(30))
    found = errors(f"network N(x: [3, 8, 8]) {{\n{body}\n}}\n", max_errors=5)
    assert len(found) == 5


def test_input_shape_override() -> None:
    text = "network N(image: [3, 224, 224]) {\n  conv(8, 3, stride=2) -> gap\n}\n"
    assert net(text, input_shapes={None: (3, 64, 64)}).nodes[1].shape == (8, 31, 31)
    assert net(text, input_shapes={"image": (1, 32, 32)}).nodes[1].shape == (8, 15, 15)
    assert "not an input" in errors(text, input_shapes={"img": (1, 32, 32)})[0]


def test_node_budget_is_enforced_before_building() -> None:
    found = errors("network N(x: [3, 8, 8]) {\n  relu * 100\n  (relu * 100) * 100\n}\n", node_budget=1000)
    assert "node budget of 1,000" in found[0]


def test_imports_relative_and_outside(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "blocks.cnn").write_text("block Pair(c) {\n  conv(c, 1) -> relu\n}\n")
    main = tmp_path / "nets" / "main.cnn"
    main.parent.mkdir()
    main.write_text('import "../lib/blocks.cnn"\nnetwork N(x: [3, 8, 8]) {\n  Pair(4)\n}\n')
    with pytest.raises(SpecError) as info:
        cnndsl.load(main)
    assert "outside the spec's directory tree" in info.value.diagnostics[0].message
    assert cnndsl.load(main, allow_outside_imports=True).outputs[0].shape == (4, 8, 8)
    inside = tmp_path / "inside.cnn"
    inside.write_text('import "lib/blocks.cnn"\nnetwork N(x: [3, 8, 8]) {\n  Pair(4) -> Pair(2)\n}\n')
    n = cnndsl.load(inside)
    assert [x.path for x in n.layers] == ["Pair.0/conv.0", "Pair.0/relu.0", "Pair.1/conv.0", "Pair.1/relu.0"]
    assert n.layers[0].span.file.endswith("blocks.cnn")


def test_several_networks_need_a_choice() -> None:
    text = "network A(x: [3, 8, 8]) {\n  relu\n}\nnetwork B(x: [4]) {\n  linear(2)\n}\n"
    assert "choose one with --network" in errors(text)[0]
    assert net(text, network="B").outputs[0].shape == (2,)


@pytest.mark.parametrize(
    "text",
    ["", "\x00", "network", "network N(x: [3, 8, 8]) {" + "(" * 5000, "}" * 100, "block B() { B }\n" * 3],
)
def test_any_text_gives_spec_error(text: str) -> None:
    with pytest.raises(SpecError) as info:
        cnndsl.loads(text)
    for diagnostic in info.value.diagnostics:
        assert diagnostic.line >= 1 and diagnostic.column >= 1
        assert "internal error" not in diagnostic.message


def test_check_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom cnndsl.cli import main\n"
        "code = main(['check', 'specs/resnet152.cnn'])\n"
        "assert code == 0, code\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_library_file_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnndsl.cli import main

    lib = tmp_path / "blocks.cnn"
    lib.write_text("block Pair(c) {\n  conv(c, 1) -> relu\n}\n")
    assert main(["check", str(lib)]) == 0
    assert "library of 1 blocks (Pair)" in capsys.readouterr().out


def test_duplicate_output_names_are_made_distinct() -> None:
    n = net("network N(x: [3, 8, 8]) {\n  y = conv(4, 3)\n  return y, y\n}\n")
    assert [t.name for t in n.outputs] == ["y", "y_2"]


def test_merges_take_no_defaults_and_networks_are_unique() -> None:
    assert (
        "add is a merge and takes no parameters"
        in errors("defaults add(x=1)\nnetwork N(x: [4]) {\n  relu\n}\n")[0]
    )
    twice = "network N(x: [4]) {\n  relu\n}\nnetwork N(x: [4]) {\n  relu\n}\n"
    assert errors(twice) == ["4:9: network N is already defined at t.cnn:1:9"]


def test_readme_example_is_a_valid_resnet18() -> None:
    import re

    from cnndsl import ops

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```\n(# specs/resnet18.*?)```", readme, re.S)
    n = cnndsl.loads(example, "README.md")
    params = sum(ops.REGISTRY[x.op].costs(list(x.input_shapes), x.shape, x.args).params for x in n.layers)
    assert n.outputs[0].shape == (1000,)
    assert params == 11_689_512  # torchvision's resnet18
