"""Import every torchvision CNN builder through `cnndsl import` and check the round trip.

For each builder: import, check, compile, copy the source's weights under the spec's keys, compare float64 eval
outputs (max abs difference), parameter counts and MACs with the source module. The oracle is torchvision: the
parameters are those of the modules the source's forward pass runs (forward hooks), the MACs those of its
``Conv2d``/``Linear`` calls; segmentation models are compared on their ``"out"`` output (built with
``aux_loss=False``, their default). Prints one line per builder and a total; a builder that fails is reported
with its first problem and the sweep goes on.

Modes:

- ``torch`` (default): ``cnndsl import package.module:callable`` (torch.fx).
- ``onnx``: the source is exported with torch's TorchScript exporter (``dynamo=False``, opset 17, no constant
  folding, so batch norm stays a node), the file imported as ``cnndsl import x.onnx`` would, the file's
  initializers given the spec's keys; both the spec and the source then run in float64, so an exact import
  gives a max |diff| of 0. onnxruntime's float32 output on the file is compared with the source's too (the
  ``ort`` column), which says the file itself is right.

    python bench/import_sweep.py [--mode torch|onnx] [--size 64] [--out FILE] [PATTERN ...]

A PATTERN is a builder name or a shell glob over the names (``'resnet*'``); none means every builder.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
import torchvision
from torch import nn

import cnndsl
from cnndsl.analysis import summarize
from cnndsl.importers import import_graph
from cnndsl.importers.onnx_model import import_onnx
from cnndsl.importers.onnx_model import spec_state_dict as onnx_state_dict
from cnndsl.importers.torch_fx import import_torch
from cnndsl.importers.torch_fx import spec_state_dict as torch_state_dict

SKIPPED = ("vit_", "swin_", "maxvit_")
"""Transformers: not CNNs (the issue asks for every torchvision CNN builder)."""


def builders() -> list[str]:
    """Every torchvision CNN builder, as ``module:name``."""
    classifiers = [
        f"torchvision.models:{n}"
        for n in torchvision.models.list_models(module=torchvision.models)
        if not n.startswith(SKIPPED)
    ]
    segmentation = [
        f"torchvision.models.segmentation:{n}"
        for n in torchvision.models.list_models(module=torchvision.models.segmentation)
    ]
    return classifiers + segmentation


def select(patterns: list[str]) -> list[str]:
    every = builders()
    if not patterns:
        return every
    chosen: list[str] = []
    for pattern in patterns:
        if ":" in pattern:
            matched = [pattern]
        else:
            matched = [s for s in every if fnmatch.fnmatchcase(s.rsplit(":", 1)[-1], pattern)]
        if not matched:
            raise SystemExit(f"no builder matches {pattern!r}")
        chosen += [s for s in matched if s not in chosen]
    return chosen


def build(source: str) -> nn.Module:
    """The builder's untrained model; segmentation builders without the backbone's pretrained weights (they
    download them by default) and without the auxiliary head (their default), so the output is ``{"out": x}``."""
    module_name, _, name = source.partition(":")
    module = __import__(module_name, fromlist=[name])
    kwargs: dict[str, Any] = {}
    if module_name.endswith(".segmentation"):
        kwargs = {"weights_backbone": None, "aux_loss": False}
    return getattr(module, name)(**kwargs).eval()


def perturb(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics and affine values, so that a mix-up of buffers would show."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator))
    return model


def source_counts(model: nn.Module, x: torch.Tensor) -> tuple[Any, int, int]:
    """The source's output (``"out"`` of a dict), its parameters (of the modules its forward runs) and MACs."""
    called: list[nn.Module] = []
    macs = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        nonlocal macs
        called.append(module)
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    output = output["out"] if isinstance(output, dict) else output
    unique = {id(m): m for m in called}.values()
    params = sum(p.numel() for m in unique for p in m.parameters(recurse=False))
    return output, params, macs


def via_torch(source: str, size: int) -> tuple[str, nn.Module, nn.Module, tuple[float, float] | None]:
    imported = import_torch(build(source), input_shape=(3, size, size))
    spec = import_graph(imported.graph).spec
    network = cnndsl.loads(spec)
    model = network.to_torch()
    assert imported.model is not None
    perturb(imported.model)
    model.load_state_dict(torch_state_dict(imported, network), strict=True)
    return spec, imported.model, model, None


