"""Darknet ``.cfg`` files (pjreddie/darknet and AlexeyAB/darknet) to the importers' :class:`Graph`.

The meaning follows Darknet's own parser (``src/parser.c``) rather than the option names:

- ``[convolutional]``: ``pad=1`` means padding ``size/2`` and wins over ``padding=``; ``batch_normalize=1`` (or
  ``cbn=1``) means a conv without bias then a batchnorm; the default activation is ``logistic``; AlexeyAB's
  ``stride_x``/``stride_y`` and ``dilation`` (its im2col pads ``padding * dilation``).
- ``[maxpool]``: ``stride`` defaults to 1 and ``size`` to the stride; ``padding`` defaults to ``size-1`` *in total*,
  ``padding/2`` of it before, the rest after, and the padded cells never win. Written as a plain maxpool where the
  windows are the same, otherwise as a replicate ``pad`` then a maxpool (replicated cells cannot win either).
- ``[route] layers=...``: relative (negative) or absolute indices; one layer is a reference, several a concat;
  ``groups``/``group_id`` (AlexeyAB) take that channel group of each layer, then concatenate.
- ``[shortcut] from=...``: ``add`` when the shapes agree, otherwise ``sample_add`` (Darknet adds the overlapping
  channels of a strided sample); several layers (AlexeyAB) are all added.
- ``[yolo]``/``[region]``/``[detection]`` heads: their input becomes a network output.

Options that change what a layer computes and that cnndsl cannot write are refused, located
(:data:`REFUSED_OPTIONS`, and the checks in the section readers); the rest Darknet ignores at inference too.

:func:`import_darknet_model` also lists, in file order, the layers whose parameters a ``.weights`` file holds
(:class:`StoredLayer`); :mod:`.darknet_weights` reads such a file with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .graph import (
    INPUT,
    Graph,
    ImportFailure,
    Location,
    Problem,
    Step,
    Unit,
    infer_shapes,
    network_name,
    read_model_text,
)

MAX_BYTES = 16 * 1024 * 1024
"""A cfg is a few kilobytes; anything past this is not one."""
MAX_DIMENSION = 1 << 16
"""Sizes, filters and strides past this are refused as typos or hostile input, before any arithmetic."""

ACTIVATIONS: dict[str, Step | None] = {
    "linear": None,
    "leaky": Step.of("leaky_relu", slope=0.1),
    "relu": Step.of("relu"),
    "relu6": Step.of("relu6"),  # AlexeyAB
    "logistic": Step.of("sigmoid"),
    "tanh": Step.of("tanh"),
    "swish": Step.of("silu"),
}

HEADS = ("yolo", "region", "detection")
IGNORED = ("cost",)
"""Sections that only matter for training: they count as a layer (Darknet numbers them) but compute nothing."""


@dataclass(frozen=True)
class StoredLayer:
    """A cfg layer whose parameters a Darknet ``.weights`` file holds, and where they go in the graph.

    ``main`` is the index of the conv / linear step in the unit's steps, ``norm`` that of the bn step
    (``batch_normalize=1``). ``refused`` holds the options that change what the file holds for this layer and that
    reading one does not support (``dontload``...): problems raised only when weights are read."""

    index: int
    """Darknet's layer number."""
    kind: str
    """``convolutional`` or ``connected``."""
    location: Location
    unit: int
    main: int
    norm: int | None
    outputs: int
    """Filters of a convolution, outputs of a connected layer."""
    size: int = 1
    groups: int = 1
    flipped: bool = False
    """``flipped=1``: the convolution's weights are stored transposed, ``[c/groups*size*size, filters]``."""
    refused: tuple[Problem, ...] = ()


@dataclass
class DarknetImport:
    """The graph, and the layers a ``.weights`` file for this cfg holds, in file (= cfg) order."""

    graph: Graph
    stored: list[StoredLayer]


