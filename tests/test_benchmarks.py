"""The benchmark scripts run (``--quick``) and print their ratios; the numbers are not judged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", ["bench_train_step.py", "bench_evaluate.py", "bench_data_loading.py"]
)
def test_benchmark_quick_run_prints_ratios(script):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ratios = [line for line in done.stdout.splitlines() if line.startswith("RATIO")]
    assert ratios, done.stdout[-2000:]
