"""Formatter speed: ``cnndsl.fmt.format_source`` on the zoo and on generated specs of growing size, beside a plain
``cnndsl.syntax.parse`` of the same text (the formatter parses twice: once to refuse broken input, once to prove its
output is the same program, so about 2-3 parses is its expected cost).

Usage: python bench/bench_fmt.py [--rounds N]
Prints a markdown table for docs/benchmarks.md. Expectation: time linear in size, a few parses' worth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnndsl.fmt import format_source  # noqa: E402  (after the path tweak)
from cnndsl.syntax import parse  # noqa: E402


def generated_spec(statements: int) -> str:
    """A network of `statements` lines, each with a shape assertion and a comment to align, written untidily."""
    body = "".join(
        f"  conv({i % 64 + 1},3, padding=same)->relu :[?, ?, ?]   # layer {i}\n" for i in range(statements)
    )
    return f"network Big(x: [3, 32, 32]) {{\n{body}}}\n"


def median_time(call: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    zoo = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").rglob("*.cnn"))]
    cases = [("the zoo (23 files)", zoo)] + [
        (f"generated, {n:,} statements", [generated_spec(n)]) for n in (100, 1_000, 10_000)
    ]
    print("| input | size | `format_source` | `parse` | ratio | per line |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, texts in cases:
        size = sum(len(t) for t in texts)
        lines = sum(t.count("\n") for t in texts)
        formatting = median_time(lambda ts=texts: [format_source(t) for t in ts], args.rounds)
        parsing = median_time(lambda ts=texts: [parse(t) for t in ts], args.rounds)
        print(
            f"| {name} | {size / 1000:,.1f} kB | {formatting:.3f} s | {parsing:.3f} s | "
            f"{formatting / parsing:.1f}x | {formatting / lines * 1e6:.0f} µs |"
        )


if __name__ == "__main__":
    main()
