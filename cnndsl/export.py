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
import warnings
from typing import TYPE_CHECKING

from .network import Network

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


def export_onnx(
    network: Network,
    *,
    batch: int = 1,
    logits: bool = False,
    opset: int | None = None,
    dynamic_batch: bool = True,
    module: torch.nn.Module | None = None,
) -> bytes:
    """The network as a checked ONNX model (serialized protobuf bytes).

    ``batch`` is the example batch size used for tracing; with ``dynamic_batch`` the batch dimension of every
    input stays symbolic (``batch``). ``module`` is the compiled network to export (trained weights, say);
    by default a fresh ``network.to_torch(logits)``, with torch's default initialisation. Raises :class:`ExportError` when onnx is missing or export fails.
    """
    _require_onnx()
    import onnx
    import torch

    if batch < 1:
        raise ExportError(f"batch must be positive, got {batch}")
    if module is None:
        module = network.to_torch(logits=logits)
    was_training = module.training
    module.eval()
    example = tuple(torch.randn(batch, *tensor.shape) for tensor in network.inputs)
    input_names = _names([t.name for t in network.inputs], "input")
    output_names = _names([t.name for t in network.outputs], "output")
    dynamic_shapes = None
    if dynamic_batch:
        batch_dim = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch_dim} for _ in example)
    log = io.StringIO()
    # The exporter logs notes such as "torchvision is not installed" at warning level; they are not the user's.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        # The exporter reports progress on stdout and deprecation notices as warnings: keep both off the user's
        # terminal; the log is quoted when the export fails.
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
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
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"torch.onnx.export failed: {first}") from error
    finally:
        exporter_log.setLevel(level)
        module.train(was_training)
    if program is None:  # pragma: no cover - only the legacy exporter returns None
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(
            f"the exported model fails the onnx checker: {str(error).splitlines()[0]}"
        ) from error
    data: bytes = proto.SerializeToString()
    return data
