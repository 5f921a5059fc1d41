"""Benchmark: what the evaluation beyond "absent" costs (docs/evaluation.md).

What is measured (bundled demo config and model, UCI Multiple Features, 6 views -> 63
combinations, test split of 500 samples in one batch, CPU, eval mode):

- ``counts``: ``combination_confusions`` over the 63 masks (error and accuracy only: what a
  classification evaluation was before calibration).
- ``with_calibration``: ``ClassificationTask.evaluate`` through the engine's passes: the
  same one encoder pass, the (63, 500, 10) probabilities kept, error and accuracy from
  their argmax, and ECE, the reliability bins and the confidence-rise pairs of every
  combination (``mmanet.calibration``).
- ``clean_pass`` / ``corrupted_pass``: the classification evaluation of the split, clean,
  and with ``noise`` at severity 3 on every view (``mmanet.corruption_eval``): one
  corruption pass of ``evaluate_corruptions`` costs this.

Evaluation cost does not depend on the weights: the network is the demo model as built
(seeded). Variants alternate, rotating each repetition; each timing is the mean of
``--inner`` calls; medians over ``--reps`` repetitions, and ratios of those medians.

Usage::

    python benchmarks/bench_evaluation_extras.py            # full run
    python benchmarks/bench_evaluation_extras.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys

import torch

from common import (  # benchmarks/common.py
    busy_note,
    load_average,
    measure,
    print_group,
    threads_and_reps,
)
from mmanet.config import build_config
from mmanet.corruption_eval import BatchCorruption, corruption_targets, data_domains
from mmanet.data import build_data
from mmanet.engine.evaluate import ModelPasses, combination_confusions
from mmanet.engine.loader import make_loader
from mmanet.experiment import demo_config_path
from mmanet.modality import all_masks
from mmanet.models import build_model
from mmanet.tasks import build_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 9; 2 quick)")
    parser.add_argument("--inner", type=int, default=None, help="calls per timing (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run, 1 thread")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    reps = threads_and_reps(parser, args, 9)
    inner = args.inner if args.inner is not None else (1 if args.quick else 3)
    if inner < 1:
        parser.error("--inner must be >= 1")

    load_before = load_average()
    config = build_config(demo_config_path(), {"threads": 0, "progress": False})
    data = build_data(config.data)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.modalities, data.input_shapes, data.num_classes)
    model.eval()
    task = build_task(data, config)
    loader = make_loader(data.test, config.data.eval_batch_size, 0)
    masks = all_masks(len(data.modalities))
    (target,) = corruption_targets(data, ["noise:3"])
    domains, _ = data_domains(data)
    noisy = ModelPasses(model, corrupt=BatchCorruption(target, 3, 0, domains))
    clean = ModelPasses(model)

    extras = measure(
        {
            "counts": lambda: combination_confusions(model, loader, masks, task),
            "with_calibration": lambda: task.evaluate(clean, loader, masks, None),
        },
        reps,
        inner,
    )
    corrupted = measure(
        {
            "clean_pass": lambda: task.evaluate(clean, loader, masks, None),
            "corrupted_pass": lambda: task.evaluate(noisy, loader, masks, None),
        },
        reps,
        inner,
    )
    load_after = load_average()
    print(
        f"bench_evaluation_extras: demo model, {len(data.modalities)} views, {len(masks)} "
        f"combinations, test {len(data.test)} samples, {reps} repetitions x {inner} calls, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"load average before / after: {load_before} / {load_after}")
    note = busy_note(load_before)
    if note:
        print(note)
    print()
    ex = print_group("Classification evaluation, 63 combinations", extras, "counts")
    co = print_group("One corruption pass (noise:3, every view)", corrupted, "clean_pass")
    print(
        f"RATIO with_calibration/counts = {ex['with_calibration'] / ex['counts']:.2f} "
        "(the cost of calibration on top of the confusions)"
    )
    print(
        f"RATIO corrupted_pass/clean_pass = {co['corrupted_pass'] / co['clean_pass']:.2f} "
        "(one evaluate_corruptions pass relative to the clean evaluation)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
