"""cnndsl.load_weights: by order (other frameworks' key names), by name, strict shapes, precise first-mismatch
messages, and never a partial load."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import OrderedDict

import pytest
import torch
from conftest import ROOT
from torch import nn

import cnndsl
from cnndsl.weights import WeightsMismatch, load_weights

STAGE = """
defaults conv(padding=same, bias=false)
block Basic(c, stride=1) {
    add(conv(c, 3, stride=stride) -> bn -> relu -> conv(c, 3) -> bn | shortcut)
    relu
}
network Stage(x: [8, 8, 8]) {
    Basic(16, stride=2)
    gap -> linear(10)
}
"""


class StageRef(nn.Module):
    """The same network, written with torchvision-style names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 16, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.downsample = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        out = torch.relu(out + self.downsample(x))
        return self.fc(out.mean(dim=(2, 3)))


def random_state(module: nn.Module, seed: int = 3) -> OrderedDict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, tensor in module.state_dict().items():
        if tensor.is_floating_point():
            state[key] = torch.rand(tensor.shape, generator=generator) + 0.1
        else:
            state[key] = torch.full_like(tensor, 5)
    return state


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


@pytest.fixture
def module() -> torch.fx.GraphModule:
    return cnndsl.loads(STAGE).to_torch()


def test_order_loads_foreign_names_and_matches_outputs(module: nn.Module) -> None:
    ref = StageRef()
    ref.load_state_dict(random_state(ref))
    pairs = load_weights(module, ref.state_dict(), match="order")
    assert pairs["Basic_0.conv_0.weight"] == "conv1.weight"
    assert pairs["Basic_0.shortcut_0.bn_0.running_var"] == "downsample.1.running_var"
    assert pairs["linear_0.bias"] == "fc.bias"
    assert len(pairs) == len(module.state_dict())
    for ours, theirs in pairs.items():
        assert torch.equal(module.state_dict()[ours], ref.state_dict()[theirs])
    x = torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(module.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)


def test_name_round_trip(module: nn.Module) -> None:
    state = random_state(module)
    pairs = load_weights(module, state, match="name")
    assert pairs == {k: k for k in state}
    for key, value in state.items():
        assert torch.equal(module.state_dict()[key], value)


def test_shape_mismatch_names_both_sides_and_loads_nothing(module: nn.Module) -> None:
    ref = StageRef()
    state = random_state(ref)
    state["conv2.weight"] = torch.zeros(16, 16, 5, 5)
    before = snapshot(module)
    with pytest.raises(WeightsMismatch) as error:
        load_weights(module, state, match="order")
    message = str(error.value)
    assert "Basic_0.conv_1.weight" in message and "(layer Basic.0/conv.1)" in message
    assert "[16, 16, 3, 3]" in message and "conv2.weight" in message and "[16, 16, 5, 5]" in message
    assert re.search(r"tensor 7 of \d+", message), message
    assert unchanged(module, before), "a failed load changed the module"


def test_count_mismatch_is_refused(module: nn.Module) -> None:
    ref = StageRef()
    state = random_state(ref)
    del state["fc.bias"]
    before = snapshot(module)
    with pytest.raises(
        WeightsMismatch,
        match=r"the module has 20 parameters and buffers, the state_dict 19 \(17 and 16 without num_batches_tracked\)",
    ):
        load_weights(module, state, match="order")
    assert unchanged(module, before)


def test_count_mismatch_points_at_first_shape_difference(module: nn.Module) -> None:
    state = random_state(StageRef())
    del state["conv1.weight"]  # everything after slides by one
    with pytest.raises(
        WeightsMismatch,
        match=r"first shape difference is at tensor 1: ours Basic_0.conv_0.weight \(layer Basic.0/conv.0\) "
        r"\[16, 8, 3, 3\], theirs bn1.weight \[16\]",
    ):
        load_weights(module, state, match="order")


