"""Import every torchvision CNN builder through `cnndsl import` (torch.fx) and check the round trip.

For each builder: import, check, compile, copy the source's weights under the spec's keys, compare float64 eval
outputs (max abs difference) and parameter counts with the source module. Prints one line per builder and a
total; models that need ops cnndsl lacks are reported with the first missing node.

    python bench/import_sweep.py [--size 64] [NAME ...]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torchvision

import cnndsl
from cnndsl.analysis import summarize
from cnndsl.importers import ImportFailure, import_graph
from cnndsl.importers.torch_fx import import_torch, spec_state_dict

SKIPPED = ("vit_", "swin_", "maxvit_")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", help="builders (default: every CNN builder in torchvision.models)"
    )
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    names = args.names or [
        f"torchvision.models:{n}"
        for n in torchvision.models.list_models(module=torchvision.models)
        if not n.startswith(SKIPPED)
    ] + [
        f"torchvision.models.segmentation:{n}"
        for n in torchvision.models.list_models(module=torchvision.models.segmentation)
    ]
    exact = 0
    for source in names:
        source = source if ":" in source else f"torchvision.models:{source}"
        name = source.rsplit(":", 1)[-1]
        size = max(args.size, 75) if name == "inception_v3" else args.size
        start = time.perf_counter()
        try:
            imported = import_torch(source, input_shape=(3, size, size))
            result = import_graph(imported.graph)
        except ImportFailure as failure:
            first = failure.problems[0]
            print(
                f"{name:24s} not imported: {first.location.name}: {first.message} (+{len(failure.problems) - 1})"
            )
            continue
        network = cnndsl.loads(result.spec)
        model_source = imported.model
        assert model_source is not None
        model = network.to_torch().double().eval()
        model.load_state_dict(spec_state_dict(imported, network), strict=True)
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        with torch.no_grad():
            expected = model_source.double().eval()(x)
            expected = expected["out"] if isinstance(expected, dict) else expected
            diff = (model(x) - expected).abs().max().item()
        # The weights of the modules (and bare parameters) the traced forward pass uses:
        params = sum(
            p.numel() for unit in imported.modules for m in unit if m is not None for p in m.parameters()
        )
        same = summarize(network).totals.trainable_params == params
        lines = sum(1 for line in result.spec.splitlines() if line.strip() and not line.startswith("#"))
        exact += diff == 0.0 and same
        print(
            f"{name:24s} {lines:4d} lines  params {'equal' if same else 'DIFFER'}  max |diff| {diff:.1e}  "
            f"{time.perf_counter() - start:5.1f} s"
        )
    print(f"{exact} of {len(names)} builders round-trip exactly")


if __name__ == "__main__":
    main()
