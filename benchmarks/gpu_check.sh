#!/usr/bin/env bash
# GPU check at full size (see gpu_check.py): SF (CASIA-SURF, 112x112, batch 64) and
# ESANet-R34-NBt1D (NYUv2, 480x640, batch 8), bf16, with and without channels-last.
# Extra arguments are passed on to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
for task in face nyuv2; do
  python benchmarks/gpu_check.py --task "$task" --precision bf16 --steps 20 --rounds 2 "$@"
  python benchmarks/gpu_check.py --task "$task" --precision bf16 --steps 20 --rounds 2 --channels-last "$@"
done
