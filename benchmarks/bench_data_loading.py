"""Benchmark: CASIA-SURF data loading (training augmentation, 2 workers) vs the SF training step.

Loading must not be the bottleneck: the ratio of loader throughput (samples/s) to the
SF-MD training-step throughput (samples/s, same machine, same process) should be
>= 1.5. Both run alternately for ``--reps`` rounds; medians are compared.

Data: fixture images in the real CASIA-SURF layout (``mmanet.data.fixtures``), JPEGs of
``--size`` pixels (CASIA-SURF's face crops are of that order), read, resized to 144,
rotated, cropped to 112 and flipped — three modalities per sample.

    python benchmarks/bench_data_loading.py            # 3 rounds
    python benchmarks/bench_data_loading.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import load_average  # benchmarks/common.py
from mmanet.config import build_config
from mmanet.data import build_data
from mmanet.data.fixtures import write_casia_surf
from mmanet.engine import Trainer, make_loader

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "casia_surf" / "sf_md.yaml"


def loader_throughput(loader, batches: int) -> float:
    """Samples per second over ``batches`` batches (after the workers have started)."""
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        _, labels = next(iterator)
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def step_throughput(trainer: Trainer, batch, steps: int) -> float:
    inputs, labels = batch
    start = time.perf_counter()
    for _ in range(steps):
        mask = trainer.step.sampler.sample(len(labels), trainer.step.mask_generator)
        loss, _, _ = trainer.objective(inputs, labels, mask)
        trainer.step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.step.optimizer.step()
    return steps * len(labels) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="side of the stored JPEGs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny images, 1 round")
    args = parser.parse_args()
    reps, size, batch = (1, 48, 8) if args.quick else (args.reps, args.size, 64)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_casia_surf(Path(tmp) / "surf", n_per_split=batch * 4, size=size)
        overrides = [
            f"data.root={root}",
            f"out={tmp}/run",
            "device=cpu",
            "progress=false",
            "tensorboard=false",
            f"data.batch_size={batch}",
            f"data.num_workers={args.workers}",
        ]
        config = build_config(CONFIG, overrides)
        data = build_data(config.data)
        trainer = Trainer(config, data)
        loader = make_loader(
            data.train,
            batch,
            args.workers,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
        fixed_batch = next(iter(make_loader(data.train, batch, 0)))
        step_throughput(trainer, fixed_batch, 1)  # warm-up
        loading, training = [], []
        for _ in range(reps):
            loading.append(loader_throughput(loader, 2 if args.quick else 3))
            training.append(step_throughput(trainer, fixed_batch, 1 if args.quick else 2))
    load = statistics.median(loading)
    train = statistics.median(training)
    print(
        f"bench_data_loading: CASIA-SURF layout, {size}px JPEGs -> 112x112 x 3 modalities, "
        f"batch {batch}, {args.workers} workers, {torch.get_num_threads()} torch threads"
    )
    print(f"load average before / after: {load_before} / {load_average()}")
    print(f"loading (training augmentation)  {load:9.1f} samples/s  (median of {reps})")
    print(f"SF-MD training step              {train:9.1f} samples/s  (median of {reps})")
    print(
        f"RATIO loading/objective step = {load / train:.2f} (floor >= 1.5: "
        f"{'OK' if load / train >= 1.5 else 'BELOW FLOOR'})"
    )


if __name__ == "__main__":
    main()
