"""``cnndsl lsp``: the Language Server Protocol server (pygls), on stdio.

Each open document is analysed (parse, imports, elaboration, shapes) after it opens and, debounced, after it
changes; the result is kept per document version as a :class:`~cnndsl.lsp.index.DocumentIndex`, so hovers,
inlay hints and the rest read a cache instead of checking the spec again. Analysis runs on one worker thread:
the event loop keeps answering (and cancelling) requests while a large spec is being checked.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import from_fs_path, to_fs_path

from .. import __version__
from ..diagnostics import Diagnostic, Span
from ..frontend import ParseCache, analyse_document
from .index import Completion, DocumentIndex

log = logging.getLogger(__name__)

MAX_DOCUMENT_CHARS = 2_000_000
"""Documents larger than this are not analysed (the zoo's largest spec is under 10 kB); one diagnostic says so."""

WARM_AFTER_SECONDS = 0.3
"""Idle time after a check before costs and explanations are precomputed for hovers (off the typing path)."""

DEBOUNCE_SECONDS = 0.03
"""Quiet time after a change before it is analysed: typing fast re-checks once, not once per keystroke."""


@dataclass
class _State:
    """One open document: the newest index and the analysis in flight."""

    index: DocumentIndex | None = None
    version: int = -1
    """The document version ``index`` was built from."""
    pending: asyncio.Task[None] | None = None
    running: dict[int, asyncio.Future[DocumentIndex | None]] = field(default_factory=dict)


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, answering a request it cannot read with an error instead of silence.

    pygls drops a request whose parameters do not match the protocol's types; a client would wait forever for
    its answer."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if "jsonrpc" in data and "method" in data and isinstance(data.get("id"), int | str):
                self._send_response(data["id"], error=error.to_response_error())
            raise


class CnnLanguageServer(LanguageServer):
    """The server: document states, the analysis worker, and conversions between spans and LSP ranges."""

    def __init__(self, debounce: float = DEBOUNCE_SECONDS) -> None:
        super().__init__(
            "cnndsl",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=_Protocol,
        )
        self.debounce = debounce
        self.states: dict[str, _State] = {}
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnndsl-analysis")
        self.show_costs = False

    # ------------------------------------------------------------------------------ analysis ---

    def state(self, uri: str) -> _State:
        return self.states.setdefault(uri, _State())

    def schedule(self, uri: str, delay: float) -> None:
        """Analyse the document after ``delay`` seconds unless it changes again first."""
        state = self.state(uri)
        if state.pending is not None:
            state.pending.cancel()
        state.pending = asyncio.get_running_loop().create_task(self._after(uri, delay))

    async def _after(self, uri: str, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        await self.current(uri)

    async def current(self, uri: str) -> DocumentIndex | None:
        """The index of the document's current version, analysing it now if that has not happened yet."""
        if uri not in self.workspace.text_documents:
            return None  # never opened, or closed: nothing to answer from (pygls would read it from disk)
        document = self.workspace.get_text_document(uri)
        state = self.state(uri)
        version = document.version if document.version is not None else 0
        if state.version == version:
            return state.index
        future = state.running.get(version)
        if future is None:
            text = document.source
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self.worker, _build_index, uri, text)
            state.running[version] = future
            try:
                index = await future
            except Exception as error:  # noqa: BLE001 - a bug in the checker must not take the server down
                log.exception("analysis failed")
                self.window_log_message(
                    types.LogMessageParams(types.MessageType.Error, f"cnndsl: analysis failed: {error!r}")
                )
                index = None
            finally:
                state.running.pop(version, None)
            if version >= state.version:
                state.index, state.version = index, version
                self.publish(uri, version, index, text)
                if index is not None:
                    loop.create_task(self._warm_when_idle(uri, index))
            return index
        return await asyncio.shield(future)

    async def _warm_when_idle(self, uri: str, index: DocumentIndex) -> None:
        """Precompute costs and explanations once the user pauses, unless a newer version has come."""
        await asyncio.sleep(WARM_AFTER_SECONDS)
        if self.states.get(uri) is not None and self.states[uri].index is index:
            await self.warm(index)

    async def warm(self, index: DocumentIndex) -> None:
        """Wait until :meth:`DocumentIndex.warm` has run for this index (on the worker thread)."""
        if index.warmed is None:
            index.warmed = asyncio.get_running_loop().run_in_executor(self.worker, index.warm)
        try:
            await asyncio.shield(index.warmed)
        except Exception:  # noqa: BLE001 - without costs a hover says less; it must still answer
            log.exception("precomputing costs failed")

    async def locate(self, uri: str, position: types.Position) -> tuple[DocumentIndex, int, int] | None:
        """The current index and a request's position in it (1-based), or None outside the document."""
        index = await self.current(uri)
        if index is None:
            return None
        await self.warm(index)
        where = self.position_in(index, position)
        return None if where is None else (index, *where)

    def publish(self, uri: str, version: int, index: DocumentIndex | None, text: str) -> None:
        if index is None:
            if len(text) > MAX_DOCUMENT_CHARS:
                message = (
                    f"cnndsl: the document is {len(text) / 1e6:.1f} MB, over the language server's limit of "
                    f"{MAX_DOCUMENT_CHARS / 1e6:.0f} MB; run `cnndsl check` on it instead"
                )
                items = [
                    types.Diagnostic(
                        types.Range(types.Position(0, 0), types.Position(0, 1)),
                        message,
                        severity=types.DiagnosticSeverity.Warning,
                        code="too-large",
                        source="cnndsl",
                    )
                ]
            else:
                items = []
        else:
            items = [self.to_lsp(d, index, uri) for d in index.analysis.diagnostics]
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, items, version))

    # ---------------------------------------------------------------------------- conversions ---

    def lines_of(self, file: str, index: DocumentIndex) -> list[str]:
        if file == index.file:
            return index.text.split("\n")
        text = index.analysis.sources
        out: list[str] = []
        number = 1
        while (line := text.line(file, number)) is not None:
            out.append(line)
            number += 1
        return out

    def range_of(self, span: Span, index: DocumentIndex) -> types.Range:
        """A span (1-based, in characters) as an LSP range (0-based, in the negotiated code units)."""
        lines = self.lines_of(span.file, index)
        codec = self.workspace.position_codec
        start = types.Position(max(span.line - 1, 0), max(span.column - 1, 0))
        end = types.Position(max(span.end_line - 1, 0), max(span.end_column - 1, 0))
        try:
            return types.Range(
                codec.position_to_client_units(lines, start), codec.position_to_client_units(lines, end)
            )
        except (IndexError, ValueError):
            return types.Range(start, end)

    def position_in(self, index: DocumentIndex, position: types.Position) -> tuple[int, int] | None:
        """An LSP position in the main document as a 1-based (line, column), or None outside the text."""
        lines = index.text.split("\n")
        if not 0 <= position.line < len(lines) or position.character < 0:
            return None
        try:
            converted = self.workspace.position_codec.position_from_client_units(lines, position)
        except (IndexError, ValueError):
            return None
        return converted.line + 1, min(converted.character, len(lines[position.line])) + 1

    def uri_of(self, file: str, index: DocumentIndex, uri: str) -> str:
        if file == index.file:
            return uri
        return from_fs_path(os.path.abspath(file)) or file

    def to_lsp(self, diagnostic: Diagnostic, index: DocumentIndex, uri: str) -> types.Diagnostic:
        related: list[types.DiagnosticRelatedInformation] = []
        span = diagnostic.span
        message = diagnostic.message
        if span.file != index.file:
            # An error in an imported file: shown on the import that brought it in, located in the message.
            message = f"{span}: {message}"
            related.append(
                types.DiagnosticRelatedInformation(
                    types.Location(self.uri_of(span.file, index, uri), self.range_of(span, index)),
                    "the error",
                )
            )
            span = _import_span(index, span.file)
        for frame in reversed(diagnostic.chain):
            location = types.Location(
                self.uri_of(frame.span.file, index, uri), self.range_of(frame.span, index)
            )
            related.append(types.DiagnosticRelatedInformation(location, f"in {frame.call}"))
        fixes = [
            {"range": _range_json(self.range_of(f.span, index)), "newText": f.replacement}
            for f in diagnostic.fixes
            if f.span.file == index.file
        ]
        severity = {
            "error": types.DiagnosticSeverity.Error,
            "warning": types.DiagnosticSeverity.Warning,
        }.get(diagnostic.severity, types.DiagnosticSeverity.Information)
        return types.Diagnostic(
            self.range_of(span, index),
            message + "".join(f"\nnote: {n}" for n in diagnostic.notes),
            severity=severity,
            code=diagnostic.code,
            source="cnndsl",
            related_information=related or None,
            data={"fixes": fixes} if fixes else None,
        )


