"""Errors the trainer raises for problems a user can fix (bad data, bad config, a diverged run)."""
from __future__ import annotations


class TrainingDataError(ValueError):
    """The training or validation data cannot be used as given (paths, layout, audio format)."""


class TrainingConfigError(ValueError):
    """A config value or command-line flag the trainer cannot honour."""


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run stops, the last good checkpoint stays."""
