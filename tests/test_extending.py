"""docs/extending.md, done from outside src/: a fusion, a dataset, a distillation loss with
its method, a loss term with its method, a task and a model, each one file in
tests/extensions/ that registers itself, trained, evaluated and exported through the CLI
with the file listed in ``imports`` — and in fresh processes, as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import evaluation
from mmanet.cli import main
from mmanet.config import build_config

EXTENSIONS = Path(__file__).parent / "extensions"
DOCS = Path(__file__).parents[1] / "docs" / "extending.md"
QUICK = [
    "optim.epochs=3",
    "optim.warmup_epochs=0",
    "optim.milestones=[2]",
    "optim.lr=0.05",
    "data.batch_size=32",
    "method.mar.warmup_epochs=1",
    "model.encoder.widths=[16]",
    "model.head_widths=[16]",
    "model.head_norm=layer",
    "progress=false",
    "tensorboard=false",
]


def imports(*files: str) -> str:
    return "imports=[" + ",".join(str(EXTENSIONS / f) for f in files) + "]"


def train_evaluate_export(tmp_path: Path, files: list[str], *settings: str) -> dict:
    """``mmanet train`` (with a teacher first when the method reads one) -> ``evaluate`` ->
    ``export``; returns the evaluation report."""
    base = [imports("sines_dataset.py", *files), "data.name=sines", *QUICK]
    teacher, run = tmp_path / "teacher", tmp_path / "run"
    if build_config(overrides=[*base, *settings]).method.uses_teacher:
        assert main(["train", *base, "method.name=teacher", f"out={teacher}"]) == 0
        settings = (*settings, f"method.teacher={teacher}")
    assert main(["train", *base, *settings, f"out={run}"]) == 0
    assert main(["evaluate", "--run", str(run), "--split", "val"]) == 0
    onnx = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(onnx)]) == 0
    sidecar = json.loads(onnx.with_name("model.onnx.json").read_text())
    assert max(sidecar["max_abs_difference"].values()) < 1e-2  # onnxruntime vs torch
    return evaluation(run, "val")


def test_a_fusion_of_ones_own(tmp_path):
    report = train_evaluate_export(tmp_path, ["gated_fusion.py"], "model.fusion=gated")
    assert list(report["combinations"]) == ["wave", "spectrum", "wave+spectrum"]
    assert report["average"]["error"] < 66  # better than chance on three classes


def test_a_distillation_loss_and_its_method(tmp_path):
    train_evaluate_export(tmp_path, ["rkd_distillation.py"], "method.name=sf_rkd")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    assert all(row["loss_distill"] > 0 for row in log)


def test_a_loss_term_and_its_method(tmp_path):
    train_evaluate_export(tmp_path, ["confidence_term.py"], "method.name=sf_md_cp")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    row = log[-1]
    assert -torch.log(torch.tensor(3.0)) <= row["loss_confidence"] <= 0  # −H(p) ∈ [−ln 3, 0]
    assert row["loss"] == pytest.approx(row["loss_task"] + 0.1 * row["loss_confidence"], 1e-4)


def test_a_task_of_ones_own(tmp_path):
    report = train_evaluate_export(
        tmp_path, ["balanced_task.py"], "method.name=sf_md", "task=balanced_classification"
    )
    assert report["metrics"] == ["balanced_error", "error"]
    assert all(0 <= m["balanced_error"] <= 100 for m in report["combinations"].values())


def test_a_model_of_ones_own(tmp_path):
    report = train_evaluate_export(
        tmp_path, ["tiny_model.py"], "method.name=mmanet", "model.name=tiny"
    )
    assert report["method"] == "mmanet" and len(report["combinations"]) == 3


@pytest.mark.slow
def test_every_command_loads_a_users_modules_in_a_fresh_process(tmp_path):
    """train (teacher, MMANet), evaluate, export, predict and compare (in two spawned
    processes) on a user's dataset and model, each command a new Python process."""

    def mmanet(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "mmanet", *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    base = [imports("sines_dataset.py", "tiny_model.py"), "data.name=sines", "model.name=tiny"]
    base += QUICK
    mmanet("train", *base, "method.name=teacher", "out=teacher")
    mmanet("train", *base, "method.name=mmanet", "method.teacher=teacher", "out=mmanet")
    assert "wave+spectrum" in mmanet("evaluate", "--run", "mmanet")
    mmanet("export", "--checkpoint", "mmanet", "--out", "model.onnx")
    wave = tmp_path / "wave.npy"
    np.save(wave, np.zeros(32, dtype=np.float32))
    printed = mmanet("predict", "--checkpoint", "mmanet", "--wave", str(wave))
    assert "modalities used: wave; missing: spectrum" in printed
    printed = mmanet("compare", "--methods", "sf_md,mmanet", "--jobs", "2", "--out", "cmp", *base)
    assert "MMANet" in printed and (tmp_path / "cmp" / "results.md").is_file()


def test_a_module_imported_by_the_user_and_listed_in_imports_is_one_entry(tmp_path):
    """The user's code imports its module by name (``import gated_fusion``), then loads a
    run whose ``imports`` list the same file by path, and the other way round: one module,
    no "already registered"."""
    run = tmp_path / "run"
    base = [imports("sines_dataset.py", "gated_fusion.py"), "data.name=sines", *QUICK]
    assert main(["train", *base, "model.fusion=gated", f"out={run}", "--stop-after", "1"]) == 0
    by_name_first = (
        "import gated_fusion, sines_dataset\n"
        "from mmanet.engine import load_network\n"
        f"network, _ = load_network({str(run)!r})\n"
        "assert type(network.fusion) is gated_fusion.GatedFusion\n"
    )
    by_path_first = (
        "from mmanet.plugins import import_user_modules\n"
        f"import_user_modules([{str(EXTENSIONS / 'gated_fusion.py')!r}])\n"
        "import gated_fusion\n"
        "from mmanet.registry import FUSIONS\n"
        "assert FUSIONS.get('gated') is gated_fusion.GatedFusion\n"
    )
    for script in (by_name_first, by_path_first):
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(EXTENSIONS)},
        )
        assert done.returncode == 0, done.stderr


