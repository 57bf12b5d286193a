#!/usr/bin/env bash
# cargo fuzz over the C ABI (fuzz/fuzz_targets/c_abi.rs) and over the index's encode and
# search primitives (index_ops.rs), each for SECONDS (default 60), under AddressSanitizer.
# Installs cargo-fuzz 0.13.1 if it is missing; runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo fuzz passes nightly-only -Z flags). A crash fails the script and
# leaves the input under fuzz/artifacts/; the corpus grows in fuzz/corpus/ (both ignored).
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(c_abi index_ops)
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13"; then
    echo "fuzz: installing cargo-fuzz 0.13.1"
    cargo install cargo-fuzz --version 0.13.1 --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
log=$(mktemp)
for t in "${targets[@]}"; do
    echo "fuzz: $t for ${seconds}s"
    mkdir -p "fuzz/corpus/$t"
    rc=0
    cargo fuzz run -O "$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb|Done)" "$log" || true
    if [ $rc -ne 0 ]; then
        tail -40 "$log"
        echo "fuzz: $t failed (exit $rc); the input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
rm -f "$log"
