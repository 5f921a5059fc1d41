"""The random state a checkpoint saves and a resumed run restores: torch's (CPU and
CUDA), Python's and NumPy's global generators, and the run's own mask and data
generators — so a resumed run draws the same masks and batches as an uninterrupted one."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every generator's state (tensors and plain containers: ``weights_only`` loads it)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **{name: generator.get_state() for name, generator in generators.items()},
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }


def restore(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Set every generator to ``state`` (from :func:`capture`)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state[name])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))


__all__ = ["capture", "restore"]
