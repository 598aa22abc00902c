"""Static analysis (cnndsl.analysis) against PyTorch as the oracle.

- for every spec in specs/ and every registered op: static params equal ``sum(p.numel())``, buffers equal
  ``sum(b.numel())``, per-layer MACs equal a count taken by forward hooks on the running module, and total MACs
  equal ``torch.utils.flop_counter`` total / 2 (it counts a multiply-accumulate as 2 FLOPs; bias adds excluded).
  Modules come from the torch backend (``network.to_torch()``) built on the meta device: shapes, no arithmetic.
- every zoo spec hits the reference params and MACs through ``summarize``;
- the receptive field matches a gradient measurement (backprop from one output pixel, non-zero input region) on a
  sequential, a residual and an inception spec;
- rows sum to totals at every ``--depth``; an op without a cost rule is an error; the CLI never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, SPECS, spec_files
from torch.utils.flop_counter import FlopCounterMode

import cnndsl
from cnndsl import ops
from cnndsl.analysis import (
    DTYPE_BYTES,
    AnalysisError,
    ReceptiveField,
    analyse_layers,
    collapse,
    inference_peak_elements,
    summarize,
)
from cnndsl.network import Network

REFERENCE: dict[str, dict[str, Any]] = {
    name: row
    for name, row in json.loads((Path(__file__).parent / "data" / "zoo_reference.json").read_text()).items()
    if not name.startswith("_")
}
SPEC_NAMES = [path.stem for path in spec_files()]

# One small network per registered op; the op under test follows a conv so it sees a realistic input.
OP_EXAMPLES: dict[str, str] = {
    "conv": "conv(12, [3, 5], stride=[2, 1], padding=[1, 2], dilation=[2, 1], groups=3, bias=true)",
    "maxpool": "conv(6, 3) -> maxpool(3, stride=2, padding=1, ceil=true)",
    "avgpool": "conv(6, 3) -> avgpool([2, 3], stride=2, padding=1, ceil=true, count_pad=false)",
    "gap": "conv(6, 3) -> gap",
    "adaptive_avgpool": "conv(6, 3) -> adaptive_avgpool([3, 5])",
    "flatten": "conv(6, 3) -> flatten",
    "linear": "conv(6, 3) -> flatten -> linear(7, bias=true) -> linear(5, bias=false)",
    "bn": "conv(6, 3) -> bn -> flatten -> linear(4) -> bn",
    "lrn": "conv(6, 3) -> lrn(size=3)",
    "relu": "conv(6, 3) -> relu",
    "relu6": "conv(6, 3) -> relu6",
    "leaky_relu": "conv(6, 3) -> leaky_relu(slope=0.2)",
    "tanh": "conv(6, 3) -> tanh",
    "sigmoid": "conv(6, 3) -> sigmoid",
    "silu": "conv(6, 3) -> silu",
    "gelu": "conv(6, 3) -> gelu",
    "softmax": "conv(6, 3) -> gap -> softmax",
    "dropout": "conv(6, 3) -> dropout(0.3)",
    "identity": "conv(6, 3) -> add(conv(6, 1) | identity)",
    "upsample": "conv(6, 3) -> upsample(2) -> upsample(3, mode=bilinear)",
    "add": "conv(6, 3) -> add(conv(6, 3, padding=1) | conv(6, 1) | identity)",
    "concat": "conv(6, 3) -> concat(conv(4, 1) | conv(5, 3, padding=1) | identity)",
    "mul": "conv(6, 3) -> mul(identity | gap -> linear(6) -> sigmoid) -> mul(adaptive_avgpool(1) | identity)",
    "input": "conv(6, 3)",
    "parameter": "param gamma: [6, 1, 1] = 0.5\n    conv(6, 3) -> mul(identity | gamma) -> add(gamma | identity)",
    "conv_transpose": "conv(6, 3) -> conv_transpose(4, 3, stride=2, padding=1, output_padding=1, groups=2, "
    "dilation=[1, 2]) -> conv_transpose(3, [2, 3], stride=[1, 2], bias=false)",
    "gmp": "conv(6, 3) -> gmp",
    "adaptive_maxpool": "conv(6, 3) -> adaptive_maxpool([2, 3])",
    "layer_norm": "conv(6, 3) -> layer_norm(eps=1e-6) -> gap -> layer_norm(affine=false)",
    "group_norm": "conv(6, 3) -> group_norm(3) -> group_norm(2, affine=false)",
    "hardswish": "conv(6, 3) -> hardswish",
    "hardsigmoid": "conv(6, 3) -> hardsigmoid",
    "stochastic_depth": "conv(6, 3) -> stochastic_depth(0.2) -> stochastic_depth(0.5, mode=batch)",
    "channel_shuffle": "conv(6, 3) -> channel_shuffle(3)",
    "chunk": "conv(6, 3) -> chunk(3, 2)",
    "slice": "conv(6, 3) -> slice(1, 4)",
    "resize": "c = conv(6, 3)\n    c -> resize(scale=1.5) -> resize(size=[7, 9], mode=bilinear, align_corners=true)"
    " -> resize(like=c)",
    "channel_linear": "conv(6, 3) -> channel_linear(10) -> channel_linear(4, bias=false)",
    "channel_scale": "conv(6, 3) -> channel_scale(init=0.1)",
    "pad": "conv(6, 3) -> pad(left=1, right=2, bottom=1) -> pad(top=1, mode=replicate) -> pad(1, 1, 1, 1, mode=reflect)",
    "sample_add": "a = conv(4, 1)\n    b = a -> conv(6, 1) -> upsample(2)\n    sample_add(a | b)",
}


def _op_network(name: str) -> Network:
    return cnndsl.loads(f"network Op_{name}(x: [3, 17, 19]) {{\n    {OP_EXAMPLES[name]}\n}}\n")


def _meta_module(net: Network) -> torch.nn.Module:
    with torch.device("meta"):
        return net.to_torch().eval()


def _meta_inputs(net: Network, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.empty((1, *t.shape), device="meta", dtype=dtype) for t in net.inputs]


def _hook_macs(module: torch.nn.Module, net: Network) -> dict[str, int]:
    """MACs per node path, counted from the module objects and the output tensors torch produced."""
    paths: dict[str, str] = module.meta["cnndsl_paths"]
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Any:
        def record(layer: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            if isinstance(layer, torch.nn.ConvTranspose2d):
                # Every input value is spread over a kh·kw window of Cout/g output channels.
                kh, kw = layer.kernel_size
                counts[paths[name]] = args[0][0].numel() * (layer.out_channels // layer.groups) * kh * kw
            elif isinstance(layer, torch.nn.Conv2d):
                kh, kw = layer.kernel_size
                per_output = (layer.in_channels // layer.groups) * kh * kw
                counts[paths[name]] = output[0].numel() * per_output
            elif isinstance(layer, torch.nn.Linear):
                counts[paths[name]] = (
                    output[0].numel() // layer.out_features * layer.in_features * layer.out_features
                )
            else:
                counts[paths[name]] = 0

        return record

    for name in paths:
        if name not in _parameter_targets(module):
            handles.append(module.get_submodule(name).register_forward_hook(hook(name)))
    try:
        module(*_meta_inputs(net))
    finally:
        for handle in handles:
            handle.remove()
    return counts


def _parameter_targets(module: torch.nn.Module) -> set[str]:
    """Targets that are a block's own parameter (a `param`), not a submodule."""
    return {name for name, _ in module.named_parameters()} & set(module.meta["cnndsl_paths"])


