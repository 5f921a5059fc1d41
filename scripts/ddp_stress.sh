#!/usr/bin/env bash
# Stress test of data-parallel training: run the two-process test of
# tests/test_distributed.py (two gloo processes under torchrun: train, evaluate like one
# process, resume) RUNS times while one busy loop per CPU keeps the machine loaded, and
# count the failed runs.
#
#   scripts/ddp_stress.sh [RUNS]        (default 20; run from anywhere, in the venv)
#
# Each failed run's output is kept in $LOGS (default: a new folder under /tmp). BUSY sets
# the number of busy loops (default: one per CPU; BUSY=0 when other work already loads
# the machine). Exits 1 when any run failed. A run takes about a minute under load on 2
# cores.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
test=tests/test_distributed.py::test_two_gloo_processes_agree_evaluate_like_one_and_resume
logs=${LOGS:-$(mktemp -d /tmp/ddp_stress.XXXXXX)}
mkdir -p "$logs"
cores=${BUSY:-$(python -c "import os; print(len(os.sched_getaffinity(0)))")}

busy=()
stop_busy() {
    for pid in "${busy[@]}"; do
        kill "$pid" 2>/dev/null
    done
    wait "${busy[@]}" 2>/dev/null
}
trap stop_busy EXIT
for _ in $(seq 1 "$cores"); do
    python -c "while True: pass" &
    busy+=("$!")
done

echo "ddp stress: $runs runs of $test, $cores busy loops, logs in $logs"
failures=0
start=$(date +%s)
for run in $(seq "$runs"); do
    t0=$(date +%s)
    if python -m pytest -q -p no:cacheprovider "$test" >"$logs/run-$run.log" 2>&1; then
        echo "run $run/$runs: ok ($(($(date +%s) - t0)) s)"
        rm -f "$logs/run-$run.log"
    else
        failures=$((failures + 1))
        echo "run $run/$runs: FAILED ($(($(date +%s) - t0)) s), output: $logs/run-$run.log"
        grep -m3 -E "terminate called|Signals\.|SIGABRT|exitcode|Error" "$logs/run-$run.log" | cut -c1-200
    fi
done
echo "failures: $failures/$runs, wall time $(($(date +%s) - start)) s under $cores busy loops"
[ "$failures" -eq 0 ]
