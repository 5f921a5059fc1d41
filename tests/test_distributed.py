"""Data parallelism: two gloo processes started by torchrun on the bundled data agree on Ω
and on the final weights, their metrics equal a single-process evaluation of the same
checkpoint, and an interrupted run resumes to the weights of an uninterrupted one; the
collectives keep their tensors until gloo lets go of them (scripts/ddp_stress.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import evaluation
from mmanet.engine.checkpoint import latest_checkpoint

SHORT = [
    "data.modalities=[fou,kar,zer]",
    "optim.epochs=4",
    "optim.warmup_epochs=1",
    "optim.milestones=[3]",
    "method.mar.warmup_epochs=2",
    "progress=false",
    "tensorboard=false",
    "threads=1",
]


def mmanet(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "mmanet"]
    if processes > 1:
        launcher = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--standalone", "-m", "mmanet",
        ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(run: Path) -> dict:
    return load_file(latest_checkpoint(run) / "model.safetensors")


@pytest.mark.slow
def test_two_gloo_processes_agree_evaluate_like_one_and_resume(tmp_path):
    config = ["--config", "configs/mfeat/demo.yaml", *SHORT]
    teacher = tmp_path / "teacher"
    mmanet("train", *config, "method.name=teacher", f"out={teacher}")
    student = [*config, "method.name=mmanet", f"method.teacher={teacher}"]

    whole = tmp_path / "whole"
    printed = mmanet("train", *student, f"out={whole}", processes=2).stdout
    assert printed.count("Average (7 combinations)") == 1  # rank 0 alone prints and writes
    report = json.loads((whole / "results_test.json").read_text())
    ranks = report["distributed"]["ranks"]
    assert report["distributed"]["world_size"] == 2 and len(ranks) == 2
    assert ranks[0] == ranks[1] and ranks[0]["omega"]  # same Ω, identical final weights
    assert report["omega"] == ranks[0]["omega"]

    mmanet("evaluate", "--run", str(whole))  # one process, the same checkpoint
    single = evaluation(whole)
    assert single["combinations"] == report["combinations"]

    interrupted = tmp_path / "interrupted"
    mmanet("train", *student, f"out={interrupted}", "--stop-after", "2", processes=2)
    assert latest_checkpoint(interrupted).name == "epoch-0002"
    mmanet("train", *student, f"out={interrupted}", "--resume", processes=2)
    resumed, reference = weights(interrupted), weights(whole)
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        assert resumed[name].equal(value), name


COLLECTIVES = """
import sys

import torch
from mmanet.engine import distributed

distributed.setup(torch.device("cpu"))
rank = distributed.rank()
values = [{"rank": r, "state": torch.arange(5 + 99 * r), "text": "x" * 999 * r} for r in (0, 1)]
gathered = distributed.all_gather_object(values[rank])
assert len(gathered) == 2 and all(
    g["rank"] == v["rank"] and g["state"].equal(v["state"]) and g["text"] == v["text"]
    for g, v in zip(gathered, values)
), gathered
rows = distributed.all_gather_cat(torch.full((rank + 1, 2), rank))  # sizes differ by rank
assert rows.tolist() == [[0, 0], [1, 1], [1, 1]]
assert distributed.all_reduce_sum(torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
distributed.shutdown()
assert not distributed.active() and distributed.settle(), distributed._handed_over
sys.stdout.write(f"rank {rank} ok\\n")  # one write: the two processes share the pipe
sys.stdout.flush()
"""


def test_collectives_gather_objects_and_release_every_tensor_before_exit(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launcher, "--standalone", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"rank 0 ok", "rank 1 ok"} <= set(done.stdout.split("\n"))
