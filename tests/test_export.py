"""ONNX export: the model passes the onnx checker, keeps the spec's tensor names and a dynamic batch, and (when
onnxruntime is installed) computes what the torch module computes with the same weights."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
import torch
from test_analysis import OP_EXAMPLES

import cnndsl
from cnndsl.cli import main
from cnndsl.export import ExportError, OnnxUnavailable, export_onnx

NEWER_OPS = [
    "parameter",
    "conv_transpose",
    "gmp",
    "adaptive_maxpool",
    "layer_norm",
    "group_norm",
    "hardswish",
    "hardsigmoid",
    "stochastic_depth",
    "channel_shuffle",
    "chunk",
    "slice",
    "resize",
    "channel_linear",
    "channel_scale",
    "add",
    "mul",
]

onnx = pytest.importorskip("onnx")

TWO_OUTPUTS = """
network Pyramid(image: [3, 16, 16], extra: [4]) {
    c3 = image -> conv(8, 3, stride=2, padding=same) -> bn -> relu
    c4 = conv(8, 3, stride=2, padding=same) -> relu
    p4 = c4 -> conv(8, 1)
    p3 = add(c3 -> conv(8, 1) | p4 -> upsample(2))
    gated = mul(p3 | extra -> linear(8) -> sigmoid)
    scores = gated -> gap -> linear(5) -> softmax
    return scores, p4
}
"""


@pytest.fixture(scope="module")
def network() -> cnndsl.Network:
    return cnndsl.loads(TWO_OUTPUTS)


@pytest.fixture(scope="module")
def exported(network: cnndsl.Network) -> tuple[torch.nn.Module, bytes]:
    module = network.to_torch()
    with torch.no_grad():  # non-default batchnorm statistics, so eval-mode export is really checked
        module.get_submodule("bn_0").running_mean.uniform_(-1, 1)
        module.get_submodule("bn_0").running_var.uniform_(0.5, 2)
    return module, export_onnx(network, module=module)


def test_model_is_valid_with_spec_names_and_dynamic_batch(exported: tuple[torch.nn.Module, bytes]) -> None:
    module, data = exported
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image", "extra"]
    assert [o.name for o in model.graph.output] == ["scores", "p4"]
    first = model.graph.input[0].type.tensor_type.shape.dim
    assert first[0].dim_param and [d.dim_value for d in first[1:]] == [3, 16, 16]
    assert module.training, "export must leave the module's mode as it found it"


def test_onnxruntime_agrees_with_torch(exported: tuple[torch.nn.Module, bytes]) -> None:
    ort = pytest.importorskip("onnxruntime")
    module, data = exported
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    image, extra = torch.randn(3, 3, 16, 16), torch.randn(3, 4)  # batch 3: the batch dimension is dynamic
    scores, p4 = session.run(None, {"image": image.numpy(), "extra": extra.numpy()})
    module.eval()
    with torch.no_grad():
        expected = module(image, extra)
    module.train()
    torch.testing.assert_close(torch.from_numpy(scores), expected[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(p4), expected[1], rtol=1e-4, atol=1e-5)


def test_logits_and_static_batch(network: cnndsl.Network) -> None:
    model = onnx.load_from_string(export_onnx(network, logits=True, dynamic_batch=False, batch=2))
    assert "Softmax" not in {node.op_type for node in model.graph.node}
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_missing_onnx_is_a_clear_error(network: cnndsl.Network, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "onnxscript":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(
        OnnxUnavailable, match=r"needs the optional packages onnxscript: pip install 'cnndsl\[onnx\]'"
    ):
        export_onnx(network)


def test_bad_batch(network: cnndsl.Network) -> None:
    with pytest.raises(ExportError, match="batch must be positive"):
        export_onnx(network, batch=0)


SMALL = "network Small(x: [3, 8, 8]) {\n    conv(4, 3) -> relu -> gap -> linear(2)\n}\n"


def test_cli_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "small.cnn"
    spec.write_text(SMALL, encoding="utf-8")
    out = tmp_path / "small.onnx"
    assert main(["export", str(spec), "--onnx", str(out), "--input", "3x12x12"]) == 0
    assert "passes the onnx checker" in capsys.readouterr().err
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 12, 12]

    # --weights: a state_dict saved from the compiled module is exported as is.
    module = cnndsl.load(spec).to_torch()
    torch.save(module.state_dict(), tmp_path / "w.pt")
    assert main(["export", str(spec), "--onnx", str(out), "--weights", str(tmp_path / "w.pt")]) == 0
    initialisers = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    weight = next(v for k, v in initialisers.items() if v.shape == (4, 3, 3, 3))
    torch.testing.assert_close(torch.from_numpy(weight.copy()), module.state_dict()["conv_0.weight"])
    capsys.readouterr()

    # Weights that do not fit: exit 1 and the first mismatch, nothing written.
    torch.save({"conv_0.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    out.unlink()
    assert main(["export", str(spec), "--onnx", str(out), "--weights", str(tmp_path / "bad.pt")]) == 1
    assert "missing" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(spec), "--onnx", str(out), "--batch", "0"]) == 2
    capsys.readouterr()

    # onnx missing: exit 2 with the install hint.
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "onnx":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert main(["export", str(spec), "--onnx", str(out)]) == 2
    assert "pip install 'cnndsl[onnx]'" in capsys.readouterr().err


@pytest.mark.slow
def test_resnet18_exports_and_runs() -> None:
    spec = Path(__file__).resolve().parent.parent / "specs" / "resnet18.cnn"
    if not spec.exists():
        pytest.skip("specs/resnet18.cnn not written yet")
    network = cnndsl.load(spec)
    module = network.to_torch()
    data = export_onnx(network, module=module)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(2, 3, 224, 224)
    (out,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), module.eval()(x), rtol=1e-3, atol=1e-4)


# Every op added for torchvision's newer networks, in one small network (one export keeps the test quick). The
# ConvNeXt-style Unit is repeated and followed by a squeeze-and-excitation gate: the second Unit's conv reads the
# channels-last view a channel_linear returns, which made torch.export guard the batch on the example's size
# when it was 1 (export_onnx now traces a dynamic batch at 2; _onnx_agrees runs batches 1 and 3).
NEW_OPS = """
block Unit(c) {
    param gamma: [c, 1, 1] = 0.5
    add(
        conv(c, 7, padding=3, groups=c) -> layer_norm(eps=1e-6) -> channel_linear(2 * c) -> gelu
        -> channel_linear(c) -> mul(gamma | identity) -> stochastic_depth(0.1)
      | identity
    )
}

