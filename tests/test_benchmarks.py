"""The benchmark scripts run (``--quick``) and print their ratios; the numbers are not judged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    [
        "bench_train_step.py",
        "bench_evaluate.py",
        "bench_data_loading.py",
        "bench_pixel_mad.py",
        "bench_teacher.py",
        "bench_startup.py",
        "bench_evaluation_extras.py",
    ],
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


QUICK_GPU_CHECK = ["--precision", "bf16", "--steps", "1", "--rounds", "1", "--warmup", "1"]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "size"), [("face", ["64", "64"]), ("nyuv2", ["32", "48"])])
def test_gpu_check_runs_on_the_cpu_at_a_small_size(task, size):
    args = ["--task", task, "--device", "cpu", "--size", *size, "--batch", "8", "--channels-last"]
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), *args, *QUICK_GPU_CHECK],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RATIO mmanet_step/sf_md_step" in done.stdout
