"""Shared test fixtures. ``pytest --update-goldens`` rewrites golden files instead of comparing with them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files from current output")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``golden("summary/lenet5.txt", text)`` compares text with tests/golden/summary/lenet5.txt."""
    update = request.config.getoption("--update-goldens")

    def check(relative: str, actual: str) -> None:
        path = GOLDEN / relative
        if update or not path.exists():
            if not update:
                pytest.fail(f"golden file {path} is missing; run pytest --update-goldens to create it")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            return
        expected = path.read_text(encoding="utf-8")
        assert actual == expected, f"output differs from {path} (pytest --update-goldens rewrites it)"

    return check


def spec_files() -> list[Path]:
    """Every network spec in specs/ (library files holding only blocks are skipped by the callers that need to)."""
    return sorted(SPECS.glob("*.cnn"))


CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, which Playwright drives (never `playwright install`: it downloads a browser)."""


def unavailable(reason: str) -> None:
    """Skip a browser test whose tool is missing; under CI, whose `make test` installs it, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs `make test`, which builds and installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright, one per test module (the playground's and the HTML report's)."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()
