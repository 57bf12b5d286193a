#!/usr/bin/env bash
# On the GPU machine, from the repository root, with build/gpu-builds staged by
# scripts/stage-gpu-lib.sh (or build/gpu-builds.tar.xz, packed by its --pack): every staged
# build's GPU tests (the CPU oracle against the kernels), then `gpu_bench --defaults-only` of
# all of them interleaved, twice. PROFILE=1 adds Nsight Compute's per-kernel times of the
# first build at each size; PROFILE=full also one layer's kernels with their speed-of-light,
# occupancy, launch, warp-state and scheduler sections, where the stall reasons say what a
# latency-bound kernel waits on; PROFILE=source one layer's kernels with their warp-state and
# source counters: the stall samples of every SASS instruction in ncu-source-NAME-SIZE.csv,
# the report itself beside it, scripts/ncu-source-summary.py's digest of them in
# ncu-source-NAME-SIZE-summary.txt:
#
#   scripts/run-gpu-lib.sh OUT [NAME ...]       (default: every staged build)
#
# SIZES (default "32768 131072") sets the cache sizes, SHAPE (llama8b, gpu_bench's
# default, qwen7b or mha7b) its model shape; TEST_TIMEOUT and BENCH_TIMEOUT (240 s
# each) bound each build's tests and each benchmark run. Logs go to OUT; a summary is printed.
set -uo pipefail
out=${1:?usage: run-gpu-lib.sh OUT [NAME ...]}
shift
carry=build/gpu-builds
# builds packed by `scripts/stage-gpu-lib.sh --pack` (what a call can carry)
if [ -f build/gpu-builds.tar.xz ]; then
    mkdir -p "$carry" && tar -xJf build/gpu-builds.tar.xz -C "$carry" || exit 1
fi
[ $# -gt 0 ] || set -- $(cd "$carry" && ls -d */ | tr -d /)
sizes=${SIZES:-32768 131072}
# (only where set: builds before the option would take it for a size)
shape=(); [ -z "${SHAPE:-}" ] || shape=(--shape "$SHAPE")
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
for b in "$@"; do
    # a kernel that hangs (a shuffle in divergent code) must not take the whole device call
    timeout "${TEST_TIMEOUT:-240}" "$carry/$b/gpu" --test-threads 1 > "$out/tests-$b.log" 2>&1
    echo "$b ($(cat "$carry/$b/REV")): GPU tests rc $? (124: timed out), $(grep -h 'test result' "$out/tests-$b.log")"
done
for i in 1 2; do
    for b in "$@"; do
        echo "== $b ($(cat "$carry/$b/REV")) run $i"
        timeout "${BENCH_TIMEOUT:-240}" "$carry/$b/gpu_bench" --defaults-only "${shape[@]}" $sizes
    done
done > "$out/gpu_bench.log" 2>&1
grep -E '^==|^N =|ParisKV' "$out/gpu_bench.log" | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
# Nsight Compute over the pk_ kernels of the first build's gpu_bench at size $1, past its
# first 20 launches (the warm-up); the other arguments are ncu's
first=$1
pk_ncu() {
    local n=$1
    shift
    ncu --clock-control none -k 'regex:pk_' --launch-skip 20 "$@" \
        "$carry/$first/gpu_bench" --defaults-only "${shape[@]}" "$n"
}
# a layer under the defaults is 15 kernels (group policy with refining, then attention)
layer=15
if [ "${PROFILE:-0}" != 0 ]; then
    for n in $sizes; do
        pk_ncu "$n" --launch-count 40 --metrics gpu__time_duration.sum,dram__bytes.sum,launch__grid_size --csv \
            > "$out/ncu-$first-$n.csv" 2>> "$out/ncu.err"
        echo "ncu $first at $n: rc $?"
    done
fi
if [ "${PROFILE:-0}" = full ]; then
    for n in $sizes; do
        pk_ncu "$n" --launch-count $layer --section SpeedOfLight --section Occupancy --section LaunchStats \
            --section WarpStateStats --section SchedulerStats --page details --csv \
            > "$out/ncu-full-$first-$n.csv" 2>> "$out/ncu.err"
        echo "ncu sections $first at $n: rc $?"
    done
fi
if [ "${PROFILE:-0}" = source ]; then
    for n in $sizes; do
        rep=$out/ncu-source-$first-$n
        pk_ncu "$n" --launch-count $layer --section WarpStateStats --section SourceCounters --import-source no \
            -f -o "$rep" > "$rep.log" 2>&1
        echo "ncu source counters $first at $n: rc $?"
        ncu -i "$rep.ncu-rep" --page source --print-source sass --csv > "$rep.csv" 2>> "$out/ncu.err"
        ncu -i "$rep.ncu-rep" --page details --csv > "$rep-details.csv" 2>> "$out/ncu.err"
        python3 scripts/ncu-source-summary.py "$rep.csv" --top 4 > "$rep-summary.txt"
    done
fi
