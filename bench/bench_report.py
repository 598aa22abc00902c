"""Reports on the largest zoo network: the text tree, the HTML page, and that page in Chromium.

    python bench/bench_report.py [--rounds N] [--spec specs/resnet152.cnn] [--write]

Measures, median of N rounds:

- whole process ``python -m cnndsl summary SPEC`` (the text tree) and ``... -o report.html`` (the HTML page, with
  the diagram rendered by Graphviz's ``dot``);
- in Chromium (headless, Debian's /usr/bin/chromium through Playwright), from navigation to the page's script having
  wired every row (``data-ready``), then one sort by MACs, one "collapse all" and one row hover with the diagram box
  lit, each timed in the page from the event to the end of the handler.

``--write`` puts the table in docs/benchmarks.md under "## Reports". Targets: the HTML page of ResNet-152 written in
under 2 s and interactive in Chromium in under 1 s; a sort or hover under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Reports"
CHROMIUM = "/usr/bin/chromium"

# Each interaction timed inside the page: performance.now() around a synchronous dispatch of the event.
TIMED = """
([selector, event]) => {
  const el = document.querySelector(selector);
  const start = performance.now();
  el.dispatchEvent(new MouseEvent(event, {bubbles: true}));
  return performance.now() - start;
}
"""


def process(argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def browser_times(page_path: Path, rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"ready": [], "sort": [], "collapse": [], "hover": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"],
        )
        for _ in range(rounds):
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            start = time.perf_counter()
            page.goto(page_path.as_uri())
            page.wait_for_selector(".cnndsl-report[data-ready='1']")
            times["ready"].append(time.perf_counter() - start)
            row = "table.layers tr.row:nth-child(40)"
            times["hover"].append(page.evaluate(TIMED, [row, "mouseenter"]) / 1000)
            assert page.eval_on_selector_all(".diagram g.node.hl", "gs => gs.length") >= 1
            times["sort"].append(page.evaluate(TIMED, ["table.layers th:nth-child(5)", "click"]) / 1000)
            page.evaluate(TIMED, ["button.tree-order", "click"])
            times["collapse"].append(page.evaluate(TIMED, ["button.collapse-all", "click"]) / 1000)
            page.close()
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spec", default="specs/resnet152.cnn")
    parser.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        text_cmd = [sys.executable, "-m", "cnndsl", "summary", args.spec]
        html_cmd = [sys.executable, "-m", "cnndsl", "summary", args.spec, "-o", str(page)]
        process(text_cmd)  # warm caches
        text = [process(text_cmd) for _ in range(args.rounds)]
        html = [process(html_cmd) for _ in range(args.rounds)]
        size = page.stat().st_size
        clicks = browser_times(page, args.rounds)

    def ms(values: list[float]) -> str:
        return f"{1000 * statistics.median(values):.0f} ms"

    rows = [
        (f"`python -m cnndsl summary {args.spec}` (text tree, whole process)", ms(text)),
        (
            f"`python -m cnndsl summary {args.spec} -o report.html` (with `dot`; {size / 1024:.0f} KiB)",
            ms(html),
        ),
        ("Chromium: navigation to interactive (`data-ready`)", ms(clicks["ready"])),
        ("Chromium: hover a row, its diagram box lit", ms(clicks["hover"])),
        ("Chromium: sort by MACs", ms(clicks["sort"])),
        ("Chromium: collapse all", ms(clicks["collapse"])),
    ]
    table = ["| measurement | median |", "|---|---:|", *(f"| {name} | {value} |" for name, value in rows)]
    print("\n".join(table))
    if args.write:
        body = (
            f"{SECTION}\n\n`python bench/bench_report.py --rounds {args.rounds} --spec {args.spec}` on "
            f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, Python "
            f"{platform.python_version()}; Chromium headless through Playwright. Targets: the page written in "
            "under 2 s and interactive in under 1 s; a sort or a hover under 100 ms.\n\n"
            + "\n".join(table)
            + "\n"
        )
        text_doc = DOC.read_text()
        if SECTION in text_doc:
            start = text_doc.index(SECTION)
            end = text_doc.find("\n## ", start + len(SECTION))
            text_doc = text_doc[:start] + body + ("" if end < 0 else text_doc[end:])
        else:
            text_doc = text_doc.rstrip("\n") + "\n\n" + body
        DOC.write_text(text_doc)


if __name__ == "__main__":
    main()
