#!/usr/bin/env bash
# GPU check of the SF network (see gpu_casia_surf.py); extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/gpu_casia_surf.py --precision bf16 "$@"
python benchmarks/gpu_casia_surf.py --precision bf16 --channels-last "$@"
