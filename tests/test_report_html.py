"""The interactive HTML report (``cnndsl summary --format html``) driven in Debian's Chromium by Playwright.

The page is written by the CLI and opened from a file:// URL with every other request blocked and recorded: it must
work with no network. What the page should show comes from the network and its summary (node ids, paths, costs),
never from the page itself. Screenshots of each state go to build/report-screens/ for a person to look at.

Without Chromium (or the playwright package) the browser tests skip with the reason, except under CI (``CI`` set),
where their absence is a failure.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SPECS

import cnndsl
from cnndsl import render
from cnndsl.analysis import summarize
from cnndsl.cli import main
from cnndsl.report import tree
from cnndsl.report_html import _json_for_script, to_html_fragment

SCREENS = ROOT / "build" / "report-screens"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


class Report:
    """One report page opened from a file, with every request other than the file itself blocked and kept."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.url = path.as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1500, "height": 1000})
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.context.route(
            "**/*",
            lambda route: route.continue_() if route.request.url == self.url else route.abort(),
        )
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.url)
        self.page.wait_for_selector(".cnndsl-report[data-ready='1']")

    def row(self, path: str) -> Any:
        return self.page.locator(f'table.layers tr[data-path="{path}"]')

    def box(self, name: str) -> Any:
        return self.page.locator(f'.diagram g.node[data-box="{name}"]')

    def lit_rows(self) -> list[str]:
        return list(self.page.eval_on_selector_all("table.layers tr.hl", "rs => rs.map(r => r.dataset.path)"))

    def lit_boxes(self) -> list[str]:
        return list(self.page.eval_on_selector_all(".diagram g.node.hl", "gs => gs.map(g => g.dataset.box)"))

    def visible_rows(self) -> list[str]:
        return list(
            self.page.eval_on_selector_all(
                "table.layers tbody tr", "rs => rs.filter(r => !r.hidden).map(r => r.dataset.path)"
            )
        )

    def shoot(self, name: str) -> None:
        SCREENS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENS / f"{name}.png"))

    def close(self) -> None:
        assert self.errors == [], self.errors
        assert [u for u in self.requests if u != self.url] == [], (
            "the page asked for something besides itself"
        )
        self.context.close()


def _write_report(tmp_path: Path, spec: str, *flags: str) -> Path:
    out = tmp_path / f"{spec}.html"
    assert main(["summary", str(SPECS / f"{spec}.cnn"), *flags, "-o", str(out)]) == 0
    return out


@pytest.fixture
def resnet18(browser: Any, tmp_path: Path) -> Iterator[Report]:
    report = Report(browser, _write_report(tmp_path, "resnet18"))
    yield report
    report.close()


@needs_dot
def test_page_holds_the_tree_the_diagram_and_nothing_external(resnet18: Report) -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    summary = summarize(net)
    rows = resnet18.page.eval_on_selector_all("table.layers tbody tr", "rs => rs.map(r => r.dataset.path)")
    assert rows == [line.path for line in tree(summary)]  # every layer, and a header per block instance
    # ResNet-18 has 69 nodes: the diagram draws every one, and its boxes are the render model's.
    boxes = resnet18.page.eval_on_selector_all(".diagram g.node", "gs => gs.map(g => g.dataset.box)")
    expected = {box.id for box in render.build(net, depth="auto").boxes()}
    assert set(boxes) == expected and len(boxes) == len(net.nodes) + len(net.outputs)
    params = resnet18.row("BasicStage.3").locator("td").nth(3).inner_text()
    assert (
        params
        == f"{sum(layer.params for layer in summary.layers if layer.path.startswith('BasicStage.3/')):,}"
    )
    resnet18.shoot("resnet18_loaded")


@needs_dot
def test_hovering_a_row_lights_its_box_and_back(resnet18: Report) -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    conv = net.node("BasicStage.2/Basic.0/conv.1")
    resnet18.row(conv.path).hover()
    assert resnet18.lit_boxes() == [f"n{conv.id}"]
    assert resnet18.lit_rows() == [conv.path]
    resnet18.shoot("resnet18_hover_row")

    add = net.node("BasicStage.1/Basic.1/add.0")
    resnet18.box(f"n{add.id}").hover()
    assert resnet18.lit_rows() == [add.path]
    assert resnet18.row(add.path).evaluate("r => r.classList.contains('hl')")
    resnet18.shoot("resnet18_hover_box")

    # A block row stands for every box inside it.
    resnet18.row("BasicStage.1/Basic.0").hover()
    inside = {f"n{n.id}" for n in net.nodes if n.path.startswith("BasicStage.1/Basic.0/")}
    assert set(resnet18.lit_boxes()) == inside
    resnet18.page.mouse.move(1, 1)
    assert resnet18.lit_boxes() == [] and resnet18.lit_rows() == []


