"""GPU check: SF-MD vs MMANet training steps at the paper's full sizes, on generated data.

Prepared for a CUDA machine (one command, under 5 minutes; it also runs gpu_e2e.py)::

    bash benchmarks/gpu_check.sh        # SF at 112x112 and ESANet-R50 at 480x640

``--task face`` builds ``configs/casia_surf/base.yaml`` (SF network, rgb/depth/ir at
112 x 112, batch 64); ``--task nyuv2`` builds ``configs/nyuv2/base.yaml`` (ESANet with
ResNet-50 encoders, from random weights, rgb + depth at 480 x 640, 40 classes, batch 8). The
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


def timed_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per training step (median): ``Trainer.step`` (a ``TrainingStep``) (masks, Ω samples,
    forward, backward, finiteness check, optimizer step) on one batch kept on the device."""
    device = trainer.device
    inputs, labels = next(iter(trainer.train_loader))
    inputs = {k: v.to(device) for k, v in inputs.items()}
    labels = labels.to(device)
    omega = trainer.mining.omega_lookup() if trainer.mining is not None else None
    trainer.model.train()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.step(dict(inputs), labels, omega)
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
    cuda = args.device.startswith("cuda")
    # Fixed input sizes: let cuDNN pick the fastest convolution algorithms.
    torch.backends.cudnn.benchmark = cuda
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
            f"precision={args.precision}",  # the trainer's autocast (and fp16 grad scaler)
            f"channels_last={str(args.channels_last).lower()}",
            "model.pretrained=null",  # step times do not depend on the starting weights
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
        trainers["mmanet"].mining.regularizer.omega = sub_masks(drop_one_masks(len(channels))[0])
        for trainer in trainers.values():
            timed_steps(trainer, args.warmup)  # warm-up (cuDNN autotune, allocator)
        medians: dict[str, list[float]] = {name: [] for name in trainers}
        peak: dict[str, float] = {name: 0.0 for name in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                medians[name].append(timed_steps(trainer, args.steps))
                if cuda:
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated() / 2**30)
    step = {name: statistics.median(values) for name, values in medians.items()}
    device = torch.cuda.get_device_name() if cuda else args.device
    print(
        f"{device}, torch {torch.__version__}, {args.task}, {args.precision}, "
        f"{size[0]}x{size[1]}, batch {batch}, channels_last={args.channels_last}"
    )
    for name, seconds in step.items():
        memory = f"  peak GPU memory {peak[name]:6.2f} GiB" if cuda else ""
        print(f"{name:7s} {seconds * 1e3:8.1f} ms/step  {batch / seconds:8.1f} images/s{memory}")
    print(f"RATIO mmanet_step/sf_md_step = {step['mmanet'] / step['sf_md']:.3f}")


if __name__ == "__main__":
    main()
