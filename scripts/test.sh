#!/usr/bin/env bash
# The project's test command: every Rust test (unit, recall, dense equivalence, index,
# header freshness, the C API program), then the llama.cpp integration: the patch series
# applied to the pinned tree and built (CPU), the op-level test, the fidelity CI subset, the
# end-to-end tests on a tiny model and on Gemma 3 270M and the load test; then the same
# patches on the older llama.cpp tree, built, with the op test and the tiny-model end-to-end
# tests (ggml-integration/test.sh; PARISKV_SKIP_OLDER=1 skips the older tree).
# Needs cargo, a C/C++ compiler, valgrind and python3 with venv; .ci/run installs what is
# missing. PARISKV_SKIP_LLAMA=1 skips the llama.cpp part, PARISKV_SKIP_ROBUSTNESS=1 the
# sanitizer and fuzz runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-targets "$@"
# Print the measured recall table into the log (the floors are asserted above).
cargo test --release --test recall -- --nocapture --test-threads 1 2>&1 | grep -E '(clustered|outliers)[^:]* seed [0-9]+ k'
# Robustness: the CPU path under AddressSanitizer and valgrind, a short cargo fuzz run of the
# C ABI and of the encode/search primitives (PARISKV_FUZZ_SECONDS per target).
if [ "${PARISKV_SKIP_ROBUSTNESS:-0}" != 1 ]; then
    scripts/sanitize.sh
    scripts/fuzz.sh "${PARISKV_FUZZ_SECONDS:-30}"
fi
if [ "${PARISKV_SKIP_LLAMA:-0}" != 1 ]; then
    ggml-integration/test.sh
    if [ "${PARISKV_SKIP_OLDER:-0}" != 1 ]; then
        PARISKV_LLAMA=older ggml-integration/test.sh
    fi
fi
