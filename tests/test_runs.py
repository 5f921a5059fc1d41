"""A run's folder: runs never mix (another run there is an error unless --resume with the
same config or --overwrite; nothing to resume is an error), the run's record names the
checkpoint every command uses, validation during training picks the best epoch, early
stopping, the curves, the start-up summary and the resume hint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import evaluation, fast_overrides
from mmanet.cli import main
from mmanet.engine.checkpoint import list_checkpoints, load_model_state, read_run_record


def args(out, **extra) -> list[str]:
    return fast_overrides(out, **{"data.modalities": "[fou,kar,mor]", **extra})


def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def fails(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmanet: error: ") and err.count("\n") == 1
    return err.strip()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished two-epoch teacher run."""
    out = tmp_path_factory.mktemp("runs") / "teacher"
    assert main(["train", *args(out, **{"method.name": "teacher", "optim.epochs": 2})]) == 0
    return out


def test_training_into_a_folder_that_holds_another_run_is_an_error(tmp_path, teacher, capsys):
    run = tmp_path / "run"
    shutil.copytree(teacher, run)
    before = snapshot(run)
    line = fails(["train", *args(run, **{"method.name": "sf_md"})], capsys)
    assert line.endswith(
        f"{run} holds another run; choose another out=, continue it with --resume, "
        "or replace it with --overwrite"
    )
    assert snapshot(run) == before  # nothing already written changed


def test_overwrite_replaces_the_run(tmp_path, teacher, capsys):
    run = tmp_path / "run"
    shutil.copytree(teacher, run)
    (run / "notes.txt").write_text("mine")  # not the run's: kept
    (run / "results_val.json").write_text("{}")  # the old run's report: removed
    settings = args(run, **{"method.name": "sf_md", "optim.epochs": 1, "optim.warmup_epochs": 0})
    assert main(["train", "--overwrite", *settings]) == 0
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "results_val.json").exists()
    assert [p.name for p in list_checkpoints(run)] == ["epoch-0001"]
    assert json.loads((run / "results_test.json").read_text())["method"] == "sf_md"
    assert "sf_md" in (run / "config.yaml").read_text()


def test_resume_with_another_configuration_names_the_keys(tmp_path, teacher, capsys):
    run = tmp_path / "run"
    shutil.copytree(teacher, run)
    before = snapshot(run)
    line = fails(["train", "--resume", *args(run, **{"method.name": "sf_md"})], capsys)
    assert "--resume with another configuration (method.name: 'teacher' -> 'sf_md'; " in line
    assert "method.dropout: False -> True;" in line and "only progress, tensorboard" in line
    assert snapshot(run) == before
    longer = args(run, **{"method.name": "teacher", "optim.epochs": 3})  # may train longer
    assert main(["train", "--resume", *longer]) == 0
    assert read_run_record(run)["epochs"] == 3


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, capsys):
    line = fails(["train", "--resume", *args(tmp_path / "new")], capsys)
    assert line.endswith(
        f"{tmp_path / 'new'}: nothing to resume (no checkpoint); train without --resume"
    )
    assert not (tmp_path / "new").exists()


def test_stop_after_prints_how_to_resume(tmp_path, capsys):
    settings = args(tmp_path / "run", **{"method.name": "sf_md"})
    assert main(["train", "--stop-after", "1", *settings]) == 0
    printed = capsys.readouterr().out
    assert (
        f"stopped after epoch 1 of 4; continue with: mmanet train --resume {' '.join(settings)}"
        in printed
    )
    assert main(["train", "--resume", *settings]) == 0  # the printed command works


