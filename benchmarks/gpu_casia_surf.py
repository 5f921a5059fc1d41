"""GPU check: SF-MD vs MMANet training steps of the SF network on generated 112x112 data.

Prepared for a CUDA machine (one command, well under 5 minutes)::

    bash benchmarks/gpu_casia_surf.sh            # = python benchmarks/gpu_casia_surf.py

It builds the CASIA-SURF configuration (``configs/casia_surf/base.yaml``: SF network,
three 3-channel modalities, batch 64) on generated data held on the device, saves an
untrained teacher, and times ``--steps`` training steps of SF-MD and of full MMANet
(teacher forward + MAD + MAR with Ω fixed to a weak pair and its singletons) under
autocast (``--precision bf16|fp16|fp32``), alternating the two, after warm-up steps.
It prints images/s, the peak GPU memory and the MMANet / SF-MD step-time ratio.
``--device cpu --size 32 --steps 2`` runs it anywhere as a smoke test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from mmanet.config import build_config
from mmanet.data import DataBundle, TensorMultimodalDataset
from mmanet.engine import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "casia_surf" / "base.yaml"
MODALITIES = ["rgb", "depth", "ir"]


def generated_data(n: int, size: int) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    views = {m: torch.randn(n, 3, size, size, generator=gen) for m in MODALITIES}
    labels = torch.randint(0, 2, (n,), generator=gen)
    split = TensorMultimodalDataset(views, labels)
    return DataBundle(
        split,
        split,
        split,
        MODALITIES,
        dict.fromkeys(MODALITIES, (3, size, size)),
        ["attack", "bona fide"],
    )


def timed_steps(trainer: Trainer, steps: int, precision: str) -> float:
    """Seconds per training step (median), the batch drawn once and kept on the device."""
    device = trainer.device
    inputs, labels = next(iter(trainer.train_loader))
    inputs = {k: v.to(device) for k, v in inputs.items()}
    labels = labels.to(device)
    omega = trainer.miner.omega_lookup(device) if trainer.miner is not None else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    times = []
    for _ in range(steps):
        mask = trainer.sampler.sample(len(labels), trainer.mask_generator).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss, _, _ = trainer.training_step(inputs, labels, mask, omega)
        trainer.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(trainer.optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    data = generated_data(args.batch * 2, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            f"device={args.device}",
            "progress=false",
            "tensorboard=false",
            f"data.batch_size={args.batch}",
            "data.num_workers=0",
        ]
        teacher = Trainer(
            build_config(CONFIG, [*common, "method.name=teacher", f"out={tmp}/teacher"]), data
        )
        teacher.save()
        trainers = {
            "sf_md": Trainer(
                build_config(CONFIG, [*common, "method.name=sf_md", f"out={tmp}/sf_md"]), data
            ),
            "mmanet": Trainer(
                build_config(
                    CONFIG,
                    [
                        *common,
                        "method.name=mmanet",
                        f"method.teacher={tmp}/teacher",
                        f"out={tmp}/mmanet",
                    ],
                ),
                data,
            ),
        }
        trainers["mmanet"].miner.omega = [(1, 0, 0), (0, 0, 1), (1, 0, 1)]  # rgb+ir and singles
        for trainer in trainers.values():
            if args.channels_last:
                trainer.model.to(memory_format=torch.channels_last)
            timed_steps(trainer, 3, args.precision)  # warm-up (cuDNN autotune, allocator)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        medians: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                medians[name].append(timed_steps(trainer, args.steps, args.precision))
    step = {name: statistics.median(values) for name, values in medians.items()}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"{device}, {args.precision}, {args.size}x{args.size}, batch {args.batch}, "
        f"channels_last={args.channels_last}"
    )
    for name, seconds in step.items():
        print(f"{name:7s} {seconds * 1e3:8.1f} ms/step  {args.batch / seconds:8.0f} images/s")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"RATIO mmanet_step/sf_md_step = {step['mmanet'] / step['sf_md']:.3f}")


if __name__ == "__main__":
    main()
