"""`cnndsl lsp` end to end: a pytest-lsp client drives `python -m cnndsl lsp` over stdio, as an editor would.

Shapes and counts in hovers and inlay hints are held against cnndsl's own analysis and against torchvision's
models (the oracle); diagnostics against exact ranges written out here.
"""

from __future__ import annotations

import asyncio
import re

import pytest
import pytest_lsp
from lsp_support import (
    ROOT,
    SERVER,
    TIMEOUT,
    RecordingClient,
    change,
    diagnostics_for,
    initialize,
    open_file,
    open_text,
    position,
    span_range,
    uri,
)
from lsprotocol import types

import cnndsl
from cnndsl.analysis import format_count, summarize
from cnndsl.ops import fmt_shape

pytestmark = pytest.mark.asyncio(loop_scope="module")

SPECS = ROOT / "specs"


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: RecordingClient):  # type: ignore[no-untyped-def]
    await initialize(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def ask(coroutine):  # type: ignore[no-untyped-def]
    """Every request gets an answer within the time limit: the server never hangs."""
    return await asyncio.wait_for(coroutine, TIMEOUT)


async def hover(client: RecordingClient, doc: str, at: types.Position) -> str:
    result = await ask(
        client.text_document_hover_async(types.HoverParams(types.TextDocumentIdentifier(doc), at))
    )
    assert result is not None
    assert isinstance(result.contents, types.MarkupContent)
    return result.contents.value


async def inlay_hints(client: RecordingClient, doc: str, text: str) -> dict[int, str]:
    """Line (0-based) -> the hint's label, for the whole document."""
    lines = text.split("\n")
    whole = types.Range(types.Position(0, 0), types.Position(len(lines), 0))
    hints = await ask(
        client.text_document_inlay_hint_async(types.InlayHintParams(types.TextDocumentIdentifier(doc), whole))
    )
    assert hints is not None
    out = {}
    for hint in hints:
        assert isinstance(hint.label, str)
        # The hint sits at the end of its statement's text (before any comment).
        code = lines[hint.position.line].split("#", 1)[0].rstrip()
        assert hint.position.character == len(code), (hint, code)
        out[hint.position.line] = hint.label
    return out


def _shape_text(values: tuple[int, ...] | list[int] | torch_size) -> str:  # type: ignore[name-defined]  # noqa: F821
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


# ------------------------------------------------------------------------------------------- zoo ---


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "densenet121"])
async def test_zoo_specs_open_without_diagnostics(client: RecordingClient, name: str) -> None:
    _, diagnostics = await open_file(client, SPECS / f"{name}.cnn")
    assert diagnostics == []


@pytest.mark.parametrize(
    "name", ["resnet20", "googlenet_paper", "mobilenet_v1"]
)  # they assert shapes in the network
async def test_inlay_hints_agree_with_the_checker_and_the_shape_assertions(
    client: RecordingClient, name: str
) -> None:
    path = SPECS / f"{name}.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    hints = await inlay_hints(client, doc, text)
    network = cnndsl.load(path)
    lines = text.split("\n")
    # Every `: [C, H, W]` assertion of the network body (checked by the checker) is what the hint shows.
    start = next(i for i, line in enumerate(lines) if line.startswith("network "))
    asserted = 0
    for number in range(start + 1, len(lines)):
        match = re.search(r":\s*(\[[\d, ]+\])", lines[number].split("#", 1)[0])
        if match:
            assert hints[number] == ": " + match.group(1), (number, lines[number])
            asserted += 1
    assert asserted >= 4
    # The last statement's hint is the network's output shape.
    last = max(n for n in hints if n > start)
    assert hints[last] == ": " + fmt_shape(network.outputs[0].shape)


