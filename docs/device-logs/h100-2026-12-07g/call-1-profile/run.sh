# call 1 of the session (22:17 UTC, NVIDIA H100 80GB HBM3): main 7ff2bef (code 8a3ea47)
# staged by `scripts/stage-gpu-lib.sh main=HEAD`; carry ["build/gpu-builds"]. Tests skipped
# (TEST_TIMEOUT=1: this build's 13/13 are in h100-2026-12-07f); the source page CSVs are
# committed xz-compressed, the .ncu-rep reports (8 MB each) are not; the *-summary.txt
# digests were made here afterwards (scripts/ncu-source-summary.py CSV --top 4).
set -u; r=$OUT/j; mkdir -p $r
TEST_TIMEOUT=1 PROFILE=source BENCH_TIMEOUT=60 scripts/run-gpu-lib.sh $r main
