#!/bin/bash
# The face anti-spoofing part of docs/results/robustness.md: a harder CeFA fixture in CeFA's
# on-disk layout (protocol 1@1: train/val on one race, test on another, attacks of two
# instruments), SF-MD / MMANet / DMRNet / ShaSpec, 3 seeds, then corruptions and failure rates.
set -euo pipefail
out=${1:-runs/robustness_face}
data=${2:-runs/data/cefa_hard}
[ -d "$data" ] || python scripts/make_fixtures.py cefa "$data" --difficulty 0.7 --count 20 --seed 1
mmanet compare --config src/mmanet/configs/cefa/base.yaml --methods sf_md,mmanet,dmrnet,shaspec \
  --seeds 3 --jobs "${JOBS:-1}" --out "$out" --no-progress "${@:3}" \
  data.root="$data" 'data.cefa.protocol=1@1' data.cefa.image_size=32 data.cefa.resize=40 \
  data.batch_size=22 data.num_workers=0 data.eval_batch_size=256 optim.epochs=20 \
  optim.warmup_epochs=1 'optim.milestones=[14]' method.mar.warmup_epochs=3 threads=1
