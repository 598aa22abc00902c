"""Errors a user can cause while training: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class TrainError(Exception):
    """A problem with the training setup (bad flag combination, unusable checkpoint, ...)."""


class DataError(TrainError):
    """A data source that cannot be read or does not fit the spec (wrong array shape, no images, ...)."""


class NonFiniteLoss(TrainError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""
