"""`cnndsl lsp` under hostile use: it never dies and never hangs (every wait here has a time limit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
    uri,
)
from lsprotocol import types

pytestmark = pytest.mark.asyncio(loop_scope="module")

SMALL = "network N(image: [3, 32, 32]) {\n    conv(8, 3) -> relu\n}\n"


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: RecordingClient):  # type: ignore[no-untyped-def]
    await initialize(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def ask(coroutine):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(coroutine, TIMEOUT)


async def still_alive(client: RecordingClient) -> None:
    """The server still checks a document and answers a hover with a shape."""
    doc = "untitled:alive.cnn"
    assert await open_text(client, doc, SMALL) == []
    result = await ask(
        client.text_document_hover_async(
            types.HoverParams(types.TextDocumentIdentifier(doc), types.Position(1, 6))
        )
    )
    assert result is not None and "[3, 32, 32] -> [8, 30, 30]" in str(result.contents)


# ------------------------------------------------------------------------------------ requests ---


async def test_unknown_methods(client: RecordingClient) -> None:
    with pytest.raises(Exception, match="(?i)method not found"):
        await ask(client.protocol.send_request_async("cnndsl/noSuchMethod", {"x": 1}))
    client.protocol.notify("cnndsl/noSuchNotification", {"y": 2})
    client.protocol.notify("$/noSuchNotification", None)
    await still_alive(client)


async def test_positions_outside_the_document(client: RecordingClient) -> None:
    doc = "untitled:outside.cnn"
    await open_text(client, doc, SMALL)
    identifier = types.TextDocumentIdentifier(doc)
    for where in (types.Position(10_000, 0), types.Position(2**31 - 1, 2**31 - 1)):
        assert await ask(client.text_document_hover_async(types.HoverParams(identifier, where))) is None
        assert (
            await ask(client.text_document_definition_async(types.DefinitionParams(identifier, where)))
            is None
        )
        assert (
            await ask(
                client.text_document_references_async(
                    types.ReferenceParams(
                        text_document=identifier, position=where, context=types.ReferenceContext(True)
                    )
                )
            )
            is None
        )
        assert (
            await ask(client.text_document_completion_async(types.CompletionParams(identifier, where)))
            is None
        )
        assert (
            await ask(client.text_document_signature_help_async(types.SignatureHelpParams(identifier, where)))
            is None
        )
        assert (
            await ask(client.text_document_prepare_rename_async(types.PrepareRenameParams(identifier, where)))
            is None
        )
        assert (
            await ask(client.text_document_rename_async(types.RenameParams(identifier, where, "x"))) is None
        )
    # Past the end of a line means its end, as the protocol says: the hover of the name that ends the line.
    at_end = await ask(client.text_document_hover_async(types.HoverParams(identifier, types.Position(1, 22))))
    past_end = await ask(
        client.text_document_hover_async(types.HoverParams(identifier, types.Position(1, 10_000)))
    )
    assert at_end is not None and past_end == at_end
    far = types.Range(types.Position(5_000, 0), types.Position(9_000, 0))
    assert (
        list(await ask(client.text_document_inlay_hint_async(types.InlayHintParams(identifier, far)))) == []
    )
    # A document that was never opened.
    unknown = types.TextDocumentIdentifier("untitled:never-opened.cnn")
    assert (
        await ask(client.text_document_hover_async(types.HoverParams(unknown, types.Position(0, 0)))) is None
    )
    await still_alive(client)


@pytest.mark.slow  # imports torch / moves megabytes through the protocol
async def test_a_5_mb_document(client: RecordingClient) -> None:
    line = "    conv(8, 3, padding=same) -> relu   # filler\n"
    text = "network Big(image: [3, 32, 32]) {\n" + line * (5_000_000 // len(line)) + "}\n"
    assert len(text) > 5_000_000
    doc = "untitled:big.cnn"
    diagnostics = await open_text(client, doc, text)
    assert [d.code for d in diagnostics] == ["too-large"]
    assert diagnostics[0].severity == types.DiagnosticSeverity.Warning
    assert (
        await ask(
            client.text_document_hover_async(
                types.HoverParams(types.TextDocumentIdentifier(doc), types.Position(1, 6))
            )
        )
        is None
    )
    # Cut down to size, it is checked again.
    await change(client, doc, SMALL, 2)
    assert await diagnostics_for(client, doc, 2) == []
    await still_alive(client)


@pytest.mark.slow  # imports torch / moves megabytes through the protocol
async def test_a_thousand_rapid_changes(client: RecordingClient) -> None:
    doc = "untitled:rapid.cnn"
    await open_text(client, doc, SMALL)
    before = len(client.published)
    for version in range(2, 1002):
        # Every other version is broken; the last one has one error, in a known place.
        body = f"conv({version % 7 + 1}, 3)" if version % 2 else f"conv({version}, 3"
        await change(
            client,
            doc,
            f"network N(image: [3, 32, 32]) {{\n    {body} -> relu\n    conv(4, 99)\n}}\n",
            version,
        )
    diagnostics = await diagnostics_for(client, doc, 1001)
    assert [(d.range.start.line, d.range.start.character) for d in diagnostics] == [(2, 12)]
    publications = [p for p in client.published[before:] if p.uri == doc]
    assert len(publications) < 200, "the debounce should have merged most changes"
    result = await ask(
        client.text_document_hover_async(
            types.HoverParams(types.TextDocumentIdentifier(doc), types.Position(1, 6))
        )
    )
    assert result is not None and "[3, 32, 32] -> [" in str(result.contents)


async def test_a_missing_import(client: RecordingClient) -> None:
    path = ROOT / "tests" / "errors" / "missing_import.cnn"
    _, diagnostics = await open_file(client, path)
    assert [d.code for d in diagnostics] == ["import-missing"]
    looked_for = (path.parent / "blocks" / "nowhere.cnn").resolve()
    assert diagnostics[0].message.startswith('cannot import "blocks/nowhere.cnn": no such file (looked for ')
    assert Path(diagnostics[0].message.split("(looked for ", 1)[1].rstrip(")")).resolve() == looked_for
    assert diagnostics[0].range == types.Range(types.Position(0, 0), types.Position(0, 27))


async def test_a_cyclic_import(client: RecordingClient) -> None:
    path = ROOT / "tests" / "errors" / "cyclic_import.cnn"
    _, diagnostics = await open_file(client, path)
    assert [d.code for d in diagnostics] == ["import-cycle"]
    assert "import cycle" in diagnostics[0].message
    await still_alive(client)


async def test_an_error_inside_an_imported_file_is_shown_on_the_import(
    client: RecordingClient, tmp_path: Path
) -> None:
    (tmp_path / "lib.cnn").write_text("block Bad(c) {\n    conv(c 3)\n}\n", encoding="utf-8")
    main = tmp_path / "main.cnn"
    main.write_text('import "lib.cnn"\n\nnetwork N(image: [3, 8, 8]) {\n    relu\n}\n', encoding="utf-8")
    _, diagnostics = await open_file(client, main)
    assert len(diagnostics) == 1
    (diagnostic,) = diagnostics
    assert diagnostic.range.start == types.Position(0, 0)
    assert "lib.cnn:2:12" in diagnostic.message
    assert diagnostic.related_information is not None
    location = diagnostic.related_information[0].location
    assert location.uri == uri(tmp_path / "lib.cnn")
    assert location.range.start == types.Position(1, 11)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00\x01\x02",
        "network",
        "network N(",
        "}}}}{{{{",
        "block B(" * 300,
        "network N(image: [3, 8, 8]) {\n" + "(" * 5000 + "\n}\n",
        "network N(image: [3, 8, 8]) {\n    relu" + " -> relu" * 5_000 + "\n}\n",
        "\ud83d\ude00 network N(image: [3, 8, 8]) { relu }",
    ],
    ids=["empty", "control", "keyword", "open", "braces", "headers", "deep", "long-chain", "emoji"],
)
async def test_garbage_documents(client: RecordingClient, text: str) -> None:
    doc = "untitled:garbage.cnn"
    await open_text(client, doc, text)
    identifier = types.TextDocumentIdentifier(doc)
    await ask(client.text_document_hover_async(types.HoverParams(identifier, types.Position(0, 3))))
    await ask(client.text_document_document_symbol_async(types.DocumentSymbolParams(identifier)))
    await ask(client.text_document_completion_async(types.CompletionParams(identifier, types.Position(0, 3))))
    await ask(
        client.text_document_inlay_hint_async(
            types.InlayHintParams(identifier, types.Range(types.Position(0, 0), types.Position(5, 0)))
        )
    )
    await still_alive(client)
