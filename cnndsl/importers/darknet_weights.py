"""Darknet ``.weights`` files: the parameters of a cfg's layers, under the imported spec's state_dict keys.

The layout is Darknet's own (``src/parser.c``: ``load_weights_upto`` and the per-layer loaders, in pjreddie/darknet
and AlexeyAB/darknet), little-endian float32 throughout:

- a header: ``int32`` major, minor, revision, then ``seen`` (images trained on): ``uint64`` when
  ``major * 10 + minor >= 2``, else ``uint32``. Darknet writes 0.1.0 (older), 0.2.0 (pjreddie) and 0.2.5 (AlexeyAB).
  A major or minor above 1000 flags old files whose ``[connected]`` weights are stored transposed; for those the
  two darknets read ``seen`` with different widths (pjreddie 32 bits, AlexeyAB 64), so the width that makes the
  file's size come out exactly is taken (32 bits when neither does);
- then, for each layer in cfg order that has parameters: ``[convolutional]``: biases (the batchnorm shift with
  ``batch_normalize=1``), then with ``batch_normalize=1`` scales, rolling_mean, rolling_variance, then
  ``filters * channels/groups * size * size`` weights (``[filters, channels/groups, size, size]``, torch's layout;
  ``flipped=1`` stores them transposed); ``[connected]``: biases then ``outputs * inputs`` weights
  (``[outputs, inputs]``, or ``[inputs, outputs]`` under a transposed header). No other supported layer has any.

Darknet itself stops quietly at the end of a short file and ignores what follows the last layer; here both are
errors (a truncated download, or weights for another cfg), located at the byte and the cfg layer. Reading needs
numpy only; :func:`spec_state_dict` needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from .darknet import DarknetImport, StoredLayer
from .graph import INPUT, ImportFailure, Location, Problem, check_holder_count, tensor_holders

VERSION_BYTES = 12
"""major, minor, revision."""
TRANSPOSED = 1000
"""Darknet's rule: a major or minor above this marks a file with transposed [connected] weights."""


@dataclass(frozen=True)
class Segment:
    """One array of a layer's record, in file order: Darknet's name for it and the spec tensor it fills."""

    name: str
    """Darknet's: biases, scales, rolling_mean, rolling_variance, weights."""
    step: int
    """The step of the unit whose module holds the tensor."""
    tensor: str
    """The tensor's name on that module (torch's: weight, bias, running_mean, running_var)."""
    shape: tuple[int, ...]
    """The spec tensor's shape."""
    stored: tuple[int, int] | None = None
    """Stored as this matrix, transposed (``flipped=1`` convolutions)."""
    transposable: bool = False
    """Stored transposed when the header says so (``[connected]`` weights)."""

    @property
    def count(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A ``.weights`` file's header, as read."""

    major: int
    minor: int
    revision: int
    seen: int
    """Images the network was trained on."""
    size: int
    """Header bytes (16 or 20)."""

    @property
    def transposed(self) -> bool:
        return self.major > TRANSPOSED or self.minor > TRANSPOSED

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}"


@dataclass
class DarknetWeights:
    """What a ``.weights`` file held: per stored layer (in :attr:`DarknetImport.stored` order), step -> tensor name
    -> array; warnings for values that are there but suspect (NaN, a negative variance)."""

    header: Header
    arrays: list[dict[int, dict[str, np.ndarray]]]
    floats: int
    warnings: list[str] = field(default_factory=list)


def layout(imported: DarknetImport) -> list[list[Segment]]:
    """Per stored layer, the arrays its record holds in file order. Call after the graph's shapes are inferred."""
    graph = imported.graph
    result = []
    for layer in imported.stored:
        unit = graph.units[layer.unit]
        source = unit.inputs[0]
        shape = graph.input_shape if source == INPUT else graph.units[source].shape
        result.append(_segments(layer, shape))
    return result


