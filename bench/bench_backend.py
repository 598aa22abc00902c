"""Forward+backward time of ResNet-50 compiled from specs/resnet50.cnn against the hand-written ResNet-50 in
bench/resnet50_ref.py (torchvision's code, transcribed), with the same weights (cnndsl.load_weights by order).

The two run alternately, round after round, in one process, so load on a shared machine hits both sides; the
reported ratio is the median over rounds of (cnndsl time / hand-written time). Target: <= 1.02.

    python3 bench/bench_backend.py                      # CPU, fp32, eager
    python3 bench/bench_backend.py --batch 4 --rounds 12
    python3 bench/bench_backend.py --device cuda        # bf16 autocast + channels_last, eager and torch.compile

On CUDA both models run under ``torch.autocast(bfloat16)`` with channels_last inputs and weights, first eager,
then each wrapped in ``torch.compile`` (add ``--no-compile`` to skip that part).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from resnet50_ref import resnet50  # noqa: E402

import cnndsl  # noqa: E402


def build(device: str, channels_last: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    reference = resnet50()
    ours = cnndsl.load(ROOT / "specs" / "resnet50.cnn").to_torch()
    cnndsl.load_weights(ours, reference.state_dict(), match="order")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return ours.to(device, memory_format=fmt).train(), reference.to(device, memory_format=fmt).train()


def check_same(ours: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest output difference in eval mode: the two must be the same network before timing means anything."""
    ours.eval()
    reference.eval()
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    ours.train()
    reference.train()
    return diff


def step_fn(
    model: Callable[[torch.Tensor], torch.Tensor],
    params: list[torch.nn.Parameter],
    x: torch.Tensor,
    bf16: bool,
) -> Callable[[], None]:
    def step() -> None:
        for p in params:
            p.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = model(x)
        out.float().sum().backward()

    return step


def timed(step: Callable[[], None], iterations: int, cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def compare(
    label: str,
    ours_step: Callable[[], None],
    ref_step: Callable[[], None],
    args: argparse.Namespace,
    cuda: bool,
) -> dict[str, float | str]:
    for _ in range(args.warmup):
        ours_step()
        ref_step()
    ratios, ours_times, ref_times = [], [], []
    for round_index in range(args.rounds):
        # Alternate who goes first, so a trend in machine load does not favour one side.
        if round_index % 2 == 0:
            a = timed(ours_step, args.iterations, cuda)
            b = timed(ref_step, args.iterations, cuda)
        else:
            b = timed(ref_step, args.iterations, cuda)
            a = timed(ours_step, args.iterations, cuda)
        ours_times.append(a)
        ref_times.append(b)
        ratios.append(a / b)
        print(
            f"  {label} round {round_index + 1}: cnndsl {a * 1e3:8.1f} ms  hand-written {b * 1e3:8.1f} ms  "
            f"ratio {a / b:.3f}",
            flush=True,
        )
    return {
        "label": label,
        "ours_ms": statistics.median(ours_times) * 1e3,
        "ref_ms": statistics.median(ref_times) * 1e3,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "best_ratio": min(ours_times) / min(ref_times),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 2 on CPU, 64 on CUDA)")
    parser.add_argument("--size", type=int, default=224, help="image height and width (default 224)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds (default 10)")
    parser.add_argument(
        "--iterations", type=int, default=None, help="steps per round (default 2 CPU, 20 CUDA)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--no-compile", action="store_true", help="on CUDA, skip the torch.compile comparison"
    )
    parser.add_argument("--compile", action="store_true", help="on CPU, also compare under torch.compile")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch = args.batch or (64 if cuda else 2)
    args.iterations = args.iterations or (20 if cuda else 2)

    ours, reference = build(args.device, channels_last=cuda)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device).to(memory_format=fmt)
    diff = check_same(ours, reference, x[:2])
    device_name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {device_name}; torch {torch.__version__}; batch {args.batch}x3x{args.size}x{args.size}; "
        f"same weights, max output difference {diff:.2e}"
    )
    if diff > 1e-3:
        print("the two models disagree; not timing them", file=sys.stderr)
        return 1

    runs = [("eager" + (" bf16 channels_last" if cuda else " fp32"), ours, reference)]
    if (cuda and not args.no_compile) or args.compile:
        runs.append(
            (
                "torch.compile" + (" bf16 channels_last" if cuda else " fp32"),
                torch.compile(ours),
                torch.compile(reference),
            )
        )
    results = []
    for label, a, b in runs:
        results.append(
            compare(
                label,
                step_fn(a, list(ours.parameters()), x, cuda),
                step_fn(b, list(reference.parameters()), x, cuda),
                args,
                cuda,
            )
        )

    print()
    print(
        f"Device: {device_name}. torch {torch.__version__}. ResNet-50, training step (forward + backward), "
        f"batch {args.batch} at {args.size}x{args.size}; median of {args.rounds} alternating rounds of "
        f"{args.iterations} steps."
    )
    print()
    print(
        "| mode | cnndsl (ms/step, median) | hand-written (ms/step, median) | ratio (median of rounds) "
        "| ratio of best times | ratio range |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['label']} | {r['ours_ms']:.1f} | {r['ref_ms']:.1f} | {r['ratio']:.3f} | {r['best_ratio']:.3f} | "
            f"{r['ratio_min']:.3f}–{r['ratio_max']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
