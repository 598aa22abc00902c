"""Stage 4, lower: a checked :class:`~cnndsl.network.Network` -> an executable ``torch.fx.GraphModule``.

The graph is built in node (source) order: one ``placeholder`` per declared input, one ``call_module`` per layer
whose registry lowering is a :class:`~cnndsl.ops.TorchModule`, one ``call_function`` per
:class:`~cnndsl.ops.TorchFunction` (a :mod:`cnndsl.runtime` function), and an ``output`` holding one tensor or a
tuple. Submodules are registered in node order, so ``state_dict()`` lists tensors in the order the spec writes
its layers, which is what :func:`cnndsl.load_weights` relies on to load other frameworks' checkpoints by order.

Layers keep their torch default initialisation (``reset_parameters`` of each ``torch.nn`` class); nothing here
re-initialises weights.

The lowering plan (:func:`plan`) is plain data shared with the standalone-source generator
(:mod:`cnndsl.codegen`), so both produce the same submodule names, hence the same ``state_dict`` keys.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from . import ops
from .network import Network, Node, torch_name
from .ops import PROBABILITIES, Lowering, Placeholder, TorchFunction, TorchModule, TorchParameter

if TYPE_CHECKING:
    import torch.fx


@dataclass(frozen=True)
class Step:
    """One lowered layer: the network node, its lowering, and the submodule name (``target``) of a module."""

    node: Node
    lowering: Lowering
    target: str
    """Qualified submodule (or parameter) name (``Stage_1.Basic_0.conv_1``) for a TorchModule or a TorchParameter;
    the runtime function's name for a TorchFunction."""


@dataclass(frozen=True)
class Plan:
    """Everything both the fx lowering and the standalone generator need, with every spec-derived name already
    turned into a legal, unique Python identifier."""

    class_name: str
    inputs: tuple[tuple[int, str], ...]
    """(node id, argument name) per declared input, in declaration order."""
    steps: tuple[Step, ...]
    outputs: tuple[int, ...]
    """Node ids returned by forward, in the spec's order (after ``logits`` dropped trailing softmaxes)."""
    paths: dict[str, str]
    """Submodule name -> the node path it came from, for messages (``Stage.1/Basic.0/conv.1``)."""


_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


def identifier(text: str, fallback: str = "_") -> str:
    """A legal, non-keyword ASCII Python identifier derived from ``text``.

    Names from a spec are identifiers already (the grammar insists), so for them this is the identity; it exists
    because a :class:`Network` can be built by hand, and because generated source must never carry text that
    was not checked."""
    name = _NOT_IDENTIFIER.sub("_", text) or fallback
    if name[0].isdigit():
        name = "_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


@cache
def _reserved_attributes() -> frozenset[str]:
    """Attribute names a submodule must not take: those of ``torch.nn.Module`` and ``torch.fx.GraphModule``
    (``training``, ``forward``, ``graph``, ``code``, ``meta`` ...)."""
    import torch
    import torch.fx

    graph = torch.fx.Graph()
    graph.output(graph.placeholder("x"))
    module = torch.fx.GraphModule(torch.nn.Module(), graph)
    return frozenset(dir(module)) | frozenset(dir(torch.nn.Module())) | frozenset(vars(module))


def _class_name(name: str) -> str:
    return identifier(name, "Network")


def plan(network: Network, logits: bool = False) -> Plan:
    """Decide the submodule name, lowering and inputs of every layer; pure data, no modules are built.

    ``logits=True`` returns the input of every output whose op turns scores into probabilities (softmax) instead,
    and drops that op when nothing else reads it."""
    reserved = _reserved_attributes()
    consumers: dict[int, int] = {}
    for node in network.nodes:
        for source in node.inputs:
            consumers[source] = consumers.get(source, 0) + 1
    outputs: list[int] = []
    dropped: set[int] = set()
    for tensor in network.outputs:
        node = network.nodes[tensor.node]
        if logits and ops.has_trait(node.op, PROBABILITIES):
            outputs.append(node.inputs[0])
            if not consumers.get(node.id):
                dropped.add(node.id)
        else:
            outputs.append(node.id)
    # A softmax still returned by another output is not dropped.
    dropped -= set(outputs)

    # Sanitised names per parent container: {parent: {original component: name}}; names stay unique per parent.
    children: dict[str, dict[str, str]] = {}
    taken: dict[str, set[str]] = {}

    def component(parent: str, original: str) -> str:
        chosen = children.setdefault(parent, {})
        if original in chosen:
            return chosen[original]
        used = taken.setdefault(parent, set())
        name = identifier(original, "layer")
        while name in reserved:
            name += "_"
        base, suffix = name, 1
        while name in used:
            name = f"{base}_{suffix}"
            suffix += 1
        used.add(name)
        chosen[original] = name
        return name

    steps: list[Step] = []
    paths: dict[str, str] = {}
    for node in network.nodes:
        if node.id in dropped:
            continue
        opdef = ops.REGISTRY[node.op]
        lowering = opdef.torch(list(node.input_shapes), node.shape, node.args)
        if isinstance(lowering, Placeholder):
            continue  # a forward argument, from network.inputs below
        if isinstance(lowering, TorchModule | TorchParameter):
            parent = ""
            for part in torch_name(node.path).split("."):
                parent = f"{parent}.{component(parent, part)}" if parent else component(parent, part)
            target = parent
            if target in paths:  # two nodes with one path: only a hand-built Network can do this
                raise ValueError(f"two layers share the path {node.path!r}")
            paths[target] = node.path
        else:
            target = lowering.name
        steps.append(Step(node, lowering, target))

    inputs: list[tuple[int, str]] = []
    used_args = {"self", "torch"}  # fx-generated forward code reads the global `torch`
    for tensor in network.inputs:
        name = identifier(tensor.name, "input")
        base, suffix = name, 1
        while name in used_args:
            name = f"{base}_{suffix}"
            suffix += 1
        used_args.add(name)
        inputs.append((tensor.node, name))
    return Plan(_class_name(network.name), tuple(inputs), tuple(steps), tuple(outputs), paths)


