"""Summary formatters (cnndsl.report) and the ``cnndsl summary`` command, as a user runs them.

Golden files (tests/golden/summary/) hold the text tree and Markdown summaries of lenet5, resnet18, googlenet
(torchvision's) and googlenet_paper, and
the text tree of resnet50 at depth 2; ``pytest --update-goldens`` rewrites them. The JSON schema is checked key by key
against docs/summary.md's list, the text tree for fitting 120 columns on every spec (a name is elided in the middle only
where the deepest trees cannot fit otherwise), its
"Connected to" column against the torch.fx graph, and the HTML page for being self-contained (its behaviour in a
browser: tests/test_report_html.py)."""

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
from cnndsl.report import WIDTH, connections, render, to_html, to_json, to_markdown, to_text, tree

GOLDEN_SPECS = ["lenet5", "resnet18", "googlenet", "googlenet_paper"]
SPEC_NAMES = [path.stem for path in spec_files()]


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_text_golden(name: str, golden: Callable[[str, str], None]) -> None:
    golden(f"summary/{name}.txt", to_text(summarize(cnndsl.load(SPECS / f"{name}.cnn"))))


def test_resnet50_depth2_text_golden(golden: Callable[[str, str], None]) -> None:
    golden("summary/resnet50_depth2.txt", to_text(summarize(cnndsl.load(SPECS / "resnet50.cnn"), depth=2)))


@pytest.mark.parametrize("name", ["convnext_tiny", "mobilenet_v3_large", "unet"])
def test_language_v2_text_golden(name: str, golden: Callable[[str, str], None]) -> None:
    golden(f"summary/{name}_depth2.txt", to_text(summarize(cnndsl.load(SPECS / f"{name}.cnn"), depth=2)))


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_markdown_golden(name: str, golden: Callable[[str, str], None]) -> None:
    golden(f"summary/{name}.md", to_markdown(summarize(cnndsl.load(SPECS / f"{name}.cnn"))))


def test_collapsed_text_golden(golden: Callable[[str, str], None]) -> None:
    summary = summarize(cnndsl.load(SPECS / "resnet18.cnn"), batch=32, dtype="bfloat16", depth=2)
    golden("summary/resnet18_depth2_batch32_bf16.txt", to_text(summary))


def _table_lines(text: str) -> tuple[list[str], int]:
    """The table's lines, and the column where the Op column starts."""
    lines = text.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("Layer"))
    end = next(i for i in range(heading + 2, len(lines)) if set(lines[i]) == {"-"})
    return lines[heading + 2 : end], lines[heading].index("Op")


def _elided_from(shown: str, whole: str) -> bool:
    """``shown`` is ``whole`` with its middle replaced by one "…" (the two ends kept as written)."""
    head, mark, tail = shown.partition("…")
    return bool(mark) and len(shown) < len(whole) and whole.startswith(head) and whole.endswith(tail)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_text_fits_120_columns_and_cuts_a_name_only_to_fit(name: str) -> None:
    net = cnndsl.load(SPECS / f"{name}.cnn")
    for depth in (None, 1, 2):
        summary = summarize(net, depth=depth)
        text = to_text(summary)
        assert max(len(line) for line in text.splitlines()) <= WIDTH
        lines = tree(summary)
        table, op_column = _table_lines(text)
        # Each tree line starts with glyphs and the whole name relative to its block instance (or, where the
        # deepest trees of long block names cannot share 120 columns, that name elided in the middle); a
        # wrapped label's continuation lines carry only guides there.
        starts = [i for i, line in enumerate(table) if line[:op_column].rstrip().lstrip("│ ├└─")]
        assert len(starts) == len(lines)
        elided = False
        for index, (start, line) in enumerate(zip(starts, lines, strict=True)):
            assert line.path.endswith(line.name)
            shown = table[start][:op_column].rstrip().lstrip("│ ├└─")
            if shown != line.name:
                elided = True
                assert _elided_from(shown, line.name), (shown, line.name)
                leaf = line.name.rpartition("/")[2]
                if "/" in line.name and len(leaf) + 2 <= len(shown):
                    assert shown.endswith("/" + leaf)  # a qualified name keeps its leaf whole
            # The label, its wrapped pieces joined; a piece too long for the column keeps its two ends.
            label = line.row.label if line.row is not None else (line.block.call if line.block else "")
            end = starts[index + 1] if index + 1 < len(starts) else len(table)
            joined = "".join(row[op_column:].split("  ")[0] for row in table[start:end]).replace(" ", "")
            pattern = ".+".join(re.escape(part) for part in joined.split("…"))
            assert re.fullmatch(pattern, label.replace(" ", "")), (joined, label)
        # Names are cut only in tables that could not fit otherwise, which were narrowed to exactly 120 columns.
        if elided or "…" in text:
            assert max(len(line) for line in text.splitlines()) == WIDTH
        # Every block instance the rows sit in has a header line, before its first row.
        seen: set[str] = set()
        for line in lines:
            if line.row is None:
                seen.add(line.path)
            else:
                assert set(line.row.frames) <= seen


