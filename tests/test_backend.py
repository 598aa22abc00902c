"""The torch.fx lowering, with PyTorch as the oracle: per-node state and shapes for every spec, hand-written
references with the same weights, logits, several inputs and outputs, channels_last, autocast, torch.export,
torch.compile (slow) and CUDA (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx
from conftest import ROOT, spec_files
from torch import nn

import cnndsl
from cnndsl import ops
from cnndsl.backend import identifier, plan
from cnndsl.network import Network, torch_name
from cnndsl.ops import TorchModule, TorchParameter

SPECS = spec_files()

# ------------------------------------------------------------------------------ specs and references ---

LENET5 = """
network LeNet5(image: [1, 32, 32]) {
    conv(6, 5) -> tanh -> avgpool(2)      : [6, 14, 14]
    conv(16, 5) -> tanh -> avgpool(2)     : [16, 5, 5]
    flatten
    linear(120) -> tanh
    linear(84) -> tanh
    linear(10) -> softmax
}
"""


class LeNet5Ref(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.f5 = nn.Linear(400, 120)
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool2d(torch.tanh(self.c1(x)), 2)
        x = nn.functional.avg_pool2d(torch.tanh(self.c3(x)), 2)
        x = torch.tanh(self.f5(x.flatten(1)))
        x = torch.tanh(self.f6(x))
        return torch.softmax(self.out(x), dim=1)


# torchvision's resnet18 layer2: a strided BasicBlock with a projection shortcut, then a plain one.
RESIDUAL_STAGE = """
defaults conv(padding=same, bias=false)

block Basic(c, stride=1) {
    add(
        conv(c, 3, stride=stride) -> bn -> relu
        -> conv(c, 3) -> bn
      | shortcut
    )
    relu
}

network Layer2(x: [64, 16, 16]) {
    Basic(128, stride=2)
    Basic(128)              : [128, 8, 8]
}
"""


class BasicBlockRef(nn.Module):
    """torchvision.models.resnet.BasicBlock, transcribed."""

    def __init__(self, cin: int, c: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != c:
            self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResidualStageRef(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(BasicBlockRef(64, 128, 2), BasicBlockRef(128, 128, 1))


# GoogLeNet's inception (3a) as the paper draws it: a real 5x5 branch, convs with bias, ceil-mode pool.
INCEPTION = """
block Inception(c1, r3, c3, r5, c5, pp) {
    concat(
        conv(c1, 1) -> relu
      | conv(r3, 1) -> relu -> conv(c3, 3, padding=1) -> relu
      | conv(r5, 1) -> relu -> conv(c5, 5, padding=2) -> relu
      | maxpool(3, stride=1, padding=1, ceil=true) -> conv(pp, 1) -> relu
    )
}

network Inception3a(x: [192, 12, 12]) {
    Inception(64, 96, 128, 16, 32, 32)      : [256, 12, 12]
}
"""


class InceptionRef(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(nn.Conv2d(192, 64, 1), nn.ReLU())
        self.branch2 = nn.Sequential(
            nn.Conv2d(192, 96, 1), nn.ReLU(), nn.Conv2d(96, 128, 3, padding=1), nn.ReLU()
        )
        self.branch3 = nn.Sequential(
            nn.Conv2d(192, 16, 1), nn.ReLU(), nn.Conv2d(16, 32, 5, padding=2), nn.ReLU()
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), nn.Conv2d(192, 32, 1), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-default values in every parameter and buffer (batchnorm statistics included), so a test comparing two
    modules cannot pass on initialisation alone."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.rand(tensor.shape, generator=generator)
            tensor.copy_(values + 0.5 if name.endswith("running_var") else (values - 0.5) * 0.5)
    return module


# ------------------------------------------------------------------------------------- every spec ---


def spec_network(path: Path) -> Network:
    try:
        return cnndsl.load(path)
    except cnndsl.SpecError as error:
        if "no network defined" in str(error):
            pytest.skip(f"{path.name} is a library of blocks")
        raise


class ShapeRecorder(torch.fx.Interpreter):
    """Runs the module node by node, keeping each node's output shape by network node id."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: dict[int, tuple[int, ...]] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if "cnndsl_node" in n.meta:
            self.shapes[n.meta["cnndsl_node"]] = tuple(result.shape)
        return result


