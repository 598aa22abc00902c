"""Training, evaluation and prediction for networks compiled from a spec (``cnndsl train``, ``eval``,
``predict``). Imports torch: the static path never imports this package.

>>> from cnndsl.train import TrainConfig, train      # doctest: +SKIP
>>> result = train(TrainConfig(epochs=5), cnndsl.load("specs/lenet5.cnn"))
"""

from __future__ import annotations

from .config import TrainConfig
from .data import DataSet, load_data
from .ddp import DistContext
from .errors import DataError, NonFiniteLoss, TrainError
from .evaluate import EvalResult
from .loop import Extras, RunResult, Trainer, train

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
