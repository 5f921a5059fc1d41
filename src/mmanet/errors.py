"""Every error a user can cause, at the bottom of the import graph (no torch, no mmanet).

The CLI prints a :data:`USER_ERRORS` error as one line and exits with code 2; a
:class:`TrainingError` or :class:`ExportError` with code 1; :class:`TrainingInterrupted`
with 128 + the signal.
"""

from __future__ import annotations

import signal
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message names it."""


class DataError(ValueError):
    """A dataset file or value that cannot be used; the message names it.

    Raised in a DataLoader worker, PyTorch raises it again in the main process with the
    worker's traceback as the message; the error keeps only the worker's own message.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (worker_message(args[0]),)
        super().__init__(*args)


class CheckpointError(ValueError):
    """A checkpoint or run folder that cannot be read or does not fit; the message names it."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names where and why."""


class ExportError(RuntimeError):
    """The network cannot be exported to ONNX (an operator the exporter cannot write, or
    onnxruntime cannot run the graph or disagrees with PyTorch); nothing was written."""


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM: a resumable checkpoint was written; ``checkpoint`` names it."""

    def __init__(self, signum: int, checkpoint: Path | None, resume_hint: str = "") -> None:
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "the last checkpoint"
        super().__init__(f"interrupted by {name}; continue from {where} with --resume{resume_hint}")
        self.signum = signum
        self.checkpoint = checkpoint


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, CheckpointError)

_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


def worker_message(message: str) -> str:
    """The original one-line message of an error that PyTorch re-raises from a worker
    (``Caught X in DataLoader worker ...`` + traceback); any other message unchanged."""
    head, found, traceback = message.partition(_WORKER_TRACEBACK)
    if not found or not head.startswith("Caught "):
        return message
    # the traceback ends with "module.ErrorClass: message"; indented lines are frames
    last = [line for line in traceback.splitlines() if line and not line[0].isspace()]
    original = last[-1].partition(": ")[2] if last else ""
    return original or message


__all__ = [
    "USER_ERRORS",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "TrainingError",
    "TrainingInterrupted",
    "worker_message",
]
