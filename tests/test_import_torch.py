"""`cnndsl import package.module:callable`: torchvision models round-trip through a spec.

torchvision is the oracle: the spec's parameters, MACs (counted with forward hooks on the source) and float64
eval outputs, with the source's weights given the spec's keys, equal the source module's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import cnndsl  # noqa: E402
from cnndsl.analysis import summarize  # noqa: E402
from cnndsl.importers import ImportFailure, import_graph  # noqa: E402
from cnndsl.importers.torch_fx import import_torch, spec_state_dict  # noqa: E402

# Builders the regular suite round-trips, at small inputs (the whole list: bench/import_sweep.py).
BUILDERS = {
    "resnet18": (3, 64, 64),
    "densenet121": (3, 64, 64),
    "mobilenet_v2": (3, 64, 64),
    "googlenet": (3, 64, 64),
    "squeezenet1_1": (3, 64, 64),
    "mobilenet_v3_small": (3, 64, 64),
    "shufflenet_v2_x0_5": (3, 64, 64),
    "regnet_y_400mf": (3, 64, 64),
    "efficientnet_b0": (3, 32, 32),
    "convnext_tiny": (3, 32, 32),
    "inception_v3": (3, 75, 75),
}

# Readability of the specs these builders give: at most this many code lines, and text that shows the repeated
# block. DenseNet's growing concatenations become one dense layer repeated (block 3 of densenet121 has 24);
# EfficientNet's layers (whose stochastic-depth rates all differ) are one MBConv call each.
READABLE = {
    "densenet121": (50, "* 24"),
    "efficientnet_b0": (60, "block MBConv("),
    "resnet18": (40, "BasicBlock"),
}


def _macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_torchvision_round_trip(name: str) -> None:
    shape = BUILDERS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imported = import_torch(f"torchvision.models:{name}", input_shape=shape)
    result = import_graph(imported.graph)
    network = cnndsl.loads(result.spec)
    if name in READABLE:
        most, shown = READABLE[name]
        code = [line for line in result.spec.splitlines() if line.strip() and not line.startswith("#")]
        assert len(code) <= most and shown in result.spec, result.spec
    source = imported.model
    assert source is not None
    # Non-trivial batch-norm statistics, so that a mix-up of buffers would show.
    generator = torch.Generator().manual_seed(0)
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    # The weights of the modules (and ConvNeXt's bare layer-scale parameters) the traced forward pass uses:
    traced_params = sum(
        p.numel() for unit in imported.modules for m in unit if m is not None for p in m.parameters()
    )
    totals = summarize(network).totals
    assert totals.trainable_params == traced_params
    assert totals.macs == _macs(source, shape)

    model = network.to_torch().double().eval()
    model.load_state_dict(spec_state_dict(imported, network), strict=True)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        expected = source.double().eval()(x)
        got = model(x)
    assert got.shape == expected.shape
    assert torch.equal(got, expected), (got - expected).abs().max()


def test_an_imported_resnet50_is_a_few_readable_blocks() -> None:
    result = import_graph(import_torch("torchvision.models:resnet50").graph)
    code = [line for line in result.spec.splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) < 40, result.spec
    assert "block Bottleneck(" in result.spec  # named after the source's own module class
    assert "Bottleneck(c) * n" in result.spec


def test_unsupported_nodes_are_all_listed_with_their_names(tmp_path: Path) -> None:
    module = tmp_path / "odd_model.py"
    module.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Odd(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(3, 8, 3)
                    self.pixel = nn.PixelShuffle(2)

                def forward(self, x):
                    x = self.conv(x)
                    x = torch.erf(x)
                    return self.pixel(x)

            def build():
                return Odd()

            def broken():
                raise RuntimeError("no weights here")

            def not_a_module():
                return 42

            class Branchy(nn.Module):
                def forward(self, x):
                    if x.sum() > 0:
                        return x
                    return -x
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ImportFailure) as failure:
            import_torch("odd_model:build", input_shape=(3, 16, 16))
        messages = [str(p.location) + " " + p.message for p in failure.value.problems]
        assert len(messages) == 2, messages
        assert "erf" in messages[0] and "PixelShuffle" in messages[1]
        for source, words in [
            ("odd_model:broken", "no weights here"),
            ("odd_model:not_a_module", "not a torch module"),
            ("odd_model:missing", "cannot find"),
            ("no_such_package_xyz:build", "cannot find"),
            ("odd_model:Branchy", "cannot trace"),
        ]:
            with pytest.raises(ImportFailure) as failure:
                import_torch(source, input_shape=(3, 8, 8))
            assert words in failure.value.problems[0].message, (source, failure.value.problems)
        partial = import_graph(import_torch("odd_model:build", input_shape=(3, 16, 16), partial=True).graph)
        assert len(partial.gaps) == 2 and "NOT IMPORTED" in partial.spec
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("odd_model", None)


def test_cli_writes_spec_and_weights_that_cnndsl_loads(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnndsl",
            "import",
            "torchvision.models:squeezenet1_1",
            "--input",
            "3x64x64",
            "-o",
            "sq.cnn",
            "--weights-out",
            "sq.safetensors",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    from safetensors.torch import load_file

    network = cnndsl.load(tmp_path / "sq.cnn")
    model = network.to_torch().eval()
    cnndsl.load_weights(model, load_file(tmp_path / "sq.safetensors"), match="name")
    source = torchvision.models.squeezenet1_1().eval()
    # The file holds the source's weights under the spec's keys: put them back into a source module by position.
    exported = model.state_dict()
    source.load_state_dict(dict(zip(source.state_dict(), exported.values(), strict=True)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), source(x), atol=1e-5)
