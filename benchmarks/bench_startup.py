"""Start-up cost of the command line: ``mmanet --help`` against importing the library.

The CLI parses its arguments without torch or the models (each command imports what it
needs), so ``--help`` should cost a fraction of ``import mmanet.engine``. Each variant is
a fresh Python process, timed alternately; the ratio is of medians measured in one run.
``--compare-source DIR`` also times ``--help`` from another source tree (e.g. an older
checkout's ``src``) in the same run.

Usage: python benchmarks/bench_startup.py [--reps 9] [--compare-source DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


def timed(command: list[str], source: Path) -> float:
    environment = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    subprocess.run(command, env=environment, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--compare-source", type=Path, help="another tree's src/ to time")
    parser.add_argument("--quick", action="store_true", help="3 repetitions")
    args = parser.parse_args()
    reps = 3 if args.quick else args.reps
    python = sys.executable
    variants = {
        "help": ([python, "-m", "mmanet", "--help"], SOURCE),
        "import_engine": ([python, "-c", "import mmanet.engine"], SOURCE),
    }
    if args.compare_source is not None:
        variants["help_other_source"] = ([python, "-m", "mmanet", "--help"], args.compare_source)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, (command, source) in variants.items():
            times[name].append(timed(command, source))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:<20} median {median:.3f} s over {reps}")
    print(f"RATIO help/import_engine = {medians['help'] / medians['import_engine']:.3f}")
    if "help_other_source" in medians:
        ratio = medians["help_other_source"] / medians["help"]
        print(f"RATIO help_other_source/help = {ratio:.2f}")


if __name__ == "__main__":
    main()