def test_checkpoint_without_batch_counters_loads(module: nn.Module) -> None:
    """Older torchvision checkpoints have no num_batches_tracked; the counters are left out of the pairing."""
    state = OrderedDict((k, v) for k, v in random_state(StageRef()).items() if "num_batches_tracked" not in k)
    pairs = load_weights(module, state, match="order")
    assert all("num_batches_tracked" not in k for k in pairs)
    assert torch.equal(module.state_dict()["Basic_0.bn_1.running_mean"], state["bn2.running_mean"])


def test_name_mismatch_messages(module: nn.Module) -> None:
    state = random_state(module)
    renamed = OrderedDict((f"module.{k}", v) for k, v in state.items())
    with pytest.raises(
        WeightsMismatch,
        match=r"20 missing \(first: Basic_0.conv_0.weight \(layer Basic.0/conv.0\)\).*module\.",
    ):
        load_weights(module, renamed, match="name")
    with pytest.raises(WeightsMismatch, match=r"match='order'"):
        load_weights(module, random_state(StageRef()), match="name")
    state["linear_0.weight"] = torch.zeros(3, 3)
    before = snapshot(module)
    with pytest.raises(
        WeightsMismatch, match=r"ours linear_0.weight \(layer linear.0\) is \[10, 16\], theirs "
    ):
        load_weights(module, state, match="name")
    assert unchanged(module, before)


def test_bad_inputs(module: nn.Module) -> None:
    with pytest.raises(ValueError, match="match must be"):
        load_weights(module, {}, match="position")
    with pytest.raises(WeightsMismatch, match=r"checkpoint\['state_dict'\]"):
        load_weights(module, {"epoch": torch.tensor(1), "state_dict": {}})  # type: ignore[dict-item]
    with pytest.raises(WeightsMismatch, match="not a tensor"):
        load_weights(module, {"a": 1.0})
    with pytest.raises(WeightsMismatch, match="expected a state_dict"):
        load_weights(module, [torch.zeros(1)])  # type: ignore[arg-type]
    state = random_state(module)
    state["Basic_0.conv_0.weight"] = state["Basic_0.conv_0.weight"].long()
    with pytest.raises(WeightsMismatch, match="torch.int64"):
        load_weights(module, state, match="name")


def test_dtype_is_converted_and_module_device_kept(module: nn.Module) -> None:
    state = OrderedDict(
        (k, v.half() if v.is_floating_point() else v) for k, v in random_state(module).items()
    )
    load_weights(module, state, match="name")
    weight = module.state_dict()["Basic_0.conv_0.weight"]
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, state["Basic_0.conv_0.weight"].float())


def test_plain_module_without_spec_paths() -> None:
    target = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(WeightsMismatch) as error:
        load_weights(target, {"w": torch.zeros(4, 4), "b": torch.zeros(4)})
    assert "ours 0.weight is [4, 3], theirs w is [4, 4]" in str(error.value)


def test_lazy_export_from_package() -> None:
    assert cnndsl.load_weights is load_weights


def test_torchvision_style_resnet50_loads_by_order() -> None:
    """bench/resnet50_ref.py has torchvision's module names and order: its state_dict loads into
    specs/resnet50.cnn by order and the outputs agree."""
    spec = ROOT / "specs" / "resnet50.cnn"
    if not spec.exists():
        pytest.skip("specs/resnet50.cnn not written yet")
    loader = importlib.util.spec_from_file_location("resnet50_ref", ROOT / "bench" / "resnet50_ref.py")
    assert loader is not None and loader.loader is not None
    reference_module = importlib.util.module_from_spec(loader)
    sys.modules["resnet50_ref"] = reference_module
    loader.loader.exec_module(reference_module)
    reference = reference_module.resnet50().eval()
    state = reference.state_dict()
    assert list(state)[:2] == ["conv1.weight", "bn1.weight"] and "layer4.2.bn3.running_var" in state
    ours = cnndsl.load(spec).to_torch().eval()
    pairs = load_weights(ours, state, match="order")
    assert pairs["linear_0.weight"] == "fc.weight"
    assert sum(1 for k in pairs.values() if "downsample" in k) == 4 * 6  # conv + 5 bn tensors per stage
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
