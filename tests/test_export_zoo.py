"""ONNX export of real specs: a sample of specs/ that uses every op any spec uses is exported at its smallest input
and run in onnxruntime against the torch module. Exporting all 80 networks costs about 14 CPU-minutes, beyond the
suite's budget; bench/export_sweep.py does that (docs/benchmarks.md records its run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SPECS, randomise, smallest_input, spec_files

import cnndsl

onnx = pytest.importorskip("onnx")

# The cheapest specs that together use every op the specs in specs/ use (the first test keeps this true as specs
# are added); each line names the ops it alone brings.
SAMPLE = [
    "lenet5",  # avgpool, tanh, softmax
    "fpn_two_outputs",  # upsample, two outputs
    "alexnet",  # adaptive_avgpool, dropout, maxpool
    "unet",  # conv_transpose, concat of skips
    "googlenet_paper",  # lrn
    "mobilenet_v2",  # relu6
    "convnext_tiny",  # layer_norm, channel_linear, gelu, parameter, stochastic_depth, repeated blocks
    "shufflenet_v2_x0_5",  # chunk, channel_shuffle
    "lraspp_mobilenet_v3_large",  # hardswish, hardsigmoid, resize, mul
    "efficientnet_b0",  # silu
]


def _network(name: str) -> cnndsl.Network:
    path = SPECS / f"{name}.cnn"
    return cnndsl.load(path, input_shapes=smallest_input(path))


def test_sample_uses_every_op_of_the_specs() -> None:
    used: dict[str, str] = {}
    for path in spec_files():
        try:
            network = cnndsl.load(path)
        except cnndsl.SpecError as error:
            if "no network defined" in str(error):
                continue
            raise
        for layer in network.layers:
            used.setdefault(layer.op, path.stem)
    sampled = {layer.op for name in SAMPLE for layer in _network(name).layers}
    missing = {op: spec for op, spec in used.items() if op not in sampled}
    assert not missing, f"ops no SAMPLE spec exports (add a spec that uses them): {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("name", SAMPLE)
def test_spec_exports_and_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    """`cnndsl export --weights` on the spec at its smallest input; onnxruntime at batches 1 and 3 (the traced
    batch is 2) equals the eval-mode module, whose output depends on its input."""
    ort = pytest.importorskip("onnxruntime")
    from cnndsl.cli import main

    path = SPECS / f"{name}.cnn"
    shapes = smallest_input(path)
    network = _network(name)
    module = network.to_torch()
    generator = torch.Generator().manual_seed(0)
    randomise(module, network, generator)
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / f"{name}.onnx"
    size = ["--input", "x".join(map(str, shapes[None]))] if shapes else []
    assert (
        main(["export", str(path), "--onnx", str(out), "--weights", str(tmp_path / "weights.pt"), *size]) == 0
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = [torch.randn(3, *t.shape, generator=generator) for t in network.inputs]
    with torch.no_grad():
        expected = module.eval()(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(expected) == len(network.outputs)
    # Activations of order one through 50 layers cost float32 precision: on efficientnet_b0 with these weights
    # torch's own float32 output is 1.6e-4 of the output's scale away from float64 (onnxruntime's 0.6e-4), so
    # the two float32 results are compared to 1e-3 of the scale; a wrong graph is off by far more.
    for batch in (1, 3):
        feed = {t.name: x[:batch].numpy() for t, x in zip(network.inputs, inputs, strict=True)}
        for ours, theirs in zip(session.run(None, feed), expected, strict=True):
            scale = max(1.0, theirs.abs().max().item())
            torch.testing.assert_close(torch.from_numpy(ours), theirs[:batch], rtol=1e-3, atol=1e-3 * scale)
    for theirs in expected:
        assert (theirs[0] - theirs[1]).abs().max() > 1e-3 * theirs.abs().max(), "the output ignores the input"
