"""Each task declares its metrics and which way each is better; best-epoch selection, the
comparison tables, the verdicts and tuning read the direction from the task, never from a
list of metric names. A task that does not declare them is refused when it registers."""

from __future__ import annotations

from typing import ClassVar

import pytest

from mmanet.cli import main
from mmanet.engine import Trainer
from mmanet.engine.checkpoint import read_run_record
from mmanet.errors import ConfigError
from mmanet.experiment import demo_config_path
from mmanet.registry import TASKS
from mmanet.report import comparison_table
from mmanet.tasks import ClassificationTask, Task, register_task

TINY = [  # tests/test_tune.py's, three epochs, each validated
    "optim.epochs=3",
    "optim.warmup_epochs=0",
    "optim.milestones=[2]",
    "data.modalities=[fou,kar,mor]",
    "model.encoder.widths=[32,16]",
    "model.head_widths=[32]",
    "tensorboard=false",
    "progress=false",
    "validation.every=1",
]
VAL_MISTAKES = {1: 40.0, 2: 10.0, 3: 25.0}  # scripted: epoch 2 (10 %) is the best


class Mistakes(ClassificationTask):
    """The error under a name no list knows: lower is better, as the task declares."""

    name = "test_mistakes"
    metrics: ClassVar[dict[str, str]] = {"mistakes": "min", "accuracy": "max"}
    default_metric = "mistakes"
    demo_config = None

    def metrics_from_confusion(self, confusion):
        metrics = super().metrics_from_confusion(confusion)
        return {"mistakes": metrics["error"], "accuracy": metrics["accuracy"]}


@pytest.fixture
def mistakes():
    register_task("test_mistakes")(Mistakes)
    yield Mistakes
    TASKS.unregister("test_mistakes")


def scripted_validation(monkeypatch, values: dict[int, float], metric: str) -> None:
    """The val reports say ``values[epoch]`` for the metric on every combination."""
    original = Trainer.test

    def test(self, split="test", write=True, epoch=None, checkpoint=None):
        if split != "val":
            return original(self, split, write, epoch, checkpoint)
        value = {metric: values[self.epoch]}
        names = ("fou", "kar", "mor", "fou+kar", "fou+mor", "kar+mor", "fou+kar+mor")
        return {"average": value, "combinations": dict.fromkeys(names, value)}

    monkeypatch.setattr(Trainer, "test", test)


def test_a_tasks_own_lower_is_better_metric_selects_the_10_percent_epoch(
    mistakes, tmp_path, monkeypatch, capsys
):
    scripted_validation(monkeypatch, VAL_MISTAKES, "mistakes")
    run = tmp_path / "run"
    args = ["train", "--config", str(demo_config_path()), *TINY, "task=test_mistakes"]
    assert main([*args, f"out={run}"]) == 0, capsys.readouterr().err
    record = read_run_record(run)
    assert record["validation"]["metric"] == "mistakes"
    assert record["best_epoch"] == 2 and record["validation"]["best"] == 10.0


def test_a_validation_metric_the_task_does_not_declare_is_one_line(tmp_path, capsys):
    args = ["train", "--config", str(demo_config_path()), *TINY, f"out={tmp_path / 'run'}"]
    assert main([*args, "validation.metric=f1"]) == 2
    assert capsys.readouterr().err == (
        "mmanet: error: validation.metric='f1' is not a metric of the classification task: "
        "error, accuracy\n"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("declared", "default", "message"),
    [
        (
            ("balanced_error", "error"),
            "balanced_error",
            "task 'undeclared' must declare its metrics with their directions, e.g. metrics = "
            "{'error': 'min', 'accuracy': 'max'} ('min': lower is better, 'max': higher); "
            "Undeclared.metrics is ('balanced_error', 'error')",
        ),
        (
            None,  # Task's own: none
            "",
            "task 'undeclared' must declare its metrics with their directions, e.g. metrics = "
            "{'error': 'min', 'accuracy': 'max'} ('min': lower is better, 'max': higher); "
            "Undeclared.metrics is {}",
        ),
        (
            {"error": "lower"},
            "error",
            "task 'undeclared': a metric's direction is 'min' (lower is better) or 'max' "
            "(higher); Undeclared.metrics has {'error': 'lower'}",
        ),
        (
            {"error": "min"},
            "accuracy",
            "task 'undeclared': default_metric='accuracy' is not one of its metrics: error",
        ),
    ],
)
def test_a_task_that_does_not_declare_its_metrics_is_refused(declared, default, message):
    body = {"name": "undeclared", "default_metric": default}
    if declared is not None:
        body["metrics"] = declared
    undeclared = type("Undeclared", (Task,), body)
    with pytest.raises(TypeError) as caught:
        register_task("undeclared")(undeclared)
    assert str(caught.value) == message
    assert "undeclared" not in TASKS


def test_a_users_file_with_an_undeclared_task_fails_in_one_line(tmp_path, capsys):
    file = tmp_path / "old_task.py"
    file.write_text(
        "from mmanet.tasks import ClassificationTask, register_task\n\n\n"
        '@register_task("old_style")\n'
        "class OldStyle(ClassificationTask):\n"
        '    metrics = ("balanced_error", "error")\n'
        '    default_metric = "balanced_error"\n'
    )
    assert main(["train", f"imports=[{file}]", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmanet: error: imports: {file} failed: TypeError: task 'old_style' ")
    assert "OldStyle.metrics is ('balanced_error', 'error')" in err
    assert err.count("\n") == 1 and "old_style" not in TASKS


def test_the_direction_is_the_tasks():
    assert ClassificationTask.lower_is_better("error")
    assert not ClassificationTask.lower_is_better("accuracy")
    assert Mistakes.lower_is_better("mistakes")
    with pytest.raises(ConfigError, match=r"^metric='miou' is not a metric of the "):
        ClassificationTask.lower_is_better("miou")


def test_the_comparison_table_bolds_the_best_as_the_task_declares():
    def stats(value):
        return {"mistakes": {"mean": value, "std": 0.0, "values": [value]}}

    results = {"a": {"x": stats(10.0)}, "b": {"x": stats(40.0)}}
    lower = comparison_table(results, "mistakes", titles={}, lower_is_better=True)
    higher = comparison_table(results, "mistakes", titles={}, lower_is_better=False)
    assert "| x | **10.00** | 40.00 |" in lower
    assert "| x | 10.00 | **40.00** |" in higher