def test_spec_list_is_not_empty() -> None:
    assert SPECS, "no specs found in specs/"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_state_matches_static_costs(path: Path) -> None:
    network = spec_network(path)
    with torch.device("meta"):
        module = network.to_torch()
    lowered = plan(network)
    state = module.state_dict(keep_vars=True)
    owner_order: list[int] = []
    claimed: set[str] = set()
    for step in lowered.steps:
        node = step.node
        costs = ops.REGISTRY[node.op].costs(list(node.input_shapes), node.shape, node.args)
        if isinstance(
            step.lowering, TorchParameter
        ):  # a block's own parameter: one tensor, named by the path
            assert step.target == torch_name(node.path) and step.target in state, node.path
            assert (state[step.target].numel(), 0) == (costs.params, costs.buffers), node.path
            claimed.add(step.target)
            owner_order.append(node.id)
            continue
        if not isinstance(step.lowering, TorchModule):
            assert (costs.params, costs.buffers) == (0, 0), node.path
            continue
        # Grammar names need no sanitising: the submodule name is exactly torch_name(path).
        assert step.target == torch_name(node.path)
        keys = [k for k in state if k.rpartition(".")[0] == step.target]
        claimed.update(keys)
        params = sum(state[k].numel() for k in keys if isinstance(state[k], nn.Parameter))
        buffers = sum(state[k].numel() for k in keys if not isinstance(state[k], nn.Parameter))
        assert (params, buffers) == (costs.params, costs.buffers), (
            f"{node.path}: torch has {params} params / {buffers} buffers, the static costs {costs.params} / "
            f"{costs.buffers}"
        )
        if keys:
            owner_order.append(node.id)
    assert claimed == set(state), f"state not owned by any node: {sorted(set(state) - claimed)[:3]}"
    # Registration order is node order: the state_dict lists layers as the spec writes them.
    owners = []
    for key in state:
        target = key if key in lowered.paths else key.rpartition(".")[0]
        node_id = next(s.node.id for s in lowered.steps if s.target == target)
        if not owners or owners[-1] != node_id:
            owners.append(node_id)
    assert owners == owner_order == sorted(owner_order)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_forward_shapes_match_checker(path: Path) -> None:
    network = spec_network(path)
    with torch.device("meta"):
        module = network.to_torch().eval()
    recorder = ShapeRecorder(module)
    inputs = [torch.empty(2, *t.shape, device="meta") for t in network.inputs]
    result = recorder.run(*inputs)
    for node in network.nodes:
        # A block parameter is the same tensor for every sample: the backend reads it as a batch of one.
        lowering = ops.REGISTRY[node.op].torch(list(node.input_shapes), node.shape, node.args)
        batch = 1 if isinstance(lowering, TorchParameter) else 2
        assert recorder.shapes.get(node.id) == (batch, *node.shape), (
            f"{node.path}: checker says {node.shape}, torch gives {recorder.shapes.get(node.id)}"
        )
    results = result if isinstance(result, tuple) else (result,)
    assert [tuple(r.shape) for r in results] == [(2, *t.shape) for t in network.outputs]


# --------------------------------------------------------------------------------- hand-written refs ---

# torchvision's own building blocks, written in the language. With torchvision's weights copied in by order, the
# outputs must be identical in float64: the lowerings compute exactly what torchvision computes.
CONVNEXT_BLOCKS = """
block CNBlock(c, sd) {
    param layer_scale: [c, 1, 1] = 1e-6
    add(
        conv(c, 7, padding=3, groups=c) -> layer_norm(eps=1e-6)
        -> channel_linear(4 * c) -> gelu -> channel_linear(c)
        -> mul(layer_scale | identity) -> stochastic_depth(sd)
      | identity
    )
}

network Stage(x: [16, 14, 14]) {
    CNBlock(16, 0.1) -> CNBlock(16, 0.2)
    layer_norm(eps=1e-6) -> conv(32, 2, stride=2)
}
"""


