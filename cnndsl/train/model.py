"""The trainable module: the spec lowered with ``logits=True``, the classifier fitted to the data's class count,
weights from ``--init-from`` and layers frozen by ``--freeze``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..network import Network, Node
from ..ops import CLASSIFIER, KEEPS_SCORES, PROBABILITIES, VIEW, has_trait
from .checkpoint import is_cnndsl_checkpoint, load_checkpoint, state_dict_of
from .errors import TrainError


@dataclass
class ModelInfo:
    """What :func:`build_model` did, for the log and the summary."""

    notes: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    """Paths of frozen layers (with parameters), in source order."""
    num_classes: int = 0


def check_classifier_network(network: Network) -> None:
    """Training needs one image input [C, H, W] and one vector output [K]."""
    if len(network.inputs) != 1 or len(network.inputs[0].shape) != 3:
        shapes = ", ".join(str(list(t.shape)) for t in network.inputs)
        raise TrainError(f"network {network.name}: training needs one image input [C, H, W], it has {shapes}")
    if len(network.outputs) != 1 or len(network.outputs[0].shape) != 1:
        shapes = ", ".join(str(list(t.shape)) for t in network.outputs)
        raise TrainError(
            f"network {network.name}: training a classifier needs one output of class scores [K], it has {shapes}"
        )


def module_paths(module: torch.nn.Module) -> dict[str, str]:
    """Node path -> submodule name in a module from :func:`cnndsl.backend.to_torch`."""
    meta = getattr(module, "meta", {})
    paths = meta.get("cnndsl_paths", {}) if isinstance(meta, dict) else {}
    return {path: target for target, path in paths.items()}


def classifier_node(network: Network) -> Node | None:
    """The linear layer producing the class scores, looking through ops that keep the scores' meaning (a trailing
    softmax, dropout or identity)."""
    node = network.nodes[network.outputs[0].node]
    while has_trait(node.op, KEEPS_SCORES) and len(node.inputs) == 1:
        node = network.nodes[node.inputs[0]]
    return node if has_trait(node.op, CLASSIFIER) else None


def classifier_outputs(module: torch.nn.Module, network: Network) -> int:
    """How many class scores the module computes now."""
    node = classifier_node(network)
    if node is None:
        return int(network.outputs[0].shape[0])
    layer = module.get_submodule(module_paths(module)[node.path])
    assert isinstance(layer, torch.nn.Linear)
    return layer.out_features


def replace_classifier(module: torch.nn.Module, network: Network, num_classes: int) -> str | None:
    """Give the classifier ``num_classes`` outputs (a fresh ``nn.Linear``) when it has another count; returns a
    note saying so, or None when nothing changed."""
    current = classifier_outputs(module, network)
    if current == num_classes:
        return None
    node = classifier_node(network)
    if node is None:
        last = network.nodes[network.outputs[0].node]
        while (has_trait(last.op, KEEPS_SCORES) or has_trait(last.op, VIEW)) and len(last.inputs) == 1:
            last = network.nodes[last.inputs[0]]
        raise TrainError(
            f"the network outputs {current} scores but the data has {num_classes} classes, and its last layer "
            f"({last.path}, {last.op}) is not a linear layer that could be replaced; edit the spec"
        )
    target = module_paths(module)[node.path]
    old = module.get_submodule(target)
    assert isinstance(old, torch.nn.Linear)
    new = torch.nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    module.set_submodule(target, new)
    return f"replaced the classifier {node.path} ({old.in_features} -> {current}) by {old.in_features} -> {num_classes}"


def matching_layers(network: Network, pattern: str) -> list[Node]:
    """Layers whose path (or an enclosing block instance's path) matches the glob ``pattern``, e.g. ``Stage.0/*``,
    ``Stage.0`` or ``conv.*``. The torch module name (``Stage_0.conv_1``) may be used instead of the path."""
    from ..network import torch_name

    found = []
    for node in network.layers:
        parts = node.path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(torch_name(p), pattern) for p in prefixes
        ):
            found.append(node)
    return found


def freeze(module: torch.nn.Module, network: Network, patterns: Sequence[str]) -> list[str]:
    """Stop gradients for the layers matching any pattern; returns the frozen layer paths that have parameters.
    A pattern matching no layer is an error that lists a few paths."""
    targets = module_paths(module)
    frozen: list[str] = []
    for pattern in patterns:
        nodes = matching_layers(network, pattern)
        if not nodes:
            from ..diagnostics import did_you_mean

            paths = [n.path for n in network.layers]
            hint = did_you_mean(pattern, paths) or f" (layer paths look like {', '.join(paths[:3])})"
            raise TrainError(f"--freeze {pattern!r} matches no layer{hint}")
        for node in nodes:
            target = targets.get(node.path)
            if target is None or node.path in frozen:
                continue
            try:
                params = list(module.get_submodule(target).parameters())
            except AttributeError:  # a block's own parameter, not a module
                params = [module.get_parameter(target)]
            for param in params:
                param.requires_grad_(False)
            if params:
                frozen.append(node.path)
    order = {n.path: n.id for n in network.nodes}
    return sorted(frozen, key=order.__getitem__)


def frozen_norm_layers(
    module: torch.nn.Module, network: Network, frozen: Sequence[str]
) -> list[torch.nn.Module]:
    """Batch-norm layers among the frozen ones: kept in eval mode while training so their statistics stay too."""
    targets = module_paths(module)
    layers = [module.get_submodule(targets[p]) for p in frozen if p in targets]
    return [m for m in layers if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def load_into(
    module: torch.nn.Module, network: Network, path: str
) -> tuple[list[str], dict[str, object] | None]:
    """Load weights from ``path`` (our checkpoint, or a state_dict such as torchvision's, matched by order).

    Returns notes and the checkpoint dict when it was ours (for its class names and normalization)."""
    from ..weights import WeightsMismatch, load_weights

    obj = load_checkpoint(path)
    state = state_dict_of(obj, path)
    notes: list[str] = []
    ours = is_cnndsl_checkpoint(obj)
    if ours:
        # Our checkpoint may come from data with another class count: shape the classifier like it first.
        count = len(obj.get("classes") or []) or None
        if count is not None:
            note = replace_classifier(module, network, count)
            if note:
                notes.append(note.replace("replaced", "shaped", 1) + f" to load {path}")
    try:
        # Our own files match by name; other frameworks' state_dicts pair tensors by order.
        load_weights(module, state, match="name" if ours else "order")
    except WeightsMismatch as error:
        raise TrainError(f"{path}: does not fit network {network.name}: {error}") from None
    notes.append(
        f"loaded weights from {path} ({'cnndsl checkpoint' if ours else 'state_dict matched by order'})"
    )
    return notes, (obj if ours else None)


def build_model(
    network: Network,
    num_classes: int,
    *,
    init_from: str | None = None,
    freeze_patterns: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, ModelInfo]:
    """The spec as a module that returns logits, ready to train on ``num_classes`` classes."""
    check_classifier_network(network)
    info = ModelInfo(num_classes=num_classes)
    module = network.to_torch(logits=True)
    last = network.nodes[network.outputs[0].node]
    if has_trait(last.op, PROBABILITIES):
        info.notes.append(
            f"training on the logits before the final softmax ({last.path}); it is not applied twice"
        )
    if init_from:
        notes, _ = load_into(module, network, init_from)
        info.notes.extend(notes)
    note = replace_classifier(module, network, num_classes)
    if note:
        info.notes.append(note + " to fit the data's classes")
    if freeze_patterns:
        info.frozen = freeze(module, network, freeze_patterns)
        count = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        info.notes.append(
            f"froze {len(info.frozen)} layers ({count:,} parameters) matching {', '.join(freeze_patterns)}"
        )
    if log:
        for line in info.notes:
            log(line)
    return module, info
