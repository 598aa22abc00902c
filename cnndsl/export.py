"""ONNX export of a compiled network (an optional extra: ``pip install cnndsl[onnx]``).

The module from :meth:`Network.to_torch` is exported in eval mode with ``torch.onnx.export`` (the torch.export
based exporter, which needs ``onnx`` and ``onnxscript``), with a dynamic batch dimension, and the result is
validated with ``onnx.checker.check_model(full_check=True)`` before it is returned. Inputs and outputs keep
the spec's tensor names.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ops
from .network import Network, Node

if TYPE_CHECKING:
    import torch


class ExportError(Exception):
    """ONNX export failed; the message says why in one line."""


class OnnxUnavailable(ExportError):
    """The optional onnx packages are not installed."""


def _require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise OnnxUnavailable(
            f"ONNX export needs the optional packages {' and '.join(missing)}: "
            "pip install 'cnndsl[onnx]' (or pip install onnx onnxscript)"
        )


def _names(names: list[str], fallback: str) -> list[str]:
    """Unique tensor names for the ONNX graph (the spec's names, deduplicated)."""
    seen: set[str] = set()
    result = []
    for index, name in enumerate(names):
        candidate = name or f"{fallback}{index}"
        base, suffix = candidate, 1
        while candidate in seen:
            candidate = f"{base}_{suffix}"
            suffix += 1
        seen.add(candidate)
        result.append(candidate)
    return result


_TORCH_LOGGERS = ("torch.onnx", "torch._guards", "torch._dynamo", "torch.export", "torch.fx")
"""Loggers quietened while exporting (their levels are restored afterwards)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _check_expressible(network: Network) -> None:
    """Raise a located :class:`ExportError` for the first layer its registry entry says has no ONNX form."""
    for node in network.layers:
        rule = ops.REGISTRY[node.op].onnx
        reason = rule(list(node.input_shapes), node.shape, node.args) if rule is not None else None
        if reason is not None:
            raise ExportError(f"{node.span}: {node.op} ({node.path}) has no ONNX form: {reason}")


def _tag_nodes(module: torch.nn.Module) -> None:
    """Copy each fx node's network node id into ``meta["custom"]``, which torch.export keeps on every node it
    makes from that one, so a failure in tracing or in conversion can be traced back to a layer of the spec."""
    import torch.fx

    for submodule in module.modules():
        if isinstance(submodule, torch.fx.GraphModule):
            for node in submodule.graph.nodes:
                if "cnndsl_node" in node.meta:
                    node.meta.setdefault("custom", {})["cnndsl_node"] = node.meta["cnndsl_node"]


def _failed_node(network: Network, error: BaseException) -> Node | None:
    """The network node whose fx node the exporter was working on when it failed: the innermost frame, over the
    whole exception chain, holding a tagged ``torch.fx.Node`` (torch.export's interpreter while tracing, the
    ONNX translator while converting). None when no frame holds one."""
    import torch.fx

    found: int | None = None
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback = current.__traceback__
        while traceback is not None:
            for value in traceback.tb_frame.f_locals.values():
                if isinstance(value, torch.fx.Node):
                    tag = value.meta.get("cnndsl_node", value.meta.get("custom", {}).get("cnndsl_node"))
                    if isinstance(tag, int) and 0 <= tag < len(network.nodes):
                        found = tag
            traceback = traceback.tb_next
        current = current.__cause__ or current.__context__
    return network.nodes[found] if found is not None else None


def _reason(error: BaseException) -> str:
    """One line from the exporter's message: the innermost cause's first line, without terminal colours."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = _ANSI.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def with_normalization(
    module: torch.nn.Module, mean: list[float], std: list[float], scale: float = 1.0
) -> torch.nn.Module:
    """``module`` behind the normalization it was trained with: the result takes raw pixels ``x`` (0..255) and
    computes ``module((x * scale - mean) / std)`` per channel, ``scale`` mapping 255 to the training data's white
    (``pixel_max / 255``). Exported to ONNX, the normalization is part of the graph."""
    import torch

    class Normalized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale, mean, inv_std = self.scale, self.mean, self.inv_std
            assert isinstance(scale, torch.Tensor) and isinstance(mean, torch.Tensor)
            assert isinstance(inv_std, torch.Tensor)
            out: torch.Tensor = self.model((x * scale - mean) * inv_std)
            return out

    return Normalized()


LARGE_MODEL_BYTES = 1536 * 2**20
"""Weights above this size go to a data file beside the model: one protobuf (a .onnx file) holds at most 2 GiB
(regnet_y_128gf's weights are 2.6 GB). The threshold is torch.onnx's own."""


@dataclass(frozen=True)
class OnnxFiles:
    """An exported model: the .onnx bytes and, for a large model, its weights as a separate file."""

    model: bytes
    data: bytes | None = None
    """The weights, where they are over :data:`LARGE_MODEL_BYTES`; None when they are inside ``model``."""
    data_name: str | None = None
    """The file name ``model`` reads ``data`` from: it must be written beside the model under this name."""


