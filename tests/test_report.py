"""Summary formatters (cnndsl.report) and the ``cnndsl summary`` command, as a user runs them.

Golden files (tests/golden/summary/) hold the text and Markdown summaries of lenet5, resnet18 and googlenet_paper;
``pytest --update-goldens`` rewrites them. The JSON schema is checked key by key against docs/summary.md's list,
the HTML page for being self-contained, and the text table for fitting 120 columns on every spec.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest
from conftest import ROOT, SPECS, spec_files

import cnndsl
from cnndsl.analysis import summarize
from cnndsl.cli import main
from cnndsl.report import WIDTH, render, to_html, to_json, to_markdown, to_text

GOLDEN_SPECS = ["lenet5", "resnet18", "googlenet_paper"]
SPEC_NAMES = [path.stem for path in spec_files()]


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_text_golden(name: str, golden: Callable[[str, str], None]) -> None:
    golden(f"summary/{name}.txt", to_text(summarize(cnndsl.load(SPECS / f"{name}.cnn"))))


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_markdown_golden(name: str, golden: Callable[[str, str], None]) -> None:
    golden(f"summary/{name}.md", to_markdown(summarize(cnndsl.load(SPECS / f"{name}.cnn"))))


def test_collapsed_text_golden(golden: Callable[[str, str], None]) -> None:
    summary = summarize(cnndsl.load(SPECS / "resnet18.cnn"), batch=32, dtype="bfloat16", depth=2)
    golden("summary/resnet18_depth2_batch32_bf16.txt", to_text(summary))


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_text_fits_120_columns(name: str) -> None:
    net = cnndsl.load(SPECS / f"{name}.cnn")
    for depth in (None, 1, 2):
        summary = summarize(net, depth=depth)
        text = to_text(summary)
        assert max(len(line) for line in text.splitlines()) <= WIDTH
        # One table line per row, in row order, each starting with the row's path (or its clipped form).
        lines = text.splitlines()
        table = lines[next(i for i, line in enumerate(lines) if line.startswith("Layer")) + 2 :]
        for row, line in zip(summary.rows, table, strict=False):
            head = line.split("  ")[0]
            assert head == row.path or "…" in head


def test_every_total_names_its_convention() -> None:
    text = to_text(summarize(cnndsl.load(SPECS / "resnet18.cnn")))
    assert re.search(r"^MACs\s+1,814,073,344\s+conv\+linear multiply-accumulates, bias excluded", text, re.M)
    assert re.search(r"^FLOPs\s+[\d,]+\s+FLOPs = 2·MACs \+ elementwise", text, re.M)
    assert re.search(r"^Params\s+11,689,512\s+trainable", text, re.M)
    assert re.search(r"^Non-trainable\s+9,620\s+buffers: batchnorm", text, re.M)
    markdown = to_markdown(summarize(cnndsl.load(SPECS / "resnet18.cnn")))
    assert (
        "| MACs | 1,814,073,344 | conv+linear multiply-accumulates, bias excluded, per sample |" in markdown
    )


REQUIRED_KEYS = {
    "network",
    "inputs",
    "outputs",
    "total_params",
    "trainable_params",
    "non_trainable_params",
    "macs",
    "flops",
    "param_bytes",
    "activation_bytes",
    "receptive_field",
    "layers",
}
LAYER_KEYS = {"path", "op", "output_shape", "params", "macs", "flops", "receptive_field"}


def _documented_keys() -> set[str]:
    """Keys the schema table of docs/summary.md lists (rows like ``| `name` | type | meaning |``)."""
    return set(re.findall(r"^\| `([a-z_.]+)` \|", (ROOT / "docs" / "summary.md").read_text(), re.M))


def test_json_schema() -> None:
    net = cnndsl.load(SPECS / "googlenet_paper.cnn")
    summary = summarize(net, batch=4, dtype="float16", depth=1)
    data = json.loads(to_json(summary))
    assert set(data) >= REQUIRED_KEYS
    assert data["network"] == "GoogLeNet"
    assert data["inputs"] == {"image": [3, 224, 224]}
    assert data["outputs"] == {"output": [1000]}
    assert data["total_params"] == data["trainable_params"] + data["non_trainable_params"]
    assert data["trainable_params"] == summary.totals.trainable_params
    assert data["macs"] == summary.totals.macs and data["flops"] == summary.totals.flops
    assert data["activation_bytes"] == summary.totals.activation_bytes
    assert data["param_bytes"] == data["trainable_params"] * 2
    for layer in data["layers"]:
        assert set(layer) >= LAYER_KEYS
        assert set(layer["receptive_field"]) == {"size", "jump", "start", "global"}
    for key in ("params", "macs", "flops", "activation_bytes"):
        assert (
            sum(layer[key] for layer in data["layers"])
            == data[key if key != "params" else "trainable_params"]
        )
    assert data["receptive_field"]["feature_map"]["path"] == "avgpool.0"
    assert data["receptive_field"]["outputs"]["output"]["global"] is True
    documented = _documented_keys()
    top = {k for k in data if k not in ("conventions",)} | {"conventions"}
    assert top <= documented, f"undocumented keys: {sorted(top - documented)}"
    assert {f"layers.{k}" for k in data["layers"][0]} <= documented


def test_json_numbers_are_exact_integers() -> None:
    data = json.loads(to_json(summarize(cnndsl.load(SPECS / "vgg16.cnn"))))
    assert isinstance(data["macs"], int) and data["macs"] == 15_470_264_320
    assert all(isinstance(v, int) for v in data["receptive_field"]["feature_map"]["size"])


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained() -> None:
    summary = summarize(cnndsl.load(SPECS / "resnet18.cnn"), depth=2)
    page = to_html(summary)
    parser = _Collector()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    assert tags.count("svg") == 2  # MACs and params charts
    assert tags.count("rect") == 2 * len(summary.rows)  # one bar per row in each chart
    assert page.count("<td><code>") == len(summary.rows)  # one table row per summary row
    assert not [t for t in parser.tags if t[0] in ("script", "link", "img", "iframe")]
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        bars = ElementTree.fromstring(svg).findall("{http://www.w3.org/2000/svg}rect")  # well-formed SVG
        assert max(float(bar.get("height", "0")) for bar in bars) > 0
    for _, attrs in parser.tags:
        for name, value in attrs.items():
            if name in ("src", "href"):
                pytest.fail(f"external reference {name}={value}")
    assert re.search(
        r"<td>MACs</td><td class=\"n\">1,814,073,344</td><td>conv\+linear multiply-accumulates", page
    )


def test_html_escapes_names() -> None:
    net = cnndsl.loads("block B(c) { conv(c, 3) }\nnetwork T(x: [3, 16, 16]) { B(4) -> relu }")
    page = to_html(summarize(net, depth=1))
    assert "B(c=4)" in page and "<script" not in page


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(summarize(cnndsl.loads("network T(x: [3, 8, 8]) { conv(4, 3) }")), "pdf")


# --------------------------------------------------------------------------------------------- CLI ---


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_formats_and_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(SPECS / "lenet5.cnn")
    code, out, _ = _run(["summary", spec], capsys)
    assert code == 0 and out == to_text(summarize(cnndsl.load(spec)))
    code, out, _ = _run(["summary", spec, "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["macs"] == 416_520
    target = tmp_path / "out" / "lenet.html"
    code, out, _ = _run(["summary", spec, "--format", "html", "-o", str(target)], capsys)
    assert code == 0 and out == ""
    assert target.read_text().startswith("<!DOCTYPE html>")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like a plain open(), not a private temp file
    code, out, _ = _run(
        ["summary", spec, "--format", "md", "--depth", "1", "--batch", "2", "--dtype", "bfloat16"], capsys
    )
    assert code == 0 and "batch 2, bfloat16" in out


def test_cli_input_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tiny.cnn"
    spec.write_text(
        "network Tiny(image: [3, 32, 32]) { conv(8, 3, padding=same) -> relu -> gap -> linear(10) }\n"
    )
    code, small, _ = _run(["summary", str(spec), "--format", "json"], capsys)
    code, out, _ = _run(["summary", str(spec), "--input", "3x64x64", "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["inputs"] == {"image": [3, 64, 64]}
    assert data["trainable_params"] == json.loads(small)["trainable_params"]  # gap: the head ignores the size
    conv_macs = [layer["macs"] for layer in data["layers"] if layer["op"] == "conv"][0]
    assert conv_macs == 64 * 64 * 8 * 3 * 3 * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depth", "0"], "--depth: expected a positive integer"),
        (["--batch", "x"], "--batch: expected a positive integer"),
        (["--dtype", "float64"], "invalid choice"),
        (["--format", "pdf"], "invalid choice"),
    ],
)
def test_cli_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", str(SPECS / "lenet5.cnn"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_missing_file_and_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["summary", str(tmp_path / "nope.cnn")], capsys)
    assert code == 2 and "cannot read" in err and "Traceback" not in err
    bad = tmp_path / "bad.cnn"
    bad.write_text("network T(x: [3, 8, 8]) { linear(4) }\n")
    code, _, err = _run(["summary", str(bad)], capsys)
    assert code == 1 and "flatten" in err


def test_cli_as_a_user_runs_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnndsl", "summary", "specs/googlenet_paper.cnn", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trainable_params"] == 6_998_552


def test_docs_list_every_ops_flops_rule() -> None:
    from cnndsl import ops

    doc = (ROOT / "docs" / "summary.md").read_text()
    for name, op in ops.REGISTRY.items():
        assert f"| `{name}` | {op.family} | {op.flops_rule} |" in doc, (
            f"docs/summary.md: FLOPs rule of {name}"
        )
