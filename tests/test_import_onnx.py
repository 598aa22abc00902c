"""`cnndsl import model.onnx`: torchvision models exported to ONNX come back as specs that compute the same."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
onnx = pytest.importorskip("onnx")

import cnndsl  # noqa: E402
from cnndsl.analysis import summarize  # noqa: E402
from cnndsl.importers import ImportFailure, import_file, import_graph  # noqa: E402
from cnndsl.importers.onnx_model import import_onnx, spec_state_dict  # noqa: E402

SHAPE = (3, 64, 64)


def _source(name: str) -> torch.nn.Module:
    model = getattr(torchvision.models, name)().eval()
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():  # non-trivial statistics: an identity batch norm would hide mistakes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator))
    return model


def _export(model: torch.nn.Module, path: Path, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if dynamo:
                torch.onnx.export(model, (torch.zeros(1, *SHAPE),), str(path), dynamo=True)
            else:
                torch.onnx.export(
                    model,
                    (torch.zeros(1, *SHAPE),),
                    str(path),
                    dynamo=False,
                    opset_version=17,
                    do_constant_folding=False,
                )
        finally:
            logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121", "shufflenet_v2_x0_5"])
def test_onnx_round_trip_keeps_layers_weights_and_outputs(tmp_path: Path, name: str) -> None:
    source = _source(name)
    path = tmp_path / f"{name}.onnx"
    _export(source, path, dynamo=False)
    imported = import_onnx(path)
    network = cnndsl.loads(import_graph(imported.graph).spec)
    assert summarize(network).totals.trainable_params == sum(p.numel() for p in source.parameters())
    model = network.to_torch().eval()
    cnndsl.load_weights(model, spec_state_dict(imported, network), match="name")
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=1e-5)


def test_a_file_with_batch_norm_folded_into_the_convolutions_imports_as_what_it_computes(
    tmp_path: Path,
) -> None:
    source = _source("resnet18")
    path = tmp_path / "folded.onnx"
    _export(
        source, path, dynamo=True
    )  # torch's dynamo exporter folds batch norm into conv weights and biases
    imported = import_onnx(path)
    network = cnndsl.loads(import_graph(imported.graph).spec)
    assert not any(node.op == "bn" for node in network.layers)
    convs = [m for m in source.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [n.args["channels"] for n in network.layers if n.op == "conv"] == [m.out_channels for m in convs]
    assert all(n.args["bias"] for n in network.layers if n.op == "conv")  # the folded shift lives in the bias
    model = network.to_torch().eval()
    cnndsl.load_weights(model, spec_state_dict(imported, network), match="name")
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-4, atol=1e-4)


def test_truncated_and_foreign_files_fail_cleanly(tmp_path: Path) -> None:
    source = torchvision.models.squeezenet1_1().eval()
    good = tmp_path / "sq.onnx"
    _export(source, good, dynamo=False)
    data = good.read_bytes()
    for name, content in [
        ("truncated.onnx", data[: len(data) // 3]),
        ("text.onnx", b"hello, I am not a model\n"),
    ]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ImportFailure) as failure:
            import_file(bad)
        assert (
            "ONNX" in failure.value.problems[0].message or "initializer" in failure.value.problems[0].message
        )


def test_unsupported_nodes_are_listed_by_name(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="first"),
        helper.make_node("Erf", ["a"], ["b"], name="erf_node"),
        helper.make_node("Tile", ["b", "reps"], ["c"], name="tile_node"),
    ]
    graph = helper.make_graph(
        nodes,
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
        [helper.make_tensor("reps", TensorProto.INT64, [4], [1, 1, 1, 1])],
    )
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ImportFailure) as failure:
        import_file(path)
    assert [p.location.name for p in failure.value.problems] == [
        "node erf_node (Erf)",
        "node tile_node (Tile)",
    ]
    result = import_file(path, partial=True)
    assert len(result.gaps) == 2 and result.spec.count("NOT IMPORTED") == 2


def test_cli_onnx_with_weights(tmp_path: Path) -> None:
    source = _source("resnet18")
    _export(source, tmp_path / "r.onnx", dynamo=False)
    done = subprocess.run(
        [sys.executable, "-m", "cnndsl", "import", "r.onnx", "-o", "r.cnn", "--weights-out", "r.pt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    model = cnndsl.load(tmp_path / "r.cnn").to_torch().eval()
    cnndsl.load_weights(model, torch.load(tmp_path / "r.pt", weights_only=True), match="name")
    x = torch.randn(1, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=1e-5)


class _Gates(torch.nn.Module):
    """The patterns torch exports for EfficientNet and MobileNet v3: SiLU as ``x * sigmoid(x)``, Hardsigmoid as
    ONNX's HardSigmoid(1/6, 0.5), a batch norm with eps=1e-3 (a float32 attribute); and a ``x * sigmoid(y)`` gate
    and ``y * sigmoid(y)`` whose sigmoid is also read elsewhere, which are not SiLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8, eps=1e-3)
        self.act = torch.nn.SiLU()
        self.squeeze = torch.nn.Conv2d(8, 8, 1)
        self.gate = torch.nn.Hardsigmoid()
        self.other = torch.nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = x * self.gate(self.squeeze(x.mean((2, 3), keepdim=True)))
        y = self.other(x)
        s = torch.sigmoid(y)
        return x * s + y * s + s