network NewOps(image: [8, 12, 12]) {
    skip = conv(8, 3, stride=2, padding=1) -> group_norm(2) -> hardswish
    concat(chunk(2, 0) | chunk(2, 1) -> conv(4, 1) -> hardsigmoid) -> channel_shuffle(2)
    Unit(8) * 2 -> mul(identity | gap -> linear(2) -> relu -> linear(8) -> sigmoid)
    slice(2, 8) -> channel_scale(init=0.5)
    add(identity | gmp)
    up = conv_transpose(6, 3, stride=2, padding=1, output_padding=1)
    a = up -> resize(like=image, mode=bilinear, align_corners=true) -> resize(scale=0.5) -> adaptive_maxpool(2)
        -> flatten
    return a, up
}
"""


def _onnx_agrees(network: cnndsl.Network, batches: tuple[int, ...] = (1, 3)) -> None:
    """Export with random weights; onnxruntime's outputs at batch sizes other than the traced one (2) equal the
    module's."""
    ort = pytest.importorskip("onnxruntime")
    module = network.to_torch()
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.copy_(torch.rand_like(tensor) - 0.5)
    data = export_onnx(network, module=module)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    module.eval()
    for batch in batches:
        inputs = [torch.randn(batch, *t.shape) for t in network.inputs]
        results = session.run(None, {t.name: x.numpy() for t, x in zip(network.inputs, inputs, strict=True)})
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        assert len(results) == len(expected) == len(network.outputs)
        for ours, theirs in zip(results, expected, strict=True):
            torch.testing.assert_close(torch.from_numpy(ours), theirs, rtol=1e-4, atol=1e-5)