@needs_dot
def test_sorting_by_a_column_and_back_to_the_tree(resnet18: Report) -> None:
    summary = summarize(cnndsl.load(SPECS / "resnet18.cnn"))
    heading = resnet18.page.locator("table.layers th", has_text="MACs")
    heading.click()
    shown = resnet18.visible_rows()
    assert sorted(shown) == sorted(row.path for row in summary.rows)  # block header rows leave a flat list
    macs = {row.path: row.macs for row in summary.rows}
    assert [macs[path] for path in shown] == sorted(macs.values(), reverse=True)
    assert heading.get_attribute("aria-sort") == "descending"
    resnet18.shoot("resnet18_sorted_macs")
    heading.click()
    assert [macs[path] for path in resnet18.visible_rows()] == sorted(macs.values())
    heading.click()  # third click: the tree again
    assert resnet18.visible_rows() == [line.path for line in tree(summary)]
    assert heading.get_attribute("aria-sort") is None

    resnet18.page.locator("table.layers th", has_text="Layer").click()
    assert resnet18.visible_rows() == sorted(row.path for row in summary.rows)
    resnet18.page.locator("button.tree-order").click()
    assert resnet18.visible_rows() == [line.path for line in tree(summary)]


@needs_dot
def test_collapsing_a_block_hides_its_rows_and_it_stands_in_for_them(resnet18: Report) -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    every = [line.path for line in tree(summarize(net))]
    resnet18.row("BasicStage.1").locator("button.toggle").click()
    assert resnet18.visible_rows() == [p for p in every if not p.startswith("BasicStage.1/")]
    assert resnet18.row("BasicStage.1").locator("button.toggle").get_attribute("aria-expanded") == "false"
    # Hovering a box inside the collapsed stage lights the stage's row.
    conv = net.node("BasicStage.1/Basic.1/conv.0")
    resnet18.box(f"n{conv.id}").hover()
    assert resnet18.lit_rows() == ["BasicStage.1"]
    resnet18.shoot("resnet18_collapsed_stage")
    resnet18.row("BasicStage.1").locator("button.toggle").click()
    assert resnet18.visible_rows() == every

    resnet18.page.locator("button.collapse-all").click()
    assert resnet18.visible_rows() == [p for p in every if "/" not in p]
    resnet18.shoot("resnet18_collapsed_all")
    resnet18.page.locator("button.expand-all").click()
    assert resnet18.visible_rows() == every


@needs_dot
def test_a_collapsed_diagram_box_lights_every_row_inside(browser: Any, tmp_path: Path) -> None:
    """GoogLeNet's 143 boxes are too many: the diagram draws one box per Inception, the table every layer."""
    net = cnndsl.load(SPECS / "googlenet_paper.cnn")
    diagram = render.build(net, depth="auto")
    assert diagram.depth == 1
    inception = next(
        box for box in diagram.boxes() if box.kind == "block" and box.title.startswith("Inception(")
    )
    inside = {n.path for n in net.nodes if n.id in inception.nodes}
    report = Report(browser, _write_report(tmp_path, "googlenet_paper"))
    try:
        report.box(inception.id).hover()
        assert set(report.lit_rows()) == inside and len(inside) == 14
        report.shoot("googlenet_hover_collapsed_box")
        # The costliest bar names the layer with the most MACs, and hovering it finds that row.
        top = max(summarize(net).rows, key=lambda row: row.macs)
        bar = report.page.locator(".chart g.bar").first
        assert bar.locator("text.label").text_content() == top.path
        bar.hover()
        assert report.lit_rows() == [top.path]
        report.page.locator("h2", has_text="Where the cost is").scroll_into_view_if_needed()
        report.shoot("googlenet_charts")
    finally:
        report.close()


