"""Training, evaluation and prediction for networks compiled from a spec (``cnndsl train``, ``eval``,
``predict``).

The submodules that run models import torch; this package itself does not, so the CLI can read
:mod:`cnndsl.train.config` (the flags and their defaults) without paying for torch. The names below load on first
use.

>>> import cnndsl
>>> from cnndsl.train import TrainConfig, train
>>> result = train(TrainConfig(epochs=5), cnndsl.load("specs/lenet5.cnn"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import DataSet, load_data
    from .ddp import DistContext
    from .errors import DataError, NonFiniteLoss, TrainError
    from .evaluate import EvalResult
    from .loop import Extras, RunResult, Trainer, train

_WHERE = {
    "TrainConfig": "config",
    "DataSet": "data",
    "load_data": "data",
    "DistContext": "ddp",
    "DataError": "errors",
    "NonFiniteLoss": "errors",
    "TrainError": "errors",
    "EvalResult": "evaluate",
    "Extras": "loop",
    "RunResult": "loop",
    "Trainer": "loop",
    "train": "loop",
}

__all__ = [
    "DataError",
    "DataSet",
    "DistContext",
    "EvalResult",
    "Extras",
    "NonFiniteLoss",
    "RunResult",
    "TrainConfig",
    "TrainError",
    "Trainer",
    "load_data",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'cnndsl.train' has no attribute {name!r}")
