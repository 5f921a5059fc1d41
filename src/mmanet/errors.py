"""The errors a user can cause; the CLI prints them as one line and exits with code 2."""

from mmanet.config import ConfigError
from mmanet.data.base import DataError
from mmanet.engine.checkpoint import CheckpointError
from mmanet.engine.trainer import TrainingError, TrainingInterrupted

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, CheckpointError)

__all__ = [
    "USER_ERRORS",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "TrainingError",
    "TrainingInterrupted",
]