REFUSED_OPTIONS: dict[str, dict[str, tuple[str, str | float | None]]] = {
    "convolutional": {
        "share_index": ("the weights of another layer", None),
        "binary": ("binarised weights", "0"),
        "xnor": ("binarised weights and inputs", "0"),
        "antialiasing": ("a blur after the convolution, which takes over its stride", "0"),
        "sway": ("weights swayed: a deformable convolution", "0"),
        "rotate": ("weights rotated: a deformable convolution", "0"),
        "stretch": ("weights stretched: a deformable convolution", "0"),
        "stretch_sway": ("weights stretched and swayed: a deformable convolution", "0"),
        "coordconv": ("coordinate channels written into the output by GPU builds", "0"),
    },
    "maxpool": {
        "maxpool_depth": ("a max over channels instead of over positions", "0"),
        "antialiasing": ("a blur after the maxpool, which takes over its stride", "0"),
        "maxpool_zero_nonmax": ("non-maximum cells zeroed by GPU builds", "0"),
    },
    "softmax": {
        "temperature": ("a softmax of x / temperature", 1.0),
        "tree": ("a hierarchical softmax over a WordTree", None),
        "spatial": ("a softmax per position in GPU builds, ignored by the CPU one", "0"),
    },
    "shortcut": {
        "weights_type": ("AlexeyAB's weighted sum, its weights in the file", "none"),
        "alpha": ("pjreddie's alpha * input + beta * from", 1.0),
        "beta": ("pjreddie's alpha * input + beta * from", 1.0),
    },
    "upsample": {
        "scale": ("the output multiplied by a constant, which no cnndsl op does", 1.0),
    },
}
"""Options Darknet reads that change what a layer computes in a way cnndsl cannot write: meaning, and the value
that leaves them off (a number compared as one; None: refused whatever the value). Keys Darknet does not read are
ignored, as Darknet ignores them (it prints "Unused field"); keys that matter only for training or for GPU
scheduling (``stopbackward``, ``dont_update``, ``stream``, ``dropblock``...) compute nothing at inference."""

LOAD_OPTIONS = ("dontload", "dontloadscales", "numload")
"""Options that make Darknet skip part of a layer's record when it loads weights: not supported when reading."""


@dataclass
class Section:
    kind: str
    line: int
    options: dict[str, tuple[str, int]]
    """option -> (value, line)."""


def parse_sections(text: str, file: str) -> list[Section]:
    """Split a cfg into sections; a malformed line is a located problem (all of them are collected)."""
    sections: list[Section] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip().replace(" ", "").replace("\t", "")
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                problems.append(Problem(Location(file, number), f"malformed section header {raw.strip()!r}"))
                continue
            sections.append(Section(line[1:-1].lower(), number, {}))
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            problems.append(Problem(Location(file, number), f"expected 'option=value', got {raw.strip()!r}"))
            continue
        if not sections:
            problems.append(Problem(Location(file, number), "option before the first [section]"))
            continue
        sections[-1].options[key.lower()] = (value, number)
    if problems:
        raise ImportFailure(problems)
    if not sections:
        raise ImportFailure([Problem(Location(file, 1), "no [sections]: this is not a Darknet cfg")])
    return sections