def _range_json(r: types.Range) -> dict[str, Any]:
    return {
        "start": {"line": r.start.line, "character": r.start.character},
        "end": {"line": r.end.line, "character": r.end.character},
    }


def _import_span(index: DocumentIndex, file: str) -> Span:
    target = Path(file).resolve()
    for span, path in index.analysis.imports.items():
        if span.file == index.file and path == target:
            return span
    for span in index.analysis.imports:
        if span.file == index.file:
            return span
    return Span(index.file, 1, 1, 1, 2)


_PARSED: ParseCache = {}
"""Parsed files by (name, text), shared by every analysis (only the worker thread touches it)."""


def _build_index(uri: str, text: str) -> DocumentIndex | None:
    """Analyse one version of a document (on the worker thread)."""
    if len(text) > MAX_DOCUMENT_CHARS:
        return None
    path = to_fs_path(uri)
    if path is not None and uri.startswith("file:"):
        file, directory = os.path.abspath(path), Path(os.path.abspath(path)).parent
    else:
        file, directory = uri, Path.cwd()
    analysis = analyse_document(text.lstrip("\ufeff"), file, directory, parse_cache=_PARSED)
    index = DocumentIndex(analysis, text)
    # Built here, off the event loop: the first hover or hint of a version then only looks things up.
    for stmt, _ in index.statements:
        index.statement_nodes(stmt)
    return index


