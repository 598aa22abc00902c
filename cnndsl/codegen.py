"""Standalone Python source for a network: one readable file that imports only torch.

The file defines the model class (named after the network), the :mod:`cnndsl.runtime` functions it calls (their
source copied with :mod:`inspect`), and a ``__main__`` smoke run. It uses the lowering plan of
:mod:`cnndsl.backend`, so an instance has the same ``state_dict`` keys, and with the same weights the same
outputs, as ``Network.to_torch()``.

Spec text reaches the output only in two forms: names passed through :func:`cnndsl.backend.identifier` (legal
ASCII identifiers) and ``#`` comments reduced to printable characters (no line breaks). Argument values are
rendered as Python literals from checked types, never pasted.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from collections.abc import Iterable
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


def generate(network: Network, logits: bool = False, source: str | None = None) -> str:
    """The standalone module's source text. ``source`` (the spec's file name) is mentioned in a comment."""
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
    if class_name in runtime_names or class_name in {"torch", "nn"}:
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


__all__ = ["Step", "comment", "generate", "literal"]
