"""Standalone Python source for a network: one readable file that imports only torch.

The file defines the model class (named after the network), the :mod:`cnndsl.runtime` functions it calls (their
source copied with :mod:`inspect`), and a ``__main__`` smoke run. It uses the lowering plan of
:mod:`cnndsl.backend`, so an instance has the same ``state_dict`` keys, and with the same weights the same
outputs, as ``Network.to_torch()``.

Spec text reaches the output only in two forms: names passed through :func:`cnndsl.backend.identifier` (legal
ASCII identifiers) and ``#`` comments reduced to printable characters (no line breaks). Argument values are
rendered as Python literals from checked types, never pasted.

Given a :class:`Deployment` (trained weights' classes and normalization, from a run folder), the file also
carries what inference needs besides the weights: ``CLASSES``, ``MEAN``, ``STD``, ``PIXEL_SCALE``, a
``preprocess`` function, a ``Normalized`` wrapper with the buffers of :func:`cnndsl.export.with_normalization`,
and ``load(weights_path)``, which reads a ``.safetensors`` file (without the safetensors package) or a torch
checkpoint and returns the model ready for raw pixels.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import __version__, ops
from .backend import Plan, Step, identifier, module_class, plan
from .network import Network
from .ops import TorchFunction, TorchModule, TorchParameter, fmt_shape

_COMMENT_LIMIT = 200


def comment(text: str) -> str:
    """Text safe inside a ``#`` comment: printable characters only (line breaks, NUL and the like become ``?``)."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= _COMMENT_LIMIT else cleaned[: _COMMENT_LIMIT - 1] + "…"


def literal(value: Any) -> str:
    """A Python literal for a lowering argument; raises ``TypeError`` for anything but plain data."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(float(value))
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, tuple | list):
        items = ", ".join(literal(v) for v in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} as a literal")


def _kwargs(kwargs: dict[str, Any]) -> str:
    parts = []
    for key, value in kwargs.items():
        if not key.isidentifier():
            raise ValueError(f"argument name {key!r} is not an identifier")
        parts.append(f"{key}={literal(value)}")
    return ", ".join(parts)


def _same(value: Any, default: Any) -> bool:
    """Whether an argument equals the constructor default (an int default stands for (d, d))."""
    if value == default and type(value) is type(default):
        return True
    if isinstance(value, tuple) and isinstance(default, int) and not isinstance(default, bool):
        return all(v == default and not isinstance(v, bool) for v in value)
    return False


def _explicit(lowering: TorchModule) -> dict[str, Any]:
    """The arguments that differ from the module class's defaults: what a reader needs to see."""
    kwargs = lowering.kwargs
    try:
        parameters = inspect.signature(module_class(lowering)).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    return {
        key: value
        for key, value in kwargs.items()
        if key not in parameters
        or parameters[key].default is inspect.Parameter.empty
        or not _same(value, parameters[key].default)
    }


def _runtime_sources(names: Iterable[str]) -> dict[str, str]:
    """{name: source} of the named runtime functions and classes and of every runtime function they call, in
    first-use order."""
    from . import runtime

    order: list[str] = []
    pending = list(names)
    while pending:
        name = pending.pop(0)
        if name in order:
            continue
        item = getattr(runtime, name, None)
        if not (inspect.isfunction(item) or inspect.isclass(item)) or item.__module__ != runtime.__name__:
            raise ValueError(f"cnndsl.runtime has no function or class {name!r}")
        order.append(name)
        if inspect.isfunction(item):
            pending.extend(n for n in item.__code__.co_names if inspect.isfunction(getattr(runtime, n, None)))
    return {name: textwrap.dedent(inspect.getsource(getattr(runtime, name))).rstrip() for name in order}


def _mangled(part: str) -> bool:
    """Python rewrites ``__name`` inside a class body (name mangling), so such parts need getattr/setattr."""
    return part.startswith("__") and not part.endswith("__")


