"""A run from start to result, where users got stuck or were misled: the result is the best
epoch's weights (checked without the lookup that picks them), ``evaluate`` never replaces
the training's results, a start that failed leaves nothing in the way of the retry, a
resume never trains backwards, and a redirected log has a line per epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import fast_overrides
from mmanet.cli import main
from mmanet.config import build_config, save_config
from mmanet.engine import Trainer, evaluate_split, load_network
from mmanet.engine.checkpoint import read_run_record
from mmanet.experiment import demo_config_path
from mmanet.tasks import build_task
from test_errors import SMALL_NET, fails, train_on, write_files

VAL_ERRORS = {1: 50.0, 2: 10.0, 3: 30.0, 4: 40.0}  # scripted: epoch 2 is the best


def settings(out, **extra) -> list[str]:
    return fast_overrides(out, **{"data.modalities": "[fou,kar,mor]", **extra})


def test_the_result_holds_the_best_epochs_weights(tmp_path, monkeypatch):
    """The validation is scripted so that epoch 2 is the best and epoch 4 the last; the
    weights of each epoch are copied as the trainer saves them. The run's result, what
    ``load_network`` and ``evaluate`` read, must be epoch 2's weights: compared with the
    copies, not through the run record's lookup."""
    saved: dict[int, dict[str, torch.Tensor]] = {}
    original_save, original_test = Trainer.save, Trainer.test

    def save(self, best=False):
        saved[self.epoch] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return original_save(self, best)

    def test(self, split="test", write=True, epoch=None, checkpoint=None):
        if split == "val":
            return {"average": {"error": VAL_ERRORS[self.epoch]}, "combinations": {}}
        return original_test(self, split, write, epoch, checkpoint)

    monkeypatch.setattr(Trainer, "save", save)
    monkeypatch.setattr(Trainer, "test", test)
    run = tmp_path / "run"
    config = build_config(demo_config_path(), settings(run, **{"validation.every": 1}))
    trainer = Trainer(config)
    report = trainer.fit()
    assert sorted(saved) == [1, 2, 3, 4]
    differs = [k for k in saved[2] if not torch.equal(saved[2][k], saved[4][k])]
    assert differs  # the test means something: epoch 2 and epoch 4 differ

    def equal_to(state, epoch):
        return all(torch.equal(state[k], saved[epoch][k]) for k in state)

    assert equal_to(trainer.model.state_dict(), 2)  # what results_test.json evaluated
    assert report["epoch"] == 2 and report["checkpoint"] == "checkpoints/best-epoch-0002"
    network, _ = load_network(run)  # what evaluate, export and predict read
    assert equal_to(network.state_dict(), 2)
    last, _ = load_network(run, select="last")
    assert equal_to(last.state_dict(), 4)

    # the test report equals an evaluation of epoch 2's copied weights
    network.load_state_dict({k: v for k, v in saved[2].items() if not k.startswith("reg_")})
    task = build_task(trainer.data, config)
    expected = evaluate_split(network, trainer.data, task, "test", torch.device("cpu"), 256, 0)
    assert report["combinations"] == expected["combinations"]


def test_evaluate_keeps_the_training_results_and_names_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *settings(run, **{"validation.every": 1})]) == 0
    trained = (run / "results_test.json").read_bytes()
    record = read_run_record(run)
    assert json.loads(trained)["checkpoint"] == record["best"]
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--select", "last"]) == 0
    assert main(["evaluate", "--run", str(run), "data.eval_batch_size=7"]) == 0
    printed = capsys.readouterr().out
    assert (run / "results_test.json").read_bytes() == trained  # the training's numbers stay
    folder = run / "evaluations"
    best = record["best"].split("/")[-1]
    written = sorted(p.name for p in folder.iterdir())
    assert len(written) == 2 and "test-epoch-0004.json" in written
    other = next(name for name in written if name != "test-epoch-0004.json")
    assert other.startswith(f"test-{best}-") and other.endswith(".json")  # + the overrides
    last = json.loads((folder / "test-epoch-0004.json").read_text())
    assert last["epoch"] == 4 and last["checkpoint"] == str(run / "checkpoints" / "epoch-0004")
    again = json.loads((folder / other).read_text())
    assert again["overrides"] == ["data.eval_batch_size=7"]
    assert again["epoch"] == record["best_epoch"]
    assert again["combinations"] == json.loads(trained)["combinations"]
    assert f"results: {folder / 'test-epoch-0004.json'}" in printed


def test_a_start_that_failed_on_bad_data_leaves_nothing_in_the_way(tmp_path, capsys):
    rows = write_files(tmp_path)
    good = np.load(tmp_path / "4.npy")
    np.save(tmp_path / "4.npy", np.array([0.0, np.nan, 1.0], dtype=np.float32))  # read there
    assert "holds NaN or infinite values" in fails(train_on(tmp_path, rows, *SMALL_NET), capsys)
    run = tmp_path / "run"
    assert not any(run.iterdir())  # no config.yaml, log or curves left behind
    np.save(tmp_path / "4.npy", good)  # the data fixed, the same command again
    assert main(train_on(tmp_path, rows, *SMALL_NET)) == 0
    assert (run / "results_test.json").is_file()


def test_a_killed_start_is_named_with_the_way_out(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    config = build_config(demo_config_path(), settings(run))
    save_config(config, run / "config.yaml")  # what a start killed in its first epoch leaves
    line = fails(["train", *settings(run)], capsys)
    assert line.endswith(
        f"{run} holds a run that never finished an epoch (no checkpoint); replace it with "
        "--overwrite, or choose another out="
    )
    line = fails(["train", "--resume", *settings(run)], capsys)
    assert line.endswith(
        f"{run}: nothing to resume (the run there never finished an epoch); start it again "
        "with --overwrite"
    )
    assert main(["train", "--overwrite", *settings(run, **{"optim.epochs": 2})]) == 0


@pytest.mark.parametrize("fewer", [1, 2])
def test_resuming_with_fewer_epochs_than_trained_is_refused(tmp_path, capsys, fewer):
    run = tmp_path / "run"
    short = {"optim.warmup_epochs": 0, "optim.milestones": "[]", "method.mar.warmup_epochs": 0}
    assert main(["train", *settings(run, **short, **{"optim.epochs": 3})]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    line = fails(["train", "--resume", *settings(run, **short, **{"optim.epochs": fewer})], capsys)
    assert line.endswith(
        f"{run}: --resume with optim.epochs={fewer}, but the run has reached epoch 3; "
        "give optim.epochs=3 or more"
    )
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    line = fails(["train", "--resume", "--overwrite", *settings(run)], capsys)
    assert line.endswith(
        f"--resume continues the run in {run} and --overwrite replaces it; choose one"
    )
    assert not run.exists()


def test_a_redirected_log_has_a_line_per_epoch(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *settings(run, **{"validation.every": 1})]) == 0
    printed = capsys.readouterr().out.splitlines()
    lines = [line for line in printed if line.startswith("epoch ")]
    log = [json.loads(line) for line in (run / "log.jsonl").open()]
    assert len(lines) == 4
    for line, row in zip(lines, log, strict=True):
        assert line.startswith(f"epoch {row['epoch']}/4: loss {row['loss']:.4g} (task ")
        assert f"val error {row['val/error']:.2f}" in line and line.endswith(" s")
    best = read_run_record(run)["best_epoch"]
    assert "(best)" in lines[best - 1]
