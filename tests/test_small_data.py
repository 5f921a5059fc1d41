"""Small training sets and dominant loss terms (mmanet.engine.advice): the batch-size rule
and ``data.batch_size=auto`` on a 32-sample manifest, the warnings' texts and when they
fire (and do not), their record in run.json, and the own-encoders example of
docs/extending.md learning from 32 training samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import fast_overrides
from mmanet.cli import main
from mmanet.config import build_config
from mmanet.engine.advice import (
    Advisor,
    auto_batch_size,
    dominant_terms,
    small_set_warning,
)
from mmanet.experiment import demo_config_path

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "own_encoders.py"
THREE_VIEWS = "data.modalities=[fou,kar,mor]"


def write_windows(folder: Path, train: int = 32, val: int = 30, test: int = 60) -> Path:
    """A manifest of .npy sensor windows (accel, gyro: (3, 64)) of three activities with
    ``train`` training samples (the windows of tests/test_extending.py)."""
    rng = np.random.default_rng(0)
    time = np.linspace(0, 1, 64)
    rows = ["accel,gyro,label,split"]
    for i, split in enumerate(["train"] * train + ["val"] * val + ["test"] * test):
        label = i % 3
        accel = np.sin(2 * np.pi * (label + 1) * 2 * time) + rng.normal(0, 1.0, (3, 64))
        gyro = (label - 1) * 0.5 + rng.normal(0, 1.0, (3, 64))
        for name, window in (("accel", accel), ("gyro", gyro)):
            np.save(folder / f"{name}_{i:03d}.npy", window.astype(np.float32))
        rows.append(f"accel_{i:03d}.npy,gyro_{i:03d}.npy,{label},{split}")
    manifest = folder / "windows.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def warnings_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("mmanet: warning:")]


def run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").open()]


# -- the batch-size rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "batch"), [(32, 8), (5, 5), (64, 8), (90, 11), (511, 63), (512, 64), (9000, 64)]
)
def test_auto_batch_is_8_steps_per_epoch_up_to_64_and_at_least_8_samples(samples, batch):
    assert auto_batch_size(samples) == batch


def test_the_small_set_warning_names_the_numbers_and_the_key():
    message = small_set_warning(32, 64, steps=1, dropped=0)
    assert message == (
        "mmanet: warning: 32 training samples at data.batch_size=64 give 1 optimisation step "
        "per epoch, fewer than 8: set data.batch_size=8 (4 steps) or data.batch_size=auto"
    )
    dropped = small_set_warning(100, 64, steps=1, dropped=36)
    assert dropped is not None and "36 samples left out of each epoch" in dropped
    assert "data.batch_size=12 (8 steps)" in dropped
    assert small_set_warning(512, 64, steps=8, dropped=0) is None  # 8 steps: enough
    assert small_set_warning(600, 75, steps=8, dropped=0) is None  # 8 steps: enough
    assert small_set_warning(525, 75, steps=7, dropped=0) is not None  # 7: too few
    assert small_set_warning(32, 8, steps=4, dropped=0) is None  # already auto's batch
    assert small_set_warning(32, 6, steps=5, dropped=2) is None  # smaller than auto's
    assert small_set_warning(6, 8, steps=1, dropped=0) is None  # no batch gives more steps
    assert small_set_warning(16, 64, steps=1, dropped=0) is not None  # batch 8: 2 steps


def manifest_run(tmp_path: Path, capsys, name: str, *extra: str) -> tuple[Path, str, str]:
    """sf_md on the 32-sample manifest with the demo's recipe, 2 epochs: (run, out, err)."""
    manifest = tmp_path / "windows.csv"
    if not manifest.is_file():
        write_windows(tmp_path)
    run = tmp_path / name
    epochs = 4 if "--resume" in extra else 2
    overrides = fast_overrides(
        run, **{"optim.epochs": epochs, "optim.milestones": "[]", "method.mar.warmup_epochs": 1}
    )
    args = ["train", "--config", str(demo_config_path()), "data.name=manifest"]
    args += [f"data.manifest.file={manifest}", "method.name=sf_md", *overrides, *extra]
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    return run, captured.out, captured.err


