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

VAL_ERRORS = {1: 50.0, 2: 10.0, 3: 30.0, 4: 40.0}  # scripted: epoch 2 is the best, 4 the last
FULL = "fou+kar+mor"
AVERAGE = {1: 10.0, 2: 30.0, 3: 40.0, 4: 35.0}  # best at epoch 1 over all combinations ...
COMPLETE = {1: 20.0, 2: 15.0, 3: 5.0, 4: 8.0}  # ... but at epoch 3 on the full one


def scripted_validation(monkeypatch, saved, average=AVERAGE, complete=COMPLETE):
    """Validation reports scripted per epoch (by default the average and the full
    combination differ in their best epoch); the weights of every epoch copied as the
    trainer saves them."""
    original_save, original_test = Trainer.save, Trainer.test

    def save(self, best=False):
        saved[self.epoch] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return original_save(self, best)

    def test(self, split="test", write=True, epoch=None, checkpoint=None):
        if split == "val":
            singles = {name: {"error": 50.0} for name in ("fou", "kar", "mor")}
            combinations = {**singles, FULL: {"error": complete[self.epoch]}}
            return {"average": {"error": average[self.epoch]}, "combinations": combinations}
        return original_test(self, split, write, epoch, checkpoint)

    monkeypatch.setattr(Trainer, "save", save)
    monkeypatch.setattr(Trainer, "test", test)


def settings(out, **extra) -> list[str]:
    return fast_overrides(out, **{"data.modalities": "[fou,kar,mor]", **extra})


def test_the_result_holds_the_best_epochs_weights(tmp_path, monkeypatch):
    """The validation is scripted so that epoch 2 is the best and epoch 4 the last; the
    weights of each epoch are copied as the trainer saves them. The run's result, what
    ``load_network`` and ``evaluate`` read, must be epoch 2's weights: compared with the
    copies, not through the run record's lookup."""
    saved: dict[int, dict[str, torch.Tensor]] = {}
    scripted_validation(monkeypatch, saved, VAL_ERRORS)
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
    written = sorted(p.name for p in folder.glob("*.json"))  # beside them: their figures
    assert len(written) == 2 and "test-epoch-0004.json" in written
    other = next(name for name in written if name != "test-epoch-0004.json")
    assert other.startswith(f"test-{best}-") and other.endswith(".json")  # + the overrides
    last = json.loads((folder / "test-epoch-0004.json").read_text())
    assert last["epoch"] == 4 and last["checkpoint"] == str(run / "checkpoints" / "epoch-0004")
    again = json.loads((folder / other).read_text())
    assert again["overrides"] == ["data.eval_batch_size=7"]
    assert again["epoch"] == record["best_epoch"]
    first = json.loads(trained)["combinations"]
    for name, row in again["combinations"].items():  # counts exactly; the confidences'
        for key in ("error", "accuracy", "n"):  # calibration to float noise (batching)
            assert row[key] == first[name][key]
        assert row["ece"] == pytest.approx(first[name]["ece"], rel=1e-6, abs=1e-9)
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


def test_a_teacher_is_selected_on_the_full_combination(tmp_path, monkeypatch, capsys):
    saved: dict[int, dict[str, torch.Tensor]] = {}
    scripted_validation(monkeypatch, saved)
    teacher = tmp_path / "teacher"
    extra = {"validation.every": 1, "method.name": "teacher"}
    assert main(["train", *settings(teacher, **extra)]) == 0
    record = read_run_record(teacher)
    assert record["best_epoch"] == 3 and record["best"] == "checkpoints/best-epoch-0003"
    assert record["validation"] == {"metric": "error", "over": FULL, "best": 5.0}
    log = [json.loads(line) for line in (teacher / "log.jsonl").open()]
    assert [row[f"val/error@{FULL}"] for row in log] == [20.0, 15.0, 5.0, 8.0]
    assert [row["val/error"] for row in log] == [10.0, 30.0, 40.0, 35.0]  # still logged
    printed = capsys.readouterr().out
    assert f"val error@{FULL} 5.00 (best)" in printed

    # the student distils from that checkpoint and says so in its record
    student = tmp_path / "student"
    extra = {"method.name": "sf_mad", "method.teacher": str(teacher), "optim.epochs": 2}
    assert main(["train", *settings(student, **extra)]) == 0
    assert read_run_record(student)["teacher"] == {
        "checkpoint": str(teacher / "checkpoints" / "best-epoch-0003"),
        "epoch": 3,
    }
    network, _ = load_network(teacher)
    assert all(torch.equal(v, saved[3][k]) for k, v in network.state_dict().items())


@pytest.mark.parametrize(
    ("over", "key", "best"),
    [("average", "val/error", 1), ("singles", "val/error@singles", 1), ("kar", None, 1)],
)
def test_validation_over_names_what_selects(tmp_path, monkeypatch, over, key, best):
    scripted_validation(monkeypatch, {})
    run = tmp_path / "run"
    extra = {"validation.every": 1, "method.name": "teacher", "validation.over": over}
    assert main(["train", *settings(run, **extra)]) == 0
    record = read_run_record(run)
    assert record["validation"]["over"] == over and record["best_epoch"] == best
    if key:
        assert key in json.loads((run / "log.jsonl").read_text().splitlines()[0])


def test_a_unified_method_is_selected_on_the_average(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, {})
    run = tmp_path / "run"
    assert main(["train", *settings(run, **{"validation.every": 1})]) == 0  # sf_md
    record = read_run_record(run)
    assert record["validation"]["over"] == "average" and record["best_epoch"] == 1


def test_a_run_that_is_not_a_complete_modality_teacher_is_refused(tmp_path, capsys):
    sf_md = tmp_path / "sf_md"
    assert main(["train", *settings(sf_md, **{"optim.epochs": 2})]) == 0
    student = tmp_path / "student"
    extra = {"method.name": "sf_mad", "method.teacher": str(sf_md), "optim.epochs": 2}
    line = fails(["train", *settings(student, **extra)], capsys)
    assert line.endswith(
        f"method.teacher={sf_md}: that run is method.name='sf_md', trained with modality "
        "dropout, not a complete-modality teacher (method.name=teacher); train one, or set "
        "method.allow_any_teacher=true to distil from it anyway"
    )
    assert not student.exists()
    allowed = [*settings(student, **extra), "method.allow_any_teacher=true"]
    assert main(["train", *allowed]) == 0
    assert read_run_record(student)["teacher"]["checkpoint"].startswith(str(sf_md))


def test_an_unknown_selection_group_is_named(tmp_path, capsys):
    line = fails(["train", *settings(tmp_path / "run", **{"validation.over": "rgb"})], capsys)
    assert line.endswith(
        "validation.over='rgb': use auto, average, full, singles or a combination such as "
        "'fou+kar+mor'"
    )