@pytest.mark.parametrize("name", ["convnext_tiny", "mobilenet_v3_large"])
async def test_inlay_hints_on_language_v2_specs_agree_with_the_checker(
    client: RecordingClient, name: str
) -> None:
    # Their blocks use param, let, `* n as i` and conditions (specs/lib/convnext.cnn, mobilenet_v3.cnn).
    path = SPECS / f"{name}.cnn"
    text = path.read_text(encoding="utf-8")
    doc, diagnostics = await open_file(client, path)
    assert diagnostics == []
    hints = await inlay_hints(client, doc, text)
    network = cnndsl.load(path)
    # The checker's shape for each statement of the network body: the last node it made for the call on that line.
    expected: dict[int, str] = {}
    for node in network.layers:
        call = node.frames[0].span if node.frames else node.span
        if call.file == str(path):
            expected[call.line - 1] = ": " + fmt_shape(node.shape)
    assert expected and hints == expected
    assert hints[max(hints)] == ": " + fmt_shape(network.outputs[0].shape)
    # Hover on the last statement's block call: its instance ends in the network's output.
    last = text.split("\n")[max(hints)].strip()
    shown = await hover(client, doc, position(text, last, 1))
    assert "-> " + fmt_shape(network.outputs[0].shape) in shown


@pytest.mark.slow  # imports torch / moves megabytes through the protocol
async def test_inlay_hint_shapes_match_torchvision_resnet18(client: RecordingClient) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    path = SPECS / "resnet18.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    hints = await inlay_hints(client, doc, text)
    reference = torchvision.models.resnet18().eval()
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("maxpool", "layer1", "layer2", "layer3", "layer4", "fc"):
        getattr(reference, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
    with torch.no_grad():
        reference(torch.zeros(1, 3, 224, 224))
    line = {n: position(text, n).line for n in ("maxpool(3", "BasicStage(64", "BasicStage(128")}
    line |= {"BasicStage(256": position(text, "BasicStage(256").line, "linear": position(text, "linear").line}
    assert hints[line["maxpool(3"]] == ": " + _shape_text(shapes["maxpool"])
    assert hints[line["BasicStage(64"]] == ": " + _shape_text(shapes["layer1"])
    assert hints[line["BasicStage(128"]] == ": " + _shape_text(shapes["layer2"])
    assert hints[line["BasicStage(256"]] == ": " + _shape_text(shapes["layer3"])
    assert hints[line["linear"]] == ": " + _shape_text(shapes["fc"])


@pytest.mark.slow  # imports torch / moves megabytes through the protocol
async def test_hover_on_an_op_shows_arguments_shapes_costs_and_the_formula(client: RecordingClient) -> None:
    torch = pytest.importorskip("torch")
    path = SPECS / "resnet18.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    shown = await hover(client, doc, position(text, "conv(64, 7", 1))
    conv = torch.nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    out = conv(torch.zeros(1, 3, 224, 224))
    assert "[3, 224, 224] -> " + _shape_text(out.shape[1:]) in shown
    params = sum(p.numel() for p in conv.parameters())
    macs = out.numel() * 7 * 7 * 3  # each output element: kh·kw·Cin multiply-adds
    assert f"params {params:,}" in shown
    assert f"MACs {macs:,}" in shown
    assert "receptive field 7" in shown
    assert "channels=64, kernel=[7, 7], stride=[2, 2], padding=[3, 3]" in shown
    # explain's formula with the numbers filled in
    assert "floor((224 + 2·3 − 1·(7−1) − 1)/2) + 1 = floor(223/2) + 1 = 112" in shown


@pytest.mark.slow  # imports torch / moves megabytes through the protocol
async def test_hover_on_a_block_call_shows_the_instance(client: RecordingClient) -> None:
    torchvision = pytest.importorskip("torchvision")
    path = SPECS / "resnet18.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    shown = await hover(client, doc, position(text, "BasicStage(128", 3))
    assert "block BasicStage(c, n, stride=2)" in shown
    assert "One stage (torchvision's layer1..layer4)" in shown  # its doc comment
    assert "`BasicStage(c=128, n=2, stride=2)`" in shown
    assert "[64, 56, 56] -> [128, 28, 28]" in shown
    layer2 = torchvision.models.resnet18().layer2
    assert f"params {sum(p.numel() for p in layer2.parameters()):,}" in shown
    network = cnndsl.load(path)
    summary = summarize(network, depth=1)
    row = next(r for r in summary.rows if r.path == "BasicStage.1")
    assert f"MACs {format_count(row.macs)}" in shown


async def test_hover_on_a_block_definition_shows_signature_and_doc(client: RecordingClient) -> None:
    path = SPECS / "googlenet_paper.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    shown = await hover(client, doc, position(text, "block Inception", 7))
    assert "block Inception(c1, r3, c3, r5, c5, pp)" in shown
    assert "Table 1 columns: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj." in shown


async def test_hover_on_a_named_tensor_shows_its_shape(client: RecordingClient) -> None:
    path = SPECS / "fpn_two_outputs.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    assert "tensor `p4`: [32, 16, 16]" in await hover(client, doc, position(text, "p4 -> upsample", 0))
    assert "tensor `image`: [3, 64, 64]" in await hover(client, doc, position(text, "image"))


async def test_hover_outside_any_name_is_empty(client: RecordingClient) -> None:
    doc, _ = await open_file(client, SPECS / "resnet18.cnn")
    result = await ask(
        client.text_document_hover_async(
            types.HoverParams(types.TextDocumentIdentifier(doc), types.Position(4, 0))  # a blank line
        )
    )
    assert result is None


async def test_inlay_hints_can_show_params_and_macs(client: RecordingClient) -> None:
    path = SPECS / "resnet18.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams({"cnndsl": {"inlayHints": {"costs": True}}})
    )
    try:
        hints = await inlay_hints(client, doc, text)
    finally:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams({"cnndsl": {"inlayHints": {"costs": False}}})
        )
    # conv 7x7 (9,408) + bn (128): 9.54K params; MACs 118,013,952 -> 118M
    assert hints[position(text, "conv(64, 7").line] == ": [64, 112, 112]  9.54K params, 118M MACs"


# ------------------------------------------------------------------------------------ navigation ---


async def test_definition_of_a_block_and_of_an_import(client: RecordingClient) -> None:
    path = SPECS / "resnet18.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    library = SPECS / "lib" / "resnet.cnn"
    found = await ask(
        client.text_document_definition_async(
            types.DefinitionParams(types.TextDocumentIdentifier(doc), position(text, "BasicStage(64", 2))
        )
    )
    assert isinstance(found, types.Location)
    assert found.uri == uri(library)
    library_text = library.read_text(encoding="utf-8")
    assert found.range.start == position(library_text, "BasicStage", 0)
    found = await ask(
        client.text_document_definition_async(
            types.DefinitionParams(types.TextDocumentIdentifier(doc), position(text, "lib/resnet", 1))
        )
    )
    assert isinstance(found, types.Location)
    assert found.uri == uri(library)


TENSORS = """\
block Twice(c) {
    conv(c, 3, padding=same) -> relu
    conv(c, 3, padding=same)
}

network Net(image: [3, 32, 32]) {
    stem = conv(16, 3, padding=same) -> relu
    left = stem -> Twice(16)
    right = stem -> conv(16, 1)
    add(left | right) -> conv(stem.c, 1)
}
"""


async def test_definition_references_and_rename_of_a_named_tensor(client: RecordingClient) -> None:
    doc = "untitled:tensors.cnn"
    assert await open_text(client, doc, TENSORS) == []
    at = position(TENSORS, "stem -> conv")
    found = await ask(
        client.text_document_definition_async(types.DefinitionParams(types.TextDocumentIdentifier(doc), at))
    )
    assert isinstance(found, types.Location)
    assert found.range == span_range(7, 5, 7, 9)
    refs = await ask(
        client.text_document_references_async(
            types.ReferenceParams(
                text_document=types.TextDocumentIdentifier(doc),
                position=at,
                context=types.ReferenceContext(include_declaration=True),
            )
        )
    )
    assert refs is not None
    assert sorted((r.range.start.line, r.range.start.character) for r in refs) == [
        (6, 4),
        (7, 11),
        (8, 12),
        (9, 30),
    ]
    edit = await ask(
        client.text_document_rename_async(types.RenameParams(types.TextDocumentIdentifier(doc), at, "trunk"))
    )
    assert edit is not None and edit.changes is not None
    renamed = _apply(TENSORS, edit.changes[doc])
    assert renamed.count("trunk") == 4 and "stem" not in renamed
    network = cnndsl.loads(renamed)  # still the same network
    assert network.outputs[0].shape == cnndsl.loads(TENSORS).outputs[0].shape


async def test_references_and_rename_of_a_block(client: RecordingClient) -> None:
    doc = "untitled:blocks.cnn"
    await open_text(client, doc, TENSORS)
    at = position(TENSORS, "Twice(16)", 1)
    refs = await ask(
        client.text_document_references_async(
            types.ReferenceParams(
                text_document=types.TextDocumentIdentifier(doc),
                position=at,
                context=types.ReferenceContext(include_declaration=True),
            )
        )
    )
    assert refs is not None
    assert sorted((r.range.start.line, r.range.start.character) for r in refs) == [(0, 6), (7, 19)]
    edit = await ask(
        client.text_document_rename_async(types.RenameParams(types.TextDocumentIdentifier(doc), at, "Pair"))
    )
    assert edit is not None and edit.changes is not None
    renamed = _apply(TENSORS, edit.changes[doc])
    assert "block Pair(c)" in renamed and "stem -> Pair(16)" in renamed
    with pytest.raises(Exception, match="is an op"):
        await ask(
            client.text_document_rename_async(
                types.RenameParams(types.TextDocumentIdentifier(doc), at, "conv")
            )
        )


def _apply(text: str, edits: list[types.TextEdit]) -> str:
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        start = offsets[edit.range.start.line] + edit.range.start.character
        end = offsets[edit.range.end.line] + edit.range.end.character
        text = text[:start] + edit.new_text + text[end:]
    return text


async def test_document_symbols_and_folding(client: RecordingClient) -> None:
    path = SPECS / "googlenet_paper.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    symbols = await ask(
        client.text_document_document_symbol_async(
            types.DocumentSymbolParams(types.TextDocumentIdentifier(doc))
        )
    )
    assert symbols is not None
    names = [(s.name, s.kind) for s in symbols if isinstance(s, types.DocumentSymbol)]
    assert names == [("Inception", types.SymbolKind.Function), ("GoogLeNet", types.SymbolKind.Class)]
    network = next(s for s in symbols if s.name == "GoogLeNet")
    assert isinstance(network, types.DocumentSymbol)
    assert network.range.start.line == position(text, "network GoogLeNet").line
    assert network.range.end.line == len(text.rstrip("\n").split("\n")) - 1
    folds = await ask(
        client.text_document_folding_range_async(types.FoldingRangeParams(types.TextDocumentIdentifier(doc)))
    )
    assert folds is not None
    spans = {(f.start_line, f.end_line, f.kind) for f in folds}
    assert (0, 4, types.FoldingRangeKind.Comment) in spans  # the header comment
    assert (network.range.start.line, network.range.end.line, types.FoldingRangeKind.Region) in spans
    block = position(text, "block Inception").line
    assert (block, block + 7, types.FoldingRangeKind.Region) in spans


