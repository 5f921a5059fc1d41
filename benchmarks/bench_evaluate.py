"""Benchmark: evaluating every modality combination from one encoder pass.

What is measured (bundled demo config and model, UCI Multiple Features, 6 views ->
63 combinations, CPU, ``torch.no_grad``, eval mode):

- ``one_mask``: ``combination_confusions`` with the full mask only (one combination).
- ``all_masks``: ``combination_confusions`` with all 63 masks: the encoders run once per
  batch and the fusion + head run for every mask (``UnifiedNetwork.predict_masks``; for
  concatenation + an MLP head the first layer is factorised per modality)
  (``UnifiedNetwork.predict_masks``) -- what ``evaluate_combinations`` does.
- ``naive_masks``: 63 separate full forward passes, ``model(inputs, mask)`` per mask,
  each re-running the encoders, with the same confusion accumulation.

on the test split (500 samples, ``data.eval_batch_size`` 512 -> one batch), and for MAR
mining (``Trainer.mine``: the full mask plus the m drop-one masks, on the training split,
1200 samples) ``mine_one_pass`` (``combination_confusions`` with the m + 1 masks) versus
``mine_naive`` (m + 1 full forward passes).

Evaluation cost does not depend on the weights, so the network is the demo model as
built (seeded initialisation), not a trained one. The naive and one-pass confusion
matrices are compared as a sanity check (they may differ by a few counts where float
rounding at different batch shapes flips a near-tied argmax).

The variants of a group run alternately, in an order that rotates every repetition;
each timing is the mean of ``--inner`` back-to-back calls, and the reported
numbers are medians over ``--reps`` repetitions and ratios of those medians.

``--model sf``: the same for the SF network (CASIA-SURF config, 3 modalities, 7
combinations) on generated 112 x 112 images.

Usage::

    python benchmarks/bench_evaluate.py            # full run
    python benchmarks/bench_evaluate.py --quick    # smoke run (< 20 s)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common import busy_note, load_average, measure, print_group  # benchmarks/common.py
from mmanet.config import build_config
from mmanet.data import build_data
from mmanet.engine.evaluate import combination_confusions
from mmanet.engine.loader import make_loader
from mmanet.experiment import demo_config_path
from mmanet.metrics import confusion_matrix
from mmanet.modality import Mask, all_masks, drop_one_masks, full_mask
from mmanet.models import UnifiedNetwork, build_model
from mmanet.tasks import build_task

SF_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "casia_surf" / "base.yaml"


@torch.no_grad()
def naive_confusions(
    model: UnifiedNetwork, loader: DataLoader, masks: Sequence[Mask], num_classes: int
) -> torch.Tensor:
    """(c, k, k) confusions from one full forward pass (encoders included) per mask."""
    was_training = model.training
    model.eval()
    m = model.num_modalities
    total = torch.zeros(len(masks), num_classes, num_classes, dtype=torch.long)
    for i, mask in enumerate(masks):
        row = torch.tensor(mask, dtype=torch.float32).view(1, m)
        for inputs, labels in loader:
            logits = model(inputs, row.expand(labels.shape[0], m)).logits
            total[i] += confusion_matrix(logits.argmax(dim=1), labels, num_classes)
    model.train(was_training)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 9; 3 quick)")
    parser.add_argument(
        "--inner", type=int, default=None, help="calls per timing (default 3; 1 quick)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 repetitions, 1 thread unless --threads is given",
    )
    parser.add_argument(
        "--model",
        default="demo",
        choices=["demo", "sf"],
        help="the bundled demo model (6 views) or the SF network (3 modalities, 112 x 112)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's default, 1 with --quick)",
    )
    args = parser.parse_args(argv)
    reps = args.reps if args.reps is not None else (2 if args.quick else 9)
    inner = args.inner if args.inner is not None else (1 if args.quick else 3)
    if reps < 1 or inner < 1:
        parser.error("--reps and --inner must be >= 1")
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    if threads is not None:
        torch.set_num_threads(threads)

    load_before = load_average()
    runtime = {"threads": 0, "progress": False, "tensorboard": False}
    if args.model == "sf":  # the SF network, 3 modalities at 112 x 112 (generated images)
        from gpu_check import generated_data  # benchmarks/gpu_check.py

        config = build_config(SF_CONFIG, {**runtime, "data": {"eval_batch_size": 32}})
        data = generated_data("face", 64 if args.quick else 128, (112, 112))
    else:
        config = build_config(demo_config_path(), runtime)
        data = build_data(config.data)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.modalities, data.input_shapes, data.num_classes)
    model.eval()
    k, m = data.num_classes, len(data.modalities)
    task = build_task(data, config)
    batch = config.data.eval_batch_size
    test_loader = make_loader(data.test, batch, 0)
    mine_loader = make_loader(data.train_eval or data.train, batch, 0)

    every = all_masks(m)
    one = [full_mask(m)]
    mining = [full_mask(m), *drop_one_masks(m)]

    # Sanity: the one-pass and the naive confusions agree (up to near-tied argmaxes).
    one_pass = combination_confusions(model, test_loader, every, task)
    naive = naive_confusions(model, test_loader, every, k)
    differing = int((one_pass - naive).abs().sum()) // 2  # each flip moves one count
    assert int(one_pass.sum()) == len(every) * len(data.test)

    evaluation = measure(
        {
            "one_mask": lambda: combination_confusions(model, test_loader, one, task),
            "all_masks": lambda: combination_confusions(model, test_loader, every, task),
            "naive_masks": lambda: naive_confusions(model, test_loader, every, k),
        },
        reps,
        inner,
    )
    mine = measure(
        {
            "mine_one_pass": lambda: combination_confusions(model, mine_loader, mining, task),
            "mine_naive": lambda: naive_confusions(model, mine_loader, mining, k),
        },
        reps,
        inner,
    )
    load_after = load_average()

    print(
        f"bench_evaluate: demo model, {m} views, {len(every)} combinations, "
        f"test {len(data.test)} / train {len(mine_loader.dataset)} samples, "
        f"eval batch {batch}, {reps} repetitions x {inner} calls, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"load average before / after: {load_before} / {load_after}")
    note = busy_note(load_before)
    if note:
        print(note)
    print(
        f"one-pass vs naive confusions ({len(every)} combinations, test): "
        f"{differing} of {int(one_pass.sum())} predictions differ"
    )
    print()
    ev = print_group("Evaluation, test split", evaluation, "one_mask")
    mi = print_group(f"MAR mining, {len(mining)} masks, training split", mine, "mine_one_pass")

    print(
        f"RATIO all_{len(every)}_one_pass/one_combination = "
        f"{ev['all_masks'] / ev['one_mask']:.2f} "
        f"(reported, no floor)"
    )
    print(
        f"RATIO naive_{len(every)}_passes/all_{len(every)}_one_pass = "
        f"{ev['naive_masks'] / ev['all_masks']:.2f} "
        f"(> 1 means the one-pass evaluation is faster)"
    )
    print(
        f"RATIO mining_naive/mining_one_pass = {mi['mine_naive'] / mi['mine_one_pass']:.2f} "
        f"(> 1 means the one-pass mining is faster)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
