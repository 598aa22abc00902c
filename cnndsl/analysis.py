"""Static analysis of a checked network: per-layer and total costs, memory and receptive fields.

Every number comes from the op registry (``ops.REGISTRY[op].costs`` and ``.rf``); nothing here is keyed on op names,
so a new op is analysed as soon as it is registered, and an op without a rule is an error, never a silent zero.
The result is plain frozen dataclasses that the formatters in :mod:`cnndsl.report` and :mod:`cnndsl.explain` read.

Counting conventions (also in :data:`CONVENTIONS`, printed beside every total, and in ``docs/summary.md``):

- params: trainable parameters; batchnorm running statistics are buffers (non-trainable), counted separately.
- MACs: multiply-accumulates of conv and linear layers, bias excluded, per sample.
- FLOPs: ``2·MACs`` plus each op's stated elementwise work (``OpDef.flops_rule``), per sample.
- receptive field: per spatial axis, ``(size, jump, start)`` in input pixels; a merge takes the union of its branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .diagnostics import Frame
from .network import Network, Node
from .ops import NETWORK_INPUT, REGISTRY, RFRule, Shape, has_trait, numel

DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
"""Bytes per element of the dtypes ``--dtype`` accepts."""

ADAM_STATES = 2
"""Optimizer tensors per parameter assumed by the training estimate (Adam's two moments)."""


class AnalysisError(Exception):
    """The network cannot be analysed (an op without a cost rule, an unknown dtype, a bad depth)."""


# ------------------------------------------------------------------------------------ receptive field ---


@dataclass(frozen=True)
class ReceptiveField:
    """Where one output position of a node looks in the network input, per spatial axis (H, W; one axis for a
    flat input).

    ``size``: extent of the input region that can influence one output position (not clipped at the border).
    ``jump``: distance in input pixels between neighbouring output positions (the effective stride).
    ``start``: input coordinate of the centre of the first output position's region (negative when padding reaches
    outside the input). ``is_global``: the node sees the whole input (after ``gap``, ``flatten``, ``linear``...);
    then ``size`` and ``jump`` are the input extent and ``start`` its centre.
    """

    size: tuple[float, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]
    is_global: bool = False

    @staticmethod
    def identity(extent: tuple[int, ...]) -> ReceptiveField:
        """The receptive field of a network input: each position sees itself."""
        axes = len(extent)
        return ReceptiveField((1,) * axes, (1,) * axes, (0,) * axes)

    @staticmethod
    def whole(extent: tuple[int, ...]) -> ReceptiveField:
        """A global receptive field over an input of this extent."""
        return ReceptiveField(
            tuple(float(e) for e in extent),
            tuple(float(e) for e in extent),
            tuple((e - 1) / 2 for e in extent),
            is_global=True,
        )

    def apply(self, rule: RFRule) -> ReceptiveField:
        """The field after one op with this rule (kernel already dilated): the standard recurrence
        ``size += (k-1)·jump``, ``jump *= s``, ``start += ((k-1)/2 - p)·jump``."""
        if self.is_global:
            return self
        axes = len(self.size)
        # A flat input has one axis; rules are written for (H, W), so it takes their first entry.
        kernel, stride, padding = rule.kernel[:axes], rule.stride[:axes], rule.padding[:axes]
        return ReceptiveField(
            tuple(_num(r + (k - 1) * j) for r, k, j in zip(self.size, kernel, self.jump, strict=True)),
            tuple(_num(j * s) for j, s in zip(self.jump, stride, strict=True)),
            tuple(
                _num(t + ((k - 1) / 2 - p) * j)
                for t, k, p, j in zip(self.start, kernel, padding, self.jump, strict=True)
            ),
        )

    @staticmethod
    def union(fields: Sequence[ReceptiveField], extent: tuple[int, ...]) -> ReceptiveField:
        """Merge rule: the smallest interval per axis that holds every branch's region for the first output
        position (the union, i.e. the maximum extent), centred on that interval; jump is the largest branch jump
        (branches of one merge have equal jumps in every zoo network). Any global branch, or a branch from an input
        of another rank (a flat vector broadcast over a feature map), makes the merge global."""
        if any(f.is_global for f in fields) or len({len(f.size) for f in fields}) > 1:
            # A branch of another rank comes from a flat input that broadcasts: it sees all of that input.
            return ReceptiveField.whole(extent)
        sizes, starts = [], []
        for axis in range(len(fields[0].size)):
            low = min(f.start[axis] - (f.size[axis] - 1) / 2 for f in fields)
            high = max(f.start[axis] + (f.size[axis] - 1) / 2 for f in fields)
            sizes.append(_num(high - low + 1))
            starts.append(_num((low + high) / 2))
        jumps = tuple(max(f.jump[axis] for f in fields) for axis in range(len(fields[0].size)))
        return ReceptiveField(tuple(sizes), jumps, tuple(starts))

    def region(self, position: Sequence[int]) -> list[tuple[float, float]]:
        """The input interval ``[low, high]`` per axis seen by the output at ``position`` (unclipped)."""
        return [
            (t + i * j - (r - 1) / 2, t + i * j + (r - 1) / 2)
            for t, i, j, r in zip(self.start, position, self.jump, self.size, strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "size": [_json_num(v) for v in self.size],
            "jump": [_json_num(v) for v in self.jump],
            "start": [_json_num(v) for v in self.start],
            "global": self.is_global,
        }


def _num(value: float) -> float:
    """Round away float noise (jumps like 7/3 multiply up); 9 decimals is far below a pixel."""
    rounded = round(value, 9)
    return float(int(rounded)) if rounded == int(rounded) else rounded


def _json_num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# ------------------------------------------------------------------------------------------ results ---


@dataclass(frozen=True)
class LayerCost:
    """Figures for one node of the network (one row of ``--depth`` unlimited). Costs are per sample."""

    id: int
    path: str
    op: str
    label: str
    family: str
    frames: tuple[str, ...]
    """Paths of the block instances containing this node, outermost first."""
    inputs: tuple[int, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    params: int
    buffers: int
    macs: int
    flops: int
    activation_elements: int
    """Elements of the output tensor for one sample."""
    receptive_field: ReceptiveField
    flops_rule: str
    constant: bool = False
    """Depends on no network input (a learned parameter): its receptive field joins no union."""


@dataclass(frozen=True)
class Row:
    """One line of a summary: a layer, or (with ``--depth``) a whole block instance holding the sums of its layers."""

    path: str
    op: str
    """The op name, or the block name for a collapsed instance."""
    label: str
    """The diagram label of a layer, or the call as written (``Basic(c=128, stride=2)``) for a block."""
    kind: str
    """``layer`` or ``block``."""
    depth: int
    """How many block instances enclose the row (0 = written in the network body)."""
    output_shape: Shape
    params: int
    buffers: int
    macs: int
    flops: int
    activation_elements: int
    activation_bytes: int
    receptive_field: ReceptiveField
    layer_ids: tuple[int, ...]
    frames: tuple[str, ...] = ()
    """Paths of the block instances drawn around this row (expanded at this depth), outermost first; each is a
    key of :attr:`Summary.blocks`."""
    sources: tuple[str, ...] = ()
    """What feeds the row from outside it, in argument order, once each: the path of another row, or the name of a
    network input."""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "op": self.op,
            "label": self.label,
            "kind": self.kind,
            "depth": self.depth,
            "layers": len(self.layer_ids),
            "output_shape": list(self.output_shape),
            "params": self.params,
            "buffers": self.buffers,
            "macs": self.macs,
            "flops": self.flops,
            "activation_elements": self.activation_elements,
            "activation_bytes": self.activation_bytes,
            "receptive_field": self.receptive_field.to_json(),
            "frames": list(self.frames),
            "sources": list(self.sources),
        }


@dataclass(frozen=True)
class Block:
    """One block instance with the sums of every layer inside it: the data of a collapsed row, and of the header
    of an expanded instance in a tree view."""

    path: str
    block: str
    """The block's name (``Bottleneck``)."""
    call: str
    """The call as written, arguments filled in (``Bottleneck(c=128, stride=2)``)."""
    level: int
    """1 for an instance called in the network body, 2 for one called inside that, and so on."""
    output_shape: Shape
    """The shape of the tensor leaving the instance (its last layer read from outside)."""
    params: int
    buffers: int
    macs: int
    flops: int
    activation_elements: int
    receptive_field: ReceptiveField
    layer_ids: tuple[int, ...]


@dataclass(frozen=True)
class Totals:
    """Whole-network figures. Counts are per sample; byte figures are for ``batch`` samples of ``dtype``."""

    trainable_params: int
    non_trainable_params: int
    macs: int
    flops: int
    activation_elements: int
    """Sum of every layer's output elements, one sample (inputs excluded)."""
    param_bytes: int
    buffer_bytes: int
    input_bytes: int
    activation_bytes: int
    """Every layer output for the batch: what a training forward pass keeps for backward."""
    inference_peak_bytes: int
    """Largest total of tensors alive at once in a forward pass in source order (inputs included)."""
    training_bytes: int
    """Estimate: weights + gradients + Adam's two moments + buffers + inputs + activations kept for backward."""

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Shape


@dataclass(frozen=True, repr=False)
class Summary:
    """Everything a summary report shows. ``str(summary)`` is the text table, and Jupyter shows
    ``_repr_html_``, the interactive HTML view (:mod:`cnndsl.report`)."""

    network: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    batch: int
    dtype: str
    dtype_bytes: int
    depth: int | None
    layers: tuple[LayerCost, ...]
    rows: tuple[Row, ...]
    totals: Totals
    output_fields: dict[str, ReceptiveField] = field(default_factory=dict)
    """Receptive field of each network output."""
    feature_map: tuple[str, ReceptiveField] | None = None
    """The last layer (source order) with a spatial, non-global field, and that field: the number people quote
    as "the receptive field" of a classifier, whose outputs are all global."""
    blocks: dict[str, Block] = field(default_factory=dict)
    """Every block instance by path, in source order, whether or not ``depth`` collapses it."""
    is_chain: bool = True
    """Every layer reads only the layer before it: no branches, merges or second inputs."""
    source: Network | None = field(default=None, compare=False)
    """The analysed network, for views that also draw it (the HTML report's diagram)."""

    def __str__(self) -> str:
        from .report import to_text

        return to_text(self)

    def __repr__(self) -> str:
        return (
            f"<Summary {self.network}: {self.totals.trainable_params:,} params, {self.totals.macs:,} MACs, "
            f"{len(self.rows)} rows>"
        )

    def _repr_html_(self) -> str:
        import uuid

        from .report_html import diagram_view, to_html_fragment

        view = diagram_view(self.source, self.depth) if self.source is not None else None
        # A fresh element id: a notebook may show several reports, and each script finds its own.
        return to_html_fragment(self, view, element_id=f"cnndsl-{uuid.uuid4().hex[:12]}")

    def to_json(self) -> dict[str, Any]:
        """The documented JSON schema (docs/summary.md)."""
        t = self.totals
        return {
            "schema": "cnndsl.summary/1",
            "network": self.network,
            "inputs": {i.name: list(i.shape) for i in self.inputs},
            "outputs": {o.name: list(o.shape) for o in self.outputs},
            "batch": self.batch,
            "dtype": self.dtype,
            "depth": self.depth,
            "total_params": t.total_params,
            "trainable_params": t.trainable_params,
            "non_trainable_params": t.non_trainable_params,
            "macs": t.macs,
            "flops": t.flops,
            "activation_elements": t.activation_elements,
            "param_bytes": t.param_bytes,
            "buffer_bytes": t.buffer_bytes,
            "input_bytes": t.input_bytes,
            "activation_bytes": t.activation_bytes,
            "inference_peak_bytes": t.inference_peak_bytes,
            "training_bytes": t.training_bytes,
            "receptive_field": {
                "outputs": {name: rf.to_json() for name, rf in self.output_fields.items()},
                "feature_map": None
                if self.feature_map is None
                else {"path": self.feature_map[0], **self.feature_map[1].to_json()},
            },
            "conventions": conventions(self.batch, self.dtype),
            "layers": [row.to_json() for row in self.rows],
        }


def conventions(batch: int = 1, dtype: str = "float32") -> dict[str, str]:
    """The counting convention of every total, worded for its label."""
    size = DTYPE_BYTES[dtype]
    return {
        "params": "trainable weights and biases (tied weights count once)",
        "non_trainable_params": "buffers: batchnorm running mean, variance and batch counter",
        "macs": "conv+linear multiply-accumulates, bias excluded, per sample",
        "flops": "FLOPs = 2·MACs + elementwise (bias, bn, activations, pools, merges), per sample",
        "param_bytes": f"params × {size} bytes ({dtype})",
        "activation_bytes": f"every layer output × batch {batch} × {size} bytes, kept for backward",
        "inference_peak_bytes": f"most tensors alive at once in a forward pass, batch {batch}, inputs included",
        "training_bytes": "estimate: weights + grads + 2 Adam moments + buffers + inputs + activations",
        "receptive_field": "input pixels per axis; a merge takes the union of its branches",
    }


# --------------------------------------------------------------------------------------- analysis ---


def source_fields(network: Network) -> dict[int, ReceptiveField]:
    """The receptive field of each declared input of the network (each position sees itself), by node id."""
    return {
        node.id: ReceptiveField.identity(_extent(node.shape))
        for node in network.nodes
        if has_trait(node.op, NETWORK_INPUT)
    }


def analyse_layers(network: Network) -> list[LayerCost]:
    """Costs and receptive field of every node that is not a declared input, in source (topological) order."""
    fields = source_fields(network)
    extents: dict[int, tuple[int, ...]] = {}
    layers: list[LayerCost] = []
    for node in network.nodes:
        if node.id in fields:
            extents[node.id] = _extent(node.shape)
            continue
        layer = _analyse_node(node, fields, extents)
        layers.append(layer)
    return layers


def _analyse_node(
    node: Node, fields: dict[int, ReceptiveField], extents: dict[int, tuple[int, ...]]
) -> LayerCost:
    op = REGISTRY.get(node.op)
    if op is None:
        raise AnalysisError(f"{node.path}: op '{node.op}' has no registry entry, so no cost rule")
    in_shapes = list(node.input_shapes)
    costs = op.costs(in_shapes, node.shape, node.args)
    if costs is None:
        raise AnalysisError(f"{node.path}: the cost rule of '{node.op}' returned nothing")
    rule = op.rf(in_shapes, node.shape, node.args)
    # Coordinates of the widest-ranked input feeding this node (a flat [F] input has one axis, an image two).
    if node.inputs:
        rank = max(len(extents[i]) for i in node.inputs)
        ranked = [extents[i] for i in node.inputs if len(extents[i]) == rank]
        extent = tuple(max(dims) for dims in zip(*ranked, strict=True))
    else:
        extent = _extent(node.shape)
    extents[node.id] = extent
    # Inputs that are learned constants (a block's own parameter) see no pixel: they join no union.
    seen = [i for i in node.inputs if i in fields]
    if not seen:
        rf = ReceptiveField.identity(extent)  # shown for the constant itself; it never reaches a consumer
    elif rule is None:
        rf = ReceptiveField.whole(extent)
    else:
        branches = [fields[i].apply(rule) for i in seen]
        rf = branches[0] if len(branches) == 1 else ReceptiveField.union(branches, extent)
        if rf.is_global:
            rf = ReceptiveField.whole(extent)
    if seen:
        fields[node.id] = rf
    return LayerCost(
        id=node.id,
        path=node.path,
        op=node.op,
        label=op.label(node.args),
        family=op.family,
        frames=tuple(frame.path for frame in node.frames),
        inputs=node.inputs,
        input_shapes=node.input_shapes,
        output_shape=node.shape,
        params=costs.params,
        buffers=costs.buffers,
        macs=costs.macs,
        flops=costs.flops,
        activation_elements=numel(node.shape),
        receptive_field=rf,
        flops_rule=op.flops_rule,
        constant=not seen,
    )


def block_instances(network: Network, layers: Sequence[LayerCost]) -> dict[str, Block]:
    """Every block instance of ``network`` with the sums of its layers, by path in source order."""
    members: dict[str, list[LayerCost]] = {}
    frames: dict[str, Frame] = {}
    for layer in layers:
        for frame in network.nodes[layer.id].frames:
            members.setdefault(frame.path, []).append(layer)
            frames.setdefault(frame.path, frame)
    consumers: dict[int, set[int]] = {}
    for node in network.nodes:
        for source in node.inputs:
            consumers.setdefault(source, set()).add(node.id)
    output_ids = {t.node for t in network.outputs}
    blocks: dict[str, Block] = {}
    for path, group in members.items():
        inside = {m.id for m in group}
        # The instance's output: its last layer that something outside reads (or a network output).
        leaving = [
            m for m in group if m.id in output_ids or any(c not in inside for c in consumers.get(m.id, ()))
        ]
        last = (leaving or group)[-1]
        frame = frames[path]
        level = 1 + next(i for i, f in enumerate(network.nodes[group[0].id].frames) if f.path == path)
        blocks[path] = Block(
            path=path,
            block=frame.block,
            call=frame.call,
            level=level,
            output_shape=last.output_shape,
            params=sum(m.params for m in group),
            buffers=sum(m.buffers for m in group),
            macs=sum(m.macs for m in group),
            flops=sum(m.flops for m in group),
            activation_elements=sum(m.activation_elements for m in group),
            receptive_field=last.receptive_field,
            layer_ids=tuple(m.id for m in group),
        )
    return blocks


def collapse(
    network: Network,
    layers: Sequence[LayerCost],
    depth: int | None,
    batch: int = 1,
    dtype: str = "float32",
    blocks: dict[str, Block] | None = None,
) -> list[Row]:
    """Summary rows: one per layer, or with ``depth=K`` rows at most K path levels deep, as torchinfo's depth: a
    block instance at level K (level 1 = written in the network body) becomes one row holding the sums of everything
    inside it, and layers at levels up to K keep their own rows. Rows always sum to the totals."""
    if depth is not None and depth < 1:
        raise AnalysisError(f"depth must be 1 or more, got {depth}")
    size = DTYPE_BYTES[dtype]
    if blocks is None:
        blocks = block_instances(network, layers)
    # Which row each node's output belongs to: its own, or the instance collapsed at `depth`.
    row_of: dict[int, str] = {t.node: t.name for t in network.inputs}
    order: list[tuple[str, LayerCost | None]] = []
    for layer in layers:
        if depth is not None and len(layer.frames) >= depth:
            key = layer.frames[depth - 1]
            if not order or order[-1][0] != key:
                order.append((key, None))
            row_of[layer.id] = key
        else:
            order.append((layer.path, layer))
            row_of[layer.id] = layer.path
    by_id = {layer.id: layer for layer in layers}
    rows: list[Row] = []
    seen: set[str] = set()
    for key, single in order:
        if key in seen:
            continue  # an instance interleaved with other rows (not produced by the elaborator) stays one row
        seen.add(key)
        if single is not None:
            member_ids: tuple[int, ...] = (single.id,)
            frames = single.frames
        else:
            member_ids = blocks[key].layer_ids
            frames = by_id[member_ids[0]].frames[: depth - 1] if depth else ()
        sources: list[str] = []
        for member in member_ids:
            for source in network.nodes[member].inputs:
                name = row_of[source]
                if name != key and name not in sources:
                    sources.append(name)
        if single is not None:
            rows.append(_row(single, size, batch, tuple(sources)))
            continue
        block = blocks[key]
        rows.append(
            Row(
                path=key,
                op=block.block,
                label=block.call,
                kind="block",
                depth=(depth or 1) - 1,
                output_shape=block.output_shape,
                params=block.params,
                buffers=block.buffers,
                macs=block.macs,
                flops=block.flops,
                activation_elements=block.activation_elements,
                activation_bytes=block.activation_elements * size * batch,
                receptive_field=block.receptive_field,
                layer_ids=block.layer_ids,
                frames=frames,
                sources=tuple(sources),
            )
        )
    return rows


def _row(layer: LayerCost, size: int, batch: int, sources: tuple[str, ...] = ()) -> Row:
    return Row(
        path=layer.path,
        op=layer.op,
        label=layer.label,
        kind="layer",
        depth=len(layer.frames),
        output_shape=layer.output_shape,
        params=layer.params,
        buffers=layer.buffers,
        macs=layer.macs,
        flops=layer.flops,
        activation_elements=layer.activation_elements,
        activation_bytes=layer.activation_elements * size * batch,
        receptive_field=layer.receptive_field,
        layer_ids=(layer.id,),
        frames=layer.frames,
        sources=sources,
    )


def is_chain(network: Network) -> bool:
    """Whether every layer reads exactly the node before it (no branch, merge or second input)."""
    previous = None
    for node in network.nodes:
        if not has_trait(node.op, NETWORK_INPUT) and node.inputs != (
            (previous,) if previous is not None else ()
        ):
            return False
        previous = node.id
    return len(network.inputs) <= 1


def inference_peak_elements(network: Network) -> int:
    """Peak elements alive in a forward pass run in source order, one sample: an output is allocated while its
    inputs are still alive, and a tensor is freed after its last consumer unless it is a network output."""
    last_use: dict[int, int] = {}
    for node in network.nodes:
        for source in node.inputs:
            last_use[source] = node.id
    keep = {t.node for t in network.outputs}
    live: dict[int, int] = {}
    peak = 0
    for node in network.nodes:
        live[node.id] = numel(node.shape)
        peak = max(peak, sum(live.values()))
        for source in set(node.inputs):
            if last_use.get(source) == node.id and source not in keep:
                live.pop(source, None)
        if node.id not in last_use and node.id not in keep:
            live.pop(node.id, None)  # a dead end: nothing reads it
    return peak


def summarize(network: Network, batch: int = 1, dtype: str = "float32", depth: int | None = None) -> Summary:
    """Analyse ``network`` and gather the report data. Raises :class:`AnalysisError` on a bad argument or an op
    without a cost rule."""
    if dtype not in DTYPE_BYTES:
        raise AnalysisError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPE_BYTES)}")
    if batch < 1:
        raise AnalysisError(f"batch must be at least 1, got {batch}")
    size = DTYPE_BYTES[dtype]
    layers = analyse_layers(network)
    blocks = block_instances(network, layers)
    rows = collapse(network, layers, depth, batch, dtype, blocks)
    params = sum(layer.params for layer in layers)
    buffers = sum(layer.buffers for layer in layers)
    elements = sum(layer.activation_elements for layer in layers)
    input_elements = sum(numel(t.shape) for t in network.inputs)
    param_bytes = params * size
    buffer_bytes = buffers * size
    activation_bytes = elements * size * batch
    input_bytes = input_elements * size * batch
    totals = Totals(
        trainable_params=params,
        non_trainable_params=buffers,
        macs=sum(layer.macs for layer in layers),
        flops=sum(layer.flops for layer in layers),
        activation_elements=elements,
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        input_bytes=input_bytes,
        activation_bytes=activation_bytes,
        inference_peak_bytes=inference_peak_elements(network) * size * batch,
        training_bytes=(2 + ADAM_STATES) * param_bytes + buffer_bytes + input_bytes + activation_bytes,
    )
    by_id = {layer.id: layer for layer in layers}
    output_fields = {
        t.name: by_id[t.node].receptive_field
        if t.node in by_id
        else ReceptiveField.identity(_extent(t.shape))
        for t in network.outputs
    }
    feature_map = None
    for layer in reversed(layers):
        if len(layer.output_shape) == 3 and not layer.receptive_field.is_global:
            feature_map = (layer.path, layer.receptive_field)
            break
    return Summary(
        network=network.name,
        inputs=tuple(TensorInfo(t.name, t.shape) for t in network.inputs),
        outputs=tuple(TensorInfo(t.name, t.shape) for t in network.outputs),
        batch=batch,
        dtype=dtype,
        dtype_bytes=size,
        depth=depth,
        layers=tuple(layers),
        rows=tuple(rows),
        totals=totals,
        output_fields=output_fields,
        feature_map=feature_map,
        blocks=blocks,
        is_chain=is_chain(network),
        source=network,
    )


def _extent(shape: Shape) -> tuple[int, ...]:
    """The spatial axes of a shape: (H, W) of [C, H, W], (F,) of a flat [F]."""
    return tuple(shape[1:]) if len(shape) == 3 else tuple(shape)


def format_count(value: float) -> str:
    """``1234567`` -> ``1,234,567``; a non-integral value keeps up to 3 decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def format_bytes(value: int) -> str:
    """Binary units, stated as such: ``1536`` -> ``1.50 KiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    amount = float(value)
    for unit in units:
        if amount < 1024 or unit == units[-1]:
            return f"{int(amount)} B" if unit == "B" else f"{amount:.2f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def format_field(rf: ReceptiveField, what: str = "size") -> str:
    """``11x11`` style text for one component; square fields print once (``11``); global fields ``global``."""
    if rf.is_global:
        return "global"
    values = getattr(rf, what)
    parts = [_short(v) for v in values]
    return parts[0] if len(set(parts)) == 1 else "x".join(parts)


def _short(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