class _Reader:
    """Typed access to one section's options; problems are collected rather than raised one by one."""

    def __init__(
        self,
        section: Section,
        file: str,
        problems: list[Problem],
        index: int | None = None,
        partial: bool = False,
    ) -> None:
        self.section = section
        self.file = file
        self.problems = problems
        self.index = index
        self.partial = partial
        self.gaps: list[str] = []
        """With --partial: what of this layer was left out (the layer itself is still imported)."""

    def location(self, key: str | None = None) -> Location:
        line = self.section.options[key][1] if key in self.section.options else self.section.line
        layer = f"layer {self.index} " if self.index is not None else ""
        return Location(self.file, line, f"{layer}[{self.section.kind}]")

    def int_option(self, key: str, default: int, minimum: int = 0) -> int:
        if key not in self.section.options:
            return default
        text = self.section.options[key][0]
        try:
            value = int(text)
        except ValueError:
            self.problems.append(Problem(self.location(key), f"{key}={text} is not an integer"))
            return default
        if not minimum <= value <= MAX_DIMENSION:
            self.problems.append(
                Problem(self.location(key), f"{key}={value} is outside {minimum}..{MAX_DIMENSION}", "limit")
            )
            return default
        return value

    def float_option(self, key: str, default: float) -> float:
        if key not in self.section.options:
            return default
        text = self.section.options[key][0]
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if value != value or value in (float("inf"), float("-inf")):
            self.problems.append(Problem(self.location(key), f"{key}={text} is not a finite number"))
            return default
        return value

    def text_option(self, key: str, default: str) -> str:
        return self.section.options[key][0].lower() if key in self.section.options else default

    def refuse_options(self, kind: str) -> None:
        """A located problem for each option of :data:`REFUSED_OPTIONS` that this section turns on."""
        refused = REFUSED_OPTIONS.get(kind, {})
        for option, (text, _) in self.section.options.items():  # in file order
            if option not in refused:
                continue
            meaning, off = refused[option]
            if isinstance(off, float):
                try:
                    inert = float(text) == off
                except ValueError:
                    inert = False
            else:
                inert = off is not None and text.lower() == off
            if not inert:
                self.problems.append(
                    Problem(
                        self.location(option),
                        f"[{kind}] {option}={text} ({meaning}) is not supported",
                        "unsupported",
                    )
                )

    def stride_pair(self, stride: int, below_one_unset: bool = False) -> tuple[int, int]:
        """AlexeyAB's ``stride_x``/``stride_y`` (each falls back to ``stride``), as (height, width) strides.

        ``below_one_unset``: a value below 1 also means ``stride`` (``parse_convolutional``; ``parse_maxpool`` takes
        any value, and 0 would divide by zero there, so it is an error)."""
        lowest = -MAX_DIMENSION if below_one_unset else 1
        pair = self.int_option("stride_y", stride, lowest), self.int_option("stride_x", stride, lowest)
        return (pair[0] if pair[0] >= 1 else stride, pair[1] if pair[1] >= 1 else stride)

    def indices(self, key: str) -> list[int]:
        if key not in self.section.options:
            self.problems.append(Problem(self.location(), f"[{self.section.kind}] needs {key}="))
            return []
        values = []
        for part in self.section.options[key][0].split(","):
            try:
                values.append(int(part))
            except ValueError:
                self.problems.append(Problem(self.location(key), f"{key}: {part!r} is not a layer index"))
        return values