def via_onnx(source: str, size: int) -> tuple[str, nn.Module, nn.Module, tuple[float, float] | None]:
    original = perturb(build(source))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{source.rsplit(':', 1)[-1]}.onnx"
        x = torch.randn(1, 3, size, size)
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(
                original,
                (x,),
                str(path),
                dynamo=False,
                opset_version=17,
                do_constant_folding=False,
                input_names=["image"],
            )
        finally:
            logging.disable(logging.NOTSET)
        ort_diff = _onnxruntime_diff(path, original, x)
        imported = import_onnx(path)
    spec = import_graph(imported.graph).spec
    network = cnndsl.loads(spec)
    model = network.to_torch()
    cnndsl.load_weights(model, onnx_state_dict(imported, network), match="name")
    return spec, original, model, ort_diff


def _onnxruntime_diff(path: Path, original: nn.Module, x: torch.Tensor) -> tuple[float, float] | None:
    """onnxruntime's float32 output on the file against the source's: max |diff|, and that relative to the
    largest output (untrained models with random batch-norm statistics reach 1e10 in Inception v3)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = original(x)
    expected = expected["out"] if isinstance(expected, dict) else expected
    diff = float((torch.from_numpy(got) - expected).abs().max())
    return diff, diff / max(float(expected.abs().max()), 1e-30)


MODES: dict[str, Callable[[str, int], tuple[str, nn.Module, nn.Module, tuple[float, float] | None]]] = {
    "torch": via_torch,
    "onnx": via_onnx,
}


def run_one(source: str, mode: str, size: int) -> tuple[bool, str]:
    """One builder: (exact, the result line)."""
    name = source.rsplit(":", 1)[-1]
    size = max(size, 75) if name == "inception_v3" else size
    if mode == "onnx" and name.startswith(("alexnet", "vgg")):
        # torch's exporter only writes an adaptive pooling whose output divides its input: AlexNet's and VGG's
        # (6x6, 7x7) need the 224x224 input they were designed for.
        size = max(size, 224)
    start = time.perf_counter()
    try:
        spec, original, model, ort_diff = MODES[mode](source, size)
        network = cnndsl.loads(spec)
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        expected, params, macs = source_counts(original.double().eval(), x)
        with torch.no_grad():
            diff = (model.double().eval()(x) - expected).abs().max().item()
    except Exception as error:  # a sweep reports every failure and goes on
        message = " ".join(str(error).split())
        return False, f"{name:30s} FAILED {type(error).__name__}: {message[:300]}"
    totals = summarize(network).totals
    same_params = totals.trainable_params == params
    same_macs = totals.macs == macs
    lines = sum(1 for line in spec.splitlines() if line.strip() and not line.startswith("#"))
    exact = diff == 0.0 and same_params and same_macs
    ort = f"  ort {ort_diff[0]:.1e} (rel {ort_diff[1]:.0e})" if ort_diff is not None else ""
    return exact, (
        f"{name:30s} {lines:4d} lines  params {'equal' if same_params else 'DIFFER'}  "
        f"MACs {'equal' if same_macs else 'DIFFER'}  max |diff| {diff:.1e}{ort}  "
        f"{time.perf_counter() - start:6.1f} s"
    )


def emit(text: str, out: TextIO | None) -> None:
    print(text, flush=True)
    if out is not None:
        out.write(text + "\n")
        out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("patterns", nargs="*", help="builder names or globs (default: every CNN builder)")
    parser.add_argument("--mode", choices=sorted(MODES), default="torch", help="import path (default torch)")
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--out", type=Path, help="also append each result line to this file as it comes")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    names = select(args.patterns)
    exact = 0
    out = args.out.open("a") if args.out else None
    try:
        for source in names:
            ok, line = run_one(source, args.mode, args.size)
            exact += ok
            emit(line, out)
        emit(f"# {args.mode}: {exact} of {len(names)} builders round-trip exactly", out)
    finally:
        if out is not None:
            out.close()


if __name__ == "__main__":
    main()