@pytest.mark.parametrize(("name", "depth"), [("deeplabv3_resnet101", None), ("efficientnet_b4", None)])
def test_deep_trees_elide_names_in_the_middle_keeping_the_leaf(name: str, depth: int | None) -> None:
    """The deepest specs: over 120 columns before names were elided (137 and 127); now exactly 120, and a
    qualified name (``shortcut.0/conv.0``) keeps its leaf."""
    text = to_text(summarize(cnndsl.load(SPECS / f"{name}.cnn"), depth=depth))
    assert max(len(line) for line in text.splitlines()) == WIDTH
    assert "…" in text
    if name.startswith("deeplab"):
        assert re.search(r"├─ short\w*…/conv\.0 ", text)


def test_tree_view_of_resnet18() -> None:
    text = to_text(summarize(cnndsl.load(SPECS / "resnet18.cnn"), depth=3))
    table, op_column = _table_lines(text)
    assert table[4].startswith("BasicStage.0 ") and table[4][op_column:].startswith("BasicStage(c=64,")
    # An expanded instance's header leaves its sums to the lines below it, as torchinfo does.
    assert re.search(r"\[64, 56, 56\]\s+--\s+--\s+43\s+4$", table[4])
    basic = next(i for i, line in enumerate(table) if line.startswith("├─ Basic.0 "))
    assert all(line.startswith("│ ") for line in table[5:basic])  # the label's wrapped end, under a guide
    assert "stride=1)" in table[basic - 1]
    assert table[basic + 1].startswith("│  ") and "conv.0" in table[basic + 1] or "│  │" in table[basic + 1]
    assert any(line.startswith("└─ Basic.1 ") for line in table)
    assert "--: counted in the lines below." in " ".join(text.split())


def test_connected_to_names_what_feeds_each_row_as_torch_fx_does() -> None:
    """The "Connected to" column against the fx graph cnndsl lowers to: each call's arguments."""
    pytest.importorskip("torch")
    for name in ("fpn_two_outputs", "resnet18", "inception_module"):
        net = cnndsl.load(SPECS / f"{name}.cnn")
        summary = summarize(net)
        module = net.to_torch()
        path_of = {t.node: t.name for t in net.inputs} | {n.id: n.path for n in net.layers}
        expected: dict[str, list[str]] = {}
        for fx_node in module.graph.nodes:  # type: ignore[union-attr]
            if fx_node.op in ("call_module", "call_function"):
                sources = [path_of[arg.meta["cnndsl_node"]] for arg in fx_node.args if hasattr(arg, "meta")]
                expected[path_of[fx_node.meta["cnndsl_node"]]] = list(dict.fromkeys(sources))
        assert {row.path: list(row.sources) for row in summary.rows} == expected
        shown = connections(summary, tree(summary))
        assert shown, f"{name} branches, so the text shows a Connected to column"
        previous = net.inputs[0].name
        for row in summary.rows:
            if expected[row.path] != [previous]:
                cell = shown[row.path]
                # Written relative to the innermost instance holding both ends; each one a suffix of its path.
                for source, written in zip(expected[row.path], cell.split(", "), strict=True):
                    assert source.endswith(written)
            else:
                assert row.path not in shown  # the row above needs no mention
            previous = row.path
    assert "Connected to" in to_text(summarize(cnndsl.load(SPECS / "fpn_two_outputs.cnn")))


