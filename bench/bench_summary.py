"""Static summary vs torchinfo, whole process, alternating in one run.

    python bench/bench_summary.py [--rounds N] [--spec specs/resnet50.cnn] [--write]

Side A: ``python -m cnndsl summary SPEC --format json`` (parse, check, analyse; no torch).
Side B: a process that imports torch and torchinfo, builds the same network from the spec through the torch backend
(``network.to_torch()``) and runs ``torchinfo.summary`` (a CPU forward pass) on it, as a user of torchinfo would.
The two run alternately (the order flips every round) so noise on the shared box hits both; the ratio of medians
and the totals of both sides are printed, and ``--write`` puts them in docs/benchmarks.md under
"## Static analysis: summary vs torchinfo". Target: at least 10x faster, same totals.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Static analysis: summary vs torchinfo"

TORCHINFO_SCRIPT = """
import json, sys
import torch, torchinfo
import cnndsl
net = cnndsl.load(sys.argv[1])
model = net.to_torch().eval()
shape = (1, *net.inputs[0].shape)
stats = torchinfo.summary(model, input_size=shape, verbose=0, device="cpu")
print(json.dumps({"total_params": stats.total_params, "trainable_params": stats.trainable_params,
                  "mult_adds": stats.total_mult_adds}))
"""


def run(argv: list[str]) -> tuple[float, dict[str, Any]]:
    """Wall time of one whole process and its JSON output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{result.stderr}")
    return elapsed, json.loads(result.stdout)


def measure(spec: str, rounds: int) -> dict[str, Any]:
    ours_cmd = [sys.executable, "-m", "cnndsl", "summary", spec, "--format", "json"]
    theirs_cmd = [sys.executable, "-c", TORCHINFO_SCRIPT, spec]
    run(ours_cmd)  # warm the file cache for both sides before timing
    run(theirs_cmd)
    ours: list[float] = []
    theirs: list[float] = []
    ours_data: dict[str, Any] = {}
    theirs_data: dict[str, Any] = {}
    for index in range(rounds):
        order = [(ours_cmd, ours), (theirs_cmd, theirs)]
        if index % 2:
            order.reverse()
        for argv, samples in order:
            elapsed, data = run(argv)
            samples.append(elapsed)
            if argv is ours_cmd:
                ours_data = data
            else:
                theirs_data = data
        print(f"round {index + 1}: cnndsl {ours[-1]:.3f} s, torchinfo {theirs[-1]:.3f} s", file=sys.stderr)
    return {
        "ours": ours,
        "theirs": theirs,
        "ours_data": ours_data,
        "theirs_data": theirs_data,
        "ratio": statistics.median(theirs) / statistics.median(ours),
        "round_ratios": [t / o for o, t in zip(ours, theirs, strict=True)],
    }


def bias_like_params(spec: str) -> int:
    """Params that torchinfo's mult-adds count and ours do not: batchnorm scale/shift and linear biases
    (torchinfo adds one multiply-add per such parameter; our MACs exclude bias and elementwise work)."""
    sys.path.insert(0, str(ROOT))
    import cnndsl
    from cnndsl.analysis import summarize

    summary = summarize(cnndsl.load(ROOT / spec))
    total = 0
    for layer in summary.layers:
        if layer.family == "norm":
            total += layer.params
        elif layer.family == "linear":
            total += layer.params - layer.macs  # the bias part
    return total


def report(spec: str, rounds: int, result: dict[str, Any]) -> str:
    ours, theirs = result["ours_data"], result["theirs_data"]
    extra = theirs["mult_adds"] - ours["macs"]
    explained = bias_like_params(spec)
    same_params = ours["trainable_params"] == theirs["trainable_params"] == theirs["total_params"]
    lines = [
        SECTION,
        "",
        f"`python bench/bench_summary.py --rounds {rounds}` on {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other engineers' jobs (noise hits both sides: they alternate), "
        f"Python {platform.python_version()}.",
        "",
        "| whole process | median | min | max |",
        "|---|---:|---:|---:|",
        f"| `python -m cnndsl summary {spec} --format json` | {statistics.median(result['ours']):.3f} s "
        f"| {min(result['ours']):.3f} s | {max(result['ours']):.3f} s |",
        f"| torch + torchinfo: `network.to_torch()` + `torchinfo.summary(model, (1, 3, 224, 224))` "
        f"| {statistics.median(result['theirs']):.3f} s | {min(result['theirs']):.3f} s "
        f"| {max(result['theirs']):.3f} s |",
        "",
        f"**cnndsl is {result['ratio']:.1f}x faster** (ratio of medians; per-round ratios "
        f"{min(result['round_ratios']):.1f}x to {max(result['round_ratios']):.1f}x). Target: at least 10x.",
        "",
        "| total | cnndsl | torchinfo |",
        "|---|---:|---:|",
        f"| params | {ours['trainable_params']:,} (trainable) | {theirs['total_params']:,} (total), "
        f"{theirs['trainable_params']:,} (trainable) |",
        f"| buffers (batchnorm statistics) | {ours['non_trainable_params']:,} | not reported |",
        f'| MACs | {ours["macs"]:,} | {theirs["mult_adds"]:,} ("mult-adds") |',
        "",
        f"Params are {'identical' if same_params else 'DIFFERENT'}. torchinfo's mult-adds exceed our MACs by "
        f"{extra:,}; the batchnorm scale/shift parameters and linear biases of the network number {explained:,}"
        + (
            ", exactly the difference: torchinfo adds one multiply-add per such parameter, while our MACs count "
            "conv and linear multiply-accumulates only, bias excluded (torchvision's convention)."
            if extra == explained
            else "; the difference is not fully explained by them."
        ),
    ]
    reference = json.loads((ROOT / "tests" / "data" / "zoo_reference.json").read_text()).get(Path(spec).stem)
    if reference:
        agree = reference["params"] == ours["trainable_params"] and reference["macs"] == ours["macs"]
        lines += [
            "",
            f"Reference (tests/data/zoo_reference.json, torchvision metadata): {reference['params']:,} params, "
            f"{reference['macs']:,} MACs; cnndsl {'matches both exactly' if agree else 'DIFFERS'}.",
        ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace only this benchmark's section of docs/benchmarks.md (other sections belong to others)."""
    doc = DOC.read_text(encoding="utf-8")
    start = doc.index(SECTION)
    following = doc.find("\n## ", start + len(SECTION))
    end = len(doc) if following == -1 else following + 1
    DOC.write_text(doc[:start] + text + ("\n" if following != -1 else "") + doc[end:], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spec", default="specs/resnet50.cnn")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    result = measure(args.spec, args.rounds)
    text = report(args.spec, args.rounds, result)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
