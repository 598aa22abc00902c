"""Diagrams as a user meets them: ``cnndsl draw`` to dot, svg, png, pdf and mermaid; depth collapsing; labels that
agree with PyTorch; the message when Graphviz's ``dot`` is missing; Jupyter's inline diagram."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

import cnndsl
from cnndsl import ops, render
from cnndsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"

NESTED = """
block Unit(c) {
    add(conv(c, 3, padding=same) -> relu | identity)
}
block Pair(c) {
    Unit(c) * 2
}
network Nested(x: [4, 8, 8]) {
    conv(4, 1) -> relu
    Pair(4)
    a = Pair(4)
    b = a -> Unit(4)
    concat(a | b) -> gap -> linear(3)
}
"""

BRANCHY = """
network Branchy(x: [3, 16, 16]) {
    s = conv(8, 3, padding=same)
    se = s -> gap -> linear(8) -> sigmoid
    m = mul(s | se)
    p = m -> maxpool(2)
    q = m -> avgpool(2)
    return p, q
}
"""


def net(text: str) -> cnndsl.Network:
    return cnndsl.loads(textwrap.dedent(text), "t.cnn")


def spec(name: str) -> Path:
    path = SPECS / f"{name}.cnn"
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    return path


def draw(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["draw", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def expected_boxes(network: cnndsl.Network, depth: int | None) -> set[str]:
    """The box ids a drawing at ``depth`` must have, worked out from the frames directly: a node at fewer than
    ``depth`` block levels is its own box ``n<id>``; deeper nodes share one box per level-``depth`` instance,
    named after the instance's first node; each output gets a marker."""
    boxes: set[str] = set()
    first: dict[str, int] = {}
    for node in network.nodes:
        if depth is not None and len(node.frames) >= depth:
            first.setdefault(node.frames[depth - 1].path, node.id)
        else:
            boxes.add(f"n{node.id}")
    boxes |= {f"g{i}" for i in first.values()}
    return boxes | {f"out{k}" for k in range(len(network.outputs))}


def expected_clusters(network: cnndsl.Network, depth: int | None) -> set[str]:
    """Block instances drawn as clusters: every instance above the collapsed level."""
    paths = set()
    for node in network.nodes:
        frames = node.frames if depth is None else node.frames[: depth - 1]
        paths |= {frame.path for frame in frames}
    return paths


# ------------------------------------------------------------------------------------------ goldens ---


@pytest.mark.parametrize(
    ("name", "flags", "golden_name"),
    [
        ("lenet5", [], "lenet5.dot"),
        ("resnet18", ["--depth", "1"], "resnet18_depth1.dot"),
        ("resnet18", ["--depth", "all"], "resnet18_full.dot"),
        ("googlenet_paper", ["--depth", "all"], "googlenet_paper_full.dot"),
        ("resnet18", ["--depth", "2", "--format", "mermaid"], "resnet18_depth2.mmd"),
        # Language v2 networks: layer norm, channel linear, block parameters, SE gates, skips into a decoder.
        ("convnext_tiny", ["--depth", "2"], "convnext_tiny_depth2.dot"),
        ("mobilenet_v3_large", ["--depth", "2"], "mobilenet_v3_large_depth2.dot"),
        ("unet", ["--depth", "all"], "unet_full.dot"),
    ],
)
def test_golden_drawings(
    name: str,
    flags: list[str],
    golden_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    golden: Callable[[str, str], None],
) -> None:
    out = tmp_path / golden_name
    code, _, err = draw(capsys, str(spec(name)), "-o", str(out), *flags)
    assert code == 0, err
    golden(f"draw/{golden_name}", out.read_text(encoding="utf-8"))


def test_output_is_deterministic() -> None:
    network = cnndsl.load(spec("googlenet_paper"))
    first = render.to_graphviz(network, depth=None).source
    again = render.to_graphviz(cnndsl.load(spec("googlenet_paper")), depth=None).source
    assert first == again
    assert render.to_mermaid(network) == render.to_mermaid(cnndsl.load(spec("googlenet_paper")))


# ---------------------------------------------------------------------------------------------- svg ---