def test_the_start_up_summary_says_what_the_run_does(tmp_path, capsys):
    settings = args(tmp_path / "run", **{"optim.epochs": 1, "optim.warmup_epochs": 0})
    assert main(["train", *settings, "data.missing_fraction=0.5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (
        f"mmanet: sf_md on mfeat: 10 classes, modalities fou, kar, mor; device cpu; "
        f"writing to {tmp_path / 'run'}"
    )
    assert printed[1] == "  samples: train 1200, val 300, test 500"
    assert printed[2].startswith("  training samples with each modality: fou ")
    assert printed[2].endswith("complete 600/1200 (50.0 %)")


def test_validation_selects_the_best_epoch_and_every_command_uses_it(tmp_path, capsys):
    run = tmp_path / "run"
    settings = args(run, **{"validation.every": 1, "optim.epochs": 4})
    assert main(["train", *settings]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").open()]
    assert all("val/error" in row and "val/error/fou+kar+mor" in row for row in log)
    record = read_run_record(run)
    best = min(range(4), key=lambda i: log[i]["val/error"]) + 1  # the first of ties
    assert record["best_epoch"] == best and record["default"] == "best"
    assert record["best"] == f"checkpoints/best-epoch-{best:04d}"
    report = json.loads((run / "results_test.json").read_text())
    assert report["epoch"] == best
    # a stale newer checkpoint in the folder is not what the commands read
    stale = run / "checkpoints" / "epoch-9999"
    shutil.copytree(run / "checkpoints" / "epoch-0004", stale)
    state = load_model_state(stale)
    assert main(["evaluate", "--run", str(run)]) == 0
    evaluated = evaluation(run)
    assert evaluated["combinations"] == report["combinations"]
    assert main(["evaluate", "--run", str(run), "--select", "last", "--split", "val"]) == 0
    last = evaluation(run, "val")["average"]["error"]
    assert last == pytest.approx(log[-1]["val/error"])
    assert (run / "curves.png").stat().st_size > 1000
    assert state  # the stale folder holds weights the commands did not read


def test_early_stopping_stops_after_patience_validations_without_a_better_one(tmp_path):
    run = tmp_path / "run"
    settings = args(
        run,
        **{"validation.every": 1, "validation.patience": 2, "optim.epochs": 10, "optim.lr": 1e-9},
    )
    assert main(["train", *settings]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").open()]
    assert len(log) == 3  # the first validation is the best; two more without a better one
    record = read_run_record(run)
    assert record["stopped_early"] and record["best_epoch"] == 1
    assert json.loads((run / "results_test.json").read_text())["epoch"] == 1


def test_a_batch_of_one_sample_for_batch_normalisation_is_an_error(tmp_path, capsys):
    line = fails(["train", *args(tmp_path / "run", **{"data.batch_size": 1})], capsys)
    assert line.endswith(
        "data.batch_size=1 with 1200 training samples: the network's batch normalisation "
        "needs at least 2 samples per training batch"
    )
    assert not (tmp_path / "run").exists()


def test_progress_bars_only_on_a_terminal(monkeypatch):
    from mmanet.progress import show_progress

    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert not show_progress(True)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert show_progress(True) and not show_progress(False)
    assert torch.tensor(1)  # torch imported: the fixture machinery above ran


def test_asking_for_a_best_checkpoint_that_does_not_exist_is_named(teacher, capsys):
    line = fails(["evaluate", "--run", str(teacher), "--select", "best"], capsys)
    assert line.endswith(
        f"{teacher}: no best checkpoint (the run did not validate: validation.every=0)"
    )
    assert read_run_record(teacher)["default"] == "last"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "validation.metric=miou",
            "validation.metric='miou' is not a metric of the classification task: error, accuracy",
        ),
        ("validation.patience=2", "validation.patience needs validation.every > 0"),
        ("data.missing_fraction=1.5", "data.missing_fraction must be in [0, 1), got 1.5"),
    ],
)
def test_validation_settings_are_checked(tmp_path, capsys, override, message):
    assert message in fails(["train", *args(tmp_path / "run"), override], capsys)
    assert not (tmp_path / "run").exists()


def test_the_default_output_folder_is_named_after_the_data_method_and_seed():
    from mmanet.config import build_config

    assert build_config(overrides=["method.name=teacher"]).out == "runs/mfeat_teacher"
    assert build_config(overrides=["seed=2"]).out == "runs/mfeat_sf_md_seed2"
    assert build_config(overrides=["out=elsewhere"]).out == "elsewhere"