def test_no_connected_to_column_for_a_chain() -> None:
    assert "Connected to" not in to_text(summarize(cnndsl.load(SPECS / "lenet5.cnn")))
    # ResNet-18 at depth 2 is a chain of rows: the branches are inside the collapsed blocks.
    assert "Connected to" not in to_text(summarize(cnndsl.load(SPECS / "resnet18.cnn"), depth=2))
    assert "Connected to" in to_text(summarize(cnndsl.load(SPECS / "resnet18.cnn"), depth=3))


def test_summary_object_str_repr_and_html() -> None:
    net = cnndsl.load(SPECS / "resnet18.cnn")
    summary = net.summary(depth=2)
    assert str(summary) == to_text(summarize(net, depth=2))
    assert repr(summary) == "<Summary ResNet18: 11,689,512 params, 1,814,073,344 MACs, 14 rows>"
    page = summary._repr_html_()
    assert page.startswith('<div class="cnndsl-report"') and "<html" not in page
    assert (
        repr(net) == "<Network ResNet18: image [3, 224, 224] -> output [1000], 11,689,512 params, 68 layers>"
    )
    assert len(repr(net)) < 200 and str(net) == repr(net)


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
    assert page.count('<tr class="row"') == len(summary.rows)  # one table row per summary row
    assert page.count('<tr class="group"') == sum(1 for line in tree(summary) if line.row is None)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and all("src" not in attrs for attrs in scripts)  # inline only
    assert not [t for t in parser.tags if t[0] in ("link", "img", "iframe", "object", "embed")]
    for _, attrs in parser.tags:
        for name, value in attrs.items():
            if name in ("src", "href") or (name == "xlink:href" and not (value or "").startswith("#")):
                pytest.fail(f"external reference {name}={value}")
    charts = re.findall(r'<figure class="chart">.*?</figure>', page, re.S)
    assert len(charts) == 4  # rows by MACs, rows by params, top-level parts by MACs and by params
    for chart in charts:
        svg = ElementTree.fromstring(re.search(r"<svg.*?</svg>", chart, re.S).group(0))  # type: ignore[union-attr]
        texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
        assert "MACs per sample" in texts or "trainable parameters" in texts  # a titled axis
    # The costliest row by MACs is named first in the MACs chart.
    top = max(summary.rows, key=lambda row: row.macs)
    assert re.search(r'<text class="label"[^>]*>([^<]+)</text>', charts[0]).group(1) == top.path  # type: ignore[union-attr]
    assert re.search(
        r'<td>MACs</td><td class="n">1,814,073,344</td><td class="note">conv\+linear multiply-accumulates',
        page,
    )


def test_html_escapes_names() -> None:
    net = cnndsl.loads("block B(c) { conv(c, 3) }\nnetwork T(x: [3, 16, 16]) { B(4) -> relu }")
    page = to_html(summarize(net, depth=1))
    assert "B(c=4)" in page and "<script>alert" not in page


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


def test_depth_all_is_accepted_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(SPECS / "resnet18.cnn")
    code, out, _ = _run(["summary", spec, "--depth", "all"], capsys)
    assert code == 0 and out == to_text(summarize(cnndsl.load(spec)))
    code, out, _ = _run(["summary", spec, "--depth", "ALL", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["depth"] is None
    code, every, _ = _run(["explain", spec, "--depth", "all"], capsys)
    code_default, default, _ = _run(["explain", spec], capsys)
    assert code == code_default == 0 and every == default
    # explain --depth 1: the layers written in the network body only (the stem and the head of ResNet-18).
    code, out, _ = _run(["explain", spec, "--depth", "1"], capsys)
    body = [layer.path for layer in cnndsl.load(spec).layers if not layer.frames]
    assert code == 0 and "6 layer(s) explained" in out and len(body) == 6
    for path in body:
        assert path in out
    assert "BasicStage.0/Basic.0/conv.0" not in out
    code, _, err = _run(["explain", spec, "BasicStage.0", "--depth", "1"], capsys)
    assert code == 2 and "--depth" in err and "Traceback" not in err
    code, _, _ = _run(["draw", spec, "--depth", "all", "-o", str(tmp_path / "r.dot")], capsys)
    assert code == 0


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
        (["--depth", "0"], "--depth: expected a number of levels (1 or more) or 'all'"),
        (["--depth", "some"], "--depth: expected a number of levels (1 or more) or 'all'"),
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