def _attribute(path: str) -> str:
    """``Stage_1.Basic_0.conv_1`` -> ``self.Stage_1.Basic_0.conv_1`` (every part already an identifier)."""
    if not all(part.isidentifier() for part in path.split(".")):
        raise ValueError(f"submodule name {path!r} is not a dotted identifier")
    expression = "self"
    for part in path.split("."):
        expression = f'getattr({expression}, "{part}")' if _mangled(part) else f"{expression}.{part}"
    return expression


def _assignment(path: str, value: str) -> str:
    """A statement that registers ``value`` as the submodule ``path``."""
    parent, _, last = path.rpartition(".")
    owner = _attribute(parent) if parent else "self"
    if _mangled(last):
        return f'setattr({owner}, "{last}", {value})'
    return f"{owner}.{last} = {value}"


def _constructor_lines(lowered: Plan) -> list[str]:
    lines: list[str] = []
    containers: set[str] = set()
    for step in lowered.steps:
        if not isinstance(step.lowering, TorchModule | TorchParameter):
            continue
        parts = step.target.split(".")
        for depth in range(1, len(parts)):
            container = ".".join(parts[:depth])
            if container not in containers:
                containers.add(container)
                where = "/".join(step.node.path.split("/")[:depth])
                lines.append(f"{_assignment(container, 'nn.Module()')}  # {comment(where)}")
        label = ops.REGISTRY[step.node.op].label(step.node.args)
        if isinstance(step.lowering, TorchParameter):
            shape, init = literal(tuple(step.lowering.shape)), literal(float(step.lowering.init))
            lines.append(
                f"{_assignment(step.target, f'nn.Parameter(torch.full({shape}, {init}))')}  # {comment(label)}"
            )
            continue
        cls = step.lowering.cls
        if not cls.isidentifier():
            raise ValueError(f"module class name {cls!r} is not an identifier")
        prefix = "" if step.lowering.home == "runtime" else "nn."
        module = f"{prefix}{cls}({_kwargs(_explicit(step.lowering))})"
        lines.append(f"{_assignment(step.target, module)}  # {comment(label)}")
    return lines


def _forward_lines(network: Network, lowered: Plan, reserved: set[str]) -> tuple[list[str], list[str]]:
    """(argument names, body lines). A value read only by the very next step lives in one running variable
    (``x``); the rest get names of their own."""
    readers: dict[int, set[int]] = {}
    for step in lowered.steps:
        for source in step.node.inputs:
            readers.setdefault(source, set()).add(step.node.id)
    outputs = set(lowered.outputs)
    used = set(reserved) | {"self", "torch", "nn"}
    names: dict[int, str] = {}
    arguments: list[str] = []
    for node_id, name in lowered.inputs:
        while name in used:  # an input named like a runtime function or the class
            name += "_"
        names[node_id] = name
        arguments.append(name)
        used.add(name)

    def fresh(base: str) -> str:
        name, suffix = base, 1
        while name in used:
            name = f"{base}_{suffix}"
            suffix += 1
        used.add(name)
        return name

    # The running value of a straight chain: `x`, unless an input already has that name.
    chain = fresh(next((c for c in ("x", "h", "out") if c not in used), "x"))

    body: list[str] = []
    for index, step in enumerate(lowered.steps):
        node = step.node
        args = ", ".join(names[source] for source in node.inputs)
        if isinstance(step.lowering, TorchModule):
            call = f"{_attribute(step.target)}({args})"
        elif isinstance(step.lowering, TorchParameter):
            call = f"{_attribute(step.target)}.unsqueeze(0)"  # a batch of one, like every other tensor
        else:
            assert isinstance(step.lowering, TorchFunction)
            extra = _kwargs(dict(step.lowering.kwargs))
            call = f"{identifier(step.lowering.name)}({args}{', ' + extra if extra else ''})"
        following = lowered.steps[index + 1].node.id if index + 1 < len(lowered.steps) else None
        if node.id not in outputs and readers.get(node.id, set()) <= {following}:
            name = chain
        else:
            name = fresh(identifier(node.path.replace("/", "_").replace(".", "_").lower(), "t"))
        names[node.id] = name
        body.append(f"{name} = {call}  # {comment(node.path)}: {fmt_shape(node.shape)}")
    results = [names[node_id] for node_id in lowered.outputs]
    body.append(f"return {results[0]}" if len(results) == 1 else f"return {', '.join(results)}")
    return arguments, body