def test_silu_hardsigmoid_and_float32_attributes_import_as_what_torch_wrote(tmp_path: Path) -> None:
    source = _Gates().eval()
    path = tmp_path / "gates.onnx"
    _export(source, path, dynamo=False)
    imported = import_onnx(path)
    spec = import_graph(imported.graph).spec
    network = cnndsl.loads(spec)
    ops = [n.op for n in network.layers]
    assert ops.count("silu") == 1 and ops.count("hardsigmoid") == 1, spec
    assert ops.count("sigmoid") == 1, spec  # read three times: a sigmoid of its own
    assert [n.args["eps"] for n in network.layers if n.op == "bn"] == [1e-3]
    model = network.to_torch().eval()
    cnndsl.load_weights(model, spec_state_dict(imported, network), match="name")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        # float64 on both sides: the same ops give the same bits (a sigmoid-and-mul SiLU or eps=0.0010000000475
        # would not).
        assert torch.equal(model.double()(x), source.double()(x))


class _Views(torch.nn.Module):
    """What torch exports with shapes computed at run time (``Shape``, ``Gather``, ``Div``... on ``x.size()``):
    ShuffleNet's channel shuffle (Reshape, Transpose, Reshape), ``chunk`` (Slice) and segmentation's
    ``interpolate`` back to the input size (Resize), bilinear and nearest."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.conv(x)
        n, c, h, w = y.size()
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        a, b = y.chunk(2, dim=1)
        up = torch.nn.functional.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return up + torch.nn.functional.interpolate(a, scale_factor=2, mode="nearest")


def test_run_time_shapes_channel_shuffle_chunks_and_resize_import_exactly(tmp_path: Path) -> None:
    source = _Views().eval()
    path = tmp_path / "views.onnx"
    _export(source, path, dynamo=False)
    imported = import_onnx(path)
    spec = import_graph(imported.graph).spec
    network = cnndsl.loads(spec)
    ops = [n.op for n in network.layers]
    assert ops.count("channel_shuffle") == 1 and ops.count("chunk") == 2 and ops.count("resize") == 2, spec
    model = network.to_torch().eval()
    cnndsl.load_weights(model, spec_state_dict(imported, network), match="name")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model.double()(x), source.double()(x))


def test_a_transpose_outside_a_channel_shuffle_is_reported(tmp_path: Path) -> None:
    class Swap(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.transpose(2, 3)

    path = tmp_path / "swap.onnx"
    _export(Swap().eval(), path, dynamo=False)
    with pytest.raises(ImportFailure) as failure:
        import_file(path)
    [problem] = failure.value.problems
    assert "Transpose" in str(problem.location) and "channel shuffle" in problem.message


def test_convnext_channels_last_section_imports_as_channel_ops(tmp_path: Path) -> None:
    """ConvNeXt's block as torch exports it: Transpose to NHWC, LayerNormalization, MatMul + Add, GELU written as
    Div/Erf/Add/Mul/Mul, MatMul + Add, Transpose back, a layer-scale Mul; and LayerNorm2d (Transpose,
    LayerNormalization, Transpose)."""
    from torchvision.models.convnext import CNBlock, LayerNorm2d

    source = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8, eps=1e-6), CNBlock(8, 1e-6, 0.0)
    ).eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in source.parameters():  # not the initial 1e-6 layer scale, ones and zeros
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    path = tmp_path / "cn.onnx"
    _export(source, path, dynamo=False)
    imported = import_onnx(path)
    spec = import_graph(imported.graph).spec
    network = cnndsl.loads(spec)
    ops = [n.op for n in network.layers]
    for op, count in [("layer_norm", 2), ("channel_linear", 2), ("gelu", 1), ("channel_scale", 1)]:
        assert ops.count(op) == count, (op, spec)
    assert all(n.args["bias"] for n in network.layers if n.op == "channel_linear")
    assert summarize(network).totals.trainable_params == sum(p.numel() for p in source.parameters())
    model = network.to_torch().eval()
    cnndsl.load_weights(model, spec_state_dict(imported, network), match="name")
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model.double()(x), source.double()(x))


def test_split_and_gelu_nodes_as_the_dynamo_exporter_writes_them(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], name="split", axis=1),
        helper.make_node("Gelu", ["a"], ["g"], name="gelu"),
        helper.make_node("Add", ["g", "b"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "split_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor("sizes", TensorProto.INT64, [2], [4, 4])],
    )
    path = tmp_path / "split_gelu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    network = cnndsl.loads(import_file(path).spec)
    assert [n.op for n in network.layers].count("chunk") == 2
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        got = network.to_torch().double().eval()(x)
    assert torch.equal(got, torch.nn.functional.gelu(x[:, :4]) + x[:, 4:])
    # Unequal parts are not a chunk: reported, located at the node.
    sizes = graph.initializer[0]
    sizes.CopyFrom(helper.make_tensor("sizes", TensorProto.INT64, [2], [3, 5]))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    with pytest.raises(ImportFailure) as failure:
        import_file(path)
    assert "split (Split)" in str(failure.value.problems[0].location)
