"""GPU check: SF-MD vs MMANet training steps at the paper's full sizes, on generated data.

Prepared for a CUDA machine (one command, under 5 minutes)::

    bash benchmarks/gpu_check.sh        # SF at 112x112 and ESANet-R34-NBt1D at 480x640

``--task face`` builds ``configs/casia_surf/base.yaml`` (SF network, rgb/depth/ir at
112 x 112, batch 64); ``--task nyuv2`` builds ``configs/nyuv2/base.yaml`` (ESANet with
ResNet-34 NonBottleneck1D encoders, rgb + depth at 480 x 640, 40 classes, batch 8). The
data are generated and held on the device; an untrained teacher is saved; then
``--steps`` training steps of SF-MD (ESANet-MD) and of full MMANet (teacher forward +
MAD + MAR with Ω fixed to a drop-one mask and its sub-masks) are timed under autocast
(``--precision bf16|fp16|fp32``, a grad scaler for fp16), optionally channels-last,
alternating the two, after warm-up steps. It prints images/s, the peak GPU memory and
the MMANet / SF-MD step-time ratio. ``--device cpu`` with a small ``--size`` runs it
anywhere as a smoke test.
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
from mmanet.modality import drop_one_masks, sub_masks

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASKS = {
    # task: (config, {modality: channels}, classes, full size, batch)
    "face": ("casia_surf/base.yaml", {"rgb": 3, "depth": 3, "ir": 3}, 2, (112, 112), 64),
    "nyuv2": ("nyuv2/base.yaml", {"rgb": 3, "depth": 1}, 40, (480, 640), 8),
}


def generated_data(task: str, n: int, size: tuple[int, int]) -> DataBundle:
    _, channels, classes, _, _ = TASKS[task]
    gen = torch.Generator().manual_seed(0)
    views = {m: torch.randn(n, c, *size, generator=gen) for m, c in channels.items()}
    label_shape = (n, *size) if task == "nyuv2" else (n,)
    split = TensorMultimodalDataset(views, torch.randint(0, classes, label_shape, generator=gen))
    return DataBundle(
        split,
        split,
        split,
        list(channels),
        {m: (c, *size) for m, c in channels.items()},
        [f"class-{k}" for k in range(classes)],
        task="segmentation" if task == "nyuv2" else "classification",
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
    parser.add_argument("--task", default="face", choices=list(TASKS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--size", type=int, nargs=2, help="height width (default: full)")
    parser.add_argument("--batch", type=int, help="batch size (default: the config's)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    config_name, channels, _, full_size, full_batch = TASKS[args.task]
    config = CONFIGS / config_name
    size = tuple(args.size or full_size)
    batch = args.batch or full_batch

    data = generated_data(args.task, batch * 2, size)
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            f"device={args.device}",
            "progress=false",
            "tensorboard=false",
            f"data.batch_size={batch}",
            "data.num_workers=0",
        ]
        teacher = Trainer(
            build_config(config, [*common, "method.name=teacher", f"out={tmp}/teacher"]), data
        )
        teacher.save()
        trainers = {
            "sf_md": Trainer(
                build_config(config, [*common, "method.name=sf_md", f"out={tmp}/sf_md"]), data
            ),
            "mmanet": Trainer(
                build_config(
                    config,
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
        trainers["mmanet"].miner.omega = sub_masks(drop_one_masks(len(channels))[0])
        for trainer in trainers.values():
            if args.channels_last:
                trainer.model.to(memory_format=torch.channels_last)
            timed_steps(trainer, args.warmup, args.precision)  # warm-up (cuDNN autotune, allocator)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        medians: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                medians[name].append(timed_steps(trainer, args.steps, args.precision))
    step = {name: statistics.median(values) for name, values in medians.items()}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"{device}, {args.task}, {args.precision}, {size[0]}x{size[1]}, batch {batch}, "
        f"channels_last={args.channels_last}"
    )
    for name, seconds in step.items():
        print(f"{name:7s} {seconds * 1e3:8.1f} ms/step  {batch / seconds:8.1f} images/s")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"RATIO mmanet_step/sf_md_step = {step['mmanet'] / step['sf_md']:.3f}")


if __name__ == "__main__":
    main()
