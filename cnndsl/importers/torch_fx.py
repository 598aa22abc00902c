"""PyTorch modules to the importers' :class:`Graph`, traced with ``torch.fx``.

``SOURCE`` is a factory ``package.module:callable`` (``torchvision.models:resnet50``): it is called with no
arguments, traced with :func:`torch.fx.symbolic_trace`, and its nodes are run once on a sample input
(``ShapeProp``) so that reshapes can be recognised by what they do. Each module call, function and method maps to a
registry op; chains of single-use nodes share a line, and the module hierarchy names the blocks found
(``Bottleneck``). The weights of every mapped module are kept in graph order, so :func:`spec_state_dict` can give
them the spec's keys.

This module imports torch; only ``cnndsl import`` with a Python source loads it.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .. import ops
from .graph import (
    INPUT,
    Graph,
    ImportFailure,
    Location,
    Problem,
    Step,
    Unit,
    chain_concats,
    check_holder_count,
    fuse_followers,
    network_name,
    tensor_holders,
)

DEFAULT_INPUT = (3, 224, 224)


@dataclass
class TorchImport:
    """The graph, and per unit the source module behind each of its steps (None where a step has no weights)."""

    graph: Graph
    modules: list[list[nn.Module | None]] = field(default_factory=list)
    model: nn.Module | None = None


def load_factory(source: str) -> nn.Module:
    """Call ``package.module:callable`` and return the module it builds (in eval mode)."""
    location = Location(source)
    module_name, _, attribute = source.partition(":")
    if not module_name or not attribute:
        raise ImportFailure([Problem(location, "expected a factory as package.module:callable")])
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ImportFailure([Problem(location, f"cannot find {source}: {error}")]) from None
    if isinstance(target, nn.Module):
        model = target
    elif callable(target):
        try:
            model = target()
        except Exception as error:  # the factory is user code: any failure is reported, located at the source
            raise ImportFailure(
                [Problem(location, f"{source}() failed: {type(error).__name__}: {error}")]
            ) from None
    else:
        raise ImportFailure([Problem(location, f"{source} is neither a module nor a callable")])
    if not isinstance(model, nn.Module):
        raise ImportFailure(
            [Problem(location, f"{source}() returned {type(model).__name__}, not a torch module")]
        )
    return model.eval()


def import_torch(
    source: str | nn.Module, *, input_shape: tuple[int, ...] | None = None, partial: bool = False
) -> TorchImport:
    """Trace a module (or a factory naming one) into a :class:`Graph`. Raises :class:`ImportFailure`."""
    model = load_factory(source) if isinstance(source, str) else source.eval()
    label = source if isinstance(source, str) else type(source).__name__
    shape = tuple(input_shape) if input_shape is not None else DEFAULT_INPUT
    try:
        traced = fx.GraphModule(model, _Tracer_fx(autowrap_functions=_leaf_functions()).trace(model))
    except Exception as error:  # tracing runs user code; its failure is the user's to see, located
        raise ImportFailure(
            [
                Problem(
                    Location(label),
                    f"torch.fx cannot trace it: {type(error).__name__}: {error}",
                    "unsupported",
                )
            ]
        ) from None
    try:
        with torch.no_grad():
            ShapeProp(traced).propagate(torch.zeros(1, *shape))
    except Exception as error:
        raise ImportFailure(
            [Problem(Location(label), f"running it on an input of {list(shape)} failed: {error}")]
        ) from None
    name = label.rsplit(":", 1)[-1] if isinstance(source, str) else type(source).__name__
    graph = Graph(network_name(name), f"the PyTorch module {label}", "image", shape)
    if input_shape is None:
        graph.notes.append(f"Input {list(shape)}: the default; give --input for another.")
    return _Tracer(traced, graph, label, partial).run(model)


class _Tracer_fx(fx.Tracer):
    """torch.fx's tracer, keeping functions and modules that cnndsl has an op for as single calls (not traced
    through): torchvision's LayerNorm2d, StochasticDepth and Permute, besides torch.nn's own leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            type(m) in MODULES
            or type(m).__name__ == "Permute"
            or super().is_leaf_module(m, module_qualified_name)
        )


