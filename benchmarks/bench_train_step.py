"""Benchmark: one training epoch of full MMANet versus SF-MD on the bundled demo.

What is measured (bundled demo config, UCI Multiple Features, 6 views, 1200 training
samples, batch 64 -> 18 steps per epoch, CPU):

- ``sf_md``: ``Trainer.train_epoch`` with ``method.name=sf_md`` (modality dropout only).
- ``mmanet``: ``Trainer.train_epoch`` with ``method.name=mmanet``: the frozen teacher's
  forward pass and L_MAD every step, and L_MAR with Ω *fixed*, as after MAR warm-up.
  Ω comes from real mining: the MMANet trainer is built with
  ``method.mar.warmup_epochs=1``, trains one (untimed) warm-up epoch and then runs
  ``Trainer.mine(1)``, which fixes Ω (31 of the 63 combinations for 6 views).
- ``teacher_fwd``: reference only, the teacher's no-grad forward pass over the batches
  of one epoch (same loader settings) as the trainer runs it (``FrozenTeacher``:
  batch norms folded, channels-last on the CPU), i.e. the part of the MMANet overhead
  that the teacher alone costs.

The teacher is trained for one epoch (``method.name=teacher``) into a temporary folder
first. Every variant gets one untimed warm-up epoch; then the variants run alternately,
in an order that rotates every repetition, ``--reps`` times. Absolute times on a shared
machine are noise; the ratios of the medians (and the median of the per-repetition
ratios) are what is reported.

Usage::

    python benchmarks/bench_train_step.py            # full run, 7 repetitions
    python benchmarks/bench_train_step.py --quick    # smoke run (< 20 s)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from common import busy_note, load_average, threads_and_reps  # benchmarks/common.py
from mmanet.config import build_config
from mmanet.data import DataBundle, TensorMultimodalDataset, build_data
from mmanet.engine import Trainer
from mmanet.engine.loader import make_loader
from mmanet.experiment import demo_config_path

# The issues' floors for MMANet epoch / SF-MD epoch: 1.8 for the bundled demo (core
# issue), 1.45 for the SF network (speed issue); none was set for ESANet.
FLOORS = {"classification": 1.8, "sf": 1.45, "segmentation": None}
QUICK_TRAIN_SAMPLES = 256  # --quick: 4 steps of 64 per epoch


SF_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "casia_surf" / "base.yaml"
SF_SAMPLES, SF_BATCH = 64, 16  # --task sf: generated 112 x 112 rgb / depth / ir


def make_config(
    name: str, out: Path, task: str = "classification", folder: str | None = None, **method: Any
):
    overrides: dict[str, Any] = {
        "out": str(out / (folder or name)),
        "threads": 0,  # this script sets the thread count itself (--threads)
        "progress": False,
        "tensorboard": False,
        "method": {"name": name, **method},
    }
    if task == "sf":  # the paper's CASIA-SURF setting on the CPU, smaller batches
        overrides.update(device="cpu", data={"batch_size": SF_BATCH, "num_workers": 0})
        return build_config(SF_CONFIG, overrides)
    return build_config(demo_config_path(task), overrides)


def shrink(data: DataBundle, n: int) -> DataBundle:
    """The bundle with only the first ``n`` training samples (for --quick)."""
    train = data.train
    if not isinstance(train, TensorMultimodalDataset):
        return dataclasses.replace(data, train=Subset(train, range(n)))
    views = {k: v[:n] for k, v in train.views.items()}
    return dataclasses.replace(data, train=TensorMultimodalDataset(views, train.labels[:n]))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 7; 2 quick)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_TRAIN_SAMPLES} training samples, 2 repetitions, "
        "1 thread unless --threads is given",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's default, 1 with --quick)",
    )
    parser.add_argument(
        "--task",
        default="classification",
        choices=["classification", "segmentation", "sf"],
        help="the bundled demo to time: Multiple Features, ESANet on the rendered scenes, "
        "or the SF network at 112 x 112 (CASIA-SURF config, generated images)",
    )
    args = parser.parse_args(argv)
    reps = threads_and_reps(parser, args, reps=7)

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="mmanet-bench-") as tmp:
        out = Path(tmp)
        teacher_cfg = make_config("teacher", out, args.task)
        if args.task == "sf":
            from gpu_check import generated_data  # benchmarks/gpu_check.py

            data = generated_data("face", SF_SAMPLES, (112, 112))
        else:
            data = build_data(teacher_cfg.data)
        if args.quick and args.task != "sf":
            data = shrink(data, QUICK_TRAIN_SAMPLES)

        # 1. A teacher trained for one epoch (a loadable checkpoint is all MMANet needs).
        Trainer(teacher_cfg, data).fit(stop_after=1)
        teacher_dir = out / "teacher"

        # 2. The two trainers; MMANet with MAR active (Ω fixed by a real mining pass).
        sf_md = Trainer(make_config("sf_md", out, args.task), data)
        mmanet = Trainer(
            make_config(
                "mmanet", out, args.task, teacher=str(teacher_dir), mar={"warmup_epochs": 1}
            ),
            data,
        )
        mmanet.run_dir.mkdir(parents=True, exist_ok=True)  # mine() writes miner.json there
        sf_md.train_epoch(1)  # untimed warm-up epochs
        mmanet.train_epoch(1)
        mine_row = mmanet.mine(1)
        # the bundled demo has no augmentation: MMANet with the teacher's outputs cached
        cached = None
        if args.task == "classification":
            cached = Trainer(
                make_config(
                    "mmanet",
                    out,
                    args.task,
                    folder="mmanet_cached",
                    teacher=str(teacher_dir),
                    mar={"warmup_epochs": 1},
                    cache_teacher=True,
                ),
                data,
            )
            cached.run_dir.mkdir(parents=True, exist_ok=True)
            cached.train_epoch(1)  # builds the cache (untimed)
            cached.mine(1)
        assert mmanet.mining is not None and mmanet.mining.omega is not None, "Ω was not fixed"
        omega_size = len(mmanet.mining.omega)

        teacher_loader = make_loader(
            data.train,
            sf_md.cfg.data.batch_size,
            0,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            drop_last=len(data.train) > sf_md.cfg.data.batch_size,
        )

        def teacher_epoch() -> None:  # as the trainer runs it (folded, NHWC on the CPU)
            for inputs, _ in teacher_loader:
                mmanet.objective.teacher(inputs)

        teacher_epoch()  # warm-up

        epoch = {"sf_md": 1, "mmanet": 1}
        mar_fractions: list[float] = []

        def run_sf_md() -> None:
            epoch["sf_md"] += 1
            sf_md.train_epoch(epoch["sf_md"])

        def run_mmanet() -> None:
            epoch["mmanet"] += 1
            row = mmanet.train_epoch(epoch["mmanet"])
            if "mar_fraction" not in row or "loss_reg" not in row:
                raise RuntimeError("MAR was not active in the MMANet epoch")
            mar_fractions.append(row["mar_fraction"])

        variants: dict[str, Callable[[], None]] = {
            "sf_md": run_sf_md,
            "mmanet": run_mmanet,
            "teacher_fwd": teacher_epoch,
        }
        if cached is not None:
            epoch["mmanet_cached"] = 1

            def run_cached() -> None:
                epoch["mmanet_cached"] += 1
                cached.train_epoch(epoch["mmanet_cached"])

            variants["mmanet_cached"] = run_cached
        times: dict[str, list[float]] = {name: [] for name in variants}
        order = list(variants)
        for rep in range(reps):
            shift = rep % len(order)
            for name in order[shift:] + order[:shift]:
                gc.collect()
                times[name].append(timed(variants[name]))
    load_after = load_average()

    steps = len(sf_md.train_loader)
    median = {name: statistics.median(values) for name, values in times.items()}
    paired = {
        name: statistics.median(t / s for t, s in zip(times[name], times["sf_md"], strict=True))
        for name in variants
        if name != "sf_md"
    }
    ratio = {name: median[name] / median["sf_md"] for name in variants if name != "sf_md"}

    print(
        f"bench_train_step: {args.task} demo config, {len(data.train)} training samples, "
        f"{steps} steps/epoch, {reps} repetitions, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"MMANet: Ω = {omega_size} combinations ({mine_row.get('omega', '')[:60]}...), "
        f"mean MAR fraction of a batch {statistics.mean(mar_fractions):.2f}"
    )
    print(f"load average before / after: {load_before} / {load_after}")
    note = busy_note(load_before)
    if note:
        print(note)
    print()
    print(
        f"{'variant':<14} {'median s':>9} {'min s':>8} {'max s':>8} {'÷ sf_md':>8} {'paired ÷':>9}"
    )
    for name in variants:
        values = times[name]
        rel = 1.0 if name == "sf_md" else ratio[name]
        pair = 1.0 if name == "sf_md" else paired[name]
        print(
            f"{name:<14} {median[name]:>9.4f} {min(values):>8.4f} {max(values):>8.4f} "
            f"{rel:>8.3f} {pair:>9.3f}"
        )
    print()
    floor = FLOORS[args.task]
    verdict = "no floor" if floor is None else "OK" if ratio["mmanet"] <= floor else "ABOVE FLOOR"
    print(f"RATIO mmanet_epoch/sf_md_epoch = {ratio['mmanet']:.3f} (floor <= {floor}: {verdict})")
    print(f"RATIO teacher_forward_epoch/sf_md_epoch = {ratio['teacher_fwd']:.3f} (reference)")
    if "mmanet_cached" in ratio:
        print(
            f"RATIO mmanet_cached_teacher_epoch/sf_md_epoch = {ratio['mmanet_cached']:.3f} "
            "(method.cache_teacher=true)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
