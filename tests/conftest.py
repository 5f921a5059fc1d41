"""Shared fixtures: the bundled data, loaded once, and small fast configs."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def mfeat():
    return build_data(build_config(demo_config_path()).data)
