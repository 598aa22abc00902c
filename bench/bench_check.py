"""Parse + check speed: a cold `cnndsl check specs/resnet50.cnn` process, and generated specs of growing size.

Usage: python bench/bench_check.py [--rounds N]
Prints a markdown table for docs/benchmarks.md. Targets: cold resnet50 check < 0.3 s; a 10,000-layer spec < 2 s;
time linear in size.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generated_spec(layers: int) -> str:
    """A plain chain of conv -> bn -> relu units (3 layers each) plus a head: `layers` nodes in all."""
    units = max(1, (layers - 2) // 3)
    body = "\n".join("    conv(16, 3, padding=1) -> bn -> relu" for _ in range(units))
    return f"network Deep(image: [16, 32, 32]) {{\n{body}\n    gap -> linear(10)\n}}\n"


def time_process(args: list[str], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnndsl", *args], cwd=ROOT, check=True, capture_output=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    baseline = time_process(["--version"], args.rounds)
    resnet = time_process(["check", "specs/resnet50.cnn"], args.rounds)
    print(f"| cold `python -m cnndsl check specs/resnet50.cnn` (median of {args.rounds}) | {resnet:.3f} s |")
    print(f"| cold `python -m cnndsl --version` (interpreter + imports floor) | {baseline:.3f} s |")
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
