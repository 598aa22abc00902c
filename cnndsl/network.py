"""The checked network: the single intermediate representation every later stage reads.

``Network.nodes`` is in source order, which is also a topological order and the order in which layers register
parameters when lowered. Each :class:`Node` carries its op, resolved arguments, hierarchical path, source span,
block-instantiation chain, ordered inputs and inferred shapes. ``Network.graph`` gives the same data as a
``networkx.DiGraph`` (built on first use, so the static path does not pay for importing networkx).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from . import ops
from .diagnostics import Frame, SourceMap, Span
from .ops import Shape

if TYPE_CHECKING:
    import networkx as nx
    import torch


def torch_name(path: str) -> str:
    """The torch submodule name for a node path: ``Stage.1/Basic.0/conv.1`` -> ``Stage_1.Basic_0.conv_1``.

    State-dict keys, ``--freeze`` patterns matched against modules, and the standalone file all use this."""
    return ".".join(part.replace(".", "_") for part in path.split("/"))


@dataclass(frozen=True)
class Node:
    """One layer, merge or input of the network."""

    id: int
    op: str
    """A registry op name (a declared input is the op ``input``, a block's ``param`` the op ``parameter``)."""
    args: dict[str, Any]
    """Resolved arguments: defaults filled, pairs as tuples, ``stride`` of pools filled from the kernel."""
    path: str
    """Hierarchical, unique name such as ``Stage.1/Basic.0/conv.1``."""
    span: Span
    frames: tuple[Frame, ...]
    """Block instantiations that led here, outermost first."""
    inputs: tuple[int, ...]
    """Ids of the nodes feeding this one, in argument (branch) order."""
    input_shapes: tuple[Shape, ...]
    shape: Shape
    """Output shape, batch dimension excluded."""

    @property
    def name(self) -> str:
        """The last path component (``conv.1``)."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Tensor:
    """A named network input or output."""

    name: str
    node: int
    shape: Shape


@dataclass
class Network:
    """A parsed, elaborated and shape-checked network."""

    name: str
    nodes: list[Node]
    inputs: list[Tensor]
    outputs: list[Tensor]
    span: Span
    sources: SourceMap = field(default_factory=SourceMap, repr=False)
    files: tuple[str, ...] = ()
    """Every file the spec was read from, the main one first (imports after it)."""

    @property
    def layers(self) -> list[Node]:
        """Every node except the declared inputs."""
        return [n for n in self.nodes if not ops.has_trait(n.op, ops.NETWORK_INPUT)]

    def node(self, path: str) -> Node:
        """The node with this path; raises ``KeyError`` naming close matches."""
        for node in self.nodes:
            if node.path == path:
                return node
        from .diagnostics import did_you_mean

        raise KeyError(f"no layer '{path}'{did_you_mean(path, [n.path for n in self.nodes])}")

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The network as a ``networkx.DiGraph``: node keys are ids, attribute ``node`` holds the :class:`Node`;
        each edge's ``ports`` lists the argument positions it feeds (a tensor may feed one merge twice)."""
        import networkx as nx

        graph = nx.DiGraph(name=self.name)
        for node in self.nodes:
            graph.add_node(node.id, node=node)
            for port, source in enumerate(node.inputs):
                if graph.has_edge(source, node.id):
                    graph.edges[source, node.id]["ports"].append(port)
                else:
                    graph.add_edge(source, node.id, ports=[port])
        return graph

    def to_torch(self, logits: bool = False) -> torch.nn.Module:
        """Lower to an executable ``torch.nn.Module`` (a ``torch.fx.GraphModule``).

        ``logits=True`` drops a trailing softmax so the module returns logits (for training).
        """
        from .backend import to_torch

        return to_torch(self, logits=logits)

    def _repr_svg_(self) -> str | None:
        """Jupyter shows a network as its diagram; ``None`` (the plain repr) where Graphviz's ``dot`` is missing."""
        from .render import repr_svg

        return repr_svg(self)
