"""Parse + check speed: cold `cnndsl check` processes (ResNet-50, ResNet-152), ResNet-152 loaded in-process, and
generated specs of growing size.

Usage: python bench/bench_check.py [--rounds N] [--code DIR] [--compare-with DIR]
Prints a markdown table for docs/benchmarks.md. Targets: cold resnet50 check < 0.3 s; a 10,000-layer spec < 2 s;
time linear in size; no regression from one version of the front end to the next on the same specs.

``--code DIR`` times the ``cnndsl`` package of another checkout (``git archive REV | tar -x -C DIR``) on this
checkout's specs, so two versions of the front end are compared on identical input. ``--compare-with DIR`` does
that comparison robustly on a loaded machine: it alternates short subprocesses of the two versions and compares
CPU time (``time.process_time``), not wall time, of in-process loads of specs/resnet152.cnn and of a generated
10,000-layer spec.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT  # the checkout whose cnndsl package is timed (--code)


def generated_spec(layers: int) -> str:
    """A plain chain of conv -> bn -> relu units (3 layers each) plus a head: `layers` nodes in all."""
    units = max(1, (layers - 2) // 3)
    body = "\n".join("    conv(16, 3, padding=1) -> bn -> relu" for _ in range(units))
    return f"network Deep(image: [16, 32, 32]) {{\n{body}\n    gap -> linear(10)\n}}\n"


def time_process(args: list[str], rounds: int) -> float:
    samples = []
    env = {**os.environ, "PYTHONPATH": str(CODE)}
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cnndsl", *args], cwd=ROOT, check=True, capture_output=True, env=env
        )
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def time_in_process(text: str, rounds: int) -> float:
    import cnndsl

    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        cnndsl.loads(text)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def time_load(path: Path, rounds: int) -> float:
    """Median of in-process ``cnndsl.load(path)`` after one warm-up load (imports and lark's parser built)."""
    import cnndsl

    cnndsl.load(path)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        cnndsl.load(path)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


_CPU_PROBE = """
import sys, time, statistics
sys.path.insert(0, sys.argv[1])
import cnndsl
path, text, loads = sys.argv[2], open(sys.argv[3]).read(), int(sys.argv[4])
cnndsl.load(path); cnndsl.loads(text)  # warm: imports, lark's parser
def cpu(f):
    start = time.process_time(); f(); return time.process_time() - start
a = [cpu(lambda: cnndsl.load(path)) for _ in range(loads)]
b = [cpu(lambda: cnndsl.loads(text)) for _ in range(max(1, loads // 10))]
print(statistics.median(a), min(a), statistics.median(b), min(b))
"""


def compare(other: Path, rounds: int) -> None:
    """Alternate the two versions; print median and min CPU seconds per load, and the ratio of medians."""
    results: dict[str, list[list[float]]] = {"this checkout": [], str(other): []}
    with tempfile.TemporaryDirectory() as folder:
        deep = Path(folder) / "deep10000.cnn"
        deep.write_text(generated_spec(10_000))
        for _ in range(rounds):
            for label, code in (("this checkout", ROOT), (str(other), other)):
                out = subprocess.run(
                    [sys.executable, "-c", _CPU_PROBE, str(code), "specs/resnet152.cnn", str(deep), "20"],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                    text=True,
                    env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                ).stdout.split()
                results[label].append([float(x) for x in out])
    print("| version | resnet152 load, CPU median | min | 10,000-layer loads(), CPU median | min |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for label, rows in results.items():
        columns = list(zip(*rows, strict=True))
        med = [statistics.median(c) for c in columns]
        medians[label] = med
        print(
            f"| {label} | {med[0] * 1e3:.1f} ms | {min(columns[1]) * 1e3:.1f} ms | {med[2]:.3f} s "
            f"| {min(columns[3]):.3f} s |"
        )
    this, that = medians["this checkout"], medians[str(other)]
    print(f"ratio this/other: resnet152 {this[0] / that[0]:.3f}, 10,000 layers {this[2] / that[2]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose cnndsl package is timed")
    parser.add_argument("--compare-with", type=Path, help="compare CPU time with another checkout's cnndsl")
    args = parser.parse_args()
    if args.compare_with is not None:
        compare(args.compare_with.resolve(), args.rounds)
        return
    global CODE
    CODE = args.code.resolve()
    sys.path.insert(0, str(CODE))
    print(f"cnndsl from {CODE}")
    baseline = time_process(["--version"], args.rounds)
    resnet = time_process(["check", "specs/resnet50.cnn"], args.rounds)
    print(f"| cold `python -m cnndsl check specs/resnet50.cnn` (median of {args.rounds}) | {resnet:.3f} s |")
    print(f"| cold `python -m cnndsl --version` (interpreter + imports floor) | {baseline:.3f} s |")
    big = time_process(["check", "specs/resnet152.cnn"], args.rounds)
    print(f"| cold `python -m cnndsl check specs/resnet152.cnn` (median of {args.rounds}) | {big:.3f} s |")
    warm = time_load(ROOT / "specs" / "resnet152.cnn", 5 * args.rounds)
    print(
        f'| in-process `cnndsl.load("specs/resnet152.cnn")` (median of {5 * args.rounds}) | {warm * 1e3:.1f} ms |'
    )
    with tempfile.TemporaryDirectory() as folder:
        for layers in (1_000, 3_000, 10_000, 30_000):
            text = generated_spec(layers)
            path = Path(folder) / f"deep{layers}.cnn"
            path.write_text(text)
            cold = time_process(["check", str(path)], max(3, args.rounds // 2))
            warm = time_in_process(text, 3)
            print(
                f"| generated {layers:,}-layer spec: cold process | {cold:.3f} s | in-process loads() "
                f"| {warm:.3f} s | {warm / layers * 1e6:.1f} µs/layer |"
            )


if __name__ == "__main__":
    main()