# ------------------------------------------------------------------------------------ completion ---


async def _complete(client: RecordingClient, doc: str, at: types.Position) -> dict[str, types.CompletionItem]:
    result = await ask(
        client.text_document_completion_async(types.CompletionParams(types.TextDocumentIdentifier(doc), at))
    )
    assert isinstance(result, list)
    return {item.label: item for item in result}


async def test_completion_of_ops_blocks_tensors_and_parameters(client: RecordingClient) -> None:
    text = TENSORS.replace("    add(left", "    \n    add(left")
    doc = "untitled:complete.cnn"
    await open_text(client, doc, text)
    empty_line = position(text, "    \n", 4)
    items = await _complete(client, doc, empty_line)
    assert {"conv", "maxpool", "add", "Twice", "stem", "left", "right"} <= set(items)
    assert items["conv"].kind == types.CompletionItemKind.Function
    assert items["Twice"].kind == types.CompletionItemKind.Class
    assert items["stem"].kind == types.CompletionItemKind.Variable
    # Inside conv( ... ): its parameters with their defaults (those already given are left out).
    inside = await _complete(client, doc, position(text, "padding=same) -> relu", len("padding=same")))
    assert inside["stride"].detail == "default 1"
    assert inside["stride"].insert_text == "stride="
    assert inside["kernel"].detail == "required"
    assert "padding" not in inside
    # Inside a block call: the block's parameters; a block's own parameter as a value.
    inside_block = await _complete(client, doc, position(text, "Twice(16)", 6))
    assert "c" in inside_block and inside_block["c"].detail == "required"
    in_block_body = await _complete(client, doc, position(text, "c, 3, padding=same) -> relu", 0))
    assert "c" in in_block_body


