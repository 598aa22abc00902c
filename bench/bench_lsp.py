"""Language server latency on specs/resnet152.cnn, in one server run (`python -m cnndsl lsp`, spoken to over stdio).

Measures, as a client sees them:
- change -> diagnostics: from sending a `didChange` to receiving the `publishDiagnostics` for that version (the
  server's debounce, 30 ms by default, is included: it is part of what a user waits for);
- hover: request to answer, on every op and block call of the network body, the document unchanged (cached);
- inlay hints: request to answer for the whole document, unchanged.

Usage: python bench/bench_lsp.py [--rounds N]
Prints a markdown table for docs/benchmarks.md. Targets: diagnostics within 100 ms of a change; hover p50 under
20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "resnet152.cnn"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(rounds: int) -> dict[str, list[float]]:
    client = LanguageClient("bench", "1")
    waiting: dict[int, asyncio.Future[float]] = {}

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def published(params: types.PublishDiagnosticsParams) -> None:
        future = waiting.pop(params.version if params.version is not None else -1, None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    await client.start_io(sys.executable, "-m", "cnndsl", "lsp", cwd=str(ROOT))
    await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities()))
    client.initialized(types.InitializedParams())
    uri = SPEC.resolve().as_uri()
    text = SPEC.read_text(encoding="utf-8")
    identifier = types.TextDocumentIdentifier(uri)
    loop = asyncio.get_running_loop()
    waiting[1] = loop.create_future()
    started = time.perf_counter()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "cnn", 1, text))
    )
    first = await asyncio.wait_for(waiting[1], 60) if 1 in waiting else time.perf_counter()
    results: dict[str, list[float]] = {"open": [first - started], "change": [], "hover": [], "inlay": []}

    # A change that keeps the spec valid and one that breaks a shape, in turn, each text new (never a cache hit
    # for the document itself; its imports are parsed once and kept).
    variants = [text, text.replace("linear(1000)", "linear(1001)"), text.replace("conv(64, 7", "conv(64, 77")]
    version = 1
    for round_ in range(rounds):
        version += 1
        waiting[version] = loop.create_future()
        sent = time.perf_counter()
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version, uri),
                [
                    types.TextDocumentContentChangeWholeDocument(
                        variants[round_ % len(variants)] + f"# edit {round_}\n"
                    )
                ],
            )
        )
        arrived = await asyncio.wait_for(waiting[version], 60)
        results["change"].append(arrived - sent)
    # Back to the original text, then query the cached analysis.
    version += 1
    waiting[version] = loop.create_future()
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version, uri),
            [types.TextDocumentContentChangeWholeDocument(text)],
        )
    )
    await asyncio.wait_for(waiting[version], 60)
    lines = text.split("\n")
    body = next(i for i, line in enumerate(lines) if line.startswith("network "))
    positions = [
        types.Position(number, match.start())
        for number in range(body + 1, len(lines))
        for match in re.finditer(r"[A-Za-z_]\w*(?=\s*\(|\s*->|\s*$|\s*:)", lines[number].split("#", 1)[0])
    ]
    whole = types.Range(types.Position(0, 0), types.Position(len(lines), 0))
    for _ in range(max(1, rounds // 2)):
        for position in positions:
            sent = time.perf_counter()
            answer = await client.text_document_hover_async(types.HoverParams(identifier, position))
            results["hover"].append(time.perf_counter() - sent)
            assert answer is not None, position
        sent = time.perf_counter()
        hints = await client.text_document_inlay_hint_async(types.InlayHintParams(identifier, whole))
        results["inlay"].append(time.perf_counter() - sent)
        assert hints, "no inlay hints"
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds))
    print(f"| measurement (specs/resnet152.cnn, {args.rounds} rounds) | samples | p50 | p95 |")
    print("|---|---:|---:|---:|")
    names = {
        "open": "open -> first diagnostics (cold: imports, first check)",
        "change": "change -> its diagnostics (30 ms debounce included)",
        "hover": "hover (every op and block call of the body)",
        "inlay": "inlay hints, whole document",
    }
    for key, label in names.items():
        samples = [s * 1000 for s in results[key]]
        p50, p95 = statistics.median(samples), percentile(samples, 0.95)
        print(f"| {label} | {len(samples)} | {p50:.1f} ms | {p95:.1f} ms |")


if __name__ == "__main__":
    main()
