"""Helpers for the language-server tests: open a document in a pytest-lsp client and wait for its diagnostics."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient as _Base
from pygls.protocol import default_converter
from pytest_lsp import ClientServerConfig, LanguageClient
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features

ROOT = Path(__file__).resolve().parent.parent


class RecordingClient(LanguageClient):
    """pytest-lsp's client, also keeping every diagnostics notification with its document version."""

    def __init__(self) -> None:
        super().__init__(converter_factory=default_converter)
        self.diagnostic_versions: dict[str, int] = {}
        self.published: list[types.PublishDiagnosticsParams] = []
        self.open_documents: set[str] = set()


def _record(client: RecordingClient, params: types.PublishDiagnosticsParams) -> None:
    client.diagnostics[params.uri] = params.diagnostics
    client.diagnostic_versions[params.uri] = params.version if params.version is not None else 0
    client.published.append(params)


def make_client() -> _Base:
    client = RecordingClient()
    features = dict(DEFAULT_CLIENT_FEATURES)
    features[types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS] = _record
    register_lsp_features(client, features)
    return client


SERVER = ClientServerConfig(
    server_command=[sys.executable, "-m", "cnndsl", "lsp", "--debounce-ms", "10"],
    client_factory=make_client,
    server_env=None,
)
TIMEOUT = 30.0
"""Seconds any one answer may take before a test fails (the server must never hang)."""


def uri(path: Path) -> str:
    return path.resolve().as_uri()


async def initialize(client: RecordingClient, options: dict[str, object] | None = None) -> None:
    await client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=ROOT.as_uri(),
            initialization_options=options,
        )
    )


async def diagnostics_for(client: RecordingClient, doc: str, version: int) -> list[types.Diagnostic]:
    """Wait until the server has published diagnostics for this version of the document."""

    async def wait() -> list[types.Diagnostic]:
        while True:
            published = client.diagnostics.get(doc)
            if published is not None and client.diagnostic_versions.get(doc, -1) >= version:
                return list(published)
            await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)

    return await asyncio.wait_for(wait(), TIMEOUT)


async def open_text(client: RecordingClient, doc: str, text: str, version: int = 1) -> list[types.Diagnostic]:
    if doc in client.open_documents:  # tests share one server: open afresh
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(doc)))
    client.open_documents.add(doc)
    client.diagnostics.pop(doc, None)
    client.diagnostic_versions.pop(doc, None)
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(doc, "cnn", version, text))
    )
    return await diagnostics_for(client, doc, version)


async def open_file(client: RecordingClient, path: Path) -> tuple[str, list[types.Diagnostic]]:
    doc = uri(path)
    return doc, await open_text(client, doc, path.read_text(encoding="utf-8"))


async def change(client: RecordingClient, doc: str, text: str, version: int) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version, doc),
            [types.TextDocumentContentChangeWholeDocument(text)],
        )
    )


def position(text: str, needle: str, offset: int = 0, occurrence: int = 0) -> types.Position:
    """The 0-based position of ``needle`` (its ``occurrence``-th appearance) plus ``offset`` characters."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(needle, start + 1)
    start += offset
    line = text.count("\n", 0, start)
    return types.Position(line, start - (text.rfind("\n", 0, start) + 1))


def span_range(line: int, column: int, end_line: int, end_column: int) -> types.Range:
    """A 1-based cnndsl span as the LSP range it should become."""
    return types.Range(types.Position(line - 1, column - 1), types.Position(end_line - 1, end_column - 1))