def test_another_definition_under_a_taken_name_is_still_refused(tmp_path):
    from mmanet.registry import Registry

    registry: Registry = Registry("thing", "thing", "mmanet.errors")
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    for file in (first, second):
        file.write_text("class Thing:\n    pass\n")
    from mmanet.plugins import import_user_modules

    one, other = import_user_modules([str(first), str(second)])
    registry.register("thing", one.Thing)
    registry.register("thing", one.Thing)  # the same definition again: fine
    with pytest.raises(ValueError, match="a thing named 'thing' is already registered"):
        registry.register("thing", other.Thing)  # same name and code, another file


def test_the_guide_shows_each_extension_file_as_it_is():
    guide = DOCS.read_text()
    for path in sorted(EXTENSIONS.glob("*.py")):
        code = path.read_text().strip()
        assert code in guide, f"docs/extending.md does not show {path.name} as it is"


def write_windows(folder: Path, count: int = 150) -> Path:
    """A manifest of .npy sensor windows (accel, gyro: (3, 64) each) of three activities."""
    rng = np.random.default_rng(0)
    time = np.linspace(0, 1, 64)
    rows = ["accel,gyro,label,split"]
    for i in range(count):
        label = i % 3
        accel = np.sin(2 * np.pi * (label + 1) * 2 * time) + rng.normal(0, 1.0, (3, 64))
        gyro = (label - 1) * 0.5 + rng.normal(0, 1.0, (3, 64))
        for name, window in (("accel", accel), ("gyro", gyro)):
            np.save(folder / f"{name}_{i:03d}.npy", window.astype(np.float32))
        split = ("train", "train", "train", "val", "test")[i % 5]
        rows.append(f"accel_{i:03d}.npy,gyro_{i:03d}.npy,{label},{split}")
    manifest = folder / "windows.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def code_lines(path: Path) -> int:
    """Lines of code: not blank, not comments, not docstrings."""
    import ast

    source = path.read_text()
    documented: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            documented |= set(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#") and number not in documented
    )


@pytest.mark.slow
def test_the_own_encoders_example_trains_evaluates_and_exports(tmp_path):
    example = Path(__file__).parents[1] / "docs" / "examples" / "own_encoders.py"
    assert code_lines(example) <= 30
    manifest = write_windows(tmp_path)
    done = subprocess.run(
        [sys.executable, str(example), str(manifest)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for combination in ("accel", "gyro", "accel+gyro", "Average (3 combinations)"):
        assert combination in done.stdout
    report = json.loads((tmp_path / "runs" / "mmanet" / "results_test.json").read_text())
    assert report["combinations"]["accel+gyro"]["error"] < 40  # chance: 67 %
    sidecar = json.loads((tmp_path / "runs" / "mmanet" / "model.onnx.json").read_text())
    assert sidecar["mask"]["order"] == ["accel", "gyro"]
    assert max(sidecar["max_abs_difference"].values()) < 1e-4


def test_a_network_built_in_python_is_named_when_a_command_cannot_rebuild_it(tmp_path, capsys):
    from torch import nn

    from mmanet.config import build_config
    from mmanet.engine import Trainer
    from mmanet.models import from_encoders
    from mmanet.plugins import import_user_modules

    import_user_modules([str(EXTENSIONS / "sines_dataset.py")])

    def encoders():
        return {"wave": nn.Linear(32, 8), "spectrum": nn.Linear(17, 8)}

    settings = ["data.name=sines", *QUICK, "optim.epochs=1", f"out={tmp_path / 'run'}"]
    Trainer(build_config(overrides=settings), model=from_encoders(encoders)).fit()
    capsys.readouterr()  # the training's output (5 steps per epoch: a warning)
    assert main(["export", "--checkpoint", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "the network was built in Python (mmanet.models.from_encoders)" in err
    assert err.count("\n") == 1 and not (tmp_path / "run" / "model.onnx").exists()