def _segments(layer: StoredLayer, input_shape: tuple[int, ...]) -> list[Segment]:
    n = layer.outputs
    main = layer.main
    bias = layer.norm if layer.norm is not None else main
    segments = [Segment("biases", bias, "bias", (n,))]
    if layer.norm is not None:
        segments += [
            Segment("scales", layer.norm, "weight", (n,)),
            Segment("rolling_mean", layer.norm, "running_mean", (n,)),
            Segment("rolling_variance", layer.norm, "running_var", (n,)),
        ]
    if layer.kind == "convolutional":
        per_filter = input_shape[0] // layer.groups
        shape = (n, per_filter, layer.size, layer.size)
        stored = (per_filter * layer.size * layer.size, n) if layer.flipped else None
        segments.append(Segment("weights", main, "weight", shape, stored))
    else:
        segments.append(Segment("weights", main, "weight", (n, prod(input_shape)), transposable=True))
    return segments


def read_darknet_weights(path: str | Path, imported: DarknetImport) -> DarknetWeights:
    """Read a ``.weights`` file for the imported cfg (shapes inferred). Raises :class:`ImportFailure`, located at
    the file's byte and the cfg's layer; ``OSError`` when it cannot be read."""
    file = str(path)
    refused = [p for layer in imported.stored for p in layer.refused]
    if refused:
        raise ImportFailure([Problem(p.location, f"reading weights: {p.message}", p.code) for p in refused])
    plan = layout(imported)
    total = sum(s.count for segments in plan for s in segments)
    size = Path(path).stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(VERSION_BYTES + 8)
    header = _header(file, head, size, total)
    _check_size(file, imported, plan, header, size, total)
    data = np.fromfile(file, dtype="<f4", count=total, offset=header.size)
    arrays: list[dict[int, dict[str, np.ndarray]]] = []
    warnings: list[str] = []
    offset = 0
    for layer, segments in zip(imported.stored, plan, strict=True):
        steps: dict[int, dict[str, np.ndarray]] = {}
        for segment in segments:
            flat = data[offset : offset + segment.count]
            offset += segment.count
            if segment.stored is not None:
                array = flat.reshape(segment.stored).T.reshape(segment.shape)
            elif segment.transposable and header.transposed:
                array = flat.reshape(segment.shape[::-1]).T
            else:
                array = flat.reshape(segment.shape)
            steps.setdefault(segment.step, {})[segment.tensor] = np.ascontiguousarray(array)
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                warnings.append(f"{_where(layer)}: {bad:,} of its {segment.name} are NaN or infinite")
            if segment.name == "rolling_variance" and np.any(array < 0):
                warnings.append(f"{_where(layer)}: a negative rolling_variance (its outputs will be NaN)")
        arrays.append(steps)
    return DarknetWeights(header, arrays, total, warnings)


def _where(layer: StoredLayer) -> str:
    return f"layer {layer.index} [{layer.kind}] ({layer.location.file}:{layer.location.line})"


def _header(file: str, head: bytes, size: int, total: int) -> Header:
    def fail(message: str) -> ImportFailure:
        return ImportFailure([Problem(Location(file, None, "header"), message)])

    if size == 0:
        raise fail("the file is empty: not a Darknet .weights file")
    if len(head) < VERSION_BYTES:
        raise fail(
            f"{size} bytes: too short for a Darknet .weights header (3 int32 of version, then a counter)"
        )
    major, minor, revision = (int(v) for v in np.frombuffer(head[:VERSION_BYTES], dtype="<i4"))
    transposed = major > TRANSPOSED or minor > TRANSPOSED
    if not transposed and not (major == 0 and 0 <= minor <= 2 and revision >= 0):
        raise fail(
            f"version {major}.{minor}.{revision} is not one Darknet writes (0.0, 0.1 and 0.2 with any revision, "
            f"or a major or minor above {TRANSPOSED} for transposed [connected] weights): not a .weights file?"
        )
    if transposed:
        # pjreddie reads a 32-bit counter here, AlexeyAB a 64-bit one: the file's size tells which wrote it.
        widths = [w for w in (4, 8) if VERSION_BYTES + w + 4 * total == size] or [4]
        width = widths[0]
    else:
        width = 8 if major * 10 + minor >= 2 else 4
    if len(head) < VERSION_BYTES + width:
        raise fail(
            f"the file ends inside the header: version {major}.{minor} has a {8 * width}-bit counter, "
            f"{VERSION_BYTES + width} bytes in all; the file has {size}"
        )
    seen = int(
        np.frombuffer(head[VERSION_BYTES : VERSION_BYTES + width], dtype="<u8" if width == 8 else "<u4")[0]
    )
    return Header(major, minor, revision, seen, VERSION_BYTES + width)