async def test_completion_of_defaults_keys_and_dimensions(client: RecordingClient) -> None:
    text = "defaults \ndefaults conv(\nnetwork N(image: [3, 8, 8]) {\n    x = conv(4, 3)\n    conv(x.\n}\n"
    doc = "untitled:defaults.cnn"
    await open_text(client, doc, text)
    ops_items = await _complete(client, doc, types.Position(0, 9))
    assert "conv" in ops_items and "add" not in ops_items  # merges take no defaults
    keys = await _complete(client, doc, types.Position(1, 14))
    assert {"stride", "padding", "bias"} <= set(keys)
    dims = await _complete(client, doc, types.Position(4, 11))
    assert set(dims) == {"c", "h", "w"}


async def test_signature_help_inside_a_call(client: RecordingClient) -> None:
    text = "network N(image: [3, 8, 8]) {\n    conv(4, 3, padding=\n}\n"
    doc = "untitled:signature.cnn"
    await open_text(client, doc, text)
    for column, active in ((9, 0), (12, 1), (23, 3)):
        result = await ask(
            client.text_document_signature_help_async(
                types.SignatureHelpParams(types.TextDocumentIdentifier(doc), types.Position(1, column))
            )
        )
        assert result is not None
        assert result.signatures[0].label.startswith("conv(channels, kernel, stride=1, padding=0")
        assert result.active_parameter == active, column