def _convnext_reference() -> nn.Module:
    from functools import partial

    from torchvision.models.convnext import CNBlock, LayerNorm2d

    return nn.Sequential(
        CNBlock(16, 1e-6, 0.1, partial(nn.LayerNorm, eps=1e-6)),
        CNBlock(16, 1e-6, 0.2, partial(nn.LayerNorm, eps=1e-6)),
        LayerNorm2d(16, eps=1e-6),
        nn.Conv2d(16, 32, 2, stride=2),
    )


SQUEEZE_EXCITE = """
network SE(x: [24, 9, 9]) {
    mul(adaptive_avgpool(1) -> conv(8, 1) -> relu -> conv(24, 1) -> hardsigmoid | identity)
    mul(gap -> linear(6) -> silu -> linear(24) -> sigmoid | identity)
}
"""


class _FlatSE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(24, 6), nn.Linear(6, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(x.mean(dim=(2, 3))))))
        return scale[:, :, None, None] * x


def _se_reference() -> nn.Module:
    from torchvision.ops.misc import SqueezeExcitation

    return nn.Sequential(SqueezeExcitation(24, 8, scale_activation=nn.Hardsigmoid), _FlatSE())


ASPP_POOLING = """
network Pooling(x: [12, 11, 13]) {
    adaptive_avgpool(1) -> conv(6, 1, bias=false) -> bn -> relu -> resize(like=x, mode=bilinear)
}
"""


def _aspp_reference() -> nn.Module:
    from torchvision.models.segmentation.deeplabv3 import ASPPPooling

    return ASPPPooling(12, 6)


SHUFFLE_UNIT = """
network Unit(x: [16, 8, 8]) {
    concat(chunk(2, 0) | chunk(2, 1) -> conv(8, 1, bias=false) -> bn -> relu -> conv(8, 3, padding=1, groups=8,
        bias=false) -> bn -> conv(8, 1, bias=false) -> bn -> relu)
    channel_shuffle(2)
    conv_transpose(4, 3, stride=2, padding=1, output_padding=1, bias=false)
}
"""