# ---------------------------------------------------------------------------------------- features ---

_COMPLETION_KINDS = {
    "op": types.CompletionItemKind.Function,
    "block": types.CompletionItemKind.Class,
    "tensor": types.CompletionItemKind.Variable,
    "parameter": types.CompletionItemKind.Property,
    "keyword": types.CompletionItemKind.Keyword,
    "value": types.CompletionItemKind.Value,
}


def create_server(debounce: float = DEBOUNCE_SECONDS) -> CnnLanguageServer:
    """A server with every feature registered (start it with ``start_io()``)."""
    server = CnnLanguageServer(debounce)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CnnLanguageServer, params: types.InitializeParams) -> None:
        options = params.initialization_options
        if isinstance(options, dict):
            _read_settings(ls, options)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: CnnLanguageServer, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        if isinstance(settings, dict):
            _read_settings(ls, settings.get("cnndsl", settings))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CnnLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, 0)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CnnLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, ls.debounce)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CnnLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, 0)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CnnLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        state = ls.states.pop(params.text_document.uri, None)
        if state is not None and state.pending is not None:
            state.pending.cancel()
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(params.text_document.uri, []))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: CnnLanguageServer, params: types.HoverParams) -> types.Hover | None:
        found = await ls.locate(params.text_document.uri, params.position)
        if found is None:
            return None
        index, line, column = found
        answer = index.hover(line, column)
        if answer is None:
            return None
        text, span = answer
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text), ls.range_of(span, index))

    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT)
    async def inlay_hint(
        ls: CnnLanguageServer, params: types.InlayHintParams
    ) -> list[types.InlayHint] | None:
        index = await ls.current(params.text_document.uri)
        if index is None:
            return None
        if ls.show_costs:
            await ls.warm(index)
        first, last = params.range.start.line + 1, params.range.end.line + 1
        out = []
        for hint in index.inlay_hints(first, last, ls.show_costs):
            span = Span(index.file, hint.line, hint.column, hint.line, hint.column)
            out.append(
                types.InlayHint(
                    ls.range_of(span, index).start,
                    f": {hint.label}",
                    kind=types.InlayHintKind.Type,
                    tooltip=hint.tooltip,
                    padding_left=True,
                )
            )
        return out

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    async def definition(ls: CnnLanguageServer, params: types.DefinitionParams) -> types.Location | None:
        uri = params.text_document.uri
        found = await ls.locate(uri, params.position)
        if found is None:
            return None
        index, line, column = found
        target = index.definition(line, column)
        if isinstance(target, Path):
            file_uri = from_fs_path(str(target))
            if file_uri is None or not target.is_file():
                return None
            return types.Location(file_uri, types.Range(types.Position(0, 0), types.Position(0, 0)))
        if target is None:
            return None
        return types.Location(ls.uri_of(target.file, index, uri), ls.range_of(target, index))

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    async def references(ls: CnnLanguageServer, params: types.ReferenceParams) -> list[types.Location] | None:
        uri = params.text_document.uri
        found = await ls.locate(uri, params.position)
        if found is None:
            return None
        index, line, column = found
        spans = index.references(line, column, include_definition=params.context.include_declaration)
        return [types.Location(ls.uri_of(s.file, index, uri), ls.range_of(s, index)) for s in spans]

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    async def prepare_rename(ls: CnnLanguageServer, params: types.PrepareRenameParams) -> types.Range | None:
        found = await ls.locate(params.text_document.uri, params.position)
        if found is None:
            return None
        index, line, column = found
        occurrence = index.occurrence_at(line, column)
        if occurrence is None or index.classify(occurrence) not in ("block", "tensor"):
            return None
        return ls.range_of(occurrence.span, index)

    @server.feature(types.TEXT_DOCUMENT_RENAME)
    async def rename(ls: CnnLanguageServer, params: types.RenameParams) -> types.WorkspaceEdit | None:
        uri = params.text_document.uri
        found = await ls.locate(uri, params.position)
        if found is None:
            return None
        index, line, column = found
        spans = index.rename(line, column, params.new_name)
        if isinstance(spans, str):
            raise ValueError(spans)  # pygls answers with an error carrying this message
        changes: dict[str, list[types.TextEdit]] = {}
        for span in spans:
            changes.setdefault(ls.uri_of(span.file, index, uri), []).append(
                types.TextEdit(ls.range_of(span, index), params.new_name)
            )
        return types.WorkspaceEdit(changes=changes)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    async def document_symbol(
        ls: CnnLanguageServer, params: types.DocumentSymbolParams
    ) -> list[types.DocumentSymbol] | None:
        index = await ls.current(params.text_document.uri)
        if index is None:
            return None
        out = []
        for kind, name, span, name_span, detail, tensors in index.symbols():
            children = [
                types.DocumentSymbol(
                    tensor,
                    types.SymbolKind.Variable,
                    ls.range_of(where, index),
                    ls.range_of(where, index),
                )
                for tensor, where in tensors
            ]
            out.append(
                types.DocumentSymbol(
                    name,
                    types.SymbolKind.Class if kind == "network" else types.SymbolKind.Function,
                    ls.range_of(span, index),
                    ls.range_of(name_span, index),
                    detail=detail,
                    children=children or None,
                )
            )
        return out

    @server.feature(types.TEXT_DOCUMENT_FOLDING_RANGE)
    async def folding_range(
        ls: CnnLanguageServer, params: types.FoldingRangeParams
    ) -> list[types.FoldingRange] | None:
        index = await ls.current(params.text_document.uri)
        if index is None:
            return None
        return [
            types.FoldingRange(
                first - 1,
                last - 1,
                kind=types.FoldingRangeKind.Comment if kind == "comment" else types.FoldingRangeKind.Region,
            )
            for first, last, kind in index.folding()
        ]

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=["(", ",", ".", " "]),
    )
    async def completion(
        ls: CnnLanguageServer, params: types.CompletionParams
    ) -> list[types.CompletionItem] | None:
        found = await ls.locate(params.text_document.uri, params.position)
        if found is None:
            return None
        index, line, column = found
        return [_completion_item(c) for c in index.completions(line, column)]

    @server.feature(
        types.TEXT_DOCUMENT_SIGNATURE_HELP,
        types.SignatureHelpOptions(trigger_characters=["(", ","], retrigger_characters=[",", "="]),
    )
    async def signature_help(
        ls: CnnLanguageServer, params: types.SignatureHelpParams
    ) -> types.SignatureHelp | None:
        found = await ls.locate(params.text_document.uri, params.position)
        if found is None:
            return None
        index, line, column = found
        signature = index.signature(line, column)
        if signature is None:
            return None
        information = types.SignatureInformation(
            signature.label,
            documentation=signature.doc or None,
            parameters=[types.ParameterInformation(p) for p in signature.params],
        )
        return types.SignatureHelp([information], active_signature=0, active_parameter=signature.active)

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix]),
    )
    def code_action(ls: CnnLanguageServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        out = []
        for diagnostic in params.context.diagnostics:
            data = diagnostic.data if isinstance(diagnostic.data, dict) else {}
            for fix in data.get("fixes", []) if isinstance(data.get("fixes"), list) else []:
                try:
                    start, end = fix["range"]["start"], fix["range"]["end"]
                    edit_range = types.Range(
                        types.Position(int(start["line"]), int(start["character"])),
                        types.Position(int(end["line"]), int(end["character"])),
                    )
                    text = str(fix["newText"])
                except (KeyError, TypeError, ValueError):
                    continue  # data from a client is input like any other
                title = (
                    f"Replace with '{text}'"
                    if text and edit_range.start != edit_range.end
                    else (f"Insert '{text.strip()}'" if text else "Remove it")
                )
                out.append(
                    types.CodeAction(
                        title,
                        kind=types.CodeActionKind.QuickFix,
                        diagnostics=[diagnostic],
                        is_preferred=True,
                        edit=types.WorkspaceEdit(
                            changes={params.text_document.uri: [types.TextEdit(edit_range, text)]}
                        ),
                    )
                )
        return out

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def formatting(
        ls: CnnLanguageServer, params: types.DocumentFormattingParams
    ) -> list[types.TextEdit] | None:
        if params.text_document.uri not in ls.workspace.text_documents:
            return None
        document = ls.workspace.get_text_document(params.text_document.uri)
        try:
            from ..fmt import format_source
        except ImportError:  # the formatter is optional to the server
            return None
        text = document.source
        try:
            formatted = format_source(text, document.path or "<document>")
        except Exception:  # noqa: BLE001 - a spec that does not parse is left as it is
            return None
        if formatted == text:
            return []
        lines = text.split("\n")
        end = types.Position(len(lines) - 1, len(lines[-1]))
        end = ls.workspace.position_codec.position_to_client_units(lines, end)
        return [types.TextEdit(types.Range(types.Position(0, 0), end), formatted)]

    return server


def _read_settings(server: CnnLanguageServer, settings: dict[str, Any]) -> None:
    hints = settings.get("inlayHints")
    if isinstance(hints, dict) and isinstance(hints.get("costs"), bool):
        server.show_costs = hints["costs"]


def _completion_item(item: Completion) -> types.CompletionItem:
    return types.CompletionItem(
        item.label,
        kind=_COMPLETION_KINDS.get(item.kind, types.CompletionItemKind.Text),
        detail=item.detail or None,
        insert_text=item.insert,
        documentation=types.MarkupContent(types.MarkupKind.Markdown, item.doc) if item.doc else None,
    )


def serve(debounce: float = DEBOUNCE_SECONDS) -> None:
    """Run the server on stdin/stdout until the client says exit."""
    create_server(debounce).start_io()