def module_class(lowering: TorchModule) -> type[torch.nn.Module]:
    """The class a TorchModule lowering names: ``torch.nn.<cls>``, or ``cnndsl.runtime.<cls>`` for home="runtime"."""
    import torch

    from . import runtime

    home, where = (runtime, "cnndsl.runtime") if lowering.home == "runtime" else (torch.nn, "torch.nn")
    cls = getattr(home, lowering.cls, None)
    if lowering.cls.startswith("_") or not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"registry lowering names {where}.{lowering.cls}, which is not a module class")
    return cls


def build_module(lowering: TorchModule) -> torch.nn.Module:
    """Instantiate the lowering's module class with its kwargs (torch's default initialisation)."""
    return module_class(lowering)(**lowering.kwargs)


def build_parameter(lowering: TorchParameter) -> torch.nn.Parameter:
    """A parameter of the lowering's shape, every element its ``init``."""
    import torch

    return torch.nn.Parameter(torch.full(lowering.shape, float(lowering.init)))


def runtime_function(lowering: TorchFunction) -> object:
    """The :mod:`cnndsl.runtime` function a TorchFunction lowering names."""
    from . import runtime

    function = getattr(runtime, lowering.name, None)
    if function is None or not callable(function) or lowering.name.startswith("_"):
        raise ValueError(f"registry lowering names cnndsl.runtime.{lowering.name}, which does not exist")
    return function


def _attach(root: torch.nn.Module, target: str, module: torch.nn.Module | torch.nn.Parameter) -> None:
    import torch

    *prefix, last = target.split(".")
    parent = root
    for part in prefix:
        child = parent._modules.get(part)
        if child is None:
            child = torch.nn.Module()
            parent.add_module(part, child)
        parent = child
    if isinstance(module, torch.nn.Parameter):
        # On the block's own module: state_dict lists a module's parameters before its children's, as torch
        # lists a block's own parameters (ConvNeXt's layer_scale) before its layers.
        parent.register_parameter(last, module)
    else:
        parent.add_module(last, module)


def to_torch(network: Network, logits: bool = False) -> torch.fx.GraphModule:
    """Lower a checked network to a ``torch.fx.GraphModule`` named after the network.

    ``forward`` takes the inputs in declaration order, as (N, C, H, W) or (N, F) tensors, and returns the output,
    or a tuple when the spec returns several. ``logits=True`` drops a trailing softmax. Each fx node's
    ``meta["cnndsl_node"]`` holds the id of the network node it computes; ``module.meta["cnndsl_paths"]`` maps
    submodule names to node paths.
    """
    import torch
    import torch.fx

    lowered = plan(network, logits)
    # Modules are attached to a root in node order; GraphModule then copies them in graph (= node) order. A
    # dict root would not do: GraphModule sorts dict targets by depth, which reorders the state_dict.
    root = torch.nn.Module()
    graph = torch.fx.Graph()
    values: dict[int, torch.fx.Node] = {}
    for node_id, name in lowered.inputs:
        values[node_id] = graph.placeholder(name)
        values[node_id].meta["cnndsl_node"] = node_id
    for step in lowered.steps:
        args = tuple(values[source] for source in step.node.inputs)
        if isinstance(step.lowering, TorchModule):
            _attach(root, step.target, build_module(step.lowering))
            value = graph.call_module(step.target, args)
        elif isinstance(step.lowering, TorchParameter):
            _attach(root, step.target, build_parameter(step.lowering))
            # Every other tensor has a batch dimension: read the parameter as a batch of one.
            value = graph.call_method("unsqueeze", (graph.get_attr(step.target), 0))
        else:
            assert isinstance(step.lowering, TorchFunction)
            function = runtime_function(step.lowering)
            value = graph.call_function(function, args, dict(step.lowering.kwargs))  # type: ignore[arg-type]
        value.meta["cnndsl_node"] = step.node.id
        values[step.node.id] = value
    results = [values[node_id] for node_id in lowered.outputs]
    graph.output(results[0] if len(results) == 1 else tuple(results))
    graph.lint()
    module = torch.fx.GraphModule(root, graph, class_name=lowered.class_name)
    module.meta["cnndsl_paths"] = dict(lowered.paths)
    return module
