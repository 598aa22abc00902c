"""Every CNN that torchvision ships, written as a spec, with torchvision itself as the oracle.

For each builder of torchvision.models (all but the transformers vit_*, swin_*, maxvit_t) and
torchvision.models.segmentation (aux_loss=False, the "out" tensor), specs/<builder>.cnn must be torchvision's
model exactly:

- static: at the input size the spec declares (torchvision's default), its parameter count, buffer count and
  conv + linear MACs (counted by cnndsl's analysis, no torch) equal torchvision's, which are measured here with
  forward hooks on a meta-device model (no memory, no arithmetic); its state_dict, compiled on the meta device,
  lists tensors of the same shapes in the same order as torchvision's; tests/data/zoo_reference.json holds the
  same measured figures, and torchvision's own metadata (num_params, `_ops` in GMACs) agrees where it describes
  the same model;
- outputs: torchvision's model gets random weights and non-trivial batch-norm statistics, its tensors are handed
  to the compiled spec by registration order (strict shapes, num_batches_tracked included), and both run in eval
  mode on a batch of two at a small input size: the outputs must agree to 1e-10 relative to their scale in float64.

Needs the `zoo` extra (torchvision 0.29.1, paired with torch 2.14.1); without torchvision the module skips.
"""

from __future__ import annotations

import importlib.util
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, SPECS

import cnndsl
from cnndsl.analysis import analyse_layers
from cnndsl.network import Network

pytest.importorskip("torchvision")
from torchvision import models as tvm  # noqa: E402

# ------------------------------------------------------------------------------------ torchvision ---
# How torchvision's models are built and measured lives in docs/gen_zoo_table.py, which also writes the figures
# into zoo_reference.json: torch modules and forward hooks, nothing from cnndsl.


def _generator_module() -> Any:
    spec = importlib.util.spec_from_file_location("gen_zoo_table", ROOT / "docs" / "gen_zoo_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator_module()
build, forward, default_input, measure = gen.build, gen.forward, gen.default_input, gen.measure


CLASSIFIERS, SEGMENTATION = gen.builders()
BUILDERS = CLASSIFIERS + SEGMENTATION

# Output comparison at a small input: the architectures end in adaptive or global pooling (or interpolate back to
# the input size), so 32x32 runs every layer, with the stride-32 stages at 1x1 (the segmentation models, which
# dilate instead of striding, keep 4x4). alexnet needs 63x63 at least and inception_v3 75x75.
COMPARE_SIZE: dict[str, int] = {"alexnet": 64, "inception_v3": 80}
DEFAULT_COMPARE = 32
# The largest and slowest models compare in float32, with float32's tolerance relative to the output scale: a
# float64 copy of regnet_y_128gf alone is 5 GB, and float64 products over ConvNeXt's permuted channels are slow.
FLOAT32 = {
    "regnet_y_128gf",
    "regnet_y_32gf",
    "regnet_x_32gf",
    "efficientnet_v2_l",
    "convnext_small",
    "convnext_base",
    "convnext_large",
    "wide_resnet101_2",
    # float64 depthwise convs have no fast CPU kernel: efficientnet_b4 took 287 s in float64 on the 2-core
    # machine under load; b0 keeps the family's float64 check.
    *(f"efficientnet_b{i}" for i in range(1, 8)),
    "efficientnet_v2_s",
    "efficientnet_v2_m",
}
SLOW = {"regnet_y_128gf", "convnext_base", "convnext_large"}

REFERENCE_FILE = Path(__file__).parent / "data" / "zoo_reference.json"


def _param(names: list[str], slow: frozenset[str] | set[str] = frozenset()) -> list[Any]:
    params = []
    for name in names:
        marks: list[Any] = []
        if name in slow:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@cache
def torchvision_figures(name: str) -> dict[str, Any]:
    return measure(build(name, "meta"), default_input(name))


# --------------------------------------------------------------------------------------- the spec ---


def spec_path(name: str) -> Path:
    return SPECS / f"{name}.cnn"


def load(name: str, size: int | None = None) -> Network:
    shapes = None if size is None else {None: (3, size, size)}
    return cnndsl.load(spec_path(name), input_shapes=shapes)


def spec_figures(net: Network) -> dict[str, Any]:
    layers = analyse_layers(net)
    return {
        "input": list(net.inputs[0].shape),
        "params": sum(layer.params for layer in layers),
        "buffers": sum(layer.buffers for layer in layers),
        "macs": sum(layer.macs for layer in layers),
    }


# ------------------------------------------------------------------------------------------ tests ---


def test_builder_lists() -> None:
    """The brief's count: 68 classification CNNs and 6 segmentation models."""
    assert len(CLASSIFIERS) == 68, CLASSIFIERS
    assert {"alexnet", "wide_resnet101_2", "regnet_y_128gf", "shufflenet_v2_x2_0"} <= set(CLASSIFIERS)
    assert len(SEGMENTATION) == 6, SEGMENTATION


@pytest.mark.parametrize("name", _param(BUILDERS))
def test_static_counts_equal_torchvisions(name: str) -> None:
    """Params, buffers and MACs at the declared (default) input, and the state_dict's shapes in order."""
    theirs = torchvision_figures(name)
    net = load(name)
    assert spec_figures(net) == theirs
    with torch.device("meta"):
        ours = net.to_torch().state_dict()
    their_state = build(name, "meta").state_dict()
    assert [tuple(t.shape) for t in ours.values()] == [tuple(t.shape) for t in their_state.values()]


def test_reference_file_rows_are_torchvisions() -> None:
    """zoo_reference.json holds, for every builder, the figures torchvision's model measures (so the docs table,
    generated from it, shows torchvision's numbers)."""
    reference = json.loads(REFERENCE_FILE.read_text())
    for name in BUILDERS:
        row = reference[name]
        measured = torchvision_figures(name)
        assert row == {**measured, "source": "torchvision"}, name


# torchvision's metadata describes a slightly different model for these: inception_v3's published checkpoint
# keeps its AuxLogits head (27,161,264 params; googlenet's drops its aux heads, like ours), and the segmentation
# checkpoints carry an aux classifier (aux_loss=True), counted in their num_params and `_ops`.
METADATA_DIFFERS = {"inception_v3", *SEGMENTATION}


@pytest.mark.parametrize("name", _param([n for n in BUILDERS if n not in METADATA_DIFFERS]))
def test_torchvision_metadata_agrees(name: str) -> None:
    """num_params exactly; `_ops` is GMACs rounded to three decimals."""
    meta = tvm.get_model_weights(name).DEFAULT.meta
    figures = spec_figures(load(name))
    assert figures["params"] == meta["num_params"]
    assert round(figures["macs"] / 1e9, 3) == pytest.approx(meta["_ops"], abs=0.0011)


def _randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Weights that keep activations of order one through a deep network, and batch norms whose running
    statistics and affine parameters are far from their defaults (so a mix-up of mean, var, weight or bias, or of
    two batch norms, changes the output)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.2)
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
            for pname, param in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    continue
                if param.dim() >= 2:
                    _fill_normal(param, math.sqrt(1.0 / param[0].numel()), generator)
                elif pname == "weight":
                    param.uniform_(0.5, 1.5, generator=generator)
                else:
                    param.normal_(0.0, 0.1, generator=generator)


