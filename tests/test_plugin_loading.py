"""A user's own method, loss term and task (one .py file in the config's ``imports``) go
through ``mmanet compare`` — the method named by ``--methods`` before anything else has
imported the file — and the run is evaluated from another folder: the run records the
file by its absolute path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mmanet import plugins
from mmanet.cli import main
from mmanet.engine.checkpoint import load_meta, resolve_checkpoint
from mmanet.experiment import demo_config_path
from mmanet.registry import LOSS_TERMS, METHODS, TASKS

STEM = "plugin_loading_method"  # the file's name: a module no other test imports
PLUGIN = """
import torch

from mmanet.engine import Step, register_loss_term
from mmanet.methods import Method, register_method
from mmanet.tasks import ClassificationTask, register_task


@register_loss_term("plugin_confidence")
def confidence(step: Step) -> torch.Tensor:
    log_p = step.out.logits.float().log_softmax(dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


register_method(Method("plugin_sf_md", "SF-MD+P", terms={"plugin_confidence": 0.1}))


@register_task("plugin_mistakes")
class Mistakes(ClassificationTask):
    name = "plugin_mistakes"
    metrics = {"mistakes": "min", "accuracy": "max"}  # noqa: RUF012
    default_metric = "mistakes"
    demo_config = None

    def metrics_from_confusion(self, confusion):
        metrics = super().metrics_from_confusion(confusion)
        return {"mistakes": metrics["error"], "accuracy": metrics["accuracy"]}
"""
TINY = [  # tests/test_tune.py's, two epochs
    "optim.epochs=2",
    "optim.warmup_epochs=0",
    "optim.milestones=[1]",
    "data.modalities=[fou,kar,mor]",
    "model.encoder.widths=[32,16]",
    "model.head_widths=[32]",
    "tensorboard=false",
    "progress=false",
]


@pytest.fixture
def plugin(tmp_path):
    """The user's file in its own folder; afterwards its names are unregistered and the
    module forgotten, so that no other test sees them."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    file = folder / f"{STEM}.py"
    file.write_text(PLUGIN)
    assert "plugin_sf_md" not in METHODS  # else the test would not show the order
    yield file
    METHODS.unregister("plugin_sf_md")
    LOSS_TERMS.unregister("plugin_confidence")
    TASKS.unregister("plugin_mistakes")
    plugins._imported.pop(str(file.resolve()), None)
    sys.modules.pop(f"mmanet_user_{STEM}", None)


def test_compare_a_users_method_and_evaluate_it_from_another_folder(
    plugin, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(plugin.parent)  # imports=[<file>] relative to here, as a user types it
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "sf_md,plugin_sf_md", "--seeds", "1", "--out", str(out)]
    args += ["--no-figures", "--no-progress", f"imports=[{plugin.name}]"]
    args += ["task=plugin_mistakes", *TINY]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())
    assert summary["metric"] == "mistakes" and summary["lower_is_better"] is True
    assert summary["config"]["imports"] == [str(plugin)]
    assert (
        "(mistakes in %, test split, seed 0; lower is better)" in (out / "results.md").read_text()
    )

    run = out / "seed-0" / "plugin_sf_md"
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["imports"] == [str(plugin)]  # absolute: not "plugin_loading_method.py"
    assert load_meta(resolve_checkpoint(run))["config"]["imports"] == [str(plugin)]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--split", "val"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "MISTAKES" in printed and "fou+kar+mor" in printed

    # the file gone, a fresh process is told which file, in one line
    plugin.rename(plugin.with_suffix(".moved"))
    done = subprocess.run(
        [sys.executable, "-m", "mmanet", "evaluate", "--run", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=elsewhere,
    )
    assert done.returncode == 2
    assert done.stderr == f"mmanet: error: imports: file not found: {plugin}\n"


def test_every_command_loads_the_imports_before_it_looks_up_a_name(plugin, tmp_path, capsys):
    """A method and a task that only the config's ``imports`` register, named on the
    command line: each command reads the names after loading the imports, and gets as far
    as the first error that is not about them (export, predict and evaluate read a run's
    imports first: the test above)."""
    config = tmp_path / "user.yaml"
    config.write_text(f"extends: {demo_config_path()}\nimports: [{plugin}]\n")
    user = ["--config", str(config)]
    commands = {
        "compare": (
            ["compare", *user, "--methods", "plugin_sf_md", "--baseline", "nope"],
            "--baseline 'nope' is not among the methods compared",
        ),
        "demo": (
            ["demo", *user, "--task", "plugin_mistakes", "--baseline", "nope"],
            "--baseline 'nope' is not among the methods compared",
        ),
        "train": (
            ["train", *user, "method.name=plugin_sf_md", "task=plugin_mistakes"],
            "optim.epochs must be >= 1, got 0",
        ),
        "tune": (
            ["tune", *user, "--method", "plugin_sf_md", "--space", str(tmp_path / "no.yaml")],
            f"space file not found: {tmp_path / 'no.yaml'}",
        ),
    }
    for command, (args, message) in commands.items():
        out = tmp_path / command
        extra = [f"out={out}", "optim.epochs=0"] if command == "train" else ["--out", str(out)]
        assert main([*args, *extra]) == 2, command
        assert capsys.readouterr().err == f"mmanet: error: {message}\n", command
