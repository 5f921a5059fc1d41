"""Shared fixtures: the bundled data, loaded once, and small fast configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmanet.config import build_config
from mmanet.data import build_data
from mmanet.experiment import demo_config_path


def fast_overrides(out, **extra) -> list[str]:
    """A short run of the demo config: few epochs, small warm-ups, no progress bars."""
    items = {
        "out": str(out),
        "optim.epochs": 4,
        "optim.warmup_epochs": 1,
        "optim.milestones": "[3]",
        "method.mar.warmup_epochs": 2,
        "progress": "false",
        "tensorboard": "false",
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


def evaluation(run: str | Path, split: str = "test") -> dict[str, Any]:
    """The report ``mmanet evaluate`` wrote for ``run`` on ``split`` (exactly one)."""
    found = sorted((Path(run) / "evaluations").glob(f"{split}-*.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


@pytest.fixture(scope="session")
def mfeat():
    return build_data(build_config(demo_config_path()).data)