def _shuffle_reference() -> nn.Module:
    from torchvision.models.shufflenetv2 import InvertedResidual

    return nn.Sequential(InvertedResidual(16, 16, 1), nn.ConvTranspose2d(16, 4, 3, 2, 1, 1, bias=False))


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        (CONVNEXT_BLOCKS, _convnext_reference),
        (SQUEEZE_EXCITE, _se_reference),
        (ASPP_POOLING, _aspp_reference),
        (SHUFFLE_UNIT, _shuffle_reference),
    ],
    ids=["convnext", "squeeze_excite", "aspp_pooling", "shufflenet_unit"],
)
def test_torchvision_blocks_are_identical(text: str, reference: Any) -> None:
    ref = randomise(reference()).double().eval()
    network = cnndsl.loads(text)
    module = network.to_torch().double().eval()
    cnndsl.load_weights(module, ref.state_dict(), match="order")  # strict shapes, in registration order
    x = torch.randn(
        3, *network.inputs[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        assert torch.equal(module(x), ref(x))
    # Training mode: the same stochastic-depth draws from the same random state.
    module.train()
    ref.train()
    for seed in range(3):
        torch.manual_seed(seed)
        ours = module(x)
        torch.manual_seed(seed)
        assert torch.equal(ours, ref(x))


@pytest.mark.parametrize(
    ("text", "reference", "shape"),
    [
        (LENET5, LeNet5Ref, (1, 32, 32)),
        (RESIDUAL_STAGE, ResidualStageRef, (64, 16, 16)),
        (INCEPTION, InceptionRef, (192, 12, 12)),
    ],
    ids=["lenet5", "residual_stage", "inception"],
)
def test_matches_hand_written_reference(
    text: str, reference: type[nn.Module], shape: tuple[int, ...]
) -> None:
    ref = randomise(reference()).eval()
    module = cnndsl.loads(text).to_torch().eval()
    cnndsl.load_weights(module, ref.state_dict(), match="order")
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = ref(x), module(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # Training mode too (batch statistics, running-stat updates): same outputs and same updated buffers.
    ref.train()
    module.train()
    torch.testing.assert_close(module(x), ref(x), rtol=1e-5, atol=1e-5)
    for (ours, a), (theirs, b) in zip(module.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"{ours} vs {theirs}")


def test_reference_comparison_detects_a_wrong_layer() -> None:
    """The comparison above can fail: one extra relu (same shapes, same weights) changes the outputs."""
    ref = randomise(ResidualStageRef()).eval()
    wrong = cnndsl.loads(RESIDUAL_STAGE.replace("-> conv(c, 3) -> bn", "-> conv(c, 3) -> bn -> relu"))
    module = wrong.to_torch().eval()
    cnndsl.load_weights(module, ref.state_dict(), match="order")
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(module(x), ref(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ forward API ---


def test_logits_drops_trailing_softmax() -> None:
    network = cnndsl.loads(LENET5)
    probabilities = randomise(network.to_torch()).eval()
    logits = network.to_torch(logits=True).eval()
    assert not any(isinstance(m, nn.Softmax) for m in logits.modules())
    assert any(isinstance(m, nn.Softmax) for m in probabilities.modules())
    logits.load_state_dict(probabilities.state_dict())
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        out = logits(x)
        torch.testing.assert_close(torch.softmax(out, dim=1), probabilities(x))
    assert not torch.allclose(out.sum(dim=1), torch.ones(4))


def test_logits_is_a_no_op_without_softmax() -> None:
    network = cnndsl.loads(RESIDUAL_STAGE)
    assert list(network.to_torch(logits=True).state_dict()) == list(network.to_torch().state_dict())


SEVERAL = """
network Two(image: [3, 16, 16], extra: [8]) {
    c3 = image -> conv(8, 3, stride=2, padding=same) -> relu
    c4 = conv(8, 3, stride=2, padding=same) -> relu
    p4 = c4 -> conv(8, 1)
    p3 = add(c3 -> conv(8, 1) | p4 -> upsample(2))
    gated = mul(p3 | extra -> linear(8) -> sigmoid)
    return gated, p4
}
"""


def test_several_inputs_and_outputs() -> None:
    network = cnndsl.loads(SEVERAL)
    module = network.to_torch().eval()
    image, extra = torch.randn(2, 3, 16, 16), torch.randn(2, 8)
    gated, p4 = module(image, extra)
    assert gated.shape == (2, 8, 8, 8) and p4.shape == (2, 8, 4, 4)
    # By hand from the submodules: declaration order of inputs, branch order of merges.
    m = dict(module.named_modules())
    c3 = torch.relu(m["conv_0"](image))
    c4 = torch.relu(m["conv_1"](c3))
    p4_ref = m["conv_2"](c4)
    p3 = m["conv_3"](c3) + nn.functional.interpolate(p4_ref, scale_factor=2.0)
    gate = torch.sigmoid(m["linear_0"](extra))
    torch.testing.assert_close(p4, p4_ref)
    torch.testing.assert_close(gated, p3 * gate[:, :, None, None])


def test_module_is_named_after_the_network_and_records_paths() -> None:
    network = cnndsl.loads(RESIDUAL_STAGE)
    module = network.to_torch()
    assert isinstance(module, torch.fx.GraphModule)
    assert type(module).__name__ == "Layer2"
    paths = module.meta["cnndsl_paths"]
    assert paths["Basic_0.shortcut_0.conv_0"] == "Basic.0/shortcut.0/conv.0"
    assert isinstance(module.get_submodule("Basic_0.shortcut_0.bn_0"), nn.BatchNorm2d)


def test_default_initialisation_is_torchs() -> None:
    """No custom init: with the same seed, each layer equals the torch layer constructed directly."""
    network = cnndsl.loads(LENET5)
    torch.manual_seed(7)
    module = network.to_torch()
    torch.manual_seed(7)
    direct = [
        nn.Conv2d(1, 6, 5),
        nn.Conv2d(6, 16, 5),
        nn.Linear(400, 120),
        nn.Linear(120, 84),
        nn.Linear(84, 10),
    ]
    expected = [t for layer in direct for t in layer.state_dict().values()]
    for ours, theirs in zip(module.state_dict().values(), expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_identifier_sanitises_anything() -> None:
    for text in ["conv_0", "class", "1x", "", "a b", "naïve", "x\ny", "None", "self"]:
        name = identifier(text)
        assert name.isidentifier() and name.isascii(), text
    assert identifier("Stage_1") == "Stage_1"
    assert identifier("class") == "class_"


def test_hand_built_network_with_hostile_names_still_lowers() -> None:
    """A Network built in Python can carry names the grammar forbids; lowering makes them legal and unique."""
    import dataclasses

    network = cnndsl.loads(RESIDUAL_STAGE)
    weird = ["training", "forward", "a b/c.d", "graph", "x\ny", "training"]
    nodes = list(network.nodes)
    for index, node in enumerate(nodes[1 : len(weird) + 1], start=1):
        nodes[index] = dataclasses.replace(node, path=f"{weird[index - 1]}/{node.path}")
    hostile = dataclasses.replace(network, name="1 bad\nname", nodes=nodes)
    module = hostile.to_torch().eval()
    assert type(module).__name__.isidentifier()
    assert module.training is False  # `training` stayed the flag, not a submodule
    assert len(list(module.state_dict())) == len(list(network.to_torch().state_dict()))
    assert module(torch.randn(1, 64, 16, 16)).shape == (1, 128, 8, 8)


# ------------------------------------------------------------------------------ devices and tools ---


def test_channels_last_and_cpu_autocast() -> None:
    module = randomise(cnndsl.loads(INCEPTION).to_torch()).eval()
    x = torch.randn(2, 192, 12, 12)
    with torch.no_grad():
        expected = module(x)
        last = module.to(memory_format=torch.channels_last)
        out = last(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                low = module(x)
            assert low.dtype == dtype
            torch.testing.assert_close(low.float(), expected, rtol=0.05, atol=0.05)


def test_torch_export() -> None:
    network = cnndsl.loads(SEVERAL)
    module = network.to_torch().eval()
    args = (torch.randn(2, 3, 16, 16), torch.randn(2, 8))
    exported = torch.export.export(module, args)
    for ours, theirs in zip(exported.module()(*args), module(*args), strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torch_compile_fullgraph(name: str) -> None:
    path = ROOT / "specs" / f"{name}.cnn"
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    module = cnndsl.load(path).to_torch().eval()
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True)  # fullgraph: any graph break raises
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
def test_cuda_channels_last_autocast() -> None:
    network = cnndsl.loads(RESIDUAL_STAGE)
    module = randomise(network.to_torch()).eval()
    x = torch.randn(4, 64, 16, 16)
    with torch.no_grad():
        expected = module(x)
        gpu = module.to("cuda").to(memory_format=torch.channels_last)
        xg = x.to("cuda").to(memory_format=torch.channels_last)
        torch.testing.assert_close(gpu(xg).cpu(), expected, rtol=1e-3, atol=1e-3)
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cuda", dtype=dtype):
                low = gpu(xg)
            assert low.dtype == dtype
            torch.testing.assert_close(low.float().cpu(), expected, rtol=0.05, atol=0.05)


@pytest.mark.cuda
@cuda
def test_cuda_compile_training_step() -> None:
    network = cnndsl.loads(RESIDUAL_STAGE)
    module = network.to_torch().to("cuda").to(memory_format=torch.channels_last)
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randn(4, 64, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = compiled(x).float().square().mean()
    loss.backward()
    assert all(p.grad is not None for p in module.parameters())