@needs_dot
def test_resnet152_report_is_whole_and_collapsed_to_fit(browser: Any, tmp_path: Path) -> None:
    net = cnndsl.load(SPECS / "resnet152.cnn")
    report = Report(browser, _write_report(tmp_path, "resnet152", "--depth", "all"))
    try:
        assert len(report.visible_rows()) == len(tree(summarize(net)))
        boxes = report.page.eval_on_selector_all(".diagram g.node", "gs => gs.length")
        assert boxes == len(list(render.build(net, depth="auto").boxes())) <= render.AUTO_NODE_LIMIT
        assert "drawn 2 levels deep" in report.page.locator(".diagram .note").inner_text()
        report.shoot("resnet152_loaded")
    finally:
        report.close()


def test_without_dot_the_page_says_so_and_still_works(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # hides dot; the CLI runs in this process
    report = Report(browser, _write_report(tmp_path, "lenet5"))
    try:
        note = report.page.locator(".diagram .note").inner_text()
        assert "dot" in note and "apt-get install graphviz" in note
        assert report.page.locator(".diagram svg").count() == 0
        report.row("conv.1").hover()  # no boxes to light, and no error either
        assert report.lit_rows() == ["conv.1"]
        report.page.locator("table.layers th", has_text="Params").click()
        assert report.visible_rows()[0] == "linear.0"  # 48,120 params, LeNet-5's largest layer
        report.shoot("lenet5_without_dot")
    finally:
        report.close()


HOSTILE = """block B(c, note="</script><img src=x onerror=alert(1)>") {
    conv(c, 3) -> relu
}
network Evil(x: [3, 16, 16]) {
    B(4, note="<b>&amp;</b></title><script>alert(2)</script>") -> gap -> linear(2)
}
"""


def test_markup_in_a_spec_stays_text(browser: Any, tmp_path: Path) -> None:
    """String arguments reach labels, calls and tooltips: they must show as text and never run or load."""
    spec = tmp_path / "evil.cnn"
    spec.write_text(HOSTILE)
    out = tmp_path / "evil.html"
    assert main(["summary", str(spec), "-o", str(out)]) == 0
    report = Report(browser, out)
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    report.page.on("dialog", on_dialog)
    try:
        report.page.reload()
        report.page.wait_for_selector(".cnndsl-report[data-ready='1']")
        call = report.row("B.0").locator("td").nth(1).inner_text()
        assert call == "B(c=4, note=<b>&amp;</b></title><script>alert(2)</script>)"
        assert report.page.locator(".cnndsl-report img, .cnndsl-report b").count() == 0
        report.row("B.0").hover()
        report.page.locator('table.layers th[data-col="1"]').click()
        assert dialogs == []
    finally:
        report.close()


# -------------------------------------------------------------------------------- without a browser ---


def test_script_data_cannot_close_the_script_element() -> None:
    text = _json_for_script({"</script><script>alert(1)</script>": [1]})
    assert "</" not in text and "<" not in text


def test_fragment_ids_are_checked_and_two_fragments_do_not_collide() -> None:
    summary = summarize(cnndsl.load(SPECS / "lenet5.cnn"))
    with pytest.raises(ValueError, match="element_id"):
        to_html_fragment(summary, element_id='x" onload="alert(1)')
    first, second = summary._repr_html_(), summary._repr_html_()
    ids = [re.search(r'id="(cnndsl-[0-9a-f]+)"', page).group(1) for page in (first, second)]  # type: ignore[union-attr]
    assert ids[0] != ids[1]
    assert f'document.getElementById("{ids[0]}")' in first


def test_format_follows_the_output_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(SPECS / "lenet5.cnn")
    assert main(["summary", spec, "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["summary", spec, "-o", str(tmp_path / "r.json")]) == 0
    assert '"schema": "cnndsl.summary/1"' in (tmp_path / "r.json").read_text()
    assert main(["summary", spec, "-o", str(tmp_path / "r.log")]) == 0  # an unknown suffix: text, as before
    assert (tmp_path / "r.log").read_text().startswith("network LeNet5")
    code = main(["summary", spec, "--format", "json", "-o", str(tmp_path / "x.html")])
    err = capsys.readouterr().err
    assert code == 2 and "--format json does not match" in err and "html" in err
    assert not (tmp_path / "x.html").exists()