# ------------------------------------------------------------------------------- broken specs ---


async def test_several_syntax_errors_at_once_with_exact_ranges_and_codes(client: RecordingClient) -> None:
    path = ROOT / "tests" / "errors" / "syntax_several_errors.cnn"
    _, diagnostics = await open_file(client, path)
    got = [(d.range, d.code, d.severity) for d in diagnostics]
    error = types.DiagnosticSeverity.Error
    assert got == [
        (span_range(3, 16, 3, 18), "syntax-missing-arrow", error),
        (span_range(6, 18, 6, 25), "syntax-shape", error),
        (span_range(7, 16, 7, 17), "syntax-semicolon", error),
        (span_range(8, 14, 8, 16), "syntax", error),
        (span_range(9, 16, 9, 18), "syntax-dangling-arrow", error),
    ]
    assert all(d.source == "cnndsl" for d in diagnostics)


async def test_hover_and_symbols_keep_working_after_a_syntax_error(client: RecordingClient) -> None:
    text = "network N(image: [3, 32, 32]) {\n    conv(8, 3) relu\n    conv(16, 3, padding=1)\n    gap\n}\n"
    doc = "untitled:recover.cnn"
    diagnostics = await open_text(client, doc, text)
    assert [d.range for d in diagnostics] == [span_range(2, 16, 2, 20)]
    # The broken line is left out; the next statement still elaborates, from the input.
    shown = await hover(client, doc, position(text, "conv(16", 1))
    assert "[3, 32, 32] -> [16, 32, 32]" in shown
    symbols = await ask(
        client.text_document_document_symbol_async(
            types.DocumentSymbolParams(types.TextDocumentIdentifier(doc))
        )
    )
    assert symbols is not None and [s.name for s in symbols] == ["N"]