@dataclass(frozen=True)
class Deployment:
    """What trained weights need besides themselves to classify raw pixels, as training recorded it."""

    classes: list[str]
    """Class names, in the order of the model's outputs."""
    mean: list[float]
    """Per-channel mean of the training images, in the training data's pixel scale."""
    std: list[float]
    pixel_max: float = 255.0
    """The training data's white: raw pixels (0..255) are scaled by ``pixel_max / 255`` before normalizing."""
    weights: str | None = None
    """The weights file written beside the module, named in its docstring (a hint, not read by the file)."""


# The deployment part of a standalone file. ``__MODEL__`` is replaced by the model class's name (a sanitised
# identifier); the constants above it are written with :func:`literal`.
_DEPLOY_CODE = '''

def preprocess(pixels: torch.Tensor) -> torch.Tensor:
    """Raw pixels (N x C x H x W, 0..255, already resized to the input size) -> the normalized input the model
    was trained on. ``Normalized`` (what ``load`` returns) does this itself."""
    mean = torch.tensor(MEAN, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    inv_std = 1.0 / torch.tensor(STD, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    return (pixels.float() * PIXEL_SCALE - mean) * inv_std


class Normalized(nn.Module):
    """The trained model behind its training normalization: takes raw pixels (0..255) and returns its output.
    Its buffers are those of cnndsl.export.with_normalization, so state_dicts are interchangeable."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(PIXEL_SCALE, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(MEAN, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(STD, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels.float() * self.scale - self.mean) * self.inv_std)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """The state_dict in ``path``: a .safetensors file (read here: 8-byte little-endian header size, a JSON
    header, then the tensors' bytes), or a torch file (a state_dict or a cnndsl checkpoint, loaded with
    weights_only=True, so it never runs code)."""
    if not str(path).endswith(".safetensors"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        inner = state.get("model") if isinstance(state, dict) else None
        return inner if isinstance(inner, dict) else state
    with open(path, "rb") as handle:
        data = handle.read()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    body = memoryview(data)[8 + size :]
    tensors = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        # A copy (bytearray): the tensor owns writable memory; frombuffer refuses an empty buffer.
        raw = bytearray(body[begin:end])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[key] = flat.reshape(entry["shape"])
    return tensors


def load(weights_path: str, device: str = "cpu") -> Normalized:
    """The trained model in eval mode, taking raw pixels: ``load(path)(pixels).argmax(1)`` indexes CLASSES."""
    model = __MODEL__()
    model.load_state_dict(read_weights(weights_path))
    return Normalized(model).to(device).eval()
'''
_DEPLOY_NAMES = {
    "CLASSES",
    "MEAN",
    "STD",
    "PIXEL_SCALE",
    "preprocess",
    "Normalized",
    "read_weights",
    "load",
    "json",
}


def _deploy_lines(deploy: Deployment, class_name: str) -> list[str]:
    if not (len(deploy.mean) == len(deploy.std) and all(s > 0 for s in deploy.std)):
        raise ValueError("a deployment needs one mean and one positive std per channel")
    where = literal(deploy.weights) if deploy.weights else '"weights.safetensors"'
    return [
        "",
        "# The trained model: its classes and the normalization it was trained with. Raw pixels in, scores out:",
        f"#     model = load({comment(where)}); model(pixels)  # pixels: N x C x H x W, 0..255, at the input size",
        f"CLASSES = {literal([str(c) for c in deploy.classes])}",
        f"MEAN = {literal(tuple(float(v) for v in deploy.mean))}  # per channel, in the training data's scale",
        f"STD = {literal(tuple(float(v) for v in deploy.std))}",
        f"PIXEL_SCALE = {literal(float(deploy.pixel_max) / 255.0)}  # raw 0..255 x PIXEL_SCALE = the training scale",
        *_DEPLOY_CODE.replace("__MODEL__", class_name).splitlines(),
    ]


