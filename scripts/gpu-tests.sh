#!/usr/bin/env bash
# Builds the test suite with feature `cuda` here and stages it for a GPU machine:
#   scripts/gpu-tests.sh           -> build/gpu-carry/ (the GPU test binary and the library's
#                                     unit tests, stripped, + run script, and bench/ with
#                                     gpu_bench and pin_bench; the other suites
#                                     need the source tree and run in CI)
#   build/gpu-carry/run.sh OUTDIR  (on the GPU machine) runs every test binary, GPU tests
#                                  included, logs to OUTDIR; PARISKV_SANITIZE=memcheck|racecheck
#                                  runs the GPU tests under compute-sanitizer
#   build/gpu-carry/profile.sh OUTDIR [N]  (on the GPU machine) Nsight Compute of one layer's
#                                  step: times and bytes per kernel, then the largest kernels'
#                                  limiters and stall reasons
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-toolchain.sh)"
carry=build/gpu-carry
rm -rf "$carry" && mkdir -p "$carry"
cargo test --release --features cuda --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' > "$carry/list"
while read -r exe; do
    name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
    case "$name" in gpu|pariskv) strip -o "$carry/$name" "$exe" ;; esac
done < "$carry/list"
rm "$carry/list"
cargo build --release --features cuda --example gpu_bench --example pin_bench 2>/dev/null
mkdir -p "$carry/bench"
for b in gpu_bench pin_bench; do strip -o "$carry/bench/$b" "target/release/examples/$b"; done
cat > "$carry/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the staged test binaries; exit status non-zero if any failed.
out=${1:-.}; here=$(cd "$(dirname "$0")" && pwd); rc=0
for t in "$here"/gpu "$here"/pariskv; do
    [ -f "$t" ] || continue
    name=$(basename "$t")
    if [ -n "${PARISKV_SANITIZE:-}" ]; then
        [ "$name" = gpu ] || continue
        PARISKV_GPU_TEST_SMALL=1 compute-sanitizer --tool "$PARISKV_SANITIZE" --error-exitcode 9 "$t" --test-threads 1 --nocapture \
            > "$out/$name-$PARISKV_SANITIZE.log" 2>&1 || rc=1
        tail -5 "$out/$name-$PARISKV_SANITIZE.log"
    else
        (cd "$here" && "$t" --test-threads 1 --nocapture) > "$out/$name.log" 2>&1 || rc=1
        echo "$name: $(grep -E '^test result' "$out/$name.log" | tail -1)"
    fi
done
exit $rc
RUN
chmod +x "$carry/run.sh"
cat > "$carry/profile.sh" <<'PROFILE'
#!/usr/bin/env bash
# Profiles one layer of the default step at N cells (default 32768) with Nsight Compute on
# the GPU machine: per kernel its time and DRAM bytes (OUTDIR/ncu-times.csv), then the
# largest kernels' limiters: throughput against the peaks, occupancy, warp stall reasons
# (OUTDIR/ncu-details.csv).
out=${1:-.}; n=${2:-32768}; here=$(cd "$(dirname "$0")" && pwd)
ncu --clock-control none -k regex:pk_ --launch-skip 40 --launch-count 40 \
    --metrics gpu__time_duration.sum,dram__bytes.sum,launch__grid_size,launch__block_size \
    --csv "$here/bench/gpu_bench" --defaults-only "$n" > "$out/ncu-times.csv" 2> "$out/ncu-times.err"
ncu --clock-control none -k 'regex:pk_(topk|refine_pick|group_estimate|group_union|group_refine|collisions|attend)' \
    --launch-skip 14 --launch-count 14 --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis --page details \
    --csv "$here/bench/gpu_bench" --defaults-only "$n" > "$out/ncu-details.csv" 2> "$out/ncu-details.err"
grep -c pk_ "$out/ncu-times.csv" "$out/ncu-details.csv"
PROFILE
chmod +x "$carry/profile.sh"
du -sh "$carry"; ls "$carry"