def _check_size(
    file: str, imported: DarknetImport, plan: list[list[Segment]], header: Header, size: int, total: int
) -> None:
    """A file whose size is not the header plus the cfg's floats: say where it ends or what is left over."""
    expected = header.size + 4 * total
    if size == expected:
        return
    if size > expected:
        extra = size - expected
        last = f"after {_where(imported.stored[-1])}" if imported.stored else "(this cfg has no weights)"
        raise ImportFailure(
            [
                Problem(
                    Location(file, None, f"byte {expected:,}"),
                    f"{extra:,} bytes left over {last}: the cfg needs {total:,} floats after the "
                    f"{header.size}-byte header; weights for another cfg (or for another --input, with a "
                    "[connected] layer)?",
                )
            ]
        )
    left = (size - header.size) // 4
    offset = 0
    for index, (layer, segments) in enumerate(zip(imported.stored, plan, strict=True)):
        need = sum(s.count for s in segments)
        if offset + need > left:
            byte = header.size + 4 * offset
            if offset == left and index > 0 and size == byte:
                message = (
                    f"the file ends after {_where(imported.stored[index - 1])}: the {len(plan) - index} layers "
                    f"from {_where(layer)} on ({total - offset:,} floats) are not in it (a partial file such as "
                    "darknet53.conv.74 holds only the first layers)"
                )
            else:
                parts = ", ".join(f"{s.name} {s.count:,}" for s in segments)
                message = (
                    f"the file ends inside {_where(layer)}: it needs {need:,} floats ({parts}), "
                    f"{size - byte:,} bytes are left; a truncated file, or weights for another cfg"
                )
                if expected - size == 4 and header.size == VERSION_BYTES + 8:
                    message += f" (exactly 4 bytes short: version {header.version} with a 32-bit counter?)"
            raise ImportFailure([Problem(Location(file, None, f"byte {byte:,}"), message)])
        offset += need
    raise AssertionError("unreachable: a short file ends inside some layer")  # pragma: no cover


def spec_state_dict(imported: DarknetImport, weights: DarknetWeights, network: Any) -> dict[str, Any]:
    """The file's arrays under the spec's state_dict keys (torch tensors).

    The spec registers its layers in the order the import wrote them, which is the cfg's order, so the modules
    holding tensors pair one to one, in order, with the conv / bn / linear steps of the stored layers; within a
    module each tensor is found by its torch name, its shape checked."""
    import torch

    spec = network.to_torch().state_dict()
    holders = tensor_holders(spec)
    steps = [
        (layer, step, tensors)
        for layer, arrays in zip(imported.stored, weights.arrays, strict=True)
        for step, tensors in sorted(arrays.items())
    ]
    check_holder_count(imported.graph.source, len(steps), len(holders), "cfg layer steps")
    state: dict[str, Any] = {}
    for (layer, _, tensors), keys in zip(steps, holders, strict=True):
        names = {key.rsplit(".", 1)[1]: key for key in keys}
        names.pop("num_batches_tracked", None)
        fits = set(names) == set(tensors) and all(
            tuple(tensors[name].shape) == tuple(spec[key].shape) for name, key in names.items()
        )
        if not fits:
            found = {name: list(array.shape) for name, array in tensors.items()}
            raise ImportFailure(
                [Problem(layer.location, f"internal error: {keys[0].rsplit('.', 1)[0]} does not fit {found}")]
            )
        for key in keys:
            name = key.rsplit(".", 1)[1]
            state[key] = (
                torch.zeros_like(spec[key]) if name not in tensors else torch.from_numpy(tensors[name].copy())
            )
    return state