@needs_dot
@pytest.mark.parametrize(
    ("name", "depth"),
    [("lenet5", None), ("resnet18", None), ("resnet18", 1), ("resnet18", 2), ("googlenet_paper", None)],
)
def test_svg_is_xml_with_one_node_per_graph_node(
    name: str, depth: int | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "net.svg"
    code, _, err = draw(
        capsys, str(spec(name)), "-o", str(out), "--depth", "all" if depth is None else str(depth)
    )
    assert code == 0, err
    root = ET.parse(out).getroot()  # raises if the file is not well-formed XML
    assert root.tag == f"{SVG}svg"
    groups = list(root.iter(f"{SVG}g"))
    nodes = [g.findtext(f"{SVG}title") for g in groups if g.get("class") == "node"]
    network = cnndsl.load(spec(name))
    assert len(nodes) == len(set(nodes))
    assert set(nodes) == expected_boxes(network, depth)
    clusters = [g for g in groups if g.get("class") == "cluster"]
    assert len(clusters) == len(expected_clusters(network, depth))
    edges = [g for g in groups if g.get("class") == "edge"]
    diagram = render.build(network, depth=depth)
    assert len(edges) == len(diagram.links)  # the invisible edges that order branches are not drawn


@needs_dot
def test_png_and_pdf_are_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):
        out = tmp_path / f"lenet{suffix}"
        code, _, err = draw(capsys, str(spec("lenet5")), "-o", str(out))
        assert code == 0, err
        assert out.read_bytes().startswith(magic)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@needs_dot
def test_png_resolution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PNGs default to 144 dpi, twice Graphviz's 72: the same drawing at twice the pixels each way."""
    lenet = str(spec("lenet5"))
    sizes = {}
    for dpi in (None, "72", "216"):
        out = tmp_path / f"lenet_{dpi}.png"
        code, _, err = draw(capsys, lenet, "-o", str(out), *(["--dpi", dpi] if dpi else []))
        assert code == 0, err
        sizes[dpi] = _png_size(out)
    (w72, h72), (w, h), (w216, h216) = sizes["72"], sizes[None], sizes["216"]
    assert abs(w - 2 * w72) <= 2 and abs(h - 2 * h72) <= 2
    assert abs(w216 - 3 * w72) <= 3 and abs(h216 - 3 * h72) <= 3
    code, _, err = draw(capsys, lenet, "-o", str(tmp_path / "x.svg"), "--dpi", "144")
    assert code == 2 and "--dpi" in err and "png" in err
    for dpi in ("0", "-3", "x", "100000"):
        with pytest.raises(SystemExit) as exit_info:
            main(["draw", lenet, "-o", str(tmp_path / "y.png"), "--dpi", dpi])
        assert exit_info.value.code == 2
        assert "--dpi" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()


