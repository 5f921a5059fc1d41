"""Faults during training: a non-finite loss, SIGINT / SIGTERM, SIGKILL at random points."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import fast_overrides
from mmanet.config import build_config
from mmanet.data import TensorMultimodalDataset
from mmanet.engine import Trainer
from mmanet.engine.checkpoint import latest_checkpoint, list_checkpoints
from mmanet.errors import TrainingError


def poisoned(mfeat, rows: int = 1):
    """The bundle with NaN in ``rows`` training samples' first view."""
    train = mfeat.train
    views = {k: v.clone() for k, v in train.views.items()}
    first = next(iter(views))
    views[first][:rows] = float("nan")
    return type(mfeat)(**{**vars(mfeat), "train": TensorMultimodalDataset(views, train.labels)})


def test_a_nonfinite_loss_stops_the_run_naming_the_step_and_term(tmp_path, mfeat):
    config = build_config("configs/mfeat/demo.yaml", fast_overrides(tmp_path / "run"))
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 1, step \d+: loss_task=nan"):
        Trainer(config, poisoned(mfeat)).fit()
    assert list_checkpoints(tmp_path / "run") == []  # nothing written for the broken epoch


def test_skipping_nonfinite_batches_counts_them_and_keeps_the_weights_finite(tmp_path, mfeat):
    overrides = fast_overrides(tmp_path / "run", **{"optim.nonfinite": "skip"})
    trainer = Trainer(build_config("configs/mfeat/demo.yaml", overrides), poisoned(mfeat))
    report = trainer.fit()
    rows = trainer.logger.rows
    assert all(row["skipped_steps"] == 1 for row in rows)  # the poisoned sample, once an epoch
    assert all(torch.isfinite(t).all() for t in trainer.model.state_dict().values())
    assert report["average"]["error"] < 90


@pytest.mark.parametrize("mode", ["skip", "stop"])
def test_a_nonfinite_loss_in_another_process_is_skipped_or_stops_here_too(
    tmp_path, mfeat, monkeypatch, mode
):
    """Under DDP the processes sum their non-finite flags: a finite local loss still skips
    (or stops) when another process saw a non-finite one, so no process steps alone."""
    overrides = fast_overrides(tmp_path / "run", **{"optim.nonfinite": mode})
    trainer = Trainer(build_config("configs/mfeat/demo.yaml", overrides), mfeat)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    from mmanet.engine import distributed

    monkeypatch.setattr(distributed, "all_reduce_sum", lambda flag: flag + 1)  # another rank
    inputs, labels = next(iter(trainer.train_loader))
    if mode == "stop":
        with pytest.raises(TrainingError, match="non-finite loss at epoch 3, step 7"):
            trainer.step(inputs, labels, None, epoch=3, step=7)
    else:
        assert trainer.step(inputs, labels, None) is None
    after = trainer.model.state_dict()
    kept = before if mode == "skip" else dict(trainer.model.named_parameters())  # + statistics
    assert all(after[k].equal(before[k]) for k in kept)  # no optimizer step was taken


def mmanet_train(run: Path, epochs: int, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "mmanet", "train", "--config", "configs/mfeat/demo.yaml",
        f"out={run}", f"optim.epochs={epochs}", "optim.warmup_epochs=1",
        f"optim.milestones=[{epochs - 2}]", "method.name=sf_md", "progress=false",
        "tensorboard=false", "data.batch_size=16", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_checkpoint(run: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while latest_checkpoint(run) is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(run) / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "reference"
    process = mmanet_train(run, 8)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_save_a_resumable_checkpoint_and_exit_cleanly(tmp_path, signum):
    run = tmp_path / "run"
    process = mmanet_train(run, 8)
    wait_for_checkpoint(run)
    time.sleep(0.3)  # somewhere inside a later epoch
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1].startswith(f"mmanet: interrupted by {name}; continue from")
    assert "Traceback" not in err
    latest = latest_checkpoint(run)
    assert str(latest) in err
    finish = mmanet_train(run, 8, "--resume")
    _, err = finish.communicate(timeout=600)
    assert finish.returncode == 0, err[-2000:]
    assert latest_checkpoint(run).name == "epoch-0008" and (run / "results_test.json").is_file()


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_to_the_uninterrupted_weights(tmp_path, uninterrupted):
    run = tmp_path / "killed"
    draw = random.Random(0)
    for attempt in range(3):
        process = mmanet_train(run, 8, *(["--resume"] if attempt else []))
        if latest_checkpoint(run) is None:
            wait_for_checkpoint(run)
        time.sleep(draw.uniform(0.2, 1.5))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finish = mmanet_train(run, 8, "--resume")
    _, err = finish.communicate(timeout=600)
    assert finish.returncode == 0, err[-2000:]
    resumed, reference = weights(run), weights(uninterrupted)
    assert latest_checkpoint(run).name == "epoch-0008"
    for name, value in reference.items():
        assert resumed[name].equal(value), name


def test_a_full_disk_while_saving_leaves_the_previous_checkpoint_readable(
    tmp_path, mfeat, monkeypatch
):
    import errno

    from mmanet.engine import checkpoint as checkpoint_module
    from mmanet.engine.checkpoint import load_model_state, load_training_state

    run = tmp_path / "run"
    trainer = Trainer(build_config("configs/mfeat/demo.yaml", fast_overrides(run)), mfeat)
    trainer.fit(stop_after=1)
    before = load_model_state(latest_checkpoint(run))

    def disk_full(tensors, path):
        Path(path).write_bytes(b"\0" * 100)  # a partial file, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    trainer.epoch = 2
    with pytest.raises(OSError, match="No space left"):
        trainer.save()
    assert [p.name for p in list_checkpoints(run)] == ["epoch-0001"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    after = load_model_state(latest_checkpoint(run))
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before)
    assert load_training_state(latest_checkpoint(run))["epoch"] == 1
