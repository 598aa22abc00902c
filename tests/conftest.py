"""Shared test fixtures. ``pytest --update-goldens`` rewrites golden files instead of comparing with them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import torch

    import cnndsl

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


SMALL_SIDES = (32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
"""Square input sides tried, smallest first, by :func:`smallest_input`: 32 leaves the stride-32 stages of the
torchvision networks at 1x1, so every layer still runs (smaller sides only pad zeros through them)."""


def smallest_input(path: Path) -> dict[str | None, tuple[int, ...]] | None:
    """The smallest square image input (from SMALL_SIDES, below the declared size) that ``path`` checks at, as
    ``cnndsl.load``'s ``input_shapes``; None where the declared input is the smallest (a flatten into a fixed
    linear, a spec without a network, or an input that is not an image). Static check only: no torch."""
    import cnndsl

    try:
        declared = cnndsl.load(path).inputs
    except cnndsl.SpecError:
        return None
    if len(declared) != 1 or len(declared[0].shape) != 3:
        return None
    channels, height, width = declared[0].shape
    for side in SMALL_SIDES:
        if side * side >= height * width:
            break
        try:
            cnndsl.load(path, input_shapes={None: (channels, side, side)})
        except cnndsl.SpecError:
            continue
        return {None: (channels, side, side)}
    return None


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


def randomise(module: torch.nn.Module, network: cnndsl.Network, generator: torch.Generator) -> None:
    """Weights that keep activations of order one through a deep network (torch's defaults let them fade, and a
    constant output would hide a wrong graph), and batch-norm statistics measured on a random batch: far from
    their defaults (0 and 1), and matched to the activations, so the input still matters at the output."""
    import torch

    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if tensor.dim() >= 2:
                tensor.normal_(0.0, (1.0 / tensor[0].numel()) ** 0.5, generator=generator)
            elif name.endswith("weight"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            else:
                tensor.normal_(0.0, 0.1, generator=generator)
        norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.momentum = 1.0  # the running statistics become this batch's
        with torch.random.fork_rng():  # training-mode dropout and stochastic depth draw from the global RNG
            torch.manual_seed(0)
            module.train()(*[torch.randn(4, *t.shape, generator=generator) for t in network.inputs])
        module.eval()
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