# Drawing 100 M normal numbers takes seconds; a pool of a prime length read from a random offset gives every
# tensor different numbers (no two layers alike, so a swap shows) at the cost of a copy.
_POOL = torch.randn(1_000_003, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _fill_normal(param: torch.Tensor, std: float, generator: torch.Generator) -> None:
    """Fill ``param`` in place with pool numbers (read cyclically from a random start) times ``std``."""
    flat = param.view(-1)
    start = int(torch.randint(0, len(_POOL), (1,), generator=generator))
    done = 0
    while done < flat.numel():
        chunk = min(flat.numel() - done, len(_POOL) - start)
        torch.mul(_POOL[start : start + chunk], std, out=flat[done : done + chunk])
        done += chunk
        start = 0


def _hand_over(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    """Give the spec's module torchvision's tensors by registration order, with strict shapes and dtypes:
    parameters and buffers, num_batches_tracked included."""
    their_state = list(theirs.state_dict().items())
    our_keys = list(ours.state_dict().keys())
    our_state = ours.state_dict()
    assert len(our_keys) == len(their_state)
    mapped = {}
    for key, (their_key, tensor) in zip(our_keys, their_state, strict=True):
        assert our_state[key].shape == tensor.shape, (key, their_key)
        assert our_state[key].dtype == tensor.dtype or our_state[key].is_floating_point(), (key, their_key)
        mapped[key] = tensor
    ours.load_state_dict(mapped, strict=True, assign=True)


@pytest.mark.parametrize("name", _param(BUILDERS, slow=SLOW))
def test_outputs_equal_torchvisions(name: str) -> None:
    size = COMPARE_SIZE.get(name, DEFAULT_COMPARE)
    dtype = torch.float32 if name in FLOAT32 else torch.float64
    generator = torch.Generator().manual_seed(0)
    theirs = build(name, "meta").to(dtype).to_empty(device="cpu")
    _randomise(theirs, generator)
    theirs.eval()
    with torch.device("meta"):
        ours = load(name, size).to_torch()
    _hand_over(theirs, ours.to(dtype))
    ours.eval()
    x = torch.randn((2, 3, size, size), generator=generator, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        expected = forward(theirs, x)
        actual = ours(x)
    assert actual.shape == expected.shape
    assert torch.isfinite(expected).all()
    scale = max(1.0, float(expected.abs().max()))
    tolerance = (1e-4 if dtype == torch.float32 else 1e-10) * scale
    assert float((actual - expected).abs().max()) <= tolerance
