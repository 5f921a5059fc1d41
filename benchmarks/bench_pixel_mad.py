"""Benchmark: pixel-level MAD (``granularity="pixel"``), peak memory and time vs pixels.

Every pooled pixel of the batch is a sample of the relation, so N = b · 30 · 40 pixels
give an N × N relation — computed in row blocks, so the memory should grow linearly in
N while the time (N² relation entries) grows quadratically. For each batch size b the
forward + backward of ``mad_loss`` on (b, 64, 30, 40) student / teacher maps and
(b, 19, 30, 40) teacher logits runs in a fresh interpreter whose allocator returns
large blocks to the system (``MALLOC_MMAP_THRESHOLD_``), so the peak resident-set
growth (``VmHWM`` after the call minus ``VmRSS`` before it, ``/proc/self/status``) is
the peak extra memory of the call. One N × N fp32 matrix is printed for comparison.

Usage::

    python benchmarks/bench_pixel_mad.py            # b = 1, 2, 4, 8, 16 (N up to 19,200)
    python benchmarks/bench_pixel_mad.py --quick    # b = 1, 2, 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import sys, time, torch
from mmanet.losses.mad import mad_loss

def status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass

torch.set_num_threads(1)
torch.manual_seed(0)
b, reps = int(sys.argv[1]), int(sys.argv[2])
student = torch.randn(b, 64, 30, 40, requires_grad=True)
teacher, logits = torch.randn(b, 64, 30, 40), torch.randn(b, 19, 30, 40)
mad_loss(student[:1, :, :4, :4], teacher[:1, :, :4, :4], logits[:1, :, :4, :4],
         granularity="pixel").backward()
student.grad = None
reset_peak()
base = status_mb("VmRSS")
times = []
for _ in range(reps):
    start = time.perf_counter()
    mad_loss(student, teacher, logits, granularity="pixel").backward()
    times.append(time.perf_counter() - start)
    student.grad = None
print(status_mb("VmHWM") - base, sorted(times)[len(times) // 2])
"""


def measure(batch: int, reps: int) -> tuple[float, float]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(batch), str(reps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    peak, seconds = (float(x) for x in done.stdout.split())
    return peak, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="b = 1, 2, 4 and 1 repetition")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per size (median)")
    args = parser.parse_args()
    batches = [1, 2, 4] if args.quick else [1, 2, 4, 8, 16]
    reps = 1 if args.quick else args.reps
    start = time.perf_counter()
    rows = []
    for b in batches:
        peak, seconds = measure(b, reps)
        rows.append((b, b * 1200, peak, seconds))
    print(f"bench_pixel_mad: 1 thread, {reps} timed forward+backward per size (median)")
    print(f"  {'b':>3} {'pixels N':>9} {'peak MiB':>9} {'N x N MiB':>10} {'seconds':>8}")
    for b, n, peak, seconds in rows:
        print(f"  {b:>3} {n:>9} {peak:>9.1f} {n * n * 4 / 2**20:>10.1f} {seconds:>8.3f}")
    memory = [rows[i + 1][2] / rows[i][2] for i in range(len(rows) - 1) if rows[i][2] > 1]
    timing = [rows[i + 1][3] / rows[i][3] for i in range(len(rows) - 1)]
    print(f"({time.perf_counter() - start:.0f} s in all)")
    print(
        f"RATIO peak_memory(2N)/peak_memory(N) = {statistics.median(memory):.2f} "
        "(median over the doublings; 2 = linear, 4 = quadratic)"
    )
    print(
        f"RATIO time(2N)/time(N) = {statistics.median(timing):.2f} "
        "(median over the doublings; the N^2 relation entries make ~4 expected)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