@pytest.mark.parametrize(
    ("fmt", "name", "means"),
    [
        ("svg", "x.png", "png"),
        ("png", "x.svg", "svg"),
        ("dot", "x.mmd", "mermaid"),
        ("mermaid", "x.pdf", "pdf"),
    ],
)
def test_format_and_suffix_must_agree(
    fmt: str, name: str, means: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / name
    code, _, err = draw(capsys, str(spec("lenet5")), "--format", fmt, "-o", str(out))
    assert code == 2 and f"--format {fmt} does not match" in err and means in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_format_given_for_an_unknown_suffix_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lenet.txt"
    code, _, err = draw(capsys, str(spec("lenet5")), "--format", "dot", "-o", str(out))
    assert code == 0, err
    assert out.read_text().startswith("digraph LeNet5")


# ---------------------------------------------------------------------------------- labels vs torch ---


def test_lenet_labels_agree_with_pytorch() -> None:
    """Every shape on an edge is the shape torch computes there, and every parameter count on a box is the
    module's parameter count (LeNet-5 built by hand in torch, layer for layer)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    network = cnndsl.load(spec("lenet5"))
    modules = {
        "conv": lambda n, c_in: nn.Conv2d(c_in, n.args["channels"], n.args["kernel"], n.args["stride"]),
        "tanh": lambda n, c_in: nn.Tanh(),
        "avgpool": lambda n, c_in: nn.AvgPool2d(n.args["kernel"], n.args["stride"]),
        "flatten": lambda n, c_in: nn.Flatten(),
        "linear": lambda n, c_in: nn.Linear(c_in, n.args["features"]),
        "softmax": lambda n, c_in: nn.Softmax(dim=1),
    }
    diagram = render.build(network, depth=None)
    boxes = {box.id: box for box in diagram.boxes()}
    labels = {link.tail: link.label for link in diagram.links if link.label}
    x = torch.zeros(1, *network.inputs[0].shape)
    checked_shapes = checked_params = 0
    for node in network.layers:
        module = modules[node.op](node, x.shape[1])
        x = module(x)
        torch_shape = "×".join(str(d) for d in x.shape[1:])
        if f"n{node.id}" in labels:
            assert labels[f"n{node.id}"] == torch_shape, node.path
            checked_shapes += 1
        params = sum(p.numel() for p in module.parameters())
        box = boxes[f"n{node.id}"]
        assert box.title == ops.REGISTRY[node.op].label(node.args)
        if params:
            assert box.details == (f"{render.si(params)} params · {render.si(_macs(node))} MACs",)
            checked_params += 1
        else:
            assert box.details == ()
    # every shape change (conv, pool, flatten, linear) and every layer with weights
    assert checked_shapes == 8 and checked_params == 5
    assert f"{render.si(61_706)} params" in diagram.details[0]  # the paper's "about 60 thousand"


def _macs(node: cnndsl.Node) -> int:
    # MACs by the architecture's convention, written out: conv = Cout*Hout*Wout * Cin*kh*kw, linear = in*out.
    if node.op == "conv":
        c, h, w = node.shape
        kh, kw = node.args["kernel"]
        return c * h * w * node.input_shapes[0][0] * kh * kw
    return node.input_shapes[0][0] * node.shape[0]


def test_si_counts() -> None:
    assert [render.si(n) for n in (0, 999, 1000, 61_706, 999_499, 999_500, 1_814_073_344)] == [
        "0",
        "999",
        "1K",
        "61.7K",
        "999K",
        "1M",
        "1.81G",
    ]


# ------------------------------------------------------------------------------------ depth, merges ---


@pytest.mark.parametrize("depth", [None, 1, 2, 3])
def test_depth_collapses_instances_at_that_level(depth: int | None) -> None:
    network = net(NESTED)
    diagram = render.build(network, depth=depth)
    assert {box.id for box in diagram.boxes()} == expected_boxes(network, depth)
    assert {c.frame.path for c in diagram.clusters()} == expected_clusters(network, depth)
    for box in diagram.boxes():
        if box.kind != "block":
            continue
        members = [network.nodes[i] for i in box.nodes]
        frame = members[0].frames[depth - 1]  # type: ignore[operator]
        assert box.title == frame.call
        assert all(frame in node.frames for node in members)
        params = sum(ops.REGISTRY[n.op].costs(list(n.input_shapes), n.shape, n.args).params for n in members)
        assert box.details[0].startswith(f"{len(members)} layers · {render.si(params)} params")
    # Edges never point inside a collapsed box, and a tensor entering a box on two paths is one edge.
    ids = {box.id for box in diagram.boxes()}
    assert all(link.tail in ids and link.head in ids for link in diagram.links)
    pairs = [(link.tail, link.head) for link in diagram.links]
    assert len(pairs) == len(set(pairs))


def test_depth_one_of_resnet18_is_the_stages() -> None:
    network = cnndsl.load(spec("resnet18"))
    diagram = render.build(network, depth=1)
    blocks = [box for box in diagram.boxes() if box.kind == "block"]
    stages = {n.frames[0].path: n.frames[0].call for n in network.nodes if n.frames}
    assert [box.title for box in blocks] == list(stages.values())
    assert len(blocks) == 4 and blocks[1].title.startswith("BasicStage(c=128")
    assert sum(len(box.nodes) for box in blocks) == sum(1 for n in network.nodes if n.frames)
    # Edges out of a collapsed stage carry the stage's output shape.
    shapes = [link.label for link in diagram.links if link.tail.startswith("g")]
    assert shapes == ["64×56×56", "128×28×28", "256×14×14", "512×7×7"]


def test_auto_depth_keeps_big_networks_readable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    expected = {"lenet5": None, "resnet18": None, "googlenet_paper": 1, "resnet152": 2, "densenet121": 2}
    for name, depth in expected.items():
        network = cnndsl.load(spec(name))
        assert render.resolve_depth(network) == depth, name
        diagram = render.build(network)
        assert len(list(diagram.boxes())) - len(network.outputs) <= render.AUTO_NODE_LIMIT
    code, _, err = draw(capsys, str(spec("resnet152")), "-o", str(tmp_path / "r.dot"))
    assert code == 0
    assert "514 layers are too many" in err and "(57 boxes)" in err and "--depth all" in err
    code, _, err = draw(capsys, str(spec("resnet152")), "-o", str(tmp_path / "r.dot"), "--depth", "all")
    assert code == 0 and err == ""
    assert len(re.findall(r"^\s*n\d+ \[", (tmp_path / "r.dot").read_text(), re.M)) == 515


def test_merges_outputs_and_families() -> None:
    network = net(BRANCHY)
    diagram = render.build(network, depth=None)
    merges = [box for box in diagram.boxes() if box.kind == "merge"]
    assert [box.title for box in merges] == ["⊗"]
    outputs = [box for box in diagram.boxes() if box.kind == "output"]
    assert [(box.title, box.details) for box in outputs] == [("p", ("8×8×8",)), ("q", ("8×8×8",))]
    inputs = [box for box in diagram.boxes() if box.kind == "input"]
    assert [(box.title, box.details) for box in inputs] == [("x", ("3×16×16",))]
    drawn = {box.family for box in diagram.boxes() if box.kind != "output"}
    assert set(diagram.families) == drawn
    assert diagram.merges == ["mul"]
    source = render.to_graphviz(network).source
    for family in drawn:
        assert render.FAMILY_COLOURS[family][0] in source
    # resnet18's residual adds and googlenet's concats
    assert "⊕" in render.to_graphviz(cnndsl.load(spec("resnet18")), depth=None).source
    assert "∥" in render.to_graphviz(cnndsl.load(spec("googlenet_paper")), depth=None).source


def test_shape_labels_appear_where_the_shape_changes() -> None:
    network = net(BRANCHY)
    diagram = render.build(network, depth=None)
    by_id = {f"n{node.id}": node for node in network.nodes}
    labelled_tensors = [link.tail for link in diagram.links if link.label]
    assert len(labelled_tensors) == len(set(labelled_tensors))  # a tensor is labelled once
    for link in diagram.links:
        source = by_id.get(link.tail)
        if source is None or link.head.startswith("out"):
            continue
        changed = source.op != "input" and source.shape != source.input_shapes[0]
        if link.label:
            assert changed and link.label == "×".join(map(str, source.shape))
        elif changed:
            assert link.tail in labelled_tensors  # labelled on its first edge
    assert all(not link.label for link in render.build(network, depth=None, shapes=False).links)


def test_inception_branches_stay_in_written_order() -> None:
    network = cnndsl.load(spec("googlenet_paper"))
    diagram = render.build(network, depth=None)
    first = next(diagram.clusters())
    block_input = min(
        network.nodes[int(box.id[1:])].inputs[0] for box in first.items if isinstance(box, render.Box)
    )
    heads = tuple(f"n{n.id}" for n in network.nodes if n.inputs == (block_input,))
    assert len(heads) == 4
    assert first.rows == [heads]
    source = render.to_graphviz(network, depth=None).source
    chain = " -> ".join(heads)
    assert all(f"{a} -> {b} [style=invis]" in source for a, b in zip(heads, heads[1:], strict=False)), chain


# ------------------------------------------------------------------------------------------ options ---


def test_flags_change_the_drawing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lenet = str(spec("lenet5"))
    code, plain, _ = draw(capsys, lenet)
    assert code == 0 and plain.startswith("digraph LeNet5 {")
    assert "rankdir=TB" in plain and "params" in plain and 'label=" 6×28×28"' in plain and "bgcolor" in plain
    _, lr, _ = draw(capsys, lenet, "--rankdir", "LR")
    assert "rankdir=LR" in lr
    _, bare, _ = draw(capsys, lenet, "--no-costs", "--no-shapes", "--no-legend")
    assert "params" not in bare and "MACs" not in bare and "6×28×28" not in bare and "bgcolor" not in bare
    assert bare.count("->") == plain.count("->")


def test_mermaid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = draw(capsys, str(spec("resnet18")), "--format", "mermaid", "--depth", "all")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "---" and lines[1].startswith('title: "ResNet18') and lines[3] == "flowchart TB"
    declared = re.findall(r"^\s*(\w+)[\[(]", text, re.M)
    assert len(declared) == len(set(declared))
    for tail, head in re.findall(r"^\s*(\w+) -->(?:\|\"[^\"]*\"\|)? (\w+)$", text, re.M):
        assert tail in declared and head in declared
    network = cnndsl.load(spec("resnet18"))
    assert {d for d in declared if not d.startswith("legend")} == expected_boxes(network, None)
    opened = sum(1 for line in lines if line.strip().startswith("subgraph "))
    assert opened == len(expected_clusters(network, None)) + 1  # + the legend
    assert opened == sum(1 for line in lines if line.strip() == "end")
    assert text.count('(("⊕"))') == sum(1 for n in network.nodes if n.op == "add")
    # -o x.md wraps it in a fence GitHub renders
    code, _, _ = draw(capsys, str(spec("lenet5")), "-o", str(tmp_path / "d.md"))
    md = (tmp_path / "d.md").read_text()
    assert code == 0 and md.startswith("```mermaid\n---\n") and md.endswith("```\n")


def test_mermaid_escapes_quotes() -> None:
    assert render._mermaid_text('a "b" <c>', ("d",)) == "a #quot;b#quot; #lt;c#gt;<br/>d"


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lenet = str(spec("lenet5"))
    code, _, err = draw(capsys, lenet, "-o", str(tmp_path / "x.jpeg"))
    assert code == 2 and "cannot tell the format" in err and "--format" in err
    code, _, err = draw(capsys, lenet, "--format", "svg")
    assert code == 2 and "-o" in err
    for depth in ("0", "deep"):
        with pytest.raises(SystemExit):
            main(["draw", lenet, "--depth", depth])
        assert "expected a number of levels (1 or more) or 'all'" in capsys.readouterr().err
    bad = tmp_path / "bad.cnn"
    bad.write_text("network N(x: [3, 8, 8]) { conv(4, 9) }\n")
    code, _, err = draw(capsys, str(bad), "-o", str(tmp_path / "bad.dot"))
    assert code == 1 and "bad.cnn:1" in err and not (tmp_path / "bad.dot").exists()


# ---------------------------------------------------------------------------- without Graphviz's dot ---


def test_without_dot_rendered_formats_fail_clearly_and_text_formats_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # hides dot; the test runs in-process, so python is not needed
    lenet = str(spec("lenet5"))
    for fmt in ("svg", "png", "pdf"):
        out = tmp_path / f"lenet.{fmt}"
        code, _, err = draw(capsys, lenet, "-o", str(out))
        assert code == 2, err
        assert "'dot'" in err and "apt-get install graphviz" in err and ".dot" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()
    code, _, err = draw(capsys, lenet, "-o", str(tmp_path / "lenet.dot"))
    assert code == 0 and (tmp_path / "lenet.dot").read_text().startswith("digraph LeNet5")
    code, out_text, _ = draw(capsys, lenet, "--format", "mermaid")
    assert code == 0 and "flowchart TB" in out_text
    assert cnndsl.load(lenet)._repr_svg_() is None  # Jupyter falls back to the plain repr


@needs_dot
def test_jupyter_repr_is_the_svg() -> None:
    svg = cnndsl.load(spec("lenet5"))._repr_svg_()
    assert svg is not None
    root = ET.fromstring(svg.encode())
    titles = {g.findtext(f"{SVG}title") for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
    assert titles == expected_boxes(cnndsl.load(spec("lenet5")), None)


def test_draw_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from cnndsl.cli import main; "
        f"rc = main(['draw', {str(spec('resnet18'))!r}, '-o', {str(tmp_path / 'r.dot')!r}]); "
        "rc |= main(['draw', "
        f"{str(spec('resnet18'))!r}, '--format', 'mermaid', '-o', {str(tmp_path / 'r.mmd')!r}]); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'draw imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_op_is_drawn_with_its_registry_label() -> None:
    """Each op's example network (tests/test_analysis.py): one box per node, each layer's box titled with its
    registry label (merges with their symbol), in both emitters, and the dot text renders."""
    from test_analysis import OP_EXAMPLES

    for name, body in sorted(OP_EXAMPLES.items()):
        network = cnndsl.loads(f"network Op_{name}(x: [3, 17, 19]) {{\n    {body}\n}}\n")
        diagram = render.build(network, depth=None)
        titles = {box.nodes[0]: box.title for box in diagram.boxes() if box.nodes}
        for node in network.layers:
            op = ops.REGISTRY[node.op]
            assert titles[node.id] == (op.symbol or op.label(node.args)), (name, node.path)
        source = render.to_graphviz(network, depth=None).source
        mermaid = render.to_mermaid(network, depth=None)
        for node in network.layers:
            text = ops.REGISTRY[node.op].symbol or ops.REGISTRY[node.op].label(node.args)
            assert text in source and text.replace('"', "#quot;") in mermaid, (name, text)
        if HAS_DOT:
            subprocess.run(["dot", "-Tsvg"], input=source, text=True, check=True, capture_output=True)