def _assert_matches_torch(net: Network) -> None:
    module = _meta_module(net)
    summary = summarize(net)
    assert summary.totals.trainable_params == sum(p.numel() for p in module.parameters())
    assert summary.totals.non_trainable_params == sum(b.numel() for b in module.buffers())
    # Per layer: params and buffers of the submodule each node lowered to.
    by_path = {layer.path: layer for layer in summary.layers}
    for name, path in module.meta["cnndsl_paths"].items():
        if name in _parameter_targets(module):
            assert by_path[path].params == module.get_parameter(name).numel(), path
            assert by_path[path].buffers == 0, path
            continue
        sub = module.get_submodule(name)
        assert by_path[path].params == sum(p.numel() for p in sub.parameters()), path
        assert by_path[path].buffers == sum(b.numel() for b in sub.buffers()), path
    hooked = _hook_macs(module, net)
    for path, macs in hooked.items():
        assert by_path[path].macs == macs, path
    # Function-style nodes (add, concat, mul, gap) have no module: the registry must give them no MACs either.
    assert all(layer.macs == 0 for layer in summary.layers if layer.path not in hooked)
    with FlopCounterMode(display=False) as counter:
        module(*_meta_inputs(net))
    # flop_counter counts a multiply-accumulate as 2 FLOPs and leaves out bias adds: exactly 2·MACs.
    assert counter.get_total_flops() == 2 * summary.totals.macs


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_counts_match_torch(name: str) -> None:
    _assert_matches_torch(cnndsl.load(SPECS / f"{name}.cnn"))