def test_new_ops_export_and_run_in_onnxruntime() -> None:
    _onnx_agrees(cnndsl.loads(NEW_OPS))


@pytest.mark.slow
@pytest.mark.parametrize("name", NEWER_OPS)
def test_each_new_op_exports(name: str) -> None:
    """Each newer op's example network alone (the one test_analysis counts against torch)."""
    # ONNX has no adaptive max pool with uneven windows (15x17 -> 2x3); a global one (MaxPool over H, W) exports.
    body = "conv(6, 3) -> adaptive_maxpool(1)" if name == "adaptive_maxpool" else OP_EXAMPLES[name]
    _onnx_agrees(cnndsl.loads(f"network Op_{name}(x: [3, 17, 19]) {{\n    {body}\n}}\n"))


def test_uneven_adaptive_max_pool_is_a_clear_export_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ONNX cannot say it: the registry's onnx rule names the layer and its line before anything is traced."""
    spec = tmp_path / "pool.cnn"
    spec.write_text("network P(x: [3, 15, 17]) {\n    conv(3, 1)\n    adaptive_maxpool([2, 3])\n}\n")
    with pytest.raises(ExportError) as error:
        export_onnx(cnndsl.load(spec))
    assert str(error.value) == (
        f"{spec}:3:5: adaptive_maxpool (adaptive_maxpool.0) has no ONNX form: ONNX has no adaptive max pool "
        "with uneven windows (15x17 -> 2x3); each input side must be a multiple of the output side"
    )
    assert main(["export", str(spec), "--onnx", str(tmp_path / "p.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{spec}:3:5: adaptive_maxpool" in err and "Traceback" not in err
    assert not (tmp_path / "p.onnx").exists()


def test_a_failing_layer_is_named_with_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """An op torch.export cannot trace (here gmp's function swapped for one that branches on the data) fails
    with one line that names the layer the exporter was on, not a traceback or torch's multi-page report."""

    def branching(x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3)) if x.sum() > 0 else x.amin(dim=(2, 3))

    monkeypatch.setattr(cnndsl.runtime, "global_max_pool", branching)
    network = cnndsl.loads("network P(x: [3, 8, 8]) {\n    conv(3, 1) -> relu\n    gmp -> linear(2)\n}\n")
    with pytest.raises(ExportError) as error:
        export_onnx(network)
    message = str(error.value)
    assert message.startswith("<string>:3:5: gmp (gmp.0): torch.onnx.export failed: ")
    assert "data-dependent" in message and "\n" not in message and "\x1b" not in message


def test_weights_over_two_gib_go_to_a_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """regnet_y_128gf's 2.6 GB of weights cannot be inside one protobuf: cnndsl export writes them to FILE.data
    beside the model. Shown here on a small network by lowering the threshold."""
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(cnndsl.export, "LARGE_MODEL_BYTES", 0)
    spec = tmp_path / "small.cnn"
    spec.write_text(SMALL, encoding="utf-8")
    with pytest.raises(
        ExportError, match=r"too large for one ONNX file \(2 GiB at most\): export_onnx_files"
    ):
        export_onnx(cnndsl.load(spec))
    module = cnndsl.load(spec).to_torch()
    torch.save(module.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "out" / "small.onnx"
    out.parent.mkdir()
    assert main(["export", str(spec), "--onnx", str(out), "--weights", str(tmp_path / "w.pt")]) == 0
    assert "small.onnx.data: " in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.onnx", "small.onnx.data"]
    model = onnx.load(str(out), load_external_data=False)
    assert {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"} == {
        "small.onnx.data"
    }
    onnx.checker.check_model(str(out), full_check=True)
    x = torch.randn(2, 3, 8, 8)
    (ours,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(ours), module.eval()(x), rtol=1e-4, atol=1e-5)
