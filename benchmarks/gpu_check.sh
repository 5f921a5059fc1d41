#!/usr/bin/env bash
# GPU check at full size (see gpu_check.py): SF (CASIA-SURF, 112x112, batch 64) and
# ESANet-R50 (configs/nyuv2, 480x640, batch 8), bf16 with and without channels-last (and SF
# in fp32), then the end-to-end CLI run (gpu_e2e.py) in one process and under torchrun
# (NCCL). Every step runs even if an earlier one fails; the exit status says if any did.
# Extra arguments are passed on to every gpu_check.py run.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
failed=0
step() { echo "== $*"; "$@" || { echo "FAILED: $*"; failed=1; }; }
for task in face nyuv2; do
  step "$PYTHON" benchmarks/gpu_check.py --task "$task" --precision bf16 --steps 20 --rounds 2 "$@"
  step "$PYTHON" benchmarks/gpu_check.py --task "$task" --precision bf16 --steps 20 --rounds 2 \
    --channels-last "$@"
done
step "$PYTHON" benchmarks/gpu_check.py --task face --precision fp32 --steps 20 --rounds 2 "$@"
work="$(mktemp -d)"
step "$PYTHON" benchmarks/gpu_e2e.py --device cuda --workdir "$work"
step "$PYTHON" -m torch.distributed.run --nproc_per_node=1 benchmarks/gpu_e2e.py --device cuda \
  --workdir "$work" --name ddp
rm -rf "$work"
exit "$failed"
