"""Mixed precision (bf16 / fp16 with a gradient scaler) and channels-last training."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import fast_overrides
from mmanet.config import ConfigError, ModelConfig, build_config
from mmanet.engine import Trainer
from mmanet.engine.checkpoint import latest_checkpoint, load_training_state
from mmanet.models import build_model


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_checkpoints_its_scaler(tmp_path, mfeat, precision):
    teacher_dir = tmp_path / "teacher"
    overrides = fast_overrides(teacher_dir, **{"method.name": "teacher", "optim.epochs": 2})
    Trainer(build_config("configs/mfeat/demo.yaml", overrides), mfeat).fit()
    run = tmp_path / precision
    extra = {
        "method.name": "mmanet",
        "method.teacher": str(teacher_dir),
        "precision": precision,
        "optim.epochs": 3,
    }
    trainer = Trainer(build_config("configs/mfeat/demo.yaml", fast_overrides(run, **extra)), mfeat)
    report = trainer.fit()
    assert math.isfinite(report["average"]["error"]) and report["average"]["error"] < 90
    state = load_training_state(latest_checkpoint(run))
    assert bool(state["scaler"]) == (precision == "fp16")  # fp16 keeps the loss scale
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with trainer.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == dtype


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision"):
        build_config(overrides=["precision=fp8"])


def test_channels_last_gives_the_same_outputs():
    shapes = {"rgb": (3, 32, 32), "depth": (3, 32, 32)}
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sf"), list(shapes), shapes, 2, False).eval()
    inputs = {k: torch.randn(2, *s) for k, s in shapes.items()}
    with torch.no_grad():
        reference = net(inputs).logits
        net.to(memory_format=torch.channels_last)
        nhwc = {k: v.contiguous(memory_format=torch.channels_last) for k, v in inputs.items()}
        torch.testing.assert_close(net(nhwc).logits, reference, rtol=1e-4, atol=1e-4)
