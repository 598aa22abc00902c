"""Export every network spec in specs/ to ONNX and run it in onnxruntime against the torch module.

For each spec: compile, give it the weights tests/test_export_zoo.py uses (activations of order one, batch-norm
statistics from a random batch: conftest.randomise), export with a dynamic batch (``export_onnx_files``: checked
with ``onnx.checker``; weights over 1.5 GiB in a second file), run onnxruntime on a random batch of one and
compare with the eval-mode module: the largest difference relative to the output's scale (the test allows 1e-3).
Prints one line per spec with the input it was exported at, the model's size and the seconds spent compiling,
exporting and running; a failure prints the ExportError's one line. CPU seconds are given beside wall seconds: on
a shared machine they are the steadier measure (onnxruntime's threads count too). ``--small`` exports at the
smallest square input each spec checks at (as tests/test_export_zoo.py does) instead of the declared one.

    nice -n 15 python bench/export_sweep.py [--small] [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import cnndsl
from cnndsl.export import ExportError, export_onnx_files

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import randomise, smallest_input  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="spec names (default: every spec in specs/)")
    parser.add_argument(
        "--small", action="store_true", help="export at the smallest input each spec checks at"
    )
    args = parser.parse_args()
    paths = [SPECS / f"{n}.cnn" for n in args.names] or sorted(SPECS.glob("*.cnn"))
    torch.manual_seed(0)
    failed = 0
    total, total_cpu = time.perf_counter(), time.process_time()
    for path in paths:
        start, cpu = time.perf_counter(), time.process_time()
        shapes = smallest_input(path) if args.small else None
        try:
            network = cnndsl.load(path, input_shapes=shapes)
        except cnndsl.SpecError as error:
            if "no network defined" in str(error):
                continue
            raise
        module = network.to_torch()
        randomise(module, network, torch.Generator().manual_seed(0))
        built, built_cpu = time.perf_counter(), time.process_time()
        try:
            files = export_onnx_files(network, name=f"{path.stem}.onnx", module=module)
        except ExportError as error:
            failed += 1
            print(f"{path.stem:30s} FAILED {time.perf_counter() - built:6.1f} s: {error}", flush=True)
            continue
        exported, exported_cpu = time.perf_counter(), time.process_time()
        size = len(files.model) + len(files.data or b"")
        with tempfile.TemporaryDirectory() as scratch:  # onnxruntime reads external weights from files
            model: str | bytes = files.model
            if files.data is not None and files.data_name is not None:
                model = str(Path(scratch) / f"{path.stem}.onnx")
                Path(model).write_bytes(files.model)
                (Path(scratch) / files.data_name).write_bytes(files.data)
            session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        inputs = [torch.randn(1, *t.shape) for t in network.inputs]
        results = session.run(None, {t.name: x.numpy() for t, x in zip(network.inputs, inputs, strict=True)})
        with torch.no_grad():
            expected = module.eval()(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        worst = 0.0
        for ours, theirs in zip(results, expected, strict=True):
            scale = theirs.abs().max().item() or 1.0
            worst = max(worst, (torch.from_numpy(ours) - theirs).abs().max().item() / scale)
        shape = "x".join(str(d) for d in network.inputs[0].shape)
        print(
            f"{path.stem:30s} {shape:>11s} {size / 2**20:7.1f} MiB  compile {built - start:5.1f} s  "
            f"export {exported - built:6.1f} s ({exported_cpu - built_cpu:5.1f} s CPU)  "
            f"run {time.perf_counter() - exported:5.1f} s  total CPU {time.process_time() - cpu:5.1f} s  "
            f"rel diff {worst:.1e}{'' if worst < 1e-3 else '  DIFFERS'}",
            flush=True,
        )
        del module, session, files
    print(
        f"{len(paths)} files, {failed} failed, {time.perf_counter() - total:.0f} s, "
        f"{time.process_time() - total_cpu:.0f} s CPU",
        flush=True,
    )


if __name__ == "__main__":
    main()
