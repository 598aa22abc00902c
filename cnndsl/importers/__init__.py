"""``cnndsl import``: bring models written for other tools into ``.cnn`` specs.

Each source format has a module that builds the plain-data :class:`~cnndsl.importers.graph.Graph`; this module
chooses the format, infers shapes, writes the spec and checks it with cnndsl's own front end, so an import either
gives a spec that checks or a list of located problems (:class:`ImportFailure`). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..diagnostics import SpecError
from .graph import Graph, ImportFailure, Location, Problem, infer_shapes, resolve_aliases, write_spec

__all__ = [
    "FORMATS",
    "ImportFailure",
    "ImportResult",
    "Problem",
    "import_file",
    "import_graph",
    "is_python_source",
]

FORMATS = {".cfg": "darknet", ".prototxt": "caffe", ".onnx": "onnx"}


def is_python_source(source: str) -> bool:
    """``package.module:callable`` (a factory to trace) rather than a file path."""
    module, sep, attribute = source.partition(":")
    return (
        bool(sep)
        and bool(attribute)
        and "/" not in source
        and all(part.isidentifier() for part in (*module.split("."), *attribute.split(".")))
    )


@dataclass(frozen=True)
class ImportResult:
    """The written spec, the graph it came from, and the gaps left by ``partial`` (one line each)."""

    spec: str
    graph: Graph
    gaps: tuple[str, ...] = ()


def import_file(
    path: str | Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    partial: bool = False,
) -> ImportResult:
    """Import a model file, chosen by its extension (``.cfg`` Darknet, ``.prototxt`` Caffe, ``.onnx``).

    Raises :class:`ImportFailure` listing every unsupported or invalid layer with its location, and ``OSError``
    when the file cannot be read."""
    suffix = Path(path).suffix.lower()
    kind = FORMATS.get(suffix)
    if kind == "darknet":
        from .darknet import import_darknet

        graph = import_darknet(path, partial=partial, input_shape=input_shape)
    elif kind == "caffe":
        from .caffe import import_caffe

        graph = import_caffe(path, partial=partial, input_shape=input_shape)
    elif kind == "onnx":
        from .onnx_model import import_onnx

        graph = import_onnx(path, partial=partial, input_shape=input_shape).graph
    else:
        known = ", ".join(sorted(FORMATS))
        raise ImportFailure(
            [
                Problem(
                    Location(str(path)),
                    f"unknown model format {suffix or '(no extension)'}; expected {known}",
                )
            ]
        )
    return import_graph(graph)


def import_graph(graph: Graph) -> ImportResult:
    """Infer shapes, write the spec and check it; a spec that does not check is an importer bug, reported as such."""
    resolve_aliases(graph)
    infer_shapes(graph)
    text = write_spec(graph)
    from ..frontend import loads

    try:
        loads(text, f"{graph.name}.cnn")
    except SpecError as error:
        if not graph.gaps and all(u.gap is None for u in graph.units):
            raise ImportFailure(
                [
                    Problem(
                        Location(graph.source),
                        f"internal error: the written spec does not check:\n{error.render()}",
                    )
                ]
            ) from None
    gaps = [f"{u.location}: {u.gap}" for u in graph.units if u.gap is not None] + graph.gaps
    return ImportResult(text, graph, tuple(gaps))