def test_a_32_sample_manifest_at_batch_64_warns_once_and_records_it(tmp_path, capsys):
    run, _, err = manifest_run(tmp_path, capsys, "b64", "data.batch_size=64")
    expected = small_set_warning(32, 64, steps=1, dropped=0)
    assert warnings_of(err) == [expected]  # once, though the run has two epochs
    assert [row["steps"] for row in log_rows(run)] == [1, 1]  # 32 <= 64: one batch of all
    (record,) = run_json(run)["warnings"]
    assert record["kind"] == "small_training_set" and record["message"] == expected
    assert record["samples"] == 32 and record["batch_size"] == 64 and record["steps"] == 1


def test_batch_size_auto_is_printed_recorded_and_does_not_warn(tmp_path, capsys):
    run, out, err = manifest_run(tmp_path, capsys, "auto", "data.batch_size=auto")
    assert "mmanet: data.batch_size=auto: 8 for 32 training samples (4 steps per epoch" in out
    assert warnings_of(err) == [] and "warnings" not in run_json(run)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["batch_size"] == 8
    assert [row["steps"] for row in log_rows(run)] == [4, 4]
    # the recorded config reproduces the run, and the command that started it resumes it
    more = [f"out={run}", "optim.epochs=3", "progress=false", "tensorboard=false"]
    assert main(["train", "--config", str(run / "config.yaml"), "--resume", *more]) == 0
    _, _, err = manifest_run(tmp_path, capsys, "auto", "data.batch_size=auto", "--resume")
    assert warnings_of(err) == [] and [row["steps"] for row in log_rows(run)] == [4, 4, 4, 4]


def test_a_given_batch_size_is_never_changed(tmp_path):
    config = build_config(demo_config_path(), ["data.batch_size=64"])
    assert config.data.batch_size == 64
    assert build_config(demo_config_path(), ["data.batch_size=auto"]).data.batch_size == "auto"


# -- dominant loss terms -------------------------------------------------------------------


def mmanet_method(*extra: str):
    settings = ["method.name=mmanet", "method.mar.warmup_epochs=2", "optim.epochs=6", *extra]
    return build_config(demo_config_path(), settings).method


def test_a_dominant_term_is_judged_against_a_hand_computation():
    method = mmanet_method()  # α = 3, β = 0.5, method.begin=start
    row = {"loss_task": 0.5, "loss_distill": 2.5, "loss_reg": 1.0}  # 3 x 2.5 = 7.5 = 15x 0.5
    (found,) = dominant_terms(row, method, epoch=1)
    assert (found.term, found.weighted, found.task) == ("distill", pytest.approx(7.5), 0.5)
    assert found.suggested == pytest.approx(0.2)  # 3 x 0.5 / 7.5: α x L_MAD = L_task
    assert found.message() == (
        "mmanet: warning: epoch 1: the distill term weighs 7.5 (method.alpha=3 x loss_distill "
        "2.5), 15x the task loss 0.5 (10x or more); try method.alpha=0.2 to bring it to the "
        "task loss's scale"
    )
    assert found.record()["suggested"] == 0.2 and found.record()["key"] == "method.alpha"
    # just under an order of magnitude: 3 x 1.66 = 4.98 < 10 x 0.5
    assert dominant_terms({**row, "loss_distill": 1.66}, method, epoch=1) == []
    # the task loss has fallen later in the run: judged only in the term's first epoch
    assert dominant_terms({**row, "loss_task": 0.01}, method, epoch=2) == []


