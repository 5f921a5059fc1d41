"""Training-time corruption (``data.corrupt``): the trainer corrupts its batches with the
evaluation's corruptions, at the configured rate; bad settings are one-line errors."""

from __future__ import annotations

import torch

from mmanet.cli import main
from mmanet.config import build_config
from mmanet.corruption_eval import TrainingCorruption
from mmanet.engine import Trainer
from mmanet.experiment import demo_config_path
from mmanet.testing import TINY


def config(tmp_path, *extra):
    return build_config(demo_config_path(), [*TINY, f"out={tmp_path / 'run'}", *extra])


def test_the_trainer_corrupts_each_batch_it_trains_on(tmp_path, monkeypatch):
    trainer = Trainer(config(tmp_path, "data.corrupt=[holes:5@kar]", "data.corrupt_rate=1"))
    corrupt = trainer.step.corrupt
    assert isinstance(corrupt, TrainingCorruption) and corrupt.p == 1.0
    assert [t.label for t in corrupt.targets] == ["holes@kar"]
    seen = []
    forward = trainer.step.forward

    def spy(inputs, *args):
        seen.append({k: v.clone() for k, v in inputs.items()})
        return forward(inputs, *args)

    monkeypatch.setattr(trainer.step, "forward", spy)
    inputs, labels = next(iter(trainer.train_loader))
    clean = {k: v.clone() for k, v in inputs.items()}
    trainer.step(inputs, labels, None, epoch=1, step=1)
    (got,) = seen
    # holes at severity 5: exactly half of kar's features zeroed in every sample
    assert not (clean["kar"] == 0).any()
    assert ((got["kar"] == 0).sum(1) == round(0.5 * clean["kar"].shape[1])).all()
    assert torch.equal(got["fou"], clean["fou"])  # the other modalities untouched


def test_without_data_corrupt_the_batches_are_the_loaders(tmp_path):
    assert Trainer(config(tmp_path)).step.corrupt is None


def test_bad_training_corruption_settings_are_one_line_and_write_nothing(tmp_path, capsys):
    for bad, message in (
        ("data.corrupt=[bogus]", "data.corrupt: --corrupt 'bogus': unknown corruption"),
        ("data.corrupt_rate=1.5", "data.corrupt_rate must be in [0, 1], got 1.5"),
    ):
        out = tmp_path / "run"
        assert main(["train", *TINY, f"out={out}", "data.corrupt=[noise]", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mmanet: error: {message}") and "\n" not in err.strip()
        assert not out.exists()
