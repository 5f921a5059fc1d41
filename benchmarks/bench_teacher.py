"""Benchmark: the frozen teacher's forward pass, as built vs as the trainer prepares it.

For the SF network (3 modalities, 112 x 112, batch 16) and ESANet (the segmentation
demo's widths at 96 x 128, batch 8; ``--full``: ESANet-R34-NBt1D at 240 x 320, batch 2),
in eval mode under ``no_grad``, with random batch-norm statistics:

- ``plain``: the network as built;
- ``folded``: batch norms folded into the convolutions (``mmanet.nn.fold_batch_norms``);
- ``nhwc``: channels-last weights and inputs;
- ``folded_nhwc``: both, what ``Trainer`` does with a teacher on the CPU.

The variants alternate (order rotating every repetition, ``common.measure``); reported:
median time of each and its ratio to ``plain``, and the largest difference of the logits
from ``plain``'s.

Usage::

    python benchmarks/bench_teacher.py --threads 1          # 7 repetitions
    python benchmarks/bench_teacher.py --threads 1 --full   # and ESANet-R34-NBt1D
    python benchmarks/bench_teacher.py --quick              # smoke run
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable

import torch
from torch import nn

from common import (  # benchmarks/common.py
    busy_note,
    load_average,
    measure,
    print_group,
    threads_and_reps,
)
from mmanet.config import ModelConfig, build_config
from mmanet.experiment import demo_config_path
from mmanet.models import build_model
from mmanet.nn import fold_batch_norms

Case = tuple[str, nn.Module, dict[str, torch.Tensor]]


def randomised(net: nn.Module) -> nn.Module:
    """Eval mode, frozen, with batch-norm statistics as after training (not the identity)."""
    gen = torch.Generator().manual_seed(0)
    for bn in net.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=gen))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
    return net.eval().requires_grad_(False)


def cases(quick: bool, full: bool) -> list[Case]:
    size = (48, 48) if quick else (112, 112)
    faces = {name: (3, *size) for name in ("rgb", "depth", "ir")}
    sf = build_model(ModelConfig(name="sf"), list(faces), faces, 2)
    out = [(f"SF {size[0]}x{size[1]}, batch 16", sf, faces, 16)]
    demo = build_config(demo_config_path("segmentation")).model
    seg_size = (48, 64) if quick else (96, 128)
    rgbd = {"rgb": (3, *seg_size), "depth": (1, *seg_size)}
    out.append(
        (
            f"ESANet demo {seg_size[0]}x{seg_size[1]}, batch 8",
            build_model(demo, list(rgbd), rgbd, 10),
            rgbd,
            8,
        )
    )
    if full:
        cfg = ModelConfig(name="esanet")  # the defaults: ESANet-R34-NBt1D
        big = {"rgb": (3, 240, 320), "depth": (1, 240, 320)}
        out.append(
            ("ESANet-R34-NBt1D 240x320, batch 2", build_model(cfg, list(big), big, 40), big, 2)
        )
    gen = torch.Generator().manual_seed(1)
    return [
        (
            name,
            randomised(net),
            {k: torch.randn(batch, *s, generator=gen) for k, s in shapes.items()},
        )
        for name, net, shapes, batch in out
    ]


def variants(
    net: nn.Module, inputs: dict[str, torch.Tensor]
) -> dict[str, Callable[[], torch.Tensor]]:
    folded = copy.deepcopy(net)
    fold_batch_norms(folded)
    nhwc = copy.deepcopy(net).to(memory_format=torch.channels_last)
    folded_nhwc = copy.deepcopy(folded).to(memory_format=torch.channels_last)

    def run(model: nn.Module, channels_last: bool) -> Callable[[], torch.Tensor]:
        @torch.no_grad()
        def forward() -> torch.Tensor:
            batch = inputs
            if channels_last:  # the conversion is part of the cost, as in the trainer
                batch = {
                    k: v.contiguous(memory_format=torch.channels_last) for k, v in inputs.items()
                }
            return model(batch).logits

        return forward

    return {
        "plain": run(net, False),
        "folded": run(folded, False),
        "nhwc": run(nhwc, True),
        "folded_nhwc": run(folded_nhwc, True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 7; 2 quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--full", action="store_true", help="also ESANet-R34-NBt1D at 240 x 320")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small inputs, 2 repetitions"
    )
    args = parser.parse_args(argv)
    reps = threads_and_reps(parser, args, reps=7)
    load_before = load_average()
    print(
        f"bench_teacher: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{reps} repetitions"
    )
    note = busy_note(load_before)
    if note:
        print(note)
    for name, net, inputs in cases(args.quick, args.full):
        runs = variants(net, inputs)
        reference = runs["plain"]()
        error = max(float((fn() - reference).abs().max()) for fn in runs.values())
        title = f"\n{name} (largest logit difference from plain: {error:.1e})"
        median = print_group(title, measure(runs, reps, inner=1), "plain")
        tag = name.split(",")[0].replace(" ", "_")
        for key in ("folded", "nhwc", "folded_nhwc"):
            print(f"RATIO {tag}/{key}_over_plain = {median[key] / median['plain']:.3f}")
    print(f"\nload average before / after: {load_before} / {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
