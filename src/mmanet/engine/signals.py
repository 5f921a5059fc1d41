"""SIGINT / SIGTERM during training: let the current step finish, then stop cleanly."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from mmanet.engine import distributed

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(request_stop: Callable[[int], None]) -> Iterator[None]:
    """While inside, the first SIGINT / SIGTERM calls ``request_stop(signum)`` (the loop
    then saves a checkpoint and stops); a second one stops at once (KeyboardInterrupt).

    Single process, main thread only: under torchrun the launcher owns the signals.
    """
    if distributed.active() or threading.current_thread() is not threading.main_thread():
        yield
        return
    requested: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        request_stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["STOP_SIGNALS", "stop_on_signals"]
