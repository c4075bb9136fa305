"""Standalone BSMamba2 trainer: `python -m bsmamba2_plugin.train` (MSST flags, configs and checkpoints)."""
from .cli import build_parser, main, parse_args
from .errors import NonFiniteLossError, TrainingConfigError, TrainingDataError

__all__ = ["NonFiniteLossError", "TrainingConfigError", "TrainingDataError", "build_parser", "main", "parse_args"]