@pytest.mark.parametrize("name", sorted(ops.REGISTRY))
def test_op_counts_match_torch(name: str) -> None:
    net = _op_network(name)
    if name == "identity":
        # The elaborator removes identity (the edge passes straight through), so no network holds one: compare
        # its registry rule with its torch lowering directly.
        assert all(node.op != "identity" for node in net.layers)
        op, shape = ops.REGISTRY["identity"], (6, 15, 17)
        lowering = op.torch([shape], shape, {})
        assert isinstance(lowering, ops.TorchModule)
        module = getattr(torch.nn, lowering.cls)(**lowering.kwargs)
        costs = op.costs([shape], shape, {})
        assert costs.params == sum(p.numel() for p in module.parameters()) and costs.macs == 0
    else:
        assert any(node.op == name for node in net.nodes), f"the example for {name} does not use it"
    _assert_matches_torch(net)


def test_every_op_has_an_example() -> None:
    # A newly registered op fails here until it gets an example above, so the torch comparison covers it.
    assert sorted(OP_EXAMPLES) == sorted(ops.REGISTRY)


@pytest.mark.parametrize("name", sorted(set(REFERENCE) & set(SPEC_NAMES)))
def test_zoo_reference_figures(name: str) -> None:
    summary = summarize(cnndsl.load(SPECS / f"{name}.cnn"))
    assert summary.totals.trainable_params == REFERENCE[name]["params"]
    assert summary.totals.macs == REFERENCE[name]["macs"]
    assert list(summary.inputs[0].shape) == REFERENCE[name]["input"]


# ------------------------------------------------------------------------------------ receptive field ---

SEQUENTIAL = """
network Seq(x: [1, 96, 160]) {
    conv(4, 5, stride=2, padding=2) -> relu
    conv(4, 3, dilation=2) -> relu
    maxpool(3, stride=2, padding=1)
    conv(4, [3, 5], stride=[1, 2], padding=[0, 1])
    avgpool(2)
    conv(4, 3, padding=same) -> tanh
}
"""

RESIDUAL = """
defaults conv(padding=same, bias=false)
block Basic(c, stride=1) {
    add(conv(c, 3, stride=stride) -> bn -> relu -> conv(c, 3) -> bn | shortcut)
    relu
}
network Res(x: [2, 80, 80]) {
    conv(4, 7, stride=2) -> bn -> relu
    Basic(4) -> Basic(8, stride=2) -> Basic(8)
}
"""

INCEPTION = """
block Inception(c1, r3, c3, r5, c5, pp) {
    concat(
        conv(c1, 1) -> relu
      | conv(r3, 1) -> relu -> conv(c3, 3, padding=1) -> relu
      | conv(r5, 1) -> relu -> conv(c5, 5, padding=2) -> relu
      | maxpool(3, stride=1, padding=1) -> conv(pp, 1) -> relu
    )
}
network Inc(x: [3, 64, 64]) {
    conv(8, 3, stride=2, padding=1) -> relu
    Inception(4, 4, 4, 2, 4, 4)
    maxpool(3, stride=2, ceil=true)
    concat(conv(4, 1) | conv(4, 7, padding=3))
}
"""


def _gradient_region(net: Network, position: tuple[int, int]) -> list[tuple[int, int]]:
    """Backprop from one output pixel (all its channels); the bounding box of the non-zero input gradient, per axis.

    Every weight is made positive and the input is positive, so each path from the pixel to an input adds a
    positive amount and no gradient cancels. Max pools become average pools of the same window: a max routes the
    gradient to one element of its window, while the receptive field is the whole window (the same footprint)."""
    model = net.to_torch().eval()
    for name, layer in list(model.named_modules()):
        if isinstance(layer, torch.nn.MaxPool2d):
            parent, _, child = name.rpartition(".")
            replacement = torch.nn.AvgPool2d(
                layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode
            )  # type: ignore[arg-type]
            setattr(model.get_submodule(parent) if parent else model, child, replacement)
    model = model.double()
    with torch.no_grad():
        for parameter in model.parameters():
            # Positive and scaled by fan-in so activations stay near 1 (tanh must not saturate to a zero slope).
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
            parameter.copy_((torch.rand_like(parameter) * 0.5 + 0.75) / fan_in)
    x = torch.rand((1, *net.inputs[0].shape), dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    out = model(x)
    # All channels of the pixel: a concat's channels come from different branches, the field is their union.
    out[0, :, position[0], position[1]].sum().backward()
    assert x.grad is not None
    nonzero = x.grad[0].abs().sum(dim=0) > 0
    rows = torch.nonzero(nonzero.any(dim=1)).flatten()
    cols = torch.nonzero(nonzero.any(dim=0)).flatten()
    return [(int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))]