async def test_errors_in_a_nested_block_carry_the_instantiation_chain(client: RecordingClient) -> None:
    path = ROOT / "tests" / "errors" / "error_in_nested_block.cnn"
    text = path.read_text(encoding="utf-8")
    doc, diagnostics = await open_file(client, path)
    assert len(diagnostics) == 1
    (diagnostic,) = diagnostics
    assert diagnostic.range == types.Range(position(text, "groups=3", 7), position(text, "groups=3", 8))
    assert diagnostic.message == "groups=3 does not divide the 16 input channels"
    assert diagnostic.related_information is not None
    chain = [(r.message, r.location.range.start) for r in diagnostic.related_information]
    assert chain == [
        ("in Unit(c=16, stride=2)", position(text, "Unit(c, stride=2)")),
        ("in Stage(c=16, n=2)", position(text, "Stage(16, 2)")),
    ]
    assert all(r.location.uri == doc for r in diagnostic.related_information)


async def test_statements_independent_of_a_shape_error_are_still_checked(client: RecordingClient) -> None:
    path = ROOT / "tests" / "errors" / "multiple_errors.cnn"
    text = path.read_text(encoding="utf-8")
    _, diagnostics = await open_file(client, path)
    starts = [d.range.start for d in diagnostics]
    assert starts == [
        position(text, "stride=0", 7),
        position(text, "linear(4)"),
        position(text, "dropout(2)", 8),
    ]


async def test_a_did_you_mean_is_a_one_click_fix(client: RecordingClient) -> None:
    text = "network N(image: [3, 32, 32]) {\n    conv(8, 3, strid=2) -> rleu\n}\n"
    doc = "untitled:typo.cnn"
    diagnostics = await open_text(client, doc, text)
    assert [d.code for d in diagnostics] == ["unknown-parameter"]  # rleu comes after: poisoned, not reported
    actions = await ask(
        client.text_document_code_action_async(
            types.CodeActionParams(
                types.TextDocumentIdentifier(doc),
                diagnostics[0].range,
                types.CodeActionContext(diagnostics),
            )
        )
    )
    assert actions is not None and len(actions) == 1
    action = actions[0]
    assert isinstance(action, types.CodeAction)
    assert action.kind == types.CodeActionKind.QuickFix and action.title == "Replace with 'stride'"
    assert action.edit is not None and action.edit.changes is not None
    fixed = _apply(text, action.edit.changes[doc])
    await change(client, doc, fixed, 2)
    diagnostics = await diagnostics_for(client, doc, 2)
    assert [d.code for d in diagnostics] == ["unknown-name"]
    assert diagnostics[0].range == span_range(2, 29, 2, 33)
    actions = await ask(
        client.text_document_code_action_async(
            types.CodeActionParams(
                types.TextDocumentIdentifier(doc), diagnostics[0].range, types.CodeActionContext(diagnostics)
            )
        )
    )
    assert actions is not None
    fixed = _apply(fixed, actions[0].edit.changes[doc])  # type: ignore[union-attr]
    assert "-> relu" in fixed
    await change(client, doc, fixed, 3)
    assert await diagnostics_for(client, doc, 3) == []


async def test_a_misspelt_choice_is_a_one_click_fix(client: RecordingClient) -> None:
    text = "network N(image: [3, 32, 32]) {\n    upsample(2, mode=bilinar)\n}\n"
    doc = "untitled:choice.cnn"
    diagnostics = await open_text(client, doc, text)
    assert [(d.code, d.range) for d in diagnostics] == [("op-choice", span_range(2, 22, 2, 29))]
    actions = await ask(
        client.text_document_code_action_async(
            types.CodeActionParams(
                types.TextDocumentIdentifier(doc), diagnostics[0].range, types.CodeActionContext(diagnostics)
            )
        )
    )
    assert actions is not None and [a.title for a in actions] == ["Replace with 'bilinear'"]
    fixed = _apply(text, actions[0].edit.changes[doc])  # type: ignore[union-attr]
    assert "upsample(2, mode=bilinear)" in fixed
    assert cnndsl.loads(fixed).outputs[0].shape == (3, 64, 64)


