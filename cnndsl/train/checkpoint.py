"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain data and tensors only (no pickled classes), so loading one never runs code:

``format`` (``"cnndsl-checkpoint"``), ``version``, ``network`` (name), ``input_shape``, ``classes``,
``normalize`` (``mean``, ``std``), ``pixel_max``, ``model`` (state_dict), ``optimizer``, ``scheduler``, ``scaler``,
``rng`` (one entry per process), ``epoch`` (epochs completed), ``step``, ``best``, ``history`` (the metric
records), ``config`` and ``spec_text``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from collections.abc import Iterable
from typing import Any

import torch

from ..fileio import atomic_write
from .errors import TrainError

FORMAT = "cnndsl-checkpoint"
VERSION = 1

__all__ = ["atomic_write", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(state: dict[str, Any], paths: Iterable[str | os.PathLike[str]]) -> None:
    """Serialize ``state`` once and write it atomically to every path (``best.pt`` and ``last.pt``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    for path in paths:
        atomic_write(path, data)


SAFETENSORS_KEY = "cnndsl"
"""The metadata entry of a ``.safetensors`` file that holds a checkpoint's plain data (JSON)."""


def to_safetensors(state: dict[str, Any]) -> bytes:
    """A checkpoint's weights as ``.safetensors`` bytes, its classes, normalization and spec as metadata:
    everything ``eval``, ``predict`` and ``export`` need, and nothing that can run code."""
    from ..weights import save_state_dict

    plain = {key: state.get(key) for key in ("network", "input_shape", "classes", "normalize", "pixel_max")}
    plain["config"] = {k: v for k, v in dict(state.get("config") or {}).items() if k in ("data", "val_split")}
    plain["spec_text"] = state.get("spec_text", "")
    return save_state_dict(state["model"], {SAFETENSORS_KEY: json.dumps(plain), "format": FORMAT})


def _load_safetensors(path: str | os.PathLike[str]) -> Any:
    from ..weights import read_state_dict

    try:
        tensors, metadata = read_state_dict(path)
    except FileNotFoundError:
        raise TrainError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise TrainError(f"{path}: {error}") from None
    if SAFETENSORS_KEY not in metadata:
        return tensors  # a bare state_dict (another framework's)
    try:
        plain = json.loads(metadata[SAFETENSORS_KEY])
    except ValueError:
        raise TrainError(f"{path}: its {SAFETENSORS_KEY!r} metadata is not JSON") from None
    return {**plain, "format": FORMAT, "version": VERSION, "model": tensors}


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, or a ``.safetensors`` file, with the errors a user can cause
    turned into :class:`TrainError`."""
    if str(path).lower().endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TrainError(f"{path}: is a folder, not a checkpoint file") from None
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = (
            f"it holds a pickled {found.group(1)} object"
            if found
            else "it is not a torch.save file of tensors"
        )
        raise TrainError(
            f"{path}: refused to load with weights_only=True: {what} (only tensors and plain data are loaded)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainError(f"{path}: not a readable checkpoint ({first})") from None


def is_cnndsl_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def state_dict_of(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model weights inside a loaded file: ours (``model``), a bare state_dict, or the common wrappers
    (``state_dict``, ``model``, ``model_state_dict``)."""
    if is_cnndsl_checkpoint(obj):
        return dict(obj["model"])
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise TrainError(f"{path}: holds no state_dict (expected a cnndsl checkpoint or a dict of tensors)")