def import_darknet(
    path: str | Path,
    text: str | None = None,
    *,
    partial: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> Graph:
    """Read a Darknet cfg into a :class:`Graph` (shapes not yet inferred). Raises :class:`ImportFailure`."""
    return import_darknet_model(path, text, partial=partial, input_shape=input_shape).graph


def import_darknet_model(
    path: str | Path,
    text: str | None = None,
    *,
    partial: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> DarknetImport:
    """Read a Darknet cfg into a :class:`Graph` and the list of layers its ``.weights`` file holds.

    Raises :class:`ImportFailure`."""
    file = str(path)
    if text is None:
        text = read_model_text(path, MAX_BYTES, "cfg")
    sections = parse_sections(text, file)
    problems: list[Problem] = []
    net = sections[0]
    if net.kind not in ("net", "network"):
        problems.append(
            Problem(Location(file, net.line), f"the first section must be [net], got [{net.kind}]")
        )
        raise ImportFailure(problems)
    reader = _Reader(net, file, problems)
    shape = (
        reader.int_option("channels", 3, 1),
        reader.int_option("height", 0, 1),
        reader.int_option("width", 0, 1),
    )
    if input_shape is not None:
        shape = (input_shape[0], input_shape[1], input_shape[2])
    elif shape[1] == 0 or shape[2] == 0:
        problems.append(Problem(reader.location(), "[net] needs height= and width= (or give --input)"))
    graph = Graph(network_name(Path(file).stem), f"the Darknet cfg {Path(file).name}", "image", shape)

    layer_units: list[int] = []
    """Darknet layer index -> unit id."""
    outputs: list[int] = []
    stored: list[StoredLayer] = []
    for section in sections[1:]:
        index = len(layer_units)
        reader = _Reader(section, file, problems, index, partial)
        location = reader.location()
        previous = layer_units[-1] if layer_units else INPUT
        kind = section.kind

        def ref(value: int, reader: _Reader = reader, index: int = index) -> int | None:
            target = index + value if value < 0 else value
            if not 0 <= target < index:
                reader.problems.append(
                    Problem(
                        reader.location(),
                        f"{value} refers to layer {target}; only layers 0..{index - 1} come before",
                    )
                )
                return None
            return layer_units[target]

        unit: Unit | None = None
        store: StoredLayer | None = None
        if kind in ("convolutional", "conv"):
            reader.refuse_options("convolutional")
            unit, store = _convolutional(reader, location, previous, graph)
        elif kind in ("maxpool", "max"):
            reader.refuse_options("maxpool")
            unit = _maxpool(reader, location, previous, graph)
        elif kind in ("avgpool", "avg"):
            unit = Unit(location, "[avgpool]", [previous], [Step.of("adaptive_avgpool", size=1)])
        elif kind in ("connected", "conn"):
            unit, store = _connected(reader, location, previous, graph, len(graph.units))
        elif kind in ("dropout",):
            p = reader.float_option("probability", 0.5)
            unit = Unit(
                location,
                "[dropout]",
                [previous],
                [Step.of("dropout", p=p) if p != 0.5 else Step.of("dropout")],
            )
        elif kind in ("softmax", "soft"):
            unit = _softmax(reader, location, previous, graph)
        elif kind == "route":
            targets = [t for t in (ref(v) for v in reader.indices("layers")) if t is not None]
            unit = _route(reader, location, targets, graph)
        elif kind == "shortcut":
            sources = [t for t in (ref(v) for v in reader.indices("from")) if t is not None]
            unit = _shortcut(reader, location, previous, sources, graph)
        elif kind == "upsample":
            unit = _upsample(reader, location, previous)
        elif kind in HEADS:
            outputs.append(previous)
            unit = Unit(location, f"[{kind}]", [previous])  # an alias: the head reads its input
        elif kind == "crop":
            unit = _crop(reader, location, previous, graph, index)
        elif kind in IGNORED:
            unit = Unit(location, f"[{kind}]", [previous])
        else:
            message = f"[{kind}] layers are not supported"
            if partial:
                unit = Unit(location, f"[{kind}]", [previous], gap=message)
            else:
                problems.append(Problem(reader.location(), message, "unsupported"))
        if unit is None:
            unit = Unit(location, f"[{kind}]", [previous])  # keeps later layer indices right while collecting
        unit.label = f"{index} [{kind}]"
        if store is not None:
            stored.append(store)
        if reader.gaps:
            unit.label += " -- NOT IMPORTED: " + "; ".join(reader.gaps)
            graph.gaps += [f"{reader.location()}: {gap}" for gap in reader.gaps]
        layer_units.append(graph.add(unit))
    if problems:
        raise ImportFailure(problems)
    if outputs:
        graph.outputs = outputs
        graph.notes.append(
            f"{len(outputs)} detection head(s): each output is the raw tensor a [yolo]/[region] layer reads."
        )
    return DarknetImport(graph, stored)


def _collapse(pair: tuple[int, int]) -> int | list[int]:
    return pair[0] if pair[0] == pair[1] else [pair[0], pair[1]]


def _route(reader: _Reader, location: Location, targets: list[int], graph: Graph) -> Unit | None:
    """``[route] layers=...``, with AlexeyAB's ``groups``/``group_id``.

    Darknet (``forward_route_layer``) copies from each input in turn the ``group_id``-th of ``groups`` equal parts
    of its values, so with several inputs the result is that channel group *of each input*, concatenated (not a
    group of their concatenation)."""
    if not targets:
        return None
    groups = reader.int_option("groups", 1, 1)
    group_id = reader.int_option("group_id", 0, 0)
    if groups == 1:
        return Unit(location, "[route]", targets, merge="concat" if len(targets) > 1 else None)
    if group_id >= groups:
        reader.problems.append(
            Problem(reader.location("group_id"), f"group_id={group_id} is not below groups={groups}")
        )
        return None
    for target in targets:
        channels = _shape_of(graph, target)[:1]
        if channels and channels[0] % groups:
            # The part is channels*height*width/groups values from the flat buffer: it cuts through a channel.
            message = (
                f"groups={groups} does not divide the {channels[0]} channels of layer {graph.units[target].label}: "
                "Darknet's part would cut through a channel"
            )
            reader.problems.append(Problem(reader.location("groups"), message, "unsupported"))
            return None
    chunk = Step.of("chunk", chunks=groups, index=group_id)
    if len(targets) == 1:
        return Unit(location, "[route]", targets, [chunk])
    parts = []
    for target in targets:
        part = Unit(location, "[route]", [target], [chunk])
        part.label = (
            f"{reader.index} [route]: group {group_id} of {groups} of layer {graph.units[target].label}"
        )
        parts.append(graph.add(part))
    return Unit(location, "[route]", parts, merge="concat")


def _shortcut(
    reader: _Reader, location: Location, previous: int, sources: list[int], graph: Graph
) -> Unit | None:
    """``[shortcut] from=...``: the layer before plus each ``from`` layer, then the activation (default linear).

    One layer: ``add``, or where the shapes differ pjreddie's strided ``sample_add``. Several (AlexeyAB; pjreddie
    reads only the first): ``shortcut_multilayer_cpu`` adds each at the flat positions both have, which with equal
    height and width are the channels both have, a stride-1 ``sample_add``; other sizes are refused (its parser
    asserts they agree)."""
    reader.refuse_options("shortcut")
    if not sources:
        return None
    steps = _activation(reader, "linear")
    base = _shape_of(graph, previous)
    shapes = [_shape_of(graph, source) for source in sources]
    if len(sources) > 1 and any(len(shape) != 3 or shape[1:] != base[1:] for shape in (base, *shapes)):
        sizes = " + ".join("x".join(map(str, shape)) for shape in (base, *shapes))
        message = (
            f"from= several layers, not all of the height and width of the layer before ({sizes}): AlexeyAB's "
            "darknet adds them by flat position and asserts that they agree"
        )
        reader.problems.append(Problem(reader.location("from"), message, "unsupported"))
        return None
    if all(shape == base for shape in shapes):
        return Unit(location, "[shortcut]", [previous, *sources], steps, merge="add")
    current = previous
    for number, (source, shape) in enumerate(zip(sources, shapes, strict=True)):
        merge = "add" if shape == base else "sample_add"
        if number == len(sources) - 1:
            return Unit(location, "[shortcut]", [current, source], steps, merge=merge)
        part = Unit(location, "[shortcut]", [current, source], merge=merge)
        part.label = f"{reader.index} [shortcut]: + layer {graph.units[source].label}"
        current = graph.add(part)
    return None


def _upsample(reader: _Reader, location: Location, previous: int) -> Unit | None:
    reader.refuse_options("upsample")
    text = reader.section.options.get("stride", ("2", 0))[0]
    if text.startswith("-") and text[1:].isdigit():
        message = f"stride={text} (Darknet's reverse upsample: a sum over {text[1:]}x{text[1:]} cells) is not supported"
        reader.problems.append(Problem(reader.location("stride"), message, "unsupported"))
        return None
    stride = reader.int_option("stride", 2, 1)
    return Unit(location, "[upsample]", [previous], [Step.of("upsample", scale=stride)])


def _softmax(reader: _Reader, location: Location, previous: int, graph: Graph) -> Unit:
    reader.refuse_options("softmax")
    if reader.int_option("groups", 1, 1) != 1:
        reader.problems.append(
            Problem(reader.location("groups"), "[softmax] groups= is not supported", "unsupported")
        )
    shape = _shape_of(graph, previous)
    if len(shape) == 3 and shape[1] * shape[2] > 1:
        # softmax_cpu runs over the layer's whole C*H*W outputs; cnndsl's softmax over channels per position.
        message = (
            f"[softmax] of an input of shape {'x'.join(map(str, shape))}: Darknet normalises all its values together, "
            "cnndsl's softmax the channels at each position (put an [avgpool] or [connected] before it)"
        )
        reader.problems.append(Problem(reader.location(), message, "unsupported"))
    return Unit(location, "[softmax]", [previous], [Step.of("softmax")])


def _dilated_padding(
    reader: _Reader,
    graph: Graph,
    previous: int,
    size: int,
    strides: tuple[int, int],
    padding: int,
    dilation: int,
) -> int:
    """AlexeyAB's dilated convolution: its im2col pads ``padding * dilation``, and sizes its own output with the
    undilated formula; where the two sizes differ the layer does not compute a convolution, and is refused."""
    for extent, stride in zip(_shape_before(graph, previous), strides, strict=True):
        if not extent:
            continue
        darknet = (extent + 2 * padding - size) // stride + 1
        im2col = (extent + 2 * padding * dilation - dilation * (size - 1) - 1) // stride + 1
        if darknet != im2col:
            message = (
                f"dilation={dilation} with size={size} and padding {padding}: Darknet sizes the output {darknet} "
                f"but its im2col fills {im2col} (padding=size/2 with an odd size always agrees)"
            )
            reader.problems.append(Problem(reader.location("dilation"), message, "unsupported"))
            break
    return padding * dilation


def _activation(reader: _Reader, default: str) -> list[Step]:
    name = reader.text_option("activation", default)
    if name not in ACTIVATIONS and reader.partial:
        reader.gaps.append(f"activation={name} (left out)")
        return []
    if name not in ACTIVATIONS:
        reader.problems.append(
            Problem(reader.location("activation"), f"activation={name} is not supported", "unsupported")
        )
        return []
    step = ACTIVATIONS[name]
    return [step] if step is not None else []


def _convolutional(
    reader: _Reader, location: Location, previous: int, graph: Graph
) -> tuple[Unit, StoredLayer]:
    filters = reader.int_option("filters", 1, 1)
    size = reader.int_option("size", 1, 1)
    stride_y, stride_x = reader.stride_pair(reader.int_option("stride", 1, 1), below_one_unset=True)
    groups = reader.int_option("groups", 1, 1)
    dilation = reader.int_option("dilation", 1, 1) if size != 1 else 1  # parse_convolutional: 1x1 ignores it
    padding = reader.int_option("padding", 0)
    if reader.int_option("pad", 0):
        padding = size // 2  # parse_convolutional: pad=1 wins over padding=
    batch_norm = bool(reader.int_option("batch_normalize", 0)) or bool(reader.int_option("cbn", 0))
    if dilation != 1:
        padding = _dilated_padding(reader, graph, previous, size, (stride_y, stride_x), padding, dilation)
    conv: dict[str, object] = {"channels": filters, "kernel": size}
    if (stride_y, stride_x) != (1, 1):
        conv["stride"] = _collapse((stride_y, stride_x))
    if padding:
        conv["padding"] = padding
    if dilation != 1:
        conv["dilation"] = dilation
    if groups != 1:
        conv["groups"] = groups
    steps = [Step.of("conv", **conv, bias=not batch_norm)]
    if batch_norm:
        steps.append(Step.of("bn"))
    steps += _activation(reader, "logistic")
    flipped = bool(reader.int_option("flipped", 0))
    refused = _load_options(reader)
    if flipped and groups != 1:
        # pjreddie transposes [c*size*size, n], AlexeyAB [c/groups*size*size, n]: they agree only without groups.
        refused.append(
            Problem(
                reader.location("flipped"),
                "flipped=1 with groups= (darknets disagree on its layout)",
                "unsupported",
            )
        )
    store = StoredLayer(
        reader.index or 0,
        "convolutional",
        location,
        len(graph.units),
        main=0,
        norm=1 if batch_norm else None,
        outputs=filters,
        size=size,
        groups=groups,
        flipped=flipped,
        refused=tuple(refused),
    )
    return Unit(location, "[convolutional]", [previous], steps), store


def _load_options(reader: _Reader) -> list[Problem]:
    return [
        Problem(
            reader.location(option),
            f"{option}= (Darknet then skips part of the layer's weights)",
            "unsupported",
        )
        for option in LOAD_OPTIONS
        if option in reader.section.options and reader.section.options[option][0] != "0"
    ]


def _maxpool(reader: _Reader, location: Location, previous: int, graph: Graph) -> Unit:
    stride = reader.int_option("stride", 1, 1)
    strides = reader.stride_pair(stride)
    size = reader.int_option("size", stride, 1)
    total = reader.int_option("padding", size - 1)
    before, after = total // 2, total - total // 2
    height, width = _shape_before(graph, previous)
    steps: list[Step] = []
    pool = Step.of("maxpool", kernel=size, stride=_collapse(strides))
    if height and width:
        # Darknet: out = (in + padding - size) / stride + 1, windows starting at -padding/2.
        want = tuple((n + total - size) // s + 1 for n, s in zip((height, width), strides, strict=True))
        plain = tuple((n - size) // s + 1 for n, s in zip((height, width), strides, strict=True))
        if before == 0 and want == plain:
            steps = [pool]
        elif before == after and 2 * before <= size:
            steps = [Step.of("maxpool", kernel=size, stride=_collapse(strides), padding=before)]
        else:
            steps = [
                Step.of("pad", left=before, right=after, top=before, bottom=after, mode="replicate"),
                pool,
            ]
    else:
        steps = [pool]
    return Unit(location, "[maxpool]", [previous], steps)


def _shape_of(graph: Graph, unit_id: int) -> tuple[int, ...]:
    """The shape flowing out of a unit, inferred while reading: Darknet's maxpool and shortcut rules depend on it."""
    if unit_id == INPUT:
        return graph.input_shape
    infer_shapes(graph)
    return graph.units[unit_id].shape


def _shape_before(graph: Graph, unit_id: int) -> tuple[int, int]:
    shape = _shape_of(graph, unit_id)
    return (shape[1], shape[2]) if len(shape) == 3 else (0, 0)


def _connected(
    reader: _Reader, location: Location, previous: int, graph: Graph, unit_id: int
) -> tuple[Unit, StoredLayer]:
    output = reader.int_option("output", 1, 1)
    steps: list[Step] = []
    if len(_shape_of(graph, previous)) != 1:
        steps.append(Step.of("flatten"))
    batch_norm = bool(reader.int_option("batch_normalize", 0))
    main = len(steps)
    steps.append(Step.of("linear", features=output, bias=not batch_norm))
    if batch_norm:
        reader.problems.append(
            Problem(reader.location("batch_normalize"), "[connected] batch_normalize=1", "unsupported")
        )
    steps += _activation(reader, "logistic")
    store = StoredLayer(
        reader.index or 0,
        "connected",
        location,
        unit_id,
        main=main,
        norm=None,
        outputs=output,
        refused=tuple(_load_options(reader)),
    )
    return Unit(location, "[connected]", [previous], steps), store


def _crop(reader: _Reader, location: Location, previous: int, graph: Graph, index: int) -> Unit:
    if index != 0:
        reader.problems.append(
            Problem(reader.location(), "[crop] is supported only as the first layer", "unsupported")
        )
        return Unit(location, "[crop]", [previous])
    height = reader.int_option("crop_height", graph.input_shape[1], 1)
    width = reader.int_option("crop_width", graph.input_shape[2], 1)
    # forward_crop_layer at inference: the centre crop, and unless noadjust=1 each value x becomes 2x - 1.
    adjust = "" if reader.int_option("noadjust", 0) else " and maps each value x to 2x - 1"
    graph.notes.append(
        f"[crop] {graph.input_shape[1]}x{graph.input_shape[2]} -> {height}x{width} is folded into the input: at "
        f"inference Darknet takes the centre {height}x{width}{adjust}; this network's input is that already."
    )
    graph.input_shape = (graph.input_shape[0], height, width)
    return Unit(location, "[crop]", [previous])