def test_mars_term_is_judged_after_mars_warm_up_only():
    method = mmanet_method()  # MAR's warm-up: 2 epochs, Ω mined at the end of epoch 2
    row = {"loss_task": 0.5, "loss_distill": 0.1, "loss_reg": 12.0}  # 0.5 x 12 = 6 = 12x
    assert dominant_terms(row, method, epoch=2) == []  # still the warm-up
    (found,) = dominant_terms(row, method, epoch=3)
    assert (found.term, found.weighted) == ("reg", pytest.approx(6.0))
    assert found.suggested == pytest.approx(0.5 * 0.5 / 6.0)
    assert "try method.beta=0.042 " in found.message()


def test_a_delayed_distillation_term_is_judged_when_it_begins():
    method = mmanet_method("method.begin=after_warmup")
    row = {"loss_task": 0.5, "loss_distill": 2.5}
    assert dominant_terms(row, method, epoch=1) == []
    assert [d.term for d in dominant_terms(row, method, epoch=3)] == ["distill"]


def test_a_small_term_and_a_task_only_row_are_not_warned_about():
    method = mmanet_method()
    assert dominant_terms({"loss_task": 2.0, "loss_distill": 1e-4}, method, epoch=1) == []
    assert dominant_terms({"loss_task": 2.0}, method, epoch=1) == []


def test_the_advisor_warns_once_and_a_resumed_run_does_not_repeat(capsys):
    advisor = Advisor(mmanet_method())
    row = {"loss_task": 0.5, "loss_distill": 2.5}
    advisor.epoch_end(row, 1)
    advisor.epoch_end(row, 1)
    assert len(warnings_of(capsys.readouterr().err)) == 1 and len(advisor.records) == 1
    resumed = Advisor(mmanet_method())
    resumed.restore(advisor.records)
    resumed.epoch_end(row, 1)
    assert capsys.readouterr().err == "" and resumed.records == advisor.records


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    args = ["train", "--config", str(demo_config_path()), THREE_VIEWS, "method.name=teacher"]
    assert main([*args, *fast_overrides(out, **{"optim.epochs": 2, "optim.milestones": "[]"})]) == 0
    return out


def test_mmanet_with_a_dominant_alpha_warns_once_and_records_it(tmp_path, teacher, capsys):
    run = tmp_path / "mmanet"
    args = ["train", "--config", str(demo_config_path()), THREE_VIEWS, "method.name=mmanet"]
    args += [f"method.teacher={teacher}", "method.alpha=300", *fast_overrides(run)]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    (warning,) = warnings_of(err)
    first = log_rows(run)[0]
    weighted = 300 * first["loss_distill"]  # by hand, from the log's epoch means
    assert weighted >= 10 * first["loss_task"]
    (record,) = run_json(run)["warnings"]
    assert record["message"] == warning and record["epoch"] == 1
    assert record["weighted"] == pytest.approx(weighted)
    suggested = float(f"{300 * first['loss_task'] / weighted:.2g}")
    assert record["suggested"] == suggested
    assert f"try method.alpha={suggested:.2g} to bring" in warning


def test_the_demos_alpha_does_not_warn(tmp_path, teacher, capsys):
    run = tmp_path / "mmanet"
    args = ["train", "--config", str(demo_config_path()), THREE_VIEWS, "method.name=mmanet"]
    args += [f"method.teacher={teacher}", *fast_overrides(run)]
    capsys.readouterr()
    assert main(args) == 0
    assert warnings_of(capsys.readouterr().err) == [] and "warnings" not in run_json(run)


# -- the own-encoders example on small data ------------------------------------------------


def test_the_own_encoders_example_learns_from_32_training_samples(tmp_path):
    manifest = write_windows(tmp_path, train=32)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(manifest)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "data.batch_size=auto: 8 for 32 training samples" in done.stdout
    assert warnings_of(done.stderr) == []
    report = json.loads((tmp_path / "runs" / "mmanet" / "results_test.json").read_text())
    assert report["combinations"]["accel+gyro"]["error"] < 40  # chance: 67 %
    assert report["average"]["error"] < 50
