"""Helpers shared by the benchmark scripts: machine load and its warning, arguments,
alternating timing and its table."""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def busy_note(load: str) -> str | None:
    """A warning when other processes were using the CPUs before the benchmark started."""
    try:
        one_minute = float(load.split()[0])
    except (ValueError, IndexError):
        return None
    if one_minute < 0.5:
        return None
    threads = torch.get_num_threads()
    advice = (
        f"with {threads} torch threads and OpenMP spin-waiting the timings include "
        "oversubscription (10x slower and very noisy); rerun with OMP_WAIT_POLICY=PASSIVE "
        "in the environment or with --threads 1"
        if threads > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
        else "the timings are noisier than on an idle machine"
    )
    return (
        f"NOTE: 1-min load average {one_minute:.2f} before the start: other processes "
        f"share the {os.cpu_count()} CPUs; {advice}"
    )


def threads_and_reps(parser: argparse.ArgumentParser, args: argparse.Namespace, reps: int) -> int:
    """Set torch's threads from ``--threads`` (1 with ``--quick`` unless given) and return
    the repetitions: ``--reps``, else ``reps`` (2 with ``--quick``)."""
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    if threads is not None:
        torch.set_num_threads(threads)
    chosen = args.reps if args.reps is not None else (2 if args.quick else reps)
    if chosen < 1:
        parser.error("--reps must be >= 1")
    return chosen


def measure(
    variants: dict[str, Callable[[], object]], reps: int, inner: int
) -> dict[str, list[float]]:
    """Per variant, ``reps`` mean times of ``inner`` calls; variants alternate, rotating."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for fn in variants.values():  # warm-up
        fn()
    for rep in range(reps):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            gc.collect()
            start = time.perf_counter()
            for _ in range(inner):
                variants[name]()
            times[name].append((time.perf_counter() - start) / inner)
    return times


def print_group(title: str, times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    median = {name: statistics.median(values) for name, values in times.items()}
    print(title)
    print(f"  {'variant':<14} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'÷ ' + baseline:>16}")
    for name, values in times.items():
        print(
            f"  {name:<14} {1e3 * median[name]:>10.2f} {1e3 * min(values):>9.2f} "
            f"{1e3 * max(values):>9.2f} {median[name] / median[baseline]:>16.2f}"
        )
    print()
    return median