def generate(
    network: Network, logits: bool = False, source: str | None = None, deploy: Deployment | None = None
) -> str:
    """The standalone module's source text. ``source`` (the spec's file name) is mentioned in a comment.
    ``deploy`` adds the trained model's classes, normalization and a ``load(weights_path)`` helper."""
    lowered = plan(network, logits)
    functions = sorted({s.lowering.name for s in lowered.steps if isinstance(s.lowering, TorchFunction)})
    classes = sorted(
        {
            s.lowering.cls
            for s in lowered.steps
            if isinstance(s.lowering, TorchModule) and s.lowering.home == "runtime"
        }
    )
    sources = _runtime_sources([*functions, *classes])
    runtime = list(sources.values())
    runtime_names = set(sources)
    class_name = lowered.class_name
    if (
        class_name in runtime_names
        or class_name in {"torch", "nn"}
        or (deploy and class_name in _DEPLOY_NAMES)
    ):
        class_name += "Model"
    arguments, body = _forward_lines(network, lowered, runtime_names | {class_name})
    shapes = ", ".join(
        f"{literal(name)}: {fmt_shape(network.nodes[node].shape)}" for node, name in lowered.inputs
    )
    returns = (
        "torch.Tensor"
        if len(lowered.outputs) == 1
        else f"tuple[{', '.join(['torch.Tensor'] * len(lowered.outputs))}]"
    )
    signature = ", ".join(f"{name}: torch.Tensor" for name in arguments)
    example = ", ".join(
        f"torch.randn(2, {', '.join(str(d) for d in network.nodes[node].shape)})"
        for node, _ in lowered.inputs
    )

    out: list[str] = [
        # The first two lines hold no spec text: a `coding:` comment there would change how Python decodes the file.
        f"# Generated by cnndsl {__version__}. Standalone: needs only torch. Regenerate rather than edit.",
        "# Submodule names match Network.to_torch(), so state_dicts are interchangeable.",
        f"# network: {comment(network.name)}" + (f"  (from {comment(source)})" if source else ""),
        f"# inputs: {comment(shapes)}  (each with a leading batch dimension)",
        f"# outputs: {comment(', '.join(f'{t.name}: {fmt_shape(t.shape)}' for t in network.outputs))}"
        + ("  (logits: trailing softmax dropped)" if logits else ""),
        "",
        "from __future__ import annotations",
        "",
        *(["import json", ""] if deploy else []),
        "import torch",
        "from torch import nn",
        "",
    ]
    for text in runtime:
        out += ["", text, ""]
    out += [
        "",
        f"class {class_name}(nn.Module):",
        '    """Layers are registered in the order the spec writes them; initialisation is torch\'s default."""',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *("        " + line for line in _constructor_lines(lowered)),
        "",
        f"    def forward(self{', ' if signature else ''}{signature}) -> {returns}:",
        *("        " + line for line in body),
        "",
        *(_deploy_lines(deploy, class_name) + [""] if deploy else []),
        "",
        'if __name__ == "__main__":',
        f"    model = {class_name}().eval()",
        "    with torch.no_grad():",
        f"        result = model({example})",
        "    results = result if isinstance(result, tuple) else (result,)",
        "    print(type(model).__name__, [tuple(r.shape) for r in results])",
        "",
    ]
    text = "\n".join(out)
    ast.parse(text)  # a generator bug must fail here, not in the user's hands
    return text


__all__ = ["Deployment", "Step", "comment", "generate", "literal"]