@pytest.mark.parametrize(
    "text", [SEQUENTIAL, RESIDUAL, INCEPTION], ids=["sequential", "residual", "inception"]
)
def test_receptive_field_matches_gradient(text: str) -> None:
    net = cnndsl.loads(text)
    rf = summarize(net).output_fields["output"]
    assert not rf.is_global
    _, height, width = net.outputs[0].shape
    _, in_h, in_w = net.inputs[0].shape
    for position in [(height // 2, width // 2), (height // 2 + 1, width // 2 - 1)]:
        predicted = rf.region(position)
        # The specs are sized so the central regions lie inside the input: the measured box is the whole field.
        assert all(low >= 0 for low, _ in predicted)
        assert predicted[0][1] <= in_h - 1 and predicted[1][1] <= in_w - 1
        assert _gradient_region(net, position) == [(int(low), int(high)) for low, high in predicted]


def test_upsampling_field_size_matches_gradient() -> None:
    # Nearest upsampling repeats pixels, so no affine rule places every region exactly (docs/summary.md): the
    # jump holds on average only, but the size is exact, which is what this checks.
    net = cnndsl.loads(
        "network F(x: [1, 64, 64]) {\n"
        "    c3 = conv(4, 3, stride=2, padding=1)\n"
        "    c4 = conv(4, 3, stride=2, padding=1)\n"
        "    add(c4 -> upsample(2) | c3 -> conv(4, 1))\n"
        "    conv(4, 3, padding=1)\n"
        "}\n"
    )
    rf = summarize(net).output_fields["output"]
    for position in [(15, 15), (16, 16), (16, 17)]:
        (top, bottom), (left, right) = _gradient_region(net, position)
        assert (bottom - top + 1, right - left + 1) == rf.size


def test_merge_takes_the_union_of_branches() -> None:
    net = cnndsl.loads(INCEPTION)
    layers = {layer.path: layer for layer in analyse_layers(net)}
    merge = layers["Inception.0/concat.0"].receptive_field
    widest = layers["Inception.0/relu.4"].receptive_field  # the 5x5 branch
    assert merge == widest
    assert merge.size[0] > layers["Inception.0/relu.2"].receptive_field.size[0]  # wider than the 3x3 branch


def test_global_ops_make_the_field_global() -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    summary = summarize(net)
    layers = {layer.path: layer for layer in summary.layers}
    assert layers["gap.0"].receptive_field.is_global
    assert layers["gap.0"].receptive_field.size == (224, 224)
    assert summary.output_fields["output"].is_global
    assert summary.feature_map is not None and not summary.feature_map[1].is_global


def test_union_of_offset_fields() -> None:
    a = ReceptiveField((3.0,), (1.0,), (0.0,))
    b = ReceptiveField((3.0,), (2.0,), (4.0,))
    merged = ReceptiveField.union([a, b], (10,))
    assert merged.region([0]) == [(-1.0, 5.0)]
    assert merged.jump == (2.0,)


# --------------------------------------------------------------------------------------- totals ---


@pytest.mark.parametrize(
    "name", ["resnet18", "googlenet_paper", "densenet121", "fpn_two_outputs", "mobilenet_v2"]
)
def test_rows_sum_to_totals(name: str) -> None:
    net = cnndsl.load(SPECS / f"{name}.cnn")
    layers = analyse_layers(net)
    for depth in [None, 1, 2, 3]:
        summary = summarize(net, batch=3, dtype="bfloat16", depth=depth)
        rows, totals = summary.rows, summary.totals
        assert sum(r.params for r in rows) == totals.trainable_params
        assert sum(r.buffers for r in rows) == totals.non_trainable_params
        assert sum(r.macs for r in rows) == totals.macs
        assert sum(r.flops for r in rows) == totals.flops
        assert sum(r.activation_elements for r in rows) == totals.activation_elements
        assert sum(r.activation_bytes for r in rows) == totals.activation_bytes
        ids = sorted(i for r in rows for i in r.layer_ids)
        assert ids == [layer.id for layer in layers]  # every layer in exactly one row
    collapsed = len(summarize(net, depth=1).rows)
    assert collapsed < len(layers) if any(n.frames for n in net.nodes) else collapsed == len(layers)


def test_depth_collapses_block_instances() -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    full = summarize(net)
    for depth in (1, 2):
        rows = summarize(net, depth=depth).rows
        for row in rows:
            assert row.path.count("/") < depth or row.kind == "layer" and "shortcut" in row.path
            if row.kind == "block":
                members = [layer for layer in full.layers if layer.id in row.layer_ids]
                assert all(layer.path.startswith(row.path + "/") for layer in members)
                # A block row shows the shape and field of the tensor that leaves it.
                assert row.output_shape == members[-1].output_shape
    top = summarize(net, depth=1).rows
    assert [r.kind for r in top].count("block") == len({f.path for n in net.nodes for f in n.frames[:1]})
    with pytest.raises(AnalysisError, match="depth"):
        summarize(net, depth=0)


def test_memory_figures() -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    module = _meta_module(net)
    outputs: list[torch.Tensor] = []
    handles = [
        module.get_submodule(name).register_forward_hook(lambda m, a, out: outputs.append(out))
        for name in module.meta["cnndsl_paths"]
    ]
    module(*_meta_inputs(net))
    for handle in handles:
        handle.remove()
    s32 = summarize(net, batch=1, dtype="float32")
    # Module outputs are a subset of the layers (adds and gap are functions), so this bounds from below.
    assert s32.totals.activation_elements >= sum(o.numel() for o in outputs)
    assert s32.totals.activation_elements == sum(n.shape[0] * _prod(n.shape[1:]) for n in net.layers)
    s16 = summarize(net, batch=8, dtype="float16")
    assert s16.totals.activation_bytes == s32.totals.activation_bytes * 8 * 2 // 4
    assert s16.totals.param_bytes * 2 == s32.totals.param_bytes
    t = s32.totals
    assert t.param_bytes == sum(p.numel() * p.element_size() for p in module.parameters())
    assert t.training_bytes == 4 * t.param_bytes + t.buffer_bytes + t.input_bytes + t.activation_bytes
    assert DTYPE_BYTES["bfloat16"] == torch.empty(0, dtype=torch.bfloat16).element_size()


def _prod(values: tuple[int, ...]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def test_inference_peak_of_a_chain_and_a_branch() -> None:
    chain = cnndsl.loads("network C(x: [3, 8, 8]) { conv(4, 3) -> relu -> conv(16, 1) -> gap }")
    sizes = [_prod(n.shape) for n in chain.nodes]
    # In a chain only a layer's input and output are alive together (the final output is kept).
    assert inference_peak_elements(chain) == max(a + b for a, b in zip(sizes, sizes[1:], strict=False))
    branch = cnndsl.loads("network B(x: [3, 8, 8]) { conv(4, 1) -> add(conv(4, 1) -> relu | identity) }")
    # While the branch runs, its input (needed again by add) stays alive: x is freed, conv.0 is kept.
    c0, c1, relu = (_prod(n.shape) for n in branch.nodes[1:4])
    assert inference_peak_elements(branch) == max(c0 + c1, c0 + c1 + relu, c0 + relu + c0)


def test_op_without_a_cost_rule_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    net = cnndsl.loads("network T(x: [3, 8, 8]) { conv(4, 3) -> relu -> gap }")
    monkeypatch.delitem(ops.REGISTRY, "relu")
    with pytest.raises(AnalysisError, match="'relu'"):
        summarize(net)


def test_bad_arguments() -> None:
    net = cnndsl.loads("network T(x: [3, 8, 8]) { conv(4, 3) }")
    with pytest.raises(AnalysisError, match="dtype"):
        summarize(net, dtype="float64")
    with pytest.raises(AnalysisError, match="batch"):
        summarize(net, batch=0)
    with pytest.raises(AnalysisError, match="depth"):
        collapse(net, analyse_layers(net), 0)


def test_summary_and_explain_never_import_torch() -> None:
    spec = SPECS / "googlenet_paper.cnn"
    code = (
        "import sys, io, contextlib\n"
        "from cnndsl.cli import main\n"
        "for argv in (['summary', sys.argv[1], '--format', 'json'], ['summary', sys.argv[1], '--format', 'html'],\n"
        "             ['summary', sys.argv[1], '--depth', '1'], ['explain', sys.argv[1]]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv) == 0, argv\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(spec)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_two_inputs_of_different_rank() -> None:
    net = cnndsl.loads(
        "network Two(image: [3, 16, 16], cond: [8]) {\n"
        "    f = image -> conv(8, 3, padding=1)\n"
        "    g = cond -> sigmoid\n"
        "    mul(f | g) -> conv(8, 3, padding=1)\n"
        "}\n"
    )
    _assert_matches_torch(net)
    layers = {layer.path: layer for layer in summarize(net).layers}
    assert layers["sigmoid.0"].receptive_field == ReceptiveField.identity((8,))
    # The [8] branch broadcasts over every pixel: each output of the merge sees all of `cond`.
    assert layers["mul.0"].receptive_field.is_global
    assert layers["conv.0"].receptive_field.size == (3, 3)