def export_onnx(
    network: Network,
    *,
    batch: int = 1,
    logits: bool = False,
    opset: int | None = None,
    dynamic_batch: bool = True,
    module: torch.nn.Module | None = None,
) -> bytes:
    """The network as a checked ONNX model (serialized protobuf bytes), weights included.

    ``batch`` is the example batch size used for tracing; with ``dynamic_batch`` the batch dimension of every
    input stays symbolic (``batch``) and the trace uses a batch of at least 2 (torch.export specialises sizes 0
    and 1). ``module`` is the compiled network to export (trained weights, say); by default a fresh
    ``network.to_torch(logits)``, with torch's default initialisation. Raises :class:`ExportError` when onnx is
    missing, a layer has no ONNX form, the export fails, or the weights are too large for one file (then
    :func:`export_onnx_files` puts them in a second file).
    """
    files = export_onnx_files(
        network,
        batch=batch,
        logits=logits,
        opset=opset,
        dynamic_batch=dynamic_batch,
        module=module,
        single_file=True,
    )
    return files.model


def export_onnx_files(
    network: Network,
    *,
    name: str = "model.onnx",
    batch: int = 1,
    logits: bool = False,
    opset: int | None = None,
    dynamic_batch: bool = True,
    module: torch.nn.Module | None = None,
    single_file: bool = False,
) -> OnnxFiles:
    """Like :func:`export_onnx`, for a model to be written as the file ``name``: weights over
    :data:`LARGE_MODEL_BYTES` come back as ``data``, to be written beside it as ``data_name`` (``name.data``);
    ``single_file`` refuses them instead. Both files pass ``onnx.checker.check_model(full_check=True)``."""
    _require_onnx()
    import onnx

    if batch < 1:
        raise ExportError(f"batch must be positive, got {batch}")
    _check_expressible(network)
    if module is None:
        module = network.to_torch(logits=logits)
    weights = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    large = weights > LARGE_MODEL_BYTES
    if large and single_file:
        raise ExportError(
            f"the weights ({weights / 2**30:.1f} GiB) are too large for one ONNX file (2 GiB at most): "
            "export_onnx_files (and cnndsl export) writes them to a .data file beside the model"
        )
    program = _program(network, module, batch, opset, dynamic_batch)
    if not large:
        proto = program.model_proto
        _check(onnx, proto)
        return OnnxFiles(proto.SerializeToString())
    # The checker reads a model's external data from files: write both to a scratch folder, check, read back.
    data_name = f"{Path(name).name}.data"
    with tempfile.TemporaryDirectory(prefix="cnndsl-onnx-") as scratch:
        path = Path(scratch) / Path(name).name
        program.save(str(path), external_data=True)
        _check(onnx, str(path))
        return OnnxFiles(path.read_bytes(), (path.parent / data_name).read_bytes(), data_name)


def _check(onnx: Any, model: Any) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(
            f"the exported model fails the onnx checker: {str(error).splitlines()[0]}"
        ) from error


def _program(
    network: Network, module: torch.nn.Module, batch: int, opset: int | None, dynamic_batch: bool
) -> Any:
    """torch.onnx.export's ONNXProgram for the eval-mode module (its mode is restored afterwards)."""
    import torch

    was_training = module.training
    module.eval()
    # torch.export specialises a dimension whose example size is 0 or 1: any layout or broadcasting decision
    # taken at batch 1 becomes a guard "batch <= 1" that contradicts the dynamic batch (a conv whose input is
    # the channels-last view a LayerNorm2d or ChannelLinear returns picks its memory format by such a test).
    # A dynamic batch is therefore traced at a batch of at least 2; the ONNX graph does not depend on it.
    traced = max(batch, 2) if dynamic_batch else batch
    example = tuple(torch.randn(traced, *tensor.shape) for tensor in network.inputs)
    input_names = _names([t.name for t in network.inputs], "input")
    output_names = _names([t.name for t in network.outputs], "output")
    dynamic_shapes = None
    if dynamic_batch:
        batch_dim = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch_dim} for _ in example)
    _tag_nodes(module)
    log = io.StringIO()
    # The exporter logs notes such as "torchvision is not installed" at warning level, and torch.export logs a
    # failed guard with its traceback at error level; none of it is the user's: a failure is one ExportError.
    loggers = [logging.getLogger(name) for name in _TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        # The exporter reports progress on stdout, deprecation notices as warnings and, when tracing fails, the
        # partial graph on stderr: keep all of it off the user's terminal.
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; the user gets one line
        node = _failed_node(network, error)
        where = f"{node.span}: {node.op} ({node.path}): " if node is not None else ""
        raise ExportError(f"{where}torch.onnx.export failed: {_reason(error)}") from error
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        module.train(was_training)
    if program is None:  # pragma: no cover - only the legacy exporter returns None
        raise ExportError("torch.onnx.export returned no program")
    return program
