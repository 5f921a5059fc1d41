"""Progress bars: shown only when asked for (``progress``) and stderr is a terminal, so
redirected logs hold results, not bar updates."""

from __future__ import annotations

import sys


def show_progress(enabled: bool) -> bool:
    """Whether to draw a progress bar: ``enabled`` and stderr is a terminal."""
    return enabled and sys.stderr.isatty()


__all__ = ["show_progress"]