async def test_a_syntax_fix_is_offered_too(client: RecordingClient) -> None:
    text = "network N(image: 3x32x32) {\n    conv(8, 3)\n}\n"
    doc = "untitled:shape.cnn"
    diagnostics = await open_text(client, doc, text)
    actions = await ask(
        client.text_document_code_action_async(
            types.CodeActionParams(
                types.TextDocumentIdentifier(doc), diagnostics[0].range, types.CodeActionContext(diagnostics)
            )
        )
    )
    assert actions is not None
    fixed = _apply(text, actions[0].edit.changes[doc])  # type: ignore[union-attr]
    assert fixed.startswith("network N(image: [3, 32, 32]) {")
    assert cnndsl.loads(fixed).outputs[0].shape == (8, 30, 30)


async def test_diagnostics_follow_changes(client: RecordingClient) -> None:
    doc = "untitled:changes.cnn"
    good = "network N(image: [3, 32, 32]) {\n    conv(8, 3)\n}\n"
    assert await open_text(client, doc, good) == []
    await change(client, doc, good.replace("conv(8, 3)", "conv(8, 33)"), 2)
    diagnostics = await diagnostics_for(client, doc, 2)
    assert [(d.code, d.range) for d in diagnostics] == [
        ("op-output-size", span_range(2, 13, 2, 15))
    ]  # the kernel
    await change(client, doc, good.replace("conv(8, 3)", "conv(8, 3) : [8, 32, 32]"), 3)
    diagnostics = await diagnostics_for(client, doc, 3)
    assert [(d.code, d.range, d.message) for d in diagnostics] == [
        (
            "shape-assertion",
            span_range(2, 18, 2, 29),
            "shape assertion failed: expected [8, 32, 32], got [8, 30, 30]",
        )
    ]
    await change(client, doc, good, 4)
    assert await diagnostics_for(client, doc, 4) == []


async def test_formatting_returns_the_formatters_text(client: RecordingClient) -> None:
    fmt = pytest.importorskip("cnndsl.fmt")
    text = "network N(image:[3,32,32]){\n  conv(8,3)->relu\n}\n"
    doc = "untitled:format.cnn"
    await open_text(client, doc, text)
    edits = await ask(
        client.text_document_formatting_async(
            types.DocumentFormattingParams(
                types.TextDocumentIdentifier(doc), types.FormattingOptions(tab_size=4, insert_spaces=True)
            )
        )
    )
    assert edits is not None
    assert _apply(text, edits) == fmt.format_source(text)
    assert _apply(text, edits) != text


@pytest.mark.slow  # imports torch / moves megabytes through the protocol
async def test_hover_on_a_densenet_block_matches_torchvision(client: RecordingClient) -> None:
    torchvision = pytest.importorskip("torchvision")
    path = SPECS / "densenet121.cnn"
    text = path.read_text(encoding="utf-8")
    doc, _ = await open_file(client, path)
    shown = await hover(client, doc, position(text, "DenseBlock(12)", 2))
    reference = torchvision.models.densenet121().features
    assert "[128, 28, 28] -> [512, 28, 28]" in shown  # 128 + 12 * 32 channels
    assert f"params {sum(p.numel() for p in reference.denseblock2.parameters()):,}" in shown
    assert "`DenseBlock(n=12, growth=32)`" in shown
    # The block lives in lib/densenet.cnn now; the statement's hint is after the transition that halves all.
    hints = await inlay_hints(client, doc, text)
    assert hints[position(text, "DenseBlock(12)").line] == ": [256, 14, 14]"
