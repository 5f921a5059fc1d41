"""Benchmark: data-parallel training with 2 gloo processes vs 1 process, and a metrics check.

The bundled demo (UCI Multiple Features, MMANet, the demo config at 1 thread per
process) is trained for ``--epochs`` epochs once by ``mmanet train`` (one process) and
once by ``torchrun --nproc_per_node=2 -m mmanet train`` (two processes, each with half
of every epoch, so each epoch has half the steps). Training samples per second come from
the epochs' ``epoch_seconds`` in ``log.jsonl`` (the first epoch, with start-up costs,
left out), the median over epochs. Then the two-process run's final checkpoint is
evaluated by one process (``mmanet evaluate``) and its metrics are compared with the
ones the two processes computed on their shards: they must be identical.

Usage::

    python benchmarks/bench_distributed.py            # 8 epochs
    python benchmarks/bench_distributed.py --quick    # 3 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import busy_note, load_average  # benchmarks/common.py

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mfeat" / "demo.yaml"


def mmanet(args: list[str], processes: int = 1) -> None:
    launcher = [sys.executable, "-m", "mmanet"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(processes), "-m", "mmanet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mmanet {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")


def samples_per_second(run: Path, train_samples: int) -> float:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    seconds = [row["epoch_seconds"] for row in rows[1:]] or [rows[0]["epoch_seconds"]]
    return train_samples / statistics.median(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    epochs = 3 if args.quick else args.epochs
    load_before = load_average()
    common = [
        "--config", str(CONFIG), f"optim.epochs={epochs}", "optim.warmup_epochs=1",
        f"optim.milestones=[{epochs}]", "method.mar.warmup_epochs=1", "progress=false",
        "tensorboard=false", "threads=1",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "teacher"
        mmanet(["train", *common, "method.name=teacher", f"out={teacher}"])
        student = [*common, "method.name=mmanet", f"method.teacher={teacher}"]
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        mmanet(["train", *student, f"out={one}"])
        mmanet(["train", *student, f"out={two}"], processes=2)
        train_samples = 1200
        speed_one = samples_per_second(one, train_samples)
        speed_two = samples_per_second(two, train_samples)
        sharded = json.loads((two / "results_test.json").read_text())
        mmanet(["evaluate", "--run", str(two)])
        single = json.loads((two / "results_test.json").read_text())
    same = sharded["combinations"] == single["combinations"]
    ranks = sharded["distributed"]["ranks"]
    print(f"bench_distributed: MMANet on the demo data, {epochs} epochs, 1 thread per process")
    print(f"load average before: {load_before}")
    note = busy_note(load_before)
    if note:
        print(note)
    print(f"  1 process : {speed_one:8.0f} training samples/s")
    print(f"  2 gloo    : {speed_two:8.0f} training samples/s")
    print(f"  ranks agree on Ω and weights: {ranks[0] == ranks[1]}")
    print(f"  2-process metrics == 1-process evaluation of its checkpoint: {same}")
    print(
        f"RATIO samples_per_s(2 processes)/samples_per_s(1 process) = {speed_two / speed_one:.2f}"
    )
    return 0 if same and ranks[0] == ranks[1] else 1


if __name__ == "__main__":
    sys.exit(main())
