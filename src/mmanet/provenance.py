"""Which code produced a result: the package version plus, in a git checkout, the commit."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import mmanet


@functools.cache
def code_version() -> str:
    """``"0.1.0"``, or ``"0.1.0+g<commit>"`` (``".dirty"`` appended when tracked files
    differ from the commit) when the package is imported from a git checkout. Computed
    once per process, at the first call: the engine calls it when a run starts."""
    source = Path(mmanet.__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=source, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return mmanet.__version__
    return f"{mmanet.__version__}+g{commit}{'.dirty' if dirty else ''}"