def _leaf_functions() -> tuple[Callable[..., Any], ...]:
    found: list[Callable[..., Any]] = []
    try:
        from torchvision.models.shufflenetv2 import channel_shuffle

        found.append(channel_shuffle)
    except ImportError:  # torchvision is optional: its leaf functions simply do not exist then
        pass
    return tuple(found)


class _Parameter(nn.Module):
    """A parameter the source keeps on a module directly (ConvNeXt's layer_scale), as the weights of one step."""

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(tensor.detach().clone())


@dataclass
class _Mapped:
    """What one fx node becomes: a step (or an alias when None), the inputs it reads, and its weights."""

    step: Step | None
    inputs: list[fx.Node]
    module: nn.Module | None = None
    merge: str | None = None
    nhwc: bool = False


class _Tracer:
    def __init__(self, traced: fx.GraphModule, graph: Graph, label: str, partial: bool) -> None:
        self.traced = traced
        self.graph = graph
        self.label = label
        self.partial = partial
        self.problems: list[Problem] = []
        self.units: dict[fx.Node, int] = {}
        self.modules: list[list[nn.Module | None]] = []
        self.nhwc: set[fx.Node] = set()
        """Nodes whose tensor is a channels-last view (between ConvNeXt's two Permutes)."""

    def run(self, model: nn.Module) -> TorchImport:
        outputs: list[int] = []
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                if INPUT in self.units.values():
                    self.problems.append(Problem(self._where(node), "only one input is supported"))
                self.units[node] = INPUT
            elif node.op == "output":
                outputs = [self.units[n] for n in _flat_nodes(node.args[0]) if n in self.units]
            elif node.op == "get_attr":
                continue  # parameters are read where they are used (channel_scale)
            elif _is_tensor(node):
                self._node(node)
        if self.problems:
            raise ImportFailure(self.problems)
        self.graph.outputs = outputs
        chain_concats(self.graph)
        fuse_followers(self.graph, self.modules, outputs)
        return TorchImport(self.graph, self.modules, model)

    def _where(self, node: fx.Node) -> Location:
        return Location(self.label, None, f"node {node.name} ({_describe(node, self.traced)})")

    def _node(self, node: fx.Node) -> None:
        try:
            mapped = self._map(node)
        except _Unsupported as error:
            if self.partial:
                source = next((n for n in _flat_nodes(node.args) if n in self.units), None)
                reads = self.units[source] if source is not None else INPUT
                unit = Unit(self._where(node), _describe(node, self.traced), [reads])
                unit.gap = str(error)
                self._add(node, unit, [None])
            else:
                self.problems.append(Problem(self._where(node), str(error), "unsupported"))
            return
        missing = [n for n in mapped.inputs if n not in self.units]
        if missing:
            self.problems.append(
                Problem(self._where(node), f"reads {missing[0].name}, which was not imported")
            )
            return
        inputs = [self.units[n] for n in mapped.inputs]
        if mapped.nhwc:
            self.nhwc.add(node)
        if mapped.step is None and mapped.merge is None:
            self.units[node] = inputs[0]  # an alias: identity, dropout in eval... nothing to write
            return
        unit = Unit(self._where(node), _describe(node, self.traced), inputs, merge=mapped.merge)
        unit.steps = [mapped.step] if mapped.step is not None else []
        unit.scope = _scope(node, self.graph.scope_classes)
        self._add(node, unit, [mapped.module] if mapped.step is not None else [])

    def _add(self, node: fx.Node, unit: Unit, modules: list[nn.Module | None]) -> None:
        unit.label = node.target if isinstance(node.target, str) and node.op == "call_module" else node.name
        self.units[node] = self.graph.add(unit)
        self.modules.append(modules)

    def _map(self, node: fx.Node) -> _Mapped:
        tensors = [n for n in _flat_nodes(node.args) if _is_tensor(n) and n.op != "get_attr"]
        parameters = [n for n in _flat_nodes(node.args) if n.op == "get_attr"]
        if parameters:
            return self._parameter_use(node, tensors, parameters)
        if node.op == "call_function" and node.target is operator.getitem:
            return self._getitem(node)
        if node.op == "call_module":
            module = self.traced.get_submodule(str(node.target))
            if type(module).__name__ == "Permute":
                return self._permute(node, list(getattr(module, "dims", [])), tensors)
            if tensors and tensors[0] in self.nhwc:
                return self._channels_last(module, node, tensors)
            rule = MODULES.get(type(module))
            if rule is None:
                raise _Unsupported(f"module {type(module).__name__} has no cnndsl op")
            step = rule(module, node)
            return _Mapped(step, tensors[:1], module if _has_state(module) else None)
        if node.op == "call_method" and node.target == "permute":
            return self._permute(node, [d for d in node.args[1:] if isinstance(d, int)], tensors)
        if node.op == "call_function" and node.target is torch.permute:
            return self._permute(node, list(_arg(node, 1, "dims", [])), tensors)
        rule_f = FUNCTIONS.get(node.target) if node.op == "call_function" else METHODS.get(str(node.target))
        if rule_f is None:
            raise _Unsupported(f"{node.op} {_target_name(node.target)} has no cnndsl op")
        return rule_f(node, tensors)

    def _permute(self, node: fx.Node, dims: list[int], tensors: list[fx.Node]) -> _Mapped:
        """NCHW <-> NHWC views around channel-wise layers (ConvNeXt): written as channel ops, no node."""
        source = tensors[0]
        if dims == [0, 2, 3, 1] and source not in self.nhwc:
            return _Mapped(None, [source], nhwc=True)
        if dims == [0, 3, 1, 2] and source in self.nhwc:
            return _Mapped(None, [source])
        raise _Unsupported(f"permute{tuple(dims)} (only NCHW <-> NHWC around channel-wise layers)")

    def _channels_last(self, module: nn.Module, node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
        if isinstance(module, nn.LayerNorm):
            if len(module.normalized_shape) != 1:
                raise _Unsupported(f"LayerNorm over {tuple(module.normalized_shape)} in channels-last")
            step = Step.of("layer_norm", eps=module.eps, affine=module.elementwise_affine)
        elif isinstance(module, nn.Linear):
            step = Step.of("channel_linear", features=module.out_features, bias=module.bias is not None)
        else:
            rule = MODULES.get(type(module))
            made = rule(module, node) if rule is not None else None
            if made is None or ops.REGISTRY[made.op].family != "activation":
                raise _Unsupported(f"{type(module).__name__} on a channels-last tensor")
            step = made
        return _Mapped(step, tensors[:1], module if _has_state(module) else None, nhwc=True)

    def _parameter_use(self, node: fx.Node, tensors: list[fx.Node], parameters: list[fx.Node]) -> _Mapped:
        """``parameter * x`` with a [C, 1, 1] parameter of a module: a channel_scale step holding it."""
        value = self.traced
        for part in str(parameters[0].target).split("."):
            value = getattr(value, part)
        multiply = node.target in (operator.mul, torch.mul) or node.target == "mul"
        if not multiply or len(tensors) != 1 or not isinstance(value, torch.Tensor) or value.dim() != 3:
            raise _Unsupported(f"a use of the parameter {parameters[0].target} other than scaling channels")
        if tuple(value.shape[1:]) != (1, 1):
            raise _Unsupported(f"a parameter of shape {list(value.shape)} (channel scales are [C, 1, 1])")
        init = float(value.detach().flatten()[0])
        return _Mapped(Step.of("channel_scale", init=init), tensors, _Parameter(value))

    def _getitem(self, node: fx.Node) -> _Mapped:
        """One part of ``x.chunk(k, dim=1)`` (ShuffleNet v2)."""
        source, index = node.args[0], node.args[1]
        if isinstance(source, fx.Node) and source.op == "call_method" and source.target == "chunk":
            chunks = int(_arg(source, 1, "chunks", 1))
            if int(_arg(source, 2, "dim", 0)) != 1:
                raise _Unsupported("chunk along another dimension than channels")
            tensor = source.args[0]
            assert isinstance(tensor, fx.Node)
            assert isinstance(index, int)
            return _Mapped(Step.of("chunk", chunks=chunks, index=index), [tensor])
        raise _Unsupported("indexing a tensor")


class _Unsupported(Exception):
    pass


# --------------------------------------------------------------------------------- module rules ---


def _pair(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return list(value) if value[0] != value[1] else value[0]
    return value


def _conv(module: nn.Conv2d, node: fx.Node) -> Step:
    if module.padding_mode != "zeros":
        raise _Unsupported(f"Conv2d padding_mode={module.padding_mode!r}")
    padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
    return Step.of(
        "conv",
        channels=module.out_channels,
        kernel=_pair(module.kernel_size),
        stride=_pair(module.stride),
        padding=padding,
        dilation=_pair(module.dilation),
        groups=module.groups,
        bias=module.bias is not None,
    )


def _conv_transpose(module: nn.ConvTranspose2d, node: fx.Node) -> Step:
    return Step.of(
        "conv_transpose",
        channels=module.out_channels,
        kernel=_pair(module.kernel_size),
        stride=_pair(module.stride),
        padding=_pair(module.padding),
        output_padding=_pair(module.output_padding),
        dilation=_pair(module.dilation),
        groups=module.groups,
        bias=module.bias is not None,
    )


def _bn(module: nn.BatchNorm2d, node: fx.Node) -> Step:
    if not module.affine or not module.track_running_stats:
        raise _Unsupported("BatchNorm2d without affine or running statistics")
    if module.momentum is None:
        raise _Unsupported("BatchNorm2d with momentum=None (a cumulative average)")
    return Step.of("bn", eps=module.eps, momentum=module.momentum)


def _pool(name: str) -> Callable[[Any, fx.Node], Step]:
    def rule(module: Any, node: fx.Node) -> Step:
        args: dict[str, Any] = {
            "kernel": _pair(module.kernel_size),
            "stride": _pair(module.stride),
            "padding": _pair(module.padding),
            "ceil": bool(module.ceil_mode),
        }
        if name == "maxpool":
            args["dilation"] = _pair(module.dilation)
        else:
            args["count_pad"] = bool(module.count_include_pad)
            if module.divisor_override is not None:
                raise _Unsupported("AvgPool2d divisor_override")
        return Step.of(name, **args)

    return rule


def _adaptive(name: str) -> Callable[[Any, fx.Node], Step]:
    def rule(module: Any, node: fx.Node) -> Step:
        size = module.output_size
        if isinstance(size, tuple | list) and None in size:
            raise _Unsupported(f"{type(module).__name__} with a None output size")
        return Step.of(name, size=_pair(size))

    return rule


def _linear(module: nn.Linear, node: fx.Node) -> Step:
    shape = _shape(node.args[0]) if isinstance(node.args[0], fx.Node) else None
    if shape is not None and len(shape) != 2:
        raise _Unsupported(f"Linear on a {len(shape)}-d tensor (cnndsl's linear takes [N, F])")
    return Step.of("linear", features=module.out_features, bias=module.bias is not None)


def _fixed(op: str, **args: Any) -> Callable[[Any, fx.Node], Step]:
    return lambda module, node: Step.of(op, **args)


def _softmax_module(module: nn.Softmax, node: fx.Node) -> Step:
    if module.dim not in (1, -1) or (module.dim == -1 and len(_shape(node) or ()) != 2):
        raise _Unsupported(f"Softmax over dim={module.dim} (cnndsl's softmax is over channels)")
    return Step.of("softmax")


def _flatten_module(module: nn.Flatten, node: fx.Node) -> Step:
    if module.start_dim != 1 or module.end_dim != -1:
        raise _Unsupported(f"Flatten({module.start_dim}, {module.end_dim})")
    return Step.of("flatten")


def _dropout(module: nn.Dropout, node: fx.Node) -> Step:
    return Step.of("dropout", p=float(module.p))


def _leaky(module: nn.LeakyReLU, node: fx.Node) -> Step:
    return Step.of("leaky_relu", slope=float(module.negative_slope))


def _gelu(module: nn.GELU, node: fx.Node) -> Step:
    if module.approximate != "none":
        raise _Unsupported("GELU(approximate='tanh')")
    return Step.of("gelu")


def _lrn(module: nn.LocalResponseNorm, node: fx.Node) -> Step:
    return Step.of(
        "lrn", size=module.size, alpha=float(module.alpha), beta=float(module.beta), k=float(module.k)
    )


def _group_norm(module: nn.GroupNorm, node: fx.Node) -> Step:
    return Step.of("group_norm", groups=module.num_groups, eps=module.eps, affine=module.affine)


def _upsample(module: nn.Upsample, node: fx.Node) -> Step:
    scale = module.scale_factor
    if (
        not isinstance(scale, int | float)
        or float(scale) != int(scale)
        or module.mode not in ("nearest", "bilinear")
    ):
        raise _Unsupported(f"Upsample(size={module.size}, scale_factor={scale}, mode={module.mode!r})")
    if module.mode == "bilinear" and module.align_corners:
        raise _Unsupported("Upsample with align_corners=True")
    return Step.of("upsample", scale=int(scale), mode=module.mode)


def _stochastic_depth(module: Any, node: fx.Node) -> Step:
    # torchvision computes the rates (0.2 * 3 / 8 = 0.07500000000000001): written as a person would, 0.075.
    return Step.of("stochastic_depth", p=round(float(module.p), 12), mode=str(module.mode))


def _layer_norm_module(module: nn.LayerNorm, node: fx.Node) -> Step:
    raise _Unsupported("LayerNorm outside a channels-last section (torchvision's LayerNorm2d is supported)")


MODULES: dict[type, Callable[[Any, fx.Node], Step | None]] = {
    nn.Conv2d: _conv,
    nn.ConvTranspose2d: _conv_transpose,
    nn.BatchNorm2d: _bn,
    nn.MaxPool2d: _pool("maxpool"),
    nn.AvgPool2d: _pool("avgpool"),
    nn.AdaptiveAvgPool2d: _adaptive("adaptive_avgpool"),
    nn.AdaptiveMaxPool2d: _adaptive("adaptive_maxpool"),
    nn.Linear: _linear,
    nn.ReLU: _fixed("relu"),
    nn.ReLU6: _fixed("relu6"),
    nn.LeakyReLU: _leaky,
    nn.Sigmoid: _fixed("sigmoid"),
    nn.Tanh: _fixed("tanh"),
    nn.SiLU: _fixed("silu"),
    nn.GELU: _gelu,
    nn.Hardswish: _fixed("hardswish"),
    nn.Hardsigmoid: _fixed("hardsigmoid"),
    nn.Softmax: _softmax_module,
    nn.Flatten: _flatten_module,
    nn.Dropout: _dropout,
    nn.LocalResponseNorm: _lrn,
    nn.GroupNorm: _group_norm,
    nn.Upsample: _upsample,
    nn.LayerNorm: _layer_norm_module,
}
try:  # torchvision's own layers, when it is installed
    from torchvision.models.convnext import LayerNorm2d
    from torchvision.ops import StochasticDepth

    MODULES[StochasticDepth] = _stochastic_depth
    MODULES[LayerNorm2d] = lambda module, node: Step.of(
        "layer_norm", eps=module.eps, affine=module.elementwise_affine
    )
except ImportError:
    pass
# Modules that compute nothing in eval: their output is their input.
for _alias in (nn.Identity,):
    MODULES[_alias] = lambda module, node: None


# ------------------------------------------------------------------------------ function rules ---


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _merge(name: str) -> Callable[[fx.Node, list[fx.Node]], _Mapped]:
    def rule(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
        if len(tensors) < 2:
            raise _Unsupported(
                f"{_target_name(node.target)} with a constant (only tensor merges are supported)"
            )
        shapes = {_shape(t) for t in tensors}
        if name == "add" and len(shapes) != 1:
            raise _Unsupported("add with broadcasting")
        return _Mapped(None, tensors, merge=name)

    return rule


def _cat(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
    if len(tensors) == 1:
        return _Mapped(None, tensors)  # torch.cat([x]) is x
    dim = _arg(node, 1, "dim", 0)
    if dim != 1:
        raise _Unsupported(f"cat along dim={dim} (concat joins channels)")
    return _Mapped(None, tensors, merge="concat")


def _flatten_function(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
    start = _arg(node, 1, "start_dim", 0)
    end = _arg(node, 2, "end_dim", -1)
    if start != 1 or end != -1:
        raise _Unsupported(f"flatten({start}, {end}) (cnndsl flattens everything but the batch)")
    return _Mapped(Step.of("flatten"), tensors[:1])


def _reshape(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
    before, after = _shape(tensors[0]), _shape(node)
    if before is None or after is None or len(after) != 2 or len(before) < 2:
        raise _Unsupported(
            f"{_target_name(node.target)} to {list(after or ())} (only flattening is supported)"
        )
    if len(before) == 2:
        return _Mapped(None, tensors[:1])
    return _Mapped(Step.of("flatten"), tensors[:1])


def _activation_function(op: str) -> Callable[[fx.Node, list[fx.Node]], _Mapped]:
    return lambda node, tensors: _Mapped(Step.of(op), tensors[:1])


def _adaptive_function(op: str) -> Callable[[fx.Node, list[fx.Node]], _Mapped]:
    def rule(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
        return _Mapped(Step.of(op, size=_pair(_arg(node, 1, "output_size", None))), tensors[:1])

    return rule


def _dropout_function(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
    return _Mapped(None, tensors[:1])  # F.dropout(training=self.training) is the identity in eval


def _mean(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
    dims = _arg(node, 1, "dim", None)
    keep = _arg(node, 2, "keepdim", False)
    if tuple(dims or ()) in ((2, 3), (-2, -1)) and not keep:
        return _Mapped(Step.of("gap"), tensors[:1])
    if tuple(dims or ()) in ((2, 3), (-2, -1)) and keep:
        return _Mapped(Step.of("adaptive_avgpool", size=1), tensors[:1])
    raise _Unsupported(f"mean over {dims}")


def _pool_function(op: str) -> Callable[[fx.Node, list[fx.Node]], _Mapped]:
    def rule(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
        kernel = _arg(node, 1, "kernel_size", None)
        stride = _arg(node, 2, "stride", None) or kernel
        args: dict[str, Any] = {
            "kernel": _pair(kernel),
            "stride": _pair(stride),
            "padding": _pair(_arg(node, 3, "padding", 0)),
            "ceil": bool(_arg(node, 4, "ceil_mode", False)),
        }
        if op == "avgpool":
            args["count_pad"] = bool(_arg(node, 5, "count_include_pad", True))
            if _arg(node, 6, "divisor_override", None) is not None:
                raise _Unsupported("avg_pool2d divisor_override")
        return _Mapped(Step.of(op, **args), tensors[:1])

    return rule


def _interpolate(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
    mode = _arg(node, 3, "mode", "nearest")
    if mode not in ("nearest", "bilinear"):
        raise _Unsupported(f"interpolate mode={mode!r}")
    after = _shape(node)
    assert after is not None
    args: dict[str, Any] = {"size": _pair(after[2:]), "mode": mode}
    if mode == "bilinear":
        args["align_corners"] = bool(_arg(node, 4, "align_corners", False))
    return _Mapped(Step.of("resize", **args), tensors[:1])


def _channel_shuffle(node: fx.Node, tensors: list[fx.Node]) -> _Mapped:
    return _Mapped(Step.of("channel_shuffle", groups=int(_arg(node, 1, "groups", 1))), tensors[:1])


FUNCTIONS: dict[Any, Callable[[fx.Node, list[fx.Node]], _Mapped]] = {
    operator.add: _merge("add"),
    torch.add: _merge("add"),
    operator.mul: _merge("mul"),
    torch.mul: _merge("mul"),
    torch.cat: _cat,
    torch.flatten: _flatten_function,
    torch.relu: _activation_function("relu"),
    F.relu: _activation_function("relu"),
    F.relu6: _activation_function("relu6"),
    torch.sigmoid: _activation_function("sigmoid"),
    F.sigmoid: _activation_function("sigmoid"),
    F.silu: _activation_function("silu"),
    F.hardswish: _activation_function("hardswish"),
    F.hardsigmoid: _activation_function("hardsigmoid"),
    F.adaptive_avg_pool2d: _adaptive_function("adaptive_avgpool"),
    F.dropout: _dropout_function,
    torch.mean: _mean,
    F.avg_pool2d: _pool_function("avgpool"),
    F.max_pool2d: _pool_function("maxpool"),
    F.interpolate: _interpolate,
    F.gelu: _activation_function("gelu"),
}
for _leaf in _leaf_functions():
    FUNCTIONS[_leaf] = _channel_shuffle
METHODS: dict[str, Callable[[fx.Node, list[fx.Node]], _Mapped]] = {
    "view": _reshape,
    "reshape": _reshape,
    "flatten": _flatten_function,
    "mean": _mean,
    "relu": _activation_function("relu"),
    "sigmoid": _activation_function("sigmoid"),
    "add": _merge("add"),
    "mul": _merge("mul"),
    "contiguous": lambda node, tensors: _Mapped(None, tensors[:1]),
}


# ------------------------------------------------------------------------------------- helpers ---


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _is_tensor(node: fx.Node) -> bool:
    return _shape(node) is not None


def _flat_nodes(value: Any) -> list[fx.Node]:
    if isinstance(value, fx.Node):
        return [value]
    if isinstance(value, tuple | list):
        return [n for item in value for n in _flat_nodes(item)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _flat_nodes(item)]
    return []


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.state_dict())


def _target_name(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def _describe(node: fx.Node, traced: fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(traced.get_submodule(str(node.target))).__name__
    return f"{_target_name(node.target)}"


def _scope(node: fx.Node, classes: dict[str, str]) -> tuple[str, ...]:
    """The module paths a node runs inside, outermost first (its own module excluded), from fx's module stack."""
    stack = node.meta.get("nn_module_stack") or {}
    paths: list[str] = []
    for key, value in stack.items():
        path, cls = value if isinstance(value, tuple) else (key, None)
        if node.op == "call_module" and path == node.target:
            continue
        paths.append(str(path))
        if cls is not None:
            classes[str(path)] = getattr(cls, "__name__", str(cls))
    return tuple(paths)


def spec_state_dict(imported: TorchImport, network: Any) -> dict[str, torch.Tensor]:
    """The source module's weights under the spec's state_dict keys.

    The spec registers its layers in the order the import wrote them, which is the traced order of the source
    modules; each source module's tensors go to the spec module in the same position, shapes checked."""
    from ..network import Network

    assert isinstance(network, Network)
    spec = network.to_torch().state_dict()
    groups = tensor_holders(spec)
    sources = [m for unit in imported.modules for m in unit if m is not None]
    check_holder_count(imported.graph.source, len(sources), len(groups), "source modules")
    state: dict[str, torch.Tensor] = {}
    for keys, module in zip(groups, sources, strict=True):
        tensors = list(module.state_dict().values())
        if len(tensors) != len(keys) or any(
            tuple(t.shape) != tuple(spec[k].shape) for t, k in zip(tensors, keys, strict=False)
        ):
            raise ImportFailure(
                [
                    Problem(
                        Location(imported.graph.source),
                        f"internal error: the weights of {type(module).__name__} do not fit {keys[0]}",
                    )
                ]
            )
        state.update({k: t.detach().clone() for k, t in zip(keys, tensors, strict=True)})
    return state
