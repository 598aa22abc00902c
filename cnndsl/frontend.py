"""The public entry points :func:`load` and :func:`loads`: read files, follow imports, parse, elaborate, check.

Whatever the text, these return a checked :class:`~cnndsl.network.Network` or raise
:class:`~cnndsl.diagnostics.SpecError`; no other exception escapes.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import Diagnostic, DiagnosticSink, LocatedError, SourceMap, Span, SpecError
from .elaborate import DEFAULT_NODE_BUDGET, BlockInfo, ElaborationOptions, Elaborator, _Stop
from .network import Network
from .ops import Shape
from .syntax import BlockDef, Defaults, FuncDef, Import, Module, NetworkDef, parse_recovering

ParseCache = dict[tuple[str, str], tuple[Module, list[LocatedError]]]


@dataclass
class _Program:
    """Every parsed file, with the blocks and networks they define."""

    sources: SourceMap = field(default_factory=SourceMap)
    modules: dict[str, Module] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    blocks: dict[str, BlockInfo] = field(default_factory=dict)
    functions: dict[str, FuncDef] = field(default_factory=dict)
    networks: list[tuple[NetworkDef, dict[str, dict[str, Any]]]] = field(default_factory=list)


def _decode(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        # A column counts characters, as everywhere else: the bytes before the bad one decode cleanly. A leading
        # byte-order mark is not part of line 1, as when the file decodes.
        prefix = before[before.rfind(b"\n") + 1 :].decode("utf-8")
        column = len(prefix.lstrip("\ufeff") if line == 1 else prefix) + 1
        raise LocatedError(
            Span(file, line, column, line, column + 1),
            f"file is not valid UTF-8 (byte 0x{data[error.start]:02x})",
            code="not-utf8",
        ) from None


class _Loader:
    def __init__(self, root: Path, allow_outside_imports: bool, sink: DiagnosticSink) -> None:
        self.root = root
        self.allow_outside = allow_outside_imports
        self.sink = sink
        self.program = _Program()
        self._loaded: set[Path] = set()
        self.syntax_errors = 0
        self.parse_cache: ParseCache | None = None
        """Parsed files by (name, text), kept by a caller that checks the same files again and again (an editor)."""
        self.imports: dict[Span, Path] = {}
        """Where each import statement (by its span) resolved to: an editor's go-to-definition."""

    def load_text(self, text: str, file: str, directory: Path, stack: tuple[Path, ...], main: bool) -> None:
        text = text.lstrip("\ufeff")
        self.program.sources.add(file, text)
        self.program.files.append(file)
        # Every syntax error of the file is reported; what parsed is still read, so its imports and blocks are
        # checked too (the caller elaborates nothing once a syntax error is reported).
        cached = self.parse_cache.get((file, text)) if self.parse_cache is not None else None
        module, syntax_errors = cached if cached is not None else parse_recovering(text, file)
        if self.parse_cache is not None and cached is None:
            if len(self.parse_cache) >= 64:
                self.parse_cache.clear()
            self.parse_cache[(file, text)] = (module, syntax_errors)
        for syntax_error in syntax_errors:
            self.sink.add(syntax_error.diagnostic())
        self.syntax_errors += len(syntax_errors)
        self.program.modules[file] = module
        for item in module.items:
            if isinstance(item, Import):
                try:
                    self._import(item, directory, stack)
                except LocatedError as error:
                    self.sink.add(error.diagnostic())
        for item in module.items:
            # Before the defaults and blocks: a def may be used above the line that defines it.
            if isinstance(item, FuncDef):
                self._add_function(item)
        defaults: dict[str, dict[str, Any]] = {}
        for item in module.items:
            if isinstance(item, Defaults):
                defaults = self._defaults(item, defaults)
            elif isinstance(item, BlockDef):
                self._add_block(item, defaults)
            elif isinstance(item, NetworkDef):
                if not main:
                    continue  # networks in imported files are not part of the importer
                twin = next((n for n, _ in self.program.networks if n.name == item.name), None)
                if twin is not None:
                    self.sink.add(
                        Diagnostic(
                            item.name_span,
                            f"network {item.name} is already defined at {twin.name_span}",
                            code="duplicate-definition",
                        )
                    )
                    continue
                self.program.networks.append((item, defaults))

    def _defaults(self, item: Defaults, current: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # File-level defaults hold constants only; validate them with a throwaway elaborator scope.
        from .elaborate import NO_INPUT, Scope

        elaborator = Elaborator(
            self.program.blocks,
            self.program.sources,
            ElaborationOptions(),
            self.sink,
            self.program.functions,
        )
        try:
            return elaborator.defaults(item, Scope("", (), {}, {}, {}, NO_INPUT), current)
        except LocatedError as error:
            self.sink.add(error.diagnostic())
            return current

    def _add_block(self, item: BlockDef, defaults: dict[str, dict[str, Any]]) -> None:
        from . import ops

        if ops.get(item.name) is not None:
            self.sink.add(
                Diagnostic(
                    item.name_span, f"block {item.name} would shadow the op {item.name}", code="shadowing"
                )
            )
            return
        if item.name in self.program.functions:
            where = self.program.functions[item.name].name_span
            self.sink.add(
                Diagnostic(
                    item.name_span, f"block {item.name} would shadow the def at {where}", code="shadowing"
                )
            )
            return
        previous = self.program.blocks.get(item.name)
        if previous is not None:
            where = previous.definition.name_span
            self.sink.add(
                Diagnostic(
                    item.name_span,
                    f"block {item.name} is already defined at {where}",
                    code="duplicate-definition",
                )
            )
            return
        seen: set[str] = set()
        for param in item.params:
            if param.name in seen:
                self.sink.add(
                    Diagnostic(param.span, f"parameter '{param.name}' declared twice", code="duplicate-name")
                )
            seen.add(param.name)
        self.program.blocks[item.name] = BlockInfo(item, defaults)

    def _add_function(self, item: FuncDef) -> None:
        from . import ops
        from .elaborate import BUILTINS

        clash = (
            f"the op {item.name}"
            if ops.get(item.name) is not None
            else f"the built-in {item.name}"
            if item.name in BUILTINS
            else f"the block {item.name}"
            if item.name in self.program.blocks
            else None
        )
        if clash is not None:
            self.sink.add(
                Diagnostic(item.name_span, f"def {item.name} would shadow {clash}", code="shadowing")
            )
            return
        previous = self.program.functions.get(item.name)
        if previous is not None:
            self.sink.add(
                Diagnostic(
                    item.name_span,
                    f"def {item.name} is already defined at {previous.name_span}",
                    code="duplicate-definition",
                )
            )
            return
        seen: set[str] = set()
        for param in item.params:
            if param.name in seen:
                self.sink.add(
                    Diagnostic(param.span, f"parameter '{param.name}' declared twice", code="duplicate-name")
                )
            seen.add(param.name)
        self.program.functions[item.name] = item

    def _import(self, item: Import, directory: Path, stack: tuple[Path, ...]) -> None:
        if "\x00" in item.path:  # the OS refuses it with a ValueError, not an OSError
            raise LocatedError(
                item.span,
                f'cannot import "{item.path}": a file name cannot hold a NUL character',
                code="import-missing",
            )
        target = (directory / item.path).resolve()
        self.imports[item.span] = target
        if not self.allow_outside and not target.is_relative_to(self.root):
            raise LocatedError(
                item.span,
                f'import "{item.path}" is outside the spec\'s directory tree '
                "(--allow-outside-imports allows it)",
                code="import-outside",
            )
        if target in stack:
            chain = " -> ".join(p.name for p in (*stack[stack.index(target) :], target))
            raise LocatedError(item.span, f"import cycle: {chain}", code="import-cycle")
        if target in self._loaded:
            return
        try:
            if target.exists() and not target.is_file():
                # A directory, a FIFO (reading would block forever) or a device such as /dev/zero.
                raise IsADirectoryError(0, "not a regular file")
            data = target.read_bytes()
        except OSError as error:
            reason = (
                "no such file" if isinstance(error, FileNotFoundError) else (error.strerror or str(error))
            )
            if isinstance(error, FileNotFoundError):
                reason += (
                    f" (looked for {os.path.relpath(target) if not os.path.isabs(item.path) else target})"
                )
            raise LocatedError(
                item.span, f'cannot import "{item.path}": {reason}', code="import-missing"
            ) from None
        self._loaded.add(target)
        file = os.path.relpath(target) if not os.path.isabs(item.path) else str(target)
        self.program.sources.add(file, data.decode("utf-8", "replace").lstrip("\ufeff"))
        self.load_text(_decode(data, file), file, target.parent, (*stack, target), main=False)


def _build(*args: Any, **kwargs: Any) -> Network:
    # Elaboration allocates many small objects and no cycles; the cyclic collector would only make large
    # specs superlinear.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_checked(*args, **kwargs)
    finally:
        if was_enabled:
            gc.enable()


def _build_checked(
    text: str,
    file: str,
    directory: Path,
    self_path: Path | None,
    *,
    network: str | None,
    input_shapes: Mapping[str | None, Shape] | None,
    node_budget: int,
    allow_outside_imports: bool,
    max_errors: int,
) -> Network:
    sink = DiagnosticSink(limit=max(1, max_errors))
    loader = _Loader(directory.resolve(), allow_outside_imports, sink)
    if self_path is not None:
        loader._loaded.add(self_path)
    program = loader.program
    try:
        loader.load_text(text, file, directory, (self_path,) if self_path else (), main=True)
        if sink.items:
            raise SpecError(sink.items, program.sources)
        candidates = program.networks
        if network is not None:
            candidates = [c for c in candidates if c[0].name == network]
            if not candidates:
                names = ", ".join(n.name for n, _ in program.networks) or "none"
                raise SpecError(
                    [
                        Diagnostic(
                            Span(file, 1, 1, 1, 2),
                            f"no network named {network} (networks: {names})",
                            code="unknown-network",
                        )
                    ],
                    program.sources,
                )
        if not candidates:
            blocks = len(program.blocks)
            message = f"no network defined ({blocks} block{'s' if blocks != 1 else ''}); write network Name(input: [C, H, W]) {{ ... }}"
            raise SpecError([Diagnostic(Span(file, 1, 1, 1, 2), message, code="no-network")], program.sources)
        if len(candidates) > 1:
            names = ", ".join(n.name for n, _ in candidates)
            raise SpecError(
                [
                    Diagnostic(
                        candidates[1][0].name_span,
                        f"the file defines several networks ({names}); choose one with --network",
                        code="several-networks",
                    )
                ],
                program.sources,
            )
        definition, defaults = candidates[0]
        options = ElaborationOptions(node_budget, max_errors, dict(input_shapes) if input_shapes else None)
        elaborator = Elaborator(program.blocks, program.sources, options, sink, program.functions)
        try:
            result = elaborator.network(definition, defaults, program.files)
        except _Stop:
            result = None
        except LocatedError as error:
            sink.add(error.diagnostic())
            result = None
        if sink.items or result is None:
            raise SpecError(sink.items, program.sources)
        if not result.outputs:
            raise SpecError(
                [
                    Diagnostic(
                        definition.name_span, f"network {definition.name} has no output", code="no-output"
                    )
                ],
                program.sources,
            )
        return result
    except SpecError:
        raise
    except LocatedError as error:
        raise SpecError([*sink.items, error.diagnostic()], program.sources) from None
    except RecursionError:
        raise SpecError(
            [Diagnostic(Span(file, 1, 1, 1, 2), "spec nested too deeply", code="limit")], program.sources
        ) from None
    except MemoryError:
        raise SpecError(
            [Diagnostic(Span(file, 1, 1, 1, 2), "out of memory while checking the spec", code="limit")],
            program.sources,
        ) from None
    except Exception as error:  # noqa: BLE001 - the API promises SpecError only; a bug must still be located
        message = f"internal error, please report: {type(error).__name__}: {error}"
        raise SpecError(
            [Diagnostic(Span(file, 1, 1, 1, 2), message, code="internal")], program.sources
        ) from error


def check_library(path: str | os.PathLike[str], *, allow_outside_imports: bool = False) -> list[str]:
    """Parse a file of blocks (no network) and its imports; return the block names or raise :class:`SpecError`.

    Blocks are only fully checked when a network instantiates them, since shapes depend on the input."""
    source = Path(path)
    data = source.read_bytes()
    file = str(path)
    sink = DiagnosticSink()
    loader = _Loader(source.resolve().parent, allow_outside_imports, sink)
    loader._loaded.add(source.resolve())
    try:
        loader.load_text(_decode(data, file), file, source.resolve().parent, (source.resolve(),), main=True)
    except LocatedError as error:
        sink.add(error.diagnostic())
    if sink.items:
        raise SpecError(sink.items, loader.program.sources)
    return list(loader.program.blocks)


def loads(
    text: str,
    filename: str = "<string>",
    *,
    network: str | None = None,
    input_shapes: Mapping[str | None, Shape] | None = None,
    node_budget: int = DEFAULT_NODE_BUDGET,
    allow_outside_imports: bool = False,
    max_errors: int = 20,
) -> Network:
    """Parse and check spec text. Imports resolve against the current directory.

    ``input_shapes`` overrides declared input shapes by input name (``None`` means the first input).
    Raises :class:`SpecError` with located diagnostics when the spec has errors.
    """
    return _build(
        text,
        filename,
        Path.cwd(),
        None,
        network=network,
        input_shapes=input_shapes,
        node_budget=node_budget,
        allow_outside_imports=allow_outside_imports,
        max_errors=max_errors,
    )


def load(
    path: str | os.PathLike[str],
    *,
    network: str | None = None,
    input_shapes: Mapping[str | None, Shape] | None = None,
    node_budget: int = DEFAULT_NODE_BUDGET,
    allow_outside_imports: bool = False,
    max_errors: int = 20,
) -> Network:
    """Read, parse and check a ``.cnn`` file (see :func:`loads`). Raises ``OSError`` if the file cannot be read."""
    source = Path(path)
    data = source.read_bytes()
    file = str(path)
    try:
        text = _decode(data, file)
    except LocatedError as error:
        sources = SourceMap()
        sources.add(file, data.decode("utf-8", "replace").lstrip("\ufeff"))
        raise SpecError([error.diagnostic()], sources) from None
    return _build(
        text,
        file,
        source.resolve().parent,
        source.resolve(),
        network=network,
        input_shapes=input_shapes,
        node_budget=node_budget,
        allow_outside_imports=allow_outside_imports,
        max_errors=max_errors,
    )


# ------------------------------------------------------------------------------------------- editors ---


@dataclass
class DocumentAnalysis:
    """Everything one check of a spec tells an editor, errors or not (see :func:`analyse_document`).

    ``networks`` holds every network of the main file, elaborated as far as it went: after an error the nodes
    that did check are kept, so an editor can still show their shapes."""

    file: str
    diagnostics: list[Diagnostic]
    sources: SourceMap
    modules: dict[str, Module]
    """Every parsed file by name, the main one first (what parsed: statements with syntax errors left out)."""
    blocks: dict[str, BlockInfo]
    networks: list[Network]
    imports: dict[Span, Path]
    """Each import statement's span -> the file it names (resolved, whether or not it exists)."""
    syntax_errors: int


def analyse_document(
    text: str,
    file: str,
    directory: Path,
    *,
    node_budget: int = DEFAULT_NODE_BUDGET,
    max_errors: int = 100,
    allow_outside_imports: bool = True,
    parse_cache: ParseCache | None = None,
) -> DocumentAnalysis:
    """Parse and check ``text`` as the file ``file`` (imports resolve against ``directory``), never raising.

    Unlike :func:`load`, every network of the file is elaborated, a file of blocks alone is fine, and what
    elaborated before and around errors is returned. When a file has syntax errors only they are reported:
    statements left out by the parser's recovery would make the shape checker report errors that are not there,
    but the networks are still elaborated for their shapes. ``parse_cache`` (any dict, kept by the caller) saves
    parsing imported files again while they do not change."""
    sink = DiagnosticSink(limit=max(1, max_errors))
    loader = _Loader(directory.resolve(), allow_outside_imports, sink)
    loader.parse_cache = parse_cache
    self_path = (directory / Path(file).name).resolve() if os.path.isabs(file) else None
    if self_path is not None:
        loader._loaded.add(self_path)
    program = loader.program
    networks: list[Network] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        loader.load_text(text, file, directory, (self_path,) if self_path else (), main=True)
        quiet = DiagnosticSink(limit=max(1, max_errors))
        for definition, defaults in program.networks:
            target = quiet if loader.syntax_errors else sink
            if target.full:
                target = quiet
            options = ElaborationOptions(node_budget, max_errors)
            elaborator = Elaborator(program.blocks, program.sources, options, target, program.functions)
            try:
                network: Network | None = elaborator.network(definition, defaults, program.files)
            except _Stop:
                network = None
            except LocatedError as error:
                target.add(error.diagnostic())
                network = None
            except RecursionError:
                target.add(Diagnostic(definition.name_span, "spec nested too deeply", code="limit"))
                network = None
            if network is None:
                network = Network(
                    definition.name,
                    elaborator.nodes,
                    [],
                    [],
                    definition.span,
                    program.sources,
                    tuple(program.files),
                )
            networks.append(network)
    except LocatedError as error:
        sink.add(error.diagnostic())
    except RecursionError:
        sink.add(Diagnostic(Span(file, 1, 1, 1, 2), "spec nested too deeply", code="limit"))
    except MemoryError:
        sink.add(Diagnostic(Span(file, 1, 1, 1, 2), "out of memory while checking the spec", code="limit"))
    except Exception as error:  # noqa: BLE001 - an editor must get a located message, not a dead server
        message = f"internal error, please report: {type(error).__name__}: {error}"
        sink.add(Diagnostic(Span(file, 1, 1, 1, 2), message, code="internal"))
    finally:
        if was_enabled:
            gc.enable()
    return DocumentAnalysis(
        file,
        list(sink.items),
        program.sources,
        dict(program.modules),
        dict(program.blocks),
        networks,
        dict(loader.imports),
        loader.syntax_errors,
    )
